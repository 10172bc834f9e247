"""``cupy.linalg`` of the strict CuPy test double: a few of NumPy's routines on device arrays."""

import numpy as _np

from cupy import _core


def _routine(name):
    np_func = getattr(_np.linalg, name)

    def routine(a, *args, **kwargs):
        _core.require_device(a, f"the array argument of cupy.linalg.{name}")
        return _core.call_numpy(np_func, (a,) + args, kwargs)

    routine.__name__ = name
    routine.__doc__ = f"Device version of :func:`numpy.linalg.{name}`."
    return routine


for _name in ("norm", "solve", "inv", "pinv", "det", "slogdet", "svd", "qr", "eigh", "eigvalsh",
              "cholesky", "lstsq", "matrix_power", "matrix_rank"):
    globals()[_name] = _routine(_name)
del _name

LinAlgError = _np.linalg.LinAlgError


def __getattr__(name):
    raise AttributeError(f"module 'cupy.linalg' has no attribute {name!r} (strict CuPy test double whitelist)")
