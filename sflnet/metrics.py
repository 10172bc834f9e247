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
* SSIM follows Wang, Bovik, Sheikh and Simoncelli (2004) and is the very
  function the ``ssim`` loss uses (:func:`sflnet.losses.ssim.ssim_maps`):
  local means, variances and covariance (population, not sample) are taken
  with an 11x11 Gaussian window of standard deviation 1.5 (taps summing to 1),
  ``K1 = 0.01``, ``K2 = 0.03``, ``C1 = (K1 * L)**2``, ``C2 = (K2 * L)**2`` with
  ``L = data_range``. The SSIM map covers only the **valid** positions, where
  the whole window lies inside the image (no padding): ``(H - 10) x (W - 10)``
  per channel; the result is its mean over those positions and the channels,
  computed in float64. This equals scikit-image's
  ``structural_similarity(x, y, gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=L, channel_axis=0)`` on the shifted
  images. Images smaller than 11 pixels on a side have no valid position:
  their SSIM is ``nan`` (not an error).

Arrays are only read, never modified. CuPy arrays are accepted too: they are
copied to the host first.

**Many images at once.** :func:`psnr_ssim_values` (and so :func:`mean_psnr_ssim`) computes
the pairs of one shape together, in blocks (:func:`psnr_ssim_batch`), instead of one call of
:func:`psnr` and :func:`ssim` per image (for 10,000 MNIST digits: about 1.3 s of Python
overhead in ~10,000 small filter calls). Each image's numbers are bit for bit those of
:func:`psnr` and :func:`ssim`: every image goes through the same element-wise operations, the
same 1-D filter passes along its own rows and columns, and the same reduction of its own
contiguous block of values (numpy's pairwise sum over the image's C·H·W values, or C·(H−10)·(W−10)
of the SSIM map), in the same order; the last step of PSNR is the same Python ``math.log10``
(tests/test_evaluate_speed.py checks the identity on many shapes and blocks).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from sflnet.losses.ssim import size_problem_text, ssim_per_image


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


def ssim(x, y, data_range: float = 2.0, *, data_min: float = -1.0) -> float:
    """Structural similarity (Wang et al. 2004), mean over channels and valid window positions.

    Args:
        x, y: arrays of shape ``(3, H, W)`` (any number of channels works),
            values in ``[-1, 1]`` by default.
        data_range: max value minus min value of the scale (2 for [-1, 1]).
        data_min: smallest value of the scale (-1 for [-1, 1]). Both images
            are shifted by ``-data_min`` first, so SSIM is computed on
            ``[0, data_range]`` like the usual 8-bit SSIM (see module doc).

    Returns:
        SSIM, 1.0 for identical images, smaller for less similar ones;
        ``nan`` for images smaller than 11 pixels on a side (no position where
        the 11x11 window fits; see module doc).
    """
    x, y = _as_float64_pair(x, y)
    if size_problem_text(*x.shape[1:]) is not None:
        return float("nan")
    return float(ssim_per_image(x[None], y[None], data_range, data_min)[0])


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
        values (mean PSNR is ``inf`` if any pair is identical; mean SSIM is
        ``nan`` if any image is smaller than 11 pixels on a side).
    """
    if len(originals) == 0:
        raise ValueError("need at least one image to compute mean PSNR and SSIM")
    psnr_values, ssim_values = psnr_ssim_values(originals, reconstructions, data_range, data_min=data_min)
    return float(np.mean(psnr_values)), float(np.mean(ssim_values))


def psnr_ssim_values(
    originals: Sequence[np.ndarray],
    reconstructions: Sequence[np.ndarray],
    data_range: float = 2.0,
    *,
    data_min: float = -1.0,
) -> tuple[list[float], list[float]]:
    """Each pair's PSNR and SSIM (arguments as :func:`mean_psnr_ssim`): two lists, in the pairs' order.

    The numbers are those of :func:`psnr` and :func:`ssim` pair by pair, bit for bit; pairs of
    one shape are computed together (:func:`psnr_ssim_batch`, see the module doc).
    """
    if len(originals) != len(reconstructions):
        raise ValueError(
            f"need as many reconstructions as originals, got {len(reconstructions)} "
            f"and {len(originals)}"
        )
    hosts = [_host_pair(o, r) for o, r in zip(originals, reconstructions)]
    by_shape: dict[tuple, list[int]] = {}
    for index, (o, _) in enumerate(hosts):
        by_shape.setdefault(o.shape, []).append(index)
    psnr_values: list = [None] * len(hosts)
    ssim_values: list = [None] * len(hosts)
    for shape, indices in by_shape.items():
        per_block = _images_per_block(shape)
        for start in range(0, len(indices), per_block):
            block = indices[start:start + per_block]
            x = np.stack([hosts[i][0] for i in block])
            y = np.stack([hosts[i][1] for i in block])
            block_psnr, block_ssim = psnr_ssim_batch(x, y, data_range, data_min=data_min)
            for row, i in enumerate(block):
                psnr_values[i], ssim_values[i] = block_psnr[row], block_ssim[row]
    return psnr_values, ssim_values


#: :func:`psnr_ssim_batch` works on at most about this many float64 values of each image stack at a
#: time (2 MB; the SSIM's five statistics and their maps stay a few tens of MB), at least one image.
BLOCK_VALUES = 1 << 18


def _images_per_block(shape) -> int:
    return max(1, BLOCK_VALUES // max(1, math.prod(shape)))


def _host_pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    """The pair on the host, as it is (any float dtype; converted to float64 in blocks), checked as
    :func:`psnr` checks it: the same shape, (C, H, W)."""
    if hasattr(x, "get"):  # a CuPy array: copy to host memory
        x = x.get()
    if hasattr(y, "get"):
        y = y.get()
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape:
        raise ValueError(f"images must have the same shape, got {x.shape} and {y.shape}")
    if x.ndim != 3:
        raise ValueError(f"expected images of shape (C, H, W), got {x.shape}")
    return x, y


def psnr_ssim_batch(x, y, data_range: float = 2.0, *, data_min: float = -1.0) -> tuple[list[float], list[float]]:
    """The PSNR and SSIM of each pair of two stacks of images of one shape.

    Args:
        x, y: arrays of shape ``(n, C, H, W)`` (NumPy or CuPy, any float dtype; only read).
        data_range, data_min: see :func:`psnr` and :func:`ssim`.

    Returns:
        ``(psnr values, ssim values)``: two lists of n Python floats, equal bit for bit to
        ``psnr(x[i], y[i], data_range)`` and ``ssim(x[i], y[i], data_range, data_min=data_min)``
        (see the module doc); SSIM is ``nan`` for images smaller than the window.
    """
    if hasattr(x, "get"):
        x = x.get()
    if hasattr(y, "get"):
        y = y.get()
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape:
        raise ValueError(f"image stacks must have the same shape, got {x.shape} and {y.shape}")
    if x.ndim != 4:
        raise ValueError(f"expected image stacks of shape (n, C, H, W), got {x.shape}")
    n = x.shape[0]
    psnr_values: list[float] = []
    ssim_values: list[float] = []
    per_block = _images_per_block(x.shape[1:])
    too_small = size_problem_text(*x.shape[2:]) is not None
    peak = data_range**2
    for start in range(0, n, per_block):
        xb = np.asarray(x[start:start + per_block], dtype=np.float64)
        yb = np.asarray(y[start:start + per_block], dtype=np.float64)
        # psnr: mean over each image's own contiguous C*H*W values (the reduction np.mean(image) makes)
        squared = (xb - yb) ** 2
        mse = np.mean(squared.reshape(squared.shape[0], -1), axis=1)
        psnr_values += [math.inf if m == 0.0 else 10.0 * math.log10(peak / m) for m in mse.tolist()]
        if too_small:
            ssim_values += [float("nan")] * xb.shape[0]
        else:
            ssim_values += ssim_per_image(xb, yb, data_range, data_min).tolist()
    return psnr_values, ssim_values
