"""The one place that chooses between NumPy (CPU) and CuPy (GPU).

Every other module receives arrays and asks :func:`get_array_module` which
library they belong to, so the same layer code runs on both. CuPy is optional:
``import sflnet`` never imports it, and :func:`select_device` only tries it
when asked for ``"auto"`` or ``"gpu"``. Arrays move with :func:`to_device` /
:func:`to_host`; small constants (filter taps, loss weights) are uploaded once
and cached by :func:`device_constant`.

Device names
------------
``"cpu"``  NumPy.
``"gpu"``  CuPy on the current CUDA device; an :class:`SflnetError` if CuPy is
           missing or no device works.
``"auto"`` the GPU when CuPy and a device are usable, NumPy otherwise; the
           fallback is announced once (on stderr).
"""

import sys

import numpy as np

from sflnet.errors import SflnetError

DEVICES = ("auto", "cpu", "gpu")
DTYPES = ("float32", "float64")   # the floating-point types sflnet computes in (float32 default, float64 checks)

_announced_fallback = False


def _try_cupy():
    """Return ``(cupy_module, None)`` if a CUDA device is usable, else ``(None, reason)``."""
    try:
        import cupy  # noqa: PLC0415  (optional dependency, imported lazily on purpose)
    except Exception as exc:  # ImportError, or a broken CUDA install raising at import
        return None, f"CuPy is not installed or cannot be imported ({type(exc).__name__}: {exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
        if count < 1:
            return None, "CuPy found no CUDA device"
        # A tiny computation proves the driver, runtime and kernels all work.
        probe = cupy.arange(4, dtype=cupy.float32)
        float((probe * 2).sum())
    except Exception as exc:
        return None, f"CuPy cannot use a CUDA device ({type(exc).__name__}: {exc})"
    return cupy, None


def gpu_available():
    """True when CuPy imports and a CUDA device runs a test kernel."""
    return _try_cupy()[0] is not None


def select_device(device="auto"):
    """Return the array module (``numpy`` or ``cupy``) for a device name.

    ``device`` is one of ``"auto"``, ``"cpu"``, ``"gpu"``. ``"gpu"`` raises
    :class:`SflnetError` when no GPU is usable; ``"auto"`` falls back to NumPy
    and says so once per process.
    """
    global _announced_fallback
    if device not in DEVICES:
        raise SflnetError(f"unknown device {device!r}: choose one of {', '.join(DEVICES)}")
    if device == "cpu":
        return np
    cupy, reason = _try_cupy()
    if cupy is not None:
        return cupy
    if device == "gpu":
        raise SflnetError(f"--device gpu was requested but no GPU is usable: {reason}")
    if not _announced_fallback:
        print(f"sflnet: no usable GPU ({reason}); running on the CPU with NumPy", file=sys.stderr)
        _announced_fallback = True
    return np


def device_name(xp):
    """A short human description of the device behind array module ``xp``."""
    if xp is np:
        return "cpu (numpy)"
    props = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return f"gpu (cupy, {name})"


def get_array_module(*arrays):
    """``numpy`` or ``cupy``, whichever the arrays live on (NumPy if CuPy is absent)."""
    if "cupy" in sys.modules:
        return sys.modules["cupy"].get_array_module(*arrays)
    return np


def is_gpu_array(array):
    """True when ``array`` is a CuPy array."""
    return get_array_module(array) is not np


def to_device(array, xp):
    """Copy a host or device array onto the device behind ``xp`` (no copy if already there)."""
    if xp is np:
        return to_host(array)
    return xp.asarray(array)


def pinned_empty(shape, dtype, xp):
    """A new host array for uploads to ``xp``: page-locked (pinned) memory on CuPy when it can give it,
    so that :func:`upload_async` is a real asynchronous copy; a plain NumPy array otherwise."""
    if xp is not np:
        try:
            import cupyx  # noqa: PLC0415
            empty_pinned = getattr(cupyx, "empty_pinned", None)
        except ImportError:
            empty_pinned = None
        if empty_pinned is not None:
            return empty_pinned(shape, dtype=dtype)
    return np.empty(shape, dtype=dtype)


def upload_async(host, xp):
    """``host`` on the device of ``xp``: on CuPy a copy queued on the current stream (asynchronous from
    pinned memory; keep ``host`` unchanged until the stream has used it); on NumPy ``host`` itself."""
    if xp is np:
        return host
    return xp.asarray(host, blocking=False)


def to_host(array):
    """Return a NumPy array (copying from the GPU when needed)."""
    if is_gpu_array(array):
        return array.get()
    return np.asarray(array)


def synchronize(xp):
    """Wait for queued device work (no-op on NumPy). Used only for timing."""
    if xp is not np:
        xp.cuda.Device().synchronize()


def use_device_for_rank(xp, local_rank):
    """Make GPU ``local_rank mod device_count`` current for this process (data-parallel ranks on
    one node share its GPUs); nothing on NumPy. returns the device index, or None on the CPU."""
    if xp is np:
        return None
    index = local_rank % xp.cuda.runtime.getDeviceCount()
    xp.cuda.Device(index).use()
    return index


# Small constants (filter taps, loss weights) kept on the device, uploaded once

_device_constants = {}


def device_constant(values, like):
    """``values`` (a small host sequence or array) as an array of ``like``'s dtype on ``like``'s device.

    values:  (k,) or any small shape, host (NumPy / Python numbers)
    like:    any array; gives the array module, device and dtype
    returns  values as that dtype: a NumPy array for NumPy ``like``; for CuPy, a device array
             uploaded once per (device, dtype, values) and then served from a cache, so a
             training step does not re-send the same taps and weights on every call.

    The returned array is shared: callers must treat it as read-only.
    """
    xp = get_array_module(like)
    host = np.asarray(values, dtype=like.dtype)
    if xp is np:
        return host
    key = (xp, xp.cuda.Device().id, host.dtype.str, host.shape, host.tobytes())
    cached = _device_constants.get(key)
    if cached is None:
        cached = _device_constants[key] = xp.asarray(host)
    return cached
