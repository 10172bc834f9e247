"""Bilinear x2 along one axis (half-pixel centres, clamped edges), its adjoint, and the 2×2 phases of a ×2 grid.

:func:`upsample2x_axis` / :func:`upsample2x_axis_adjoint` are layer 4's
upsampling (:class:`sflnet.nn.fixed.Upsample2x`) and its transpose;
:func:`interleave_phases` / :func:`split_phases` are the depth-to-space map of
the sub-pixel form of layer 4 (:class:`sflnet.nn.conv.UpsampleConv2D`) and its
adjoint. Written once for NumPy and CuPy; the NumPy work runs on all threads
(:func:`sflnet.ops.threads.parallel_ranges`).
"""

from sflnet.backend import get_array_module
from sflnet.ops.threads import along, parallel_ranges, split_axis


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
    split = split_axis(x.shape, axis)

    def upsample_part(lo, hi):
        part = along(x, split, slice(lo, hi))
        target = along(out, split, slice(lo, hi))
        even = along(target, axis, slice(0, None, 2))      # out[2i],   i = 0 … n-1
        odd = along(target, axis, slice(1, None, 2))       # out[2i+1], i = 0 … n-1
        xp.multiply(part, 0.75, out=even)
        along(even, axis, slice(1, n))[...] += 0.25 * along(part, axis, slice(0, n - 1))   # + 1/4 x[i-1], i ≥ 1
        along(even, axis, slice(0, 1))[...] += 0.25 * along(part, axis, slice(0, 1))       # clamped x[-1] → x[0]
        xp.multiply(part, 0.75, out=odd)
        along(odd, axis, slice(0, n - 1))[...] += 0.25 * along(part, axis, slice(1, n))    # + 1/4 x[i+1], i ≤ n-2
        along(odd, axis, slice(n - 1, n))[...] += 0.25 * along(part, axis, slice(n - 1, n))  # clamped x[n] → x[n-1]

    parallel_ranges(xp, x.shape[split], out.size, upsample_part)
    return along(out, axis, slice(0, out_len))


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
    split = split_axis(g.shape, axis)

    def adjoint_part(lo, hi):
        part = along(g, split, slice(lo, hi))
        target = along(out, split, slice(lo, hi))
        ge = along(part, axis, slice(0, None, 2))   # n entries
        go = along(part, axis, slice(1, None, 2))   # n_odd entries
        xp.multiply(ge, 0.75, out=target)
        along(target, axis, slice(0, n_odd))[...] += 0.75 * go
        along(target, axis, slice(0, n - 1))[...] += 0.25 * along(ge, axis, slice(1, n))     # ge[i+1] → i
        along(target, axis, slice(0, 1))[...] += 0.25 * along(ge, axis, slice(0, 1))          # clamped ge[0] → 0
        along(target, axis, slice(1, reach + 1))[...] += 0.25 * along(go, axis, slice(0, reach))
        if n_odd == n:
            along(target, axis, slice(n - 1, n))[...] += 0.25 * along(go, axis, slice(n - 1, n))  # clamped go[n-1]

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
