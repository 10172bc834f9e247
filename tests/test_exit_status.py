"""Exit statuses of the installed ``sflnet`` console script, for every command.

The contract (cli/main.py, README "Commands"): 0 success; 1 a user error (one line
``Error: ...`` on stderr, no traceback) or a failed check; 2 a usage error; 130 SIGINT;
143 SIGTERM. ``--help`` and ``--version`` exit 0.

Every case runs the console script that pip installed (``sflnet`` next to the interpreter, else
on PATH) in a subprocess, so the path a user takes is the one tested: the script calls
``sflnet_cli.main.main``, which runs the Click group with ``standalone_mode=False`` and must
turn what Click returns into the exit status. (Tests that call the Click group through
``CliRunner`` never go through that function.)

A failed gradient check is planted with a plug-in loss whose backward is 5 % too large: a
hand-written ``*.dist-info`` folder with an ``sflnet.losses`` entry point, in a temporary folder
put on PYTHONPATH of the subprocess only, where importlib.metadata finds it (no package is
installed). Its twin with the right backward is the passing case.

Everything runs on the CPU at a tiny size (``--size 16``, one epoch), with OMP_NUM_THREADS=1.
"""

import concurrent.futures
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

COMMANDS = ("bench", "calibrate", "encode", "evaluate", "filters", "gradcheck", "prepare", "reconstruct",
            "report", "sample", "train")
DEMO_IMAGE = Path(__file__).resolve().parents[1] / "sflnet" / "demo_data" / "astronaut.png"
TIMEOUT = 120   # seconds for one command; every command here takes a few


def _find_script():
    """The installed ``sflnet`` console script: next to this interpreter (a venv's bin), else on PATH."""
    beside = Path(sys.executable).with_name("sflnet")
    if beside.is_file():
        return str(beside)
    return shutil.which("sflnet")


SCRIPT = _find_script()
pytestmark = pytest.mark.skipif(SCRIPT is None, reason="the sflnet console script is not installed")


def _env(pythonpath=None):
    """The subprocess environment: one BLAS thread; ``pythonpath`` (a folder) first on PYTHONPATH."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(pythonpath), os.environ.get("PYTHONPATH", "")) if p)
    return env


def sflnet(args, cwd, pythonpath=None):
    """Run ``sflnet ARGS`` (the installed script) in ``cwd``; the CompletedProcess (text output)."""
    return subprocess.run([SCRIPT, *[str(a) for a in args]], cwd=cwd, env=_env(pythonpath), capture_output=True,
                          text=True, timeout=TIMEOUT, check=False)


def sflnet_each(commands, cwd):
    """Run ``sflnet ARGS`` for each ARGS of ``commands`` {key: ARGS}, a few at a time (each one is mostly
    Python's start-up and imports); {key: CompletedProcess}."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {key: pool.submit(sflnet, args, cwd) for key, args in commands.items()}
        return {key: future.result() for key, future in futures.items()}


def assert_success(done):
    """Exit status 0 and no traceback."""
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr, done.stderr


# ---------------------------------------------------------------------------
# Fixtures: one tiny run folder of each model, bad input files, the plug-in site
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A scratch folder for the module: every command runs in it."""
    return tmp_path_factory.mktemp("exit_status")


@pytest.fixture(scope="module")
def cae_train(work):
    """``sflnet train`` of the cae: one full-batch epoch on the demo images at size 16. (done, run folder)."""
    run = work / "cae_run"
    done = sflnet(["train", "--epochs", "1", "--size", "16", "--device", "cpu", "--snapshot-every", "0",
                   "--out", run], work)
    return done, run


@pytest.fixture(scope="module")
def cae_run(cae_train):
    """The cae run folder, for the commands that read one (its training must have worked)."""
    done, run = cae_train
    assert_success(done)
    return run


@pytest.fixture(scope="module")
def vae_run(work):
    """A vae run folder (one epoch on 10 built-in digits), for ``sflnet sample``."""
    run = work / "vae_run"
    done = sflnet(["train", "--model", "vae", "--train-images", "10", "--batch-size", "10", "--epochs", "1",
                   "--device", "cpu", "--snapshot-every", "0", "--out", run], work)
    assert_success(done)
    return run


@pytest.fixture(scope="module")
def bad_files(work):
    """A text file named like a checkpoint, one named like an image, and an empty folder."""
    folder = work / "bad"
    folder.mkdir()
    (folder / "bogus.npz").write_text("not a checkpoint\n")
    (folder / "bogus.png").write_text("not an image\n")
    (folder / "empty").mkdir()
    return folder


SQUARED_LOSSES = '''
"""Two plug-in losses for tests/test_exit_status.py: half the mean squared error, and the same
with a backward 5 % too large (the planted bug that sflnet gradcheck must report)."""

from sflnet.losses import Loss


class RightSquared(Loss):
    """1/2 mean squared error per image, averaged over the batch; the right backward."""

    factor = 1.0

    def forward(self, recon, target, batch_count):
        self.difference = recon - target
        self.batch_count = batch_count
        return 0.5 * (self.difference ** 2).mean(axis=(1, 2, 3)).sum() / batch_count, {}

    def backward(self):
        return self.factor * self.difference / (self.batch_count * self.difference[0].size)


class WrongSquared(RightSquared):
    """The same loss with its backward scaled by 1.05."""

    factor = 1.05
'''


@pytest.fixture(scope="module")
def plugin_site(work):
    """A folder for PYTHONPATH holding a minimal installed distribution with two ``sflnet.losses`` entry
    points: ``rightsq`` (a correct backward) and ``wrongsq`` (the backward times 1.05)."""
    site = work / "plugin_site"
    site.mkdir()
    (site / "exit_status_plugin.py").write_text(SQUARED_LOSSES)
    info = site / "exit_status_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: exit-status-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[sflnet.losses]\n"
                                           "rightsq = exit_status_plugin:RightSquared\n"
                                           "wrongsq = exit_status_plugin:WrongSquared\n")
    return site


# ---------------------------------------------------------------------------
# --help, --version, the list of commands
# ---------------------------------------------------------------------------

def test_help_lists_exactly_the_commands_tested_here(work):
    """The cases below cover every command: a new one fails here until it has its cases."""
    done = sflnet(["--help"], work)
    assert_success(done)
    lines = done.stdout.split("Commands:", 1)[1].splitlines()
    names = tuple(sorted(line.split()[0] for line in lines if line.startswith("  ") and line.strip()))
    assert names == COMMANDS, "a command was added or removed: update COMMANDS and its cases in this file"


def test_version_exits_0_and_prints_the_installed_version(work):
    done = sflnet(["--version"], work)
    assert_success(done)
    assert importlib.metadata.version("sflnet") in done.stdout


def test_every_command_help_exits_0(work):
    results = sflnet_each({command: [command, "--help"] for command in COMMANDS}, work)
    for command, done in results.items():
        assert done.returncode == 0, (command, done.stderr)
        assert done.stdout.startswith(f"Usage: sflnet {command} "), (command, done.stdout)
        assert "Traceback" not in done.stdout + done.stderr, (command, done.stderr)


# ---------------------------------------------------------------------------
# Success: the cheapest real invocation of each command
# ---------------------------------------------------------------------------

def test_train_exits_0(cae_train):
    done, run = cae_train
    assert_success(done)
    assert len((run / "history.csv").read_text().splitlines()) == 2   # the header and epoch 1


def test_evaluate_exits_0(work, cae_run):
    done = sflnet(["evaluate", cae_run / "checkpoint.npz", "--device", "cpu", "--json"], work)
    assert_success(done)
    assert "E" in json.loads(done.stdout)


def test_reconstruct_exits_0(work, cae_run):
    out = work / "reconstructed"
    done = sflnet(["reconstruct", cae_run / "checkpoint.npz", DEMO_IMAGE, "--out", out, "--device", "cpu"], work)
    assert_success(done)
    assert list(out.glob("*.png"))


def test_encode_exits_0(work, cae_run):
    out = work / "encoded"
    done = sflnet(["encode", cae_run / "checkpoint.npz", DEMO_IMAGE, "--out", out, "--device", "cpu"], work)
    assert_success(done)
    assert (out / "manifest.json").is_file() and list(out.glob("*.npy"))


def test_report_exits_0(work, cae_run):
    done = sflnet(["report", cae_run, "--no-figures"], work)
    assert_success(done)
    assert done.stdout.strip()


def test_sample_exits_0(work, vae_run):
    out = work / "sampled"
    done = sflnet(["sample", vae_run / "checkpoint.npz", "--out", out, "--grid", "2", "--device", "cpu"], work)
    assert_success(done)
    assert (out / "latent_grid.png").is_file()


def test_filters_exits_0(work):
    out = work / "filters"
    done = sflnet(["filters", "--out", out, "--size", "16"], work)
    assert_success(done)
    assert (out / "fig3_log_responses.png").is_file() and (out / "fig4_subbands.png").is_file()


def test_gradcheck_of_a_right_backward_exits_0(work, plugin_site):
    done = sflnet(["gradcheck", "--layer", "rightsq", "--device", "cpu", "--json"], work, pythonpath=plugin_site)
    assert_success(done)
    report = json.loads(done.stdout)
    assert report["passed"] is True and report["rows"]
    assert all("rightsq" in row["layer"] and row["passed"] for row in report["rows"])


def test_bench_exits_0(work):
    done = sflnet(["bench", "--size", "16", "--repeat", "1", "--warmup", "0", "--device", "cpu", "--json"], work)
    assert_success(done)
    assert json.loads(done.stdout)


def test_calibrate_exits_0(work, cae_run):
    done = sflnet(["calibrate", cae_run / "checkpoint.npz", "--loss", "pl+sfl", "--device", "cpu", "--json"], work)
    assert_success(done)
    assert set(json.loads(done.stdout)["terms"]) == {"pl", "sfl"}


def test_prepare_exits_0(work):
    store = work / "store"
    done = sflnet(["prepare", DEMO_IMAGE, "--out", store, "--size", "16", "--workers", "1"], work)
    assert_success(done)
    assert (store / "index.json").is_file() and (store / "pixels.bin").is_file()


def test_every_command_has_a_success_case_here():
    tested = {name[len("test_"):-len("_exits_0")] for name in globals() if name.endswith("_exits_0")}
    tested.add("gradcheck")   # test_gradcheck_of_a_right_backward_exits_0
    assert set(COMMANDS) <= tested


# ---------------------------------------------------------------------------
# A user error: status 1, one line on stderr, no traceback
# ---------------------------------------------------------------------------

USER_ERRORS = {   # command: (arguments after the command, a word of the input the error line names)
    "train": (["--epochs", "0", "--out", "{work}/never"], "--epochs"),
    "sample": (["{cae}/checkpoint.npz", "--out", "{work}/never", "--device", "cpu"], "vae"),
    "reconstruct": (["{bad}/bogus.npz", str(DEMO_IMAGE), "--out", "{work}/never", "--device", "cpu"], "bogus.npz"),
    "evaluate": (["{bad}/bogus.npz", "--device", "cpu"], "bogus.npz"),
    "filters": (["--image", "{bad}/bogus.png", "--out", "{work}/never"], "bogus.png"),
    "gradcheck": (["--layer", "nosuchlayer", "--device", "cpu"], "nosuchlayer"),
    "bench": (["--data", "{bad}/empty", "--device", "cpu"], "empty"),
    "encode": (["{bad}/bogus.npz", str(DEMO_IMAGE), "--out", "{work}/never", "--device", "cpu"], "bogus.npz"),
    "report": (["{bad}/empty"], "empty"),
    "calibrate": (["--loss", "pl+nosuchloss", "--device", "cpu"], "nosuchloss"),
    "prepare": ([str(DEMO_IMAGE), "--out", "{work}/never", "--size", "-1"], "--size"),
}


def test_every_command_has_a_user_error_case():
    assert set(USER_ERRORS) == set(COMMANDS)


def test_a_user_error_exits_1_with_one_line_and_no_traceback(work, cae_run, bad_files):
    commands = {command: [command, *[a.format(work=work, cae=cae_run, bad=bad_files) for a in args]]
                for command, (args, _) in USER_ERRORS.items()}
    results = sflnet_each(commands, work)
    for command, done in results.items():
        named = USER_ERRORS[command][1]
        assert done.returncode == 1, (command, done.stdout, done.stderr)
        assert "Traceback" not in done.stdout + done.stderr, (command, done.stderr)
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and named in lines[0], (command, done.stderr)
    assert not (work / "never").exists()


# ---------------------------------------------------------------------------
# A usage error: status 2
# ---------------------------------------------------------------------------

def test_an_unknown_option_exits_2(work):
    results = sflnet_each({command: [command, "--no-such-option"] for command in COMMANDS}, work)
    for command, done in results.items():
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert "--no-such-option" in done.stderr, (command, done.stderr)
        assert "Traceback" not in done.stdout + done.stderr, (command, done.stderr)


def test_an_unknown_command_exits_2(work):
    done = sflnet(["no-such-command"], work)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "no-such-command" in done.stderr and "Traceback" not in done.stdout + done.stderr


# ---------------------------------------------------------------------------
# A failed gradient check: status 1 (issue 34: it used to exit 0)
# ---------------------------------------------------------------------------

def test_a_failed_gradient_check_exits_1(work, plugin_site):
    done = sflnet(["gradcheck", "--layer", "wrongsq", "--device", "cpu"], work, pythonpath=plugin_site)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "FAIL" in done.stdout and "Traceback" not in done.stdout + done.stderr


def test_a_failed_gradient_check_exits_1_with_json(work, plugin_site):
    done = sflnet(["gradcheck", "--layer", "wrongsq", "--device", "cpu", "--json"], work, pythonpath=plugin_site)
    assert done.returncode == 1, (done.stdout, done.stderr)
    report = json.loads(done.stdout)
    assert report["passed"] is False and report["rows"]
    assert all("wrongsq" in row["layer"] and not row["passed"] for row in report["rows"])


# ---------------------------------------------------------------------------
# Signals during training: SIGINT 130, SIGTERM 143
# ---------------------------------------------------------------------------

def _default_stop_signals():
    """In the child before exec: SIGINT and SIGTERM back to their defaults (a test command started with
    ``nohup`` or ``&`` would pass SIGINT on ignored, and sflnet leaves an ignored signal alone)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_training_exits_128_plus_its_number(work, signum, status):
    run = work / f"signal_{signum}"
    epochs = 100000   # far more than can finish before the signal: each full-batch epoch at size 16 is short
    process = subprocess.Popen([SCRIPT, "train", "--epochs", str(epochs), "--size", "16", "--device", "cpu",
                                "--snapshot-every", "0", "--out", str(run)],
                               cwd=work, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=_default_stop_signals)  # noqa: PLW1509 (no threads run here)
    try:
        history = run / "history.csv"
        deadline = time.monotonic() + TIMEOUT
        # a logged epoch: the loop runs, with the stop handlers installed
        while not (history.is_file() and len(history.read_text().splitlines()) >= 2):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "training did not log an epoch in time"
            time.sleep(0.05)
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == status, stderr
    assert "Traceback" not in stdout + stderr
    rows = len(history.read_text().splitlines()) - 1
    assert 1 <= rows < epochs
