"""The one exception type sflnet raises for problems a user can fix.

The command line turns an :class:`SflnetError` into a one-line message and a
non-zero exit status (no traceback unless ``--debug``). Library users can catch
it like any other exception.
"""


class SflnetError(Exception):
    """A problem with the user's input: a file, an option value, a checkpoint."""


def run_script(main, interrupted="Interrupted."):
    """Run a script's ``main()`` the way the command line runs a command; returns the exit status.

    An :class:`SflnetError` prints ``Error: <message>`` (one line, no traceback) and gives 1; Ctrl-C
    prints ``interrupted`` and gives 130; otherwise ``main()``'s return value (None: 0). For
    ``if __name__ == "__main__": sys.exit(run_script(main))`` in the validation scripts.
    """
    import sys  # noqa: PLC0415  (only a script needs it)

    try:
        return main()
    except SflnetError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
