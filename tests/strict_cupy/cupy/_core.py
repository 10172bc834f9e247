"""Internals of the strict CuPy test double: the device array type, the transfer/sync
counters, the memory-pool model and the wrapping of NumPy calls.

See the package docstring (``cupy/__init__.py``) for what the double is and where it
deliberately differs from real CuPy.
"""

import contextlib
import importlib
import os
import sys
import weakref

import numpy as np

IMPLICIT_CONVERSION_MESSAGE = (
    "Implicit conversion to a NumPy array is not allowed. "
    "Please use `.get()` to construct a NumPy array explicitly."
)

# Kinds of device→host transfer or host-blocking synchronisation that are counted.
SYNC_KINDS = (
    "get",          # ndarray.get()
    "asnumpy",      # cupy.asnumpy(device_array)
    "float",        # float(device_array)
    "int",          # int(device_array)
    "bool",         # bool(device_array), also `if device_array:` and `x in device_array`
    "complex",      # complex(device_array)
    "item",         # ndarray.item()
    "tolist",       # ndarray.tolist()
    "repr",         # repr()/str()/format() of a device array (CuPy copies it to the host to print it)
    "nonzero",      # data-dependent output shape: boolean-mask indexing, nonzero, argwhere, unique, ...
    "synchronize",  # Device/Stream/Event.synchronize(), cuda.runtime.deviceSynchronize()
)

MAX_LOCATIONS = 10_000   # per counter object; further events are counted but their locations dropped
CHAIN_DEPTH = 4          # frames kept in StrictCounters.chains for each sync

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_INSIDE = (os.path.join(_ROOT, "cupy") + os.sep, os.path.join(_ROOT, "cupyx") + os.sep)


def _cupy():
    """The double's top-level ``cupy`` module (imported lazily: it imports this module)."""
    return importlib.import_module(__package__)


# ---------------------------------------------------------------------------
# Counting
# ---------------------------------------------------------------------------

class StrictCounters:
    """How many device→host transfers, host-blocking syncs and host→device uploads happened.

    Integer fields: one per kind in ``SYNC_KINDS`` (``get``, ``asnumpy``, ``float``, ``int``,
    ``bool``, ``complex``, ``item``, ``tolist``, ``repr``, ``nonzero``, ``synchronize``) and
    ``uploads``. ``syncs`` is the total of the ``SYNC_KINDS`` fields. ``locations`` lists
    ``(kind, "file:line")`` for every counted sync, the line being the first caller outside
    the double; ``chains`` lists ``(kind, ("file:line", ...))`` with up to ``CHAIN_DEPTH``
    such frames, innermost first (to see past helpers such as ``sflnet.backend.to_host``);
    ``upload_locations`` lists ``(what, "file:line")`` for every upload.
    """

    def __init__(self):
        self.reset()

    def reset(self):
        """Set every count to zero and forget the recorded locations."""
        for kind in SYNC_KINDS:
            setattr(self, kind, 0)
        self.uploads = 0
        self.locations = []
        self.chains = []
        self.upload_locations = []

    @property
    def syncs(self):
        """Device→host transfers plus explicit synchronisations: the sum of the ``SYNC_KINDS`` fields."""
        return sum(getattr(self, kind) for kind in SYNC_KINDS)

    def as_dict(self):
        """``{kind: count}`` for every kind, plus ``uploads`` and ``syncs``."""
        counts = {kind: getattr(self, kind) for kind in SYNC_KINDS}
        counts["uploads"] = self.uploads
        counts["syncs"] = self.syncs
        return counts

    def sync_report(self, chains=False):
        """One line per distinct (kind, location) of the recorded syncs, with how often it happened;
        with ``chains=True`` the location is the chain of callers (``a <- b <- c``)."""
        seen = {}
        entries = ((k, " <- ".join(c)) for k, c in self.chains) if chains else self.locations
        for entry in entries:
            seen[entry] = seen.get(entry, 0) + 1
        return "\n".join(f"{count:4d} x {kind:<11s} {where}" for (kind, where), count in seen.items())

    def __repr__(self):
        nonzero = ", ".join(f"{k}={v}" for k, v in self.as_dict().items() if v and k != "syncs")
        return f"StrictCounters(syncs={self.syncs}{', ' if nonzero else ''}{nonzero})"


strict_counters = StrictCounters()   # process-wide totals since import (or the last reset())
_recorders = []                      # the objects yielded by active strict_counting() blocks


@contextlib.contextmanager
def strict_counting():
    """Count only what happens inside the ``with`` block: yields a fresh :class:`StrictCounters`.

    The global ``strict_counters`` keeps counting too. Blocks may nest.
    """
    recorder = StrictCounters()
    _recorders.append(recorder)
    try:
        yield recorder
    finally:
        _recorders.remove(recorder)


def _short(path):
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def _outside_frames(depth):
    """``"file:line"`` of the ``depth`` innermost frames that are not part of the double, innermost first."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_INSIDE):
        frame = frame.f_back
    chain = []
    while frame is not None and len(chain) < depth:
        chain.append(f"{_short(frame.f_code.co_filename)}:{frame.f_lineno}")
        frame = frame.f_back
    return tuple(chain) or ("<unknown>",)


def record_sync(kind):
    """Count one device→host transfer or synchronisation of ``kind`` (one of ``SYNC_KINDS``)."""
    chain = _outside_frames(CHAIN_DEPTH)
    for counters in (strict_counters, *_recorders):
        setattr(counters, kind, getattr(counters, kind) + 1)
        if len(counters.locations) < MAX_LOCATIONS:
            counters.locations.append((kind, chain[0]))
            counters.chains.append((kind, chain))


def record_upload(what):
    """Count one host→device copy (``what`` says which call made it)."""
    where = _outside_frames(1)[0]
    for counters in (strict_counters, *_recorders):
        counters.uploads += 1
        if len(counters.upload_locations) < MAX_LOCATIONS:
            counters.upload_locations.append((what, where))


# ---------------------------------------------------------------------------
# Memory-pool model
# ---------------------------------------------------------------------------

class MemoryPool:
    """A model of CuPy's default device memory pool.

    ``used_bytes()`` is the size of the NumPy buffers that live device arrays own;
    ``total_bytes()`` also keeps freed bytes "cached" (as CuPy's pool does) until
    :meth:`free_all_blocks`. No rounding to CUDA allocation sizes.
    """

    def __init__(self):
        self._live = {}
        self._used = 0
        self._total = 0
        self._limit = 0

    def _track(self, a):
        root = a
        while isinstance(root.base, np.ndarray):
            root = root.base
        if not root.flags.owndata:
            return
        key = id(root)
        if key in self._live:
            return
        size = root.nbytes
        self._live[key] = size
        self._used += size
        self._total = max(self._total, self._used)
        weakref.finalize(root, self._release, key)

    def _release(self, key):
        self._used -= self._live.pop(key, 0)

    def used_bytes(self):
        return self._used

    def total_bytes(self):
        return self._total

    def free_bytes(self):
        return self._total - self._used

    def free_all_blocks(self, stream=None):
        del stream
        self._total = self._used

    def n_free_blocks(self):
        return 1 if self._total > self._used else 0

    def set_limit(self, size=None, fraction=None):
        del fraction
        self._limit = int(size or 0)

    def get_limit(self):
        return self._limit


class PinnedMemoryPool:
    """Stub of CuPy's pinned host memory pool (the double never pins memory)."""

    def free_all_blocks(self):
        pass

    def n_free_blocks(self):
        return 0


default_memory_pool = MemoryPool()
default_pinned_memory_pool = PinnedMemoryPool()


# ---------------------------------------------------------------------------
# Argument checking, unwrapping and wrapping
# ---------------------------------------------------------------------------

def unsupported(x):
    return TypeError(f"Unsupported type {type(x)}")


def is_scalar(x):
    """A Python or NumPy numeric scalar: allowed wherever CuPy allows a scalar kernel argument."""
    if isinstance(x, np.generic):
        return x.dtype.kind in "biufc"
    return isinstance(x, (bool, int, float, complex))


def wrap(a):
    """A new device array around the NumPy array ``a`` (which becomes device memory)."""
    obj = ndarray.__new__(ndarray)
    obj._a = a
    default_memory_pool._track(a)
    return obj


def unwrap(x, originals):
    """``x`` with every device array replaced by its private NumPy array, recursively in lists and
    tuples. A ``numpy.ndarray`` anywhere raises TypeError. ``originals`` collects ``id(private) → device``."""
    if isinstance(x, ndarray):
        originals[id(x._a)] = x
        return x._a
    if isinstance(x, np.ndarray):
        raise unsupported(x)
    if isinstance(x, (list, tuple)):
        items = [unwrap(item, originals) for item in x]
        return items if isinstance(x, list) else tuple(items)
    return x


def wrap_result(r, originals):
    """NumPy results back to the device: arrays wrapped (the very device array when NumPy returned
    one of the inputs' arrays), NumPy scalars as 0-d device arrays, tuples/lists element-wise."""
    if isinstance(r, np.ndarray):
        original = originals.get(id(r))
        if original is not None and original._a is r:
            return original
        return wrap(r)
    if isinstance(r, np.generic):
        return wrap(np.asarray(r))
    if isinstance(r, tuple) and not hasattr(r, "_fields"):
        return tuple(wrap_result(item, originals) for item in r)
    if isinstance(r, list):
        return [wrap_result(item, originals) for item in r]
    return r


def call_numpy(func, args, kwargs):
    """``func(*args, **kwargs)`` on the unwrapped arguments, results wrapped back."""
    originals = {}
    args = unwrap(tuple(args), originals)
    kwargs = {k: unwrap(v, originals) for k, v in kwargs.items()}
    return wrap_result(func(*args, **kwargs), originals)


def require_device(x, what="argument"):
    if not isinstance(x, ndarray):
        if isinstance(x, np.ndarray):
            raise unsupported(x)
        raise TypeError(f"{what} must be a cupy.ndarray, got {type(x)}")
    return x


def operand(x):
    """The NumPy value of an operator operand (a device array or a scalar), or NotImplemented."""
    if isinstance(x, ndarray):
        return x._a
    if is_scalar(x):
        return x
    if isinstance(x, np.ndarray):
        raise unsupported(x)
    if getattr(x, "__array_priority__", 0) > ndarray.__array_priority__:
        return NotImplemented
    raise unsupported(x)


def kernel_arg(x):
    """The NumPy value of a ufunc input: device arrays and scalars only (as CuPy's kernels)."""
    if isinstance(x, ndarray):
        return x._a
    if is_scalar(x):
        return x
    raise unsupported(x)


def _index_part(s, events):
    """One component of an index, converted for NumPy. Lists and NumPy arrays are uploaded as
    CuPy does; boolean arrays need their count of True on the host (a sync)."""
    if s is None or s is Ellipsis or isinstance(s, slice):
        return s
    if isinstance(s, (bool, np.bool_)):
        return s
    if isinstance(s, (int, np.integer)):
        return s
    if isinstance(s, ndarray):
        arr = s._a
    elif isinstance(s, (list, tuple, np.ndarray)):
        arr = np.asarray(s)
        if arr.dtype.kind == "O":
            raise IndexError("arrays used as indices must be of integer (or boolean) type")
        if arr.size == 0 and not isinstance(s, np.ndarray):
            arr = arr.astype(np.intp)
        events.append(("upload", "index array"))
    else:
        raise IndexError("only integers, slices (`:`), ellipsis (`...`), numpy.newaxis (`None`) and "
                         f"integer or boolean arrays are valid indices (got {type(s)})")
    if arr.dtype.kind not in "biu":
        raise IndexError(f"arrays used as indices must be of integer or boolean type. (actual: {arr.dtype.type})")
    if arr.dtype.kind == "b":
        events.append(("sync", "nonzero"))
    return arr


def convert_index(key, events):
    """``key`` for NumPy. A purely basic index always gets a trailing ``...``, so that NumPy returns
    a view (a 0-d view for all-integer indices) as CuPy does, never a NumPy scalar."""
    parts = key if isinstance(key, tuple) else (key,)
    converted = [_index_part(s, events) for s in parts]
    basic = all(s is None or s is Ellipsis or isinstance(s, (slice, int, np.integer))
                and not isinstance(s, (bool, np.bool_)) for s in converted)
    if basic and not any(s is Ellipsis for s in converted):
        converted.append(Ellipsis)
    return tuple(converted)


def flush_events(events):
    for kind, what in events:
        if kind == "upload":
            record_upload(what)
        else:
            record_sync(what)


# ---------------------------------------------------------------------------
# The device array
# ---------------------------------------------------------------------------

_OPERATOR_UFUNCS = frozenset({
    "add", "subtract", "multiply", "divide", "true_divide", "floor_divide", "remainder", "power",
    "divmod", "matmul", "bitwise_and", "bitwise_or", "bitwise_xor", "left_shift", "right_shift",
    "less", "less_equal", "equal", "not_equal", "greater", "greater_equal",
})
_COMPARISON_UFUNCS = frozenset({"less", "less_equal", "equal", "not_equal", "greater", "greater_equal"})


class _Flags:
    """``ndarray.flags``: c_contiguous, f_contiguous, owndata (attributes or ``flags["C_CONTIGUOUS"]``)."""

    def __init__(self, a):
        self.c_contiguous = bool(a.flags.c_contiguous)
        self.f_contiguous = bool(a.flags.f_contiguous)
        self.owndata = bool(a.flags.owndata)

    def __getitem__(self, name):
        keys = {"C_CONTIGUOUS": "c_contiguous", "F_CONTIGUOUS": "f_contiguous", "OWNDATA": "owndata"}
        return getattr(self, keys[name])

    def __repr__(self):
        return (f"  C_CONTIGUOUS : {self.c_contiguous}\n  F_CONTIGUOUS : {self.f_contiguous}\n"
                f"  OWNDATA : {self.owndata}")


def _binary_operator(name):
    func = getattr(np, name)

    def forward(self, other):
        value = operand(other)
        if value is NotImplemented:
            return NotImplemented
        return wrap_result(func(self._a, value), {})

    def reflected(self, other):
        value = operand(other)
        if value is NotImplemented:
            return NotImplemented
        return wrap_result(func(value, self._a), {})

    def inplace(self, other):
        value = operand(other)
        if value is NotImplemented:
            raise unsupported(other)
        func(self._a, value, out=self._a)
        return self

    return forward, reflected, inplace


def _comparison(name):
    func = getattr(np, name)

    def compare(self, other):
        value = operand(other)
        if value is NotImplemented:
            return NotImplemented
        return wrap_result(func(self._a, value), {})

    return compare


def _method(name):
    """A method run by NumPy's method of the same name on the private array."""
    def method(self, *args, **kwargs):
        originals = {id(self._a): self}
        args = unwrap(args, originals)
        kwargs = {k: unwrap(v, originals) for k, v in kwargs.items()}
        return wrap_result(getattr(self._a, name)(*args, **kwargs), originals)

    method.__name__ = name
    method.__doc__ = f"Device version of :meth:`numpy.ndarray.{name}` (result on the device)."
    return method


class ndarray:
    """A device array of the strict CuPy test double: not a ``numpy.ndarray``, it only wraps one.

    NumPy refuses it (``numpy.asarray``, NumPy functions and ufuncs raise TypeError with
    CuPy's message); mixing it with ``numpy.ndarray`` operands raises TypeError; every
    transfer to the host is counted (see ``cupy.strict_counters``).
    """

    __slots__ = ("_a", "__weakref__")
    __array_priority__ = 100
    __hash__ = None

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        if memptr is not None or strides is not None:
            raise NotImplementedError("the strict CuPy test double does not support memptr/strides")
        self._a = np.empty(shape, dtype=dtype, order=order)
        default_memory_pool._track(self._a)

    # -- NumPy interoperability: refused ------------------------------------------------------

    def __array__(self, *args, **kwargs):
        raise TypeError(IMPLICIT_CONVERSION_MESSAGE)

    def __array_function__(self, func, types, args, kwargs):
        raise TypeError(IMPLICIT_CONVERSION_MESSAGE)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        name = ufunc.__name__
        # A NumPy scalar as the left operand of a Python operator (`np.float32(2) * x`) reaches us as
        # `multiply(np.float32(2), x)` (comparisons: as a 0-d array, numpy/numpy#12142). CuPy runs it.
        if (method == "__call__" and not kwargs and len(inputs) == 2 and inputs[1] is self
                and name in _OPERATOR_UFUNCS and not isinstance(inputs[0], ndarray)):
            left = inputs[0]
            if isinstance(left, np.ndarray) and left.ndim == 0 and name in _COMPARISON_UFUNCS:
                left = left[()]
            if is_scalar(left):
                return getattr(_cupy(), name)(left, self)
        outs = kwargs.get("out") or ()
        for x in tuple(inputs) + tuple(outs if isinstance(outs, tuple) else (outs,)):
            if isinstance(x, np.ndarray):
                raise unsupported(x)
        raise TypeError(IMPLICIT_CONVERSION_MESSAGE)

    # -- transfers to the host (counted) ---------------------------------------------------------

    def get(self, stream=None, order="C", out=None, blocking=True):
        """A NumPy copy of the array (a counted device→host transfer)."""
        del stream, blocking
        if out is not None:
            if not isinstance(out, np.ndarray):
                raise TypeError("Only numpy.ndarray can be obtained from cupy.ndarray")
            if out.dtype != self.dtype:
                raise TypeError(f"{out.dtype} array cannot be obtained from {self.dtype} array")
            if out.shape != self.shape:
                raise ValueError(f"Shape mismatch. Expected shape: {self.shape}, actual shape: {out.shape}")
            out[...] = self._a
            record_sync("get")
            return out
        host = np.array(self._a, order=order, copy=True)
        record_sync("get")
        return host

    def set(self, arr, stream=None):
        """Copy the NumPy array ``arr`` into this array (a counted host→device upload)."""
        del stream
        if not isinstance(arr, np.ndarray):
            raise TypeError("Only numpy.ndarray can be set to cupy.ndarray")
        if arr.dtype != self.dtype:
            raise TypeError(f"{arr.dtype} array cannot be set to {self.dtype} array")
        if arr.shape != self.shape:
            raise ValueError(f"Shape mismatch. Old shape: {self.shape}, new shape: {arr.shape}")
        self._a[...] = arr
        record_upload("ndarray.set")

    def item(self, *args):
        value = self._a.item(*args)
        record_sync("item")
        return value

    def tolist(self):
        value = self._a.tolist()
        record_sync("tolist")
        return value

    def __float__(self):
        value = float(self._a)
        record_sync("float")
        return value

    def __int__(self):
        value = int(self._a)
        record_sync("int")
        return value

    def __complex__(self):
        value = complex(self._a)
        record_sync("complex")
        return value

    def __bool__(self):
        if self._a.size != 1:
            return bool(self._a)   # raises, as NumPy and CuPy do, before any transfer
        value = bool(self._a)
        record_sync("bool")
        return value

    def __repr__(self):
        text = repr(self._a)
        record_sync("repr")
        return text

    def __str__(self):
        text = str(self._a)
        record_sync("repr")
        return text

    def __format__(self, spec):
        text = format(self._a, spec)
        record_sync("repr")
        return text

    def __reduce__(self):
        return _cupy().array, (self.get(),)

    # -- attributes --------------------------------------------------------------------------

    @property
    def shape(self):
        return self._a.shape

    @shape.setter
    def shape(self, value):
        self._a.shape = value

    @property
    def dtype(self):
        return self._a.dtype

    @property
    def ndim(self):
        return self._a.ndim

    @property
    def size(self):
        return self._a.size

    @property
    def itemsize(self):
        return self._a.itemsize

    @property
    def nbytes(self):
        return self._a.nbytes

    @property
    def strides(self):
        return self._a.strides

    @property
    def flags(self):
        return _Flags(self._a)

    @property
    def T(self):
        return wrap(self._a.T)

    @property
    def real(self):
        return wrap_result(self._a.real, {id(self._a): self})

    @real.setter
    def real(self, value):
        self._a.real = _assigned_value(value)

    @property
    def imag(self):
        return wrap_result(self._a.imag, {})

    @imag.setter
    def imag(self, value):
        self._a.imag = _assigned_value(value)

    @property
    def device(self):
        return _cupy().cuda.Device(0)

    # -- container protocol --------------------------------------------------------------------

    def __len__(self):
        if self._a.ndim == 0:
            raise TypeError("len() of unsized object")
        return self._a.shape[0]

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self._a.shape[0]))

    def __getitem__(self, key):
        events = []
        result = self._a[convert_index(key, events)]
        flush_events(events)
        return wrap_result(result, {id(self._a): self})

    def __setitem__(self, key, value):
        events = []
        index = convert_index(key, events)
        self._a[index] = _assigned_value(value)
        flush_events(events)

    # -- copies and views ------------------------------------------------------------------------

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        del subok
        kwargs = {} if casting is None else {"casting": casting}
        return wrap_result(self._a.astype(dtype, order=order, copy=copy, **kwargs), {id(self._a): self})

    def copy(self, order="C"):
        return wrap(self._a.copy(order=order))

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()

    def view(self, dtype=None):
        return wrap(self._a.view() if dtype is None else self._a.view(dtype))

    def fill(self, value):
        if isinstance(value, np.ndarray):
            if value.shape != ():
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
            value = value.item()
        elif isinstance(value, ndarray):
            if value.shape != ():
                raise ValueError("non-scalar cupy.ndarray cannot be used for fill")
            self._a[...] = value._a
            return
        elif not is_scalar(value):
            raise unsupported(value)
        self._a.fill(value)

    def dot(self, b, out=None):
        require_device(b, "b")
        if out is not None:
            require_device(out, "out")
        return _cupy().dot(self, b, out=out)

    def nonzero(self):
        result = call_numpy(self._a.nonzero, (), {})
        record_sync("nonzero")
        return result

    def ptp(self, axis=None, out=None, keepdims=False):
        return _cupy().ptp(self, axis=axis, out=out, keepdims=keepdims)

    # The rest map one-to-one onto NumPy's methods (views stay views, reductions give 0-d arrays).
    reshape = _method("reshape")
    transpose = _method("transpose")
    swapaxes = _method("swapaxes")
    ravel = _method("ravel")
    flatten = _method("flatten")
    squeeze = _method("squeeze")
    repeat = _method("repeat")
    diagonal = _method("diagonal")
    trace = _method("trace")
    clip = _method("clip")
    conj = _method("conj")
    conjugate = _method("conjugate")
    sum = _method("sum")
    mean = _method("mean")
    max = _method("max")
    min = _method("min")
    prod = _method("prod")
    any = _method("any")
    all = _method("all")
    argmax = _method("argmax")
    argmin = _method("argmin")
    std = _method("std")
    var = _method("var")
    cumsum = _method("cumsum")
    cumprod = _method("cumprod")
    round = _method("round")
    sort = _method("sort")
    argsort = _method("argsort")

    def take(self, indices, axis=None, out=None, mode="raise"):
        events = []
        if not isinstance(indices, (ndarray, int, np.integer)):
            indices = _index_part(indices, events)
            if indices.dtype.kind == "b":
                raise IndexError("take() needs integer indices")
        result = call_numpy(self._a.take, (indices,), {"axis": axis, "out": out, "mode": mode})
        flush_events(events)
        return result

    # -- operators -----------------------------------------------------------------------------

    __add__, __radd__, __iadd__ = _binary_operator("add")
    __sub__, __rsub__, __isub__ = _binary_operator("subtract")
    __mul__, __rmul__, __imul__ = _binary_operator("multiply")
    __truediv__, __rtruediv__, __itruediv__ = _binary_operator("true_divide")
    __floordiv__, __rfloordiv__, __ifloordiv__ = _binary_operator("floor_divide")
    __mod__, __rmod__, __imod__ = _binary_operator("remainder")
    __pow__, __rpow__, __ipow__ = _binary_operator("power")
    __matmul__, __rmatmul__, __imatmul__ = _binary_operator("matmul")
    __and__, __rand__, __iand__ = _binary_operator("bitwise_and")
    __or__, __ror__, __ior__ = _binary_operator("bitwise_or")
    __xor__, __rxor__, __ixor__ = _binary_operator("bitwise_xor")
    __lshift__, __rlshift__, __ilshift__ = _binary_operator("left_shift")
    __rshift__, __rrshift__, __irshift__ = _binary_operator("right_shift")
    __divmod__, __rdivmod__, _ = _binary_operator("divmod")
    del _

    __lt__ = _comparison("less")
    __le__ = _comparison("less_equal")
    __eq__ = _comparison("equal")
    __ne__ = _comparison("not_equal")
    __gt__ = _comparison("greater")
    __ge__ = _comparison("greater_equal")

    def __neg__(self):
        return wrap_result(np.negative(self._a), {})

    def __pos__(self):
        return wrap_result(np.positive(self._a), {})

    def __abs__(self):
        return wrap_result(np.absolute(self._a), {})

    def __invert__(self):
        return wrap_result(np.invert(self._a), {})


ndarray.__module__ = "cupy"


def _assigned_value(value):
    """The NumPy value of the right-hand side of an assignment into a device array."""
    if isinstance(value, ndarray):
        return value._a
    if is_scalar(value):
        return value
    raise unsupported(value)


# ---------------------------------------------------------------------------
# Universal functions
# ---------------------------------------------------------------------------

class ufunc:
    """A CuPy-style ufunc backed by a NumPy ufunc: inputs must be device arrays or scalars,
    ``out`` (keyword, positional, or a tuple) must be device arrays; results are device arrays."""

    def __init__(self, np_ufunc, name=None):
        self._ufunc = np_ufunc
        self.__name__ = name or np_ufunc.__name__
        self.__doc__ = f"Device version of :data:`numpy.{np_ufunc.__name__}`."
        self.nin = np_ufunc.nin
        self.nout = np_ufunc.nout
        self.nargs = np_ufunc.nargs

    def __repr__(self):
        return f"<ufunc '{self.__name__}'>"

    def _outs(self, out, originals):
        if out is None:
            return None
        outs = out if isinstance(out, tuple) else (out,)
        converted = []
        for o in outs:
            if o is None:
                converted.append(None)
                continue
            if not isinstance(o, ndarray):
                raise unsupported(o)
            originals[id(o._a)] = o
            converted.append(o._a)
        return tuple(converted)

    def __call__(self, *args, out=None, **kwargs):
        if len(args) > self.nin:
            if out is not None:
                raise TypeError("cannot specify 'out' as both a positional and keyword argument")
            out = tuple(args[self.nin:])
            args = args[:self.nin]
        if len(args) != self.nin:
            raise TypeError(f"Wrong number of arguments for {self.__name__!r}: {len(args)} given, {self.nin} needed")
        values = [kernel_arg(x) for x in args]
        originals = {}
        outs = self._outs(out, originals)
        kwargs = {k: unwrap(v, originals) for k, v in kwargs.items()}
        if outs is not None:
            kwargs["out"] = outs
        result = self._ufunc(*values, **kwargs)
        return wrap_result(result, originals)

    def reduce(self, array, axis=0, dtype=None, out=None, keepdims=False):
        require_device(array, "array")
        return call_numpy(self._ufunc.reduce, (array,),
                          {"axis": axis, "dtype": dtype, "out": out, "keepdims": keepdims})

    def accumulate(self, array, axis=0, dtype=None, out=None):
        require_device(array, "array")
        return call_numpy(self._ufunc.accumulate, (array,), {"axis": axis, "dtype": dtype, "out": out})

    def outer(self, a, b, **kwargs):
        return call_numpy(self._ufunc.outer, (kernel_arg_device(a), kernel_arg_device(b)), kwargs)


def kernel_arg_device(x):
    if isinstance(x, ndarray) or is_scalar(x):
        return x
    raise unsupported(x)
