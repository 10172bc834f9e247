"""Array kernels shared by the layers: im2col/col2im, bilinear x2 and its adjoint,
the separable 1-D filtering used by the fast LoG bank (and the SSIM window), and
the orthonormal DFT, framing/overlap-add and STFT helpers of the fft and stft losses.

This is the only module allowed to branch on the backend (NumPy vs CuPy), and it
does so only where a library routine differs between the two
(``scipy.ndimage`` vs ``cupyx.scipy.ndimage``) and to spread NumPy work over
the CPU cores (:func:`parallel_ranges`; CuPy kernels are already parallel).
Everything else is written once with ``xp = get_array_module(x)``.

Conventions: arrays are NCHW; ``kh, kw`` are odd kernel sizes; ``pad`` is the
zero padding on each side; output sizes follow ``floor((H + 2 pad - kh) / stride) + 1``.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from sflnet.backend import get_array_module

# ---------------------------------------------------------------------------
# CPU threads for the NumPy kernels
# ---------------------------------------------------------------------------
# NumPy's copies and ufuncs release the GIL but run on one core; the GEMMs use
# all cores through BLAS. The kernels below split their work into independent
# ranges (disjoint output regions) and run them on a small thread pool, so the
# copies run on every core too.

PARALLEL_MIN_ELEMENTS = 1 << 18   # below ~1 MB of float32 work a thread hand-off costs more than it saves


def default_num_threads():
    """Threads of the NumPy kernels at start: ``OMP_NUM_THREADS`` when it is set to a positive integer
    (the usual per-process thread setting, which OpenBLAS also follows), else every usable CPU."""
    setting = os.environ.get("OMP_NUM_THREADS", "").strip()
    if setting.isdigit() and int(setting) >= 1:
        return int(setting)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


_threads = default_num_threads()
_pool = None


def set_num_threads(count):
    """Threads used by the NumPy kernels (1 = no threading). BLAS threads are set by its own environment variables."""
    global _threads, _pool
    if count < 1:
        raise ValueError(f"thread count must be >= 1, got {count}")
    if count != _threads and _pool is not None:
        _pool.shutdown(wait=True)
        _pool = None
    _threads = int(count)


def get_num_threads():
    """Threads used by the NumPy kernels."""
    return _threads


def parallel_ranges(xp, count, work, task):
    """Call ``task(lo, hi)`` over contiguous ranges covering ``range(count)``, on all threads.

    ``work`` is the number of elements the whole job touches; small jobs, CuPy
    arrays and single-thread settings run ``task(0, count)`` directly. Tasks
    must write disjoint outputs. The calling thread runs the first range itself.
    """
    global _pool
    parts = min(_threads, count)
    if xp is not np or parts < 2 or work < PARALLEL_MIN_ELEMENTS:
        task(0, count)
        return
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=_threads - 1, thread_name_prefix="sflnet-kernels")
    bounds = [count * i // parts for i in range(parts + 1)]
    futures = [_pool.submit(task, bounds[i], bounds[i + 1]) for i in range(1, parts)]
    task(bounds[0], bounds[1])
    for future in futures:
        future.result()


def conv_output_size(size, kernel, stride, pad):
    """Output length of a correlation along one axis: ``(size + 2 pad - kernel) // stride + 1``."""
    return (size + 2 * pad - kernel) // stride + 1


def elementwise(fn, *arrays, dtype=None, dtypes=None):
    """``fn(*arrays)`` for an elementwise ``fn(*pieces, out=piece)``, on all threads.

    arrays: one shape (no broadcasting); the result is a new array shaped and
    ordered in memory like ``arrays[0]``, of ``dtype`` (default ``arrays[0].dtype``).
    With ``dtypes`` (a tuple), ``fn`` fills several results at once
    (``out=(piece, piece, …)``) and a tuple of arrays is returned.
    ``fn`` is called on matching slices of every array along their outermost
    memory axis, each writing its own slice of the results.
    """
    xp = get_array_module(arrays[0])
    first = arrays[0]
    several = dtypes is not None
    if not several:
        dtypes = (first.dtype if dtype is None else dtype,)
    outs = tuple(xp.empty_like(first, dtype=d) for d in dtypes)

    def piece(lo, hi):
        cut = [_along(a, split, slice(lo, hi)) for a in arrays]
        targets = tuple(_along(o, split, slice(lo, hi)) for o in outs)
        fn(*cut, out=targets if several else targets[0])

    if first.ndim == 0:
        fn(*arrays, out=outs if several else outs[0])
    else:
        split = max(range(first.ndim), key=lambda d: (first.shape[d] > 1, abs(first.strides[d])))
        parallel_ranges(xp, first.shape[split], first.size * (len(arrays) + len(outs)), piece)
    return outs if several else outs[0]


# ---------------------------------------------------------------------------
# im2col / col2im
# ---------------------------------------------------------------------------

def _tap_range(out_len, in_len, offset):
    """Outputs ``o`` of one kernel tap whose input ``o + offset`` lies inside ``[0, in_len)``.

    returns ``(lo, hi)``: outputs ``lo ≤ o < hi`` read inputs ``lo + offset …``;
    every other output of this tap reads the zero padding.
    """
    lo = min(out_len, max(0, -offset))
    hi = max(lo, min(out_len, in_len - offset))
    return lo, hi


def _tap_slices(out_hw, in_hw, oy, ox):
    """For a tap reading input (y + oy, x + ox) at output (y, x): (output rows, output cols,
    input rows, input cols) slices of the part that lies inside the input."""
    (ho, wo), (h, w) = out_hw, in_hw
    ylo, yhi = _tap_range(ho, h, oy)
    xlo, xhi = _tap_range(wo, w, ox)
    return slice(ylo, yhi), slice(xlo, xhi), slice(ylo + oy, yhi + oy), slice(xlo + ox, xhi + ox)


def _phase_and_shift(d, pad, stride):
    """Tap ``d`` of output ``o`` reads input ``o·stride + d − pad = stride·(o + shift) + phase``.

    So with the input split into ``stride`` phases (``x[phase::stride]``), the
    tap reads phase ``phase`` at index ``o + shift``: a stride-1 shift. returns (phase, shift).
    """
    return (d - pad) % stride, (d - pad) // stride


def _taps(kh, kw, pad, stride):
    """Every kernel tap (dy, dx), with the input phase ``(py, px)`` it reads and its shifts (oy, ox) there."""
    for dy in range(kh):
        py, oy = _phase_and_shift(dy, pad, stride)
        for dx in range(kw):
            px, ox = _phase_and_shift(dx, pad, stride)
            yield dy, dx, (py, px), oy, ox


def _channel_blocks(stride, work):
    """``work(c0, c1)`` wrapped to run one channel at a time when stride > 1, so that the
    channel's phases stay in cache while its k² taps use them; with stride 1 in one go."""
    def run(c0, c1):
        step = 1 if stride > 1 else c1 - c0
        for start in range(c0, c1, step):
            work(start, min(start + step, c1))
    return run


def im2col(x, kh, kw, stride, pad, out=None):
    """Unfold every receptive field of ``x`` into one column.

    x:      (N, C, H, W)
    out:    optional C-contiguous array of C*kh*kw*N*Ho*Wo elements to write into
            (e.g. a buffer reused between calls); a new array by default
    returns (C*kh*kw, N*Ho*Wo), row index ``(c, dy, dx)`` in C order, column
            index ``(n, y, x)`` in C order, so that Eq. 2 becomes one matrix
            product ``W.reshape(C_out, C*kh*kw) @ cols``.

    ``cols[(c,dy,dx), (n,y,x)] = x_pad[n, c, y*stride + dy, x*stride + dx]``
    where ``x_pad`` is ``x`` with ``pad`` zeros on each spatial side.

    No padded copy of ``x`` is made: for each tap, the outputs whose input is
    inside the image get one block copy, and the thin border of outputs that
    would read the padding is set to zero. With stride 2 the input is first
    split into its 4 phases ``x[:, :, py::2, px::2]`` (one strided pass), so
    that every tap is a plain shifted block of one phase (see
    :func:`_phase_and_shift`) instead of a strided gather. The copies read
    ``x`` channel-major (``x.transpose(1, 0, 2, 3)``), which is free when ``x``
    came out of a GEMM of this module's layout. The input is never modified.
    """
    xp = get_array_module(x)
    n, c, h, w = x.shape
    ho = conv_output_size(h, kh, stride, pad)
    wo = conv_output_size(w, kw, stride, pad)
    x_cn = x.transpose(1, 0, 2, 3)
    if out is None:
        cols = xp.empty((c, kh, kw, n, ho, wo), dtype=x.dtype)
    else:
        cols = out.reshape(c, kh, kw, n, ho, wo)

    def unfold_channels(c0, c1):
        part = x_cn[c0:c1]
        phases = {(0, 0): part} if stride == 1 else \
            {(py, px): part[:, :, py::stride, px::stride].copy() for py in range(stride) for px in range(stride)}
        for dy, dx, phase, oy, ox in _taps(kh, kw, pad, stride):
            source = phases[phase]
            rows, cs, in_rows, in_cs = _tap_slices((ho, wo), source.shape[2:], oy, ox)
            tap = cols[c0:c1, dy, dx]
            tap[:, :, rows, cs] = source[:, :, in_rows, in_cs]
            tap[:, :, :rows.start] = 0
            tap[:, :, rows.stop:] = 0
            tap[:, :, rows, :cs.start] = 0
            tap[:, :, rows, cs.stop:] = 0

    parallel_ranges(xp, c, cols.size, _channel_blocks(stride, unfold_channels))
    return cols.reshape(c * kh * kw, n * ho * wo)


def col2im(cols, x_shape, kh, kw, stride, pad):
    """Adjoint of :func:`im2col`: scatter-add the columns back onto the image.

    cols:    (C*kh*kw, N*Ho*Wo)
    x_shape: (N, C, H, W) of the image that was unfolded
    returns  (N, C, H, W) (a channel-major view: memory order (C, N, H, W))

    Each input pixel appears in up to ``kh*kw`` columns; its value here is the
    sum of all those column entries (the transpose of the copy in im2col), and
    entries that fell on the zero padding are dropped (the same in-range
    blocks as :func:`im2col`, added instead of copied). With stride 2 the sums
    are collected per input phase and interleaved once at the end.
    """
    xp = get_array_module(cols)
    n, c, h, w = x_shape
    ho = conv_output_size(h, kh, stride, pad)
    wo = conv_output_size(w, kw, stride, pad)
    cols6 = cols.reshape(c, kh, kw, n, ho, wo)
    x_cn = (xp.zeros if stride == 1 else xp.empty)((c, n, h, w), dtype=cols.dtype)

    def fold_channels(c0, c1):
        part = x_cn[c0:c1]
        phases = {(0, 0): part} if stride == 1 else \
            {(py, px): xp.zeros_like(part[:, :, py::stride, px::stride], order="C")
             for py in range(stride) for px in range(stride)}
        for dy, dx, phase, oy, ox in _taps(kh, kw, pad, stride):
            target = phases[phase]
            rows, cs, in_rows, in_cs = _tap_slices((ho, wo), target.shape[2:], oy, ox)
            target[:, :, in_rows, in_cs] += cols6[c0:c1, dy, dx, :, rows, cs]
        if stride != 1:
            for (py, px), phase in phases.items():
                part[:, :, py::stride, px::stride] = phase

    parallel_ranges(xp, c, cols.size, _channel_blocks(stride, fold_channels))
    return x_cn.transpose(1, 0, 2, 3)


# ---------------------------------------------------------------------------
# Bilinear x2 (half-pixel centres, clamped edges) and its adjoint
# ---------------------------------------------------------------------------

def _along(a, axis, index):
    """``a[..., index, ...]`` with ``index`` (a slice) applied to ``axis``: a view."""
    full = [slice(None)] * a.ndim
    full[axis] = index
    return a[tuple(full)]


def _split_axis(shape, axis):
    """The longest axis other than ``axis``: work along ``axis`` splits into independent parts there."""
    return max((d for d in range(len(shape)) if d != axis), key=lambda d: shape[d])


def upsample2x_axis(x, axis, out_len):
    """Bilinear x2 along one axis, cropped to ``out_len`` (``2n-1`` or ``2n``).

    ``out[2i] = 3/4 x[i] + 1/4 x[max(i-1, 0)]``,
    ``out[2i+1] = 3/4 x[i] + 1/4 x[min(i+1, n-1)]``.

    Written straight into the even and odd slots of the result (strided views),
    with the clamped edge terms added separately; the result is a view cropped
    to ``out_len``.
    """
    xp = get_array_module(x)
    n = x.shape[axis]
    shape = list(x.shape)
    shape[axis] = 2 * n
    out = xp.empty_like(x, shape=tuple(shape))      # keeps x's memory order (channel-major stays channel-major)
    split = _split_axis(x.shape, axis)

    def upsample_part(lo, hi):
        part = _along(x, split, slice(lo, hi))
        target = _along(out, split, slice(lo, hi))
        even = _along(target, axis, slice(0, None, 2))      # out[2i],   i = 0 … n-1
        odd = _along(target, axis, slice(1, None, 2))       # out[2i+1], i = 0 … n-1
        xp.multiply(part, 0.75, out=even)
        _along(even, axis, slice(1, n))[...] += 0.25 * _along(part, axis, slice(0, n - 1))   # + 1/4 x[i-1], i ≥ 1
        _along(even, axis, slice(0, 1))[...] += 0.25 * _along(part, axis, slice(0, 1))       # clamped x[-1] → x[0]
        xp.multiply(part, 0.75, out=odd)
        _along(odd, axis, slice(0, n - 1))[...] += 0.25 * _along(part, axis, slice(1, n))    # + 1/4 x[i+1], i ≤ n-2
        _along(odd, axis, slice(n - 1, n))[...] += 0.25 * _along(part, axis, slice(n - 1, n))  # clamped x[n] → x[n-1]

    parallel_ranges(xp, x.shape[split], out.size, upsample_part)
    return _along(out, axis, slice(0, out_len))


def upsample2x_axis_adjoint(g, axis, in_len):
    """Transpose of :func:`upsample2x_axis`: ``g`` has ``out_len`` entries on ``axis``, result ``in_len``.

    The crop's transpose pads ``g`` with zeros to ``2 in_len``; then with
    ``ge = g[0::2]`` and ``go = g[1::2]``, each input i collects
    ``3/4 (ge[i] + go[i])``, plus ``1/4 ge[i+1]`` (it is the left neighbour of
    output 2(i+1)) and ``1/4 go[i-1]`` (right neighbour of output 2(i-1)+1);
    the clamped edges send ``1/4 ge[0]`` to input 0 and ``1/4 go[n-1]`` to input n-1.
    The zero padding is never built: when ``out_len`` is ``2n − 1``, ``go``
    simply has ``n − 1`` entries and the terms of the cropped ``go[n-1]`` are skipped.
    """
    xp = get_array_module(g)
    n = in_len
    n_odd = g.shape[axis] // 2                       # odd outputs kept by the crop: n or n-1
    reach = min(n_odd, n - 1)                        # go[i] → input i+1 for i ≤ n-2
    shape = list(g.shape)
    shape[axis] = n
    out = xp.empty_like(g, shape=tuple(shape))      # keeps g's memory order
    split = _split_axis(g.shape, axis)

    def adjoint_part(lo, hi):
        part = _along(g, split, slice(lo, hi))
        target = _along(out, split, slice(lo, hi))
        ge = _along(part, axis, slice(0, None, 2))   # n entries
        go = _along(part, axis, slice(1, None, 2))   # n_odd entries
        xp.multiply(ge, 0.75, out=target)
        _along(target, axis, slice(0, n_odd))[...] += 0.75 * go
        _along(target, axis, slice(0, n - 1))[...] += 0.25 * _along(ge, axis, slice(1, n))     # ge[i+1] → i
        _along(target, axis, slice(0, 1))[...] += 0.25 * _along(ge, axis, slice(0, 1))          # clamped ge[0] → 0
        _along(target, axis, slice(1, reach + 1))[...] += 0.25 * _along(go, axis, slice(0, reach))
        if n_odd == n:
            _along(target, axis, slice(n - 1, n))[...] += 0.25 * _along(go, axis, slice(n - 1, n))  # clamped go[n-1]

    parallel_ranges(xp, g.shape[split], g.size, adjoint_part)
    return out


# ---------------------------------------------------------------------------
# The 2×2 phases of a ×2 grid (the sub-pixel layout of layer 4)
# ---------------------------------------------------------------------------

def _phase_extent(length, phase):
    """How many of the positions ``2i + phase`` lie in ``[0, length)``."""
    return (length - phase + 1) // 2


def interleave_phases(phases, out_hw, bias=None):
    """Depth to space: the 2×2 phases of a ×2 grid written into one image, cropped to ``out_hw``.

    phases:  (2, 2, C, N, h, w); ``phases[a, b]`` holds the pixels (2i + a, 2j + b)
    out_hw:  (H, W) with 2h − 1 ≤ H ≤ 2h and 2w − 1 ≤ W ≤ 2w
    bias:    optional (C,) added to every pixel in the same pass
    returns  (C, N, H, W), a new C-contiguous array:
             ``out[c, n, 2i + a, 2j + b] = phases[a, b, c, n, i, j] (+ bias[c])``;
             the phase entries a crop leaves out (row 2h − 1 when H = 2h − 1) are dropped.
    """
    xp = get_array_module(phases)
    _, _, c, n, h, w = phases.shape
    height, width = out_hw
    out = xp.empty((c, n, height, width), dtype=phases.dtype)

    def channels(c0, c1):
        for a in range(2):
            for b in range(2):
                source = phases[a, b, c0:c1, :, :_phase_extent(height, a), :_phase_extent(width, b)]
                target = out[c0:c1, :, a::2, b::2]
                if bias is None:
                    target[...] = source
                else:
                    xp.add(source, bias[c0:c1, None, None, None], out=target)

    parallel_ranges(xp, c, 2 * out.size, channels)
    return out


def split_phases(x_cn, low_hw):
    """Space to depth, the adjoint of :func:`interleave_phases` (without its bias).

    x_cn:    (C, N, H, W) (any memory order), 2h − 1 ≤ H ≤ 2h, 2w − 1 ≤ W ≤ 2w
    low_hw:  (h, w)
    returns  (2, 2, C, N, h, w), a new C-contiguous array: ``out[a, b, c, n, i, j] = x_cn[c, n, 2i + a, 2j + b]``,
             and 0 where 2i + a ≥ H or 2j + b ≥ W (the transpose of the crop).
    """
    xp = get_array_module(x_cn)
    c, n, height, width = x_cn.shape
    h, w = low_hw
    out = xp.empty((2, 2, c, n, h, w), dtype=x_cn.dtype)

    def channels(c0, c1):
        for a in range(2):
            rows = _phase_extent(height, a)
            for b in range(2):
                cols = _phase_extent(width, b)
                target = out[a, b, c0:c1]
                target[:, :, :rows, :cols] = x_cn[c0:c1, :, a::2, b::2]
                target[:, :, rows:] = 0
                target[:, :, :rows, cols:] = 0

    parallel_ranges(xp, c, 2 * out.size, channels)
    return out


# ---------------------------------------------------------------------------
# Small constants (filter taps, loss weights) kept on the device
# ---------------------------------------------------------------------------

_device_constants = {}


def device_constant(values, like):
    """``values`` (a small host sequence or array) as an array of ``like``'s dtype on ``like``'s device.

    values:  (k,) or any small shape, host (NumPy / Python numbers)
    like:    any array; gives the array module, device and dtype
    returns  values as that dtype: a NumPy array for NumPy ``like``; for CuPy, a device array
             uploaded once per (device, dtype, values) and then served from a cache, so a
             training step does not re-send the same taps and weights on every call.

    The returned array is shared: callers must treat it as read-only.
    """
    xp = get_array_module(like)
    host = np.asarray(values, dtype=like.dtype)
    if xp is np:
        return host
    key = (xp, xp.cuda.Device().id, host.dtype.str, host.shape, host.tobytes())
    cached = _device_constants.get(key)
    if cached is None:
        cached = _device_constants[key] = xp.asarray(host)
    return cached


# ---------------------------------------------------------------------------
# Separable 1-D correlation with zero padding (the fast LoG path)
# ---------------------------------------------------------------------------

def _ndimage(xp):
    """``scipy.ndimage`` for NumPy arrays, ``cupyx.scipy.ndimage`` for CuPy arrays."""
    if xp is np:
        import scipy.ndimage as ndimage  # noqa: PLC0415
    else:
        import cupyx.scipy.ndimage as ndimage  # noqa: PLC0415
    return ndimage


def correlate_separable(x, row_taps, col_taps):
    """Zero-padded "same" 2-D correlation of ``x`` with the outer product ``col_taps ⊗ row_taps``.

    x:        (..., H, W)
    row_taps: (k,) taps along W (odd length, centred)
    col_taps: (k,) taps along H
    returns   (..., H, W), same dtype as ``x``

    ``out[y, x] = Σ_{i,j} col_taps[i] row_taps[j] x[y+i-s, x+j-s]`` with s = (k-1)/2,
    computed as two 1-D passes: k + k taps per pixel instead of k².
    """
    tmp = _correlate1d(x, device_constant(row_taps, x), x.ndim - 1)
    return _correlate1d(tmp, device_constant(col_taps, x), x.ndim - 2)


def _correlate1d(x, taps, axis):
    """Zero-padded "same" 1-D correlation of ``x`` along ``axis`` (``ndimage.correlate1d``), split over threads."""
    xp = get_array_module(x)
    ndimage = _ndimage(xp)
    out = xp.empty(x.shape, dtype=x.dtype)
    split = _split_axis(x.shape, axis)

    def filter_part(lo, hi):
        ndimage.correlate1d(_along(x, split, slice(lo, hi)), taps, axis=axis, mode="constant", cval=0.0,
                            output=_along(out, split, slice(lo, hi)))

    parallel_ranges(xp, x.shape[split], x.size * len(taps), filter_part)
    return out


# ---------------------------------------------------------------------------
# Orthonormal 2-D DFTs and the framing of a short-time Fourier transform
# (the ``fft`` and ``stft`` losses)
# ---------------------------------------------------------------------------
# F is the orthonormal DFT over the last two axes of an (…, H, W) array:
#   (F x)[u, v] = (1/√(HW)) Σ_{m,n} x[m, n] e^{−2πi (u m / H + v n / W)},
# unitary (F^H F = I), so its inverse is its conjugate transpose F^H. Complex
# arrays are paired with the real inner product Re⟨a, b⟩ = Re Σ conj(a) b, under
# which the adjoint of the real-to-complex map x ↦ F x is y ↦ Re(F^H y):
#   Re⟨F x, y⟩ = Re⟨x, F^H y⟩ = ⟨x, Re(F^H y)⟩   for real x.
# Precision is kept: float32 → complex64 → float32, float64 → complex128 → float64.

def complex_dtype(dtype):
    """The complex dtype of the same precision: float32/complex64 → complex64, float64/complex128 → complex128."""
    return np.result_type(dtype, np.complex64)


def real_dtype(dtype):
    """The real dtype of the same precision: complex64/float32 → float32, complex128/float64 → float64."""
    return np.finfo(np.dtype(dtype)).dtype


def dft2(x):
    """Orthonormal 2-D DFT ``F x`` over the last two axes.

    x:       (…, H, W) real or complex
    returns  (…, H, W) complex of x's precision (``xp.fft.fft2(x, norm="ortho")``)
    """
    xp = get_array_module(x)
    return xp.fft.fft2(x, norm="ortho").astype(complex_dtype(x.dtype), copy=False)


def dft2_adjoint(y):
    """Adjoint of :func:`dft2` on real inputs: ``Re(F^H y)``.

    y:       (…, H, W) complex
    returns  (…, H, W) real of y's precision (``Re(xp.fft.ifft2(y, norm="ortho"))``)

    ``Re⟨F x, y⟩ = ⟨x, Re(F^H y)⟩`` for every real x (see the section comment);
    for y = F x of a real x it is the inverse, x itself.
    """
    xp = get_array_module(y)
    return xp.ascontiguousarray(xp.fft.ifft2(y, norm="ortho").real).astype(real_dtype(y.dtype), copy=False)


def half_spectrum_multiplicity(width, dtype=np.float64):
    """m(v), v = 0 … ⌊W/2⌋: how many bins of the full spectrum the half-spectrum column v stands for.

    returns (⌊W/2⌋ + 1,) host array: 1 for v = 0 and (W even) v = W/2, which are
    their own mirrors −v mod W; 2 for every other v, whose mirror W − v is left out.
    """
    m = np.full(width // 2 + 1, 2.0, dtype=dtype)
    m[0] = 1.0
    if width % 2 == 0:
        m[-1] = 1.0
    return m


def rdft2(x):
    """Orthonormal 2-D DFT of a real array, half spectrum: columns v = 0 … ⌊W/2⌋ of ``F x``.

    x:       (…, H, W) real
    returns  (…, H, ⌊W/2⌋ + 1) complex of x's precision (``xp.fft.rfft2(x, norm="ortho")``)

    The rest follows from Hermitian symmetry: ``(F x)[−u, −v] = conj((F x)[u, v])``
    (indices mod H, W), so half the transforms and half the memory give everything.
    """
    xp = get_array_module(x)
    return xp.fft.rfft2(x, norm="ortho").astype(complex_dtype(x.dtype), copy=False)


def irdft2(y, width):
    """``Re(F^H ext(m ⊙ y))``: the inverse of :func:`rdft2`, and its adjoint for the m-weighted inner product.

    y:       (…, H, ⌊width/2⌋ + 1) complex, a half spectrum (any values, Hermitian or not)
    width:   W, the last axis of the real array (the half spectrum does not tell odd from even)
    returns  (…, H, W) real of y's precision

    ``ext`` puts the half spectrum into a full one with zeros in the left-out
    columns and m = :func:`half_spectrum_multiplicity`. So for every real x
    ``Re Σ m ⊙ conj(rdft2(x)) ⊙ y = ⟨x, irdft2(y)⟩``, and a loss written as
    Σ_half m·ℓ(rdft2(x)) — equal to Σ_full ℓ(F x) when ℓ is mirror-symmetric —
    has the gradient ``irdft2(∂ℓ/∂Re + i ∂ℓ/∂Im)``, with no mirror bins built.
    For a Hermitian half spectrum (y = rdft2(x)) it returns x.

    Computed as a complex inverse DFT along H, then a 1-D complex-to-real
    inverse along W. Such a transform reads the columns v = 0 and v = W/2 as
    real (their imaginary parts are assumed to be zero; what a library does with
    non-zero ones is not specified), so those imaginary parts are zeroed first:
    then any library computes exactly ``Re(F^H ext(m ⊙ y))``,
    because ``Re(Σ_v m_v z_v e^{2πi v n / W})`` only reads Re z at those columns.
    """
    xp = get_array_module(y)
    z = xp.fft.ifft(y, axis=-2, norm="ortho").astype(complex_dtype(y.dtype), copy=False)
    for edge in (0, width // 2) if width % 2 == 0 else (0,):   # integer indices: no index array to upload
        z[..., edge] = z[..., edge].real
    return xp.fft.irfft(z, n=width, axis=-1, norm="ortho").astype(real_dtype(y.dtype), copy=False)


def frame_count(size, window, stride):
    """Window positions along one axis: ``⌊(size − window) / stride⌋ + 1`` (0 when size < window)."""
    return max(0, (size - window) // stride + 1)


def extract_frames(x, window, stride, taper=None):
    """Every h×h window of ``x`` at stride s, optionally multiplied by a taper: the STFT's framing.

    x:       (n, C, H, W)
    taper:   None or (h, h) array (e.g. the 2-D Hann window), same module as x
    returns  (n, C, K_y, K_x, h, h), x's dtype, with K = :func:`frame_count`:
             ``frames[…, ky, kx, a, b] = x[…, s·ky + a, s·kx + b] · taper[a, b]``

    One block copy per window position (``K_y·K_x`` of them), the taper applied
    in the same pass: each copies h rows of h contiguous pixels into contiguous
    memory. Measured on NumPy (float32, h 16, s 4), 70×3×64×64 / 8×3×300×225:
    this loop 12 / 34 ms; a loop over the h² taps, which writes single elements
    h² apart, 148 / 180 ms; a fancy-indexed gather of every element 46 / 37 ms;
    (h/s)² shifted block copies 52 / 130 ms. On a GPU each window is a kernel
    launch (3816 for 300×225), where one gather would be a single one.
    Image ranges run on all threads (:func:`parallel_ranges`).
    """
    xp = get_array_module(x)
    n, c, h_img, w_img = x.shape
    ky, kx = frame_count(h_img, window, stride), frame_count(w_img, window, stride)
    frames = xp.empty((n, c, ky, kx, window, window), dtype=x.dtype)
    taper = None if taper is None else taper.astype(x.dtype, copy=False)

    def frame_images(lo, hi):
        for i in range(ky):
            rows = slice(stride * i, stride * i + window)
            for j in range(kx):
                block = x[lo:hi, :, rows, stride * j:stride * j + window]
                if taper is None:
                    frames[lo:hi, :, i, j] = block
                else:
                    xp.multiply(block, taper, out=frames[lo:hi, :, i, j])

    parallel_ranges(xp, n, frames.size, frame_images)
    return frames


def overlap_add(frames, height, width, stride, taper=None):
    """Adjoint of :func:`extract_frames`: add every (tapered) frame back where it was cut from.

    frames:  (n, C, K_y, K_x, h, h)
    height, width: H, W of the framed image (pixels that no window covers get 0)
    taper:   None or the (h, h) taper of the framing
    returns  (n, C, H, W), frames' dtype:
             ``out[…, y, x] = Σ frames[…, ky, kx, a, b] · taper[a, b]`` over s·ky + a = y, s·kx + b = x

    ``⟨extract_frames(x), f⟩ = ⟨x, overlap_add(f)⟩``: each pixel collects the
    entries it was copied to. One block addition per window position, split over
    images (NumPy, as above: 16 / 50 ms, against 54 / 218 ms per tap and 54 / 136 ms
    for (h/s)² shifted blocks).
    """
    xp = get_array_module(frames)
    n, c, ky, kx, window, _ = frames.shape
    out = xp.zeros((n, c, height, width), dtype=frames.dtype)
    if taper is not None:
        frames = frames * taper.astype(frames.dtype, copy=False)

    def add_images(lo, hi):
        for i in range(ky):
            rows = slice(stride * i, stride * i + window)
            for j in range(kx):
                out[lo:hi, :, rows, stride * j:stride * j + window] += frames[lo:hi, :, i, j]

    parallel_ranges(xp, n, frames.size, add_images)
    return out


def stft2(x, window, stride, taper=None):
    """Half-spectrum STFT: :func:`rdft2` of every (tapered) h×h frame of ``x``.

    x:       (n, C, H, W) real
    returns  (n, C, K_y, K_x, h, ⌊h/2⌋ + 1) complex of x's precision
    """
    return rdft2(extract_frames(x, window, stride, taper))


def stft2_adjoint(y, height, width, stride, taper=None):
    """Adjoint of :func:`stft2` for the m-weighted inner product: ``overlap_add(taper ⊙ irdft2(y))``.

    y:       (n, C, K_y, K_x, h, ⌊h/2⌋ + 1) complex
    returns  (n, C, H, W) real: ``Re Σ m ⊙ conj(stft2(x)) ⊙ y = ⟨x, stft2_adjoint(y)⟩`` for real x
    """
    window = y.shape[-2]
    return overlap_add(irdft2(y, window), height, width, stride, taper)
