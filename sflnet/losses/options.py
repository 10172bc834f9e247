"""The options of the losses: what each loss declares, how a ``--loss`` expression sets them, and their aliases.

Every loss has a tuple of :class:`~sflnet.losses.base.Option` (:func:`options_of`):
the ones its class declares in ``options``, or, for a loss that declares none (a
plug-in), its ``__init__`` keyword arguments typed by their defaults (a bool is a
"bool", an int an "int", a float a "float", a str a "str", a tuple or list of
numbers a "floats").

An expression sets them inline, ``pl+0.5*stft(window=8,stride=2,window_fn=rect)``.
The flags of ``sflnet train`` that predate inline options (``--sigmas``,
``--sfl-weights``, ``--stft-window``, ``--stft-stride``, ``--stft-window-fn``,
``--stft-phase-weight``) are **aliases**: each is the :attr:`Option.alias` field
of :class:`~sflnet.losses.base.LossSettings` of one option, and sets it whenever
the expression does not. :func:`resolve` folds the two into one objective:

* an option set inline takes its inline value; an alias flag that was changed from
  its default and gives another value is an error (one line, naming both);
* else the alias's value (the flag's, default or not), else the option's default.

The canonical text of the resolved objective lists each term's options that differ
from the defaults, in declaration order; with no inline options and default flags
it is exactly today's text (``pl+sfl``), so run folders written before options
existed compare equal on resume.
"""

import inspect
from dataclasses import dataclass

from sflnet.errors import SflnetError
from sflnet.losses.base import LossSettings, Option
from sflnet.losses.objective import Term, format_terms, parse_expression
from sflnet.losses.registry import BUILTIN, LOSSES, loss_names

_MISSING = object()
_DECLARED = {}   # loss class → its options (classes are never changed once loaded)


def _inferred_kind(default):
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    if isinstance(default, str):
        return "str"
    if isinstance(default, (tuple, list)) and default and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in default):
        return "floats"
    return None


def inferred_options(cls, name):
    """The options of a loss that declares none: its ``__init__`` keyword arguments with their defaults.

    SflnetError (naming the loss) for an argument without a default or with a default of no option type.
    """
    found = []
    for parameter in list(inspect.signature(cls.__init__).parameters.values())[1:]:   # after self
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if parameter.default is parameter.empty:
            raise SflnetError(f"the loss {name!r} ({cls.__name__}) cannot be built: its __init__ argument "
                              f"{parameter.name!r} has no default (declare the loss's options)")
        kind = _inferred_kind(parameter.default)
        if kind is None:
            raise SflnetError(f"the loss {name!r} ({cls.__name__}): the default {parameter.default!r} of its "
                              f"__init__ argument {parameter.name!r} is not a number, text, true/false or a "
                              f"list of numbers (declare the loss's options)")
        default = tuple(float(v) for v in parameter.default) if kind == "floats" else parameter.default
        found.append(Option(parameter.name, kind, default, f"{kind} (an __init__ argument of {cls.__name__})"))
    return tuple(found)


def class_options(cls, name):
    """The options of the loss class ``cls`` (registered as ``name``): a tuple of :class:`Option`."""
    if cls not in _DECLARED:
        _DECLARED[cls] = tuple(cls.options) if cls.options is not None else inferred_options(cls, name)
    return _DECLARED[cls]


def options_of(name):
    """The options of the loss called ``name`` in the registry: a tuple of :class:`Option`."""
    return class_options(LOSSES[name], name)


def _typed(term, text, option):
    """The canonical :class:`Term` of a term whose options are text: typed, checked, declaration order,
    defaults left out. SflnetError naming the loss and the option."""
    declared = {o.name: o for o in options_of(term.name)}
    values = {}
    for key, raw in term.options.items():
        if key not in declared:
            have = (f"its options are {', '.join(declared)}" if declared else "it has no options")
            raise SflnetError(f"{option} {text!r}: the {term.name} loss has no option {key!r}; {have}")
        spec = declared[key]
        try:
            value = spec.read(raw)
        except ValueError as exc:
            raise SflnetError(f"{option} {text!r}: {term.name} option {key}={raw}: {exc}") from None
        problem = spec.problem(value)
        if problem:
            raise SflnetError(f"{option} {text!r}: {term.name} option {key}={raw}: {problem}")
        values[key] = value
    return Term(term.name, term.weight, {o.name: values[o.name] for o in declared.values()
                                         if o.name in values and not o.same(values[o.name], o.default)})


def parse(text, option="--loss"):
    """The canonical terms of a ``--loss`` expression: options typed, checked, defaults left out.

    Raises :class:`SflnetError` with one line naming the bad part (the loss and the option for a bad option).
    """
    return tuple(_typed(term, text, option) for term in parse_expression(text, loss_names(), option))


def canonical(text, option="--loss"):
    """The canonical form of a ``--loss`` expression: ``"PL + 1*SFL"`` → ``"pl+sfl"``,
    ``"pl+stft( window=8, stride=4 )"`` → ``"pl+stft(window=8)"`` (4 is the default stride)."""
    return format_terms(parse(text, option))


@dataclass(frozen=True)
class Resolved:
    """An expression with its options resolved against the alias flags (see :func:`resolve`).

    expression: the canonical text of the expression as written (its inline options only)
    objective:  the canonical text of what is computed: aliases folded in, e.g. ``pl+stft(window=8)``
                for ``--loss pl+stft --stft-window 8``
    terms:      the canonical :class:`Term` of :attr:`objective` (options that differ from the defaults)
    values:     {loss name: {option: value}} every option of every term, defaults included
    aliases:    {LossSettings field: value} the aliased options of the terms, as resolved (the inline
                value where the expression sets one): the values the alias flags stand for
    """

    expression: str
    objective: str
    terms: tuple
    values: dict
    aliases: dict


def _alias_flag(alias):
    return "--" + alias.replace("_", "-")


def resolve(expression, settings=LossSettings(), option="--loss", strict=True):
    """Fold an expression's inline options and the alias values of ``settings`` into one objective.

    expression: a ``--loss`` text or a tuple of (canonical) :class:`Term`
    settings:   the :class:`LossSettings` holding the alias values (``stft_window``, ``sigmas`` …)
    strict:     True (training): an option set inline and by an alias that differs from its default and
                from the inline value is a SflnetError; False: the inline value wins (``evaluate`` with
                a checkpoint's settings)
    returns     :class:`Resolved`
    """
    terms = parse(expression, option) if isinstance(expression, str) else tuple(expression)
    text = expression if isinstance(expression, str) else format_terms(terms)
    resolved, values, aliases = [], {}, {}
    for term in terms:
        full = {}
        for spec in options_of(term.name):
            inline = term.options.get(spec.name, _MISSING)
            value = spec.default if inline is _MISSING else inline
            if spec.alias is not None:
                flag = getattr(settings, spec.alias)
                if inline is _MISSING:
                    value = flag
                    why = None if spec.same(flag, spec.default) else spec.problem(flag)
                    if why:   # the alias flag gets the option's own check (--stft-window 1)
                        raise SflnetError(f"{_alias_flag(spec.alias)} {why}, got {flag!r} "
                                          f"(the {term.name} option {spec.name})")
                elif strict and not spec.same(flag, spec.default) and not spec.same(flag, inline):
                    raise SflnetError(f"{option} {text!r}: {term.name} option {spec.name}={spec.text(inline)} "
                                      f"but {_alias_flag(spec.alias)} {spec.text(flag)}; give it once")
                aliases[spec.alias] = value
            full[spec.name] = value
        problem = LOSSES[term.name].options_problem(full)
        if problem:
            raise SflnetError(f"{option} {text!r}: {term.name} options: {problem}")
        values[term.name] = full
        changed = {o.name: full[o.name] for o in options_of(term.name) if not o.same(full[o.name], o.default)}
        resolved.append(Term(term.name, term.weight, changed))
    return Resolved(expression=format_terms(terms), objective=format_terms(resolved), terms=tuple(resolved),
                    values=values, aliases=aliases)


def option_values(name, settings=LossSettings(), inline=None):
    """Every option of the loss ``name``: ``inline`` values, else the aliases' in ``settings``, else defaults."""
    inline = inline or {}
    out = {}
    for spec in options_of(name):
        if spec.name in inline:
            out[spec.name] = inline[spec.name]
        elif spec.alias is not None:
            out[spec.name] = getattr(settings, spec.alias)
        else:
            out[spec.name] = spec.default
    return out


def summary_of(cls):
    """One line describing a loss class: its ``summary``, else the first line of its docstring."""
    if cls.summary:
        return cls.summary
    lines = (cls.__doc__ or "").strip().splitlines()
    return lines[0].strip() if lines else cls.__name__


def help_rows():
    """Rows ``(term, description)`` for ``--help``: each loss, then each of its options (``window=16``).

    A refused plug-in does not break the help: the built-ins are listed and the refusal is the last row.
    """
    try:
        classes, problem = dict(LOSSES), None
    except SflnetError as exc:
        classes, problem = dict(BUILTIN), str(exc)
    rows = []
    for name, cls in classes.items():
        rows.append((name, summary_of(cls) + ("" if name in BUILTIN else " (plug-in)")))
        try:
            specs = class_options(cls, name)
        except SflnetError as exc:
            rows.append(("", str(exc)))
            continue
        for spec in specs:
            alias = f" (also {_alias_flag(spec.alias)})" if spec.alias else ""
            choices = f" [{'|'.join(spec.choices)}]" if spec.choices else ""
            rows.append((f"  {spec.name}={spec.text(spec.default)}", f"{spec.help}{choices}{alias}"))
    if problem:
        rows.append(("(error)", problem))
    return rows
