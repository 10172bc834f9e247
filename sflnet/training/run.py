"""A training run on disk: fresh or resumed, locked, under MPI or not (:func:`run_training`).

The run folder is described in :mod:`sflnet.training.run_folder`, its history.csv in
:mod:`sflnet.training.history`, the loop in :mod:`sflnet.training.trainer` and what happens at
an epoch's end in :mod:`sflnet.training.callbacks`.

Epoch numbering
---------------
Epoch k (1-based) is the k-th pass over the training data. Its forward pass
measures the losses with the parameters after k−1 updates; then the update
is applied. So:

* ``history.csv`` row ``epoch = k`` holds the losses measured **before**
  epoch k's update (parameters after k−1 updates);
* the checkpoint of epoch k (``checkpoint.npz`` with meta ``epoch = k``, or
  ``checkpoints/epoch_k.npz``) holds the parameters **after** k updates; the
  loss of exactly that state is logged in row k+1. Epoch 0 is the
  initialisation, saved before training starts;
* ``snapshots/epoch_k/`` shows the reconstructions of the checkpoint of epoch k.

Robustness
----------
* Everything is validated, the device selected and the data loaded before
  anything is written.
* ``checkpoint.npz`` is rewritten atomically after every epoch and only with
  finite values, so a crash or ``kill -9`` at any moment leaves a loadable
  checkpoint of the last completed epoch; with mini-batches also in the middle of an
  epoch, at most every ``--checkpoint-every`` (default 10 minutes), so a crash loses
  minutes, not an epoch (:mod:`sflnet.training.trainer`).
* ``resume`` continues exactly: the checkpoint holds parameters, the optimiser's
  state and the shuffling RNG state (and, mid-epoch, the epoch's order and its finished
  steps' losses); ``history.csv`` rows after the checkpoint's epoch (left by a crash) are
  dropped. Resuming refuses data or settings that differ from ``config.json``.
* Ctrl-C (SIGINT) or SIGTERM asks the loop to stop after the current step (with
  mini-batches; a mid-epoch checkpoint is written) or epoch (full batch); a second one
  abandons the step at once. Either way ``checkpoint.npz`` and history.csv agree and
  :func:`run_training` returns ``"interrupted"``.
* A NaN/Inf loss or parameter stops training with an :class:`SflnetError`
  suggesting a smaller learning rate; ``checkpoint.npz`` keeps the last good
  epoch.
* The run folder is locked (:class:`sflnet.training.runlock.RunLock`) while a run uses it.
"""

import contextlib
import os
import time
from dataclasses import dataclass, field

import numpy as np

from sflnet import __version__
from sflnet.backend import device_name, select_device, to_device, use_device_for_rank
from sflnet.io.checkpoint import EPOCH_MEANING, load_checkpoint, write_text_atomic
from sflnet.errors import SflnetError
from sflnet.ops.threads import get_num_threads, set_num_threads
from sflnet.training.callbacks import Reporter, default_callbacks
from sflnet.training.config import CONFIG_VERSION, TrainOptions, key_options, merge_resume_options
from sflnet.training.data import check_image_sizes, check_same_data, describe_data, load_training_data
from sflnet.training.distributed import check_shardable, current_world, local_size
from sflnet.training.history import truncate_history
from sflnet.training.run_folder import RunFolder, check_output_folder, now, read_config, write_config
from sflnet.training.runlock import RunLock
from sflnet.training.trainer import Trainer, collectively, restore_progress

SHUFFLE_STREAM = 1           # mini-batch RNG: numpy.random.default_rng((seed, SHUFFLE_STREAM))


@dataclass
class RunResult:
    """What :func:`run_training` did.

    status:  "completed", "interrupted" or "up-to-date" (resume with nothing left to do)
    epoch:   the epoch of the last saved checkpoint.npz (whole epochs applied; a mid-epoch
             checkpoint's steps of the next are ``extra["saved_step"]``: (steps done, steps))
    folder:  the run folder (absolute path)
    last_row: the last history row written (dict) or None
    options: the effective :class:`TrainOptions`
    """

    status: str
    epoch: int
    folder: str
    last_row: dict = None
    options: TrainOptions = None
    seconds: float = 0.0
    history_rows: int = 0
    extra: dict = field(default_factory=dict)


def _start_fresh(folder, options, dataset, xp, reporter, command, world):
    """Create the run folder (rank 0): config.json and the history.csv header; returns the :class:`Trainer`
    (its callbacks write the epoch-0 checkpoint and the originals when the loop starts)."""
    config = {
        "config_version": CONFIG_VERSION,
        "sflnet_version": __version__,
        "created": now(),
        "command": command,
        "options": options.to_config(),
        "device_name": device_name(xp),
        "dtype": options.dtype,
        "data": describe_data(dataset),
        "history_columns": options.history_columns,
        "epoch_meaning": EPOCH_MEANING,
        "resumes": [],
    }
    if world.distributed:
        config["mpi_ranks"] = world.size
    if world.is_root:
        try:
            os.makedirs(folder.path, exist_ok=True)
            if folder.state() == "run":
                folder.remove_run_files()   # only reached with --overwrite (checked before)
        except OSError as exc:
            raise SflnetError(f"cannot prepare run folder {folder.path}: {exc.strerror or exc}") from None
        write_config(folder, config)
        write_text_atomic(folder.history, ",".join(options.history_columns) + "\n", what="history")
    params = options.spec.init(options, xp)
    rng = np.random.default_rng((options.seed, SHUFFLE_STREAM))
    callbacks = _callbacks(folder, options, reporter, config, dataset)
    return Trainer(options, dataset, xp, params, {}, rng, 0, reporter, callbacks, world=world)


def _callbacks(folder, options, reporter, config, dataset):
    """The callbacks of a run (:func:`sflnet.training.callbacks.default_callbacks`); the checkpoints' config
    is the options plus the data fingerprint and the number of images."""
    checkpoint_config = dict(options.to_config(), data_sha256=config["data"]["sha256"], n_images=len(dataset))
    return default_callbacks(folder, options, reporter, checkpoint_config, len(dataset))


def _read_resume(folder, overrides, warn, world):
    """What every rank reads to resume: (options, config, checkpoint, dataset, xp); dataset is None
    when the run is already at ``--epochs``. Writes nothing."""
    config = read_config(folder)
    saved = TrainOptions.from_config(config["options"], where=folder.config,
                                     legacy="config_version" not in config)
    options = merge_resume_options(saved, overrides, folder.config)
    xp = _select_device(options.device, world)
    expect = {key: options.to_config()[key] for key in key_options()}
    expect["data_sha256"] = config["data"].get("sha256")
    checkpoint = load_checkpoint(folder.checkpoint, expect=expect)
    if checkpoint.epoch > options.epochs:
        raise SflnetError(f"{folder.checkpoint} is already at epoch {checkpoint.epoch}, beyond --epochs "
                          f"{options.epochs}")
    partial = checkpoint.partial
    if partial is not None and partial["epoch"] > options.epochs:
        raise SflnetError(f"{folder.checkpoint} is in the middle of epoch {partial['epoch']} (step "
                          f"{partial['steps_done']} of {partial['steps']}), beyond --epochs {options.epochs}; "
                          f"resume with --epochs {partial['epoch']} or more")
    if checkpoint.epoch == options.epochs:
        return options, config, checkpoint, None, xp
    dataset = load_training_data(options, warn)
    check_same_data(config["data"], dataset, folder.config)
    check_image_sizes(options.loss, options.loss_settings, dataset)
    _check_world(world, options, dataset)
    if partial is not None:     # before anything is written: the epoch in progress fits this run
        restore_progress(partial, options, len(dataset.images), checkpoint.epoch)
    return options, config, checkpoint, dataset, xp


def _start_resume(folder, read, reporter, world):
    """Continue from what :func:`_read_resume` read: rank 0 truncates history, cleans up and records the
    resume in config.json; returns the :class:`Trainer`."""
    options, config, checkpoint, dataset, xp = read
    config["options"] = options.to_config()
    config["config_version"] = CONFIG_VERSION   # a resumed 0.1 run folder is rewritten in today's format
    entry = {"time": now(), "from_epoch": checkpoint.epoch, "to_epoch": options.epochs,
             "device_name": device_name(xp)}
    if checkpoint.partial is not None:     # in the middle of epoch from_epoch + 1, after this many steps
        entry["from_step"] = checkpoint.partial["steps_done"]
    if world.distributed:
        entry["mpi_ranks"] = world.size
    config.setdefault("resumes", []).append(entry)
    if world.is_root:
        truncate_history(folder.history, options.history_columns, checkpoint.epoch)
        try:
            folder.remove_snapshots_after(checkpoint.epoch)
            folder.remove_temp_files()
        except OSError as exc:
            raise SflnetError(f"cannot clean up run folder {folder.path}: {exc.strerror or exc}") from None
        write_config(folder, config)
    params = {n: to_device(checkpoint.params[n], xp) for n in options.spec.param_names}
    callbacks = _callbacks(folder, options, reporter, config, dataset)
    trainer = Trainer(options, dataset, xp, params, checkpoint.state, checkpoint.rng(), checkpoint.epoch, reporter,
                      callbacks, checkpoint.optimizer_step, world=world, partial=checkpoint.partial)
    trainer.saved_epoch = checkpoint.epoch
    if checkpoint.partial is not None:
        trainer.saved_step = (checkpoint.partial["steps_done"], checkpoint.partial["steps"])
    return trainer


def _select_device(device, world):
    """The array module for ``--device``; under MPI each rank takes GPU ``local_rank mod device_count``."""
    xp = select_device(device)
    if world.distributed:
        use_device_for_rank(xp, world.local_rank)
        # The ranks of one node share its cores: each runs the NumPy kernels on its share of them.
        set_num_threads(max(1, get_num_threads() // local_size()))
    return xp


def _check_world(world, options, dataset):
    """Under MPI: every step must give every rank at least one image."""
    if world.distributed:
        problem = check_shardable(len(dataset.images), options.batch_size, world.size)
        if problem:
            raise SflnetError(problem)


def _data_warning(reporter):
    """``warn`` callback for :func:`load_training_data`: ``warning: skipping NAME: REASON`` via the reporter."""
    return lambda message: reporter.note(f"warning: {message}")


def run_training(options=None, out="runs/run", *, resume=False, overwrite=False, overrides=None,
                 reporter=None, command=None):
    """Train (or resume) a run in folder ``out``; returns a :class:`RunResult`.

    options:   :class:`TrainOptions` for a new run (ignored with ``resume``)
    resume:    continue the run in ``out`` from its checkpoint.npz; ``overrides``
               holds the options the user gave explicitly ({name: value}); run-defining
               ones must match config.json, ``epochs``/``device``/``snapshot_every`` may change
    overwrite: allow ``out`` to be an existing run or a non-empty folder (sflnet's own
               files in it are replaced, other files are left alone)
    reporter:  a :class:`Reporter` for progress (default: silent)
    command:   the command line, recorded in config.json

    Raises SflnetError for bad options, data, folders or checkpoints (before
    anything is written) and for divergence (after saving what is good).
    """
    world = current_world()
    reporter = reporter if reporter is not None and world.is_root else Reporter()   # rank 0 reports
    folder = RunFolder(out)
    started = time.perf_counter()
    warn = _data_warning(reporter)
    created = not os.path.isdir(folder.path)
    lock = collectively(world, lambda: _lock_folder(folder, world, resume, command, warn))
    try:
        return _run_locked(folder, options, resume, overwrite, overrides, reporter, command, world, warn,
                           started)
    finally:
        if lock is not None:
            lock.release()
            if created:
                with contextlib.suppress(OSError):
                    os.rmdir(folder.path)     # only if still empty: a run that failed before writing


def _lock_folder(folder, world, resume, command, warn):
    """Rank 0 locks the run folder (:class:`sflnet.training.runlock.RunLock`) before reading or writing it:
    a second ``sflnet train`` on a folder in use fails at once, naming the holder."""
    if not world.is_root:
        return None
    if not resume and os.path.lexists(folder.path) and not os.path.isdir(folder.path):
        raise SflnetError(f"--out {folder.path} exists and is not a folder")
    if resume and not os.path.isdir(folder.path):
        return None            # check_output_folder explains what is wrong
    return RunLock(folder.path, command=command, warn=warn).acquire(create_folder=not resume)


def _run_locked(folder, options, resume, overwrite, overrides, reporter, command, world, warn, started):
    """The body of :func:`run_training`, with the run folder locked."""
    if resume:
        def read():
            check_output_folder(folder, resume=True)
            return _read_resume(folder, overrides or {}, warn, world)

        read_values = collectively(world, read)
        options = read_values[0]
        if read_values[3] is None:
            return RunResult("up-to-date", options.epochs, folder.path, None, options,
                             history_rows=options.epochs)
        trainer = collectively(world, lambda: _start_resume(folder, read_values, reporter, world))
    else:
        def prepare():
            options.validate()
            check_output_folder(folder, resume=False, overwrite=overwrite)
            xp = _select_device(options.device, world)
            dataset = load_training_data(options, warn)
            check_image_sizes(options.loss, options.loss_settings, dataset)
            _check_world(world, options, dataset)
            return xp, dataset

        xp, dataset = collectively(world, prepare)
        trainer = collectively(world, lambda: _start_fresh(folder, options, dataset, xp, reporter, command,
                                                           world))
    status = trainer.loop()
    return RunResult(status, trainer.saved_epoch, folder.path, trainer.last_row, options,
                     seconds=time.perf_counter() - started, history_rows=trainer.epoch,
                     extra={"device_name": device_name(trainer.xp) + world.describe(),
                            "images": len(trainer.images), "signal": trainer.stop_signal,
                            "saved_step": trainer.saved_step})
