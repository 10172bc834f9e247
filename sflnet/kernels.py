"""Array kernels shared by the layers: im2col/col2im, bilinear x2 and its adjoint,
and the separable 1-D filtering used by the fast LoG bank.

This is the only module allowed to branch on the backend (NumPy vs CuPy), and it
does so only where a library routine differs between the two
(``scipy.ndimage`` vs ``cupyx.scipy.ndimage``). Everything else is written once
with ``xp = get_array_module(x)``.

Conventions: arrays are NCHW; ``kh, kw`` are odd kernel sizes; ``pad`` is the
zero padding on each side; output sizes follow ``floor((H + 2 pad - kh) / stride) + 1``.
"""

import numpy as np

from sflnet.backend import get_array_module


def conv_output_size(size, kernel, stride, pad):
    """Output length of a correlation along one axis: ``(size + 2 pad - kernel) // stride + 1``."""
    return (size + 2 * pad - kernel) // stride + 1


# ---------------------------------------------------------------------------
# im2col / col2im
# ---------------------------------------------------------------------------

def _tap_range(out_len, in_len, offset, stride):
    """Outputs ``o`` of one kernel tap whose input ``o·stride + offset`` lies inside ``[0, in_len)``.

    returns ``(lo, hi, start)``: outputs ``lo ≤ o < hi`` read inputs
    ``start, start + stride, …``; every other output of this tap reads the
    zero padding. ``offset`` is the tap index minus the padding, ``d − pad``.
    """
    lo = min(out_len, max(0, -(offset // stride)))   # ceil(−offset / stride), clipped
    hi = max(lo, min(out_len, (in_len - 1 - offset) // stride + 1))
    return lo, hi, lo * stride + offset


def _tap_slices(out_hw, in_hw, dy, dx, stride, pad):
    """For tap (dy, dx): (output rows, output cols, input rows, input cols) slices of the in-range part."""
    (ho, wo), (h, w) = out_hw, in_hw
    ylo, yhi, ys = _tap_range(ho, h, dy - pad, stride)
    xlo, xhi, xs = _tap_range(wo, w, dx - pad, stride)
    return (slice(ylo, yhi), slice(xlo, xhi),
            slice(ys, ys + stride * (yhi - ylo - 1) + 1, stride),
            slice(xs, xs + stride * (xhi - xlo - 1) + 1, stride))


def im2col(x, kh, kw, stride, pad):
    """Unfold every receptive field of ``x`` into one column.

    x:      (N, C, H, W)
    returns (C*kh*kw, N*Ho*Wo), row index ``(c, dy, dx)`` in C order, column
            index ``(n, y, x)`` in C order, so that Eq. 2 becomes one matrix
            product ``W.reshape(C_out, C*kh*kw) @ cols``.

    ``cols[(c,dy,dx), (n,y,x)] = x_pad[n, c, y*stride + dy, x*stride + dx]``
    where ``x_pad`` is ``x`` with ``pad`` zeros on each spatial side.

    No padded copy of ``x`` is made: for each tap, the outputs whose input is
    inside the image get one strided block copy, and the thin border of
    outputs that would read the padding is set to zero. The block copies read
    ``x`` channel-major (``x.transpose(1, 0, 2, 3)``), which is free when ``x``
    came out of a GEMM of this module's layout. The input is never modified.
    """
    xp = get_array_module(x)
    n, c, h, w = x.shape
    ho = conv_output_size(h, kh, stride, pad)
    wo = conv_output_size(w, kw, stride, pad)
    x_cn = x.transpose(1, 0, 2, 3)
    cols = xp.empty((c, kh, kw, n, ho, wo), dtype=x.dtype)
    for dy in range(kh):
        for dx in range(kw):
            rows, cs, in_rows, in_cs = _tap_slices((ho, wo), (h, w), dy, dx, stride, pad)
            tap = cols[:, dy, dx]
            tap[:, :, rows, cs] = x_cn[:, :, in_rows, in_cs]
            tap[:, :, :rows.start] = 0
            tap[:, :, rows.stop:] = 0
            tap[:, :, rows, :cs.start] = 0
            tap[:, :, rows, cs.stop:] = 0
    return cols.reshape(c * kh * kw, n * ho * wo)


def col2im(cols, x_shape, kh, kw, stride, pad):
    """Adjoint of :func:`im2col`: scatter-add the columns back onto the image.

    cols:    (C*kh*kw, N*Ho*Wo)
    x_shape: (N, C, H, W) of the image that was unfolded
    returns  (N, C, H, W) (a channel-major view: memory order (C, N, H, W))

    Each input pixel appears in up to ``kh*kw`` columns; its value here is the
    sum of all those column entries (the transpose of the copy in im2col), and
    entries that fell on the zero padding are dropped (the same in-range
    blocks as :func:`im2col`, added instead of copied).
    """
    xp = get_array_module(cols)
    n, c, h, w = x_shape
    ho = conv_output_size(h, kh, stride, pad)
    wo = conv_output_size(w, kw, stride, pad)
    cols6 = cols.reshape(c, kh, kw, n, ho, wo)
    x_cn = xp.zeros((c, n, h, w), dtype=cols.dtype)
    for dy in range(kh):
        for dx in range(kw):
            rows, cs, in_rows, in_cs = _tap_slices((ho, wo), (h, w), dy, dx, stride, pad)
            x_cn[:, :, in_rows, in_cs] += cols6[:, dy, dx, :, rows, cs]
    return x_cn.transpose(1, 0, 2, 3)


# ---------------------------------------------------------------------------
# Bilinear x2 (half-pixel centres, clamped edges) and its adjoint
# ---------------------------------------------------------------------------

def _neighbours(x, axis):
    """``(prev, next)`` of ``x`` along ``axis`` with edge clamping: prev[i] = x[max(i-1,0)], next[i] = x[min(i+1,n-1)]."""
    xp = get_array_module(x)
    n = x.shape[axis]
    idx = xp.arange(n)
    prev = xp.take(x, xp.maximum(idx - 1, 0), axis=axis)
    nxt = xp.take(x, xp.minimum(idx + 1, n - 1), axis=axis)
    return prev, nxt


def upsample2x_axis(x, axis, out_len):
    """Bilinear x2 along one axis, cropped to ``out_len`` (``2n-1`` or ``2n``).

    ``out[2i] = 3/4 x[i] + 1/4 x[max(i-1, 0)]``,
    ``out[2i+1] = 3/4 x[i] + 1/4 x[min(i+1, n-1)]``.
    """
    xp = get_array_module(x)
    prev, nxt = _neighbours(x, axis)
    even = 0.75 * x + 0.25 * prev
    odd = 0.75 * x + 0.25 * nxt
    out = xp.stack((even, odd), axis=axis + 1)  # interleave: (..., n, 2, ...) -> (..., 2n, ...)
    shape = list(x.shape)
    shape[axis] = 2 * x.shape[axis]
    out = out.reshape(shape)
    index = [slice(None)] * x.ndim
    index[axis] = slice(0, out_len)
    return out[tuple(index)].astype(x.dtype, copy=False)


def upsample2x_axis_adjoint(g, axis, in_len):
    """Transpose of :func:`upsample2x_axis`: ``g`` has ``out_len`` entries on ``axis``, result ``in_len``.

    The crop's transpose pads ``g`` with zeros to ``2 in_len``; then with
    ``ge = g[0::2]`` and ``go = g[1::2]``, each input i collects
    ``3/4 (ge[i] + go[i])``, plus ``1/4 ge[i+1]`` (it is the left neighbour of
    output 2(i+1)) and ``1/4 go[i-1]`` (right neighbour of output 2(i-1)+1);
    the clamped edges send ``1/4 ge[0]`` to input 0 and ``1/4 go[n-1]`` to input n-1.
    """
    xp = get_array_module(g)
    pad_width = [(0, 0)] * g.ndim
    pad_width[axis] = (0, 2 * in_len - g.shape[axis])
    g_full = xp.pad(g, pad_width)
    shape = list(g.shape)
    shape[axis] = in_len
    shape.insert(axis + 1, 2)
    pairs = g_full.reshape(shape)
    ge = xp.take(pairs, 0, axis=axis + 1)
    go = xp.take(pairs, 1, axis=axis + 1)

    def sl(start, stop):
        index = [slice(None)] * g.ndim
        index[axis] = slice(start, stop)
        return tuple(index)

    out = 0.75 * (ge + go)
    out[sl(0, in_len - 1)] += 0.25 * ge[sl(1, in_len)]
    out[sl(0, 1)] += 0.25 * ge[sl(0, 1)]
    out[sl(1, in_len)] += 0.25 * go[sl(0, in_len - 1)]
    out[sl(in_len - 1, in_len)] += 0.25 * go[sl(in_len - 1, in_len)]
    return out.astype(g.dtype, copy=False)


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
    xp = get_array_module(x)
    ndimage = _ndimage(xp)
    tmp = ndimage.correlate1d(x, xp.asarray(row_taps, dtype=x.dtype), axis=-1, mode="constant", cval=0.0)
    return ndimage.correlate1d(tmp, xp.asarray(col_taps, dtype=x.dtype), axis=-2, mode="constant", cval=0.0)
