"""An objective: a weighted sum of loss terms, written as an expression such as ``pl+100*fft``.

Grammar (``--loss``): terms joined by ``+``; each term is ``NAME`` or ``WEIGHT*NAME``,
with NAME one of :data:`sflnet.losses.LOSS_NAMES` and WEIGHT a finite number ≥ 0
(``1e-3`` and ``1.5E+2`` are numbers, not sums). Spaces are ignored and names
are case-insensitive. Each name may appear once, and at least one weight must
be > 0. Examples: ``pl+sfl`` (the paper's Eq. 7, the default), ``pl``, ``l1``,
``ssim``, ``pl+100*fft``, ``500*ssim+0.00015*stft``.

``sfl`` alone is refused: before sflnet 0.2 ``--loss sfl`` meant the paper's
objective ``pl+sfl``, so a bare ``sfl`` would silently change meaning. The SFL
term alone is written ``1*sfl``.

Value and gradient, with terms t and weights w_t:

``E = Σ_t w_t · E_t`` and ``∂E/∂f^L = Σ_t w_t · ∂E_t/∂f^L``

Every term's E_t is a mean over the batch of a per-image value (see
:mod:`sflnet.losses.base`). The sums run in the order the terms are written;
a weight of exactly 1 is not multiplied, so ``pl+sfl`` gives bit for bit the
numbers of the pre-0.2 ``--loss sfl`` (``E_PL + E_SFL``).

**Measured terms.** Besides the objective's own terms, :data:`ALWAYS_MEASURED`
(``pl`` and ``sfl``) are measured in every pass, because every history keeps
the paper's columns ``E_PL, E_SFL, sfl_<σ>``; as in the paper's PL runs, a term
that is not trained is still measured but never backpropagated.
"""

import math
import re
from dataclasses import dataclass

from sflnet.errors import SflnetError

ALWAYS_MEASURED = ("pl", "sfl")
DEFAULT_EXPRESSION = "pl+sfl"
# What --loss meant before expressions (sflnet 0.1): used to read old run folders and checkpoints.
LEGACY_EXPRESSIONS = {"pl": "pl", "sfl": "pl+sfl"}

_NUMBER = r"(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_TERM = re.compile(rf"\s*(?:(?P<weight>{_NUMBER})\s*\*\s*)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*")


@dataclass(frozen=True)
class Term:
    """One ``WEIGHT*NAME`` of an expression."""

    name: str
    weight: float = 1.0


def _weight_text(weight):
    """Shortest exact text of a weight: ``100``, ``0.00015``, ``1e-05``."""
    text = repr(float(weight))
    return text[:-2] if text.endswith(".0") else text


def format_terms(terms):
    """The canonical expression of a term list: weights of 1 left out, except a lone ``1*sfl``."""
    if len(terms) == 1 and terms[0].name == "sfl" and terms[0].weight == 1.0:
        return "1*sfl"
    return "+".join(t.name if t.weight == 1.0 else f"{_weight_text(t.weight)}*{t.name}" for t in terms)


def parse_expression(text, names, option="--loss"):
    """``"pl+100*fft"`` → ``(Term("pl", 1.0), Term("fft", 100.0))``.

    names: the known loss names. Raises :class:`SflnetError` with one line that
    names the bad part of the expression.
    """
    if not isinstance(text, str) or not text.strip():
        raise SflnetError(f"{option} is empty; give terms joined by '+', e.g. pl+sfl or pl+100*fft")
    terms, position, seen = [], 0, set()
    while True:
        match = _TERM.match(text, position)
        end = match.end() if match else position
        if match is None or (end < len(text) and text[end] != "+"):
            stop = text.find("+", end)
            bad = text[position:stop if stop >= 0 else len(text)].strip() or text[position:].strip() or "(nothing)"
            raise SflnetError(f"{option} {text!r}: cannot read the term {bad!r}; write NAME or WEIGHT*NAME "
                              f"with NAME one of {', '.join(names)}")
        name = match.group("name").lower()
        if name not in names:
            raise SflnetError(f"{option} {text!r}: unknown loss {match.group('name')!r}; "
                              f"choose from {', '.join(names)}")
        if name in seen:
            raise SflnetError(f"{option} {text!r}: the term {name!r} appears twice; give each loss once")
        seen.add(name)
        weight = float(match.group("weight")) if match.group("weight") is not None else 1.0
        if not math.isfinite(weight):
            raise SflnetError(f"{option} {text!r}: the weight of {name!r} is not a finite number")
        terms.append(Term(name, weight))
        if end == len(text):
            break
        position = end + 1   # past the '+'
    if not any(t.weight > 0 for t in terms):
        raise SflnetError(f"{option} {text!r}: every weight is 0, so nothing would be trained")
    if len(terms) == 1 and terms[0].name == "sfl" and terms[0].weight == 1.0 and match.group("weight") is None:
        raise SflnetError(f"{option} sfl is ambiguous: before sflnet 0.2 it meant the paper's objective, now "
                          f"written pl+sfl; for the SFL term alone write 1*sfl")
    return tuple(terms)


def canonical_expression(text, names):
    """The canonical form of an expression (SflnetError if it is malformed)."""
    return format_terms(parse_expression(text, names))


def extra_term_names(terms):
    """The names of the terms that add a history column: every term but :data:`ALWAYS_MEASURED`'s."""
    return tuple(t.name for t in terms if t.name not in ALWAYS_MEASURED)


def extra_column(name):
    """History column of a term that is not one of the paper's: ``E_<NAME>`` (``E_FFT``), unit weight."""
    return f"E_{name.upper()}"


class Objective:
    """``E = Σ_t w_t E_t`` over the terms of an expression, with every term built from ``settings``.

    terms:    tuple of :class:`Term` (see :func:`parse_expression`)
    losses:   {name: loss object} for every *measured* name: :data:`ALWAYS_MEASURED` first, then the
              objective's other terms in expression order
    trained:  the terms with a weight > 0 (the only ones backpropagated)

    Used once per group of same-sized images (or chunk of one): :meth:`forward`
    measures every loss, :meth:`backward` returns ``Σ_t w_t ∂E_t/∂f^L`` for that group.
    """

    def __init__(self, terms, losses):
        """terms: tuple of Term; losses: {name: loss} holding at least every term's and ALWAYS_MEASURED's name."""
        self.terms = tuple(terms)
        self.expression = format_terms(self.terms)
        self.losses = losses
        self.trained = tuple(t for t in self.terms if t.weight > 0)

    @property
    def measured(self):
        """Names of the measured losses, in measuring order."""
        return tuple(self.losses)

    @property
    def extra_terms(self):
        """The objective's terms that are not among the paper's columns (each adds a history column)."""
        return extra_term_names(self.terms)

    def size_problem(self, height, width):
        """Why an image of ``height × width`` cannot be measured by some loss, or None."""
        for loss in self.losses.values():
            problem = loss.size_problem(height, width)
            if problem:
                return problem
        return None

    def begin_batch(self):
        for loss in self.losses.values():
            loss.begin_batch()

    def forward(self, recon, target, batch_count):
        """Measure every loss on one group. returns {name: (share (0-d), parts {label: 0-d})}."""
        return {name: loss.forward(recon, target, batch_count) for name, loss in self.losses.items()}

    def backward(self):
        """``Σ_t w_t ∂E_t/∂f^L`` over the trained terms, for the last :meth:`forward`: (n, C, H, W)."""
        total = None
        for term in self.trained:
            g = self.losses[term.name].backward()
            if term.weight != 1.0:
                g = g * term.weight
            total = g if total is None else total + g
        return total

    def combine(self, values):
        """E from the terms' values ``{name: float}``, summed in expression order (Python floats)."""
        total = 0.0
        for term in self.terms:
            value = values[term.name]
            total += value if term.weight == 1.0 else term.weight * value
        return total
