"""Zero-padded separable correlation (the fast LoG path, and the SSIM window) and the LoG kernels of Eq. 5.

:func:`correlate_separable` filters with an outer product of two 1-D taps in
two 1-D passes. It is the one kernel here that branches on the backend:
``scipy.ndimage`` for NumPy arrays, ``cupyx.scipy.ndimage`` for CuPy arrays.

:func:`log_kernel` is Eq. 5 sampled on its k × k grid, :func:`log_kernel_factors`
its split into two separable products (what :class:`sflnet.nn.fixed.LoGBank`
filters with), and :func:`log_bank_weights` the literal layer-6 weights of
Eq. 2 that the fast form is tested against.
"""

import math

import numpy as np

from sflnet.backend import device_constant, get_array_module
from sflnet.ops.threads import along, parallel_ranges, split_axis

PAPER_SIGMAS = (0.8, 1.6, 3.2)   # the LoG scales σ of the paper's SFL (Sec. 4), the one place they are written


def _ndimage(xp):
    """``scipy.ndimage`` for NumPy arrays, ``cupyx.scipy.ndimage`` for CuPy arrays."""
    if xp is np:
        import scipy.ndimage as ndimage  # noqa: PLC0415
    else:
        import cupyx.scipy.ndimage as ndimage  # noqa: PLC0415
    return ndimage


def correlate_separable(x, row_taps, col_taps):
    """Zero-padded "same" 2-D correlation of ``x`` with the outer product ``col_taps ⊗ row_taps``.

    x:        (..., H, W)
    row_taps: (k,) taps along W (odd length, centred)
    col_taps: (k,) taps along H
    returns   (..., H, W), same dtype as ``x``

    ``out[y, x] = Σ_{i,j} col_taps[i] row_taps[j] x[y+i-s, x+j-s]`` with s = (k-1)/2,
    computed as two 1-D passes: k + k taps per pixel instead of k².
    """
    tmp = _correlate1d(x, device_constant(row_taps, x), x.ndim - 1)
    return _correlate1d(tmp, device_constant(col_taps, x), x.ndim - 2)


def _correlate1d(x, taps, axis):
    """Zero-padded "same" 1-D correlation of ``x`` along ``axis`` (``ndimage.correlate1d``), split over threads."""
    xp = get_array_module(x)
    ndimage = _ndimage(xp)
    out = xp.empty(x.shape, dtype=x.dtype)
    split = split_axis(x.shape, axis)

    def filter_part(lo, hi):
        ndimage.correlate1d(along(x, split, slice(lo, hi)), taps, axis=axis, mode="constant", cval=0.0,
                            output=along(out, split, slice(lo, hi)))

    parallel_ranges(xp, x.shape[split], x.size * len(taps), filter_part)
    return out


# ---------------------------------------------------------------------------
# The Laplacian-of-Gaussian kernels of layer 6 (Eq. 5)
# ---------------------------------------------------------------------------

def log_kernel_size(sigma):
    """Kernel size for scale σ: ⌈8σ⌉, plus 1 if even (paper Sec. 4): 7, 13, 27 for σ = 0.8, 1.6, 3.2."""
    k = math.ceil(8 * sigma - 1e-9)   # guard: 8·0.8 is 6.4000000000000004 in floating point, still 7
    return k + 1 if k % 2 == 0 else k


def log_kernel(sigma, dtype=np.float64):
    """Eq. 5, sampled at integer offsets (x, y) ∈ [−s, s]², s = (k−1)/2, not renormalised.

    ``K_σ(x, y) = −(2 − (x² + y²)/σ²) · exp(−(x² + y²)/(2σ²)) / (2πσ²)``

    returns (k, k) NumPy array; rows are y, columns x.
    """
    s = (log_kernel_size(sigma) - 1) // 2
    y, x = np.mgrid[-s:s + 1, -s:s + 1].astype(np.float64)
    r2 = x * x + y * y
    g = np.exp(-r2 / (2 * sigma * sigma)) / (2 * np.pi * sigma * sigma)
    return (-(2 - r2 / (sigma * sigma)) * g).astype(dtype)


def log_kernel_factors(sigma):
    """The separable split of :func:`log_kernel`: ``K_σ = a ⊗ b + b ⊗ a`` (outer products, rows ⊗ cols).

    Writing r² = x² + y², Eq. 5 is
    ``−(1/2πσ²) · [(1 − x²/σ²) + (1 − y²/σ²)] · e^{−x²/2σ²} e^{−y²/2σ²}``, so with
    ``a(t) = −(1 − t²/σ²) e^{−t²/2σ²} / (2πσ²)`` and ``b(t) = e^{−t²/2σ²}``,
    ``K_σ(x, y) = a(y) b(x) + b(y) a(x)``. Returns ``(a, b)``, each (k,) float64.
    """
    s = (log_kernel_size(sigma) - 1) // 2
    t = np.arange(-s, s + 1, dtype=np.float64)
    b = np.exp(-t * t / (2 * sigma * sigma))
    a = -(1 - t * t / (sigma * sigma)) * b / (2 * np.pi * sigma * sigma)
    return a, b


def log_bank_weights(sigmas, dtype=np.float64):
    """The literal layer-6 weights of Eq. 2: ``W6[c, c', :, :] = K_{σ_c}`` for every colour c'.

    Kernels of different sizes are zero-padded (centred) to the largest size,
    which leaves the correlation unchanged. returns (S, 3, k_max, k_max), S = len(sigmas).
    Used as the reference that the fast :class:`LoGBank` is tested against.
    """
    k_max = max(log_kernel_size(s) for s in sigmas)
    w = np.zeros((len(sigmas), 3, k_max, k_max), dtype=dtype)
    for c, sigma in enumerate(sigmas):
        k = log_kernel(sigma, dtype)
        off = (k_max - k.shape[0]) // 2
        w[c, :, off:off + k.shape[0], off:off + k.shape[1]] = k
    return w
