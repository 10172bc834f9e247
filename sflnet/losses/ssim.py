"""``ssim``: one minus the structural similarity of Wang et al. (2004), with its hand-written gradient.

The same function, :func:`ssim_maps`, gives the loss its value and gives
:func:`sflnet.metrics.ssim` its number: the metric and the loss are one function.

SSIM as used here (equal to ``skimage.metrics.structural_similarity(x, y,
gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=L,
channel_axis=0)`` on the shifted images):

* both images are shifted by ``−low`` so the scale runs from 0 to ``L = high − low``;
* local statistics use the 11×11 Gaussian window ``G = g ⊗ g``, ``g(t) ∝ exp(−t²/2σ²)``,
  t = −5 … 5, σ = 1.5, taps normalised to sum 1, applied as a **valid** correlation
  (no padding), so every statistic map is (H − 10) × (W − 10);
* ``C1 = (K1 L)²``, ``C2 = (K2 L)²`` with K1 = 0.01, K2 = 0.03; population (co)variances;
* the SSIM of an image is the mean of its SSIM map over the map and the channels.

:func:`sflnet.gradcheck.references.losses.ssim_forward` is the same quantity written as a
textbook loop over window positions, for readers and for the tests.
"""

from typing import NamedTuple

import numpy as np

from sflnet.ops import filters
from sflnet.backend import get_array_module
from sflnet.losses.base import Loss

WINDOW = 11       # side of the Gaussian window, in pixels
RADIUS = (WINDOW - 1) // 2   # 5: the valid map loses RADIUS pixels on each side
SIGMA = 1.5       # standard deviation of the Gaussian window
K1 = 0.01         # C1 = (K1 L)², stabilises the luminance term
K2 = 0.03         # C2 = (K2 L)², stabilises the contrast-structure term


def gaussian_taps():
    """The 1-D window ``g``: (WINDOW,) float64 host array, ``exp(−t²/2σ²)`` for t = −5 … 5, summing to 1.

    Symmetric (``g[k] == g[WINDOW − 1 − k]`` exactly), so correlating with it is also convolving with it.
    """
    t = np.arange(-RADIUS, RADIUS + 1, dtype=np.float64)
    g = np.exp(-(t * t) / (2.0 * SIGMA * SIGMA))
    return g / g.sum()


def size_problem_text(height, width):
    """Why an image of ``height``×``width`` pixels has no SSIM (smaller than the window), or None."""
    if height < WINDOW or width < WINDOW:
        return (f"the ssim loss needs images of at least {WINDOW}x{WINDOW} pixels (its Gaussian window), "
                f"got {height}x{width}")
    return None


def valid_filter(x):
    """The valid correlation ``G ⋆ x`` with the 11×11 Gaussian window.

    x:       (..., H, W) with H, W ≥ 11, any float dtype, NumPy or CuPy
    returns  (..., H − 10, W − 10), same dtype and device:
             ``out[u, v] = Σ_{i,j} g[i] g[j] x[u + i, v + j]``, i, j = 0 … 10.

    Computed as the zero-padded "same" separable correlation of
    :func:`sflnet.ops.filters.correlate_separable`, cropped by RADIUS on each side:
    the centre ``(u + 5, v + 5)`` of every kept output has its whole window
    inside the image, so the zero padding is never read there.
    """
    g = gaussian_taps()
    h, w = x.shape[-2:]
    return filters.correlate_separable(x, g, g)[..., RADIUS:h - RADIUS, RADIUS:w - RADIUS]


def valid_filter_adjoint(m, height, width):
    """The adjoint ``Gᵀ m`` of :func:`valid_filter`: ``⟨G x, m⟩ = ⟨x, Gᵀ m⟩`` for every x, m.

    m:       (..., H − 10, W − 10), any float dtype
    returns  (..., H, W) = (height, width), same dtype and device.

    :func:`valid_filter` is "crop ∘ same-correlation". The crop's adjoint
    embeds ``m`` in zeros at ``[5:H−5, 5:W−5]``; the zero-padded same
    correlation's adjoint is the zero-padded same *convolution*, i.e. the
    correlation with the flipped window, and ``g`` is symmetric. ``m`` is not modified.
    """
    xp = get_array_module(m)
    embedded = xp.zeros(m.shape[:-2] + (height, width), dtype=m.dtype)
    embedded[..., RADIUS:height - RADIUS, RADIUS:width - RADIUS] = m
    g = gaussian_taps()
    return filters.correlate_separable(embedded, g, g)


class SSIMMaps(NamedTuple):
    """What :func:`ssim_maps` computes, each (n, C, H − 10, W − 10) except ``values`` (n,).

    mu_x, mu_y: local means μx = G⋆x, μy = G⋆y
    a1: 2 μx μy + C1            a2: 2 σxy + C2
    b1: μx² + μy² + C1          b2: σx² + σy² + C2
    ssim_map: S = a1 a2 / (b1 b2)
    values: the SSIM of each image, the mean of S over channels and positions
    """

    mu_x: object
    mu_y: object
    a1: object
    a2: object
    b1: object
    b2: object
    ssim_map: object
    values: object


def ssim_maps(x, y, data_range, data_min):
    """SSIM maps and per-image SSIM of a group of image pairs: the function behind both the loss and the metric.

    x, y:       (n, C, H, W), one float dtype (kept), NumPy or CuPy, H, W ≥ 11; only read
    data_range: L = high − low of the value scale; C1 = (K1 L)², C2 = (K2 L)²
    data_min:   low; both images are shifted by −low first (to [0, L])
    returns     :class:`SSIMMaps` (maps (n, C, H − 10, W − 10), values (n,))

    The five local statistics are filtered in one call on a stack
    ``[x, y, x², y², xy]``: (5, n, C, H, W) → (5, n, C, H − 10, W − 10).
    """
    xp = get_array_module(x)
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    xs = x - data_min              # new arrays: the inputs are not modified
    ys = y - data_min
    stats = valid_filter(xp.stack([xs, ys, xs * xs, ys * ys, xs * ys]))
    mu_x, mu_y, p_xx, p_yy, p_xy = stats
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    a1 = 2.0 * mu_xy + c1
    a2 = 2.0 * (p_xy - mu_xy) + c2                     # 2 σxy + C2
    b1 = mu_xx + mu_yy + c1
    b2 = (p_xx - mu_xx) + (p_yy - mu_yy) + c2          # σx² + σy² + C2
    s = (a1 * a2) / (b1 * b2)
    return SSIMMaps(mu_x, mu_y, a1, a2, b1, b2, s, s.mean(axis=(1, 2, 3)))


def ssim_per_image(x, y, data_range, data_min):
    """The SSIM of each image pair: (n, C, H, W) × 2 → (n,), dtype and device kept (see :func:`ssim_maps`)."""
    return ssim_maps(x, y, data_range, data_min).values


class SSIMLoss(Loss):
    """One minus SSIM per image, averaged over the batch.

    Definition. For a group of n images (n, C, H, W) inside a batch of N_m, with
    ``(low, high)`` the value range, ``x = f^L − low`` (recon), ``y = f^1 − low``
    (target), ``L = high − low`` and the valid Gaussian filtering G (module doc):

    ``μx = G⋆x, μy = G⋆y, Pxx = G⋆x², Pyy = G⋆y², Pxy = G⋆xy``   (each n, C, Hv, Wv; Hv = H − 10, Wv = W − 10)
    ``σx² = Pxx − μx², σy² = Pyy − μy², σxy = Pxy − μxμy``
    ``A1 = 2μxμy + C1, A2 = 2σxy + C2, B1 = μx² + μy² + C1, B2 = σx² + σy² + C2, D = B1 B2, S = A1 A2 / D``
    ``SSIM_i = mean_{c,u,v} S[i]``, ``ℓ_i = 1 − SSIM_i``, ``E_SSIM = (1/N_m) Σ_i ℓ_i``;
    forward returns the group's share ``Σ_{i in group} ℓ_i / N_m``.

    Backward (derived here). The share depends on each map entry S with
    ``g = ∂share/∂S = −1/(N_m · C · Hv · Wv)``. S depends on x only through
    μx, Pxx and Pxy (μy, Pyy do not move with x). Write A1, A2, B1, B2 in those:
    ``A2 = 2(Pxy − μxμy) + C2``, ``B2 = Pxx − μx² + Pyy − μy² + C2``, so

    ``∂A1/∂μx = 2μy, ∂A2/∂μx = −2μy, ∂B1/∂μx = 2μx, ∂B2/∂μx = −2μx``,
    ``∂A2/∂Pxy = 2, ∂B2/∂Pxx = 1`` (all other partials of these w.r.t. Pxx, Pxy are 0).

    The product and quotient rules on S = A1 A2 / (B1 B2) give
    ``∂S = (A2 ∂A1 + A1 ∂A2) / D − S (∂B1/B1 + ∂B2/B2)``, which divides only by
    B1 ≥ C1 > 0 and B2 ≥ C2 > 0, never by A1 or A2 (those can be ~0). Hence

    ``∂S/∂μx  = (A2 · 2μy − A1 · 2μy)/D − S (2μx/B1 − 2μx/B2)``
    ``        = [2μy (A2 − A1) − 2μx S (B2 − B1)] / D``
    ``∂S/∂Pxy = 2 A1 / D``
    ``∂S/∂Pxx = −S / B2 = −S B1 / D``

    Each statistic is a filtering of an elementwise function of x:
    ``μx = G x``, ``Pxx = G (x ⊙ x)``, ``Pxy = G (x ⊙ y)``. The chain rule through a
    linear map G applies its adjoint Gᵀ, and through ``x ⊙ x`` / ``x ⊙ y``
    multiplies by ``2x`` / ``y`` pixelwise:

    ``∂share/∂f^L = ∂share/∂x = Gᵀ(g ∂S/∂μx) + 2x ⊙ Gᵀ(g ∂S/∂Pxx) + y ⊙ Gᵀ(g ∂S/∂Pxy)``   (n, C, H, W)

    (the shift by −low has derivative 1). Gᵀ, the adjoint of the valid
    correlation, embeds a (Hv, Wv) map in zeros of size H×W at [5:H−5, 5:W−5]
    and correlates "same" with the symmetric window (:func:`valid_filter_adjoint`).
    The three Gᵀ are one call on a stack of three maps.
    """

    name = "ssim"
    summary = "1 − SSIM (Wang et al. 2004), valid 11x11 Gaussian window (its value range comes from the model)"
    options = ()

    @classmethod
    def create(cls, settings, **values):
        """On the model's value range (``settings.value_range``); no user options."""
        return cls(settings.value_range, **values)

    def __init__(self, value_range=(-1.0, 1.0)):
        low, high = (float(v) for v in value_range)
        if not high > low:
            raise ValueError(f"the ssim loss needs a value range (low, high) with high > low, got {value_range}")
        self.low = low
        self.data_range = high - low     # L
        self.shifted_recon = None        # x = f^L − low, (n, C, H, W)
        self.shifted_target = None       # y = f^1 − low, (n, C, H, W)
        self.ssim_maps = None            # SSIMMaps of the last forward: μx, μy, A1, A2, B1, B2, S (n, C, Hv, Wv)
        self.batch_count = None          # N_m

    def size_problem(self, height, width):
        """A one-line reason when the image is smaller than the 11×11 window, else None."""
        return size_problem_text(height, width)

    def forward(self, recon, target, batch_count):
        """recon f^L, target f^1: (n, C, H, W), H, W ≥ 11; batch_count N_m ≥ n.

        Returns (share ``Σ_{i in group} (1 − SSIM_i) / N_m`` as a 0-d array of recon's dtype, {}).
        Raises ValueError for images smaller than the window or mismatched shapes.
        """
        if recon.shape != target.shape or recon.ndim != 4:
            raise ValueError(f"the ssim loss needs recon and target of one shape (n, C, H, W), "
                             f"got {recon.shape} and {target.shape}")
        problem = self.size_problem(*recon.shape[2:])
        if problem:
            raise ValueError(problem)
        self.shifted_recon = recon - self.low
        self.shifted_target = target - self.low
        self.ssim_maps = ssim_maps(self.shifted_recon, self.shifted_target, self.data_range, 0.0)
        self.batch_count = batch_count
        return (1.0 - self.ssim_maps.values).sum() / batch_count, {}

    def _statistic_gradients(self):
        """``g ∂S/∂μx, g ∂S/∂Pxx, g ∂S/∂Pxy``: the share's gradient w.r.t. the three maps, each (n, C, Hv, Wv)."""
        m = self.ssim_maps
        _, c, hv, wv = m.ssim_map.shape
        g = -1.0 / (self.batch_count * c * hv * wv)
        g_over_d = g / (m.b1 * m.b2)                                  # g / D
        d_mu = (2.0 * m.mu_y * (m.a2 - m.a1) - 2.0 * m.mu_x * m.ssim_map * (m.b2 - m.b1)) * g_over_d
        d_pxx = -(m.ssim_map * m.b1) * g_over_d
        d_pxy = (2.0 * m.a1) * g_over_d
        return d_mu, d_pxx, d_pxy

    def backward(self):
        """∂share/∂f^L for the last forward: (n, C, H, W), recon's dtype (see the class docstring)."""
        xp = get_array_module(self.shifted_recon)
        h, w = self.shifted_recon.shape[2:]
        d_mu, d_pxx, d_pxy = self._statistic_gradients()
        back_mu, back_pxx, back_pxy = valid_filter_adjoint(xp.stack([d_mu, d_pxx, d_pxy]), h, w)
        return back_mu + 2.0 * self.shifted_recon * back_pxx + self.shifted_target * back_pxy
