"""The losses, one module each, and the registry that builds them by name.

=====  ===========================================  ==========================
name   what                                         module
=====  ===========================================  ==========================
pl     pixel loss, paper Eq. 4 / 9                   :mod:`.pixel`
sfl    spatial frequency loss, paper Eq. 6 / 8       :mod:`.sfl`
l1     mean absolute error                           :mod:`.l1`
ssim   1 − SSIM (Wang et al. 2004), valid window     :mod:`.ssim`
fft    focal frequency loss (Jiang et al. 2021)      :mod:`.fft`
stft   STFT amplitude + phase loss (seed 004)        :mod:`.stft`
=====  ===========================================  ==========================

The β-VAE's latent term :class:`~sflnet.losses.kl.KLDivergence` (``kl``, in
:mod:`.kl`) is exported here too, but it is not an image loss (it measures
μ and logvar, not a reconstruction), so it is not in :data:`REGISTRY`.

A new loss is one new module (a class following :mod:`.base`'s protocol) plus
one line in :data:`REGISTRY`. An objective (``--loss pl+100*fft``) is built
with :func:`make_objective`.
"""

from sflnet.losses.base import Loss, LossSettings
from sflnet.losses.fft import FocalFrequencyLoss
from sflnet.losses.kl import KLDivergence
from sflnet.losses.l1 import L1Loss
from sflnet.losses.objective import (ALWAYS_MEASURED, DEFAULT_EXPRESSION, LEGACY_EXPRESSIONS, Objective, Term,
                                     extra_column, extra_term_names, format_terms, parse_expression)
from sflnet.losses.pixel import PixelLoss
from sflnet.losses.sfl import SpatialFrequencyLoss, sigma_label, subband_column
from sflnet.losses.ssim import SSIMLoss
from sflnet.losses.stft import STFTLoss

# name → factory(LossSettings) → loss object. The order is the order of --help and of extra history columns.
REGISTRY = {
    "pl": lambda s: PixelLoss(s.pl_weights),
    "sfl": lambda s: SpatialFrequencyLoss(s.sigmas, s.sfl_weights),
    "l1": lambda s: L1Loss(),
    "ssim": lambda s: SSIMLoss(s.value_range),
    "fft": lambda s: FocalFrequencyLoss(),
    "stft": lambda s: STFTLoss(s.stft_window, s.stft_stride, s.stft_window_fn, s.stft_phase_weight),
}
LOSS_NAMES = tuple(REGISTRY)
STFT_WINDOW_FNS = ("hann", "rect")


def parse(text, option="--loss"):
    """Terms of a ``--loss`` expression (SflnetError naming the bad part)."""
    return parse_expression(text, LOSS_NAMES, option)


def canonical(text, option="--loss"):
    """The canonical form of a ``--loss`` expression: ``"PL + 1*SFL"`` → ``"pl+sfl"``."""
    return format_terms(parse(text, option))


def make_loss(name, settings=LossSettings()):
    """One loss object by registry name."""
    return REGISTRY[name](settings)


def make_objective(expression=DEFAULT_EXPRESSION, settings=LossSettings(), always=ALWAYS_MEASURED):
    """The :class:`Objective` of an expression; ``always`` are measured (not trained) besides its terms."""
    terms = parse(expression) if isinstance(expression, str) else tuple(expression)
    names = list(always) + [t.name for t in terms if t.name not in always]
    return Objective(terms, {name: make_loss(name, settings) for name in names})


__all__ = ["ALWAYS_MEASURED", "DEFAULT_EXPRESSION", "LEGACY_EXPRESSIONS", "LOSS_NAMES", "REGISTRY",
           "STFT_WINDOW_FNS", "FocalFrequencyLoss", "KLDivergence", "L1Loss", "Loss", "LossSettings", "Objective",
           "PixelLoss",
           "STFTLoss", "SSIMLoss", "SpatialFrequencyLoss", "Term", "canonical", "extra_column", "extra_term_names",
           "make_loss",
           "make_objective", "parse", "sigma_label", "subband_column"]
