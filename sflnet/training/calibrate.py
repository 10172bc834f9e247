"""How big each term of an objective is, and which weights balance the terms (``sflnet calibrate``).

For every term t of an expression ``Σ_t w_t E_t`` and one set of parameters θ (a checkpoint's, or
the initial weights ``sflnet train`` starts from), on one data set (full batch):

* ``value``: E_t at weight 1, the number ``sflnet evaluate --loss 1*NAME`` reports;
* ``grad_norm``: ``‖∂E_t/∂θ‖``, the Euclidean norm over every trainable parameter, from the model's
  own backward (:meth:`sflnet.models.base.Model.loss_and_grads` of the objective ``1*NAME``);
* ``output_grad_norm``: ``‖∂E_t/∂f^L‖``, the norm of the term's gradient with respect to the
  reconstructions (the loss's own backward over every chunk of the batch).

From these, :func:`balanced_weights` proposes weights that make every weighted term equal to the
reference term's (the first by default), by one of two rules:

* ``value``: ``w_t = w_ref · E_ref / E_t``, so every ``w_t E_t`` equals ``w_ref E_ref``;
* ``gradient``: ``w_t = w_ref · ‖∂E_ref/∂θ‖ / ‖∂E_t/∂θ‖``, so every ``‖∂(w_t E_t)/∂θ‖`` is equal.

The reference keeps its weight in the expression (1 if it is 0). Weights are rounded to
:data:`SIGNIFICANT_DIGITS` significant digits, so the balanced expression reads back as written.

A model's own energy (the vae's β·KL) is not a term of the expression: it is left out of every
term's gradient (β is set to 0 in the per-term models).
"""

import math
from dataclasses import dataclass

import numpy as np

from sflnet.backend import to_device, to_host
from sflnet.errors import SflnetError
from sflnet.losses import Term, format_terms, make_objective
from sflnet.training.data import load_training_data

RULES = ("value", "gradient")
SIGNIFICANT_DIGITS = 6


@dataclass(frozen=True)
class TermCalibration:
    """One term's sizes at unit weight.

    term:       the term of the expression (:class:`sflnet.losses.Term`, canonical options)
    expression: the term alone at weight 1 (``1*fft``, ``stft(window=8)``), as ``--loss`` reads it
    value:      E_t
    grad_norm:  ‖∂E_t/∂θ‖ over every trainable parameter
    output_grad_norm: ‖∂E_t/∂f^L‖ over every reconstruction of the batch
    """

    term: Term
    expression: str
    value: float
    grad_norm: float
    output_grad_norm: float

    @property
    def name(self):
        return self.term.name


@dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate` measured: the canonical expression and its terms, in expression order."""

    expression: str
    terms: tuple

    def term(self, name):
        """The :class:`TermCalibration` of ``name``; SflnetError naming the terms if there is none."""
        for entry in self.terms:
            if entry.name == name:
                return entry
        raise SflnetError(f"--reference {name!r} is not a term of {self.expression}; choose one of "
                          f"{', '.join(t.name for t in self.terms)}")

    def to_json(self):
        """{NAME: {"value", "grad_norm", "output_grad_norm"}} in expression order."""
        return {t.name: {"value": t.value, "grad_norm": t.grad_norm, "output_grad_norm": t.output_grad_norm}
                for t in self.terms}


def single_term(term):
    """The expression of ``term`` alone at weight 1, its options kept: ``1*sfl``, ``fft``, ``stft(window=8)``."""
    return format_terms([Term(term.name, 1.0, term.options)])


def model_builder(spec, params, settings, options):
    """``build(expression) -> model``: the model of ``spec`` with ``params`` (held, not copied), the loss
    settings and the run's options, for any objective expression."""
    def build(expression):
        return spec.build(params, expression, settings, options)
    return build


def _squared_norm(arrays, xp):
    """Σ of every element squared, in float64, as a Python float (one transfer)."""
    total = xp.zeros((), dtype=np.float64)
    for array in arrays:
        total += (array.astype(np.float64) ** 2).sum()
    return float(to_host(total))


def output_gradient_norm(model, images):
    """‖∂E/∂f^L‖ of the model's objective on a batch: the objective's backward of every chunk, through
    the model's own hooks (:meth:`sflnet.models.base.Model.chunks` and ``measure``); no layer is walked back."""
    xp = model.xp
    batch_count, chunks = model.chunks(images, None, None)
    model.objective.begin_batch()
    total = 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        for chunk in chunks:
            model.measure(chunk, batch_count)
            total += _squared_norm([model.objective.backward()], xp)
    return math.sqrt(total)


def calibrate_term(build, term, images):
    """The :class:`TermCalibration` of one term: the model of the term alone, one full-batch pass with
    gradients and one for the output gradient."""
    expression = single_term(term)
    model = build(expression)
    if getattr(model, "extra_energy", None) is not None and hasattr(model, "beta"):
        model.beta = 0.0   # the model's own energy (the vae's β·KL) is not the term's
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        result = model.loss_and_grads(images, compute_grads=True)
    grad_norm = math.sqrt(_squared_norm(result.grads.values(), model.xp))
    return TermCalibration(term=term, expression=expression, value=result.terms[term.name],
                           grad_norm=grad_norm, output_grad_norm=output_gradient_norm(model, images))


def calibrate(build, expression, images):
    """The :class:`Calibration` of every term of ``expression`` on ``images`` (device arrays, one batch).

    build: ``build(expression) -> model`` (:func:`model_builder`), so every term is measured on the same
    parameters, loss settings and model.
    """
    objective = build(expression).objective
    return Calibration(objective.expression, tuple(calibrate_term(build, t, images) for t in objective.terms))


def rounded(weight):
    """``weight`` to :data:`SIGNIFICANT_DIGITS` significant digits (a float that prints as it is pasted)."""
    return float(f"{weight:.{SIGNIFICANT_DIGITS}g}")


def balanced_weights(calibration, rule, reference=None):
    """Weights that balance every term against ``reference`` (default: the first term) by ``rule``.

    rule: "value" (every w_t·E_t equal) or "gradient" (every w_t·‖∂E_t/∂θ‖ equal).
    returns {"reference": name, "rule": rule, "weights": {name: w}, "expression": balanced text};
    SflnetError (one line) for a term whose value or gradient is zero or not finite.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    ref = calibration.term(reference) if reference is not None else calibration.terms[0]
    key = (lambda t: t.value) if rule == "value" else (lambda t: t.grad_norm)
    what = "value" if rule == "value" else "gradient ‖∂E/∂θ‖"
    for entry in calibration.terms:
        size = key(entry)
        if not math.isfinite(size):
            raise SflnetError(f"the term {entry.expression} has a {what} of {size}, which is not finite: "
                              f"its weight cannot be balanced")
        if size <= 0:
            raise SflnetError(f"the term {entry.expression} has a {what} of zero at these parameters, so no "
                              f"weight balances it; calibrate at other parameters or leave it out")
    ref_weight = ref.term.weight if ref.term.weight > 0 else 1.0
    weights = {t.name: (ref_weight if t is ref else rounded(ref_weight * key(ref) / key(t)))
               for t in calibration.terms}
    text = format_terms([Term(t.name, weights[t.name], t.term.options) for t in calibration.terms])
    return {"reference": ref.name, "rule": rule, "weights": weights, "expression": text}


def suggestions(calibration, reference=None):
    """{"value": ..., "gradient": ...}: :func:`balanced_weights` by both rules."""
    return {rule: balanced_weights(calibration, rule, reference) for rule in RULES}


# -- where the parameters come from ---------------------------------------------------------------

def initial_setup(options, xp, warn=None):
    """``(build, dataset)`` at the initial weights ``sflnet train`` starts from with these options (their
    seed, init and dtype), on the training data they select (validated :class:`TrainOptions`)."""
    dataset = load_training_data(options, warn)
    params = options.spec.init(options, xp)
    return model_builder(options.spec, params, options.loss_settings, options), dataset


def checkpoint_setup(checkpoint, xp, settings):
    """``build`` at a checkpoint's parameters, with the loss ``settings`` (see
    :func:`sflnet.training.evaluation.checkpoint_loss_settings`) and the checkpoint's options."""
    from sflnet.training.evaluation import checkpoint_options  # noqa: PLC0415

    spec = checkpoint.spec
    params = {n: to_device(checkpoint.params[n], xp) for n in spec.param_names}
    return model_builder(spec, params, settings, checkpoint_options(checkpoint))


def check_expression(expression, settings):
    """The canonical expression (SflnetError for an unknown loss or a malformed term)."""
    return make_objective(expression, settings).expression
