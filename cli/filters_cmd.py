"""``sflnet filters``: the LoG kernels and the subband responses of one image, as figures."""

import os

import click
import numpy as np

from sflnet import SflnetError
from sflnet.io.images import demo_dir, find_image_files, load_image
from sflnet.models.cae import DEFAULT_SIGMAS
from sflnet_cli.options import FIG3_FILE, FIG4_FILE, check_size, format_list, parse_float_list, refuse_existing


@click.command()
@click.option("--out", type=click.Path(), default=".", show_default=True, metavar="DIR",
              help="Folder for the two PNGs.")
@click.option("--image", type=click.Path(), default=None, metavar="PATH",
              help="Image for Fig. 4. Default: the first built-in demo image.")
@click.option("--size", type=int, default=300, show_default=True,
              help="Longer side of the Fig. 4 image in pixels (0: native).")
@click.option("--sigmas", default=format_list(DEFAULT_SIGMAS), show_default=True,
              help="Comma-separated LoG scales σ (> 0).")
@click.option("--overwrite", is_flag=True, help="Replace existing PNGs.")
def filters(out, image, size, sigmas, overwrite):
    """Draw the LoG filters: paper Fig. 3 (frequency responses) and Fig. 4 (subbands of an image).

    Writes DIR/fig3_log_responses.png and DIR/fig4_subbands.png.
    """
    from sflnet.figures import plot_log_responses, plot_subbands  # noqa: PLC0415  (matplotlib is slow)

    sigma_values = parse_float_list(sigmas, "--sigmas")
    if not all(s > 0 for s in sigma_values):
        raise SflnetError(f"--sigmas must all be > 0, got {sigmas}")
    check_size(size)
    if os.path.lexists(out) and not os.path.isdir(out):
        raise SflnetError(f"--out {out} exists and is not a folder")
    fig3, fig4 = os.path.join(out, FIG3_FILE), os.path.join(out, FIG4_FILE)
    refuse_existing([fig3, fig4], overwrite)
    image_path = image if image is not None else find_image_files(demo_dir())[0][0]
    picture = load_image(image_path, size=size, dtype=np.float64)
    plot_log_responses(list(sigma_values), fig3)
    plot_subbands(picture, list(sigma_values), fig4)
    click.echo(f"Wrote {fig3} and {fig4}")
