"""The ``ssim`` loss: forward against scikit-image and a textbook loop, the hand-written backward
against central finite differences (the one engine, sflnet.gradcheck.engine), the adjoint of the
valid Gaussian filtering, a planted bug that the check must catch, dtypes and sizes.

Every test body runs on NumPy and, when a GPU is usable, on CuPy (the ``xp`` fixture).
"""

import numpy as np
import pytest

from sflnet.backend import to_device, to_host
from sflnet.gradcheck.cases.ssim import adjoint_ssim_filter, forward_ssim, make_ssim_case
from sflnet.gradcheck.engine import (THRESHOLD_ADJOINT, THRESHOLD_REFERENCE, THRESHOLD_SMOOTH, dense_check,
                                     directional_check)
from sflnet.gradcheck.references.losses import ssim_forward, ssim_library
from sflnet.losses.ssim import SSIMLoss, ssim_per_image, valid_filter, valid_filter_adjoint


def related_pair(rng, shape, low=-1.0, high=1.0):
    """Host float64 (recon, target) in [low, high]: target uniform, recon a noisy copy (SSIM well inside (0, 1))."""
    target = rng.uniform(low, high, size=shape)
    recon = np.clip(target + 0.25 * (high - low) * rng.standard_normal(shape), low, high)
    return recon, target


def skimage_ssim(x, y, data_range=2.0, data_min=-1.0):
    """scikit-image's SSIM of one (C, H, W) pair (the test skips without scikit-image)."""
    pytest.importorskip("skimage.metrics")
    values, which = ssim_library(x[None], y[None], data_range, data_min)
    assert which == "skimage structural_similarity"
    return values[0]


def random_upstream(rng, xp):
    """A random scalar upstream gradient (never 1), shaped like the loss value."""
    return to_device(np.asarray(rng.standard_normal(), dtype=np.float64), xp)


# ---------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 3, 23, 17), (2, 3, 12, 16), (2, 1, 11, 11)])
def test_share_of_a_group_of_two_in_a_batch_of_three_equals_scikit_image(xp, shape):
    recon, target = related_pair(np.random.default_rng(sum(shape)), shape)
    share, parts = SSIMLoss().forward(to_device(recon, xp), to_device(target, xp), 3)
    expected = sum(1.0 - skimage_ssim(r, t) for r, t in zip(recon, target)) / 3
    assert share.shape == () and parts == {}
    assert abs(float(share) - expected) <= THRESHOLD_REFERENCE


def test_share_with_a_zero_to_one_value_range_equals_scikit_image(xp):
    recon, target = related_pair(np.random.default_rng(5), (2, 3, 14, 19), 0.0, 1.0)
    share, _ = SSIMLoss((0.0, 1.0)).forward(to_device(recon, xp), to_device(target, xp), 2)
    expected = sum(1.0 - skimage_ssim(r, t, 1.0, 0.0) for r, t in zip(recon, target)) / 2
    assert abs(float(share) - expected) <= THRESHOLD_REFERENCE


@pytest.mark.parametrize("value_range", [(-1.0, 1.0), (0.0, 1.0)])
def test_per_image_ssim_equals_the_textbook_loop(xp, value_range):
    low, high = value_range
    recon, target = related_pair(np.random.default_rng(7), (2, 3, 16, 13), low, high)
    fast = to_host(ssim_per_image(to_device(recon, xp), to_device(target, xp), high - low, low))
    naive = [ssim_forward(r, t, high - low, low) for r, t in zip(recon, target)]
    np.testing.assert_allclose(fast, naive, rtol=0, atol=THRESHOLD_REFERENCE)


def test_the_gradcheck_forward_row_passes(xp):
    measurement = forward_ssim(np.random.default_rng(0), xp)
    assert measurement.error <= THRESHOLD_REFERENCE, measurement.samples


def test_shares_of_groups_add_up_to_the_batch_value(xp):
    recon, target = related_pair(np.random.default_rng(9), (3, 3, 12, 14))
    recon, target = to_device(recon, xp), to_device(target, xp)
    whole, _ = SSIMLoss().forward(recon, target, 3)
    first, _ = SSIMLoss().forward(recon[:1], target[:1], 3)
    rest, _ = SSIMLoss().forward(recon[1:], target[1:], 3)
    assert float(first) + float(rest) == pytest.approx(float(whole), abs=1e-15)


def test_identical_images_give_zero_loss_and_zero_gradient(xp):
    _, target = related_pair(np.random.default_rng(11), (2, 3, 13, 12))
    target = to_device(target, xp)
    loss = SSIMLoss()
    share, _ = loss.forward(target.copy(), target, 2)
    grad = to_host(loss.backward())
    assert abs(float(share)) <= 1e-15
    assert np.max(np.abs(grad)) <= 1e-15    # S = 1 is the maximum: a stationary point


# ---------------------------------------------------------------------------
# Backward: the shared gradient checker
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape, value_range", [((2, 3, 11, 12), (-1.0, 1.0)),
                                                ((1, 3, 13, 11), (-1.0, 1.0)),
                                                ((1, 2, 12, 11), (0.0, 1.0))])
def test_backward_matches_dense_central_differences(xp, shape, value_range):
    rng = np.random.default_rng(13)
    case = make_ssim_case(rng, xp, np.float64, "tiny", shape=shape, value_range=value_range)
    measurement = dense_check(case, random_upstream(rng, xp))
    assert measurement.error <= THRESHOLD_SMOOTH, measurement.samples


def test_backward_matches_directional_differences_on_a_realistic_batch(xp):
    rng = np.random.default_rng(17)
    case = make_ssim_case(rng, xp, np.float64, "realistic")
    measurement = directional_check(case, random_upstream(rng, xp), rng)
    assert measurement.error <= THRESHOLD_SMOOTH, measurement.samples


def test_valid_gaussian_filter_adjoint(xp):
    assert adjoint_ssim_filter(np.random.default_rng(19), xp).error <= THRESHOLD_ADJOINT
    rng = np.random.default_rng(23)
    x = to_device(rng.standard_normal((1, 2, 12, 16)), xp)      # even sizes too
    m = to_device(rng.standard_normal((1, 2, 2, 6)), xp)
    lhs = float((valid_filter(x) * m).sum())
    rhs = float((x * valid_filter_adjoint(m, 12, 16)).sum())
    assert abs(lhs - rhs) <= THRESHOLD_ADJOINT * abs(lhs)


def _halve_the_pxx_term(d_mu, d_pxx, d_pxy):
    return d_mu, 0.5 * d_pxx, d_pxy          # the 2x of ∂(x²)/∂x forgotten


def _scale_the_mean_term(d_mu, d_pxx, d_pxy):
    return 0.99 * d_mu, d_pxx, d_pxy         # one term 1% off


@pytest.mark.parametrize("plant", [_halve_the_pxx_term, _scale_the_mean_term])
def test_a_planted_backward_bug_fails_the_dense_check(xp, monkeypatch, plant):
    original = SSIMLoss._statistic_gradients
    monkeypatch.setattr(SSIMLoss, "_statistic_gradients", lambda self: plant(*original(self)))
    rng = np.random.default_rng(13)
    case = make_ssim_case(rng, xp, np.float64, "tiny")
    measurement = dense_check(case, random_upstream(rng, xp))
    assert measurement.error > THRESHOLD_SMOOTH
    assert measurement.error > 1e-4      # not a near miss: far above the rounding level


# ---------------------------------------------------------------------------
# Dtypes, inputs, sizes
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_preserved_and_inputs_are_unchanged(xp, dtype):
    recon, target = related_pair(np.random.default_rng(29), (2, 3, 15, 12))
    recon, target = to_device(recon.astype(dtype), xp), to_device(target.astype(dtype), xp)
    recon_before, target_before = recon.copy(), target.copy()
    loss = SSIMLoss()
    share, _ = loss.forward(recon, target, 3)
    grad = loss.backward()
    again = loss.backward()                  # backward leaves its caches as they were
    assert share.dtype == dtype and grad.dtype == dtype and grad.shape == recon.shape
    assert type(grad) is type(recon)
    assert xp.array_equal(recon, recon_before) and xp.array_equal(target, target_before)
    assert xp.array_equal(grad, again)


def test_float32_agrees_with_float64(xp):
    recon, target = related_pair(np.random.default_rng(31), (2, 3, 20, 17))
    results = []
    for dtype in (np.float32, np.float64):
        loss = SSIMLoss()
        share, _ = loss.forward(to_device(recon.astype(dtype), xp), to_device(target.astype(dtype), xp), 2)
        results.append((float(share), to_host(loss.backward()).astype(np.float64)))
    (share32, grad32), (share64, grad64) = results
    assert share32 == pytest.approx(share64, abs=1e-5)
    assert np.max(np.abs(grad32 - grad64)) <= 1e-4 * np.max(np.abs(grad64))


def test_size_problem_and_value_error_for_images_smaller_than_the_window(xp):
    loss = SSIMLoss()
    text = "the ssim loss needs images of at least 11x11 pixels (its Gaussian window), got 10x20"
    assert loss.size_problem(10, 20) == text
    assert loss.size_problem(20, 10).endswith("got 20x10")
    assert loss.size_problem(11, 11) is None
    images = to_device(np.zeros((1, 3, 10, 20), dtype=np.float64), xp)
    with pytest.raises(ValueError, match="at least 11x11 pixels") as raised:
        loss.forward(images, images, 1)
    assert str(raised.value) == text


def test_bad_value_range_is_rejected():
    with pytest.raises(ValueError, match="high > low"):
        SSIMLoss((1.0, 1.0))
