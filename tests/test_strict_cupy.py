"""The strict CuPy test double (tests/strict_cupy) itself: that it is as strict as CuPy at the
host/device boundary, that it computes what NumPy/SciPy compute, and that it counts every
transfer, sync and upload where it happens.

The double is imported once from tests/strict_cupy and put into ``sys.modules`` only for the
duration of each test, so that no ``cupy`` module is left behind (sflnet.backend looks there).
"""

import importlib
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage

from tests.conftest import STRICT_DIR, _is_cupy_module

IMPLICIT = re.escape("Implicit conversion to a NumPy array is not allowed. "
                     "Please use `.get()` to construct a NumPy array explicitly.")
UNSUPPORTED = re.escape("Unsupported type <class 'numpy.ndarray'>")


@pytest.fixture
def cp(strict_cupy):
    """The double as ``cupy`` for one test (tests/conftest.py: in ``sys.modules`` only while it runs)."""
    return strict_cupy


def test_the_double_is_loaded_from_tests_strict_cupy(cp):
    assert Path(cp.__file__).resolve().is_relative_to(STRICT_DIR.resolve()) and cp.STRICT_DOUBLE


@pytest.fixture
def ndimage(cp):
    return importlib.import_module("cupyx.scipy.ndimage")


# ---------------------------------------------------------------------------
# Strictness
# ---------------------------------------------------------------------------

def test_device_array_is_its_own_type(cp):
    d = cp.arange(6.0)
    assert type(d) is cp.ndarray
    assert not isinstance(d, np.ndarray)
    assert repr(type(d)) == "<class 'cupy.ndarray'>"


@pytest.mark.parametrize("convert", [np.asarray, np.array, lambda d: np.array([d, d]),
                                     lambda d: np.asarray([1.0, d[0]]), lambda d: np.ascontiguousarray(d)],
                         ids=["asarray", "array", "list-of-device", "mixed-list", "ascontiguousarray"])
def test_implicit_conversion_to_numpy_raises_cupys_message(cp, convert):
    with pytest.raises(TypeError, match=IMPLICIT):
        convert(cp.arange(3.0))


@pytest.mark.parametrize("call", [np.sum, np.exp, np.mean, np.tanh, lambda d: np.add(d, 1.0),
                                  lambda d: np.concatenate([d, d]), lambda d: np.where(d > 0, d, 0),
                                  lambda d: np.fft.fft(d), lambda d: np.multiply(d, 2, out=d)],
                         ids=["sum", "exp", "mean", "tanh", "add", "concatenate", "where", "fft", "multiply-out"])
def test_numpy_functions_and_ufuncs_on_device_arrays_raise(cp, call):
    d = cp.arange(1.0, 4.0)
    with pytest.raises(TypeError, match=IMPLICIT):
        call(d)
    assert d.get().tolist() == [1.0, 2.0, 3.0]


def test_scipy_on_a_device_array_raises(cp):
    d = cp.arange(8.0)
    with pytest.raises(TypeError, match=IMPLICIT):
        scipy.ndimage.correlate1d(d, [1.0, 2.0, 1.0])
    with pytest.raises(TypeError, match=IMPLICIT):
        scipy.ndimage.gaussian_filter(d, 1.0)


def _iadd(a, b):
    a += b


def _idev_mul(a, b):
    a *= b


@pytest.mark.parametrize("op", [
    lambda d, h: d + h, lambda d, h: h + d, lambda d, h: d * h, lambda d, h: h * d,
    lambda d, h: d - h, lambda d, h: h / d, lambda d, h: d @ h, lambda d, h: h @ d,
    lambda d, h: d == h, lambda d, h: h == d, lambda d, h: d < h, lambda d, h: h >= d,
    lambda d, h: _iadd(d, h), lambda d, h: _iadd(h, d), lambda d, h: _idev_mul(d, h),
    lambda d, h: (d > 0) & (h > 0),
], ids=["d+h", "h+d", "d*h", "h*d", "d-h", "h/d", "d@h", "h@d", "d==h", "h==d", "d<h", "h>=d",
        "d+=h", "h+=d", "d*=h", "d&h"])
def test_operators_refuse_numpy_arrays(cp, op):
    d = cp.arange(3.0)
    h = np.arange(3.0)
    with pytest.raises(TypeError, match=UNSUPPORTED):
        op(d, h)


def test_zero_d_numpy_arrays_are_not_scalars(cp):
    with pytest.raises(TypeError, match=UNSUPPORTED):
        cp.arange(3.0) * np.array(2.0)


@pytest.mark.parametrize("call", [
    lambda cp, h: cp.sum(h), lambda cp, h: cp.exp(h), lambda cp, h: cp.zeros_like(h),
    lambda cp, h: cp.stack([cp.asarray(h), h]), lambda cp, h: cp.concatenate((h, h)),
    lambda cp, h: cp.ascontiguousarray(h), lambda cp, h: cp.where(cp.asarray(h) > 0, h, 0.0),
    lambda cp, h: cp.multiply(cp.asarray(h), 2.0, out=h), lambda cp, h: cp.add(cp.asarray(h), h),
    lambda cp, h: cp.fft.fft2(h.reshape(2, 2)), lambda cp, h: cp.asarray(h).clip(h, None),
    lambda cp, h: cp.copyto(cp.asarray(h), h), lambda cp, h: cp.matmul(cp.asarray(h), h),
], ids=["sum", "exp", "zeros_like", "stack", "concatenate", "ascontiguousarray", "where", "out=host",
        "add", "fft2", "clip", "copyto", "matmul"])
def test_cupy_functions_refuse_numpy_arrays(cp, call):
    h = np.arange(4.0)
    with pytest.raises(TypeError):
        call(cp, h)


@pytest.mark.parametrize("call", [
    lambda cp: cp.ascontiguousarray([1.0, 2.0]), lambda cp: cp.sum([1.0, 2.0]),
    lambda cp: cp.exp([1.0, 2.0]), lambda cp: cp.stack([[1.0], [2.0]]), lambda cp: cp.fft.fft([1.0, 2.0]),
    lambda cp: cp.zeros(2) + [1.0, 2.0], lambda cp: cp.where(cp.zeros(2) > 0, [1.0, 2.0], 0.0),
], ids=["ascontiguousarray", "sum", "exp", "stack", "fft", "operator", "where"])
def test_host_lists_are_refused_except_by_the_converters(cp, call):
    with pytest.raises(TypeError):
        call(cp)


def test_correlate1d_refuses_host_arrays(cp, ndimage):
    d = cp.arange(8.0)
    with pytest.raises(TypeError, match="weights must be a cupy.ndarray"):
        ndimage.correlate1d(d, np.array([1.0, 2.0, 1.0]))
    with pytest.raises(TypeError):
        ndimage.correlate1d(np.arange(8.0), cp.asarray([1.0, 2.0, 1.0]))
    with pytest.raises(TypeError, match=UNSUPPORTED):
        ndimage.correlate1d(d, cp.asarray([1.0, 2.0, 1.0]), output=np.empty(8))


def test_assigning_host_data_into_a_device_array_raises(cp):
    d = cp.zeros(4)
    with pytest.raises(TypeError, match=UNSUPPORTED):
        d[1:3] = np.array([1.0, 2.0])
    with pytest.raises(TypeError):
        d[1:3] = [1.0, 2.0]
    d[1:3] = cp.asarray([1.0, 2.0])
    d[0] = np.float32(7)
    d[3] = 9
    assert d.get().tolist() == [7.0, 1.0, 2.0, 9.0]


def test_scalars_are_allowed_operands(cp):
    d = cp.asarray(np.array([1.0, 2.0], dtype=np.float32))
    results = {
        "d+2.0": d + 2.0, "d*np.float32": d * np.float32(2), "np.float32*d": np.float32(2) * d,
        "2**d": 2 ** d, "np.float64<d": np.float64(1.5) < d, "np.int64-d": np.int64(3) - d,
        "-d": -d, "abs": abs(-d),
    }
    for label, r in results.items():
        assert type(r) is cp.ndarray, label
    host = {k: v.get().tolist() for k, v in results.items()}
    assert host == {"d+2.0": [3.0, 4.0], "d*np.float32": [2.0, 4.0], "np.float32*d": [2.0, 4.0],
                    "2**d": [2.0, 4.0], "np.float64<d": [False, True], "np.int64-d": [2.0, 1.0],
                    "-d": [-1.0, -2.0], "abs": [1.0, 2.0]}
    assert (d * np.float32(2)).dtype == np.float32 and (d + 2.0).dtype == np.float32


def test_unknown_names_are_attribute_errors(cp):
    with pytest.raises(AttributeError, match="whitelist"):
        cp.not_a_cupy_function
    with pytest.raises(AttributeError):
        cp.random
    with pytest.raises(AttributeError):
        cp.fft.not_a_transform


# ---------------------------------------------------------------------------
# Semantics: views, out=, reductions, indexing
# ---------------------------------------------------------------------------

def test_views_share_memory_with_their_base(cp):
    d = cp.arange(6.0)
    v = d[1:]
    v[...] = 5
    assert d.get().tolist() == [0.0, 5.0, 5.0, 5.0, 5.0, 5.0]
    d.reshape(2, 3).T[0] = -1
    d[::2][1] = 8
    assert d.get().tolist() == [-1.0, 5.0, 8.0, -1.0, 5.0, 5.0]
    d.reshape(2, 3)[1, 2][...] = 7          # an all-integer index is a 0-d view, as in CuPy
    assert d.get()[5] == 7.0
    z = d.astype(cp.complex128)
    z.real[...] = 3
    assert z.get().real.tolist() == [3.0] * 6


def test_out_into_a_view_writes_the_base_and_returns_out(cp):
    d = cp.zeros(6)
    target = d[::2]
    a = cp.asarray([1.0, 2.0, 3.0])
    result = cp.multiply(a, 2, out=target)
    assert result is target
    cp.add(d[1::2], 1, d[1::2])
    assert d.get().tolist() == [2.0, 1.0, 4.0, 1.0, 6.0, 1.0]
    assert cp.greater(a, 1.5, out=cp.empty(3, dtype=cp.bool_)).get().tolist() == [False, True, True]


def test_reductions_return_0d_device_arrays(cp):
    d = cp.asarray([[1.0, -2.0], [3.0, 4.0]])
    with cp.strict_counting() as c:
        results = [d.sum(), d.max(), d.argmax(), d.mean(), d.any(), cp.sum(d), cp.all(d > -5),
                   cp.allclose(d, d), cp.array_equal(d, d), d[1, 0], d.sum() * 2]
    for r in results:
        assert type(r) is cp.ndarray and r.shape == ()
    assert c.syncs == 0
    assert d.sum(axis=0).get().tolist() == [4.0, 2.0]
    assert float(results[0]) == 6.0 and int(results[2]) == 3 and bool(results[7])


def test_astype_without_copy_and_asarray_keep_the_same_array(cp):
    d = cp.arange(3, dtype=cp.float32)
    assert d.astype(cp.float32, copy=False) is d
    assert cp.asarray(d) is d
    assert cp.asarray(d, dtype=cp.float32) is d
    assert cp.ascontiguousarray(d) is d
    assert d.real is d
    assert cp.asarray(d, dtype=cp.float64) is not d


def test_empty_like_and_zeros_like_keywords(cp):
    x = cp.zeros((2, 3, 4), dtype=cp.float32).transpose(1, 0, 2)
    y = cp.empty_like(x, shape=(3, 2, 8))
    assert y.shape == (3, 2, 8) and y.dtype == cp.float32
    z = cp.zeros_like(x[:, :, ::2], order="C")
    assert z.flags.c_contiguous and z.shape == (3, 2, 2) and not bool(z.any())


def test_iteration_len_and_bool(cp):
    d = cp.arange(6.0).reshape(3, 2)
    rows = list(d)
    assert len(d) == 3 and all(type(r) is cp.ndarray and r.shape == (2,) for r in rows)
    with pytest.raises(TypeError):
        len(cp.zeros(()))
    with pytest.raises(TypeError):
        iter(cp.zeros(()))
    with pytest.raises(ValueError):
        bool(d)
    with pytest.raises(TypeError):
        range(10)[cp.asarray(2)]


def test_index_arrays_from_the_host_are_uploads_and_masks_are_syncs(cp):
    d = cp.arange(10.0)
    with cp.strict_counting() as c:
        picked = d[[1, 3]]
        fancy = d[cp.asarray([2, 4])]
        masked = d[d > 6]
        d[d < 2] = 0
    assert c.uploads == 2           # the list index, and cp.asarray of the other list
    assert c.nonzero == 2 and c.syncs == 2
    assert picked.get().tolist() == [1.0, 3.0] and fancy.get().tolist() == [2.0, 4.0]
    assert masked.get().tolist() == [7.0, 8.0, 9.0]
    assert d.get()[:3].tolist() == [0.0, 0.0, 2.0]


# ---------------------------------------------------------------------------
# Counting
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind, transfer", [
    ("get", lambda cp, d: d.get()),
    ("asnumpy", lambda cp, d: cp.asnumpy(d)),
    ("float", lambda cp, d: float(d.sum())),
    ("int", lambda cp, d: int(d[1])),
    ("bool", lambda cp, d: bool(d[1] > 0)),
    ("item", lambda cp, d: d[2].item()),
    ("tolist", lambda cp, d: d.tolist()),
    ("repr", lambda cp, d: repr(d)),
    ("synchronize", lambda cp, d: cp.cuda.Device().synchronize()),
    ("nonzero", lambda cp, d: cp.nonzero(d)),
])
def test_each_transfer_counts_once_in_its_own_counter(cp, kind, transfer):
    d = cp.arange(4.0)
    before = cp.strict_counters.as_dict()
    transfer(cp, d)
    after = cp.strict_counters.as_dict()
    changed = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    assert changed == {kind: 1, "syncs": 1}


def test_uploads_are_counted_and_copied(cp):
    host = np.arange(3.0)
    with cp.strict_counting() as c:
        d = cp.asarray(host)
        cp.array([1, 2, 3])
        cp.asarray(2.0)
        cp.asarray(np.float32(2))
        d.set(np.ones(3))
    assert c.uploads == 5 and c.syncs == 0
    host[0] = 100.0
    assert d.get().tolist() == [1.0, 1.0, 1.0]   # the device copy is independent of the host array


def test_device_to_device_calls_count_nothing(cp):
    d = cp.arange(4.0)
    with cp.strict_counting() as c:
        cp.asarray(d)
        cp.array([d, d])
        e = cp.exp(d) * 2 + d.sum()
        cp.stack([d, e]).mean(axis=0)
        cp.where(d > 1, d, 0.0)
    assert c.as_dict() == dict.fromkeys(c.as_dict(), 0)


def test_asnumpy_copies_device_arrays_and_passes_host_arrays_through(cp):
    d = cp.arange(3.0)
    host = cp.asnumpy(d)
    host[0] = 42.0
    assert d.get()[0] == 0.0
    h = np.arange(3.0)
    with cp.strict_counting() as c:
        assert cp.asnumpy(h) is h
    assert c.syncs == 0 and c.asnumpy == 0


def test_strict_counting_records_where_each_sync_happened(cp):
    d = cp.arange(4.0)
    cp.strict_counters.reset()
    with cp.strict_counting() as outer:
        with cp.strict_counting() as inner:
            float(d.sum()); line = sys._getframe().f_lineno  # noqa: E702
        bool(d[0] > 1)
    assert inner.syncs == 1 and inner.float == 1
    assert [kind for kind, _ in inner.locations] == ["float"]
    assert inner.locations[0][1].endswith(f"test_strict_cupy.py:{line}")
    assert outer.syncs == 2 and outer.bool == 1
    assert cp.strict_counters.syncs == 2
    assert f"test_strict_cupy.py:{line}" in outer.sync_report()
    cp.strict_counters.reset()
    assert cp.strict_counters.syncs == 0 and cp.strict_counters.locations == []


def test_get_array_module(cp):
    assert cp.get_array_module(cp.zeros(2)) is cp
    assert cp.get_array_module(np.zeros(2), cp.zeros(2)) is cp
    assert cp.get_array_module(np.zeros(2), 1.0) is np
    assert cp.get_array_module() is np


# ---------------------------------------------------------------------------
# FFT, ndimage, CUDA stubs, memory pool
# ---------------------------------------------------------------------------

def test_fft_matches_numpy_and_round_trips(cp):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 6, 7))
    d = cp.asarray(x)
    y = cp.fft.rfft2(d, norm="ortho")
    np.testing.assert_allclose(y.get(), np.fft.rfft2(x, norm="ortho"), rtol=0, atol=1e-12)
    np.testing.assert_allclose(cp.fft.irfft2(y, s=(6, 7), norm="ortho").get(), x, rtol=0, atol=1e-12)
    full = cp.fft.fft2(d, norm="ortho")
    np.testing.assert_allclose(cp.fft.ifft2(full, norm="ortho").real.get(), x, rtol=0, atol=1e-12)
    z = cp.fft.ifft(y, axis=-2, norm="ortho")
    np.testing.assert_allclose(cp.fft.irfft(z, n=7, axis=-1, norm="ortho").get(), x, rtol=0, atol=1e-12)
    assert cp.fft.rfft2(d.astype(cp.float32)).dtype == np.complex64
    assert cp.fft.irfft(y.astype(cp.complex64), n=7).dtype == np.float32


def test_correlate1d_and_gaussian_filter_match_scipy(cp, ndimage):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 9, 11))
    w = np.array([0.25, 0.5, 0.25, 0.1, -0.3])
    d = cp.asarray(x)
    out = cp.zeros((3, 9, 22))[..., ::2]
    result = ndimage.correlate1d(d, cp.asarray(w), axis=1, mode="constant", cval=0.0, output=out)
    assert result is out
    np.testing.assert_allclose(out.get(), scipy.ndimage.correlate1d(x, w, axis=1, mode="constant"),
                               rtol=0, atol=1e-12)
    g = ndimage.gaussian_filter(d, 1.5)
    assert type(g) is cp.ndarray
    np.testing.assert_allclose(g.get(), scipy.ndimage.gaussian_filter(x, 1.5), rtol=0, atol=1e-12)


def test_cuda_stubs(cp):
    assert cp.cuda.runtime.getDeviceCount() == 1
    props = cp.cuda.runtime.getDeviceProperties(0)
    assert props["name"] == b"strict CuPy test double" and props["totalGlobalMem"] > 0
    with cp.strict_counting() as c:
        with cp.cuda.Device() as device:
            assert device.id == 0
            device.synchronize()
        cp.cuda.Stream.null.synchronize()
    assert c.synchronize == 2 and c.syncs == 2
    with pytest.raises(RuntimeError):
        cp.cuda.Device(1)


def test_memory_pool_tracks_live_device_arrays(cp):
    pool = cp.get_default_memory_pool()
    pool.free_all_blocks()
    before = pool.used_bytes()
    d = cp.zeros(1000, dtype=cp.float64)
    view = d[10:]
    assert pool.used_bytes() == before + 8000
    assert pool.total_bytes() >= pool.used_bytes()
    del d, view
    assert pool.used_bytes() == before
    assert pool.total_bytes() >= before + 8000   # freed blocks stay cached ...
    pool.free_all_blocks()
    assert pool.total_bytes() == pool.used_bytes()  # ... until they are released


def test_zz_the_double_is_unloaded_after_its_tests():
    # Runs after the tests above (file order): none of them may leave the double importable as `cupy`.
    leftover = [name for name, module in sys.modules.items()
                if _is_cupy_module(name) and STRICT_DIR.resolve() in Path(getattr(module, "__file__", "") or
                                                                            ".").resolve().parents]
    assert leftover == []
    assert str(STRICT_DIR) not in sys.path
