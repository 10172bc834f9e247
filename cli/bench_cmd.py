"""``sflnet bench``: time the CAE's full-batch training epoch, or the β-VAE's mini-batch step
(``--model vae``), optionally against PyTorch (thin over :mod:`sflnet.bench`)."""

import json

import click
from click.core import ParameterSource
import numpy as np

from sflnet import SflnetError
from sflnet import bench as harness
from sflnet.backend import DEVICES, select_device
from sflnet.bench.vae import VAE_BENCH_LOSSES, format_vae_report, run_vae_benchmark
from sflnet.models.cae import DEFAULT_MAX_CHUNK_PIXELS
from sflnet_cli.options import data_options


@click.command("bench")
@data_options(size_default=300, data_default="the built-in demo images")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="cpu: NumPy. gpu: CuPy (error without a usable GPU). auto: the GPU when usable.")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True,
              help="Floating type of parameters, images and all computation.")
@click.option("--model", "model_name", type=click.Choice(("cae", "vae")), default="cae", show_default=True,
              help="cae: the paper's autoencoder, one full-batch epoch. vae: Dalal's VAE1 (the authors' network: "
                   "--output linear --tconv-padding tf-same), a mini-batch training step on the built-in digits "
                   "(or --data: a digits .npz or a folder of MNIST's IDX files, its training split).")
@click.option("--loss", default=None,
              help=f"The trained objective. cae: {' or '.join(harness.BENCH_LOSSES)} (default pl+sfl; the 'cae' "
                   f"timing always uses the pixel loss only). vae: {' or '.join(VAE_BENCH_LOSSES)} "
                   f"(default {VAE_BENCH_LOSSES[0]}, the authors' proposed objective).")
@click.option("--batch-size", type=click.IntRange(1, None), default=32, show_default=True,
              help="vae: digits per training step.")
@click.option("--steps", type=click.IntRange(1, 100000), default=20, show_default=True,
              help="vae: training steps per timed round (each round is timed as a whole).")
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
def bench(data, include, exclude, size, skip_bad, device, dtype, model_name, loss, batch_size, steps, repeat, warmup,
          max_chunk_pixels, compare_torch, as_json):
    """Time one full-batch training epoch of the CAE (forward, backward, momentum update), or one
    mini-batch training step of the β-VAE (--model vae), on the CPU or GPU.

    CAE: the median epoch, the autoencoder alone ('cae': pixel loss, no LoG bank), a per-layer
    breakdown and peak memory. VAE: the median step over rounds of --steps steps, a per-layer
    breakdown. BLAS threads follow the usual environment variables (OMP_NUM_THREADS,
    OPENBLAS_NUM_THREADS); sflnet's own copy kernels use OMP_NUM_THREADS threads when it is set,
    else every CPU.
    """
    from sflnet.io.store import load_images  # noqa: PLC0415

    if compare_torch and not harness.torch_available():
        raise SflnetError("--compare-torch needs PyTorch, which is not installed in this environment "
                          "(it is never a dependency of sflnet)")
    if model_name == "vae":
        _bench_vae(data, include, exclude, size, skip_bad, device, dtype, loss, batch_size, steps, repeat, warmup,
                   compare_torch, as_json)
        return
    loss = "pl+sfl" if loss is None else loss
    if loss not in harness.BENCH_LOSSES:
        raise click.BadParameter(f"{loss!r} is not one of {', '.join(harness.BENCH_LOSSES)} for --model cae",
                                 param_hint="'--loss'")
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


def _bench_vae(data, include, exclude, size, skip_bad, device, dtype, loss, batch_size, steps, repeat, warmup,
               compare_torch, as_json):
    """``sflnet bench --model vae``: see :mod:`sflnet.bench.vae`."""
    from sflnet.io.digits import load_digits_with_labels  # noqa: PLC0415

    source = click.get_current_context()
    for name in ("size", "max_chunk_pixels"):
        if source.get_parameter_source(name) == ParameterSource.COMMANDLINE:
            raise SflnetError(f"--{name.replace('_', '-')} is not used with --model vae (28x28 digits)")
    if include or exclude or skip_bad:
        raise SflnetError("--include, --exclude and --skip-bad are not used with --model vae")
    if len(data) > 1:
        raise SflnetError(f"--model vae takes one --data (a digits .npz or a folder of MNIST's IDX files), "
                          f"got {len(data)}")
    loss = VAE_BENCH_LOSSES[0] if loss is None else loss
    if loss not in VAE_BENCH_LOSSES:
        raise SflnetError(f"--loss for --model vae must be one of {', '.join(VAE_BENCH_LOSSES)}, got {loss!r}")
    xp = select_device(device)
    digits, _ = load_digits_with_labels(split="train", binarize=True, dtype=np.dtype(dtype),
                                        path=data[0] if data else None)
    if batch_size > len(digits.images):
        raise SflnetError(f"--batch-size must be from 1 to the {len(digits.images)} digits, got {batch_size}")
    log = (lambda message: None) if as_json else (lambda message: click.echo(message, err=True))
    log(f"{len(digits.images)} digits from {digits.source}")
    result = run_vae_benchmark(digits.images, xp, dtype=np.dtype(dtype), batch_size=batch_size,
                               loss=loss, steps=steps, repeat=repeat,
                               warmup=warmup, compare_torch=compare_torch, log=log)
    result["data"] = digits.source
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(format_vae_report(result))
