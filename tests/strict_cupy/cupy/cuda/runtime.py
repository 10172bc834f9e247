"""``cupy.cuda.runtime`` stubs of the strict CuPy test double: one fake device, number 0."""

from cupy import _core

is_hip = False

TOTAL_GLOBAL_MEM = 16 << 30   # what the fake device claims to have


class CUDARuntimeError(RuntimeError):
    pass


def getDeviceCount():
    return 1


def getDevice():
    return 0


def setDevice(device):
    if device != 0:
        raise CUDARuntimeError("cudaErrorInvalidDevice: the strict CuPy test double has only device 0")


def getDeviceProperties(device):
    if device != 0:
        raise CUDARuntimeError("cudaErrorInvalidDevice: the strict CuPy test double has only device 0")
    return {
        "name": b"strict CuPy test double",
        "totalGlobalMem": TOTAL_GLOBAL_MEM,
        "multiProcessorCount": 1,
        "major": 9,
        "minor": 0,
        "warpSize": 32,
        "maxThreadsPerBlock": 1024,
        "sharedMemPerBlock": 48 << 10,
        "clockRate": 1_000_000,
        "pciBusID": 0,
    }


def deviceSynchronize():
    _core.record_sync("synchronize")


def memGetInfo():
    return TOTAL_GLOBAL_MEM - _core.default_memory_pool.total_bytes(), TOTAL_GLOBAL_MEM


def runtimeGetVersion():
    return 12000


def driverGetVersion():
    return 12000


def __getattr__(name):
    raise AttributeError(f"module 'cupy.cuda.runtime' has no attribute {name!r} (strict CuPy test double whitelist)")
