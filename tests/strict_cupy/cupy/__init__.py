"""A strict, NumPy-backed test double for CuPy (test-only; never installed).

Put ``tests/strict_cupy`` first on ``sys.path`` and ``import cupy`` /
``import cupyx.scipy.ndimage`` find this package instead of real CuPy, so that the
CuPy code path of sflnet runs on a machine without a GPU. Everything is computed by
NumPy (and SciPy for ``cupyx.scipy.ndimage``), but the rules about the host/device
boundary are as strict as real CuPy's, and in places stricter:

* ``cupy.ndarray`` is its own type, not a ``numpy.ndarray`` subclass; it wraps a
  private NumPy array. ``numpy.asarray(x)``, ``numpy.array(x)``, SciPy, any NumPy
  function (``__array_function__``) and any NumPy ufunc (``__array_ufunc__``) on a
  device array raise ``TypeError("Implicit conversion to a NumPy array is not allowed.
  Please use `.get()` to construct a NumPy array explicitly.")``.
* Arithmetic and comparisons between a device array and a ``numpy.ndarray`` (either
  order, in-place, or ``out=``) raise ``TypeError("Unsupported type <class
  'numpy.ndarray'>")``. Python scalars and NumPy numeric scalars are fine.
* ``cupy.*`` functions refuse ``numpy.ndarray`` arguments (TypeError). Only the
  converters ``cupy.asarray``/``cupy.array``/``cupy.asanyarray`` (and
  ``ndarray.set``) take host data; each such call is a counted upload.
  ``cupy.ascontiguousarray`` wants a device array, as in CuPy.
* Every device→host transfer and host-blocking sync is counted, with the line that
  caused it; so is every host→device upload. See "Counters" below.
* Names that are not provided raise AttributeError (a whitelist), so that a test
  notices when sflnet starts to use something the double does not model.

Counters
--------
``cupy.strict_counters`` (a :class:`StrictCounters`) counts since import or its last
``reset()``. Integer fields: ``get``, ``asnumpy``, ``float``, ``int``, ``bool``,
``complex``, ``item``, ``tolist``, ``repr`` (printing copies to the host),
``nonzero`` (a data-dependent output shape: boolean-mask indexing, ``nonzero``,
``argwhere``, ``flatnonzero``, ``unique``, one-argument ``where``; CuPy reads the
count on the host), ``synchronize`` (``Device/Stream/Event.synchronize()``,
``cuda.runtime.deviceSynchronize()``) and ``uploads`` (``cupy.asarray``/``array`` of
host data — NumPy arrays, NumPy or Python scalars, lists —, ``ndarray.set``, index
arrays given as lists or NumPy arrays). ``syncs`` is the sum of every field except
``uploads``. ``locations`` is the list of ``(kind, "file:line")`` of the syncs,
``upload_locations`` that of the uploads (the first frame outside the double);
``sync_report()`` groups them; ``as_dict()`` gives all counts.
``with cupy.strict_counting() as c:`` yields a fresh :class:`StrictCounters` that
counts only inside the block (the global one keeps counting too).

Deviations from real CuPy
-------------------------
* Nothing is asynchronous: every operation has finished when it returns, so a missing
  ``synchronize()`` (e.g. before reading a timer) or a race between streams cannot be
  detected. The counters say where CuPy would block, not for how long.
* Stricter NumPy protocols: real CuPy dispatches NumPy functions
  (``numpy.sum(x)``) and ufuncs (``numpy.exp(x)``) on device arrays to CuPy; the double
  refuses every one of them with the implicit-conversion TypeError, so that code has to
  say ``xp.`` explicitly. The one exception is a NumPy scalar as the *left* operand of a
  Python operator (``numpy.float32(2) * x``, ``numpy.float64(1) < x``): NumPy turns it
  into a ufunc call that cannot be told apart from an explicit
  ``numpy.multiply(numpy.float32(2), x)``, so both run (real CuPy runs both too).
* Numerics are NumPy's: dtype promotion (NEP 50 under NumPy 2: NumPy scalars are strongly
  typed, Python scalars weak — CuPy 14 does the same, older CuPy used value-based
  casting), casting rules of ``out=``/in-place ops, rounding and summation order.
  cuBLAS/cuFFT/CUDA kernels can differ in the last bits; ``cupyx.scipy.ndimage`` is
  SciPy's (float64 accumulation).
* Integer-array indices out of bounds raise IndexError (NumPy); CuPy wraps them around.
  Repeated indices in a scatter assignment keep the last value (CuPy: undefined).
* Assigning a ``numpy.ndarray`` or a list into a device array (``x[...] = host``)
  raises TypeError. CuPy raises ValueError for a non-0-d NumPy array with a basic index,
  but silently uploads the value (and accepts 0-d NumPy arrays) in other cases.
* Views that NumPy makes read-only (``broadcast_to``, ``imag`` of a real array) are
  read-only here; CuPy arrays are always writable.
* Not modelled: ``.data``/memory pointers, ``.base``, ``__cuda_array_interface__``,
  DLPack, ``__index__`` on 0-d integer arrays, raw/elementwise kernels, ``cupy.fuse``,
  ``cupy.random``, sparse matrices, multiple devices (``Device(0)`` only), streams
  beyond trivial stubs. Hidden syncs inside CuPy routines other than those listed under
  ``nonzero`` (e.g. ``put``/``choose`` with ``mode='raise'``, some linalg checks) are not
  counted.
* The memory-pool numbers count the NumPy buffers that live device arrays own (freed
  bytes stay in ``total_bytes()`` until ``free_all_blocks()``), without CUDA's
  allocation rounding.
* ``__version__`` claims a CuPy 13-era version so that version checks pass; the
  ``STRICT_DOUBLE`` attribute (True) tells the double apart from real CuPy.
"""

import builtins as _builtins
import math as _math
import sys as _sys

import numpy as _np

from cupy import _core
from cupy._core import (  # noqa: F401  (public API)
    IMPLICIT_CONVERSION_MESSAGE,
    SYNC_KINDS,
    StrictCounters,
    ndarray,
    strict_counters,
    strict_counting,
    ufunc,
)

__version__ = "13.3.0"
STRICT_DOUBLE = True

# Names defined explicitly in this module; the wrapped NumPy functions and ufuncs are added below.
__all__ = [
    "IMPLICIT_CONVERSION_MESSAGE", "SYNC_KINDS", "STRICT_DOUBLE", "StrictCounters", "ndarray",
    "strict_counters", "strict_counting", "ufunc", "cuda", "fft", "lib", "linalg",
    "array", "asarray", "asanyarray", "ascontiguousarray", "asfortranarray", "asnumpy", "get_array_module",
    "get_default_memory_pool", "get_default_pinned_memory_pool", "is_available", "array_equal",
    "array_equiv", "allclose", "where", "copyto", "result_type", "can_cast", "shares_memory",
    "may_share_memory", "dtype", "finfo", "iinfo", "issubdtype", "promote_types", "isscalar",
    "broadcast_shapes", "newaxis", "pi", "e", "inf", "nan", "euler_gamma",
]

# ---------------------------------------------------------------------------
# dtypes, scalar types, constants (all NumPy's own objects, as in CuPy)
# ---------------------------------------------------------------------------

bool_ = _np.bool_
bool = _np.bool_   # noqa: A001  (cupy.bool, as numpy.bool)
int8, int16, int32, int64 = _np.int8, _np.int16, _np.int32, _np.int64
uint8, uint16, uint32, uint64 = _np.uint8, _np.uint16, _np.uint32, _np.uint64
float16, float32, float64 = _np.float16, _np.float32, _np.float64
complex64, complex128 = _np.complex64, _np.complex128
intp, uintp, intc, uintc = _np.intp, _np.uintp, _np.intc, _np.uintc
int_, byte, ubyte, short, ushort = _np.int_, _np.byte, _np.ubyte, _np.short, _np.ushort
longlong, ulonglong = _np.longlong, _np.ulonglong
half, single, double = _np.half, _np.single, _np.double
csingle, cdouble = _np.csingle, _np.cdouble
generic, number, integer, signedinteger, unsignedinteger = (
    _np.generic, _np.number, _np.integer, _np.signedinteger, _np.unsignedinteger)
inexact, floating, complexfloating = _np.inexact, _np.floating, _np.complexfloating

dtype = _np.dtype
finfo = _np.finfo
iinfo = _np.iinfo
issubdtype = _np.issubdtype
promote_types = _np.promote_types
isscalar = _np.isscalar
broadcast_shapes = _np.broadcast_shapes

newaxis = None
pi = _math.pi
e = _math.e
inf = _math.inf
nan = _math.nan
euler_gamma = _np.euler_gamma


# ---------------------------------------------------------------------------
# Host <-> device
# ---------------------------------------------------------------------------

def _contains_device(obj):
    if isinstance(obj, ndarray):
        return True
    if isinstance(obj, (list, tuple)):
        return _builtins.any(_contains_device(item) for item in obj)
    return False


def _all_device(obj):
    if isinstance(obj, ndarray):
        return True
    if isinstance(obj, (list, tuple)):
        return _builtins.all(_all_device(item) for item in obj)
    return False


def _upload(obj, dtype, order, ndmin, what):
    """A device copy of host data (counted): NumPy arrays and scalars, Python scalars, (nested) lists."""
    host = _np.array(obj, dtype=dtype, order=order, copy=True, ndmin=ndmin)
    if host.dtype.kind in "OSUVMm":
        raise ValueError(f"Unsupported dtype {host.dtype}")
    device = _core.wrap(host)
    _core.record_upload(what)
    return device


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    """An array on the device. Host data (NumPy arrays/scalars, Python scalars, lists) is copied
    up (a counted upload); a device array is copied unless ``copy`` is False/None and no copy is needed."""
    del subok, blocking
    if isinstance(obj, ndarray):
        originals = {id(obj._a): obj}
        result = _np.array(obj._a, dtype=dtype, copy=copy, order=order, ndmin=ndmin)
        return _core.wrap_result(result, originals)
    if _contains_device(obj):
        if not _all_device(obj):
            raise TypeError(IMPLICIT_CONVERSION_MESSAGE)
        return _core.wrap(_np.array(_core.unwrap(obj, {}), dtype=dtype, order=order, ndmin=ndmin))
    if copy is False:
        raise ValueError("Unable to avoid copy while creating an array from host data")
    return _upload(obj, dtype, order, ndmin, f"cupy.array({type(obj).__name__})")


def asarray(a, dtype=None, order=None, *, copy=None, blocking=False):
    """``array(a, dtype, copy=None)``: no copy for a device array of the right dtype and order;
    host data is uploaded (counted)."""
    del blocking
    if isinstance(a, ndarray):
        result = _np.asarray(a._a, dtype=dtype, order=order, copy=copy)
        return _core.wrap_result(result, {id(a._a): a})
    if _contains_device(a):
        return array(a, dtype=dtype, order=order or "K")
    if copy is False:
        raise ValueError("Unable to avoid copy while creating an array from host data")
    return _upload(a, dtype, order or "K", 0, f"cupy.asarray({type(a).__name__})")


asanyarray = asarray


def ascontiguousarray(a, dtype=None):
    """A C-contiguous device array (``a`` itself when no copy is needed). ``a`` must be a device array."""
    _core.require_device(a, "a")
    return _core.call_numpy(_np.ascontiguousarray, (a,), {"dtype": dtype})


def asfortranarray(a, dtype=None):
    """An F-contiguous device array (``a`` itself when no copy is needed). ``a`` must be a device array."""
    _core.require_device(a, "a")
    return _core.call_numpy(_np.asfortranarray, (a,), {"dtype": dtype})


def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    """A NumPy copy of a device array (a counted transfer); anything else goes through ``numpy.asarray``."""
    del stream, blocking
    if isinstance(a, ndarray):
        if out is not None:
            if not isinstance(out, _np.ndarray):
                raise TypeError("Only numpy.ndarray can be obtained from cupy.ndarray")
            if out.shape != a.shape or out.dtype != a.dtype:
                raise ValueError("out must have the shape and dtype of the array")
            out[...] = a._a
            host = out
        else:
            host = _np.array(a._a, order=order, copy=True)
        _core.record_sync("asnumpy")
        return host
    host = _np.asarray(a, order=order)
    if out is not None:
        out[...] = host
        return out
    return host


def get_array_module(*args):
    """This module if any argument is a device array, else ``numpy``."""
    for arg in args:
        if isinstance(arg, ndarray):
            return _sys.modules[__name__]
    return _np


def get_default_memory_pool():
    return _core.default_memory_pool


def get_default_pinned_memory_pool():
    return _core.default_pinned_memory_pool


def is_available():
    return True


# ---------------------------------------------------------------------------
# Functions wrapping NumPy's
# ---------------------------------------------------------------------------

def _define(name, np_func, check, sync=False):
    def function(*args, **kwargs):
        check(name, args, kwargs)
        result = _core.call_numpy(np_func, args, kwargs)
        if sync:
            _core.record_sync("nonzero")
        return result

    function.__name__ = name
    function.__qualname__ = name
    function.__doc__ = f"Device version of :func:`numpy.{np_func.__name__}` (strict CuPy test double)."
    globals()[name] = function


def _no_array(name, args, kwargs):
    """Creation functions: no array argument is required (NumPy arrays are still refused by unwrap)."""


def _first_array(name, args, kwargs):
    if args:
        _core.require_device(args[0], f"the array argument of cupy.{name}")


def _sequence_of_arrays(name, args, kwargs):
    arrays = args[0] if args else kwargs.get("arrays", kwargs.get("tup"))
    if isinstance(arrays, ndarray):
        return
    if not isinstance(arrays, (list, tuple)):
        raise TypeError(f"cupy.{name} needs a sequence of cupy.ndarray, got {type(arrays)}")
    for a in arrays:
        _core.require_device(a, f"every array given to cupy.{name}")


def _every_array(name, args, kwargs):
    for a in args:
        _core.require_device(a, f"every argument of cupy.{name}")


def _einsum_operands(name, args, kwargs):
    if not args or not isinstance(args[0], str):
        raise TypeError("cupy.einsum needs a subscripts string first (the strict double does not model "
                        "the interleaved operand/sublist form)")
    for a in args[1:]:
        _core.require_device(a, "every operand of cupy.einsum")


def _array_and_operand(name, args, kwargs):
    """Two data arguments: the first a device array, the second a device array or a scalar."""
    _first_array(name, args, kwargs)
    if len(args) > 1:
        _core.kernel_arg_device(args[1])


_CREATION = ("empty", "zeros", "ones", "full", "arange", "linspace", "logspace", "eye", "identity", "tri")

_ARRAY_FIRST = (
    # creation from an array
    "empty_like", "zeros_like", "ones_like", "full_like", "copy", "diag", "diagflat", "tril", "triu",
    # shape manipulation
    "reshape", "ravel", "transpose", "swapaxes", "moveaxis", "rollaxis", "squeeze", "expand_dims",
    "broadcast_to", "split", "array_split", "tile", "repeat", "flip", "fliplr", "flipud", "roll", "rot90",
    "pad", "take", "take_along_axis", "diagonal", "ndim", "shape", "size",
    # reductions and statistics
    "sum", "prod", "mean", "std", "var", "max", "min", "amax", "amin", "argmax", "argmin", "any", "all",
    "nansum", "nanprod", "nanmean", "nanmax", "nanmin", "nanargmax", "nanargmin", "average", "median",
    "ptp", "count_nonzero", "cumsum", "cumprod", "trace", "diff",
    # elementwise functions that are not ufuncs in NumPy
    "clip", "around", "round", "real", "imag", "angle", "isclose", "nan_to_num", "sort", "argsort",
    "searchsorted", "histogram",
    # products
    "dot", "vdot", "inner", "outer", "tensordot", "kron", "cross",
)

_SEQUENCES = ("stack", "concatenate", "vstack", "hstack", "dstack", "column_stack")
_EVERY = ("meshgrid", "broadcast_arrays", "atleast_1d", "atleast_2d", "atleast_3d")
_SYNCING = ("nonzero", "argwhere", "flatnonzero", "unique", "compress", "extract")

for _name in _CREATION:
    _define(_name, getattr(_np, _name), _no_array)
for _name in _ARRAY_FIRST:
    _define(_name, getattr(_np, _name), _first_array)
for _name in _SEQUENCES:
    _define(_name, getattr(_np, _name), _sequence_of_arrays)
for _name in _EVERY:
    _define(_name, getattr(_np, _name), _every_array)
for _name in _SYNCING:
    _define(_name, getattr(_np, _name), _first_array, sync=True)
_define("einsum", _np.einsum, _einsum_operands)


def _bool_result(np_func):
    def function(a, b, *args, **kwargs):
        _core.require_device(a, "a")
        _core.kernel_arg_device(b)
        return _core.wrap(_np.asarray(_core.call_numpy(np_func, (a, b) + args, kwargs)))

    function.__name__ = np_func.__name__
    function.__doc__ = (f"Device version of :func:`numpy.{np_func.__name__}`: a 0-d device bool array "
                        "(as in CuPy), not a Python bool.")
    return function


array_equal = _bool_result(_np.array_equal)
array_equiv = _bool_result(_np.array_equiv)
allclose = _bool_result(_np.allclose)


def where(condition, x=None, y=None):
    """``where(condition, x, y)`` on the device; ``where(condition)`` is ``nonzero`` (a counted sync)."""
    _core.require_device(condition, "condition")
    if x is None and y is None:
        result = _core.call_numpy(_np.where, (condition,), {})
        _core.record_sync("nonzero")
        return result
    if x is None or y is None:
        raise ValueError("Must provide both 'x' and 'y' or neither.")
    return _core.call_numpy(_np.where, (condition, _core.kernel_arg_device(x), _core.kernel_arg_device(y)), {})


def copyto(dst, src, casting="same_kind", where=True):
    """Copy ``src`` (a device array or a scalar) into the device array ``dst``."""
    _core.require_device(dst, "dst")
    _core.kernel_arg_device(src)
    if where is not True:
        _core.require_device(where, "where")
    _core.call_numpy(_np.copyto, (dst, src), {"casting": casting, "where": where})


def result_type(*arrays_and_dtypes):
    """NumPy's ``result_type`` with device arrays standing for their dtype."""
    return _np.result_type(*[a.dtype if isinstance(a, ndarray) else _core.unwrap(a, {})
                             for a in arrays_and_dtypes])


def can_cast(from_, to, casting="safe"):
    if isinstance(from_, ndarray):
        from_ = from_.dtype
    return _np.can_cast(_core.unwrap(from_, {}), to, casting)


def shares_memory(a, b, max_work=None):
    _core.require_device(a, "a")
    _core.require_device(b, "b")
    return _builtins.bool(_np.shares_memory(a._a, b._a, max_work=max_work))


def may_share_memory(a, b, max_work=None):
    _core.require_device(a, "a")
    _core.require_device(b, "b")
    return _builtins.bool(_np.may_share_memory(a._a, b._a, max_work=max_work))


# ---------------------------------------------------------------------------
# ufuncs
# ---------------------------------------------------------------------------

_UFUNCS = (
    "add", "subtract", "multiply", "divide", "true_divide", "floor_divide", "negative", "positive",
    "power", "float_power", "remainder", "mod", "fmod", "divmod", "absolute", "abs", "fabs", "sign",
    "conjugate", "conj", "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sqrt", "square",
    "cbrt", "reciprocal", "sin", "cos", "tan", "arcsin", "arccos", "arctan", "arctan2", "sinh", "cosh",
    "tanh", "arcsinh", "arccosh", "arctanh", "hypot", "deg2rad", "rad2deg", "degrees", "radians",
    "floor", "ceil", "trunc", "rint", "maximum", "minimum", "fmax", "fmin", "greater", "greater_equal",
    "less", "less_equal", "equal", "not_equal", "logical_and", "logical_or", "logical_xor", "logical_not",
    "bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not", "invert", "left_shift", "right_shift",
    "isfinite", "isinf", "isnan", "signbit", "copysign", "nextafter", "ldexp", "frexp", "modf",
    "heaviside", "logaddexp", "logaddexp2", "gcd", "lcm", "matmul",
)

for _name in _UFUNCS:
    globals()[_name] = ufunc(getattr(_np, _name), _name)
del _name

__all__ += list(_CREATION + _ARRAY_FIRST + _SEQUENCES + _EVERY + _SYNCING + _UFUNCS) + ["einsum"]
__all__ += [name for name, value in list(globals().items())
            if isinstance(value, type) and issubclass(value, _np.generic)]


# ---------------------------------------------------------------------------
# Submodules and the whitelist
# ---------------------------------------------------------------------------

from cupy import cuda, fft, lib, linalg  # noqa: E402,F401  (they use the names above)

_SUBMODULES = ("cuda", "fft", "lib", "linalg")


def __getattr__(name):
    raise AttributeError(
        f"module 'cupy' has no attribute {name!r}: the strict CuPy test double only provides a "
        "whitelist of names (see tests/strict_cupy/cupy/__init__.py)")
