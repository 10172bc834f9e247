"""``sflnet sample``: decode a grid over the latent space of a model that has one (the model's hook)."""

import os

import click

from sflnet import SflnetError
from sflnet.backend import DEVICES, select_device
from sflnet.io.checkpoint import load_checkpoint
from sflnet.io.images import save_png
from sflnet.models import names_with
from sflnet_cli.options import refuse_existing


# ---------------------------------------------------------------------------
# sample
# ---------------------------------------------------------------------------

SAMPLE_FILE = "latent_grid.png"


@click.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--out", required=True, type=click.Path(), metavar="DIR", help="Folder for latent_grid.png.")
@click.option("--grid", type=int, default=20, show_default=True, help="Digits per side of the grid (2-100).")
@click.option("--quantile", type=float, default=0.05, show_default=True,
              help="The grid spans the standard normal's quantiles from this probability to 1 minus it, in "
                   "both latent dimensions (0 < q < 0.5).")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing latent_grid.png.")
def sample(checkpoint, out, grid, quantile, device, overwrite):
    """Decode a grid over the 2-D latent space of a vae CHECKPOINT (the classic manifold picture).

    Writes DIR/latent_grid.png: GRID x GRID digits, z1 growing left to right and z2 bottom to top.
    """
    from sflnet.training.evaluation import model_from_checkpoint  # noqa: PLC0415

    if not 2 <= grid <= 100:
        raise SflnetError(f"--grid must be between 2 and 100, got {grid}")
    if not 0 < quantile < 0.5:
        raise SflnetError(f"--quantile must be in (0, 0.5), got {quantile}")
    ckpt = load_checkpoint(checkpoint)
    if ckpt.spec.sample_grid is None:
        raise SflnetError(f"{checkpoint} is a {ckpt.spec.name} checkpoint; sample needs one of --model "
                          f"{', '.join(names_with('sample_grid'))}")
    if os.path.lexists(out) and not os.path.isdir(out):
        raise SflnetError(f"--out {out} exists and is not a folder")
    target = os.path.join(out, SAMPLE_FILE)
    refuse_existing([target], overwrite)
    model = model_from_checkpoint(ckpt, select_device(device))
    save_png(ckpt.spec.sample_grid(model, grid, quantile), target, value_range=ckpt.spec.value_range)
    click.echo(f"Wrote {target} ({grid}x{grid} digits decoded from the latent grid; checkpoint epoch {ckpt.epoch}).")
