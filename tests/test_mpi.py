"""Data-parallel training under ``mpiexec -n 2`` (the ``.[mpi]`` extra): equality with one process,
bit-identical reruns, resume under MPI and with another rank count, failing ranks (no hang), and
rank 0 as the only writer. Skipped when mpi4py or mpiexec is missing; CI installs the extra."""

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from sflnet.training.distributed import check_shardable, launched_size, shard, step_sizes

MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
try:
    import mpi4py  # noqa: F401
    HAVE_MPI = MPIEXEC is not None
except ImportError:
    HAVE_MPI = False

needs_mpi = pytest.mark.skipif(not HAVE_MPI, reason="mpi4py/mpiexec not installed (pip install '.[mpi]')")
TIMEOUT = 180     # a hung rank would show up as this test's failure, not as a stuck CI job


# ---------------------------------------------------------------------------
# Pure functions: no MPI needed
# ---------------------------------------------------------------------------

def test_shard_balances_pixels_and_covers_every_image_once():
    pixels = [400, 100, 100, 100, 100, 300, 50]
    indices = [6, 0, 3, 5, 1, 2, 4]
    parts = [[indices[p] for p in shard(indices, pixels, 3, rank)] for rank in range(3)]
    assert sorted(i for part in parts for i in part) == sorted(indices)
    loads = [sum(pixels[i] for i in part) for part in parts]
    # LPT by hand: 400 → r0, 300 → r1, then the four 100s go r2, r2, r1, r2 … and 50 → r0 or r1.
    assert max(loads) - min(loads) <= 100
    assert parts[0][0] == 0    # the largest image opens rank 0's share


def test_shard_keeps_step_order_within_a_rank():
    indices = [3, 1, 2, 0]
    positions = shard(indices, [1, 1, 1, 1], 2, 1)
    assert positions == sorted(positions)


def test_step_sizes_and_shardable():
    assert step_sizes(10, 0) == [10] and step_sizes(10, 4) == [4, 4, 2] and step_sizes(10, 20) == [10]
    assert check_shardable(10, 4, 2) is None
    assert "only 2 images" in check_shardable(10, 4, 3)
    assert "only 1 training images" in check_shardable(1, 0, 2)


def test_launched_size_reads_the_process_managers_variables():
    assert launched_size({}) == 1
    assert launched_size({"PMI_SIZE": "4"}) == 4
    assert launched_size({"OMPI_COMM_WORLD_SIZE": "3"}) == 3
    assert launched_size({"PMI_SIZE": "1"}) == 1


# ---------------------------------------------------------------------------
# Under mpiexec
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Five small images of different sizes (so the pixel balance matters)."""
    folder = tmp_path_factory.mktemp("mpi_images")
    rng = np.random.default_rng(7)
    for i, (h, w) in enumerate([(20, 24), (16, 16), (24, 20), (12, 28), (20, 20)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


def train_args(images, out, epochs, *extra):
    return ["train", "--data", str(images), "--size", "0", "--epochs", str(epochs), "--dtype", "float64",
            "--device", "cpu", "--snapshot-every", "2", "--out", str(out), *extra]


def run(args, ranks=None, script=None, env=None):
    """sflnet ARGS in one process, or under ``mpiexec -n ranks``; ``script`` replaces the entry point."""
    entry = [sys.executable, str(script)] if script else [sys.executable, "-m", "sflnet_cli.main"]
    command = ([MPIEXEC, "-n", str(ranks)] if ranks else []) + entry + [str(a) for a in args]
    environment = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=environment)


def history(run_dir):
    with open(run_dir / "history.csv", newline="") as stream:
        rows = list(csv.reader(stream))
    return np.array([[float(v) for v in row[:-1]] for row in rows[1:]])   # without "seconds"


def weights(run_dir):
    with np.load(run_dir / "checkpoint.npz", allow_pickle=False) as archive:
        return {k: archive[k] for k in archive.files if k != "meta"}, json.loads(str(archive["meta"]))


def max_rel(a, b):
    return max(float(np.max(np.abs(a[k] - b[k])) / np.max(np.abs(a[k]))) for k in a)


@needs_mpi
@pytest.mark.parametrize("extra", [[], ["--batch-size", "3"]])
def test_two_ranks_equal_one_process_and_rerun_is_bit_identical(tmp_path, images, extra):
    single = run(train_args(images, tmp_path / "single", 4, *extra))
    assert single.returncode == 0, single.stderr
    first = run(train_args(images, tmp_path / "mpi", 4, *extra), ranks=2)
    assert first.returncode == 0, first.stderr
    assert "2 MPI ranks" in first.stdout and first.stdout.count("Trained to epoch 4") == 1   # rank 0 speaks
    h1, h2 = history(tmp_path / "single"), history(tmp_path / "mpi")
    assert h1.shape == h2.shape == (4, h1.shape[1])
    assert float(np.max(np.abs(h1 - h2) / np.abs(h1).clip(1e-300))) < 1e-12
    (w1, meta1), (w2, meta2) = weights(tmp_path / "single"), weights(tmp_path / "mpi")
    assert max_rel(w1, w2) < 1e-12 and meta1["rng_state"] == meta2["rng_state"]
    again = run(train_args(images, tmp_path / "again", 4, *extra), ranks=2)
    assert again.returncode == 0, again.stderr
    w3, _ = weights(tmp_path / "again")
    assert all(np.array_equal(w2[k], w3[k]) for k in w2)
    assert np.array_equal(history(tmp_path / "mpi"), history(tmp_path / "again"))
    assert not (tmp_path / "mpi" / ".sflnet.lock").exists()
    assert json.loads((tmp_path / "mpi" / "config.json").read_text())["mpi_ranks"] == 2


@needs_mpi
def test_resume_under_mpi_and_with_another_rank_count(tmp_path, images):
    reference = run(train_args(images, tmp_path / "ref", 6))
    assert reference.returncode == 0, reference.stderr
    assert run(train_args(images, tmp_path / "a", 2), ranks=2).returncode == 0
    resumed = run(["train", "--resume", "--out", tmp_path / "a", "--epochs", "4"], ranks=2)
    assert resumed.returncode == 0, resumed.stderr
    alone = run(["train", "--resume", "--out", tmp_path / "a", "--epochs", "6", "--device", "cpu"])
    assert alone.returncode == 0, alone.stderr
    h_ref, h_run = history(tmp_path / "ref"), history(tmp_path / "a")
    assert h_run.shape == h_ref.shape and float(np.max(np.abs(h_ref - h_run) / np.abs(h_ref))) < 1e-12
    (w_ref, _), (w_run, meta) = weights(tmp_path / "ref"), weights(tmp_path / "a")
    assert meta["epoch"] == 6 and max_rel(w_ref, w_run) < 1e-12
    resumes = json.loads((tmp_path / "a" / "config.json").read_text())["resumes"]
    assert [r.get("mpi_ranks") for r in resumes] == [2, None]


FAIL_ON_RANK_1 = """
    import os, sys
    from sflnet.training import run, trainer
    from sflnet.errors import SflnetError
    rank = int(os.environ.get("PMI_RANK", "0"))
    mode = os.environ["FAIL_MODE"]
    if rank == 1 and mode == "data":
        def bad_data(*args, **kwargs):
            raise SflnetError("cannot read im3.png: truncated file (simulated on rank 1)")
        run.load_training_data = bad_data
    if rank == 1 and mode == "crash":
        real_step, calls = trainer.train_step, []
        def step(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                raise RuntimeError("simulated crash of rank 1 in epoch 3")
            return real_step(*args, **kwargs)
        trainer.train_step = step
    from sflnet_cli.main import main
    main(sys.argv[1:])
"""


@needs_mpi
def test_a_bad_image_on_one_rank_stops_all_with_one_error_and_writes_nothing(tmp_path, images):
    script = tmp_path / "fail.py"
    script.write_text(textwrap.dedent(FAIL_ON_RANK_1))
    result = run(train_args(images, tmp_path / "run", 3), ranks=2, script=script, env={"FAIL_MODE": "data"})
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert errors == ["Error: rank 1: cannot read im3.png: truncated file (simulated on rank 1)"], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()     # the folder was created only for the lock, and removed


@needs_mpi
def test_a_crash_on_one_rank_mid_run_stops_every_rank_and_keeps_the_checkpoint(tmp_path, images):
    script = tmp_path / "fail.py"
    script.write_text(textwrap.dedent(FAIL_ON_RANK_1))
    result = run(train_args(images, tmp_path / "run", 6), ranks=2, script=script, env={"FAIL_MODE": "crash"})
    assert result.returncode != 0
    assert "rank 1 failed unexpectedly" in result.stderr and "simulated crash" in result.stderr
    _, meta = weights(tmp_path / "run")
    assert meta["epoch"] == 2       # epochs 1 and 2 completed and saved; epoch 3 never finished
    resumed = run(["train", "--resume", "--out", tmp_path / "run", "--device", "cpu"])
    assert resumed.returncode == 0, resumed.stderr
    assert weights(tmp_path / "run")[1]["epoch"] == 6


@needs_mpi
@pytest.mark.parametrize("args, fragment", [
    (["--lr", "-1"], "--lr"),
    (["--lr", "1e6"], "training diverged"),
])
def test_bad_option_or_divergence_gives_one_error_from_rank_0(tmp_path, images, args, fragment):
    result = run(train_args(images, tmp_path / "run", 3, *args), ranks=2)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr
    assert "Traceback" not in result.stderr


@needs_mpi
def test_more_ranks_than_images_is_refused(tmp_path, images):
    result = run(train_args(images, tmp_path / "run", 2, "--include", "im0.png"), ranks=2)
    assert result.returncode == 1
    assert "2 MPI ranks but only 1 training images" in result.stderr


AUDIT_WRITES = """
    import os, sys
    rank = int(os.environ.get("PMI_RANK", "0"))
    run_dir = os.path.realpath(os.environ["RUN_DIR"])
    seen = []
    WRITE_EVENTS = {"os.rename", "os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree", "os.truncate"}
    def audit(event, args):
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        else:
            writing, path = event in WRITE_EVENTS, args[0] if args else None
        if writing and isinstance(path, (str, bytes, os.PathLike)):
            full = os.path.realpath(os.fsdecode(path))
            if full.startswith(run_dir):
                seen.append(f"{event} {full}")
    sys.addaudithook(audit)
    from sflnet_cli.main import main
    try:
        main(sys.argv[1:])
    finally:
        with open(os.environ["REPORT"] + f".{rank}", "w") as stream:
            stream.write("\\n".join(seen))
"""


@needs_mpi
def test_rank_0_alone_writes_the_run_folder(tmp_path, images):
    script = tmp_path / "audit.py"
    script.write_text(textwrap.dedent(AUDIT_WRITES))
    out = tmp_path / "run"
    env = {"RUN_DIR": str(out), "REPORT": str(tmp_path / "writes")}
    result = run(train_args(images, out, 4), ranks=2, script=script, env=env)
    assert result.returncode == 0, result.stderr
    rank0 = (tmp_path / "writes.0").read_text().splitlines()
    rank1 = (tmp_path / "writes.1").read_text().splitlines()
    assert any("checkpoint.npz" in w for w in rank0) and any("history.csv" in w for w in rank0)
    assert rank1 == []
    resumed = run(["train", "--resume", "--out", out, "--epochs", "6"], ranks=2, script=script, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert (tmp_path / "writes.1").read_text() == ""
