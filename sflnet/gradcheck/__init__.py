"""Gradient checks: the one engine, the naive references, the subjects, the suite and its report.

* :mod:`.engine` — THE checker: :func:`rel_error`, :class:`Case`, :func:`dense_check`
  (ε sweep, ReLU-mask-flip detection), :func:`directional_check`, the adjoint and forward
  measurements, the thresholds; used by the tests and by ``sflnet gradcheck``;
* :mod:`.references` — the only home of the naive textbook versions of every layer and loss;
* :mod:`.cases` — the subjects, per family, with their registry entries;
* :mod:`.suite` — the registry, :func:`run_suite`, :func:`resolve_layers`, :func:`layer_names`;
* :mod:`.report` — :class:`Report`, the table (:func:`format_table`) and :func:`to_json`;
* :mod:`.explain` — ``--explain``: the derivation behind a checked layer.

This package exposes the public API that ``sflnet gradcheck`` and the tests use.
"""

from sflnet.gradcheck.engine import (EPS_SWEEP, THRESHOLD_ADJOINT, THRESHOLD_NETWORK_DENSE,
                                     THRESHOLD_NETWORK_DIRECTIONAL, THRESHOLD_REFERENCE, THRESHOLD_SMOOTH, Case,
                                     LayerEntry, Measurement, adjoint_measurement, best_over_eps, dense_check,
                                     directional_check, forward_measurement, numeric_gradient, random_cotangent,
                                     rel_error, scalar_rel_error)
from sflnet.gradcheck.explain import backward_targets, explain
from sflnet.gradcheck.report import FOOTER, CheckRow, Report, format_table, to_json
from sflnet.gradcheck.suite import default_registry, layer_names, resolve_layers, run_suite

__all__ = ["EPS_SWEEP", "FOOTER", "THRESHOLD_ADJOINT", "THRESHOLD_NETWORK_DENSE", "THRESHOLD_NETWORK_DIRECTIONAL",
           "THRESHOLD_REFERENCE", "THRESHOLD_SMOOTH", "Case", "CheckRow", "LayerEntry", "Measurement", "Report",
           "adjoint_measurement", "backward_targets", "best_over_eps", "default_registry", "dense_check",
           "directional_check", "explain", "format_table", "forward_measurement", "layer_names",
           "numeric_gradient", "random_cotangent", "rel_error", "resolve_layers", "run_suite", "scalar_rel_error",
           "to_json"]
