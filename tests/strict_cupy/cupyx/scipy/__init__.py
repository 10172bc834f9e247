"""``cupyx.scipy`` of the strict CuPy test double: ``ndimage`` and ``get_array_module``."""

import sys as _sys


def get_array_module(*args):
    """This module if any argument is a device array, else ``scipy``."""
    import scipy  # noqa: PLC0415

    from cupy import ndarray  # noqa: PLC0415
    for arg in args:
        if isinstance(arg, ndarray):
            return _sys.modules[__name__]
    return scipy


def __getattr__(name):
    if name == "ndimage":
        import importlib  # noqa: PLC0415
        return importlib.import_module("cupyx.scipy.ndimage")
    raise AttributeError(f"module 'cupyx.scipy' has no attribute {name!r} (strict CuPy test double whitelist)")
