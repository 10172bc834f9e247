"""``sflnet evaluate`` in one pass, with the metrics computed many images at a time: the same numbers.

Two changes made the evaluation of 10,000 MNIST digits about twice as fast, and neither may change
a printed digit:

* :func:`sflnet.metrics.psnr_ssim_values` computes the pairs of one shape together
  (:func:`sflnet.metrics.psnr_ssim_batch`) instead of one :func:`psnr` and :func:`ssim` call per
  image; each image's value must be bit for bit the per-image function's, whatever the blocks;
* :func:`sflnet.training.evaluation.evaluate_model` scores the reconstructions the losses' pass makes
  (:class:`ChunkMetrics`) instead of a second forward pass through ``model.reconstruct``; the report
  must equal, bit for bit, the one computed the old way (:func:`two_pass_report`: the losses, then
  ``reconstruct`` and the per-image functions), for the CAE and the VAE (z = μ, and z = μ + σε).

No timing is asserted (the machines these run on are shared). The comparisons use ``float.hex``,
so that nan and the sign of zero count too.
"""

import copy
import json

import numpy as np
import pytest
from PIL import Image

from sflnet import metrics
from sflnet.backend import to_device, to_host
from sflnet.io.checkpoint import load_checkpoint
from sflnet.losses import sigma_label
from sflnet.models.cae import Autoencoder
from sflnet.models.cae import init_params as cae_params
from sflnet.models.vae import VAE
from sflnet.models.vae import init_params as vae_params
from sflnet.training import evaluation
from sflnet.training.evaluation import checkpoint_options, evaluate_model, model_from_checkpoint
from tests.test_cli import run_cli


def bits(values):
    """A list of floats as exact text (nan, inf and -0.0 included)."""
    return [float(v).hex() for v in values]


def report_bits(report):
    """Every number of an evaluate report as exact text, keyed as the report is."""
    flat = {}
    for key, value in report.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": float(v).hex() for k, v in value.items()})
        elif isinstance(value, float):
            flat[key] = value.hex()
        else:
            flat[key] = value
    return flat


# ---------------------------------------------------------------------------
# The metrics, many images at a time
# ---------------------------------------------------------------------------

def per_image(originals, reconstructions, data_range, data_min):
    """The reference: one psnr() and one ssim() call per pair, as sflnet always computed them."""
    return ([metrics.psnr(o, r, data_range) for o, r in zip(originals, reconstructions)],
            [metrics.ssim(o, r, data_range, data_min=data_min) for o, r in zip(originals, reconstructions)])


def pairs(shapes, dtype, seed, identical=()):
    """Random image pairs: originals in [low, high], reconstructions near them (some far, some equal)."""
    rng = np.random.default_rng(seed)
    originals, recons = [], []
    for k, shape in enumerate(shapes):
        x = rng.uniform(-1.0, 1.0, size=shape).astype(dtype)
        y = x if k in identical else (x + rng.normal(0.0, 0.05 * (1 + k % 5), size=shape)).astype(dtype)
        originals.append(x)
        recons.append(y.copy())
    return originals, recons


MIXED = [(1, 28, 28)] * 7 + [(3, 17, 23), (3, 24, 20), (1, 28, 28), (3, 17, 23), (3, 9, 14), (3, 10, 30),
                             (3, 11, 11), (1, 28, 28), (3, 24, 20), (3, 9, 14)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("block_values", [1, 784 * 3 + 5, 1 << 18])
def test_batched_metrics_equal_the_per_image_functions_bit_for_bit(monkeypatch, dtype, block_values):
    monkeypatch.setattr(metrics, "BLOCK_VALUES", block_values)
    originals, recons = pairs(MIXED, dtype, seed=1, identical=(3, 12))
    for data_range, data_min in ((2.0, -1.0), (1.0, 0.0)):
        want = per_image(originals, recons, data_range, data_min)
        got = metrics.psnr_ssim_values(originals, recons, data_range, data_min=data_min)
        assert bits(got[0]) == bits(want[0]) and bits(got[1]) == bits(want[1])
        assert float("inf") in got[0] and any(v != v for v in got[1])     # identical pairs, images < 11 px
        assert bits(metrics.mean_psnr_ssim(originals, recons, data_range, data_min=data_min)) == bits(
            (np.mean(want[0]), np.mean(want[1])))
        finite = [i for i, v in enumerate(want[1]) if v == v]       # and a mean that is a number
        assert bits(metrics.mean_psnr_ssim([originals[i] for i in finite], [recons[i] for i in finite], data_range,
                                           data_min=data_min)) == bits((np.mean([want[0][i] for i in finite]),
                                                                        np.mean([want[1][i] for i in finite])))


@pytest.mark.parametrize("shape", [(3, 300, 300), (3, 200, 300), (1, 28, 28), (3, 11, 64)])
def test_a_stack_gives_each_image_its_own_numbers(shape, monkeypatch):
    """Large images (one per block, and several per block) and digits, through psnr_ssim_batch directly."""
    count = 3 if shape[1] >= 200 else 40
    originals, recons = pairs([shape] * count, np.float32, seed=7)
    want = per_image(originals, recons, 1.0, 0.0)
    for block_values in (1, 2 * int(np.prod(shape)), 1 << 22):
        monkeypatch.setattr(metrics, "BLOCK_VALUES", block_values)
        got = metrics.psnr_ssim_batch(np.stack(originals), np.stack(recons), 1.0, data_min=0.0)
        assert bits(got[0]) == bits(want[0]) and bits(got[1]) == bits(want[1])


def test_batched_metrics_read_their_inputs_only_and_check_shapes():
    originals, recons = pairs([(3, 16, 16)] * 3, np.float64, seed=2)
    before = [a.copy() for a in originals + recons]
    metrics.psnr_ssim_values(originals, recons)
    assert all(np.array_equal(a, b) for a, b in zip(originals + recons, before))
    with pytest.raises(ValueError, match="same shape"):
        metrics.psnr_ssim_values(originals, [r[:, :8] for r in recons])
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        metrics.psnr_ssim_values([o[0] for o in originals], [r[0] for r in recons])
    with pytest.raises(ValueError, match="as many"):
        metrics.psnr_ssim_values(originals, recons[:2])


# ---------------------------------------------------------------------------
# evaluate_model in one pass against the old two passes
# ---------------------------------------------------------------------------

def two_pass_report(model, images, compute_grads=False):
    """The report as evaluate_model made it before: the losses' pass, then ``model.reconstruct`` (with a
    copy of ``model.noise`` replaying ε) and one psnr()/ssim() call per image."""
    low, high = model.loss_settings.value_range
    noise = getattr(model, "noise", None)
    replay = None if noise is None else copy.deepcopy(noise)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        result = model.loss_and_grads(images, compute_grads=compute_grads)
        recons = model.reconstruct(images) if replay is None else model.reconstruct(images, noise=replay)
        psnr, ssim = per_image([to_host(x) for x in images], [to_host(r) for r in recons], high - low, low)
    report = {"loss": model.loss, "E": result.E, "E_PL": result.E_PL, "E_SFL": result.E_SFL,
              "sfl": {sigma_label(s): float(v) for s, v in zip(model.sigmas, result.sfl)},
              "terms": dict(result.terms), "psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim)),
              "images": len(images)}
    grads = {n: to_host(g).tobytes() for n, g in result.grads.items()} if compute_grads else None
    return report, grads


def digits(count, seed):
    rng = np.random.default_rng(seed)
    return [(rng.random((1, 28, 28)) > 0.6).astype(np.float32) for _ in range(count)]


def vae_model(output="linear", padding="tf-same", xp=np):
    """The authors' network (linear output, TensorFlow padding), chunks of 16 digits."""
    return VAE(vae_params(seed=4, xp=xp), loss="500*ssim+0.00015*stft", output=output, tconv_padding=padding,
               max_chunk_images=16)


@pytest.mark.parametrize("output, padding", [("linear", "tf-same"), ("sigmoid", "symmetric")])
@pytest.mark.parametrize("seed", [None, 5])
def test_vae_evaluation_in_one_pass_equals_two_passes(output, padding, seed, monkeypatch, xp):
    """NumPy, and CuPy (on a GPU, else the strict double: the metrics take each chunk to the host)."""
    images = [to_device(x, xp) for x in digits(41, seed=0)]           # 3 chunks of 16 and one of 9
    model = vae_model(output, padding, xp)
    model.noise = None if seed is None else np.random.default_rng(seed)
    want, _ = two_pass_report(model, images)
    model.noise = None if seed is None else np.random.default_rng(seed)
    monkeypatch.setattr(VAE, "reconstruct", lambda *args, **kwargs: pytest.fail("a second pass was made"))
    got, _ = evaluate_model(model, images)
    assert report_bits(got) == report_bits(want)
    assert got["images"] == 41 and np.isfinite(got["psnr"]) and np.isfinite(got["ssim"])


SHAPES = [(3, 20, 24), (3, 24, 20), (3, 20, 24), (3, 16, 24), (3, 24, 20), (3, 20, 24), (3, 8, 10)]


def cae_images(dtype):
    rng = np.random.default_rng(3)
    return [rng.uniform(-1.0, 1.0, size=shape).astype(dtype) for shape in SHAPES]


@pytest.mark.parametrize("dtype, loss, small", [(np.float32, "pl+sfl", True), (np.float64, "pl+sfl+ssim", False),
                                                (np.float32, "pl+sfl+ssim", False)])
def test_cae_evaluation_in_one_pass_equals_two_passes(dtype, loss, small, monkeypatch):
    """Chunks of two images, by shape in order of first appearance (not the images' order), the gradient,
    and (``small``) an 8x10 image, which has no SSIM (the mean is nan, as before)."""
    images = cae_images(dtype) if small else cae_images(dtype)[:-1]
    model = Autoencoder(cae_params(seed=3, dtype=dtype), loss=loss, max_chunk_pixels=2 * 24 * 20)
    want, want_grads = two_pass_report(model, images, compute_grads=True)
    monkeypatch.setattr(Autoencoder, "reconstruct", lambda *args, **kwargs: pytest.fail("a second pass was made"))
    got, got_grads = evaluate_model(model, images, compute_grads=True)
    assert report_bits(got) == report_bits(want)
    assert {n: g.tobytes() for n, g in got_grads.items()} == want_grads
    assert (got["ssim"] != got["ssim"]) == small


def test_chunks_that_do_not_match_the_images_fall_back_to_a_second_pass():
    """A model whose plan does not describe its chunks: the targets do not match, so the reconstructions
    are made again (the numbers stay right)."""
    images = cae_images(np.float64)
    model = Autoencoder(cae_params(seed=3, dtype=np.float64), loss="pl+sfl", max_chunk_pixels=2 * 24 * 20)
    want, _ = two_pass_report(model, images)
    planned = model.chunk_plan

    def wrong_plan(shapes):
        return list(reversed(planned(shapes)))

    model.chunk_plan = wrong_plan
    tally = []
    model_reconstruct = model.reconstruct
    model.reconstruct = lambda *args, **kwargs: tally.append(1) or model_reconstruct(*args, **kwargs)
    got, _ = evaluate_model(model, images)
    assert tally == [1] and report_bits(got) == report_bits(want)


def test_chunk_metrics_refuses_more_chunks_than_images():
    tap = evaluation.ChunkMetrics(3, 1.0, 0.0)
    x = np.zeros((2, 1, 12, 12))
    tap.add(x, x)
    assert not tap.complete                  # one image has no values yet
    tap.add(x, x)                            # 4 images for 3 places
    assert not tap.complete and tap.psnr[:2] == [float("inf")] * 2


# ---------------------------------------------------------------------------
# The command: sflnet evaluate --json against values computed the old way
# ---------------------------------------------------------------------------

def _evaluate_json(args):
    result = run_cli(["evaluate", *args, "--json", "--device", "cpu"])
    assert result.code == 0, result.output
    return json.loads(result.stdout)


def _json_bits(report):
    """A --json report (psnr of identical images would be null) as exact text."""
    return report_bits({k: (float("inf") if v is None and k == "psnr" else v) for k, v in report.items()})


def test_evaluate_json_of_a_vae_run_equals_the_two_pass_values(tmp_path):
    out = tmp_path / "run"
    done = run_cli(["train", "--model", "vae", "--train-images", "20", "--batch-size", "8", "--epochs", "1",
                    "--output", "linear", "--tconv-padding", "tf-same", "--snapshot-every", "0", "--out", out,
                    "--device", "cpu"])
    assert done.code == 0, done.output
    path = out / "checkpoint.npz"
    ckpt = load_checkpoint(path)
    for args, seed in (([], None), (["--sample-latent", "--seed", "3", "--split", "test"], 3)):
        request = {"data": None, "include": (), "exclude": (), "size": None, "skip_bad": False, "split": None,
                   "sample_latent": seed is not None, "warn": None}
        test_split = ckpt.spec.evaluation_data(checkpoint_options(ckpt), request)[0]()
        model = model_from_checkpoint(ckpt, np)
        model.noise = None if seed is None else np.random.default_rng(seed)
        want, _ = two_pass_report(model, list(test_split.images))
        got = _evaluate_json([path, *args])
        assert got["images"] == 1000
        assert _json_bits(got) == report_bits(want)


def test_evaluate_json_of_a_cae_run_equals_the_two_pass_values(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(8)
    for i, (h, w) in enumerate([(14, 18), (18, 14), (14, 18), (12, 12)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    out = tmp_path / "run"
    done = run_cli(["train", "--data", folder, "--size", "0", "--epochs", "2", "--device", "cpu", "--out", out])
    assert done.code == 0, done.output
    path = out / "checkpoint.npz"
    ckpt = load_checkpoint(path)
    request = {"data": None, "include": (), "exclude": (), "size": None, "skip_bad": False, "split": None,
               "sample_latent": False, "warn": None}
    dataset = ckpt.spec.evaluation_data(checkpoint_options(ckpt), request)[0]()
    want, _ = two_pass_report(model_from_checkpoint(ckpt, np), list(dataset.images))
    got = _evaluate_json([path])
    assert got["images"] == 4
    assert _json_bits(got) == report_bits(want)


def test_another_model_keeps_its_own_reconstructions():
    """A subclass (or a plug-in model) may reconstruct otherwise than it measures: it gets the second
    pass, and the numbers of its own reconstruct."""
    class Shifted(Autoencoder):
        def reconstruct(self, images):
            return [r + 0.25 for r in super().reconstruct(images)]

    images = cae_images(np.float64)[:-1]
    model = Shifted(cae_params(seed=3, dtype=np.float64), loss="pl+sfl", max_chunk_pixels=2 * 24 * 20)
    assert not evaluation.reconstructs_as_measured(model)
    want, _ = two_pass_report(model, images)
    got, _ = evaluate_model(model, images)
    assert report_bits(got) == report_bits(want)
    plain, _ = evaluate_model(Autoencoder(cae_params(seed=3, dtype=np.float64), loss="pl+sfl",
                                          max_chunk_pixels=2 * 24 * 20), images)
    assert plain["E"] == got["E"] and plain["psnr"] != got["psnr"]
