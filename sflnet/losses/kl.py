"""``kl``: the β-VAE's latent term, KL(N(μ, σ²) ‖ N(0, I)) in closed form, with its gradient.

Not an image loss: it measures the encoder's outputs (μ, logvar), not a
reconstruction against a target, so it is not in :data:`sflnet.losses.REGISTRY`
(whose names are the terms of a ``--loss`` expression). It keeps the batch
convention of every loss, though: ``forward`` returns the group's share of a
batch mean, and shares of all the groups of a batch add up to the batch value.
"""

from sflnet.backend import get_array_module


class KLDivergence:
    """The batch mean of the per-image KL divergence of the encoder's Gaussian from the prior N(0, I).

    For image i the encoder gives a diagonal Gaussian q_i = N(μ_i, diag σ_i²) over
    the D latent dimensions, with ``logvar = log σ²``. The prior is p = N(0, I).

    **Closed form.** The dimensions are independent, so the KL is a sum over j of
    one-dimensional KLs. For one dimension, with q = N(μ, σ²) and p = N(0, 1):

    ``KL = E_q[log q(z) − log p(z)]``,
    ``log q(z) = −½ log 2π − ½ log σ² − (z − μ)²/(2σ²)``,  ``log p(z) = −½ log 2π − z²/2``.

    Under q, ``E[(z − μ)²] = σ²`` and ``E[z²] = σ² + μ²``, so

    ``KL = −½ log σ² − ½ + ½ (σ² + μ²) = ½ (μ² + σ² − log σ² − 1)``,

    which is ≥ 0 and 0 only at μ = 0, σ = 1 (t − log t − 1 ≥ 0 for t = σ² > 0).
    With ℓ = logvar (σ² = e^ℓ):

    ``KL_i = Σ_j ½ (μ_ij² + e^{ℓ_ij} − ℓ_ij − 1)``  and  ``E_KL = (1/N_m) Σ_i KL_i``.

    ``forward`` returns the group's share ``(1/N_m) Σ_{i in group} KL_i``.

    **Gradient.** Each term depends only on its own μ_ij and ℓ_ij:

    ``∂E_KL/∂μ_ij = μ_ij / N_m``  (from ½ μ²),
    ``∂E_KL/∂ℓ_ij = ½ (e^{ℓ_ij} − 1) / N_m``  (from ½ (e^ℓ − ℓ)).

    The β of the β-VAE weights this term in the objective; it is not applied here.
    Shapes: mu, logvar (n, D); share 0-d; gradients (n, D). Dtype and device of mu.
    """

    name = "kl"

    def __init__(self):
        self.mean = None          # μ of the last forward, (n, D)
        self.variance = None      # σ² = exp(logvar) of the last forward, (n, D)
        self.batch_count = None   # N_m of the last forward

    def forward(self, mu, logvar, batch_count):
        """mu, logvar: (n, D), batch_count: N_m ≥ n → (share (0-d array), {})."""
        xp = get_array_module(mu)
        if mu.shape != logvar.shape:
            raise ValueError(f"KLDivergence needs mu and logvar of one shape, got {mu.shape} and {logvar.shape}")
        variance = xp.exp(logvar)
        terms = 0.5 * (mu * mu + variance - logvar - 1)
        share = xp.asarray(terms.sum() * (1.0 / batch_count), dtype=mu.dtype)
        self.mean, self.variance, self.batch_count = mu, variance, batch_count
        return share, {}

    def backward(self):
        """(∂share/∂mu, ∂share/∂logvar) = (μ / N_m, ½ (exp(logvar) − 1) / N_m), each (n, D)."""
        scale = 1.0 / self.batch_count
        return self.mean * scale, (self.variance - 1) * (0.5 * scale)
