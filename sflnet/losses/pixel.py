"""``pl``: the pixel loss of the paper, Eq. 4, and its gradient, Eq. 9 (without the tanh factor)."""

from sflnet.backend import device_constant
from sflnet.losses.base import Loss


class PixelLoss(Loss):
    """Eq. 4, the pixel loss, for one group of same-sized images inside a batch of ``batch_count`` images.

    ``E_PL = (1/N_m) Σ_i Σ_c w_PL[c] · ½ · mean_{x,y} (f^L_i − f^1_i)²``

    The group's contribution is returned, so summing over the groups of a
    batch gives Eq. 4 exactly whatever the grouping. No parts are logged
    besides the value (the history's ``E_PL`` column).
    """

    name = "pl"
    summary = "pixel loss, paper Eq. 4 / 9 (its channel weights come from the model)"
    options = ()

    @classmethod
    def create(cls, settings, **values):
        """The model's per-channel weights (``settings.pl_weights``); no user options."""
        return cls(settings.pl_weights, **values)

    def __init__(self, weights=(1.0, 1.0, 1.0)):
        self.weights = tuple(float(w) for w in weights)
        self.difference = None    # f^L − f^1, (n, C, H, W)
        self.batch_count = None   # N_m

    def forward(self, recon, target, batch_count):
        """recon f^L, target f^1: (n, C, H, W); batch_count N_m ≥ n. Returns (E_PL's share (0-d), {})."""
        if recon.shape[1] != len(self.weights):
            raise ValueError(f"the pixel loss has {len(self.weights)} channel weights but the images have "
                             f"{recon.shape[1]} channels")
        d = recon - target
        self.difference = d
        self.batch_count = batch_count
        w = device_constant(self.weights, recon)
        per_channel = 0.5 * (d * d).mean(axis=(2, 3)).sum(axis=0)   # (C,): Σ_i ½ mean_xy d²
        return (w * per_channel).sum() / batch_count, {}

    def backward(self):
        """Eq. 9 without the tanh factor: ``∂E_PL/∂f^L = w_PL[c] / (N_m H W) · (f^L − f^1)``, (n, C, H, W).

        Each squared term ½ d² / (H W N_m) has derivative d / (H W N_m) with
        respect to its own f^L pixel. The tanh factor ``∂f^L/∂o^L`` of Eq. 9 is
        applied by :class:`~sflnet.nn.activations.Tanh` after the SFL gradient has been
        added (Sec. 3: the Eq. 9 gradients "are added to the gradients
        backpropagated from the (L+1)-th layer").
        """
        _, c, h, w = self.difference.shape
        scale = device_constant(self.weights, self.difference) / (self.batch_count * h * w)
        return self.difference * scale[None, :, None, None]
