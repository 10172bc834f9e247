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

**Options.** A loss declares what a user may set in its class attribute
:attr:`Loss.options`, a tuple of :class:`Option` (name, type, default, one line
of help, the check). A ``--loss`` expression sets them inline:
``pl+0.5*stft(window=8,stride=2,window_fn=rect)``. A loss that declares none
(``options = None``, the default, as in a plug-in) has its ``__init__`` keyword
arguments as its options, typed by their defaults (:func:`sflnet.losses.options.options_of`).
:meth:`Loss.create` builds the loss from its option values and the model's
:class:`LossSettings` (the pixel loss's channel weights and SSIM's value range
come from the model, not from the user).
"""

import math
import re
from dataclasses import dataclass

from sflnet.ops.filters import PAPER_SIGMAS

PAPER_SFL_WEIGHTS = (100.0, 10.0, 10.0)   # the SFL's subband weights (paper Sec. 4), the one place they are written

OPTION_KINDS = ("int", "float", "floats", "str", "bool")


def number_text(value):
    """Shortest exact text of a float: ``100``, ``0.00015``, ``1e-05`` (``repr`` without a trailing ``.0``)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


@dataclass(frozen=True)
class Option:
    """One setting of a loss, as written inline in a ``--loss`` expression (``window=8``).

    name:    the option's name in expressions (``window``), a Python identifier
    kind:    "int", "float", "floats" (colon-separated, ``100:10:10``, a tuple), "str" or "bool" (true/false)
    default: the value used when neither the expression nor an alias flag sets it
    help:    one line for ``--help``
    check:   optional ``check(value) -> None or str``: why a well-typed value is out of range
    choices: the allowed values of a "str" option (empty: any text)
    alias:   the :class:`LossSettings` field (and ``sflnet train`` flag, ``--`` + dashes) that sets the
             option too when the expression does not, e.g. ``stft_window`` (``--stft-window``)
    """

    name: str
    kind: str
    default: object
    help: str
    check: object = None
    choices: tuple = ()
    alias: str = None

    def read(self, text):
        """The value of the option's text in an expression: ``"8"`` → 8, ``"100:10:10"`` → (100.0, 10.0, 10.0).

        Raises ValueError with the reason (one line) if the text is not of the option's type.
        """
        if self.kind == "int":
            if not re.fullmatch(r"[-+]?\d+", text):
                raise ValueError("expected a whole number")
            return int(text)
        if self.kind == "float":
            return _read_float(text)
        if self.kind == "floats":
            try:
                return tuple(_read_float(part) for part in text.split(":"))
            except ValueError:
                raise ValueError("expected finite numbers joined by ':'") from None
        if self.kind == "bool":
            if text.lower() not in ("true", "false"):
                raise ValueError("expected true or false")
            return text.lower() == "true"
        return text

    def problem(self, value):
        """Why a typed value is not allowed (wrong choice, out of range), or None."""
        if self.choices and value not in self.choices:
            return f"must be one of {', '.join(self.choices)}"
        return self.check(value) if self.check is not None else None

    def text(self, value):
        """The canonical text of a value: the inverse of :meth:`read` (``(100.0, 10.0)`` → ``"100:10"``)."""
        if self.kind == "float":
            return number_text(value)
        if self.kind == "floats":
            return ":".join(number_text(v) for v in value)
        if self.kind == "bool":
            return "true" if value else "false"
        return str(value)

    def same(self, a, b):
        """Whether two values of this option are equal (numbers compared as floats, lists element-wise)."""
        if self.kind == "floats":
            return len(a) == len(b) and all(float(x) == float(y) for x, y in zip(a, b))
        if self.kind in ("int", "float"):
            return float(a) == float(b)
        return a == b


def _read_float(text):
    """A finite number (ValueError otherwise)."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a finite number") from None
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def at_least(low, integer=False):
    """A check: the value is ≥ ``low``."""
    def check(value):
        return None if value >= low else f"must be {'a whole number ' if integer else ''}>= {low:g}"
    return check


@dataclass(frozen=True)
class LossSettings:
    """What the model gives its losses, and the values of the alias flags of the losses' options.

    pl_weights and value_range come from the model; the others are the values of the
    ``sflnet train`` flags that alias an :class:`Option` (its :attr:`Option.alias`), used when a
    ``--loss`` expression does not set the option inline (:func:`sflnet.losses.resolve`).

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

    sigmas: tuple = PAPER_SIGMAS
    sfl_weights: tuple = PAPER_SFL_WEIGHTS
    pl_weights: tuple = (1.0, 1.0, 1.0)
    value_range: tuple = (-1.0, 1.0)
    stft_window: int = 16
    stft_stride: int = 4
    stft_window_fn: str = "hann"
    stft_phase_weight: float = 9.0


class Loss:
    """Defaults of the protocol above. Subclasses set :attr:`name` and implement forward/backward."""

    name = None      # the registry name, as written in a --loss expression
    summary = None   # one line for --help (default: the first line of the class docstring)
    options = None   # tuple of Option; None: the __init__ keyword arguments (see the module docstring)

    @classmethod
    def create(cls, settings, **values):
        """The loss built from its option values ``{option name: value}`` and the model's :class:`LossSettings`.

        Default: ``cls(**values)``; a loss that needs something of the model (channel weights,
        value range) overrides this.
        """
        del settings
        return cls(**values)

    @classmethod
    def options_problem(cls, values):
        """Why a combination of valid option values does not go together (one line), or None."""
        del values
        return None

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
