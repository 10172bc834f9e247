"""What every model shares: the :class:`Model` base class, the :class:`LossResult` of a pass and
the :class:`Hyperparameter` a model declares.

A model (:mod:`sflnet.models.cae`, :mod:`sflnet.models.vae`) holds its parameters in its layers,
exposes them by name (:attr:`Model.params`) and measures a batch with ``loss_and_grads``:
each chunk's losses are added up on the device (:func:`accumulate_measured`), then
:func:`loss_result` brings every scalar (and the training step's health flags) to the host in
one transfer. The losses follow the "share of the batch" convention (:mod:`sflnet.losses`),
so chunking and MPI sum exactly.
"""

import math
from dataclasses import dataclass, field

import numpy as np

from sflnet.backend import get_array_module, to_host


def is_finite_number(value):
    """True for a finite int or float (bool excluded): the check of every numeric option."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_whole_number(value):
    """True for a Python or NumPy integer (bool excluded)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


HYPERPARAMETER_KINDS = ("int", "float", "bool", "choice")


@dataclass(frozen=True)
class Hyperparameter:
    """One setting a model owns (``sflnet train --lr 0.02``), declared in the model's own module.

    name:         the :class:`sflnet.training.config.TrainOptions` attribute and config.json key
                  (``init_std``); the flag is ``--`` + the name with dashes (``--init-std``)
    kind:         "int", "float", "bool" (a ``--name/--no-name`` flag pair) or "choice" (one of
                  :attr:`choices`, strings)
    default:      the model's value when the user gives none
    help:         one line for ``--help`` (the CLI prefixes the names of the models that declare it)
    check:        optional ``check(value) -> None or str``: why a value is not allowed, e.g.
                  ``"must be a finite number > 0"`` (the error reads ``--lr must be ..., got 0``)
    default_help: what ``--help`` shows as the default instead of the value, e.g. ``"all 4000"``
    choices:      the allowed values of a "choice" (checked before :attr:`check`)
    added_later:  True for an option added after the model's first files were written: a file without
                  it reads as :attr:`default` (which must then be the behaviour before the option existed)

    An option is "unset" (None) in the runs of the models that do not declare it.
    """

    name: str
    kind: str
    default: object
    help: str
    check: object = None
    default_help: str = None
    choices: tuple = ()
    added_later: bool = False

    @property
    def flag(self):
        """The command-line flag: ``--init-std`` for ``init_std``."""
        return "--" + self.name.replace("_", "-")

    def problem(self, value):
        """The one-line error for a bad ``value`` of this option, or None."""
        if self.kind == "choice" and value not in self.choices:
            return f"{self.flag} must be one of {', '.join(self.choices)}, got {value!r}"
        why = self.check(value) if self.check is not None else None
        return None if why is None else f"{self.flag} {why}, got {value!r}"


def number_above(low, inclusive=False):
    """A :attr:`Hyperparameter.check`: a finite number > ``low`` (>= with ``inclusive``)."""
    def check(value):
        if is_finite_number(value) and (value >= low if inclusive else value > low):
            return None
        return f"must be a finite number {'>=' if inclusive else '>'} {low:g}"
    return check


def whole_number_from(low):
    """A :attr:`Hyperparameter.check`: a whole number >= ``low``."""
    def check(value):
        return None if is_whole_number(value) and value >= low else f"must be a whole number >= {low:g}"
    return check


@dataclass
class LossResult:
    """What one pass over a batch measured (all floats on the host), as named terms and parts.

    E:      the objective, ``Σ_t w_t E_t`` over the terms of its expression (plus a model's own
            energy, the VAE's β·KL)
    terms:  {loss name: unit-weight value E_t} for every measured loss (``pl``, ``sfl``, the objective's
            and the model's own, e.g. ``kl``)
    parts:  {label: value} of the parts the losses log (``sfl_0.8`` …), in the order they logged them
    grads:  {name: array (param shape, device, dtype)} = ∂E/∂θ, or None if not computed
    flags:  {name: bool} the device checks a ``then`` callback of ``loss_and_grads`` returned
            (e.g. ``params_finite``), brought to the host with the scalars; empty without one

    The paper's own columns are read from these (every objective measures ``pl`` and ``sfl``):
    :attr:`E_PL` (Eq. 4), :attr:`E_SFL` (Eq. 6 with the configured subband weights) and :attr:`sfl`
    (the unit-weight subband SFLs, one per σ).
    """

    E: float
    terms: dict
    parts: dict
    grads: dict = None
    flags: dict = field(default_factory=dict)

    @property
    def E_PL(self):
        return self.terms["pl"]

    @property
    def E_SFL(self):
        return self.terms["sfl"]

    @property
    def sfl(self):
        """(S,) float64: the ``sfl_<σ>`` parts, in the SFL's σ order."""
        return np.array([v for k, v in self.parts.items() if k.startswith("sfl_")], dtype=np.float64)


class Model:
    """Base of the models: the parameter checks, and the chunked loss-and-gradients loop.

    PARAM_SHAPES: {name: shape} of the model's parameters, in the model's order (set by each model).

    A subclass sets ``xp``, ``dtype``, ``objective`` and ``params`` ({name: live array}) in its
    ``__init__`` and implements the four hooks :meth:`loss_and_grads` calls:

    * ``chunks(batch, batch_count, positions) -> (N_m, iterable of chunks)``: the batch cut into the
      pieces one forward pass takes (checked on the way), and N_m, the images of the whole step;
    * ``measure(chunk, batch_count, names=None) -> {name: (share, parts)}``: a forward pass of one chunk,
      measured by every loss (the objective's, or only ``names`` of them, plus the model's own such
      as the VAE's KL);
    * ``backward_measured()``: backpropagate the last measured chunk, filling the layers' grads;
    * ``layer_grads() -> {name: array}``: the layers' parameter gradients of the last backward.

    ``extra_energy(terms) -> float`` (optional) adds a model's own energy to E (the VAE's β·KL).
    """

    PARAM_SHAPES = {}
    extra_energy = None
    #: Whether a training step measures the paper's columns (``pl``, ``sfl``) when its objective does
    #: not train them: True for the CAE (the paper's figures), False for the VAE (whose small steps
    #: would spend a sixth of their time on them; its history leaves them ``nan``).
    TRAINING_MEASURES_PAPER_TERMS = True

    def loss_and_grads(self, batch, compute_grads=True, then=None, batch_count=None, reduce=None,
                       positions=None, paper_terms=True):
        """The objective E over a whole batch, and ∂E/∂θ if ``compute_grads``.

        batch: the model's images (see its :meth:`chunks`); N_m is the number of images, or
        ``batch_count`` when given (data parallel: this process holds only its share of a step of
        ``batch_count`` images, at ``positions`` within it).
        then: optional callback ``then(grads) -> {name: device bool}`` run before the scalars are
        transferred (see :func:`loss_result`; a training step updates the parameters there).
        reduce: optional sum over processes of the gradients and loss totals (see :func:`loss_result`).
        paper_terms: measure every loss of the objective (True), or only its own terms (False: the
        losses of :data:`sflnet.losses.ALWAYS_MEASURED` that it does not train are then absent from
        the result's terms and parts).
        returns :class:`LossResult`; ``grads`` holds the full-batch gradient, the mean over images of
        each image's gradient.

        Every measured loss returns its share per chunk; the shares are summed on the device in
        chunk order, and all the scalars come to the host in one transfer.
        """
        xp = self.xp
        batch_count, chunks = self.chunks(batch, batch_count, positions)
        totals, part_totals = {}, {}
        grads = {n: xp.zeros_like(p) for n, p in self.params.items()} if compute_grads else None
        names = None if paper_terms else self.objective.own_terms
        self.objective.begin_batch()
        for chunk in chunks:
            # a model written before ``names`` existed (a plug-in) takes two arguments: it is asked for everything
            measured = self.measure(chunk, batch_count) if names is None else self.measure(chunk, batch_count, names)
            accumulate_measured(measured, totals, part_totals, xp, self.dtype)
            if not compute_grads:
                continue
            self.backward_measured()
            for name, g in self.layer_grads().items():
                grads[name] += g
        return loss_result(self.objective, totals, part_totals, grads, xp, extra_energy=self.extra_energy,
                           then=then, reduce=reduce)

    @classmethod
    def check_params(cls, params):
        """Check ``params`` {name: array} against :attr:`PARAM_SHAPES`: every name present, every shape
        right, one dtype. returns (dtype, xp), the parameters' dtype and array module; ValueError otherwise."""
        missing = [n for n in cls.PARAM_SHAPES if n not in params]
        if missing:
            raise ValueError(f"missing parameters: {', '.join(missing)}")
        for name, shape in cls.PARAM_SHAPES.items():
            if tuple(params[name].shape) != tuple(shape):
                raise ValueError(f"parameter {name} has shape {tuple(params[name].shape)}, expected {tuple(shape)}")
        dtypes = {params[n].dtype for n in cls.PARAM_SHAPES}
        if len(dtypes) != 1:
            raise ValueError(f"parameters mix dtypes {sorted(str(d) for d in dtypes)}")
        first = next(iter(cls.PARAM_SHAPES))
        return dtypes.pop(), get_array_module(params[first])


def _accumulate(totals, key, value, xp, dtype):
    """``totals[key] += value`` on the device, starting from a 0-d zero of ``dtype``."""
    if key not in totals:
        totals[key] = xp.zeros((), dtype=dtype)
    totals[key] += value


def accumulate_measured(measured, totals, part_totals, xp, dtype):
    """Add one chunk's ``{name: (share, parts)}`` (an :meth:`Objective.forward` result) to the batch totals."""
    for name, (value, parts) in measured.items():
        _accumulate(totals, name, value, xp, dtype)
        for label, part in parts.items():
            _accumulate(part_totals, label, part, xp, dtype)


def loss_result(objective, totals, part_totals, grads, xp, extra_energy=None, then=None, reduce=None):
    """The :class:`LossResult` of a batch from its device totals, with all the scalars brought to the host
    in one transfer. ``E = objective.combine(terms)``, plus ``extra_energy(terms)`` if given (the VAE's β·KL).

    then: optional ``then(grads) -> {name: device 0-d bool}``, called before the transfer (a training
    step applies its update there and returns its health checks); the flags travel in the same
    transfer as the losses and come back as ``LossResult.flags``. So a training step costs one
    device→host synchronisation, not one per scalar and per check.

    reduce: optional ``reduce(arrays) -> arrays``, the sum over the MPI ranks of data-parallel
    training (:meth:`sflnet.training.distributed.World.allreduce_sum`): it is applied to every gradient and
    every loss total in one call, before ``then``, so each rank then holds the full batch's values.
    """
    names, labels = list(totals), list(part_totals)
    if reduce is not None:
        grad_names = list(grads) if grads is not None else []
        summed = reduce([grads[n] for n in grad_names] + [totals[n] for n in names]
                        + [part_totals[k] for k in labels])
        if grads is not None:
            grads = dict(zip(grad_names, summed[:len(grad_names)]))
        totals = dict(zip(names, summed[len(grad_names):len(grad_names) + len(names)]))
        part_totals = dict(zip(labels, summed[len(grad_names) + len(names):]))
    flags = then(grads) if then is not None else {}
    flag_names = list(flags)
    dtype = totals[names[0]].dtype
    values = ([totals[n] for n in names] + [part_totals[k] for k in labels]
              + [flags[f].astype(dtype) for f in flag_names])
    host = to_host(xp.stack(values)).astype(np.float64)
    terms = {n: float(v) for n, v in zip(names, host[:len(names)])}
    parts = {k: float(v) for k, v in zip(labels, host[len(names):len(names) + len(labels)])}
    flag_values = {f: bool(v != 0) for f, v in zip(flag_names, host[len(names) + len(labels):])}
    energy = objective.combine(terms)
    if extra_energy is not None:
        energy += extra_energy(terms)
    return LossResult(E=energy, terms=terms, parts=parts, grads=grads, flags=flag_values)
