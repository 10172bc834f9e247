"""``sflnet encode`` and :mod:`sflnet.features`: encoder activations per image, pooled or not."""

import json

import numpy as np
import pytest

from sflnet.io.checkpoint import load_checkpoint
from sflnet.io.images import load_image
from sflnet.features import encode_images
from sflnet.nn import Conv2D, ReLU, Tanh, Upsample2x
from sflnet.training.evaluation import model_from_checkpoint
from tests.test_cli import assert_clean_error, run_cli, train_args, write_images

SIZES = ((9, 12), (10, 10))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(checkpoint path, image folder, image paths) of a 2-epoch float64 run on two small images."""
    root = tmp_path_factory.mktemp("encode")
    paths = write_images(root / "images", sizes=SIZES)
    result = run_cli(train_args(root / "images", root / "run", 2))
    assert result.code == 0, result
    return root / "run" / "checkpoint.npz", root / "images", paths


def forward_activations(model, image):
    """f^2 … f^5 of one (3, H, W) image, through layers built here from the model's parameters
    (Table 1 in the plain layout: Upsample2x, then Conv2D), not through the model's own walk."""
    p = model.params
    x = image[None]
    f2 = ReLU().forward(Conv2D(p["w2"], p["b2"], stride=1).forward(x))
    f3 = ReLU().forward(Conv2D(p["w3"], p["b3"], stride=2).forward(f2))
    f4 = ReLU().forward(Conv2D(p["w4"], p["b4"], stride=1).forward(Upsample2x(image.shape[-2:]).forward(f3)))
    f5 = Tanh().forward(Conv2D(p["w5"], p["b5"], stride=1).forward(f4))
    return {2: f2[0].copy(), 3: f3[0].copy(), 4: f4[0].copy(), 5: f5[0].copy()}


@pytest.mark.parametrize("layer", [2, 3, 4, 5])
def test_encode_writes_the_forward_activations(trained, tmp_path, layer):
    checkpoint, folder, paths = trained
    out = tmp_path / "features"
    result = run_cli(["encode", checkpoint, folder, "--out", out, "--layer", layer, "--device", "cpu"])
    assert result.code == 0, result
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt, np)
    channels = {2: 32, 3: 16, 4: 32, 5: 3}[layer]
    for path, (h, w) in zip(paths, SIZES):
        expected = forward_activations(model, load_image(path, size=0, dtype=np.float64))[layer]
        got = np.load(out / (path.stem + ".npy"))
        shape = (channels, (h + 1) // 2, (w + 1) // 2) if layer == 3 else (channels, h, w)
        assert got.shape == expected.shape == shape
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    # f^5 is the reconstruction itself
    if layer == 5:
        image = load_image(paths[0], size=0, dtype=np.float64)
        np.testing.assert_allclose(np.load(out / "img0.npy"), model.reconstruct([image])[0], atol=1e-12)


def test_manifest_and_pooled_vectors(trained, tmp_path):
    checkpoint, folder, paths = trained
    model = model_from_checkpoint(load_checkpoint(checkpoint), np)
    for pool, reduce in (("mean", np.mean), ("max", np.max)):
        out = tmp_path / pool
        result = run_cli(["encode", checkpoint, *paths, "--out", out, "--pool", pool, "--device", "cpu"])
        assert result.code == 0, result
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest == [{"image": p.name, "file": p.stem + ".npy", "shape": [16], "layer": 3, "pool": pool}
                            for p in paths]
        for path in paths:
            vector = np.load(out / (path.stem + ".npy"))
            f3 = forward_activations(model, load_image(path, size=0, dtype=np.float64))[3]
            np.testing.assert_allclose(vector, reduce(f3, axis=(1, 2)), atol=1e-12)


def test_encode_images_library_shapes(trained):
    checkpoint, _, paths = trained
    model = model_from_checkpoint(load_checkpoint(checkpoint), np)
    images = [load_image(p, size=0, dtype=np.float64) for p in paths]
    assert [f.shape for f in encode_images(model, images)] == [(16, 5, 6), (16, 5, 5)]
    assert [f.shape for f in encode_images(model, images, layer=4, pool="max")] == [(32,), (32,)]
    manifest_free = encode_images(model, images, layer=2, pool="none")
    assert [f.shape for f in manifest_free] == [(32, 9, 12), (32, 10, 10)]


def test_existing_outputs_are_refused_without_overwrite(trained, tmp_path):
    checkpoint, folder, _ = trained
    out = tmp_path / "features"
    out.mkdir()
    (out / "img0.npy").write_text("mine")
    result = run_cli(["encode", checkpoint, folder, "--out", out, "--device", "cpu"])
    assert_clean_error(result, "already exists", "--overwrite")
    assert (out / "img0.npy").read_text() == "mine"
    assert not (out / "manifest.json").exists()
    result = run_cli(["encode", checkpoint, folder, "--out", out, "--device", "cpu", "--overwrite"])
    assert result.code == 0, result
    assert np.load(out / "img0.npy").shape == (16, 5, 6)


@pytest.mark.parametrize("extra, fragments", [
    (["--layer", "1"], ("--layer", "2, 3, 4, 5")),
    (["--layer", "6"], ("--layer",)),
    (["--pool", "median"], ("--pool", "mean")),
    (["--size", "-3"], ("--size",)),
])
def test_bad_options_are_one_line_errors(trained, tmp_path, extra, fragments):
    checkpoint, folder, _ = trained
    result = run_cli(["encode", checkpoint, folder, "--out", tmp_path / "f", *extra])
    assert_clean_error(result, *fragments)
    assert not (tmp_path / "f").exists()


def test_missing_checkpoint_and_inputs(trained, tmp_path):
    checkpoint, folder, _ = trained
    assert_clean_error(run_cli(["encode", tmp_path / "nope.npz", folder, "--out", tmp_path / "f"]), "nope.npz")
    assert_clean_error(run_cli(["encode", checkpoint, "--out", tmp_path / "f"]), "INPUT")
    assert_clean_error(run_cli(["encode", checkpoint, tmp_path / "missing.png", "--out", tmp_path / "f"]),
                       "missing.png")


def test_vae_checkpoint_is_refused(tmp_path):
    run = tmp_path / "vae"
    result = run_cli(["train", "--model", "vae", "--train-images", "10", "--batch-size", "10", "--epochs", "1",
                      "--snapshot-every", "0", "--device", "cpu", "--out", run])
    assert result.code == 0, result
    images = write_images(tmp_path / "images")
    result = run_cli(["encode", run / "checkpoint.npz", images[0], "--out", tmp_path / "f"])
    assert_clean_error(result, "vae checkpoint", "cae")
    assert not (tmp_path / "f").exists()


def test_help():
    result = run_cli(["encode", "--help"])
    assert result.code == 0
    for word in ("--layer", "--pool", "--size", "manifest.json"):
        assert word in result.output
