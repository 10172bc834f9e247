"""The gradient-check suite (`sflnet gradcheck`) itself: it passes on the current code
(the project's full-network gradient regression), it FAILs on the right rows when a
wrong backward is planted, and its JSON output has the documented fields."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from sflnet import gradcheck, losses, nn
from sflnet.backend import gpu_available
from sflnet.gradcheck.cases import layers as layer_cases
from sflnet.gradcheck.cases.losses import loss_row_name
from sflnet.losses.l1 import L1Loss
from sflnet_cli.main import cli, main
from sflnet.ops.im2col import col2im
from sflnet.ops import resample

DOCUMENTED_FIELDS = {"device", "layer", "check", "shape", "eps", "error", "threshold", "passed", "status",
                     "worst", "note"}


def rows_by_key(report):
    return {(row.device, row.layer, row.check): row for row in report.rows}


def failing(report):
    return {(row.layer, row.check) for row in report.rows if not row.passed}


# ---------------------------------------------------------------------------
# The suite is green on the current code (whole run through the CLI, as JSON)
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def full_run_json():
    result = CliRunner().invoke(cli, ["gradcheck", "--device", "cpu", "--json"])
    return result


def test_whole_suite_passes_on_current_code(full_run_json):
    assert full_run_json.exit_code == 0, full_run_json.output[-3000:]
    data = json.loads(full_run_json.output)
    assert data["passed"] is True
    bad = [(r["layer"], r["check"], r["error"], r["note"]) for r in data["rows"] if r["status"] != "PASS"]
    assert bad == []
    # every layer and loss, and the network with both losses, is covered by each kind of check
    kinds = {(r["layer"], r["check"]) for r in data["rows"]}
    for name in ("conv2d_s1", "conv2d_s2", "relu", "tanh", "upsample2x", "upsample_conv", "logbank", "pixel_loss",
                 "sfl_loss", "network_pl", "network_sfl"):
        checks = {check for layer, check in kinds if layer == name}
        assert any(c.startswith("forward") for c in checks), name
        assert any(c.startswith("dense") for c in checks), name
        assert "directional" in checks, name
    for name in ("im2col", "conv2d_s1", "conv2d_s2", "upsample2x", "logbank"):
        assert any(check.startswith("adjoint") for layer, check in kinds if layer == name), name


def test_json_rows_have_documented_fields(full_run_json):
    data = json.loads(full_run_json.output)
    assert set(data) >= {"rows", "passed", "gpu", "seed", "seconds", "eps_sweep", "metric"}
    assert data["eps_sweep"] == [1e-4, 1e-5, 1e-6, 1e-7]
    assert data["gpu"].startswith("GPU checks skipped")
    for row in data["rows"]:
        assert set(row) == DOCUMENTED_FIELDS
        assert row["status"] == ("PASS" if row["passed"] else "FAIL")
        assert row["device"] == "cpu"
        assert isinstance(row["error"], float) and row["error"] <= row["threshold"]
        if row["check"] in ("dense", "dense (sampled)", "directional"):
            assert row["eps"] in (1e-4, 1e-5, 1e-6, 1e-7)
        else:
            assert row["eps"] is None


def test_network_rows_verify_relu_masks(full_run_json):
    data = json.loads(full_run_json.output)
    for row in data["rows"]:
        if row["layer"].startswith("network") and row["check"] != "forward vs reference net":
            assert "ReLU masks" in row["note"], row


# ---------------------------------------------------------------------------
# Metric and CLI surface
# ---------------------------------------------------------------------------

def test_rel_error_is_the_scale_aware_cs231n_form():
    # max|a-b| = 0.1 at the second element; max|a| + max|b| = 2 + 2.1
    assert gradcheck.rel_error([1.0, 2.0], [1.0, 2.1]) == pytest.approx(0.1 / 4.1)
    # a tiny element does not dominate: elementwise this would be 1.0
    assert gradcheck.rel_error([1.0, 1e-12], [1.0, -1e-12]) == pytest.approx(2e-12 / 2.0)
    assert gradcheck.rel_error([0.0], [0.0]) == 0.0


def test_layer_verbose_shows_analytic_and_numeric_side_by_side():
    result = CliRunner().invoke(cli, ["gradcheck", "--device", "cpu", "--layer", "tanh", "--verbose"])
    assert result.exit_code == 0, result.output
    assert "analytic" in result.output and "numeric" in result.output
    assert "(s(θ+εr)−s(θ−εr))/2ε" in result.output
    rows = [line for line in result.output.splitlines() if line.startswith("cpu ")]
    assert len(rows) == 3 and all(line.rstrip().endswith("PASS") for line in rows)
    assert "relu" not in " ".join(rows)
    assert "GPU checks skipped" in result.output and "cs231n" in result.output


def test_unknown_layer_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["gradcheck", "--layer", "softmax"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: --layer 'softmax'") and "tanh" in err[0]


@pytest.mark.skipif(gpu_available(), reason="a GPU is usable here, so --device gpu is not an error")
def test_device_gpu_without_gpu_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["gradcheck", "--device", "gpu", "--layer", "tanh"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: --device gpu")


def test_gpu_rows_pass_on_cupy(cupy_module):
    """The GPU rows on CuPy: real CuPy on a GPU, else the strict test double (CI)."""
    report = gradcheck.run_suite(device="gpu", layer=["conv2d_s2", "upsample2x", "logbank", "sfl_loss"])
    gpu_rows = [row for row in report.rows if row.device == "gpu"]
    assert {row.check for row in gpu_rows} >= {"dense", "directional", "float32 gpu vs cpu"}
    assert [(r.layer, r.check, r.error, r.note) for r in report.rows if not r.passed] == []


# ---------------------------------------------------------------------------
# Planted bugs: the suite must FAIL on the right rows, and only there
# ---------------------------------------------------------------------------

def test_tanh_without_derivative_fails_tanh_and_network_rows(monkeypatch):
    monkeypatch.setattr(nn.Tanh, "backward", lambda self, dy: dy)   # drops the factor 1 − tanh²
    report = gradcheck.run_suite(device="cpu", layer=["tanh", "relu", "conv2d_s1", "network_sfl"])
    assert failing(report) == {("tanh", "dense"), ("tanh", "directional"),
                               ("network_sfl", "dense (sampled)"), ("network_sfl", "directional")}
    rows = rows_by_key(report)
    assert rows[("cpu", "tanh", "dense")].error > 1e-2              # the "wrong" band
    assert rows[("cpu", "tanh", "forward vs np.tanh")].passed       # forward is still right
    result = CliRunner().invoke(cli, ["gradcheck", "--device", "cpu", "--layer", "tanh"])
    assert result.exit_code == 1
    tanh_dense = [line for line in result.output.splitlines() if line.startswith("cpu     tanh   dense")]
    assert tanh_dense and tanh_dense[0].rstrip().endswith("FAIL")


def _backward_with_transposed_kernel(self, dout, need_dx=True):
    """Conv2D.backward with one bug: dx uses the spatially transposed kernel w[:, :, kx, ky]."""
    w = self.params["w"]
    c_out = w.shape[0]
    g = dout.transpose(1, 0, 2, 3).reshape(c_out, -1)
    self.grads["w"] = (g @ self.input_cols.T).reshape(w.shape)
    self.grads["b"] = g.sum(axis=1)
    if not need_dx:
        return None
    kh, kw = w.shape[2:]
    dcols = w.transpose(0, 1, 3, 2).reshape(c_out, -1).T @ g
    return col2im(dcols, self.input_shape, kh, kw, self.stride, self.pad)


def test_conv_with_transposed_kernel_fails_conv_rows(monkeypatch):
    monkeypatch.setattr(nn.Conv2D, "backward", _backward_with_transposed_kernel)
    report = gradcheck.run_suite(device="cpu", layer=["im2col", "conv2d_s1", "conv2d_s2", "upsample2x", "relu"])
    expected = {(name, check) for name in ("conv2d_s1", "conv2d_s2")
                for check in ("dense", "directional", "adjoint w.r.t. x")}
    assert failing(report) == expected
    rows = rows_by_key(report)
    assert rows[("cpu", "conv2d_s1", "dense")].worst == "x"         # only dx is wrong
    assert rows[("cpu", "conv2d_s1", "forward vs scipy.correlate")].passed
    result = CliRunner().invoke(cli, ["gradcheck", "--device", "cpu", "--layer", "conv2d_s1", "--json"])
    assert result.exit_code == 1
    statuses = {row["check"]: row["status"] for row in json.loads(result.output)["rows"]}
    assert statuses == {"forward vs scipy.correlate": "PASS", "dense": "FAIL", "directional": "FAIL",
                        "adjoint w.r.t. x": "FAIL"}


def test_upsample_adjoint_off_by_a_weight_fails_upsample_rows(monkeypatch):
    correct = resample.upsample2x_axis_adjoint

    def off_by_a_weight(g, axis, in_len):
        """The right adjoint plus 0.05·ge[0] at input 0: the clamped edge weight 1/4 became 0.3."""
        out = correct(g, axis, in_len)
        index = [slice(None)] * g.ndim
        index[axis] = slice(0, 1)
        out[tuple(index)] += 0.05 * g[tuple(index)]
        return out

    monkeypatch.setattr(resample, "upsample2x_axis_adjoint", off_by_a_weight)
    report = gradcheck.run_suite(device="cpu", layer=["upsample2x", "logbank", "im2col"])
    assert failing(report) == {("upsample2x", "dense"), ("upsample2x", "directional"), ("upsample2x", "adjoint")}


def test_a_planted_layer_through_the_registry_fails_its_row():
    """The engine checks whatever layer objects its registry's factories build."""
    class LeakyBackwardReLU(nn.ReLU):
        def backward(self, dy):
            return dy * np.where(self.positive_mask, 1.0, 0.01)   # the off branch leaks

    def make_case(rng, xp, dtype, size):
        case = layer_cases.make_relu_case(rng, xp, dtype, size)
        buggy = LeakyBackwardReLU()
        case.evaluate = lambda: buggy.forward(case.variables["x"])
        case.gradients = lambda dy: {"x": buggy.backward(dy)}
        return case

    registry = gradcheck.default_registry()
    registry["relu"] = gradcheck.LayerEntry(make_case, registry["relu"].references)
    report = gradcheck.run_suite(device="cpu", layer=["relu", "tanh"], registry=registry)
    assert failing(report) == {("relu", "dense"), ("relu", "directional")}


# ---------------------------------------------------------------------------
# Every registered loss is checked, a newly registered one included
# ---------------------------------------------------------------------------

class ScaledL1(L1Loss):
    """A stand-in for a plug-in loss: 2·mean |recon − target|, through the L1 loss."""

    name = "scaled_l1"

    def forward(self, recon, target, batch_count):
        share, parts = super().forward(recon, target, batch_count)
        return 2 * share, parts

    def backward(self):
        return 2 * super().backward()


class ScaledL1ForgotTheFactor(ScaledL1):
    def backward(self):
        return L1Loss.backward(self)


def test_every_registered_loss_has_a_loss_row_and_a_network_row():
    names = gradcheck.layer_names()
    for name in losses.REGISTRY:
        assert loss_row_name(name) in names
        assert (f"network_{name}" if name not in ("pl", "sfl") else "network_pl") in names


@pytest.mark.parametrize("loss_class,passes", [(ScaledL1, True), (ScaledL1ForgotTheFactor, False)])
def test_a_newly_registered_loss_is_checked_dense_and_directional(monkeypatch, loss_class, passes):
    # registered the way a built-in is (a plug-in goes through the same mapping, see test_plugin_loss.py)
    losses.LOSSES.forget_plugins()
    monkeypatch.setitem(losses.LOSSES.builtin, "scaled_l1", loss_class)
    monkeypatch.setattr(losses.LOSSES, "_entries", None)
    assert "scaled_l1_loss" in gradcheck.layer_names() and "network_scaled_l1" in gradcheck.layer_names()
    report = gradcheck.run_suite(device="cpu", layer="scaled_l1_loss")
    assert [(row.check, row.passed) for row in report.rows] == [("dense", passes), ("directional", passes)]
    assert report.rows[0].shape == "recon(2,3,5,6), N_m=3"
    assert "ScaledL1" in gradcheck.explain("scaled_l1_loss")


def test_a_loss_name_selects_its_loss_row_and_its_network_row():
    assert gradcheck.resolve_layers("fft") == ["fft_loss", "network_fft"]
    assert gradcheck.resolve_layers(["pl", "tanh"]) == ["tanh", "pixel_loss", "network_pl"]
    assert gradcheck.resolve_layers("SFL") == ["sfl_loss", "network_sfl"]
