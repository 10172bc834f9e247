"""The convolutions: Eq. 2 (:class:`Conv2D`), layer 4 as one sub-pixel convolution (:class:`UpsampleConv2D`),
and the β-VAE decoder's transposed convolution (:class:`ConvTranspose2D`).

All three are im2col + one GEMM (:mod:`sflnet.ops.im2col`), with weights
(C_out, C_in, k, k) as PyTorch's (ConvTranspose2D: (C_in, C_out, k, k)) and
``params``/``grads`` under the keys ``"w"`` and ``"b"``. Their results are
channel-major views (memory order (C, N, H, W)), the natural layout of the
GEMM, which the next layer reads without copies.

Notation (paper Sec. 2-3): ``f^l`` is the volume of layer l, ``o^{l+1}`` the
pre-activation of Eq. 2, ``f^L`` the reconstruction (L = 5) and ``f^1`` the input image.
"""

import math

import numpy as np

from sflnet.backend import device_constant, get_array_module
from sflnet.nn.base import Layer
from sflnet.nn.fixed import Upsample2x
from sflnet.ops import resample
from sflnet.ops.im2col import col2im, col2im_row_width, col2im_rows, conv_output_size, im2col


class _ScratchLayer(Layer):
    """A :class:`~sflnet.nn.base.Layer` with scratch arrays reused between calls: the layers that unfold
    big matrices (Conv2D, UpsampleConv2D, ConvTranspose2D)."""

    def __init__(self, **params):
        super().__init__(**params)
        self._buffers = {}   # name → flat scratch array (see _scratch)

    def _scratch(self, name, shape, like):
        """A reusable scratch array of ``shape`` (dtype and device of ``like``), kept between calls.

        The big unfolded matrices are allocated once and reused chunk after
        chunk and epoch after epoch, instead of being fetched fresh from the
        operating system each time (page faults). Only internal matrices use it,
        never an array that is returned.
        """
        xp = get_array_module(like)
        size = math.prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.size < size or buffer.dtype != like.dtype or get_array_module(buffer) is not xp:
            buffer = xp.empty(size, dtype=like.dtype)
            self._buffers[name] = buffer
        return buffer[:size].reshape(shape)


class Conv2D(_ScratchLayer):
    """Eq. 2: zero-padded cross-correlation with stride 1 or 2, plus bias.

    ``o[n, c, y, x] = Σ_{c', dy, dx} f[n, c', y·s + dy − p, x·s + dx − p] · w[c, c', dy, dx] + b[c]``

    (an input index outside [0, H) × [0, W) reads a zero: the padding). Weight
    layout (C_out, C_in, kh, kw), as PyTorch's ``conv2d``. The padding p on each
    side is chosen by ``padding``:

    * ``"same"`` (the paper's, the default): p = (k−1)/2, so
      Ho = ⌊(H + 2p − k)/s⌋ + 1 = ⌈H/s⌉ (H itself with stride 1);
    * ``"valid"`` (the β-VAE's encoder): p = 0, only windows that lie inside
      the image, Ho = ⌊(H − k)/s⌋ + 1 (28 → 13 → 6 with k = 3, s = 2). With
      stride 2 the last rows/columns may be read by no window (28: row 27);
      their gradient is 0.

    Shapes: x (N, C_in, H, W) → o (N, C_out, Ho, Wo), Wo likewise.

    Two exact ways to evaluate Eq. 2 with one GEMM, chosen by ``unfold``:

    * ``"input"`` (default, the textbook one): unfold the input with im2col,
      then ``o = w.reshape(C_out, C_in·k²) @ cols + b``. The unfolded matrix has
      C_in·k² rows.
    * ``"output"`` (stride 1 and "same" padding only): multiply first, ``Y = W_out @ x`` with
      ``W_out[(c, dy', dx'), c'] = w[c, c', k−1−dy', k−1−dx']`` (C_out·k² rows),
      then sum the k² shifted planes of Y with col2im:
      ``o[c, y, x] = Σ_{dy', dx'} Y[(c, dy', dx'), y − dy' + p, x − dx' + p]``;
      substituting dy = k−1−dy' gives back ``Σ_{c', dy} w[c, c', dy] f[c', y + dy − p]``, Eq. 2.
      Only C_out·k² rows are ever unfolded, so this is the cheaper way when
      C_out < C_in (layer 5: 3·9 = 27 rows instead of 32·9 = 288).

    Results are channel-major views (memory order (C, N, H, W)), the natural
    layout of the GEMM; the next layer's im2col and GEMM read them without copies.

    (The paper folds the bias into Eq. 3; here it is added in this layer so
    that the activations are parameter-free.)
    """

    UNFOLDS = ("input", "output")
    PADDINGS = ("same", "valid")

    def __init__(self, w, b, stride=1, unfold="input", padding="same"):
        """w: (C_out, C_in, kh, kw) odd kh = kw; b: (C_out,). The arrays are held, not copied.
        unfold: "input" or "output" (stride 1 and "same" only); padding: "same" (p = (k−1)/2)
        or "valid" (p = 0). See the class docstring."""
        c_out, c_in, kh, kw = w.shape
        if kh != kw or kh % 2 != 1:
            raise ValueError(f"Conv2D needs a square odd kernel, got {kh}x{kw}")
        if b.shape != (c_out,):
            raise ValueError(f"Conv2D bias must have shape ({c_out},), got {b.shape}")
        if stride not in (1, 2):
            raise ValueError(f"Conv2D stride must be 1 or 2, got {stride}")
        if unfold not in self.UNFOLDS:
            raise ValueError(f"Conv2D unfold must be one of {self.UNFOLDS}, got {unfold!r}")
        if padding not in self.PADDINGS:
            raise ValueError(f"Conv2D padding must be one of {self.PADDINGS}, got {padding!r}")
        if unfold == "output" and (stride != 1 or padding != "same"):
            raise ValueError("Conv2D unfold='output' needs stride 1 and padding='same'")
        super().__init__(w=w, b=b)
        self.stride = stride
        self.padding = padding
        self.pad = (kh - 1) // 2 if padding == "same" else 0
        self.unfold = unfold
        self.input_shape = None    # (N, C_in, H, W) of the last forward input
        self.input_cols = None     # unfold="input": (C_in·kh·kw, N·Ho·Wo) im2col of the last input
        self.input_matrix = None   # unfold="output": (C_in, N·H·W) the last input, channel-major

    def _output_side_weights(self):
        """``W_out`` (C_out·k², C_in): row (c, dy', dx') holds ``w[c, :, k−1−dy', k−1−dx']``."""
        w = self.params["w"]
        c_out, c_in, kh, kw = w.shape
        return w[:, :, ::-1, ::-1].transpose(0, 2, 3, 1).reshape(c_out * kh * kw, c_in)

    def forward(self, x):
        """x: (N, C_in, H, W) → o: (N, C_out, Ho, Wo). Caches the im2col of x (or x itself for unfold="output")."""
        xp = get_array_module(x)
        w, b = self.params["w"], self.params["b"]
        c_out, c_in, kh, kw = w.shape
        n, _, h, wd = x.shape
        self.input_shape = x.shape
        if self.unfold == "output":
            x_matrix = x.transpose(1, 0, 2, 3).reshape(c_in, n * h * wd)   # a copy only if x is not channel-major
            planes = xp.matmul(self._output_side_weights(), x_matrix,        # Y: (C_out·k², N·H·W)
                               out=self._scratch("cols", (c_out * kh * kw, n * h * wd), x))
            out = col2im(planes, (n, c_out, h, wd), kh, kw, 1, self.pad)
            out += b[None, :, None, None]   # out is col2im's fresh array
            self.input_matrix = x_matrix
            return out
        ho = conv_output_size(h, kh, self.stride, self.pad)
        wo = conv_output_size(wd, kw, self.stride, self.pad)
        cols = im2col(x, kh, kw, self.stride, self.pad,
                      out=self._scratch("cols", (c_in * kh * kw, n * ho * wo), x))
        out = w.reshape(c_out, -1) @ cols            # (C_out, N·Ho·Wo)
        out += b[:, None]
        self.input_cols = cols
        return out.reshape(c_out, n, ho, wo).transpose(1, 0, 2, 3)

    def backward(self, dout, need_dx=True):
        """dout = ∂E/∂o: (N, C_out, Ho, Wo) → ∂E/∂x: (N, C_in, H, W) (or None if not ``need_dx``).

        Derivation (unfold="input"). With ``O = W·cols + b 1ᵀ`` (W: C_out × K,
        cols: K × M, K = C_in·kh·kw, M = N·Ho·Wo) and G = ∂E/∂O (C_out × M):

        * ``∂E/∂W = G · colsᵀ``  — each weight multiplies the column entries it meets (Eq. 2 is linear in w);
        * ``∂E/∂b = G · 1``      — the bias is added to every output position of its channel;
        * ``∂E/∂cols = Wᵀ · G``, and since ``cols = im2col(x)`` is a linear copy,
          ``∂E/∂x = col2im(Wᵀ · G)`` — col2im is im2col's transpose, so each
          input pixel sums the gradient of every output whose window covered it
          (with either padding: entries that read the padding are simply dropped,
          and a pixel that no "valid" window reads gets 0).

        Derivation (unfold="output", stride 1). The forward is
        ``O = col2im(W_out · X) + b 1ᵀ`` with X the input as a C_in × M matrix.
        col2im's transpose is im2col, so ``∂E/∂Y = im2col(G)`` (C_out·k² × M):

        * ``∂E/∂W_out = im2col(G) · Xᵀ``, and ``∂E/∂w[c, c', dy, dx]`` is its entry
          at row (c, k−1−dy, k−1−dx), column c' (W_out holds w flipped);
        * ``∂E/∂b = G · 1`` as above;
        * ``∂E/∂X = W_outᵀ · im2col(G)``, a GEMM with only C_out·k² inner terms.

        Fills ``grads["w"]`` (C_out, C_in, kh, kw) and ``grads["b"]`` (C_out,).
        """
        xp = get_array_module(dout)
        w = self.params["w"]
        c_out, c_in, kh, kw = w.shape
        if self.unfold == "output":
            n, _, h, wd = self.input_shape
            g_cols = im2col(dout, kh, kw, 1, self.pad,                   # ∂E/∂Y: (C_out·k², M)
                            out=self._scratch("dcols", (c_out * kh * kw, n * h * wd), dout))
            dw_out = g_cols @ self.input_matrix.T                        # ∂E/∂W_out: (C_out·k², C_in)
            dw = dw_out.reshape(c_out, kh, kw, c_in)[:, ::-1, ::-1, :].transpose(0, 3, 1, 2)
            self.grads["w"] = dw.copy()    # contiguous (C_out, C_in, kh, kw)
            self.grads["b"] = dout.sum(axis=(0, 2, 3))
            if not need_dx:
                return None
            dx = self._output_side_weights().T @ g_cols                 # (C_in, M)
            return dx.reshape(c_in, n, h, wd).transpose(1, 0, 2, 3)
        g = dout.transpose(1, 0, 2, 3).reshape(c_out, -1)   # (C_out, M), a copy if needed
        # G·colsᵀ, computed as (cols·Gᵀ)ᵀ: the same numbers, and OpenBLAS is 15-30 % faster this way round
        self.grads["w"] = (self.input_cols @ g.T).T.reshape(w.shape)
        self.grads["b"] = g.sum(axis=1)
        if not need_dx:
            return None
        dcols = xp.matmul(w.reshape(c_out, -1).T, g,        # (K, M)
                          out=self._scratch("dcols", self.input_cols.shape, g))
        return col2im(dcols, self.input_shape, kh, kw, self.stride, self.pad)


# ---------------------------------------------------------------------------
# Layer 4 in one piece: bilinear ×2 then the 3×3 conv, as a sub-pixel convolution
# ---------------------------------------------------------------------------

def upsample_conv_taps():
    """R[a, e, d]: how much of the low-resolution pixel x[i + e − 1] the upsampled u[2i + a + d − 1] holds.

    returns (2, 3, 3) float64 NumPy: a ∈ {0, 1} the output phase, e ∈ {0, 1, 2} the low-resolution
    offset −1, 0, +1, d ∈ {0, 1, 2} the tap of the 3×3 convolution.

    From :class:`Upsample2x`'s interior formulas ``u[2j] = ¾ x[j] + ¼ x[j−1]`` and
    ``u[2j+1] = ¾ x[j] + ¼ x[j+1]``: write ``k = a + d − 1 = 2j + r`` (r ∈ {0, 1});
    then u[2i + k] holds ¾ of x[i + j] and ¼ of x[i + j − 1] (r = 0) or x[i + j + 1] (r = 1).
    Every k ∈ {−1, 0, 1, 2} reaches only offsets −1 … +1, so each output phase is a 3×3
    convolution of the low-resolution image.
    """
    taps = np.zeros((2, 3, 3))
    for a in range(2):
        for d in range(3):
            j, r = divmod(a + d - 1, 2)
            taps[a, j + 1, d] += 0.75
            taps[a, j + (1 if r else -1) + 1, d] += 0.25
    return taps


UPSAMPLE_CONV_TAPS = upsample_conv_taps()   # R, computed once (read-only)


class UpsampleConv2D(_ScratchLayer):
    """Layer 4 as one layer: :class:`Upsample2x` (cropped to ``output_size``) then a 3×3 "same"
    :class:`Conv2D` with stride 1, computed as a sub-pixel convolution at the low resolution.

    ``o = Conv2D(w, b)(Upsample2x(x))`` (Eq. 2 on the bilinear ×2 of x). Both maps are linear, and
    away from the border, output pixel (2i + a, 2j + b) only reads low-resolution pixels
    (i + e − 1, j + f − 1), e, f ∈ {0, 1, 2} (see :func:`upsample_conv_taps`). So the four output
    phases (a, b) are four 3×3 convolutions of x with the combined weights

    ``w'[a, b, c, c', e, f] = Σ_{d, g} R[a, e, d] · R[b, f, g] · w[c, c', d, g]``,

    i.e. one convolution with 4·C_out output channels at the LOW resolution, followed by
    :func:`sflnet.ops.resample.interleave_phases`. It does the same multiplications as conv4 on the upsampled
    image, but unfolds (im2col) and folds (col2im) a quarter of the pixels, and the upsampled image
    is never built.

    The border: the combined weights assume the interior formulas. Output rows 0, 1, H−2, H−1 (and
    columns likewise) also see the clamped edges of the bilinear map and the zero padding of the
    convolution, so those rows and columns are recomputed the plain way, with :class:`Upsample2x`
    and :class:`Conv2D` on a strip of at most 3 low-resolution rows (or columns), and overwrite the
    fast result. Images with a side below 3 run the plain way entirely.

    Shapes: x (N, C_in, h, w) → o (N, C_out, H, W), 2h − 1 ≤ H ≤ 2h, 2w − 1 ≤ W ≤ 2w (a channel-major
    view, as Conv2D's). Weight layout (C_out, C_in, 3, 3), as :class:`Conv2D`; the arrays are held,
    not copied. Set ``output_size`` before ``forward`` (the model does); ``None`` means (2h, 2w).
    Equal to the two layers in sequence up to rounding (tests: float64 ≤ 1e-12 relative).
    """

    MIN_SIDE = 3   # low-resolution side below which the whole image runs the plain way

    def __init__(self, w, b, output_size=None):
        """w: (C_out, C_in, 3, 3); b: (C_out,). The arrays are held, not copied."""
        c_out, c_in, kh, kw = w.shape
        if (kh, kw) != (3, 3):
            raise ValueError(f"UpsampleConv2D needs a 3x3 kernel, got {kh}x{kw}")
        if b.shape != (c_out,):
            raise ValueError(f"UpsampleConv2D bias must have shape ({c_out},), got {b.shape}")
        super().__init__(w=w, b=b)
        self.output_size = output_size
        self.input_shape = None     # (N, C_in, h, w) of the last forward input
        self.input_cols = None      # (C_in·9, N·h·w) im2col of the last input (fast path)
        self.combined_weights = None  # (4·C_out, C_in·9) w' of the last forward (fast path)
        self.border_strips = None   # [(Upsample2x, Conv2D, input window, output window)] of the last forward
        self.plain = None           # (Upsample2x, Conv2D) when the last input ran the plain way

    def _combined_weights(self):
        """w' as a (4·C_out, C_in·9) matrix, rows (a, b, c), columns (c', e, f) (im2col's row order)."""
        xp = get_array_module(self.params["w"])
        w = self.params["w"]
        taps = device_constant(UPSAMPLE_CONV_TAPS, w)
        c_out, c_in = w.shape[:2]
        return xp.einsum("aed,bfg,ocdg->aboc" + "ef", taps, taps, w).reshape(4 * c_out, c_in * 9)

    def _plain_pair(self, output_size):
        return Upsample2x(output_size), Conv2D(self.params["w"], self.params["b"], stride=1)

    def _strip_windows(self, low_hw, out_hw):
        """The border strips: [(input rows, input cols, output rows, output cols, rows and cols of the
        plain result to keep)], all as slices. Rows 0-1 and H−2…H−1 over the full width, then columns
        0-1 and W−2…W−1 over the rows in between, so every border pixel belongs to one strip."""
        (h, w), (height, width) = low_hw, out_hw
        strips = []
        for axis, (low, out) in enumerate(((h, height), (w, width))):
            for side in (0, 1):
                lo = 0 if side == 0 else max(0, low - 3)
                hi = min(low, 3) if side == 0 else low
                plain_len = (2 * hi if hi < low else out) - 2 * lo     # the upsampled strip, cropped at the true end
                keep = slice(0, 2) if side == 0 else slice(out - 2 - 2 * lo, out - 2 * lo)
                target = slice(0, 2) if side == 0 else slice(out - 2, out)
                if axis == 0:
                    strips.append((slice(lo, hi), slice(0, w), target, slice(0, width), (plain_len, width),
                                   keep, slice(0, width)))
                else:
                    strips.append((slice(0, h), slice(lo, hi), slice(2, height - 2), target, (height, plain_len),
                                   slice(2, height - 2), keep))
        return strips

    def forward(self, x):
        """x: (N, C_in, h, w) → o: (N, C_out, H, W). Caches the im2col of x and the border strips' layers."""
        n, c_in, h, w = x.shape
        out_hw = self.output_size if self.output_size is not None else (2 * h, 2 * w)
        if not (2 * h - 1 <= out_hw[0] <= 2 * h and 2 * w - 1 <= out_hw[1] <= 2 * w):
            raise ValueError(f"UpsampleConv2D cannot map {h}x{w} to {out_hw[0]}x{out_hw[1]}")
        self.input_shape = x.shape
        if min(h, w) < self.MIN_SIDE:
            self.plain = self._plain_pair(out_hw)
            self.input_cols = self.combined_weights = self.border_strips = None
            return self.plain[1].forward(self.plain[0].forward(x))
        self.plain = None
        weights = self._combined_weights()
        cols = im2col(x, 3, 3, 1, 1, out=self._scratch("cols", (c_in * 9, n * h * w), x))
        c_out = self.params["w"].shape[0]
        phases = get_array_module(x).matmul(weights, cols,                       # (4·C_out, N·h·w)
                                            out=self._scratch("phases", (4 * c_out, n * h * w), x))
        out = resample.interleave_phases(phases.reshape(2, 2, c_out, n, h, w), out_hw, bias=self.params["b"])
        self.input_cols = cols
        self.combined_weights = weights
        self.border_strips = []
        for rows_in, cols_in, rows_out, cols_out, plain_hw, keep_rows, keep_cols in \
                self._strip_windows((h, w), out_hw):
            up, conv = self._plain_pair(plain_hw)
            strip = conv.forward(up.forward(x[:, :, rows_in, cols_in]))
            out[:, :, rows_out, cols_out] = strip[:, :, keep_rows, keep_cols].transpose(1, 0, 2, 3)
            self.border_strips.append((up, conv, (rows_in, cols_in), (rows_out, cols_out, keep_rows, keep_cols)))
        return out.transpose(1, 0, 2, 3)

    def backward(self, dout, need_dx=True):
        """dout = ∂E/∂o: (N, C_out, H, W) → ∂E/∂x: (N, C_in, h, w) (or None if not ``need_dx``).
        Fills ``grads["w"]`` and ``grads["b"]``.

        Derivation. The forward splits the output pixels into two disjoint sets: the interior,
        ``o = interleave(W' · cols) + b`` with ``cols = im2col(x)``, and the border strips,
        each ``o_s = crop(Conv2D(w, b)(Upsample2x(x_s)))`` on a window x_s of x. So with G = ∂E/∂o:

        * interior: ``G' = split_phases(G)`` with the border pixels set to 0 (they were overwritten),
          as a (4·C_out, N·h·w) matrix; then exactly :class:`Conv2D`'s derivation (Eq. 2 is linear in W'
          and in cols):
          ``∂E/∂W' = G' · colsᵀ`` and ``∂E/∂x = col2im(W'ᵀ · G')``. Since w' is linear in w,
          ``∂E/∂w[c, c', d, g] = Σ_{a, b, e, f} R[a, e, d] R[b, f, g] ∂E/∂W'[a, b, c, c', e, f]``
          (the transpose of the combination);
        * each strip: its G, put back in the plain result's shape with zeros elsewhere (the crop's
          transpose), through :meth:`Conv2D.backward` and :meth:`Upsample2x.backward`; the window's
          gradient is added into ∂E/∂x, and the strip's ∂E/∂w to the total;
        * ``∂E/∂b = Σ G`` over all pixels (every pixel, interior or border, adds b once).
        """
        xp = get_array_module(dout)
        w = self.params["w"]
        if self.plain is not None:
            up, conv = self.plain
            g_up = conv.backward(dout, need_dx=need_dx)
            self.grads["w"], self.grads["b"] = conv.grads["w"], conv.grads["b"]
            return up.backward(g_up) if need_dx else None
        n, c_in, h, w_low = self.input_shape
        c_out = w.shape[0]
        g_cn = dout.transpose(1, 0, 2, 3)
        g = resample.split_phases(g_cn, (h, w_low))                            # (2, 2, C_out, N, h, w)
        height, width = dout.shape[2:]
        for rows in (0, 1, height - 2, height - 1):                          # the border belongs to the strips
            g[rows % 2, :, :, :, rows // 2] = 0
        for cols in (0, 1, width - 2, width - 1):
            g[:, cols % 2, :, :, :, cols // 2] = 0
        g = g.reshape(4 * c_out, n * h * w_low)
        taps = device_constant(UPSAMPLE_CONV_TAPS, w)
        dw_combined = (self.input_cols @ g.T).T.reshape(2, 2, c_out, c_in, 3, 3)
        dw = xp.einsum("aed,bfg,abocef->ocdg", taps, taps, dw_combined)
        dx = None
        if need_dx:
            dcols = xp.matmul(self.combined_weights.T, g, out=self._scratch("dcols", self.input_cols.shape, g))
            dx = col2im(dcols, self.input_shape, 3, 3, 1, 1)
        for up, conv, (rows_in, cols_in), (rows_out, cols_out, keep_rows, keep_cols) in self.border_strips:
            _, _, strip_h, strip_w = conv.input_shape
            g_strip = xp.zeros((n, c_out, strip_h, strip_w), dtype=dout.dtype)
            g_strip[:, :, keep_rows, keep_cols] = dout[:, :, rows_out, cols_out]
            g_up = conv.backward(g_strip, need_dx=need_dx)
            if need_dx:
                dx[:, :, rows_in, cols_in] += up.backward(g_up)
            dw += conv.grads["w"]
        self.grads["w"] = dw
        self.grads["b"] = dout.sum(axis=(0, 2, 3))
        return dx


# ---------------------------------------------------------------------------
# The β-VAE's decoder: the transposed convolution
# ---------------------------------------------------------------------------

class ConvTranspose2D(_ScratchLayer):
    """The transposed convolution, DEFINED as the adjoint (w.r.t. its input) of a "same" :class:`Conv2D`.

    Take the convolution ``C = Conv2D(w, 0, stride=s, padding="same")`` that maps
    C_out channels of size (s·h, s·w) to C_in channels of size (h, w) — its
    weight has the layout (C_in, C_out, k, k). This layer is ``Cᵀ``, going the
    other way, plus a bias:

    ``out = Cᵀ x + b``,  x: (N, C_in, h, w) → out: (N, C_out, s·h, s·w).

    Weight layout w: (C_in, C_out, k, k), square odd k: the very array the
    convolution C holds, and PyTorch's ``ConvTranspose2d`` layout; b: (C_out,).

    **Forward = Conv2D's input gradient.** Conv2D computes
    ``O = W · im2col(f)`` with W = w.reshape(C_in, C_out·k²), and its backward
    computes ``∂E/∂f = col2im(Wᵀ · G)``. That second map is Cᵀ, so with X the
    input as a (C_in, N·h·w) matrix (channel-major):

    ``out = col2im(Wᵀ · X) + b``  (Wᵀ·X: (C_out·k², N·h·w); col2im to (N, C_out, s·h, s·w))

    Element by element: every input pixel x[n, c', i, j] scatters
    ``x[n, c', i, j] · w[c', :, :, :]`` onto the output window whose top-left
    corner is (s·i − p, s·j − p), p = (k−1)/2, and overlapping windows add up;
    whatever falls outside [0, s·h) × [0, s·w) is dropped (the padding of C).

    **Padding convention (a half-pixel shift, documented).** With k = 3, s = 2,
    p = 1 the convolution C reads rows 2i−1 … 2i+1 for output row i, i.e. it pads
    one zero row at the top/left and none at the bottom/right. TensorFlow's
    'same' (whose ``conv2d_transpose`` is also an adjoint) pads bottom/right
    instead, so TensorFlow's result is this one shifted by one output pixel
    (half a pixel of the input grid). It equals PyTorch's
    ``ConvTranspose2d(k, stride=s, padding=(k−1)/2, output_padding=s−1)``.
    With stride 1 all three agree (symmetric padding).

    **TensorFlow's 'same' (``padding="tf-same"``).** TensorFlow's ``conv2d_transpose``
    (and Keras' ``Conv2DTranspose(padding="same")``, output s·h) is the input gradient of
    ``conv2d(·, padding="SAME")`` on an (s·h, s·w) input. TensorFlow's SAME rule for that
    convolution, along one axis of length H = s·h:

    * output length ⌈H / s⌉ = h;
    * total padding ``P = max((h − 1)·s + k − H, 0) = max(k − s, 0)``;
    * ``P_top = ⌊P / 2⌋`` before, ``P_bottom = P − P_top`` after (the extra one at the bottom/right).

    So the window of input pixel i starts at output row ``s·i − P_top`` (instead of
    ``s·i − (k−1)/2``). k = 3, s = 2: P = 1, P_top = 0, P_bottom = 1 (the window of pixel i covers
    rows 2i … 2i+2; sflnet's symmetric one covers 2i−1 … 2i+1); k = 3, s = 1: P = 2, P_top = 1 = (k−1)/2,
    the same as "symmetric". In terms of the full transposed convolution (no padding, length
    s·(h−1) + k, pixel i's window at s·i), both keep s·h rows starting at row P_top; PyTorch's
    ``conv_transpose2d(x, w, stride=s, padding=0)[..., P_top:P_top + s·h, P_top:P_top + s·w]``.

    Implementation: the same col2im (:func:`sflnet.ops.im2col.col2im_rows`, on the input padded with
    zero columns, which gives the same sums) with offset ``pad = P_top`` onto an (s·h + e)² grid,
    ``e = max(k − s − 2·P_top, 0)`` (the rows whose windows need one more row to be whole:
    e = 1 for k = 3, s = 2, tf-same; e = 0 whenever the padding is symmetric), then the first s·h
    rows and columns are kept. The backward pads ∂E/∂out with e zero rows/columns at the
    bottom/right and unfolds it with the same offset.

    Sizes: stride 2 doubles (7 → 14 → 28), stride 1 keeps (28 → 28).
    """

    PADDINGS = ("symmetric", "tf-same")

    def __init__(self, w, b, stride=1, padding="symmetric"):
        """w: (C_in, C_out, k, k) odd k; b: (C_out,). The arrays are held, not copied. stride: 1 or 2.
        padding: "symmetric" (the adjoint of sflnet's "same" Conv2D) or "tf-same" (TensorFlow's)."""
        c_in, c_out, kh, kw = w.shape
        if kh != kw or kh % 2 != 1:
            raise ValueError(f"ConvTranspose2D needs a square odd kernel, got {kh}x{kw}")
        if b.shape != (c_out,):
            raise ValueError(f"ConvTranspose2D bias must have shape ({c_out},), got {b.shape}")
        if stride not in (1, 2):
            raise ValueError(f"ConvTranspose2D stride must be 1 or 2, got {stride}")
        if padding not in self.PADDINGS:
            raise ValueError(f"ConvTranspose2D padding must be one of {self.PADDINGS}, got {padding!r}")
        super().__init__(w=w, b=b)
        self.stride = stride
        self.padding = padding
        # the top/left padding of the convolution this is the adjoint of, and the extra rows/columns
        # of the col2im grid that are cropped afterwards (see the class docstring)
        self.pad = (kh - 1) // 2 if padding == "symmetric" else max(kh - stride, 0) // 2
        self.extra = max(kh - stride - 2 * self.pad, 0)
        self.input_shape = None      # (N, C_in, h, w) of the last forward input
        self.input_matrix = None     # X: (C_in, N·h·w), the last input, channel-major

    def output_shape(self, input_shape):
        """(N, C_in, h, w) → (N, C_out, s·h, s·w)."""
        n, _, h, wd = input_shape
        return (n, self.params["w"].shape[1], self.stride * h, self.stride * wd)

    def forward(self, x):
        """x: (N, C_in, h, w) → out: (N, C_out, s·h, s·w), ``col2im(Wᵀ X) + b``. Caches X."""
        xp = get_array_module(x)
        w, b = self.params["w"], self.params["b"]
        c_in, c_out, k, _ = w.shape
        if x.shape[1] != c_in:
            raise ValueError(f"ConvTranspose2D expects {c_in} input channels, got {x.shape[1]}")
        n, _, h, wd = x.shape
        x_matrix = x.transpose(1, 0, 2, 3).reshape(c_in, n * h * wd)     # a copy only if x is not channel-major
        n_out, _, h_out, w_out = self.output_shape(x.shape)
        grid_shape = (n_out, c_out, h_out + self.extra, w_out + self.extra)
        # X with its rows padded by zeros to the width col2im_rows needs, so that Wᵀ X comes out in
        # that layout (its extra columns are Wᵀ·0 = 0) and the scatter is one flat add per tap
        row = col2im_row_width(grid_shape[2:], k, k, self.stride, self.pad)
        x_rows = self._scratch("x_rows", (c_in, n, h, row), x)
        x_rows[:, :, :, :wd] = x_matrix.reshape(c_in, n, h, wd)
        x_rows[:, :, :, wd:] = 0
        cols = xp.matmul(w.reshape(c_in, c_out * k * k).T, x_rows.reshape(c_in, n * h * row),   # Wᵀ X: (C_out·k², N·h·row)
                         out=self._scratch("cols", (c_out * k * k, n * h * row), x))
        out = col2im_rows(cols, grid_shape, k, k, self.stride, self.pad, row, keep=(h_out, w_out))
        out += b[None, :, None, None]    # out is col2im_rows' fresh array, the grid's first s·h rows and columns
        self.input_shape = x.shape
        self.input_matrix = x_matrix
        return out

    def backward(self, dout, need_dx=True):
        """dout = ∂E/∂out: (N, C_out, s·h, s·w) → ∂E/∂x: (N, C_in, h, w) (or None if not ``need_dx``).

        Derivation. The forward is ``O = col2im(A) + b`` with ``A = Wᵀ X``
        (W: C_in × C_out·k², X: C_in × M, M = N·h·w), and G = ∂E/∂O.

        * col2im is linear and its transpose is im2col, so ``∂E/∂A = im2col(G)``
          (C_out·k² × M): each entry of A was added to one output pixel (or
          dropped on the padding), so it receives that pixel's gradient (or 0).
        * ``∂E/∂X = W · ∂E/∂A = W · im2col(G)`` — **its backward is Conv2D's
          forward**: exactly ``Conv2D(w, 0, stride, "same").forward(G)``, the
          textbook im2col + GEMM of Eq. 2. (Cᵀ's transpose is C again.)
        * ``A[r, m] = Σ_{c'} W[c', r] X[c', m]``, so
          ``∂E/∂W[c', r] = Σ_m X[c', m] ∂E/∂A[r, m]``, i.e. ``∂E/∂W = X · im2col(G)ᵀ``
          (C_in × C_out·k²), reshaped to (C_in, C_out, k, k).
        * the bias is added to every output pixel of its channel: ``∂E/∂b[c] = Σ_{n,y,x} G[n, c, y, x]``.

        Fills ``grads["w"]`` (C_in, C_out, k, k) and ``grads["b"]`` (C_out,).
        """
        w = self.params["w"]
        c_in, c_out, k, _ = w.shape
        n, _, h, wd = self.input_shape
        if self.extra:                                                     # G on the col2im grid (zeros beyond)
            xp = get_array_module(dout)
            dout = xp.pad(dout, ((0, 0), (0, 0), (0, self.extra), (0, self.extra)))
        g_cols = im2col(dout, k, k, self.stride, self.pad,                # ∂E/∂A = im2col(G): (C_out·k², M)
                        out=self._scratch("dcols", (c_out * k * k, n * h * wd), dout))
        self.grads["w"] = (self.input_matrix @ g_cols.T).reshape(w.shape)
        self.grads["b"] = dout.sum(axis=(0, 2, 3))
        if not need_dx:
            return None
        dx = w.reshape(c_in, c_out * k * k) @ g_cols                       # (C_in, M): Conv2D's forward GEMM
        return dx.reshape(c_in, n, h, wd).transpose(1, 0, 2, 3)
