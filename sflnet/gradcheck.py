"""The gradient-check validation suite behind ``sflnet gradcheck`` (DESIGN.md §3).

Every hand-written backward pass of :mod:`sflnet.nn` and of the whole
:class:`sflnet.models.cae.Autoencoder` is checked five ways, in float64:

* **forward vs reference** — the layer's output against an independent SciPy /
  NumPy implementation of the paper's formula (``scipy.signal.correlate`` for
  Eq. 2, ``scipy.signal.correlate2d`` with Eq. 5 written out for the LoG bank,
  a plain per-pixel loop for the bilinear ×2, direct loops for Eq. 4 and 6);
* **dense** — central finite differences ``(s(θ+ε e_i) − s(θ−ε e_i)) / 2ε`` of
  ``s = ⟨out, dy⟩`` (``dy`` a *random* upstream gradient, never all ones) for
  every element of every input and parameter, on tiny shapes;
* **directional** — Chainer's ``check_backward``: a random unit direction ``r``
  over all variables, ``(s(θ+εr) − s(θ−εr)) / 2ε`` against ``⟨∇s, r⟩``, several
  seeds, on realistic shapes (for the network: a batch of 2×64×48 + 1×37×53);
* **adjoint** — ``⟨Ax, y⟩ = ⟨x, Aᵀy⟩`` for the linear maps (im2col/col2im,
  Upsample2x, LoGBank, Conv2D w.r.t. its input with zero bias);
* every numeric check sweeps ε over 1e-4 … 1e-7 and reports the best ε.

The losses added to the paper's (l1, ssim, fft, stft; :mod:`sflnet.losses`) get the
same rows; their forward references and adjoint rows live beside them in
:mod:`sflnet.gradcheck_ssim` and :mod:`sflnet.gradcheck_freq`, and every loss is
also checked inside the whole network (``network_<loss>``, ``network_mixed``).
The β-VAE's layers (valid Conv2D, ConvTranspose2D, Linear, Sigmoid,
Reparameterize, and the KL term) and the whole β-VAE with ε fixed (``network_vae``,
``network_vae_sfl``) have their rows in :mod:`sflnet.gradcheck_vae`.

When a GPU is usable the float64 checks run again on CuPy, and float32 CuPy
results are compared with float32 NumPy results.

The checks take their subjects from :data:`REGISTRY` (name → :class:`LayerEntry`),
whose factories build the layers from :mod:`sflnet.nn` / :mod:`sflnet.models.cae`
at call time. A test can therefore plant a wrong backward (monkeypatch a
class, or pass its own registry to :func:`run_suite`) and see the suite fail on
the right row.

Piecewise-linear ReLU: a finite difference that crosses the kink at 0 is wrong
by design, not because the backward is. The layer-level ReLU check draws its
inputs with ``|x| ≥ 0.1`` (≫ ε, both signs); the network checks use He-scaled
weights and non-zero biases (not the paper's std-0.02 init, whose
pre-activations crowd around 0), and every numeric evaluation compares all ReLU
masks with the unperturbed ones. An ε at which any mask flipped is not used,
and the row's note says so.
"""

import json
import math
import time
import zlib
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import scipy.signal

from sflnet import losses, nn
from sflnet.ops.filters import log_kernel
from sflnet.ops.im2col import col2im, im2col
from sflnet.models import cae as model
from sflnet.backend import _try_cupy, get_array_module, gpu_available, select_device, to_device, to_host
from sflnet.errors import SflnetError

# ---------------------------------------------------------------------------
# Conventions: ε sweep, thresholds, the relative error
# ---------------------------------------------------------------------------

EPS_SWEEP = (1e-4, 1e-5, 1e-6, 1e-7)
DIRECTIONAL_SEEDS = 3

THRESHOLD_REFERENCE = 1e-12     # forward vs SciPy/NumPy reference, float64
THRESHOLD_ADJOINT = 1e-12       # |⟨Ax,y⟩ − ⟨x,Aᵀy⟩| / |⟨Ax,y⟩|, float64
THRESHOLD_SMOOTH = 1e-7         # dense and directional checks of single layers and losses
THRESHOLD_NETWORK_DENSE = 1e-7  # whole network, one coordinate at a time (ReLU masks verified constant)
THRESHOLD_NETWORK_DIRECTIONAL = 1e-6  # whole network, all parameters moved at once, 8k-pixel batch
GPU_ATOL, GPU_RTOL = 5e-4, 5e-3  # float32 CuPy vs float32 NumPy
THRESHOLD_GPU_FLOAT32 = 1.0     # error = max |a − b| / (atol + rtol |b|); ≤ 1 is numpy.allclose

NETWORK_DENSE_SAMPLE = 24       # weights checked per weight tensor in the default (sampled) network dense check

CHECK_FIELDS = ("device", "layer", "check", "shape", "eps", "error", "threshold", "passed", "worst", "note")


def rel_error(analytic, other, analytic_scale=0.0):
    """cs231n relative error, scale-aware form: ``max|a − b| / max(1e-8, max|a| + max|b|)``.

    analytic, other: arrays of one shape (host or device, any float dtype).
    Returns a Python float. The denominator is the size of the whole gradient,
    not of each element: an element whose true value is ~0 (where the finite
    difference is pure rounding noise) cannot blow the score up, while any
    element that is wrong by a visible fraction of the gradient's scale still does.
    analytic_scale: a known size of the whole analytic gradient when ``analytic`` is only a sample
    of it; ``max|a|`` is then ``max(analytic_scale, max|a|)`` (see :attr:`Case.error_scale`).
    """
    a = np.asarray(to_host(analytic), dtype=np.float64)
    b = np.asarray(to_host(other), dtype=np.float64)
    if a.size == 0:
        return 0.0
    scale = max(1e-8, max(float(analytic_scale), float(np.max(np.abs(a)))) + float(np.max(np.abs(b))))
    return float(np.max(np.abs(a - b))) / scale


def scalar_rel_error(a, b):
    """``|a − b| / max(1e-8, |a| + |b|)`` for two floats (directional derivatives, losses)."""
    return abs(a - b) / max(1e-8, abs(a) + abs(b))


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------

@dataclass
class Measurement:
    """What one check measured: the worst relative error, at which ε, and what to show a learner.

    samples: list of text lines (analytic vs numeric for a few elements), printed by ``--verbose``.
    """

    shape: str
    error: float
    eps: float = None
    note: str = ""
    samples: list = field(default_factory=list)
    worst: str = ""


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


# ---------------------------------------------------------------------------
# Random data (drawn on the host, so CPU and GPU runs see the same numbers)
# ---------------------------------------------------------------------------

def _rng(seed, *labels):
    """An independent generator per check: the numbers do not depend on which other checks ran."""
    key = zlib.crc32("/".join(str(label) for label in labels).encode())
    return np.random.default_rng([seed, key])


def _normal(rng, shape, xp, dtype, scale=1.0):
    return to_device((scale * rng.standard_normal(shape)).astype(dtype), xp)


def _uniform(rng, shape, xp, dtype, low=-1.0, high=1.0):
    return to_device(rng.uniform(low, high, size=shape).astype(dtype), xp)


def _away_from_zero(rng, shape, xp, dtype, margin=0.1):
    """Values with ``margin ≤ |x| ≤ 1`` and random signs: both ReLU branches, no kink within any ε."""
    magnitude = rng.uniform(margin, 1.0, size=shape)
    sign = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
    return to_device((sign * magnitude).astype(dtype), xp)


def check_params(rng, xp=np, dtype=np.float64):
    """Network parameters for the checks: He-scaled weights ``N(0, 2/fan_in)``, biases ``N(0, 0.1²)``.

    Not the paper's init (std 0.02, zero biases): with that, ReLU pre-activations
    sit within ~1e-4 of 0 and a finite difference crosses kinks. Here they are O(1),
    so the ReLU masks stay fixed under the ε perturbations (which the checks verify).
    returns {w2 … b5} with :data:`sflnet.models.cae.PARAM_SHAPES`.
    """
    params = {}
    for name in model.PARAM_NAMES:
        shape = model.PARAM_SHAPES[name]
        if name.startswith("w"):
            fan_in = shape[1] * shape[2] * shape[3]
            params[name] = _normal(rng, shape, xp, dtype, scale=math.sqrt(2.0 / fan_in))
        else:
            params[name] = _normal(rng, shape, xp, dtype, scale=0.1)
    return params


def _shape_text(shape):
    return "(" + ",".join(str(s) for s in shape) + ")"


# ---------------------------------------------------------------------------
# Independent references (host float64 NumPy/SciPy, written from the paper)
# ---------------------------------------------------------------------------

def reference_conv2d(x, w, b, stride):
    """Eq. 2 with SciPy: ``o[n,c] = Σ_{c'} correlate(pad(x[n,c']), w[c,c'], 'valid')[::s, ::s] + b[c]``.

    x: (N, C_in, H, W), w: (C_out, C_in, k, k), b: (C_out,) → (N, C_out, ⌈H/s⌉, ⌈W/s⌉).
    """
    p = (w.shape[-1] - 1) // 2
    x_pad = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    out = []
    for n in range(x.shape[0]):
        maps = []
        for c in range(w.shape[0]):
            total = sum(scipy.signal.correlate(x_pad[n, ci], w[c, ci], mode="valid", method="direct")
                        for ci in range(w.shape[1]))
            maps.append(total[::stride, ::stride] + b[c])
        out.append(np.stack(maps))
    return np.stack(out)


def reference_upsample2x(x, out_h, out_w):
    """Bilinear resize ×2 with half-pixel centres and clamping, one output pixel at a time.

    For output index o along an axis of input length n: source ``u = max((o + ½)/2 − ½, 0)``,
    ``i0 = ⌊u⌋``, ``t = u − i0``, ``i1 = min(i0 + 1, n − 1)``; the value is
    ``(1−t)·in[i0] + t·in[i1]`` per axis (PyTorch's ``align_corners=False``).
    x: (N, C, h, w) → (N, C, out_h, out_w).
    """
    def taps(o, n):
        u = max((o + 0.5) / 2.0 - 0.5, 0.0)
        i0 = int(math.floor(u))
        t = u - i0
        return i0, min(i0 + 1, n - 1), t

    h, w = x.shape[-2:]
    out = np.empty(x.shape[:2] + (out_h, out_w), dtype=np.float64)
    for oy in range(out_h):
        y0, y1, ty = taps(oy, h)
        for ox in range(out_w):
            x0, x1, tx = taps(ox, w)
            out[:, :, oy, ox] = ((1 - ty) * (1 - tx) * x[:, :, y0, x0] + (1 - ty) * tx * x[:, :, y0, x1]
                                 + ty * (1 - tx) * x[:, :, y1, x0] + ty * tx * x[:, :, y1, x1])
    return out


def reference_log_kernel(sigma):
    """Eq. 5 written out element by element, with the paper's size rule ⌈8σ⌉ (+1 if even).

    ``K_σ(x, y) = −(2 − (x² + y²)/σ²) · exp(−(x² + y²)/(2σ²)) / (2πσ²)``; returns (k, k), rows y.
    The size uses exact decimal arithmetic (8 · 0.8 is 6.4, not 6.4000000000000004).
    """
    k = math.ceil(Fraction(str(sigma)) * 8)
    if k % 2 == 0:
        k += 1
    s = (k - 1) // 2
    kernel = np.empty((k, k), dtype=np.float64)
    for row, y in enumerate(range(-s, s + 1)):
        for col, x in enumerate(range(-s, s + 1)):
            r2 = x * x + y * y
            kernel[row, col] = (-(2 - r2 / sigma ** 2) * math.exp(-r2 / (2 * sigma ** 2))
                                / (2 * math.pi * sigma ** 2))
    return kernel


def reference_log_bank(f, sigmas):
    """Layer 6 literally: ``out[n,c] = Σ_{c'} correlate2d(f[n,c'], K_{σ_c}, 'same', zero fill)``.

    f: (N, C, H, W) → (N, S, H, W); the kernels are :func:`sflnet.ops.filters.log_kernel`.
    """
    out = np.zeros((f.shape[0], len(sigmas)) + f.shape[2:], dtype=np.float64)
    for n in range(f.shape[0]):
        for c, sigma in enumerate(sigmas):
            kernel = log_kernel(sigma)
            for ci in range(f.shape[1]):
                out[n, c] += scipy.signal.correlate2d(f[n, ci], kernel, mode="same", boundary="fill")
    return out


def reference_pixel_loss(recon, target, weights, batch_count):
    """Eq. 4 term by term: ``(1/N_m) Σ_i Σ_c w[c] · ½ · mean_xy (recon − target)²``."""
    total = 0.0
    for i in range(recon.shape[0]):
        for c in range(recon.shape[1]):
            total += weights[c] * 0.5 * float(np.mean((recon[i, c] - target[i, c]) ** 2))
    return total / batch_count


def reference_sfl(recon, target, sigmas, weights, batch_count):
    """Eq. 6 term by term, filtering recon and target separately.

    Returns ``(E_SFL, unit-weight subbands (S,))`` with
    ``SFL_c = (1/N_m) Σ_i ½ mean_xy (LoG_c(recon_i) − LoG_c(target_i))²``.
    """
    bands_recon = reference_log_bank(recon, sigmas)
    bands_target = reference_log_bank(target, sigmas)
    subbands = np.zeros(len(sigmas), dtype=np.float64)
    for i in range(recon.shape[0]):
        for c in range(len(sigmas)):
            subbands[c] += 0.5 * float(np.mean((bands_recon[i, c] - bands_target[i, c]) ** 2))
    subbands /= batch_count
    return float(np.dot(weights, subbands)), subbands


def reference_network(params, images, loss, sigmas=model.DEFAULT_SIGMAS,
                      sfl_weights=model.DEFAULT_SFL_WEIGHTS, pl_weights=model.DEFAULT_PL_WEIGHTS):
    """Table 1 + Eq. 4, 6, 7 from the references above, one image at a time.

    params: {w2 … b5} host float64; images: list of (3, H_i, W_i) host float64.
    returns the vector ``[E, E_PL, E_SFL, SFL_σ1, …]`` (unit-weight subbands last).
    """
    count = len(images)
    e_pl, e_sfl, subbands = 0.0, 0.0, np.zeros(len(sigmas), dtype=np.float64)
    for image in images:
        f1 = image[None]
        a = np.maximum(reference_conv2d(f1, params["w2"], params["b2"], 1), 0.0)
        a = np.maximum(reference_conv2d(a, params["w3"], params["b3"], 2), 0.0)
        a = reference_upsample2x(a, image.shape[1], image.shape[2])
        a = np.maximum(reference_conv2d(a, params["w4"], params["b4"], 1), 0.0)
        f_l = np.tanh(reference_conv2d(a, params["w5"], params["b5"], 1))
        e_pl += reference_pixel_loss(f_l, f1, pl_weights, count)
        weighted, unit = reference_sfl(f_l, f1, sigmas, sfl_weights, count)
        e_sfl += weighted
        subbands += unit
    total = e_pl + e_sfl if loss == "pl+sfl" else e_pl
    return np.array([total, e_pl, e_sfl, *subbands])


# ---------------------------------------------------------------------------
# A function under test
# ---------------------------------------------------------------------------

@dataclass
class Case:
    """One differentiable function, ready for the numeric checks.

    variables: {name: array} — the inputs and parameters it is differentiated with
               respect to. The checks perturb these arrays IN PLACE and restore
               them exactly, so ``evaluate`` must read them on every call.
    evaluate:  () → output array (0-d for losses and the network)
    gradients: (upstream, shaped like the output) → {name: ∂⟨out, upstream⟩/∂variable};
               called right after ``evaluate()``
    masks:     () → list of boolean arrays, the ReLU masks at the current variables
               (None when the function has no ReLU); any piecewise function may report the sides
               of its kinks this way (see ``mask_kind``)
    shape:     text for the table
    sample:    {name: list of index tuples} to check only those elements (missing name: every element)
    error_scale: the dense check's denominator: "variable" (max |analytic| over the checked elements of
               each variable, the default) or "gradient" (max |analytic| over every element of every
               variable, the whole gradient; for a sampled check of a function whose value is so large
               that its rounding swamps a single coordinate's small derivative, see sflnet.gradcheck_vae)
    """

    variables: dict
    evaluate: object
    gradients: object
    shape: str
    masks: object = None
    sample: dict = field(default_factory=dict)
    mask_kind: str = "ReLU masks"   # what ``masks`` reports, for the notes
    error_scale: str = "variable"


def _layer_case(layer, variables, shape, masks=None):
    """A Case for a layer whose only non-parameter variable is the input ``x``."""
    def evaluate():
        return layer.forward(variables["x"])

    def gradients(dy):
        grads = {"x": layer.backward(dy)}
        for name in getattr(layer, "params", {}):
            grads[name] = layer.grads[name]
        return grads
    return Case(variables, evaluate, gradients, shape, masks)


def _conv_inputs(rng, xp, dtype, x_shape, w_shape):
    """x: N(0, 1) of x_shape; w: N(0, 1/(C_in·9)) of w_shape (C_out, C_in, 3, 3); b: N(0, 1) of (C_out,)."""
    x = _normal(rng, x_shape, xp, dtype)
    w = _normal(rng, w_shape, xp, dtype, scale=1.0 / math.sqrt(w_shape[1] * 9))
    return x, w, _normal(rng, w_shape[:1], xp, dtype)


def make_conv_case(stride):
    """Factory for Conv2D(stride): tiny x (2,3,5,6) / (2,3,7,6), realistic layer-4 / layer-3 shapes."""
    def make(rng, xp, dtype, size):
        if size == "tiny":
            x_shape, w_shape = ((2, 3, 5, 6) if stride == 1 else (2, 3, 7, 6)), (2, 3, 3, 3)
        else:
            x_shape, w_shape = ((2, 16, 64, 48), (32, 16, 3, 3)) if stride == 1 else \
                ((2, 32, 37, 53), (16, 32, 3, 3))
        x, w, b = _conv_inputs(rng, xp, dtype, x_shape, w_shape)
        layer = nn.Conv2D(w, b, stride=stride)
        return _layer_case(layer, {"x": x, **layer.params}, f"x{_shape_text(x_shape)} w{_shape_text(w_shape)}")
    return make


def make_relu_case(rng, xp, dtype, size):
    """ReLU with inputs ``0.1 ≤ |x| ≤ 1`` of both signs, so no ε moves an input across the kink."""
    shape = (2, 3, 5, 6) if size == "tiny" else (2, 32, 64, 48)
    layer = nn.ReLU()
    variables = {"x": _away_from_zero(rng, shape, xp, dtype)}

    def masks():
        return [variables["x"] > 0]
    return _layer_case(layer, variables, f"x{_shape_text(shape)}, |x|>=0.1", masks)


def make_tanh_case(rng, xp, dtype, size):
    shape = (2, 3, 5, 6) if size == "tiny" else (2, 3, 64, 48)
    return _layer_case(nn.Tanh(), {"x": _normal(rng, shape, xp, dtype)}, f"x{_shape_text(shape)}")


def make_upsample_case(rng, xp, dtype, size):
    """Upsample2x with a crop on one axis: tiny (2,3,5,4) → 9×8, realistic (2,16,19,27) → 37×53."""
    shape, out_hw = ((2, 3, 5, 4), (9, 8)) if size == "tiny" else ((2, 16, 19, 27), (37, 53))
    layer = nn.Upsample2x(output_size=out_hw)
    return _layer_case(layer, {"x": _normal(rng, shape, xp, dtype)},
                       f"x{_shape_text(shape)}->{out_hw[0]}x{out_hw[1]}")


def make_upsample_conv_case(rng, xp, dtype, size):
    """UpsampleConv2D (layer 4 fused): tiny (2,3,5,4) → 9×8 with w (2,3,3,3), realistic (2,16,19,27) → 37×53."""
    (shape, out_hw, w_shape) = ((2, 3, 5, 4), (9, 8), (2, 3, 3, 3)) if size == "tiny" else \
        ((2, 16, 19, 27), (37, 53), (32, 16, 3, 3))
    x, w, b = _conv_inputs(rng, xp, dtype, shape, w_shape)
    layer = nn.UpsampleConv2D(w, b, output_size=out_hw)
    return _layer_case(layer, {"x": x, **layer.params},
                       f"x{_shape_text(shape)}->{out_hw[0]}x{out_hw[1]} w{_shape_text(w_shape)}")


def make_logbank_case(rng, xp, dtype, size):
    shape = (2, 3, 7, 8) if size == "tiny" else (2, 3, 64, 48)
    layer = nn.LoGBank(model.DEFAULT_SIGMAS)
    return _layer_case(layer, {"x": _normal(rng, shape, xp, dtype)}, f"x{_shape_text(shape)}")


PIXEL_WEIGHTS = (1.0, 0.5, 2.0)   # unequal, so a mixed-up channel index shows


def make_loss_case(kind):
    """Factory for PixelLoss ("pl") / SpatialFrequencyLoss ("sfl"): d(E)/d(recon), group of 2 in a batch of 3."""
    def make(rng, xp, dtype, size):
        shape = ((2, 3, 5, 6) if kind == "pl" else (2, 3, 7, 6)) if size == "tiny" else (2, 3, 64, 48)
        recon = _uniform(rng, shape, xp, dtype)
        target = _uniform(rng, shape, xp, dtype)
        batch_count = shape[0] + 1
        loss = losses.PixelLoss(PIXEL_WEIGHTS) if kind == "pl" else \
            losses.SpatialFrequencyLoss(model.DEFAULT_SIGMAS, model.DEFAULT_SFL_WEIGHTS)
        variables = {"recon": recon}

        def evaluate():
            return loss.forward(variables["recon"], target, batch_count)[0]

        def gradients(upstream):
            return {"recon": upstream * loss.backward()}
        return Case(variables, evaluate, gradients, f"recon{_shape_text(shape)}, N_m={batch_count}")
    return make


def make_l1_case(rng, xp, dtype, size):
    """L1Loss: d(share)/d(recon) with every |recon − target| ≥ 0.05, so no ε crosses the kink of |·|."""
    shape = (2, 3, 5, 6) if size == "tiny" else (2, 3, 64, 48)
    target = _uniform(rng, shape, xp, dtype)
    step = rng.uniform(0.05, 0.5, shape) * rng.choice([-1.0, 1.0], shape)
    variables = {"recon": target + to_device(step.astype(dtype), xp)}
    loss = losses.L1Loss()
    batch_count = shape[0] + 1

    def evaluate():
        return loss.forward(variables["recon"], target, batch_count)[0]

    def gradients(upstream):
        return {"recon": upstream * loss.backward()}
    return Case(variables, evaluate, gradients, f"recon{_shape_text(shape)}, N_m={batch_count}, |d|>=0.05")


def reference_l1(recon, target, batch_count):
    """``(1/N_m) Σ_i mean_{c,y,x} |recon − target|`` term by term."""
    total = 0.0
    for i in range(recon.shape[0]):
        total += float(np.mean(np.abs(recon[i] - target[i])))
    return total / batch_count


def forward_l1(rng, xp):
    recon, target = rng.uniform(-1, 1, (2, 3, 5, 6)), rng.uniform(-1, 1, (2, 3, 5, 6))
    value, _ = losses.L1Loss().forward(to_device(recon, xp), to_device(target, xp), 3)
    return _forward_measurement("(2,3,5,6), N_m=3", value, reference_l1(recon, target, 3), "E_L1")


def network_batch(rng, xp, dtype, size):
    """Images in [−1, 1]: tiny = (3,5,6) + (3,4,3); realistic = 2 × (3,64,48) + (3,37,53)."""
    shapes = [(3, 5, 6), (3, 4, 3)] if size == "tiny" else [(3, 64, 48), (3, 64, 48), (3, 37, 53)]
    return [_uniform(rng, s, xp, dtype) for s in shapes]


def make_network_case(loss):
    """Factory for the whole Autoencoder with the objective ``loss``: E(θ) over all eight parameter arrays.

    An ``fft`` term's focal weights are recorded at the base point and replayed in every
    evaluation (they are constants by definition, see :class:`sflnet.losses.FocalFrequencyLoss`).
    """
    def make(rng, xp, dtype, size):
        params = check_params(rng, xp, dtype)
        batch = network_batch(rng, xp, dtype, size)
        net = model.Autoencoder(params, loss=loss)
        variables = net.params
        fft = net.objective.losses.get("fft")
        if fft is not None:
            fft.record_weights = True
            net.loss_and_grads(batch, compute_grads=False)
            fft.record_weights = False

        def evaluate():
            return xp.asarray(net.loss_and_grads(batch, compute_grads=False).E, dtype=dtype)

        def gradients(upstream):
            grads = net.loss_and_grads(batch, compute_grads=True).grads
            return {name: upstream * g for name, g in grads.items()}

        def masks():
            found = []
            for group in model.as_groups(batch):
                net.forward(group)
                found += [layer.positive_mask.copy() for layer in net.layers if isinstance(layer, nn.ReLU)]
            return found

        sample = {}
        if size == "tiny":
            for name in model.PARAM_NAMES:
                shape = model.PARAM_SHAPES[name]
                count = int(np.prod(shape))
                if name.startswith("w") and count > NETWORK_DENSE_SAMPLE:
                    flat = np.sort(rng.choice(count, size=NETWORK_DENSE_SAMPLE, replace=False))
                    sample[name] = [np.unravel_index(i, shape) for i in flat]
        images = " + ".join(_shape_text(image.shape) for image in batch)
        return Case(variables, evaluate, gradients, f"batch {images}", masks, sample)
    return make


# ---------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------

def _objective(case, upstream):
    """``s = ⟨out, upstream⟩`` as a Python float (the scalar whose gradient the backward computes)."""
    return float((case.evaluate() * upstream).sum())


def _mask_flips(masks_a, masks_b):
    """Number of ReLU units whose on/off state differs between two mask lists."""
    return sum(int((a != b).sum()) for a, b in zip(masks_a, masks_b))


def _format_index(index):
    return "[" + ",".join(str(int(i)) for i in index) + "]"


def _analytic_at_base(case, upstream):
    case.evaluate()
    return {name: np.asarray(to_host(g), dtype=np.float64) for name, g in case.gradients(upstream).items()}


@dataclass
class _DenseAtEps:
    """The dense check at one ε: numeric gradients at the checked indices, errors per variable, mask flips."""

    eps: float
    numeric: dict
    errors: dict
    flips: int

    @property
    def worst(self):
        return max(self.errors.values())


def dense_check(case, upstream, eps_values=EPS_SWEEP):
    """Central differences for every (or every sampled) element of every variable, for each ε.

    Returns a :class:`Measurement` at the best ε (the smallest worst-over-variables
    error among the ε whose perturbations left every ReLU mask unchanged).
    """
    analytic = _analytic_at_base(case, upstream)
    base_masks = case.masks() if case.masks else None
    indices = {name: case.sample.get(name, list(np.ndindex(*v.shape))) for name, v in case.variables.items()}
    checked = {name: np.array([analytic[name][i] for i in indices[name]]) for name in case.variables}
    if case.error_scale not in ("variable", "gradient"):
        raise ValueError(f"Case.error_scale must be 'variable' or 'gradient', got {case.error_scale!r}")
    whole_scale = max(float(np.max(np.abs(g), initial=0.0)) for g in analytic.values()) \
        if case.error_scale == "gradient" else 0.0

    def perturbed_objective(v, index, value):
        """s with ``v[index] = value``, and the ReLU units that changed state (0 without ReLU)."""
        v[index] = value
        s = _objective(case, upstream)
        return s, (_mask_flips(base_masks, case.masks()) if base_masks is not None else 0)

    sweep = []
    for eps in eps_values:
        numeric, flips = {}, 0
        for name, v in case.variables.items():
            values = []
            for index in indices[name]:
                original = float(v[index])
                plus, flips_plus = perturbed_objective(v, index, original + eps)
                minus, flips_minus = perturbed_objective(v, index, original - eps)
                v[index] = original
                flips += flips_plus + flips_minus
                values.append((plus - minus) / (2 * eps))
            numeric[name] = np.array(values, dtype=np.float64)
        errors = {name: rel_error(checked[name], numeric[name], whole_scale) for name in case.variables}
        sweep.append(_DenseAtEps(eps, numeric, errors, flips))

    best = min([r for r in sweep if r.flips == 0] or sweep, key=lambda r: r.worst)
    worst_name = max(best.errors, key=best.errors.get)
    counted = sum(len(i) for i in indices.values())
    total = sum(int(np.prod(v.shape)) for v in case.variables.values())
    notes = [f"{counted} of {total} elements"] if counted < total else []
    if whole_scale:
        notes.append(f"errors relative to max |analytic| over all {total} elements ({whole_scale:.2g})")
    if base_masks is not None:
        flipped = [f"{r.eps:g}" for r in sweep if r.flips]
        notes.append(f"{case.mask_kind} unchanged at every ±eps" if not flipped
                     else f"{case.mask_kind} flipped at eps {', '.join(flipped)} (not used)")
        if best.flips:
            notes.append("NO flip-free eps")
    samples = [f"eps={best.eps:g}; gradient of <out, dy> with a random dy",
               f"  {'variable':<10}{'index':<16}{'analytic':>24}{'numeric':>24}{'|diff|':>11}"]
    for name in case.variables:
        a, b = checked[name], best.numeric[name]
        worst_pos = int(np.argmax(np.abs(a - b)))
        smallest_pos = int(np.argmin(np.abs(a)))   # e.g. a ReLU's off branch
        for pos in sorted({0, min(1, len(a) - 1), smallest_pos, worst_pos}):
            samples.append(f"  {name:<10}{_format_index(indices[name][pos]):<16}{a[pos]:>+24.15e}"
                           f"{b[pos]:>+24.15e}{abs(a[pos] - b[pos]):>11.2e}")
    return Measurement(case.shape, best.worst, best.eps, "; ".join(notes), samples, worst_name)


MIN_PROJECTION = 0.5   # redraw r (or y) when |⟨g, r⟩| < MIN_PROJECTION · ‖g‖ / √n (see below)
MAX_REDRAWS = 30


def _random_unit_direction(rng, shapes):
    """{name: host float64 array} with the given shapes, one unit vector over all of them together."""
    r = {name: rng.standard_normal(shape) for name, shape in shapes.items()}
    norm = math.sqrt(sum(float(np.sum(d * d)) for d in r.values()))
    return {name: d / norm for name, d in r.items()}


def _well_conditioned(projection, norm, size):
    """True unless ``|projection| < MIN_PROJECTION · norm / √size``.

    For a random unit r, ``⟨g, r⟩ ≈ z · ‖g‖/√n`` with z ~ N(0, 1). When |z| is tiny
    the two sides of a directional (or adjoint) comparison are tiny too, the
    float64 rounding of the full sums dominates, and the *relative* error is
    meaningless (it grows like 1/|z|). Such draws (|z| < 0.5, about 38%) are
    redrawn; a wrong backward is not hidden by this, because r is still random
    with respect to the error, and a zero gradient (norm 0) is never redrawn.
    """
    return norm == 0 or abs(projection) * math.sqrt(size) >= MIN_PROJECTION * norm


def _directional_at(case, upstream, originals, r_dev, eps):
    """``((s(θ+εr) − s(θ−εr)) / 2ε, ReLU units whose state differs between θ+εr and θ−εr)``."""
    for name, v in case.variables.items():
        v[...] = originals[name] + eps * r_dev[name]
    plus = _objective(case, upstream)
    masks_plus = case.masks() if case.masks else None
    for name, v in case.variables.items():
        v[...] = originals[name] - eps * r_dev[name]
    minus = _objective(case, upstream)
    flips = _mask_flips(masks_plus, case.masks()) if case.masks else 0
    for name, v in case.variables.items():
        v[...] = originals[name]
    return (plus - minus) / (2 * eps), flips


def directional_check(case, upstream, rng, seeds=DIRECTIONAL_SEEDS, eps_values=EPS_SWEEP):
    """Chainer's check_backward: ``(s(θ+εr) − s(θ−εr))/2ε`` vs ``⟨∇s, r⟩`` for random unit directions r.

    r is one unit vector over all variables together. Per direction and ε the
    error is ``|fd − ⟨∇s, r⟩| / max(1e-8, |fd| + |⟨∇s, r⟩|)``; a row reports the
    ε with the smallest worst-over-directions error among the ε at which no
    direction changed a ReLU mask between θ+εr and θ−εr. Redrawn: directions
    with a tiny ⟨∇s, r⟩ (:func:`_well_conditioned`), and directions whose ±εr
    changes a ReLU mask at every ε of the sweep (that crosses a kink, which no
    backward can match; with O(1) pre-activations it is rare).
    """
    analytic_grads = _analytic_at_base(case, upstream)
    grad_norm = math.sqrt(sum(float(np.sum(g * g)) for g in analytic_grads.values()))
    size = sum(g.size for g in analytic_grads.values())
    originals = {name: v.copy() for name, v in case.variables.items()}
    shapes = {name: v.shape for name, v in case.variables.items()}
    accepted, small, kinked = [], 0, 0
    while len(accepted) < seeds and small + kinked <= MAX_REDRAWS:
        r = _random_unit_direction(rng, shapes)
        analytic = sum(float(np.sum(analytic_grads[name] * r[name])) for name in r)
        if not _well_conditioned(analytic, grad_norm, size):
            small += 1
            continue
        r_dev = {name: to_device(d.astype(v.dtype), get_array_module(v))
                 for (name, d), v in zip(r.items(), case.variables.values())}
        per_eps = {eps: _directional_at(case, upstream, originals, r_dev, eps) for eps in eps_values}
        if case.masks and all(flips for _, flips in per_eps.values()):
            kinked += 1
            continue
        accepted.append((analytic, per_eps))
    if len(accepted) < seeds:
        return Measurement(case.shape, math.inf, None,
                           f"only {len(accepted)} usable directions in {MAX_REDRAWS} redraws")

    def worst(eps):
        return max(scalar_rel_error(analytic, per_eps[eps][0]) for analytic, per_eps in accepted)
    flipped = [eps for eps in eps_values if any(per_eps[eps][1] for _, per_eps in accepted)]
    usable = [eps for eps in eps_values if eps not in flipped] or list(eps_values)
    best = min(usable, key=worst)
    notes = [f"{kinked} directions redrawn (kink crossed at every eps)"] if kinked else []
    if case.masks:
        notes.append(f"{case.mask_kind} identical at θ±εr at every eps" if not flipped
                     else f"{case.mask_kind} identical at θ±εr only for eps {', '.join(f'{e:g}' for e in usable)}")
    note = "; ".join(notes)
    samples = [f"eps={best:g}; one line per random unit direction r "
               f"({small} draws with |<grad s, r>| < {MIN_PROJECTION} |grad s|/sqrt(n) redrawn)"]
    for analytic, per_eps in accepted:
        numeric = per_eps[best][0]
        samples.append(f"  <grad s, r> = {analytic:+.15e}   (s(θ+εr)−s(θ−εr))/2ε = {numeric:+.15e}"
                       f"   rel {scalar_rel_error(analytic, numeric):.2e}")
    return Measurement(case.shape, worst(best), best, note, samples)


def _random_cotangent(rng, forward_x, xp):
    """A random y shaped like ``forward_x`` with ⟨Ax, y⟩ not accidentally tiny (see :func:`_well_conditioned`)."""
    ax = np.asarray(to_host(forward_x), dtype=np.float64)
    norm = float(np.linalg.norm(ax))
    for _ in range(MAX_REDRAWS):
        y = rng.standard_normal(ax.shape)
        y /= np.linalg.norm(y)
        if _well_conditioned(float(np.sum(ax * y)), norm, ax.size):
            break
    return to_device(y, xp)


def _inner(a, b):
    return float((a * b).sum())


def _adjoint_measurement(shape, forward_x, x, y, adjoint_y):
    """``|⟨Ax, y⟩ − ⟨x, Aᵀy⟩| / |⟨Ax, y⟩|`` with the two inner products shown to a learner."""
    lhs, rhs = _inner(forward_x, y), _inner(x, adjoint_y)
    error = abs(lhs - rhs) / max(abs(lhs), 1e-300)
    return Measurement(shape, error, None, "",
                       [f"  <Ax, y> = {lhs:+.17e}", f"  <x, A^T y> = {rhs:+.17e}"])


def _forward_measurement(shape, computed, expected, note=""):
    computed = np.asarray(to_host(computed), dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    flat_c, flat_e = computed.reshape(-1), expected.reshape(-1)
    samples = [f"  {'element':<10}{'sflnet':>26}{'reference':>26}"]
    for i in sorted({0, flat_c.size // 2, flat_c.size - 1}):
        samples.append(f"  {i:<10}{flat_c[i]:>+26.17e}{flat_e[i]:>+26.17e}")
    return Measurement(shape, rel_error(computed, expected), None, note, samples)


# --- forward references, one function per row: (rng, xp) -> Measurement --------

def forward_conv(stride):
    def check(rng, xp):
        x = rng.standard_normal((2, 3, 9, 8))
        w = rng.standard_normal((4, 3, 3, 3))
        b = rng.standard_normal(4)
        layer = nn.Conv2D(to_device(w, xp), to_device(b, xp), stride=stride)
        out = layer.forward(to_device(x, xp))
        return _forward_measurement("x(2,3,9,8) w(4,3,3,3)", out, reference_conv2d(x, w, b, stride))
    return check


def forward_relu(rng, xp):
    x = rng.standard_normal((2, 3, 9, 8))
    return _forward_measurement("x(2,3,9,8)", nn.ReLU().forward(to_device(x, xp)), np.maximum(x, 0.0))


def forward_tanh(rng, xp):
    x = 2 * rng.standard_normal((2, 3, 9, 8))
    return _forward_measurement("x(2,3,9,8)", nn.Tanh().forward(to_device(x, xp)), np.tanh(x))


def forward_upsample(rng, xp):
    """Odd and even sizes: 5×7 → 9×13 (both axes cropped) and 4×3 → 8×6."""
    worst, samples = None, []
    for shape, out_hw in (((2, 3, 5, 7), (9, 13)), ((2, 3, 4, 3), (8, 6))):
        x = rng.standard_normal(shape)
        out = nn.Upsample2x(output_size=out_hw).forward(to_device(x, xp))
        m = _forward_measurement("", out, reference_upsample2x(x, *out_hw))
        worst = m if worst is None or m.error > worst.error else worst
        samples += [f"{_shape_text(shape)} -> {out_hw}"] + m.samples
    return Measurement("(2,3,5,7)->9x13; (2,3,4,3)->8x6", worst.error, None, "", samples)


def forward_upsample_conv(rng, xp):
    """The fused layer against the pixel-loop bilinear ×2 then scipy's correlate (both axes cropped)."""
    x = rng.standard_normal((2, 3, 5, 7))
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    out = nn.UpsampleConv2D(to_device(w, xp), to_device(b, xp), output_size=(9, 13)).forward(to_device(x, xp))
    return _forward_measurement("x(2,3,5,7)->9x13 w(4,3,3,3)", out,
                                reference_conv2d(reference_upsample2x(x, 9, 13), w, b, 1))


def forward_logbank(rng, xp):
    """Separable fast path vs the literal correlate2d sum; a 9×8 image is smaller than the 27×27 kernel."""
    worst, samples = 0.0, []
    for shape in ((2, 3, 9, 8), (1, 3, 37, 53)):
        f = rng.standard_normal(shape)
        out = nn.LoGBank(model.DEFAULT_SIGMAS).forward(to_device(f, xp))
        m = _forward_measurement("", out, reference_log_bank(f, model.DEFAULT_SIGMAS))
        worst = max(worst, m.error)
        samples += [_shape_text(shape)] + m.samples
    return Measurement("(2,3,9,8); (1,3,37,53)", worst, None, "", samples)


def forward_log_kernel(rng, xp):
    """log_kernel(σ) vs Eq. 5 written out, and its size vs the paper's 7, 13, 27."""
    del rng, xp   # deterministic and host-only
    worst, sizes, samples = 0.0, [], []
    for sigma in model.DEFAULT_SIGMAS:
        computed, expected = log_kernel(sigma), reference_log_kernel(sigma)
        sizes.append(computed.shape[0])
        if computed.shape != expected.shape:
            worst = math.inf
            continue
        m = _forward_measurement("", computed, expected)
        worst = max(worst, m.error)
        samples += [f"sigma={sigma:g}, k={computed.shape[0]}"] + m.samples
    if tuple(sizes) != (7, 13, 27):
        worst = math.inf
    return Measurement("sigma 0.8,1.6,3.2", worst, None, f"sizes {sizes} (paper: 7, 13, 27)", samples)


def forward_pixel_loss(rng, xp):
    recon, target = rng.uniform(-1, 1, (2, 3, 5, 6)), rng.uniform(-1, 1, (2, 3, 5, 6))
    value, _ = losses.PixelLoss(PIXEL_WEIGHTS).forward(to_device(recon, xp), to_device(target, xp), 3)
    return _forward_measurement("(2,3,5,6), N_m=3", value,
                                reference_pixel_loss(recon, target, PIXEL_WEIGHTS, 3), "E_PL")


def forward_sfl(rng, xp):
    recon, target = rng.uniform(-1, 1, (2, 3, 9, 8)), rng.uniform(-1, 1, (2, 3, 9, 8))
    loss = losses.SpatialFrequencyLoss(model.DEFAULT_SIGMAS, model.DEFAULT_SFL_WEIGHTS)
    weighted, parts = loss.forward(to_device(recon, xp), to_device(target, xp), 3)
    unit = [float(parts[column]) for column in loss.columns]
    ref_weighted, ref_unit = reference_sfl(recon, target, model.DEFAULT_SIGMAS, model.DEFAULT_SFL_WEIGHTS, 3)
    computed = np.concatenate([[float(weighted)], unit])
    return _forward_measurement("(2,3,9,8), N_m=3", computed, np.concatenate([[ref_weighted], ref_unit]),
                                "E_SFL and the 3 unit subbands")


def forward_network(loss):
    def check(rng, xp):
        params = check_params(rng, np, np.float64)
        images = network_batch(rng, np, np.float64, "realistic")
        net = model.Autoencoder({n: to_device(p, xp) for n, p in params.items()}, loss=loss)
        result = net.loss_and_grads([to_device(i, xp) for i in images], compute_grads=False)
        computed = np.array([result.E, result.E_PL, result.E_SFL, *result.sfl])
        shape = "batch " + " + ".join(_shape_text(i.shape) for i in images)
        return _forward_measurement(shape, computed, reference_network(params, images, loss),
                                    "E, E_PL, E_SFL, 3 subbands")
    return check


# --- adjoint tests, one function per row: (rng, xp) -> Measurement --------------

def adjoint_im2col(stride):
    def check(rng, xp):
        x = _normal(rng, (2, 4, 13, 10), xp, np.float64)
        cols = im2col(x, 3, 3, stride, 1)
        y = _random_cotangent(rng, cols, xp)
        back = col2im(y, x.shape, 3, 3, stride, 1)
        return _adjoint_measurement(f"x(2,4,13,10) k3 s{stride}", cols, x, y, back)
    return check


def adjoint_conv(stride):
    def check(rng, xp):
        x = _normal(rng, (2, 4, 13, 10), xp, np.float64)
        w = _normal(rng, (5, 4, 3, 3), xp, np.float64)
        layer = nn.Conv2D(w, xp.zeros(5, dtype=np.float64), stride=stride)
        out = layer.forward(x)
        y = _random_cotangent(rng, out, xp)
        return _adjoint_measurement("x(2,4,13,10) w(5,4,3,3) b=0", out, x, y, layer.backward(y))
    return check


def adjoint_upsample(rng, xp):
    worst = None
    for shape, out_hw in (((2, 3, 19, 27), (37, 53)), ((2, 3, 32, 24), (64, 48))):
        layer = nn.Upsample2x(output_size=out_hw)
        x = _normal(rng, shape, xp, np.float64)
        out = layer.forward(x)
        y = _random_cotangent(rng, out, xp)
        m = _adjoint_measurement("", out, x, y, layer.backward(y))
        worst = m if worst is None or m.error > worst.error else worst
    worst.shape = "(2,3,19,27)->37x53; (2,3,32,24)->64x48"
    return worst


def adjoint_logbank(rng, xp):
    layer = nn.LoGBank(model.DEFAULT_SIGMAS)
    x = _normal(rng, (2, 3, 37, 53), xp, np.float64)
    out = layer.forward(x)
    y = _random_cotangent(rng, out, xp)
    return _adjoint_measurement("x(2,3,37,53)", out, x, y, layer.backward(y))


# ---------------------------------------------------------------------------
# The registry: what is checked, and how strictly
# ---------------------------------------------------------------------------

@dataclass
class LayerEntry:
    """Everything the suite checks for one layer name.

    make_case:  (rng, xp, dtype, size) → :class:`Case`, size "tiny" (dense) or "realistic"
                (directional, float32 GPU comparison); None for a bare kernel
    references: [(check label, fn(rng, xp) → Measurement)] forward-vs-reference rows
    adjoints:   [(check label, fn(rng, xp) → Measurement)] adjoint rows
    """

    make_case: object = None
    references: list = field(default_factory=list)
    adjoints: list = field(default_factory=list)
    dense_threshold: float = THRESHOLD_SMOOTH
    directional_threshold: float = THRESHOLD_SMOOTH
    dense: bool = True     # False: the dense row is left out (whole networks of the added losses)
    full_sample: object = None   # (rng, variables) → Case.sample used by --full; None: every element


# The objectives of the whole-network rows of the added losses (one per loss, and one mixing all six).
NETWORK_OBJECTIVES = {
    "network_l1": "l1",
    "network_ssim": "ssim",
    "network_fft": "fft",
    "network_stft": "stft",
    "network_mixed": "pl+sfl+0.5*l1+2*ssim+3*fft+0.0001*stft",
}


def default_registry():
    """name → :class:`LayerEntry`, in report order. Built fresh, so monkeypatched classes are picked up."""
    # The rows of the ssim, fft and stft losses, and of the β-VAE's layers, live beside them; imported here,
    # when the table is built, because those modules use this module's checkers.
    from sflnet import gradcheck_freq, gradcheck_ssim, gradcheck_vae  # noqa: PLC0415

    network_rows = {
        name: LayerEntry(make_network_case(expression), dense=False,
                         directional_threshold=THRESHOLD_NETWORK_DIRECTIONAL)
        for name, expression in NETWORK_OBJECTIVES.items()}
    return {
        "im2col": LayerEntry(adjoints=[("adjoint col2im s=1", adjoint_im2col(1)),
                                       ("adjoint col2im s=2", adjoint_im2col(2))]),
        "conv2d_s1": LayerEntry(make_conv_case(1), [("forward vs scipy.correlate", forward_conv(1))],
                                [("adjoint w.r.t. x", adjoint_conv(1))]),
        "conv2d_s2": LayerEntry(make_conv_case(2), [("forward vs scipy.correlate", forward_conv(2))],
                                [("adjoint w.r.t. x", adjoint_conv(2))]),
        "relu": LayerEntry(make_relu_case, [("forward vs np.maximum", forward_relu)]),
        "tanh": LayerEntry(make_tanh_case, [("forward vs np.tanh", forward_tanh)]),
        "upsample2x": LayerEntry(make_upsample_case, [("forward vs pixel loop", forward_upsample)],
                                 [("adjoint", adjoint_upsample)]),
        "upsample_conv": LayerEntry(make_upsample_conv_case,
                                    [("forward vs pixel loop + scipy.correlate", forward_upsample_conv)]),
        "logbank": LayerEntry(make_logbank_case, [("log_kernel vs Eq. 5", forward_log_kernel),
                                                  ("forward vs correlate2d", forward_logbank)],
                              [("adjoint", adjoint_logbank)]),
        "pixel_loss": LayerEntry(make_loss_case("pl"), [("forward vs Eq. 4 loop", forward_pixel_loss)]),
        "sfl_loss": LayerEntry(make_loss_case("sfl"), [("forward vs Eq. 6 loop", forward_sfl)]),
        "network_pl": LayerEntry(make_network_case("pl"), [("forward vs reference net", forward_network("pl"))],
                                 dense_threshold=THRESHOLD_NETWORK_DENSE,
                                 directional_threshold=THRESHOLD_NETWORK_DIRECTIONAL),
        "network_sfl": LayerEntry(make_network_case("pl+sfl"),
                                  [("forward vs reference net", forward_network("pl+sfl"))],
                                  dense_threshold=THRESHOLD_NETWORK_DENSE,
                                  directional_threshold=THRESHOLD_NETWORK_DIRECTIONAL),
        "l1_loss": LayerEntry(make_l1_case, [("forward vs mean |d| loop", forward_l1)]),
        "ssim_loss": LayerEntry(gradcheck_ssim.make_ssim_case, [("forward vs reference", gradcheck_ssim.forward_ssim)],
                                [("adjoint valid Gaussian filter", gradcheck_ssim.adjoint_ssim_filter)]),
        "fft_loss": LayerEntry(gradcheck_freq.make_fft_case, [("forward vs numpy.fft", gradcheck_freq.forward_fft)],
                               [("adjoint orthonormal DFT", gradcheck_freq.adjoint_dft)]),
        "stft_loss": LayerEntry(gradcheck_freq.make_stft_case,
                                [("forward vs window loop", gradcheck_freq.forward_stft)],
                                [("adjoint framed STFT", gradcheck_freq.adjoint_stft_frames)]),
        **network_rows,
        **gradcheck_vae.registry_entries(),   # the β-VAE's layers (seed 004)
    }


def layer_names():
    """The checked layer names, in report order (built when asked: the loss rows import this module)."""
    return tuple(default_registry())


# ---------------------------------------------------------------------------
# Running the suite
# ---------------------------------------------------------------------------

def _run_one(rows, device, layer, check, threshold, measure):
    """Run ``measure() -> Measurement`` and append its row; an exception is a FAIL row, not a crash."""
    try:
        m = measure()
    except Exception as exc:  # a planted bug may break shapes: report it on its row
        rows.append(CheckRow(device, layer, check, "-", None, None, threshold, False,
                             f"raised {type(exc).__name__}: {exc}"))
        return
    finite = m.error is not None and math.isfinite(m.error)
    rows.append(CheckRow(device, layer, check, m.shape, m.eps, m.error if finite else None, threshold,
                         finite and m.error <= threshold, m.note, m.samples, m.worst))


def _upstream(rng, case, xp):
    """A random upstream gradient shaped like the case's output (a random scalar for losses)."""
    out = case.evaluate()
    dtype = case.variables[next(iter(case.variables))].dtype
    return to_device(rng.standard_normal(getattr(out, "shape", ())).astype(dtype), xp)


def run_float64_checks(rows, registry, names, xp, device, seed, full=False):
    """Forward-reference, dense, directional and adjoint rows for ``names``, float64 on ``xp``."""
    for name in names:
        entry = registry[name]
        for label, fn in entry.references:
            _run_one(rows, device, name, label, THRESHOLD_REFERENCE,
                     lambda fn=fn, label=label: fn(_rng(seed, name, label), xp))
        if entry.make_case is not None:
            def dense():
                rng = _rng(seed, name, "dense")
                case = entry.make_case(rng, xp, np.float64, "tiny")
                if full:   # every element of every variable, or the entry's own --full sample
                    case.sample = {} if entry.full_sample is None else entry.full_sample(rng, case.variables)
                return dense_check(case, _upstream(rng, case, xp))

            def directional():
                rng = _rng(seed, name, "directional")
                case = entry.make_case(rng, xp, np.float64, "realistic")
                return directional_check(case, _upstream(rng, case, xp), rng)
            whole = full and entry.full_sample is None
            dense_label = "dense" if whole or not name.startswith("network") else "dense (sampled)"
            if entry.dense:
                _run_one(rows, device, name, dense_label, entry.dense_threshold, dense)
            _run_one(rows, device, name, "directional", entry.directional_threshold, directional)
        for label, fn in entry.adjoints:
            _run_one(rows, device, name, label, THRESHOLD_ADJOINT,
                     lambda fn=fn, label=label: fn(_rng(seed, name, label), xp))


def float32_gpu_vs_cpu(entry, cupy, seed, name):
    """Forward output and every gradient of the realistic case, float32 on CuPy vs float32 on NumPy.

    error = max over all compared arrays of ``max |gpu − cpu| / (atol + rtol |cpu|)``; ≤ 1 is allclose.
    """
    results = []
    for xp in (np, cupy):
        rng = _rng(seed, name, "float32")
        case = entry.make_case(rng, xp, np.float32, "realistic")
        upstream = _upstream(rng, case, xp)
        out = to_host(case.evaluate())
        grads = {k: to_host(g) for k, g in case.gradients(upstream).items()}
        results.append((out, grads, case.shape))
    (out_cpu, grads_cpu, shape), (out_gpu, grads_gpu, _) = results
    pairs = [("output", out_gpu, out_cpu)] + [(k, grads_gpu[k], grads_cpu[k]) for k in grads_cpu]
    worst, worst_name = 0.0, ""
    for label, gpu, cpu in pairs:
        gpu, cpu = np.asarray(gpu, np.float64), np.asarray(cpu, np.float64)
        ratio = float(np.max(np.abs(gpu - cpu) / (GPU_ATOL + GPU_RTOL * np.abs(cpu))))
        if ratio >= worst:
            worst, worst_name = ratio, label
    return Measurement(shape, worst, None, "", [], worst_name)


def resolve_layers(layer, names=None):
    """Which layers to check: ``None`` → all ``names``; a name or a list of names → those, in report order.

    Names are case-insensitive ("-" may stand for "_"); an unknown name is an SflnetError.
    """
    names = layer_names() if names is None else names
    if layer is None:
        return list(names)
    wanted = [layer] if isinstance(layer, str) else list(layer)
    keys = set()
    for item in wanted:
        key = item.strip().lower().replace("-", "_")
        if key not in names:
            raise SflnetError(f"--layer {item!r} is not a checked layer; choose one of {', '.join(names)}")
        keys.add(key)
    return [name for name in names if name in keys]


def run_suite(device="auto", seed=0, layer=None, full=False, registry=None):
    """Run every check (or those of one ``layer``) and return a :class:`Report`.

    device: "cpu" (NumPy only), "auto" (also CuPy when a GPU is usable), "gpu"
            (also CuPy; SflnetError without a GPU). The float64 NumPy checks always run.
    seed:   base seed of every random draw (each check derives its own stream).
    layer:  None (all), one registry name, or a list of names.
    full:   whole-network dense check on every parameter element (slow) instead of a sample.
    registry: name → :class:`LayerEntry`; default :func:`default_registry`.
    """
    start = time.perf_counter()
    registry = default_registry() if registry is None else registry
    names = resolve_layers(layer, tuple(registry))
    gpu_xp, gpu_note = None, ""
    if device == "cpu":
        gpu_note = "GPU checks skipped: --device cpu"
    elif device in ("auto", "gpu"):
        if device == "gpu" or gpu_available():
            gpu_xp = select_device("gpu")
        else:   # _try_cupy gives the reason in words
            gpu_note = f"GPU checks skipped: {_try_cupy()[1]}"
    else:
        raise SflnetError(f"--device {device!r}: choose one of auto, cpu, gpu")

    rows = []
    run_float64_checks(rows, registry, names, np, "cpu", seed, full)
    if gpu_xp is not None:
        run_float64_checks(rows, registry, names, gpu_xp, "gpu", seed, full)
        for name in names:
            entry = registry[name]
            if entry.make_case is not None:
                _run_one(rows, "gpu", name, "float32 gpu vs cpu", THRESHOLD_GPU_FLOAT32,
                         lambda entry=entry, name=name: float32_gpu_vs_cpu(entry, gpu_xp, seed, name))
        gpu_note = "GPU checks ran: float64 on CuPy, and float32 CuPy vs float32 NumPy"
    return Report(rows, gpu_note, seed, time.perf_counter() - start)


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------

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
  A_o = 0) and reports crossed kink sides like ReLU masks. network_l1 ... network_mixed: the whole CAE with
  that objective, directional only (their images must fit the 11x11 SSIM and 16x16 STFT windows).
beta-VAE layers (conv2d_valid_s*, conv_transpose_s*, linear, sigmoid, reparameterize, kl_loss): directional
  rows use the VAE's MNIST shapes; conv_transpose is checked against a scatter of every input pixel times
  the kernel and against its definition, Conv2D's input gradient; reparameterize keeps eps fixed.
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


# ---------------------------------------------------------------------------
# --explain: the derivation (backward docstring) behind a checked layer
# ---------------------------------------------------------------------------

def backward_targets():
    """name → (label, the backward whose docstring holds the derivation, its class or None) for every
    checked layer name (``im2col`` names the function :func:`sflnet.ops.im2col.col2im`)."""
    from sflnet.models import vae as vae_model  # noqa: PLC0415

    def method(cls):
        return (f"{cls.__module__}.{cls.__qualname__}.backward", cls.backward, cls)

    targets = {
        "im2col": ("sflnet.ops.im2col.col2im (the adjoint of im2col)", col2im, None),
        "conv2d_s1": method(nn.Conv2D), "conv2d_s2": method(nn.Conv2D),
        "relu": method(nn.ReLU), "tanh": method(nn.Tanh), "upsample2x": method(nn.Upsample2x),
        "upsample_conv": method(nn.UpsampleConv2D),
        "logbank": method(nn.LoGBank), "pixel_loss": method(losses.PixelLoss),
        "sfl_loss": method(losses.SpatialFrequencyLoss), "l1_loss": method(losses.L1Loss),
        "ssim_loss": method(losses.SSIMLoss), "fft_loss": method(losses.FocalFrequencyLoss),
        "stft_loss": method(losses.STFTLoss),
        "conv2d_valid_s1": method(nn.Conv2D), "conv2d_valid_s2": method(nn.Conv2D),
        "conv_transpose_s1": method(nn.ConvTranspose2D), "conv_transpose_s2": method(nn.ConvTranspose2D),
        "linear": method(nn.Linear), "sigmoid": method(nn.Sigmoid),
        "reparameterize": method(nn.Reparameterize), "kl_loss": method(losses.KLDivergence),
    }
    for name in ("network_pl", "network_sfl", *NETWORK_OBJECTIVES):
        targets[name] = method(model.Autoencoder)
    for name in ("network_vae", "network_vae_sfl"):
        targets[name] = method(vae_model.VAE)
    return targets


def explain(layer):
    """The derivation of one checked layer's backward: a title line and its docstring, as text.

    When the backward's docstring points to its class ("see the class docstring"), the class
    docstring follows. An unknown layer is an SflnetError listing the known ones.
    """
    import inspect  # noqa: PLC0415

    names = layer_names()
    name = layer.strip().lower().replace("-", "_")
    if name not in names:
        raise SflnetError(f"--explain {layer!r} is not a checked layer; choose one of {', '.join(names)}")
    label, function, cls = backward_targets()[name]
    text = inspect.getdoc(function) or "(no docstring)"
    parts = [f"{name}: {label}", "", text]
    if cls is not None and "class docstring" in text and inspect.getdoc(cls):
        parts += ["", f"{cls.__qualname__}:", "", inspect.getdoc(cls)]
    return "\n".join(parts)
