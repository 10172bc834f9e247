"""``cupy.lib.stride_tricks`` of the strict CuPy test double."""

import numpy as _np

from cupy import _core


def as_strided(x, shape=None, strides=None):
    """A view of the device array ``x`` with the given shape and strides (in bytes), sharing its memory."""
    _core.require_device(x, "x")
    return _core.wrap(_np.lib.stride_tricks.as_strided(x._a, shape=shape, strides=strides))


def __getattr__(name):
    raise AttributeError(f"module 'cupy.lib.stride_tricks' has no attribute {name!r} "
                         "(strict CuPy test double whitelist)")
