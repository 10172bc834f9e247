"""``sflnet reconstruct``: a checkpoint's reconstructions of images (or of the model's own inputs) as PNGs."""

import os

import click
import numpy as np

from sflnet import SflnetError
from sflnet.backend import DEVICES, select_device, to_device, to_host
from sflnet.io.checkpoint import load_checkpoint
from sflnet.io.images import save_png
from sflnet_cli.options import SIDE_BY_SIDE_GAP, check_size, data_warning, refuse_existing


@click.command()
@click.argument("checkpoint", type=click.Path())
@click.argument("inputs", nargs=-1, type=click.Path(), metavar="[INPUT]...")
@click.option("--out", required=True, type=click.Path(), metavar="DIR", help="Folder for the output PNGs.")
@click.option("--size", type=int, default=None,
              help="Longer image side in pixels; 0 keeps the native size. Default: the checkpoint's training size.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--side-by-side", is_flag=True, help="Also write NAME_side_by_side.png: original | reconstruction.")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
@click.option("--skip-bad", is_flag=True, help="Skip unreadable image files with a warning.")
@click.option("--count", type=int, default=20, show_default=True,
              help="vae without INPUT: how many test digits to reconstruct (the first of the test split).")
def reconstruct(checkpoint, inputs, out, size, device, side_by_side, overwrite, skip_bad, count):
    """Reconstruct images with a trained CHECKPOINT.

    INPUT is an image file or a folder (searched recursively). One PNG per input is
    written to DIR, named after the input (sub-folders kept), with the size of the input
    after --size. The CAE is fully convolutional, so any size works. A VAE checkpoint takes
    square digit pictures (resized to 28x28, averaged to grey, binarised like its training
    data), with z = μ; without INPUT it reconstructs the first --count test digits.
    """
    from sflnet.training.evaluation import checkpoint_options, model_from_checkpoint  # noqa: PLC0415

    check_size(size)
    ckpt = load_checkpoint(checkpoint)
    if os.path.lexists(out) and not os.path.isdir(out):
        raise SflnetError(f"--out {out} exists and is not a folder")
    dataset = ckpt.spec.reconstruct_inputs(checkpoint_options(ckpt), inputs, size, skip_bad, count, data_warning)
    targets, seen = [], {}
    for name in dataset.names:
        stem = os.path.splitext(name)[0]
        target = os.path.join(out, stem + ".png")
        if target in seen:
            raise SflnetError(f"inputs {seen[target]!r} and {name!r} would both be written to {target}")
        seen[target] = name
        targets.append((target, os.path.join(out, stem + "_side_by_side.png")))
    refuse_existing([t for pair in targets for t in (pair if side_by_side else pair[:1])], overwrite)
    xp = select_device(device)
    model = model_from_checkpoint(ckpt, xp)
    value_range = ckpt.spec.value_range
    for image, (target, side_target) in zip(dataset.images, targets):
        recon = to_host(model.reconstruct([to_device(image, xp)])[0])
        save_png(recon, target, value_range=value_range)
        if side_by_side:
            gap = np.full((image.shape[0], image.shape[1], SIDE_BY_SIDE_GAP), value_range[1], dtype=image.dtype)
            save_png(np.concatenate([image, gap, recon], axis=2), side_target, value_range=value_range)
    click.echo(f"Wrote {len(targets)} reconstruction(s) to {out} (checkpoint epoch {ckpt.epoch}).")
