"""``cupy.fft`` of the strict CuPy test double: NumPy's FFTs on device arrays.

Inputs must be device arrays (CuPy raises TypeError for anything else); ``n``/``s``,
``axis``/``axes`` and ``norm`` are NumPy's. Precision is kept as in CuPy (and NumPy 2):
float32/complex64 in, complex64/float32 out.
"""

import numpy as _np

from cupy import _core


def _transform(name):
    np_func = getattr(_np.fft, name)

    def transform(a, *args, **kwargs):
        if not isinstance(a, _core.ndarray):
            raise TypeError(f"The input array a must be a cupy.ndarray (got {type(a)})")
        return _core.call_numpy(np_func, (a,) + args, kwargs)

    transform.__name__ = name
    transform.__doc__ = f"Device version of :func:`numpy.fft.{name}`."
    return transform


def _frequencies(name):
    np_func = getattr(_np.fft, name)

    def frequencies(n, d=1.0):
        return _core.wrap(np_func(n, d))

    frequencies.__name__ = name
    frequencies.__doc__ = f"Device version of :func:`numpy.fft.{name}` (computed on the device: no upload)."
    return frequencies


for _name in ("fft", "ifft", "rfft", "irfft", "hfft", "ihfft", "fft2", "ifft2", "rfft2", "irfft2",
              "fftn", "ifftn", "rfftn", "irfftn", "fftshift", "ifftshift"):
    globals()[_name] = _transform(_name)
for _name in ("fftfreq", "rfftfreq"):
    globals()[_name] = _frequencies(_name)
del _name


def __getattr__(name):
    raise AttributeError(f"module 'cupy.fft' has no attribute {name!r} (strict CuPy test double whitelist)")
