"""A model from a checkpoint, and its evaluation: losses, PSNR/SSIM and optionally the gradient
(``sflnet evaluate``, ``reconstruct``, ``sample``, ``encode`` and the validation scripts)."""

import contextlib
import copy

import numpy as np

from sflnet.backend import get_array_module, to_device, to_host
from sflnet.losses import LossSettings, sigma_label
from sflnet.metrics import psnr_ssim_batch, psnr_ssim_values
from sflnet.models.cae import Autoencoder
from sflnet.models.vae import VAE
from sflnet.training.config import TrainOptions
from sflnet.training.distributed import SingleProcess
from sflnet.training.source import MemorySource, data_source


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
    same as 8-bit PSNR/SSIM), [0, 1] with data_range 1 for the VAE; the reconstructions are not
    clipped (a VAE with a linear output is scored on its raw output).
    A VAE with ``model.noise`` set (``sflnet evaluate --sample-latent``) is scored on the z = μ + σε of
    the losses' pass.

    One pass for the built-in models (:func:`reconstructs_as_measured`): the metrics score the
    reconstructions the losses' pass makes, chunk by chunk (:class:`ChunkMetrics`), which are what
    ``model.reconstruct`` returns for the same images (the same forward of the same chunks; with
    ``model.noise``, the same ε). For another model, or where the chunks cannot be matched to the
    images, the reconstructions are made in a second pass, as before (a copy of the generator replays ε).
    """
    low, high = model.loss_settings.value_range
    noise = getattr(model, "noise", None)
    replay = None if noise is None else copy.deepcopy(noise)
    plan = model.chunk_plan([tuple(x.shape) for x in images]) if hasattr(model, "chunk_plan") else None
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):   # non-finite results are returned as such
        metrics = ChunkMetrics(len(images), high - low, low, plan=plan, images=images)
        with metrics.watching(model.objective) if reconstructs_as_measured(model) else contextlib.nullcontext():
            result = model.loss_and_grads(images, compute_grads=compute_grads)
        if metrics.complete:
            psnr_values, ssim_values = metrics.psnr, metrics.ssim
        else:
            recons = model.reconstruct(images) if replay is None else model.reconstruct(images, noise=replay)
            psnr_values, ssim_values = psnr_ssim_values([to_host(x) for x in images], [to_host(r) for r in recons],
                                                        data_range=high - low, data_min=low)
    return _report(model, result, *_means(psnr_values, ssim_values), len(images), compute_grads)


def evaluate_data(model, dataset, xp, compute_grads=False):
    """:func:`evaluate_model` on a data set (``names``, ``images``; see :func:`sflnet.io.store.load_images`).

    Images held in memory are put on the device whole. An image store (``--data STORE``) is streamed,
    so a store larger than memory can be evaluated: one pass of the store's chunks for the losses
    (and gradient) and the per-image PSNR/SSIM of each chunk's reconstructions; no image is held.
    The chunks are the ones the model cuts the same images into when they are held, so both ways give
    the same numbers bit for bit. returns what :func:`evaluate_model` returns.
    """
    source = data_source(dataset, xp, model)
    if isinstance(source, MemorySource):
        return evaluate_model(model, source.images, compute_grads)
    low, high = model.loss_settings.value_range
    everything = [list(range(len(dataset)))]
    single = SingleProcess()
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        metrics = ChunkMetrics(len(dataset), high - low, low, plan=source.chunk_indices(everything[0]))
        with metrics.watching(model.objective) if reconstructs_as_measured(model) else contextlib.nullcontext():
            for batch, _ in source.steps(everything, single):
                result = model.loss_and_grads(batch, compute_grads=compute_grads)
        if metrics.complete:
            psnr_values, ssim_values = metrics.psnr, metrics.ssim
        else:   # a second pass of the store's chunks for the reconstructions
            psnr_values, ssim_values = [None] * len(dataset), [None] * len(dataset)
            for batch, _ in source.steps(everything, single):
                for ids, chunk in zip(source.chunk_indices(everything[0]), batch.stream()):
                    recon = model.forward(chunk)      # what model.reconstruct computes for this chunk
                    values = psnr_ssim_batch(to_host(chunk), to_host(recon), high - low, data_min=low)
                    for row, i in enumerate(ids):
                        psnr_values[i], ssim_values[i] = values[0][row], values[1][row]
    return _report(model, result, *_means(psnr_values, ssim_values), len(dataset), compute_grads)


def reconstructs_as_measured(model):
    """Whether ``model.reconstruct`` is known to compute the very forward passes that ``loss_and_grads``
    measures, chunk for chunk: the built-in models, exactly (the CAE cuts the chunks of its ``chunk_plan``
    both times; the VAE runs of ``max_chunk_images`` digits, with ε drawn for the whole batch in one
    draw both times). A plug-in model, or a subclass, may reconstruct otherwise (image by image, say,
    where a matrix product of other shapes may round differently), so it gets the second pass."""
    return type(model) in (Autoencoder, VAE)


class ChunkMetrics:
    """The per-image PSNR and SSIM of the reconstructions a losses' pass makes, taken chunk by chunk.

    While :meth:`watching` an objective, every ``objective.forward(recon, target, ...)`` of a chunk first
    scores ``recon`` against ``target`` (:func:`sflnet.metrics.psnr_ssim_batch`) and files the values
    under the chunk's images: ``plan[k]``, the image positions of the k-th chunk (the model's
    ``chunk_plan``, or a store's planned chunks), or without a plan the next ``len(target)`` positions
    (a model that cuts consecutive runs, as the VAE does). With ``images`` (held on the device) each
    chunk's targets are checked to be those images, bit for bit; a chunk that is not (or more chunks
    than images) leaves :attr:`complete` False, and the caller makes the reconstructions itself.
    """

    def __init__(self, count, data_range, data_min, plan=None, images=None):
        self.data_range, self.data_min = data_range, data_min
        self.plan = None if plan is None else [list(positions) for positions in plan]
        self.images = images
        self.psnr, self.ssim = [None] * count, [None] * count
        self.chunks, self.next, self.matched = 0, 0, True

    @property
    def complete(self):
        """Whether every image got its values from a matched chunk."""
        return self.matched and all(value is not None for value in self.psnr)

    @contextlib.contextmanager
    def watching(self, objective):
        """Score every chunk ``objective.forward`` measures while the block runs."""
        measure = objective.forward

        def forward(recon, target, *args, **kwargs):
            if self.matched:
                self.add(recon, target)
            return measure(recon, target, *args, **kwargs)

        objective.forward = forward
        try:
            yield self
        finally:
            del objective.forward     # the class's method again

    def _positions(self, n):
        if self.plan is not None:
            positions = self.plan[self.chunks] if self.chunks < len(self.plan) else []
        else:
            positions = list(range(self.next, min(self.next + n, len(self.psnr))))
        self.chunks += 1
        self.next += n
        return positions

    def add(self, recon, target):
        """File the values of one chunk: recon and target (n, C, H, W) on the device."""
        positions = self._positions(int(target.shape[0]))
        if len(positions) != target.shape[0] or any(self.psnr[i] is not None for i in positions) or (
                self.images is not None and not self._same_images(target, positions)):
            self.matched = False
            return
        psnr, ssim = psnr_ssim_batch(to_host(target), to_host(recon), self.data_range, data_min=self.data_min)
        for row, i in enumerate(positions):
            self.psnr[i], self.ssim[i] = psnr[row], ssim[row]

    def _same_images(self, target, positions):
        xp = get_array_module(target)
        held = [self.images[i] for i in positions]
        if any(tuple(x.shape) != tuple(target.shape[1:]) or x.dtype != target.dtype for x in held):
            return False
        return bool(xp.array_equal(target, xp.stack(held)))


def _means(psnr_values, ssim_values):
    """The plain means of the per-image values (as :func:`sflnet.metrics.mean_psnr_ssim` takes them)."""
    return float(np.mean(psnr_values)), float(np.mean(ssim_values))


def _report(model, result, psnr, ssim, count, compute_grads):
    """The report and gradient of :func:`evaluate_model` from a :class:`LossResult` and the mean metrics."""
    report = {
        "loss": model.loss, "E": result.E, "E_PL": result.E_PL, "E_SFL": result.E_SFL,
        "sfl": {sigma_label(s): float(v) for s, v in zip(model.sigmas, result.sfl)},
        "terms": dict(result.terms),
        "psnr": psnr, "ssim": ssim, "images": count,
    }
    grads = {n: to_host(g) for n, g in result.grads.items()} if compute_grads else None
    return report, grads
