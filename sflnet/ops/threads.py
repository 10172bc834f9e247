"""CPU threads for the NumPy kernels of :mod:`sflnet.ops`, and the elementwise products split over them.

NumPy's copies and ufuncs release the GIL but run on one core; the GEMMs use
all cores through BLAS. The kernels split their work into independent ranges
(disjoint output regions) with :func:`parallel_ranges` and run them on a small
thread pool, so the copies run on every core too. CuPy arrays always run in one
call (CuPy kernels are already parallel).

:func:`along` and :func:`split_axis` cut an array into such parts;
:func:`elementwise` runs an elementwise ufunc (or a small function of ufuncs
with ``out=``) over them: the activations of :mod:`sflnet.nn.activations` use it.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from sflnet.backend import get_array_module


# Below ~16 MB of float32 work a hand-off to the pool costs more than it saves: OpenBLAS's own threads
# keep spinning for a while after each GEMM, so a kernel thread started right after one shares a core
# with them. Measured on 2 cores (A/B rounds in one process): with 1 << 18 the VAE's batch-5 and
# batch-32 steps were 5-15 % slower on two threads than on one; with 1 << 22 they are not, and the
# CAE's full-batch epochs at 64, 128 and 300 px were as fast or faster.
PARALLEL_MIN_ELEMENTS = 1 << 22


def default_num_threads():
    """Threads of the NumPy kernels at start: ``OMP_NUM_THREADS`` when it is set to a positive integer
    (the usual per-process thread setting, which OpenBLAS also follows), else every usable CPU."""
    setting = os.environ.get("OMP_NUM_THREADS", "").strip()
    if setting.isdigit() and int(setting) >= 1:
        return int(setting)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


_threads = default_num_threads()
_pool = None


def set_num_threads(count):
    """Threads used by the NumPy kernels (1 = no threading). BLAS threads are set by its own environment variables."""
    global _threads, _pool
    if count < 1:
        raise ValueError(f"thread count must be >= 1, got {count}")
    if count != _threads and _pool is not None:
        _pool.shutdown(wait=True)
        _pool = None
    _threads = int(count)


def get_num_threads():
    """Threads used by the NumPy kernels."""
    return _threads


def parallel_ranges(xp, count, work, task):
    """Call ``task(lo, hi)`` over contiguous ranges covering ``range(count)``, on all threads.

    ``work`` is the number of elements the whole job touches; small jobs, CuPy
    arrays and single-thread settings run ``task(0, count)`` directly. Tasks
    must write disjoint outputs. The calling thread runs the first range itself.
    """
    global _pool
    parts = min(_threads, count)
    if xp is not np or parts < 2 or work < PARALLEL_MIN_ELEMENTS:
        task(0, count)
        return
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=_threads - 1, thread_name_prefix="sflnet-kernels")
    bounds = [count * i // parts for i in range(parts + 1)]
    futures = [_pool.submit(task, bounds[i], bounds[i + 1]) for i in range(1, parts)]
    task(bounds[0], bounds[1])
    for future in futures:
        future.result()


def along(a, axis, index):
    """``a[..., index, ...]`` with ``index`` (a slice) applied to ``axis``: a view."""
    full = [slice(None)] * a.ndim
    full[axis] = index
    return a[tuple(full)]


def split_axis(shape, axis):
    """The longest axis other than ``axis``: work along ``axis`` splits into independent parts there."""
    return max((d for d in range(len(shape)) if d != axis), key=lambda d: shape[d])


def elementwise(fn, *arrays, dtype=None, dtypes=None):
    """``fn(*arrays)`` for an elementwise ``fn(*pieces, out=piece)``, on all threads.

    arrays: one shape (no broadcasting); the result is a new array shaped and
    ordered in memory like ``arrays[0]``, of ``dtype`` (default ``arrays[0].dtype``).
    With ``dtypes`` (a tuple), ``fn`` fills several results at once
    (``out=(piece, piece, …)``) and a tuple of arrays is returned.
    ``fn`` is called on matching slices of every array along their outermost
    memory axis, each writing its own slice of the results.
    """
    xp = get_array_module(arrays[0])
    first = arrays[0]
    several = dtypes is not None
    if not several:
        dtypes = (first.dtype if dtype is None else dtype,)
    outs = tuple(xp.empty_like(first, dtype=d) for d in dtypes)

    def piece(lo, hi):
        cut = [along(a, split, slice(lo, hi)) for a in arrays]
        targets = tuple(along(o, split, slice(lo, hi)) for o in outs)
        fn(*cut, out=targets if several else targets[0])

    if first.ndim == 0:
        fn(*arrays, out=outs if several else outs[0])
    else:
        split = max(range(first.ndim), key=lambda d: (first.shape[d] > 1, abs(first.strides[d])))
        parallel_ranges(xp, first.shape[split], first.size * (len(arrays) + len(outs)), piece)
    return outs if several else outs[0]
