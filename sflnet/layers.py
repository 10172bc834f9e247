"""The paper's layers, and those of the β-VAE of seed 004, one class each, with hand-written forward and backward.

Every layer has ``forward(x)`` and ``backward(dy) -> dx``; trainable layers keep
``params`` and ``grads`` dicts under the same keys. Caches are set to ``None``
in ``__init__`` and named for what they hold. The same code runs on NumPy and
CuPy arrays (``xp = get_array_module(x)``); upstream gradients are never
modified in place, and the dtype of the input is the dtype of every result.

Notation (paper Sec. 2-3): ``f^l`` is the volume of layer l, ``o^{l+1}`` the
pre-activation of Eq. 2, ``a`` the activation of Eq. 3, ``f^L`` the
reconstruction (L = 5) and ``f^1`` the input image.

The β-VAE ("VAE1" of seed 004: a conv encoder with "valid" padding, a dense
latent, a transposed-conv decoder and a sigmoid output) adds
:class:`ConvTranspose2D`, :class:`Linear`, :class:`Reshape`/:class:`Flatten`,
:class:`Sigmoid` and :class:`Reparameterize`, and ``padding="valid"`` for
:class:`Conv2D`. Its KL term lives in :mod:`sflnet.losses.kl`.
"""

import math

import numpy as np

from sflnet import kernels
from sflnet.backend import get_array_module


# ---------------------------------------------------------------------------
# Layers 2-5: convolution (Eq. 2) and activations (Eq. 3)
# ---------------------------------------------------------------------------

class _ScratchBuffers:
    """Scratch arrays reused between calls, for the layers that unfold big matrices (Conv2D, ConvTranspose2D).

    The subclass sets ``self._buffers = {}`` in its ``__init__``.
    """

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


class Conv2D(_ScratchBuffers):
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
        self.params = {"w": w, "b": b}
        self.grads = {"w": None, "b": None}
        self.stride = stride
        self.padding = padding
        self.pad = (kh - 1) // 2 if padding == "same" else 0
        self.unfold = unfold
        self.input_shape = None    # (N, C_in, H, W) of the last forward input
        self.input_cols = None     # unfold="input": (C_in·kh·kw, N·Ho·Wo) im2col of the last input
        self.input_matrix = None   # unfold="output": (C_in, N·H·W) the last input, channel-major
        self._buffers = {}         # scratch arrays reused between calls (see _scratch)

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
            out = kernels.col2im(planes, (n, c_out, h, wd), kh, kw, 1, self.pad)
            out += b[None, :, None, None]   # out is col2im's fresh array
            self.input_matrix = x_matrix
            return out
        ho = kernels.conv_output_size(h, kh, self.stride, self.pad)
        wo = kernels.conv_output_size(wd, kw, self.stride, self.pad)
        cols = kernels.im2col(x, kh, kw, self.stride, self.pad,
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
            g_cols = kernels.im2col(dout, kh, kw, 1, self.pad,          # ∂E/∂Y: (C_out·k², M)
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
        return kernels.col2im(dcols, self.input_shape, kh, kw, self.stride, self.pad)


class ReLU:
    """Eq. 3 with a(o) = max(0, o). Shapes: any → same.

    The elementwise products run through :func:`sflnet.kernels.elementwise`,
    which only splits them over the CPU threads.
    """

    def __init__(self):
        self.positive_mask = None   # boolean array, True where the input was > 0

    def forward(self, x):
        """x: any shape → max(0, x), computed as x · [x > 0]."""
        out, self.positive_mask = kernels.elementwise(_relu_and_mask, x, dtypes=(x.dtype, bool))
        return out

    def backward(self, dy):
        """∂E/∂o = ∂E/∂f · a'(o) with a'(o) = 1 for o > 0 and 0 otherwise (Eq. 3; the kink at 0 takes 0)."""
        xp = get_array_module(dy)
        return kernels.elementwise(xp.multiply, dy, self.positive_mask, dtype=dy.dtype)


def _relu_and_mask(x, out):
    """out = (x · [x > 0], [x > 0]): the ReLU and its mask, into the two arrays of ``out``."""
    xp = get_array_module(x)
    result, mask = out
    xp.greater(x, 0, out=mask)
    return xp.multiply(x, mask, out=result)


def _tanh_derivative_product(dy, f, out):
    """out = dy · (1 − f²), into ``out`` (no temporaries)."""
    xp = get_array_module(dy)
    xp.multiply(f, f, out=out)
    xp.subtract(1, out, out=out)
    return xp.multiply(dy, out, out=out)


class Tanh:
    """Eq. 3 with a(o) = tanh(o), the output layer (L = 5). Shapes: any → same."""

    def __init__(self):
        self.output = None   # tanh(o), reused by the derivative

    def forward(self, x):
        """x: any shape → tanh(x)."""
        xp = get_array_module(x)
        self.output = kernels.elementwise(xp.tanh, x)
        return self.output

    def backward(self, dy):
        """∂E/∂o = ∂E/∂f · (1 − f²), since d tanh(o)/do = 1 − tanh²(o) (Eq. 3, the factor ∂f^L/∂o^L of Eq. 9)."""
        return kernels.elementwise(_tanh_derivative_product, dy, self.output)


# ---------------------------------------------------------------------------
# Layer 4's "stride 0.5": bilinear x2, cropped to the encoder's input size
# ---------------------------------------------------------------------------

class Upsample2x:
    """Bilinear ×2 with half-pixel centres and clamped edges, then a crop.

    Per axis: ``out[2i] = ¾ in[i] + ¼ in[i−1]``, ``out[2i+1] = ¾ in[i] + ¼ in[i+1]``
    (indices clamped), the same as PyTorch's
    ``interpolate(scale_factor=2, mode="bilinear", align_corners=False)``. The
    result is cropped to ``output_size`` (the encoder's input H × W), because
    2·⌈H/2⌉ is H + 1 when H is odd.

    Shapes: x (N, C, h, w) → (N, C, H, W) with H ∈ {2h−1, 2h}, W ∈ {2w−1, 2w}.
    Set ``output_size`` before ``forward`` (the model does); ``None`` means (2h, 2w).
    """

    def __init__(self, output_size=None):
        self.output_size = output_size
        self.input_hw = None   # (h, w) of the last forward input

    def forward(self, x):
        """x: (N, C, h, w) → (N, C, H, W)."""
        h, w = x.shape[-2:]
        out_h, out_w = self.output_size if self.output_size is not None else (2 * h, 2 * w)
        if not (2 * h - 1 <= out_h <= 2 * h and 2 * w - 1 <= out_w <= 2 * w):
            raise ValueError(f"Upsample2x cannot map {h}x{w} to {out_h}x{out_w}")
        self.input_hw = (h, w)
        rows = kernels.upsample2x_axis(x, axis=2, out_len=out_h)
        return kernels.upsample2x_axis(rows, axis=3, out_len=out_w)

    def backward(self, dy):
        """dy: (N, C, H, W) → (N, C, h, w).

        The layer is linear and separable, ``out = U_H · in · U_Wᵀ`` per channel,
        so ∂E/∂in = U_Hᵀ · dy · U_W: apply the transpose of the per-axis map
        (crop → zero-pad; each output's ¾ and ¼ sent back to the inputs it read)
        along W, then along H. There is no trainable weight.
        """
        h, w = self.input_hw
        cols = kernels.upsample2x_axis_adjoint(dy, axis=3, in_len=w)
        return kernels.upsample2x_axis_adjoint(cols, axis=2, in_len=h)


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


class UpsampleConv2D(_ScratchBuffers):
    """Layer 4 as one layer: :class:`Upsample2x` (cropped to ``output_size``) then a 3×3 "same"
    :class:`Conv2D` with stride 1, computed as a sub-pixel convolution at the low resolution.

    ``o = Conv2D(w, b)(Upsample2x(x))`` (Eq. 2 on the bilinear ×2 of x). Both maps are linear, and
    away from the border, output pixel (2i + a, 2j + b) only reads low-resolution pixels
    (i + e − 1, j + f − 1), e, f ∈ {0, 1, 2} (see :func:`upsample_conv_taps`). So the four output
    phases (a, b) are four 3×3 convolutions of x with the combined weights

    ``w'[a, b, c, c', e, f] = Σ_{d, g} R[a, e, d] · R[b, f, g] · w[c, c', d, g]``,

    i.e. one convolution with 4·C_out output channels at the LOW resolution, followed by
    :func:`kernels.interleave_phases`. It does the same multiplications as conv4 on the upsampled
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
        self.params = {"w": w, "b": b}
        self.grads = {"w": None, "b": None}
        self.output_size = output_size
        self.input_shape = None     # (N, C_in, h, w) of the last forward input
        self.input_cols = None      # (C_in·9, N·h·w) im2col of the last input (fast path)
        self.combined_weights = None  # (4·C_out, C_in·9) w' of the last forward (fast path)
        self.border_strips = None   # [(Upsample2x, Conv2D, input window, output window)] of the last forward
        self.plain = None           # (Upsample2x, Conv2D) when the last input ran the plain way
        self._buffers = {}

    def _combined_weights(self):
        """w' as a (4·C_out, C_in·9) matrix, rows (a, b, c), columns (c', e, f) (im2col's row order)."""
        xp = get_array_module(self.params["w"])
        w = self.params["w"]
        taps = kernels.device_constant(UPSAMPLE_CONV_TAPS, w)
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
        cols = kernels.im2col(x, 3, 3, 1, 1, out=self._scratch("cols", (c_in * 9, n * h * w), x))
        c_out = self.params["w"].shape[0]
        phases = get_array_module(x).matmul(weights, cols,                       # (4·C_out, N·h·w)
                                            out=self._scratch("phases", (4 * c_out, n * h * w), x))
        out = kernels.interleave_phases(phases.reshape(2, 2, c_out, n, h, w), out_hw, bias=self.params["b"])
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

    def backward(self, dout):
        """dout = ∂E/∂o: (N, C_out, H, W) → ∂E/∂x: (N, C_in, h, w). Fills ``grads["w"]`` and ``grads["b"]``.

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
            dx = up.backward(conv.backward(dout))
            self.grads["w"], self.grads["b"] = conv.grads["w"], conv.grads["b"]
            return dx
        n, c_in, h, w_low = self.input_shape
        c_out = w.shape[0]
        g_cn = dout.transpose(1, 0, 2, 3)
        g = kernels.split_phases(g_cn, (h, w_low))                            # (2, 2, C_out, N, h, w)
        height, width = dout.shape[2:]
        for rows in (0, 1, height - 2, height - 1):                          # the border belongs to the strips
            g[rows % 2, :, :, :, rows // 2] = 0
        for cols in (0, 1, width - 2, width - 1):
            g[:, cols % 2, :, :, :, cols // 2] = 0
        g = g.reshape(4 * c_out, n * h * w_low)
        taps = kernels.device_constant(UPSAMPLE_CONV_TAPS, w)
        dw_combined = (self.input_cols @ g.T).T.reshape(2, 2, c_out, c_in, 3, 3)
        dw = xp.einsum("aed,bfg,abocef->ocdg", taps, taps, dw_combined)
        dcols = xp.matmul(self.combined_weights.T, g, out=self._scratch("dcols", self.input_cols.shape, g))
        dx = kernels.col2im(dcols, self.input_shape, 3, 3, 1, 1)
        for up, conv, (rows_in, cols_in), (rows_out, cols_out, keep_rows, keep_cols) in self.border_strips:
            _, _, strip_h, strip_w = conv.input_shape
            g_strip = xp.zeros((n, c_out, strip_h, strip_w), dtype=dout.dtype)
            g_strip[:, :, keep_rows, keep_cols] = dout[:, :, rows_out, cols_out]
            dx[:, :, rows_in, cols_in] += up.backward(conv.backward(g_strip))
            dw += conv.grads["w"]
        self.grads["w"] = dw
        self.grads["b"] = dout.sum(axis=(0, 2, 3))
        return dx


# ---------------------------------------------------------------------------
# Layer 6: the fixed Laplacian-of-Gaussian bank (Eq. 5)
# ---------------------------------------------------------------------------

def log_kernel_size(sigma):
    """Kernel size for scale σ: ⌈8σ⌉, plus 1 if even (paper Sec. 4): 7, 13, 27 for σ = 0.8, 1.6, 3.2."""
    k = math.ceil(8 * sigma - 1e-9)   # guard: 8·0.8 is 6.4000000000000004 in floating point, still 7
    return k + 1 if k % 2 == 0 else k


def log_kernel(sigma, dtype=np.float64):
    """Eq. 5, sampled at integer offsets (x, y) ∈ [−s, s]², s = (k−1)/2, not renormalised.

    ``K_σ(x, y) = −(2 − (x² + y²)/σ²) · exp(−(x² + y²)/(2σ²)) / (2πσ²)``

    returns (k, k) NumPy array; rows are y, columns x.
    """
    s = (log_kernel_size(sigma) - 1) // 2
    y, x = np.mgrid[-s:s + 1, -s:s + 1].astype(np.float64)
    r2 = x * x + y * y
    g = np.exp(-r2 / (2 * sigma * sigma)) / (2 * np.pi * sigma * sigma)
    return (-(2 - r2 / (sigma * sigma)) * g).astype(dtype)


def log_kernel_factors(sigma):
    """The separable split of :func:`log_kernel`: ``K_σ = a ⊗ b + b ⊗ a`` (outer products, rows ⊗ cols).

    Writing r² = x² + y², Eq. 5 is
    ``−(1/2πσ²) · [(1 − x²/σ²) + (1 − y²/σ²)] · e^{−x²/2σ²} e^{−y²/2σ²}``, so with
    ``a(t) = −(1 − t²/σ²) e^{−t²/2σ²} / (2πσ²)`` and ``b(t) = e^{−t²/2σ²}``,
    ``K_σ(x, y) = a(y) b(x) + b(y) a(x)``. Returns ``(a, b)``, each (k,) float64.
    """
    s = (log_kernel_size(sigma) - 1) // 2
    t = np.arange(-s, s + 1, dtype=np.float64)
    b = np.exp(-t * t / (2 * sigma * sigma))
    a = -(1 - t * t / (sigma * sigma)) * b / (2 * np.pi * sigma * sigma)
    return a, b


def log_bank_weights(sigmas, dtype=np.float64):
    """The literal layer-6 weights of Eq. 2: ``W6[c, c', :, :] = K_{σ_c}`` for every colour c'.

    Kernels of different sizes are zero-padded (centred) to the largest size,
    which leaves the correlation unchanged. returns (S, 3, k_max, k_max), S = len(sigmas).
    Used as the reference that the fast :class:`LoGBank` is tested against.
    """
    k_max = max(log_kernel_size(s) for s in sigmas)
    w = np.zeros((len(sigmas), 3, k_max, k_max), dtype=dtype)
    for c, sigma in enumerate(sigmas):
        k = log_kernel(sigma, dtype)
        off = (k_max - k.shape[0]) // 2
        w[c, :, off:off + k.shape[0], off:off + k.shape[1]] = k
    return w


class LoGBank:
    """Layer 6: the fixed Laplacian-of-Gaussian bank, Eq. 2 with the Eq. 5 weights, identity activation, no bias.

    ``out[n, c] = Σ_{c'} K_{σ_c} ⋆ f[n, c']`` (zero "same" padding), i.e. each
    subband output is the LoG response of the sum of the three colours.
    Shapes: f (N, 3, H, W) → (N, S, H, W), S = len(sigmas).

    Computed exactly but cheaply: the colours are summed first (Eq. 2 is linear
    in f and the weights do not depend on c'), and each K_σ is applied in its
    separable form a ⊗ b + b ⊗ a (4k taps per pixel instead of k²).
    Never trainable: it has no ``params``.
    """

    def __init__(self, sigmas=(0.8, 1.6, 3.2)):
        self.sigmas = tuple(float(s) for s in sigmas)
        self.factors = [log_kernel_factors(s) for s in self.sigmas]
        self.input_shape = None   # (N, 3, H, W) of the last forward input

    def _filter_sum(self, plane):
        """plane: (N, H, W) → (N, S, H, W): K_{σ_c} ⋆ plane for every σ_c."""
        xp = get_array_module(plane)
        bands = [kernels.correlate_separable(plane, b, a) + kernels.correlate_separable(plane, a, b)
                 for a, b in self.factors]
        return xp.stack(bands, axis=1)

    def forward(self, f):
        """f: (N, C, H, W) → (N, S, H, W)."""
        self.input_shape = f.shape
        return self._filter_sum(f.sum(axis=1))

    def backward(self, dy):
        """dy: (N, S, H, W) → ∂E/∂f: (N, C, H, W).

        The layer is linear, ``out_c = K_c ⋆ Σ_{c'} f_{c'}``, so its transpose is
        ``∂E/∂f_{c'} = Σ_c K_cᵀ ⋆ dy_c`` for every c'. Zero-padded correlation's
        transpose is correlation with the flipped kernel, and K_σ is symmetric
        (it depends on x² + y² only), so ``K_cᵀ ⋆`` is ``K_c ⋆`` again: the same
        filtering as forward, summed over subbands and copied to each colour.
        This is the step that carries Eq. 8's gradient from layer L+1 down to f^L.
        """
        xp = get_array_module(dy)
        n, c, h, w = self.input_shape
        total = xp.zeros((n, h, w), dtype=dy.dtype)
        for band, (a, b) in enumerate(self.factors):
            g = dy[:, band]
            total += kernels.correlate_separable(g, b, a) + kernels.correlate_separable(g, a, b)
        return xp.broadcast_to(total[:, None], (n, c, h, w)).copy()


# ---------------------------------------------------------------------------
# The β-VAE's layers (seed 004): transposed convolution, dense, reshape,
# sigmoid, and the reparameterisation z = μ + σ·ε
# ---------------------------------------------------------------------------

class ConvTranspose2D(_ScratchBuffers):
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

    Sizes: stride 2 doubles (7 → 14 → 28), stride 1 keeps (28 → 28).
    """

    def __init__(self, w, b, stride=1):
        """w: (C_in, C_out, k, k) odd k; b: (C_out,). The arrays are held, not copied. stride: 1 or 2."""
        c_in, c_out, kh, kw = w.shape
        if kh != kw or kh % 2 != 1:
            raise ValueError(f"ConvTranspose2D needs a square odd kernel, got {kh}x{kw}")
        if b.shape != (c_out,):
            raise ValueError(f"ConvTranspose2D bias must have shape ({c_out},), got {b.shape}")
        if stride not in (1, 2):
            raise ValueError(f"ConvTranspose2D stride must be 1 or 2, got {stride}")
        self.params = {"w": w, "b": b}
        self.grads = {"w": None, "b": None}
        self.stride = stride
        self.pad = (kh - 1) // 2     # the "same" padding of the convolution this is the adjoint of
        self.input_shape = None      # (N, C_in, h, w) of the last forward input
        self.input_matrix = None     # X: (C_in, N·h·w), the last input, channel-major
        self._buffers = {}           # scratch arrays reused between calls (see _scratch)

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
        cols = xp.matmul(w.reshape(c_in, c_out * k * k).T, x_matrix,     # Wᵀ X: (C_out·k², N·h·w)
                         out=self._scratch("cols", (c_out * k * k, n * h * wd), x))
        out = kernels.col2im(cols, self.output_shape(x.shape), k, k, self.stride, self.pad)
        out += b[None, :, None, None]    # out is col2im's fresh array
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
        g_cols = kernels.im2col(dout, k, k, self.stride, self.pad,        # ∂E/∂A = im2col(G): (C_out·k², M)
                                out=self._scratch("dcols", (c_out * k * k, n * h * wd), dout))
        self.grads["w"] = (self.input_matrix @ g_cols.T).reshape(w.shape)
        self.grads["b"] = dout.sum(axis=(0, 2, 3))
        if not need_dx:
            return None
        dx = w.reshape(c_in, c_out * k * k) @ g_cols                       # (C_in, M): Conv2D's forward GEMM
        return dx.reshape(c_in, n, h, wd).transpose(1, 0, 2, 3)


class Linear:
    """A dense (fully connected) layer: ``y = x · wᵀ + b``.

    ``y[n, o] = Σ_i x[n, i] · w[o, i] + b[o]``

    Weight layout (out, in), as PyTorch's ``Linear``; b: (out,).
    Shapes: x (N, in) → y (N, out).
    """

    def __init__(self, w, b):
        """w: (out, in); b: (out,). The arrays are held, not copied."""
        if w.ndim != 2 or b.shape != (w.shape[0],):
            raise ValueError(f"Linear needs w (out, in) and b (out,), got {w.shape} and {b.shape}")
        self.params = {"w": w, "b": b}
        self.grads = {"w": None, "b": None}
        self.input = None   # x: (N, in), the last forward input

    def forward(self, x):
        """x: (N, in) → (N, out)."""
        w, b = self.params["w"], self.params["b"]
        if x.ndim != 2 or x.shape[1] != w.shape[1]:
            raise ValueError(f"Linear expects input (N, {w.shape[1]}), got {x.shape}")
        self.input = x
        out = x @ w.T
        out += b
        return out

    def backward(self, dy):
        """dy = ∂E/∂y: (N, out) → ∂E/∂x: (N, in).

        Derivation. y[n, o] depends on w[o, i] through the one term x[n, i]·w[o, i],
        on b[o] with slope 1, and on x[n, i] through every output o. The chain
        rule, summed over what each variable touches:

        * ``∂E/∂w[o, i] = Σ_n dy[n, o] x[n, i]``  →  ``∂E/∂w = dyᵀ · x``  (out, in)
        * ``∂E/∂b[o] = Σ_n dy[n, o]``               (out,)
        * ``∂E/∂x[n, i] = Σ_o dy[n, o] w[o, i]``  →  ``∂E/∂x = dy · w``  (N, in)

        The map x ↦ x·wᵀ has the transpose dy ↦ dy·w: the backward is the adjoint.
        """
        w = self.params["w"]
        self.grads["w"] = dy.T @ self.input
        self.grads["b"] = dy.sum(axis=0)
        return dy @ w


class Reshape:
    """Keep the batch axis, reshape the rest: (N, *anything) → (N, *shape), C order.

    shape: the per-image target shape, e.g. (32, 7, 7) after the decoder's Linear.
    No arithmetic, so no parameters.
    """

    def __init__(self, shape):
        self.shape = None if shape is None else tuple(int(s) for s in shape)   # per image; None: flatten
        self.input_shape = None   # (N, …) of the last forward input

    def forward(self, x):
        """x: (N, …) → (N, *shape) with the same elements in C order (a view when x's memory allows)."""
        target = self.shape if self.shape is not None else (math.prod(x.shape[1:]),)
        if math.prod(target) != math.prod(x.shape[1:]):
            raise ValueError(f"{type(self).__name__} cannot map {x.shape[1:]} to {target}")
        self.input_shape = x.shape
        return x.reshape((x.shape[0],) + target)

    def backward(self, dy):
        """dy: (N, *shape) → (N, …) of the input.

        Reshaping is a permutation-free relabelling of the same elements: element
        j of the output is element j of the input (C order), with slope 1. So the
        gradient of each input element is the gradient of the output element it
        became: ``∂E/∂x = dy`` read back in the input's shape.
        """
        return dy.reshape(self.input_shape)


class Flatten(Reshape):
    """(N, C, H, W) (or any (N, …)) → (N, D), D = C·H·W, in C order (channel, then row, then column).

    A :class:`Reshape` whose target is "everything but the batch axis in one";
    backward reshapes back.
    """

    def __init__(self):
        super().__init__(None)


def _sigmoid(x):
    """σ(x) = 1 / (1 + e^{−x}), evaluated without overflow: only e^{−|x|} ∈ (0, 1] is ever computed.

    For x ≥ 0: σ = 1 / (1 + e^{−|x|}). For x < 0 multiply top and bottom by
    e^{x} = e^{−|x|}: σ = e^{−|x|} / (1 + e^{−|x|}). Both keep full relative
    precision (σ(−40) ≈ 4e−18 is not rounded to 0, as 1 − σ(40) would be).
    """
    xp = get_array_module(x)
    decay = xp.exp(-xp.abs(x))   # e^{−|x|}: underflows quietly to 0 for |x| ≳ 745, never overflows
    denominator = 1 + decay
    return xp.where(x >= 0, 1 / denominator, decay / denominator)


class Sigmoid:
    """The β-VAE's output activation, σ(x) = 1 / (1 + e^{−x}) ∈ (0, 1). Shapes: any → same.

    Numerically stable for any |x| (no overflow, no warnings): see :func:`_sigmoid`.
    """

    def __init__(self):
        self.output = None   # σ(x), reused by the derivative

    def forward(self, x):
        """x: any shape → σ(x), same dtype."""
        self.output = _sigmoid(x)
        return self.output

    def backward(self, dy):
        """∂E/∂x = ∂E/∂σ · σ(1 − σ).

        Derivation: σ = (1 + e^{−x})^{−1}, so
        ``dσ/dx = e^{−x} / (1 + e^{−x})² = σ · e^{−x}/(1 + e^{−x}) = σ · (1 − σ)``,
        since ``1 − σ = e^{−x}/(1 + e^{−x})``. It needs only the cached output.
        """
        s = self.output
        return dy * (s * (1 - s))


class Reparameterize:
    """The VAE's sampling step, written so that it can be differentiated (Kingma & Welling's trick).

    ``z = μ + σ · ε`` with ``σ = exp(½ · logvar)`` and ε ~ N(0, I) drawn by the caller:
    z is then a sample of N(μ, σ²), but a deterministic, smooth function of
    (μ, logvar) for a fixed ε. The encoder predicts logvar = log σ² (any real
    number) rather than σ (which must stay positive).

    ``forward(mu, logvar, eps=None)``: mu, logvar, eps (N, D) → z (N, D).
    ``eps=None`` is evaluation mode: no noise, z = μ (a copy).
    ``backward(dz)`` → (∂E/∂μ, ∂E/∂logvar), each (N, D).
    """

    def __init__(self):
        self.noise = None   # ε of the last forward (N, D); None in evaluation mode
        self.std = None     # σ = exp(½ logvar) of the last forward (N, D); None in evaluation mode

    def forward(self, mu, logvar, eps=None):
        """mu, logvar, eps: (N, D) → z = mu + exp(½·logvar)·eps (N, D); z = mu (copied) when eps is None."""
        if mu.shape != logvar.shape or (eps is not None and eps.shape != mu.shape):
            raise ValueError(f"Reparameterize needs mu, logvar (and eps) of one shape, got {mu.shape}, "
                             f"{logvar.shape}" + ("" if eps is None else f", {eps.shape}"))
        xp = get_array_module(mu)
        if eps is None:
            self.noise, self.std = None, None
            return mu.copy()
        self.noise = eps
        self.std = xp.exp(0.5 * logvar)
        return mu + self.std * eps

    def backward(self, dz):
        """dz = ∂E/∂z: (N, D) → (∂E/∂μ, ∂E/∂logvar), each (N, D).

        Derivation, per element (every z_j depends only on μ_j, logvar_j):

        * ``∂z/∂μ = 1``, so ``∂E/∂μ = dz`` (returned as a copy, never dz itself);
        * ``z = μ + exp(½ ℓ) ε`` with ℓ = logvar, so
          ``∂z/∂ℓ = ε · exp(½ ℓ) · ½ = ε σ / 2`` and ``∂E/∂logvar = dz · ε · σ / 2``.

        In evaluation mode (ε = None) z = μ does not depend on logvar: ∂E/∂logvar = 0.
        (The KL term adds its own gradients to both; see :class:`sflnet.losses.kl.KLDivergence`.)
        """
        xp = get_array_module(dz)
        dmu = dz.copy()
        if self.noise is None:
            return dmu, xp.zeros_like(dz)
        return dmu, dz * self.noise * (0.5 * self.std)


# The losses built on these layers (Eq. 4/9 and Eq. 6/8, and the others) live in sflnet.losses.
