"""The ``stft`` loss (Dalal's β-VAE paper, Sec. 3.1): forward vs the frame-by-frame loop and the global DFT, the wrapped
phase, dense and directional finite differences away from the kinks, the adjoints of the framed DFT,
a planted bug, dtypes, sizes and the |F_o| = 0 guard."""

import math

import numpy as np
import pytest
import scipy.signal

from sflnet.backend import to_device, to_host
from sflnet.gradcheck.cases import freq
from sflnet.gradcheck.engine import adjoint_measurement, dense_check, directional_check, random_cotangent
from sflnet.gradcheck.references.losses import global_dft_loss_by_phases, stft_loss_forward
from sflnet.losses.stft import STFTLoss, abs_angle, frequency_weights, window_taper
from sflnet.ops.spectral import dft2, extract_frames, half_spectrum_multiplicity, irdft2, overlap_add, rdft2, stft2_adjoint

SMOOTH = 1e-7
EXACT = 1e-12


def _upstream(rng, xp, dtype=np.float64):
    return to_device(np.asarray(rng.standard_normal(), dtype=dtype), xp)


def _value(loss, recon, target, batch_count, xp):
    return float(loss.forward(to_device(recon, xp), to_device(target, xp), batch_count)[0])


# --- forward ------------------------------------------------------------------

@pytest.mark.parametrize("shape, window, stride, window_fn", [
    ((2, 3, 7, 6), 4, 2, "hann"),
    ((1, 3, 8, 9), 4, 2, "hann"),
    ((2, 3, 23, 17), 8, 3, "hann"),      # last rows/columns not covered
    ((1, 2, 37, 53), 16, 4, "hann"),     # the paper's 16/4
    ((2, 2, 19, 14), 5, 2, "rect"),      # odd window
    ((1, 1, 16, 16), 16, 4, "hann"),     # one window
])
def test_forward_matches_the_frame_loop(xp, shape, window, stride, window_fn):
    rng = np.random.default_rng(1)
    recon, target = rng.uniform(-1, 1, shape), rng.uniform(-1, 1, shape)
    loss = STFTLoss(window, stride, window_fn, phase_weight=7.5)
    value = _value(loss, recon, target, shape[0] + 1, xp)
    expected = stft_loss_forward(recon, target, shape[0] + 1, window, stride, window_fn, 7.5)
    assert abs(value - expected) <= EXACT * abs(expected)


def test_forward_row_of_the_suite(xp):
    m = freq.forward_stft(np.random.default_rng(2), xp)
    assert m.error <= EXACT, m.samples


@pytest.mark.parametrize("side", [12, 9])
def test_rect_window_as_large_as_the_image_is_the_global_dft_loss(xp, side):
    rng = np.random.default_rng(3)
    shape = (2, 3, side, side)
    recon, target = rng.uniform(-1, 1, shape), rng.uniform(-1, 1, shape)
    for stride in (1, 4, 100):   # one window position whatever the stride
        value = _value(STFTLoss(side, stride, "rect"), recon, target, 3, xp)
        expected = global_dft_loss_by_phases(recon, target, 3, 9.0)
        assert abs(value - expected) <= EXACT * expected


def test_phase_difference_is_wrapped_not_literal(xp):
    """|ΔP| = |angle(F_o conj F_i)| is the circular distance min(d, 2π − d) of the paper's P_o, P_i."""
    rng = np.random.default_rng(4)
    shape = (1, 2, 8, 8)
    recon, target = rng.uniform(-1, 1, shape), rng.uniform(-1, 1, shape)
    value = _value(STFTLoss(8, 1, "rect"), recon, target, 1, xp)
    literal = global_dft_loss_by_phases(recon, target, 1, 9.0, wrap=False)
    assert abs(value - global_dft_loss_by_phases(recon, target, 1, 9.0)) <= EXACT * value
    assert literal > value * (1 + 1e-3)       # random phases cross the cut: the literal form differs


def test_abs_angle_matches_numpy_angle():
    rng = np.random.default_rng(5)
    z = rng.standard_normal(10000) + 1j * rng.standard_normal(10000)
    z[:8] = [0, 1, -1, 1j, -1j, complex(-1, 0.0), complex(-1, -0.0), complex(-2, 1e-300)]
    got = abs_angle(z, np.abs(z))
    assert np.max(np.abs(got - np.abs(np.angle(z)))) <= 4e-16 * np.pi
    z32 = z.astype(np.complex64)
    got32 = abs_angle(z32, np.abs(z32))
    assert got32.dtype == np.float32
    assert np.max(np.abs(got32 - np.abs(np.angle(z32)).astype(np.float64))) <= 1e-6


def test_taper_and_weights_written_out():
    for h in (4, 5, 16):
        assert np.allclose(window_taper(h, "hann"), np.outer(*2 * [scipy.signal.get_window("hann", h)]),
                           rtol=0, atol=1e-15)
        assert np.array_equal(window_taper(h, "rect"), np.ones((h, h)))
        w = frequency_weights(h)
        for u in range(h):
            for v in range(h):
                r = math.hypot(min(u, h - u), min(v, h - v))
                assert abs(w[u, v] - r / (math.sqrt(2) * (h // 2))) <= 1e-15
        assert w[0, 0] == 0.0 and w.max() == 1.0


def test_half_spectrum_counts_every_bin_once(xp):
    """Σ_full g(F) = Σ_half m(v) g(F_half) for a mirror-symmetric g (here |F| and |F|³), odd and even widths."""
    rng = np.random.default_rng(6)
    for shape in ((3, 6, 8), (2, 5, 7)):
        x = to_device(rng.standard_normal(shape), xp)
        full, half = dft2(x), rdft2(x)
        m = to_device(half_spectrum_multiplicity(shape[-1]), xp)
        for power in (1, 3):
            a, b = float((abs(full) ** power).sum()), float((m * abs(half) ** power).sum())
            assert abs(a - b) <= EXACT * a
        assert float(abs(irdft2(half, shape[-1]) - x).max()) <= EXACT


# --- gradients ----------------------------------------------------------------

@pytest.mark.parametrize("shape, window, stride", [((2, 3, 7, 6), 4, 2), ((1, 3, 8, 9), 4, 2),
                                                    ((1, 1, 17, 18), 16, 4)])
def test_dense_gradcheck_away_from_the_kinks(xp, shape, window, stride):
    """recon is redrawn until |A_o − A_i|, A_o, |ΔP|, π − |ΔP| and A_o·min(|ΔP|, π − |ΔP|) exceed 1e-3 at
    every bin (the |ΔP| conditions on the non-real bins); a dense step moves a bin by ≤ ε/h ≤ 2.5e-5 (h = 4,
    ε ≤ 1e-4), so no kink is crossed."""
    rng = np.random.default_rng(7)
    case = freq.make_stft_case(rng, xp, np.float64, "tiny", shape=shape, window=window, stride=stride)
    m = dense_check(case, _upstream(rng, xp))
    assert m.error <= SMOOTH, "\n".join(m.samples)
    assert "flipped" not in m.note


def test_margins_hold_for_the_tiny_case(xp):
    rng = np.random.default_rng(8)
    case = freq.make_stft_case(rng, xp, np.float64, "tiny")
    recon = case.variables["recon"]
    # the target is not in the case: rebuild it from the same stream
    rng = np.random.default_rng(8)
    target = rng.uniform(-1, 1, (2, 3, 7, 6))
    margins = freq.stft_margins(recon, target, 4, 2)
    assert min(margins.values()) > freq.STFT_MARGIN


def test_directional_gradcheck_realistic(xp):
    rng = np.random.default_rng(9)
    case = freq.make_stft_case(rng, xp, np.float64, "realistic")
    m = directional_check(case, _upstream(rng, xp), rng)
    assert m.error <= SMOOTH, "\n".join(m.samples)


def test_uncovered_pixels_get_zero_gradient(xp):
    rng = np.random.default_rng(10)
    shape = (1, 2, 11, 10)    # window 4 stride 3: rows 0..9 and columns 0..9 covered
    loss = STFTLoss(4, 3)
    loss.forward(to_device(rng.uniform(-1, 1, shape), xp), to_device(rng.uniform(-1, 1, shape), xp), 1)
    grad = to_host(loss.backward())
    assert np.all(grad[:, :, 10, :] == 0) and np.any(grad[:, :, 9, :] != 0)
    assert np.all(grad[:, :, :, 0] == 0)    # the periodic Hann is 0 at t = 0: column 0 of each frame is weightless


class PhaseOverAmplitude(STFTLoss):
    """Planted bug: the phase derivative with |F| instead of |F|² (λ W sign(ΔP) i F_o / A_o)."""

    def backward(self):
        out_spec = self.output_spectrum
        taper, weights = self._constants(self.amplitude_sign, counted=False)
        unit = out_spec / abs(out_spec)
        bin_grad = weights * (self.amplitude_sign + 1j * self.phase_weight * self.phase_sign) * unit
        return stft2_adjoint(bin_grad, *self.image_size, self.stride, taper) / self.batch_count


def test_planted_bug_is_caught(monkeypatch):
    monkeypatch.setattr(freq, "STFTLoss", PhaseOverAmplitude)
    rng = np.random.default_rng(11)
    case = freq.make_stft_case(rng, np, np.float64, "tiny")
    m = dense_check(case, _upstream(rng, np))
    assert m.error > SMOOTH
    assert m.error > 1e-2


# --- adjoints -----------------------------------------------------------------

def test_adjoint_of_the_framed_stft(xp):
    m = freq.adjoint_stft_frames(np.random.default_rng(12), xp)
    assert m.error <= EXACT, m.samples


@pytest.mark.parametrize("shape, window, stride", [((2, 3, 24, 19), 8, 3), ((1, 2, 13, 12), 5, 2),
                                                    ((1, 1, 9, 9), 4, 5)])   # stride > window: gaps
def test_overlap_add_is_the_adjoint_of_the_framing(xp, shape, window, stride):
    rng = np.random.default_rng(13)
    x = to_device(rng.standard_normal(shape), xp)
    for taper in (None, to_device(window_taper(window, "hann"), xp)):
        frames = extract_frames(x, window, stride, taper)
        y = random_cotangent(rng, frames, xp)
        back = overlap_add(y, shape[2], shape[3], stride, taper)
        m = adjoint_measurement("", frames, x, y, back)
        assert m.error <= EXACT, m.samples


def test_framing_is_the_window_loop(xp):
    rng = np.random.default_rng(14)
    x = rng.standard_normal((2, 3, 13, 11))
    taper = window_taper(5, "hann")
    frames = to_host(extract_frames(to_device(x, xp), 5, 3, to_device(taper, xp)))
    assert frames.shape == (2, 3, 3, 3, 5, 5)
    for ky in range(3):
        for kx in range(3):
            assert np.array_equal(frames[:, :, ky, kx], x[:, :, 3 * ky:3 * ky + 5, 3 * kx:3 * kx + 5] * taper)


def test_irdft2_is_the_weighted_adjoint_of_rdft2(xp):
    rng = np.random.default_rng(15)
    for shape in ((2, 6, 8), (3, 5, 7)):
        x = to_device(rng.standard_normal(shape), xp)
        m = to_device(half_spectrum_multiplicity(shape[-1]), xp)
        spectrum = rdft2(x) * m
        pair = xp.stack([spectrum.real, spectrum.imag])
        y = random_cotangent(rng, pair, xp)      # any half spectrum: DC/Nyquist imaginary parts too
        back = irdft2(y[0] + 1j * y[1], shape[-1])
        assert adjoint_measurement("", pair, x, y, back).error <= EXACT


# --- dtypes, sizes, guard -----------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtypes_preserved_and_inputs_unchanged(xp, dtype):
    rng = np.random.default_rng(16)
    shape = (2, 3, 20, 17)
    recon = to_device(rng.uniform(-1, 1, shape).astype(dtype), xp)
    target = to_device(rng.uniform(-1, 1, shape).astype(dtype), xp)
    recon_before, target_before = to_host(recon).copy(), to_host(target).copy()
    loss = STFTLoss()
    value, parts = loss.forward(recon, target, 3)
    grad = loss.backward()
    assert parts == {}
    assert value.dtype == dtype and value.shape == ()
    assert grad.dtype == dtype and grad.shape == shape
    assert np.array_equal(to_host(recon), recon_before) and np.array_equal(to_host(target), target_before)
    if dtype == np.float32:
        expected = stft_loss_forward(to_host(recon), to_host(target), 3)
        assert abs(float(value) - expected) <= 1e-5 * expected


def test_size_problem_and_value_error(xp):
    loss = STFTLoss()
    assert loss.size_problem(16, 16) is None and loss.size_problem(300, 225) is None
    message = "the stft loss needs images of at least 16x16 pixels (its window), got 12x40"
    assert loss.size_problem(12, 40) == message
    assert STFTLoss(window=8).size_problem(40, 7) == \
        "the stft loss needs images of at least 8x8 pixels (its window), got 40x7"
    x = to_device(np.zeros((1, 3, 12, 40)), xp)
    with pytest.raises(ValueError, match="at least 16x16 pixels"):
        loss.forward(x, x, 1)


@pytest.mark.parametrize("kwargs", [{"window": 1}, {"window": 4.5}, {"stride": 0}, {"window_fn": "hamming"}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        STFTLoss(**kwargs)


def test_zero_amplitude_guard(xp):
    """|F_o| = 0 (a zero or a constant recon): the derivatives there are 0, never NaN or inf.

    A constant frame's DFT is exactly 0 off the Hann's 3×3 low bins (off DC for rect) in the
    half-spectrum transform, so the guard is hit there. (The frame loop's complex fft2 leaves
    ~1e-17 there, whose phase is noise: the phase of a vanishing coefficient is ill-defined,
    so only the all-zero recon is compared with it.)
    """
    rng = np.random.default_rng(17)
    target = rng.uniform(-1, 1, (1, 2, 10, 9))
    for recon in (np.zeros_like(target), np.full_like(target, 0.5)):
        for window_fn in ("hann", "rect"):
            loss = STFTLoss(4, 2, window_fn)
            value = _value(loss, recon, target, 1, xp)
            grad = to_host(loss.backward())
            assert math.isfinite(value) and np.all(np.isfinite(grad))
            assert np.any(to_host(abs(loss.output_spectrum)) == 0)
    loss = STFTLoss(4, 2)
    value = _value(loss, np.zeros_like(target), target, 1, xp)
    expected = stft_loss_forward(np.zeros_like(target), target, 1, 4, 2)
    assert abs(value - expected) <= EXACT * expected
    assert np.all(to_host(loss.backward()) == 0.0)     # F_o = 0 at every bin: nothing to follow


def test_group_shares_add_up_to_the_batch_value(xp):
    rng = np.random.default_rng(18)
    recon, target = rng.uniform(-1, 1, (4, 3, 18, 21)), rng.uniform(-1, 1, (4, 3, 18, 21))
    loss = STFTLoss()
    whole = _value(loss, recon, target, 4, xp)
    parts = sum(_value(loss, recon[s], target[s], 4, xp) for s in (slice(0, 1), slice(1, 4)))
    assert abs(whole - parts) <= EXACT * whole
