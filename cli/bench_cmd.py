"""``sflnet bench``: time one full-batch training epoch (thin over :mod:`sflnet.bench`)."""

import json

import click
from click.core import ParameterSource
import numpy as np

from sflnet import SflnetError
from sflnet import bench as harness
from sflnet.backend import DEVICES, select_device
from sflnet.io.store import load_images
from sflnet.models.cae import DEFAULT_MAX_CHUNK_PIXELS
from sflnet_cli.options import data_options


@click.command("bench")
@data_options(size_default=300, data_default="the built-in demo images")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="cpu: NumPy. gpu: CuPy (error without a usable GPU). auto: the GPU when usable.")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True,
              help="Floating type of parameters, images and all computation.")
@click.option("--loss", type=click.Choice(harness.BENCH_LOSSES), default="pl+sfl", show_default=True,
              help="The trained objective of the timed epoch (the 'cae' timing always uses the pixel loss only).")
@click.option("--repeat", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="Timed epochs per variant; the median is reported.")
@click.option("--warmup", type=click.IntRange(0, 100), default=1, show_default=True,
              help="Untimed epochs per variant before timing.")
@click.option("--max-chunk-pixels", type=click.IntRange(1, None), default=DEFAULT_MAX_CHUNK_PIXELS,
              show_default=True, help="Images per forward/backward chunk are limited to this many pixels.")
@click.option("--compare-torch", is_flag=True,
              help="Also time the same network and loss written with PyTorch (needs torch installed; never a "
                   "dependency), in NCHW and channels-last, and print sflnet / torch.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON instead of the table.")
def bench(data, include, exclude, size, skip_bad, device, dtype, loss, repeat, warmup, max_chunk_pixels,
          compare_torch, as_json):
    """Time one full-batch training epoch (forward, backward, momentum update) on the CPU or GPU.

    Reports the median epoch, the autoencoder alone ('cae': pixel loss, no LoG
    bank), a per-layer breakdown and peak memory. BLAS threads follow the usual
    environment variables (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS); sflnet's own
    copy kernels use OMP_NUM_THREADS threads when it is set, else every CPU.
    """
    if compare_torch and not harness.torch_available():
        raise SflnetError("--compare-torch needs PyTorch, which is not installed in this environment "
                          "(it is never a dependency of sflnet)")
    xp = select_device(device)
    given = click.get_current_context().get_parameter_source("size") == ParameterSource.COMMANDLINE
    dataset = load_images(list(data) or None, size=size if given else None, include=include, exclude=exclude,
                          skip_bad=skip_bad, dtype=np.dtype(dtype), default_size=size)   # a store: its size
    log = (lambda message: None) if as_json else (lambda message: click.echo(message, err=True))
    log(f"{len(dataset.images)} images from {dataset.source}")
    result = harness.run_benchmark(dataset.images, xp, dtype=np.dtype(dtype), repeat=repeat, warmup=warmup,
                                   loss=loss, max_chunk_pixels=max_chunk_pixels,
                                   compare_torch=compare_torch, log=log)
    result["data"] = dataset.source
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(harness.format_report(result))
