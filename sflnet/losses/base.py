"""The protocol every loss follows, and the settings the losses are built from.

A loss is one class in one module of this package. It measures how far a
group of reconstructions ``f^L`` is from its targets ``f^1`` and returns the
group's **share** of a batch value, so that summing the shares of all the
groups (and chunks) of a batch of N_m images gives the batch value exactly,
whatever the grouping:

``value = (1/N_m) Σ_i ℓ(f^L_i, f^1_i)``  (the mean over the batch of a per-image value ℓ)

Protocol (duck-typed; :class:`Loss` gives the defaults):

``forward(recon, target, batch_count) -> (value, parts)``
    recon, target: (n, C, H, W), one dtype, one device; batch_count: N_m ≥ n.
    value: 0-d array (same dtype and device), this group's share Σ_{i in group} ℓ_i / N_m.
    parts: {label: 0-d array} of extra shares the loss wants logged (may be empty),
    e.g. the unit-weight subband SFLs of :class:`~sflnet.losses.sfl.SpatialFrequencyLoss`.
    Keeps whatever ``backward`` needs in caches named for what they hold.
``backward() -> grad``
    ∂value/∂recon for the last ``forward``: (n, C, H, W), same dtype and device.
    The upstream gradient of a loss is the scalar 1 (a weight is applied by the
    :class:`~sflnet.losses.objective.Objective`), so no argument is needed.
``size_problem(height, width) -> str or None``
    Why an image of that size cannot be measured (e.g. smaller than a window), or None.
``begin_batch()``
    Called by the model once before the first group of every batch (a hook; most losses ignore it).

Every loss's class docstring defines it in formulas and derives its backward.
Dtypes are preserved and inputs are never modified in place.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class LossSettings:
    """Everything a loss may be configured with (the ``sflnet train`` loss options).

    sigmas:            LoG scales σ of the SFL subbands (``--sigmas``)
    sfl_weights:       one SFL weight per σ (``--sfl-weights``), used inside the ``sfl`` term
    pl_weights:        per-colour weights of the pixel loss (Eq. 4), ``(1, 1, 1)`` in the paper
    value_range:       (low, high) of the image scale: (−1, 1) for the CAE (tanh output), (0, 1) for a
                       sigmoid output. SSIM is computed on ``x − low`` with data range ``high − low``.
    stft_window:       h, the side of the square STFT window (``--stft-window``)
    stft_stride:       s, the step between window positions (``--stft-stride``)
    stft_window_fn:    "hann" (periodic 2-D Hann) or "rect" (no window) (``--stft-window-fn``)
    stft_phase_weight: λ, the weight of the phase term (``--stft-phase-weight``)
    """

    sigmas: tuple = (0.8, 1.6, 3.2)
    sfl_weights: tuple = (100.0, 10.0, 10.0)
    pl_weights: tuple = (1.0, 1.0, 1.0)
    value_range: tuple = (-1.0, 1.0)
    stft_window: int = 16
    stft_stride: int = 4
    stft_window_fn: str = "hann"
    stft_phase_weight: float = 9.0


class Loss:
    """Defaults of the protocol above. Subclasses set :attr:`name` and implement forward/backward."""

    name = None   # the registry name, as written in a --loss expression

    def forward(self, recon, target, batch_count):
        raise NotImplementedError

    def backward(self):
        raise NotImplementedError

    def size_problem(self, height, width):
        """None: every image size (≥ 1×1) can be measured."""
        del height, width
        return None

    def begin_batch(self):
        """Nothing to reset by default."""
