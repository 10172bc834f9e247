"""validation/walkthrough.py: it prints every forward and backward step, its checks hold, and it exits 0."""

import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

from sflnet import nn

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "validation" / "walkthrough.py"

FORWARD_STEPS = [  # (step, layer, output shape) for the default 3×8×8 image
    ("F1", "conv2", "(1, 32, 8, 8)"), ("F2", "relu2", "(1, 32, 8, 8)"), ("F3", "conv3", "(1, 16, 4, 4)"),
    ("F4", "relu3", "(1, 16, 4, 4)"), ("F5", "up4", "(1, 16, 8, 8)"), ("F6", "conv4", "(1, 32, 8, 8)"),
    ("F7", "relu4", "(1, 32, 8, 8)"), ("F8", "conv5", "(1, 3, 8, 8)"), ("F9", "tanh5", "(1, 3, 8, 8)"),
    ("F10", "log6", "(1, 3, 8, 8)")]
BACKWARD_STEPS = [  # (step, source, shape of the gradient it returns)
    ("B1", "E", "(1, 3, 8, 8)"), ("B2", "log6.backward", "(1, 3, 8, 8)"), ("B3", "pixel loss", "(1, 3, 8, 8)"),
    ("B4", "B2 + B3", "(1, 3, 8, 8)"), ("B5", "tanh5.backward", "(1, 3, 8, 8)"),
    ("B6", "conv5.backward", "(1, 32, 8, 8)"), ("B7", "relu4.backward", "(1, 32, 8, 8)"),
    ("B8", "conv4.backward", "(1, 16, 8, 8)"), ("B9", "up4.backward", "(1, 16, 4, 4)"),
    ("B10", "relu3.backward", "(1, 16, 4, 4)"), ("B11", "conv3.backward", "(1, 32, 8, 8)"),
    ("B12", "relu2.backward", "(1, 32, 8, 8)"), ("B13", "conv2.backward", "(1, 3, 8, 8)")]
PARAMETER_GRADIENTS = {"w5": "(3, 32, 3, 3)", "b5": "(3,)", "w4": "(32, 16, 3, 3)", "b4": "(32,)",
                       "w3": "(16, 32, 3, 3)", "b3": "(16,)", "w2": "(32, 3, 3, 3)", "b2": "(32,)"}

_NUMBER = r"[-+]?\d\.\d+e[-+]\d+"
FD_ROW = re.compile(rf"^\s+(w\d|b\d|f¹)\s+(\([\d, ]*\))\s+({_NUMBER})\s+({_NUMBER})\s+({_NUMBER})\s*$")


def load_walkthrough():
    """The script as a module (its main() is not run on import)."""
    spec = importlib.util.spec_from_file_location("sflnet_walkthrough", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fd_rows(text):
    """The finite-difference table: [(variable, index, analytic, numeric, rel error)] parsed from the output."""
    return [(m.group(1), m.group(2), *map(float, m.group(3, 4, 5)))
            for m in map(FD_ROW.match, text.splitlines()) if m]


@pytest.fixture(scope="module")
def default_run():
    return subprocess.run([sys.executable, str(SCRIPT), "--seed", "0", "--size", "8"], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})


def test_the_script_exits_0(default_run):
    assert default_run.returncode == 0, default_run.stderr
    assert default_run.stderr == ""


def test_every_forward_step_is_printed_with_shapes_and_equation(default_run):
    lines = default_run.stdout.splitlines()
    for step, name, out_shape in FORWARD_STEPS:
        matching = [line for line in lines if line.split()[:2] == [step, name]]
        assert len(matching) == 1, f"forward step {step} {name} not printed once"
        assert "→ " + out_shape in matching[0]
        assert "Eq. " in matching[0] or "Tab. 1" in matching[0], matching[0]
    for label, equation in (("E_PL", "Eq. 4"), ("E_SFL", "Eq. 6"), ("E ", "Eq. 7")):
        assert any(line.strip().startswith(label) and equation in line for line in lines), label


def test_every_backward_step_is_printed_in_order_down_to_conv2(default_run):
    out = default_run.stdout
    backward = out[out.index("Backward pass"):]
    positions = []
    for step, source, shape in BACKWARD_STEPS:
        match = re.search(rf"^\s+{step}\s+{re.escape(source)}\s+\S+\s+{re.escape(shape)}", backward, re.MULTILINE)
        assert match, f"backward step {step} ({source}) with shape {shape} not printed"
        positions.append(match.start())
    assert positions == sorted(positions)
    for name, shape in PARAMETER_GRADIENTS.items():
        assert re.search(rf"∂E/∂{name}\s+{re.escape(shape)}", backward), name
    assert "Eq. 8" in backward and "Eq. 9" in backward
    assert "E → LoG → tanh → conv5 → conv4 → upsample → conv3 → conv2" in out
    assert "E → log6 → tanh5 → conv5 → relu4 → conv4 → up4 → relu3 → conv3 → relu2 → conv2" in out


def test_printed_checks_hold(default_run):
    rows = fd_rows(default_run.stdout)
    assert {row[0] for row in rows} == {"w2", "b2", "w3", "b3", "w4", "b4", "w5", "b5", "f¹"}
    assert len(rows) == 11
    assert all(row[4] < 1e-6 for row in rows), rows
    assert all(abs(row[2]) > 1e-4 for row in rows)   # real derivatives, not a vacuous 0 ≈ 0
    model = re.search(r"Against Autoencoder\.loss_and_grads: max rel error over .* = (\S+);", default_run.stdout)
    assert model and float(model.group(1)) < 1e-10


def test_main_with_an_odd_size_crops_and_passes(capsys):
    summary = load_walkthrough().main(["--seed", "3", "--size", "7"])
    out = capsys.readouterr().out
    assert re.search(r"F5\s+up4\s+bilinear ×2, crop to 7×7\s+\(1, 16, 4, 4\)\s+→ \(1, 16, 7, 7\)", out)
    assert len(summary["fd"]) == 11 and max(row[-1] for row in summary["fd"]) < 1e-6
    assert [row[:2] for row in fd_rows(out)] == [(name, str(index)) for name, index, *_ in summary["fd"]]
    assert summary["model_error"] < 1e-10


def test_a_wrong_backward_is_caught_by_the_finite_differences(monkeypatch, capsys):
    """Drop the tanh factor 1 − (f^L)² of Eq. 9: the model agrees with itself, the finite differences do not."""
    monkeypatch.setattr(nn.Tanh, "backward", lambda self, dy: dy.copy())
    with pytest.raises(AssertionError, match="finite difference"):
        load_walkthrough().main(["--seed", "0", "--size", "5"])
    capsys.readouterr()


def test_bad_size_is_refused():
    with pytest.raises(SystemExit) as stop:
        load_walkthrough().main(["--size", "0"])
    assert stop.value.code == 2
