"""Momentum SGD (v ← μv − ηg; θ ← θ + v) against values worked out by hand, and train_step;
Adam against Algorithm 1 of Kingma & Ba; the triangular2 cyclical learning rate by hand."""

import math

import numpy as np
import pytest

from sflnet.backend import to_device, to_host
from sflnet.models.cae import PARAM_NAMES, Autoencoder, init_params
from sflnet.optim import Adam, MomentumSGD, triangular2_lr
from sflnet.training.step import minibatch_order, train_epoch, train_step


def test_two_momentum_steps_by_hand(xp):
    theta = {"w": to_device(np.array([1.0, -2.0]), xp)}
    g1 = {"w": to_device(np.array([0.5, 0.25]), xp)}
    g2 = {"w": to_device(np.array([-1.0, 2.0]), xp)}
    opt = MomentumSGD(lr=0.1, momentum=0.5)
    opt.step(theta, g1)
    # v1 = −0.1·[0.5, 0.25] = [−0.05, −0.025];  θ1 = [0.95, −2.025]
    assert np.allclose(to_host(opt.velocity["w"]), [-0.05, -0.025], rtol=0, atol=1e-15)
    assert np.allclose(to_host(theta["w"]), [0.95, -2.025], rtol=0, atol=1e-15)
    opt.step(theta, g2)
    # v2 = 0.5·v1 − 0.1·[−1, 2] = [−0.025 + 0.1, −0.0125 − 0.2] = [0.075, −0.2125];  θ2 = [1.025, −2.2375]
    assert np.allclose(to_host(opt.velocity["w"]), [0.075, -0.2125], rtol=0, atol=1e-15)
    assert np.allclose(to_host(theta["w"]), [1.025, -2.2375], rtol=0, atol=1e-15)
    # The gradients are not touched.
    assert np.array_equal(to_host(g1["w"]), [0.5, 0.25]) and np.array_equal(to_host(g2["w"]), [-1.0, 2.0])


@pytest.mark.parametrize("lr,momentum", [(0, 0.5), (-1, 0.5), (0.1, 1.0), (0.1, -0.1)])
def test_bad_hyperparameters_are_rejected(lr, momentum):
    with pytest.raises(ValueError):
        MomentumSGD(lr, momentum)


def test_state_dict_round_trip():
    opt = MomentumSGD(0.1, 0.5)
    theta = {"w": np.array([1.0])}
    opt.step(theta, {"w": np.array([2.0])})
    clone = MomentumSGD(1.0, 0.0)
    clone.load_state_dict(opt.state_dict())
    assert clone.lr == 0.1 and clone.momentum == 0.5
    assert np.array_equal(clone.velocity["w"], [-0.2]) and clone.velocity["w"] is not opt.velocity["w"]


def test_train_step_reports_losses_before_the_update_and_applies_it():
    rng = np.random.default_rng(0)
    images = [rng.uniform(-1, 1, (3, 9, 7)), rng.uniform(-1, 1, (3, 8, 8))]
    model = Autoencoder(init_params(0, std=0.2, dtype=np.float64))
    before = {k: v.copy() for k, v in model.params.items()}
    expected = Autoencoder({k: v.copy() for k, v in before.items()}).loss_and_grads(images)
    result = train_step(model, MomentumSGD(0.02, 0.5), images)
    assert result.E == expected.E
    for k in PARAM_NAMES:   # first step: θ1 = θ0 − η g0
        assert np.allclose(model.params[k], before[k] - 0.02 * expected.grads[k], rtol=0, atol=1e-15)
    after = model.loss_and_grads(images, compute_grads=False)
    assert after.E < result.E   # a small step along −g lowers the loss


def test_minibatch_order():
    rng = np.random.default_rng(0)
    assert minibatch_order(5, 0, rng) == [[0, 1, 2, 3, 4]]
    batches = minibatch_order(5, 2, rng)
    assert [len(b) for b in batches] == [2, 2, 1]
    assert sorted(i for b in batches for i in b) == [0, 1, 2, 3, 4]


def test_train_epoch_minibatches_take_one_step_per_batch():
    rng = np.random.default_rng(1)
    images = [rng.uniform(-1, 1, (3, 6, 5)) for _ in range(5)]
    model = Autoencoder(init_params(0, dtype=np.float64))
    results = train_epoch(model, MomentumSGD(), images, batch_size=2, rng=np.random.default_rng(0))
    assert len(results) == 3


# ---------------------------------------------------------------------------
# triangular2 cyclical learning rate (Smith 2017)
# ---------------------------------------------------------------------------
# With lr_min = 0.25, lr_max = 1.25 (difference 1, all values exact in binary)
# and S = 4, from cycle = floor(1 + t/8), x = |t/4 − 2·cycle + 1|:
#   t = 0:  cycle 1, x = |0 − 1|  = 1   → 0.25
#   t = 1:  cycle 1, x = |¼ − 1| = ¾   → 0.25 + ¼       = 0.5
#   t = 2:  cycle 1, x = |½ − 1| = ½   → 0.25 + ½       = 0.75   (S/2, midpoint)
#   t = 4:  cycle 1, x = |1 − 1|  = 0   → 0.25 + 1       = 1.25   (S, lr_max)
#   t = 6:  cycle 1, x = |1.5 − 1| = ½  → 0.75
#   t = 8:  cycle 2, x = |2 − 3|  = 1   → 0.25                    (2S, lr_min)
#   t = 12: cycle 2, x = |3 − 3|  = 0   → 0.25 + 1/2     = 0.75   (3S)
#   t = 16: cycle 3, x = |4 − 5|  = 1   → 0.25                    (4S)
#   t = 20: cycle 3, x = |5 − 5|  = 0   → 0.25 + 1/4     = 0.5    (5S)
#   t = 28: cycle 4, x = |7 − 7|  = 0   → 0.25 + 1/8     = 0.375  (7S)


@pytest.mark.parametrize(
    "step,expected",
    [(0, 0.25), (1, 0.5), (2, 0.75), (4, 1.25), (6, 0.75), (8, 0.25), (12, 0.75),
     (16, 0.25), (20, 0.5), (28, 0.375)],
)
def test_triangular2_values_by_hand(step, expected):
    lr = triangular2_lr(step, 0.25, 1.25, 4)
    assert type(lr) is float
    assert lr == expected


def test_triangular2_with_the_paper_settings():
    # lr_min 1e-4, lr_max 1e-3, S = 2000 (seed paper): peaks 1e-3, then 1e-4 + 9e-4/2, then + 9e-4/4.
    f = lambda t: triangular2_lr(t, 1e-4, 1e-3, 2000)  # noqa: E731
    assert f(0) == pytest.approx(1e-4, rel=1e-12)
    assert f(1000) == pytest.approx(5.5e-4, rel=1e-12)
    assert f(2000) == pytest.approx(1e-3, rel=1e-12)
    assert f(4000) == pytest.approx(1e-4, rel=1e-12)
    assert f(6000) == pytest.approx(1e-4 + 4.5e-4, rel=1e-12)
    assert f(10000) == pytest.approx(1e-4 + 2.25e-4, rel=1e-12)
    assert f(np.int64(2000)) == pytest.approx(1e-3, rel=1e-12)


def test_triangular2_rises_then_falls_inside_each_cycle():
    S = 10
    for cycle in range(3):
        start = 2 * S * cycle
        rising = [triangular2_lr(start + i, 0.1, 1.0, S) for i in range(S + 1)]
        falling = [triangular2_lr(start + S + i, 0.1, 1.0, S) for i in range(S + 1)]
        assert all(a < b for a, b in zip(rising, rising[1:]))
        assert all(a > b for a, b in zip(falling, falling[1:]))
        assert rising[0] == pytest.approx(0.1) and falling[-1] == pytest.approx(0.1)
        assert rising[-1] == pytest.approx(0.1 + 0.9 / 2**cycle)


def test_triangular2_with_equal_bounds_is_constant():
    assert {triangular2_lr(t, 0.3, 0.3, 3) for t in range(20)} == {0.3}


def test_triangular2_far_out_decays_to_lr_min_without_overflow():
    assert triangular2_lr(10**7, 1e-4, 1e-3, 1) == 1e-4


@pytest.mark.parametrize(
    "step,lr_min,lr_max,step_size",
    [(-1, 0.1, 1.0, 4), (1.5, 0.1, 1.0, 4), (True, 0.1, 1.0, 4), (0, 0.1, 1.0, 0),
     (0, 0.1, 1.0, 2.0), (0, 0.0, 1.0, 4), (0, -0.1, 1.0, 4), (0, 1.0, 0.5, 4)],
)
def test_triangular2_rejects_bad_arguments(step, lr_min, lr_max, step_size):
    with pytest.raises(ValueError):
        triangular2_lr(step, lr_min, lr_max, step_size)


# ---------------------------------------------------------------------------
# Adam (Kingma & Ba 2015, Algorithm 1)
# ---------------------------------------------------------------------------


# On NumPy, to_device returns the very same array, so the tests hand the
# optimiser copies and keep their own originals to compare with.


def test_adam_first_step_moves_by_lr_times_sign(xp):
    # Step 1: m = (1 − β1) g, so m̂ = m / (1 − β1) = g; v = (1 − β2) g², so v̂ = g².
    # Hence θ1 = θ0 − η g / (|g| + ε) ≈ θ0 − η sign(g), whatever the size of g.
    g = np.array([[3.0, -0.02], [1e-3, -50.0]])
    theta0 = np.array([[0.5, -1.0], [2.0, 0.0]])
    params = {"w": to_device(theta0.copy(), xp)}
    opt = Adam(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-7)
    opt.step(params, {"w": to_device(g, xp)})
    expected = theta0 - 0.01 * g / (np.abs(g) + 1e-7)
    np.testing.assert_allclose(to_host(params["w"]), expected, rtol=1e-13, atol=0)
    np.testing.assert_allclose(to_host(params["w"]), theta0 - 0.01 * np.sign(g), rtol=0, atol=1e-6)
    assert opt.step_count == 1


def test_adam_zero_gradient_leaves_parameters_unchanged(xp):
    # m = v = 0, so m̂ / (√v̂ + ε) = 0 / ε = 0.
    theta0 = np.array([1.5, -2.0, 0.0])
    params = {"w": to_device(theta0.copy(), xp)}
    opt = Adam(lr=0.1)
    for _ in range(3):
        opt.step(params, {"w": to_device(np.zeros(3), xp)})
    assert np.array_equal(to_host(params["w"]), theta0)


def adam_reference(theta0, gradients, lrs, beta1, beta2, eps):
    """Algorithm 1, one Python float at a time (float64), with a per-step learning rate."""
    theta = [float(x) for x in theta0.ravel()]
    m = [0.0] * len(theta)
    v = [0.0] * len(theta)
    for t, (g_array, lr) in enumerate(zip(gradients, lrs), start=1):
        g_list = [float(x) for x in g_array.ravel()]
        for i, g in enumerate(g_list):
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            m_hat = m[i] / (1 - beta1**t)
            v_hat = v[i] / (1 - beta2**t)
            theta[i] = theta[i] - lr * m_hat / (math.sqrt(v_hat) + eps)
    return np.array(theta).reshape(theta0.shape)


def test_adam_matches_a_scalar_loop_over_several_steps(xp):
    rng = np.random.default_rng(3)
    theta0 = {"a": rng.normal(size=(2, 3)), "b": rng.normal(size=(4,))}
    grads = [{k: rng.normal(size=v.shape) * 10.0 ** rng.integers(-3, 2) for k, v in theta0.items()}
             for _ in range(7)]
    lrs = [triangular2_lr(t, 1e-3, 1e-2, 2) for t in range(7)]   # the runner changes lr every step
    params = {k: to_device(v.copy(), xp) for k, v in theta0.items()}
    opt = Adam(lr=1.0, beta1=0.8, beta2=0.99, eps=1e-6)
    for g, lr in zip(grads, lrs):
        opt.lr = lr
        opt.step(params, {k: to_device(a, xp) for k, a in g.items()})
    for k in theta0:
        expected = adam_reference(theta0[k], [g[k] for g in grads], lrs, 0.8, 0.99, 1e-6)
        np.testing.assert_allclose(to_host(params[k]), expected, rtol=1e-12, atol=1e-14)
    assert opt.step_count == 7


def test_adam_keeps_float32_and_never_touches_the_gradients(xp):
    rng = np.random.default_rng(0)
    params = {"w": to_device(rng.normal(size=(3, 4)).astype(np.float32), xp)}
    g_host = rng.normal(size=(3, 4)).astype(np.float32)
    grads = {"w": to_device(g_host.copy(), xp)}
    opt = Adam(lr=1e-3)
    for _ in range(4):
        opt.step(params, grads)
    assert params["w"].dtype == np.float32
    assert opt.m["w"].dtype == np.float32 and opt.v["w"].dtype == np.float32
    assert np.array_equal(to_host(grads["w"]), g_host)


def test_adam_updates_the_parameter_arrays_in_place():
    theta = np.array([1.0, 2.0])
    params = {"w": theta}
    Adam(lr=0.1).step(params, {"w": np.array([1.0, -1.0])})
    assert params["w"] is theta
    np.testing.assert_allclose(theta, [0.9, 2.1], rtol=0, atol=1e-6)


def test_adam_state_dict_round_trip_continues_bit_for_bit(xp):
    rng = np.random.default_rng(7)
    theta0 = rng.normal(size=(5,)).astype(np.float32)
    grads = [rng.normal(size=(5,)).astype(np.float32) for _ in range(5)]

    straight = {"w": to_device(theta0.copy(), xp)}
    opt = Adam(lr=3e-3, beta1=0.85, beta2=0.995, eps=1e-7)
    for g in grads:
        opt.step(straight, {"w": to_device(g, xp)})

    resumed = {"w": to_device(theta0.copy(), xp)}
    first = Adam(lr=3e-3, beta1=0.85, beta2=0.995, eps=1e-7)
    for g in grads[:3]:
        first.step(resumed, {"w": to_device(g, xp)})
    state = first.state_dict()
    assert state["step_count"] == 3 and set(state) == {"lr", "beta1", "beta2", "eps", "step_count", "m", "v"}
    second = Adam()
    second.load_state_dict(state)
    assert (second.lr, second.beta1, second.beta2, second.eps) == (3e-3, 0.85, 0.995, 1e-7)
    assert second.m["w"] is not state["m"]["w"] and second.m["w"] is not first.m["w"]
    for g in grads[3:]:
        second.step(resumed, {"w": to_device(g, xp)})
    assert second.step_count == 5
    assert np.array_equal(to_host(resumed["w"]), to_host(straight["w"]))
    assert np.array_equal(to_host(second.m["w"]), to_host(opt.m["w"]))
    assert np.array_equal(to_host(second.v["w"]), to_host(opt.v["w"]))


@pytest.mark.parametrize(
    "kwargs",
    [{"lr": 0}, {"lr": -1e-3}, {"beta1": 1.0}, {"beta1": -0.1}, {"beta2": 1.0}, {"beta2": -0.5},
     {"eps": 0}, {"eps": -1e-8}],
)
def test_adam_rejects_bad_hyperparameters(kwargs):
    with pytest.raises(ValueError):
        Adam(**kwargs)


def test_adam_defaults():
    opt = Adam()
    assert (opt.lr, opt.beta1, opt.beta2, opt.eps, opt.step_count) == (1e-3, 0.9, 0.999, 1e-7, 0)
    assert opt.m == {} and opt.v == {}
