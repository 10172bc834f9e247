"""Naive textbook versions of every loss: the short version beside the fast one.

Like :mod:`.layers`, nothing here is for users: plain loops, host NumPy, float64.
``tests/test_reference.py`` and the loss tests prove the fast losses of
:mod:`sflnet.losses` equal to these, and the forward rows of ``sflnet gradcheck``
compare with them. Each loss returns the batch value (1/N_m) Σ_i ℓ_i of a group
(N_m = batch_count) as a Python float, and where there is a backward, its
gradient w.r.t. recon f^L. Arrays are NCHW.

==========================================  ================================  ==============================
reference                                   fast version                      paper
==========================================  ================================  ==============================
pixel_loss_forward / _backward              losses.pixel.PixelLoss            Eq. 4 / Eq. 9
sfl_forward / sfl_backward                  losses.sfl.SpatialFrequencyLoss   Eq. 6 / Eq. 8
l1_loss_*                                   losses.l1.L1Loss
kl_divergence_*                             losses.kl.KLDivergence            the β-VAE's KL term
fft_loss_forward / _backward (DFT by sums)  losses.fft.FocalFrequencyLoss     Jiang et al. 2021
fft_loss_numpy (numpy.fft.fft2)             losses.fft.FocalFrequencyLoss
ssim_forward (window loop), ssim_library    losses.ssim.SSIMLoss              Wang et al. 2004
stft_loss_forward (frame loop),             losses.stft.STFTLoss              Dalal's β-VAE
global_dft_loss_forward, _by_phases
stft_code_loss_forward (the code's NHWC     losses.stft_code.STFTCodeLoss     Dalal's public code
fft2d, frame by frame)
==========================================  ================================  ==============================

Two references of the focal frequency loss exist on purpose: :func:`fft_loss_forward`
is the definition with the DFT written as sums (O(H²W²) per channel, tiny shapes
only, with its backward), :func:`fft_loss_numpy` uses ``numpy.fft.fft2`` (a library
FFT, fast enough for the gradcheck rows' odd sizes). Likewise
:func:`ssim_library` is scikit-image's SSIM (a second opinion from another
project) and :func:`ssim_forward` the loop it falls back to.
The ssim, stft and stft_code backward passes are checked against finite differences
(``tests/test_loss_ssim.py``, ``tests/test_loss_stft.py``, ``tests/test_loss_stft_code.py``,
``sflnet gradcheck``).
"""

import math

import numpy as np

from sflnet.gradcheck.references.layers import as_float64, log_bank_backward, log_bank_forward
from sflnet.losses.base import PAPER_SFL_WEIGHTS
from sflnet.losses.ssim import K1, K2, RADIUS, SIGMA, WINDOW
from sflnet.ops.filters import PAPER_SIGMAS

# ---------------------------------------------------------------------------
# The paper's losses, Eq. 4 and 6
# ---------------------------------------------------------------------------

def pixel_loss_forward(recon, target, batch_count, weights=(1.0, 1.0, 1.0)):
    """Eq. 4 term by term: ``E_PL = (1/N_m) Σ_i Σ_c w_PL[c] · ½ · mean_{x,y} (f^L_i − f^1_i)²``.

    recon f^L, target f^1: (N, C, H, W). returns a Python float.
    """
    recon, target = as_float64(recon, target)
    total = 0.0
    for i in range(recon.shape[0]):
        for c in range(recon.shape[1]):
            total += weights[c] * 0.5 * float(np.mean((recon[i, c] - target[i, c]) ** 2))
    return total / batch_count


def pixel_loss_backward(recon, target, batch_count, weights=(1.0, 1.0, 1.0)):
    """Eq. 9 without the tanh factor: ``∂E_PL/∂f^L[i, c, y, x] = w_PL[c] / (N_m W H) · (f^L − f^1)``.

    recon, target: (N, C, H, W) → (N, C, H, W).
    """
    recon, target = as_float64(recon, target)
    _, chans, h, w = recon.shape
    grad = np.zeros_like(recon)
    for c in range(chans):
        grad[:, c] = weights[c] / (batch_count * w * h) * (recon[:, c] - target[:, c])
    return grad



def sfl_forward(recon, target, batch_count, sigmas=PAPER_SIGMAS, weights=PAPER_SFL_WEIGHTS, bank=None):
    """Eq. 6 term by term: ``E_SFL = (1/N_m) Σ_i Σ_c w_SFL[c] · ½ · mean_{x,y} (f^{L+1}_i − f^1_i(·|σ_c))²``.

    f^{L+1} = LoG bank of f^L and f^1(·|σ_c) = LoG bank of f^1, each filtered separately as in the paper.
    bank: (f, sigmas) → (N, S, H, W), the LoG bank used; default the loop :func:`.layers.log_bank_forward`
    (the gradcheck rows pass the SciPy :func:`.layers.log_bank_scipy`, fast at 64×48).
    recon, target: (N, 3, H, W). returns (E_SFL (float), unit-weight subband values (S,)) with
    ``SFL_c = (1/N_m) Σ_i ½ mean_xy (LoG_c(recon_i) − LoG_c(target_i))²``.
    """
    bank = log_bank_forward if bank is None else bank
    recon, target = as_float64(recon, target)
    bands_recon = bank(recon, sigmas)
    bands_target = bank(target, sigmas)
    subbands = np.zeros(len(sigmas), dtype=np.float64)
    for i in range(recon.shape[0]):
        for c in range(len(sigmas)):
            subbands[c] += 0.5 * float(np.mean((bands_recon[i, c] - bands_target[i, c]) ** 2))
    subbands /= batch_count
    return float(np.dot(weights, subbands)), subbands


def sfl_backward(recon, target, batch_count, sigmas=PAPER_SIGMAS, weights=PAPER_SFL_WEIGHTS):
    """Eq. 8, ``∂E_SFL/∂o^{L+1}[i, c] = w_SFL[c] / (N_m W H) · (f^{L+1}_i − f^1_i(·|σ_c))``,
    carried down to f^L by layer 6's backward (:func:`log_bank_backward`).

    recon, target: (N, 3, H, W) → ∂E_SFL/∂f^L: (N, 3, H, W).
    """
    lr, lt = log_bank_forward(recon, sigmas), log_bank_forward(target, sigmas)
    _, bands, h, w = lr.shape
    grad_bands = np.zeros_like(lr)
    for c in range(bands):
        grad_bands[:, c] = weights[c] / (batch_count * w * h) * (lr[:, c] - lt[:, c])
    return log_bank_backward(grad_bands, recon.shape, sigmas)



def l1_loss_forward(recon, target, batch_count):
    """``E_L1 = (1/N_m) Σ_i mean_{c,y,x} |f^L_i − f^1_i|`` term by term.

    recon, target: (N, C, H, W). returns a float.
    """
    recon, target = as_float64(recon, target)
    total = 0.0
    for i in range(recon.shape[0]):
        total += float(np.mean(np.abs(recon[i] - target[i])))
    return total / batch_count


def l1_loss_backward(recon, target, batch_count):
    """``sign(f^L − f^1) / (N_m C H W)`` (subgradient 0 where they are equal): (N, C, H, W)."""
    recon, target = as_float64(recon, target)
    _, chans, h, w = recon.shape
    return np.sign(recon - target) / (batch_count * chans * h * w)



def kl_divergence_forward(mu, logvar, batch_count):
    """The KL of N(μ, σ²) from N(0, 1), written as for two Gaussians, term by term:
    ``E_KL = (1/N_m) Σ_i Σ_j [log(1/σ_ij) + (σ_ij² + μ_ij²)/2 − ½]`` with σ = sqrt(exp(logvar))
    (the fast loss uses the simplified ½ (μ² + e^{logvar} − logvar − 1)).

    mu, logvar: (N, D). returns a float.
    """
    mu, logvar = as_float64(mu, logvar)
    total = 0.0
    for m, lv in zip(np.ravel(mu), np.ravel(logvar)):
        sigma = math.sqrt(math.exp(lv))
        total += math.log(1.0 / sigma) + (sigma * sigma + m * m) / 2.0 - 0.5
    return total / batch_count


def kl_divergence_backward(mu, logvar, batch_count):
    """``∂E_KL/∂μ = μ / N_m``, ``∂E_KL/∂logvar = ½ (e^{logvar} − 1) / N_m``. returns (dmu, dlogvar), each (N, D)."""
    mu, logvar = as_float64(mu, logvar)
    return mu / batch_count, 0.5 * (np.exp(logvar) - 1) / batch_count



# ---------------------------------------------------------------------------
# The focal frequency loss (Jiang et al. 2021)
# ---------------------------------------------------------------------------

def dft_basis(h, w):
    """The orthonormal 2-D DFT as an array: ``F[u, v, y, x] = e^{−2πi(uy/H + vx/W)} / √(HW)``, (H, W, H, W)."""
    u, v, y, x = np.meshgrid(np.arange(h), np.arange(w), np.arange(h), np.arange(w), indexing="ij")
    return np.exp(-2j * np.pi * (u * y / h + v * x / w)) / math.sqrt(h * w)


def focal_spectrum(recon, target):
    """D = F(f^L − f^1) by sums, and the focal weight |D| / max_{u,v} |D| (0 if the max is 0). Both (N, C, H, W)."""
    d = recon - target
    n_img, chans, h, w = d.shape
    basis = dft_basis(h, w)
    spectrum = np.zeros(d.shape, dtype=complex)
    for i in range(n_img):
        for c in range(chans):
            for u in range(h):
                for v in range(w):
                    spectrum[i, c, u, v] = np.sum(basis[u, v] * d[i, c])
    peak = np.abs(spectrum).max(axis=(2, 3), keepdims=True)
    return spectrum, np.abs(spectrum) / np.where(peak > 0, peak, 1.0)


def fft_loss_forward(recon, target, batch_count):
    """The focal frequency loss: ``(1/N_m) Σ_i mean_{c,u,v} w · |D|²``, D the orthonormal DFT of f^L − f^1.

    recon, target: (N, C, H, W). returns a float.
    """
    recon, target = as_float64(recon, target)
    spectrum, focal = focal_spectrum(recon, target)
    _, chans, h, w = recon.shape
    return float(np.sum(focal * np.abs(spectrum) ** 2)) / (batch_count * chans * h * w)


def fft_loss_backward(recon, target, batch_count):
    """The gradient with the focal weight w held constant (detached, as in the fast loss):
    ``∂/∂f^L[y, x] = 2 Re Σ_{u,v} conj(F[u, v, y, x]) · w[u, v] · D[u, v] / (N_m C H W)``.

    recon, target: (N, C, H, W) → (N, C, H, W).
    """
    recon, target = as_float64(recon, target)
    spectrum, focal = focal_spectrum(recon, target)
    n_img, chans, h, w = recon.shape
    basis = dft_basis(h, w)
    grad = np.zeros_like(recon)
    for y in range(h):
        for x in range(w):
            back = np.sum(np.conj(basis[:, :, y, x]) * focal * spectrum, axis=(2, 3))   # (N, C)
            grad[:, :, y, x] = 2 * back.real / (batch_count * chans * h * w)
    return grad


def fft_loss_numpy(recon, target, batch_count):
    """The focal frequency loss with ``numpy.fft.fft2`` of the difference, per image and channel.

    recon, target: host (n, C, H, W). ``Σ_i mean_{c,u,v} w|D|² / N_m``, w = |D| / max |D| (0 if max = 0).
    returns a float.
    """
    total = 0.0
    n, c, h, w = recon.shape
    for i in range(n):
        per_image = 0.0
        for ch in range(c):
            d = np.fft.fft2(recon[i, ch] - target[i, ch], norm="ortho")
            amplitude = np.abs(d)
            peak = amplitude.max()
            weight = amplitude / peak if peak > 0 else np.zeros_like(amplitude)
            per_image += float(np.sum(weight * amplitude ** 2))
        total += per_image / (c * h * w)
    return total / batch_count


# ---------------------------------------------------------------------------
# SSIM (Wang et al. 2004) and Dalal's STFT loss
# ---------------------------------------------------------------------------

def ssim_forward(x, y, data_range, data_min):
    """The SSIM of one image pair, as a textbook loop over channels and window positions (slow, for readers).

    x, y:    (C, H, W) host arrays, H, W ≥ 11; computed in float64
    returns  a Python float.

    For every channel and every position whose 11×11 window lies inside the
    image: the window's weighted mean, population variances and covariance,
    written as ``Σ w (p − μ)²`` (not via ``E[p²] − μ²``), then
    ``((2 μx μy + C1)(2 σxy + C2)) / ((μx² + μy² + C1)(σx² + σy² + C2))``;
    the mean of all of them.
    """
    x = np.asarray(x, dtype=np.float64) - data_min
    y = np.asarray(y, dtype=np.float64) - data_min
    t = np.arange(-RADIUS, RADIUS + 1)
    window = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * SIGMA ** 2))
    window = window / window.sum()
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    channels, height, width = x.shape
    values = []
    for c in range(channels):
        for row in range(height - WINDOW + 1):
            for col in range(width - WINDOW + 1):
                px = x[c, row:row + WINDOW, col:col + WINDOW]
                py = y[c, row:row + WINDOW, col:col + WINDOW]
                mean_x = np.sum(window * px)
                mean_y = np.sum(window * py)
                var_x = np.sum(window * (px - mean_x) ** 2)
                var_y = np.sum(window * (py - mean_y) ** 2)
                cov = np.sum(window * (px - mean_x) * (py - mean_y))
                values.append((2 * mean_x * mean_y + c1) * (2 * cov + c2)
                              / ((mean_x ** 2 + mean_y ** 2 + c1) * (var_x + var_y + c2)))
    return float(np.mean(values))


def ssim_library(x, y, data_range, data_min):
    """(per-image SSIM of host (n, C, H, W) pairs, which reference): scikit-image's ``structural_similarity``
    (Gaussian window σ 1.5, population covariances, data range L, channel axis 0) if importable, else
    :func:`ssim_forward`. returns (list of n floats, "skimage structural_similarity" or "naive window loop").
    """
    try:
        from skimage.metrics import structural_similarity  # noqa: PLC0415 (optional)
    except ImportError:
        return [ssim_forward(a, b, data_range, data_min) for a, b in zip(x, y)], "naive window loop"
    values = [structural_similarity(a - data_min, b - data_min, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, data_range=data_range, channel_axis=0)
              for a, b in zip(x, y)]
    return values, "skimage structural_similarity"


def stft_loss_forward(recon, target, batch_count, window=16, stride=4, window_fn="hann", phase_weight=9.0):
    """The share ``Σ_i ℓ_i / N_m`` of :class:`STFTLoss`, frame by frame: the readable reference.

    recon, target: host (n, C, H, W) arrays; returns a Python float. A plain loop over
    images, channels and window positions, ``numpy.fft.fft2`` of each tapered frame,
    and every one of the h×h bins (no half spectrum); taper and weights written out per bin.
    """
    recon = np.asarray(recon, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    n, c, height, width = recon.shape
    h, s = window, stride
    taper = np.ones((h, h), dtype=np.float64)
    weight = np.zeros((h, h), dtype=np.float64)
    for u in range(h):
        for v in range(h):
            if window_fn == "hann":
                taper[u, v] = 0.25 * (1 - math.cos(2 * math.pi * u / h)) * (1 - math.cos(2 * math.pi * v / h))
            weight[u, v] = math.hypot(min(u, h - u), min(v, h - v))
    weight /= weight.max()
    total = 0.0
    for i in range(n):
        for ch in range(c):
            for top in range(0, height - h + 1, s):
                for left in range(0, width - h + 1, s):
                    f_o = np.fft.fft2(recon[i, ch, top:top + h, left:left + h] * taper, norm="ortho")
                    f_i = np.fft.fft2(target[i, ch, top:top + h, left:left + h] * taper, norm="ortho")
                    cross = f_o * np.conj(f_i)
                    phase = np.where(cross == 0, 0.0, np.abs(np.angle(cross)))   # angle(±0 ± 0i) = 0
                    amplitude = np.abs(np.abs(f_o) - np.abs(f_i))
                    total += float(np.sum(weight * (phase_weight * phase + amplitude)))
    return total / batch_count


def global_dft_loss_forward(recon, target, batch_count, phase_weight):
    """The stft loss with a "rect" window as large as the (square) image: the global-DFT loss written out.

    ``Σ_i Σ_{c,u,v} W(u,v) (λ |angle(F_o conj F_i)| + ||F_o| − |F_i||) / N_m`` with F = fft2 of the whole
    channel (orthonormal) and W(u,v) = r/max r, r = √(min(u, H−u)² + min(v, W−v)²).
    recon, target: host (n, C, H, H). returns a float.
    """
    n, c, h, w = recon.shape
    u = np.minimum(np.arange(h), h - np.arange(h))[:, None]
    v = np.minimum(np.arange(w), w - np.arange(w))[None, :]
    radius = np.sqrt(u ** 2 + v ** 2)
    weight = radius / radius.max()
    total = 0.0
    for i in range(n):
        for ch in range(c):
            f_o = np.fft.fft2(recon[i, ch], norm="ortho")
            f_i = np.fft.fft2(target[i, ch], norm="ortho")
            total += float(np.sum(weight * (phase_weight * np.abs(np.angle(f_o * np.conj(f_i)))
                                            + np.abs(np.abs(f_o) - np.abs(f_i)))))
    return total / batch_count


def global_dft_loss_by_phases(recon, target, batch_count, phase_weight, wrap=True):
    """The global-DFT loss from the two phases: ``|P_o − P_i|`` wrapped to [0, π], P = angle(F) ∈ (−π, π].

    The same quantity as :func:`global_dft_loss_forward` (which takes the phase of F_o conj(F_i)),
    written the way the paper states it, so the two are different references of one loss.
    wrap=False: the paper's literal, unwrapped |P_o − P_i| (not what STFTLoss computes; the tests
    show the difference). recon, target: host (n, C, H, W). returns a float.
    """
    n, c, h, w = recon.shape
    u = np.minimum(np.arange(h), h - np.arange(h))[:, None]
    v = np.minimum(np.arange(w), w - np.arange(w))[None, :]
    weight = np.sqrt(u ** 2 + v ** 2) / np.sqrt(u ** 2 + v ** 2).max()
    total = 0.0
    for i in range(n):
        for ch in range(c):
            f_o, f_i = np.fft.fft2(recon[i, ch], norm="ortho"), np.fft.fft2(target[i, ch], norm="ortho")
            d = np.abs(np.angle(f_o) - np.angle(f_i))
            phase = np.minimum(d, 2 * np.pi - d) if wrap else d
            total += float(np.sum(weight * (phase_weight * phase + np.abs(np.abs(f_o) - np.abs(f_i)))))
    return total / batch_count


def stft_code_loss_forward(recon, target, batch_count, window=16, stride=4, phase_weight=9.0, eps=1e-6):
    """The share of :class:`STFTCodeLoss`, written the way the authors' code computes it: the reference.

    recon, target: host (n, C, H, W); returns a Python float. Each channel is made an
    NHWC image (n, H, W, 1), as the code's images are; for every frame position
    ``segment = image[:, top:top + h, left:left + h, :]`` (n, h, h, 1), and
    ``numpy.fft.fft2`` over its innermost two axes (what TensorFlow's ``fft2d`` transforms:
    the row and the channel of length 1), keeping ``[:, :h//2, :h//2]`` (rows × frequencies).
    Then ``|angle(F_o + ε) − angle(F_i + ε)|`` (not wrapped), ``||F_o| − |F_i||``, and the weight
    ``linspace(0, 1, h//2)`` row times column, summed per image; ÷ N_m.
    """
    recon = np.asarray(recon, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    n, c, height, width = recon.shape
    h, s, q = window, stride, window // 2
    ramp = np.linspace(0.0, 1.0, q)
    weight = ramp[:, None] * ramp[None, :]
    total = 0.0
    for ch in range(c):
        image_o = recon[:, ch, :, :, None]      # NHWC, one channel
        image_i = target[:, ch, :, :, None]
        for top in range(0, height - h + 1, s):
            for left in range(0, width - h + 1, s):
                f_o = np.fft.fft2(image_o[:, top:top + h, left:left + h, :], axes=(-2, -1))[:, :q, :q, 0]
                f_i = np.fft.fft2(image_i[:, top:top + h, left:left + h, :], axes=(-2, -1))[:, :q, :q, 0]
                phase = np.abs(np.angle(f_o + eps) - np.angle(f_i + eps))
                amplitude = np.abs(np.abs(f_o) - np.abs(f_i))
                total += float(np.sum(weight * (phase_weight * phase + amplitude)))
    return total / batch_count
