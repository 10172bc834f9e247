"""Shared fixtures: the array backends to run the same test bodies on, and
the finite-difference helpers of the one gradient-check engine (sflnet.gradcheck.engine).

The CuPy variants run on real CuPy where a GPU is usable, and otherwise on the strict CuPy test
double in ``tests/strict_cupy`` (NumPy underneath, as strict as CuPy at the host/device boundary,
counting every transfer): so they never skip for lack of a GPU. ``SFLNET_TEST_CUPY=real`` makes
them skip instead of using the double; ``=double`` forces the double even where a GPU exists.
"""

import importlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from sflnet.backend import gpu_available
from sflnet.gradcheck import engine

STRICT_DIR = Path(__file__).parent / "strict_cupy"
_double_cache = {}


def _is_cupy_module(name):
    return name in ("cupy", "cupyx") or name.startswith(("cupy.", "cupyx."))


def strict_double_modules():
    """The double's modules ({name: module}), imported once per session and kept out of sys.modules."""
    if not _double_cache:
        saved = {name: sys.modules.pop(name) for name in list(sys.modules) if _is_cupy_module(name)}
        sys.path.insert(0, str(STRICT_DIR))
        try:
            importlib.import_module("cupy")
            importlib.import_module("cupyx.scipy.ndimage")
            _double_cache.update({name: sys.modules.pop(name) for name in list(sys.modules)
                                  if _is_cupy_module(name)})
        finally:
            sys.path.remove(str(STRICT_DIR))
            sys.modules.update(saved)
    return _double_cache


def _use_real_cupy():
    choice = os.environ.get("SFLNET_TEST_CUPY", "auto")
    if choice == "double":
        return False
    return gpu_available() or choice == "real"


@pytest.fixture
def strict_cupy(monkeypatch):
    """The strict CuPy double as ``cupy`` (and ``cupyx``) for one test, its counters reset; afterwards
    no ``cupy`` is left in sys.modules. sflnet finds it like real CuPy (``--device gpu`` works)."""
    for name in list(sys.modules):
        if _is_cupy_module(name):
            monkeypatch.delitem(sys.modules, name)
    for name, module in strict_double_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    double = sys.modules["cupy"]
    double.strict_counters.reset()
    return double


def _cupy_for_test(request):
    if _use_real_cupy():
        if not gpu_available():
            pytest.skip("SFLNET_TEST_CUPY=real but CuPy with a usable CUDA GPU is not available")
        import cupy  # noqa: PLC0415
        return cupy
    return request.getfixturevalue("strict_cupy")


@pytest.fixture(params=["numpy", "cupy"])
def xp(request):
    """The array module a test body runs on: NumPy, and CuPy (real on a GPU, else the strict double)."""
    if request.param == "numpy":
        return np
    return _cupy_for_test(request)


@pytest.fixture
def cupy_module(request):
    """CuPy for the GPU-vs-CPU comparisons: real on a GPU, else the strict double."""
    return _cupy_for_test(request)


@pytest.fixture
def default_sigint():
    """Python's usual SIGINT handler (KeyboardInterrupt) for one test, restored afterwards.

    Tests that send themselves SIGINT use it, so they also pass when the test command itself
    runs with SIGINT ignored (``nohup``, ``&`` in a script): sflnet leaves an ignored signal alone.
    """
    import signal  # noqa: PLC0415

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture
def fd():
    """The finite-difference helpers of the one engine (:mod:`sflnet.gradcheck.engine`) as one namespace:
    fd.rel_error (the scale-aware cs231n form), fd.numeric_gradient, fd.best_over_eps (the ε sweep)."""
    class FD:
        pass
    helpers = FD()
    helpers.rel_error = engine.rel_error
    helpers.numeric_gradient = engine.numeric_gradient
    helpers.best_over_eps = engine.best_over_eps
    return helpers
