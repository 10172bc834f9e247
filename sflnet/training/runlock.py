"""The run-folder lock: one ``sflnet train`` (or ``--resume``) per run folder at a time.

A run folder in use is marked by the lock file ``RUN/.sflnet.lock``. A second
``sflnet train`` on it, even with ``--overwrite``, fails at once with a
one-line :class:`~sflnet.errors.SflnetError` naming the folder and the
holder's host and pid. A stale lock, whose process is gone, is taken over with
a warning.

Why a lock *file* and not ``flock``/``fcntl``
---------------------------------------------
Run folders often live on a cluster's shared filesystem (NFS, Lustre, GPFS,
BeeGFS, CIFS), with the trainings started on different nodes. There
``flock``/``fcntl`` locks are unreliable: depending on the filesystem, the
mount options and the kernel they are node-local only (invisible to the
other nodes), need a lock daemon that may not run (``nolock`` mounts, then
they fail or silently succeed), or are not supported at all. They also vanish
silently when the lock manager loses state. Creating a file with
``os.open(path, O_CREAT | O_EXCL | O_WRONLY)`` is atomic on local filesystems,
NFSv3 and later (exclusive create is done by the server) and the usual cluster
filesystems: of any number of processes on any number of nodes exactly one
creates the file. The file also says who holds the lock, which the error
message can then tell the user.

The lock file
-------------
JSON, written into the O_EXCL-created file and fsynced::

    {"host": socket.gethostname(), "pid": os.getpid(), "started": ISO time,
     "command": the command line or None,
     "boot_id": Linux boot id or None, "pid_start": the process's start time
     from /proc/PID/stat or None, "token": random hex}

``host`` and ``pid`` are required; everything else is optional when reading.
``boot_id`` and ``pid_start`` let a stale lock be recognised even when its pid
has been reused by another process (Linux only). ``token`` identifies one
acquisition exactly: :meth:`RunLock.release` removes the file only when it
still holds our host, pid, ``started`` and token.

Who holds an existing lock
--------------------------
* another host: its liveness cannot be checked from here, so the lock is
  held; the error says to delete the lock file if that process is gone;
* this host, another pid: held while the pid is alive (``os.kill(pid, 0)``;
  ``PermissionError`` means alive), stale once it is gone, or when the machine
  has restarted since (another ``boot_id``), the pid now belongs to another
  process (another ``pid_start``) or is a zombie;
* this host, this very process (e.g. :func:`run_training` called twice
  in one program, the first lock not released): held, to be safe;
* a lock file that is empty, not JSON or lacks a valid host/pid (its holder
  crashed between creating and writing it): stale when older than
  :data:`CORRUPT_GRACE_S` (by mtime), otherwise held, since another process is
  writing it right now. Acquisition waits up to :data:`WAIT_S` for it to become
  readable before giving up.

Takeover protocol
-----------------
Two processes can find the same lock stale at the same moment, so a stale
lock is never simply deleted and recreated (B could delete the fresh lock A
has just created). Instead the takeover step runs under a mutex, the file
``RUN/.sflnet.lock.takeover``, itself created with O_EXCL:

1. create the takeover file with O_EXCL; if it exists, another process is
   taking over right now: wait (up to :data:`WAIT_S`) and start again from
   the top, where that process's fresh lock will then be found and reported;
2. holding it, re-read the lock file and judge it again (it may have been
   taken over or released meanwhile); only if it is still stale
3. write our lock into a uniquely named temporary file and ``os.replace`` it
   onto ``.sflnet.lock``: the lock file never disappears, so no third process
   can slip in with a plain O_EXCL create, and its content switches atomically
   from the stale holder to us; read it back to check it is ours;
4. remove the takeover file (only if it is still ours) and warn.

Only a takeover-file holder ever replaces or deletes a lock that is not its
own, so under the mutex the lock file cannot change except by the (gone)
holder. A takeover file left by a process that crashed in the middle of step
2-3 is removed by whoever finds it older than :data:`TAKEOVER_STALE_S`.

Remaining limits
----------------
* The lock is advisory: only sflnet honours it.
* A live holder on another host cannot be told from a dead one; its lock
  stays until the user deletes it (the error says so). Two machines (or
  containers in separate pid namespaces on a shared volume) with the *same*
  host name can mistake each other's live lock for a stale one.
* Without ``/proc`` (macOS, BSD) a reused pid makes a stale lock look held;
  the user then has to delete it. On Windows liveness is not checked at all
  (``os.kill`` would terminate the process): a lock is held until deleted.
* The age of a corrupt lock is its mtime, set by the file server's clock on
  NFS: the grace period absorbs small clock skew; with a large skew the user
  may have to delete the file. A holder frozen (e.g. SIGSTOP) for longer than
  the grace period between creating and writing its lock loses it.
* Two processes breaking the same leftover takeover file at the same instant
  could both run step 2-3; that needs a crash in the milliseconds of a
  takeover plus a simultaneous race, and the read-back in step 3 still makes
  the earlier of them back off in most interleavings. A takeover frozen for
  longer than :data:`TAKEOVER_STALE_S` has the same problem.
* NFSv2 has no atomic exclusive create.
"""

import datetime
import json
import os
import re
import secrets
import socket
import sys
import time
from typing import Callable, Optional

from sflnet.errors import SflnetError

LOCK_FILE = ".sflnet.lock"
TAKEOVER_FILE = LOCK_FILE + ".takeover"

#: a lock file that cannot be parsed is taken over once it is this old (seconds, by mtime)
CORRUPT_GRACE_S = 10.0
#: a takeover file this old (seconds) was left by a crashed process and is removed
TAKEOVER_STALE_S = 60.0
#: how long acquire() waits for transient states (a lock being written, a takeover in progress)
WAIT_S = 2.0
_POLL_S = 0.02
_MAX_READ = 64 * 1024

_HELD, _STALE, _BUSY, _OURS = "held", "stale", "busy", "ours"


def _print_warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _show(value, limit=200) -> str:
    """``value`` as text that fits on one line (control characters escaped, length capped)."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(value))
    return text if len(text) <= limit else text[:limit] + "..."


def _boot_id() -> Optional[str]:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as stream:
            return stream.read().strip() or None
    except (OSError, ValueError):
        return None


def _proc_stat(pid: int):
    """``(state, start time)`` of process ``pid`` from /proc/PID/stat (fields 3 and 22), or (None, None)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            text = stream.read().decode("ascii", "replace")
        fields = text[text.rindex(")") + 2:].split()
        return fields[0], int(fields[19])
    except (OSError, ValueError, IndexError):
        return None, None


def _process_start(pid: int) -> Optional[int]:
    """Start time of process ``pid`` (clock ticks since boot), or None where there is no /proc."""
    return _proc_stat(pid)[1]


_BOOT_ID = _boot_id()


def _read_file(path):
    """``(raw bytes, age in seconds)`` of the file at ``path``, or None if there is none.

    Other errors (permissions, a folder in its place) raise OSError.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        age = time.time() - os.fstat(fd).st_mtime
        chunks = []
        size = 0
        while size < _MAX_READ:
            chunk = os.read(fd, _MAX_READ - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks), age
    finally:
        os.close(fd)


def _parse(raw) -> Optional[dict]:
    """The lock's content as a dict, or None if it is not a complete, valid lock."""
    try:
        info = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    host, pid = info.get("host"), info.get("pid")
    if not isinstance(host, str) or not host:
        return None
    # bool is an int; pid 0 and negative pids would address process groups in os.kill
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid < 2 ** 31:
        return None
    return info


def _holder_gone(info) -> Optional[str]:
    """Why the holder of a lock taken on *this* host is gone, or None if it may be alive."""
    pid = info["pid"]
    boot_id = info.get("boot_id")
    if isinstance(boot_id, str) and _BOOT_ID and boot_id != _BOOT_ID:
        return f"pid {pid} is gone: the machine has restarted since"
    recorded = info.get("pid_start")
    recorded = recorded if isinstance(recorded, int) and not isinstance(recorded, bool) else None
    if pid == os.getpid():
        now = _process_start(pid)
        if recorded is not None and now is not None and now != recorded:
            return f"pid {pid} is gone"
        return None
    if os.name == "nt":
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"pid {pid} is gone"
    except OSError:     # PermissionError: alive, owned by someone else; anything else: assume alive
        pass
    state, now = _proc_stat(pid)
    if recorded is not None and now is not None and now != recorded:
        return f"pid {pid} is gone, the pid now belongs to another process"
    if state == "Z":
        return f"pid {pid} is gone (a zombie, not yet reaped)"
    return None


def _same_acquisition(info, content) -> bool:
    return info is not None and all(info.get(key) == content[key]
                                    for key in ("host", "pid", "started", "token"))


def read_lock(folder) -> Optional[dict]:
    """Who holds the lock of run folder ``folder``, for reporting; None if it is not locked.

    Returns the lock file's content (``host``, ``pid``, ``started``, ``command``...)
    plus ``age`` (seconds since the file was written). A lock file that is
    unreadable or not a valid lock gives ``{"corrupt": True, "age": ...}``.
    Judges nothing: the holder may be gone.
    """
    path = os.path.join(os.fspath(folder), LOCK_FILE)
    try:
        found = _read_file(path)
    except OSError as exc:
        return {"corrupt": True, "age": None, "error": exc.strerror or str(exc)}
    if found is None:
        return None
    raw, age = found
    info = _parse(raw)
    if info is None:
        return {"corrupt": True, "age": age}
    return dict(info, age=age)


class RunFolderInUse(SflnetError):
    """The run folder is locked by another live process (or that process is locking it right now)."""


class RunLock:
    """The lock of one run folder (see the module docstring).

    folder:  the run folder; the lock file is ``folder/.sflnet.lock``
    command: the command line (str or list), recorded in the lock file
    warn:    called with one line (without a ``warning:`` prefix, like
             :func:`sflnet.io.images.load_dataset`'s ``warn``) when a stale lock is
             taken over or the lock file cannot be removed; default: print
             ``warning: ...`` to stderr

    Use ``with RunLock(folder, command):`` or :meth:`acquire`/:meth:`release`.
    """

    def __init__(self, folder, command=None, warn: Optional[Callable[[str], None]] = None):
        self.folder = os.fspath(folder)
        self.path = os.path.join(self.folder, LOCK_FILE)
        self.takeover_path = os.path.join(self.folder, TAKEOVER_FILE)
        self.command = command
        self.warn = _print_warning if warn is None else warn
        self._content = None     # what we wrote, while we hold the lock

    @property
    def locked(self) -> bool:
        """Whether this object holds the lock (as far as it knows)."""
        return self._content is not None

    def __enter__(self):
        return self if self.locked else self.acquire()

    def __exit__(self, *exc_info):
        self.release()
        return False

    # -- acquiring -----------------------------------------------------------

    def acquire(self, create_folder=False) -> "RunLock":
        """Lock the run folder or raise :class:`RunFolderInUse` (an :class:`SflnetError`, one line) saying who holds it.

        create_folder: create the folder (and its parents) if it is missing;
                       otherwise a missing folder is an error and nothing is written.
        Returns self.
        """
        folder = _show(self.folder)
        if self._content is not None:
            raise SflnetError(f"run folder {folder} is already locked by this process")
        if create_folder:
            try:
                os.makedirs(self.folder, exist_ok=True)
            except OSError as exc:
                raise SflnetError(f"cannot create run folder {folder}: {exc.strerror or exc}") from None
        deadline = time.monotonic() + WAIT_S
        last = f"cannot lock run folder {folder}: its lock file keeps changing; try again"
        while True:
            if self._create(self.path):
                return self
            verdict, text = self._judge_current()
            if verdict == _STALE:
                verdict, text = self._take_over()
                if verdict == _OURS:
                    return self
            if verdict == _HELD:
                raise RunFolderInUse(text)
            if verdict == _BUSY and text:
                last = text
            if time.monotonic() >= deadline:
                raise RunFolderInUse(last)
            time.sleep(_POLL_S)

    def _new_content(self):
        return {"host": socket.gethostname(), "pid": os.getpid(),
                "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                "command": self.command, "boot_id": _BOOT_ID,
                "pid_start": _process_start(os.getpid()), "token": secrets.token_hex(8)}

    def _create(self, path, content=None) -> bool:
        """Create ``path`` with O_EXCL holding our lock; False if it exists. Sets self._content."""
        folder = _show(self.folder)
        content = content or self._new_content()
        data = (json.dumps(content, default=str) + "\n").encode("utf-8")
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except FileNotFoundError:
            raise SflnetError(f"cannot lock run folder {folder}: no such folder") from None
        except NotADirectoryError:
            raise SflnetError(f"cannot lock run folder {folder}: not a folder") from None
        except OSError as exc:
            raise SflnetError(f"cannot lock run folder {folder}: cannot create {_show(path)}: "
                              f"{exc.strerror or exc}") from None
        try:
            with os.fdopen(fd, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
        except BaseException as exc:    # also Ctrl-C: leave no empty lock file behind
            try:
                os.unlink(path)
            except OSError:
                pass
            if not isinstance(exc, OSError):
                raise
            raise SflnetError(f"cannot lock run folder {folder}: cannot write {_show(path)}: "
                              f"{exc.strerror or exc}") from None
        self._content = content
        return True

    def _judge_current(self):
        """``(verdict, text)`` for the lock file as it is now.

        verdict: _HELD (text: the error), _STALE (text: the warning),
        _BUSY (text: the error if waiting does not help; None: it vanished, just retry).
        """
        folder, path = _show(self.folder), _show(self.path)
        try:
            found = _read_file(self.path)
        except OSError as exc:
            return _HELD, f"cannot lock run folder {folder}: cannot read {path}: {exc.strerror or exc}"
        if found is None:
            return _BUSY, None
        raw, age = found
        info = _parse(raw)
        if info is None:
            if age > CORRUPT_GRACE_S:
                return _STALE, (f"taking over the stale lock of {folder} ({path} is incomplete or "
                                f"corrupt and {age:.0f} s old)")
            return _BUSY, (f"run folder {folder} is being locked by another process right now "
                           f"({path} is incomplete); try again (if no sflnet train is running there, "
                           f"delete {path})")
        host, pid = info["host"], info["pid"]
        holder = f"host {_show(host)}, pid {pid}, since {_show(info.get('started', '?'))}"
        if host != socket.gethostname() or os.name == "nt":
            return _HELD, (f"run folder {folder} is in use by another sflnet train ({holder}); "
                           f"if that process is gone, delete {path}")
        gone = _holder_gone(info)
        if gone:
            return _STALE, f"taking over the stale lock of {folder} (host {_show(host)}, {gone})"
        if pid == os.getpid():
            return _HELD, f"run folder {folder} is already locked by this process ({holder})"
        return _HELD, f"run folder {folder} is in use by another sflnet train ({holder})"

    def _take_over(self):
        """Replace a stale lock under the takeover mutex.

        Returns (_OURS, None) when the lock is now ours, else a verdict as
        :meth:`_judge_current` (the caller raises or retries).
        """
        folder, takeover = _show(self.folder), _show(self.takeover_path)
        mutex = {"host": socket.gethostname(), "pid": os.getpid(), "started": "",
                 "token": secrets.token_hex(8)}
        data = (json.dumps(mutex) + "\n").encode("utf-8")
        try:
            fd = os.open(self.takeover_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return self._takeover_busy()
        except OSError as exc:
            return _HELD, f"cannot lock run folder {folder}: cannot create {takeover}: {exc.strerror or exc}"
        try:
            with os.fdopen(fd, "wb") as stream:
                stream.write(data)
        except OSError:
            mutex = None    # the file exists, which is all the mutex needs; remove it unchecked below
        try:
            verdict, text = self._judge_current()
            if verdict != _STALE:
                return verdict, text
            return self._replace_stale(text)
        finally:
            self._release_takeover(mutex)

    def _replace_stale(self, warning):
        folder = _show(self.folder)
        content = self._new_content()
        safe_host = re.sub(r"[^A-Za-z0-9._-]", "_", content["host"])[:64]
        temp = os.path.join(self.folder, f"{LOCK_FILE}.new.{safe_host}.{content['pid']}.{content['token']}")
        if not self._create(temp, content):
            return _BUSY, None      # a 64-bit random name exists already: just retry
        self._content = None        # not ours until it is in place
        try:
            os.replace(temp, self.path)
        except OSError as exc:
            try:
                os.unlink(temp)
            except OSError:
                pass
            return _HELD, (f"cannot lock run folder {folder}: cannot replace {_show(self.path)}: "
                           f"{exc.strerror or exc}")
        try:
            found = _read_file(self.path)
        except OSError:
            found = None
        if found is None or not _same_acquisition(_parse(found[0]), content):
            return _BUSY, None      # someone else replaced it (see "Remaining limits"): judge again
        self._content = content
        self.warn(warning)
        return _OURS, None

    def _takeover_busy(self):
        """The takeover file exists: wait for its holder, or remove it if it is a crash leftover."""
        folder, takeover = _show(self.folder), _show(self.takeover_path)
        try:
            age = time.time() - os.stat(self.takeover_path).st_mtime
        except FileNotFoundError:
            return _BUSY, None
        except OSError as exc:
            return _HELD, f"cannot lock run folder {folder}: cannot read {takeover}: {exc.strerror or exc}"
        if age > TAKEOVER_STALE_S:
            try:
                os.unlink(self.takeover_path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                return _HELD, (f"cannot lock run folder {folder}: cannot remove the leftover {takeover}: "
                               f"{exc.strerror or exc}")
            return _BUSY, None
        return _BUSY, (f"run folder {folder}: another process is taking over its stale lock right now; "
                       f"try again (if none is, delete {takeover})")

    def _release_takeover(self, mutex):
        """Remove the takeover file if it is still ours (``mutex``: its content; None: unknown, remove)."""
        try:
            if mutex is not None:
                found = _read_file(self.takeover_path)
                if found is None or not _same_acquisition(_parse(found[0]), mutex):
                    return
            os.unlink(self.takeover_path)
        except OSError:
            pass    # left behind, it is removed by the next takeover after TAKEOVER_STALE_S

    # -- releasing -----------------------------------------------------------

    def release(self) -> bool:
        """Remove the lock file if it is still ours; True if removed.

        Idempotent; never raises: a lock file that is missing or no longer ours
        is left alone, and other errors are passed to ``warn``.
        """
        content, self._content = self._content, None
        if content is None:
            return False
        try:
            found = _read_file(self.path)
            if found is None or not _same_acquisition(_parse(found[0]), content):
                return False
            os.unlink(self.path)
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            self.warn(f"cannot remove the lock file {_show(self.path)}: {exc.strerror or exc}")
            return False
