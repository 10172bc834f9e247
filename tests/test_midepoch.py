"""Stops and checkpoints in the middle of an epoch (issue 34, part 2).

With mini-batches a stop request (SIGINT, SIGTERM, ``Trainer.request_stop``) ends training after the
current step with a mid-epoch checkpoint, and ``--resume`` continues bit for bit: the float64 history,
the parameters, the optimiser state and the generator equal an uninterrupted run's. So does a run
killed (SIGKILL) after a periodic ``--checkpoint-every`` checkpoint. Covered: a CAE folder run, a VAE
run, a store (``sflnet prepare``), in-process (stops placed at an exact step by a callback) and through
the installed console script; ``mpiexec -n 2`` with the signal on one rank only; an old run folder
(epoch-end checkpoint, no ``checkpoint_every`` option); full batch stops at the epoch's end as before.

Everything runs on the CPU in float64 on tiny images, with OMP_NUM_THREADS=1 in the subprocesses.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from sflnet.io.checkpoint import load_checkpoint
from sflnet.training import run as run_module
from sflnet.training.callbacks import Callback
from sflnet_cli.main import main

TIMEOUT = 180
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
try:
    import mpi4py  # noqa: F401
    HAVE_MPI = MPIEXEC is not None
except ImportError:
    HAVE_MPI = False


def _find_script():
    beside = Path(sys.executable).with_name("sflnet")
    return str(beside) if beside.is_file() else shutil.which("sflnet")


SCRIPT = _find_script()


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

def run_cli(args):
    """``sflnet ARGS`` in this process through the real ``main``: (exit status, stdout, stderr)."""
    runner = CliRunner()
    code = 0
    with runner.isolation() as (out, err, _):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        return code, out.getvalue().decode(), err.getvalue().decode()


def _env(**extra):
    return dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MPLBACKEND="Agg", **extra)


def run_process(args, ranks=None, script=None, env=None):
    """sflnet ARGS in a subprocess (``script`` instead of the entry point; under ``mpiexec -n ranks``)."""
    entry = [sys.executable, str(script)] if script else [sys.executable, "-m", "sflnet_cli.main"]
    command = ([MPIEXEC, "-n", str(ranks)] if ranks else []) + entry + [str(a) for a in args]
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=_env(**(env or {})))


def make_images(folder, count, side=12, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (side, side + i % 3, 3), dtype=np.uint8)).save(folder / f"im{i:02d}.png")
    return folder


def history_lines(run):
    """history.csv's rows without the ``seconds`` column (exact text: repr of float64)."""
    lines = (Path(run) / "history.csv").read_text().splitlines()
    return [line.rsplit(",", 1)[0] for line in lines]


def state(run):
    """Every array of checkpoint.npz as bytes, and the meta entries a resume must reproduce."""
    with np.load(Path(run) / "checkpoint.npz", allow_pickle=False) as archive:
        arrays = {k: archive[k].tobytes() for k in archive.files if k != "meta"}
        meta = json.loads(str(archive["meta"]))
    return arrays, {k: meta.get(k) for k in ("epoch", "rng_state", "optimizer", "partial_epoch")}


def assert_same_run(run, reference):
    assert history_lines(run) == history_lines(reference)
    assert state(run) == state(reference)


class StopAt(Callback):
    """Asks to stop after step ``step`` of epoch ``epoch``: by a real SIGTERM to this process (the
    handler the CLI installs), or by ``Trainer.request_stop``."""

    def __init__(self, epoch, step, how="signal"):
        self.epoch, self.step, self.how = epoch, step, how

    def on_step_end(self, trainer, epoch, result):
        if (epoch, trainer.epoch_step) == (self.epoch, self.step):
            if self.how == "signal":
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                trainer.request_stop(signal.SIGTERM)


def with_callback(monkeypatch, callback):
    """The next run's default callbacks, with ``callback`` added (after the divergence guard is fine)."""
    real = run_module.default_callbacks
    monkeypatch.setattr(run_module, "default_callbacks", lambda *a, **k: [*real(*a, **k), callback])


def stopped_cli(monkeypatch, args, epoch, step, how="signal"):
    """``sflnet ARGS`` in-process, stopped after step ``step`` of epoch ``epoch``: (status, stderr)."""
    with monkeypatch.context() as patch:
        with_callback(patch, StopAt(epoch, step, how))
        code, _, err = run_cli(args)
    return code, err


def assert_stopped_mid_epoch(run, code, err, epoch, step, steps):
    """Exit 143, history.csv holds epochs 1..epoch-1, checkpoint.npz the partial epoch at ``step``."""
    assert code == 143, err
    assert "Traceback" not in err
    assert f"Interrupted in epoch {epoch} after step {step} of {steps}" in err, err
    assert len(history_lines(run)) == 1 + (epoch - 1)
    loaded = load_checkpoint(Path(run) / "checkpoint.npz")
    assert loaded.epoch == epoch - 1 and loaded.meta["format_version"] == 4
    assert (loaded.partial["epoch"], loaded.partial["steps_done"], loaded.partial["steps"]) == (epoch, step, steps)
    assert loaded.partial["rows"].shape == (step, len(loaded.partial["columns"]))
    return loaded


# ---------------------------------------------------------------------------
# (1) In-process: stop after step k of epoch e, resume, compare bit for bit
# ---------------------------------------------------------------------------

@pytest.fixture
def folder(tmp_path):
    return make_images(tmp_path / "images", 7)


def cae_args(data, out, epochs, *extra):
    return ["train", "--data", data, "--size", "0", "--epochs", epochs, "--batch-size", "2", "--dtype", "float64",
            "--device", "cpu", "--snapshot-every", "2", "--out", out, *extra]


def test_cae_folder_stopped_twice_in_one_epoch_resumes_bit_for_bit(tmp_path, folder, monkeypatch):
    """7 images in steps of 2: 4 steps an epoch. Stopped after step 1 of epoch 2 by SIGTERM, resumed and
    stopped again after step 3 of the same epoch (its first step then comes from the checkpoint), resumed
    to the end: the same history, parameters, velocity, generator and step count as one run. The
    stopped run also writes time-based periodic checkpoints after every step (0.001s), which change no number."""
    run, reference = tmp_path / "run", tmp_path / "reference"
    assert run_cli(cae_args(folder, reference, 3))[0] == 0
    code, err = stopped_cli(monkeypatch, cae_args(folder, run, 3, "--checkpoint-every", "0.001s"), 2, 1)
    assert_stopped_mid_epoch(run, code, err, 2, 1, 4)
    assert "SIGTERM received: stopping after the current step (send SIGTERM again to stop at once)" in err
    code, err = stopped_cli(monkeypatch, ["train", "--resume", "--out", run], 2, 3, how="request")
    assert_stopped_mid_epoch(run, code, err, 2, 3, 4)
    # A resume that would end before the epoch in progress is refused, and changes nothing.
    before = state(run)
    code, _, err = run_cli(["train", "--resume", "--out", run, "--epochs", "1"])
    assert code == 1 and "in the middle of epoch 2 (step 3 of 4)" in err and "--epochs 2 or more" in err
    assert state(run) == before
    code, _, err = run_cli(["train", "--resume", "--out", run])
    assert code == 0, err
    assert_same_run(run, reference)
    resumes = json.loads((run / "config.json").read_text())["resumes"]
    assert [(r["from_epoch"], r.get("from_step")) for r in resumes] == [(1, 1), (1, 3)]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch_0002.npz", "epoch_0003.npz"]


def test_vae_stopped_in_its_first_epoch_resumes_bit_for_bit(tmp_path, monkeypatch):
    """The VAE draws ε from the shuffling generator at every step and Adam counts its steps: both must
    continue from the checkpoint. 100 digits in steps of 10; stopped after step 4 of epoch 1 (no epoch
    finished: history.csv has its header only)."""
    args = ["--model", "vae", "--train-images", "100", "--batch-size", "10", "--epochs", "2", "--dtype", "float64",
            "--device", "cpu", "--snapshot-every", "0"]
    run, reference = tmp_path / "run", tmp_path / "reference"
    assert run_cli(["train", *args, "--out", reference])[0] == 0
    code, err = stopped_cli(monkeypatch, ["train", *args, "--out", run], 1, 4)
    loaded = assert_stopped_mid_epoch(run, code, err, 1, 4, 10)
    assert "no finished epoch" in err and loaded.optimizer_step == 4
    code, _, err = run_cli(["train", "--resume", "--out", run])
    assert code == 0, err
    assert_same_run(run, reference)


def test_store_stopped_mid_epoch_resumes_bit_for_bit(tmp_path, monkeypatch):
    """A store made by ``sflnet prepare`` is streamed by a prefetch thread: a resume starts it at the
    next step of the same order. 9 images in steps of 4 (4, 4, 1); stopped after step 2 of epoch 2."""
    source = make_images(tmp_path / "images", 9, side=16)
    store = tmp_path / "images.store"
    code, _, err = run_cli(["prepare", source, "--size", "16", "--out", store])
    assert code == 0, err
    args = ["--data", store, "--epochs", "3", "--batch-size", "4", "--dtype", "float64", "--device", "cpu",
            "--snapshot-every", "0"]
    run, reference = tmp_path / "run", tmp_path / "reference"
    assert run_cli(["train", *args, "--out", reference])[0] == 0
    code, err = stopped_cli(monkeypatch, ["train", *args, "--out", run], 2, 2)
    assert_stopped_mid_epoch(run, code, err, 2, 2, 3)
    code, _, err = run_cli(["train", "--resume", "--out", run])
    assert code == 0, err
    assert_same_run(run, reference)


def test_full_batch_still_stops_at_the_end_of_the_epoch(tmp_path, folder, monkeypatch):
    """One step an epoch: a stop request during epoch 2 ends it as before, with an epoch-end checkpoint."""
    run = tmp_path / "run"
    args = ["train", "--data", folder, "--size", "0", "--epochs", "5", "--dtype", "float64", "--device", "cpu",
            "--out", run]
    code, err = stopped_cli(monkeypatch, args, 2, 1)
    assert code == 143 and "stopping after the current epoch" in err, err
    assert "holds epoch 2 and history.csv is flushed" in err
    loaded = load_checkpoint(run / "checkpoint.npz")
    assert loaded.epoch == 2 and loaded.partial is None and loaded.meta["format_version"] == 3
    assert len(history_lines(run)) == 3


def test_a_second_signal_during_the_checkpoint_write_waits_for_it(tmp_path, folder, monkeypatch):
    """The second SIGTERM arrives while the stop's checkpoint is being written: the write completes (the
    signal is held), then the run stops; the checkpoint is the mid-epoch one, whole, and resumes exactly."""
    run, reference = tmp_path / "run", tmp_path / "reference"
    real_savez = np.savez

    def savez_with_a_second_signal(stream, **arrays):
        if "partial_rows" in arrays:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_savez(stream, **arrays)

    with monkeypatch.context() as patch:
        patch.setattr(np, "savez", savez_with_a_second_signal)
        code, err = stopped_cli(monkeypatch, cae_args(folder, run, 3), 1, 2)
    assert_stopped_mid_epoch(run, code, err, 1, 2, 4)
    assert not list(run.rglob("*.tmp"))
    assert run_cli(["train", "--resume", "--out", run])[0] == 0
    assert run_cli(cae_args(folder, reference, 3))[0] == 0
    assert_same_run(run, reference)


# ---------------------------------------------------------------------------
# (4) An old run folder (epoch-end checkpoint, no checkpoint_every) still resumes
# ---------------------------------------------------------------------------

def test_an_old_run_folder_with_an_epoch_end_checkpoint_still_resumes(tmp_path, folder):
    """A run folder written before mid-epoch checkpoints: config.json and the checkpoint's config have no
    ``checkpoint_every``, the checkpoint is format 3. It resumes (with the default) to the same numbers."""
    old, reference = tmp_path / "old", tmp_path / "reference"
    assert run_cli(cae_args(folder, old, 2))[0] == 0
    assert run_cli(cae_args(folder, reference, 4))[0] == 0
    config = json.loads((old / "config.json").read_text())
    del config["options"]["checkpoint_every"]
    (old / "config.json").write_text(json.dumps(config, indent=2))
    with np.load(old / "checkpoint.npz", allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(str(arrays["meta"]))
    assert meta["format_version"] == 3 and "partial_epoch" not in meta
    del meta["config"]["checkpoint_every"]
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(old / "checkpoint.npz", **arrays)
    code, _, err = run_cli(["train", "--resume", "--out", old, "--epochs", "4"])
    assert code == 0, err
    assert_same_run(old, reference)
    assert json.loads((old / "config.json").read_text())["options"]["checkpoint_every"] == "10m"


@pytest.mark.parametrize("value", ["10", "0s", "1.5steps", "ten minutes", "-5m"])
def test_a_bad_checkpoint_every_is_a_one_line_error(tmp_path, folder, value):
    code, out, err = run_cli(cae_args(folder, tmp_path / "run", 1, "--checkpoint-every", value))
    errors = [line for line in (out + err).splitlines() if line.startswith("Error:")]
    assert code == 1 and len(errors) == 1 and "--checkpoint-every" in errors[0], err
    assert "Traceback" not in out + err and not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------
# (2) The installed console script: SIGTERM mid-epoch, exit 143, resume
# ---------------------------------------------------------------------------

def _default_stop_signals():
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def sigterm_during_epoch_2(command, run, cwd):
    """Start ``command``; once history.csv has a row, wait about half an epoch and send SIGTERM.
    Returns (exit status, stderr, seconds from the signal to the exit)."""
    process = subprocess.Popen(command, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=_default_stop_signals)  # noqa: PLW1509 (no threads here)
    try:
        deadline = time.monotonic() + TIMEOUT
        history = run / "history.csv"
        start_rows = len(history.read_text().splitlines()) if history.is_file() else 1
        while not (history.is_file() and len(history.read_text().splitlines()) > start_rows):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no epoch was logged in time"
            time.sleep(0.01)
        seconds = float(history.read_text().splitlines()[-1].rsplit(",", 1)[1])
        time.sleep(0.5 * seconds)
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=TIMEOUT)
        return process.returncode, stderr, time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.skipif(SCRIPT is None, reason="the sflnet console script is not installed")
def test_sigterm_through_the_console_script_stops_mid_epoch_and_resumes_bit_for_bit(tmp_path):
    """SIGTERM half-way through an epoch of 12 steps: exit 143 after the current step, a mid-epoch
    checkpoint that agrees with history.csv; ``sflnet train --resume`` finishes the run, equal to an
    uninterrupted one bit for bit. (Should a signal land in an epoch's last step, that is an epoch-end
    stop: the run is resumed and signalled again, up to four times.)"""
    images = make_images(tmp_path / "images", 12, side=20)
    run, reference = tmp_path / "run", tmp_path / "reference"
    args = ["train", "--data", images, "--size", "0", "--epochs", "30", "--batch-size", "1", "--dtype", "float64",
            "--device", "cpu", "--snapshot-every", "0"]
    command = [SCRIPT, *map(str, args), "--out", str(run)]
    stops = []
    for _ in range(4):
        code, stderr, seconds = sigterm_during_epoch_2(command, run, tmp_path)
        assert code == 143, stderr
        assert "Traceback" not in stderr and "SIGTERM received: stopping after the current step" in stderr
        loaded = load_checkpoint(run / "checkpoint.npz")
        assert len(history_lines(run)) == 1 + loaded.epoch
        stops.append((loaded.epoch, loaded.partial and loaded.partial["steps_done"], round(seconds, 2)))
        if loaded.partial is not None:
            assert 1 <= loaded.partial["steps_done"] < 12 and loaded.partial["epoch"] == loaded.epoch + 1
            assert f"after step {loaded.partial['steps_done']} of 12" in stderr
            assert f"Resume with: sflnet train --resume --out {run}" in stderr
            break
        command = [SCRIPT, "train", "--resume", "--out", str(run)]
    else:
        pytest.fail(f"no SIGTERM landed in the middle of an epoch: {stops}")
    done = subprocess.run([SCRIPT, "train", "--resume", "--out", str(run)], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert subprocess.run([SCRIPT, *map(str, args), "--out", str(reference)], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=TIMEOUT).returncode == 0
    assert_same_run(run, reference)


# ---------------------------------------------------------------------------
# (5) A periodic checkpoint by steps, then SIGKILL: the resume starts from it exactly
# ---------------------------------------------------------------------------

KILL_AT_STEP = """
    import os, signal, sys
    from sflnet.training import trainer
    kill_at = int(os.environ["KILL_AT_STEP"])
    real_step, calls = trainer.train_step, []
    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_step(*args, **kwargs)
    trainer.train_step = step
    from sflnet_cli.main import main
    main(sys.argv[1:])
"""


def test_a_kill_after_a_periodic_checkpoint_resumes_from_it_exactly(tmp_path, folder):
    """``--checkpoint-every 3steps`` with 4 steps an epoch writes checkpoint.npz after global steps 3
    (epoch 1, step 3) and 6 (epoch 2, step 2) besides the epoch ends; SIGKILL as step 8 starts
    leaves the one of step 6, which the resume continues to the uninterrupted run's numbers."""
    script = tmp_path / "kill.py"
    script.write_text(textwrap.dedent(KILL_AT_STEP))
    run, reference = tmp_path / "run", tmp_path / "reference"
    killed = run_process(cae_args(folder, run, 3, "--checkpoint-every", "3steps"), script=script,
                         env={"KILL_AT_STEP": "8"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    loaded = load_checkpoint(run / "checkpoint.npz")
    assert loaded.epoch == 1 and loaded.optimizer_step == 6
    assert (loaded.partial["epoch"], loaded.partial["steps_done"]) == (2, 2)
    assert len(history_lines(run)) == 2       # header and epoch 1: they agree with the checkpoint
    resumed = run_process(["train", "--resume", "--out", run])
    assert resumed.returncode == 0, resumed.stderr
    assert run_cli(cae_args(folder, reference, 3, "--checkpoint-every", "0"))[0] == 0
    assert_same_run(run, reference)


# ---------------------------------------------------------------------------
# (3) mpiexec -n 2: a SIGTERM on rank 1 only stops both ranks after the same step
# ---------------------------------------------------------------------------

SIGTERM_ON_RANK_1 = """
    import os, signal, sys
    from sflnet.training import trainer
    rank = int(os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0")))
    stop_at = int(os.environ.get("STOP_AT_STEP", "0"))
    real_step, calls = trainer.train_step, []
    def step(*args, **kwargs):
        result = real_step(*args, **kwargs)
        calls.append(1)
        if rank == 1 and len(calls) == stop_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return result
    trainer.train_step = step
    from sflnet_cli.main import main
    main(sys.argv[1:])
"""


@pytest.mark.skipif(not HAVE_MPI, reason="mpi4py/mpiexec not installed (pip install '.[mpi]')")
def test_mpi_stop_on_one_rank_mid_epoch_and_resume_equal_an_uninterrupted_run(tmp_path):
    """8 images in steps of 2 (4 steps an epoch, one image per rank and step). Rank 1 alone gets SIGTERM
    after step 6 (epoch 2, step 2): every rank stops after that step, rank 0 writes the mid-epoch
    checkpoint; ``mpiexec -n 2 … --resume`` then equals an uninterrupted ``mpiexec -n 2`` run bit for bit."""
    images = make_images(tmp_path / "images", 8)
    script = tmp_path / "stop.py"
    script.write_text(textwrap.dedent(SIGTERM_ON_RANK_1))
    run, reference = tmp_path / "run", tmp_path / "reference"
    args = ["train", "--data", images, "--size", "0", "--epochs", "3", "--batch-size", "2", "--dtype", "float64",
            "--device", "cpu", "--snapshot-every", "0"]
    done = run_process([*args, "--out", reference], ranks=2, script=script)
    assert done.returncode == 0, done.stderr
    stopped = run_process([*args, "--out", run], ranks=2, script=script, env={"STOP_AT_STEP": "6"})
    assert stopped.returncode == 143, stopped.stderr
    assert stopped.stderr.count("Interrupted in epoch 2 after step 2 of 4") == 1, stopped.stderr   # rank 0 speaks
    loaded = load_checkpoint(run / "checkpoint.npz")
    assert loaded.epoch == 1 and (loaded.partial["epoch"], loaded.partial["steps_done"]) == (2, 2)
    assert len(history_lines(run)) == 2
    resumed = run_process(["train", "--resume", "--out", run], ranks=2, script=script)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(run, reference)
