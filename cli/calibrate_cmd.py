"""``sflnet calibrate``: how big each term of an objective is, and the weights that balance the terms
(the work is :mod:`sflnet.training.calibrate`)."""

import json

import click
from click.core import ParameterSource

from sflnet import SflnetError
from sflnet.backend import DEVICES, DTYPES, select_device, to_device
from sflnet.io.checkpoint import load_checkpoint
from sflnet.losses import canonical
from sflnet.models import DEFAULT_MODEL, MODEL_NAMES
from sflnet_cli.loss_help import LossHelpCommand
from sflnet_cli.options import (absolute_paths, check_size, data_options, data_warning, evaluation_settings,
                                json_safe, stft_options)

# Options that only pick the initial weights (no CHECKPOINT).
INITIAL_ONLY = ("model", "seed", "dtype")


class CalibrateCommand(LossHelpCommand):
    """The --model choices are read from the registered models (plug-ins included) when the command is used."""

    def get_params(self, ctx):
        for param in self.params:
            if param.name == "model":
                param.type = click.Choice(tuple(MODEL_NAMES))
        return super().get_params(ctx)


@click.command("calibrate", cls=CalibrateCommand)
@click.argument("checkpoint", type=click.Path(), required=False)
@data_options(size_default=None, data_default="the checkpoint's data (as sflnet evaluate); without a CHECKPOINT, "
              "the model's training data as sflnet train reads it")
@click.option("--loss", required=True, metavar="EXPR",
              help="The objective whose terms are measured, written as for train --loss, e.g. pl+sfl+fft or "
                   "pl+0.5*stft(window=8); plug-in losses too.")
@stft_options(defaults=False)
@click.option("--model", default=DEFAULT_MODEL, show_default=True,
              help="Without a CHECKPOINT: the model whose initial weights are measured.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Without a CHECKPOINT: the seed of the initial weights (those sflnet train --seed starts from).")
@click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True,
              help="Without a CHECKPOINT: the precision of the initial weights and images.")
@click.option("--reference", default=None, metavar="NAME",
              help="The term the others are balanced against (it keeps its weight). Default: the first term.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True,
              help='Print one JSON object: {"terms": {NAME: {"value", "grad_norm", "output_grad_norm"}}, '
                   '"suggested": {"value": ..., "gradient": ...}}.')
def calibrate_command(checkpoint, data, include, exclude, size, skip_bad, loss, stft_window, stft_stride,
                      stft_window_fn, stft_phase_weight, model, seed, dtype, reference, device, as_json):
    """Each term of --loss at weight 1 on a data set, and the weights that balance the terms.

    \b
    For every term E_t of the expression, on the full data set at one set of parameters θ
    (a CHECKPOINT's, or without one the initial weights of --seed for --model):
      value             E_t at weight 1 (what sflnet evaluate --loss 1*NAME reports)
      grad_norm         ‖∂E_t/∂θ‖ over every trainable parameter (the model's own backward)
      output_grad_norm  ‖∂E_t/∂f^L‖, the gradient with respect to the reconstructions
    Then two balanced expressions, ready to paste into --loss, where the reference term (the
    first, or --reference) keeps its weight: every w_t·E_t equal (value rule), or every
    w_t·‖∂E_t/∂θ‖ equal (gradient rule).
    """
    from sflnet.training.calibrate import checkpoint_setup, calibrate, initial_setup, suggestions  # noqa: PLC0415
    from sflnet.training.config import TrainOptions  # noqa: PLC0415
    from sflnet.training.data import check_image_sizes  # noqa: PLC0415
    from sflnet.training.evaluation import checkpoint_options  # noqa: PLC0415

    ctx = click.get_current_context()
    check_size(size)
    expression = canonical(loss)
    request = {"data": absolute_paths(data), "include": include, "exclude": exclude, "size": size,
               "skip_bad": skip_bad, "split": None, "sample_latent": False, "warn": data_warning}
    if checkpoint is not None:
        given = [name for name in INITIAL_ONLY if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE]
        if given:
            raise SflnetError(f"--{given[0]} picks the initial weights; with a CHECKPOINT the checkpoint's "
                              f"model, parameters and dtype are used, so leave it out")
        ckpt = load_checkpoint(checkpoint)
        settings = evaluation_settings(ckpt, stft_window, stft_stride, stft_window_fn, stft_phase_weight)
        load_data, shape = ckpt.spec.evaluation_data(checkpoint_options(ckpt), request)
        dataset = load_data()
        check_image_sizes(expression, settings, dataset)
        xp = select_device(device)
        build = checkpoint_setup(ckpt, xp, settings)
        where = f"checkpoint {checkpoint} (epoch {ckpt.epoch}: parameters after {ckpt.epoch} updates)"
    else:
        values = {"data": request["data"], "include": tuple(include), "exclude": tuple(exclude), "size": size,
                  "skip_bad": skip_bad or None, "loss": expression, "seed": seed, "dtype": dtype,
                  "stft_window": stft_window, "stft_stride": stft_stride, "stft_window_fn": stft_window_fn,
                  "stft_phase_weight": stft_phase_weight, "device": device}
        options = TrainOptions.for_model(model, **{k: v for k, v in values.items() if v not in (None, ())})
        options.validate()
        xp = select_device(device)
        build, dataset = initial_setup(options, xp, warn=data_warning)
        check_image_sizes(expression, options.loss_settings, dataset)
        shape = options.spec.evaluation_data(options, request)[1]   # the images' description, as evaluate's
        where = f"initial weights of --model {model} --seed {seed} ({dtype}), as sflnet train starts"
    images = [to_device(image, xp) for image in dataset.images]
    result = calibrate(build, expression, images)
    suggested = suggestions(result, reference)
    if as_json:
        click.echo(json.dumps(json_safe({"loss": result.expression, "terms": result.to_json(),
                                         "suggested": suggested, "images": len(images)}), allow_nan=False))
        return
    width = max(len(t.expression) for t in result.terms)
    lines = [f"at          {where}",
             f"data        {dataset.source}: {len(images)} images, {shape}",
             f"loss        {result.expression}", "",
             f"{'term':<{width}}  {'value':>14}  {'‖∂E_t/∂θ‖':>14}  {'‖∂E_t/∂f^L‖':>14}"]
    lines += [f"{t.expression:<{width}}  {t.value:>14.6g}  {t.grad_norm:>14.6g}  {t.output_grad_norm:>14.6g}"
              for t in result.terms]
    ref = suggested["value"]["reference"]
    lines += ["",
              f"value-balanced    (every w_t·E_t equals {ref}'s):           {suggested['value']['expression']}",
              f"gradient-balanced (every w_t·‖∂E_t/∂θ‖ equals {ref}'s):     {suggested['gradient']['expression']}"]
    click.echo("\n".join(lines))
