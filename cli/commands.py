"""The commands ``sflnet train``, ``reconstruct``, ``evaluate`` and ``filters``.

They are thin: options are parsed here, the work is done by
:mod:`sflnet.training` (training runs), :mod:`sflnet.io.checkpoint`,
:mod:`sflnet.io.images`, :mod:`sflnet.metrics` and :mod:`sflnet.figures`.
User-fixable problems raise :class:`sflnet.SflnetError`, which ``sflnet``'s
``main`` prints as one line (``Error: ...``) with exit status 1.
"""

import datetime
import json
import math
import os
import shlex
import sys

import click
import numpy as np
from click.core import ParameterSource

from sflnet import SflnetError
from sflnet.backend import DEVICES, select_device, to_device, to_host
from sflnet.io.checkpoint import load_checkpoint, write_npz_atomic
from sflnet.io.images import MAX_IMAGE_PIXELS, demo_dir, find_image_files, load_image, save_png
from sflnet.losses import LOSS_NAMES, STFT_WINDOW_FNS, LossSettings, canonical, extra_column, sigma_label
from sflnet.models import DEFAULT_MODEL, MODEL_NAMES, names_with
from sflnet.models.cae import DEFAULT_SIGMAS, DEFAULT_SFL_WEIGHTS
from sflnet.training.callbacks import Reporter
from sflnet.training.config import DTYPES, KEY_OPTIONS, RESUME_OPTIONS, TrainOptions
from sflnet.training.data import check_image_sizes
from sflnet.training.evaluation import (checkpoint_loss_settings, checkpoint_options, evaluate_model,
                                       model_from_checkpoint)
from sflnet.training.run import run_training
from sflnet_cli.loss_help import LossHelpCommand

EXIT_INTERRUPTED = 130
SIDE_BY_SIDE_GAP = 4   # white pixels between original and reconstruction


# ---------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------

def parse_float_list(text, option):
    """``"0.8,1.6,3.2"`` → (0.8, 1.6, 3.2); SflnetError naming ``option`` if malformed."""
    parts = [part.strip() for part in str(text).split(",")]
    if not any(parts):
        raise SflnetError(f"{option} is empty; give comma-separated numbers such as 0.8,1.6,3.2")
    values = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            raise SflnetError(f"{option} {text!r}: {part!r} is not a number") from None
        if not math.isfinite(value):
            raise SflnetError(f"{option} {text!r}: {part!r} is not a finite number")
        values.append(value)
    return tuple(values)


def _format_list(values):
    return ",".join(f"{v:g}" for v in values)


def _absolute_paths(paths):
    return tuple(os.path.abspath(p) for p in paths) if paths else None


def _stderr_note(message):
    click.echo(message, err=True)


def _data_warning(message):
    """``warn`` callback of :func:`load_dataset` (one line per skipped file)."""
    _stderr_note(f"warning: {message}")


LOSS_HELP = ("Objective: terms joined by '+', each NAME or WEIGHT*NAME, optionally NAME(OPTION=VALUE,...), "
             "NAME one of the losses listed at the end. "
             "pl+sfl = E_PL + E_SFL (paper Eq. 7); pl = pixel loss only (Eq. 4); e.g. pl+100*fft, "
             "500*ssim+0.00015*stft. pl and sfl are always measured (history columns), other terms add an "
             "E_<NAME> column.")


def stft_options(defaults):
    """The stft loss's options (train: with defaults; evaluate: default None = the checkpoint's)."""
    def show(value):
        return {"default": value, "show_default": True} if defaults else {"default": None}

    def decorate(command):
        command = click.option("--stft-phase-weight", type=float, **show(LossSettings.stft_phase_weight),
                               help="stft loss: λ, the weight of the phase term (>= 0).")(command)
        command = click.option("--stft-window-fn", type=click.Choice(STFT_WINDOW_FNS),
                               **show(LossSettings.stft_window_fn),
                               help="stft loss: periodic 2-D Hann window or none (rect).")(command)
        command = click.option("--stft-stride", type=int, **show(LossSettings.stft_stride),
                               help="stft loss: pixels between window positions.")(command)
        command = click.option("--stft-window", type=int, **show(LossSettings.stft_window),
                               help="stft loss: side h of the square window; images need at least h x h "
                                    "pixels.")(command)
        return command
    return decorate


def data_options(size_default, data_default):
    """The options that pick images, shared by ``train`` and ``evaluate``."""
    size_help = ("Longer image side in pixels, aspect ratio kept; 0 keeps the native size (cae only)."
                 + ("  [default: 300]" if size_default is not None else "  [default: the checkpoint's]"))

    def decorate(command):
        command = click.option("--skip-bad", is_flag=True,
                               help="Skip unreadable image files with a warning instead of stopping.")(command)
        command = click.option("--size", type=int, default=size_default, show_default=False,
                               help=size_help)(command)
        command = click.option("--exclude", "exclude", multiple=True, metavar="GLOB",
                               help="Drop images whose path relative to the data folder matches (repeatable).")(
            command)
        command = click.option("--include", "include", multiple=True, metavar="GLOB",
                               help="Keep only images whose path relative to the data folder matches "
                                    "(repeatable).")(command)
        command = click.option("--data", "data", multiple=True, type=click.Path(), metavar="PATH",
                               help="Image file or folder (searched recursively); repeatable. "
                                    f"Default: {data_default}. Images over {MAX_IMAGE_PIXELS:,} pixels "
                                    "(sflnet.io.images.MAX_IMAGE_PIXELS) are refused as possible "
                                    "decompression bombs.")(command)
        return command
    return decorate


# ---------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------

class ProgressReporter(Reporter):
    """A click progress bar on stderr (epoch, E, the subband SFLs, ETA); plain lines when not a terminal."""

    def __init__(self, sigmas):
        self.labels = [sigma_label(s) for s in sigmas]
        self.bar = None
        self.last = 0
        self.every = 1
        self.tty = False

    def describe(self, row):
        if row is None:
            return ""
        # the row's own subband columns: they follow the run's sigmas (--sigmas or sfl(sigmas=...), or a resumed run's)
        sfl = " ".join(f"sfl{key[4:]}={value:.3e}" for key, value in row.items() if key.startswith("sfl_"))
        return f"epoch {row['epoch']}/{self.last} E={row['E']:.4e} {sfl}"

    def start(self, first_epoch, last_epoch):
        stream = sys.stderr
        self.tty = stream.isatty()
        self.last = last_epoch
        total = max(0, last_epoch - first_epoch + 1)
        self.every = max(1, total // 20)
        self.bar = click.progressbar(length=total, label="training", file=stream, show_eta=True,
                                     show_pos=True, width=20, item_show_func=self.describe)
        self.bar.__enter__()

    def epoch(self, row):
        self.bar.update(1, row)
        if not self.tty and (row["epoch"] % self.every == 0 or row["epoch"] == self.last):
            click.echo(self.describe(row), err=True)

    def note(self, message):
        if self.bar is not None and self.tty:
            click.echo("", err=True)
        click.echo(message, err=True)

    def close(self):
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _default_out():
    """``runs/YYYYmmdd-HHMMSS`` (with ``-2``, ``-3``, ... if that exists already)."""
    base = os.path.join("runs", datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    candidate, number = base, 1
    while os.path.lexists(candidate):
        number += 1
        candidate = f"{base}-{number}"
    return candidate


def _command_line(ctx):
    """The full ``sflnet train ...`` command with every option spelled out (for config.json)."""
    words = ["sflnet", "train"]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        flag = param.opts[0]
        if param.name in ("resume", "overwrite") or value is None or value == ():
            continue
        if param.is_flag:
            if value:
                words.append(flag)
        elif param.multiple:
            for item in value:
                words += [flag, str(item)]
        else:
            words += [flag, str(value)]
    return shlex.join(words)


def _both(option):
    """``[default: X (cae), Y (vae)]`` for an option whose default depends on --model."""
    def show(value):
        return "unused" if value is None else _format_list(value) if isinstance(value, tuple) else str(value)
    defaults = (f"{show(getattr(TrainOptions.for_model(name), option))} ({name})" for name in MODEL_NAMES)
    return f"  [default: {', '.join(defaults)}]"


@click.command(cls=LossHelpCommand)
@click.option("--model", type=click.Choice(MODEL_NAMES), default=DEFAULT_MODEL, show_default=True,
              help="cae: Ichimura's Table 1 autoencoder on photos (momentum SGD); vae: Dalal's β-VAE (seed 004) "
                   "on the built-in MNIST digits (Adam with a triangular2 cyclical learning rate).")
@click.option("--data", "data", multiple=True, type=click.Path(), metavar="PATH",
              help="cae: image file or folder (searched recursively), repeatable; images over "
                   f"{MAX_IMAGE_PIXELS:,} pixels (sflnet.io.images.MAX_IMAGE_PIXELS) are refused as possible "
                   "decompression bombs. vae: one .npz "
                   "with uint8 'images' (N, 28, 28) and 'labels' (N,), split like the built-in one. "
                   "Default: the built-in demo photos (cae) or MNIST 5k digits, 4,000 train / 1,000 test (vae).")
@click.option("--include", "include", multiple=True, metavar="GLOB",
              help="cae: keep only images whose path relative to the data folder matches (repeatable).")
@click.option("--exclude", "exclude", multiple=True, metavar="GLOB",
              help="cae: drop images whose path relative to the data folder matches (repeatable).")
@click.option("--size", type=int, default=None,
              help="cae: longer image side in pixels, aspect ratio kept; 0 keeps the native size." + _both("size"))
@click.option("--skip-bad", is_flag=True,
              help="cae: skip unreadable image files with a warning instead of stopping.")
@click.option("--train-images", type=int, default=None,
              help="vae: train on the first N/10 training digits of each class (a multiple of 10, for quick "
                   "trials).  [default: all 4000]")
@click.option("--binarize/--no-binarize", default=None,
              help="vae: binarise the digits at 0.5, as the seed paper does." + _both("binarize"))
@click.option("--loss", default=None, metavar="EXPR", help=LOSS_HELP + _both("loss"))
@click.option("--beta", type=float, default=None,
              help="vae: β, the weight of the KL term (E = β·KL + the --loss terms)." + _both("beta"))
@click.option("--epochs", type=int, default=None, help="Total number of epochs (>= 1)." + _both("epochs"))
@click.option("--lr", type=float, default=None, help="cae: learning rate (> 0)." + _both("lr"))
@click.option("--momentum", type=float, default=None, help="cae: momentum, in [0, 1)." + _both("momentum"))
@click.option("--init-std", type=float, default=None,
              help="cae: std of the normal initial weights (paper: N(0, 0.02)); biases start at 0. (The vae "
                   "starts from Glorot-uniform weights.)" + _both("init_std"))
@click.option("--lr-min", type=float, default=None,
              help="vae: lowest learning rate of Adam's triangular2 cycle (> 0)." + _both("lr_min"))
@click.option("--lr-max", type=float, default=None,
              help="vae: highest learning rate of the cycle (>= --lr-min)." + _both("lr_max"))
@click.option("--lr-step", type=int, default=None,
              help="vae: step size S of the cycle, in updates (a cycle is 2S updates, each peak half the "
                   "previous)." + _both("lr_step"))
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the initial weights, the mini-batch shuffling and (vae) the latent noise ε.")
@click.option("--sigmas", default=_format_list(DEFAULT_SIGMAS), show_default=True,
              help="Comma-separated LoG scales σ of the subbands (> 0).")
@click.option("--sfl-weights", default=_format_list(DEFAULT_SFL_WEIGHTS), show_default=True,
              help="Comma-separated SFL weight per σ (>= 0), same count as --sigmas.")
@stft_options(defaults=True)
@click.option("--batch-size", type=int, default=None,
              help="Images per mini-batch, shuffled each epoch; 0 = full batch (the first paper)."
                   + _both("batch_size"))
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="gpu needs CuPy and a CUDA device; auto uses it when available.")
@click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True,
              help="Floating-point precision of images, parameters and arithmetic.")
@click.option("--out", type=click.Path(), default=None, metavar="RUN_DIR",
              help="Run folder. Default: runs/<YYYYmmdd-HHMMSS>.")
@click.option("--snapshot-every", type=int, default=None,
              help="Epochs between snapshots (checkpoints/epoch_NNNN.npz and reconstructions); "
                   "0 = final epoch only. Default: max(1, epochs // 10); the final epoch always gets one.")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its checkpoint.npz up to --epochs, exactly as if it had "
                   "never stopped. Its settings come from its config.json.")
@click.option("--overwrite", is_flag=True,
              help="Allow --out to be an existing run or a non-empty folder (sflnet's own files are replaced).")
def train(model, data, include, exclude, size, skip_bad, train_images, binarize, loss, beta, epochs, lr, momentum, init_std,
          lr_min, lr_max, lr_step, seed, sigmas, sfl_weights, stft_window, stft_stride, stft_window_fn,
          stft_phase_weight, batch_size, device, dtype, out, snapshot_every, resume, overwrite):
    """Train a model (the Table 1 autoencoder by default, or --model vae) and write a run folder.

    \b
    RUN_DIR/config.json          every option, version, device, data names and sizes
    RUN_DIR/history.csv          epoch,E,E_PL,E_SFL,sfl_<σ>...,[E_<TERM>...,]seconds;
                                 row k = losses measured before epoch k's update
    RUN_DIR/checkpoint.npz       latest epoch (parameters after that many updates)
    RUN_DIR/checkpoints/         epoch_NNNN.npz at snapshot epochs
    RUN_DIR/snapshots/           reconstructions of the first 8 images at snapshot epochs
    RUN_DIR/curves.png           learning curves (paper Fig. 5 style)

    Ctrl-C stops after the current epoch, saves and prints how to resume (exit 130); so does
    SIGTERM, a scheduler's preemption (exit 143). A signal ignored at start (nohup) stays ignored.
    """
    ctx = click.get_current_context()
    sigma_values = parse_float_list(sigmas, "--sigmas")
    weight_values = parse_float_list(sfl_weights, "--sfl-weights")
    values = {"model": model, "data": _absolute_paths(data), "include": tuple(include),
              "exclude": tuple(exclude), "size": size, "skip_bad": skip_bad, "train_images": train_images, "binarize": binarize, "loss": loss,
              "beta": beta, "epochs": epochs, "lr": lr, "momentum": momentum, "init_std": init_std,
              "lr_min": lr_min, "lr_max": lr_max, "lr_step": lr_step, "seed": seed, "sigmas": sigma_values,
              "sfl_weights": weight_values, "stft_window": stft_window, "stft_stride": stft_stride,
              "stft_window_fn": stft_window_fn, "stft_phase_weight": stft_phase_weight,
              "batch_size": batch_size, "device": device, "dtype": dtype, "snapshot_every": snapshot_every}
    if resume and ctx.get_parameter_source("loss") == ParameterSource.COMMANDLINE:
        values["loss"] = canonical(loss)
    reporter = ProgressReporter(sigma_values)
    if resume:
        if out is None:
            raise SflnetError("--resume needs --out RUN_DIR, the run folder to continue")
        given = {name for name in values if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}
        overrides = {name: values[name] for name in given if name in KEY_OPTIONS + RESUME_OPTIONS}
        if overwrite:
            raise SflnetError("--resume and --overwrite contradict each other; give only one")
        result = run_training(out=out, resume=True, overrides=overrides, reporter=reporter)
        reporter.labels = [sigma_label(s) for s in result.options.sigmas]
    else:
        given = {name: value for name, value in values.items() if value is not None and name != "model"}
        options = TrainOptions.for_model(model, **given).validate()
        out = out if out is not None else _default_out()
        result = run_training(options, out, overwrite=overwrite, reporter=reporter,
                              command=_command_line(ctx))
    _report_training(result)


def _report_training(result):
    from sflnet.training.distributed import current_world  # noqa: PLC0415

    quiet = not current_world().is_root     # under MPI rank 0 speaks for all
    folder = result.folder
    if result.status == "up-to-date" and not quiet:
        click.echo(f"Nothing to do: {folder} is already at epoch {result.epoch} (ask for more with --epochs).")
        return
    if result.status == "interrupted":
        if not quiet:
            command = shlex.join(["sflnet", "train", "--resume", "--out", folder])
            click.echo(f"Interrupted. {os.path.join(folder, 'checkpoint.npz')} holds epoch {result.epoch} and "
                       f"history.csv is flushed.", err=True)
            click.echo(f"Resume with: {command}", err=True)
        signum = result.extra.get("signal")
        sys.exit(128 + signum if signum else EXIT_INTERRUPTED)   # 130 for SIGINT, 143 for SIGTERM
    if quiet or result.status == "up-to-date":
        return
    row = result.last_row
    summary = ""
    if row:
        summary = " ".join(f"{key}={row[key]:.6g}" for key in ("E", "E_PL", "E_SFL", *(
            key for key in row if key.startswith("E_") and key not in ("E_PL", "E_SFL"))))
    click.echo(f"Trained to epoch {result.epoch} in {result.seconds:.1f} s on "
               f"{result.extra.get('device_name', '?')} ({result.extra.get('images', '?')} images). "
               f"Last logged {summary}.")
    click.echo(f"Run folder: {folder}")


# ---------------------------------------------------------------------------
# reconstruct
# ---------------------------------------------------------------------------

def _check_size(size):
    if size is not None and size < 0:
        raise SflnetError(f"--size must be 0 (native size) or a positive number of pixels, got {size}")


def _refuse_existing(paths, overwrite):
    if overwrite:
        return
    existing = [p for p in paths if os.path.lexists(p)]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise SflnetError(f"output file {existing[0]} already exists{more}; pass --overwrite to replace it")


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
    _check_size(size)
    ckpt = load_checkpoint(checkpoint)
    if os.path.lexists(out) and not os.path.isdir(out):
        raise SflnetError(f"--out {out} exists and is not a folder")
    dataset = ckpt.spec.reconstruct_inputs(checkpoint_options(ckpt), inputs, size, skip_bad, count, _data_warning)
    targets, seen = [], {}
    for name in dataset.names:
        stem = os.path.splitext(name)[0]
        target = os.path.join(out, stem + ".png")
        if target in seen:
            raise SflnetError(f"inputs {seen[target]!r} and {name!r} would both be written to {target}")
        seen[target] = name
        targets.append((target, os.path.join(out, stem + "_side_by_side.png")))
    _refuse_existing([t for pair in targets for t in (pair if side_by_side else pair[:1])], overwrite)
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


# ---------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------

def _json_safe(value):
    """Replace NaN/Inf (not valid JSON) by None, recursively; PSNR of identical images is Inf → None."""
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


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
              help="vae: decode z = μ + σε (ε drawn with --seed) instead of z = μ.")
@click.option("--seed", type=int, default=0, show_default=True, help="vae with --sample-latent: seed of ε.")
def evaluate(checkpoint, data, include, exclude, size, skip_bad, loss, stft_window, stft_stride, stft_window_fn,
             stft_phase_weight, as_json, grads, overwrite, device, split, sample_latent, seed):
    """Losses, mean PSNR and mean SSIM of a CHECKPOINT on a data set.

    Default data: the checkpoint's training data, size and include/exclude patterns (a vae
    checkpoint: the test split of its digits, z = μ, E = β·KL + its --loss terms).
    E (the --loss objective), E_PL, E_SFL, the unit-weight SFL per σ and each other term
    are computed exactly as in training (full batch); evaluating checkpoints/epoch_NNNN.npz
    with the run's own objective reproduces row NNNN+1 of the run's history.csv. PSNR and SSIM compare images on [-1, 1] with data_range = 2,
    which equals 8-bit PSNR/SSIM.
    """
    _check_size(size)
    ckpt = load_checkpoint(checkpoint)
    config = ckpt.config
    expression = canonical(loss) if loss is not None else config["loss"]
    settings = _evaluation_settings(ckpt, stft_window, stft_stride, stft_window_fn, stft_phase_weight)
    spec = ckpt.spec
    if spec.sample_grid is None and (split is not None or sample_latent):
        raise SflnetError(f"--split and --sample-latent are only for {' and '.join(names_with('sample_grid'))} "
                          f"checkpoints")
    request = {"data": _absolute_paths(data), "include": include, "exclude": exclude, "size": size,
               "skip_bad": skip_bad, "split": split, "sample_latent": sample_latent, "warn": _data_warning}
    load_data, shape = spec.evaluation_data(checkpoint_options(ckpt), request)
    size = config["size"] if size is None else size
    if grads is not None:
        _refuse_existing([grads], overwrite)
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
    images = [to_device(image, xp) for image in dataset.images]
    report, gradient = evaluate_model(model, images, compute_grads=grads is not None)
    if grads is not None:
        meta = {"what": "full-batch gradient dE/dtheta", "loss": model.loss, "E": report["E"],
                "checkpoint": os.path.abspath(checkpoint), "epoch": ckpt.epoch, "images": len(images),
                "size": size, "dtype": str(ckpt.dtype)}
        arrays = {name: gradient[name] for name in ckpt.spec.param_names}
        arrays["meta"] = np.array(json.dumps(meta))
        write_npz_atomic(grads, arrays, what="gradient file")
    if not all(math.isfinite(v) for v in (report["E"], *report["terms"].values(), *report["sfl"].values())):
        _stderr_note("warning: the losses are not finite: the checkpoint's parameters overflow on this data")
    if as_json:
        click.echo(json.dumps(_json_safe(report), allow_nan=False))
        return
    loss_text = "E = " + " + ".join(
        (column if t.weight == 1.0 else f"{t.weight:g}·{column}")
        for t, column in ((t, "E_" + t.name.upper()) for t in model.objective.terms))
    if spec.energy_text is not None:
        loss_text += spec.energy_text(model)
    low, high = ckpt.spec.value_range
    lines = [
        f"checkpoint  {checkpoint} (epoch {ckpt.epoch}: parameters after {ckpt.epoch} updates)",
        f"data        {dataset.source}: {len(images)} images, {shape}",
        f"loss        {model.loss} ({loss_text}; SFL weights {_format_list(config['sfl_weights'])})",
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
    if grads is not None:
        lines.append(f"gradient    written to {grads}")
    click.echo("\n".join(lines))


def _evaluation_settings(ckpt, stft_window, stft_stride, stft_window_fn, stft_phase_weight):
    """The checkpoint's loss settings, with the stft options given on the command line (validated)."""
    given = {"stft_window": stft_window, "stft_stride": stft_stride, "stft_window_fn": stft_window_fn,
             "stft_phase_weight": stft_phase_weight}
    settings = checkpoint_loss_settings(ckpt, **given)
    check = TrainOptions.for_model(ckpt.spec.name, stft_window=settings.stft_window, stft_stride=settings.stft_stride,
                         stft_window_fn=settings.stft_window_fn, stft_phase_weight=settings.stft_phase_weight)
    check.validate()
    return settings


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
    _refuse_existing([target], overwrite)
    model = model_from_checkpoint(ckpt, select_device(device))
    save_png(ckpt.spec.sample_grid(model, grid, quantile), target, value_range=ckpt.spec.value_range)
    click.echo(f"Wrote {target} ({grid}x{grid} digits decoded from the latent grid; checkpoint epoch {ckpt.epoch}).")


# ---------------------------------------------------------------------------
# filters
# ---------------------------------------------------------------------------

FIG3_FILE = "fig3_log_responses.png"
FIG4_FILE = "fig4_subbands.png"


@click.command()
@click.option("--out", type=click.Path(), default=".", show_default=True, metavar="DIR",
              help="Folder for the two PNGs.")
@click.option("--image", type=click.Path(), default=None, metavar="PATH",
              help="Image for Fig. 4. Default: the first built-in demo image.")
@click.option("--size", type=int, default=300, show_default=True,
              help="Longer side of the Fig. 4 image in pixels (0: native).")
@click.option("--sigmas", default=_format_list(DEFAULT_SIGMAS), show_default=True,
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
    _check_size(size)
    if os.path.lexists(out) and not os.path.isdir(out):
        raise SflnetError(f"--out {out} exists and is not a folder")
    fig3, fig4 = os.path.join(out, FIG3_FILE), os.path.join(out, FIG4_FILE)
    _refuse_existing([fig3, fig4], overwrite)
    image_path = image if image is not None else find_image_files(demo_dir())[0][0]
    picture = load_image(image_path, size=size, dtype=np.float64)
    plot_log_responses(list(sigma_values), fig3)
    plot_subbands(picture, list(sigma_values), fig4)
    click.echo(f"Wrote {fig3} and {fig4}")
