"""Plug-in losses (entry-point group ``sflnet.losses``): the example package end to end, and the refusals.

The example package ``examples/plugin_loss`` is pip-installed into a temporary folder
(``pip install --target``), never into the environment; the ``sflnet`` commands then run
as subprocesses with that folder on PYTHONPATH, where importlib.metadata finds its
entry point. The refusals use small hand-written ``*.dist-info`` folders put on sys.path.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sflnet import losses
from sflnet.errors import SflnetError
from sflnet.losses import LOSSES, options_of, resolve
from sflnet_cli.evaluate_cmd import evaluate
from sflnet_cli.train_cmd import train

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plugin_loss"
EXPRESSION = "pl+0.1*charbonnier(eps=0.01)"


def _can_build_without_isolation():
    """setuptools builds a wheel offline when the ``wheel`` package is there or setuptools ≥ 70.1 has its own."""
    if importlib.util.find_spec("wheel") is not None:
        return True
    import setuptools  # noqa: PLC0415
    return tuple(int(p) for p in setuptools.__version__.split(".")[:2]) >= (70, 1)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The example package installed into a temporary folder: that folder (for PYTHONPATH)."""
    target = tmp_path_factory.mktemp("plugin_site")
    source = tmp_path_factory.mktemp("plugin_source") / "plugin_loss"   # setuptools builds in the tree it is given
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check",
               "--target", str(target), str(source)]
    if _can_build_without_isolation():
        command.insert(4, "--no-build-isolation")
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        pytest.skip(f"pip could not build the example package here: {last}")
    assert list(target.glob("sflnet_example_loss-*.dist-info/entry_points.txt"))
    return target


def _sflnet(args, site, cwd):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    code = "import sys; from sflnet_cli.main import main; main(sys.argv[1:])"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)


def test_the_example_plugin_trains_evaluates_and_is_listed(installed, tmp_path):
    run = tmp_path / "run"
    done = _sflnet(["train", "--loss", EXPRESSION, "--epochs", "2", "--size", "16", "--dtype", "float64",
                    "--device", "cpu", "--snapshot-every", "0", "--out", str(run)], installed, tmp_path)
    assert done.returncode == 0, done.stderr
    header, *rows = (run / "history.csv").read_text().splitlines()
    assert header.split(",")[-2] == "E_CHARBONNIER" and len(rows) == 2
    options = json.loads((run / "config.json").read_text())["options"]
    assert options["loss"] == options["objective"] == EXPRESSION

    grads = tmp_path / "grads.npz"
    done = _sflnet(["evaluate", str(run / "checkpoint.npz"), "--loss", EXPRESSION, "--grads", str(grads),
                    "--json", "--device", "cpu"], installed, tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["loss"] == EXPRESSION and report["terms"]["charbonnier"] > 0
    with np.load(grads) as saved:
        assert np.all(np.isfinite(saved["w2"])) and np.any(saved["w2"] != 0)



def test_the_installed_plugin_is_in_the_help_and_its_own_checks_give_one_line(installed, monkeypatch):
    monkeypatch.syspath_prepend(str(installed))
    LOSSES.forget_plugins()
    try:
        assert losses.loss_names()[-1] == "charbonnier"
        for command in (train, evaluate):
            shown = CliRunner().invoke(command, ["--help"])
            assert shown.exit_code == 0 and "charbonnier" in shown.output and "eps=0.001" in shown.output
        with pytest.raises(SflnetError) as info:
            losses.make_objective("pl+charbonnier(eps=0)")
        assert str(info.value) == "the plug-in loss charbonnier(eps=0) cannot be built: eps must be > 0, got 0.0"
    finally:
        LOSSES.forget_plugins()


def test_gradcheck_checks_the_example_plugin(installed, tmp_path):
    done = _sflnet(["gradcheck", "--layer", "charbonnier", "--device", "cpu"], installed, tmp_path)
    assert done.returncode == 0 and "charbonnier" in done.stdout


def _example_class():
    spec = importlib.util.spec_from_file_location("sflnet_example_loss_copy",
                                                  EXAMPLE / "sflnet_example_loss" / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CharbonnierLoss


def test_the_example_backward_matches_central_differences(fd):
    loss = _example_class()(eps=0.05)
    rng = np.random.default_rng(3)
    recon, target = rng.uniform(-1, 1, (2, 3, 4, 5)), rng.uniform(-1, 1, (2, 3, 4, 5))
    value, parts = loss.forward(recon, target, 3)
    analytic = loss.backward()
    assert parts == {} and analytic.shape == recon.shape
    assert abs(float(value) - np.sqrt((recon - target) ** 2 + 0.05 ** 2).mean(axis=(1, 2, 3)).sum() / 3) < 1e-15
    numeric = fd.numeric_gradient(lambda x: float(loss.forward(x, target, 3)[0]), recon, 1e-6)
    assert fd.rel_error(analytic, numeric) < 1e-7


# ---------------------------------------------------------------------------
# Refusals and inferred options, with hand-written dist-info folders on sys.path
# ---------------------------------------------------------------------------

@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path where a test writes plug-in distributions; the registry looks again before and after."""
    monkeypatch.syspath_prepend(str(tmp_path))
    LOSSES.forget_plugins()
    yield tmp_path
    LOSSES.forget_plugins()


def _distribution(folder, module, source, entries):
    """A minimal installed distribution: ``module.py`` and a dist-info with ``entries`` {name: "module:attr"}."""
    (folder / f"{module}.py").write_text(source)
    info = folder / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entries.items())
    (info / "entry_points.txt").write_text(f"[sflnet.losses]\n{lines}")


SCALED_L1 = '''
from sflnet.losses import Loss

class Scaled(Loss):
    """A scaled mean absolute error (test plug-in)."""

    def __init__(self, scale=2.0, taps=(1, 2), mode="a", flag=False, count=3):
        self.scale = scale

    def forward(self, recon, target, batch_count):
        self.sign = ((recon > target) * 2.0 - 1.0) * self.scale
        self.batch_count = batch_count
        return (abs(recon - target) * self.scale).mean(axis=(1, 2, 3)).sum() / batch_count, {}

    def backward(self):
        return self.sign / (self.batch_count * self.sign[0].size)

class NotALoss:
    pass
'''


def _refusal():
    with pytest.raises(SflnetError) as info:
        losses.loss_names()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_plugin_without_declarations_has_its_init_arguments_as_options(site):
    _distribution(site, "plug_scaled", SCALED_L1, {"scaled": "plug_scaled:Scaled"})
    assert losses.loss_names()[-1] == "scaled" and "scaled" in LOSSES.plugins()
    specs = {o.name: (o.kind, o.default) for o in options_of("scaled")}
    assert specs == {"scale": ("float", 2.0), "taps": ("floats", (1.0, 2.0)), "mode": ("str", "a"),
                     "flag": ("bool", False), "count": ("int", 3)}
    resolved = resolve("pl+0.5*scaled(scale=3,flag=true)")
    assert resolved.objective == "pl+0.5*scaled(scale=3,flag=true)"
    objective = losses.make_objective("pl+0.5*scaled(scale=3)")
    assert objective.losses["scaled"].scale == 3.0 and objective.extra_terms == ("scaled",)
    with pytest.raises(SflnetError, match=r"the scaled loss has no option 'gain'"):
        resolve("pl+scaled(gain=1)")
    with pytest.raises(SflnetError, match=r"scaled option count=2.5: expected a whole number"):
        resolve("pl+scaled(count=2.5)")
    with pytest.raises(SflnetError, match=r"scaled option flag=maybe: expected true or false"):
        resolve("pl+scaled(flag=maybe)")


def test_a_plugin_named_like_a_builtin_is_refused(site):
    _distribution(site, "plug_clash", SCALED_L1, {"sfl": "plug_clash:Scaled"})
    message = _refusal()
    assert "entry point 'sfl'" in message and "clashes with sflnet's own loss 'sfl'" in message
    with pytest.raises(SflnetError, match="clashes"):
        losses.canonical("pl+sfl")    # refused on every read, not half-used
    assert dict(losses.help_rows())["(error)"] == message   # --help still shows the built-ins and the refusal


@pytest.mark.parametrize("value, says", [
    ("plug_missing_module:Loss", "cannot be loaded (ModuleNotFoundError"),
    ("plug_broken:NotALoss", "which is not a subclass of sflnet.losses.Loss"),
    ("plug_broken:Nothing", "cannot be loaded (AttributeError"),
])
def test_a_broken_entry_point_gets_one_line_naming_it(site, value, says):
    _distribution(site, "plug_broken", SCALED_L1, {"broken": value})
    message = _refusal()
    assert f"entry point 'broken' = '{value}'" in message and says in message


@pytest.mark.parametrize("name, says", [("kl", "clashes with sflnet's own loss 'kl'"),
                                        ("Big", "a loss name must be lower-case")])
def test_a_plugin_name_must_be_a_lower_case_identifier_and_kl_is_taken(site, name, says):
    _distribution(site, "plug_names", SCALED_L1, {name: "plug_names:Scaled"})
    assert says in _refusal()


SQUARED = '''
from sflnet.losses import Loss

class Squared(Loss):
    """½ mean squared error per image (test plug-in); ``factor`` scales its backward (1 = right)."""

    def __init__(self, factor=1.0):
        self.factor = factor

    def forward(self, recon, target, batch_count):
        self.difference = recon - target
        self.batch_count = batch_count
        return 0.5 * (self.difference ** 2).mean(axis=(1, 2, 3)).sum() / batch_count, {}

    def backward(self):
        return self.factor * self.difference / (self.batch_count * self.difference[0].size)
'''


@pytest.mark.parametrize("factor, passes", [(1.0, True), (1.5, False)])
def test_gradcheck_checks_a_plugin_and_a_wrong_backward_turns_it_red(site, factor, passes):
    from sflnet import gradcheck  # noqa: PLC0415

    source = SQUARED.replace("factor=1.0", f"factor={factor}")
    module = f"plug_squared_{int(factor * 10)}"   # a new module per case: Python caches imported modules
    _distribution(site, module, source, {"squared": f"{module}:Squared"})
    report = gradcheck.run_suite(device="cpu", layer=["squared"])
    rows = [row for row in report.rows if "squared" in row.layer]
    checks = {row.check for row in rows}
    assert "dense" in checks and "directional" in checks and len({row.layer for row in rows}) == 2, checks
    assert all(row.passed for row in rows) is passes
    if not passes:   # a 1.5× backward is a relative error of 1/5 (|1.5g − g| / (|1.5g| + |g|)), far above 1e-7
        assert max(row.error for row in rows if row.check == "dense") > 0.1
