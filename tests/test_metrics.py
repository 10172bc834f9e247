"""Tests for sflnet.metrics, checked against values derived by hand, a brute-force loop and scikit-image."""

import math

import numpy as np
import pytest

from sflnet import metrics
from sflnet.gradcheck.references.losses import ssim_forward

C1_RANGE_2 = (0.01 * 2.0) ** 2  # C1 for data_range = 2
C2_RANGE_2 = (0.03 * 2.0) ** 2


def random_image(height=16, width=20, seed=0):
    """Random (3, H, W) float64 image with values in [-1, 1]."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, size=(3, height, width))


def noisy_copy(image, noise, seed=1):
    rng = np.random.default_rng(seed)
    return np.clip(image + rng.normal(0.0, noise, size=image.shape), -1.0, 1.0)


# ---------------------------------------------------------------------------
# PSNR
# ---------------------------------------------------------------------------


def test_psnr_of_constant_offset_by_hand():
    x = random_image() * 0.5  # stays inside [-1, 1] after the offset
    y = x + 0.1
    # MSE = 0.1**2 = 0.01, so PSNR = 10 log10(2**2 / 0.01) = 10 log10(400).
    assert metrics.psnr(x, y) == pytest.approx(26.020599913, abs=1e-6)
    assert metrics.psnr(y, x) == pytest.approx(26.020599913, abs=1e-6)


def test_psnr_of_one_8bit_step_everywhere():
    # One grey level off on [0, 255]: MSE = 1, PSNR = 20 log10(255) = 48.1308 dB.
    # On the [-1, 1] scale one grey level is 1 / 127.5.
    x = np.full((3, 5, 7), -0.2, dtype=np.float32)
    y = x + np.float32(1 / 127.5)
    assert metrics.psnr(x, y) == pytest.approx(48.130803609, abs=1e-4)


def test_psnr_of_half_the_pixels_wrong_by_hand():
    x = np.zeros((3, 4, 4), dtype=np.float64)
    y = np.zeros((3, 4, 4), dtype=np.float64)
    y[:, :2, :] = 1.0  # half the values off by 1 -> MSE = 0.5
    assert metrics.psnr(x, y) == pytest.approx(10 * math.log10(4 / 0.5))


def test_psnr_identical_is_infinite():
    x = random_image()
    assert metrics.psnr(x, x.copy()) == math.inf


def test_psnr_is_the_same_on_8bit_and_unit_scales():
    x = random_image(seed=2)
    y = noisy_copy(x, 0.05)
    reference = metrics.psnr(x, y)
    assert metrics.psnr((x + 1) * 127.5, (y + 1) * 127.5, data_range=255) == pytest.approx(reference)
    assert metrics.psnr((x + 1) / 2, (y + 1) / 2, data_range=1.0) == pytest.approx(reference)


def test_psnr_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        metrics.psnr(np.zeros((3, 4, 4), dtype=np.float64), np.zeros((3, 4, 5), dtype=np.float64))


# ---------------------------------------------------------------------------
# SSIM
# ---------------------------------------------------------------------------


def test_ssim_matches_brute_force_reference():
    x = random_image(13, 12, seed=4)
    y = noisy_copy(x, 0.3, seed=5)
    # ssim() shifts [-1, 1] to [0, 2] before computing (data_min=-1). The reference is the textbook
    # loop over the valid 11x11 Gaussian windows (sigma 1.5); another window would be far off.
    expected = ssim_forward(x, y, 2.0, -1.0)
    assert metrics.ssim(x, y) == pytest.approx(expected, abs=1e-10)


def test_ssim_of_identical_images_is_one():
    for height, width in [(16, 20), (11, 11), (11, 40), (23, 12)]:
        x = random_image(height, width, seed=height)
        assert metrics.ssim(x, x.copy()) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("a, b", [(0.3, 0.7), (0.0, 2.0), (1.5, 1.5), (0.05, 1.9)])
def test_ssim_of_constant_images_matches_closed_form(a, b):
    # Constant images have zero variance and covariance, so the structure term
    # is C2 / C2 = 1 and SSIM is the luminance term (2ab + C1) / (a^2 + b^2 + C1).
    x = np.full((3, 12, 12), a, dtype=np.float64)
    y = np.full((3, 12, 12), b, dtype=np.float64)
    expected = (2 * a * b + C1_RANGE_2) / (a**2 + b**2 + C1_RANGE_2)
    assert metrics.ssim(x, y, data_min=0.0) == pytest.approx(expected, rel=1e-9)


def test_ssim_of_constant_images_on_default_scale_uses_shifted_values():
    # On [-1, 1] the values -0.2 and 0.4 are 0.8 and 1.4 on the [0, 2] scale.
    x = np.full((3, 11, 13), -0.2, dtype=np.float64)
    y = np.full((3, 11, 13), 0.4, dtype=np.float64)
    expected = (2 * 0.8 * 1.4 + C1_RANGE_2) / (0.8**2 + 1.4**2 + C1_RANGE_2)
    assert metrics.ssim(x, y) == pytest.approx(expected, rel=1e-9)


def test_ssim_is_symmetric_and_drops_with_noise():
    x = random_image(seed=6)
    previous = 1.0
    for noise in (0.02, 0.1, 0.3):
        y = noisy_copy(x, noise)
        value = metrics.ssim(x, y)
        assert value == pytest.approx(metrics.ssim(y, x), abs=1e-12)
        assert value < previous
        previous = value
    assert previous < 0.9


def test_ssim_of_unrelated_noise_is_near_zero():
    x = random_image(32, 32, seed=7)
    y = random_image(32, 32, seed=8)
    assert abs(metrics.ssim(x, y)) < 0.1


def test_ssim_is_the_same_on_8bit_and_unit_scales():
    x = random_image(seed=9)
    y = noisy_copy(x, 0.1)
    reference = metrics.ssim(x, y)
    on_255 = metrics.ssim((x + 1) * 127.5, (y + 1) * 127.5, data_range=255, data_min=0.0)
    on_unit = metrics.ssim((x + 1) / 2, (y + 1) / 2, data_range=1.0, data_min=0.0)
    assert on_255 == pytest.approx(reference, abs=1e-10)
    assert on_unit == pytest.approx(reference, abs=1e-10)


def structured_pair(channels, height, width):
    """A smooth image with edges, flat blocks and a fine checkerboard, and a blurred, darkened, noisy copy."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    base = 0.6 * np.sin(rows / 3.0) * np.cos(cols / 4.5) + 0.2 * ((rows + cols) % 2)
    base[: height // 3, : width // 2] = -0.7   # a flat block: zero variance inside
    base[height // 2 :, width // 2 :] = 0.9
    x = np.stack([np.clip(base * (1.0 - 0.2 * c), -1.0, 1.0) for c in range(channels)])
    blurred = (x + np.roll(x, 1, axis=2) + np.roll(x, 1, axis=1)) / 3.0
    rng = np.random.default_rng(height * 100 + width)
    y = np.clip(0.8 * blurred - 0.1 + 0.05 * rng.standard_normal(x.shape), -1.0, 1.0)
    return x, y


def skimage_ssim(x, y):
    """scikit-image's SSIM with the settings of Wang et al. 2004, on [-1, 1] images shifted to [0, 2]."""
    structural_similarity = pytest.importorskip("skimage.metrics").structural_similarity
    return structural_similarity(x + 1.0, y + 1.0, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=2.0, channel_axis=0)


@pytest.mark.parametrize("shape", [(3, 11, 11), (3, 23, 17), (1, 40, 31), (3, 16, 20), (2, 12, 11)])
def test_ssim_equals_scikit_image_on_random_images(shape):
    x = random_image(shape[1], shape[2], seed=shape[1] * shape[2])[: shape[0]]
    for noise in (0.05, 0.3, 2.0):   # from nearly identical to unrelated
        y = noisy_copy(x, noise, seed=shape[2])
        assert abs(metrics.ssim(x, y) - skimage_ssim(x, y)) <= 1e-12


@pytest.mark.parametrize("shape", [(3, 11, 11), (3, 23, 17), (1, 40, 31), (3, 16, 20)])
def test_ssim_equals_scikit_image_on_structured_images(shape):
    x, y = structured_pair(*shape)
    assert abs(metrics.ssim(x, y) - skimage_ssim(x, y)) <= 1e-12
    assert abs(metrics.ssim(x, x.copy()) - skimage_ssim(x, x.copy())) <= 1e-12
    flat = np.full(shape, 0.25)   # a constant image against a structured one
    assert abs(metrics.ssim(flat, x) - skimage_ssim(flat, x)) <= 1e-12


def test_ssim_is_the_function_the_ssim_loss_uses():
    from sflnet.losses.ssim import SSIMLoss  # noqa: PLC0415

    x, y = structured_pair(3, 23, 17)
    share, _ = SSIMLoss((-1.0, 1.0)).forward(y[None], x[None], 1)
    assert float(share) == pytest.approx(1.0 - metrics.ssim(x, y), abs=1e-15)


@pytest.mark.parametrize("height, width", [(1, 1), (2, 2), (10, 20), (20, 10), (10, 10), (3, 40)])
def test_ssim_of_images_smaller_than_the_window_is_nan(height, width):
    x = random_image(height, width, seed=height + width)
    y = noisy_copy(x, 0.1)
    assert math.isnan(metrics.ssim(x, y))
    assert math.isnan(metrics.ssim(x, x.copy()))


def test_inputs_are_not_modified():
    x = random_image(seed=10).astype(np.float32)
    y = noisy_copy(x, 0.1).astype(np.float32)
    x_before, y_before = x.copy(), y.copy()
    metrics.psnr(x, y)
    metrics.ssim(x, y)
    metrics.mean_psnr_ssim([x], [y])
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(y, y_before)


# ---------------------------------------------------------------------------
# Means over a list of images
# ---------------------------------------------------------------------------


def test_mean_psnr_ssim_over_images_of_different_sizes():
    originals = [random_image(12, 14, seed=11), random_image(11, 11, seed=12), random_image(23, 17, seed=13)]
    reconstructions = [noisy_copy(image, 0.1, seed=i) for i, image in enumerate(originals)]
    mean_psnr, mean_ssim = metrics.mean_psnr_ssim(originals, reconstructions)
    psnrs = [metrics.psnr(o, r) for o, r in zip(originals, reconstructions)]
    ssims = [metrics.ssim(o, r) for o, r in zip(originals, reconstructions)]
    assert mean_psnr == pytest.approx(sum(psnrs) / 3)
    assert mean_ssim == pytest.approx(sum(ssims) / 3)
    assert isinstance(mean_psnr, float) and isinstance(mean_ssim, float)


def test_mean_psnr_ssim_with_a_tiny_image_has_nan_ssim_and_a_finite_psnr():
    # A 1x1 image still evaluates: PSNR as usual, SSIM nan (the CLI writes null).
    originals = [random_image(16, 20, seed=14), random_image(1, 1, seed=15)]
    reconstructions = [noisy_copy(image, 0.1, seed=i) for i, image in enumerate(originals)]
    mean_psnr, mean_ssim = metrics.mean_psnr_ssim(originals, reconstructions)
    assert math.isfinite(mean_psnr)
    assert math.isnan(mean_ssim)


def test_mean_psnr_ssim_by_hand():
    zeros = np.zeros((3, 4, 4), dtype=np.float64)
    originals = [zeros, zeros]
    reconstructions = [zeros + 0.1, zeros + 0.2]  # MSE 0.01 and 0.04
    mean_psnr, _ = metrics.mean_psnr_ssim(originals, reconstructions)
    assert mean_psnr == pytest.approx((10 * math.log10(400) + 10 * math.log10(100)) / 2)


def test_mean_psnr_ssim_rejects_bad_lists():
    with pytest.raises(ValueError):
        metrics.mean_psnr_ssim([np.zeros((3, 2, 2), dtype=np.float64)], [])
    with pytest.raises(ValueError):
        metrics.mean_psnr_ssim([], [])
