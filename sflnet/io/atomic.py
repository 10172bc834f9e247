"""Atomic file writing: a file is either its old content or its new content, never a mix.

Used by checkpoints (:mod:`sflnet.io.checkpoint`, which re-exports these), run folders and the
image store (:mod:`sflnet.io.store`).
"""

import contextlib
import os
import tempfile

import numpy as np

from sflnet.errors import SflnetError

def _fsync_folder(folder):
    """Make a rename in ``folder`` durable (best effort: not every system can open folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path, what="file"):
    """Context manager yielding a binary file object whose content replaces ``path`` atomically.

    The data goes to a temporary file in the same folder (so the rename cannot
    cross file systems); on a clean exit it is flushed, fsync'ed and renamed
    over ``path`` with :func:`os.replace`. On any error the temporary file is
    removed and ``path`` is left untouched. An ``OSError`` (disk full,
    read-only folder, ...) becomes an :class:`SflnetError` naming ``path``.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        handle, tmp_path = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                            dir=folder)
    except OSError as exc:
        raise SflnetError(f"cannot write {what} {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(handle, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp_path, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.remove(tmp_path)
        if isinstance(exc, OSError):
            raise SflnetError(f"cannot write {what} {path}: {exc.strerror or exc} "
                              f"(the previous file, if any, is unchanged)") from None
        raise
    _fsync_folder(folder)


def write_text_atomic(path, text, what="file"):
    """Replace ``path`` by ``text`` (UTF-8) atomically, see :func:`atomic_writer`."""
    with atomic_writer(path, what) as stream:
        stream.write(text.encode("utf-8"))


def write_npz_atomic(path, arrays, what="file"):
    """Write ``{name: ndarray}`` as an uncompressed ``.npz`` atomically (no pickles allowed)."""
    for name, array in arrays.items():
        if np.asarray(array).dtype.hasobject:
            raise ValueError(f"array {name!r} holds Python objects; refusing to pickle it")
    with atomic_writer(path, what) as stream:
        np.savez(stream, **arrays)
