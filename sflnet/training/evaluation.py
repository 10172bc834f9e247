"""A model from a checkpoint, and its evaluation: losses, PSNR/SSIM and optionally the gradient
(``sflnet evaluate``, ``reconstruct``, ``sample``, ``encode`` and the validation scripts)."""

import copy

import numpy as np

from sflnet.backend import to_device, to_host
from sflnet.losses import LossSettings, sigma_label
from sflnet.training.config import TrainOptions


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
    from sflnet.metrics import mean_psnr_ssim  # noqa: PLC0415

    low, high = model.loss_settings.value_range
    noise = getattr(model, "noise", None)
    replay = None if noise is None else copy.deepcopy(noise)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):   # non-finite results are returned as such
        result = model.loss_and_grads(images, compute_grads=compute_grads)
        recons = model.reconstruct(images) if replay is None else model.reconstruct(images, noise=replay)
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
