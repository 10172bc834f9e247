"""``sflnet report``: a run folder's summary, and its overview.png and curves.png redrawn from disk."""

import os
import statistics

import click

from sflnet import SflnetError
from sflnet.training.history import read_history
from sflnet.training.run_folder import CONFIG_FILE, HISTORY_FILE, RunFolder, read_config

SUMMARY_OPTIONS = ("data", "size", "epochs", "batch_size", "lr", "momentum", "init_std", "lr_min", "lr_max",
                   "lr_step", "beta", "seed", "sigmas", "sfl_weights", "dtype", "device", "snapshot_every")


def run_summary(folder):
    """(config, history rows, lines of text) of the run in ``folder`` (a :class:`RunFolder`).

    SflnetError (one line) when the folder is missing or holds no config.json/history.csv.
    """
    from sflnet.training.config import show_value  # noqa: PLC0415

    if not os.path.isdir(folder.path):
        raise SflnetError(f"{folder.path} is not a folder")
    for path, name in ((folder.config, CONFIG_FILE), (folder.history, HISTORY_FILE)):
        if not os.path.isfile(path):
            raise SflnetError(f"{folder.path} is not an sflnet run folder (no {name})")
    config = read_config(folder)
    rows = read_history(folder.history)
    options = config["options"]
    lines = [f"run         {folder.path}",
             f"model       {options.get('model', 'cae')}",
             f"loss        {options.get('loss', '?')}"]
    lines += [f"{name:<11} {show_value(options.get(name))}" for name in SUMMARY_OPTIONS
              if name == "data" or options.get(name) not in (None, [], ())]
    if not rows:
        lines.append("epochs done 0 (history.csv has no rows yet)")
        return config, rows, lines
    best = min(rows, key=lambda row: row["E"] if row["E"] == row["E"] else float("inf"))
    final = rows[-1]
    seconds = [row["seconds"] for row in rows if "seconds" in row]
    lines += [f"epochs done {final['epoch']} of {options.get('epochs', '?')}",
              f"best E      {best['E']:.6g} (epoch {best['epoch']})",
              f"final E     {final['E']:.6g} (epoch {final['epoch']})"]
    if seconds:
        lines.append(f"s/epoch     mean {statistics.fmean(seconds):.4g}, median {statistics.median(seconds):.4g}")
    return config, rows, lines


@click.command()
@click.argument("run_dir", type=click.Path())
@click.option("--no-figures", is_flag=True, help="Only print the summary; leave overview.png and curves.png alone.")
def report(run_dir, no_figures):
    """Summarise the training run in RUN_DIR and redraw its figures from the files on disk.

    Prints the model, loss and options (config.json), the epochs done, the best and
    final E with their epochs and the mean/median seconds per epoch (history.csv).
    (Re)writes RUN_DIR/overview.png (snapshots/original and snapshots/epoch_NNNN) and
    RUN_DIR/curves.png (history.csv); both are sflnet's own files in the run folder.
    """
    folder = RunFolder(run_dir)
    config, rows, lines = run_summary(folder)
    click.echo("\n".join(lines))
    if no_figures:
        return
    from sflnet.figures import plot_curves, plot_overview  # noqa: PLC0415  (matplotlib is slow to import)

    written = []
    try:
        written.append(str(plot_overview(folder.path)))
    except ValueError as exc:
        click.echo(f"warning: no overview.png: {exc}", err=True)
    except OSError as exc:
        raise SflnetError(f"cannot write overview.png in {folder.path}: {exc.strerror or exc}") from None
    if rows:
        options = config["options"]
        title = f"{options.get('model', 'cae')} {options.get('loss', '')} run"
        try:
            written.append(str(plot_curves(rows, list(options.get("sigmas") or ()), folder.curves, title=title)))
        except OSError as exc:
            raise SflnetError(f"cannot write {folder.curves}: {exc.strerror or exc}") from None
    for path in written:
        click.echo(f"Wrote {path}")
