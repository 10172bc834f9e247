"""``stft``: the local-frequency loss of Dalal's β-VAE paper, Sec. 3.1 (short-time amplitude and phase), and its gradient."""

import math

import numpy as np

from sflnet.backend import get_array_module
from sflnet.backend import device_constant
from sflnet.losses.base import Loss, Option, at_least
from sflnet.ops.spectral import half_spectrum_multiplicity, stft2, stft2_adjoint

WINDOW_FUNCTIONS = ("hann", "rect")


def window_taper(window, window_fn, dtype=np.float64):
    """The 2-D taper of one h×h frame: (h, h) host array.

    "hann": ``hann(a)·hann(b)`` with the periodic Hann ``hann(t) = ½(1 − cos 2πt/h)``, t = 0 … h−1;
    "rect": ones (no taper).
    """
    if window_fn == "rect":
        return np.ones((window, window), dtype=dtype)
    hann = 0.5 * (1.0 - np.cos(2.0 * np.pi * np.arange(window) / window))
    return np.outer(hann, hann).astype(dtype)


def frequency_weights(window, dtype=np.float64):
    """The weight W(u, v) of every bin of an h×h spectrum: (h, h) host array.

    ``W = r / max r`` with ``r = √(ũ² + ṽ²)``, ``ũ = min(u, h − u)``, ``ṽ = min(v, h − v)``:
    0 at the DC bin, 1 at the highest frequency, linear in the distance from DC.
    """
    folded = np.minimum(np.arange(window), window - np.arange(window)).astype(np.float64)
    r = np.sqrt(folded[:, None] ** 2 + folded[None, :] ** 2)
    return (r / r.max()).astype(dtype)


def size_problem_text(window, height, width, loss="stft"):
    """None when an H×W image holds one h×h window, else a one-line reason naming ``loss``."""
    if height >= window and width >= window:
        return None
    return (f"the {loss} loss needs images of at least {window}x{window} pixels (its window), "
            f"got {height}x{width}")


def abs_angle(z, magnitude):
    """``|angle(z)| = atan2(|Im z|, Re z)`` ∈ [0, π], elementwise, without arctan2.

    z: complex array (any shape); magnitude: |z|, real, z's shape (the caller has
    it); returns a new real array of that shape. The angle φ ∈ [0, π/2] of
    (|Re z|, |Im z|) is ``2·atan(|Im z| / (|z| + |Re z|))`` (the half-angle
    formula tan(φ/2) = sin φ / (1 + cos φ), free of cancellation), and
    ``|angle(z)| = φ`` for Re z ≥ 0, ``π − φ`` for Re z < 0. Equal to
    ``abs(angle(z))`` to a few ulps (NumPy's arctan2 takes about twice as long as
    its arctan). 0 at z = 0 whatever the signs of its zeros (``numpy.angle``
    gives ±π for −0 ± 0i): the denominator is raised to at least the smallest
    normal number, so 0/0 becomes 0/tiny = 0.
    """
    xp = get_array_module(z)
    denominator = abs(z.real)
    denominator += magnitude
    xp.maximum(denominator, np.finfo(denominator.dtype).tiny, out=denominator)
    half = abs(z.imag)
    half /= denominator
    xp.arctan(half, out=half)
    half *= 2
    return xp.where(z.real < 0, math.pi - half, half)


class STFTLoss(Loss):
    """The short-time Fourier loss of Dalal's paper (Deblurring Variational Autoencoders with Short-Time Fourier Transform), Sec. 3.1, as its paper describes it.

    Definition, per image i (recon ``f^L`` → ``o``, target ``f^1`` → ``i``), each channel c separately:

    * frames: the h×h windows at stride s, top-left corners (s·ky, s·kx),
      ky = 0 … K_y − 1, kx = 0 … K_x − 1, ``K = ⌊(H − h)/s⌋ + 1`` per axis (the paper's K × L);
    * each frame is multiplied by the taper ``hann(a)·hann(b)``, periodic
      ``hann(t) = ½(1 − cos 2πt/h)`` ("hann", the paper's window), or by ones ("rect");
    * ``F_o``, ``F_i``: the orthonormal h×h DFT of every tapered frame of f^L, f^1
      (shape (C, K_y, K_x, h, h) per image);
    * amplitudes ``A = |F|`` and the WRAPPED phase difference ``ΔP = angle(F_o · conj(F_i)) ∈ (−π, π]``;
    * bin weight ``W(u, v) = r / max r``, ``r = √(ũ² + ṽ²)``,
      ``ũ = min(u, h − u)``, ``ṽ = min(v, h − v)``;
    * ``ℓ_i = Σ_{c, ky, kx, u, v} W(u, v) · (λ |ΔP| + |A_o − A_i|)``, λ = ``phase_weight``
      (a sum, not a mean);
    * ``E = (1/N_m) Σ_i ℓ_i``; the group's share ``Σ_{i in group} ℓ_i / N_m`` is returned, no parts.

    A "rect" window as large as a square image is one frame, the plain global
    DFT: the "DFT" baseline of Dalal's paper.

    Deviation, deliberate: the paper writes ``|P_o − P_i|`` with ``P = atan2(Im, Re)``.
    That difference jumps by 2π whenever one phase crosses the branch cut at ±π.
    At the bins whose DFT is real for every real frame (u, v ∈ {0, h/2}), two
    equal negative coefficients even give 0 or 2π, depending on the signs of
    their (zero or rounding-level) imaginary parts. So the literal loss is
    discontinuous where the images are not. The wrapped ``|angle(F_o conj(F_i))|``
    equals ``|P_o − P_i|`` whenever that is at most π, is the distance between the
    two phases on the circle, and is continuous across ±π (|ΔP| → π from both
    sides); only its kinks at ΔP = 0 and ΔP = ±π remain, like |·| in the
    amplitude term.

    Dalal's public code differs from the paper: it applies no Hann window,
    takes a row-wise 1-D DFT instead of a 2-D one, computes the losses on logits,
    and its ``dft+ssim`` path cannot run. This class implements the paper.

    Computation on half the spectrum: frames are real, so ``F[−u, −v] = conj F[u, v]``:
    A, |ΔP| and W are the same at a bin and its mirror. The sum over the h×h bins
    equals the sum over the h × (⌊h/2⌋ + 1) bins of ``rfft2`` with each column v
    counted m(v) times (m = 1 for v = 0 and v = h/2, 2 otherwise;
    :func:`sflnet.ops.spectral.half_spectrum_multiplicity`).
    :func:`sflnet.gradcheck.references.losses.stft_loss_forward` takes every full-spectrum bin,
    frame by frame, and is tested equal.

    Backward. Write a bin as F = a + ib and collect ∂L/∂a, ∂L/∂b as one complex
    number ``G = ∂L/∂a + i ∂L/∂b``. For |F| = √(a² + b²):
    ``∂|F|/∂a + i ∂|F|/∂b = (a + ib)/|F| = F/|F|``. For angle(F) = atan2(b, a):
    ``∂/∂a = −b/|F|²``, ``∂/∂b = a/|F|²``, so ``G = (−b + ia)/|F|² = i F/|F|²``;
    angle(F_o conj(F_i)) is angle(F_o) minus a constant (mod 2π), so it has the same
    derivative with respect to F_o. With d|t|/dt = sign(t), per bin (F_o, A_o = |F_o|):

        G = W · sign(A_o − A_i) · F_o / A_o  +  λ W · sign(ΔP) · i F_o / A_o².

    For a real frame x and F = DFT(taper ⊙ x): ``dL = Σ_k Re(conj(G_k) dF_k)
    = Re⟨G, DFT(taper ⊙ dx)⟩ = ⟨taper ⊙ Re(DFT^H G), dx⟩``, so
    ``∂L/∂x = taper ⊙ Re(ifft2(G, norm="ortho"))``. (On half the spectrum this is
    :func:`sflnet.ops.spectral.irdft2` of the half of G, which counts each column m(v)
    times: the same number.) Frames overlap, so each pixel's gradient is the sum
    of the gradients of every frame entry it was copied to: the adjoint of the
    framing, an overlap-add (:func:`sflnet.ops.spectral.overlap_add`). Finally ÷ N_m.

    At real bins (u, v ∈ {0, h/2}), F stays real whatever the frame, so ΔP is
    piecewise constant (0 or ±π) there; the formula agrees, since Re(DFT^H G)
    reads only Re G at those bins and the phase term is purely imaginary there.
    Kinks: sign(0) = 0 is taken at A_o = A_i, and where Im(F_o conj F_i) = 0 (ΔP = 0
    or ΔP = π, the minimum and the maximum of |ΔP|), as in the l1 loss.
    Guard: where ``|F_o| = 0`` amplitude and phase have no derivative (F/|F| and
    iF/|F|² are 0/0); both terms are set to 0 there, and ΔP is taken as 0 where
    F_o conj(F_i) = 0 (``numpy.angle`` gives ±π for some signed zeros). Near
    |F_o| = 0 the phase term's gradient is large (~λW/|F_o|): the phase of a
    vanishing coefficient is ill-defined, and float32 keeps fewer digits of it.
    """

    name = "stft"
    summary = "STFT amplitude + phase loss (Dalal's β-VAE paper, Sec. 3.1)"
    options = (
        Option("window", "int", 16, "side h of the square window; images need at least h x h pixels",
               check=at_least(2, integer=True), alias="stft_window"),
        Option("stride", "int", 4, "pixels between window positions", check=at_least(1, integer=True),
               alias="stft_stride"),
        Option("window_fn", "str", "hann", "periodic 2-D Hann window or none (rect)", choices=WINDOW_FUNCTIONS,
               alias="stft_window_fn"),
        Option("phase_weight", "float", 9.0, "λ, the weight of the phase term (>= 0)", check=at_least(0),
               alias="stft_phase_weight"),
    )

    def __init__(self, window=16, stride=4, window_fn="hann", phase_weight=9.0):
        if int(window) != window or window < 2:
            raise ValueError(f"the stft window must be an integer >= 2, got {window}")
        if int(stride) != stride or stride < 1:
            raise ValueError(f"the stft stride must be an integer >= 1, got {stride}")
        if window_fn not in WINDOW_FUNCTIONS:
            raise ValueError(f"the stft window function must be one of {', '.join(WINDOW_FUNCTIONS)}, "
                             f"got {window_fn!r}")
        self.window = int(window)
        self.stride = int(stride)
        self.window_fn = window_fn
        self.phase_weight = float(phase_weight)
        self.output_spectrum = None   # F_o on half the spectrum, (n, C, K_y, K_x, h, h//2 + 1) complex
        self.amplitude_sign = None    # sign(A_o − A_i), same shape, real
        self.phase_sign = None        # sign(ΔP), same shape, real
        self.image_size = None        # (H, W) of the last forward's images
        self.batch_count = None       # N_m

    def size_problem(self, height, width):
        """A one-line reason when H or W is smaller than the window, else None."""
        return size_problem_text(self.window, height, width)

    def _constants(self, like, counted=True):
        """(taper (h, h), weights on the half spectrum (h, h//2 + 1)) on ``like``'s device, in its dtype
        (uploaded once per device and dtype, see :func:`sflnet.backend.device_constant`).

        counted: the weights are m(v)·W(u, v), each half-spectrum column counted for
        its mirror too (the forward sum); else W(u, v) alone (backward: irdft2 counts).
        """
        h = self.window
        weights = frequency_weights(h)[:, :h // 2 + 1]
        if counted:
            weights = weights * half_spectrum_multiplicity(h)
        return (device_constant(window_taper(h, self.window_fn), like),
                device_constant(weights, like))

    def forward(self, recon, target, batch_count):
        """recon f^L, target f^1: (n, C, H, W), H, W ≥ h; batch_count N_m ≥ n. Returns (share (0-d), {})."""
        problem = self.size_problem(*recon.shape[2:])
        if problem:
            raise ValueError(problem)
        xp = get_array_module(recon)
        taper, weights = self._constants(recon)
        out_spec = stft2(recon, self.window, self.stride, taper)    # F_o, (n, C, K_y, K_x, h, h//2+1)
        in_spec = stft2(target, self.window, self.stride, taper)    # F_i
        out_amp = abs(out_spec)                                              # A_o
        amp_diff = abs(in_spec)                                              # A_i, then A_o − A_i in place
        magnitude = out_amp * amp_diff                                       # |F_o conj(F_i)| = A_o A_i
        xp.subtract(out_amp, amp_diff, out=amp_diff)
        cross = xp.conjugate(in_spec, out=in_spec)                           # in_spec is ours: reuse it
        cross *= out_spec                                                    # F_o conj(F_i): ΔP = angle(cross)
        per_bin = abs_angle(cross, magnitude)                                # |ΔP| ∈ [0, π]
        per_bin *= self.phase_weight
        per_bin += xp.abs(amp_diff, out=magnitude)                           # λ|ΔP| + |A_o − A_i|
        value = (per_bin.sum(axis=(0, 1, 2, 3)) * weights).sum() / batch_count
        self.output_spectrum = out_spec
        self.amplitude_sign = xp.sign(amp_diff)
        self.phase_sign = xp.sign(cross.imag)                                # sign(ΔP) (0 at ΔP = 0 and at π)
        self.image_size = recon.shape[2:]
        self.batch_count = batch_count
        return value.astype(recon.dtype, copy=False), {}

    def backward(self):
        """``∂share/∂f^L``: (n, C, H, W), recon's dtype (see the class docstring)."""
        xp = get_array_module(self.output_spectrum)
        out_spec = self.output_spectrum
        taper, weights = self._constants(self.amplitude_sign, counted=False)  # W alone: irdft2 counts each column m(v) times
        amplitude = abs(out_spec)                                            # A_o
        inverse = (amplitude > 0) / xp.where(amplitude > 0, amplitude, 1)    # 1/A_o, 0 where A_o = 0 (the guard)
        real_part = weights * self.amplitude_sign                            # G = F_o · (W sign(ΔA) / A_o
        real_part *= inverse                                                 #            + i λW sign(ΔP) / A_o²)
        imag_part = (self.phase_weight * weights) * self.phase_sign
        imag_part *= inverse
        imag_part *= inverse
        bin_grad = xp.empty(out_spec.shape, dtype=out_spec.dtype)
        bin_grad.real[...] = real_part
        bin_grad.imag[...] = imag_part
        bin_grad *= out_spec                                                 # G, per half-spectrum bin
        height, width = self.image_size
        grad = stft2_adjoint(bin_grad, height, width, self.stride, taper)
        grad *= 1.0 / self.batch_count
        return grad
