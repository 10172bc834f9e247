"""``l1``: the mean absolute error, with its subgradient."""

from sflnet.backend import get_array_module
from sflnet.losses.base import Loss


class L1Loss(Loss):
    """The mean absolute difference, per image, averaged over the batch.

    ``ℓ_i = mean_{c,y,x} |f^L_i − f^1_i|`` and ``E_L1 = (1/N_m) Σ_i ℓ_i``.

    Backward: ``d|t|/dt = sign(t)`` wherever t ≠ 0, so with d = f^L − f^1,
    ``∂E_L1/∂f^L = sign(d) / (N_m C H W)``: (n, C, H, W). At d = 0, where |t|
    has a kink, the subgradient 0 is taken (``sign(0) = 0``): a pixel that is
    already exact is left alone.
    """

    name = "l1"
    summary = "mean absolute error"
    options = ()

    def __init__(self):
        self.difference_sign = None   # sign(f^L − f^1), (n, C, H, W)
        self.batch_count = None       # N_m

    def forward(self, recon, target, batch_count):
        """recon, target: (n, C, H, W) → (share (0-d), {})."""
        xp = get_array_module(recon)
        d = recon - target
        self.difference_sign = xp.sign(d)
        self.batch_count = batch_count
        return xp.abs(d).mean(axis=(1, 2, 3)).sum() / batch_count, {}

    def backward(self):
        """``sign(f^L − f^1) / (N_m C H W)``: (n, C, H, W)."""
        _, c, h, w = self.difference_sign.shape
        return self.difference_sign * (1.0 / (self.batch_count * c * h * w))
