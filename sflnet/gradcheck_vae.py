"""The gradient-check rows of the β-VAE's layers (seed 004), in the style of :mod:`sflnet.gradcheck`'s row functions.

Layers: :class:`~sflnet.layers.Conv2D` with ``padding="valid"``,
:class:`~sflnet.layers.ConvTranspose2D` (stride 1 and 2), :class:`~sflnet.layers.Linear`,
:class:`~sflnet.layers.Sigmoid`, :class:`~sflnet.layers.Reparameterize` and the
latent term :class:`~sflnet.losses.kl.KLDivergence`. Per layer:

* ``make_*_case`` — the :class:`~sflnet.gradcheck.Case` of the dense ("tiny") and
  directional ("realistic": the VAE's own MNIST-sized shapes) checks;
* ``forward_*`` — the output against an independent host float64 reference:
  ``scipy.signal.correlate`` for the valid convolution, ``scipy.signal.convolve``
  of the zero-interleaved input for the transposed one (every input pixel times
  the kernel, added into the output), plain loops for Linear, ``scipy.special.expit``
  for the sigmoid, and the KL of two Gaussians written as ``log(1/σ) + (σ² + μ²)/2 − ½``;
* ``adjoint_*`` — ``⟨Ax, y⟩ = ⟨x, Aᵀy⟩`` for the maps that are linear in x (zero bias).

:func:`registry_entries` gives them to :func:`sflnet.gradcheck.default_registry`.
"""

import math

import numpy as np
import scipy.signal
import scipy.special

from sflnet import layers
from sflnet.backend import to_device, to_host
from sflnet.gradcheck import (Case, LayerEntry, Measurement, _adjoint_measurement, _forward_measurement,
                              _layer_case, _normal, _random_cotangent, _shape_text)
from sflnet.losses.kl import KLDivergence

# ---------------------------------------------------------------------------
# Independent references (host float64)
# ---------------------------------------------------------------------------


def reference_conv2d_valid(x, w, b, stride):
    """Eq. 2 without padding: ``o[n,c] = Σ_{c'} correlate(x[n,c'], w[c,c'], 'valid')[::s, ::s] + b[c]``.

    x: (N, C_in, H, W), w: (C_out, C_in, k, k), b: (C_out,) → (N, C_out, ⌊(H−k)/s⌋+1, ⌊(W−k)/s⌋+1).
    """
    out = []
    for n in range(x.shape[0]):
        maps = []
        for c in range(w.shape[0]):
            total = sum(scipy.signal.correlate(x[n, ci], w[c, ci], mode="valid", method="direct")
                        for ci in range(w.shape[1]))
            maps.append(total[::stride, ::stride] + b[c])
        out.append(np.stack(maps))
    return np.stack(out)


def reference_conv_transpose(x, w, b, stride):
    """The transposed convolution as a true convolution of the zero-interleaved input.

    Put x[i, j] at (s·i, s·j) of an otherwise zero grid (``x_up``); then
    ``full[c] = Σ_{c'} convolve(x_up[c'], w[c', c], 'full')`` is every input pixel
    times the kernel, added at its place (a convolution, unlike a correlation,
    does not flip the roles: ``full[y] = Σ_i x_up[i] w[y − i]``). The result is
    ``full[p : p + s·h, p : p + s·w] + b``, p = (k−1)/2, zero-extended where full is shorter.

    x: (N, C_in, h, w), w: (C_in, C_out, k, k), b: (C_out,) → (N, C_out, s·h, s·w).
    """
    n_img, c_in, h, wd = x.shape
    c_out, k = w.shape[1], w.shape[2]
    p = (k - 1) // 2
    x_up = np.zeros((n_img, c_in, (h - 1) * stride + 1, (wd - 1) * stride + 1), dtype=np.float64)
    x_up[:, :, ::stride, ::stride] = x
    out = np.zeros((n_img, c_out, stride * h, stride * wd), dtype=np.float64)
    for n in range(n_img):
        for c in range(c_out):
            full = sum(scipy.signal.convolve(x_up[n, ci], w[ci, c], mode="full", method="direct")
                       for ci in range(c_in))
            part = full[p:p + stride * h, p:p + stride * wd]
            out[n, c, :part.shape[0], :part.shape[1]] = part
            out[n, c] += b[c]
    return out


def reference_linear(x, w, b):
    """``y[n, o] = Σ_i x[n, i] w[o, i] + b[o]``, one output at a time (math.fsum)."""
    out = np.empty((x.shape[0], w.shape[0]), dtype=np.float64)
    for n in range(x.shape[0]):
        for o in range(w.shape[0]):
            out[n, o] = math.fsum(float(x[n, i]) * float(w[o, i]) for i in range(x.shape[1])) + b[o]
    return out


def reference_kl(mu, logvar, batch_count):
    """``(1/N_m) Σ_i Σ_j [log(1/σ_ij) + (σ_ij² + μ_ij²)/2 − ½]`` with σ = sqrt(exp(logvar)), term by term."""
    total = 0.0
    for m, lv in zip(np.ravel(mu), np.ravel(logvar)):
        sigma = math.sqrt(math.exp(lv))
        total += math.log(1.0 / sigma) + (sigma * sigma + m * m) / 2.0 - 0.5
    return total / batch_count


# ---------------------------------------------------------------------------
# Cases for the dense ("tiny") and directional ("realistic") checks
# ---------------------------------------------------------------------------

def make_conv_valid_case(stride):
    """Conv2D(padding="valid"): tiny (2,3,7,8) → 5×6 / 3×3; realistic = the VAE encoder's layers."""
    def make(rng, xp, dtype, size):
        if size == "tiny":
            x_shape, w_shape = (2, 3, 7, 8), (2, 3, 3, 3)
        else:   # stride 2: the encoder's second conv 13 → 6; stride 1: an odd×even image
            x_shape, w_shape = ((2, 32, 13, 13), (64, 32, 3, 3)) if stride == 2 else ((2, 8, 28, 27), (16, 8, 3, 3))
        x = _normal(rng, x_shape, xp, dtype)
        w = _normal(rng, w_shape, xp, dtype, scale=1.0 / math.sqrt(w_shape[1] * 9))
        b = _normal(rng, w_shape[:1], xp, dtype)
        layer = layers.Conv2D(w, b, stride=stride, padding="valid")
        variables = {"x": x, "w": layer.params["w"], "b": layer.params["b"]}
        return _layer_case(layer, variables, f"x{_shape_text(x_shape)} w{_shape_text(w_shape)} valid")
    return make


def make_conv_transpose_case(stride):
    """ConvTranspose2D: tiny (2,3,4,5) → 2 channels; realistic = the VAE decoder's layers (7→14, 28→28)."""
    def make(rng, xp, dtype, size):
        if size == "tiny":
            x_shape, w_shape = (2, 3, 4, 5), (3, 2, 3, 3)
        else:
            x_shape, w_shape = ((2, 64, 7, 7), (64, 32, 3, 3)) if stride == 2 else ((2, 32, 28, 28), (32, 1, 3, 3))
        x = _normal(rng, x_shape, xp, dtype)
        w = _normal(rng, w_shape, xp, dtype, scale=1.0 / math.sqrt(w_shape[0] * 9))
        b = _normal(rng, w_shape[1:2], xp, dtype)
        layer = layers.ConvTranspose2D(w, b, stride=stride)
        variables = {"x": x, "w": layer.params["w"], "b": layer.params["b"]}
        return _layer_case(layer, variables, f"x{_shape_text(x_shape)} w{_shape_text(w_shape)} s{stride}")
    return make


def make_linear_case(rng, xp, dtype, size):
    """Linear: tiny x (2,5) w (3,5); realistic = the VAE encoder's head, 6·6·64 = 2304 → 2·latent."""
    x_shape, w_shape = ((2, 5), (3, 5)) if size == "tiny" else ((4, 2304), (20, 2304))
    x = _normal(rng, x_shape, xp, dtype)
    w = _normal(rng, w_shape, xp, dtype, scale=1.0 / math.sqrt(w_shape[1]))
    b = _normal(rng, w_shape[:1], xp, dtype)
    layer = layers.Linear(w, b)
    variables = {"x": x, "w": layer.params["w"], "b": layer.params["b"]}
    return _layer_case(layer, variables, f"x{_shape_text(x_shape)} w{_shape_text(w_shape)}")


def make_sigmoid_case(rng, xp, dtype, size):
    """Sigmoid on N(0, 3²) inputs (both tails and the middle): tiny (2,3,5,4), realistic (2,1,28,28)."""
    shape = (2, 3, 5, 4) if size == "tiny" else (2, 1, 28, 28)
    return _layer_case(layers.Sigmoid(), {"x": _normal(rng, shape, xp, dtype, scale=3.0)}, f"x{_shape_text(shape)}")


def _latents(rng, shape, xp, dtype):
    """(mu, logvar) with logvar in [−3, 1]: σ from 0.22 to 1.65, as a trained encoder gives."""
    mu = _normal(rng, shape, xp, dtype)
    logvar = to_device(rng.uniform(-3.0, 1.0, shape).astype(dtype), xp)
    return mu, logvar


def make_reparameterize_case(rng, xp, dtype, size):
    """z = μ + exp(½ logvar)·ε w.r.t. μ and logvar, ε fixed: tiny (2,3), realistic (32,16)."""
    shape = (2, 3) if size == "tiny" else (32, 16)
    mu, logvar = _latents(rng, shape, xp, dtype)
    eps = _normal(rng, shape, xp, dtype)
    layer = layers.Reparameterize()
    variables = {"mu": mu, "logvar": logvar}

    def evaluate():
        return layer.forward(variables["mu"], variables["logvar"], eps)

    def gradients(dz):
        dmu, dlogvar = layer.backward(dz)
        return {"mu": dmu, "logvar": dlogvar}
    return Case(variables, evaluate, gradients, f"mu,logvar,eps{_shape_text(shape)}")


def make_kl_case(rng, xp, dtype, size):
    """The KL share of a group of n in a batch of n + 1, w.r.t. μ and logvar: tiny (2,3), realistic (32,16)."""
    shape = (2, 3) if size == "tiny" else (32, 16)
    mu, logvar = _latents(rng, shape, xp, dtype)
    batch_count = shape[0] + 1
    loss = KLDivergence()
    variables = {"mu": mu, "logvar": logvar}

    def evaluate():
        return loss.forward(variables["mu"], variables["logvar"], batch_count)[0]

    def gradients(upstream):
        dmu, dlogvar = loss.backward()
        return {"mu": upstream * dmu, "logvar": upstream * dlogvar}
    return Case(variables, evaluate, gradients, f"mu,logvar{_shape_text(shape)}, N_m={batch_count}")


# ---------------------------------------------------------------------------
# Forward references, one function per row: (rng, xp) -> Measurement
# ---------------------------------------------------------------------------

def _worst_of(parts, shape_text, note=""):
    """One Measurement from several (label, Measurement): the largest error, every part's samples."""
    worst, samples = 0.0, []
    for label, m in parts:
        worst = max(worst, m.error)
        samples += [label] + m.samples
    return Measurement(shape_text, worst, None, note, samples)


def forward_conv_valid(stride):
    """Valid Conv2D vs scipy.signal.correlate on (2,3,9,8) and on the VAE's (2,1,28,28).

    With stride 2, 28 × 28 has a last row and column that no window reads.
    """
    def check(rng, xp):
        parts = []
        for x_shape, w_shape in (((2, 3, 9, 8), (4, 3, 3, 3)), ((2, 1, 28, 28), (3, 1, 3, 3))):
            x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
            out = layers.Conv2D(to_device(w, xp), to_device(b, xp), stride=stride, padding="valid").forward(
                to_device(x, xp))
            expected = reference_conv2d_valid(x, w, b, stride)
            m = _forward_measurement("", out, expected)
            if tuple(out.shape) != expected.shape:
                m.error = math.inf
            parts.append((f"{_shape_text(x_shape)} -> {_shape_text(out.shape)}", m))
        return _worst_of(parts, "x(2,3,9,8) w(4,3,3,3); x(2,1,28,28) w(3,1,3,3)")
    return check


def forward_conv_transpose(stride):
    """ConvTranspose2D vs convolve(zero-interleaved x, w, 'full') cropped: odd/even sizes and 7 → 14."""
    def check(rng, xp):
        parts = []
        for x_shape, w_shape in (((2, 3, 4, 5), (3, 2, 3, 3)), ((1, 4, 7, 7), (4, 3, 3, 3)),
                                 ((1, 2, 3, 3), (2, 2, 5, 5))):
            x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[1])
            out = layers.ConvTranspose2D(to_device(w, xp), to_device(b, xp), stride=stride).forward(to_device(x, xp))
            expected = reference_conv_transpose(x, w, b, stride)
            m = _forward_measurement("", out, expected)
            if tuple(out.shape) != expected.shape:
                m.error = math.inf
            parts.append((f"{_shape_text(x_shape)} w{_shape_text(w_shape)} -> {_shape_text(out.shape)}", m))
        return _worst_of(parts, "x(2,3,4,5) w(3,2,3,3); x(1,4,7,7) w(4,3,3,3); x(1,2,3,3) w(2,2,5,5)")
    return check


def forward_conv_transpose_is_conv_input_gradient(stride):
    """The definition: ``ConvTranspose2D(w, 0).forward(y) = Conv2D(w, 0, stride).backward(y)``.

    The convolution's input is (N, C_out, s·h, s·w), so its output and y are (N, C_in, h, w).
    """
    def check(rng, xp):
        x_shape, w_shape = (2, 4, 5, 6), (4, 3, 3, 3)   # transpose: 4 → 3 channels; the conv: 3 → 4
        h, wd = x_shape[2:]
        y = to_device(rng.standard_normal(x_shape), xp)
        w = to_device(rng.standard_normal(w_shape), xp)
        conv = layers.Conv2D(w, to_device(np.zeros(w_shape[0]), xp), stride=stride)
        conv.forward(to_device(np.zeros((2, w_shape[1], stride * h, stride * wd)), xp))
        expected = conv.backward(y)
        out = layers.ConvTranspose2D(w, to_device(np.zeros(w_shape[1]), xp), stride=stride).forward(y)
        m = _forward_measurement(f"y{_shape_text(x_shape)} w{_shape_text(w_shape)}", out, to_host(expected),
                                 "vs Conv2D.backward")
        if tuple(out.shape) != tuple(expected.shape):
            m.error = math.inf
        return m
    return check


def forward_linear(rng, xp):
    x, w, b = rng.standard_normal((3, 7)), rng.standard_normal((4, 7)), rng.standard_normal(4)
    out = layers.Linear(to_device(w, xp), to_device(b, xp)).forward(to_device(x, xp))
    return _forward_measurement("x(3,7) w(4,7)", out, reference_linear(x, w, b))


def forward_sigmoid(rng, xp):
    """σ vs scipy.special.expit, including |x| = 40 and 1000 (no overflow, exact 0 and 1 at ±1000)."""
    x = np.concatenate([3 * rng.standard_normal(40), [-1000.0, -40.0, 0.0, 40.0, 1000.0]])
    with np.errstate(over="raise", divide="raise", invalid="raise"):   # NumPy: an overflow here raises
        out = layers.Sigmoid().forward(to_device(x, xp))
    m = _forward_measurement("x(45,) incl. +-40, +-1000", out, scipy.special.expit(x))
    lo = float(out[-5])
    if not math.isfinite(lo) or lo != 0.0 or float(out[-1]) != 1.0:
        m.error = math.inf
    return m


def forward_reparameterize(rng, xp):
    """z = μ + sqrt(exp(logvar))·ε element by element; and ε = None gives z = μ."""
    mu, logvar, eps = rng.standard_normal((4, 3)), rng.uniform(-3, 1, (4, 3)), rng.standard_normal((4, 3))
    expected = np.array([[m + math.sqrt(math.exp(lv)) * e for m, lv, e in zip(*rows)]
                         for rows in zip(mu, logvar, eps)])
    layer = layers.Reparameterize()
    z = layer.forward(to_device(mu, xp), to_device(logvar, xp), to_device(eps, xp))
    z_eval = layer.forward(to_device(mu, xp), to_device(logvar, xp))
    return _forward_measurement("(4,3); and eval mode", np.concatenate([to_host(z), to_host(z_eval)]),
                                np.concatenate([expected, mu]), "training rows, then eval rows (z = mu)")


def forward_kl(rng, xp):
    mu, logvar = rng.standard_normal((2, 5)), rng.uniform(-3, 1, (2, 5))
    share, parts = KLDivergence().forward(to_device(mu, xp), to_device(logvar, xp), 3)
    m = _forward_measurement("(2,5), N_m=3", share, reference_kl(mu, logvar, 3),
                             "vs sum of log(1/sigma) + (sigma^2 + mu^2)/2 - 1/2")
    if parts != {} or np.shape(share) != ():
        m.error = math.inf
    return m


# ---------------------------------------------------------------------------
# Adjoint tests, one function per row: (rng, xp) -> Measurement
# ---------------------------------------------------------------------------

def adjoint_conv_valid(stride):
    def check(rng, xp):
        x = _normal(rng, (2, 4, 28, 27), xp, np.float64)
        w = _normal(rng, (5, 4, 3, 3), xp, np.float64)
        layer = layers.Conv2D(w, xp.zeros(5, dtype=np.float64), stride=stride, padding="valid")
        out = layer.forward(x)
        y = _random_cotangent(rng, out, xp)
        return _adjoint_measurement("x(2,4,28,27) w(5,4,3,3) b=0", out, x, y, layer.backward(y))
    return check


def adjoint_conv_transpose(stride):
    def check(rng, xp):
        x = _normal(rng, (2, 6, 7, 8), xp, np.float64)
        w = _normal(rng, (6, 4, 3, 3), xp, np.float64)
        layer = layers.ConvTranspose2D(w, xp.zeros(4, dtype=np.float64), stride=stride)
        out = layer.forward(x)
        y = _random_cotangent(rng, out, xp)
        return _adjoint_measurement("x(2,6,7,8) w(6,4,3,3) b=0", out, x, y, layer.backward(y))
    return check


def adjoint_linear(rng, xp):
    x = _normal(rng, (4, 300), xp, np.float64)
    layer = layers.Linear(_normal(rng, (20, 300), xp, np.float64), xp.zeros(20, dtype=np.float64))
    out = layer.forward(x)
    y = _random_cotangent(rng, out, xp)
    return _adjoint_measurement("x(4,300) w(20,300) b=0", out, x, y, layer.backward(y))


# ---------------------------------------------------------------------------
# The rows, for sflnet.gradcheck.default_registry
# ---------------------------------------------------------------------------

def registry_entries():
    """name → :class:`~sflnet.gradcheck.LayerEntry` for the β-VAE's layers, in report order."""
    entries = {}
    for stride in (1, 2):
        entries[f"conv2d_valid_s{stride}"] = LayerEntry(
            make_conv_valid_case(stride), [("forward vs scipy.correlate valid", forward_conv_valid(stride))],
            [("adjoint w.r.t. x", adjoint_conv_valid(stride))])
    for stride in (1, 2):
        entries[f"conv_transpose_s{stride}"] = LayerEntry(
            make_conv_transpose_case(stride),
            [("forward vs scatter (convolve)", forward_conv_transpose(stride)),
             ("forward = Conv2D input gradient", forward_conv_transpose_is_conv_input_gradient(stride))],
            [("adjoint w.r.t. x", adjoint_conv_transpose(stride))])
    entries["linear"] = LayerEntry(make_linear_case, [("forward vs loop", forward_linear)],
                                   [("adjoint w.r.t. x", adjoint_linear)])
    entries["sigmoid"] = LayerEntry(make_sigmoid_case, [("forward vs scipy expit", forward_sigmoid)])
    entries["reparameterize"] = LayerEntry(make_reparameterize_case,
                                           [("forward vs elementwise", forward_reparameterize)])
    entries["kl_loss"] = LayerEntry(make_kl_case, [("forward vs Gaussian KL", forward_kl)])
    return entries
