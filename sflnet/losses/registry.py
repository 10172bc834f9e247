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

import importlib.metadata
import re
from collections.abc import Mapping

from sflnet.errors import SflnetError
from sflnet.losses.base import Loss
from sflnet.losses.fft import FocalFrequencyLoss
from sflnet.losses.l1 import L1Loss
from sflnet.losses.pixel import PixelLoss
from sflnet.losses.sfl import SpatialFrequencyLoss
from sflnet.losses.ssim import SSIMLoss
from sflnet.losses.stft import STFTLoss

ENTRY_POINT_GROUP = "sflnet.losses"
# name → class of the losses that ship with sflnet. A new built-in loss is one module plus one line here.
BUILTIN = {
    "pl": PixelLoss,
    "sfl": SpatialFrequencyLoss,
    "l1": L1Loss,
    "ssim": SSIMLoss,
    "fft": FocalFrequencyLoss,
    "stft": STFTLoss,
}
# Names no plug-in may take: the built-ins, and kl (the β-VAE's latent term, history column E_KL).
RESERVED = (*BUILTIN, "kl")
_NAME = re.compile(r"[a-z_][a-z0-9_]*")


def _describe(entry_point):
    return f"entry point {entry_point.name!r} = {entry_point.value!r} (group {ENTRY_POINT_GROUP})"


def load_plugin(entry_point):
    """The loss class of one entry point; SflnetError (one line naming it) if it is refused."""
    if entry_point.name in RESERVED:
        raise SflnetError(f"plug-in loss refused: {_describe(entry_point)} clashes with sflnet's own loss "
                          f"{entry_point.name!r}; rename the entry point")
    if not _NAME.fullmatch(entry_point.name):
        raise SflnetError(f"plug-in loss refused: {_describe(entry_point)}: a loss name must be lower-case "
                          f"letters, digits and _, starting with a letter or _")
    try:
        loaded = entry_point.load()
    except Exception as exc:  # an ImportError, or anything the plug-in's module raises on import
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise SflnetError(f"plug-in loss refused: {_describe(entry_point)} cannot be loaded "
                          f"({type(exc).__name__}: {text})") from None
    if not (isinstance(loaded, type) and issubclass(loaded, Loss)):
        raise SflnetError(f"plug-in loss refused: {_describe(entry_point)} loads {loaded!r}, which is not a "
                          f"subclass of sflnet.losses.Loss")
    return loaded


def find_plugins():
    """{name: loss class} of every installed ``sflnet.losses`` entry point, by name (SflnetError if refused)."""
    found = {}
    for entry_point in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if entry_point.name in found:
            continue   # the same distribution seen twice on sys.path: the first one wins, as for imports
        found[entry_point.name] = load_plugin(entry_point)
    return found


class LossRegistry(Mapping):
    """name → loss class: :data:`BUILTIN`, then the plug-ins, found on the first read and kept."""

    def __init__(self, builtin):
        self.builtin = dict(builtin)
        self._losses = None   # the full mapping once the plug-ins are loaded
        self._error = None    # the SflnetError of a refused plug-in, raised on every read

    def _all(self):
        if self._losses is None and self._error is None:
            try:
                self._losses = {**self.builtin, **find_plugins()}
            except SflnetError as exc:
                self._error = exc
        if self._error is not None:
            raise SflnetError(str(self._error))
        return self._losses

    def __getitem__(self, name):
        return self._all()[name]

    def __iter__(self):
        return iter(self._all())

    def __len__(self):
        return len(self._all())

    def __contains__(self, name):
        return name in self._all()

    def plugins(self):
        """{name: class} of the loaded plug-ins only."""
        return {name: cls for name, cls in self._all().items() if name not in self.builtin}

    def forget_plugins(self):
        """Look for the plug-ins again on the next read (after a package was installed or sys.path changed)."""
        self._losses = None
        self._error = None


LOSSES = LossRegistry(BUILTIN)


def registry():
    """The loss registry, name → loss class, plug-ins included (:data:`LOSSES`)."""
    return LOSSES


def loss_names():
    """The names a ``--loss`` expression may use: the built-ins, then the plug-ins."""
    return tuple(LOSSES)
