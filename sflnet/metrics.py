"""Image quality metrics: PSNR and SSIM.

Images are compared on the network's own scale: arrays of shape ``(3, H, W)``
with values in ``[-1, 1]``. The distance between the darkest and the brightest
value is therefore 2, so the default ``data_range`` is 2.0. This gives the same
numbers as the usual PSNR and SSIM of the 8-bit images on a ``[0, 255]`` scale
(``data_range=255``) or on a ``[0, 1]`` scale (``data_range=1``):

* PSNR only depends on differences relative to ``data_range``, so any scale
  with the right range gives the same value.
* SSIM also depends on the absolute mean brightness (its luminance term
  ``(2 mu_x mu_y + C1) / (mu_x**2 + mu_y**2 + C1)`` is not shift-invariant and
  misbehaves when the means have opposite signs). :func:`ssim` therefore first
  shifts both images by ``-data_min`` (default ``data_min=-1``) so the scale
  runs from 0 to ``data_range``, exactly like ``[0, 255]`` scaled by 2/255.
  For images already on ``[0, 255]`` call ``ssim(x, y, 255, data_min=0)``.

* PSNR = ``10 * log10(data_range**2 / MSE)``, MSE over all channels and pixels;
  infinite for identical images.
* SSIM follows Wang, Bovik, Sheikh and Simoncelli (2004): local means,
  variances and covariance are taken with a Gaussian window of standard
  deviation 1.5 truncated to 11x11 pixels, ``K1 = 0.01``, ``K2 = 0.03``,
  ``C1 = (K1 * L)**2``, ``C2 = (K2 * L)**2`` with ``L = data_range``. It is
  computed per channel in float64 and averaged over channels and ALL pixels;
  borders use mirror ("reflect") padding. (scikit-image instead drops a
  5-pixel border before averaging, so its numbers differ slightly.)

Arrays are only read, never modified. CuPy arrays are accepted too: they are
copied to the host first.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # radius int(3.5 * 1.5 + 0.5) = 5 -> an 11x11 window
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _as_float64_pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    """Both images as float64 NumPy arrays of the same shape (3, H, W)."""
    if hasattr(x, "get"):  # a CuPy array: copy to host memory
        x = x.get()
    if hasattr(y, "get"):
        y = y.get()
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"images must have the same shape, got {x.shape} and {y.shape}")
    if x.ndim != 3:
        raise ValueError(f"expected images of shape (C, H, W), got {x.shape}")
    return x, y


def psnr(x, y, data_range: float = 2.0) -> float:
    """Peak signal-to-noise ratio in dB.

    Args:
        x, y: arrays of shape ``(3, H, W)``, values in ``[-1, 1]`` by default.
        data_range: max value minus min value of the scale (2 for [-1, 1]).

    Returns:
        ``10 * log10(data_range**2 / mean((x - y)**2))``; ``inf`` if x == y.
    """
    x, y = _as_float64_pair(x, y)
    mse = float(np.mean((x - y) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def _ssim_one_channel(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    """Mean SSIM of two (H, W) float64 arrays."""
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2

    def local_mean(a: np.ndarray) -> np.ndarray:
        return gaussian_filter(a, sigma=SSIM_SIGMA, truncate=SSIM_TRUNCATE, mode="reflect")

    mu_x = local_mean(x)
    mu_y = local_mean(y)
    var_x = local_mean(x * x) - mu_x * mu_x
    var_y = local_mean(y * y) - mu_y * mu_y
    cov_xy = local_mean(x * y) - mu_x * mu_y

    luminance_term = (2.0 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    structure_term = (2.0 * cov_xy + c2) / (var_x + var_y + c2)
    return float(np.mean(luminance_term * structure_term))


def ssim(x, y, data_range: float = 2.0, *, data_min: float = -1.0) -> float:
    """Structural similarity (Wang et al. 2004), mean over channels and pixels.

    Args:
        x, y: arrays of shape ``(3, H, W)`` (any number of channels works),
            values in ``[-1, 1]`` by default.
        data_range: max value minus min value of the scale (2 for [-1, 1]).
        data_min: smallest value of the scale (-1 for [-1, 1]). Both images
            are shifted by ``-data_min`` first, so SSIM is computed on
            ``[0, data_range]`` like the usual 8-bit SSIM (see module doc).

    Returns:
        SSIM, 1.0 for identical images, smaller for less similar ones.
    """
    x, y = _as_float64_pair(x, y)
    x = x - data_min  # new arrays: the inputs are not modified
    y = y - data_min
    per_channel = [_ssim_one_channel(x[c], y[c], data_range) for c in range(x.shape[0])]
    return float(np.mean(per_channel))


def mean_psnr_ssim(
    originals: Sequence[np.ndarray],
    reconstructions: Sequence[np.ndarray],
    data_range: float = 2.0,
    *,
    data_min: float = -1.0,
) -> tuple[float, float]:
    """Average PSNR and SSIM over pairs of images that may differ in size.

    Args:
        originals: list of arrays ``(3, H_i, W_i)``.
        reconstructions: list of arrays, same length, same shape pairwise.
        data_range: see :func:`psnr`.
        data_min: see :func:`ssim`.

    Returns:
        ``(mean PSNR in dB, mean SSIM)``, each the plain mean of the per-image
        values (mean PSNR is ``inf`` if any pair is identical).
    """
    if len(originals) != len(reconstructions):
        raise ValueError(
            f"need as many reconstructions as originals, got {len(reconstructions)} "
            f"and {len(originals)}"
        )
    if len(originals) == 0:
        raise ValueError("need at least one image to compute mean PSNR and SSIM")
    psnr_values = [psnr(o, r, data_range) for o, r in zip(originals, reconstructions)]
    ssim_values = [
        ssim(o, r, data_range, data_min=data_min) for o, r in zip(originals, reconstructions)
    ]
    return float(np.mean(psnr_values)), float(np.mean(ssim_values))
