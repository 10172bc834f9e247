"""The ``stft_code`` loss (the STFT loss as the public code of Dalal's β-VAE paper computes it): forward vs the code
transcribed, the row DFT and weights written out, the authors' amplitude/phase weighting, the unwrapped phase,
dense and directional finite differences away from the kinks and the branch cut, the adjoint, a planted bug,
dtypes, sizes, the guard and the loss language."""

import math

import numpy as np
import pytest

from sflnet import losses
from sflnet.backend import to_device, to_host
from sflnet.gradcheck.cases import freq
from sflnet.gradcheck.engine import adjoint_measurement, dense_check, directional_check, random_cotangent
from sflnet.gradcheck.references.losses import stft_code_loss_forward
from sflnet.losses.stft_code import STFTCodeLoss, code_spectrum, code_spectrum_adjoint, code_weights, row_dft_matrices

SMOOTH = 1e-7
EXACT = 1e-12


def _upstream(rng, xp):
    return to_device(np.asarray(rng.standard_normal()), xp)


def _value(loss, recon, target, batch_count, xp):
    return float(loss.forward(to_device(recon, xp), to_device(target, xp), batch_count)[0])


# --- forward ------------------------------------------------------------------

@pytest.mark.parametrize("shape, window, stride", [
    ((2, 1, 28, 28), 16, 4),     # the authors' digits and frames
    ((2, 1, 28, 28), 28, 4),     # one frame
    ((2, 3, 23, 17), 8, 3),      # last rows/columns not covered, three channels
    ((1, 2, 19, 14), 5, 2),      # odd window
])
def test_forward_matches_the_code_transcribed(xp, shape, window, stride):
    rng = np.random.default_rng(1)
    recon, target = rng.uniform(-1, 1, shape), rng.uniform(-1, 1, shape)
    value = _value(STFTCodeLoss(window, stride, phase_weight=2.5, eps=1e-3), recon, target, shape[0] + 1, xp)
    expected = stft_code_loss_forward(recon, target, shape[0] + 1, window, stride, 2.5, 1e-3)
    assert abs(value - expected) <= EXACT * abs(expected)


def test_forward_row_of_the_suite(xp):
    m = freq.forward_stft_code(np.random.default_rng(2), xp)
    assert m.error <= EXACT, m.samples


def test_spectrum_is_the_row_dft_of_the_top_rows(xp):
    """F[…, a, u] = Σ_b x[a, b] e^{−2πi ub/h}, written as a double loop, for the top q rows and u < q."""
    rng = np.random.default_rng(3)
    h, s = 6, 3
    x = rng.standard_normal((1, 1, 9, 12))
    cos_matrix, sin_matrix = (to_device(m, xp) for m in row_dft_matrices(h))
    spectrum = to_host(code_spectrum(to_device(x, xp), h, s, cos_matrix, sin_matrix))
    assert spectrum.shape == (1, 1, 2, 3, 3, 3)
    for ky in range(2):
        for kx in range(3):
            for a in range(3):
                for u in range(3):
                    expected = sum(x[0, 0, s * ky + a, s * kx + b] * complex(math.cos(2 * math.pi * u * b / h),
                                                                             -math.sin(2 * math.pi * u * b / h))
                                   for b in range(h))
                    assert abs(spectrum[0, 0, ky, kx, a, u] - expected) <= 1e-13


def test_weights_written_out():
    assert np.array_equal(code_weights(16)[:, 0], np.zeros(8)) and np.array_equal(code_weights(16)[0], np.zeros(8))
    w = code_weights(16)
    for a in range(8):
        for u in range(8):
            assert abs(w[a, u] - (a / 7) * (u / 7)) <= 1e-15
    assert code_weights(5).shape == (2, 2) and code_weights(5)[1, 1] == 1.0


def test_default_weights_are_the_authors_amplitude_and_phase_coefficients(xp):
    """0.00015·stft_code (λ = 9) = 0.0015·(0.1·amplitude + 0.9·phase), each part measured on its own."""
    rng = np.random.default_rng(4)
    shape = (2, 1, 28, 28)
    recon, target = rng.uniform(0, 1, shape), rng.uniform(0, 1, shape)
    amplitude = _value(STFTCodeLoss(phase_weight=0.0), recon, target, 2, xp)
    phase = _value(STFTCodeLoss(phase_weight=1.0), recon, target, 2, xp) - amplitude
    combined = 0.00015 * _value(STFTCodeLoss(), recon, target, 2, xp)
    assert abs(combined - 0.0015 * (0.1 * amplitude + 0.9 * phase)) <= 1e-12 * combined
    assert amplitude > 0 and phase > 0


def test_phase_difference_is_not_wrapped(xp):
    """|P_o − P_i| reaches past π on random frames: the code's phase difference, not the circular distance."""
    rng = np.random.default_rng(5)
    shape = (2, 1, 16, 16)
    recon, target = rng.uniform(-1, 1, shape), rng.uniform(-1, 1, shape)
    loss = STFTCodeLoss(16, 4, phase_weight=1.0, eps=0.0)
    value = _value(loss, recon, target, 2, xp)
    amplitude = _value(STFTCodeLoss(16, 4, phase_weight=0.0), recon, target, 2, xp)
    q = 8
    w = code_weights(16)
    wrapped = 0.0
    for i in range(2):
        row_o = np.fft.fft(recon[i, 0, :q], axis=-1)[:, :q]
        row_i = np.fft.fft(target[i, 0, :q], axis=-1)[:, :q]
        d = np.abs(np.angle(row_o) - np.angle(row_i))
        wrapped += float(np.sum(w * np.minimum(d, 2 * np.pi - d)))
    assert value - amplitude > wrapped / 2 * (1 + 1e-3)


def test_branch_cut_jump(xp):
    """A bin crossing the negative real axis: P_o jumps from −π to π, so with P_i = −π/2 the code's
    |P_o − P_i| jumps from π/2 to 3π/2 (the wrapped distance would stay π/2): the loss jumps by π·λ·W."""
    h = 4
    target = np.zeros((1, 1, 4, 4))
    target[0, 0, 1] = [0.0, 1.0, 0.0, 0.0]          # row 1: F_i[1, 1] = e^{−iπ/2}, P_i = −π/2
    loss = STFTCodeLoss(h, 1, phase_weight=1.0, eps=0.0)
    values = []
    for delta in (1e-6, -1e-6):
        recon = np.zeros((1, 1, 4, 4))
        recon[0, 0, 1] = [-1.0, delta, 0.0, 0.0]     # F_o[1, 1] = −1 − iδ: P_o ≈ −π for δ > 0, π for δ < 0
        values.append(_value(loss, recon, target, 1, xp))
    assert code_weights(h)[1, 1] == 1.0
    assert abs((values[1] - values[0]) - math.pi) <= 1e-5


# --- gradients ----------------------------------------------------------------

@pytest.mark.parametrize("shape, window, stride", [((2, 2, 9, 8), 6, 2), ((1, 1, 17, 18), 16, 4),
                                                    ((1, 2, 11, 9), 5, 3)])
def test_dense_gradcheck_away_from_the_kinks(xp, shape, window, stride):
    """recon is redrawn until every weighted bin is > 1e-3 from A_o = A_i, F_o + ε = 0, the ray of P_i and
    the branch cut; a dense step moves a bin by ≤ ε ≤ 1e-4, so none is crossed."""
    rng = np.random.default_rng(7)
    case = freq.make_stft_code_case(rng, xp, np.float64, "tiny", shape=shape, window=window, stride=stride)
    m = dense_check(case, _upstream(rng, xp))
    assert m.error <= SMOOTH, "\n".join(m.samples)
    assert "flipped" not in m.note


def test_directional_gradcheck_realistic(xp):
    rng = np.random.default_rng(9)
    case = freq.make_stft_code_case(rng, xp, np.float64, "realistic")
    m = directional_check(case, _upstream(rng, xp), rng)
    assert m.error <= SMOOTH, "\n".join(m.samples)


def test_bottom_rows_of_a_frame_get_no_gradient(xp):
    """One 8×8 frame: only its top 4 rows enter the loss."""
    rng = np.random.default_rng(10)
    loss = STFTCodeLoss(8, 4)
    loss.forward(to_device(rng.uniform(-1, 1, (1, 1, 8, 8)), xp), to_device(rng.uniform(-1, 1, (1, 1, 8, 8)), xp), 1)
    grad = to_host(loss.backward())
    assert np.all(grad[0, 0, 4:] == 0) and np.all(grad[0, 0, 1:4] != 0)
    assert np.all(grad[0, 0, 0] == 0)     # row 0 has weight 0


class PhaseWithoutEps(STFTCodeLoss):
    """Planted bug: the phase derivative taken at F_o instead of F_o + ε (invisible at ε = 0, wrong at ε = 0.3)."""

    def backward(self):
        eps, self.eps = self.eps, 0.0
        try:
            return super().backward()
        finally:
            self.eps = eps


def test_planted_bug_is_caught(monkeypatch):
    monkeypatch.setattr(freq, "STFTCodeLoss", lambda window, stride: PhaseWithoutEps(window, stride, eps=0.3))
    rng = np.random.default_rng(11)
    case = freq.make_stft_code_case(rng, np, np.float64, "tiny")
    m = dense_check(case, _upstream(rng, np))
    assert m.error > 1e-3


def test_adjoint_of_the_framed_row_dft(xp):
    m = freq.adjoint_stft_code_frames(np.random.default_rng(12), xp)
    assert m.error <= EXACT, m.samples
    rng = np.random.default_rng(13)
    cos_matrix, sin_matrix = (to_device(m, xp) for m in row_dft_matrices(4))
    x = to_device(rng.standard_normal((1, 1, 9, 9)), xp)     # stride 5 > window 4: gaps
    spectrum = code_spectrum(x, 4, 5, cos_matrix, sin_matrix)
    pair = xp.stack([spectrum.real, spectrum.imag])
    y = random_cotangent(rng, pair, xp)
    back = code_spectrum_adjoint(y[0], y[1], 9, 9, 5, cos_matrix, sin_matrix)
    assert adjoint_measurement("", pair, x, y, back).error <= EXACT


# --- dtypes, sizes, guard, language ----------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtypes_preserved_and_inputs_unchanged(xp, dtype):
    rng = np.random.default_rng(16)
    shape = (2, 1, 28, 28)
    recon = to_device(rng.uniform(-1, 1, shape).astype(dtype), xp)
    target = to_device(rng.uniform(-1, 1, shape).astype(dtype), xp)
    recon_before, target_before = to_host(recon).copy(), to_host(target).copy()
    loss = STFTCodeLoss()
    value, parts = loss.forward(recon, target, 3)
    grad = loss.backward()
    assert parts == {}
    assert value.dtype == dtype and value.shape == ()
    assert grad.dtype == dtype and grad.shape == shape
    assert np.array_equal(to_host(recon), recon_before) and np.array_equal(to_host(target), target_before)
    if dtype == np.float32:
        expected = stft_code_loss_forward(to_host(recon), to_host(target), 3)
        assert abs(float(value) - expected) <= 1e-5 * expected


def test_size_problem_and_bad_settings(xp):
    loss = STFTCodeLoss()
    assert loss.size_problem(28, 28) is None
    assert loss.size_problem(12, 40) == \
        "the stft_code loss needs images of at least 16x16 pixels (its window), got 12x40"
    x = to_device(np.zeros((1, 1, 12, 40)), xp)
    with pytest.raises(ValueError, match="at least 16x16 pixels"):
        loss.forward(x, x, 1)
    for kwargs in ({"window": 3}, {"window": 6.5}, {"stride": 0}, {"phase_weight": -1.0}, {"eps": float("nan")}):
        with pytest.raises(ValueError):
            STFTCodeLoss(**kwargs)


def test_zero_guard(xp):
    """F_o = 0 everywhere (a zero recon, ε = 0): no NaN or inf, and a zero gradient."""
    rng = np.random.default_rng(17)
    target = rng.uniform(-1, 1, (1, 1, 10, 9))
    loss = STFTCodeLoss(4, 2, eps=0.0)
    value = _value(loss, np.zeros_like(target), target, 1, xp)
    grad = to_host(loss.backward())
    assert math.isfinite(value) and np.all(grad == 0.0)
    assert abs(value - stft_code_loss_forward(np.zeros_like(target), target, 1, 4, 2, eps=0.0)) <= EXACT * value


def test_group_shares_add_up_to_the_batch_value(xp):
    rng = np.random.default_rng(18)
    recon, target = rng.uniform(-1, 1, (4, 1, 28, 28)), rng.uniform(-1, 1, (4, 1, 28, 28))
    loss = STFTCodeLoss()
    whole = _value(loss, recon, target, 4, xp)
    parts = sum(_value(loss, recon[s], target[s], 4, xp) for s in (slice(0, 1), slice(1, 4)))
    assert abs(whole - parts) <= EXACT * whole


def test_in_the_loss_language():
    """Registered as ``stft_code``: its options parse inline, and an objective with it is the weighted sum."""
    assert losses.registry()["stft_code"] is STFTCodeLoss
    objective = losses.make_objective("500*ssim+0.00015*stft_code(window=8,eps=0)",
                                      losses.LossSettings(pl_weights=(1.0,), value_range=(0.0, 1.0)))
    built = objective.losses["stft_code"]
    assert (built.window, built.stride, built.phase_weight, built.eps) == (8, 4, 9.0, 0.0)
    rng = np.random.default_rng(19)
    recon, target = rng.uniform(0, 1, (2, 1, 28, 28)), rng.uniform(0, 1, (2, 1, 28, 28))
    measured = objective.forward(recon, target, 2)
    assert [(t.name, t.weight) for t in objective.terms] == [("ssim", 500.0), ("stft_code", 0.00015)]
    expected = float(STFTCodeLoss(8, 4, eps=0.0).forward(recon, target, 2)[0])
    assert float(measured["stft_code"][0]) == expected
