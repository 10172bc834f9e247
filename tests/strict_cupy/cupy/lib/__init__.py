"""``cupy.lib`` of the strict CuPy test double (only ``stride_tricks``)."""

from cupy.lib import stride_tricks

__all__ = ["stride_tricks"]


def __getattr__(name):
    raise AttributeError(f"module 'cupy.lib' has no attribute {name!r} (strict CuPy test double whitelist)")
