"""The training loop: epochs of optimiser steps, and the callbacks' hooks around them.

Epoch k (1-based) is the k-th pass over the training data. Its forward pass measures the losses
with the parameters after k−1 updates; then the update is applied. Everything else an epoch's
end brings (history, snapshots, checkpoints, figures, progress, the divergence check) is a
callback (:mod:`sflnet.training.callbacks`).
"""

import contextlib
import time

import numpy as np

from sflnet.backend import to_device
from sflnet.errors import SflnetError
from sflnet.training.callbacks import Diverged
from sflnet.training.distributed import current_world
from sflnet.training.history import combine_rows
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
    """

    def __init__(self, options, dataset, xp, params, state, rng, epoch, reporter, callbacks=(), step_count=0,
                 world=None):
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

    # -- callbacks ---------------------------------------------------------------
    def fire(self, hook, *args):
        """Call ``hook`` (a method name of :class:`Callback`) of every callback, in order."""
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def collectively(self, action):
        """:func:`collectively` on this trainer's world."""
        return collectively(self.world, action)

    # -- one epoch --------------------------------------------------------------
    def run_epoch(self):
        """Epoch ``self.epoch + 1``: all its steps; returns its history row. Callbacks may raise Diverged."""
        epoch = self.epoch + 1
        start = time.perf_counter()
        results, sizes = [], []
        order = minibatch_order(len(self.images), self.options.batch_size, self.rng)
        # Each step's batch: the whole step in one process; under MPI this rank's images of it
        # (sflnet.training.distributed.shard) and the sum over ranks (see sflnet.training.source).
        with contextlib.closing(self.source.steps(order, self.world)) as steps:
            for indices, (batch, sharing) in zip(order, steps):
                # Overflow/NaN is detected by the divergence guard; NumPy's warnings would only add noise.
                if self.schedule is not None:
                    self.optimizer.lr = self.schedule(self.optimizer.step_count)
                with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                    result = train_step(self.model, self.optimizer, batch, **sharing)
                self.fire("on_step_end", epoch, result)
                result.grads = None      # the epoch's row needs only the losses: keep no gradient per step
                results.append(result)
                sizes.append(len(indices))
        # No synchronize() needed for the timing: each step ended with a transfer that waits for its update.
        row = combine_rows(results, sizes, self.options.sigmas, self.extra_terms)
        row["epoch"] = epoch
        row["seconds"] = time.perf_counter() - start
        self.epoch = epoch
        return row

    # -- the loop ---------------------------------------------------------------
    def loop(self):
        """Run epochs up to ``options.epochs``; returns "completed", "interrupted" or (with no
        divergence guard among the callbacks) "diverged".

        The first SIGINT/SIGTERM stops after the current epoch, a second one abandons it. A callback's
        :class:`Diverged` stops at once; the callbacks' ``on_train_end`` then raise (the divergence guard).
        """
        options = self.options
        world = self.world
        status = "completed"
        second = (lambda signum: world.abort(128 + signum)) if world.distributed else None
        interrupt = None
        self.collectively(lambda: self.fire("on_train_start"))
        try:
            with graceful_interrupts(self.reporter, second) as interrupt:
                while self.epoch < options.epochs:
                    try:
                        row = self.run_epoch()   # under MPI every rank sees the same summed losses
                    except Diverged as exc:
                        self.diverged = str(exc)
                        status = "diverged"
                        break
                    self.last_row = row
                    self.collectively(lambda: self.fire("on_epoch_end", row))
                    stop = interrupt.signal_number or 0     # under MPI: the first rank's signal, on every rank
                    stop = world.first_nonzero(stop) if world.distributed else stop
                    if stop and self.epoch < options.epochs:
                        interrupt.signal_number = stop
                        status = "interrupted"
                        break
        except KeyboardInterrupt:   # a second Ctrl-C: the epoch in progress is abandoned
            status = "interrupted"
        finally:
            self.stop_signal = interrupt.signal_number if status == "interrupted" and interrupt else None
            self.fire("teardown")
        self.fire("on_train_end", status)
        return status

