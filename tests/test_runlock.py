"""The run-folder lock (sflnet.training.runlock): acquire/release, live, stale, foreign and corrupt locks,
the takeover race between many processes, and release leaving other processes' locks alone."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sflnet.training import runlock
from sflnet.errors import SflnetError
from sflnet.training.runlock import LOCK_FILE, TAKEOVER_FILE, RunFolderInUse, RunLock, read_lock

REPO = str(Path(__file__).resolve().parent.parent)
HOST = socket.gethostname()


@pytest.fixture(autouse=True)
def short_wait(monkeypatch):
    """Transient states (a lock being written, a takeover in progress) are waited on for 0.3 s, not 2 s."""
    monkeypatch.setattr(runlock, "WAIT_S", 0.3)


def lock_path(folder):
    return Path(folder) / LOCK_FILE


def write_lock(folder, **fields):
    content = {"host": HOST, "started": "2024-01-01T00:00:00+00:00", "command": "sflnet train"}
    content.update(fields)
    lock_path(folder).write_text(json.dumps(content))
    return content


def read_json(folder):
    return json.loads(lock_path(folder).read_text())


def dead_pid():
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    try:
        os.kill(proc.pid, 0)
    except ProcessLookupError:
        return proc.pid
    pytest.skip("the pid of a reaped process was reused at once")


def acquire_error(folder, **kwargs):
    warnings = []
    with pytest.raises(SflnetError) as info:
        RunLock(folder, warn=warnings.append).acquire(**kwargs)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    assert warnings == []
    return message


def take_over(folder):
    """Acquire expecting a takeover; returns (lock, warnings)."""
    warnings = []
    lock = RunLock(folder, warn=warnings.append).acquire()
    assert read_json(folder)["pid"] == os.getpid()
    return lock, warnings


# --- acquire / release ----------------------------------------------------------------------


def test_acquire_writes_holder_and_release_removes_it(tmp_path):
    lock = RunLock(tmp_path, command="sflnet train --out x")
    assert lock.acquire() is lock and lock.locked
    content = read_json(tmp_path)
    assert content["host"] == HOST and content["pid"] == os.getpid()
    assert content["command"] == "sflnet train --out x"
    assert content["started"][:4].isdigit()
    assert read_lock(tmp_path)["pid"] == os.getpid()
    assert lock.release() is True
    assert not lock_path(tmp_path).exists() and not lock.locked
    assert lock.release() is False      # idempotent
    assert read_lock(tmp_path) is None
    assert os.listdir(tmp_path) == []


def test_context_manager_releases_on_exception(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with RunLock(tmp_path) as lock:
            assert lock.locked and lock_path(tmp_path).exists()
            1 / 0
    assert not lock_path(tmp_path).exists()
    with RunLock(tmp_path):             # and it can be taken again
        pass
    assert os.listdir(tmp_path) == []


def test_missing_folder_is_an_error_unless_create_folder(tmp_path):
    folder = tmp_path / "run"
    message = acquire_error(folder)
    assert message == f"cannot lock run folder {folder}: no such folder"
    assert not folder.exists()
    with RunLock(folder).acquire(create_folder=True):
        assert lock_path(folder).exists()
    (tmp_path / "file").write_text("x")
    assert "not a folder" in acquire_error(tmp_path / "file")


def test_release_after_the_file_vanished_does_not_raise(tmp_path):
    lock = RunLock(tmp_path).acquire()
    lock_path(tmp_path).unlink()
    assert lock.release() is False


def test_release_leaves_a_lock_that_is_not_ours(tmp_path):
    lock = RunLock(tmp_path).acquire()
    theirs = write_lock(tmp_path, pid=os.getpid() + 1)
    assert lock.release() is False
    assert read_json(tmp_path) == theirs
    # the same host and pid but another acquisition is not ours either
    lock = RunLock(tmp_path / "b").acquire(create_folder=True)
    other = dict(read_json(tmp_path / "b"), token="0" * 16)
    lock_path(tmp_path / "b").write_text(json.dumps(other))
    assert lock.release() is False and read_json(tmp_path / "b") == other


# --- held locks -----------------------------------------------------------------------------


def test_second_lock_in_the_same_process_fails(tmp_path):
    first = RunLock(tmp_path).acquire()
    before = lock_path(tmp_path).read_bytes()
    message = acquire_error(tmp_path)
    assert str(tmp_path) in message and f"host {HOST}" in message and f"pid {os.getpid()}" in message
    assert "already locked by this process" in message
    with pytest.raises(SflnetError, match="already locked"):
        first.acquire()
    assert lock_path(tmp_path).read_bytes() == before
    first.release()


def test_live_process_holds_the_lock_until_it_is_gone(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        write_lock(tmp_path, pid=proc.pid)
        message = acquire_error(tmp_path)
        assert message == (f"run folder {tmp_path} is in use by another sflnet train "
                           f"(host {HOST}, pid {proc.pid}, since 2024-01-01T00:00:00+00:00)")
        assert read_json(tmp_path)["pid"] == proc.pid
    finally:
        proc.kill()
        proc.wait()
    lock, warnings = take_over(tmp_path)
    assert warnings == [f"taking over the stale lock of {tmp_path} (host {HOST}, pid {proc.pid} is gone)"]
    lock.release()


def test_stale_lock_of_a_dead_pid_is_taken_over_with_one_warning(tmp_path):
    pid = dead_pid()
    write_lock(tmp_path, pid=pid)
    lock, warnings = take_over(tmp_path)
    assert len(warnings) == 1
    assert f"pid {pid} is gone" in warnings[0] and str(tmp_path) in warnings[0]
    assert "\n" not in warnings[0]
    assert sorted(os.listdir(tmp_path)) == [LOCK_FILE]     # no takeover or temporary file left
    assert lock.release() is True
    assert os.listdir(tmp_path) == []


def test_zombie_holder_is_stale(tmp_path):
    if not os.path.exists(f"/proc/{os.getpid()}/stat"):
        pytest.skip("needs /proc")
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 5
        while runlock._proc_stat(proc.pid)[0] != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        write_lock(tmp_path, pid=proc.pid)
        lock, warnings = take_over(tmp_path)
        assert len(warnings) == 1 and "zombie" in warnings[0]
        lock.release()
    finally:
        proc.wait()


def test_reused_pid_and_restarted_machine_are_stale(tmp_path):
    if runlock._process_start(os.getpid()) is None or runlock._BOOT_ID is None:
        pytest.skip("needs /proc")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        start = runlock._process_start(proc.pid)
        write_lock(tmp_path, pid=proc.pid, pid_start=start, boot_id=runlock._BOOT_ID)
        assert f"pid {proc.pid}" in acquire_error(tmp_path)
        write_lock(tmp_path, pid=proc.pid, pid_start=start - 1, boot_id=runlock._BOOT_ID)
        lock, warnings = take_over(tmp_path)
        assert len(warnings) == 1 and "belongs to another process" in warnings[0]
        lock.release()
        write_lock(tmp_path, pid=proc.pid, pid_start=start, boot_id="another-boot")
        lock, warnings = take_over(tmp_path)
        assert len(warnings) == 1 and "restarted" in warnings[0]
        lock.release()
    finally:
        proc.kill()
        proc.wait()


def test_lock_from_another_host_is_held_even_with_a_dead_pid(tmp_path):
    content = write_lock(tmp_path, host="node17.cluster", pid=dead_pid())
    message = acquire_error(tmp_path)
    assert message == (f"run folder {tmp_path} is in use by another sflnet train (host node17.cluster, "
                       f"pid {content['pid']}, since 2024-01-01T00:00:00+00:00); if that process is gone, "
                       f"delete {tmp_path / LOCK_FILE}")
    assert read_json(tmp_path) == content
    # a hostile host name cannot break the one-line message
    write_lock(tmp_path, host="evil\nhost", pid=1)
    assert "evil\\nhost" in acquire_error(tmp_path)


@pytest.mark.parametrize("raw", [b"", b"{\"host\": \"", b"not json", b"[1, 2]", b"\xff\xfe",
                                 b'{"host": "h"}', b'{"host": "HOST", "pid": 0}',
                                 b'{"host": "HOST", "pid": -1}', b'{"host": "HOST", "pid": true}'])
def test_corrupt_lock_is_held_while_young_and_taken_over_when_old(tmp_path, raw):
    raw = raw.replace(b"HOST", HOST.encode())
    lock_path(tmp_path).write_bytes(raw)
    started = time.monotonic()
    message = acquire_error(tmp_path)
    assert time.monotonic() - started >= runlock.WAIT_S        # it waited for the writer
    assert message.startswith(f"run folder {tmp_path} is being locked by another process right now")
    assert lock_path(tmp_path).read_bytes() == raw
    hour_ago = time.time() - 3600
    os.utime(lock_path(tmp_path), (hour_ago, hour_ago))
    lock, warnings = take_over(tmp_path)
    assert warnings == [f"taking over the stale lock of {tmp_path} ({tmp_path / LOCK_FILE} is incomplete "
                        f"or corrupt and 3600 s old)"]
    lock.release()


def test_corrupt_lock_completed_while_waiting_names_its_holder(tmp_path, monkeypatch):
    monkeypatch.setattr(runlock, "WAIT_S", 5.0)
    lock_path(tmp_path).write_bytes(b"")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        script = (f"import json, time; time.sleep(0.2); "
                  f"open({str(lock_path(tmp_path))!r}, 'w').write(json.dumps("
                  f"{{'host': {HOST!r}, 'pid': {proc.pid}}}))")
        writer = subprocess.Popen([sys.executable, "-c", script])
        try:
            message = acquire_error(tmp_path)
        finally:
            writer.wait()
        assert message.startswith(f"run folder {tmp_path} is in use by another sflnet train "
                                  f"(host {HOST}, pid {proc.pid}, since ?)")
    finally:
        proc.kill()
        proc.wait()


def test_leftover_takeover_file(tmp_path):
    write_lock(tmp_path, pid=dead_pid())
    (tmp_path / TAKEOVER_FILE).write_text("")
    message = acquire_error(tmp_path)
    assert "another process is taking over its stale lock right now" in message
    assert str(tmp_path / TAKEOVER_FILE) in message
    old = time.time() - 3600
    os.utime(tmp_path / TAKEOVER_FILE, (old, old))
    lock, warnings = take_over(tmp_path)
    assert len(warnings) == 1 and not (tmp_path / TAKEOVER_FILE).exists()
    lock.release()


def test_read_lock(tmp_path):
    assert read_lock(tmp_path / "missing") is None
    assert read_lock(tmp_path) is None
    write_lock(tmp_path, host="h", pid=12, command=["sflnet", "train"])
    info = read_lock(tmp_path)
    assert (info["host"], info["pid"], info["command"]) == ("h", 12, ["sflnet", "train"])
    assert info["age"] >= 0
    lock_path(tmp_path).write_text("{")
    assert read_lock(tmp_path)["corrupt"] is True


# --- races between processes ----------------------------------------------------------------

RACER = """
import json, sys
sys.path.insert(0, sys.argv[2])
from sflnet.errors import SflnetError
from sflnet.training.runlock import RunLock
warnings = []
lock = RunLock(sys.argv[1], warn=warnings.append)
print("ready", flush=True)
sys.stdin.readline()                    # go
try:
    lock.acquire()
    result = {"won": True}
except SflnetError as exc:
    result = {"won": False, "error": str(exc)}
result["warnings"] = warnings
print(json.dumps(result), flush=True)
sys.stdin.readline()                    # hold the lock until every racer has tried
lock.release()
"""


def race(folder, n=8):
    """Start n processes that all try to lock ``folder`` at the same moment; returns their results."""
    procs = [subprocess.Popen([sys.executable, "-S", "-c", RACER, str(folder), REPO], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(n)]
    try:
        for proc in procs:
            assert proc.stdout.readline() == "ready\n"
        for proc in procs:
            proc.stdin.write("go\n")
        for proc in procs:
            proc.stdin.flush()
        results = [json.loads(proc.stdout.readline()) for proc in procs]
        for proc, result in zip(procs, results):
            result["pid"] = proc.pid
        holder = read_json(folder)
        for proc in procs:
            proc.stdin.write("\n")
            proc.stdin.close()
        for proc in procs:
            assert proc.wait(timeout=10) == 0
        return results, holder
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("round_", range(3))
def test_many_processes_taking_over_one_stale_lock(tmp_path, round_):
    pid = dead_pid()
    write_lock(tmp_path, pid=pid)
    results, holder = race(tmp_path)
    winners = [r for r in results if r["won"]]
    assert len(winners) == 1, results
    winner = winners[0]
    assert holder["pid"] == winner["pid"]
    assert len(winner["warnings"]) == 1 and f"pid {pid} is gone" in winner["warnings"][0]
    for loser in results:
        if loser is not winner:
            assert loser["warnings"] == []
            assert f"in use by another sflnet train (host {HOST}, pid {winner['pid']}," in loser["error"]
    assert os.listdir(tmp_path) == []      # the winner released it; no takeover or temporary files


def test_many_processes_locking_a_free_folder(tmp_path):
    results, holder = race(tmp_path)
    winners = [r for r in results if r["won"]]
    assert len(winners) == 1, results
    assert holder["pid"] == winners[0]["pid"]
    assert all(r["warnings"] == [] for r in results)
    assert all(f"pid {winners[0]['pid']}," in r["error"] for r in results if not r["won"])
    assert os.listdir(tmp_path) == []


def test_a_held_folder_raises_the_typed_in_use_error(tmp_path):
    """Callers that share run folders (validation/vae_table.py) catch RunFolderInUse, not a message text."""
    write_lock(tmp_path, host="node17.cluster", pid=dead_pid())
    with pytest.raises(RunFolderInUse, match="is in use by another sflnet train"):
        RunLock(tmp_path).acquire()
    with pytest.raises(SflnetError, match="no such folder") as info:
        RunLock(tmp_path / "missing").acquire()
    assert not isinstance(info.value, RunFolderInUse)
