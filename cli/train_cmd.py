"""``sflnet train``: a training run into a run folder (the work is :func:`sflnet.training.run.run_training`).

User-fixable problems raise :class:`sflnet.SflnetError`, which ``sflnet``'s ``main`` prints as one
line (``Error: ...``) with exit status 1.
"""

import os
import shlex
import sys

import click
from click.core import ParameterSource

from sflnet import SflnetError
from sflnet.backend import DEVICES, DTYPES
from sflnet.io.images import MAX_IMAGE_PIXELS
from sflnet.losses import canonical, sigma_label
from sflnet.models import DEFAULT_MODEL, MODEL_NAMES, hyperparameters
from sflnet.models.cae import DEFAULT_SIGMAS, DEFAULT_SFL_WEIGHTS
from sflnet_cli.loss_help import LossHelpCommand
from sflnet_cli.options import (EXIT_INTERRUPTED, LOSS_HELP, ProgressReporter, absolute_paths, both_defaults,
                                command_line, default_out, format_list, parse_float_list, stft_options)


# Shared options whose default depends on --model: their help gets ``[default: X (cae), Y (vae)]``.
MODEL_DEFAULTS_SHOWN = ("size", "loss", "epochs", "batch_size")


def hyperparameter_option(option, models):
    """The click option of one model hyperparameter (:class:`sflnet.models.base.Hyperparameter`), declared
    by ``models`` (names): ``--name`` of its kind (a ``--name/--no-name`` pair for a "bool"), default None
    (the model's own default applies), help prefixed by the models' names."""
    shown = f"  [default: {option.default_help}]" if option.default_help else both_defaults(option.name)
    text = f"{', '.join(models)}: {option.help}{shown}"
    if option.kind == "bool":
        return click.Option([f"{option.flag}/--no-{option.flag[2:]}"], default=None, help=text)
    if option.kind == "choice":
        return click.Option([option.flag], type=click.Choice(option.choices), default=None, help=text)
    return click.Option([option.flag], type={"int": int, "float": float}[option.kind], default=None, help=text)


class TrainCommand(LossHelpCommand):
    """``sflnet train``: its model options are made from the registered models (plug-ins included)
    the first time the command is used, not when ``sflnet`` starts: one flag per hyperparameter
    (:func:`hyperparameter_option`), after --epochs, the --model choices, and the per-model defaults
    of the shared options in :data:`MODEL_DEFAULTS_SHOWN`. A refused plug-in model is then a one-line error."""

    models_read = False

    def get_params(self, ctx):
        if not self.models_read:
            generated = [hyperparameter_option(option, models) for option, models in hyperparameters().values()]
            for param in self.params:
                if param.name == "model":
                    param.type = click.Choice(tuple(MODEL_NAMES))
                if param.name in MODEL_DEFAULTS_SHOWN:
                    param.help += both_defaults(param.name)
            at = [param.name for param in self.params].index("epochs") + 1
            self.params[at:at] = generated
            self.models_read = True
        return super().get_params(ctx)


@click.command(cls=TrainCommand)
@click.option("--model", default=DEFAULT_MODEL, show_default=True,   # type: the registered names (TrainCommand)
              help="cae: Ichimura's Table 1 autoencoder on photos (momentum SGD); vae: Dalal's β-VAE "
                   "on the built-in MNIST digits (Adam with a triangular2 cyclical learning rate).")
@click.option("--data", "data", multiple=True, type=click.Path(), metavar="PATH",
              help="cae: image file or folder (searched recursively), repeatable, or one image store made by "
                   "sflnet prepare (streamed, its --size applies); images over "
                   f"{MAX_IMAGE_PIXELS:,} pixels (sflnet.io.images.MAX_IMAGE_PIXELS) are refused as possible "
                   "decompression bombs. vae: one .npz "
                   "with uint8 'images' (N, 28, 28) and 'labels' (N,), split like the built-in one, or with "
                   "x_train, y_train, x_test, y_test (Keras' mnist.npz, its own split), or a folder of MNIST's "
                   "four IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                   "t10k-labels-idx1-ubyte, raw or .gz; its own split, 60,000 train / 10,000 test). "
                   "Default: the built-in demo photos (cae) or MNIST 5k digits, 4,000 train / 1,000 test (vae).")
@click.option("--include", "include", multiple=True, metavar="GLOB",
              help="cae: keep only images whose path relative to the data folder matches (repeatable).")
@click.option("--exclude", "exclude", multiple=True, metavar="GLOB",
              help="cae: drop images whose path relative to the data folder matches (repeatable).")
@click.option("--size", type=int, default=None,
              help="cae: longer image side in pixels, aspect ratio kept; 0 keeps the native size.")
@click.option("--skip-bad", is_flag=True,
              help="cae: skip unreadable image files with a warning instead of stopping.")
@click.option("--loss", default=None, metavar="EXPR", help=LOSS_HELP)
@click.option("--epochs", type=int, default=None, help="Total number of epochs (>= 1).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the initial weights, the mini-batch shuffling and (vae) the latent noise ε.")
@click.option("--sigmas", default=format_list(DEFAULT_SIGMAS), show_default=True,
              help="Comma-separated LoG scales σ of the subbands (> 0).")
@click.option("--sfl-weights", default=format_list(DEFAULT_SFL_WEIGHTS), show_default=True,
              help="Comma-separated SFL weight per σ (>= 0), same count as --sigmas.")
@stft_options(defaults=True)
@click.option("--batch-size", type=int, default=None,
              help="Images per mini-batch, shuffled each epoch; 0 = full batch (the first paper).")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="gpu needs CuPy and a CUDA device; auto uses it when available.")
@click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True,
              help="Floating-point precision of images, parameters and arithmetic.")
@click.option("--out", type=click.Path(), default=None, metavar="RUN_DIR",
              help="Run folder. Default: runs/<YYYYmmdd-HHMMSS>.")
@click.option("--snapshot-every", type=int, default=None,
              help="Epochs between snapshots (checkpoints/epoch_NNNN.npz and reconstructions); "
                   "0 = final epoch only. Default: max(1, epochs // 10); the final epoch always gets one.")
@click.option("--checkpoint-every", default=None, metavar="WHEN",
              help="With mini-batches, also write checkpoint.npz in the middle of an epoch: a time since the "
                   "last checkpoint (90s, 10m, 1.5h) or every N optimiser steps (500steps); 0 = at epoch ends "
                   "only. A crash then loses at most that much.  [default: 10m]")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its checkpoint.npz up to --epochs, exactly as if it had "
                   "never stopped. Its settings come from its config.json.")
@click.option("--overwrite", is_flag=True,
              help="Allow --out to be an existing run or a non-empty folder (sflnet's own files are replaced).")
def train(model, data, include, exclude, size, skip_bad, loss, epochs, seed, sigmas, sfl_weights, stft_window,
          stft_stride, stft_window_fn, stft_phase_weight, batch_size, device, dtype, out, snapshot_every,
          checkpoint_every, resume, overwrite, **model_options):
    """Train a model (the Table 1 autoencoder by default, or --model vae) and write a run folder.

    \b
    RUN_DIR/config.json          every option, version, device, data names and sizes
    RUN_DIR/history.csv          epoch,E,E_PL,E_SFL,sfl_<σ>...,[E_<TERM>...,]seconds;
                                 row k = losses measured before epoch k's update
    RUN_DIR/checkpoint.npz       latest epoch (parameters after that many updates)
    RUN_DIR/checkpoints/         epoch_NNNN.npz at snapshot epochs
    RUN_DIR/snapshots/           reconstructions of the first 8 images at snapshot epochs
    RUN_DIR/curves.png           learning curves (paper Fig. 5 style)

    Ctrl-C stops after the current step (mini-batches; full batch: epoch), saves and prints how
    to resume (exit 130); so does SIGTERM, a scheduler's preemption (exit 143). A second one stops
    at once, losing the steps since the last checkpoint. A signal ignored at start (nohup) stays
    ignored.
    """
    from sflnet.io.store import ImageStore, store_path  # noqa: PLC0415
    from sflnet.training.config import RESUME_OPTIONS, TrainOptions, key_options  # noqa: PLC0415
    from sflnet.training.run import run_training  # noqa: PLC0415

    ctx = click.get_current_context()
    sigma_values = parse_float_list(sigmas, "--sigmas")
    weight_values = parse_float_list(sfl_weights, "--sfl-weights")
    values = {"model": model, "data": absolute_paths(data), "include": tuple(include),
              "exclude": tuple(exclude), "size": size, "skip_bad": skip_bad, "loss": loss, "epochs": epochs,
              "seed": seed, "sigmas": sigma_values, "sfl_weights": weight_values, "stft_window": stft_window,
              "stft_stride": stft_stride, "stft_window_fn": stft_window_fn, "stft_phase_weight": stft_phase_weight,
              "batch_size": batch_size, "device": device, "dtype": dtype, "snapshot_every": snapshot_every,
              "checkpoint_every": checkpoint_every, **model_options}    # the registered models' hyperparameters (TrainCommand)
    if resume and ctx.get_parameter_source("loss") == ParameterSource.COMMANDLINE:
        values["loss"] = canonical(loss)
    reporter = ProgressReporter(sigma_values)
    if resume:
        if out is None:
            raise SflnetError("--resume needs --out RUN_DIR, the run folder to continue")
        given = {name for name in values if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}
        overrides = {name: values[name] for name in given if name in key_options() + RESUME_OPTIONS}
        if overwrite:
            raise SflnetError("--resume and --overwrite contradict each other; give only one")
        result = run_training(out=out, resume=True, overrides=overrides, reporter=reporter)
        reporter.labels = [sigma_label(s) for s in result.options.sigmas]
    else:
        store = store_path(values["data"])
        if store is not None and size is None:
            values["size"] = ImageStore(store).size      # the store's size applies
        given = {name: value for name, value in values.items() if value is not None and name != "model"}
        options = TrainOptions.for_model(model, **given).validate()
        out = out if out is not None else default_out()
        result = run_training(options, out, overwrite=overwrite, reporter=reporter,
                              command=command_line(ctx))
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
            checkpoint = os.path.join(folder, "checkpoint.npz")
            step = result.extra.get("saved_step")
            if step is None:
                click.echo(f"Interrupted. {checkpoint} holds epoch {result.epoch} and history.csv is flushed.",
                           err=True)
            else:
                rows = {0: "no finished epoch", 1: "epoch 1"}.get(result.epoch, f"epochs 1 to {result.epoch}")
                click.echo(f"Interrupted in epoch {result.epoch + 1} after step {step[0]} of {step[1]}. "
                           f"{checkpoint} holds epoch {result.epoch} and those {step[0]} steps; history.csv "
                           f"({rows}) is flushed.", err=True)
            click.echo(f"Resume with: {command}", err=True)
        signum = result.extra.get("signal")
        sys.exit(128 + signum if signum else EXIT_INTERRUPTED)   # 130 for SIGINT, 143 for SIGTERM
    if quiet or result.status == "up-to-date":
        return
    row = result.last_row
    summary = ""
    if row:
        summary = " ".join(f"{key}={row[key]:.6g}" for key in ("E", "E_PL", "E_SFL", *(
            key for key in row if key.startswith("E_") and key not in ("E_PL", "E_SFL")))
            if row[key] == row[key])   # nan: a paper's column the VAE's training steps do not measure
    click.echo(f"Trained to epoch {result.epoch} in {result.seconds:.1f} s on "
               f"{result.extra.get('device_name', '?')} ({result.extra.get('images', '?')} images). "
               f"Last logged {summary}.")
    click.echo(f"Run folder: {folder}")
