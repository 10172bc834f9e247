"""The loss registry: name → loss class, the built-in losses and the plug-ins of other packages.

:data:`LOSSES` is THE registry (authoritative): a read-only mapping from the
name written in a ``--loss`` expression to a subclass of
:class:`sflnet.losses.base.Loss`, in the order of ``--help`` and of the extra
history columns: the built-ins (:data:`BUILTIN`), then the plug-ins sorted by
name. :func:`registry` returns it and :func:`loss_names` its names; training,
``evaluate``, the CLI's help and the gradient checks all read it.
(:data:`sflnet.losses.REGISTRY` is a view of it with the same names, whose values
are the factories ``factory(settings) → loss`` of :func:`sflnet.losses.make_loss`.)

**Plug-ins.** Another installed package adds a loss by declaring an entry point
in the group :data:`ENTRY_POINT_GROUP` (``sflnet.losses``); the entry point's
name is the loss's name in expressions, and it must load a subclass of
:class:`~sflnet.losses.base.Loss` that follows the protocol of
:mod:`sflnet.losses.base`. In its ``pyproject.toml``::

    [project.entry-points."sflnet.losses"]
    charbonnier = "sflnet_example_loss:CharbonnierLoss"

The plug-ins are found and imported once, the first time the registry is read
(not when :mod:`sflnet` is imported), and kept. A plug-in is refused with an
:class:`~sflnet.errors.SflnetError` of one line that names its entry point when
its name clashes with a built-in loss (or with ``kl``, the β-VAE's history
column), is not a lower-case identifier, cannot be imported, or is not a Loss
subclass. The error is raised on every read of the registry until the package
is fixed or removed: a broken installation is never silently half-used.
"""

import re

from sflnet.losses.base import Loss
from sflnet.losses.fft import FocalFrequencyLoss
from sflnet.losses.l1 import L1Loss
from sflnet.losses.pixel import PixelLoss
from sflnet.losses.sfl import SpatialFrequencyLoss
from sflnet.losses.ssim import SSIMLoss
from sflnet.losses.stft import STFTLoss
from sflnet.losses.stft_code import STFTCodeLoss
from sflnet.plugins import PluginRegistry

ENTRY_POINT_GROUP = "sflnet.losses"
# name → class of the losses that ship with sflnet. A new built-in loss is one module plus one line here.
BUILTIN = {
    "pl": PixelLoss,
    "sfl": SpatialFrequencyLoss,
    "l1": L1Loss,
    "ssim": SSIMLoss,
    "fft": FocalFrequencyLoss,
    "stft": STFTLoss,
    "stft_code": STFTCodeLoss,
}
_NAME = re.compile(r"[a-z_][a-z0-9_]*")


def _check_name(entry_point):
    if not _NAME.fullmatch(entry_point.name):
        return ": a loss name must be lower-case letters, digits and _, starting with a letter or _"
    return None


def _check_loss(entry_point, loaded):
    if not (isinstance(loaded, type) and issubclass(loaded, Loss)):
        return f" loads {loaded!r}, which is not a subclass of sflnet.losses.Loss"
    return None


# name → loss class, built-ins first (the shared mechanism is sflnet.plugins.PluginRegistry)
LOSSES = PluginRegistry(BUILTIN, ENTRY_POINT_GROUP, "loss", _check_loss, reserved=("kl",), check_name=_check_name)


def registry():
    """The loss registry, name → loss class, plug-ins included (:data:`LOSSES`)."""
    return LOSSES


def loss_names():
    """The names a ``--loss`` expression may use: the built-ins, then the plug-ins."""
    return tuple(LOSSES)
