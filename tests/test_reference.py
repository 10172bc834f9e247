"""The naive textbook layers and losses of :mod:`sflnet.gradcheck.references` equal the fast ones, forward and
every gradient.

Each test builds a small random case (seeded ``default_rng``, float64, odd and
even sizes, stride 1 and 2 where the layer has a stride), runs the fast layer
or loss of :mod:`sflnet.nn` / :mod:`sflnet.losses` and the reference
function, and requires the engine's relative error (``fd.rel_error``,
:func:`sflnet.gradcheck.engine.rel_error`) to be ≤ 1e-12 for the output and for every gradient. Upstream gradients are
random, never all ones. A few tests also check the reference backward passes
themselves against central finite differences, and one shows that the
comparison can fail (a convolution is not Eq. 2's correlation).
"""

import numpy as np
import pytest

from sflnet.gradcheck.references import layers as ref_layers
from sflnet.gradcheck.references import losses as ref_losses
from sflnet.nn import Conv2D, ConvTranspose2D, Linear, LoGBank, ReLU, Reparameterize, Sigmoid, Tanh, Upsample2x
from sflnet.ops.filters import log_kernel
from sflnet.losses import FocalFrequencyLoss, KLDivergence, L1Loss, PixelLoss, SpatialFrequencyLoss

TOL = 1e-12      # fast vs reference, float64
TOL_FD = 1e-7    # reference backward vs central differences (smooth maps)
SIGMAS = (0.8, 1.6, 3.2)


def check_equal(fd, pairs):
    """pairs: {label: (fast, reference)}; every pair must agree to TOL (the label names the failure)."""
    for label, (fast, ref) in pairs.items():
        assert np.shape(fast) == np.shape(ref), f"{label}: shapes {np.shape(fast)} vs {np.shape(ref)}"
        error = fd.rel_error(fast, ref)
        assert error <= TOL, f"{label}: rel error {error:.2e}"


# ---------------------------------------------------------------------------
# Conv2D (Eq. 2) and ConvTranspose2D (its adjoint)
# ---------------------------------------------------------------------------

CONV_CASES = [(1, "same", "input"), (1, "same", "output"), (2, "same", "input"),
              (1, "valid", "input"), (2, "valid", "input")]


@pytest.mark.parametrize("stride, padding, unfold", CONV_CASES)
@pytest.mark.parametrize("hw", [(5, 5), (6, 7)])
def test_conv2d_matches_reference(fd, stride, padding, unfold, hw):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, *hw))
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    layer = Conv2D(w, b, stride=stride, unfold=unfold, padding=padding)
    out = layer.forward(x)
    pad = 1 if padding == "same" else 0
    ref = ref_layers.conv2d_forward(x, w, b, stride, pad)
    dout = rng.standard_normal(out.shape)
    dx = layer.backward(dout)
    ref_dx, ref_dw, ref_db = ref_layers.conv2d_backward(dout, x, w, stride, pad)
    check_equal(fd, {"out": (out, ref), "dx": (dx, ref_dx), "dw": (layer.grads["w"], ref_dw),
                     "db": (layer.grads["b"], ref_db)})


def test_conv2d_with_a_5x5_kernel_matches_reference(fd):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 2, 7, 6))
    w = rng.standard_normal((3, 2, 5, 5))
    b = rng.standard_normal(3)
    layer = Conv2D(w, b, stride=2)
    out = layer.forward(x)
    dout = rng.standard_normal(out.shape)
    dx = layer.backward(dout)
    ref_dx, ref_dw, ref_db = ref_layers.conv2d_backward(dout, x, w, 2, 2)
    check_equal(fd, {"out": (out, ref_layers.conv2d_forward(x, w, b, 2, 2)), "dx": (dx, ref_dx),
                     "dw": (layer.grads["w"], ref_dw), "db": (layer.grads["b"], ref_db)})


def test_a_convolution_is_not_eq2_so_the_comparison_can_fail(fd):
    """Eq. 2 is a correlation: the reference fed the flipped kernel (a true convolution) must disagree."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 5, 6))
    w = rng.standard_normal((2, 2, 3, 3))
    b = np.zeros(2)
    out = Conv2D(w, b).forward(x)
    assert fd.rel_error(out, ref_layers.conv2d_forward(x, w, b, 1, 1)) <= TOL
    assert fd.rel_error(out, ref_layers.conv2d_forward(x, w[:, :, ::-1, ::-1], b, 1, 1)) > 1e-2


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("hw, k", [((3, 4), 3), ((5, 5), 3), ((4, 3), 5)])
def test_conv_transpose2d_matches_reference(fd, stride, hw, k):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, *hw))
    w = rng.standard_normal((3, 2, k, k))
    b = rng.standard_normal(2)
    layer = ConvTranspose2D(w, b, stride=stride)
    out = layer.forward(x)
    dout = rng.standard_normal(out.shape)
    dx = layer.backward(dout)
    ref_dx, ref_dw, ref_db = ref_layers.conv_transpose2d_backward(dout, x, w, stride)
    check_equal(fd, {"out": (out, ref_layers.conv_transpose2d_forward(x, w, b, stride)), "dx": (dx, ref_dx),
                     "dw": (layer.grads["w"], ref_dw), "db": (layer.grads["b"], ref_db)})


# ---------------------------------------------------------------------------
# Activations (Eq. 3)
# ---------------------------------------------------------------------------

def test_relu_matches_reference_including_exact_zeros(fd):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 5, 6))
    x[0, 0, 0, :3] = 0.0   # the kink: both take the gradient 0 there
    dout = rng.standard_normal(x.shape)
    layer = ReLU()
    check_equal(fd, {"out": (layer.forward(x), ref_layers.relu_forward(x)),
                     "dx": (layer.backward(dout), ref_layers.relu_backward(dout, x))})


@pytest.mark.parametrize("fast, forward, backward", [
    (Tanh, ref_layers.tanh_forward, ref_layers.tanh_backward),
    (Sigmoid, ref_layers.sigmoid_forward, ref_layers.sigmoid_backward)])
def test_smooth_activations_match_reference(fd, fast, forward, backward):
    rng = np.random.default_rng(6)
    x = 3 * rng.standard_normal((2, 3, 7, 5))
    dout = rng.standard_normal(x.shape)
    layer = fast()
    check_equal(fd, {"out": (layer.forward(x), forward(x)), "dx": (layer.backward(dout), backward(dout, x))})


# ---------------------------------------------------------------------------
# Bilinear ×2 (layer 4) and the LoG bank (layer 6)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("in_hw, out_hw", [((3, 4), (6, 8)), ((3, 4), (5, 7)), ((4, 3), (7, 6)), ((1, 2), (1, 4))])
def test_upsample2x_matches_reference(fd, in_hw, out_hw):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, *in_hw))
    layer = Upsample2x(output_size=out_hw)
    out = layer.forward(x)
    dout = rng.standard_normal(out.shape)
    check_equal(fd, {"out": (out, ref_layers.upsample2x_forward(x, *out_hw)),
                     "dx": (layer.backward(dout), ref_layers.upsample2x_backward(dout, *in_hw))})


@pytest.mark.parametrize("sigma", SIGMAS)
def test_log_kernel_matches_reference(fd, sigma):
    check_equal(fd, {f"K_{sigma}": (log_kernel(sigma), ref_layers.log_kernel(sigma))})


@pytest.mark.parametrize("hw", [(7, 6), (5, 5)])
def test_log_bank_matches_reference(fd, hw):
    rng = np.random.default_rng(8)
    f = rng.standard_normal((2, 3, *hw))
    bank = LoGBank(SIGMAS)
    out = bank.forward(f)
    dout = rng.standard_normal(out.shape)
    check_equal(fd, {"out": (out, ref_layers.log_bank_forward(f, SIGMAS)),
                     "dx": (bank.backward(dout), ref_layers.log_bank_backward(dout, f.shape, SIGMAS))})


# ---------------------------------------------------------------------------
# The β-VAE's Linear and Reparameterize
# ---------------------------------------------------------------------------

def test_linear_matches_reference(fd):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 7))
    w = rng.standard_normal((4, 7))
    b = rng.standard_normal(4)
    layer = Linear(w, b)
    out = layer.forward(x)
    dout = rng.standard_normal(out.shape)
    dx = layer.backward(dout)
    ref_dx, ref_dw, ref_db = ref_layers.linear_backward(dout, x, w)
    check_equal(fd, {"out": (out, ref_layers.linear_forward(x, w, b)), "dx": (dx, ref_dx),
                     "dw": (layer.grads["w"], ref_dw), "db": (layer.grads["b"], ref_db)})


def test_reparameterize_matches_reference(fd):
    rng = np.random.default_rng(10)
    mu, logvar, eps = rng.standard_normal((3, 2, 5))
    layer = Reparameterize()
    z = layer.forward(mu, logvar, eps)
    dz = rng.standard_normal(z.shape)
    dmu, dlogvar = layer.backward(dz)
    ref_dmu, ref_dlogvar = ref_layers.reparameterize_backward(dz, logvar, eps)
    check_equal(fd, {"z": (z, ref_layers.reparameterize_forward(mu, logvar, eps)), "dmu": (dmu, ref_dmu),
                     "dlogvar": (dlogvar, ref_dlogvar)})


# ---------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------

def _images(seed, hw=(6, 5), n=2):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (n, 3, *hw)), rng.uniform(-1, 1, (n, 3, *hw))


@pytest.mark.parametrize("hw", [(6, 5), (7, 7)])
def test_pixel_loss_matches_reference(fd, hw):
    recon, target = _images(11, hw)
    weights = (1.0, 2.0, 0.5)
    loss = PixelLoss(weights)
    value, _ = loss.forward(recon, target, 3)
    check_equal(fd, {"E_PL": (value, ref_losses.pixel_loss_forward(recon, target, 3, weights)),
                     "grad": (loss.backward(), ref_losses.pixel_loss_backward(recon, target, 3, weights))})


@pytest.mark.parametrize("hw", [(6, 5), (7, 7)])
def test_sfl_matches_reference(fd, hw):
    recon, target = _images(12, hw)
    weights = (100.0, 10.0, 10.0)
    loss = SpatialFrequencyLoss(SIGMAS, weights)
    value, parts = loss.forward(recon, target, 3)
    ref_value, ref_subbands = ref_losses.sfl_forward(recon, target, 3, SIGMAS, weights)
    check_equal(fd, {"E_SFL": (value, ref_value),
                     "subbands": ([parts[c] for c in loss.columns], ref_subbands),
                     "grad": (loss.backward(), ref_losses.sfl_backward(recon, target, 3, SIGMAS, weights))})


def test_l1_loss_matches_reference(fd):
    recon, target = _images(13)
    recon[0, 0, 0, 0] = target[0, 0, 0, 0]   # the kink: both take the subgradient 0
    loss = L1Loss()
    value, _ = loss.forward(recon, target, 3)
    check_equal(fd, {"E_L1": (value, ref_losses.l1_loss_forward(recon, target, 3)),
                     "grad": (loss.backward(), ref_losses.l1_loss_backward(recon, target, 3))})


def test_kl_divergence_matches_reference(fd):
    rng = np.random.default_rng(14)
    mu, logvar = rng.standard_normal((2, 3, 4))
    loss = KLDivergence()
    value, _ = loss.forward(mu, logvar, 5)
    dmu, dlogvar = loss.backward()
    ref_dmu, ref_dlogvar = ref_losses.kl_divergence_backward(mu, logvar, 5)
    check_equal(fd, {"E_KL": (value, ref_losses.kl_divergence_forward(mu, logvar, 5)),
                     "dmu": (dmu, ref_dmu), "dlogvar": (dlogvar, ref_dlogvar)})


@pytest.mark.parametrize("hw", [(6, 5), (4, 4)])
def test_focal_frequency_loss_matches_reference(fd, hw):
    recon, target = _images(15, hw)
    loss = FocalFrequencyLoss()
    value, _ = loss.forward(recon, target, 3)
    check_equal(fd, {"E_FFT": (value, ref_losses.fft_loss_forward(recon, target, 3)),
                     "grad": (loss.backward(), ref_losses.fft_loss_backward(recon, target, 3))})


# ---------------------------------------------------------------------------
# The reference backward passes against central finite differences (tiny cases)
# ---------------------------------------------------------------------------

def _fd_error(fd, function, x, analytic):
    """Best (over the eps sweep) rel error between ``analytic`` and the central differences of ``function`` at x."""
    return fd.best_over_eps(lambda eps: fd.rel_error(analytic, fd.numeric_gradient(function, x, eps)))


@pytest.mark.parametrize("stride", [1, 2])
def test_reference_conv2d_backward_against_finite_differences(fd, stride):
    rng = np.random.default_rng(16)
    x = rng.standard_normal((1, 2, 5, 4))
    w = rng.standard_normal((2, 2, 3, 3))
    b = rng.standard_normal(2)
    dout = rng.standard_normal(ref_layers.conv2d_forward(x, w, b, stride, 1).shape)
    dx, dw, db = ref_layers.conv2d_backward(dout, x, w, stride, 1)
    assert _fd_error(fd, lambda v: np.sum(dout * ref_layers.conv2d_forward(v, w, b, stride, 1)), x, dx) <= TOL_FD
    assert _fd_error(fd, lambda v: np.sum(dout * ref_layers.conv2d_forward(x, v, b, stride, 1)), w, dw) <= TOL_FD
    assert _fd_error(fd, lambda v: np.sum(dout * ref_layers.conv2d_forward(x, w, v, stride, 1)), b, db) <= TOL_FD


def test_reference_conv_transpose2d_backward_against_finite_differences(fd):
    rng = np.random.default_rng(17)
    x = rng.standard_normal((1, 2, 3, 2))
    w = rng.standard_normal((2, 2, 3, 3))
    b = rng.standard_normal(2)
    dout = rng.standard_normal((1, 2, 6, 4))
    dx, dw, db = ref_layers.conv_transpose2d_backward(dout, x, w, 2)
    forward = ref_layers.conv_transpose2d_forward
    assert _fd_error(fd, lambda v: np.sum(dout * forward(v, w, b, 2)), x, dx) <= TOL_FD
    assert _fd_error(fd, lambda v: np.sum(dout * forward(x, v, b, 2)), w, dw) <= TOL_FD
    assert _fd_error(fd, lambda v: np.sum(dout * forward(x, w, v, 2)), b, db) <= TOL_FD


def test_reference_upsample_and_log_bank_backward_against_finite_differences(fd):
    rng = np.random.default_rng(18)
    x = rng.standard_normal((1, 2, 3, 2))
    dout = rng.standard_normal((1, 2, 5, 4))
    up = ref_layers.upsample2x_backward(dout, 3, 2)
    assert _fd_error(fd, lambda v: np.sum(dout * ref_layers.upsample2x_forward(v, 5, 4)), x, up) <= TOL_FD
    f = rng.standard_normal((1, 3, 4, 3))
    dbands = rng.standard_normal((1, 2, 4, 3))
    dx = ref_layers.log_bank_backward(dbands, f.shape, (0.8, 1.6))
    assert _fd_error(fd, lambda v: np.sum(dbands * ref_layers.log_bank_forward(v, (0.8, 1.6))), f, dx) <= TOL_FD


@pytest.mark.parametrize("name", ["pixel_loss", "sfl", "fft_loss"])
def test_reference_loss_backward_against_finite_differences(fd, name):
    recon, target = _images(19, (4, 3), n=1)
    forward, backward = getattr(ref_losses, f"{name}_forward"), getattr(ref_losses, f"{name}_backward")
    if name == "fft_loss":
        # The focal weight is a constant of the backward (detached), so freeze it for the differences.
        _, focal = ref_losses.focal_spectrum(recon, target)
        grad = backward(recon, target, 2)

        def value(v):
            spectrum, _ = ref_losses.focal_spectrum(v, target)
            return float(np.sum(focal * np.abs(spectrum) ** 2)) / (2 * v[0].size)
    else:
        grad = backward(recon, target, 2)

        def value(v):
            result = forward(v, target, 2)
            return result[0] if isinstance(result, tuple) else result
    assert _fd_error(fd, value, recon, grad) <= TOL_FD
