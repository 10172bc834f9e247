"""Reliability through the command line: messy data, broken and hostile checkpoints,
kill -9, Ctrl-C, exact resume, full disks and read-only folders.

Cases already tested elsewhere are not repeated here:

* tests/test_cli.py: missing --data path, every bad option value (epochs, lr, momentum, sigmas,
  sfl-weights, mismatched lengths, device, dtype, ...), --device gpu without a GPU, --out at an
  existing run or a foreign folder, divergence (--lr 100 and a NaN/Inf case), broken checkpoints
  and a pickle inside an .npz for ``evaluate``/``reconstruct``, resume refusing another σ set,
  Ctrl-C sent in-process;
* tests/test_runner.py / tests/test_checkpoint.py: the same mechanisms below the CLI.

Everything here goes through ``sflnet_cli.main.main`` (in-process, with CliRunner's isolation) or
the ``sflnet`` program in a subprocess (kill -9 and SIGINT). Images are tiny and generated in
``tmp_path``; runs use ``--size 0``, the CPU and float64 unless a test says otherwise.
"""

import builtins
import errno
import io
import json
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from sflnet.io import images as data
from sflnet.io.checkpoint import load_checkpoint
from sflnet.errors import SflnetError
from sflnet.models.cae import PARAM_NAMES
from sflnet_cli.main import main

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


class Result:
    def __init__(self, code, stdout, stderr):
        self.code, self.stdout, self.stderr = code, stdout, stderr
        self.output = stdout + stderr

    def __repr__(self):
        return f"Result(code={self.code}, output={self.output!r})"


def run_cli(args):
    """``sflnet ARGS`` in-process through the real ``main``; returns Result(code, stdout, stderr)."""
    runner = CliRunner()
    code = 0
    with runner.isolation() as (out, err, _):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    return Result(code, stdout, stderr)


def assert_clean_error(result, *fragments):
    """Exit status 1, exactly one ``Error:`` line containing every fragment, no traceback."""
    assert result.code == 1, result
    assert "Traceback" not in result.output, result
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result
    for fragment in fragments:
        assert str(fragment).lower() in errors[0].lower(), result
    return errors[0]


def sflnet_command():
    """The installed ``sflnet`` program, or ``python -m sflnet_cli.main`` where it is not installed."""
    exe = Path(sys.executable).with_name("sflnet")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "sflnet_cli.main"]


def tree(folder):
    """{relative path: bytes} of every file under ``folder`` (to prove nothing was changed)."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def random_png(path, height, width, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)).convert(mode).save(path)
    return path


def png_bytes(height, width, seed=0):
    buffer = io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def jpeg_bytes(height, width, seed=0):
    buffer = io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
def images(tmp_path):
    """Two tiny RGB images, 6x7 and 5x5."""
    folder = tmp_path / "imgs"
    random_png(folder / "a.png", 6, 7, seed=1)
    random_png(folder / "b.png", 5, 5, seed=2)
    return folder


def train_args(data_path, out, epochs, *extra, dtype="float64"):
    return ["train", "--data", data_path, "--size", "0", "--epochs", epochs, "--device", "cpu",
            "--dtype", dtype, "--out", out, *extra]


def history_rows(run):
    lines = (Path(run) / "history.csv").read_text().splitlines()
    return lines[1:]


def without_seconds(rows):
    return [row.rsplit(",", 1)[0] for row in rows]


def state_bytes(path):
    """Parameters and velocities of a checkpoint as bytes (for bit-exact comparisons)."""
    loaded = load_checkpoint(path)
    return {n: (loaded.params[n].tobytes(), loaded.velocity[n].tobytes()) for n in PARAM_NAMES}


def assert_finite_checkpoint(path):
    loaded = load_checkpoint(path)
    for name in PARAM_NAMES:
        assert np.isfinite(loaded.params[name]).all() and np.isfinite(loaded.velocity[name]).all()
    return loaded


# ---------------------------------------------------------------------------
# Bad data
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["empty folder", "folder without images"])
def test_folders_without_images_are_one_line_errors(tmp_path, case):
    folder = tmp_path / "data"
    folder.mkdir()
    if case == "folder without images":
        (folder / "notes.txt").write_text("not an image")
        (folder / "sub").mkdir()
        (folder / "sub" / "data.csv").write_text("1,2,3")
    before = tree(folder)
    run = tmp_path / "run"
    assert_clean_error(run_cli(train_args(folder, run, 1)), str(folder), "no image files")
    assert not run.exists() and tree(folder) == before


BAD_FILES = {
    "zero-byte file": ("zero.png", lambda: b"", "empty"),
    "text file named .png": ("text.png", lambda: b"this is not a picture\n", "not a readable image"),
    "truncated PNG": ("cut.png", lambda: png_bytes(20, 20)[: len(png_bytes(20, 20)) // 2], "truncated"),
    "truncated JPEG": ("cut.jpg", lambda: jpeg_bytes(40, 40)[: len(jpeg_bytes(40, 40)) // 2], "truncated"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_image_file_is_a_one_line_error_naming_it(tmp_path, images, case):
    name, make, reason = BAD_FILES[case]
    (images / name).write_bytes(make())
    before = tree(images)
    run = tmp_path / "run"
    assert_clean_error(run_cli(train_args(images, run, 1)), str(images / name), reason)
    assert not run.exists() and tree(images) == before
    # the same file given to reconstruct and evaluate
    good = tmp_path / "good"
    assert run_cli(train_args(images / "a.png", good, 1)).code == 0
    assert_clean_error(run_cli(["reconstruct", good / "checkpoint.npz", images / name, "--out", tmp_path / "r",
                                "--device", "cpu"]), name, reason)
    assert_clean_error(run_cli(["evaluate", good / "checkpoint.npz", "--data", images, "--device", "cpu"]),
                       name, reason)
    assert not (tmp_path / "r").exists() and tree(images) == before


def test_skip_bad_warns_once_per_file_and_trains_on_the_rest(tmp_path, images):
    for name, make, _ in BAD_FILES.values():
        (images / name).write_bytes(make())
    before = tree(images)
    run = tmp_path / "run"
    result = run_cli(train_args(images, run, 2, "--skip-bad"))
    assert result.code == 0, result
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: skipping ")]
    assert len(warnings) == len(BAD_FILES)
    for name, _, reason in BAD_FILES.values():
        assert sum(f"skipping {name}: " in w and reason in w for w in warnings) == 1, (name, warnings)
    config = json.loads((run / "config.json").read_text())
    assert [item["name"] for item in config["data"]["images"]] == ["a.png", "b.png"]
    assert len(history_rows(run)) == 2
    assert_finite_checkpoint(run / "checkpoint.npz")
    assert tree(images) == before
    # --skip-bad also works for reconstruct; with nothing left it is an error
    result = run_cli(["reconstruct", run / "checkpoint.npz", images, "--out", tmp_path / "r", "--device", "cpu",
                      "--skip-bad"])
    assert result.code == 0, result
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["a.png", "b.png"]
    assert result.stderr.count("warning: skipping ") == len(BAD_FILES)
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "zero.png").write_bytes(b"")
    assert_clean_error(run_cli(train_args(only_bad, tmp_path / "run2", 1, "--skip-bad")), "could be loaded")
    assert not (tmp_path / "run2").exists()


def test_grey_palette_rgba_and_16_bit_images_train(tmp_path):
    folder = tmp_path / "modes"
    folder.mkdir()
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, size=(6, 7), dtype=np.uint8)).save(folder / "grey.png")
    Image.fromarray(rng.integers(0, 256, size=(6, 7, 3), dtype=np.uint8)).convert("P").save(folder / "palette.png")
    Image.fromarray(rng.integers(0, 256, size=(6, 7, 4), dtype=np.uint8)).save(folder / "rgba.png")
    Image.fromarray(rng.integers(0, 65536, size=(6, 7), dtype=np.uint16)).save(folder / "grey16.png")
    Image.fromarray(rng.integers(0, 256, size=(6, 7, 2), dtype=np.uint8), mode="LA").save(folder / "grey_alpha.png")
    modes = {p.name: Image.open(p).mode for p in folder.iterdir()}
    assert modes == {"grey.png": "L", "palette.png": "P", "rgba.png": "RGBA", "grey16.png": "I;16",
                     "grey_alpha.png": "LA"}
    run = tmp_path / "run"
    result = run_cli(train_args(folder, run, 2))
    assert result.code == 0, result
    assert "warning" not in result.stderr
    config = json.loads((run / "config.json").read_text())
    assert sorted((i["name"], i["height"], i["width"]) for i in config["data"]["images"]) == sorted(
        (name, 6, 7) for name in modes)
    rows = [[float(v) for v in row.split(",")] for row in history_rows(run)]
    assert len(rows) == 2 and np.isfinite(rows).all()
    # the 16-bit image is scaled by 65535, not clipped at 255: its reconstruction input spans [-1, 1]
    loaded = data.load_image(folder / "grey16.png", size=0, dtype=np.float64)
    assert loaded.min() < -0.9 and loaded.max() > 0.9
    assert run_cli(["evaluate", run / "checkpoint.npz", "--json", "--device", "cpu"]).code == 0


def test_1x1_and_2x2_images_train_evaluate_and_reconstruct(tmp_path):
    """The network is fully convolutional with 'same' padding, a stride-2 layer and x2 upsampling
    followed by a crop, so any size down to 1x1 works: there is no minimum to reject."""
    folder = tmp_path / "tiny"
    random_png(folder / "one.png", 1, 1, seed=4)
    random_png(folder / "two.png", 2, 2, seed=5)
    random_png(folder / "line.png", 1, 3, seed=6)
    for dtype in ("float64", "float32"):
        run = tmp_path / f"run_{dtype}"
        result = run_cli(train_args(folder, run, 3, "--batch-size", "2", dtype=dtype))
        assert result.code == 0, result
        rows = [[float(v) for v in row.split(",")] for row in history_rows(run)]
        assert len(rows) == 3 and np.isfinite(rows).all() and all(r[1] > 0 for r in rows)
        assert_finite_checkpoint(run / "checkpoint.npz")
    report = run_cli(["evaluate", tmp_path / "run_float64" / "checkpoint.npz", "--json", "--device", "cpu"])
    assert report.code == 0, report
    values = json.loads(report.stdout)
    assert values["images"] == 3 and np.isfinite(values["E"]) and np.isfinite(values["psnr"])
    out = tmp_path / "recon"
    result = run_cli(["reconstruct", tmp_path / "run_float64" / "checkpoint.npz", folder, "--out", out,
                      "--device", "cpu", "--size", "0"])
    assert result.code == 0, result
    assert {p.name: np.asarray(Image.open(p)).shape for p in out.iterdir()} == {
        "one.png": (1, 1, 3), "two.png": (2, 2, 3), "line.png": (1, 3, 3)}
    # --size 1 shrinks an ordinary image to one pixel on its longer side
    run = tmp_path / "size1"
    random_png(tmp_path / "big" / "c.png", 9, 12, seed=7)
    assert run_cli(["train", "--data", tmp_path / "big", "--size", "1", "--epochs", "1", "--device", "cpu",
                    "--out", run]).code == 0
    image = json.loads((run / "config.json").read_text())["data"]["images"][0]
    assert (image["height"], image["width"]) == (1, 1)


def bomb_png(width, height):
    """A valid PNG header claiming ``width`` x ``height`` pixels, followed by a 2x2 image's data:
    opening it reads only the header, so no memory is spent if the size check works."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((2, 2), dtype=np.uint8)).save(buffer, "PNG")
    raw = bytearray(buffer.getvalue())
    assert raw[12:16] == b"IHDR"
    struct.pack_into(">II", raw, 16, width, height)
    struct.pack_into(">I", raw, 29, zlib.crc32(bytes(raw[12:29])) & 0xFFFFFFFF)
    return bytes(raw)


def test_decompression_bomb_is_refused_from_its_header(tmp_path, images):
    assert data.MAX_IMAGE_PIXELS == 50_000_000   # the documented limit (also in `sflnet train --help`)
    help_text = run_cli(["train", "--help"]).stdout
    assert "MAX_IMAGE_PIXELS" in help_text and "50,000,000" in help_text
    (images / "bomb.png").write_bytes(bomb_png(100_000, 100_000))    # 10^10 pixels = 30 GB as RGB
    run = tmp_path / "run"
    started = time.perf_counter()
    assert_clean_error(run_cli(train_args(images, run, 1)), "bomb.png", "too large", "MAX_IMAGE_PIXELS")
    assert time.perf_counter() - started < 10 and not run.exists()
    result = run_cli(train_args(images, run, 1, "--skip-bad"))
    assert result.code == 0 and "warning: skipping bomb.png: image is too large" in result.stderr, result


def test_pixel_limit_is_the_one_applied(tmp_path, images, monkeypatch):
    """Just over / at the limit, with the limit lowered in-process (Pillow's warning range included)."""
    random_png(images / "c.png", 10, 11, seed=8)          # 110 pixels
    monkeypatch.setattr(data, "MAX_IMAGE_PIXELS", 109)
    assert_clean_error(run_cli(train_args(images, tmp_path / "run", 1)), "c.png", "limit is 109 pixels")
    monkeypatch.setattr(data, "MAX_IMAGE_PIXELS", 110)
    assert run_cli(train_args(images, tmp_path / "run", 1)).code == 0


# ---------------------------------------------------------------------------
# Bad option values never touch an existing run; --debug shows the traceback
# ---------------------------------------------------------------------------

def test_bad_options_leave_an_existing_run_untouched(tmp_path, images):
    run = tmp_path / "run"
    assert run_cli(train_args(images, run, 2)).code == 0
    before = tree(run)
    for extra, fragment in [(["--epochs", "0"], "--epochs"), (["--lr", "-1"], "--lr"),
                            (["--momentum", "1.5"], "--momentum"), (["--sigmas", "0.8;1.6"], "--sigmas"),
                            (["--sfl-weights", "1,2"], "--sfl-weights"), (["--dtype", "int8"], "--dtype"),
                            (["--device", "tpu"], "--device")]:
        args = train_args(images, run, 3, "--overwrite") + extra
        result = run_cli(args)
        assert result.code != 0 and "Traceback" not in result.output, result
        assert fragment in result.output
        assert tree(run) == before
    result = run_cli(["train", "--out", run, "--resume", "--epochs", "0"])
    assert_clean_error(result, "--epochs")
    assert tree(run) == before


def test_debug_flag_shows_the_traceback(tmp_path):
    with pytest.raises(SflnetError, match="--epochs"):
        main(["--debug", "train", "--epochs", "0", "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------
# Broken and hostile checkpoints given to train --resume (evaluate/reconstruct: tests/test_cli.py)
# ---------------------------------------------------------------------------

def _npz(path, arrays):
    with open(path, "wb") as stream:
        np.savez(stream, **arrays)


def _arrays(path):
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def _with_meta(arrays, change):
    meta = json.loads(str(arrays["meta"]))
    change(meta)
    return dict(arrays, meta=np.array(json.dumps(meta)))


BROKEN = {
    "truncated zip": (lambda good, raw: raw[: len(raw) // 2], "checkpoint.npz"),
    "text file": (lambda good, raw: b"not a checkpoint\n", "not an .npz"),
    "zero bytes": (lambda good, raw: b"", "not an .npz"),
    "plain pickle": (lambda good, raw: pickle.dumps({"w2": 1}), "not an .npz"),
    "missing array": ({"drop": "w4"}, "w4"),
    "missing velocity": ({"drop": "velocity_b3"}, "velocity_b3"),
    "wrong shape": ({"replace": ("w3", np.zeros((16, 32, 5, 5)))}, "shape"),
    "other architecture": ({"meta": lambda m: m["architecture"].update(name="unet")}, "architecture"),
    "other sigma set": ({"meta": lambda m: m["config"].update(sigmas=[1.0, 2.0, 4.0])}, "sigmas"),
    "other loss": ({"meta": lambda m: m["config"].update(loss="pl")}, "loss"),
    "no meta": ({"drop": "meta"}, "meta"),
}


def _make_broken(case, good_path, target):
    how, fragment = BROKEN[case]
    if callable(how):
        target.write_bytes(how(None, good_path.read_bytes()))
        return fragment
    arrays = _arrays(good_path)
    if "drop" in how:
        del arrays[how["drop"]]
    if "replace" in how:
        arrays[how["replace"][0]] = how["replace"][1]
    if "meta" in how:
        arrays = _with_meta(arrays, how["meta"])
    _npz(target, arrays)
    return fragment


def test_resume_refuses_broken_checkpoints_and_changes_nothing(tmp_path, images):
    run = tmp_path / "run"
    assert run_cli(train_args(images, run, 2)).code == 0
    good = tmp_path / "good.npz"
    good.write_bytes((run / "checkpoint.npz").read_bytes())
    for case in BROKEN:
        fragment = _make_broken(case, good, run / "checkpoint.npz")
        before = tree(run)
        result = run_cli(["train", "--out", run, "--resume", "--epochs", "4", "--device", "cpu"])
        line = assert_clean_error(result, "checkpoint.npz", fragment)
        assert str(run) in line, (case, line)
        assert tree(run) == before, case
    (run / "checkpoint.npz").write_bytes(good.read_bytes())
    assert run_cli(["train", "--out", run, "--resume", "--epochs", "3", "--device", "cpu"]).code == 0


class _CreatesMarkerWhenUnpickled:
    """Unpickling this object calls ``open(marker, "w")``, which creates the marker file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("member", ["w2", "velocity_b5", "meta"])
def test_pickled_object_in_npz_is_refused_by_every_command(tmp_path, images, member):
    run = tmp_path / "run"
    assert run_cli(train_args(images, run, 1)).code == 0
    marker = tmp_path / "marker-created-by-unpickling"
    evil = dict(_arrays(run / "checkpoint.npz"))
    evil[member] = np.array([_CreatesMarkerWhenUnpickled(marker)], dtype=object)
    _npz(run / "checkpoint.npz", evil)
    before = tree(run)
    assert_clean_error(run_cli(["evaluate", run / "checkpoint.npz", "--device", "cpu"]), "pickle")
    assert_clean_error(run_cli(["reconstruct", run / "checkpoint.npz", images, "--out", tmp_path / "r",
                                "--device", "cpu"]), "checkpoint.npz", "pickle")
    assert_clean_error(run_cli(["train", "--out", run, "--resume", "--epochs", "2", "--device", "cpu"]),
                       "checkpoint.npz", "pickle")
    assert not marker.exists()
    assert tree(run) == before and not (tmp_path / "r").exists()
    with np.load(run / "checkpoint.npz", allow_pickle=True) as archive:   # control: the payload is armed
        archive[member]
    assert marker.exists()


# ---------------------------------------------------------------------------
# kill -9 at random moments
# ---------------------------------------------------------------------------

def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


def kill_trial(data_path, run, epochs, after_rows, extra_delay):
    """Start ``sflnet train`` in a subprocess, wait until history.csv has ``after_rows`` rows, sleep
    ``extra_delay`` seconds more (a random point inside an epoch: computing, writing history or a
    checkpoint) and kill -9 it. Returns the subprocess's exit status (-9 if it was killed)."""
    args = [str(a) for a in train_args(data_path, run, epochs, "--snapshot-every", "5")]
    process = subprocess.Popen(sflnet_command() + args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (run / "history.csv").exists() and len(history_rows(run)) >= after_rows
                 or process.poll() is not None, 120, f"{after_rows} history rows")
        time.sleep(extra_delay)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode


def test_kill_9_at_random_moments_then_resume_matches_an_uninterrupted_run(tmp_path, images):
    """Three seeded random moments (validation/crash_trials.py runs ten): what is left always loads,
    is finite, and --resume completes to the same history and bit-identical weights."""
    epochs = 40
    reference = tmp_path / "reference"
    assert run_cli(train_args(images, reference, epochs, "--snapshot-every", "5")).code == 0
    rng = np.random.default_rng(2024)
    killed_in_training = 0
    for trial in range(3):
        after_rows, extra_delay = int(rng.integers(1, epochs - 1)), float(rng.uniform(0.0, 0.05))
        run = tmp_path / f"trial{trial}"
        status = kill_trial(images, run, epochs, after_rows, extra_delay)
        loaded = assert_finite_checkpoint(run / "checkpoint.npz")
        complete_rows = [r for r in (run / "history.csv").read_text().splitlines(keepends=True)[1:]
                         if r.endswith("\n")]
        assert after_rows - 1 <= loaded.epoch <= len(complete_rows) <= epochs, (trial, after_rows)
        if status == -signal.SIGKILL:
            killed_in_training += loaded.epoch < epochs
        else:
            assert status == 0, f"trial {trial}: exit status {status}"
        result = run_cli(["train", "--out", run, "--resume", "--device", "cpu"])
        assert result.code == 0, (trial, result)
        assert without_seconds(history_rows(run)) == without_seconds(history_rows(reference)), trial
        assert state_bytes(run / "checkpoint.npz") == state_bytes(reference / "checkpoint.npz"), trial
        assert not list(run.rglob("*.tmp"))
    assert killed_in_training >= 2


def test_killed_before_the_first_checkpoint_says_to_start_again(tmp_path, images):
    """kill -9 during start-up can leave only config.json (found by hand: killing the moment it
    appears); --resume then explains that there is nothing to resume and --overwrite starts again."""
    run = tmp_path / "run"
    assert run_cli(train_args(images, run, 1)).code == 0
    for name in ("checkpoint.npz", "history.csv"):
        (run / name).unlink()
    shutil.rmtree(run / "snapshots")
    shutil.rmtree(run / "checkpoints")
    assert_clean_error(run_cli(["train", "--out", run, "--resume", "--device", "cpu"]),
                       "no checkpoint.npz", "--overwrite")
    assert run_cli(train_args(images, run, 2, "--overwrite")).code == 0
    assert load_checkpoint(run / "checkpoint.npz").epoch == 2


# ---------------------------------------------------------------------------
# SIGINT in a subprocess, exact resume (float64 and float32)
# ---------------------------------------------------------------------------

def _default_sigint():
    """preexec_fn: the child starts with Python's usual SIGINT, as from a terminal, even when this
    test session itself runs with SIGINT ignored (a background job)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _ignored_sigint():
    """preexec_fn: the child starts with SIGINT ignored, as under ``nohup`` or ``cmd &`` in a script."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("dtype, signum, code", [("float64", signal.SIGINT, 130), ("float32", signal.SIGINT, 130),
                                                 ("float64", signal.SIGTERM, 143)])
def test_sigint_saves_flushes_exits_130_and_resume_is_bit_exact(tmp_path, images, dtype, signum, code):
    """Ctrl-C (SIGINT, exit 130) and a scheduler's preemption (SIGTERM, exit 143) both finish the
    epoch, save it, flush history.csv, print the resume command; the resume is bit-exact."""
    epochs = 60
    run, reference = tmp_path / "run", tmp_path / "reference"
    args = [str(a) for a in train_args(images, run, epochs, "--batch-size", "1", "--snapshot-every", "7",
                                       dtype=dtype)]
    process = subprocess.Popen(sflnet_command() + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=_default_sigint)
    try:
        wait_for(lambda: (run / "history.csv").exists() and len(history_rows(run)) >= 3
                 or process.poll() is not None, 120, "three epochs")
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == code, stderr
    assert "Traceback" not in stderr
    loaded = assert_finite_checkpoint(run / "checkpoint.npz")
    k = loaded.epoch
    assert 3 <= k < epochs
    rows = (run / "history.csv").read_text().splitlines(keepends=True)
    assert len(rows) == 1 + k and all(row.endswith("\n") for row in rows)
    assert [int(row.split(",")[0]) for row in rows[1:]] == list(range(1, k + 1))
    assert f"holds epoch {k}" in stderr and f"Resume with: sflnet train --resume --out {run}" in stderr

    resumed = run_cli(["train", "--out", run, "--resume", "--device", "cpu"])
    assert resumed.code == 0, resumed
    assert run_cli(train_args(images, reference, epochs, "--batch-size", "1", "--snapshot-every", "7",
                              dtype=dtype)).code == 0
    assert without_seconds(history_rows(run)) == without_seconds(history_rows(reference))
    # On the CPU the resumed run repeats exactly the same operations: bit-identical in both precisions.
    assert state_bytes(run / "checkpoint.npz") == state_bytes(reference / "checkpoint.npz")
    final = load_checkpoint(run / "checkpoint.npz")
    assert final.epoch == epochs and final.dtype == np.dtype(dtype)
    assert final.meta["rng_state"] == load_checkpoint(reference / "checkpoint.npz").meta["rng_state"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == sorted(
        p.name for p in (reference / "checkpoints").iterdir())


def test_sigint_ignored_at_start_stays_ignored_and_sigterm_still_stops(tmp_path, images):
    """Under nohup (SIGINT ignored at start) sflnet installs no SIGINT handler: a SIGINT changes
    nothing and the run goes on; SIGTERM, not ignored, still saves and exits 143."""
    run = tmp_path / "run"
    args = [str(a) for a in train_args(images, run, 400, "--batch-size", "1", "--snapshot-every", "0")]
    process = subprocess.Popen(sflnet_command() + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=_ignored_sigint)
    try:
        wait_for(lambda: (run / "history.csv").exists() and len(history_rows(run)) >= 2
                 or process.poll() is not None, 120, "two epochs")
        process.send_signal(signal.SIGINT)
        seen = len(history_rows(run))
        wait_for(lambda: len(history_rows(run)) >= seen + 3 or process.poll() is not None, 120,
                 "three more epochs after the ignored SIGINT")
        assert process.poll() is None, "the ignored SIGINT stopped the run"
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 143, stderr
    assert "Interrupt received" not in stderr and "SIGTERM received" in stderr
    k = load_checkpoint(run / "checkpoint.npz").epoch
    assert k >= seen + 3 and len(history_rows(run)) == k
    assert f"Resume with: sflnet train --resume --out {run}" in stderr


# ---------------------------------------------------------------------------
# Disk full, read-only folders
# ---------------------------------------------------------------------------

def test_disk_full_mid_run_keeps_the_previous_checkpoint(tmp_path, images, monkeypatch):
    run = tmp_path / "run"
    real_savez = np.savez
    calls = []

    def savez_on_a_full_disk(stream, **arrays):
        calls.append(1)
        if len(calls) == 4:        # epochs 0, 1, 2 are saved; epoch 3's checkpoint hits a full disk
            stream.write(b"PK\x03\x04 the first bytes")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_savez(stream, **arrays)

    monkeypatch.setattr(np, "savez", savez_on_a_full_disk)
    result = run_cli(train_args(images, run, 5, "--snapshot-every", "0"))
    monkeypatch.undo()
    line = assert_clean_error(result, str(run / "checkpoint.npz"), "No space left on device", "unchanged")
    assert "\n" not in line
    assert assert_finite_checkpoint(run / "checkpoint.npz").epoch == 2
    assert not list(run.rglob("*.tmp"))
    result = run_cli(["train", "--out", run, "--resume", "--device", "cpu"])
    assert result.code == 0, result
    assert load_checkpoint(run / "checkpoint.npz").epoch == 5 and len(history_rows(run)) == 5


def _chmod_makes_read_only(folder):
    """True if a 0o555 folder refuses new files for this user (not so for root)."""
    os.chmod(folder, 0o555)
    probe = folder / ".probe"
    try:
        probe.write_bytes(b"")
    except PermissionError:
        return True
    probe.unlink()
    os.chmod(folder, 0o755)
    return False


def _deny_writes_under(folder, monkeypatch):
    """Emulate a read-only file system under ``folder`` (for root, whom chmod does not stop):
    creating, opening for writing, renaming over or removing anything there raises EROFS."""
    folder = os.path.abspath(folder)

    def inside(path):
        return os.path.abspath(os.fspath(path)).startswith(folder + os.sep) or os.path.abspath(path) == folder

    def refuse(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))

    real_open, real_os_open = builtins.open, os.open
    real_replace, real_remove, real_mkdir, real_rmtree = os.replace, os.remove, os.mkdir, shutil.rmtree

    def fake_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+") and inside(file):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(path):
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    def guarded(real):
        def call(path, *args, **kwargs):
            if inside(path) or (args and isinstance(args[0], (str, os.PathLike)) and inside(args[0])):
                refuse(path)
            return real(path, *args, **kwargs)
        return call

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    monkeypatch.setattr(os, "replace", guarded(real_replace))
    monkeypatch.setattr(os, "remove", guarded(real_remove))
    monkeypatch.setattr(os, "unlink", guarded(real_remove))
    monkeypatch.setattr(os, "mkdir", guarded(real_mkdir))
    monkeypatch.setattr(shutil, "rmtree", guarded(real_rmtree))


def make_read_only(folder, monkeypatch):
    """Make ``folder`` read-only: chmod where that works, otherwise the in-process emulation.
    Returns a function that undoes it."""
    if _chmod_makes_read_only(folder):
        return lambda: os.chmod(folder, 0o755)
    _deny_writes_under(folder, monkeypatch)
    return monkeypatch.undo


def test_read_only_run_folder_is_a_clear_error_and_the_checkpoint_survives(tmp_path, images, monkeypatch):
    run = tmp_path / "run"
    assert run_cli(train_args(images, run, 2, "--snapshot-every", "0")).code == 0
    before = tree(run)
    undo = make_read_only(run, monkeypatch)
    try:
        resumed = run_cli(["train", "--out", run, "--resume", "--epochs", "4", "--device", "cpu"])
        overwritten = run_cli(train_args(images, run, 4, "--overwrite"))
    finally:
        undo()
    for result in (resumed, overwritten):
        line = assert_clean_error(result, str(run))
        assert "Read-only file system" in line or "Permission denied" in line, line
    assert tree(run) == before
    assert load_checkpoint(run / "checkpoint.npz").epoch == 2
    assert run_cli(["train", "--out", run, "--resume", "--epochs", "3", "--device", "cpu"]).code == 0


def test_read_only_parent_folder_for_a_new_run(tmp_path, images, monkeypatch):
    parent = tmp_path / "locked"
    parent.mkdir()
    undo = make_read_only(parent, monkeypatch)
    try:
        result = run_cli(train_args(images, parent / "run", 2))
    finally:
        undo()
    line = assert_clean_error(result, str(parent / "run"))
    assert "Read-only file system" in line or "Permission denied" in line, line
    assert not (parent / "run").exists()


def test_unwritable_curves_png_is_a_warning_not_a_lost_run(tmp_path, images, monkeypatch):
    """The figure is drawn last; failing to write it must not hide that the run completed."""
    run = tmp_path / "run"
    from sflnet import figures

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(figures, "plot_curves", full_disk)
    result = run_cli(train_args(images, run, 2))
    assert result.code == 0 and "Traceback" not in result.output, result
    assert "warning: cannot write" in result.stderr and "curves.png" in result.stderr
    assert load_checkpoint(run / "checkpoint.npz").epoch == 2
