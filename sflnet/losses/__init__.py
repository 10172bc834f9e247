"""The losses, one module each, the registry that builds them by name, and their options.

=========  =============================================  ===================
name       what                                           module
=========  =============================================  ===================
pl         pixel loss, paper Eq. 4 / 9                    :mod:`.pixel`
sfl        spatial frequency loss, paper Eq. 6 / 8        :mod:`.sfl`
l1         mean absolute error                            :mod:`.l1`
ssim       1 − SSIM (Wang et al. 2004), valid window      :mod:`.ssim`
fft        focal frequency loss (Jiang et al. 2021)       :mod:`.fft`
stft       STFT amplitude + phase loss (Dalal's β-VAE)    :mod:`.stft`
stft_code  the stft loss as Dalal's public code has it    :mod:`.stft_code`
=========  =============================================  ===================

The β-VAE's latent term :class:`~sflnet.losses.kl.KLDivergence` (``kl``, in
:mod:`.kl`) is exported here too, but it is not an image loss (it measures
μ and logvar, not a reconstruction), so it is not in :data:`REGISTRY`.

:func:`registry` (:data:`sflnet.losses.registry.LOSSES`) is the one registry,
name → loss class: the built-ins above, then the plug-ins other packages declare
in the entry-point group ``sflnet.losses`` (loaded on its first read).
:func:`loss_names` (and ``LOSS_NAMES``, computed when read) are its names, and
:data:`REGISTRY` is the same registry as name → ``factory(settings) → loss``
(:func:`make_loss`), as it always was.

A new built-in loss is one new module (a class following :mod:`.base`'s
protocol, declaring its :class:`Option`\\ s) plus one line in
:data:`sflnet.losses.registry.BUILTIN`. Each loss owns its options; a ``--loss``
expression sets them inline (``pl+0.5*stft(window=8,window_fn=rect)``), see
:mod:`.options`. An objective is built with :func:`make_objective`.
"""

from collections.abc import Mapping

from sflnet.errors import SflnetError
from sflnet.losses.base import Loss, LossSettings, Option
from sflnet.losses.fft import FocalFrequencyLoss
from sflnet.losses.kl import KLDivergence
from sflnet.losses.l1 import L1Loss
from sflnet.losses.objective import (ALWAYS_MEASURED, DEFAULT_EXPRESSION, LEGACY_EXPRESSIONS, Objective, Term,
                                     extra_column, extra_term_names, format_terms, parse_expression, value_text)
from sflnet.losses.options import Resolved, canonical, help_rows, option_values, options_of, parse, resolve
from sflnet.losses.pixel import PixelLoss
from sflnet.losses.registry import BUILTIN, ENTRY_POINT_GROUP, LOSSES, loss_names, registry
from sflnet.losses.sfl import SpatialFrequencyLoss, sigma_label, subband_column
from sflnet.losses.ssim import SSIMLoss
from sflnet.losses.stft import WINDOW_FUNCTIONS as STFT_WINDOW_FNS
from sflnet.losses.stft import STFTLoss
from sflnet.losses.stft_code import STFTCodeLoss


def __getattr__(name):
    """``LOSS_NAMES``: :func:`loss_names`, read when asked for (so that the plug-ins load lazily)."""
    if name == "LOSS_NAMES":
        return loss_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_loss(name, settings=LossSettings(), options=None):
    """One loss object by registry name.

    settings: the model's :class:`LossSettings` (channel weights, value range, and the alias values);
    options:  {option name: typed value} set explicitly (they win over the aliases in ``settings``).
    """
    cls, values = LOSSES[name], option_values(name, settings, options)
    if name in BUILTIN:
        return cls.create(settings, **values)
    try:   # a plug-in's own checks raise in its __init__
        return cls.create(settings, **values)
    except (TypeError, ValueError) as exc:
        shown = ",".join(f"{key}={value_text(value)}" for key, value in values.items())
        raise SflnetError(f"the plug-in loss {name}({shown}) cannot be built: {exc}") from None


class LossFactories(Mapping):
    """:func:`registry`'s names, each with its factory ``factory(settings=LossSettings(), options=None)``
    → :func:`make_loss` ``(name, settings, options)``; always in step with the registry (a view of it)."""

    def __getitem__(self, name):
        if name not in LOSSES:   # (reading the registry raises a plug-in's refusal)
            raise KeyError(name)

        def factory(settings=LossSettings(), options=None):
            return make_loss(name, settings, options)
        return factory

    def __iter__(self):
        return iter(LOSSES)

    def __len__(self):
        return len(LOSSES)

    def __contains__(self, name):
        return name in LOSSES


REGISTRY = LossFactories()


def make_objective(expression=DEFAULT_EXPRESSION, settings=LossSettings(), always=ALWAYS_MEASURED):
    """The :class:`Objective` of an expression; ``always`` are measured (not trained) besides its terms.

    Inline options of the expression win over the alias values in ``settings`` (:func:`resolve` with
    strict=False); the measured losses that are not terms take ``settings``. The objective's
    ``expression`` is the canonical text of what is computed, aliases folded in.
    """
    resolved = resolve(expression, settings, strict=False)
    names = list(always) + [t.name for t in resolved.terms if t.name not in always]
    return Objective(resolved.terms, {name: make_loss(name, settings, resolved.values.get(name))
                                      for name in names})


__all__ = ["ALWAYS_MEASURED", "BUILTIN", "DEFAULT_EXPRESSION", "ENTRY_POINT_GROUP", "LEGACY_EXPRESSIONS", "LOSSES",
           "LOSS_NAMES", "REGISTRY", "STFT_WINDOW_FNS", "FocalFrequencyLoss", "KLDivergence", "L1Loss", "Loss",
           "LossFactories", "LossSettings", "Objective", "Option", "PixelLoss", "Resolved", "STFTLoss", "STFTCodeLoss", "SSIMLoss",
           "SpatialFrequencyLoss", "Term", "canonical", "extra_column", "extra_term_names", "format_terms",
           "help_rows", "loss_names", "make_loss", "make_objective", "option_values", "options_of", "parse",
           "parse_expression", "registry", "resolve", "sigma_label", "subband_column"]
