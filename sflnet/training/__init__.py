"""Training runs: the options, the run folder, history.csv, the loop and its callbacks, MPI and the lock.

=================  ==================================================================
module             what
=================  ==================================================================
:mod:`.config`     :class:`TrainOptions`: every setting of a run, its checks, config.json form
:mod:`.run`        :func:`run_training`: a fresh or resumed run in a locked folder, under MPI or not
:mod:`.trainer`    :class:`Trainer`: epochs of optimiser steps, calling the callbacks' hooks
:mod:`.callbacks`  history, snapshots, checkpoints, curves, progress, the divergence guard
:mod:`.step`       one optimiser step (:func:`train_step`) and the mini-batch order
:mod:`.run_folder` the files of a run folder, the ``--out`` checks, config.json
:mod:`.history`    history.csv: columns, writing, reading, truncating
:mod:`.data`       the training data of a run: loading, fingerprint, same-data checks
:mod:`.evaluation` a model from a checkpoint, and its losses and PSNR/SSIM
:mod:`.signals`    Ctrl-C and SIGTERM: stop after the epoch, or at once
:mod:`.runlock`    the run folder's lock
:mod:`.distributed` MPI: ranks, sharding, collectives
=================  ==================================================================

This package's ``__init__`` imports nothing, so that importing one module (for example
:mod:`.run_folder` from :mod:`sflnet.figures`) does not import the others.
"""
