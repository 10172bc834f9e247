"""validation/compare_losses.py end to end on the built-in demo images (never the Willow data)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from sflnet.io.images import demo_dir
from sflnet.training.history import read_history

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "validation" / "compare_losses.py"
NAMES = ["pl", "pl_sfl", "l1", "ssim", "pl_fft", "pl_stft", "pl_stft_g", "ssim_stft_g", "ssim_stft"]


def run_compare(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "out"
    done = run_compare("--data", demo_dir(), "--size", 24, "--images", 3, "--epochs", 2, "--device", "cpu",
                       "--out", out)
    assert done.returncode == 0, done.stderr
    return out


def test_every_objective_is_trained_from_the_same_start_and_tabled(compared):
    table = json.loads((compared / "table.json").read_text())
    assert list(table["final"]) == NAMES
    first_rows = {}
    for name in NAMES:
        rows = read_history(compared / "runs" / name / "history.csv")
        assert [r["epoch"] for r in rows] == [1, 2]
        first_rows[name] = rows[0]
    # Same initial weights: the epoch-1 forward pass (before any update) measures the same E_PL everywhere.
    assert len({row["E_PL"] for row in first_rows.values()}) == 1
    assert set(table["seconds_per_epoch_alone"]) == {"cae", "pl", "sfl", "l1", "ssim", "fft", "stft"}
    markdown = (compared / "table.md").read_text()
    assert markdown.count("\n| `") == len(NAMES)
    assert (compared / "reconstructions.png").stat().st_size > 1000


def test_term_weights_make_each_term_start_at_the_size_of_the_pixel_loss(compared):
    chosen = json.loads((compared / "weights.json").read_text())
    start = chosen["initial values"]
    for term, weight in chosen["weights"].items():
        assert abs(weight * start[term] / start["pl"] - 1) <= 0.05   # two significant digits
    # The run folders record the expression with that weight, and its term has its own history column.
    rows = read_history(compared / "runs" / "pl_fft" / "history.csv")
    config = json.loads((compared / "runs" / "pl_fft" / "config.json").read_text())
    assert config["options"]["loss"] == f"pl+{chosen['weights']['fft']!r}*fft"
    assert rows[0]["E"] == pytest.approx(rows[0]["E_PL"] + chosen["weights"]["fft"] * rows[0]["E_FFT"], rel=1e-6)


def test_a_second_invocation_resumes_every_run(compared):
    before = {name: (compared / "runs" / name / "history.csv").read_text() for name in NAMES}
    done = run_compare("--data", demo_dir(), "--size", 24, "--images", 3, "--epochs", 3, "--device", "cpu",
                       "--out", compared, "--only", "pl,ssim_stft")
    assert done.returncode == 0, done.stderr
    for name in ("pl", "ssim_stft"):
        text = (compared / "runs" / name / "history.csv").read_text()
        assert text.startswith(before[name]) and len(read_history(compared / "runs" / name / "history.csv")) == 3
    assert (compared / "runs" / "l1" / "history.csv").read_text() == before["l1"]
