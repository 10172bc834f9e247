"""``sflnet encode``: the CAE encoder's features per image as .npy files (thin over :mod:`sflnet.features`)."""

import json
import os

import click
import numpy as np

from sflnet import SflnetError
from sflnet.backend import DEVICES, select_device, to_device
from sflnet.io.checkpoint import load_checkpoint, write_text_atomic
from sflnet.features import DEFAULT_LAYER, DEFAULT_POOL, LAYERS, POOLS, check_layer_and_pool, encode_images
from sflnet.models import names_with
from sflnet_cli.options import check_size, data_warning, refuse_existing

MANIFEST_FILE = "manifest.json"


@click.command()
@click.argument("checkpoint", type=click.Path())
@click.argument("inputs", nargs=-1, type=click.Path(), metavar="INPUT...")
@click.option("--out", required=True, type=click.Path(), metavar="DIR",
              help="Folder for the .npy files and manifest.json.")
@click.option("--layer", type=int, default=DEFAULT_LAYER, show_default=True,
              help=f"Which activation f^l: one of {', '.join(str(n) for n in LAYERS)}; 3 = the bottleneck "
                   "(conv3 + ReLU, 16 x H/2 x W/2), 2 and 4 the 32-channel ReLU outputs, 5 the tanh output.")
@click.option("--pool", default=DEFAULT_POOL, show_default=True, metavar="|".join(POOLS),
              help="mean/max: a (C,) vector per image (spatial mean or max); none: the full (C, H', W') map.")
@click.option("--size", type=int, default=None,
              help="Longer image side in pixels; 0 keeps the native size. Default: the checkpoint's training size.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
@click.option("--skip-bad", is_flag=True, help="Skip unreadable image files with a warning.")
def encode(checkpoint, inputs, out, layer, pool, size, device, overwrite, skip_bad):
    """Write the features of a cae CHECKPOINT's layer for each INPUT image.

    INPUT is an image file or a folder (searched recursively). DIR/NAME.npy holds
    one image's features (float, the checkpoint's dtype), named after the input
    (sub-folders kept); DIR/manifest.json lists {image, file, shape, layer, pool}
    for every image.
    """
    from sflnet.io.store import load_images  # noqa: PLC0415
    from sflnet.training.evaluation import model_from_checkpoint  # noqa: PLC0415

    check_layer_and_pool(layer, pool)
    check_size(size)
    ckpt = load_checkpoint(checkpoint)
    if not ckpt.spec.features:
        raise SflnetError(f"{checkpoint} is a {ckpt.spec.name} checkpoint; encode needs one of --model "
                          f"{', '.join(names_with('features'))}")
    if not inputs:
        raise SflnetError("give at least one INPUT image file or folder to encode")
    if os.path.lexists(out) and not os.path.isdir(out):
        raise SflnetError(f"--out {out} exists and is not a folder")
    dataset = load_images(list(inputs), size=size, skip_bad=skip_bad, dtype=ckpt.dtype, warn=data_warning,
                          default_size=ckpt.config["size"], lazy=True)   # a store: read as used; its size unless --size
    targets, seen = [], {}
    for name in dataset.names:
        file = os.path.splitext(name)[0] + ".npy"
        if file in seen:
            raise SflnetError(f"inputs {seen[file]!r} and {name!r} would both be written to "
                              f"{os.path.join(out, file)}")
        seen[file] = name
        targets.append(file)
    manifest_path = os.path.join(out, MANIFEST_FILE)
    refuse_existing([os.path.join(out, f) for f in targets] + [manifest_path], overwrite)
    xp = select_device(device)
    model = model_from_checkpoint(ckpt, xp)
    features = encode_images(model, (to_device(image, xp) for image in dataset.images), layer, pool)
    os.makedirs(out, exist_ok=True)
    entries = []
    for name, file, feature in zip(dataset.names, targets, features):
        path = os.path.join(out, file)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.save(path, feature)
        entries.append({"image": name, "file": file, "shape": list(feature.shape), "layer": layer, "pool": pool})
    write_text_atomic(manifest_path, json.dumps(entries, indent=2) + "\n", what="manifest")
    click.echo(f"Wrote features of layer {layer} (pool {pool}) for {len(entries)} image(s) to {out} "
               f"(checkpoint epoch {ckpt.epoch}).")
