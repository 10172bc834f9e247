"""The β-VAE's latent layer: the reparameterisation z = μ + σ·ε (Kingma & Welling).

It takes two inputs (μ and logvar, plus the caller's noise ε) and its backward
returns two gradients, the one exception to :class:`~sflnet.nn.base.Layer`'s
one-input protocol. Its KL term lives in :mod:`sflnet.losses.kl`.
"""

from sflnet.backend import get_array_module
from sflnet.nn.base import Layer


class Reparameterize(Layer):
    """The VAE's sampling step, written so that it can be differentiated (Kingma & Welling's trick).

    ``z = μ + σ · ε`` with ``σ = exp(½ · logvar)`` and ε ~ N(0, I) drawn by the caller:
    z is then a sample of N(μ, σ²), but a deterministic, smooth function of
    (μ, logvar) for a fixed ε. The encoder predicts logvar = log σ² (any real
    number) rather than σ (which must stay positive).

    ``forward(mu, logvar, eps=None)``: mu, logvar, eps (N, D) → z (N, D).
    ``eps=None`` is evaluation mode: no noise, z = μ (a copy).
    ``backward(dz)`` → (∂E/∂μ, ∂E/∂logvar), each (N, D). No ``params``.
    """

    def __init__(self):
        super().__init__()
        self.noise = None   # ε of the last forward (N, D); None in evaluation mode
        self.std = None     # σ = exp(½ logvar) of the last forward (N, D); None in evaluation mode

    def forward(self, mu, logvar, eps=None):
        """mu, logvar, eps: (N, D) → z = mu + exp(½·logvar)·eps (N, D); z = mu (copied) when eps is None."""
        if mu.shape != logvar.shape or (eps is not None and eps.shape != mu.shape):
            raise ValueError(f"Reparameterize needs mu, logvar (and eps) of one shape, got {mu.shape}, "
                             f"{logvar.shape}" + ("" if eps is None else f", {eps.shape}"))
        xp = get_array_module(mu)
        if eps is None:
            self.noise, self.std = None, None
            return mu.copy()
        self.noise = eps
        self.std = xp.exp(0.5 * logvar)
        return mu + self.std * eps

    def backward(self, dz, need_dx=True):
        """dz = ∂E/∂z: (N, D) → (∂E/∂μ, ∂E/∂logvar), each (N, D) (``None`` when not ``need_dx``).

        Derivation, per element (every z_j depends only on μ_j, logvar_j):

        * ``∂z/∂μ = 1``, so ``∂E/∂μ = dz`` (returned as a copy, never dz itself);
        * ``z = μ + exp(½ ℓ) ε`` with ℓ = logvar, so
          ``∂z/∂ℓ = ε · exp(½ ℓ) · ½ = ε σ / 2`` and ``∂E/∂logvar = dz · ε · σ / 2``.

        In evaluation mode (ε = None) z = μ does not depend on logvar: ∂E/∂logvar = 0.
        (The KL term adds its own gradients to both; see :class:`sflnet.losses.kl.KLDivergence`.)
        """
        if not need_dx:
            return None
        xp = get_array_module(dz)
        dmu = dz.copy()
        if self.noise is None:
            return dmu, xp.zeros_like(dz)
        return dmu, dz * self.noise * (0.5 * self.std)
