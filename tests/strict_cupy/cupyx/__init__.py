"""``cupyx`` of the strict CuPy test double: only ``cupyx.scipy.ndimage`` (see the ``cupy`` package docstring)."""


def __getattr__(name):
    if name == "scipy":
        import importlib  # noqa: PLC0415
        return importlib.import_module("cupyx.scipy")
    raise AttributeError(f"module 'cupyx' has no attribute {name!r} (strict CuPy test double whitelist)")
