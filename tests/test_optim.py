"""Momentum SGD (v ← μv − ηg; θ ← θ + v) against values worked out by hand, and train_step."""

import numpy as np
import pytest

from sflnet.backend import to_device, to_host
from sflnet.model import PARAM_NAMES, Autoencoder, init_params
from sflnet.optim import MomentumSGD
from sflnet.train import minibatch_order, train_epoch, train_step


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
