"""THE gradient checker of sflnet: one ``rel_error``, the dense, directional and adjoint checks.

Used by ``sflnet gradcheck`` (:mod:`sflnet.gradcheck.suite`) and by the tests
(``tests/conftest.py``'s ``fd`` fixture and the loss and layer tests), so there is
one finite-difference engine and one relative error in the project. All checks
run in float64 (host NumPy or device CuPy arrays):

* **dense** (:func:`dense_check`) — central finite differences
  ``(s(θ+ε e_i) − s(θ−ε e_i)) / 2ε`` of ``s = ⟨out, dy⟩`` (``dy`` a *random*
  upstream gradient, never all ones) for every (or every sampled) element of
  every input and parameter of a :class:`Case`, on tiny shapes;
* **directional** (:func:`directional_check`) — Chainer's ``check_backward``: a
  random unit direction ``r`` over all variables, ``(s(θ+εr) − s(θ−εr)) / 2ε``
  against ``⟨∇s, r⟩``, several directions, on realistic shapes;
* **adjoint** (:func:`adjoint_measurement`) — ``⟨Ax, y⟩ = ⟨x, Aᵀy⟩`` for a linear map;
* **forward** (:func:`forward_measurement`) — an output against a reference
  (:mod:`sflnet.gradcheck.references`);
* every numeric check sweeps ε over :data:`EPS_SWEEP` (1e-4 … 1e-7) and reports the best ε.

Piecewise-linear ReLU: a finite difference that crosses the kink at 0 is wrong
by design, not because the backward is. A :class:`Case` may report its ReLU
masks (or the sides of any other kinks); every numeric evaluation compares them
with the unperturbed ones, an ε at which any mask flipped is not used, and the
measurement's note says so.

For a plain host function of one array (the tests' use) there are
:func:`numeric_gradient` and :func:`best_over_eps`.
"""

import math
import zlib
from dataclasses import dataclass, field

import numpy as np

from sflnet.backend import get_array_module, to_device, to_host

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




def numeric_gradient(f, x, eps):
    """Central differences of the scalar function ``f`` at every element of the host array ``x``.

    ``(f(x + ε e_i) − f(x − ε e_i)) / 2ε`` for each i. ``x`` is perturbed in a private
    float64 copy, never in place. returns an array shaped like x.
    """
    x = np.array(x, dtype=np.float64, copy=True)
    grad = np.zeros_like(x)
    flat_x = x.reshape(-1)
    flat_g = grad.reshape(-1)
    for i in range(flat_x.size):
        old = flat_x[i]
        flat_x[i] = old + eps
        plus = f(x)
        flat_x[i] = old - eps
        minus = f(x)
        flat_x[i] = old
        flat_g[i] = (plus - minus) / (2 * eps)
    return grad


def best_over_eps(check, eps_values=None):
    """Run ``check(eps) -> error`` for each ε of the sweep (default :data:`EPS_SWEEP`); the smallest error."""
    return min(check(eps) for eps in (EPS_SWEEP if eps_values is None else eps_values))


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



# ---------------------------------------------------------------------------
# Random data (drawn on the host, so CPU and GPU runs see the same numbers)
# ---------------------------------------------------------------------------

def check_rng(seed, *labels):
    """An independent generator per check: the numbers do not depend on which other checks ran."""
    key = zlib.crc32("/".join(str(label) for label in labels).encode())
    return np.random.default_rng([seed, key])


def normal(rng, shape, xp, dtype, scale=1.0):
    return to_device((scale * rng.standard_normal(shape)).astype(dtype), xp)


def uniform(rng, shape, xp, dtype, low=-1.0, high=1.0):
    return to_device(rng.uniform(low, high, size=shape).astype(dtype), xp)


def away_from_zero(rng, shape, xp, dtype, margin=0.1):
    """Values with ``margin ≤ |x| ≤ 1`` and random signs: both ReLU branches, no kink within any ε."""
    magnitude = rng.uniform(margin, 1.0, size=shape)
    sign = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
    return to_device((sign * magnitude).astype(dtype), xp)



def shape_text(shape):
    return "(" + ",".join(str(s) for s in shape) + ")"

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
               that its rounding swamps a single coordinate's small derivative, see sflnet.gradcheck.cases.vae)
    """

    variables: dict
    evaluate: object
    gradients: object
    shape: str
    masks: object = None
    sample: dict = field(default_factory=dict)
    mask_kind: str = "ReLU masks"   # what ``masks`` reports, for the notes
    error_scale: str = "variable"


def layer_case(layer, variables, shape, masks=None):
    """A Case for a layer whose only non-parameter variable is the input ``x``."""
    def evaluate():
        return layer.forward(variables["x"])

    def gradients(dy):
        grads = {"x": layer.backward(dy)}
        for name in getattr(layer, "params", {}):
            grads[name] = layer.grads[name]
        return grads
    return Case(variables, evaluate, gradients, shape, masks)



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


def random_unit_direction(rng, shapes):
    """{name: host float64 array} with the given shapes, one unit vector over all of them together."""
    r = {name: rng.standard_normal(shape) for name, shape in shapes.items()}
    norm = math.sqrt(sum(float(np.sum(d * d)) for d in r.values()))
    return {name: d / norm for name, d in r.items()}


def well_conditioned(projection, norm, size):
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
    with a tiny ⟨∇s, r⟩ (:func:`well_conditioned`), and directions whose ±εr
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
        r = random_unit_direction(rng, shapes)
        analytic = sum(float(np.sum(analytic_grads[name] * r[name])) for name in r)
        if not well_conditioned(analytic, grad_norm, size):
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


def random_cotangent(rng, forward_x, xp):
    """A random y shaped like ``forward_x`` with ⟨Ax, y⟩ not accidentally tiny (see :func:`well_conditioned`)."""
    ax = np.asarray(to_host(forward_x), dtype=np.float64)
    norm = float(np.linalg.norm(ax))
    for _ in range(MAX_REDRAWS):
        y = rng.standard_normal(ax.shape)
        y /= np.linalg.norm(y)
        if well_conditioned(float(np.sum(ax * y)), norm, ax.size):
            break
    return to_device(y, xp)


def _inner(a, b):
    return float((a * b).sum())


def adjoint_measurement(shape, forward_x, x, y, adjoint_y):
    """``|⟨Ax, y⟩ − ⟨x, Aᵀy⟩| / |⟨Ax, y⟩|`` with the two inner products shown to a learner."""
    lhs, rhs = _inner(forward_x, y), _inner(x, adjoint_y)
    error = abs(lhs - rhs) / max(abs(lhs), 1e-300)
    return Measurement(shape, error, None, "",
                       [f"  <Ax, y> = {lhs:+.17e}", f"  <x, A^T y> = {rhs:+.17e}"])


def forward_measurement(shape, computed, expected, note=""):
    computed = np.asarray(to_host(computed), dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    flat_c, flat_e = computed.reshape(-1), expected.reshape(-1)
    samples = [f"  {'element':<10}{'sflnet':>26}{'reference':>26}"]
    for i in sorted({0, flat_c.size // 2, flat_c.size - 1}):
        samples.append(f"  {i:<10}{flat_c[i]:>+26.17e}{flat_e[i]:>+26.17e}")
    return Measurement(shape, rel_error(computed, expected), None, note, samples)


# --- forward references, one function per row: (rng, xp) -> Measurement --------


def worst_of(parts, shape_text, note=""):
    """One Measurement from several (label, Measurement): the largest error, every part's samples."""
    worst, samples = 0.0, []
    for label, m in parts:
        worst = max(worst, m.error)
        samples += [label] + m.samples
    return Measurement(shape_text, worst, None, note, samples)


def random_upstream(rng, case, xp):
    """A random upstream gradient shaped like the case's output (a random scalar for losses)."""
    out = case.evaluate()
    dtype = case.variables[next(iter(case.variables))].dtype
    return to_device(rng.standard_normal(getattr(out, "shape", ())).astype(dtype), xp)


# ---------------------------------------------------------------------------
# What the suite checks for one name, and how strictly
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
