"""The gradient-check rows of the frequency losses ``fft``, ``stft`` and ``stft_code``.

* :func:`forward_fft` — the focal frequency loss against ``numpy.fft.fft2`` of every
  image and channel, the weights and the mean written out
  (:func:`sflnet.gradcheck.references.losses.fft_loss_numpy`);
* :func:`forward_stft` — the STFT loss against :func:`sflnet.gradcheck.references.losses.stft_loss_forward`
  (a loop over window positions, ``numpy.fft.fft2`` of every frame, all h×h bins),
  and a "rect" window as large as the image against the global-DFT loss written out;
* :func:`make_fft_case`, :func:`make_stft_case` — d(share)/d(recon) for the dense
  ("tiny") and directional ("realistic") checks;
* :func:`adjoint_dft` — ``Re⟨F x, y⟩ = ⟨x, Re(F^H y)⟩`` for the orthonormal 2-D DFT;
* :func:`adjoint_stft_frames` — the framed, tapered, half-spectrum DFT against its
  adjoint (inverse half-spectrum DFT, taper, overlap-add), in the m-weighted inner product;
* :func:`forward_stft_code`, :func:`make_stft_code_case`, :func:`adjoint_stft_code_frames` —
  the same three for ``stft_code``, the STFT loss of the authors' code (its reference
  transcribes their NHWC ``fft2d``; its kinks are those of stft plus the branch cut
  of the unwrapped phase, see :func:`stft_code_margins`).

The focal weights are constants by definition; the fft case computes them at the
base point (:func:`sflnet.losses.fft.focal_weights`) and passes them to every
forward (``weights=``), so the finite differences differentiate the same function
as the backward (:class:`~sflnet.losses.fft.FocalFrequencyLoss`).

The stft loss has kinks (|·| of the amplitude difference and of the phase
difference) and a singularity (the phase of a vanishing coefficient). Both cases
redraw recon until every bin is farther than a margin from them (see
:func:`stft_margins`). Tiny: 1e-3 (:data:`STFT_MARGIN`); a single pixel moved by ε
moves any bin by at most ε/h, ≤ 2.5e-5 for the ε ≤ 1e-4 of the sweep at h = 4, so no
dense step crosses a kink. Realistic: (2,3,42,37) at 16/4 has ~6e4 bins, so only
1e-6 (:data:`STFT_REALISTIC_MARGIN`) can be drawn; a random unit direction moves a
bin by ~1e-2 ε, so ε ≤ 1e-5 crosses none, and the case's masks (which side of each
kink every bin is on) let the directional check drop an ε that did. On the paper's
64×48 images (~1.8e5 bins) no such draw exists, and the ε sweep failed 1e-7 on
2-3 % of seeds (kinks crossed at 1e-4 and 1e-5, rounding at 1e-6): the phase of
the smallest coefficients amplifies the rounding of the loss value like 1/|F_o|.
"""

import math

import numpy as np

from sflnet.backend import get_array_module, to_device, to_host
from sflnet.gradcheck.engine import (Case, LayerEntry, Measurement, adjoint_measurement, forward_measurement, normal,
                                     random_cotangent, shape_text, uniform)
from sflnet.gradcheck.references.losses import (fft_loss_numpy, global_dft_loss_forward, stft_code_loss_forward,
                                                stft_loss_forward)
from sflnet.losses.fft import FocalFrequencyLoss, focal_weights
from sflnet.losses.stft import STFTLoss, window_taper
from sflnet.losses.stft_code import STFTCodeLoss, code_spectrum, code_spectrum_adjoint, row_dft_matrices
from sflnet.ops.spectral import dft2, dft2_adjoint, extract_frames, half_spectrum_multiplicity, stft2, stft2_adjoint

FFT_TINY_SHAPE = (2, 3, 5, 6)
FFT_REALISTIC_SHAPE = (2, 3, 64, 48)
FFT_FORWARD_SHAPES = ((2, 3, 9, 8), (2, 3, 12, 17))

STFT_TINY = ((2, 3, 7, 6), 4, 2)            # (shape, window, stride): 2×2 frames of 4×4 at stride 2
STFT_REALISTIC = ((2, 3, 42, 37), 16, 4)    # the paper's 16/4: 7×6 frames, 2 rows and 1 column uncovered
STFT_FORWARD = (((2, 3, 23, 17), 8, 3, "hann"), ((1, 3, 37, 53), 16, 4, "hann"),
                ((2, 2, 19, 14), 5, 2, "rect"))
STFT_GLOBAL_SHAPE = (2, 3, 12, 12)          # "rect" window 12 = the global DFT
STFT_MARGIN = 1e-3                          # tiny: every kink farther than any ε/h a dense step moves a bin
STFT_REALISTIC_MARGIN = 1e-6                # realistic: ~6e4 bins, so only a smaller margin can be drawn
STFT_MAX_REDRAWS = 500
STFT_CODE_TINY = ((2, 2, 9, 8), 6, 2)            # 2×2 frames of 6×6: 3 rows × 3 frequencies each
STFT_CODE_REALISTIC = ((2, 3, 42, 37), 16, 4)    # the authors' 16/4
STFT_CODE_FORWARD = (((2, 1, 28, 28), 16, 4), ((2, 3, 23, 17), 8, 3), ((1, 2, 19, 14), 5, 2),
                     ((2, 1, 28, 28), 28, 4))    # the authors' digits at 16/4; uncovered pixels; odd; one frame


def stft_margins(recon, target, window, stride, window_fn="hann"):
    """How close a point is to the stft loss's kinks: {name: smallest value over every bin}.

    recon, target: (n, C, H, W) (host or device). From the full h×h spectra of every tapered frame:
    ``|A_o − A_i|`` (the amplitude kink), ``A_o`` (the phase's singularity), and over the
    bins that are not real for every frame (u, v ∈ {0, h/2} are), ``|ΔP|`` and ``π − |ΔP|``
    (the phase kinks, in radians) and ``A_o · min(|ΔP|, π − |ΔP|)``, which is within
    2/π of the distance from F_o to the line where sign(ΔP) flips. A perturbation
    that moves no coefficient F_o by more than the smallest of these crosses no kink.
    """
    taper = window_taper(window, window_fn)
    f_o = np.fft.fft2(extract_frames(np.asarray(to_host(recon), np.float64), window, stride, taper),
                      norm="ortho")
    f_i = np.fft.fft2(extract_frames(np.asarray(to_host(target), np.float64), window, stride, taper),
                      norm="ortho")
    amp_o = np.abs(f_o)
    phase = np.abs(np.angle(f_o * np.conj(f_i)))
    real_bins = [0] + ([window // 2] if window % 2 == 0 else [])
    complex_bin = np.ones((window, window), dtype=bool)
    complex_bin[np.ix_(real_bins, real_bins)] = False
    phase, amp_complex = phase[..., complex_bin], amp_o[..., complex_bin]
    return {"|A_o - A_i|": float(np.min(np.abs(amp_o - np.abs(f_i)))),
            "A_o": float(np.min(amp_o)),
            "|dP|": float(np.min(phase)),
            "pi - |dP|": float(np.min(math.pi - phase)),
            "A_o min(|dP|, pi - |dP|)": float(np.min(amp_complex * np.minimum(phase, math.pi - phase)))}


# --- forward rows: (rng, xp) -> Measurement -------------------------------------

def forward_fft(rng, xp):
    """The share of a group of 2 in a batch of 3 vs :func:`fft_loss_numpy`, odd and even sizes."""
    worst, samples = 0.0, []
    for shape in FFT_FORWARD_SHAPES:
        recon, target = rng.uniform(-1, 1, shape), rng.uniform(-1, 1, shape)
        value, _ = FocalFrequencyLoss().forward(to_device(recon, xp), to_device(target, xp), shape[0] + 1)
        m = forward_measurement("", np.array([float(value)]),
                                 np.array([fft_loss_numpy(recon, target, shape[0] + 1)]))
        worst = max(worst, m.error)
        samples += [shape_text(shape)] + m.samples
    shapes = "; ".join(shape_text(s) for s in FFT_FORWARD_SHAPES)
    return Measurement(f"{shapes}, N_m=3", worst, None, "vs numpy.fft.fft2 per image and channel", samples)


def forward_stft(rng, xp):
    """The share vs the frame-by-frame loop (hann and rect, odd window), and a rect window = the global DFT."""
    worst, samples = 0.0, []
    for shape, window, stride, window_fn in STFT_FORWARD:
        recon, target = rng.uniform(-1, 1, shape), rng.uniform(-1, 1, shape)
        loss = STFTLoss(window, stride, window_fn)
        value, _ = loss.forward(to_device(recon, xp), to_device(target, xp), shape[0] + 1)
        expected = stft_loss_forward(recon, target, shape[0] + 1, window, stride, window_fn)
        m = forward_measurement("", np.array([float(value)]), np.array([expected]))
        worst = max(worst, m.error)
        samples += [f"{shape_text(shape)} window {window} stride {stride} {window_fn}"] + m.samples
    shape = STFT_GLOBAL_SHAPE
    recon, target = rng.uniform(-1, 1, shape), rng.uniform(-1, 1, shape)
    value, _ = STFTLoss(shape[-1], 1, "rect").forward(to_device(recon, xp), to_device(target, xp), shape[0] + 1)
    m = forward_measurement("", np.array([float(value)]),
                             np.array([global_dft_loss_forward(recon, target, shape[0] + 1, 9.0)]))
    worst = max(worst, m.error)
    samples += [f"{shape_text(shape)} rect window {shape[-1]} = global DFT"] + m.samples
    return Measurement("(2,3,23,17) h8 s3; (1,3,37,53) h16 s4; (2,2,19,14) h5 s2 rect; (2,3,12,12) global",
                       worst, None, "vs references.losses.stft_loss_forward (numpy.fft.fft2 per frame) and the global DFT", samples)


# --- cases: (rng, xp, dtype, size) -> Case --------------------------------------

def make_fft_case(rng, xp, dtype, size, *, shape=None):
    """d(share)/d(recon) of :class:`FocalFrequencyLoss` with its focal weights held at the base point's.

    size: "tiny" (2,3,5,6) (dense) or "realistic" (2,3,64,48) (directional); shape overrides it.
    A group of n in a batch of n + 1. w = :func:`focal_weights` at the base point is passed to
    every forward (``weights=w``): it is a constant by definition.
    """
    if shape is None:
        shape = FFT_TINY_SHAPE if size == "tiny" else FFT_REALISTIC_SHAPE
    recon = uniform(rng, shape, xp, dtype)
    target = uniform(rng, shape, xp, dtype)
    batch_count = shape[0] + 1
    loss = FocalFrequencyLoss()
    weights = focal_weights(recon, target)    # w at the base point, then constant (it is by definition)
    variables = {"recon": recon}

    def evaluate():
        return loss.forward(variables["recon"], target, batch_count, weights=weights)[0]

    def gradients(upstream):
        return {"recon": upstream * loss.backward()}
    return Case(variables, evaluate, gradients, f"recon{shape_text(shape)}, N_m={batch_count}, w frozen")


def make_stft_case(rng, xp, dtype, size, *, shape=None, window=None, stride=None, margin=None):
    """d(share)/d(recon) of :class:`STFTLoss` (hann), a group of n in a batch of n + 1.

    size: "tiny" (2,3,7,6), window 4, stride 2 (dense), or "realistic" (2,3,42,37), 16/4
    (directional); shape, window, stride override them. recon is redrawn until every
    :func:`stft_margins` value exceeds ``margin`` (default :data:`STFT_MARGIN` tiny,
    :data:`STFT_REALISTIC_MARGIN` realistic; see the module docstring). The case's
    masks are the kink sides sign(A_o − A_i) > 0 and sign(ΔP) > 0 of every bin, so
    the checks see (and skip) an ε at which a perturbation crossed a kink anyway.
    """
    base_shape, base_window, base_stride = STFT_TINY if size == "tiny" else STFT_REALISTIC
    shape = base_shape if shape is None else shape
    window = base_window if window is None else window
    stride = base_stride if stride is None else stride
    if margin is None:
        margin = STFT_MARGIN if size == "tiny" else STFT_REALISTIC_MARGIN
    return _kink_free_case(rng, xp, dtype, shape, STFTLoss(window, stride), margin,
                           lambda recon, target: stft_margins(recon, target, window, stride),
                           lambda loss: [loss.amplitude_sign > 0, loss.phase_sign > 0],
                           "kink sides (sign of A_o - A_i and of dP)")


def _kink_free_case(rng, xp, dtype, shape, loss, margin, margins, sides, mask_kind):
    """d(share)/d(recon) of a framed spectral loss (``window``, ``stride``), a group of n in a batch of n + 1.

    target uniform in [−1, 1]; recon redrawn until every ``margins(recon, target)`` value exceeds
    ``margin``. The case's masks are ``sides(loss)`` (which side of its kinks every bin is on, as of
    the last evaluate: the checks call it right after one), so a crossed kink shows.
    """
    target = rng.uniform(-1, 1, shape)
    for _ in range(STFT_MAX_REDRAWS):
        recon = rng.uniform(-1, 1, shape)
        if min(margins(recon, target).values()) > margin:
            break
    else:
        raise RuntimeError(f"no recon with every {loss.name} kink farther than {margin:g} in {STFT_MAX_REDRAWS} draws")
    variables = {"recon": to_device(recon.astype(dtype), xp)}
    target = to_device(target.astype(dtype), xp)
    batch_count = shape[0] + 1

    def evaluate():
        return loss.forward(variables["recon"], target, batch_count)[0]

    def gradients(upstream):
        return {"recon": upstream * loss.backward()}
    return Case(variables, evaluate, gradients,
                f"recon{shape_text(shape)} h{loss.window} s{loss.stride}, N_m={batch_count}, kinks > {margin:g} away",
                lambda: sides(loss), mask_kind=mask_kind)


# --- adjoint rows: (rng, xp) -> Measurement -------------------------------------

def _complex_pair(z):
    """A complex array as one real array (2, …) = (Re, Im): ⟨pair(a), pair(b)⟩ = Re⟨a, b⟩."""
    xp = get_array_module(z)
    return xp.stack([z.real, z.imag])


def adjoint_dft(rng, xp):
    """``Re⟨F x, y⟩ = ⟨x, Re(F^H y)⟩`` for real x, complex y; odd and even sizes."""
    worst, samples = None, []
    for shape in ((2, 3, 9, 8), (1, 2, 7, 11)):
        x = normal(rng, shape, xp, np.float64)
        fx = _complex_pair(dft2(x))
        y = random_cotangent(rng, fx, xp)
        back = dft2_adjoint(y[0] + 1j * y[1])
        m = adjoint_measurement("", fx, x, y, back)
        worst = m if worst is None or m.error > worst.error else worst
        samples += [shape_text(shape)] + m.samples
    return Measurement("x(2,3,9,8); x(1,2,7,11)", worst.error, None, "Re<Fx, y> vs <x, Re(F^H y)>", samples)


def adjoint_stft_frames(rng, xp):
    """framing + taper + half-spectrum DFT vs overlap-add(taper ⊙ irdft2(y)), in ``Re Σ m conj(·) y``.

    Shapes whose last rows/columns no window covers, an odd window, and the paper's 16/4.
    """
    worst, samples = None, []
    for shape, window, stride in (((2, 3, 24, 19), 8, 3), ((1, 2, 13, 12), 5, 2), ((1, 3, 37, 53), 16, 4)):
        taper = to_device(window_taper(window, "hann"), xp)
        x = normal(rng, shape, xp, np.float64)
        spectrum = stft2(x, window, stride, taper)
        counted = to_device(half_spectrum_multiplicity(window), xp)
        fx = _complex_pair(spectrum * counted)            # m ⊙ stft2(x): the m-weighted inner product
        y = random_cotangent(rng, fx, xp)
        back = stft2_adjoint(y[0] + 1j * y[1], shape[2], shape[3], stride, taper)
        m = adjoint_measurement("", fx, x, y, back)
        worst = m if worst is None or m.error > worst.error else worst
        samples += [f"{shape_text(shape)} h{window} s{stride} hann -> {shape_text(spectrum.shape)}"] + m.samples
    return Measurement("(2,3,24,19) h8 s3; (1,2,13,12) h5 s2; (1,3,37,53) h16 s4", worst.error, None,
                       "Re sum m conj(STFT x) y vs <x, overlap-add(taper irdft2 y)>", samples)


# --- stft_code: the STFT loss of the authors' code ---------------------------------

def _distance_to_ray(z, angle):
    """Distance from each complex z to the ray {t·e^{i·angle}, t ≥ 0} (angle: array like z, or a number)."""
    turned = z * np.exp(-1j * angle)
    return np.where(turned.real > 0, np.abs(turned.imag), np.abs(turned))


def stft_code_margins(recon, target, window, stride, eps=1e-6):
    """How close a point is to the stft_code loss's kinks and jumps: {name: smallest value over the weighted bins}.

    recon, target: (n, C, H, W) (host or device). From ``numpy.fft.fft`` of the top rows of every
    frame, the bins with W > 0 (rows and frequencies 1 … q − 1), z = F_o + ε: ``|A_o − A_i|`` (the
    amplitude kink), ``|z|`` (the phase's singularity), the distance from z to the ray of angle P_i
    (where sign(P_o − P_i) flips) and to the negative real axis (the branch cut, where P_o jumps by
    2π). One pixel moved by ε moves any bin by at most ε (an unnormalised DFT of unit-modulus terms).
    """
    q = window // 2
    spectra = [np.fft.fft(extract_frames(np.asarray(to_host(x), np.float64), window, stride)[..., 1:q, :],
                          axis=-1)[..., 1:q] for x in (recon, target)]
    f_o, f_i = spectra
    z = f_o + eps
    return {"|A_o - A_i|": float(np.min(np.abs(np.abs(f_o) - np.abs(f_i)))),
            "|F_o + eps|": float(np.min(np.abs(z))),
            "to the ray of P_i": float(np.min(_distance_to_ray(z, np.angle(f_i + eps)))),
            "to the branch cut": float(np.min(_distance_to_ray(z, math.pi)))}


def forward_stft_code(rng, xp):
    """The share vs the authors' code transcribed (:func:`stft_code_loss_forward`), four shapes and windows."""
    worst, samples = 0.0, []
    for shape, window, stride in STFT_CODE_FORWARD:
        recon, target = rng.uniform(-1, 1, shape), rng.uniform(-1, 1, shape)
        value, _ = STFTCodeLoss(window, stride).forward(to_device(recon, xp), to_device(target, xp), shape[0] + 1)
        m = forward_measurement("", np.array([float(value)]),
                                 np.array([stft_code_loss_forward(recon, target, shape[0] + 1, window, stride)]))
        worst = max(worst, m.error)
        samples += [f"{shape_text(shape)} window {window} stride {stride}"] + m.samples
    return Measurement("(2,1,28,28) h16 s4; (2,3,23,17) h8 s3; (1,2,19,14) h5 s2; (2,1,28,28) h28", worst, None,
                       "vs references.losses.stft_code_loss_forward (the code's NHWC fft2d per frame)", samples)


def make_stft_code_case(rng, xp, dtype, size, *, shape=None, window=None, stride=None, margin=None):
    """d(share)/d(recon) of :class:`STFTCodeLoss`, a group of n in a batch of n + 1.

    size: "tiny" (2,2,9,8), window 6, stride 2 (dense), or "realistic" (2,3,42,37), 16/4
    (directional); shape, window, stride override them. recon is redrawn until every
    :func:`stft_code_margins` value exceeds ``margin`` (:data:`STFT_MARGIN` tiny, a dense step
    moves a bin by ≤ 1e-4; :data:`STFT_REALISTIC_MARGIN` realistic). The masks are the kink
    sides sign(A_o − A_i) > 0 and sign(P_o − P_i) > 0, and the side of the branch cut.
    """
    base_shape, base_window, base_stride = STFT_CODE_TINY if size == "tiny" else STFT_CODE_REALISTIC
    shape = base_shape if shape is None else shape
    window = base_window if window is None else window
    stride = base_stride if stride is None else stride
    if margin is None:
        margin = STFT_MARGIN if size == "tiny" else STFT_REALISTIC_MARGIN
    return _kink_free_case(rng, xp, dtype, shape, STFTCodeLoss(window, stride), margin,
                           lambda recon, target: stft_code_margins(recon, target, window, stride),
                           _code_sides, "kink sides (sign of A_o - A_i, of dP, side of the branch cut)")


def _code_sides(loss):
    """The stft_code kink sides, and the side of the branch cut (lower left half-plane or not)."""
    z = loss.output_spectrum + loss.eps
    return [loss.amplitude_sign > 0, loss.phase_sign > 0, (z.real >= 0) | (z.imag >= 0)]


def adjoint_stft_code_frames(rng, xp):
    """framing + the top rows' low-frequency row DFT vs its adjoint, in ``Re Σ conj(·) y``."""
    worst, samples = None, []
    for shape, window, stride in (((2, 3, 24, 19), 8, 3), ((1, 2, 13, 12), 5, 2), ((1, 1, 28, 28), 16, 4)):
        cos_matrix, sin_matrix = (to_device(m, xp) for m in row_dft_matrices(window))
        x = normal(rng, shape, xp, np.float64)
        spectrum = code_spectrum(x, window, stride, cos_matrix, sin_matrix)
        fx = _complex_pair(spectrum)
        y = random_cotangent(rng, fx, xp)
        back = code_spectrum_adjoint(y[0], y[1], shape[2], shape[3], stride, cos_matrix, sin_matrix)
        m = adjoint_measurement("", fx, x, y, back)
        worst = m if worst is None or m.error > worst.error else worst
        samples += [f"{shape_text(shape)} h{window} s{stride} -> {shape_text(spectrum.shape)}"] + m.samples
    return Measurement("(2,3,24,19) h8 s3; (1,2,13,12) h5 s2; (1,1,28,28) h16 s4", worst.error, None,
                       "Re sum conj(F x) y vs <x, overlap-add((Re y) C^T - (Im y) S^T)>", samples)


# ---------------------------------------------------------------------------
# The rows, for sflnet.gradcheck.cases.losses
# ---------------------------------------------------------------------------

def fft_entry():
    """The ``fft_loss`` row: forward vs numpy.fft, dense and directional with w frozen, the DFT adjoint."""
    return LayerEntry(make_fft_case, [("forward vs numpy.fft", forward_fft)],
                      [("adjoint orthonormal DFT", adjoint_dft)])


def stft_entry():
    """The ``stft_loss`` row: forward vs the window loop, dense and directional away from the kinks, the adjoint."""
    return LayerEntry(make_stft_case, [("forward vs window loop", forward_stft)],
                      [("adjoint framed STFT", adjoint_stft_frames)])


def stft_code_entry():
    """The ``stft_code_loss`` row: forward vs the code transcribed, dense and directional away from the kinks
    and the branch cut, the adjoint of the framed row DFT."""
    return LayerEntry(make_stft_code_case, [("forward vs the authors' code", forward_stft_code)],
                      [("adjoint framed row DFT", adjoint_stft_code_frames)])
