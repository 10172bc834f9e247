"""``validation/gpu_check.py --quick`` end to end under the strict CuPy test double.

The script runs in a child process with ``tests/strict_cupy`` first on ``PYTHONPATH``, so that its
``import cupy`` finds the double (never real CuPy, even on a GPU machine). It must write both
reports, say plainly that this is not a GPU, mark every timing as not a GPU timing, and contain
every section the GPU check promises.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import STRICT_DIR

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "validation" / "gpu_check.py"
SECTIONS = ("device", "correctness", "speed", "memory", "syncs", "train", "goals")


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(STRICT_DIR), str(REPO)]),
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return (json.loads((out / "report.json").read_text(encoding="utf-8")),
            (out / "report.md").read_text(encoding="utf-8"))


def test_the_report_says_this_is_not_a_gpu(quick_report):
    report, markdown = quick_report
    assert report["device"]["real_gpu"] is False
    assert "not a real GPU" in report["device"]["statement"] and "test double" in report["device"]["statement"]
    assert "This is not a real GPU" in markdown


def test_the_report_has_every_section(quick_report):
    report, markdown = quick_report
    assert set(SECTIONS) <= set(report)
    assert set(report["correctness"]) == {"pytest", "gradcheck", "gpu_vs_cpu"}
    for heading in ("## Device", "## Correctness", "## Speed", "## Memory", "## Syncs", "## The train command",
                    "## Goals"):
        assert heading in markdown


def test_every_timing_is_marked_not_a_gpu_timing(quick_report):
    report, markdown = quick_report
    cases = report["speed"]["cases"]
    assert len(cases) == 2
    for entry in cases.values():
        assert entry["sflnet"]["note"] == "not a GPU timing"
        assert entry["sflnet"]["median_ms"] > 0 and entry["breakdown_ms"]["epoch"] > 0
    assert report["train"]["note"] == "not a GPU timing"
    assert all(goal["met"] is None and "not a GPU timing" in goal["why"] for goal in report["goals"].values())
    assert "Every timing here is **not a GPU timing**" in markdown


def test_the_checks_pass_on_the_double(quick_report):
    report, _ = quick_report
    correctness = report["correctness"]
    assert correctness["gradcheck"]["status"] == "ok" and correctness["gradcheck"]["by_device"]["gpu"]["rows"] > 0
    assert correctness["gpu_vs_cpu"]["status"] == "ok" and len(correctness["gpu_vs_cpu"]["cases"]) == 4
    assert correctness["pytest"]["status"] == "skipped"
    assert report["syncs"]["syncs_per_step"] == 1 and report["syncs"]["uploads_per_step"] == 0
    assert report["train"]["status"] == "ok" and report["train"]["worst_first_epoch"] == 0.0
    assert report["memory"]["pool_high_water_bytes"] >= report["memory"]["images_bytes"] > 0
