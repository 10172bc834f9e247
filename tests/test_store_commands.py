"""evaluate, reconstruct and encode read an image store as they go (sflnet.training.evaluation.evaluate_data
streams it): the same numbers and files, bit for bit, as the store's source folder, and evaluation's
memory does not grow with the store."""

import json
import tracemalloc

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from sflnet.backend import to_device
from sflnet.io.store import load_images, prepare_store
from sflnet.models.cae import Autoencoder, init_params
from sflnet.training import source as source_module
from sflnet.training.evaluation import evaluate_data, evaluate_model
from sflnet_cli.main import cli

# three shapes, two of them shared by several images: chunks of more than one image, in an order
# (by shape, in order of first appearance) that differs from the images' own
SHAPES = [(20, 24), (24, 20), (20, 24), (16, 24), (24, 20), (20, 24)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A source folder, its store, and a float64 checkpoint trained 2 epochs on the folder."""
    root = tmp_path_factory.mktemp("storecmd")
    folder = root / "src"
    folder.mkdir()
    rng = np.random.default_rng(11)
    for i, (h, w) in enumerate(SHAPES):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    prepare_store([folder], root / "store", size=24)
    result = CliRunner().invoke(cli, ["train", "--data", str(folder), "--size", "24", "--epochs", "2",
                                      "--dtype", "float64", "--device", "cpu", "--loss", "pl+sfl",
                                      "--out", str(root / "run")])
    assert result.exit_code == 0, result.output
    return {"folder": folder, "store": root / "store", "checkpoint": root / "run" / "checkpoint.npz", "root": root}


def _invoke(args):
    result = CliRunner().invoke(cli, [*args, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return result.output


def test_evaluate_a_store_equals_its_folder_bit_for_bit(run, tmp_path):
    reports, grads = {}, {}
    for kind in ("folder", "store"):
        out = _invoke(["evaluate", str(run["checkpoint"]), "--data", str(run[kind]), "--size", "24", "--json",
                       "--loss", "pl+sfl+ssim", "--grads", str(tmp_path / f"{kind}.npz")])
        reports[kind] = json.loads(out)
        with np.load(tmp_path / f"{kind}.npz") as found:
            grads[kind] = {name: found[name].tobytes() for name in found.files if name != "meta"}
    assert reports["store"] == reports["folder"]
    assert reports["store"]["images"] == len(SHAPES) and np.isfinite(reports["store"]["ssim"])
    assert grads["store"] == grads["folder"] and len(grads["store"]) == 8


def test_evaluate_data_streams_the_losses_and_metrics_of_evaluate_model(run, xp):
    """The streamed path against the held path on the same device (NumPy, and CuPy: on a GPU, else the
    strict double, where the chunks come through pinned memory), on a model whose chunks hold two images."""
    for dtype in (np.float64, np.float32):
        model = Autoencoder(init_params(seed=3, dtype=dtype, xp=xp), loss="pl+sfl", max_chunk_pixels=2 * 24 * 20)
        held = load_images([run["folder"]], size=24, dtype=dtype)
        lazy = load_images([run["store"]], dtype=dtype, lazy=True)
        assert hasattr(lazy, "store")           # the streamed path is the one taken
        want, want_grads = evaluate_model(model, [to_device(image, xp) for image in held.images], compute_grads=True)
        got, got_grads = evaluate_data(model, lazy, xp, compute_grads=True)
        assert got == want
        assert {n: g.tobytes() for n, g in got_grads.items()} == {n: g.tobytes() for n, g in want_grads.items()}
        assert all(g.dtype == dtype for g in got_grads.values())


def test_reconstruct_and_encode_from_a_store_write_the_folders_files(run, tmp_path):
    for kind in ("folder", "store"):
        _invoke(["reconstruct", str(run["checkpoint"]), str(run[kind]), "--size", "24", "--out",
                 str(tmp_path / f"recon_{kind}")])
        _invoke(["encode", str(run["checkpoint"]), str(run[kind]), "--size", "24", "--pool", "none", "--out",
                 str(tmp_path / f"feat_{kind}")])
    for prefix, suffix in (("recon", ".png"), ("feat", ".npy")):
        files = sorted(p.name for p in (tmp_path / f"{prefix}_folder").glob(f"*{suffix}"))
        assert len(files) == len(SHAPES)
        assert sorted(p.name for p in (tmp_path / f"{prefix}_store").glob(f"*{suffix}")) == files
        for name in files:
            assert ((tmp_path / f"{prefix}_store" / name).read_bytes()
                    == (tmp_path / f"{prefix}_folder" / name).read_bytes()), name


def test_evaluating_a_store_holds_no_image(tmp_path, monkeypatch):
    """tracemalloc over stores of 4 and 16 images of 96 px, after a warm-up (first-call caches): the
    larger adds less than four images' floats (held in memory, its 12 more images add 24). The
    prefetch thread may run ahead by PREFETCH_BYTES (64 MiB), here set to two images."""
    side, per_image = 96, 3 * 96 * 96 * 8
    monkeypatch.setattr(source_module, "PREFETCH_BYTES", 2 * per_image)
    rng = np.random.default_rng(0)
    model = Autoencoder(init_params(seed=0, dtype=np.float64), loss="pl+sfl", max_chunk_pixels=side * side)
    for count in (4, 16):
        folder = tmp_path / f"src{count}"
        folder.mkdir()
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(folder / f"im{i:02d}.png")
        prepare_store([folder], tmp_path / f"store{count}", size=side)

    def evaluate(count):
        dataset = load_images([tmp_path / f"store{count}"], dtype=np.float64, lazy=True)
        report, _ = evaluate_data(model, dataset, np, compute_grads=True)
        assert report["images"] == count

    evaluate(4)
    peaks = {}
    for count in (4, 16):
        tracemalloc.start()
        try:
            evaluate(count)
            peaks[count] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    # measured: streamed +1.1 images (prefetch timing); the images held in memory: +24 (12 images and
    # their 12 reconstructions)
    assert peaks[16] - peaks[4] < 4 * per_image, {n: p / per_image for n, p in peaks.items()}
