"""``sflnet gradcheck --explain LAYER``: the backward's derivation beside its check rows."""

import inspect
import json

import pytest

from sflnet import gradcheck, nn
from sflnet.ops.im2col import col2im
from tests.test_cli import assert_clean_error, run_cli


def test_every_checked_layer_has_a_documented_backward():
    targets = gradcheck.backward_targets()
    assert set(targets) == set(gradcheck.layer_names())
    for name, (_, function, _) in targets.items():
        assert inspect.getdoc(function), name


@pytest.mark.parametrize("name, cls, module", [("tanh", nn.Tanh, "sflnet.nn.activations"),
                                               ("conv2d_s1", nn.Conv2D, "sflnet.nn.conv"),
                                               ("upsample2x", nn.Upsample2x, "sflnet.nn.fixed"),
                                               ("logbank", nn.LoGBank, "sflnet.nn.fixed")])
def test_explain_is_the_backward_docstring(name, cls, module):
    text = gradcheck.explain(name)
    assert text.startswith(f"{name}: {module}.{cls.__name__}.backward")
    assert inspect.getdoc(cls.backward) in text


def test_explain_im2col_and_class_docstring_follow_up():
    assert inspect.getdoc(col2im) in gradcheck.explain("im2col")
    from sflnet.losses import SSIMLoss  # noqa: PLC0415
    text = gradcheck.explain("SSIM-loss")          # case and "-" as for --layer
    assert inspect.getdoc(SSIMLoss.backward) in text and inspect.getdoc(SSIMLoss) in text


def test_cli_prints_derivation_then_the_layers_rows():
    result = run_cli(["gradcheck", "--explain", "tanh", "--device", "cpu"])
    assert result.code == 0, result
    out = result.stdout
    derivation = inspect.getdoc(nn.Tanh.backward)
    assert derivation in out
    assert out.index(derivation) < out.index("forward vs np.tanh")
    assert "relu" not in [line.split()[1] for line in out.splitlines() if line.startswith("cpu ")]


def test_cli_json_stays_pure_json():
    result = run_cli(["gradcheck", "--explain", "relu", "--device", "cpu", "--json"])
    assert result.code == 0, result
    rows = json.loads(result.stdout)["rows"]
    assert rows and {row["layer"] for row in rows} == {"relu"}


def test_unknown_layer_is_a_one_line_error_listing_the_known_ones():
    result = run_cli(["gradcheck", "--explain", "bogus"])
    assert_clean_error(result, "--explain 'bogus'", "tanh", "conv2d_s1", "sfl_loss")


def test_explain_and_a_different_layer_contradict():
    assert_clean_error(run_cli(["gradcheck", "--explain", "tanh", "--layer", "relu"]), "--explain tanh")


def test_help_mentions_explain():
    result = run_cli(["gradcheck", "--help"])
    assert result.code == 0 and "--explain" in result.output
