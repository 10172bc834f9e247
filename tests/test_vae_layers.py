"""The layers of Dalal's β-VAE: Conv2D(padding="valid"), ConvTranspose2D, Linear,
Reshape/Flatten, Sigmoid, Reparameterize, and the KL term.

Forward results against the plain loops of :mod:`sflnet.gradcheck.references.layers`, dense
finite differences with the project's one checker (:func:`sflnet.gradcheck.engine.dense_check`,
float64, random upstream gradients), adjoint identities for the linear maps,
the identity that defines the transposed convolution (its forward is Conv2D's
input gradient), output sizes, dtypes, and untouched inputs. Every test body
runs on NumPy and, where a GPU is usable, on CuPy.
"""

import math
import warnings

import numpy as np
import pytest
import scipy.integrate
import scipy.stats

from sflnet.backend import to_device, to_host
from sflnet.gradcheck.cases import vae as gradcheck_vae
from sflnet.gradcheck.engine import (EPS_SWEEP, THRESHOLD_ADJOINT, THRESHOLD_REFERENCE, THRESHOLD_SMOOTH, Case,
                                     adjoint_measurement, dense_check, rel_error)
from sflnet.gradcheck.engine import layer_case as engine_layer_case
from sflnet.gradcheck.references import layers as ref
from sflnet.nn import Conv2D, ConvTranspose2D, Flatten, Linear, Reparameterize, Reshape, Sigmoid
from sflnet.losses import REGISTRY, KLDivergence

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def layer_case(layer, variables):
    """A Case for a one-input layer: variables holds "x" and the layer's own parameter arrays."""
    return engine_layer_case(layer, variables, "test")


def dense_error(case, rng, xp):
    """Worst dense finite-difference error of a case, with a random upstream gradient (never all ones)."""
    upstream = to_device(rng.standard_normal(getattr(case.evaluate(), "shape", ())), xp)
    return dense_check(case, upstream, EPS_SWEEP).error


def adjoint_gap(ax, y, x, aty):
    """|⟨Ax, y⟩ − ⟨x, Aᵀy⟩| / |⟨Ax, y⟩|, the engine's adjoint measurement."""
    return adjoint_measurement("", ax, x, y, aty).error


# ---------------------------------------------------------------------------
# Conv2D(padding="valid")
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("x_shape", [(2, 3, 9, 8), (1, 2, 5, 5), (2, 1, 28, 28), (1, 2, 3, 4)])
def test_conv_valid_matches_loop(xp, stride, x_shape):
    rng = np.random.default_rng(100)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal((4, x_shape[1], 3, 3))
    b = rng.standard_normal(4)
    out = Conv2D(to_device(w, xp), to_device(b, xp), stride, padding="valid").forward(to_device(x, xp))
    expected = ref.conv2d_forward(x, w, b, stride, pad=0)
    assert out.shape == expected.shape
    assert rel_error(out, expected) <= THRESHOLD_REFERENCE


def test_conv_valid_output_sizes_of_the_vae_encoder(xp):
    # floor((28 − 3)/2) + 1 = 13, floor((13 − 3)/2) + 1 = 6; stride 1: 28 − 2 = 26.
    rng = np.random.default_rng(101)
    x = to_device(rng.standard_normal((2, 1, 28, 28)), xp)
    first = Conv2D(to_device(rng.standard_normal((32, 1, 3, 3)), xp), to_device(np.zeros(32), xp), 2, padding="valid")
    second = Conv2D(to_device(rng.standard_normal((64, 32, 3, 3)), xp), to_device(np.zeros(64), xp), 2,
                    padding="valid")
    h = first.forward(x)
    assert h.shape == (2, 32, 13, 13)
    assert second.forward(h).shape == (2, 64, 6, 6)
    one = Conv2D(to_device(rng.standard_normal((3, 1, 3, 3)), xp), to_device(np.zeros(3), xp), 1, padding="valid")
    assert one.forward(x).shape == (2, 3, 26, 26)


def test_conv_padding_same_is_the_default(xp):
    rng = np.random.default_rng(102)
    x = to_device(rng.standard_normal((2, 3, 7, 6)), xp)
    w = to_device(rng.standard_normal((4, 3, 3, 3)), xp)
    b = to_device(rng.standard_normal(4), xp)
    for stride in (1, 2):
        default, same = Conv2D(w, b, stride), Conv2D(w, b, stride, padding="same")
        out_default, out_same = default.forward(x), same.forward(x)
        assert out_default.shape == (2, 4, math.ceil(7 / stride), math.ceil(6 / stride))
        assert bool((out_default == out_same).all())
        dy = to_device(rng.standard_normal(out_same.shape), xp)
        assert bool((default.backward(dy) == same.backward(dy)).all())
        assert bool((default.grads["w"] == same.grads["w"]).all())


def test_conv_rejects_bad_padding():
    w, b = np.zeros((2, 2, 3, 3)), np.zeros(2)
    with pytest.raises(ValueError, match="padding"):
        Conv2D(w, b, padding="full")
    with pytest.raises(ValueError, match="padding"):
        Conv2D(w, b, padding=1)
    with pytest.raises(ValueError):
        Conv2D(w, b, stride=1, unfold="output", padding="valid")
    with pytest.raises(ValueError):
        Conv2D(w, b, stride=2, unfold="output")
    Conv2D(w, b, stride=1, unfold="output", padding="same")   # still allowed


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("x_shape", [(2, 3, 7, 8), (1, 2, 6, 5), (2, 1, 3, 3)])
def test_conv_valid_dense_fd(xp, stride, x_shape):
    # (7, 8) with stride 2 leaves the last column unread by every window: its gradient is 0.
    rng = np.random.default_rng(103)
    w = to_device(rng.standard_normal((2, x_shape[1], 3, 3)), xp)
    b = to_device(rng.standard_normal(2), xp)
    layer = Conv2D(w, b, stride, padding="valid")
    case = layer_case(layer, {"x": to_device(rng.standard_normal(x_shape), xp), "w": w, "b": b})
    assert dense_error(case, rng, xp) <= THRESHOLD_SMOOTH


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_valid_input_adjoint(xp, stride):
    rng = np.random.default_rng(104)
    x = to_device(rng.standard_normal((2, 4, 10, 9)), xp)
    layer = Conv2D(to_device(rng.standard_normal((5, 4, 3, 3)), xp), to_device(np.zeros(5), xp), stride,
                   padding="valid")
    ax = layer.forward(x)
    y = to_device(rng.standard_normal(ax.shape), xp)
    assert adjoint_gap(ax, y, x, layer.backward(y)) <= THRESHOLD_ADJOINT


# ---------------------------------------------------------------------------
# ConvTranspose2D
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("x_shape,w_shape", [((2, 3, 4, 5), (3, 2, 3, 3)), ((1, 2, 7, 7), (2, 3, 3, 3)),
                                             ((1, 1, 1, 2), (1, 2, 3, 3)), ((1, 2, 3, 4), (2, 1, 5, 5))])
def test_conv_transpose_matches_scatter_loop(xp, stride, x_shape, w_shape):
    rng = np.random.default_rng(110)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[1])
    out = ConvTranspose2D(to_device(w, xp), to_device(b, xp), stride).forward(to_device(x, xp))
    expected = ref.conv_transpose2d_forward(x, w, b, stride)
    assert out.shape == expected.shape == (x_shape[0], w_shape[1], stride * x_shape[2], stride * x_shape[3])
    assert rel_error(out, expected) <= THRESHOLD_REFERENCE


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("hw", [(5, 6), (4, 4), (1, 3)])
def test_conv_transpose_forward_is_conv_input_gradient(xp, stride, hw):
    """The teaching identity: ConvTranspose2D(w, 0).forward(y) == Conv2D(w, stride).backward(y)
    for the convolution of an input (N, C_out, s·h, s·w), whose output y is (N, C_in, h, w)."""
    rng = np.random.default_rng(111)
    c_in, c_out = 4, 3                     # transpose: c_in → c_out; the convolution: c_out → c_in
    h, wd = hw
    w = to_device(rng.standard_normal((c_in, c_out, 3, 3)), xp)
    y = to_device(rng.standard_normal((2, c_in, h, wd)), xp)
    conv = Conv2D(w, to_device(rng.standard_normal(c_in), xp), stride)   # the bias does not enter ∂E/∂x
    conv_out = conv.forward(to_device(rng.standard_normal((2, c_out, stride * h, stride * wd)), xp))
    assert conv_out.shape == y.shape
    input_gradient = conv.backward(y)
    out = ConvTranspose2D(w, to_device(np.zeros(c_out), xp), stride).forward(y)
    assert out.shape == input_gradient.shape == (2, c_out, stride * h, stride * wd)
    assert rel_error(out, input_gradient) <= THRESHOLD_REFERENCE


def test_conv_transpose_backward_is_conv_forward(xp):
    """Its input gradient is Conv2D's forward (zero bias) applied to the upstream gradient."""
    rng = np.random.default_rng(112)
    w = to_device(rng.standard_normal((3, 2, 3, 3)), xp)
    for stride in (1, 2):
        layer = ConvTranspose2D(w, to_device(rng.standard_normal(2), xp), stride)
        out = layer.forward(to_device(rng.standard_normal((2, 3, 5, 4)), xp))
        dy = to_device(rng.standard_normal(out.shape), xp)
        expected = Conv2D(w, to_device(np.zeros(3), xp), stride).forward(dy)
        assert rel_error(layer.backward(dy), expected) <= THRESHOLD_REFERENCE


def test_conv_transpose_places_pixel_i_at_s_times_i(xp):
    # With only the centre tap set, input pixel (i, j) lands exactly on output (s·i, s·j):
    # the symmetric padding p = 1 aligns input and output grids at the top-left corner
    # (TensorFlow's 'same' pads bottom/right instead: the documented half-pixel shift).
    rng = np.random.default_rng(113)
    w = np.zeros((1, 1, 3, 3))
    w[0, 0, 1, 1] = 1.0
    x = rng.standard_normal((1, 1, 3, 4))
    out = to_host(ConvTranspose2D(to_device(w, xp), to_device(np.zeros(1), xp), 2).forward(to_device(x, xp)))
    expected = np.zeros((1, 1, 6, 8))
    expected[:, :, ::2, ::2] = x
    assert np.array_equal(out, expected)


def test_conv_transpose_output_sizes_of_the_vae_decoder(xp):
    rng = np.random.default_rng(114)
    up1 = ConvTranspose2D(to_device(rng.standard_normal((32, 64, 3, 3)), xp), to_device(np.zeros(64), xp), 2)
    up2 = ConvTranspose2D(to_device(rng.standard_normal((64, 32, 3, 3)), xp), to_device(np.zeros(32), xp), 2)
    last = ConvTranspose2D(to_device(rng.standard_normal((32, 1, 3, 3)), xp), to_device(np.zeros(1), xp), 1)
    h = up1.forward(to_device(rng.standard_normal((2, 32, 7, 7)), xp))
    assert h.shape == (2, 64, 14, 14)
    h = up2.forward(h)
    assert h.shape == (2, 32, 28, 28)
    assert last.forward(h).shape == (2, 1, 28, 28)


def test_conv_transpose_rejects_bad_arguments():
    with pytest.raises(ValueError):
        ConvTranspose2D(np.zeros((2, 3, 2, 2)), np.zeros(3))
    with pytest.raises(ValueError):
        ConvTranspose2D(np.zeros((2, 3, 3, 3)), np.zeros(2))   # the bias has C_out = w.shape[1] entries
    with pytest.raises(ValueError):
        ConvTranspose2D(np.zeros((2, 3, 3, 3)), np.zeros(3), stride=3)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("x_shape", [(2, 3, 4, 5), (1, 2, 3, 3), (2, 1, 1, 2)])
def test_conv_transpose_dense_fd(xp, stride, x_shape):
    rng = np.random.default_rng(115)
    w = to_device(rng.standard_normal((x_shape[1], 2, 3, 3)), xp)
    b = to_device(rng.standard_normal(2), xp)
    layer = ConvTranspose2D(w, b, stride)
    case = layer_case(layer, {"x": to_device(rng.standard_normal(x_shape), xp), "w": w, "b": b})
    assert dense_error(case, rng, xp) <= THRESHOLD_SMOOTH


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_transpose_input_adjoint(xp, stride):
    rng = np.random.default_rng(116)
    x = to_device(rng.standard_normal((2, 5, 6, 7)), xp)
    layer = ConvTranspose2D(to_device(rng.standard_normal((5, 3, 3, 3)), xp), to_device(np.zeros(3), xp), stride)
    ax = layer.forward(x)
    y = to_device(rng.standard_normal(ax.shape), xp)
    assert adjoint_gap(ax, y, x, layer.backward(y)) <= THRESHOLD_ADJOINT


def test_a_wrong_conv_transpose_backward_fails_the_dense_check(xp, monkeypatch):
    """The check can fail: a backward that uses the spatially transposed kernel w[:, :, x, y] is caught."""
    correct = ConvTranspose2D.backward

    def spatially_transposed(self, dout, need_dx=True):
        w = self.params["w"]
        self.params["w"] = w.transpose(0, 1, 3, 2)
        try:
            return correct(self, dout, need_dx)
        finally:
            self.params["w"] = w

    monkeypatch.setattr(ConvTranspose2D, "backward", spatially_transposed)
    rng = np.random.default_rng(117)
    w = to_device(rng.standard_normal((2, 2, 3, 3)), xp)
    b = to_device(rng.standard_normal(2), xp)
    case = layer_case(ConvTranspose2D(w, b, 2), {"x": to_device(rng.standard_normal((1, 2, 3, 3)), xp),
                                                 "w": w, "b": b})
    assert dense_error(case, rng, xp) > 1e-2


# ---------------------------------------------------------------------------
# Linear, Reshape, Flatten
# ---------------------------------------------------------------------------

def test_linear_matches_loop(xp):
    rng = np.random.default_rng(120)
    x, w, b = rng.standard_normal((3, 7)), rng.standard_normal((4, 7)), rng.standard_normal(4)
    out = Linear(to_device(w, xp), to_device(b, xp)).forward(to_device(x, xp))
    expected = ref.linear_forward(x, w, b)
    assert out.shape == (3, 4)
    assert rel_error(out, expected) <= THRESHOLD_REFERENCE


@pytest.mark.parametrize("shapes", [((2, 5), (3, 5)), ((1, 4), (6, 4)), ((3, 1), (1, 1))])
def test_linear_dense_fd(xp, shapes):
    rng = np.random.default_rng(121)
    x_shape, w_shape = shapes
    w = to_device(rng.standard_normal(w_shape), xp)
    b = to_device(rng.standard_normal(w_shape[0]), xp)
    case = layer_case(Linear(w, b), {"x": to_device(rng.standard_normal(x_shape), xp), "w": w, "b": b})
    assert dense_error(case, rng, xp) <= THRESHOLD_SMOOTH


def test_linear_input_adjoint(xp):
    rng = np.random.default_rng(122)
    x = to_device(rng.standard_normal((4, 30)), xp)
    layer = Linear(to_device(rng.standard_normal((8, 30)), xp), to_device(np.zeros(8), xp))
    ax = layer.forward(x)
    y = to_device(rng.standard_normal(ax.shape), xp)
    assert adjoint_gap(ax, y, x, layer.backward(y)) <= THRESHOLD_ADJOINT


def test_linear_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        Linear(np.zeros((3, 4)), np.zeros(4))
    with pytest.raises(ValueError):
        Linear(np.zeros((3, 4)), np.zeros(3)).forward(np.zeros((2, 5)))


def test_flatten_orders_channel_row_column(xp):
    rng = np.random.default_rng(123)
    x = rng.standard_normal((2, 3, 4, 5))
    layer = Flatten()
    out = to_host(layer.forward(to_device(x, xp)))
    assert out.shape == (2, 60)
    for n in range(2):
        for c in range(3):
            for y in range(4):
                for col in range(5):
                    assert out[n, c * 20 + y * 5 + col] == x[n, c, y, col]
    dy = rng.standard_normal((2, 60))
    back = to_host(layer.backward(to_device(dy, xp)))
    assert back.shape == x.shape
    assert back[1, 2, 3, 4] == dy[1, 59] and back[0, 1, 0, 0] == dy[0, 20]


def test_flatten_of_a_channel_major_conv_output(xp):
    # Conv2D returns channel-major views; Flatten must still order per image (c, y, x).
    rng = np.random.default_rng(124)
    conv = Conv2D(to_device(rng.standard_normal((4, 1, 3, 3)), xp), to_device(np.zeros(4), xp), 2, padding="valid")
    h = conv.forward(to_device(rng.standard_normal((2, 1, 9, 9)), xp))
    flat = to_host(Flatten().forward(h))
    assert np.array_equal(flat, np.ascontiguousarray(to_host(h)).reshape(2, -1))


def test_reshape_round_trip_and_dense_fd(xp):
    rng = np.random.default_rng(125)
    layer = Reshape((2, 3, 2))
    x = to_device(rng.standard_normal((2, 12)), xp)
    out = layer.forward(x)
    assert out.shape == (2, 2, 3, 2)
    assert float(to_host(out)[1, 1, 2, 0]) == float(to_host(x)[1, 1 * 6 + 2 * 2 + 0])
    assert dense_error(layer_case(Reshape((2, 3, 2)), {"x": x}), rng, xp) <= THRESHOLD_SMOOTH
    with pytest.raises(ValueError):
        Reshape((5,)).forward(x)


# ---------------------------------------------------------------------------
# Sigmoid
# ---------------------------------------------------------------------------

def test_sigmoid_matches_the_formula(xp):
    rng = np.random.default_rng(130)
    x = np.concatenate([3 * rng.standard_normal(30), [-40.0, -20.0, 0.0, 20.0]])
    out = to_host(Sigmoid().forward(to_device(x, xp)))
    expected = np.array([1.0 / (1.0 + math.exp(-v)) for v in x])
    assert rel_error(out, expected) <= THRESHOLD_REFERENCE
    # full relative precision in the lower tail: σ(−40) = e^{−40}/(1 + e^{−40})
    assert out[30] == pytest.approx(math.exp(-40.0) / (1.0 + math.exp(-40.0)), rel=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_is_stable_for_huge_inputs(xp, dtype):
    x = to_device(np.array([-1000.0, -100.0, 100.0, 1000.0], dtype=dtype), xp)
    layer = Sigmoid()
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        out = to_host(layer.forward(x))
        dx = to_host(layer.backward(to_device(np.ones(4, dtype=dtype), xp)))
    assert out.dtype == dtype and np.all(np.isfinite(out)) and np.all(np.isfinite(dx))
    assert out[0] == 0.0 and out[-1] == 1.0
    assert out[1] >= 0.0 and out[2] <= 1.0
    assert np.all(dx >= 0.0) and dx[0] == 0.0 and dx[-1] == 0.0


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 7)])
def test_sigmoid_dense_fd(xp, shape):
    rng = np.random.default_rng(131)
    case = layer_case(Sigmoid(), {"x": to_device(3 * rng.standard_normal(shape), xp)})
    assert dense_error(case, rng, xp) <= THRESHOLD_SMOOTH


# ---------------------------------------------------------------------------
# Reparameterize
# ---------------------------------------------------------------------------

def test_reparameterize_forward(xp):
    rng = np.random.default_rng(140)
    mu, logvar, eps = rng.standard_normal((3, 4)), rng.uniform(-3, 1, (3, 4)), rng.standard_normal((3, 4))
    z = to_host(Reparameterize().forward(to_device(mu, xp), to_device(logvar, xp), to_device(eps, xp)))
    sigma = np.sqrt(np.exp(logvar))
    assert rel_error(z, mu + sigma * eps) <= THRESHOLD_REFERENCE


def test_reparameterize_eval_mode(xp):
    rng = np.random.default_rng(141)
    mu = to_device(rng.standard_normal((3, 4)), xp)
    logvar = to_device(rng.standard_normal((3, 4)), xp)
    layer = Reparameterize()
    z = layer.forward(mu, logvar)
    assert np.array_equal(to_host(z), to_host(mu)) and z is not mu
    dz = to_device(rng.standard_normal((3, 4)), xp)
    dmu, dlogvar = layer.backward(dz)
    assert np.array_equal(to_host(dmu), to_host(dz)) and dmu is not dz
    assert dlogvar.shape == (3, 4) and not bool(to_host(dlogvar).any())


@pytest.mark.parametrize("shape", [(2, 3), (1, 5)])
def test_reparameterize_dense_fd(xp, shape):
    rng = np.random.default_rng(142)
    eps = to_device(rng.standard_normal(shape), xp)
    layer = Reparameterize()
    variables = {"mu": to_device(rng.standard_normal(shape), xp),
                 "logvar": to_device(rng.uniform(-3, 1, shape), xp)}

    def gradients(dz):
        dmu, dlogvar = layer.backward(dz)
        return {"mu": dmu, "logvar": dlogvar}
    case = Case(variables, lambda: layer.forward(variables["mu"], variables["logvar"], eps), gradients, "test")
    assert dense_error(case, rng, xp) <= THRESHOLD_SMOOTH


def test_reparameterize_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        Reparameterize().forward(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 4)))


# ---------------------------------------------------------------------------
# KLDivergence
# ---------------------------------------------------------------------------

def test_kl_matches_the_gaussian_kl_per_dimension(xp):
    rng = np.random.default_rng(150)
    mu, logvar = rng.standard_normal((3, 4)), rng.uniform(-3, 1, (3, 4))
    batch_count = 5
    share, parts = KLDivergence().forward(to_device(mu, xp), to_device(logvar, xp), batch_count)
    assert parts == {} and share.shape == () and share.dtype == np.float64
    sigma = np.sqrt(np.exp(logvar))
    per_dimension = np.log(1.0 / sigma) + (sigma ** 2 + mu ** 2) / 2.0 - 0.5
    assert rel_error(share, per_dimension.sum() / batch_count) <= THRESHOLD_REFERENCE


def test_kl_matches_numerical_integration():
    """KL(q ‖ p) = ∫ q(z) (log q(z) − log p(z)) dz by quadrature, per dimension, summed (no closed form)."""
    rng = np.random.default_rng(151)
    mu, logvar = rng.standard_normal((2, 3)), rng.uniform(-2, 1, (2, 3))
    total = 0.0
    for m, lv in zip(mu.ravel(), logvar.ravel()):
        q = scipy.stats.norm(m, math.exp(0.5 * lv))
        value, _ = scipy.integrate.quad(lambda z, q=q: q.pdf(z) * (q.logpdf(z) - scipy.stats.norm.logpdf(z)),
                                        m - 30 * q.std(), m + 30 * q.std(), limit=200)
        total += value
    share, _ = KLDivergence().forward(mu, logvar, 2)
    assert float(share) == pytest.approx(total / 2, rel=1e-8)


def test_kl_is_zero_at_the_prior_and_shares_add_up(xp):
    rng = np.random.default_rng(152)
    share, _ = KLDivergence().forward(to_device(np.zeros((2, 3)), xp), to_device(np.zeros((2, 3)), xp), 2)
    assert float(share) == 0.0
    mu, logvar = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    loss = KLDivergence()
    whole = float(loss.forward(to_device(mu, xp), to_device(logvar, xp), 5)[0])
    parts = sum(float(loss.forward(to_device(mu[s], xp), to_device(logvar[s], xp), 5)[0])
                for s in (slice(0, 2), slice(2, 5)))
    assert parts == pytest.approx(whole, rel=1e-13)


@pytest.mark.parametrize("shape", [(2, 3), (1, 4)])
def test_kl_dense_fd(xp, shape):
    rng = np.random.default_rng(153)
    loss = KLDivergence()
    batch_count = shape[0] + 1
    variables = {"mu": to_device(rng.standard_normal(shape), xp),
                 "logvar": to_device(rng.uniform(-3, 1, shape), xp)}

    def gradients(upstream):
        dmu, dlogvar = loss.backward()
        return {"mu": upstream * dmu, "logvar": upstream * dlogvar}
    case = Case(variables, lambda: loss.forward(variables["mu"], variables["logvar"], batch_count)[0],
                gradients, "test")
    assert dense_error(case, rng, xp) <= THRESHOLD_SMOOTH


def test_kl_is_not_an_image_loss_in_the_registry():
    assert "kl" not in REGISTRY and KLDivergence.name == "kl"


# ---------------------------------------------------------------------------
# Dtypes and untouched inputs
# ---------------------------------------------------------------------------

def one_input_layers(rng, dtype, xp):
    """(layer, input shape) for every one-input layer, parameters of ``dtype`` on ``xp``."""
    def arr(shape):
        return to_device(rng.standard_normal(shape).astype(dtype), xp)
    return [
        (Conv2D(arr((4, 3, 3, 3)), arr((4,)), 2, padding="valid"), (2, 3, 9, 8)),
        (Conv2D(arr((4, 3, 3, 3)), arr((4,)), 1, padding="valid"), (2, 3, 9, 8)),
        (ConvTranspose2D(arr((3, 2, 3, 3)), arr((2,)), 2), (2, 3, 4, 5)),
        (ConvTranspose2D(arr((3, 2, 3, 3)), arr((2,)), 1), (2, 3, 4, 5)),
        (Linear(arr((4, 6)), arr((4,))), (3, 6)),
        (Reshape((3, 2)), (3, 6)),
        (Flatten(), (2, 3, 4, 5)),
        (Sigmoid(), (2, 3, 4, 5)),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layers_preserve_dtype_and_leave_inputs_alone(xp, dtype):
    rng = np.random.default_rng(160)
    for layer, shape in one_input_layers(rng, dtype, xp):
        name = type(layer).__name__
        params_before = {k: to_host(v).copy() for k, v in getattr(layer, "params", {}).items()}
        x_host = rng.standard_normal(shape).astype(dtype)
        x = to_device(x_host, xp)
        out = layer.forward(x)
        dy_host = rng.standard_normal(out.shape).astype(dtype)
        dy = to_device(dy_host, xp)
        dx = layer.backward(dy)
        assert out.dtype == dtype and dx.dtype == dtype and dx.shape == shape, name
        for k, g in getattr(layer, "grads", {}).items():
            assert g.dtype == dtype and g.shape == layer.params[k].shape, (name, k)
        assert np.array_equal(to_host(x), x_host) and np.array_equal(to_host(dy), dy_host), name
        for k, v in params_before.items():
            assert np.array_equal(to_host(layer.params[k]), v), (name, k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_latent_layers_preserve_dtype_and_leave_inputs_alone(xp, dtype):
    rng = np.random.default_rng(161)
    mu_h, lv_h, eps_h, dz_h = (rng.standard_normal((3, 4)).astype(dtype) for _ in range(4))
    mu, logvar, eps, dz = (to_device(a, xp) for a in (mu_h, lv_h, eps_h, dz_h))
    layer = Reparameterize()
    z = layer.forward(mu, logvar, eps)
    dmu, dlogvar = layer.backward(dz)
    assert z.dtype == dmu.dtype == dlogvar.dtype == dtype
    loss = KLDivergence()
    share, _ = loss.forward(mu, logvar, 4)
    kl_mu, kl_logvar = loss.backward()
    assert share.dtype == kl_mu.dtype == kl_logvar.dtype == dtype and share.shape == ()
    for device_array, host in ((mu, mu_h), (logvar, lv_h), (eps, eps_h), (dz, dz_h)):
        assert np.array_equal(to_host(device_array), host)


# ---------------------------------------------------------------------------
# The gradcheck rows of these layers pass (what `sflnet gradcheck` runs)
# ---------------------------------------------------------------------------

def test_the_gradcheck_forward_and_adjoint_rows_pass(xp):
    for name, entry in gradcheck_vae.registry_entries().items():
        for label, fn in entry.references + entry.adjoints:
            m = fn(np.random.default_rng(170), xp)
            threshold = THRESHOLD_REFERENCE if (label, fn) in entry.references else THRESHOLD_ADJOINT
            assert m.error <= threshold, (name, label, m.error)


# ---------------------------------------------------------------------------
# The whole β-VAE (network_vae, network_vae_sfl): E = β·KL + objective, ε fixed
# ---------------------------------------------------------------------------

def test_fixed_noise_gives_the_same_eps_every_draw_and_the_vae_uses_it():
    from sflnet import gradcheck  # noqa: PLC0415
    from sflnet.models import vae  # noqa: PLC0415

    eps = np.random.default_rng(3).standard_normal((2, vae.LATENT))
    noise = gradcheck_vae.FixedNoise(eps)
    first, second = noise.standard_normal((2, 2)), noise.standard_normal((2, 2))
    assert np.array_equal(first, eps) and np.array_equal(second, eps) and first is not second
    with pytest.raises(ValueError, match="shape"):
        noise.standard_normal((3, 2))
    # the case is one deterministic function of θ, and ε is really in it (z ≠ μ)
    entry = gradcheck.default_registry()["network_vae"]
    case = entry.make_case(np.random.default_rng(4), np, np.float64, "tiny")
    values = [float(case.evaluate()) for _ in range(3)]
    assert values[0] == values[1] == values[2]
    masks = case.masks()
    assert len(masks) == 5 + 3 and all(m.dtype == bool for m in masks)   # 5 ReLUs, 3 stft kink sides
    # through the model: ε = 0 gives exactly the z = μ VAE (noise None), the drawn ε does not
    params = {name: v.copy() for name, v in case.variables.items()}
    images = gradcheck_vae.vae_digit_batch(np.random.default_rng(5), 2)
    energies = []
    for noise in (None, gradcheck_vae.FixedNoise(np.zeros((2, vae.LATENT))), noise):
        model = vae.VAE(params, beta=gradcheck_vae.VAE_NETWORK_BETA)
        model.noise = noise
        energies.append(model.loss_and_grads(images, compute_grads=False).E)
    assert energies[0] == energies[1] != energies[2]


def test_vae_network_dense_sample_and_full_sample():
    from sflnet.models import vae  # noqa: PLC0415

    entry = gradcheck_vae.registry_entries()["network_vae_sfl"]
    case = entry.make_case(np.random.default_rng(6), np, np.float64, "tiny")
    assert set(case.sample) == set(vae.PARAM_NAMES) and case.error_scale == "gradient"
    assert all(len(indices) == 1 for indices in case.sample.values())
    full = entry.full_sample(np.random.default_rng(7), case.variables)
    for name, shape in vae.PARAM_SHAPES.items():
        expected = int(np.prod(shape)) if name.endswith("_b") else gradcheck_vae.VAE_FULL_WEIGHT_SAMPLE
        assert len(set(full[name])) == len(full[name]) == expected, name
        assert all(len(index) == len(shape) for index in full[name])


def test_the_vae_network_rows_pass(xp):
    """The rows' own checkers (dense_check, directional_check), at another seed than the suite's 0."""
    from sflnet.gradcheck.engine import directional_check  # noqa: PLC0415

    for name in gradcheck_vae.VAE_NETWORK_OBJECTIVES:
        entry = gradcheck_vae.registry_entries()[name]
        rng = np.random.default_rng([11, len(name)])
        case = entry.make_case(rng, xp, np.float64, "tiny")
        dense = dense_check(case, to_device(rng.standard_normal(()), xp))
        assert dense.error <= entry.dense_threshold, (name, dense.error, dense.note)
        assert "14 of 69989 elements" in dense.note and "ReLU masks" in dense.note
        case = entry.make_case(rng, xp, np.float64, "realistic")
        directional = directional_check(case, to_device(rng.standard_normal(()), xp), rng)
        assert directional.error <= entry.directional_threshold, (name, directional.error, directional.note)


def _failing(report):
    return {(row.layer, row.check) for row in report.rows if not row.passed}


def test_a_reparameterize_backward_without_eps_fails_the_network_row(monkeypatch):
    from sflnet import gradcheck, nn  # noqa: PLC0415

    # ∂E/∂logvar = dz·σ/2: the factor ε dropped
    monkeypatch.setattr(nn.Reparameterize, "backward", lambda self, dz: (dz.copy(), dz * self.std * 0.5))
    report = gradcheck.run_suite(device="cpu", layer=["reparameterize", "kl_loss", "network_vae"])
    assert _failing(report) == {("reparameterize", "dense"), ("reparameterize", "directional"),
                                ("network_vae", "dense (sampled)"), ("network_vae", "directional")}
    rows = {(row.layer, row.check): row for row in report.rows}
    assert rows[("network_vae", "dense (sampled)")].error > 1e-3
    assert rows[("network_vae", "directional")].error > 1e-3


def test_a_kl_gradient_twice_too_large_fails_the_network_row(monkeypatch):
    from sflnet import gradcheck  # noqa: PLC0415

    correct = KLDivergence.backward
    monkeypatch.setattr(KLDivergence, "backward", lambda self: tuple(2 * g for g in correct(self)))
    report = gradcheck.run_suite(device="cpu", layer=["reparameterize", "network_vae_sfl"])
    assert _failing(report) == {("network_vae_sfl", "dense (sampled)"), ("network_vae_sfl", "directional")}
    rows = {(row.layer, row.check): row for row in report.rows}
    # β = 0.005 makes the KL a small part of ∂E/∂θ, yet the error is ≥ 100× the thresholds
    assert rows[("network_vae_sfl", "dense (sampled)")].error > 100 * gradcheck.THRESHOLD_NETWORK_DENSE
    assert rows[("network_vae_sfl", "directional")].error > 100 * gradcheck.THRESHOLD_NETWORK_DIRECTIONAL
