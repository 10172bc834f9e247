"""The loss protocol, the pl / sfl / l1 losses and objectives (``--loss`` expressions).

The ssim, fft and stft losses have their own test files. Forward values are
checked against the formulas written out with NumPy, backward passes with the
one finite-difference checker shared with ``sflnet gradcheck`` (:mod:`sflnet.gradcheck.engine`).
"""

import numpy as np
import pytest

from sflnet import gradcheck, losses
from sflnet.backend import to_device, to_host
from sflnet.errors import SflnetError
from sflnet.gradcheck.references import losses as reference
from sflnet.losses import L1Loss, LossSettings, PixelLoss, SpatialFrequencyLoss, make_objective, parse

SIGMAS = (0.8, 1.6, 3.2)


def loss_case(loss, recon, target, batch_count):
    """A gradcheck Case: the loss's share as a function of recon (target fixed)."""
    variables = {"recon": recon}

    def evaluate():
        return loss.forward(variables["recon"], target, batch_count)[0]

    def gradients(upstream):
        return {"recon": upstream * loss.backward()}
    return gradcheck.Case(variables, evaluate, gradients, "test")


def dense_error(loss, recon, target, batch_count, xp):
    case = loss_case(loss, recon, target, batch_count)
    upstream = to_device(np.array(np.random.default_rng(7).standard_normal()), xp)
    return gradcheck.dense_check(case, upstream).error


# ---------------------------------------------------------------------------
# pl and sfl (paper Eq. 4 and 6)
# ---------------------------------------------------------------------------

def test_pl_and_sfl_forward_match_the_formulas(xp):
    rng = np.random.default_rng(15)
    recon = rng.uniform(-1, 1, (2, 3, 7, 6))
    target = rng.uniform(-1, 1, (2, 3, 7, 6))
    w_pl, w_sfl = (1.0, 2.0, 0.5), (100.0, 10.0, 10.0)
    batch_count = 5   # this group is part of a 5-image batch
    e_pl, parts = PixelLoss(w_pl).forward(to_device(recon, xp), to_device(target, xp), batch_count)
    assert parts == {}
    ref_pl = reference.pixel_loss_forward(recon, target, batch_count, w_pl)
    assert abs(float(e_pl) - ref_pl) <= 1e-12 * ref_pl

    sfl = SpatialFrequencyLoss(SIGMAS, w_sfl)
    e_sfl, parts = sfl.forward(to_device(recon, xp), to_device(target, xp), batch_count)
    assert list(parts) == ["sfl_0.8", "sfl_1.6", "sfl_3.2"]
    # Eq. 6 literally: filter both images with the (loop) bank, then compare.
    _, ref_unit = reference.sfl_forward(recon, target, batch_count, SIGMAS, w_sfl)
    unit = np.array([float(parts[k]) for k in ("sfl_0.8", "sfl_1.6", "sfl_3.2")])
    assert np.max(np.abs(unit - ref_unit)) <= 1e-12 * np.max(ref_unit)
    assert abs(float(e_sfl) - float(np.dot(w_sfl, ref_unit))) <= 1e-12 * float(np.dot(w_sfl, ref_unit))


@pytest.mark.parametrize("shape", [(1, 3, 5, 4), (2, 3, 6, 7)])
def test_pl_and_sfl_backward_dense_fd(xp, shape):
    rng = np.random.default_rng(25)
    recon = to_device(rng.uniform(-1, 1, shape), xp)
    target = to_device(rng.uniform(-1, 1, shape), xp)
    for loss in (PixelLoss((1.0, 2.0, 0.5)), SpatialFrequencyLoss(SIGMAS, (100.0, 10.0, 10.0))):
        assert dense_error(loss, recon, target, shape[0] + 1, xp) <= 1e-7, type(loss).__name__


# ---------------------------------------------------------------------------
# l1
# ---------------------------------------------------------------------------

def away_from_target(rng, target, margin=0.05):
    """recon with |recon − target| ≥ margin everywhere (no kink of |·| within any eps), both signs."""
    step = rng.uniform(margin, 0.5, target.shape) * rng.choice([-1.0, 1.0], target.shape)
    return target + step


def test_l1_forward_is_the_mean_absolute_error(xp):
    rng = np.random.default_rng(3)
    recon, target = rng.uniform(-1, 1, (2, 3, 5, 7)), rng.uniform(-1, 1, (2, 3, 5, 7))
    value, parts = L1Loss().forward(to_device(recon, xp), to_device(target, xp), 4)
    expected = reference.l1_loss_forward(recon, target, 4)
    assert parts == {} and abs(float(value) - expected) <= 1e-15


@pytest.mark.parametrize("shape", [(2, 3, 5, 6), (1, 3, 7, 4)])
def test_l1_backward_dense_fd_away_from_the_kink(xp, shape):
    rng = np.random.default_rng(4)
    target = rng.uniform(-1, 1, shape)
    recon = away_from_target(rng, target)
    assert dense_error(L1Loss(), to_device(recon, xp), to_device(target, xp), shape[0] + 2, xp) <= 1e-7


def test_l1_subgradient_at_zero_is_zero(xp):
    target = np.linspace(-1, 1, 2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    recon = target.copy()
    recon[0, 0, 0, :] += 0.25        # a few pixels differ, the rest are exact
    loss = L1Loss()
    loss.forward(to_device(recon, xp), to_device(target, xp), 2)
    grad = to_host(loss.backward())
    scale = 1.0 / (2 * 3 * 4 * 5)
    assert np.all(grad[0, 0, 0, :] == scale)
    grad[0, 0, 0, :] = 0
    assert not np.any(grad)


def test_l1_planted_bug_is_caught(xp, monkeypatch):
    """A backward that forgets the 1/C factor must fail the same dense check."""
    rng = np.random.default_rng(5)
    target = rng.uniform(-1, 1, (1, 3, 5, 6))
    recon = away_from_target(rng, target)
    monkeypatch.setattr(L1Loss, "backward", lambda self: self.difference_sign * (
        1.0 / (self.batch_count * self.difference_sign[0, 0].size)))
    assert dense_error(L1Loss(), to_device(recon, xp), to_device(target, xp), 1, xp) > 1e-2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["pl", "sfl", "l1"])
def test_losses_preserve_dtype_and_leave_inputs_alone(xp, dtype, name):
    rng = np.random.default_rng(41)
    recon_host = rng.uniform(-1, 1, (2, 3, 6, 5)).astype(dtype)
    target_host = rng.uniform(-1, 1, (2, 3, 6, 5)).astype(dtype)
    recon, target = to_device(recon_host, xp), to_device(target_host, xp)
    loss = losses.make_loss(name)
    value, parts = loss.forward(recon, target, 2)
    grad = loss.backward()
    assert value.dtype == dtype and grad.dtype == dtype and all(p.dtype == dtype for p in parts.values())
    assert grad.shape == recon.shape
    assert np.array_equal(to_host(recon), recon_host) and np.array_equal(to_host(target), target_host)


# ---------------------------------------------------------------------------
# Expressions
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, terms, canonical", [
    ("pl+sfl", [("pl", 1.0), ("sfl", 1.0)], "pl+sfl"),
    ("pl", [("pl", 1.0)], "pl"),
    ("l1", [("l1", 1.0)], "l1"),
    (" PL + 100 * FFT ", [("pl", 1.0), ("fft", 100.0)], "pl+100*fft"),
    ("500*ssim+0.00015*stft", [("ssim", 500.0), ("stft", 0.00015)], "500*ssim+0.00015*stft"),
    ("1e+2*fft+pl", [("fft", 100.0), ("pl", 1.0)], "100*fft+pl"),
    ("1.5E-3*stft", [("stft", 0.0015)], "0.0015*stft"),
    (".5*l1+0*sfl", [("l1", 0.5), ("sfl", 0.0)], "0.5*l1+0*sfl"),
    ("1*sfl", [("sfl", 1.0)], "1*sfl"),
    ("2*sfl", [("sfl", 2.0)], "2*sfl"),
])
def test_expressions_parse_and_print_canonically(text, terms, canonical):
    parsed = parse(text)
    assert [(t.name, t.weight) for t in parsed] == terms
    assert losses.canonical(text) == canonical
    assert losses.canonical(canonical) == canonical   # the canonical form reads back as itself


@pytest.mark.parametrize("text, named", [
    ("pl+", "(nothing)"),
    ("pl++sfl", "+sfl"),
    ("pl+mse", "'mse'"),
    ("-1*pl", "'-1*pl'"),
    ("100*", "'100*'"),
    ("pl*100", "'pl*100'"),
    ("pl+pl", "appears twice"),
    ("0*pl", "every weight is 0"),
    ("", "empty"),
    ("sfl", "pl+sfl"),
])
def test_bad_expressions_get_one_line_naming_the_part(text, named):
    with pytest.raises(SflnetError) as info:
        parse(text)
    message = str(info.value)
    assert named in message and "\n" not in message


def test_objective_is_the_weighted_sum_of_its_terms(xp):
    """E and ∂E/∂f^L of pl+2.5*l1+0.5*sfl equal the sums of separately built losses."""
    rng = np.random.default_rng(8)
    target = rng.uniform(-1, 1, (2, 3, 6, 7))
    recon = away_from_target(rng, target)
    r, t = to_device(recon, xp), to_device(target, xp)
    objective = make_objective("pl+2.5*l1+0.5*sfl", LossSettings())
    assert objective.measured == ("pl", "sfl", "l1") and objective.extra_terms == ("l1",)
    measured = objective.forward(r, t, 3)
    values = {name: float(v) for name, (v, _) in measured.items()}
    grad = to_host(objective.backward())

    pl, l1, sfl = PixelLoss(), L1Loss(), SpatialFrequencyLoss()
    expected_value = (float(pl.forward(r, t, 3)[0]) + 2.5 * float(l1.forward(r, t, 3)[0])
                      + 0.5 * float(sfl.forward(r, t, 3)[0]))
    expected_grad = to_host(pl.backward()) + 2.5 * to_host(l1.backward()) + 0.5 * to_host(sfl.backward())
    assert abs(objective.combine(values) - expected_value) <= 1e-14 * expected_value
    assert np.max(np.abs(grad - expected_grad)) <= 1e-14 * np.max(np.abs(expected_grad))


def test_a_term_with_weight_zero_is_measured_but_not_backpropagated(xp):
    rng = np.random.default_rng(9)
    r, t = (to_device(rng.uniform(-1, 1, (1, 3, 5, 5)), xp) for _ in range(2))
    objective = make_objective("pl+0*l1")
    objective.forward(r, t, 1)
    only_pl = PixelLoss()
    only_pl.forward(r, t, 1)
    assert np.array_equal(to_host(objective.backward()), to_host(only_pl.backward()))
    assert [t.name for t in objective.trained] == ["pl"]


def test_the_paper_objective_sums_exactly_as_before():
    """pl+sfl is E_PL + E_SFL with no multiplication by 1 (bit-identical to sflnet 0.1's --loss sfl)."""
    objective = make_objective("pl+sfl")
    values = {"pl": 0.1, "sfl": 0.2}
    assert objective.combine(values) == 0.1 + 0.2
    assert make_objective("pl").combine(values) == 0.1
