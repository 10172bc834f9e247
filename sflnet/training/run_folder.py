"""The run folder on disk: its file names, :class:`RunFolder` (the paths), the ``--out`` checks and config.json.

::

    RUN/
      config.json              every option, sflnet version, device, dtype, data (paths, names, sizes, fingerprint)
      history.csv              one row per epoch (:mod:`sflnet.training.history`), flushed after every row
      checkpoint.npz           the latest completed epoch (rewritten atomically after every epoch)
      checkpoints/epoch_NNNN.npz   kept at snapshot epochs
      snapshots/original/      the first 8 training images as PNGs (for comparison)
      snapshots/epoch_NNNN/    reconstructions of the first 8 training images at snapshot epochs
      curves.png               the learning curves (paper Fig. 5 style), drawn at the end
      overview.png             the originals and every snapshot epoch in one picture
"""

import datetime
import json
import os
import shutil

from sflnet.io.checkpoint import write_text_atomic
from sflnet.errors import SflnetError
from sflnet.training.runlock import LOCK_FILE

CONFIG_FILE = "config.json"
HISTORY_FILE = "history.csv"
CHECKPOINT_FILE = "checkpoint.npz"
CURVES_FILE = "curves.png"
OVERVIEW_FILE = "overview.png"   # originals and every snapshot epoch in one picture (redrawn at snapshots)
CHECKPOINTS_DIR = "checkpoints"
SNAPSHOTS_DIR = "snapshots"
RUN_MARKERS = (CONFIG_FILE, CHECKPOINT_FILE, HISTORY_FILE)


class RunFolder:
    """Paths inside a run folder (see the module docstring); ``path`` is made absolute."""

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


def snapshot_name(index, name):
    """File name of a snapshot PNG: ``NN_<name with / as __, extension .png>``."""
    stem = os.path.splitext(name)[0].replace("/", "__").replace("\\", "__")
    return f"{index:02d}_{stem}.png"


def now():
    """The local time with its UTC offset, to the second (ISO 8601), as config.json records it."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def write_config(folder, config):
    """Write ``config`` (a dict) to the folder's config.json, atomically (strict JSON: no NaN)."""
    write_text_atomic(folder.config, json.dumps(config, indent=2, allow_nan=False) + "\n", what="config")


def read_config(folder):
    """The folder's config.json as a dict; SflnetError (one line) if unreadable or not a run configuration."""
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
