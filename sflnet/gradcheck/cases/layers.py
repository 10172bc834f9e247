"""The gradient-check rows of the CAE's layers: Conv2D, ReLU, Tanh, Upsample2x, UpsampleConv2D, LoGBank, im2col.

* ``make_*_case`` — the :class:`~sflnet.gradcheck.engine.Case` of the dense ("tiny") and
  directional ("realistic": the paper's layer shapes) checks;
* ``forward_*`` — the output against an independent host float64 reference of
  :mod:`sflnet.gradcheck.references.layers` (``scipy.signal.correlate`` for Eq. 2,
  ``scipy.signal.correlate2d`` for the LoG bank, a plain per-pixel loop for the
  bilinear ×2, Eq. 5 written out for the LoG kernel);
* ``adjoint_*`` — ``⟨Ax, y⟩ = ⟨x, Aᵀy⟩`` for the linear maps (im2col/col2im,
  Upsample2x, LoGBank, Conv2D w.r.t. its input with zero bias).

The ReLU case draws its inputs with ``|x| ≥ 0.1`` (≫ ε, both signs), so no finite
difference crosses the kink at 0. :func:`registry_entries` gives the rows to
:func:`sflnet.gradcheck.suite.default_registry`.
"""

import math

import numpy as np

from sflnet import nn
from sflnet.backend import to_device
from sflnet.gradcheck.engine import (LayerEntry, Measurement, adjoint_measurement, away_from_zero,
                                     forward_measurement, layer_case, normal, random_cotangent, shape_text)
from sflnet.gradcheck.references import layers as ref
from sflnet.models import cae as model
from sflnet.ops.filters import log_kernel
from sflnet.ops.im2col import col2im, im2col

# ---------------------------------------------------------------------------
# Cases for the dense ("tiny") and directional ("realistic") checks
# ---------------------------------------------------------------------------

def _conv_inputs(rng, xp, dtype, x_shape, w_shape):
    """x: N(0, 1) of x_shape; w: N(0, 1/(C_in·9)) of w_shape (C_out, C_in, 3, 3); b: N(0, 1) of (C_out,)."""
    x = normal(rng, x_shape, xp, dtype)
    w = normal(rng, w_shape, xp, dtype, scale=1.0 / math.sqrt(w_shape[1] * 9))
    return x, w, normal(rng, w_shape[:1], xp, dtype)


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
        return layer_case(layer, {"x": x, **layer.params}, f"x{shape_text(x_shape)} w{shape_text(w_shape)}")
    return make


def make_relu_case(rng, xp, dtype, size):
    """ReLU with inputs ``0.1 ≤ |x| ≤ 1`` of both signs, so no ε moves an input across the kink."""
    shape = (2, 3, 5, 6) if size == "tiny" else (2, 32, 64, 48)
    layer = nn.ReLU()
    variables = {"x": away_from_zero(rng, shape, xp, dtype)}

    def masks():
        return [variables["x"] > 0]
    return layer_case(layer, variables, f"x{shape_text(shape)}, |x|>=0.1", masks)


def make_tanh_case(rng, xp, dtype, size):
    shape = (2, 3, 5, 6) if size == "tiny" else (2, 3, 64, 48)
    return layer_case(nn.Tanh(), {"x": normal(rng, shape, xp, dtype)}, f"x{shape_text(shape)}")


def make_upsample_case(rng, xp, dtype, size):
    """Upsample2x with a crop on one axis: tiny (2,3,5,4) → 9×8, realistic (2,16,19,27) → 37×53."""
    shape, out_hw = ((2, 3, 5, 4), (9, 8)) if size == "tiny" else ((2, 16, 19, 27), (37, 53))
    layer = nn.Upsample2x(output_size=out_hw)
    return layer_case(layer, {"x": normal(rng, shape, xp, dtype)},
                       f"x{shape_text(shape)}->{out_hw[0]}x{out_hw[1]}")


def make_upsample_conv_case(rng, xp, dtype, size):
    """UpsampleConv2D (layer 4 fused): tiny (2,3,5,4) → 9×8 with w (2,3,3,3), realistic (2,16,19,27) → 37×53."""
    (shape, out_hw, w_shape) = ((2, 3, 5, 4), (9, 8), (2, 3, 3, 3)) if size == "tiny" else \
        ((2, 16, 19, 27), (37, 53), (32, 16, 3, 3))
    x, w, b = _conv_inputs(rng, xp, dtype, shape, w_shape)
    layer = nn.UpsampleConv2D(w, b, output_size=out_hw)
    return layer_case(layer, {"x": x, **layer.params},
                       f"x{shape_text(shape)}->{out_hw[0]}x{out_hw[1]} w{shape_text(w_shape)}")


def make_logbank_case(rng, xp, dtype, size):
    shape = (2, 3, 7, 8) if size == "tiny" else (2, 3, 64, 48)
    layer = nn.LoGBank(model.DEFAULT_SIGMAS)
    return layer_case(layer, {"x": normal(rng, shape, xp, dtype)}, f"x{shape_text(shape)}")


# ---------------------------------------------------------------------------
# Forward references, one function per row: (rng, xp) -> Measurement
# ---------------------------------------------------------------------------

def forward_conv(stride):
    def check(rng, xp):
        x = rng.standard_normal((2, 3, 9, 8))
        w = rng.standard_normal((4, 3, 3, 3))
        b = rng.standard_normal(4)
        layer = nn.Conv2D(to_device(w, xp), to_device(b, xp), stride=stride)
        out = layer.forward(to_device(x, xp))
        return forward_measurement("x(2,3,9,8) w(4,3,3,3)", out, ref.conv2d_scipy(x, w, b, stride))
    return check


def forward_relu(rng, xp):
    x = rng.standard_normal((2, 3, 9, 8))
    return forward_measurement("x(2,3,9,8)", nn.ReLU().forward(to_device(x, xp)), np.maximum(x, 0.0))


def forward_tanh(rng, xp):
    x = 2 * rng.standard_normal((2, 3, 9, 8))
    return forward_measurement("x(2,3,9,8)", nn.Tanh().forward(to_device(x, xp)), np.tanh(x))


def forward_upsample(rng, xp):
    """Odd and even sizes: 5×7 → 9×13 (both axes cropped) and 4×3 → 8×6."""
    worst, samples = None, []
    for shape, out_hw in (((2, 3, 5, 7), (9, 13)), ((2, 3, 4, 3), (8, 6))):
        x = rng.standard_normal(shape)
        out = nn.Upsample2x(output_size=out_hw).forward(to_device(x, xp))
        m = forward_measurement("", out, ref.upsample2x_forward(x, *out_hw))
        worst = m if worst is None or m.error > worst.error else worst
        samples += [f"{shape_text(shape)} -> {out_hw}"] + m.samples
    return Measurement("(2,3,5,7)->9x13; (2,3,4,3)->8x6", worst.error, None, "", samples)


def forward_upsample_conv(rng, xp):
    """The fused layer against the pixel-loop bilinear ×2 then scipy's correlate (both axes cropped)."""
    x = rng.standard_normal((2, 3, 5, 7))
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    out = nn.UpsampleConv2D(to_device(w, xp), to_device(b, xp), output_size=(9, 13)).forward(to_device(x, xp))
    return forward_measurement("x(2,3,5,7)->9x13 w(4,3,3,3)", out,
                                ref.conv2d_scipy(ref.upsample2x_forward(x, 9, 13), w, b, 1))


def forward_logbank(rng, xp):
    """Separable fast path vs the literal correlate2d sum; a 9×8 image is smaller than the 27×27 kernel."""
    worst, samples = 0.0, []
    for shape in ((2, 3, 9, 8), (1, 3, 37, 53)):
        f = rng.standard_normal(shape)
        out = nn.LoGBank(model.DEFAULT_SIGMAS).forward(to_device(f, xp))
        m = forward_measurement("", out, ref.log_bank_scipy(f, model.DEFAULT_SIGMAS))
        worst = max(worst, m.error)
        samples += [shape_text(shape)] + m.samples
    return Measurement("(2,3,9,8); (1,3,37,53)", worst, None, "", samples)


def forward_log_kernel(rng, xp):
    """log_kernel(σ) vs Eq. 5 written out, and its size vs the paper's 7, 13, 27."""
    del rng, xp   # deterministic and host-only
    worst, sizes, samples = 0.0, [], []
    for sigma in model.DEFAULT_SIGMAS:
        computed, expected = log_kernel(sigma), ref.log_kernel(sigma)
        sizes.append(computed.shape[0])
        if computed.shape != expected.shape:
            worst = math.inf
            continue
        m = forward_measurement("", computed, expected)
        worst = max(worst, m.error)
        samples += [f"sigma={sigma:g}, k={computed.shape[0]}"] + m.samples
    if tuple(sizes) != (7, 13, 27):
        worst = math.inf
    return Measurement("sigma 0.8,1.6,3.2", worst, None, f"sizes {sizes} (paper: 7, 13, 27)", samples)


# ---------------------------------------------------------------------------
# Adjoint tests, one function per row: (rng, xp) -> Measurement
# ---------------------------------------------------------------------------

def adjoint_im2col(stride):
    def check(rng, xp):
        x = normal(rng, (2, 4, 13, 10), xp, np.float64)
        cols = im2col(x, 3, 3, stride, 1)
        y = random_cotangent(rng, cols, xp)
        back = col2im(y, x.shape, 3, 3, stride, 1)
        return adjoint_measurement(f"x(2,4,13,10) k3 s{stride}", cols, x, y, back)
    return check


def adjoint_conv(stride):
    def check(rng, xp):
        x = normal(rng, (2, 4, 13, 10), xp, np.float64)
        w = normal(rng, (5, 4, 3, 3), xp, np.float64)
        layer = nn.Conv2D(w, xp.zeros(5, dtype=np.float64), stride=stride)
        out = layer.forward(x)
        y = random_cotangent(rng, out, xp)
        return adjoint_measurement("x(2,4,13,10) w(5,4,3,3) b=0", out, x, y, layer.backward(y))
    return check


def adjoint_upsample(rng, xp):
    worst = None
    for shape, out_hw in (((2, 3, 19, 27), (37, 53)), ((2, 3, 32, 24), (64, 48))):
        layer = nn.Upsample2x(output_size=out_hw)
        x = normal(rng, shape, xp, np.float64)
        out = layer.forward(x)
        y = random_cotangent(rng, out, xp)
        m = adjoint_measurement("", out, x, y, layer.backward(y))
        worst = m if worst is None or m.error > worst.error else worst
    worst.shape = "(2,3,19,27)->37x53; (2,3,32,24)->64x48"
    return worst


def adjoint_logbank(rng, xp):
    layer = nn.LoGBank(model.DEFAULT_SIGMAS)
    x = normal(rng, (2, 3, 37, 53), xp, np.float64)
    out = layer.forward(x)
    y = random_cotangent(rng, out, xp)
    return adjoint_measurement("x(2,3,37,53)", out, x, y, layer.backward(y))


# ---------------------------------------------------------------------------
# The rows, for sflnet.gradcheck.suite.default_registry
# ---------------------------------------------------------------------------

def registry_entries():
    """name → :class:`~sflnet.gradcheck.engine.LayerEntry` for the CAE's layers, in report order."""
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
    }
