"""The training loop: epochs of optimiser steps, and the callbacks' hooks around them.

Epoch k (1-based) is the k-th pass over the training data. Its forward pass measures the losses
with the parameters after k−1 updates; then the update is applied. Everything else an epoch's
end brings (history, snapshots, checkpoints, figures, progress, the divergence check) is a
callback (:mod:`sflnet.training.callbacks`).

Mid-epoch stops and checkpoints
-------------------------------
With mini-batches an epoch is many steps. After each step but its epoch's last the trainer asks
whether to stop (a SIGINT/SIGTERM, or :meth:`Trainer.request_stop`) and whether a periodic
checkpoint is due (``--checkpoint-every``: a time since the last checkpoint, or every n optimiser
steps); under MPI the ranks agree on both in one ``allgather`` (any rank's signal; rank 0's clock).
Either way the callbacks' ``on_step_checkpoint`` writes a mid-epoch checkpoint: what
:class:`EpochProgress` holds (the epoch's shuffled order as the generator state that drew it, the
finished steps' history values), with the parameters, the optimiser and the generator after the
step. A stop then ends the loop ("interrupted"); history.csv keeps the finished epochs only, the
epoch's row is written at its end. A resumed trainer (``progress``) continues at the next step of
the same order, and the epoch's row combines exactly the same floats in the same order as an
uninterrupted run's (:func:`sflnet.training.history.combine_rows`): bit for bit. Full-batch training
(one step per epoch) stops at epoch ends, as it always did.
"""

import contextlib
import signal
import time
from dataclasses import dataclass, field

import numpy as np

from sflnet.backend import to_device
from sflnet.errors import SflnetError
from sflnet.io.checkpoint import generator_from_state
from sflnet.losses import extra_column, subband_column
from sflnet.training.callbacks import Diverged
from sflnet.training.distributed import current_world, step_sizes
from sflnet.training.history import combine_rows, result_row
from sflnet.training.signals import graceful_interrupts
from sflnet.training.source import data_source
from sflnet.training.step import minibatch_order, train_step


def collectively(world, action):
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


@dataclass
class EpochProgress:
    """The epoch in progress: what a mid-epoch checkpoint holds and a resume continues from.

    epoch:           the epoch's number (1-based; ``Trainer.epoch + 1``)
    start_rng_state: the shuffling generator's state before the epoch drew its order (JSON form)
    order:           the epoch's steps, lists of image indices (:func:`minibatch_order`)
    results:         the finished steps' :class:`LossResult` (without gradients), or
                     :class:`LoggedStep` for the steps a resumed run read from its checkpoint
    sizes:           their image counts
    seconds:         compute time of the steps run before this process (a resumed epoch's)
    """

    epoch: int
    start_rng_state: dict
    order: list
    results: list = field(default_factory=list)
    sizes: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def steps_done(self):
        return len(self.results)


class LoggedStep:
    """A finished step read back from a mid-epoch checkpoint: its history values ({column: float}) in
    the form :func:`sflnet.training.history.result_row` reads a :class:`LossResult`, so that the epoch's
    row combines the very floats the step logged."""

    def __init__(self, values, sigmas, extra):
        self.E = values["E"]
        self.terms = {"pl": values["E_PL"], "sfl": values["E_SFL"],
                      **{name: values[extra_column(name)] for name in extra}}
        self.sfl = [values[subband_column(sigma)] for sigma in sigmas]


def restore_progress(partial, options, n_images, epoch):
    """The :class:`EpochProgress` of a mid-epoch checkpoint's ``partial``
    (:attr:`sflnet.io.checkpoint.Checkpoint.partial`) after ``epoch`` whole epochs of ``n_images``
    images: its order drawn again from the generator state it started from, its finished steps'
    values. SflnetError (one line) if they do not fit this run."""
    where = f"the mid-epoch checkpoint (epoch {partial['epoch']}, step {partial['steps_done']})"
    columns = options.history_columns[1:-1]
    if partial["epoch"] != epoch + 1:
        raise SflnetError(f"{where} does not follow epoch {epoch}")
    if list(partial["columns"]) != list(columns):
        raise SflnetError(f"{where} logs columns {','.join(partial['columns'])}, this run {','.join(columns)}")
    order = minibatch_order(n_images, options.batch_size, generator_from_state(partial["start_rng_state"]))
    sizes = [int(n) for n in partial["sizes"]]
    if len(order) != partial["steps"] or [len(indices) for indices in order[:len(sizes)]] != sizes:
        raise SflnetError(f"{where} has {partial['steps']} steps, of other sizes than this run's {len(order)}: "
                          f"other data or another --batch-size")
    extra = options.logged_terms
    results = [LoggedStep(dict(zip(columns, (float(v) for v in row))), options.sigmas, extra)
               for row in partial["rows"]]
    return EpochProgress(partial["epoch"], partial["start_rng_state"], order, results, sizes,
                         float(partial["seconds"]))


class Trainer:
    """The state of one training loop (model, optimiser, RNG, data) and the loop itself.

    options:    the run's :class:`sflnet.training.config.TrainOptions`
    dataset:    a :class:`sflnet.io.images.Dataset`; its images (C, H_i, W_i) are moved to ``xp``
    params:     {name: array on xp}, the model's parameters
    state:      the optimiser's arrays {prefix: {name: host array}} (empty for a fresh run)
    rng:        the mini-batch shuffling generator (also the VAE's ε)
    epoch:      updates applied so far (0 for a fresh run)
    reporter:   the :class:`sflnet.training.callbacks.Reporter` for notes (warnings, interrupts)
    callbacks:  list of :class:`sflnet.training.callbacks.Callback`, called in order
    step_count: optimiser steps already taken (Adam's t, the schedule's position)
    world:      the :class:`sflnet.training.distributed.World` (default: this process alone)
    partial:    a mid-epoch checkpoint's :attr:`sflnet.io.checkpoint.Checkpoint.partial` to continue
                epoch ``epoch + 1`` from (None: start the next epoch at its first step)
    """

    def __init__(self, options, dataset, xp, params, state, rng, epoch, reporter, callbacks=(), step_count=0,
                 world=None, partial=None):
        self.world = world if world is not None else current_world()
        self.options = options
        self.spec = options.spec
        self.xp = xp
        self.model = self.spec.build(params, options.loss, options.loss_settings, options)
        self.source = data_source(dataset, xp, self.model)   # in memory, or streamed from an image store
        self.names = self.source.names
        self.images = self.source.images
        self.pixels = self.source.pixels
        if hasattr(self.model, "noise"):   # the VAE samples z = μ + σε with ε from the run's generator
            self.model.noise = rng
        self.optimizer, self.schedule = self.spec.make_optimizer(options)
        self.optimizer.load_state_arrays({prefix: {n: to_device(v, xp) for n, v in arrays.items()}
                                          for prefix, arrays in state.items()}, step_count)
        self.rng = rng
        self.epoch = epoch                # updates applied so far
        self.saved_epoch = None           # epoch of the checkpoint.npz on disk (set by the checkpoint callback)
        self.reporter = reporter
        self.callbacks = [c for c in callbacks if self.world.is_root or not c.root_only]
        self.extra_terms = options.logged_terms
        self.last_row = None
        self.diverged = None              # the reason, when a callback raised Diverged
        self.stop_signal = None           # SIGINT/SIGTERM number when the loop stopped on a signal
        self.steps_per_epoch = len(step_sizes(len(self.images), options.batch_size))
        self.progress = None              # the EpochProgress of the epoch in progress
        self.epoch_step = 0               # the step of the epoch in progress just taken (1-based; callbacks)
        self.saved_step = None            # (steps done, steps) of a mid-epoch checkpoint.npz on disk, else None
        self.saved_at = time.monotonic()  # when a checkpoint was last written (--checkpoint-every)
        self.stop_requested = 0           # request_stop()'s signal number
        self.checkpoint_interval = options.checkpoint_interval   # --checkpoint-every, parsed
        self._interrupt = None            # the loop's signal flag (sflnet.training.signals)
        if partial is not None:
            self.progress = self._restore(partial)

    # -- callbacks ---------------------------------------------------------------
    def fire(self, hook, *args):
        """Call ``hook`` (a method name of :class:`Callback`) of every callback, in order."""
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def collectively(self, action):
        """:func:`collectively` on this trainer's world."""
        return collectively(self.world, action)

    # -- the epoch in progress ---------------------------------------------------
    @property
    def history_values(self):
        """The columns of a step's history values (history.csv's without ``epoch`` and ``seconds``)."""
        return self.options.history_columns[1:-1]

    def _restore(self, partial):
        return restore_progress(partial, self.options, len(self.images), self.epoch)

    def progress_record(self, seconds):
        """What a mid-epoch checkpoint stores of :attr:`progress`: (``partial_epoch`` meta, arrays)."""
        progress, columns = self.progress, self.history_values
        rows = [result_row(r, self.options.sigmas, self.extra_terms) for r in progress.results]
        meta = {"epoch": progress.epoch, "steps_done": progress.steps_done, "steps": len(progress.order),
                "start_rng_state": progress.start_rng_state, "columns": list(columns), "seconds": seconds}
        arrays = {"partial_rows": np.array([[row[c] for c in columns] for row in rows], dtype=np.float64),
                  "partial_sizes": np.array(progress.sizes, dtype=np.int64)}
        return meta, arrays

    def request_stop(self, signum=signal.SIGTERM):
        """Ask the loop to stop as a first SIGINT/SIGTERM does (after the current step with mini-batches)."""
        self.stop_requested = int(signum)

    def _stop_signal_here(self):
        flag = self._interrupt
        return (flag.signal_number if flag is not None and flag.signal_number else 0) or self.stop_requested

    def _checkpoint_due(self):
        """Whether ``--checkpoint-every`` asks for a checkpoint after the step just taken."""
        interval = self.checkpoint_interval
        if interval is None:
            return False
        kind, amount = interval
        if kind == "steps":
            return self.optimizer.step_count % amount == 0
        return time.monotonic() - self.saved_at >= amount

    def _after_step(self, started):
        """After a step that does not end its epoch: a mid-epoch checkpoint when a stop was asked for or
        a periodic one is due; returns the signal number to stop with (0: go on). Under MPI every rank
        gets the same answer (any rank's signal, rank 0's clock)."""
        stop, due = self._stop_signal_here(), self._checkpoint_due()
        if self.world.distributed:
            votes = self.world.gather((stop, due))
            stop, due = next((s for s, _ in votes if s), 0), votes[0][1]
        if stop or due:
            record = self.progress_record(self.progress.seconds + time.perf_counter() - started)
            holding = self._interrupt.holding() if self._interrupt is not None else contextlib.nullcontext()
            with holding:   # a second signal during the write waits for its end (milliseconds)
                self.collectively(lambda: self.fire("on_step_checkpoint", record))
            self.saved_at = time.monotonic()   # (also without a checkpoint callback: the next one is due later)
        return stop

    # -- one epoch --------------------------------------------------------------
    def run_epoch(self):
        """Epoch ``self.epoch + 1`` (from its next step, when one is in progress); returns its history
        row, or None when a stop request ended it after a step (and a mid-epoch checkpoint was written).
        Callbacks may raise Diverged."""
        epoch = self.epoch + 1
        start = time.perf_counter()
        if self.progress is None:
            state = self.rng.bit_generator.state
            self.progress = EpochProgress(epoch, state, minibatch_order(len(self.images), self.options.batch_size,
                                                                        self.rng))
        progress = self.progress
        todo = progress.order[progress.steps_done:]
        # Each step's batch: the whole step in one process; under MPI this rank's images of it
        # (sflnet.training.distributed.shard) and the sum over ranks (see sflnet.training.source).
        with contextlib.closing(self.source.steps(todo, self.world)) as steps:
            for indices, (batch, sharing) in zip(todo, steps):
                # Overflow/NaN is detected by the divergence guard; NumPy's warnings would only add noise.
                if self.schedule is not None:
                    self.optimizer.lr = self.schedule(self.optimizer.step_count)
                with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                    result = train_step(self.model, self.optimizer, batch, **sharing)
                self.epoch_step = progress.steps_done + 1
                self.fire("on_step_end", epoch, result)
                result.grads = None      # the epoch's row needs only the losses: keep no gradient per step
                progress.results.append(result)
                progress.sizes.append(len(indices))
                if progress.steps_done < len(progress.order):
                    stop = self._after_step(start)
                    if stop:
                        self.stop_requested = stop
                        return None
        # No synchronize() needed for the timing: each step ended with a transfer that waits for its update.
        row = combine_rows(progress.results, progress.sizes, self.options.sigmas, self.extra_terms)
        row["epoch"] = epoch
        row["seconds"] = progress.seconds + time.perf_counter() - start
        self.epoch = epoch
        self.progress = None
        return row

    # -- the loop ---------------------------------------------------------------
    def loop(self):
        """Run epochs up to ``options.epochs``; returns "completed", "interrupted" or (with no
        divergence guard among the callbacks) "diverged".

        The first SIGINT/SIGTERM stops after the current step (mini-batches, with a mid-epoch
        checkpoint) or epoch (full batch), a second one abandons the step at once. A callback's
        :class:`Diverged` stops at once; the callbacks' ``on_train_end`` then raise (the divergence guard).
        """
        options = self.options
        world = self.world
        status = "completed"
        second = (lambda signum: world.abort(128 + signum)) if world.distributed else None
        interrupt = None
        unit = "step" if self.steps_per_epoch > 1 else "epoch"
        self.collectively(lambda: self.fire("on_train_start"))
        self.saved_at = time.monotonic()
        try:
            with graceful_interrupts(self.reporter, second, unit) as interrupt:
                self._interrupt = interrupt
                while self.epoch < options.epochs:
                    try:
                        row = self.run_epoch()   # under MPI every rank sees the same summed losses
                    except Diverged as exc:
                        self.diverged = str(exc)
                        status = "diverged"
                        break
                    if row is None:              # stopped after a step, its checkpoint written
                        interrupt.signal_number = self.stop_requested
                        status = "interrupted"
                        break
                    self.last_row = row
                    self.collectively(lambda: self.fire("on_epoch_end", row))
                    stop = self._stop_signal_here()     # under MPI: the first rank's signal, on every rank
                    stop = world.first_nonzero(stop) if world.distributed else stop
                    if stop and self.epoch < options.epochs:
                        interrupt.signal_number = stop
                        status = "interrupted"
                        break
        except KeyboardInterrupt:   # a second Ctrl-C: the step in progress is abandoned
            status = "interrupted"
        finally:
            self._interrupt = None
            self.stop_signal = interrupt.signal_number if status == "interrupted" and interrupt else None
            self.fire("teardown")
        self.fire("on_train_end", status)
        return status

