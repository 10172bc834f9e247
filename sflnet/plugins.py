"""Plug-ins from other installed packages: one registry of built-ins plus entry points, for losses and models.

:class:`PluginRegistry` is a read-only mapping name → object: the built-ins first, then the
objects the entry points of one group load, sorted by name. The entry points are found and
imported once, on the first read (not when :mod:`sflnet` is imported), and kept. A refused
entry point raises an :class:`~sflnet.errors.SflnetError` of one line naming it, on every read
until the package is fixed or removed, so a broken installation is never silently half-used.

Used by :data:`sflnet.losses.registry.LOSSES` (group ``sflnet.losses``) and
:data:`sflnet.models.REGISTRY` (group ``sflnet.models``); each gives its own ``check`` of what
an entry point loaded.
"""

import importlib.metadata
from collections.abc import Mapping

from sflnet.errors import SflnetError


def describe(entry_point, group):
    """``entry point 'name' = 'module:attr' (group G)``: how a refusal names an entry point."""
    return f"entry point {entry_point.name!r} = {entry_point.value!r} (group {group})"


class PluginRegistry(Mapping):
    """name → object: ``builtin`` {name: object}, then the entry points of ``group``.

    kind:     "loss" or "model", for the messages (``plug-in loss refused: …``)
    reserved: names no plug-in may take (the built-ins' names are always reserved)
    check:    ``check(entry_point, loaded) -> None or str``: why a loaded object is refused
    check_name: optional ``check_name(entry_point) -> None or str``: why a name is refused, before loading

    A reason is the rest of the one-line message after the entry point, with its own leading
    separator (``" loads 42, which is not …"``, ``": a loss name must be …"``).
    """

    def __init__(self, builtin, group, kind, check, reserved=(), check_name=None):
        self.builtin = dict(builtin)
        self.group = group
        self.kind = kind
        self.check = check
        self.check_name = check_name
        self.reserved = (*self.builtin, *reserved)
        self._entries = None   # the full mapping once the plug-ins are loaded
        self._error = None     # the SflnetError of a refused plug-in, raised on every read

    def refuse(self, entry_point, why):
        """The SflnetError refusing ``entry_point`` because ``why``."""
        return SflnetError(f"plug-in {self.kind} refused: {describe(entry_point, self.group)}{why}")

    def load(self, entry_point):
        """The object of one entry point; SflnetError (one line naming it) if it is refused."""
        if entry_point.name in self.reserved:
            raise self.refuse(entry_point, f" clashes with sflnet's own {self.kind} {entry_point.name!r}; "
                                           f"rename the entry point")
        why = self.check_name(entry_point) if self.check_name is not None else None
        if why:
            raise self.refuse(entry_point, why)
        try:
            loaded = entry_point.load()
        except Exception as exc:  # an ImportError, or anything the plug-in's module raises on import
            text = " ".join(str(exc).split()) or type(exc).__name__
            raise self.refuse(entry_point, f" cannot be loaded ({type(exc).__name__}: {text})") from None
        why = self.check(entry_point, loaded)
        if why:
            raise self.refuse(entry_point, why)
        return loaded

    def find(self):
        """{name: object} of every installed entry point of the group, by name (SflnetError if one is refused)."""
        found = {}
        for entry_point in sorted(importlib.metadata.entry_points(group=self.group), key=lambda e: e.name):
            if entry_point.name not in found:   # the same distribution seen twice on sys.path: the first wins
                found[entry_point.name] = self.load(entry_point)
        return found

    def _all(self):
        if self._entries is None and self._error is None:
            try:
                self._entries = {**self.builtin, **self.find()}
            except SflnetError as exc:
                self._error = exc
        if self._error is not None:
            raise SflnetError(str(self._error))
        return self._entries

    def __getitem__(self, name):
        return self._all()[name]

    def __iter__(self):
        return iter(self._all())

    def __len__(self):
        return len(self._all())

    def __contains__(self, name):
        return name in self._all()

    def plugins(self):
        """{name: object} of the loaded plug-ins only."""
        return {name: value for name, value in self._all().items() if name not in self.builtin}

    def forget_plugins(self):
        """Look for the plug-ins again on the next read (after a package was installed or sys.path changed)."""
        self._entries = None
        self._error = None
