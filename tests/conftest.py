"""Shared fixtures: the array backends to run the same test bodies on, and
finite-difference helpers (float64, central differences, random upstream gradients)."""

import numpy as np
import pytest

from sflnet.backend import gpu_available


def _cupy_or_skip():
    if not gpu_available():
        pytest.skip("CuPy with a usable CUDA GPU is not available: GPU variant skipped")
    import cupy  # noqa: PLC0415
    return cupy


@pytest.fixture(params=["numpy", "cupy"])
def xp(request):
    """The array module a test body runs on: NumPy always, CuPy only where a GPU is usable."""
    if request.param == "numpy":
        return np
    return _cupy_or_skip()


@pytest.fixture
def cupy_module():
    """CuPy, for the float32 GPU-vs-CPU comparisons; skips without a GPU."""
    return _cupy_or_skip()


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


def rel_error(a, b):
    """cs231n relative error, elementwise: max |a − b| / max(1e-8, |a| + |b|)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))


def numeric_gradient(f, x, eps):
    """Central differences of the scalar function ``f`` at every element of the host array ``x``.

    ``x`` is perturbed in a private copy, never in place. returns an array shaped like x.
    """
    x = np.array(x, dtype=np.float64, copy=True)
    grad = np.zeros_like(x)
    flat_x = x.reshape(-1)
    flat_g = grad.reshape(-1)
    for i in range(flat_x.size):
        old = flat_x[i]
        flat_x[i] = old + eps
        plus = f(x)
        flat_x[i] = old - eps
        minus = f(x)
        flat_x[i] = old
        flat_g[i] = (plus - minus) / (2 * eps)
    return grad


def best_over_eps(check, eps_values=(1e-4, 1e-5, 1e-6, 1e-7)):
    """Run ``check(eps) -> error`` for each eps (DESIGN §3 sweep) and return the smallest error."""
    return min(check(eps) for eps in eps_values)


@pytest.fixture
def fd():
    """The finite-difference helpers as one namespace: fd.rel_error, fd.numeric_gradient, fd.best_over_eps."""
    class FD:
        pass
    helpers = FD()
    helpers.rel_error = rel_error
    helpers.numeric_gradient = numeric_gradient
    helpers.best_over_eps = best_over_eps
    return helpers
