"""``fft``: the focal frequency loss (Jiang et al., ICCV 2021), with its gradient."""

from sflnet import kernels
from sflnet.backend import get_array_module
from sflnet.losses.base import Loss


class FocalFrequencyLoss(Loss):
    """The focal frequency loss with its defaults: α = 1, no patches, no log, per-image normalisation.

    Definition, per image i (recon ``f^L = o``, target ``f^1 = i``), shapes (C, H, W):

    * ``D = F(f^L) − F(f^1) = F(f^L − f^1)``, F the orthonormal 2-D DFT of each channel
      (``(F x)[u, v] = (1/√(HW)) Σ_{y,x} x[y, x] e^{−2πi(uy/H + vx/W)}``, :func:`sflnet.kernels.dft2`);
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

    Why w must be frozen when this is checked by finite differences: as a
    function of the bin's own |D| (max m held), ``w |D|² = |D|³ / m`` has the
    derivative ``3|D|²/m``, while the detached derivative is ``2 w |D| = 2|D|²/m``;
    so on every bin that is not the maximum the full derivative is 3/2 of the
    one defined here (and the maximum's bin moves every other weight). A finite
    difference of the plain forward measures that full derivative. Setting
    :attr:`frozen_weights` to a list makes forward use the stored w instead of
    computing it, so the finite differences see the same constant w as backward:

    * ``record_weights = True``: each forward computes w and appends it to
      ``frozen_weights`` (a new list if it was None);
    * otherwise, if ``frozen_weights`` is a list, the k-th forward call since the
      last :meth:`begin_batch` uses ``frozen_weights[k]`` ((n, C, H, W)) instead of computing w.
    """

    name = "fft"
    summary = "focal frequency loss (Jiang et al. 2021), α = 1"
    options = ()

    def __init__(self):
        self.frozen_weights = None       # None, or a list of w arrays (n, C, H, W), one per forward call
        self.record_weights = False      # True: forward appends the w it computes to frozen_weights
        self.forward_calls = 0           # forward calls since the last begin_batch()
        self.weighted_difference = None  # w ⊙ D, (n, C, H, W) complex
        self.batch_count = None          # N_m

    def begin_batch(self):
        """Restart the count of forward calls that indexes :attr:`frozen_weights`."""
        self.forward_calls = 0

    def focal_weights(self, amplitude):
        """``w = |D| / max_{u,v} |D|`` per image and channel, 0 where the max is 0: amplitude (n, C, H, W) → same."""
        xp = get_array_module(amplitude)
        peak = amplitude.max(axis=(2, 3), keepdims=True)
        return amplitude / xp.where(peak > 0, peak, 1)    # |D| = 0 everywhere there, so w = 0, not NaN

    def forward(self, recon, target, batch_count):
        """recon f^L, target f^1: (n, C, H, W); batch_count N_m ≥ n. Returns (share (0-d), {})."""
        _, c, h, w = recon.shape
        spectrum = kernels.dft2(recon - target)                  # D, (n, C, H, W) complex
        amplitude = abs(spectrum)                                  # |D|, real of recon's precision
        if self.record_weights:
            weights = self.focal_weights(amplitude)
            self.frozen_weights = [] if self.frozen_weights is None else self.frozen_weights
            self.frozen_weights.append(weights)
        elif self.frozen_weights is not None:
            weights = self.frozen_weights[self.forward_calls]
        else:
            weights = self.focal_weights(amplitude)
        self.forward_calls += 1
        self.weighted_difference = weights * spectrum
        self.batch_count = batch_count
        value = (weights * amplitude * amplitude).sum() / (c * h * w * batch_count)
        return value.astype(recon.dtype, copy=False), {}

    def backward(self):
        """``∂share/∂f^L = 2 Re(F^H (w ⊙ D)) / (N_m C H W)``: (n, C, H, W), recon's dtype."""
        _, c, h, w = self.weighted_difference.shape
        grad = kernels.dft2_adjoint(self.weighted_difference)
        grad *= 2.0 / (self.batch_count * c * h * w)
        return grad
