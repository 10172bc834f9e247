"""``sflnet gradcheck``: the gradient-check validation suite (thin over :mod:`sflnet.gradcheck`).

The suite (its references import the whole of ``scipy.signal``) is imported when the command
runs or its help is shown, not when ``sflnet`` starts: the ``--layer`` help, which lists the checked
layers (plug-in losses included), is filled in by :class:`GradcheckCommand` at that time.
"""

import click

from sflnet import SflnetError

LAYER_HELP = "Only this layer's rows: one of {names}."


class GradcheckCommand(click.Command):
    """``sflnet gradcheck``: its ``--layer`` help names the checked layers (:func:`sflnet.gradcheck.layer_names`),
    read from the suite's registry the first time the command is used, not when ``sflnet`` starts."""

    layers_read = False

    def get_params(self, ctx):
        if not self.layers_read:
            from sflnet import gradcheck as suite  # noqa: PLC0415  (scipy.signal: ~0.7 s to import)

            for param in self.params:
                if param.name == "layer":
                    param.help = LAYER_HELP.format(names=", ".join(suite.layer_names()))
            self.layers_read = True
        return super().get_params(ctx)


@click.command("gradcheck", cls=GradcheckCommand)
@click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True,
              help="cpu: NumPy only. auto: also CuPy when a GPU is usable. gpu: also CuPy, error without a GPU. "
                   "The float64 NumPy checks always run.")
@click.option("--seed", type=int, default=0, show_default=True, help="Base seed of every random draw.")
@click.option("--layer", metavar="NAME", default=None,
              help=LAYER_HELP.format(names="the checked layers (listed by sflnet gradcheck --help)"))
@click.option("--verbose", is_flag=True,
              help="Also show, per row, a few elements side by side (analytic vs numeric, sflnet vs reference).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the rows as JSON (keys: device, layer, check, shape, eps, error, threshold, passed, "
                   "status, worst, note) instead of the table.")
@click.option("--full", is_flag=True,
              help="Whole-network dense checks on every parameter of the CAE (11,027) and, for the VAE rows, every "
                   "bias plus 64 elements of each weight tensor, instead of a sample (several minutes).")
@click.option("--explain", metavar="NAME", default=None,
              help="Print the derivation (the docstring of the layer's backward) above its check rows; "
                   "implies --layer NAME.")
@click.pass_context
def gradcheck(ctx, device, seed, layer, verbose, as_json, full, explain):
    """Check every hand-written backward pass against finite differences and SciPy references.

    One row per check; exit status 1 if any row FAILs. The footer explains the
    error bands and the thresholds.
    """
    from sflnet import gradcheck as suite  # noqa: PLC0415

    if explain is not None:
        text = suite.explain(explain)
        if layer is not None and suite.resolve_layers(layer) != suite.resolve_layers(explain):
            raise SflnetError(f"--layer {layer} and --explain {explain} name different layers; give one")
        layer = explain
        if not as_json:
            click.echo(text + "\n")
    report = suite.run_suite(device=device, seed=seed, layer=layer, full=full)
    if as_json:
        click.echo(suite.to_json(report, verbose=verbose))
    else:
        click.echo(suite.format_table(report, verbose=verbose))
    if not report.passed:
        ctx.exit(1)
