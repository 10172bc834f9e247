"""One training step: forward, backward and momentum update on a (mini-)batch.

The losses reported for a step are those of its forward pass, i.e. measured
*before* the update (as the paper's learning curves log them).
"""

import numpy as np

from sflnet.backend import get_array_module


def health_flags(params, grads):
    """Device-side checks of one step, as 0-d bool arrays (no host synchronisation here):

    params_finite:  every parameter is finite after the update
    grads_nonzero:  some gradient element is non-zero (all zero with E > 0 means a collapsed network)
    params, grads: {name: array} on one device.
    """
    xp = get_array_module(*params.values())
    return {"params_finite": xp.stack([xp.isfinite(p).all() for p in params.values()]).all(),
            "grads_nonzero": xp.stack([g.any() for g in grads.values()]).any()}


def train_step(model, optimizer, batch, **sharing):
    """Forward + backward on ``batch`` (see :func:`sflnet.models.cae.as_groups`), then one optimizer step.

    sharing: for data-parallel training, ``batch_count``, ``reduce`` and ``positions`` of
    ``model.loss_and_grads`` (this process's share of the step, and the sum over processes).
    The paper's untrained columns are measured only for a model whose
    ``TRAINING_MEASURES_PAPER_TERMS`` is True (see :class:`sflnet.models.base.Model`).
    returns the :class:`sflnet.models.base.LossResult` measured before the update, with
    ``flags`` = :func:`health_flags` after it. The update runs before the losses come to the
    host, so the whole step needs a single device→host transfer.
    """
    def update(grads):
        optimizer.step(model.params, grads)
        return health_flags(model.params, grads)

    return model.loss_and_grads(batch, then=update, paper_terms=model.TRAINING_MEASURES_PAPER_TERMS, **sharing)


def minibatch_order(n_images, batch_size, rng):
    """Index lists for one epoch: all images at once when ``batch_size`` is 0 or ≥ n, else a
    shuffled split (``rng.permutation``) into consecutive batches of ``batch_size``."""
    if batch_size <= 0 or batch_size >= n_images:
        return [list(range(n_images))]
    order = rng.permutation(n_images)
    return [order[i:i + batch_size].tolist() for i in range(0, n_images, batch_size)]


def train_epoch(model, optimizer, images, batch_size=0, rng=None):
    """One epoch over ``images`` (list of (3, H_i, W_i)). Full batch when ``batch_size`` is 0.

    returns the list of per-step :class:`LossResult` (one element for full batch).
    ``rng`` (numpy Generator) shuffles the mini-batches; it is needed only when batching.
    """
    if rng is None:
        rng = np.random.default_rng(0)
    results = []
    for indices in minibatch_order(len(images), batch_size, rng):
        results.append(train_step(model, optimizer, [images[i] for i in indices]))
    return results
