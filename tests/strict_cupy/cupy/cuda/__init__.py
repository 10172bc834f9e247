"""``cupy.cuda`` stubs of the strict CuPy test double: device 0, trivial streams and events.

``synchronize()`` of a Device, Stream or Event is a counted sync (kind ``synchronize``).
"""

import time as _time

from cupy import _core
from cupy.cuda import runtime  # noqa: F401


class Device:
    """The one fake CUDA device (id 0); a context manager, as CuPy's."""

    def __init__(self, device=None):
        device = 0 if device is None else int(device)
        if device != 0:
            raise runtime.CUDARuntimeError("cudaErrorInvalidDevice: the strict CuPy test double has only device 0")
        self.id = device

    def synchronize(self):
        _core.record_sync("synchronize")

    def use(self):
        pass

    @property
    def compute_capability(self):
        return "90"

    @property
    def mem_info(self):
        return runtime.memGetInfo()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __int__(self):
        return self.id

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


class Event:
    """An event: ``record()`` notes the host time (work is already done), ``synchronize()`` is counted."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        del block, interprocess
        self.disable_timing = disable_timing
        self._time = None

    def record(self, stream=None):
        del stream
        self._time = _time.perf_counter()

    def synchronize(self):
        _core.record_sync("synchronize")

    @property
    def done(self):
        return True


class Stream:
    """A stream that runs nothing asynchronously; ``synchronize()`` is counted."""

    def __init__(self, null=False, non_blocking=False, ptr=0):
        del non_blocking
        self.ptr = 0 if null else ptr

    def synchronize(self):
        _core.record_sync("synchronize")

    def use(self):
        return self

    def record(self, event=None):
        event = Event() if event is None else event
        event.record(self)
        return event

    def wait_event(self, event):
        del event

    @property
    def done(self):
        return True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


Stream.null = Stream(null=True)


def get_current_stream():
    return Stream.null


def get_elapsed_time(start_event, end_event):
    """Milliseconds between two recorded events (host clock)."""
    if start_event._time is None or end_event._time is None:
        raise runtime.CUDARuntimeError("cudaErrorInvalidResourceHandle: event not recorded")
    return (end_event._time - start_event._time) * 1000.0


def is_available():
    return True


def get_device_id():
    return 0


def __getattr__(name):
    raise AttributeError(f"module 'cupy.cuda' has no attribute {name!r} (strict CuPy test double whitelist)")
