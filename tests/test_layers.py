"""Layer tests: forward against independent SciPy/NumPy references, dense finite
differences for every input and parameter, and adjoint identities for the linear
maps. Every test body runs on NumPy and, where a GPU is usable, on CuPy (float64
results must agree with the CPU references exactly as on the CPU)."""

import math

import numpy as np
import pytest
import scipy.ndimage

from sflnet.backend import to_device, to_host
from sflnet.gradcheck.engine import adjoint_measurement
from sflnet.gradcheck.references import layers as references
from sflnet.nn import Conv2D, LoGBank, ReLU, Tanh, Upsample2x, UpsampleConv2D
from sflnet.ops.filters import log_bank_weights, log_kernel, log_kernel_factors, log_kernel_size
from sflnet.nn.conv import upsample_conv_taps
from sflnet.ops.im2col import col2im, im2col

SIGMAS = (0.8, 1.6, 3.2)


def forward_rel(a, ref):
    """max |a − ref| / max |ref| (relative error of a forward result)."""
    a, ref = to_host(a), np.asarray(ref)
    return float(np.max(np.abs(a - ref)) / max(np.max(np.abs(ref)), 1e-300))


# ---------------------------------------------------------------------------
# Forward against references
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("hw", [(9, 7), (8, 8), (13, 10), (1, 1), (2, 3)])
def test_conv_forward_matches_scipy_correlate(xp, stride, hw):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 3, *hw))
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    out = Conv2D(to_device(w, xp), to_device(b, xp), stride).forward(to_device(x, xp))
    ref = references.conv2d_scipy(x, w, b, stride)
    assert out.shape == (2, 4, math.ceil(hw[0] / stride), math.ceil(hw[1] / stride))
    assert forward_rel(out, ref) <= 1e-12


def test_log_kernel_sizes_follow_the_paper():
    # ⌈8σ⌉ made odd: ⌈6.4⌉ = 7, ⌈12.8⌉ = 13, ⌈25.6⌉ = 26 → 27 (paper Sec. 4).
    assert [log_kernel_size(s) for s in SIGMAS] == [7, 13, 27]
    assert log_kernel_size(1.0) == 9   # ⌈8⌉ = 8 is even → 9


@pytest.mark.parametrize("sigma", SIGMAS)
def test_log_kernel_is_eq5_written_out(sigma):
    k = log_kernel(sigma)
    ref = references.log_kernel(sigma)
    assert forward_rel(k, ref) <= 1e-12
    # The separable split used by the fast bank reproduces the same kernel: K = a⊗b + b⊗a.
    a, b = log_kernel_factors(sigma)
    assert forward_rel(np.outer(a, b) + np.outer(b, a), ref) <= 1e-12


@pytest.mark.parametrize("sigma", [1.6, 3.2])
def test_log_kernel_shape_agrees_with_scipy_gaussian_laplace(sigma):
    # Sanity check of the shape (not of the exact values): σ²·∇²g from scipy's
    # sampled-derivative filter applied to a delta. Scipy normalises its sampled
    # Gaussian to unit sum, so only ~1 % agreement is expected.
    k = log_kernel(sigma)
    s = (k.shape[0] - 1) // 2
    delta = np.zeros((2 * s + 1, 2 * s + 1))
    delta[s, s] = 1.0
    ref = sigma ** 2 * scipy.ndimage.gaussian_laplace(delta, sigma, mode="constant", truncate=s / sigma)
    assert np.max(np.abs(k - ref)) <= 0.02 * np.max(np.abs(k))


def test_log_kernel_is_not_renormalised():
    # The continuous LoG integrates to 0; truncation leaves a small negative sum,
    # which must not be renormalised away (DESIGN §1).
    for sigma in SIGMAS:
        k = log_kernel(sigma)
        assert abs(k.sum()) < 0.05 * np.abs(k).sum()
        assert k[k.shape[0] // 2, k.shape[1] // 2] == pytest.approx(-2 / (2 * math.pi * sigma ** 2))


@pytest.mark.parametrize("hw", [(9, 7), (8, 8), (30, 29)])
def test_log_bank_matches_literal_correlate2d_sum(xp, hw):
    rng = np.random.default_rng(11)
    f = rng.standard_normal((2, 3, *hw))
    out = LoGBank(SIGMAS).forward(to_device(f, xp))
    ref = references.log_bank_scipy(f, SIGMAS)
    assert out.shape == ref.shape
    assert forward_rel(out, ref) <= 1e-12


def test_fast_log_bank_equals_literal_eq2_conv(xp):
    # The fast form (colours summed, separable kernels) against layer 6 written as
    # Eq. 2: a Conv2D with the literal (3, 3, 27, 27) weights W6[c, c'] = K_{σ_c}.
    rng = np.random.default_rng(12)
    f = rng.standard_normal((2, 3, 31, 17))
    w6 = log_bank_weights(SIGMAS)
    literal = Conv2D(to_device(w6, xp), to_device(np.zeros(3), xp), 1).forward(to_device(f, xp))
    fast = LoGBank(SIGMAS).forward(to_device(f, xp))
    assert forward_rel(fast, to_host(literal)) <= 1e-12


@pytest.mark.parametrize("in_hw,out_hw", [((4, 3), (8, 6)), ((5, 4), (9, 7)), ((5, 4), (10, 7)),
                                          ((1, 1), (1, 1)), ((1, 2), (2, 3)), ((7, 5), (13, 9))])
def test_upsample_matches_plain_loop(xp, in_hw, out_hw):
    rng = np.random.default_rng(13)
    x = rng.standard_normal((2, 3, *in_hw))
    layer = Upsample2x(output_size=out_hw)
    out = layer.forward(to_device(x, xp))
    assert out.shape == (2, 3, *out_hw)
    assert forward_rel(out, references.upsample2x_forward(x, *out_hw)) <= 1e-12


def test_upsample_rejects_impossible_crop():
    with pytest.raises(ValueError):
        Upsample2x(output_size=(11, 6)).forward(np.zeros((1, 1, 5, 3)))


def test_activations_forward(xp):
    rng = np.random.default_rng(14)
    x = rng.standard_normal((2, 3, 5, 4))
    assert forward_rel(ReLU().forward(to_device(x, xp)), np.maximum(x, 0)) == 0.0
    assert forward_rel(Tanh().forward(to_device(x, xp)), np.tanh(x)) <= 1e-15


# ---------------------------------------------------------------------------
# Dense finite differences (float64, random upstream gradient)
# ---------------------------------------------------------------------------

SHAPES = [(1, 2, 5, 4), (2, 3, 4, 5), (2, 1, 3, 3)]   # odd and even sizes


def scalar_through(layer_factory, upstream, xp):
    """L(x) = Σ layer(x) · G for a fresh layer; a function of a host array."""
    def f(x):
        return float(to_host(layer_factory().forward(to_device(x, xp)) * to_device(upstream, xp)).sum())
    return f


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("shape", SHAPES)
def test_conv_backward_dense_fd(xp, fd, stride, shape):
    rng = np.random.default_rng(20)
    n, c, h, w = shape
    x = rng.standard_normal(shape)
    weight = rng.standard_normal((3, c, 3, 3))
    bias = rng.standard_normal(3)
    layer = Conv2D(to_device(weight, xp), to_device(bias, xp), stride)
    out = layer.forward(to_device(x, xp))
    upstream = rng.standard_normal(out.shape)
    dx = to_host(layer.backward(to_device(upstream, xp)))
    dw, db = to_host(layer.grads["w"]), to_host(layer.grads["b"])
    assert dx.shape == x.shape and dw.shape == weight.shape and db.shape == bias.shape

    def loss_x(xv):
        return float(to_host(Conv2D(to_device(weight, xp), to_device(bias, xp), stride).forward(
            to_device(xv, xp)) * to_device(upstream, xp)).sum())

    def loss_w(wv):
        return float(to_host(Conv2D(to_device(wv, xp), to_device(bias, xp), stride).forward(
            to_device(x, xp)) * to_device(upstream, xp)).sum())

    def loss_b(bv):
        return float(to_host(Conv2D(to_device(weight, xp), to_device(bv, xp), stride).forward(
            to_device(x, xp)) * to_device(upstream, xp)).sum())

    for analytic, func, point in ((dx, loss_x, x), (dw, loss_w, weight), (db, loss_b, bias)):
        err = fd.best_over_eps(lambda eps: fd.rel_error(analytic, fd.numeric_gradient(func, point, eps)))
        assert err <= 1e-7


@pytest.mark.parametrize("shape", SHAPES)
def test_relu_backward_dense_fd(xp, fd, shape):
    rng = np.random.default_rng(21)
    # Inputs away from the kink by at least 0.1 ≫ eps, both signs present.
    x = rng.uniform(0.1, 1.0, shape) * rng.choice([-1.0, 1.0], shape)
    assert (x > 0).any() and (x < 0).any()
    upstream = rng.standard_normal(shape)
    layer = ReLU()
    layer.forward(to_device(x, xp))
    analytic = to_host(layer.backward(to_device(upstream, xp)))
    f = scalar_through(ReLU, upstream, xp)
    assert fd.best_over_eps(lambda eps: fd.rel_error(analytic, fd.numeric_gradient(f, x, eps))) <= 1e-7


@pytest.mark.parametrize("shape", SHAPES)
def test_tanh_backward_dense_fd(xp, fd, shape):
    rng = np.random.default_rng(22)
    x = rng.standard_normal(shape)
    upstream = rng.standard_normal(shape)
    layer = Tanh()
    layer.forward(to_device(x, xp))
    analytic = to_host(layer.backward(to_device(upstream, xp)))
    f = scalar_through(Tanh, upstream, xp)
    assert fd.best_over_eps(lambda eps: fd.rel_error(analytic, fd.numeric_gradient(f, x, eps))) <= 1e-7


@pytest.mark.parametrize("in_hw,out_hw", [((3, 2), (6, 4)), ((3, 2), (5, 3)), ((1, 1), (1, 2)), ((4, 3), (7, 6))])
def test_upsample_backward_dense_fd(xp, fd, in_hw, out_hw):
    rng = np.random.default_rng(23)
    x = rng.standard_normal((2, 2, *in_hw))
    upstream = rng.standard_normal((2, 2, *out_hw))
    layer = Upsample2x(out_hw)
    layer.forward(to_device(x, xp))
    analytic = to_host(layer.backward(to_device(upstream, xp)))
    f = scalar_through(lambda: Upsample2x(out_hw), upstream, xp)
    assert fd.best_over_eps(lambda eps: fd.rel_error(analytic, fd.numeric_gradient(f, x, eps))) <= 1e-7


@pytest.mark.parametrize("shape", [(1, 3, 5, 4), (2, 3, 6, 7)])
def test_log_bank_backward_dense_fd(xp, fd, shape):
    rng = np.random.default_rng(24)
    x = rng.standard_normal(shape)
    upstream = rng.standard_normal((shape[0], 3, *shape[2:]))
    layer = LoGBank(SIGMAS)
    layer.forward(to_device(x, xp))
    analytic = to_host(layer.backward(to_device(upstream, xp)))
    f = scalar_through(lambda: LoGBank(SIGMAS), upstream, xp)
    assert fd.best_over_eps(lambda eps: fd.rel_error(analytic, fd.numeric_gradient(f, x, eps))) <= 1e-7


# ---------------------------------------------------------------------------
# Adjoint identities ⟨Ax, y⟩ = ⟨x, Aᵀy⟩
# ---------------------------------------------------------------------------

def adjoint_gap(ax, y, x, aty):
    """|⟨Ax, y⟩ − ⟨x, Aᵀy⟩| / |⟨Ax, y⟩|, the engine's adjoint measurement."""
    return adjoint_measurement("", ax, x, y, aty).error


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("shape", [(2, 3, 7, 6), (1, 2, 5, 5)])
def test_im2col_col2im_adjoint(xp, stride, shape):
    rng = np.random.default_rng(30)
    x = to_device(rng.standard_normal(shape), xp)
    cols = im2col(x, 3, 3, stride, 1)
    y = to_device(rng.standard_normal(cols.shape), xp)
    assert adjoint_gap(cols, y, x, col2im(y, shape, 3, 3, stride, 1)) <= 1e-12


@pytest.mark.parametrize("in_hw,out_hw", [((5, 4), (9, 8)), ((6, 3), (12, 5)), ((1, 1), (2, 1))])
def test_upsample_adjoint(xp, in_hw, out_hw):
    rng = np.random.default_rng(31)
    x = to_device(rng.standard_normal((2, 3, *in_hw)), xp)
    y = to_device(rng.standard_normal((2, 3, *out_hw)), xp)
    layer = Upsample2x(out_hw)
    ax = layer.forward(x)
    assert adjoint_gap(ax, y, x, layer.backward(y)) <= 1e-12


def test_log_bank_adjoint(xp):
    rng = np.random.default_rng(32)
    x = to_device(rng.standard_normal((2, 3, 33, 29)), xp)
    y = to_device(rng.standard_normal((2, 3, 33, 29)), xp)
    layer = LoGBank(SIGMAS)
    ax = layer.forward(x)
    assert adjoint_gap(ax, y, x, layer.backward(y)) <= 1e-12


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_input_adjoint(xp, stride):
    rng = np.random.default_rng(33)
    x = to_device(rng.standard_normal((2, 4, 9, 8)), xp)
    layer = Conv2D(to_device(rng.standard_normal((5, 4, 3, 3)), xp), to_device(np.zeros(5), xp), stride)
    ax = layer.forward(x)
    y = to_device(rng.standard_normal(ax.shape), xp)
    assert adjoint_gap(ax, y, x, layer.backward(y)) <= 1e-12


# ---------------------------------------------------------------------------
# Layer 4 as one sub-pixel convolution (UpsampleConv2D) against Upsample2x → Conv2D
# ---------------------------------------------------------------------------

def test_upsample_conv_taps_compose_the_two_maps():
    """R[a, e, d] read off the actual maps: upsample unit vectors with Upsample2x, then take the
    entry u[2i + a + d − 1] at an interior i (an independent derivation of the table)."""
    n, i = 9, 4
    for e in range(3):
        x = np.zeros((1, 1, n, 1))
        x[0, 0, i + e - 1, 0] = 1.0
        u = Upsample2x((2 * n, 2)).forward(x)[0, 0, :, 0]
        for a in range(2):
            for d in range(3):
                assert upsample_conv_taps()[a, e, d] == u[2 * i + a + d - 1]


UPCONV_SIZES = [((5, 4), (9, 8)), ((5, 4), (10, 7)), ((3, 3), (5, 6)), ((4, 6), (8, 12)), ((19, 27), (37, 53)),
                ((2, 7), (4, 13)), ((1, 1), (1, 2)), ((7, 2), (14, 3))]


def _upconv_pair(rng, xp, dtype, c_out=6, c_in=4):
    w = to_device((rng.standard_normal((c_out, c_in, 3, 3)) / 6).astype(dtype), xp)
    b = to_device(rng.standard_normal(c_out).astype(dtype), xp)
    return w, b


@pytest.mark.parametrize("in_hw, out_hw", UPCONV_SIZES)
@pytest.mark.parametrize("dtype, bound", [(np.float64, 1e-12), (np.float32, 2e-6)])
def test_upsample_conv_equals_upsample_then_conv(xp, in_hw, out_hw, dtype, bound):
    """Forward, ∂x, ∂w, ∂b of the fused layer against the two reference layers, border strips and
    the small-image fallback included (float64: rounding only; float32: within its rounding)."""
    rng = np.random.default_rng(50)
    w, b = _upconv_pair(rng, xp, dtype)
    x = to_device(rng.standard_normal((2, 4) + in_hw).astype(dtype), xp)
    fused = UpsampleConv2D(w, b, out_hw)
    up, conv = Upsample2x(out_hw), Conv2D(w, b)
    out, ref = fused.forward(x), conv.forward(up.forward(x))
    assert out.shape == ref.shape == (2, 6) + out_hw and out.dtype == dtype
    g = to_device(rng.standard_normal(out.shape).astype(dtype), xp)
    dx, dx_ref = fused.backward(g), up.backward(conv.backward(g))
    assert forward_rel(out, to_host(ref)) <= bound
    assert forward_rel(dx, to_host(dx_ref)) <= bound
    assert forward_rel(fused.grads["w"], to_host(conv.grads["w"])) <= bound
    assert forward_rel(fused.grads["b"], to_host(conv.grads["b"])) <= bound


@pytest.mark.parametrize("in_hw, out_hw", [((4, 3), (7, 6)), ((3, 5), (6, 9))])
def test_upsample_conv_backward_dense_fd(xp, fd, in_hw, out_hw):
    """Finite differences of the fused layer on its own (not through the reference layers)."""
    rng = np.random.default_rng(51)
    weight, bias = rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)
    x = rng.standard_normal((1, 2) + in_hw)
    layer = UpsampleConv2D(to_device(weight, xp), to_device(bias, xp), out_hw)
    out = layer.forward(to_device(x, xp))
    upstream = rng.standard_normal(out.shape)
    dx = to_host(layer.backward(to_device(upstream, xp)))
    dw, db = to_host(layer.grads["w"]), to_host(layer.grads["b"])

    def loss(xv, wv, bv):
        fresh = UpsampleConv2D(to_device(wv, xp), to_device(bv, xp), out_hw)
        return float(to_host(fresh.forward(to_device(xv, xp)) * to_device(upstream, xp)).sum())

    for analytic, func, point in ((dx, lambda v: loss(v, weight, bias), x), (dw, lambda v: loss(x, v, bias), weight),
                                  (db, lambda v: loss(x, weight, v), bias)):
        err = fd.best_over_eps(lambda eps: fd.rel_error(analytic, fd.numeric_gradient(func, point, eps)))
        assert err <= 1e-7


def test_upsample_conv_rejects_impossible_crop():
    layer = UpsampleConv2D(np.zeros((2, 2, 3, 3)), np.zeros(2), (20, 8))
    with pytest.raises(ValueError, match="cannot map 5x4 to 20x8"):
        layer.forward(np.zeros((1, 2, 5, 4)))


# ---------------------------------------------------------------------------
# Dtypes and inputs
# ---------------------------------------------------------------------------

def all_layers():
    rng = np.random.default_rng(40)
    return rng, [
        lambda dt, xp: Conv2D(to_device(rng.standard_normal((3, 3, 3, 3)).astype(dt), xp),
                              to_device(np.zeros(3, dt), xp), 2),
        lambda dt, xp: ReLU(),
        lambda dt, xp: Tanh(),
        lambda dt, xp: Upsample2x((9, 7)),
        lambda dt, xp: UpsampleConv2D(to_device(rng.standard_normal((3, 3, 3, 3)).astype(dt), xp),
                                      to_device(np.zeros(3, dt), xp), (9, 7)),
        lambda dt, xp: LoGBank(SIGMAS),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layers_preserve_dtype_and_leave_inputs_alone(xp, dtype):
    rng, factories = all_layers()
    for make in factories:
        layer = make(dtype, xp)      # the weights live where the inputs do (host weights + device input fail)
        x_host = rng.standard_normal((2, 3, 5, 4) if isinstance(layer, (Upsample2x, UpsampleConv2D))
                                     else (2, 3, 9, 7)).astype(dtype)
        x = to_device(x_host, xp)
        out = layer.forward(x)
        dy_host = rng.standard_normal(out.shape).astype(dtype)
        dy = to_device(dy_host, xp)
        dx = layer.backward(dy)
        assert out.dtype == dtype and dx.dtype == dtype, type(layer).__name__
        assert np.array_equal(to_host(x), x_host) and np.array_equal(to_host(dy), dy_host), type(layer).__name__
