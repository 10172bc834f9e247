"""``stft_code``: the STFT loss as the public code of Dalal's β-VAE paper computes it (not as the paper writes it).

The loss of the paper (Sec. 3.1) is :mod:`sflnet.losses.stft`. The authors' code
(their ``BaseVAE.stft`` and ``calc_loss``) computes something else, and its
Table 1 came from the code; this module is that computation, with its backward,
so a run can use either.
"""

import math

import numpy as np

from sflnet.backend import device_constant, get_array_module
from sflnet.losses.base import Loss, Option, at_least
from sflnet.losses.stft import size_problem_text
from sflnet.ops.spectral import extract_frames, overlap_add


def row_dft_matrices(window, dtype=np.float64):
    """(C, S), each (h, q), q = ⌊h/2⌋: ``C[b, u] = cos(2π u b / h)``, ``S[b, u] = sin(2π u b / h)``.

    The unnormalised 1-D DFT of a row x[b] of h pixels, low frequencies u = 0 … q − 1,
    as two real matrices: ``F[u] = Σ_b x[b] e^{−2πi u b / h} = (x C)[u] − i (x S)[u]``.
    Host arrays.
    """
    angle = 2.0 * np.pi * np.outer(np.arange(window), np.arange(window // 2)) / window
    return np.cos(angle).astype(dtype), np.sin(angle).astype(dtype)


def code_weights(window, dtype=np.float64):
    """W (q, q), q = ⌊h/2⌋: ``W[a, u] = ℓ_a · ℓ_u`` with ``ℓ = linspace(0, 1, q)``, the authors' "freq_filter".

    Row a of the frame times frequency u: 0 on the first row and at u = 0, 1 at
    (q − 1, q − 1). Host array.
    """
    ramp = np.linspace(0.0, 1.0, window // 2)
    return np.outer(ramp, ramp).astype(dtype)


def code_spectrum(x, window, stride, cos_matrix, sin_matrix):
    """The spectrum the authors' code takes of every frame: (n, C, K_y, K_x, q, q) complex.

    x: (n, C, H, W) real; cos_matrix, sin_matrix: :func:`row_dft_matrices` on x's
    device, x's dtype. ``F[…, ky, kx, a, u] = Σ_b x[…, s·ky + a, s·kx + b] e^{−2πi u b / h}``
    for the top rows a < q of each h×h frame and the low frequencies u < q.
    """
    top = extract_frames(x, window, stride)[..., :window // 2, :]     # (n, C, K_y, K_x, q, h)
    spectrum = top @ cos_matrix                                          # Re F
    return spectrum - 1j * (top @ sin_matrix)                            # Re F − i (x S) = F


def code_spectrum_adjoint(real, imag, height, width, stride, cos_matrix, sin_matrix):
    """Adjoint of :func:`code_spectrum`: (n, C, H, W) real from G = real + i·imag, (n, C, K_y, K_x, q, q).

    ``Σ Re(conj(G) F(x)) = ⟨x, code_spectrum_adjoint(G)⟩``: frame rows a < q get
    ``Σ_u Re(G[a, u] e^{+2πi u b / h}) = (Re G) Cᵀ − (Im G) Sᵀ``, rows a ≥ q get 0,
    and the frames are added back where they were cut from (overlap-add).
    """
    xp = get_array_module(real)
    half, window = cos_matrix.shape[1], cos_matrix.shape[0]
    frames = xp.zeros(real.shape[:-2] + (window, window), dtype=real.dtype)
    frames[..., :half, :] = real @ cos_matrix.T
    frames[..., :half, :] -= imag @ sin_matrix.T
    return overlap_add(frames, height, width, stride)


class STFTCodeLoss(Loss):
    """The STFT loss of the public code of Dalal's paper (Deblurring Variational Autoencoders with Short-Time Fourier Transform).

    Definition, per image i (recon ``f^L`` → ``o``, target ``f^1`` → ``i``), each channel c separately:

    * frames: the h×h windows at stride s, top-left corners (s·ky, s·kx),
      ``K = ⌊(H − h)/s⌋ + 1`` per axis, no taper (the code's ``use_hann = False``);
    * of each frame, the top q = ⌊h/2⌋ rows a, each transformed on its own by the
      unnormalised 1-D DFT along the row, low frequencies u < q:
      ``F[a, u] = Σ_b frame[a, b] e^{−2πi u b / h}``. (The code calls ``fft2d`` on an
      NHWC frame of shape (h, h, 1): TensorFlow transforms the innermost two axes,
      the row and the channel of length 1, so it is the row DFT; it keeps
      ``fft[:, :q, :q]``, rows × frequencies.)
    * amplitudes ``A = |F|`` and phases ``P = angle(F + ε)`` ∈ (−π, π], ε = ``eps`` added to
      the real part as in the code; the phase difference is NOT wrapped:
      ``|ΔP| = |P_o − P_i|`` ∈ [0, 2π);
    * weight ``W[a, u] = ℓ_a ℓ_u``, ``ℓ = linspace(0, 1, q)`` (:func:`code_weights`);
    * ``ℓ_i = Σ_{c, ky, kx, a, u} W[a, u] · (λ |ΔP| + |A_o − A_i|)``, λ = ``phase_weight``;
    * ``E = (1/N_m) Σ_i ℓ_i``; the group's share ``Σ_{i in group} ℓ_i / N_m``.

    The code weighs amplitude and phase as ``0.0015 · (0.1·amp + 0.9·phase)``; that is
    ``0.00015 · stft_code`` with the default λ = 9. Where it differs from its paper
    (:class:`~sflnet.losses.stft.STFTLoss`): a row-wise 1-D DFT of the top half of each
    frame instead of the 2-D DFT of all of it, no Hann window, unnormalised, a
    rows × frequencies weight instead of the radial one, and the unwrapped phase
    difference, which jumps by 2π where a phase crosses the branch cut at ±π (the
    loss is discontinuous there, as the code's is). On an image with C > 1 channels
    the code's ``fft2d`` would transform across the channels too; this loss takes
    each channel alone, which is the same for the one-channel digits of Table 1.

    Backward. With ``G = ∂L/∂Re F + i ∂L/∂Im F`` per bin (see :class:`~sflnet.losses.stft.STFTLoss`:
    ``∂|F| ↦ F/|F|``, ``∂ angle(z) ↦ i z/|z|²``, here z = F_o + ε, and d|t|/dt = sign(t)):

        G = W · sign(A_o − A_i) · F_o / A_o  +  λ W · sign(P_o − P_i) · i (F_o + ε) / |F_o + ε|².

    ``F[a, u] = Σ_b x[a, b] (cos θ − i sin θ)``, θ = 2πub/h, so
    ``dL = Σ (Re G · d Re F + Im G · d Im F) = Σ_b dx[a, b] Σ_u (Re G cos θ − Im G sin θ)``:
    the frame's rows a < q get ``(Re G) Cᵀ − (Im G) Sᵀ``, its rows a ≥ q nothing, and
    overlapping frames add up (:func:`code_spectrum_adjoint`); finally ÷ N_m.
    At u = 0 the row sum is real, so the phase there is 0 or π and the formula's
    phase term (purely imaginary at a real z) contributes nothing, as it should;
    W is 0 there anyway. Kinks and jumps: sign(0) = 0 at A_o = A_i and at P_o = P_i;
    the branch cut has no derivative (the loss jumps). Guard: where A_o = 0 the
    amplitude term is 0, where F_o + ε = 0 the phase term is 0.
    :func:`sflnet.gradcheck.references.losses.stft_code_loss_forward` transcribes the
    code's NHWC ``fft2d`` frame by frame and is tested equal.
    """

    name = "stft_code"
    summary = "the STFT loss as the public code of Dalal's β-VAE paper computes it"
    options = (
        Option("window", "int", 16, "side h of the square frame; images need at least h x h pixels",
               check=at_least(4, integer=True)),
        Option("stride", "int", 4, "pixels between frame positions", check=at_least(1, integer=True)),
        Option("phase_weight", "float", 9.0, "λ, the weight of the phase term (>= 0)", check=at_least(0)),
        Option("eps", "float", 1e-6, "ε added to the real part of F before its phase is taken (>= 0)",
               check=at_least(0)),
    )

    def __init__(self, window=16, stride=4, phase_weight=9.0, eps=1e-6):
        if int(window) != window or window < 4:
            raise ValueError(f"the stft_code window must be an integer >= 4, got {window}")
        if int(stride) != stride or stride < 1:
            raise ValueError(f"the stft_code stride must be an integer >= 1, got {stride}")
        if not (math.isfinite(phase_weight) and phase_weight >= 0 and math.isfinite(eps) and eps >= 0):
            raise ValueError(f"the stft_code phase_weight and eps must be finite and >= 0, "
                             f"got {phase_weight}, {eps}")
        self.window = int(window)
        self.stride = int(stride)
        self.phase_weight = float(phase_weight)
        self.eps = float(eps)
        self.output_spectrum = None   # F_o, (n, C, K_y, K_x, q, q) complex
        self.amplitude_sign = None    # sign(A_o − A_i), same shape, real
        self.phase_sign = None        # sign(P_o − P_i), same shape, real
        self.image_size = None        # (H, W) of the last forward's images
        self.batch_count = None       # N_m

    def size_problem(self, height, width):
        """A one-line reason when H or W is smaller than the window, else None."""
        return size_problem_text(self.window, height, width, loss="stft_code")

    def _constants(self, like):
        """(C, S, W) on ``like``'s device, in its dtype (:func:`row_dft_matrices`, :func:`code_weights`)."""
        cos_matrix, sin_matrix = row_dft_matrices(self.window)
        return (device_constant(cos_matrix, like), device_constant(sin_matrix, like),
                device_constant(code_weights(self.window), like))

    def forward(self, recon, target, batch_count):
        """recon f^L, target f^1: (n, C, H, W), H, W ≥ h; batch_count N_m ≥ n. Returns (share (0-d), {})."""
        problem = self.size_problem(*recon.shape[2:])
        if problem:
            raise ValueError(problem)
        xp = get_array_module(recon)
        cos_matrix, sin_matrix, weights = self._constants(recon)
        out_spec = code_spectrum(recon, self.window, self.stride, cos_matrix, sin_matrix)   # F_o
        in_spec = code_spectrum(target, self.window, self.stride, cos_matrix, sin_matrix)   # F_i
        amp_diff = abs(out_spec) - abs(in_spec)                                             # A_o − A_i
        phase_diff = xp.angle(out_spec + self.eps) - xp.angle(in_spec + self.eps)          # P_o − P_i, unwrapped
        per_bin = self.phase_weight * xp.abs(phase_diff) + xp.abs(amp_diff)                # λ|ΔP| + |ΔA|
        value = (per_bin.sum(axis=(0, 1, 2, 3)) * weights).sum() / batch_count
        self.output_spectrum = out_spec
        self.amplitude_sign = xp.sign(amp_diff)
        self.phase_sign = xp.sign(phase_diff)
        self.image_size = recon.shape[2:]
        self.batch_count = batch_count
        return value.astype(recon.dtype, copy=False), {}

    def backward(self):
        """``∂share/∂f^L``: (n, C, H, W), recon's dtype (see the class docstring)."""
        xp = get_array_module(self.output_spectrum)
        cos_matrix, sin_matrix, weights = self._constants(self.amplitude_sign)
        out_spec = self.output_spectrum
        amplitude = abs(out_spec)                                                    # A_o
        shifted = out_spec + self.eps                                                # z = F_o + ε
        shifted_sq = shifted.real ** 2 + shifted.imag ** 2                           # |z|²
        amp_coef = weights * self.amplitude_sign * ((amplitude > 0) / xp.where(amplitude > 0, amplitude, 1))
        phase_coef = (self.phase_weight * weights) * self.phase_sign * \
            ((shifted_sq > 0) / xp.where(shifted_sq > 0, shifted_sq, 1))
        real = amp_coef * out_spec.real - phase_coef * shifted.imag                  # Re G  (i z = −Im z + i Re z)
        imag = amp_coef * out_spec.imag + phase_coef * shifted.real                  # Im G
        height, width = self.image_size
        grad = code_spectrum_adjoint(real, imag, height, width, self.stride, cos_matrix, sin_matrix)
        grad *= 1.0 / self.batch_count
        return grad
