"""The one exception type sflnet raises for problems a user can fix.

The command line turns an :class:`SflnetError` into a one-line message and a
non-zero exit status (no traceback unless ``--debug``). Library users can catch
it like any other exception.
"""


class SflnetError(Exception):
    """A problem with the user's input: a file, an option value, a checkpoint."""
