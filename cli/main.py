"""Entry point of the ``sflnet`` command: the Click group and the error policy.

Error policy: a problem the user can fix (:class:`sflnet.SflnetError`, a bad
option value) prints one line ``Error: ...`` on stderr and exits with status 2
(usage) or 1 (everything else), without a traceback. ``sflnet --debug ...``
shows the traceback instead. Ctrl-C exits with 130.

Exit statuses: 0 success; 1 a user error or a failed check (``gradcheck``); 2 a usage
error; 130 SIGINT (Ctrl-C); 143 SIGTERM (``train``: 128 + the signal's number). A command
that ends with a status of its own calls ``ctx.exit(N)``: the group runs with
``standalone_mode=False``, where Click returns that status from ``cli.main()`` instead of
exiting, and :func:`main` exits with it (tests/test_exit_status.py runs the installed
``sflnet`` script to check every command's status).
"""

import sys

import click

from sflnet import SflnetError, __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="sflnet")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx, debug):
    """sflnet: convolutional autoencoders trained with the Spatial Frequency Loss (Ichimura)."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


# --- command registration (one line per command module) -------------------
# (each module defines one or more click commands and is imported here)
from sflnet_cli.evaluate_cmd import evaluate  # noqa: E402
from sflnet_cli.filters_cmd import filters  # noqa: E402
from sflnet_cli.reconstruct_cmd import reconstruct  # noqa: E402
from sflnet_cli.sample_cmd import sample  # noqa: E402
from sflnet_cli.train_cmd import train  # noqa: E402
cli.add_command(train)
cli.add_command(sample)
cli.add_command(reconstruct)
cli.add_command(evaluate)
cli.add_command(filters)
from sflnet_cli.gradcheck_cmd import gradcheck  # noqa: E402
cli.add_command(gradcheck)
from sflnet_cli.bench_cmd import bench  # noqa: E402
cli.add_command(bench)
from sflnet_cli.encode_cmd import encode  # noqa: E402
cli.add_command(encode)
from sflnet_cli.report_cmd import report  # noqa: E402
cli.add_command(report)
from sflnet_cli.calibrate_cmd import calibrate_command  # noqa: E402
cli.add_command(calibrate_command)
from sflnet_cli.prepare_cmd import prepare  # noqa: E402
cli.add_command(prepare)
# ---------------------------------------------------------------------------


def _debug_requested(argv):
    return "--debug" in argv


def _world():
    """The MPI world when sflnet runs under mpiexec, else None (mpi4py is then never imported)."""
    from sflnet.training.distributed import current_world, launched_size  # noqa: PLC0415

    return current_world() if launched_size() > 1 else None


def main(argv=None):
    """Run the CLI; turn user errors into one line and a non-zero exit status.

    Under ``mpiexec`` every rank runs this: rank 0 alone prints an error (every rank exits with the
    same status); an unexpected exception on one rank stops all of them (MPI abort), never a hang.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        world = _world()
    except SflnetError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    quiet = world is not None and not world.is_root
    try:
        status = cli.main(args=argv, prog_name="sflnet", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        if not quiet:
            exc.show()
        sys.exit(exc.exit_code)
    except SflnetError as exc:
        if _debug_requested(argv):
            raise
        if not quiet:
            click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except Exception:
        if world is None:
            raise
        import traceback  # noqa: PLC0415

        click.echo(f"Error: rank {world.rank} failed unexpectedly; stopping all {world.size} ranks:", err=True)
        traceback.print_exc()
        world.abort(1)
    sys.exit(exit_status(status))


def exit_status(returned):
    """The exit status for what ``cli.main(..., standalone_mode=False)`` returned.

    Click returns N for ``ctx.exit(N)`` (0 for ``--help`` and ``--version``) and otherwise the
    command's return value, which is None for every sflnet command: a whole number is the
    status, anything else (None) is success, 0, as Click itself does in standalone mode.
    """
    if isinstance(returned, int) and not isinstance(returned, bool):
        return returned
    return 0


if __name__ == "__main__":
    main()
