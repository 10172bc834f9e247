"""The training run in-process: Ctrl-C (one and two SIGINTs), a full disk mid-run, history
truncation, mini-batch rows and option validation. Tiny images, CPU, float64."""

import errno
import os
import signal

import numpy as np
import pytest
from PIL import Image

from sflnet.io import checkpoint as ck
from sflnet.training import config, history, signals, trainer
from sflnet.training.run import run_training
from sflnet.training.callbacks import Reporter
from sflnet.errors import SflnetError
from sflnet.models.cae import PARAM_NAMES


def write_images(folder, sizes=((9, 12), (10, 10)), seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(folder / f"img{index}.png")
    return folder


@pytest.fixture
def options(tmp_path):
    folder = write_images(tmp_path / "imgs")
    return config.TrainOptions(data=(str(folder),), size=0, epochs=5, device="cpu", dtype="float64",
                               snapshot_every=0)


def history_without_seconds(path):
    with open(path) as stream:
        return [line.rsplit(",", 1)[0] for line in stream]


def final_state(path):
    loaded = ck.load_checkpoint(path)
    return {n: (loaded.params[n].tobytes(), loaded.velocity[n].tobytes()) for n in PARAM_NAMES}


class SigintAfter(Reporter):
    """Sends ``count`` SIGINTs to this process after epoch ``epoch`` has been reported."""

    def __init__(self, epoch, count=1):
        self.at, self.count, self.notes = epoch, count, []

    def epoch(self, row):
        if row["epoch"] == self.at:
            for _ in range(self.count):
                os.kill(os.getpid(), signal.SIGINT)

    def note(self, message):
        self.notes.append(message)


def test_sigint_finishes_the_epoch_then_resume_is_exact(tmp_path, options, default_sigint):
    reference = run_training(options, tmp_path / "ref")
    assert reference.status == "completed" and reference.epoch == 5

    before = signal.getsignal(signal.SIGINT)
    reporter = SigintAfter(epoch=2)
    result = run_training(options, tmp_path / "run", reporter=reporter)
    assert result.status == "interrupted" and result.epoch == 2
    assert any("Ctrl-C" in note for note in reporter.notes)
    assert len(history_without_seconds(tmp_path / "run" / "history.csv")) == 1 + 2
    assert signal.getsignal(signal.SIGINT) is before

    resumed = run_training(out=tmp_path / "run", resume=True)
    assert resumed.status == "completed" and resumed.epoch == 5
    assert history_without_seconds(tmp_path / "run" / "history.csv") == \
        history_without_seconds(tmp_path / "ref" / "history.csv")
    assert final_state(tmp_path / "run" / "checkpoint.npz") == final_state(tmp_path / "ref" / "checkpoint.npz")


def test_second_sigint_abandons_the_epoch_in_progress(tmp_path, options, monkeypatch, default_sigint):
    """Two SIGINTs during epoch 3's step: the step is abandoned, checkpoint.npz stays at epoch 2."""
    real_step = trainer.train_step
    calls = []

    def step(*args):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(*args)

    monkeypatch.setattr(trainer, "train_step", step)
    result = run_training(options, tmp_path / "run")
    assert result.status == "interrupted" and result.epoch == 2
    assert ck.load_checkpoint(tmp_path / "run" / "checkpoint.npz").epoch == 2
    monkeypatch.undo()
    run_training(options, tmp_path / "ref")
    run_training(out=tmp_path / "run", resume=True)
    assert final_state(tmp_path / "run" / "checkpoint.npz") == final_state(tmp_path / "ref" / "checkpoint.npz")


def test_disk_full_mid_run_keeps_the_last_checkpoint_and_resume_recovers(tmp_path, options, monkeypatch):
    real_savez = ck.np.savez
    calls = []

    def savez(stream, **arrays):
        calls.append(1)
        if len(calls) == 4:          # epoch 0, 1, 2 saved; epoch 3 hits a full disk
            stream.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_savez(stream, **arrays)

    monkeypatch.setattr(ck.np, "savez", savez)
    with pytest.raises(SflnetError, match="No space left"):
        run_training(options, tmp_path / "run")
    monkeypatch.undo()
    run = tmp_path / "run"
    assert ck.load_checkpoint(run / "checkpoint.npz").epoch == 2
    assert not [p for p in os.listdir(run) if p.endswith(".tmp")]
    run_training(options, tmp_path / "ref")
    resumed = run_training(out=run, resume=True)   # history row 3 (written before the failure) is dropped
    assert resumed.status == "completed"
    assert history_without_seconds(run / "history.csv") == history_without_seconds(tmp_path / "ref" / "history.csv")
    assert final_state(run / "checkpoint.npz") == final_state(tmp_path / "ref" / "checkpoint.npz")


def test_minibatch_row_is_the_image_weighted_mean_of_the_steps(tmp_path, options):
    """With a learning rate so small that no step changes a float64 parameter, every step measures the
    same network, so the row of a batch-size-1 epoch must equal the full-batch loss."""
    tiny = config.TrainOptions(**{**options.__dict__, "epochs": 1, "lr": 1e-300})
    full = run_training(tiny, tmp_path / "full").last_row
    mini = run_training(config.TrainOptions(**{**tiny.__dict__, "batch_size": 1}), tmp_path / "mini").last_row
    for key in ("E", "E_PL", "E_SFL", "sfl_0.8", "sfl_1.6", "sfl_3.2"):
        assert mini[key] == pytest.approx(full[key], rel=1e-13)


def test_truncate_history_drops_rows_after_the_checkpoint(tmp_path):
    path = tmp_path / "history.csv"
    columns = history.history_columns((0.8, 1.6, 3.2))
    header = ",".join(columns) + "\n"
    rows = [f"{k},1.5,0.5,1.0,0.1,0.2,0.3,0.01\n" for k in range(1, 6)]
    path.write_text(header + "".join(rows) + "6,1.5,0.")   # a line cut by a crash
    history.truncate_history(path, columns, 3)
    assert path.read_text() == header + "".join(rows[:3])
    with pytest.raises(SflnetError, match="rows 1..4"):
        history.truncate_history(path, columns, 4)
    with pytest.raises(SflnetError, match="header"):
        history.truncate_history(path, history.history_columns((0.8, 1.6)), 2)


def test_leftover_temporary_files_are_removed_by_resume_and_overwrite(tmp_path, options):
    run = tmp_path / "run"
    run_training(config.TrainOptions(**{**options.__dict__, "epochs": 2}), run)
    garbage = run / ".checkpoint.npz.abc123.tmp"      # what a kill -9 during a write leaves
    garbage.write_bytes(b"PK\x03\x04 half a zip")
    assert run_training(out=run, resume=True, overrides={"epochs": 3}).status == "completed"
    assert ck.load_checkpoint(run / "checkpoint.npz").epoch == 3
    assert not garbage.exists()
    garbage.write_bytes(b"PK\x03\x04 half a zip")
    run_training(options, run, overwrite=True)
    assert not garbage.exists()


def test_options_round_trip_and_validation():
    options = config.TrainOptions(sigmas=(1.0, 2.0), sfl_weights=(5.0, 0.0), epochs=7).validate()
    assert config.TrainOptions.from_config(options.to_config()) == config.TrainOptions(
        **{**options.__dict__, "snapshot_every": 1})
    assert [e for e in range(1, 8) if options.is_snapshot_epoch(e)] == [1, 2, 3, 4, 5, 6, 7]
    every3 = config.TrainOptions(epochs=10, snapshot_every=3)
    assert [e for e in range(1, 11) if every3.is_snapshot_epoch(e)] == [3, 6, 9, 10]
    final_only = config.TrainOptions(epochs=10, snapshot_every=0)
    assert [e for e in range(1, 11) if final_only.is_snapshot_epoch(e)] == [10]
    for bad in [dict(epochs=True), dict(lr=float("inf")), dict(seed=-1), dict(pl_weights=(1.0, 1.0))]:
        with pytest.raises(SflnetError):
            config.TrainOptions(**bad).validate()


def test_an_ignored_sigint_is_left_alone_and_sigterm_is_caught():
    """nohup/`&` start a job with SIGINT ignored: graceful_interrupts installs no SIGINT handler then,
    but still catches SIGTERM; both handlers are restored afterwards."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    term_before = signal.getsignal(signal.SIGTERM)
    try:
        with signals.graceful_interrupts(Reporter()) as flag:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            assert not flag.requested
            os.kill(os.getpid(), signal.SIGTERM)
            assert flag.requested and flag.signal_number == signal.SIGTERM
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is term_before
    finally:
        signal.signal(signal.SIGINT, previous)
