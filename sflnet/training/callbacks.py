"""What happens around the training loop, one small class each: history, snapshots, checkpoints,
curves, progress and the divergence guard.

The :class:`sflnet.training.trainer.Trainer` only steps; at named moments it calls the same hook
of every callback, in list order (the idea of Chainer's trainer extensions and Lightning's
``Callback``):

=======================================  ====================================================
hook                                     when
=======================================  ====================================================
``on_train_start(trainer)``              once, before the first epoch of this call
``on_step_end(trainer, epoch, result)``  after every optimiser step (``result``: the step's
                                         :class:`LossResult`, measured before the update)
``on_step_checkpoint(trainer, record)``  after a step in the middle of an epoch at which a mid-epoch
                                         checkpoint is due (a stop request, ``--checkpoint-every``);
                                         ``record``: (``partial_epoch`` meta, arrays), see
                                         :meth:`Trainer.progress_record`
``on_epoch_end(trainer, row)``           after every completed epoch (``row``: its history row)
``teardown(trainer)``                    once after the loop, whatever happened (``finally``)
``on_train_end(trainer, status)``        once after a loop that stopped by itself: ``status``
                                         "completed", "interrupted" or "diverged"
=======================================  ====================================================

``on_train_start``, ``on_step_checkpoint`` and ``on_epoch_end`` run under :meth:`Trainer.collectively`: under MPI, an
:class:`SflnetError` on one rank stops every rank. A callback whose ``root_only`` is True writes
files and is called on rank 0 alone. ``state_dict()`` / ``load_state_dict(state)`` hold what a
callback would need to resume; today's callbacks keep none (the checkpoint holds the trainer's
parameters, optimiser state, RNG state and epoch), so both are the empty defaults.

The order :func:`default_callbacks` gives is part of the crash-safety argument: after epoch k,
history.csv row k is flushed and fsync'ed, then the snapshot PNGs and ``checkpoints/epoch_k.npz``
are written, and only then ``checkpoint.npz``. A checkpoint of epoch k on disk therefore always
has its history rows and its snapshot. A mid-epoch checkpoint (epoch k and some steps of epoch
k + 1) is written between epoch ends, when history.csv holds rows 1 … k: the two agree after any stop.
"""

import contextlib
import math
import os
import time

import numpy as np

from sflnet.backend import to_host
from sflnet.io.checkpoint import make_meta, save_checkpoint
from sflnet.io.images import save_png
from sflnet.errors import SflnetError
from sflnet.training.history import HistoryWriter, read_history
from sflnet.training.run_folder import snapshot_name

SNAPSHOT_IMAGES = 8          # reconstructions of the first 8 training images per snapshot
CURVES_EVERY_S = 60.0        # redraw curves.png at snapshot epochs at most this often (and at the end)


class Diverged(Exception):
    """Raised by :class:`DivergenceGuard` in ``on_step_end``: a non-finite loss or parameter, or a
    collapsed network. The trainer stops the epoch at once and ends with status "diverged"."""


class Callback:
    """The hooks the trainer calls (see the module docstring); every hook does nothing by default."""

    root_only = False     # True: writes files, called on rank 0 alone

    def on_train_start(self, trainer):
        """Before the first epoch of this call."""

    def on_step_end(self, trainer, epoch, result):
        """After each optimiser step of epoch ``epoch`` (1-based) with its :class:`LossResult`."""

    def on_step_checkpoint(self, trainer, record):
        """After a step in the middle of epoch ``trainer.epoch + 1`` that asks for a mid-epoch checkpoint."""

    def on_epoch_end(self, trainer, row):
        """After each completed epoch (``trainer.epoch`` is its number) with its history row (dict)."""

    def teardown(self, trainer):
        """After the loop, whatever happened (also when an exception ends it)."""

    def on_train_end(self, trainer, status):
        """After a loop that stopped by itself: "completed", "interrupted" or "diverged"."""

    def state_dict(self):
        """What this callback needs to resume ({} : nothing)."""
        return {}

    def load_state_dict(self, state):
        """Restore :meth:`state_dict` output."""


class HistoryCallback(Callback):
    """Appends each epoch's row to history.csv, flushed and fsync'ed before the checkpoint is written."""

    root_only = True

    def __init__(self, folder, columns):
        self.folder = folder
        self.columns = columns
        self.writer = None

    def on_train_start(self, trainer):
        self.writer = HistoryWriter(self.folder.history, self.columns)

    def on_epoch_end(self, trainer, row):
        self.writer.append(row)
        self.writer.sync()

    def teardown(self, trainer):
        if self.writer is not None:
            self.writer.close()


class SnapshotCallback(Callback):
    """``snapshots/original/`` once, then at snapshot epochs the reconstructions of the first
    :data:`SNAPSHOT_IMAGES` training images in ``snapshots/epoch_NNNN/`` and overview.png."""

    root_only = True

    def __init__(self, folder, options):
        self.folder = folder
        self.options = options

    def on_train_start(self, trainer):
        """The originals, unless a previous call of this run already wrote them."""
        if os.path.isdir(self.folder.originals_dir):
            return
        for index, (name, image) in enumerate(zip(trainer.names[:SNAPSHOT_IMAGES], trainer.images)):
            save_png(to_host(image), os.path.join(self.folder.originals_dir, snapshot_name(index, name)),
                     value_range=trainer.spec.value_range)

    def on_epoch_end(self, trainer, row):
        if not self.options.is_snapshot_epoch(trainer.epoch):
            return
        count = min(SNAPSHOT_IMAGES, len(trainer.images))
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            recons = trainer.model.reconstruct(trainer.images[:count])
        target = self.folder.snapshot_dir(trainer.epoch)
        for index, (name, recon) in enumerate(zip(trainer.names, recons)):
            save_png(to_host(recon), os.path.join(target, snapshot_name(index, name)),
                     value_range=trainer.spec.value_range)
        try:   # overview.png is optional: a plotting problem is a warning, never a stopped run
            from sflnet.figures import plot_overview  # noqa: PLC0415  (matplotlib is slow to import)
            plot_overview(self.folder.path)
        except (OSError, ValueError) as exc:
            trainer.reporter.note(f"warning: cannot write overview.png in {self.folder.path}: {exc}")


class CheckpointCallback(Callback):
    """checkpoint.npz after every epoch (and the initialisation, epoch 0, for a fresh run) and
    ``checkpoints/epoch_NNNN.npz`` at snapshot epochs; checkpoint.npz also in the middle of an epoch
    when the trainer asks (a stop request, ``--checkpoint-every``). Rank 0 writes; every rank keeps
    ``trainer.saved_epoch`` (the epoch of the checkpoint.npz on disk), ``trainer.saved_step`` (its
    mid-epoch position, or None) and ``trainer.saved_at`` (when it was written) up to date.

    config: the checkpoint's ``config`` (the options, ``data_sha256`` and ``n_images``).
    """

    def __init__(self, folder, options, config):
        self.folder = folder
        self.options = options
        self.config = config

    def save(self, trainer, path, record=None):
        """One checkpoint of the trainer's state: parameters, optimiser arrays and meta (rank 0 only);
        ``record`` (:meth:`Trainer.progress_record`) makes it a mid-epoch checkpoint."""
        if not trainer.world.is_root:
            return
        partial, arrays = record if record is not None else (None, None)
        meta = make_meta(trainer.epoch, self.config, trainer.rng.bit_generator.state, trainer.spec,
                         trainer.optimizer.step_count, partial_epoch=partial)
        save_checkpoint(path, trainer.model.params, trainer.optimizer.state_arrays(), meta, partial_arrays=arrays)

    def save_latest(self, trainer, record=None):
        self.save(trainer, self.folder.checkpoint, record)
        trainer.saved_epoch = trainer.epoch
        trainer.saved_step = (record[0]["steps_done"], record[0]["steps"]) if record is not None else None
        trainer.saved_at = time.monotonic()

    def on_step_checkpoint(self, trainer, record):
        self.save_latest(trainer, record)

    def on_train_start(self, trainer):
        if trainer.saved_epoch is None:     # a fresh run: the initialisation is epoch 0
            self.save_latest(trainer)

    def on_epoch_end(self, trainer, row):
        if self.options.is_snapshot_epoch(trainer.epoch):
            if trainer.world.is_root:
                os.makedirs(self.folder.checkpoints_dir, exist_ok=True)
            self.save(trainer, self.folder.epoch_checkpoint(trainer.epoch))
        self.save_latest(trainer)


class CurvesCallback(Callback):
    """curves.png: redrawn at snapshot epochs at most every :data:`CURVES_EVERY_S` seconds, and at the end."""

    root_only = True

    def __init__(self, folder, options, columns, n_images):
        self.folder = folder
        self.options = options
        self.columns = columns
        self.n_images = n_images
        self.last_drawn = time.monotonic()
        self.drawn_epoch = None      # trainer.epoch when curves.png was last drawn

    def draw(self, trainer):
        rows = read_history(self.folder.history, self.columns)
        if rows:     # matplotlib takes most of a second to import: not for a history without rows
            from sflnet.figures import plot_curves  # noqa: PLC0415

            options = self.options
            title = f"{options.model} {options.loss} run, {self.n_images} images, {options.spec.rate_label(options)}"
            try:
                plot_curves(rows, list(options.sigmas), self.folder.curves, title=title)
            except OSError as exc:   # disk full, read-only folder: the figure is optional, the data is safe
                trainer.reporter.note(f"warning: cannot write {self.folder.curves}: {exc.strerror or exc}")
        self.last_drawn = time.monotonic()
        self.drawn_epoch = trainer.epoch

    def on_train_start(self, trainer):
        if os.path.isfile(self.folder.curves):    # a resumed run's: drawn with its rows by the previous call
            self.drawn_epoch = trainer.epoch

    def on_epoch_end(self, trainer, row):
        if self.options.is_snapshot_epoch(trainer.epoch) and time.monotonic() - self.last_drawn >= CURVES_EVERY_S:
            self.draw(trainer)

    def on_train_end(self, trainer, status):
        """The final curves (unless this call drew them with every row there is: a stop in the middle
        of an epoch need not wait for matplotlib); a second Ctrl-C while drawing is ignored (the data is safe)."""
        if self.drawn_epoch == trainer.epoch:
            return
        with contextlib.suppress(KeyboardInterrupt):
            self.draw(trainer)


class Reporter:
    """Receives progress from :func:`sflnet.training.run.run_training` (via :class:`ProgressCallback`).

    The default prints nothing; the CLI draws a bar.
    """

    def start(self, first_epoch, last_epoch):
        """Called once before the loop; epochs first_epoch..last_epoch will run."""

    def epoch(self, row):
        """Called after each completed epoch with its history row (dict)."""

    def note(self, message):
        """A one-line message for the user (warnings, interrupt notices)."""

    def close(self):
        """Called once after the loop, whatever happened."""


class ProgressCallback(Callback):
    """Forwards the loop's progress to a :class:`Reporter` (the CLI's progress bar)."""

    def __init__(self, reporter):
        self.reporter = reporter

    def on_train_start(self, trainer):
        self.reporter.start(trainer.epoch + 1, trainer.options.epochs)

    def on_epoch_end(self, trainer, row):
        self.reporter.epoch(row)

    def teardown(self, trainer):
        self.reporter.close()


class DivergenceGuard(Callback):
    """Stops training at the first step with a non-finite loss or parameter, or an exactly zero gradient
    while E > 0 (a collapsed network); the run then ends with an :class:`SflnetError` that suggests a
    smaller learning rate, while checkpoint.npz keeps the last good epoch. Put it last: the other
    callbacks finish (history closed, curves drawn) before it raises.

    checkpoint_path: the run's checkpoint.npz (named in the message).
    """

    def __init__(self, checkpoint_path):
        self.checkpoint_path = checkpoint_path
        self.reason = None

    def on_step_end(self, trainer, epoch, result):
        losses = [result.E, *result.terms.values(), *result.parts.values()]
        if not all(math.isfinite(v) for v in losses):
            raise Diverged(f"the loss became non-finite at epoch {epoch} (E = {result.E})")
        if not result.flags["params_finite"]:
            raise Diverged(f"the parameters became NaN/Inf in the update of epoch {epoch} "
                           f"(E was {result.E:.6g})")
        if result.E > 0 and not result.flags["grads_nonzero"]:
            raise Diverged(f"the network collapsed: at epoch {epoch} the gradient is exactly zero although "
                           f"E = {result.E:.6g} (saturated output or dead ReLUs, so training "
                           f"cannot recover)")

    def on_train_end(self, trainer, status):
        if status != "diverged":
            return
        smaller = trainer.spec.smaller_rate(trainer.options)
        saved = f"epoch {trainer.saved_epoch}"
        if trainer.saved_step is not None:
            saved += f" and {trainer.saved_step[0]} of the {trainer.saved_step[1]} steps of epoch {trainer.saved_epoch + 1}"
        raise SflnetError(f"training diverged: {trainer.diverged}; {self.checkpoint_path} keeps the last finite "
                          f"state ({saved}); try a smaller learning rate, e.g. {smaller}")


def default_callbacks(folder, options, reporter, checkpoint_config, n_images):
    """The callbacks of ``sflnet train``, in the order that keeps the run folder consistent (see above)."""
    columns = options.history_columns
    return [HistoryCallback(folder, columns), SnapshotCallback(folder, options),
            CheckpointCallback(folder, options, checkpoint_config), CurvesCallback(folder, options, columns, n_images),
            ProgressCallback(reporter), DivergenceGuard(folder.checkpoint)]
