"""The fixed (parameter-free, linear) layers of the paper: layer 4's bilinear ×2 and layer 6's LoG bank.

Both are linear maps with no trainable weight, so each backward applies the
exact transpose of its forward: the adjoint of the upsampling
(:mod:`sflnet.ops.resample`) and the LoG filtering again (the kernels are
symmetric; :mod:`sflnet.ops.filters`). Their ``params`` are empty.
"""

from sflnet.backend import get_array_module
from sflnet.nn.base import Layer
from sflnet.ops import filters, resample
from sflnet.ops.filters import PAPER_SIGMAS


# ---------------------------------------------------------------------------
# Layer 4's "stride 0.5": bilinear x2, cropped to the encoder's input size
# ---------------------------------------------------------------------------


class Upsample2x(Layer):
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
        super().__init__()
        self.output_size = output_size
        self.input_hw = None   # (h, w) of the last forward input

    def forward(self, x):
        """x: (N, C, h, w) → (N, C, H, W)."""
        h, w = x.shape[-2:]
        out_h, out_w = self.output_size if self.output_size is not None else (2 * h, 2 * w)
        if not (2 * h - 1 <= out_h <= 2 * h and 2 * w - 1 <= out_w <= 2 * w):
            raise ValueError(f"Upsample2x cannot map {h}x{w} to {out_h}x{out_w}")
        self.input_hw = (h, w)
        rows = resample.upsample2x_axis(x, axis=2, out_len=out_h)
        return resample.upsample2x_axis(rows, axis=3, out_len=out_w)

    def backward(self, dy, need_dx=True):
        """dy: (N, C, H, W) → (N, C, h, w) (``None`` when not ``need_dx``).

        The layer is linear and separable, ``out = U_H · in · U_Wᵀ`` per channel,
        so ∂E/∂in = U_Hᵀ · dy · U_W: apply the transpose of the per-axis map
        (crop → zero-pad; each output's ¾ and ¼ sent back to the inputs it read)
        along W, then along H. There is no trainable weight.
        """
        if not need_dx:
            return None
        h, w = self.input_hw
        cols = resample.upsample2x_axis_adjoint(dy, axis=3, in_len=w)
        return resample.upsample2x_axis_adjoint(cols, axis=2, in_len=h)


# ---------------------------------------------------------------------------
# Layer 6: the fixed Laplacian-of-Gaussian bank (Eq. 5)
# ---------------------------------------------------------------------------

class LoGBank(Layer):
    """Layer 6: the fixed Laplacian-of-Gaussian bank, Eq. 2 with the Eq. 5 weights, identity activation, no bias.

    ``out[n, c] = Σ_{c'} K_{σ_c} ⋆ f[n, c']`` (zero "same" padding), i.e. each
    subband output is the LoG response of the sum of the three colours.
    Shapes: f (N, 3, H, W) → (N, S, H, W), S = len(sigmas).

    Computed exactly but cheaply: the colours are summed first (Eq. 2 is linear
    in f and the weights do not depend on c'), and each K_σ is applied in its
    separable form a ⊗ b + b ⊗ a (4k taps per pixel instead of k²).
    Never trainable: its ``params`` are empty. The kernels are
    :func:`sflnet.ops.filters.log_kernel_factors`.
    """

    def __init__(self, sigmas=PAPER_SIGMAS):
        super().__init__()
        self.sigmas = tuple(float(s) for s in sigmas)
        self.factors = [filters.log_kernel_factors(s) for s in self.sigmas]
        self.input_shape = None   # (N, 3, H, W) of the last forward input

    def _filter_sum(self, plane):
        """plane: (N, H, W) → (N, S, H, W): K_{σ_c} ⋆ plane for every σ_c."""
        xp = get_array_module(plane)
        bands = [filters.correlate_separable(plane, b, a) + filters.correlate_separable(plane, a, b)
                 for a, b in self.factors]
        return xp.stack(bands, axis=1)

    def forward(self, f):
        """f: (N, C, H, W) → (N, S, H, W)."""
        self.input_shape = f.shape
        return self._filter_sum(f.sum(axis=1))

    def backward(self, dy, need_dx=True):
        """dy: (N, S, H, W) → ∂E/∂f: (N, C, H, W) (``None`` when not ``need_dx``).

        The layer is linear, ``out_c = K_c ⋆ Σ_{c'} f_{c'}``, so its transpose is
        ``∂E/∂f_{c'} = Σ_c K_cᵀ ⋆ dy_c`` for every c'. Zero-padded correlation's
        transpose is correlation with the flipped kernel, and K_σ is symmetric
        (it depends on x² + y² only), so ``K_cᵀ ⋆`` is ``K_c ⋆`` again: the same
        filtering as forward, summed over subbands and copied to each colour.
        This is the step that carries Eq. 8's gradient from layer L+1 down to f^L.
        """
        if not need_dx:
            return None
        xp = get_array_module(dy)
        n, c, h, w = self.input_shape
        total = xp.zeros((n, h, w), dtype=dy.dtype)
        for band, (a, b) in enumerate(self.factors):
            g = dy[:, band]
            total += filters.correlate_separable(g, b, a) + filters.correlate_separable(g, a, b)
        return xp.broadcast_to(total[:, None], (n, c, h, w)).copy()
