"""``sflnet evaluate``: a checkpoint's loss terms, metrics and optionally gradients on a data set.

The evaluation itself (:mod:`sflnet.training.evaluation`, :mod:`sflnet.training.data`) is imported when
the command runs, not when ``sflnet`` starts.
"""

import json
import math
import os

import click
import numpy as np

from sflnet import SflnetError
from sflnet.backend import DEVICES, select_device
from sflnet.io.checkpoint import load_checkpoint, write_npz_atomic
from sflnet.losses import canonical, extra_column
from sflnet.models import names_with
from sflnet_cli.loss_help import LossHelpCommand
from sflnet_cli.options import (absolute_paths, check_size, data_options, data_warning, evaluation_settings,
                                format_list, json_safe,
                                refuse_existing, stderr_note, stft_options)


@click.command(cls=LossHelpCommand)
@click.argument("checkpoint", type=click.Path())
@data_options(size_default=None, data_default="the checkpoint's training data, with its "
              "include/exclude patterns")
@click.option("--loss", default=None, metavar="EXPR",
              help="Objective reported as E (and differentiated for --grads), written as for train --loss, "
                   "e.g. pl+100*fft. Default: the checkpoint's.")
@stft_options(defaults=False)
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: loss, E, E_PL, E_SFL, sfl (σ → value), terms (loss → unit-weight "
                   "value), psnr, ssim, images.")
@click.option("--grads", type=click.Path(), default=None, metavar="FILE.npz",
              help="Also write the full-batch gradient dE/dθ under w2 … b5, in the run's dtype.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --grads file.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--split", type=click.Choice(("test", "train")), default=None,
              help="vae: which digits to evaluate on.  [default: test]")
@click.option("--sample-latent", is_flag=True,
              help="vae: decode z = μ + σε (ε drawn with --seed) instead of z = μ, for the losses and for "
                   "PSNR/SSIM (the authors' evaluation: --sample-latent --seed SEED --split test).")
@click.option("--seed", type=int, default=0, show_default=True, help="vae with --sample-latent: seed of ε.")
def evaluate(checkpoint, data, include, exclude, size, skip_bad, loss, stft_window, stft_stride, stft_window_fn,
             stft_phase_weight, as_json, grads, overwrite, device, split, sample_latent, seed):
    """Losses, mean PSNR and mean SSIM of a CHECKPOINT on a data set.

    Default data: the checkpoint's training data, size and include/exclude patterns (a vae
    checkpoint: the test split of its digits, z = μ, E = β·KL + its --loss terms).
    E (the --loss objective), E_PL, E_SFL, the unit-weight SFL per σ and each other term
    are computed exactly as in training (full batch); evaluating checkpoints/epoch_NNNN.npz
    with the run's own objective reproduces row NNNN+1 of the run's history.csv. PSNR and SSIM compare images on [-1, 1] with data_range = 2,
    which equals 8-bit PSNR/SSIM. A vae checkpoint: on [0, 1] with data_range 1, unclipped, scoring
    the decoder's output as the run's --output made it (the sigmoid's, or the raw linear output);
    the report's "scored" line says which.
    """
    from sflnet.training.data import check_image_sizes  # noqa: PLC0415
    from sflnet.training.evaluation import checkpoint_options, evaluate_data, model_from_checkpoint  # noqa: PLC0415

    check_size(size)
    ckpt = load_checkpoint(checkpoint)
    config = ckpt.config
    expression = canonical(loss) if loss is not None else config["loss"]
    settings = evaluation_settings(ckpt, stft_window, stft_stride, stft_window_fn, stft_phase_weight)
    spec = ckpt.spec
    if spec.sample_grid is None and (split is not None or sample_latent):
        raise SflnetError(f"--split and --sample-latent are only for {' and '.join(names_with('sample_grid'))} "
                          f"checkpoints")
    request = {"data": absolute_paths(data), "include": include, "exclude": exclude, "size": size,
               "skip_bad": skip_bad, "split": split, "sample_latent": sample_latent, "warn": data_warning}
    load_data, shape = spec.evaluation_data(checkpoint_options(ckpt), request)
    size = config["size"] if size is None else size
    if grads is not None:
        refuse_existing([grads], overwrite)
        parent = os.path.dirname(os.path.abspath(grads))
        if not os.path.isdir(parent):
            raise SflnetError(f"--grads {grads}: folder {parent} does not exist")
    dataset = load_data()
    check_image_sizes(expression, settings, dataset)
    xp = select_device(device)
    model = model_from_checkpoint(ckpt, xp, loss=expression, loss_settings=settings)
    if sample_latent:
        if seed < 0:
            raise SflnetError(f"--seed must be >= 0, got {seed}")
        model.noise = np.random.default_rng(seed)
    report, gradient = evaluate_data(model, dataset, xp, compute_grads=grads is not None)
    if grads is not None:
        meta = {"what": "full-batch gradient dE/dtheta", "loss": model.loss, "E": report["E"],
                "checkpoint": os.path.abspath(checkpoint), "epoch": ckpt.epoch, "images": report["images"],
                "size": size, "dtype": str(ckpt.dtype)}
        arrays = {name: gradient[name] for name in ckpt.spec.param_names}
        arrays["meta"] = np.array(json.dumps(meta))
        write_npz_atomic(grads, arrays, what="gradient file")
    if not all(math.isfinite(v) for v in (report["E"], *report["terms"].values(), *report["sfl"].values())):
        stderr_note("warning: the losses are not finite: the checkpoint's parameters overflow on this data")
    if as_json:
        click.echo(json.dumps(json_safe(report), allow_nan=False))
        return
    loss_text = "E = " + " + ".join(
        (column if t.weight == 1.0 else f"{t.weight:g}·{column}")
        for t, column in ((t, "E_" + t.name.upper()) for t in model.objective.terms))
    if spec.energy_text is not None:
        loss_text += spec.energy_text(model)
    low, high = ckpt.spec.value_range
    lines = [
        f"checkpoint  {checkpoint} ({_trained_text(ckpt)})",
        f"data        {dataset.source}: {report['images']} images, {shape}",
        f"loss        {model.loss} ({loss_text}; SFL weights {format_list(config['sfl_weights'])})",
        f"E           {report['E']:.10g}",
        f"E_PL        {report['E_PL']:.10g}",
        f"E_SFL       {report['E_SFL']:.10g}",
    ]
    lines += [f"SFL σ={label:<5} {value:.10g} (unit weight)" for label, value in report["sfl"].items()]
    lines += [f"{extra_column(name):<11} {value:.10g} (unit weight)" for name, value in report["terms"].items()
              if name not in ("pl", "sfl")]
    lines += [
        f"PSNR        {report['psnr']:.4f} dB (mean over images; images on [{low:g}, {high:g}], data_range "
        f"{high - low:g}, the same as 8-bit PSNR)",
        (f"SSIM        {report['ssim']:.4f} (mean over images; data_range {high - low:g}, Gaussian window σ=1.5, "
         f"valid region)"
         if math.isfinite(report["ssim"]) else
         "SSIM        n/a (an image is smaller than the 11x11 SSIM window)"),
        f"images      {report['images']}",
    ]
    if spec.scored_text is not None:
        lines.append(f"scored      {spec.scored_text(model)}, "
                     + ("z = μ + σε (ε drawn with --seed)" if sample_latent else "z = μ"))
    if grads is not None:
        lines.append(f"gradient    written to {grads}")
    click.echo("\n".join(lines))


def _trained_text(ckpt):
    """How far the checkpoint's parameters were trained: ``epoch 3: parameters after 3 epochs``, and for a
    mid-epoch checkpoint (a stop request or --checkpoint-every) the steps of the epoch in progress too."""
    text = f"epoch {ckpt.epoch}: parameters after {ckpt.epoch} epoch{'' if ckpt.epoch == 1 else 's'}"
    if ckpt.partial is not None:
        text += f" and {ckpt.partial['steps_done']} of the {ckpt.partial['steps']} steps of epoch {ckpt.partial['epoch']}"
    return text
