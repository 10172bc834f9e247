"""A model from a checkpoint, and its evaluation: losses, PSNR/SSIM and optionally the gradient
(``sflnet evaluate``, ``reconstruct``, ``sample``, ``encode`` and the validation scripts)."""

import copy

import numpy as np

from sflnet.backend import to_device, to_host
from sflnet.losses import LossSettings, sigma_label
from sflnet.metrics import mean_psnr_ssim, psnr_ssim_values
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
    the losses' pass: the metrics decode the same ε (a copy of the generator replays the draw).
    """
    low, high = model.loss_settings.value_range
    noise = getattr(model, "noise", None)
    replay = None if noise is None else copy.deepcopy(noise)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):   # non-finite results are returned as such
        result = model.loss_and_grads(images, compute_grads=compute_grads)
        recons = model.reconstruct(images) if replay is None else model.reconstruct(images, noise=replay)
        psnr, ssim = mean_psnr_ssim([to_host(x) for x in images], [to_host(r) for r in recons],
                                    data_range=high - low, data_min=low)
    return _report(model, result, psnr, ssim, len(images), compute_grads)


def evaluate_data(model, dataset, xp, compute_grads=False):
    """:func:`evaluate_model` on a data set (``names``, ``images``; see :func:`sflnet.io.store.load_images`).

    Images held in memory are put on the device whole. An image store (``--data STORE``) is streamed,
    so a store larger than memory can be evaluated: one pass of the store's chunks for the losses
    (and gradient), a second for the reconstructions and the per-image PSNR/SSIM; no image is held.
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
        for batch, _ in source.steps(everything, single):
            result = model.loss_and_grads(batch, compute_grads=compute_grads)
        psnr_values, ssim_values = [None] * len(dataset), [None] * len(dataset)
        for batch, _ in source.steps(everything, single):
            for ids, chunk in zip(source.chunk_indices(everything[0]), batch.stream()):
                recon = model.forward(chunk)      # what model.reconstruct computes for this chunk
                originals = [to_host(chunk[row]) for row in range(len(ids))]
                values = psnr_ssim_values(originals, [to_host(recon[row]) for row in range(len(ids))],
                                          data_range=high - low, data_min=low)
                for row, i in enumerate(ids):
                    psnr_values[i], ssim_values[i] = values[0][row], values[1][row]
    return _report(model, result, float(np.mean(psnr_values)), float(np.mean(ssim_values)), len(dataset),
                   compute_grads)


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
