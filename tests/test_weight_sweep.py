"""validation/weight_sweep.py end to end on the built-in demo images (never the Willow data)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from sflnet.training.history import read_history

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "validation" / "weight_sweep.py"
TERMS = ("sfl", "fft", "stft")
NAMES = ["pl"] + [f"{t}_{k}" for k in ("v1", "v10", "g", "v100", "v0.1") for t in TERMS]


def run_sweep(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "out"
    done = run_sweep("--quick", "--size", 24, "--epochs", 1, "--out", out)
    assert done.returncode == 0, done.stderr
    return out, done.stdout


def test_every_run_is_tabled_from_the_same_start(swept):
    out, _ = swept
    table = json.loads((out / "table.json").read_text())
    assert list(table["runs"]) == NAMES and table["pending"] == []
    first = {}
    for name in NAMES:
        row = table["runs"][name]
        assert set(row) >= {"psnr", "ssim", "sfl", "fft", "stft", "collapsed_or_diverged", "weight"}
        first[name] = read_history(out / "runs" / name / "history.csv")[0]["E_PL"]
    assert len(set(first.values())) == 1          # the epoch-1 pass, before any update: one initial state
    assert (out / "weights.png").stat().st_size > 0
    assert "| stft_v100 |" in (out / "table.md").read_text()


def test_the_weights_are_the_calibrated_balancing_weights(swept):
    out, _ = swept
    weights = json.loads((out / "weights.json").read_text())
    terms = weights["terms"]
    table = json.loads((out / "table.json").read_text())["runs"]
    for term in TERMS:
        value = weights["value"][term]
        assert value * terms[term]["value"] == pytest.approx(terms["pl"]["value"], rel=1e-5)
        assert weights["gradient"][term] * terms[term]["grad_norm"] == pytest.approx(terms["pl"]["grad_norm"],
                                                                                     rel=1e-5)
        for multiple, key in ((0.1, "v0.1"), (1, "v1"), (10, "v10"), (100, "v100")):
            assert table[f"{term}_{key}"]["weight"] == pytest.approx(multiple * value, rel=1e-5)
        assert table[f"{term}_g"]["objective"] == f"pl+{weights['gradient'][term]!r}*{term}"


def test_a_second_invocation_trains_nothing(swept):
    out, _ = swept
    resumed = run_sweep("--quick", "--size", 24, "--epochs", 1, "--out", out)
    assert resumed.returncode == 0, resumed.stderr
    assert "training" not in resumed.stdout
    assert "[pl] complete (1 epochs)" in resumed.stdout
