"""The ``fft`` loss (focal frequency loss): forward vs numpy.fft.fft2 written out, dense and directional
finite differences with the focal weights frozen, the DFT adjoint, a planted bug, dtypes and passing the weights in."""

import numpy as np
import pytest

from sflnet.backend import to_device, to_host
from sflnet.gradcheck.cases import freq
from sflnet.gradcheck.engine import Case, dense_check, directional_check
from sflnet.gradcheck.references.losses import fft_loss_numpy
from sflnet.losses.fft import FocalFrequencyLoss, focal_weights
from sflnet.ops.spectral import dft2, dft2_adjoint

SMOOTH = 1e-7
EXACT = 1e-12


def _upstream(rng, xp, dtype=np.float64):
    """A random upstream scalar (never 1), as the checks of sflnet.gradcheck.suite use."""
    return to_device(np.asarray(rng.standard_normal(), dtype=dtype), xp)


@pytest.mark.parametrize("shape", [(2, 3, 9, 8), (3, 1, 5, 7), (1, 3, 16, 12)])
def test_forward_matches_direct_fft2(xp, shape):
    rng = np.random.default_rng(1)
    recon, target = rng.uniform(-1, 1, shape), rng.uniform(-1, 1, shape)
    value, parts = FocalFrequencyLoss().forward(to_device(recon, xp), to_device(target, xp), shape[0] + 2)
    expected = fft_loss_numpy(recon, target, shape[0] + 2)
    assert parts == {}
    assert abs(float(value) - expected) <= EXACT * abs(expected)


def test_forward_row_of_the_suite(xp):
    m = freq.forward_fft(np.random.default_rng(2), xp)
    assert m.error <= EXACT, m.samples


@pytest.mark.parametrize("shape", [(2, 3, 5, 6), (1, 3, 7, 4)])
def test_dense_gradcheck_with_frozen_weights(xp, shape):
    rng = np.random.default_rng(3)
    case = freq.make_fft_case(rng, xp, np.float64, "tiny", shape=shape)
    m = dense_check(case, _upstream(rng, xp))
    assert m.error <= SMOOTH, "\n".join(m.samples)


def test_directional_gradcheck_realistic(xp):
    rng = np.random.default_rng(4)
    case = freq.make_fft_case(rng, xp, np.float64, "realistic")
    m = directional_check(case, _upstream(rng, xp), rng)
    assert m.error <= SMOOTH, "\n".join(m.samples)


def test_unfrozen_weights_give_the_full_derivative_not_the_detached_one(xp):
    """Without freezing, finite differences see ∂(w|D|²) through w too (3/2 on non-max bins): far from backward."""
    rng = np.random.default_rng(5)
    shape = (1, 2, 5, 6)
    recon, target = to_device(rng.uniform(-1, 1, shape), xp), to_device(rng.uniform(-1, 1, shape), xp)
    loss = FocalFrequencyLoss()
    variables = {"recon": recon}
    case = Case(variables, lambda: loss.forward(variables["recon"], target, 2)[0],
                               lambda up: {"recon": up * loss.backward()}, "unfrozen")
    assert dense_check(case, _upstream(rng, xp)).error > 1e-2


def test_adjoint_of_the_orthonormal_dft(xp):
    m = freq.adjoint_dft(np.random.default_rng(6), xp)
    assert m.error <= EXACT, m.samples


def test_dft2_is_unitary_and_keeps_precision(xp):
    rng = np.random.default_rng(7)
    x = to_device(rng.standard_normal((2, 7, 6)), xp)
    spectrum = dft2(x)
    assert spectrum.dtype == np.complex128
    assert float(abs((spectrum * spectrum.conj()).real.sum() - (x * x).sum())) <= EXACT * float((x * x).sum())
    assert float(abs(dft2_adjoint(spectrum) - x).max()) <= EXACT
    x32 = x.astype(np.float32)
    assert dft2(x32).dtype == np.complex64
    assert dft2_adjoint(dft2(x32)).dtype == np.float32


class DroppedFactorTwo(FocalFrequencyLoss):
    """Planted bug: Re(F^H(w D)) / (N_m C H W), without the 2 of d|D|²."""

    def backward(self):
        _, c, h, w = self.weighted_difference.shape
        return dft2_adjoint(self.weighted_difference) / (self.batch_count * c * h * w)


def test_planted_bug_is_caught(xp, monkeypatch):
    monkeypatch.setattr(freq, "FocalFrequencyLoss", DroppedFactorTwo)
    rng = np.random.default_rng(8)
    case = freq.make_fft_case(rng, xp, np.float64, "tiny")
    m = dense_check(case, _upstream(rng, xp))
    assert m.error > SMOOTH
    assert m.error > 0.3     # |g − g/2| / (|g| + |g/2|) = 1/3


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtypes_preserved_and_inputs_unchanged(xp, dtype):
    rng = np.random.default_rng(9)
    shape = (2, 3, 8, 5)
    recon = to_device(rng.uniform(-1, 1, shape).astype(dtype), xp)
    target = to_device(rng.uniform(-1, 1, shape).astype(dtype), xp)
    recon_before, target_before = to_host(recon).copy(), to_host(target).copy()
    loss = FocalFrequencyLoss()
    value, _ = loss.forward(recon, target, 3)
    grad = loss.backward()
    assert value.dtype == dtype and value.shape == ()
    assert grad.dtype == dtype and grad.shape == shape
    assert np.array_equal(to_host(recon), recon_before) and np.array_equal(to_host(target), target_before)


def test_identical_images_give_zero_not_nan(xp):
    x = to_device(np.random.default_rng(10).uniform(-1, 1, (2, 3, 6, 5)), xp)
    loss = FocalFrequencyLoss()
    value, _ = loss.forward(x, x.copy(), 2)
    grad = loss.backward()
    assert float(value) == 0.0
    assert np.all(to_host(grad) == 0.0)


def test_partly_identical_channels(xp):
    """One channel equal (max |D| = 0 → w = 0), the others not: finite and equal to the direct sum."""
    rng = np.random.default_rng(11)
    recon, target = rng.uniform(-1, 1, (1, 3, 5, 6)), rng.uniform(-1, 1, (1, 3, 5, 6))
    target[0, 1] = recon[0, 1]
    loss = FocalFrequencyLoss()
    value, _ = loss.forward(to_device(recon, xp), to_device(target, xp), 1)
    grad = to_host(loss.backward())
    assert abs(float(value) - fft_loss_numpy(recon, target, 1)) <= EXACT * float(value)
    assert np.all(np.isfinite(grad)) and np.all(grad[0, 1] == 0.0)


def test_group_shares_add_up_to_the_batch_value(xp):
    rng = np.random.default_rng(12)
    recon, target = rng.uniform(-1, 1, (5, 3, 6, 7)), rng.uniform(-1, 1, (5, 3, 6, 7))
    loss = FocalFrequencyLoss()
    whole = float(loss.forward(to_device(recon, xp), to_device(target, xp), 5)[0])
    parts = sum(float(loss.forward(to_device(recon[s], xp), to_device(target[s], xp), 5)[0])
                for s in (slice(0, 2), slice(2, 5)))
    assert abs(whole - parts) <= EXACT * whole


def test_weights_passed_in(xp):
    """forward(..., weights=w) uses the given w: w = focal_weights of the point gives the plain forward,
    bit for bit; the w of another point gives the quadratic form mean(w|D|²), not the focal loss there."""
    rng = np.random.default_rng(13)
    recon = to_device(rng.uniform(-1, 1, (2, 3, 5, 6)), xp)
    target = to_device(rng.uniform(-1, 1, (2, 3, 5, 6)), xp)
    loss = FocalFrequencyLoss()
    plain = loss.forward(recon, target, 3)[0]
    plain_grad = to_host(loss.backward())
    weights = focal_weights(recon, target)
    assert weights.shape == recon.shape and weights.dtype == recon.dtype
    given = loss.forward(recon, target, 3, weights=weights)[0]
    assert float(given) == float(plain)
    assert np.array_equal(to_host(loss.backward()), plain_grad)
    moved = recon + 0.1
    held = float(loss.forward(moved, target, 3, weights=weights)[0])
    assert held != float(FocalFrequencyLoss().forward(moved, target, 3)[0])
    spectrum = dft2(moved - target)
    expected = float((weights * abs(spectrum) ** 2).sum()) / (3 * 3 * 5 * 6)
    assert abs(held - expected) <= EXACT * expected


def test_no_size_problem():
    assert FocalFrequencyLoss().size_problem(1, 1) is None
