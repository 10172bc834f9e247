"""``fft``: the focal frequency loss (Jiang et al., ICCV 2021), with its gradient."""

from sflnet.ops import spectral
from sflnet.backend import get_array_module
from sflnet.losses.base import Loss


def weights_of_amplitude(amplitude):
    """``w = |D| / max_{u,v} |D|`` per image and channel, 0 where the max is 0: amplitude (n, C, H, W) → same."""
    xp = get_array_module(amplitude)
    peak = amplitude.max(axis=(2, 3), keepdims=True)
    return amplitude / xp.where(peak > 0, peak, 1)    # |D| = 0 everywhere there, so w = 0, not NaN


def focal_weights(recon, target):
    """The focal weight matrix of a point: w = |D| / max |D| per image and channel, D = F(recon − target).

    recon, target: (n, C, H, W) → w (n, C, H, W), real of recon's precision; what
    :meth:`FocalFrequencyLoss.forward` computes when it is given no weights.
    """
    return weights_of_amplitude(abs(spectral.dft2(recon - target)))


class FocalFrequencyLoss(Loss):
    """The focal frequency loss with its defaults: α = 1, no patches, no log, per-image normalisation.

    Definition, per image i (recon ``f^L = o``, target ``f^1 = i``), shapes (C, H, W):

    * ``D = F(f^L) − F(f^1) = F(f^L − f^1)``, F the orthonormal 2-D DFT of each channel
      (``(F x)[u, v] = (1/√(HW)) Σ_{y,x} x[y, x] e^{−2πi(uy/H + vx/W)}``, :func:`sflnet.ops.spectral.dft2`);
    * the focal weight ``w[c, u, v] = |D[c, u, v]| / max_{u',v'} |D[c, u', v']|`` per channel,
      0 where that maximum is 0 (there the ratio would be 0/0 = NaN and D is 0 anyway).
      w is a CONSTANT: no gradient flows through it (the paper detaches it);
    * ``ℓ_i = mean_{c,u,v} w · |D|²`` and ``E = (1/N_m) Σ_i ℓ_i``.

    The group's share ``Σ_{i in group} ℓ_i / N_m`` is returned; no parts.

    Backward. Let d = f^L − f^1 (real, per channel) and D = F d. With w fixed,
    ``Σ_k w_k |D_k|² = Σ_k w_k D_k conj(D_k)``, and ``∂D_k/∂d_j = F_kj``, so

        ∂/∂d_j Σ_k w_k |D_k|² = Σ_k w_k (F_kj conj(D_k) + conj(F_kj) D_k)
                              = 2 Re Σ_k conj(F_kj) w_k D_k = 2 Re(F^H (w ⊙ D))_j.

    F is unitary, so ``F^H = F^{-1}`` is the orthonormal inverse DFT:
    ``∂ℓ_i/∂f^L_i = 2 Re(ifft2(w ⊙ D, norm="ortho")) / (C H W)``, and the share's
    gradient is that divided by N_m: (n, C, H, W). ∂d/∂f^L = 1.

    Why w must be held fixed when this is checked by finite differences: as a
    function of the bin's own |D| (max m held), ``w |D|² = |D|³ / m`` has the
    derivative ``3|D|²/m``, while the detached derivative is ``2 w |D| = 2|D|²/m``;
    so on every bin that is not the maximum the full derivative is 3/2 of the
    one defined here (and the maximum's bin moves every other weight). A finite
    difference of the plain forward measures that full derivative. So, as in
    Jiang et al.'s ``matrix=`` argument, the weights can be passed in:
    ``forward(recon, target, batch_count, weights=w)`` uses the given w
    ((n, C, H, W)) instead of computing it, and :func:`focal_weights` computes
    the w of a point. The gradient check computes w once at the base point and
    passes it to every perturbed forward (:mod:`sflnet.gradcheck.cases.freq`).
    """

    name = "fft"
    summary = "focal frequency loss (Jiang et al. 2021), α = 1"
    options = ()

    def __init__(self):
        self.weighted_difference = None  # w ⊙ D, (n, C, H, W) complex
        self.batch_count = None          # N_m

    def forward(self, recon, target, batch_count, weights=None):
        """recon f^L, target f^1: (n, C, H, W); batch_count N_m ≥ n. Returns (share (0-d), {}).

        weights: None (compute w from this recon and target), or a given focal weight matrix w
        (n, C, H, W), real, e.g. :func:`focal_weights` of another point.
        """
        _, c, h, w = recon.shape
        spectrum = spectral.dft2(recon - target)                  # D, (n, C, H, W) complex
        amplitude = abs(spectrum)                                  # |D|, real of recon's precision
        if weights is None:
            weights = weights_of_amplitude(amplitude)
        self.weighted_difference = weights * spectrum
        self.batch_count = batch_count
        value = (weights * amplitude * amplitude).sum() / (c * h * w * batch_count)
        return value.astype(recon.dtype, copy=False), {}

    def backward(self):
        """``∂share/∂f^L = 2 Re(F^H (w ⊙ D)) / (N_m C H W)``: (n, C, H, W), recon's dtype."""
        _, c, h, w = self.weighted_difference.shape
        grad = spectral.dft2_adjoint(self.weighted_difference)
        grad *= 2.0 / (self.batch_count * c * h * w)
        return grad
