"""A training run on disk: options, run folder, history, checkpoints, snapshots, resume, Ctrl-C, divergence.

Run folder
----------
::

    RUN/
      config.json              every option, sflnet version, device, dtype, data (paths, names, sizes, fingerprint)
      history.csv              one row per epoch (see below), flushed after every row
      checkpoint.npz           the latest completed epoch (rewritten atomically after every epoch)
      checkpoints/epoch_NNNN.npz   kept at snapshot epochs
      snapshots/original/      the first 8 training images as PNGs (for comparison)
      snapshots/epoch_NNNN/    reconstructions of the first 8 training images at snapshot epochs
      curves.png               the learning curves (paper Fig. 5 style), drawn at the end

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

history.csv
-----------
Header ``epoch,E,E_PL,E_SFL,sfl_0.8,sfl_1.6,sfl_3.2,[E_<TERM>...,]seconds`` (one
``sfl_`` column per σ, named ``f"sfl_{sigma:g}"``). ``E`` is the trained objective,
the weighted sum of the ``--loss`` expression's terms (``E_PL`` for ``pl``,
``E_PL + E_SFL`` for ``pl+sfl``). The paper's columns are there for every run:
``E_PL`` and ``E_SFL`` (with the configured subband weights) and the ``sfl_``
unit-weight subband losses are measured even when they are not trained. Each
term of the expression that is not ``pl`` or ``sfl`` adds one column
``E_<NAME>`` (``E_FFT``, ``E_SSIM``...), its unit-weight value, in expression order. Losses are written with Python's shortest round-trip ``repr``
so they can be compared exactly. ``seconds`` is the wall time of the epoch's
computation. With mini-batches (``batch_size > 0``) a row is the
image-weighted mean of the per-step losses, each measured before its own
step.

Robustness
----------
* Everything is validated, the device selected and the data loaded before
  anything is written.
* ``checkpoint.npz`` is rewritten atomically after every epoch and only with
  finite values, so a crash or ``kill -9`` at any moment leaves a loadable
  checkpoint of the last completed epoch.
* ``resume`` continues exactly: the checkpoint holds parameters, momentum
  velocity and the shuffling RNG state; ``history.csv`` rows after the
  checkpoint's epoch (left by a crash) are dropped. Resuming refuses data or
  settings that differ from ``config.json``.
* Ctrl-C (SIGINT) asks the loop to stop after the current epoch; a second
  Ctrl-C abandons the epoch at once. Either way the last completed epoch is
  in ``checkpoint.npz`` and :func:`run_training` returns ``"interrupted"``.
* A NaN/Inf loss or parameter stops training with an :class:`SflnetError`
  suggesting a smaller learning rate; ``checkpoint.npz`` keeps the last good
  epoch.
"""

import contextlib
import csv
import datetime
import hashlib
import json
import math
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field, fields

import numpy as np

from sflnet import __version__
from sflnet.backend import device_name, select_device, to_device, to_host, use_device_for_rank
from sflnet.checkpoint import (EPOCH_MEANING, MODEL_OPTIONS, load_checkpoint, make_meta, same_value,
                               save_checkpoint, upgrade_legacy_options, upgrade_model_options, write_text_atomic)
from sflnet.data import save_png
from sflnet.distributed import check_shardable, current_world, local_size, shard
from sflnet.errors import SflnetError
from sflnet.ops.threads import get_num_threads, set_num_threads
from sflnet.runlock import LOCK_FILE, RunLock
from sflnet.losses import (DEFAULT_EXPRESSION, STFT_WINDOW_FNS, LossSettings, canonical, extra_column,
                           extra_term_names, make_objective, parse, resolve, sigma_label, subband_column)
from sflnet.models import DEFAULT_MODEL, MODEL_NAMES, get_spec
from sflnet.models.cae import DEFAULT_PL_WEIGHTS, DEFAULT_SFL_WEIGHTS, DEFAULT_SIGMAS
from sflnet.optim import Adam, MomentumSGD, triangular2_lr
from sflnet.train import minibatch_order, train_step

CONFIG_FILE = "config.json"
HISTORY_FILE = "history.csv"
CHECKPOINT_FILE = "checkpoint.npz"
CURVES_FILE = "curves.png"
OVERVIEW_FILE = "overview.png"   # originals and every snapshot epoch in one picture (redrawn at snapshots)
CHECKPOINTS_DIR = "checkpoints"
SNAPSHOTS_DIR = "snapshots"
RUN_MARKERS = (CONFIG_FILE, CHECKPOINT_FILE, HISTORY_FILE)
SNAPSHOT_IMAGES = 8          # reconstructions of the first 8 training images per snapshot
CURVES_EVERY_S = 60.0        # redraw curves.png at snapshot epochs at most this often (and at the end)
SHUFFLE_STREAM = 1           # mini-batch RNG: numpy.random.default_rng((seed, SHUFFLE_STREAM))
DTYPES = ("float32", "float64")
DEVICES = ("auto", "cpu", "gpu")

# Options that define the run: a resumed run must use the same values.
KEY_OPTIONS = ("model", "data", "include", "exclude", "size", "skip_bad", "loss", "sigmas", "sfl_weights",
               "pl_weights", "stft_window", "stft_stride", "stft_window_fn", "stft_phase_weight", "dtype", "lr",
               "momentum", "init_std", "seed", "batch_size", "beta", "lr_min", "lr_max", "lr_step", "binarize",
               "train_images")
# 2: --loss is an expression and the stft options exist (absent: sflnet 0.1); 3: --model and the VAE's options
CONFIG_VERSION = 3
# Options a resume may change.
RESUME_OPTIONS = ("epochs", "device", "snapshot_every")


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------

def _finite(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def history_columns(sigmas, extra_terms=()):
    """``["epoch", "E", "E_PL", "E_SFL", "sfl_0.8", ..., "E_<TERM>", ..., "seconds"]``.

    extra_terms: the loss names of the objective's terms other than pl and sfl, in expression order,
    then the model's own logged terms (the VAE's ``kl``).
    """
    return ["epoch", "E", "E_PL", "E_SFL", *(subband_column(s) for s in sigmas),
            *(extra_column(name) for name in extra_terms), "seconds"]


def extra_terms(expression):
    """The terms of an expression that add a history column (all but pl and sfl)."""
    return extra_term_names(parse(expression))


def default_snapshot_every(epochs):
    """Snapshots about ten times per run: ``max(1, epochs // 10)`` (the final epoch always gets one)."""
    return max(1, epochs // 10)


@dataclass
class TrainOptions:
    """Every setting of a training run (the ``sflnet train`` options).

    model:     "cae" (Ichimura's Table 1 autoencoder) or "vae" (Dalal's β-VAE), see :mod:`sflnet.models`
    data:      tuple of absolute image file/folder paths (vae: one .npz of digits), or None for the
               built-in images (cae: the demo photos; vae: the MNIST 5k digits)
    size:      longer image side in pixels (0: native size); None for the vae (28×28 digits)
    loss:      a --loss expression (:mod:`sflnet.losses.objective`); :meth:`validate` makes it canonical
    sigmas, sfl_weights, pl_weights: tuples of floats (pl_weights is not a CLI option)
    stft_window, stft_stride, stft_window_fn, stft_phase_weight: the stft loss's settings
    batch_size: 0 for full batch, else images per mini-batch
    snapshot_every: epochs between snapshots; 0 = only the final epoch; None = :func:`default_snapshot_every`
    lr, momentum, init_std: the cae's momentum SGD and initialisation (None for the vae)
    beta, lr_min, lr_max, lr_step, binarize: the vae's KL weight, triangular2 cyclical learning rate of
               Adam (between lr_min and lr_max, step size lr_step updates) and data binarisation (None for the cae)
    train_images: vae: train on the first train_images/10 digits of each class (None: all 4,000)

    Each model's own defaults (:attr:`sflnet.models.ModelSpec.defaults`) replace the field defaults
    below when the options are made with :meth:`for_model`.
    """

    model: str = DEFAULT_MODEL
    data: tuple = None
    include: tuple = ()
    exclude: tuple = ()
    size: int = 300
    skip_bad: bool = False
    loss: str = DEFAULT_EXPRESSION
    epochs: int = 2000
    lr: float = 0.02
    momentum: float = 0.5
    init_std: float = 0.02
    seed: int = 0
    sigmas: tuple = DEFAULT_SIGMAS
    sfl_weights: tuple = DEFAULT_SFL_WEIGHTS
    pl_weights: tuple = DEFAULT_PL_WEIGHTS
    stft_window: int = LossSettings.stft_window
    stft_stride: int = LossSettings.stft_stride
    stft_window_fn: str = LossSettings.stft_window_fn
    stft_phase_weight: float = LossSettings.stft_phase_weight
    batch_size: int = 0
    device: str = "auto"
    dtype: str = "float32"
    snapshot_every: int = None
    beta: float = None
    lr_min: float = None
    lr_max: float = None
    lr_step: int = None
    binarize: bool = None
    train_images: int = None

    @classmethod
    def for_model(cls, model=DEFAULT_MODEL, **values):
        """Options of a ``model`` run: its defaults (:attr:`ModelSpec.defaults`), then ``values``."""
        if model not in MODEL_NAMES:
            raise SflnetError(f"--model must be one of {', '.join(MODEL_NAMES)}, got {model!r}")
        return cls(**{**get_spec(model).defaults, **values, "model": model})

    @property
    def spec(self):
        """The :class:`sflnet.models.ModelSpec` of :attr:`model`."""
        return get_spec(self.model)

    def _validate_model_options(self):
        """The options only one model uses: set for it, unset (None, (), False) for the other."""
        spec = self.spec
        for name in spec.unused:
            if getattr(self, name) not in (None, (), False):
                raise SflnetError(f"--{name.replace('_', '-')} is not used by --model {self.model}; leave it out")
        if self.model == "cae":
            for name in (n for n in MODEL_OPTIONS if n != "model"):   # the vae's own options
                if getattr(self, name) is not None:
                    raise SflnetError(f"--{name.replace('_', '-')} is only used by --model vae; leave it out")
            if not _finite(self.lr) or self.lr <= 0:
                raise SflnetError(f"--lr must be a finite number > 0, got {self.lr!r}")
            if not _finite(self.momentum) or not 0 <= self.momentum < 1:
                raise SflnetError(f"--momentum must be in [0, 1), got {self.momentum!r}")
            if not _finite(self.init_std) or self.init_std < 0:
                raise SflnetError(f"--init-std must be a finite number >= 0, got {self.init_std!r}")
            if not _whole(self.size) or self.size < 0:
                raise SflnetError(f"--size must be 0 (native size) or a positive number of pixels, "
                                  f"got {self.size!r}")
            return
        if not _finite(self.beta) or self.beta < 0:
            raise SflnetError(f"--beta must be a finite number >= 0, got {self.beta!r}")
        for name in ("lr_min", "lr_max"):
            value = getattr(self, name)
            if not _finite(value) or value <= 0:
                raise SflnetError(f"--{name.replace('_', '-')} must be a finite number > 0, got {value!r}")
        if self.lr_min > self.lr_max:
            raise SflnetError(f"--lr-min {self.lr_min:g} is larger than --lr-max {self.lr_max:g}")
        if not _whole(self.lr_step) or self.lr_step < 1:
            raise SflnetError(f"--lr-step must be a whole number >= 1, got {self.lr_step!r}")
        if self.train_images is not None and (not _whole(self.train_images) or self.train_images % 10
                                              or not 10 <= self.train_images <= 4000):
            raise SflnetError(f"--train-images must be a multiple of 10 from 10 to 4000 (N/10 digits of each "
                              f"class), got {self.train_images!r}")
        if not isinstance(self.binarize, bool):
            raise SflnetError(f"binarize must be true or false, got {self.binarize!r}")
        if self.data is not None and len(self.data) != 1:
            raise SflnetError(f"--model vae takes one --data file (an .npz of digits), got {len(self.data)}")

    def validate(self):
        """Raise :class:`SflnetError` (one line naming the option) for any bad value; returns self."""
        if self.model not in MODEL_NAMES:
            raise SflnetError(f"--model must be one of {', '.join(MODEL_NAMES)}, got {self.model!r}")
        if not _whole(self.epochs) or self.epochs < 1:
            raise SflnetError(f"--epochs must be a whole number >= 1, got {self.epochs!r}")
        self._validate_model_options()
        if not _whole(self.seed) or self.seed < 0:
            raise SflnetError(f"--seed must be a whole number >= 0, got {self.seed!r}")
        if not _whole(self.batch_size) or self.batch_size < 0:
            raise SflnetError(f"--batch-size must be 0 (full batch) or positive, got {self.batch_size!r}")
        if self.snapshot_every is not None and (not _whole(self.snapshot_every) or self.snapshot_every < 0):
            raise SflnetError(f"--snapshot-every must be 0 (final epoch only) or positive, "
                              f"got {self.snapshot_every!r}")
        self.loss = canonical(self.loss)
        if not _whole(self.stft_window) or self.stft_window < 1:
            raise SflnetError(f"--stft-window must be a whole number >= 1, got {self.stft_window!r}")
        if not _whole(self.stft_stride) or self.stft_stride < 1:
            raise SflnetError(f"--stft-stride must be a whole number >= 1, got {self.stft_stride!r}")
        if self.stft_window_fn not in STFT_WINDOW_FNS:
            raise SflnetError(f"--stft-window-fn must be one of {', '.join(STFT_WINDOW_FNS)}, "
                              f"got {self.stft_window_fn!r}")
        if not _finite(self.stft_phase_weight) or self.stft_phase_weight < 0:
            raise SflnetError(f"--stft-phase-weight must be a finite number >= 0, got {self.stft_phase_weight!r}")
        if self.device not in DEVICES:
            raise SflnetError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.dtype not in DTYPES:
            raise SflnetError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not self.sigmas:
            raise SflnetError("--sigmas needs at least one value")
        if not all(_finite(s) and s > 0 for s in self.sigmas):
            raise SflnetError(f"--sigmas must all be finite numbers > 0, got {_join(self.sigmas)}")
        labels = [sigma_label(s) for s in self.sigmas]
        if len(set(labels)) != len(labels):
            raise SflnetError(f"--sigmas must be distinct (as printed with 6 significant digits), "
                              f"got {','.join(labels)}")
        if not all(_finite(w) and w >= 0 for w in self.sfl_weights):
            raise SflnetError(f"--sfl-weights must all be finite numbers >= 0, got {_join(self.sfl_weights)}")
        if len(self.sfl_weights) != len(self.sigmas):
            raise SflnetError(f"--sfl-weights has {len(self.sfl_weights)} values but --sigmas has "
                              f"{len(self.sigmas)}; give one weight per sigma")
        channels = self.spec.channels
        if len(self.pl_weights) != channels or not all(_finite(w) and w >= 0 for w in self.pl_weights):
            raise SflnetError(f"pl_weights must be {channels} finite number(s) >= 0 (one per channel), "
                              f"got {_join(self.pl_weights)}")
        # The losses' inline options (--loss pl+stft(window=8)) set their alias fields (stft_window).
        for name, value in resolve(self.loss, self.loss_settings).aliases.items():
            setattr(self, name, value)
        return self

    @property
    def loss_settings(self):
        """The :class:`sflnet.losses.LossSettings` of these options (on the model's value range)."""
        return LossSettings(sigmas=tuple(self.sigmas), sfl_weights=tuple(self.sfl_weights),
                            pl_weights=tuple(self.pl_weights), value_range=self.spec.value_range,
                            stft_window=self.stft_window, stft_stride=self.stft_stride,
                            stft_window_fn=self.stft_window_fn, stft_phase_weight=self.stft_phase_weight)

    @property
    def logged_terms(self):
        """The loss names with an ``E_<NAME>`` history column: the objective's extra terms, then the model's."""
        return extra_terms(self.loss) + tuple(self.spec.logged_terms)

    @property
    def history_columns(self):
        return history_columns(self.sigmas, self.logged_terms)

    @property
    def effective_snapshot_every(self):
        if self.snapshot_every is None:
            return default_snapshot_every(self.epochs)
        return self.snapshot_every

    def is_snapshot_epoch(self, epoch):
        """True at multiples of ``snapshot_every`` and at the final epoch."""
        every = self.effective_snapshot_every
        return epoch == self.epochs or (every > 0 and epoch % every == 0)

    def to_config(self):
        """A JSON-friendly dict (tuples become lists), plus ``objective``: the loss with its options."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        out["snapshot_every"] = self.effective_snapshot_every
        out["objective"] = resolve(self.loss, self.loss_settings).objective   # the loss with its options
        return out

    @classmethod
    def from_config(cls, config, where="config.json", legacy=False):
        """Rebuild from :meth:`to_config` output; SflnetError if malformed.

        legacy: the options come from sflnet 0.1 (--loss "pl"/"sfl", no stft options),
        see :func:`sflnet.checkpoint.upgrade_legacy_options`.
        """
        known = {f.name for f in fields(cls)}
        config = upgrade_legacy_options(config) if legacy else upgrade_model_options(config)
        try:
            values = {}
            for name in known:
                if name not in config:
                    raise SflnetError(f"{where} has no option {name!r}")
                value = config[name]
                if isinstance(value, list):
                    value = tuple(value)
                values[name] = value
            options = cls(**values)
        except TypeError as exc:
            raise SflnetError(f"{where}: malformed options ({exc})") from None
        return options.validate()


def _join(values):
    return ",".join(str(v) for v in values)


def show_value(value):
    if value is None:
        return "demo images"
    if isinstance(value, (list, tuple)):
        return ",".join(f"{v:g}" if _finite(v) else str(v) for v in value) or "(none)"
    return str(value)


# ---------------------------------------------------------------------------
# Run folder
# ---------------------------------------------------------------------------

class RunFolder:
    """Paths inside a run folder (see the module docstring)."""

    def __init__(self, path):
        self.path = os.path.abspath(os.fspath(path))
        self.config = os.path.join(self.path, CONFIG_FILE)
        self.history = os.path.join(self.path, HISTORY_FILE)
        self.checkpoint = os.path.join(self.path, CHECKPOINT_FILE)
        self.curves = os.path.join(self.path, CURVES_FILE)
        self.overview = os.path.join(self.path, OVERVIEW_FILE)
        self.checkpoints_dir = os.path.join(self.path, CHECKPOINTS_DIR)
        self.snapshots_dir = os.path.join(self.path, SNAPSHOTS_DIR)

    def epoch_checkpoint(self, epoch):
        return os.path.join(self.checkpoints_dir, f"epoch_{epoch:04d}.npz")

    def snapshot_dir(self, epoch):
        return os.path.join(self.snapshots_dir, f"epoch_{epoch:04d}")

    @property
    def originals_dir(self):
        return os.path.join(self.snapshots_dir, "original")

    def snapshot_epochs(self):
        """[(epoch, folder)] of the ``snapshots/epoch_NNNN`` folders on disk, by epoch."""
        found = []
        for name in os.listdir(self.snapshots_dir) if os.path.isdir(self.snapshots_dir) else []:
            folder = os.path.join(self.snapshots_dir, name)
            if name.startswith("epoch_") and name[6:].isdigit() and os.path.isdir(folder):
                found.append((int(name[6:]), folder))
        return sorted(found)

    def state(self):
        """"missing", "empty", "run" (holds config.json, checkpoint.npz or history.csv) or "other"."""
        if not os.path.lexists(self.path):
            return "missing"
        if not os.path.isdir(self.path):
            raise SflnetError(f"--out {self.path} exists and is not a folder")
        if any(os.path.lexists(os.path.join(self.path, name)) for name in RUN_MARKERS):
            return "run"
        others = [name for name in os.listdir(self.path) if not name.startswith(LOCK_FILE)]   # our own lock
        return "empty" if not others else "other"

    def remove_run_files(self):
        """Delete sflnet's own files (for --overwrite); anything else in the folder is left alone."""
        for path in (self.config, self.history, self.checkpoint, self.curves, self.overview):
            if os.path.lexists(path):
                os.remove(path)
        for folder in (self.checkpoints_dir, self.snapshots_dir):
            if os.path.isdir(folder):
                shutil.rmtree(folder)
        self.remove_temp_files()

    def remove_temp_files(self):
        """Delete ``.<name>.*.tmp`` files that atomic writes killed midway (kill -9, power loss) left behind."""
        for name in os.listdir(self.path):
            if name.startswith(".") and name.endswith(".tmp") and any(
                    name.startswith(f".{marker}.") for marker in (*RUN_MARKERS, CURVES_FILE)):
                os.remove(os.path.join(self.path, name))
        if os.path.isdir(self.checkpoints_dir):
            for name in os.listdir(self.checkpoints_dir):
                if name.startswith(".epoch_") and name.endswith(".tmp"):
                    os.remove(os.path.join(self.checkpoints_dir, name))

    def remove_snapshots_after(self, epoch):
        """Delete epoch checkpoints and snapshot folders of epochs > ``epoch`` (left by a crashed run)."""
        for folder, suffix in ((self.checkpoints_dir, ".npz"), (self.snapshots_dir, "")):
            if not os.path.isdir(folder):
                continue
            for name in os.listdir(folder):
                stem = name[:-len(suffix)] if suffix and name.endswith(suffix) else name
                if stem.startswith("epoch_") and stem[6:].isdigit() and int(stem[6:]) > epoch:
                    target = os.path.join(folder, name)
                    if os.path.isdir(target):
                        shutil.rmtree(target)
                    else:
                        os.remove(target)


def check_output_folder(folder, resume=False, overwrite=False):
    """Refuse unsafe uses of ``--out`` before anything is written (SflnetError, one line)."""
    if resume and overwrite:
        raise SflnetError("--resume and --overwrite contradict each other; give only one")
    state = folder.state()
    if resume:
        if state != "run":
            raise SflnetError(f"--resume: {folder.path} is not an sflnet run folder (no {CONFIG_FILE} "
                              f"or {CHECKPOINT_FILE})")
        if not os.path.isfile(folder.config):
            raise SflnetError(f"--resume: {folder.config} is missing, so the run's settings are unknown")
        if not os.path.isfile(folder.checkpoint):
            raise SflnetError(f"--resume: {folder.path} has no {CHECKPOINT_FILE} to resume from; "
                              f"start again with --overwrite")
        return state
    if state == "run" and not overwrite:
        raise SflnetError(f"--out {folder.path} already holds a training run; use --resume to continue it "
                          f"or --overwrite to start it again")
    if state == "other" and not overwrite:
        raise SflnetError(f"--out {folder.path} is a non-empty folder that is not an sflnet run; choose "
                          f"another folder or pass --overwrite (only sflnet's own files are replaced)")
    return state


# ---------------------------------------------------------------------------
# history.csv
# ---------------------------------------------------------------------------

def format_row(row, columns):
    """One CSV line (with newline). Losses use repr (exact round trip), seconds 6 decimals."""
    cells = []
    for name in columns:
        value = row[name]
        if name == "epoch":
            cells.append(str(int(value)))
        elif name == "seconds":
            cells.append(f"{value:.6f}")
        else:
            cells.append(repr(float(value)))
    return ",".join(cells) + "\n"


def read_history(path, columns=None):
    """Rows of a history.csv as dicts of floats (``epoch`` as int).

    A last line without its newline (cut by a crash) is ignored. If
    ``columns`` is given the header must equal it (see :func:`history_columns`).
    Raises SflnetError for an unreadable or malformed file.
    """
    try:
        with open(path, encoding="utf-8", newline="") as stream:
            text = stream.read()
    except OSError as exc:
        raise SflnetError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_history(text, path, columns)[0]


def parse_history(text, path, columns=None):
    """(rows as dicts, complete raw lines without the header) of history.csv text."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines = lines[:-1]
    if not lines:
        raise SflnetError(f"{path} is empty (no header)")
    header = lines[0].rstrip("\r\n").split(",")
    if columns is not None and header != list(columns):
        raise SflnetError(f"{path} has header {','.join(header)}, expected {','.join(columns)}")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        cells = next(csv.reader([line]))
        if len(cells) != len(header):
            raise SflnetError(f"{path} line {number} has {len(cells)} fields, expected {len(header)}")
        try:
            row = {name: float(cell) for name, cell in zip(header, cells)}
            row["epoch"] = int(cells[0])
        except ValueError:
            raise SflnetError(f"{path} line {number} is not numeric: {line.strip()}") from None
        rows.append(row)
    return rows, lines[1:]


class HistoryWriter:
    """Appends rows to history.csv, flushing after each row (a crash loses at most a partial line)."""

    def __init__(self, path, columns):
        self.path = path
        self.columns = columns
        try:
            self._stream = open(path, "a", encoding="utf-8", newline="")
        except OSError as exc:
            raise SflnetError(f"cannot write {path}: {exc.strerror or exc}") from None

    def append(self, row):
        try:
            self._stream.write(format_row(row, self.columns))
            self._stream.flush()
        except OSError as exc:
            raise SflnetError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def sync(self):
        """Flush and fsync (called at checkpoint time; errors here are reported by the next write)."""
        with contextlib.suppress(OSError):
            self._stream.flush()
            os.fsync(self._stream.fileno())

    def close(self):
        if self._stream.closed:
            return
        with contextlib.suppress(OSError):
            self.sync()
            self._stream.close()


def truncate_history(path, columns, epoch):
    """Keep the header and rows 1..``epoch`` of history.csv (rewritten atomically).

    Rows after ``epoch`` come from a run that crashed or was interrupted after
    writing them but before its checkpoint; resuming from ``epoch`` recomputes
    them. Raises SflnetError if rows 1..epoch are not all there.
    """
    try:
        with open(path, encoding="utf-8", newline="") as stream:
            text = stream.read()
    except OSError as exc:
        raise SflnetError(f"cannot read {path}: {exc.strerror or exc}") from None
    rows, lines = parse_history(text, path, columns)
    kept = [line for row, line in zip(rows, lines) if row["epoch"] <= epoch]
    epochs = [row["epoch"] for row in rows if row["epoch"] <= epoch]
    if epochs != list(range(1, epoch + 1)):
        raise SflnetError(f"{path} does not hold rows 1..{epoch} in order (it has {len(epochs)} of them), "
                          f"so the run cannot be resumed exactly; start again with --overwrite")
    write_text_atomic(path, ",".join(columns) + "\n" + "".join(kept), what="history")


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------

def data_fingerprint(images):
    """SHA-256 over every image's shape, dtype and bytes (order matters)."""
    digest = hashlib.sha256()
    for image in images:
        host = np.ascontiguousarray(to_host(image))
        digest.update(f"{host.shape}{host.dtype}".encode())
        digest.update(host.tobytes())
    return digest.hexdigest()


def load_training_data(options, warn=None, split="train"):
    """The :class:`sflnet.data.Dataset` selected by the options (the model's built-in images when ``data``
    is None); ``split`` "test" is the VAE's held-out digits (the CAE has no split)."""
    return options.spec.load_data(options, split, warn)


def check_image_sizes(expression, settings, dataset):
    """SflnetError (one line) if a loss of the objective cannot measure an image of the data set.

    ssim needs images of at least 11×11 pixels and stft at least one window; pl, sfl and l1 take any size.
    """
    objective = make_objective(expression, settings)
    for name, image in zip(dataset.names, dataset.images):
        problem = objective.size_problem(int(image.shape[-2]), int(image.shape[-1]))
        if problem:
            raise SflnetError(f"--loss {expression}: {problem} (image {name!r}); use larger images (--size) "
                              f"or another loss")


def describe_data(dataset):
    """The ``data`` entry of config.json: source, count, fingerprint, names and sizes."""
    return {
        "source": dataset.source,
        "count": len(dataset),
        "sha256": data_fingerprint(dataset.images),
        "images": [{"name": name, "height": int(image.shape[1]), "width": int(image.shape[2])}
                   for name, image in zip(dataset.names, dataset.images)],
    }


def check_same_data(saved, dataset, config_path):
    """SflnetError (one line) if ``dataset`` differs from the ``data`` entry saved in config.json."""
    now = describe_data(dataset)
    saved_names = [item["name"] for item in saved.get("images", [])]
    now_names = [item["name"] for item in now["images"]]
    if saved_names != now_names:
        missing = [n for n in saved_names if n not in now_names]
        added = [n for n in now_names if n not in saved_names]
        detail = (f"missing {missing[0]!r}" if missing else f"new {added[0]!r}" if added else "different order")
        raise SflnetError(f"the training images differ from those in {config_path}: {len(now_names)} images now, "
                          f"{len(saved_names)} in the run ({detail})")
    for old, new in zip(saved["images"], now["images"]):
        if (old["height"], old["width"]) != (new["height"], new["width"]):
            raise SflnetError(f"image {new['name']!r} is {new['height']}x{new['width']} now but was "
                              f"{old['height']}x{old['width']} in {config_path}")
    if saved.get("sha256") != now["sha256"]:
        raise SflnetError(f"the training images' pixels differ from those recorded in {config_path} "
                          f"(files changed since the run started?)")


# ---------------------------------------------------------------------------
# Models from checkpoints, evaluation
# ---------------------------------------------------------------------------

def checkpoint_loss_settings(checkpoint, **overrides):
    """The :class:`LossSettings` stored with a checkpoint, with ``overrides`` (e.g. ``stft_window=8``) applied."""
    config = checkpoint.config
    values = {"sigmas": tuple(config["sigmas"]), "sfl_weights": tuple(config["sfl_weights"]),
              "pl_weights": tuple(config["pl_weights"]), "value_range": checkpoint.spec.value_range}
    for name in ("stft_window", "stft_stride", "stft_window_fn", "stft_phase_weight"):
        values[name] = config[name]
    values.update({k: v for k, v in overrides.items() if v is not None})
    return LossSettings(**values)


def checkpoint_options(checkpoint):
    """The :class:`TrainOptions` stored with a checkpoint (SflnetError if they are not valid)."""
    return TrainOptions.from_config(checkpoint.config, where=checkpoint.path)


def model_from_checkpoint(checkpoint, xp, loss=None, loss_settings=None):
    """The checkpoint's model (CAE or VAE) on ``xp``, with its parameters, objective, σ set and weights.

    loss: another objective expression to evaluate (default: the checkpoint's);
    loss_settings: default :func:`checkpoint_loss_settings`.
    """
    spec = checkpoint.spec
    params = {n: to_device(checkpoint.params[n], xp) for n in spec.param_names}
    options = checkpoint_options(checkpoint)
    return spec.build(params, loss or checkpoint.config["loss"],
                      loss_settings or checkpoint_loss_settings(checkpoint), options)


def evaluate_model(model, images, compute_grads=False):
    """Losses, mean PSNR/SSIM and optionally the full-batch gradient on ``images`` (device arrays).

    returns {"loss", "E", "E_PL", "E_SFL", "sfl": {sigma label: value}, "terms": {loss name: value},
    "psnr", "ssim", "images"} and, if ``compute_grads``, the gradient {name: host array} as a second
    value (else None). ``terms`` holds every measured loss at unit weight (pl, sfl and the objective's).
    PSNR/SSIM compare images on the model's value range: [-1, 1] with data_range 2 for the CAE (the
    same as 8-bit PSNR/SSIM), [0, 1] with data_range 1 for the VAE.
    """
    from sflnet.metrics import mean_psnr_ssim  # noqa: PLC0415

    low, high = model.loss_settings.value_range
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):   # non-finite results are returned as such
        result = model.loss_and_grads(images, compute_grads=compute_grads)
        recons = model.reconstruct(images)
        psnr, ssim = mean_psnr_ssim([to_host(x) for x in images], [to_host(r) for r in recons],
                                    data_range=high - low, data_min=low)
    report = {
        "loss": model.loss, "E": result.E, "E_PL": result.E_PL, "E_SFL": result.E_SFL,
        "sfl": {sigma_label(s): float(v) for s, v in zip(model.sigmas, result.sfl)},
        "terms": dict(result.terms),
        "psnr": psnr, "ssim": ssim, "images": len(images),
    }
    grads = {n: to_host(g) for n, g in result.grads.items()} if compute_grads else None
    return report, grads


def snapshot_name(index, name):
    """File name of a snapshot PNG: ``NN_<name with / as __, extension .png>``."""
    stem = os.path.splitext(name)[0].replace("/", "__").replace("\\", "__")
    return f"{index:02d}_{stem}.png"


# ---------------------------------------------------------------------------
# Progress reporting and interrupts
# ---------------------------------------------------------------------------

class Reporter:
    """Receives progress from :func:`run_training`. The default prints nothing; the CLI draws a bar."""

    def start(self, first_epoch, last_epoch):
        """Called once before the loop; epochs first_epoch..last_epoch will run."""

    def epoch(self, row):
        """Called after each completed epoch with its history row (dict)."""

    def note(self, message):
        """A one-line message for the user (warnings, interrupt notices)."""

    def close(self):
        """Called once after the loop, whatever happened."""


class _InterruptFlag:
    requested = False
    signal_number = None     # the signal that asked to stop (SIGINT or SIGTERM)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)   # Ctrl-C, and a scheduler's preemption


@contextlib.contextmanager
def graceful_interrupts(reporter, second=None):
    """While active, the first SIGINT or SIGTERM only sets ``flag.requested`` (and
    ``flag.signal_number``); a second one raises KeyboardInterrupt.

    A signal that is *ignored* when this starts (``nohup``, or ``cmd &`` in a
    script, which start a job with SIGINT set to SIG_IGN) stays ignored: no
    handler is installed for it. Installed only in the main thread (signal
    handlers cannot be set elsewhere). The previous handlers are restored on exit.
    second: called with the signal number instead of raising KeyboardInterrupt on a second signal
    (under MPI one rank cannot abandon a step alone: it stops every rank at once).
    """
    flag = _InterruptFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.requested:
            if second is not None:
                second(signum)
            raise KeyboardInterrupt
        flag.requested = True
        flag.signal_number = signum
        again = "press Ctrl-C again" if signum == signal.SIGINT else f"send {signal.Signals(signum).name} again"
        reporter.note(f"{'Interrupt' if signum == signal.SIGINT else signal.Signals(signum).name} received: "
                      f"stopping after the current epoch ({again} to stop at once).")

    previous = {}
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, handler)
    try:
        yield flag
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------

@dataclass
class RunResult:
    """What :func:`run_training` did.

    status:  "completed", "interrupted" or "up-to-date" (resume with nothing left to do)
    epoch:   the epoch of the last saved checkpoint.npz (updates applied)
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


def _now():
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _write_config(folder, config):
    write_text_atomic(folder.config, json.dumps(config, indent=2, allow_nan=False) + "\n", what="config")


def _read_config(folder):
    try:
        with open(folder.config, encoding="utf-8") as stream:
            config = json.load(stream)
    except OSError as exc:
        raise SflnetError(f"cannot read {folder.config}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise SflnetError(f"{folder.config} is not valid JSON ({exc})") from None
    if not isinstance(config, dict) or not isinstance(config.get("options"), dict) \
            or not isinstance(config.get("data"), dict):
        raise SflnetError(f"{folder.config} is not an sflnet run configuration")
    return config


def merge_resume_options(saved_options, overrides, config_path):
    """The options of a resumed run: the saved ones, with ``overrides`` (options the user gave explicitly).

    Run-defining options (:data:`KEY_OPTIONS`) must equal the saved values;
    ``epochs``, ``device`` and ``snapshot_every`` may change.
    """
    values = saved_options.to_config()
    for name, value in overrides.items():
        if name in KEY_OPTIONS:
            if not same_value(value, values[name]):
                flag = "--data" if name == "data" else "--" + name.replace("_", "-")
                raise SflnetError(f"{flag} {show_value(value)} differs from the run's {config_path} "
                                  f"({show_value(values[name])}); a resumed run keeps its settings, start a "
                                  f"new run (another --out) to change them")
        elif name in RESUME_OPTIONS:
            values[name] = value
        else:
            raise ValueError(f"unknown option {name!r}")
    return TrainOptions.from_config(values, where=config_path)


class _Diverged(Exception):
    """Internal: a non-finite loss or parameter in the given epoch."""


def result_row(result, sigmas, extra):
    """The history values of one :class:`LossResult`: {"E", "E_PL", "E_SFL", "sfl_<σ>"..., "E_<TERM>"...}."""
    row = {"E": result.E, "E_PL": result.E_PL, "E_SFL": result.E_SFL}
    for sigma, value in zip(sigmas, result.sfl):
        row[subband_column(sigma)] = float(value)
    for name in extra:
        row[extra_column(name)] = result.terms[name]
    return row


def make_optimizer(options):
    """The optimiser of a run and its learning-rate schedule (a function of the step count, or None).

    cae: momentum SGD at the constant ``lr`` (paper Sec. 4); vae: Adam with the triangular2 cyclical
    learning rate between ``lr_min`` and ``lr_max`` with step size ``lr_step`` (seed 004).
    """
    if options.spec.optimizer == "momentum-sgd":
        return MomentumSGD(options.lr, options.momentum), None
    return Adam(lr=options.lr_max), lambda step: triangular2_lr(step, options.lr_min, options.lr_max,
                                                                 options.lr_step)


def _combine(results, sizes, sigmas, extra=()):
    """One history row from the per-step results of an epoch (exact copy for a single full-batch step).

    With mini-batches each value is the image-weighted mean of the per-step values.
    """
    rows = [result_row(r, sigmas, extra) for r in results]
    if len(rows) == 1:
        return rows[0]
    total = float(sum(sizes))
    return {key: sum(row[key] * n for row, n in zip(rows, sizes)) / total for key in rows[0]}


class _Training:
    """The state of one training loop: model, optimiser, RNG, data and run folder."""

    def __init__(self, folder, options, dataset, xp, params, state, rng, epoch, reporter, config, step_count=0,
                 world=None):
        """state: the optimiser's arrays {prefix: {name: host array}} (empty for a fresh run);
        step_count: optimiser steps already taken (Adam's t, the schedule's position);
        world: the :class:`sflnet.distributed.World` (default: this process alone). Rank 0 alone writes."""
        self.world = world if world is not None else current_world()
        self.folder = folder
        self.options = options
        self.spec = options.spec
        self.names = dataset.names
        self.images = [to_device(image, xp) for image in dataset.images]
        self.pixels = [int(image.shape[-2] * image.shape[-1]) for image in dataset.images]
        self.xp = xp
        self.model = self.spec.build(params, options.loss, options.loss_settings, options)
        if hasattr(self.model, "noise"):   # the VAE samples z = μ + σε with ε from the run's generator
            self.model.noise = rng
        self.optimizer, self.schedule = make_optimizer(options)
        self.optimizer.load_state_arrays({prefix: {n: to_device(v, xp) for n, v in arrays.items()}
                                          for prefix, arrays in state.items()}, step_count)
        self.rng = rng
        self.epoch = epoch                # updates applied so far
        self.saved_epoch = None           # epoch of the checkpoint.npz on disk
        self.reporter = reporter
        self.checkpoint_config = dict(options.to_config(), data_sha256=config["data"]["sha256"],
                                      n_images=len(self.images))
        self.extra_terms = options.logged_terms
        self.columns = options.history_columns
        self.last_row = None
        self.last_curves = time.monotonic()
        self.stop_signal = None           # SIGINT/SIGTERM number when the loop stopped on a signal

    # -- saving ---------------------------------------------------------------
    def _meta(self):
        return make_meta(self.epoch, self.checkpoint_config, self.rng.bit_generator.state, self.spec,
                         self.optimizer.step_count)

    def save(self, path):
        if self.world.is_root:
            save_checkpoint(path, self.model.params, self.optimizer.state_arrays(), self._meta())

    def save_latest(self):
        self.save(self.folder.checkpoint)
        self.saved_epoch = self.epoch

    def save_snapshot(self):
        """checkpoints/epoch_NNNN.npz and reconstructions of the first images in snapshots/epoch_NNNN/."""
        if not self.world.is_root:
            return
        os.makedirs(self.folder.checkpoints_dir, exist_ok=True)
        self.save(self.folder.epoch_checkpoint(self.epoch))
        count = min(SNAPSHOT_IMAGES, len(self.images))
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            recons = self.model.reconstruct(self.images[:count])
        target = self.folder.snapshot_dir(self.epoch)
        for index, (name, recon) in enumerate(zip(self.names, recons)):
            save_png(to_host(recon), os.path.join(target, snapshot_name(index, name)),
                     value_range=self.spec.value_range)
        try:   # overview.png is optional: a plotting problem is a warning, never a stopped run
            from sflnet.figures import plot_overview  # noqa: PLC0415  (matplotlib is slow to import)
            plot_overview(self.folder.path)
        except (OSError, ValueError) as exc:
            self.reporter.note(f"warning: cannot write overview.png in {self.folder.path}: {exc}")

    def save_originals(self):
        if not self.world.is_root or os.path.isdir(self.folder.originals_dir):
            return
        for index, (name, image) in enumerate(zip(self.names[:SNAPSHOT_IMAGES], self.images)):
            save_png(to_host(image), os.path.join(self.folder.originals_dir, snapshot_name(index, name)),
                     value_range=self.spec.value_range)

    def draw_curves(self):
        if not self.world.is_root:
            return
        from sflnet.figures import plot_curves  # noqa: PLC0415  (matplotlib is slow to import)

        rows = read_history(self.folder.history, self.columns)
        if rows:
            rate = (f"lr {self.options.lr:g}" if self.options.lr is not None
                    else f"lr {self.options.lr_min:g}-{self.options.lr_max:g}")
            title = f"{self.options.model} {self.options.loss} run, {len(self.images)} images, {rate}"
            try:
                plot_curves(rows, list(self.options.sigmas), self.folder.curves, title=title)
            except OSError as exc:   # disk full, read-only folder: the figure is optional, the data is safe
                self.reporter.note(f"warning: cannot write {self.folder.curves}: {exc.strerror or exc}")
        self.last_curves = time.monotonic()

    # -- one epoch --------------------------------------------------------------
    def _share(self, indices):
        """``(batch, sharing)`` for :func:`train_step`: the whole step in one process; under MPI this
        rank's images of it (:func:`sflnet.distributed.shard`) and the sum over ranks."""
        if not self.world.distributed:
            return [self.images[i] for i in indices], {}
        positions = shard(indices, self.pixels, self.world.size, self.world.rank)
        return ([self.images[indices[p]] for p in positions],
                {"batch_count": len(indices), "reduce": self.world.allreduce_sum, "positions": positions})

    def run_epoch(self):
        """Epoch ``self.epoch + 1``: all its steps; returns its history row. Raises _Diverged."""
        epoch = self.epoch + 1
        start = time.perf_counter()
        results, sizes = [], []
        for indices in minibatch_order(len(self.images), self.options.batch_size, self.rng):
            # Overflow/NaN is detected below and reported as divergence; NumPy's warnings would only add noise.
            if self.schedule is not None:
                self.optimizer.lr = self.schedule(self.optimizer.step_count)
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                batch, sharing = self._share(indices)
                result = train_step(self.model, self.optimizer, batch, **sharing)
            losses = [result.E, *result.terms.values(), *result.parts.values()]
            if not all(math.isfinite(v) for v in losses):
                raise _Diverged(f"the loss became non-finite at epoch {epoch} (E = {result.E})")
            if not result.flags["params_finite"]:
                raise _Diverged(f"the parameters became NaN/Inf in the update of epoch {epoch} "
                                f"(E was {result.E:.6g})")
            if result.E > 0 and not result.flags["grads_nonzero"]:
                raise _Diverged(f"the network collapsed: at epoch {epoch} the gradient is exactly zero although "
                                f"E = {result.E:.6g} (saturated output or dead ReLUs, so training "
                                f"cannot recover)")
            results.append(result)
            sizes.append(len(indices))
        # No synchronize() needed for the timing: each step ended with a transfer that waits for its update.
        row = _combine(results, sizes, self.options.sigmas, self.extra_terms)
        row["epoch"] = epoch
        row["seconds"] = time.perf_counter() - start
        self.epoch = epoch
        return row

    # -- the loop ---------------------------------------------------------------
    def loop(self):
        """Run epochs up to ``options.epochs``; returns "completed" or "interrupted".

        Raises SflnetError on divergence, after closing history.csv and drawing
        curves.png; checkpoint.npz then holds the last good epoch.
        """
        options = self.options
        world = self.world
        history = HistoryWriter(self.folder.history, self.columns) if world.is_root else None
        status, diverged = "completed", None
        self.reporter.start(self.epoch + 1, options.epochs)
        second = (lambda signum: world.abort(128 + signum)) if world.distributed else None
        try:
            with graceful_interrupts(self.reporter, second) as interrupt:
                while self.epoch < options.epochs:
                    try:
                        row = self.run_epoch()   # under MPI every rank sees the same summed losses
                    except _Diverged as exc:
                        diverged = str(exc)
                        break
                    self.last_row = row
                    self._on_root(lambda: self._record_epoch(history, row))
                    self.reporter.epoch(row)
                    stop = interrupt.signal_number or 0     # under MPI: the first rank's signal, on every rank
                    stop = world.first_nonzero(stop) if world.distributed else stop
                    if stop and self.epoch < options.epochs:
                        interrupt.signal_number = stop
                        status = "interrupted"
                        break
        except KeyboardInterrupt:   # a second Ctrl-C: the epoch in progress is abandoned
            status = "interrupted"
        finally:
            self.stop_signal = interrupt.signal_number if status == "interrupted" else None
            if history is not None:
                history.close()
            self.reporter.close()
        self._finish_curves()
        if diverged:
            smaller = (f"--lr {options.lr / 10:g}" if options.lr is not None
                       else f"--lr-max {options.lr_max / 10:g}")
            raise SflnetError(f"training diverged: {diverged}; {self.folder.checkpoint} keeps the last finite "
                              f"state (epoch {self.saved_epoch}); try a smaller learning rate, e.g. {smaller}")
        return status

    def _record_epoch(self, history, row):
        """Rank 0's files after an epoch: history row, snapshot, checkpoint.npz, now and then curves.png."""
        history.append(row)
        if self.options.is_snapshot_epoch(self.epoch):
            self.save_snapshot()
        history.sync()
        self.save_latest()
        if self.options.is_snapshot_epoch(self.epoch) and time.monotonic() - self.last_curves >= CURVES_EVERY_S:
            self.draw_curves()

    def _on_root(self, action):
        """Run a file-writing ``action`` on rank 0 alone; under MPI every rank then learns whether it
        failed (:func:`_collectively`), so no rank waits forever in the next step's collective."""
        _collectively(self.world, lambda: action() if self.world.is_root else None)

    def _finish_curves(self):
        """Draw curves.png at the end; a second Ctrl-C while drawing is ignored (the data is safe)."""
        with contextlib.suppress(KeyboardInterrupt):
            self.draw_curves()


def _start_fresh(folder, options, dataset, xp, reporter, command, world):
    """Create the run folder (rank 0): config.json, history.csv header, epoch-0 checkpoint, originals."""
    config = {
        "config_version": CONFIG_VERSION,
        "sflnet_version": __version__,
        "created": _now(),
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
        _write_config(folder, config)
        write_text_atomic(folder.history, ",".join(options.history_columns) + "\n", what="history")
    params = options.spec.init(options, xp)
    rng = np.random.default_rng((options.seed, SHUFFLE_STREAM))
    training = _Training(folder, options, dataset, xp, params, {}, rng, 0, reporter, config, world=world)
    training.save_originals()
    training.save_latest()
    return training


def _read_resume(folder, overrides, warn, world):
    """What every rank reads to resume: (options, config, checkpoint, dataset, xp); dataset is None
    when the run is already at ``--epochs``. Writes nothing."""
    config = _read_config(folder)
    saved = TrainOptions.from_config(config["options"], where=folder.config,
                                     legacy="config_version" not in config)
    options = merge_resume_options(saved, overrides, folder.config)
    xp = _select_device(options.device, world)
    expect = {key: options.to_config()[key] for key in KEY_OPTIONS}
    expect["data_sha256"] = config["data"].get("sha256")
    checkpoint = load_checkpoint(folder.checkpoint, expect=expect)
    if checkpoint.epoch > options.epochs:
        raise SflnetError(f"{folder.checkpoint} is already at epoch {checkpoint.epoch}, beyond --epochs "
                          f"{options.epochs}")
    if checkpoint.epoch == options.epochs:
        return options, config, checkpoint, None, xp
    dataset = load_training_data(options, warn)
    check_same_data(config["data"], dataset, folder.config)
    check_image_sizes(options.loss, options.loss_settings, dataset)
    _check_world(world, options, dataset)
    return options, config, checkpoint, dataset, xp


def _start_resume(folder, read, reporter, world):
    """Continue from what :func:`_read_resume` read: rank 0 truncates history, cleans up and records the
    resume in config.json; returns the :class:`_Training`."""
    options, config, checkpoint, dataset, xp = read
    config["options"] = options.to_config()
    config["config_version"] = CONFIG_VERSION   # a resumed 0.1 run folder is rewritten in today's format
    entry = {"time": _now(), "from_epoch": checkpoint.epoch, "to_epoch": options.epochs,
             "device_name": device_name(xp)}
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
        _write_config(folder, config)
    params = {n: to_device(checkpoint.params[n], xp) for n in options.spec.param_names}
    training = _Training(folder, options, dataset, xp, params, checkpoint.state, checkpoint.rng(),
                         checkpoint.epoch, reporter, config, checkpoint.optimizer_step, world=world)
    training.saved_epoch = checkpoint.epoch
    training.save_originals()
    return training


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


def _collectively(world, action):
    """``action()`` on every rank; under MPI, if it raised SflnetError on any rank, every rank raises
    it (so all stop with one message, none waits in a collective); returns its value."""
    if not world.distributed:
        return action()
    value, error = None, None
    try:
        value = action()
    except SflnetError as exc:
        error = str(exc)
    world.agree(error)
    return value


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
    lock = _collectively(world, lambda: _lock_folder(folder, world, resume, command, warn))
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
    """Rank 0 locks the run folder (:class:`sflnet.runlock.RunLock`) before reading or writing it:
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

        read_values = _collectively(world, read)
        options = read_values[0]
        if read_values[3] is None:
            return RunResult("up-to-date", options.epochs, folder.path, None, options,
                             history_rows=options.epochs)
        training = _collectively(world, lambda: _start_resume(folder, read_values, reporter, world))
    else:
        def prepare():
            options.validate()
            check_output_folder(folder, resume=False, overwrite=overwrite)
            xp = _select_device(options.device, world)
            dataset = load_training_data(options, warn)
            check_image_sizes(options.loss, options.loss_settings, dataset)
            _check_world(world, options, dataset)
            return xp, dataset

        xp, dataset = _collectively(world, prepare)
        training = _collectively(world, lambda: _start_fresh(folder, options, dataset, xp, reporter, command,
                                                             world))
    status = training.loop()
    return RunResult(status, training.saved_epoch, folder.path, training.last_row, options,
                     seconds=time.perf_counter() - started, history_rows=training.epoch,
                     extra={"device_name": device_name(training.xp) + world.describe(),
                            "images": len(training.images), "signal": training.stop_signal})
