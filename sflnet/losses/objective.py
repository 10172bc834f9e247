"""An objective: a weighted sum of loss terms, written as an expression such as ``pl+100*fft``.

Grammar (``--loss``): terms joined by ``+``; each term is ``NAME`` or ``WEIGHT*NAME``,
with NAME one of :func:`sflnet.losses.loss_names` and WEIGHT a finite number ≥ 0
(``1e-3`` and ``1.5E+2`` are numbers, not sums), optionally followed by the loss's
options in parentheses, ``NAME(OPTION=VALUE,OPTION=VALUE)``. Spaces are ignored and
names are case-insensitive (option names are not). Each name may appear once, and at
least one weight must be > 0. Examples: ``pl+sfl`` (the paper's Eq. 7, the default),
``pl``, ``l1``, ``ssim``, ``pl+100*fft``, ``500*ssim+0.00015*stft``,
``pl+0.5*stft(window=8,stride=2,window_fn=rect)``, ``500*ssim+3.5*sfl(weights=100:10:10)``.

An option VALUE is a number, a word, or numbers joined by ``:`` (a list). Here the
options are read as text; :mod:`sflnet.losses.options` types and checks them
against the loss's declared options (:class:`sflnet.losses.base.Option`).

**Canonical text** (:func:`format_terms`): weights of 1 left out (except a lone
``1*sfl``), no spaces, and each term's options in the loss's declaration order,
only those that differ from the loss's defaults, joined by ``,``:
``pl+0.5*stft(window=8,window_fn=rect)``. An expression without options prints as
it always did (``pl+sfl``, ``pl+100*fft+ssim``), and the canonical text reads back
as the same objective.

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
that is not trained is still measured but never backpropagated. A pass may ask for
the objective's own terms only (:attr:`Objective.own_terms`): the VAE's training
steps do, since on 28×28 digits the 27×27 LoG bank alone cost about a sixth of a step.
"""

import math
import re
from dataclasses import dataclass, field

from sflnet.errors import SflnetError
from sflnet.losses.base import number_text

ALWAYS_MEASURED = ("pl", "sfl")
DEFAULT_EXPRESSION = "pl+sfl"
# What --loss meant before expressions (sflnet 0.1): used to read old run folders and checkpoints.
LEGACY_EXPRESSIONS = {"pl": "pl", "sfl": "pl+sfl"}

_NUMBER = r"(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_TERM = re.compile(rf"\s*(?:(?P<weight>{_NUMBER})\s*\*\s*)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*"
                   r"(?:\((?P<options>[^()]*)\)\s*)?")
_OPTION = re.compile(r"\s*(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?P<value>[^\s=,()]+)\s*")


@dataclass(frozen=True)
class Term:
    """One ``WEIGHT*NAME(OPTION=VALUE,...)`` of an expression.

    options: {option name: value}, in the loss's declaration order once typed (text values straight
             from :func:`parse_expression`); a canonical term holds only the values that differ from
             the loss's defaults (see :func:`sflnet.losses.options.resolve`).
    """

    name: str
    weight: float = 1.0
    options: dict = field(default_factory=dict, hash=False)


def value_text(value):
    """The canonical text of an option value: ``8``, ``0.5``, ``rect``, ``100:10:10``, ``true``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return number_text(value)
    if isinstance(value, tuple):
        return ":".join(number_text(v) for v in value)
    return str(value)


def term_text(term):
    """``WEIGHT*NAME(OPTION=VALUE,...)``, weight 1 and empty options left out."""
    text = term.name if term.weight == 1.0 else f"{number_text(term.weight)}*{term.name}"
    if term.options:
        text += "(" + ",".join(f"{key}={value_text(value)}" for key, value in term.options.items()) + ")"
    return text


def format_terms(terms):
    """The canonical expression of a term list: weights of 1 left out, except a lone ``1*sfl``."""
    if len(terms) == 1 and terms[0].name == "sfl" and terms[0].weight == 1.0:
        return "1*" + term_text(terms[0])
    return "+".join(term_text(t) for t in terms)


def _read_options(text, expression, name, option):
    """``"window=8, stride=2"`` → {"window": "8", "stride": "2"} (text values); SflnetError if malformed."""
    values = {}
    if not text.strip():
        return values
    for part in text.split(","):
        match = _OPTION.fullmatch(part)
        if match is None:
            raise SflnetError(f"{option} {expression!r}: cannot read the option {part.strip()!r} of {name!r}; "
                              f"write {name}(OPTION=VALUE,OPTION=VALUE)")
        key = match.group("key")
        if key in values:
            raise SflnetError(f"{option} {expression!r}: the option {key!r} of {name!r} is given twice")
        values[key] = match.group("value")
    return values


def parse_expression(text, names, option="--loss"):
    """``"pl+100*fft"`` → ``(Term("pl", 1.0), Term("fft", 100.0))``; options stay text here.

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
            forms = "NAME, WEIGHT*NAME or NAME(OPTION=VALUE,...)" if "(" in bad or ")" in bad \
                else "NAME or WEIGHT*NAME"
            raise SflnetError(f"{option} {text!r}: cannot read the term {bad!r}; write {forms} "
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
        options = _read_options(match.group("options") or "", text, name, option)
        terms.append(Term(name, weight, options))
        if end == len(text):
            break
        position = end + 1   # past the '+'
    if not any(t.weight > 0 for t in terms):
        raise SflnetError(f"{option} {text!r}: every weight is 0, so nothing would be trained")
    if len(terms) == 1 and terms[0].name == "sfl" and terms[0].weight == 1.0 and match.group("weight") is None:
        raise SflnetError(f"{option} sfl is ambiguous: before sflnet 0.2 it meant the paper's objective, now "
                          f"written pl+sfl; for the SFL term alone write 1*sfl")
    return tuple(terms)


def extra_term_names(terms):
    """The names of the terms that add a history column: every term but :data:`ALWAYS_MEASURED`'s."""
    return tuple(t.name for t in terms if t.name not in ALWAYS_MEASURED)


def extra_column(name):
    """History column of a term that is not one of the paper's: ``E_<NAME>`` (``E_FFT``), unit weight."""
    return f"E_{name.upper()}"


class Objective:
    """``E = Σ_t w_t E_t`` over the terms of an expression (built by :func:`sflnet.losses.make_objective`).

    terms:    tuple of canonical :class:`Term` (typed options, only those that differ from the defaults)
    expression: their canonical text (:func:`format_terms`), e.g. ``pl+sfl`` or ``pl+stft(window=8)``
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

    @property
    def own_terms(self):
        """Names of the expression's own terms (trained or of weight 0), in measuring order: what a
        training step that does not log the paper's columns measures (see :meth:`forward`)."""
        names = {t.name for t in self.terms}
        return tuple(name for name in self.losses if name in names)

    def forward(self, recon, target, batch_count, names=None):
        """Measure the losses on one group: every measured loss, or only ``names`` (e.g. :attr:`own_terms`).
        returns {name: (share (0-d), parts {label: 0-d})}."""
        chosen = self.losses if names is None else names
        return {name: self.losses[name].forward(recon, target, batch_count) for name in chosen}

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
