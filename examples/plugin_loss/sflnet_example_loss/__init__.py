"""An sflnet plug-in loss: the Charbonnier loss, a smooth L1 (Charbonnier et al. 1994; Lai et al. 2017).

Installed with ``pip install examples/plugin_loss``, it is found through the entry point
``charbonnier`` of the group ``sflnet.losses`` (see ``pyproject.toml``) and used like a
built-in loss: ``sflnet train --loss "pl+0.1*charbonnier(eps=0.01)"``.
"""

from sflnet.backend import get_array_module
from sflnet.losses import Loss


class CharbonnierLoss(Loss):
    """The Charbonnier loss: a smooth absolute difference, per image, averaged over the batch.

    Definition, with d = f^L − f^1 (recon minus target), shapes (n, C, H, W), ε > 0:

    ``ℓ_i = mean_{c,y,x} √(d² + ε²)`` and ``E = (1/N_m) Σ_i ℓ_i``.

    ``forward`` returns the group's share ``Σ_{i in group} ℓ_i / N_m`` (the sflnet convention, so
    that chunks, groups and MPI ranks add up to the batch value) and no parts.

    Its one option is ``eps`` (ε, the keyword argument of ``__init__``): sflnet reads the options
    of a plug-in from its ``__init__`` keyword arguments and their defaults, so
    ``charbonnier(eps=0.01)`` in an expression builds ``CharbonnierLoss(eps=0.01)``.
    """

    summary = "Charbonnier loss mean √(d² + ε²), a smooth L1 (example plug-in)"

    def __init__(self, eps=1e-3):
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.eps = float(eps)
        self.ratio = None         # d / √(d² + ε²), (n, C, H, W)
        self.batch_count = None   # N_m

    def forward(self, recon, target, batch_count):
        """recon f^L, target f^1: (n, C, H, W); batch_count N_m ≥ n. Returns (share (0-d), {})."""
        xp = get_array_module(recon)
        d = recon - target
        root = xp.sqrt(d * d + self.eps * self.eps)
        self.ratio = d / root
        self.batch_count = batch_count
        return root.mean(axis=(1, 2, 3)).sum() / batch_count, {}

    def backward(self):
        """``∂share/∂f^L = d / √(d² + ε²) / (N_m C H W)``: (n, C, H, W), recon's dtype.

        Derivation: ``d/dd √(d² + ε²) = 2d / (2√(d² + ε²)) = d / √(d² + ε²)`` (chain rule), and
        ∂d/∂f^L = 1. Each pixel enters its image's mean over C·H·W values, and each image's ℓ_i
        enters the share divided by N_m. The ratio is in (−1, 1): for |d| ≫ ε it is sign(d) (the
        L1 gradient), near d = 0 it is ≈ d/ε (smooth, no kink, unlike L1).
        """
        _, c, h, w = self.ratio.shape
        return self.ratio * (1.0 / (self.batch_count * c * h * w))
