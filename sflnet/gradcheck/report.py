"""The report of ``sflnet gradcheck``: its rows, the table with its footer, and JSON."""

import json
from dataclasses import dataclass, field

from sflnet.gradcheck.engine import EPS_SWEEP

CHECK_FIELDS = ("device", "layer", "check", "shape", "eps", "error", "threshold", "passed", "worst", "note")


@dataclass
class CheckRow:
    """One row of the report. ``error`` is None when the check could not produce a number (see ``note``)."""

    device: str
    layer: str
    check: str
    shape: str
    eps: float
    error: float
    threshold: float
    passed: bool
    note: str = ""
    samples: list = field(default_factory=list)
    worst: str = ""   # the variable (or quantity) with the largest error

    def as_dict(self, with_samples=False):
        """The row as a JSON-ready dict with the keys of :data:`CHECK_FIELDS` (plus ``samples`` if asked)."""
        row = {name: getattr(self, name) for name in CHECK_FIELDS}
        row["status"] = "PASS" if self.passed else "FAIL"
        if with_samples:
            row["samples"] = list(self.samples)
        return row


@dataclass
class Report:
    """All rows of one suite run, plus what happened to the GPU part and the wall time."""

    rows: list
    gpu_note: str
    seed: int
    seconds: float = 0.0

    @property
    def passed(self):
        return all(row.passed for row in self.rows)


FOOTER = """\
How to read the error column (cs231n bands for a gradient check's relative error):
  > 1e-2         the gradient is wrong
  1e-2 .. 1e-4   suspicious
  1e-4 .. 1e-7   acceptable only for functions with kinks (ReLU) crossed by the finite difference
  < 1e-7         good for smooth functions
Relative error used everywhere: rel = max|a-b| / max(1e-8, max|a| + max|b|), a = analytic (or sflnet),
  b = numeric (or reference), maxima over the elements of one variable; a row shows its worst variable.
  This scale-aware form is chosen over the elementwise max(|a-b| / (|a|+|b|)) because an element whose true
  gradient is ~0 makes the elementwise ratio pure rounding noise; any element wrong by a visible fraction of
  the gradient's scale still shows. Directional rows: |fd - <grad,r>| / max(1e-8, |fd| + |<grad,r>|).
Thresholds (measured worst over many seeds in brackets):
  forward vs reference, adjoint: 1e-12 relative [<= 3e-16, <= 2e-15]. float64 rounding of sums of up to
    ~1e5 O(1) terms stays far below; one wrong tap or weight anywhere gives >= 1e-4. Adjoint rows are
    relative to |<Ax,y>|; y with an accidentally tiny <Ax,y> is redrawn (|z| < 0.5, see directional).
  dense, layers and losses: 1e-7, the cs231n "smooth" bar [<= 5e-11]; the ReLU layer keeps |x| >= 0.1, so
    no kink is within any eps and it is exactly linear around the point.
  directional, layers and losses: 1e-7 [<= 9e-9; the loss rows are largest, because E changes by only
    ~1e-8 of itself at eps = 1e-4, so the rounding of E shows]. Directions r with |<grad,r>| below
    0.5 |grad|/sqrt(n) are redrawn: there both sides are tiny and the ratio is rounding noise.
  whole network: dense 1e-7 [<= 1e-9]; directional 1e-6 [<= 4e-8]: the flip-free eps can be as small as
    1e-7, where rounding of E (~1e-16 |E| / eps) is ~1e-8..1e-7 of <grad E, r>.
  float32 GPU vs CPU: allclose(atol 5e-4, rtol 5e-3), shown as max |gpu-cpu| / (atol + rtol |cpu|) <= 1.
eps: central differences (f(t+eps) - f(t-eps)) / 2 eps, swept over 1e-4, 1e-5, 1e-6, 1e-7; the best eps
  whose perturbations left every ReLU mask unchanged is shown. Random upstream gradients throughout.
Network checks use He-scaled weights N(0, 2/fan_in) and biases N(0, 0.1^2), not the paper's std-0.02
  init, so ReLU pre-activations are O(1) and masks flip only at the larger eps, if at all (verified per
  evaluation and reported under Notes; such eps are not used).
  A direction whose +-eps crosses a kink at every eps of the sweep is redrawn (noted).
  "dense (sampled)": every bias and 24 random elements per weight tensor; --full checks all 11027.
Each directional row uses 3 random unit directions over all its variables (inputs and parameters).
Added losses: l1 keeps |recon - target| >= 0.05 (no kink within any eps); fft differentiates with its focal
  weights w = |D|/max|D| frozen at the base point (constants by definition: the loss detaches them); stft
  draws recon until every bin is > 1e-3 (tiny) / 1e-6 (realistic) from its kinks (A_o = A_i, dP = 0, |dP| = pi,
  A_o = 0) and reports crossed kink sides like ReLU masks; stft_code (the authors' code's STFT) likewise, plus
  the branch cut of its unwrapped phase (P_o jumps by 2 pi there). network_l1 ... network_mixed: the whole CAE with
  that objective, directional only (their images must fit the 11x11 SSIM and 16x16 STFT windows).
beta-VAE layers (conv2d_valid_s*, conv_transpose_s*, linear, sigmoid, reparameterize, kl_loss): directional
  rows use the VAE's MNIST shapes; conv_transpose is checked against a scatter of every input pixel times
  the kernel and against its definition, Conv2D's input gradient; conv_transpose_tf_same_s* is TensorFlow's
  'same' padding (the extra row/column at the bottom/right); reparameterize keeps eps fixed.
network_vae (500*ssim+0.00015*stft), network_vae_sfl (500*ssim+3.5*sfl): the whole beta-VAE, E = 0.005 KL +
  the objective, w.r.t. all 14 parameter arrays, with eps FIXED (every draw of VAE.noise returns the same
  eps). Digit-like binary 28x28 images (dense: 2; directional: 3, in chunks of 2 + 1); He-scaled weights,
  biases N(0, 0.1^2); ReLU masks and stft kink sides verified per evaluation. "dense (sampled)": 1 random
  element per parameter tensor (dec_w, dec_b: of a unit some image reaches); --full: every bias and 64
  elements per weight tensor (all 69989 would take hours). Their dense errors are relative to max |dE/dtheta|
  over all 69989 parameters: E ~ 500 (500 (1 - SSIM)) is a float64 with ulp 5.7e-14, so one coordinate's
  difference carries ~3e-14/eps of rounding, and a single small element would score its own rounding
  [measured worst, seeds 0-7 dense / 0-5 directional per row: dense <= 1e-8, directional <= 3.1e-8]."""


def _fmt(value, width):
    if value is None:
        return "-".rjust(width)
    if value == 0:
        return "0".rjust(width)
    return f"{value:.1e}".rjust(width)


def format_table(report, verbose=False):
    """The report as text: one row per check, the GPU line, the footer, the verdict."""
    headers = ("device", "layer", "check", "shape", "eps", "worst rel err", "threshold", "result")
    body = [(r.device, r.layer, r.check, r.shape, _fmt(r.eps, 7).strip(), _fmt(r.error, 13).strip(),
             _fmt(r.threshold, 9).strip(), "PASS" if r.passed else "FAIL") for r in report.rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(headers)]
    right = {4, 5, 6}

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    out = []
    if verbose:
        for r in report.rows:
            out.append(f"== {r.device} {r.layer}: {r.check} [{r.shape}] "
                       f"{'PASS' if r.passed else 'FAIL'}")
            out += r.samples or ["  (nothing to show)"]
            if r.note:
                out.append(f"  note: {r.note}")
        out.append("")
    out.append(line(headers))
    out.append(line(["-" * w for w in widths]))
    out += [line(b) for b in body]
    notes = []
    for r in report.rows:
        text = "; ".join(t for t in (r.note, "" if r.passed or not r.worst else f"worst: {r.worst}") if t)
        if text:
            notes.append(f"  {r.device} {r.layer} {r.check}: {text}")
    if notes:
        out.append("")
        out.append("Notes:")
        out += notes
    out.append("")
    out.append(report.gpu_note)
    out.append("")
    out.append(FOOTER)
    failed = [r for r in report.rows if not r.passed]
    out.append("")
    verdict = "all checks PASS" if not failed else f"{len(failed)} of {len(report.rows)} checks FAIL"
    out.append(f"{len(report.rows)} checks, seed {report.seed}, {report.seconds:.1f} s: {verdict}")
    return "\n".join(out)


def to_json(report, verbose=False):
    """The report as JSON: {"rows": [{device, layer, check, shape, eps, error, threshold, passed, status,
    note}], "passed", "gpu", "seed", "seconds", "eps_sweep", "metric"}; ``samples`` per row with ``verbose``."""
    return json.dumps({
        "rows": [r.as_dict(with_samples=verbose) for r in report.rows],
        "passed": report.passed,
        "gpu": report.gpu_note,
        "seed": report.seed,
        "seconds": round(report.seconds, 3),
        "eps_sweep": list(EPS_SWEEP),
        "metric": "max|a-b| / max(1e-8, max|a| + max|b|)",
    }, indent=2)
