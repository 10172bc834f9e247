"""Whole-network tests: directional finite differences over all parameters with
each loss, grouping and chunking invariance, the "pl" loss measuring but not
backpropagating the SFL, initialisation, dtypes, and CuPy against NumPy."""

import numpy as np
import pytest

from sflnet.backend import to_device, to_host
from sflnet.nn import ReLU
from sflnet.models.cae import PARAM_NAMES, PARAM_SHAPES, Autoencoder, init_params

SIZES = [(9, 7), (8, 8), (13, 10)]


def make_images(sizes, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, (3, h, w)).astype(dtype) for h, w in sizes]


def smooth_params(seed, dtype=np.float64):
    """Weights large enough (std 0.3) and random biases, so ReLU inputs sit far from 0 relative to eps."""
    rng = np.random.default_rng(seed)
    return {n: rng.normal(0, 0.3 if n.startswith("w") else 0.1, PARAM_SHAPES[n]).astype(dtype) for n in PARAM_NAMES}


def relu_masks(model, images):
    """The ReLU masks of every image, one forward per image (a fingerprint of the piecewise-linear region)."""
    masks = []
    for image in images:
        model.forward(image[None])
        masks += [to_host(layer.positive_mask) for layer in model.layers if isinstance(layer, ReLU)]
    return masks


def on(xp, params):
    return {k: to_device(v, xp) for k, v in params.items()}


def shifted(params, direction, step):
    return {k: params[k] + step * direction[k] for k in params}


@pytest.mark.parametrize("loss", ["pl", "pl+sfl"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_whole_network_directional_fd(xp, loss, seed):
    images = [to_device(im, xp) for im in make_images(SIZES, seed)]
    theta = smooth_params(seed)
    rng = np.random.default_rng(100 + seed)
    r = {k: rng.standard_normal(v.shape) for k, v in theta.items()}
    norm = np.sqrt(sum(float((v * v).sum()) for v in r.values()))
    r = {k: v / norm for k, v in r.items()}   # random unit direction over all parameters

    model = Autoencoder(on(xp, theta), loss=loss)
    result = model.loss_and_grads(images)
    analytic = sum(float(to_host(result.grads[k] * to_device(r[k], xp)).sum()) for k in PARAM_NAMES)

    errors = []
    for eps in (1e-4, 1e-5, 1e-6):
        plus = Autoencoder(on(xp, shifted(theta, r, eps)), loss=loss)
        minus = Autoencoder(on(xp, shifted(theta, r, -eps)), loss=loss)
        # Same ReLU region on both sides, so the difference does not straddle a kink.
        for a, b, c in zip(relu_masks(plus, images), relu_masks(minus, images), relu_masks(model, images)):
            assert np.array_equal(a, b) and np.array_equal(a, c)
        numeric = (plus.loss_and_grads(images, False).E - minus.loss_and_grads(images, False).E) / (2 * eps)
        errors.append(abs(numeric - analytic) / max(abs(numeric) + abs(analytic), 1e-8))
    assert min(errors) <= 1e-6


def test_pl_loss_measures_but_does_not_backpropagate_the_sfl(xp):
    images = [to_device(im, xp) for im in make_images(SIZES, 3)]
    theta = smooth_params(3)
    pl = Autoencoder(on(xp, theta), loss="pl").loss_and_grads(images)
    sfl = Autoencoder(on(xp, theta), loss="pl+sfl").loss_and_grads(images)
    # Same forward, so the same measurements.
    assert pl.E_PL == sfl.E_PL and pl.E_SFL == sfl.E_SFL and np.array_equal(pl.sfl, sfl.sfl)
    assert pl.E == pl.E_PL
    assert sfl.E == pytest.approx(sfl.E_PL + sfl.E_SFL, rel=1e-15)
    assert sfl.E_SFL == pytest.approx(float(np.dot((100, 10, 10), sfl.sfl)), rel=1e-12)
    # The "pl" gradient is the "sfl" gradient of a model whose SFL weights are zero.
    zero = Autoencoder(on(xp, theta), loss="pl+sfl", sfl_weights=(0, 0, 0)).loss_and_grads(images)
    for k in PARAM_NAMES:
        assert np.allclose(to_host(pl.grads[k]), to_host(zero.grads[k]), rtol=0, atol=1e-15)
    assert not np.allclose(to_host(pl.grads["w5"]), to_host(sfl.grads["w5"]))


def max_rel(a, b):
    a, b = to_host(a), to_host(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def test_gradient_is_the_same_whatever_the_grouping(xp):
    images = [to_device(im, xp) for im in make_images([(9, 7), (8, 8), (9, 7)], 4)]
    theta = smooth_params(4)
    model = Autoencoder(on(xp, theta), loss="pl+sfl")
    as_list = model.loss_and_grads(images)
    grouped = model.loss_and_grads([xp.stack([images[0], images[2]]), images[1][None]])
    singles = [model.loss_and_grads([im]) for im in images]
    per_image_mean = {k: sum(s.grads[k] for s in singles) / 3 for k in PARAM_NAMES}
    for k in PARAM_NAMES:
        assert max_rel(grouped.grads[k], as_list.grads[k]) <= 1e-12
        assert max_rel(per_image_mean[k], as_list.grads[k]) <= 1e-12
    assert grouped.E == pytest.approx(as_list.E, rel=1e-12)
    assert np.mean([s.E for s in singles]) == pytest.approx(as_list.E, rel=1e-12)


def test_chunking_gives_the_one_pass_gradient(xp):
    images = [to_device(im, xp) for im in make_images([(9, 7)] * 4 + [(8, 8)], 5)]
    theta = smooth_params(5)
    one_pass = Autoencoder(on(xp, theta), max_chunk_pixels=10 ** 9).loss_and_grads(images)
    chunked = Autoencoder(on(xp, theta), max_chunk_pixels=1).loss_and_grads(images)
    for k in PARAM_NAMES:
        assert max_rel(chunked.grads[k], one_pass.grads[k]) <= 1e-12
    assert chunked.E == pytest.approx(one_pass.E, rel=1e-12)


def test_init_params_follow_the_paper():
    params = init_params(seed=7)
    assert set(params) == set(PARAM_NAMES)
    for name, p in params.items():
        assert p.shape == PARAM_SHAPES[name] and p.dtype == np.float32
        if name.startswith("b"):
            assert not p.any()
    all_w = np.concatenate([params[n].ravel() for n in ("w2", "w3", "w4", "w5")]).astype(np.float64)
    # 9,771 draws of N(0, 0.02²): the sample std is within a few % of 0.02, the mean near 0.
    assert abs(all_w.std() - 0.02) < 0.001 and abs(all_w.mean()) < 0.001
    again = init_params(seed=7, dtype=np.float64)
    assert all(np.allclose(again[n], params[n], atol=1e-8) for n in PARAM_NAMES)
    assert not np.array_equal(init_params(seed=8)["w2"], params["w2"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_follows_the_input_and_inputs_are_untouched(xp, dtype):
    host_images = make_images(SIZES, 6, dtype)
    images = [to_device(im, xp) for im in host_images]
    model = Autoencoder(init_params(0, dtype=dtype, xp=xp))
    result = model.loss_and_grads(images)
    assert all(result.grads[k].dtype == dtype for k in PARAM_NAMES)
    assert all(np.array_equal(to_host(a), b) for a, b in zip(images, host_images))
    recon = model.reconstruct(images)
    assert [r.shape for r in recon] == [im.shape for im in images]
    assert all(r.dtype == dtype for r in recon)
    assert all(float(abs(r).max()) <= 1 for r in recon)   # tanh output


def test_reconstruct_matches_the_forward_of_each_image_in_order():
    images = make_images([(9, 7), (8, 8), (9, 7)], 8)
    model = Autoencoder(smooth_params(8))
    recon = model.reconstruct(images)
    for image, out in zip(images, recon):
        assert np.allclose(out, model.forward(image[None])[0], rtol=0, atol=1e-13)


def test_dtype_mismatch_is_an_error():
    model = Autoencoder(init_params(0, dtype=np.float32))
    with pytest.raises(ValueError, match="float64"):
        model.loss_and_grads(make_images([(8, 8)], 0, np.float64))


def test_tiny_images_work():
    # 1×1 and 2×2 images go through every layer (stride 2 gives 1×1, the upsampling crops back).
    model = Autoencoder(smooth_params(9))
    result = model.loss_and_grads(make_images([(1, 1), (2, 2), (1, 3)], 9))
    assert np.isfinite(result.E) and all(np.isfinite(result.grads[k]).all() for k in PARAM_NAMES)


def test_cupy_float32_matches_numpy_float32(cupy_module):
    images = make_images(SIZES, 10, np.float32)
    params = init_params(0, dtype=np.float32)
    cpu = Autoencoder(params, loss="pl+sfl").loss_and_grads(images)
    gpu = Autoencoder(on(cupy_module, params), loss="pl+sfl").loss_and_grads(
        [cupy_module.asarray(im) for im in images])
    assert np.allclose(gpu.E, cpu.E, atol=5e-4, rtol=5e-3)
    assert np.allclose(gpu.sfl, cpu.sfl, atol=5e-4, rtol=5e-3)
    for k in PARAM_NAMES:
        assert np.allclose(to_host(gpu.grads[k]), cpu.grads[k], atol=5e-4, rtol=5e-3), k


@pytest.mark.parametrize("loss", ["pl", "pl+sfl"])
def test_fused_layer4_equals_upsample_then_conv(xp, loss):
    """The default model (layer 4 as one UpsampleConv2D) and the reference layout (Upsample2x then
    Conv2D) give the same losses and gradients: float64 to rounding, float32 within its rounding."""
    for dtype, bound in ((np.float64, 1e-12), (np.float32, 1e-5)):
        images = [to_device(im, xp) for im in make_images(SIZES + [(5, 4), (30, 17)], seed=7, dtype=dtype)]
        theta = {k: v.astype(dtype) for k, v in smooth_params(7).items()}
        fused = Autoencoder(on(xp, theta), loss=loss).loss_and_grads(images)
        plain = Autoencoder(on(xp, theta), loss=loss, fuse_upsample=False).loss_and_grads(images)
        assert abs(fused.E - plain.E) <= bound * abs(plain.E)
        for name in PARAM_NAMES:
            a, b = to_host(fused.grads[name]), to_host(plain.grads[name])
            assert np.max(np.abs(a - b)) <= bound * np.max(np.abs(b)), (dtype, name)
