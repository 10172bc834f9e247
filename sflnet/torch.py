"""sflnet's losses as drop-in PyTorch losses, computed by sflnet's own hand-written forward and backward.

Needs PyTorch (the optional extra ``torch``: ``pip install "sflnet[torch]"``); nothing else in
sflnet imports this module, so sflnet itself never needs torch. ``import torch`` below is an
absolute import (Python 3): it finds the top-level PyTorch package, never this module
``sflnet.torch``.

Usage, in any PyTorch training loop::

    from sflnet.torch import Objective, SpatialFrequencyLoss
    loss_fn = Objective("pl+sfl")                 # any expression ``sflnet train --loss`` accepts
    loss = loss_fn(pred, target)                  # pred, target: (N, C, H, W) → scalar tensor
    loss.backward()                               # ∂loss/∂pred by sflnet's backward

The classes, each the expression it computes (see the sflnet loss for the definition and the
derivation of its backward):

* :class:`Objective` — any ``--loss`` expression, plug-in losses included (:mod:`sflnet.losses`);
* :class:`PixelLoss` — ``1*pl`` (:class:`sflnet.losses.PixelLoss`, every channel weight 1);
* :class:`SpatialFrequencyLoss` — ``1*sfl(sigmas=…,weights=…)`` (:class:`sflnet.losses.SpatialFrequencyLoss`);
* :class:`L1Loss` — ``1*l1`` (:class:`sflnet.losses.L1Loss`);
* :class:`SSIMLoss` — ``1*ssim`` (:class:`sflnet.losses.SSIMLoss`);
* :class:`FocalFrequencyLoss` — ``1*fft`` (:class:`sflnet.losses.FocalFrequencyLoss`);
* :class:`STFTLoss` — ``1*stft(window=…,stride=…,window_fn=…,phase_weight=…)`` (:class:`sflnet.losses.STFTLoss`).

**Convention.** Every term is a mean over the batch of a per-image value, each image normalised
by its own size, exactly as in ``sflnet train``: the value is ``E = (1/N) Σ_i ℓ(pred_i, target_i)``
(the whole batch is one group, ``batch_count = N``). ``reduction="sum"`` gives ``N · E`` (the sum of
the per-image values), and its gradient N times the mean's.

**How it runs.** One :class:`torch.autograd.Function` (:class:`SflnetLossFunction`): its
``forward`` hands the tensors to sflnet's losses as arrays (CPU tensors as NumPy arrays, CUDA
tensors as CuPy arrays, zero-copy through ``Tensor.numpy()`` / DLPack) and calls their ``forward``;
its ``backward`` calls their ``backward`` (∂E/∂pred, hand-written and gradient-checked in sflnet)
and multiplies it by the upstream gradient. Torch's autograd is not used inside the losses.

**Gradients.** The gradient flows to ``pred`` only. ``target`` is a constant: a ``target`` that
requires grad gets none (its ``.grad`` stays None). The focal frequency loss's weight matrix is a
constant too, as in Jiang et al.'s package (it detaches it).

**Inputs.** ``pred`` and ``target``: (N, C, H, W), N ≥ 1, any C ≥ 1 (the pixel loss weights every
channel 1; the SFL's LoG bank sums over however many channels there are), any H, W the terms
can measure (SSIM needs 11×11, STFT its window), odd sizes included; one dtype and one device.
float32 and float64 are computed in their own precision; float16 and bfloat16 in float32 (mixed
precision): the loss is then a float32 scalar, and the gradient is returned in the input's dtype.
Anything else raises a ``ValueError`` naming the problem before any work is done.
"""

import contextlib

import numpy as np
import torch

from sflnet.errors import SflnetError
from sflnet.losses import LossSettings, make_objective, options_of, resolve
from sflnet.losses import SpatialFrequencyLoss as _SflnetSFL
from sflnet.losses import STFTLoss as _SflnetSTFT

REDUCTIONS = ("mean", "sum")
COMPUTE_DTYPES = {torch.float16: torch.float32, torch.bfloat16: torch.float32,
                  torch.float32: torch.float32, torch.float64: torch.float64}


# ---------------------------------------------------------------------------
# tensors ↔ arrays (zero-copy), and the stream the arrays are computed on
# ---------------------------------------------------------------------------

@contextlib.contextmanager
def array_module(tensor):
    """The array module for ``tensor``'s device, as a context: ``numpy`` (CPU) or ``cupy`` (CUDA).

    CUDA streams: inside the block CuPy's current device is the tensor's and its current stream is
    torch's current CUDA stream (``cupy.cuda.ExternalStream`` wraps the same ``cudaStream_t``). So
    every CuPy kernel sflnet launches, and every DLPack exchange (which synchronises the producer's
    stream with the consumer's, here one and the same stream), is queued on the stream torch queued
    ``pred``'s producers on and will queue the gradient's consumers on: ordered without a single
    host synchronisation, exactly as if torch had run the kernels itself.
    """
    if tensor.device.type == "cpu":
        yield np
        return
    import cupy  # noqa: PLC0415  (only CUDA tensors need CuPy)
    stream = torch.cuda.current_stream(tensor.device)
    with cupy.cuda.Device(tensor.device.index), cupy.cuda.ExternalStream(stream.cuda_stream):
        yield cupy


def to_array(xp, tensor):
    """A tensor as an array of ``xp`` sharing its memory (no copy): (any shape) → same shape and dtype.

    NumPy: ``Tensor.numpy()`` of the detached tensor. CuPy: ``cupy.from_dlpack`` (DLPack).
    """
    tensor = tensor.detach()
    if xp is np:
        return tensor.numpy()
    return xp.from_dlpack(tensor)


def to_tensor(xp, array):
    """An array of ``xp`` (NumPy or CuPy, any shape, 0-d included) as a tensor, sharing its memory.

    NumPy: ``torch.from_numpy`` (a read-only or oddly strided array, which torch would not share,
    is copied first). CuPy: ``torch.from_dlpack``.
    """
    if xp is np:
        array = np.asarray(array)   # a NumPy scalar (what a sum returns) as a 0-d array
        if not (array.flags.writeable and array.flags.c_contiguous):
            array = np.ascontiguousarray(array).copy()
        return torch.from_numpy(array)
    return torch.from_dlpack(array)


# ---------------------------------------------------------------------------
# the objective on arrays
# ---------------------------------------------------------------------------

def measure(objective, recon, target, fft_weights=None):
    """``E = Σ_t w_t E_t`` of an sflnet objective on one batch of arrays, all on the device.

    objective:   an :class:`sflnet.losses.Objective` (built with ``always=()``: only its terms)
    recon, target: (N, C, H, W) arrays, one dtype, NumPy or CuPy; the batch is one group (batch_count N)
    fft_weights: None, or the focal weight matrix (N, C, H, W) given to the ``fft`` term
    returns      E, a 0-d array of recon's dtype on its device (no host synchronisation)

    The sum runs in expression order and a weight of 1 is not multiplied, as
    :meth:`sflnet.losses.Objective.combine` does with Python floats. The terms' caches stay
    in ``objective`` for :func:`gradient`.
    """
    batch_count = recon.shape[0]
    total = None
    for term in objective.terms:
        loss = objective.losses[term.name]
        if term.name == "fft" and fft_weights is not None:
            share, _ = loss.forward(recon, target, batch_count, weights=fft_weights)
        else:
            share, _ = loss.forward(recon, target, batch_count)
        part = share if term.weight == 1.0 else share * term.weight
        total = part if total is None else total + part
    return total


def gradient(objective):
    """``∂E/∂recon = Σ_t w_t ∂E_t/∂recon`` for the last :func:`measure`: (N, C, H, W), recon's dtype."""
    return objective.backward()


class SflnetLossFunction(torch.autograd.Function):
    """``E(pred, target)`` by sflnet's forward, ``∂E/∂pred`` by sflnet's backward.

    ``apply(pred, target, build, scale, fft_weights)``:

    pred, target: (N, C, H, W) tensors, one float dtype and device, already checked
    build:        ``build() → sflnet Objective``; a new one per call, so that its caches belong to
                  this call's graph (two calls before one ``backward`` do not overwrite each other)
    scale:        1 (reduction "mean") or N ("sum"); the value and the gradient are multiplied by it
    fft_weights:  None or a focal weight tensor (N, C, H, W), a constant
    returns       a 0-d tensor of the compute dtype (float32 for half inputs)

    Only ``pred`` gets a gradient, ``(grad_output · scale) · ∂E/∂pred`` in ``pred``'s dtype;
    ``target`` and ``fft_weights`` are constants (their gradients are None).
    """

    @staticmethod
    def forward(ctx, pred, target, build, scale, fft_weights):
        compute = COMPUTE_DTYPES[pred.dtype]
        objective = build()
        with array_module(pred) as xp:
            recon = to_array(xp, pred.detach().to(compute).contiguous())
            goal = to_array(xp, target.detach().to(compute).contiguous())
            weights = None if fft_weights is None else to_array(
                xp, fft_weights.detach().to(compute).contiguous())
            value = to_tensor(xp, measure(objective, recon, goal, weights))
        ctx.objective = objective
        ctx.scale = scale
        ctx.input_dtype = pred.dtype
        return value * scale if scale != 1 else value

    @staticmethod
    def backward(ctx, grad_output):
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        with array_module(grad_output) as xp:
            grad = to_tensor(xp, gradient(ctx.objective))
        factor = grad_output * ctx.scale if ctx.scale != 1 else grad_output
        return (grad * factor).to(ctx.input_dtype), None, None, None, None


# ---------------------------------------------------------------------------
# the modules
# ---------------------------------------------------------------------------

def check_inputs(pred, target):
    """A ValueError (TypeError for a non-tensor) naming what is wrong with ``pred``/``target``, else None.

    pred, target: (N, C, H, W) tensors, N, C, H, W ≥ 1, of one shape, dtype and device; dtype one of
    float16, bfloat16, float32, float64; device CPU or CUDA.
    """
    for label, tensor in (("pred", pred), ("target", target)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{label} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.dim() != 4:
            raise ValueError(f"{label} must be a 4-D tensor (N, C, H, W), got shape {tuple(tensor.shape)}")
        if tensor.dtype not in COMPUTE_DTYPES:
            raise ValueError(f"{label} must be float16, bfloat16, float32 or float64, got {tensor.dtype}")
        if tensor.device.type not in ("cpu", "cuda"):
            raise ValueError(f"{label} is on {tensor.device}; sflnet's losses run on the CPU or CUDA")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have one shape, got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    if pred.dtype != target.dtype:
        raise ValueError(f"pred and target must have one dtype, got {pred.dtype} and {target.dtype}")
    if pred.device != target.device:
        raise ValueError(f"pred and target must be on one device, got {pred.device} and {target.device}")
    if min(pred.shape) < 1:
        raise ValueError(f"pred and target must hold at least one 1x1 image, got shape {tuple(pred.shape)}")


class Objective(torch.nn.Module):
    """A ``--loss`` objective as a PyTorch loss: ``Objective("pl+sfl")(pred, target)`` → scalar tensor.

    expression:  any expression ``sflnet train --loss`` accepts: terms ``WEIGHT*NAME(OPTION=VALUE,…)``
                 joined by ``+`` (``pl+sfl``, ``pl+100*fft``, ``500*ssim+0.5*stft(window=8)``), plug-in
                 losses included (the ``sflnet.losses`` entry points); options not set inline take the
                 losses' defaults (those of :class:`sflnet.losses.LossSettings`)
    value_range: (low, high) of the images' scale, for SSIM (its data range high − low): (−1, 1) for a
                 tanh output, (0, 1) for a sigmoid output
    reduction:   "mean": ``E = (1/N) Σ_i ℓ_i``, the convention of ``sflnet train``; "sum": ``N · E``

    ``forward(pred, target)``: pred, target (N, C, H, W), see the module docstring; returns a 0-d tensor
    (pred's dtype, float32 for half inputs). The gradient flows to ``pred`` by sflnet's own backward;
    ``target`` is treated as a constant and never gets a gradient.

    A bad expression or option raises ValueError at construction (the ``--loss`` message).
    Attribute ``expression``: the canonical text of what is computed (``pl+stft(window=8)``).
    """

    def __init__(self, expression, value_range=(-1.0, 1.0), reduction="mean"):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
        low, high = (float(v) for v in value_range)
        if not high > low:
            raise ValueError(f"value_range must be (low, high) with high > low, got {tuple(value_range)}")
        self.value_range = (low, high)
        self.reduction = reduction
        try:
            self.expression = resolve(expression, LossSettings(value_range=self.value_range),
                                      option="expression", strict=False).objective
            self._build(3)   # every loss's own checks (e.g. a plug-in's __init__) run now, not at the first call
        except SflnetError as exc:
            raise ValueError(str(exc)) from None

    def settings(self, channels):
        """The :class:`sflnet.losses.LossSettings` for C-channel images: pixel-loss weights all 1 (C of them)."""
        return LossSettings(pl_weights=(1.0,) * channels, value_range=self.value_range)

    def _build(self, channels):
        """A new sflnet objective of :attr:`expression` for C-channel images, measuring only its terms."""
        return make_objective(self.expression, self.settings(channels), always=())

    def size_problem(self, height, width):
        """Why an H×W image cannot be measured by some term (one line), or None."""
        return self._build(1).size_problem(height, width)

    def extra_repr(self):
        return f"{self.expression!r}, value_range={self.value_range}, reduction={self.reduction!r}"

    def _checked(self, pred, target):
        """The checks of :func:`check_inputs` and the terms' image-size checks, before any work."""
        check_inputs(pred, target)
        problem = self.size_problem(pred.shape[2], pred.shape[3])
        if problem:
            raise ValueError(problem)

    def _apply(self, pred, target, fft_weights=None):
        channels = pred.shape[1]
        scale = pred.shape[0] if self.reduction == "sum" else 1
        return SflnetLossFunction.apply(pred, target, lambda: self._build(channels), scale, fft_weights)

    def forward(self, pred, target):
        """pred, target: (N, C, H, W) → the objective, a 0-d tensor (see the class docstring)."""
        self._checked(pred, target)
        return self._apply(pred, target)


def _one_term(name, cls, values):
    """``1*NAME(OPTION=VALUE,…)`` for the keyword options ``values`` of the sflnet loss class ``cls``.

    Each value is checked as in an expression (its type and range); ValueError naming the option.
    """
    specs = {spec.name: spec for spec in options_of(name)}
    shown = []
    for key, value in values.items():
        spec = specs[key]
        if spec.kind == "floats":
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = (value,)
            value = tuple(float(v) for v in value)
        elif spec.kind == "float":
            value = float(value)
        problem = spec.problem(value)
        if problem:
            raise ValueError(f"{cls.__name__}({key}={value!r}): {problem}")
        shown.append(f"{key}={spec.text(value)}")
    return f"1*{name}" + (f"({','.join(shown)})" if shown else "")


class PixelLoss(Objective):
    """The pixel loss of Ichimura's Eq. 4: ``E = (1/N) Σ_i Σ_c ½ mean_{y,x} (pred − target)²``.

    Every channel has weight 1 (any C). Same as ``Objective("1*pl")``; see :class:`sflnet.losses.PixelLoss`.
    """

    def __init__(self, reduction="mean"):
        super().__init__("1*pl", reduction=reduction)


class SpatialFrequencyLoss(Objective):
    """The spatial frequency loss of Ichimura's Eq. 6 through the LoG bank (the sum over the C channels).

    ``E = (1/N) Σ_i Σ_s w_s · ½ mean_{y,x} (LoG_s(pred_i) − LoG_s(target_i))²``, one LoG subband per σ.
    sigmas:  the LoG scales σ (> 0), the paper's (0.8, 1.6, 3.2) by default
    weights: one weight per σ (≥ 0), the paper's (100, 10, 10) by default
    Same as ``Objective("1*sfl(sigmas=…,weights=…)")``; see :class:`sflnet.losses.SpatialFrequencyLoss`.
    """

    def __init__(self, sigmas=_SflnetSFL.options[0].default, weights=_SflnetSFL.options[1].default,
                 reduction="mean"):
        super().__init__(_one_term("sfl", _SflnetSFL, {"sigmas": sigmas, "weights": weights}),
                         reduction=reduction)


class L1Loss(Objective):
    """The mean absolute error, ``E = (1/N) Σ_i mean_{c,y,x} |pred − target|`` (subgradient 0 at 0).

    Same as ``Objective("1*l1")`` (and as ``torch.nn.L1Loss()``, whose mean over all elements is the
    same number); see :class:`sflnet.losses.L1Loss`.
    """

    def __init__(self, reduction="mean"):
        super().__init__("1*l1", reduction=reduction)


class SSIMLoss(Objective):
    """``1 − SSIM`` per image, averaged over the batch (Wang et al. 2004), images at least 11×11.

    The 11×11 Gaussian window (σ = 1.5, taps summing to 1) applied as a *valid* correlation,
    K1 = 0.01, K2 = 0.03, population (co)variances, the SSIM of an image the mean of its map over
    positions and channels, on ``x − low`` with data range ``L = high − low``. This is the
    definition of ``pytorch_msssim.ssim(pred − low, target − low, data_range=L)`` (also a valid
    Gaussian window of 11 and σ 1.5 with those K): per image ``1 − ssim(..., size_average=False)``,
    then the mean. The values agree to rounding when pytorch-msssim is given sflnet's float64
    window (``win=``); its own window is computed in float32 (differences ~1e-8). (Note that SSIM
    is not shift-invariant, so the shift by ``−low`` matters.)
    value_range: (low, high) of the images. Same as ``Objective("1*ssim", value_range)``;
    see :class:`sflnet.losses.SSIMLoss`.
    """

    def __init__(self, value_range=(-1.0, 1.0), reduction="mean"):
        super().__init__("1*ssim", value_range=value_range, reduction=reduction)


class FocalFrequencyLoss(Objective):
    """The focal frequency loss of Jiang et al. (ICCV 2021) with α = 1, per-image weight normalisation.

    ``D = F(pred) − F(target)`` (orthonormal 2-D DFT per channel), ``w = |D| / max_{u,v} |D|`` per image
    and channel, a constant (detached), and ``E = (1/N) Σ_i mean_{c,u,v} w · |D|²``.

    This equals the authors' ``focal_frequency_loss.FocalFrequencyLoss()(pred, target)`` with its
    defaults (loss_weight 1, alpha 1, patch_factor 1, no ave_spectrum, log_matrix or batch_matrix):
    its ``torch.mean`` over (N, 1, C, H, W) is the mean over the batch of the per-image means, the
    same number, without a constant factor; and its weight matrix is detached, as here.
    ``forward(pred, target, matrix=None)``: ``matrix`` (N, C, H, W), as the package's ``matrix=``, is a
    given weight matrix used instead of w (a constant). Same as ``Objective("1*fft")``;
    see :class:`sflnet.losses.FocalFrequencyLoss`.
    """

    def __init__(self, reduction="mean"):
        super().__init__("1*fft", reduction=reduction)

    def forward(self, pred, target, matrix=None):
        """pred, target: (N, C, H, W); matrix: None or (N, C, H, W) focal weights (constant) → 0-d tensor."""
        self._checked(pred, target)
        if matrix is not None:
            if not isinstance(matrix, torch.Tensor) or matrix.shape != pred.shape:
                raise ValueError(f"matrix must be a tensor of pred's shape {tuple(pred.shape)}, got "
                                 f"{tuple(matrix.shape) if isinstance(matrix, torch.Tensor) else type(matrix)}")
            if matrix.device != pred.device or not matrix.dtype.is_floating_point:
                raise ValueError(f"matrix must be a float tensor on {pred.device}, got {matrix.dtype} "
                                 f"on {matrix.device}")
        return self._apply(pred, target, matrix)


class STFTLoss(Objective):
    """The short-time Fourier amplitude and phase loss of Dalal's β-VAE paper (Sec. 3.1).

    Per image, over the h×h frames at stride s of every channel, each tapered by ``window_fn``:
    ``ℓ = Σ W(u, v) (λ |ΔP| + |A_pred − A_target|)`` (a sum over bins and frames), ΔP the wrapped
    phase difference, W the distance of the bin from DC over its maximum; ``E = (1/N) Σ_i ℓ_i``.
    window: h (≥ 2; images need at least h×h pixels); stride: s (≥ 1); window_fn: "hann" or "rect";
    phase_weight: λ (≥ 0). Same as ``Objective("1*stft(window=…,stride=…,window_fn=…,phase_weight=…)")``;
    see :class:`sflnet.losses.STFTLoss`.
    """

    def __init__(self, window=16, stride=4, window_fn="hann", phase_weight=9.0, reduction="mean"):
        if isinstance(window, bool) or int(window) != window or isinstance(stride, bool) or int(stride) != stride:
            raise ValueError(f"STFTLoss: window and stride must be whole numbers, got {window!r}, {stride!r}")
        values = {"window": int(window), "stride": int(stride), "window_fn": window_fn,
                  "phase_weight": phase_weight}
        super().__init__(_one_term("stft", _SflnetSTFT, values), reduction=reduction)


__all__ = ["COMPUTE_DTYPES", "FocalFrequencyLoss", "L1Loss", "Objective", "PixelLoss", "REDUCTIONS", "SSIMLoss",
           "STFTLoss", "SflnetLossFunction", "SpatialFrequencyLoss", "array_module", "check_inputs",
           "gradient", "measure", "to_array", "to_tensor"]
