"""``cupyx.scipy.ndimage`` of the strict CuPy test double: SciPy's filters on device arrays.

As in cupyx, ``input`` and ``weights`` must be device arrays (cupyx raises TypeError
for NumPy weights: it calls ``cupy.ascontiguousarray`` on them), and ``output`` is
``None``, a dtype, or a device array (which is filled and returned). The work is done by
``scipy.ndimage`` on the private NumPy arrays, so results are SciPy's (float64
accumulation); cupyx may differ in the last bits.
"""

import numpy as _np
import scipy.ndimage as _ndimage

from cupy import _core


def _input(x):
    if not isinstance(x, _core.ndarray):
        if isinstance(x, _np.ndarray):
            raise _core.unsupported(x)
        raise TypeError(f"input must be a cupy.ndarray, got {type(x)}")
    return x._a


def _weights(w):
    if not isinstance(w, _core.ndarray):
        raise TypeError(f"weights must be a cupy.ndarray, got {type(w)} (cupyx calls cupy.ascontiguousarray on it)")
    return w._a


def _output(output):
    if output is None or isinstance(output, (str, type, _np.dtype)):
        return output
    if isinstance(output, _core.ndarray):
        return output._a
    raise _core.unsupported(output)


def _run(np_func, input, args, output, kwargs):
    result = np_func(_input(input), *args, output=_output(output), **kwargs)
    if isinstance(output, _core.ndarray):
        return output
    return _core.wrap(result)


def correlate1d(input, weights, axis=-1, output=None, mode="reflect", cval=0.0, origin=0):
    return _run(_ndimage.correlate1d, input, (_weights(weights),), output,
                {"axis": axis, "mode": mode, "cval": cval, "origin": origin})


def convolve1d(input, weights, axis=-1, output=None, mode="reflect", cval=0.0, origin=0):
    return _run(_ndimage.convolve1d, input, (_weights(weights),), output,
                {"axis": axis, "mode": mode, "cval": cval, "origin": origin})


def correlate(input, weights, output=None, mode="reflect", cval=0.0, origin=0):
    return _run(_ndimage.correlate, input, (_weights(weights),), output,
                {"mode": mode, "cval": cval, "origin": origin})


def convolve(input, weights, output=None, mode="reflect", cval=0.0, origin=0):
    return _run(_ndimage.convolve, input, (_weights(weights),), output,
                {"mode": mode, "cval": cval, "origin": origin})


def gaussian_filter1d(input, sigma, axis=-1, order=0, output=None, mode="reflect", cval=0.0, truncate=4.0,
                      *, radius=None):
    return _run(_ndimage.gaussian_filter1d, input, (sigma,), output,
                {"axis": axis, "order": order, "mode": mode, "cval": cval, "truncate": truncate,
                 "radius": radius})


def gaussian_filter(input, sigma, order=0, output=None, mode="reflect", cval=0.0, truncate=4.0,
                    *, radius=None, axes=None):
    return _run(_ndimage.gaussian_filter, input, (sigma,), output,
                {"order": order, "mode": mode, "cval": cval, "truncate": truncate, "radius": radius,
                 "axes": axes})


def uniform_filter1d(input, size, axis=-1, output=None, mode="reflect", cval=0.0, origin=0):
    return _run(_ndimage.uniform_filter1d, input, (size,), output,
                {"axis": axis, "mode": mode, "cval": cval, "origin": origin})


def uniform_filter(input, size=3, output=None, mode="reflect", cval=0.0, origin=0, *, axes=None):
    return _run(_ndimage.uniform_filter, input, (size,), output,
                {"mode": mode, "cval": cval, "origin": origin, "axes": axes})


def __getattr__(name):
    raise AttributeError(f"module 'cupyx.scipy.ndimage' has no attribute {name!r} "
                         "(strict CuPy test double whitelist)")
