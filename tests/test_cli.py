"""Command-line tests: ``sflnet train / evaluate / reconstruct / filters`` through the real ``main``.

Every command runs in-process through :func:`run_cli`, which calls
``sflnet_cli.main.main`` (so the one-line error policy is what is tested)
inside ``click.testing.CliRunner``'s isolation. One test runs the installed
``sflnet`` entry point as a subprocess. All images are tiny and generated in
``tmp_path``; runs use ``--size 0`` (native size), CPU and usually float64.
"""

import csv
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from sflnet.backend import gpu_available
from sflnet.models.cae import PARAM_NAMES, PARAM_SHAPES
from sflnet_cli.main import main

HEADER = ["epoch", "E", "E_PL", "E_SFL", "sfl_0.8", "sfl_1.6", "sfl_3.2", "seconds"]
JSON_KEYS = {"loss", "E", "E_PL", "E_SFL", "sfl", "terms", "psnr", "ssim", "images"}


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

class Result:
    def __init__(self, code, stdout, stderr):
        self.code, self.stdout, self.stderr = code, stdout, stderr
        self.output = stdout + stderr

    def __repr__(self):
        return f"Result(code={self.code}, output={self.output!r})"


def run_cli(args, cwd=None):
    """Run ``sflnet ARGS`` in-process; returns Result(code, stdout, stderr)."""
    runner = CliRunner()
    old_cwd = os.getcwd()
    code = 0
    with runner.isolation() as (out, err, _):
        if cwd is not None:
            os.chdir(cwd)
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            os.chdir(old_cwd)
        stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    return Result(code, stdout, stderr)


def assert_clean_error(result, *fragments):
    """Non-zero exit, an ``Error:`` line naming the problem, no traceback."""
    assert result.code != 0, result
    assert "Traceback" not in result.output, result
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1, result
    for fragment in fragments:
        assert fragment.lower() in error_lines[0].lower(), result


def write_images(folder, sizes=((9, 12), (10, 10)), seed=0):
    """Random RGB PNGs of the given (height, width) in ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index, (h, w) in enumerate(sizes):
        path = folder / f"img{index}.png"
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def images(tmp_path):
    """A folder with two tiny images: 9x12 and 10x10 pixels."""
    folder = tmp_path / "imgs"
    write_images(folder)
    return folder


def train_args(images, out, epochs=3, *extra):
    return ["train", "--data", images, "--size", "0", "--epochs", epochs, "--device", "cpu",
            "--dtype", "float64", "--out", out, *extra]


def read_history(path):
    with open(path, newline="") as stream:
        rows = list(csv.reader(stream))
    return rows[0], rows[1:]


def load_npz(path):
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def png_shape(path):
    return np.asarray(Image.open(path)).shape


# ---------------------------------------------------------------------------
# Help
# ---------------------------------------------------------------------------

def test_help_lists_every_option():
    result = run_cli(["train", "--help"])
    assert result.code == 0
    for option in ["--data", "--include", "--exclude", "--size", "--loss", "--epochs", "--lr", "--momentum",
                   "--init-std", "--seed", "--sigmas", "--sfl-weights", "--batch-size", "--device", "--dtype",
                   "--out", "--snapshot-every", "--resume", "--overwrite", "--skip-bad"]:
        assert option in result.stdout
    for command, options in [("reconstruct", ["--out", "--size", "--device", "--side-by-side"]),
                             ("evaluate", ["--data", "--loss", "--json", "--grads", "--device"]),
                             ("filters", ["--out", "--image", "--sigmas"])]:
        result = run_cli([command, "--help"])
        assert result.code == 0
        for option in options:
            assert option in result.stdout


# ---------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------

def test_tiny_end_to_end(tmp_path, images):
    run = tmp_path / "run"
    result = run_cli(train_args(images, run, 3))
    assert result.code == 0, result
    assert "epoch 3/3" in result.stderr

    config = json.loads((run / "config.json").read_text())
    assert config["options"]["epochs"] == 3 and config["options"]["dtype"] == "float64"
    assert config["options"]["data"] == [str(images)]
    assert config["sflnet_version"] and config["device_name"].startswith("cpu")
    assert [(i["name"], i["height"], i["width"]) for i in config["data"]["images"]] == [
        ("img0.png", 9, 12), ("img1.png", 10, 10)]

    header, rows = read_history(run / "history.csv")
    assert header == HEADER
    assert [int(r[0]) for r in rows] == [1, 2, 3]
    values = np.array([[float(v) for v in r] for r in rows])
    assert np.all(np.isfinite(values)) and np.all(values[:, 1:] >= 0)
    np.testing.assert_allclose(values[:, 1], values[:, 2] + values[:, 3], rtol=1e-12)    # E = E_PL + E_SFL
    np.testing.assert_allclose(values[:, 3], values[:, 4:7] @ [100.0, 10.0, 10.0], rtol=1e-12)

    ckpt = load_npz(run / "checkpoint.npz")
    assert set(ckpt) == {*PARAM_NAMES, *(f"velocity_{n}" for n in PARAM_NAMES), "meta"}
    for name in PARAM_NAMES:
        assert ckpt[name].shape == PARAM_SHAPES[name] and ckpt[name].dtype == np.float64
    meta = json.loads(str(ckpt["meta"]))
    assert meta["epoch"] == 3 and meta["config"]["sigmas"] == [0.8, 1.6, 3.2]
    assert meta["rng_state"]["bit_generator"] == "PCG64"
    for epoch in (1, 2, 3):   # default --snapshot-every is max(1, 3 // 10) = 1
        assert (run / "checkpoints" / f"epoch_{epoch:04d}.npz").is_file()
        shots = sorted((run / "snapshots" / f"epoch_{epoch:04d}").iterdir())
        assert [p.name for p in shots] == ["00_img0.png", "01_img1.png"]
        assert [png_shape(p) for p in shots] == [(9, 12, 3), (10, 10, 3)]
    assert png_shape(run / "curves.png")[0] > 100

    result = run_cli(["evaluate", run / "checkpoint.npz", "--json", "--device", "cpu"])
    assert result.code == 0, result
    report = json.loads(result.stdout)
    assert set(report) == JSON_KEYS
    assert set(report["sfl"]) == {"0.8", "1.6", "3.2"} and report["images"] == 2
    # SSIM's 11x11 window does not fit the 9x12 / 10x10 test images: undefined, null in JSON
    assert np.isfinite(report["psnr"]) and report["ssim"] is None

    text = run_cli(["evaluate", run / "checkpoint.npz", "--device", "cpu"])
    assert text.code == 0 and "data_range 2" in text.stdout and "PSNR" in text.stdout

    out = tmp_path / "recon"
    result = run_cli(["reconstruct", run / "checkpoint.npz", images, "--out", out, "--side-by-side",
                      "--device", "cpu"])
    assert result.code == 0, result
    assert png_shape(out / "img0.png") == (9, 12, 3) and png_shape(out / "img1.png") == (10, 10, 3)
    assert png_shape(out / "img0_side_by_side.png") == (9, 2 * 12 + 4, 3)
    # --size: the longer side becomes 20 pixels
    result = run_cli(["reconstruct", run / "checkpoint.npz", images / "img0.png", "--out", tmp_path / "big",
                      "--size", "20", "--device", "cpu"])
    assert result.code == 0, result
    assert png_shape(tmp_path / "big" / "img0.png") == (15, 20, 3)


def test_evaluate_reproduces_logged_history(tmp_path, images):
    """checkpoints/epoch_k.npz holds the parameters after k updates; row k+1 was measured with them."""
    run = tmp_path / "run"
    assert run_cli(train_args(images, run, 4, "--snapshot-every", "2")).code == 0
    _, rows = read_history(run / "history.csv")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch_0002.npz", "epoch_0004.npz"]
    result = run_cli(["evaluate", run / "checkpoints" / "epoch_0002.npz", "--json", "--device", "cpu"])
    assert result.code == 0, result
    report = json.loads(result.stdout)
    row = dict(zip(HEADER, rows[2]))   # epoch 3
    assert row["epoch"] == "3"
    for key in ("E", "E_PL", "E_SFL"):
        assert report[key] == pytest.approx(float(row[key]), rel=1e-12, abs=0)
    for label in ("0.8", "1.6", "3.2"):
        assert report["sfl"][label] == pytest.approx(float(row[f"sfl_{label}"]), rel=1e-12, abs=0)
    # --loss pl reports E = E_PL on the same state
    result = run_cli(["evaluate", run / "checkpoints" / "epoch_0002.npz", "--json", "--loss", "pl", "--device",
                      "cpu"])
    pl = json.loads(result.stdout)
    assert pl["E"] == pytest.approx(float(row["E_PL"]), rel=1e-12)


def test_evaluate_grads_match_the_momentum_update(tmp_path, images):
    """Independent check of --grads through the update rule v ← μv − ηg:
    g at epoch 1's parameters = (μ·v1 − v2)/η, with v1, v2 the saved velocities."""
    run = tmp_path / "run"
    assert run_cli(train_args(images, run, 2, "--snapshot-every", "1", "--lr", "0.05", "--momentum",
                              "0.5")).code == 0
    grads_file = tmp_path / "g.npz"
    result = run_cli(["evaluate", run / "checkpoints" / "epoch_0001.npz", "--grads", grads_file, "--device", "cpu"])
    assert result.code == 0, result
    grads = load_npz(grads_file)
    first, second = load_npz(run / "checkpoints" / "epoch_0001.npz"), load_npz(run / "checkpoint.npz")
    for name in PARAM_NAMES:
        assert grads[name].shape == PARAM_SHAPES[name] and grads[name].dtype == np.float64
        expected = (0.5 * first[f"velocity_{name}"] - second[f"velocity_{name}"]) / 0.05
        np.testing.assert_allclose(grads[name], expected, rtol=1e-9, atol=1e-12 * np.abs(expected).max())
    before = grads_file.read_bytes()
    again = run_cli(["evaluate", run / "checkpoint.npz", "--grads", grads_file, "--device", "cpu"])
    assert_clean_error(again, "exists")
    assert grads_file.read_bytes() == before


# ---------------------------------------------------------------------------
# Resume
# ---------------------------------------------------------------------------

def test_resume_is_bit_exact_with_minibatches(tmp_path, images):
    """Run A: 6 epochs. Run B: 3 epochs, a crash leaves an extra history row, then --resume to 6."""
    extra = ("--batch-size", "1", "--snapshot-every", "2")
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    assert run_cli(train_args(images, run_a, 6, *extra)).code == 0
    assert run_cli(train_args(images, run_b, 3, *extra)).code == 0
    with open(run_b / "history.csv", "a") as stream:   # as if killed after writing row 4, before its checkpoint
        stream.write("4,1.0,1.0,0.0,0.0,0.0,0.0,0.1\n5,1.0,1.0")
    result = run_cli(["train", "--out", run_b, "--resume", "--epochs", "6", "--device", "cpu"])
    assert result.code == 0, result

    header_a, rows_a = read_history(run_a / "history.csv")
    header_b, rows_b = read_history(run_b / "history.csv")
    assert header_a == header_b == HEADER
    assert [r[:-1] for r in rows_a] == [r[:-1] for r in rows_b]   # all but the seconds column, as text
    final_a, final_b = load_npz(run_a / "checkpoint.npz"), load_npz(run_b / "checkpoint.npz")
    for key in final_a:
        if key != "meta":
            assert final_a[key].tobytes() == final_b[key].tobytes(), key
    meta_a, meta_b = json.loads(str(final_a["meta"])), json.loads(str(final_b["meta"]))
    assert meta_a["epoch"] == meta_b["epoch"] == 6 and meta_a["rng_state"] == meta_b["rng_state"]
    config = json.loads((run_b / "config.json").read_text())
    assert config["options"]["epochs"] == 6 and config["resumes"][0]["from_epoch"] == 3
    assert sorted(p.name for p in (run_b / "checkpoints").iterdir()) == [   # 3 was the first leg's final epoch
        "epoch_0002.npz", "epoch_0003.npz", "epoch_0004.npz", "epoch_0006.npz"]
    # Nothing left to do:
    again = run_cli(["train", "--out", run_b, "--resume", "--device", "cpu"])
    assert again.code == 0 and "Nothing to do" in again.stdout


def test_resume_refuses_changed_settings_and_data(tmp_path, images):
    run = tmp_path / "run"
    assert run_cli(train_args(images, run, 2)).code == 0
    before = (run / "checkpoint.npz").read_bytes(), (run / "history.csv").read_bytes()
    for extra, fragment in [(["--lr", "0.1"], "--lr"), (["--sigmas", "1,2,3"], "--sigmas"),
                            (["--loss", "pl"], "--loss"), (["--dtype", "float32"], "--dtype"),
                            (["--size", "8"], "--size"), (["--sfl-weights", "1,1,1"], "--sfl-weights"),
                            (["--epochs", "1"], "beyond"), (["--overwrite"], "--overwrite")]:
        result = run_cli(["train", "--out", run, "--resume", "--epochs", "4", "--device", "cpu", *extra])
        assert_clean_error(result, fragment)
    write_images(images, sizes=((9, 12), (10, 10), (8, 8)))   # a third image appears in the data folder
    assert_clean_error(run_cli(["train", "--out", run, "--resume", "--epochs", "4", "--device", "cpu"]),
                       "differ")
    assert ((run / "checkpoint.npz").read_bytes(), (run / "history.csv").read_bytes()) == before
    assert_clean_error(run_cli(["train", "--out", tmp_path / "nothing", "--resume"]), "not an sflnet run")
    assert_clean_error(run_cli(["train", "--resume"]), "--out")


def test_resume_refuses_a_checkpoint_from_another_sigma_set(tmp_path, images):
    run, other = tmp_path / "run", tmp_path / "other"
    assert run_cli(train_args(images, run, 1)).code == 0
    assert run_cli(train_args(images, other, 1, "--sigmas", "0.8,1.6", "--sfl-weights", "100,10")).code == 0
    (run / "checkpoint.npz").write_bytes((other / "checkpoint.npz").read_bytes())
    result = run_cli(["train", "--out", run, "--resume", "--epochs", "2", "--device", "cpu"])
    assert_clean_error(result, "checkpoint.npz", "sigmas")


def test_ctrl_c_saves_flushes_and_exits_130(tmp_path, images, monkeypatch, default_sigint):
    """SIGINT during epoch 2 (sent from the progress hook): epoch 2 finishes, is saved, exit 130."""
    import signal

    from sflnet_cli import options

    original = options.ProgressReporter.epoch

    def epoch_then_interrupt(self, row):
        original(self, row)
        if row["epoch"] == 2:
            os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(options.ProgressReporter, "epoch", epoch_then_interrupt)
    run = tmp_path / "run"
    result = run_cli(train_args(images, run, 5))
    assert result.code == 130, result
    assert "sflnet train --resume --out" in result.stderr and "Traceback" not in result.output
    _, rows = read_history(run / "history.csv")
    assert len(rows) == 2
    assert json.loads(str(load_npz(run / "checkpoint.npz")["meta"]))["epoch"] == 2
    assert signal.getsignal(signal.SIGINT) is before   # handler restored


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("extra, fragment", [
    (["--epochs", "0"], "--epochs"),
    (["--epochs", "-3"], "--epochs"),
    (["--lr", "0"], "--lr"),
    (["--lr", "-0.1"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--momentum", "1"], "--momentum"),
    (["--momentum", "-0.5"], "--momentum"),
    (["--init-std", "-1"], "--init-std"),
    (["--sigmas", "a,b,c"], "--sigmas"),
    (["--sigmas", ""], "--sigmas"),
    (["--sigmas", "0,1.6,3.2"], "--sigmas"),
    (["--sigmas", "-0.8,1.6,3.2"], "--sigmas"),
    (["--sigmas", "0.8,0.8,3.2"], "--sigmas"),
    (["--sigmas", "1,2"], "--sfl-weights"),
    (["--sfl-weights", "1,2"], "--sfl-weights"),
    (["--sfl-weights", "1,x,2"], "--sfl-weights"),
    (["--sfl-weights", "1,-2,3"], "--sfl-weights"),
    (["--device", "tpu"], "--device"),
    (["--dtype", "float16"], "--dtype"),
    (["--loss", "l2"], "--loss"),
    (["--loss", "sfl"], "--loss"),
    (["--loss", "pl+2*"], "--loss"),
    (["--loss", "ssim"], "ssim"),          # the test images are smaller than its 11x11 window
    (["--loss", "pl+stft", "--stft-window", "0"], "--stft-window"),
    (["--stft-stride", "0"], "--stft-stride"),
    (["--stft-phase-weight", "-1"], "--stft-phase-weight"),
    (["--batch-size", "-1"], "--batch-size"),
    (["--size", "-1"], "--size"),
    (["--snapshot-every", "-1"], "--snapshot-every"),
    (["--epochs", "ten"], "--epochs"),
])
def test_bad_options_are_one_line_errors_and_write_nothing(tmp_path, images, extra, fragment):
    run = tmp_path / "run"
    result = run_cli([*train_args(images, run, 2), *extra])
    assert_clean_error(result, fragment)
    assert not run.exists()


def test_gpu_requested_without_gpu(tmp_path, images):
    if gpu_available():
        pytest.skip("a GPU is available here; the no-GPU error cannot be triggered")
    run = tmp_path / "run"
    result = run_cli(["train", "--data", images, "--size", "0", "--epochs", "1", "--device", "gpu", "--out", run])
    assert_clean_error(result, "gpu")
    assert not run.exists()


def test_missing_data_path_is_one_line_error(tmp_path):
    run = tmp_path / "run"
    result = run_cli(["train", "--data", tmp_path / "missing", "--epochs", "1", "--out", run, "--device", "cpu"])
    assert_clean_error(result, "missing")
    assert not run.exists()


def test_out_refuses_existing_run_and_foreign_folder(tmp_path, images):
    run = tmp_path / "run"
    assert run_cli(train_args(images, run, 1)).code == 0
    snapshot = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert_clean_error(run_cli(train_args(images, run, 1)), "--resume", "--overwrite")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == snapshot

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("precious")
    assert_clean_error(run_cli(train_args(images, foreign, 1)), "not an sflnet run")
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]

    # --overwrite: a new run, the user's own file is left alone
    assert run_cli(train_args(images, foreign, 1, "--overwrite")).code == 0
    assert (foreign / "notes.txt").read_text() == "precious" and (foreign / "checkpoint.npz").is_file()
    # --overwrite of a run with more epochs replaces its files (no stale snapshots)
    assert run_cli(train_args(images, run, 2, "--overwrite", "--snapshot-every", "2")).code == 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch_0002.npz"]


@pytest.mark.parametrize("lr, fragment", [("100", "collapsed"), ("1e30", "non-finite")])
def test_divergence_stops_and_keeps_a_finite_checkpoint(tmp_path, images, lr, fragment):
    run = tmp_path / "run"
    result = run_cli(train_args(images, run, 8, "--lr", lr, "--dtype", "float32"))
    assert_clean_error(result, "diverged", fragment, "smaller learning rate")
    ckpt = load_npz(run / "checkpoint.npz")
    meta = json.loads(str(ckpt["meta"]))
    assert meta["epoch"] < 8
    assert all(np.isfinite(ckpt[key]).all() for key in ckpt if key != "meta")
    _, rows = read_history(run / "history.csv")
    assert len(rows) == meta["epoch"]       # no row for the diverged epoch
    assert run_cli(["evaluate", run / "checkpoint.npz", "--json", "--device", "cpu"]).code == 0


# ---------------------------------------------------------------------------
# Untrusted and broken checkpoints
# ---------------------------------------------------------------------------

class _CreatesFileWhenUnpickled:
    """Unpickling this calls open(path, "w"), which would create the marker file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _good_checkpoint(tmp_path, images):
    run = tmp_path / "run"
    assert run_cli(train_args(images, run, 1)).code == 0
    return load_npz(run / "checkpoint.npz")


def _write_npz(path, arrays):
    with open(path, "wb") as stream:
        np.savez(stream, **arrays)


def _broken_checkpoints(tmp_path, good):
    """{case: (path, expected error fragment)} of files that must be refused."""
    cases = {}
    good_file = tmp_path / "run" / "checkpoint.npz"

    path = tmp_path / "truncated.npz"
    path.write_bytes(good_file.read_bytes()[: good_file.stat().st_size // 2])
    cases["truncated zip"] = (path, "checkpoint")

    path = tmp_path / "text.npz"
    path.write_text("this is not a checkpoint\n")
    cases["text file"] = (path, "not an .npz")

    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    cases["empty file"] = (path, "not an .npz")

    path = tmp_path / "array.npy"
    np.save(path, np.zeros(3))
    cases["npy file"] = (path, "not an .npz")

    path = tmp_path / "pickle.npz"
    path.write_bytes(pickle.dumps({"w2": 1}))
    cases["pickle file"] = (path, "not an .npz")

    arrays = dict(good)
    del arrays["w3"]
    _write_npz(tmp_path / "missing.npz", arrays)
    cases["missing array"] = (tmp_path / "missing.npz", "w3")

    arrays = dict(good, w4=np.zeros((32, 16, 5, 5)))
    _write_npz(tmp_path / "shape.npz", arrays)
    cases["wrong shape"] = (tmp_path / "shape.npz", "shape")

    arrays = dict(good, b2=good["b2"].astype(np.float32))
    _write_npz(tmp_path / "dtype.npz", arrays)
    cases["wrong dtype"] = (tmp_path / "dtype.npz", "dtype")

    meta = json.loads(str(good["meta"]))
    meta["architecture"]["name"] = "resnet50"
    _write_npz(tmp_path / "arch.npz", dict(good, meta=np.array(json.dumps(meta))))
    cases["other architecture"] = (tmp_path / "arch.npz", "architecture")

    _write_npz(tmp_path / "nometa.npz", {k: v for k, v in good.items() if k != "meta"})
    cases["no meta"] = (tmp_path / "nometa.npz", "meta")

    arrays = dict(good, w2=good["w2"].copy())
    arrays["w2"][0, 0, 0, 0] = np.nan
    _write_npz(tmp_path / "nan.npz", arrays)
    cases["NaN weights"] = (tmp_path / "nan.npz", "NaN")
    return cases


def test_broken_checkpoints_are_refused(tmp_path, images):
    good = _good_checkpoint(tmp_path, images)
    for case, (path, fragment) in _broken_checkpoints(tmp_path, good).items():
        before = path.read_bytes()
        result = run_cli(["evaluate", path, "--device", "cpu"])
        assert_clean_error(result, path.name, fragment)
        result = run_cli(["reconstruct", path, images, "--out", tmp_path / "r", "--device", "cpu"])
        assert_clean_error(result, path.name)
        assert path.read_bytes() == before, case
    assert not (tmp_path / "r").exists()
    assert_clean_error(run_cli(["evaluate", tmp_path / "absent.npz"]), "does not exist")


def test_pickled_object_inside_npz_is_refused_not_executed(tmp_path, images):
    good = _good_checkpoint(tmp_path, images)
    marker = tmp_path / "marker-created-by-unpickling"
    arrays = dict(good, w2=np.array([_CreatesFileWhenUnpickled(marker)], dtype=object))
    _write_npz(tmp_path / "evil.npz", arrays)
    # The object really is armed: loading it with pickles allowed would run open().
    result = run_cli(["evaluate", tmp_path / "evil.npz", "--device", "cpu"])
    assert_clean_error(result, "evil.npz", "pickle")
    assert not marker.exists()
    with np.load(tmp_path / "evil.npz", allow_pickle=True) as archive:
        archive["w2"]
    assert marker.exists()


def test_reconstruct_refuses_to_overwrite(tmp_path, images):
    good_run = tmp_path / "run"
    assert run_cli(train_args(images, good_run, 1)).code == 0
    out = tmp_path / "recon"
    out.mkdir()
    (out / "img1.png").write_bytes(b"user data")
    result = run_cli(["reconstruct", good_run / "checkpoint.npz", images, "--out", out, "--device", "cpu"])
    assert_clean_error(result, "img1.png", "--overwrite")
    assert (out / "img1.png").read_bytes() == b"user data" and not (out / "img0.png").exists()
    result = run_cli(["reconstruct", good_run / "checkpoint.npz", images, "--out", out, "--device", "cpu",
                      "--overwrite"])
    assert result.code == 0 and png_shape(out / "img1.png") == (10, 10, 3)


# ---------------------------------------------------------------------------
# filters
# ---------------------------------------------------------------------------

def test_filters_writes_fig3_and_fig4(tmp_path, images):
    out = tmp_path / "figs"
    result = run_cli(["filters", "--out", out, "--image", images / "img0.png", "--size", "32"])
    assert result.code == 0, result
    for name in ("fig3_log_responses.png", "fig4_subbands.png"):
        assert png_shape(out / name)[0] > 50
    assert_clean_error(run_cli(["filters", "--out", out]), "exists")
    assert_clean_error(run_cli(["filters", "--out", tmp_path / "x", "--sigmas", "0.8,abc"]), "--sigmas")


# ---------------------------------------------------------------------------
# The installed entry point
# ---------------------------------------------------------------------------

def test_installed_entry_point(tmp_path, images):
    exe = Path(sys.executable).with_name("sflnet")
    if not exe.exists():
        pytest.skip(f"the sflnet entry point is not installed next to {sys.executable}")
    run = tmp_path / "run"
    done = subprocess.run([str(exe), "train", "--data", str(images), "--size", "0", "--epochs", "2", "--device",
                           "cpu", "--out", str(run)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (run / "checkpoint.npz").is_file() and len(read_history(run / "history.csv")[1]) == 2
    bad = subprocess.run([str(exe), "train", "--epochs", "0", "--out", str(tmp_path / "bad")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("Error: --epochs")


# ---------------------------------------------------------------------------
# Objectives (--loss expressions) and run folders of sflnet 0.1
# ---------------------------------------------------------------------------

MIXED = "pl+0.5*l1+3*fft+0.0001*stft+2*ssim"
MIXED_WEIGHTS = {"E_PL": 1.0, "E_L1": 0.5, "E_FFT": 3.0, "E_STFT": 0.0001, "E_SSIM": 2.0}


@pytest.fixture
def larger_images(tmp_path):
    """Two images large enough for the ssim (11x11) and stft (16x16) windows: 17x20 and 18x16."""
    folder = tmp_path / "larger"
    write_images(folder, sizes=((17, 20), (18, 16)), seed=3)
    return folder


def test_a_mixed_objective_trains_logs_each_term_and_evaluates(tmp_path, larger_images):
    run = tmp_path / "run"
    result = run_cli(train_args(larger_images, run, 2, "--loss", " PL + 0.5*L1 + 3*fft+1e-4*stft+2*ssim",
                                "--snapshot-every", "1", "--lr", "0.05"))
    assert result.code == 0, result
    header, rows = read_history(run / "history.csv")
    assert header == HEADER[:-1] + ["E_L1", "E_FFT", "E_STFT", "E_SSIM", "seconds"]
    config = json.loads((run / "config.json").read_text())
    assert config["options"]["loss"] == MIXED and config["history_columns"] == header
    for row in rows:
        values = dict(zip(header, map(float, row)))
        assert values["E"] == pytest.approx(sum(w * values[k] for k, w in MIXED_WEIGHTS.items()), rel=1e-12)
    # evaluate reproduces row 2 from the epoch-1 checkpoint, every column of the objective included
    report = json.loads(run_cli(["evaluate", run / "checkpoints" / "epoch_0001.npz", "--json",
                                 "--device", "cpu"]).stdout)
    assert report["loss"] == MIXED
    row = dict(zip(header, map(float, rows[1])))
    assert report["E"] == pytest.approx(row["E"], rel=1e-12)
    for name in ("l1", "fft", "stft", "ssim"):
        assert report["terms"][name] == pytest.approx(row[f"E_{name.upper()}"], rel=1e-12)
    # --grads differentiates that objective: the same g as the momentum update v2 = μ v1 − η g used
    grads_file = tmp_path / "g.npz"
    assert run_cli(["evaluate", run / "checkpoints" / "epoch_0001.npz", "--grads", grads_file,
                    "--device", "cpu"]).code == 0
    grads = load_npz(grads_file)
    assert json.loads(str(grads["meta"]))["loss"] == MIXED
    first, second = load_npz(run / "checkpoints" / "epoch_0001.npz"), load_npz(run / "checkpoint.npz")
    for name in PARAM_NAMES:
        expected = (0.5 * first[f"velocity_{name}"] - second[f"velocity_{name}"]) / 0.05
        np.testing.assert_allclose(grads[name], expected, rtol=1e-8, atol=1e-11 * np.abs(expected).max())


def test_evaluate_any_objective_and_refuse_bad_ones(tmp_path, images, larger_images):
    run = tmp_path / "run"
    assert run_cli(train_args(larger_images, run, 1)).code == 0
    ckpt = run / "checkpoint.npz"
    pl = json.loads(run_cli(["evaluate", ckpt, "--json", "--loss", "pl", "--device", "cpu"]).stdout)
    fft = json.loads(run_cli(["evaluate", ckpt, "--json", "--loss", "2*fft", "--device", "cpu"]).stdout)
    both = json.loads(run_cli(["evaluate", ckpt, "--json", "--loss", "pl+2*fft", "--device", "cpu"]).stdout)
    assert both["E"] == pytest.approx(pl["E"] + fft["E"], rel=1e-12)
    assert fft["E"] == pytest.approx(2 * both["terms"]["fft"], rel=1e-12)
    text = run_cli(["evaluate", ckpt, "--loss", "pl+2*fft", "--device", "cpu"]).stdout
    assert "E = E_PL + 2·E_FFT" in text and "E_FFT" in text
    assert_clean_error(run_cli(["evaluate", ckpt, "--loss", "pl+fftt", "--device", "cpu"]), "fftt")
    assert_clean_error(run_cli(["evaluate", ckpt, "--loss", "ssim", "--data", images, "--device", "cpu"]),
                       "11x11")
    assert_clean_error(run_cli(["evaluate", ckpt, "--loss", "stft", "--stft-window", "32", "--device", "cpu"]),
                       "stft")


def make_legacy(run):
    """Rewrite a run folder as sflnet 0.1 wrote it: --loss "sfl", no stft options, checkpoint format 1."""
    config = json.loads((run / "config.json").read_text())
    del config["config_version"]
    config["options"]["loss"] = "sfl"
    for key in ("stft_window", "stft_stride", "stft_window_fn", "stft_phase_weight"):
        del config["options"][key]
    (run / "config.json").write_text(json.dumps(config, indent=2))
    for path in [run / "checkpoint.npz", *(run / "checkpoints").iterdir()]:
        arrays = load_npz(path)
        meta = json.loads(str(arrays["meta"]))
        meta["format_version"] = 1
        meta["config"]["loss"] = "sfl"
        for key in ("stft_window", "stft_stride", "stft_window_fn", "stft_phase_weight"):
            del meta["config"][key]
        arrays["meta"] = np.array(json.dumps(meta))
        np.savez(path, **arrays)


def test_a_run_folder_of_sflnet_0_1_still_evaluates_and_resumes_exactly(tmp_path, images):
    old, fresh = tmp_path / "old", tmp_path / "fresh"
    assert run_cli(train_args(images, fresh, 5)).code == 0
    assert run_cli(train_args(images, old, 3)).code == 0
    make_legacy(old)
    report = json.loads(run_cli(["evaluate", old / "checkpoint.npz", "--json", "--device", "cpu"]).stdout)
    assert report["loss"] == "pl+sfl" and report["E"] == pytest.approx(report["E_PL"] + report["E_SFL"], rel=1e-15)
    result = run_cli(["train", "--out", old, "--resume", "--epochs", "5", "--device", "cpu"])
    assert result.code == 0, result
    header_old, rows_old = read_history(old / "history.csv")
    header_fresh, rows_fresh = read_history(fresh / "history.csv")
    assert header_old == header_fresh == HEADER
    assert [r[:-1] for r in rows_old] == [r[:-1] for r in rows_fresh]
    a, b = load_npz(old / "checkpoint.npz"), load_npz(fresh / "checkpoint.npz")
    for name in PARAM_NAMES:
        assert a[name].tobytes() == b[name].tobytes()
    assert json.loads((old / "config.json").read_text())["options"]["loss"] == "pl+sfl"
