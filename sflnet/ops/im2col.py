"""Convolution geometry and im2col/col2im: Eq. 2 as one matrix product.

Conventions: arrays are NCHW; ``kh, kw`` are odd kernel sizes; ``pad`` is the
zero padding on each side; output sizes follow ``floor((H + 2 pad - kh) / stride) + 1``
(:func:`conv_output_size`). Written once for NumPy and CuPy
(``xp = get_array_module(x)``); the NumPy copies run on all threads
(:func:`sflnet.ops.threads.parallel_ranges`).
"""

import functools

from sflnet.backend import get_array_module
from sflnet.ops.threads import parallel_ranges


def conv_output_size(size, kernel, stride, pad):
    """Output length of a correlation along one axis: ``(size + 2 pad - kernel) // stride + 1``."""
    return (size + 2 * pad - kernel) // stride + 1


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


#: Channels are copied in blocks of about this many bytes of input when stride > 1, so that a block's
#: phases stay in cache while its k² taps use them (measured: one channel at a time is best for the
#: CAE's 300 px images; for 28×28 digits it costs a Python round per channel and tap for nothing).
CACHE_BLOCK_BYTES = 1 << 18


def _channel_blocks(stride, channel_bytes, work):
    """``work(c0, c1)`` wrapped to run over blocks of channels of about :data:`CACHE_BLOCK_BYTES`
    each when stride > 1 (``channel_bytes``: the bytes of one channel of the input); with stride 1
    in one go. The blocks are disjoint and cover ``[c0, c1)``, so the result does not depend on them."""
    def run(c0, c1):
        step = max(1, CACHE_BLOCK_BYTES // max(1, channel_bytes)) if stride > 1 else c1 - c0
        for start in range(c0, c1, step):
            work(start, min(start + step, c1))
    return run


@functools.lru_cache(maxsize=256)
def _tap_plan(kh, kw, stride, pad, out_hw, phase_hws):
    """Every tap's (dy, dx, phase, output rows, output cols, input rows, input cols) for one geometry:
    :func:`_taps` with the slices of :func:`_tap_slices`, computed once per geometry and kept.
    phase_hws: {phase (py, px): (height, width) of that phase of the input}, as a tuple of items."""
    shapes = dict(phase_hws)
    return tuple((dy, dx, phase) + _tap_slices(out_hw, shapes[phase], oy, ox)
                 for dy, dx, phase, oy, ox in _taps(kh, kw, pad, stride))


def _phase_shapes(h, w, stride):
    """((py, px), (rows, cols)) of every phase ``x[py::stride, px::stride]`` of an h × w plane."""
    return tuple(((py, px), (len(range(py, h, stride)), len(range(px, w, stride))))
                 for py in range(stride) for px in range(stride))


def _zero_border(tap, rows, cs):
    """Zero the outputs of one tap outside ``tap[:, :, rows, cs]`` (those that read the padding);
    tap: (c, n, Ho, Wo). Empty borders are skipped."""
    ho, wo = tap.shape[2:]
    if rows.start > 0:
        tap[:, :, :rows.start] = 0
    if rows.stop < ho:
        tap[:, :, rows.stop:] = 0
    if cs.start > 0:
        tap[:, :, rows, :cs.start] = 0
    if cs.stop < wo:
        tap[:, :, rows, cs.stop:] = 0


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

    plan = _tap_plan(kh, kw, stride, pad, (ho, wo), _phase_shapes(h, w, stride))

    def unfold_channels(c0, c1):
        part = x_cn[c0:c1]
        phases = {(0, 0): part} if stride == 1 else \
            {(py, px): part[:, :, py::stride, px::stride].copy() for py in range(stride) for px in range(stride)}
        for dy, dx, phase, rows, cs, in_rows, in_cs in plan:
            tap = cols[c0:c1, dy, dx]
            tap[:, :, rows, cs] = phases[phase][:, :, in_rows, in_cs]
            _zero_border(tap, rows, cs)

    channel_bytes = n * h * w * x.itemsize
    parallel_ranges(xp, c, cols.size, _channel_blocks(stride, channel_bytes, unfold_channels))
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

    plan = _tap_plan(kh, kw, stride, pad, (ho, wo), _phase_shapes(h, w, stride))

    def fold_channels(c0, c1):
        part = x_cn[c0:c1]
        phases = {(0, 0): part} if stride == 1 else \
            {(py, px): xp.zeros_like(part[:, :, py::stride, px::stride], order="C")
             for py in range(stride) for px in range(stride)}
        for dy, dx, phase, rows, cs, in_rows, in_cs in plan:
            phases[phase][:, :, in_rows, in_cs] += cols6[c0:c1, dy, dx, :, rows, cs]
        if stride != 1:
            for (py, px), phase in phases.items():
                part[:, :, py::stride, px::stride] = phase

    channel_bytes = n * h * w * cols.itemsize
    parallel_ranges(xp, c, cols.size, _channel_blocks(stride, channel_bytes, fold_channels))
    return x_cn.transpose(1, 0, 2, 3)


# ---------------------------------------------------------------------------
# col2im on row-padded columns: one contiguous add per tap, for small planes
# ---------------------------------------------------------------------------

def col2im_row_width(x_hw, kh, kw, stride, pad):
    """The narrowest row width R for :func:`col2im_rows` on an image of ``x_hw = (H, W)``.

    With every (Ho × R) plane of the columns and every (H_p × R) phase of the image flattened,
    a tap that adds column (y, x) onto image (y + oy, x + ox) becomes one shift of the flat index by
    ``oy·R + ox``. That is exact when the entries it wraps onto are zeros: R ≥ Wo + ox (a read
    left of a row lands in the zero columns Wo … R−1 of the row above) and R ≥ W_p − ox (a write
    right of a phase row lands in its spare columns W_p … R−1, which are dropped), for every tap.
    """
    h, w = x_hw
    wo = conv_output_size(w, kw, stride, pad)
    width = wo
    for _, _, (_, px), _, ox in _taps(kh, kw, pad, stride):
        phase_w = len(range(px, w, stride))
        width = max(width, wo + max(ox, 0), phase_w + max(-ox, 0))
    return width


def col2im_rows(cols, x_shape, kh, kw, stride, pad, row, keep=None):
    """:func:`col2im` of columns laid out ``row`` wide, whose extra columns are zeros.

    cols:    (C*kh*kw, N*Ho*row): column ``(n, y, x)`` at ``(n·Ho + y)·row + x``; every entry with
             x ≥ Wo must be 0 (e.g. a GEMM of an input padded with zero columns to width ``row``)
    x_shape: (N, C, H, W); row: ≥ :func:`col2im_row_width` ((H, W), kh, kw, stride, pad)
    keep:    optional (H', W') ≤ (H, W): only the top-left H' × W' of the image is returned
             (the transposed convolution's crop), without a copy of the whole
    returns  (N, C, H, W) (or (N, C, H', W')), channel-major, equal bit for bit to ``col2im`` of the
             Wo-wide columns (cropped).

    Why: :func:`col2im` adds blocks of Wo-long rows, so for 7×7 or 14×14 planes NumPy spends its
    time starting rows. Here each tap is one flat, contiguous add per (channel, image) (see
    :func:`col2im_row_width`), in the same tap order onto the same zero start: every image entry
    receives the same terms in the same order, plus exact zeros from the padding (x + 0 = x),
    so the sums are the same numbers.
    """
    xp = get_array_module(cols)
    n, c, h, w = x_shape
    ho = conv_output_size(h, kh, stride, pad)
    if row < col2im_row_width((h, w), kh, kw, stride, pad):
        raise ValueError(f"col2im_rows needs rows of at least {col2im_row_width((h, w), kh, kw, stride, pad)}, "
                         f"got {row}")
    cols5 = cols.reshape(c, kh, kw, n, ho * row)
    keep_h, keep_w = (h, w) if keep is None else keep
    x_cn = xp.empty((c, n, keep_h, keep_w), dtype=cols.dtype)
    phases = dict(_phase_shapes(h, w, stride))
    shifts = {phase: [(dy, dx, oy * row + ox) for dy, dx, p, oy, ox in _taps(kh, kw, pad, stride) if p == phase]
              for phase in phases}

    def fold_channels(c0, c1):
        part = x_cn[c0:c1]
        for (py, px), (phase_h, phase_w) in phases.items():
            target = xp.zeros((c1 - c0, n, phase_h * row), dtype=cols.dtype)
            for dy, dx, shift in shifts[(py, px)]:
                t0, t1 = max(0, shift), min(phase_h * row, ho * row + shift)
                if t1 > t0:
                    target[:, :, t0:t1] += cols5[c0:c1, dy, dx, :, t0 - shift:t1 - shift]
            kept_h, kept_w = len(range(py, keep_h, stride)), len(range(px, keep_w, stride))
            plane = target.reshape(c1 - c0, n, phase_h, row)[:, :, :kept_h, :kept_w]
            if stride == 1:
                part[...] = plane
            else:
                part[:, :, py::stride, px::stride] = plane

    channel_bytes = n * h * w * cols.itemsize
    parallel_ranges(xp, c, cols.size, _channel_blocks(stride, channel_bytes, fold_channels))
    return x_cn.transpose(1, 0, 2, 3)
