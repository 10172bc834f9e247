"""Orthonormal 2-D DFTs, and the framing and overlap-add of a short-time Fourier transform.

Used by the ``fft`` loss (:func:`dft2`, :func:`dft2_adjoint`) and the ``stft``
loss (:func:`stft2`, :func:`stft2_adjoint`, built from :func:`extract_frames`,
:func:`rdft2`, :func:`irdft2` and :func:`overlap_add`). Each map comes with its
adjoint, tested by ``⟨Ax, y⟩ = ⟨x, Aᵀy⟩``. Written once for NumPy and CuPy
(``xp.fft``); the framing runs on all threads
(:func:`sflnet.ops.threads.parallel_ranges`).
"""

import numpy as np

from sflnet.backend import get_array_module
from sflnet.ops.threads import parallel_ranges


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
