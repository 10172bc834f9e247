"""The gradient-check validation suite behind ``sflnet gradcheck``: the registry of what is checked, and the run.

Every hand-written backward pass of :mod:`sflnet.nn`, of every loss of
:data:`sflnet.losses.REGISTRY` and of the whole models
(:class:`sflnet.models.cae.Autoencoder`, :class:`sflnet.models.vae.VAE`) is checked
in float64 with the one engine (:mod:`sflnet.gradcheck.engine`): forward vs a
naive reference (:mod:`sflnet.gradcheck.references`), dense central differences on
tiny shapes, directional derivatives on realistic shapes, and adjoint identities;
the subjects are in :mod:`sflnet.gradcheck.cases`. When a GPU is usable the float64
checks run again on CuPy, and float32 CuPy results are compared with float32 NumPy results.

The checks take their subjects from :func:`default_registry` (name →
:class:`~sflnet.gradcheck.engine.LayerEntry`), whose factories build the layers
and losses at call time. A test can therefore plant a wrong backward (monkeypatch
a class, or pass its own registry to :func:`run_suite`) and see the suite fail on
the right row. The rows are reported by :mod:`sflnet.gradcheck.report`.
"""

import math
import time

import numpy as np

from sflnet import losses
from sflnet.backend import _try_cupy, gpu_available, select_device, to_host
from sflnet.errors import SflnetError
from sflnet.gradcheck.cases import layers as layer_cases
from sflnet.gradcheck.cases import losses as loss_cases
from sflnet.gradcheck.cases import network as network_cases
from sflnet.gradcheck.cases import vae as vae_cases
from sflnet.gradcheck.engine import (GPU_ATOL, GPU_RTOL, THRESHOLD_ADJOINT, THRESHOLD_GPU_FLOAT32,
                                     THRESHOLD_REFERENCE, Measurement, check_rng, dense_check, directional_check,
                                     random_upstream)
from sflnet.gradcheck.report import CheckRow, Report

PAPER_ROWS = ("pixel_loss", "sfl_loss", "network_pl", "network_sfl")   # reported right after the CAE's layers


def default_registry():
    """name → :class:`~sflnet.gradcheck.engine.LayerEntry`, in report order. Built fresh, so monkeypatched classes
    and newly registered losses are picked up.

    Order: the CAE's layers; the paper's losses and networks (pixel_loss, sfl_loss, network_pl,
    network_sfl); every other registered loss (``<name>_loss``); the whole CAE on each of them
    and on all together (``network_<name>``, ``network_mixed``); the β-VAE's layers and networks.
    """
    loss_rows = loss_cases.registry_entries()
    network_rows = network_cases.registry_entries()
    both = {**loss_rows, **network_rows}
    registry = dict(layer_cases.registry_entries())
    registry.update({name: both[name] for name in PAPER_ROWS})
    registry.update({name: entry for name, entry in loss_rows.items() if name not in PAPER_ROWS})
    registry.update({name: entry for name, entry in network_rows.items() if name not in PAPER_ROWS})
    registry.update(vae_cases.registry_entries())
    return registry


def layer_names():
    """The checked layer names, in report order."""
    return tuple(default_registry())


# ---------------------------------------------------------------------------
# Running the suite
# ---------------------------------------------------------------------------

def _run_one(rows, device, layer, check, threshold, measure):
    """Run ``measure() -> Measurement`` and append its row; an exception is a FAIL row, not a crash."""
    try:
        m = measure()
    except Exception as exc:  # a planted bug may break shapes: report it on its row
        rows.append(CheckRow(device, layer, check, "-", None, None, threshold, False,
                             f"raised {type(exc).__name__}: {exc}"))
        return
    finite = m.error is not None and math.isfinite(m.error)
    rows.append(CheckRow(device, layer, check, m.shape, m.eps, m.error if finite else None, threshold,
                         finite and m.error <= threshold, m.note, m.samples, m.worst))


def run_float64_checks(rows, registry, names, xp, device, seed, full=False):
    """Forward-reference, dense, directional and adjoint rows for ``names``, float64 on ``xp``."""
    for name in names:
        entry = registry[name]
        for label, fn in entry.references:
            _run_one(rows, device, name, label, THRESHOLD_REFERENCE,
                     lambda fn=fn, label=label: fn(check_rng(seed, name, label), xp))
        if entry.make_case is not None:
            def dense():
                rng = check_rng(seed, name, "dense")
                case = entry.make_case(rng, xp, np.float64, "tiny")
                if full:   # every element of every variable, or the entry's own --full sample
                    case.sample = {} if entry.full_sample is None else entry.full_sample(rng, case.variables)
                return dense_check(case, random_upstream(rng, case, xp))

            def directional():
                rng = check_rng(seed, name, "directional")
                case = entry.make_case(rng, xp, np.float64, "realistic")
                return directional_check(case, random_upstream(rng, case, xp), rng)
            whole = full and entry.full_sample is None
            dense_label = "dense" if whole or not name.startswith("network") else "dense (sampled)"
            if entry.dense:
                _run_one(rows, device, name, dense_label, entry.dense_threshold, dense)
            _run_one(rows, device, name, "directional", entry.directional_threshold, directional)
        for label, fn in entry.adjoints:
            _run_one(rows, device, name, label, THRESHOLD_ADJOINT,
                     lambda fn=fn, label=label: fn(check_rng(seed, name, label), xp))


def float32_gpu_vs_cpu(entry, cupy, seed, name):
    """Forward output and every gradient of the realistic case, float32 on CuPy vs float32 on NumPy.

    error = max over all compared arrays of ``max |gpu − cpu| / (atol + rtol |cpu|)``; ≤ 1 is allclose.
    """
    results = []
    for xp in (np, cupy):
        rng = check_rng(seed, name, "float32")
        case = entry.make_case(rng, xp, np.float32, "realistic")
        upstream = random_upstream(rng, case, xp)
        out = to_host(case.evaluate())
        grads = {k: to_host(g) for k, g in case.gradients(upstream).items()}
        results.append((out, grads, case.shape))
    (out_cpu, grads_cpu, shape), (out_gpu, grads_gpu, _) = results
    pairs = [("output", out_gpu, out_cpu)] + [(k, grads_gpu[k], grads_cpu[k]) for k in grads_cpu]
    worst, worst_name = 0.0, ""
    for label, gpu, cpu in pairs:
        gpu, cpu = np.asarray(gpu, np.float64), np.asarray(cpu, np.float64)
        ratio = float(np.max(np.abs(gpu - cpu) / (GPU_ATOL + GPU_RTOL * np.abs(cpu))))
        if ratio >= worst:
            worst, worst_name = ratio, label
    return Measurement(shape, worst, None, "", [], worst_name)


def loss_rows(loss_name, names):
    """The rows that a registered loss's bare name selects: its loss row and its whole-network row
    (``fft`` → fft_loss, network_fft; ``pl`` → pixel_loss, network_pl), those of them in ``names``."""
    if loss_name not in losses.REGISTRY:
        return []
    network = "network_pl" if loss_name == "pl" else f"network_{loss_name}"
    return [row for row in (loss_cases.loss_row_name(loss_name), network) if row in names]


def resolve_layers(layer, names=None):
    """Which layers to check: ``None`` → all ``names``; a name or a list of names → those, in report order.

    Names are case-insensitive ("-" may stand for "_"). A registered loss's own name (``--layer fft``)
    selects its rows (:func:`loss_rows`). An unknown name is an SflnetError.
    """
    names = layer_names() if names is None else names
    if layer is None:
        return list(names)
    wanted = [layer] if isinstance(layer, str) else list(layer)
    keys = set()
    for item in wanted:
        key = item.strip().lower().replace("-", "_")
        if key in names:
            keys.add(key)
        elif loss_rows(key, names):
            keys.update(loss_rows(key, names))
        else:
            raise SflnetError(f"--layer {item!r} is not a checked layer; choose one of {', '.join(names)}")
    return [name for name in names if name in keys]


def run_suite(device="auto", seed=0, layer=None, full=False, registry=None):
    """Run every check (or those of one ``layer``) and return a :class:`Report`.

    device: "cpu" (NumPy only), "auto" (also CuPy when a GPU is usable), "gpu"
            (also CuPy; SflnetError without a GPU). The float64 NumPy checks always run.
    seed:   base seed of every random draw (each check derives its own stream).
    layer:  None (all), one registry name, or a list of names.
    full:   whole-network dense check on every parameter element (slow) instead of a sample.
    registry: name → :class:`LayerEntry`; default :func:`default_registry`.
    """
    start = time.perf_counter()
    registry = default_registry() if registry is None else registry
    names = resolve_layers(layer, tuple(registry))
    gpu_xp, gpu_note = None, ""
    if device == "cpu":
        gpu_note = "GPU checks skipped: --device cpu"
    elif device in ("auto", "gpu"):
        if device == "gpu" or gpu_available():
            gpu_xp = select_device("gpu")
        else:   # _try_cupy gives the reason in words
            gpu_note = f"GPU checks skipped: {_try_cupy()[1]}"
    else:
        raise SflnetError(f"--device {device!r}: choose one of auto, cpu, gpu")

    rows = []
    run_float64_checks(rows, registry, names, np, "cpu", seed, full)
    if gpu_xp is not None:
        run_float64_checks(rows, registry, names, gpu_xp, "gpu", seed, full)
        for name in names:
            entry = registry[name]
            if entry.make_case is not None:
                _run_one(rows, "gpu", name, "float32 gpu vs cpu", THRESHOLD_GPU_FLOAT32,
                         lambda entry=entry, name=name: float32_gpu_vs_cpu(entry, gpu_xp, seed, name))
        gpu_note = "GPU checks ran: float64 on CuPy, and float32 CuPy vs float32 NumPy"
    return Report(rows, gpu_note, seed, time.perf_counter() - start)
