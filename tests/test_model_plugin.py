"""A third model added from outside sflnet: one module and one entry point, no edit of sflnet.

The module below (written to a temporary folder, with a ``.dist-info`` declaring it in the
entry-point group ``sflnet.models``) is a one-layer linear convolutional autoencoder
(3→3 channels, 3×3) with one hyperparameter of its own, ``--tiny-lr``. It is trained with
``sflnet train --model tiny``, evaluated and resumed through the CLI in a subprocess (the
entry points are read when a process first reads the model registry).
"""

import json
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from sflnet import SflnetError
from sflnet.models import BUILTIN, ENTRY_POINT_GROUP, load_plugin

TINY_MODULE = '''
"""A one-layer linear convolutional autoencoder: f^L = w * f^1 + b, w (3, 3, 3, 3), b (3,)."""

import numpy as np

from sflnet.backend import to_device
from sflnet.losses import make_objective
from sflnet.models import ModelSpec, cae
from sflnet.models.base import Hyperparameter, Model, number_above
from sflnet.nn import Conv2D
from sflnet.optim import MomentumSGD

PARAM_SHAPES = {"w": (3, 3, 3, 3), "b": (3,)}


class TinyAutoencoder(Model):
    """x: (n, 3, H, W) -> one 'same' 3x3 convolution -> (n, 3, H, W)."""

    PARAM_SHAPES = PARAM_SHAPES

    def __init__(self, params, loss, loss_settings):
        self.dtype, self.xp = self.check_params(params)
        self.loss_settings = loss_settings
        self.objective = make_objective(loss, loss_settings)
        self.loss = self.objective.expression
        self.conv = Conv2D(params["w"], params["b"])

    @property
    def params(self):
        return dict(self.conv.params)

    @property
    def sigmas(self):
        return self.objective.losses["sfl"].sigmas

    # the Model base class runs the chunked loss-and-gradients loop through these four hooks
    def chunks(self, batch, batch_count, positions):
        groups = cae.as_groups(batch)
        return (sum(g.shape[0] for g in groups) if batch_count is None else batch_count), groups

    def measure(self, chunk, batch_count):
        return self.objective.forward(self.conv.forward(chunk), chunk, batch_count)

    def backward_measured(self):
        self.conv.backward(self.objective.backward(), need_dx=False)

    def layer_grads(self):
        return dict(self.conv.grads)

    def reconstruct(self, images):
        return [self.conv.forward(image[None])[0] for image in images]


def init(options, xp):
    rng = np.random.default_rng(options.seed)
    return {"w": to_device(rng.normal(0.0, 0.1, size=(3, 3, 3, 3)).astype(options.dtype), xp),
            "b": to_device(np.zeros(3, dtype=options.dtype), xp)}


SPEC = ModelSpec(
    name="tiny", architecture="tiny-linear-conv", param_shapes=PARAM_SHAPES, optimizer="momentum-sgd",
    value_range=(-1.0, 1.0), channels=3, defaults={"size": 24, "epochs": 2}, exclusive=("size",),
    hyperparameters=(Hyperparameter("tiny_lr", "float", 0.01, "the tiny model's learning rate (> 0).",
                                    check=number_above(0)),),
    init=init, build=lambda params, loss, settings, options: TinyAutoencoder(params, loss, settings),
    load_data=cae.load_for_run, make_optimizer=lambda options: (MomentumSGD(options.tiny_lr, 0.0), None),
    rate_label=lambda options: f"lr {options.tiny_lr:g}",
    smaller_rate=lambda options: f"--tiny-lr {options.tiny_lr / 10:g}",
    reconstruct_inputs=cae.reconstruct_inputs, evaluation_data=cae.evaluation_data)
'''

ENTRY_POINTS = """[sflnet.models]
{name} = sflnet_tiny_model:SPEC
"""


def install_tiny(folder, name="tiny"):
    """sflnet_tiny_model.py and its .dist-info (entry point ``name``) in ``folder``; returns the environment
    of a subprocess that sees them on its sys.path."""
    (folder / "sflnet_tiny_model.py").write_text(textwrap.dedent(TINY_MODULE))
    info = folder / "sflnet_tiny_model-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sflnet-tiny-model\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS.format(name=name))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(folder), *filter(None, [env.get("PYTHONPATH")])])
    return env


def sflnet(env, *args):
    return subprocess.run([sys.executable, "-c", "from sflnet_cli.main import main; main()", *args],
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory):
    return install_tiny(tmp_path_factory.mktemp("plugin"))


def test_tiny_model_trains_evaluates_and_resumes(tiny_env, tmp_path):
    run = str(tmp_path / "run")
    help_text = sflnet(tiny_env, "train", "--help").stdout
    assert "--tiny-lr FLOAT" in help_text and "tiny: the tiny model's learning rate" in help_text
    assert "[default: unused (cae), unused (vae), 0.01 (tiny)]" in " ".join(help_text.split())

    first = sflnet(tiny_env, "train", "--model", "tiny", "--tiny-lr", "0.05", "--dtype", "float64",
                   "--device", "cpu", "--out", run)
    assert first.returncode == 0, first.stderr
    options = json.loads((tmp_path / "run" / "config.json").read_text())["options"]
    assert options["model"] == "tiny" and options["tiny_lr"] == 0.05 and options["epochs"] == 2
    assert options["lr"] is None and options["beta"] is None   # the other models' options stay unset
    rows = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert len(rows) == 3   # header + 2 epochs

    evaluated = sflnet(tiny_env, "evaluate", os.path.join(run, "checkpoint.npz"), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert report["E"] == pytest.approx(report["E_PL"] + report["E_SFL"]) and report["E"] > 0

    resumed = sflnet(tiny_env, "train", "--resume", "--out", run, "--epochs", "3")
    assert resumed.returncode == 0, resumed.stderr
    assert len((tmp_path / "run" / "history.csv").read_text().splitlines()) == 4

    changed = sflnet(tiny_env, "train", "--resume", "--out", run, "--epochs", "4", "--tiny-lr", "0.1")
    assert changed.returncode == 1 and "--tiny-lr 0.1 differs from the run's" in changed.stderr


@pytest.mark.parametrize("args, message", [
    (["--model", "tiny", "--lr", "0.1"], "--lr is only used by --model cae; leave it out"),
    (["--model", "cae", "--tiny-lr", "0.1"], "--tiny-lr is only used by --model tiny; leave it out"),
    (["--model", "tiny", "--tiny-lr", "0"], "--tiny-lr must be a finite number > 0, got 0.0"),
])
def test_tiny_model_options_are_checked(tiny_env, tmp_path, args, message):
    result = sflnet(tiny_env, "train", *args, "--device", "cpu", "--out", str(tmp_path / "bad"))
    assert result.returncode == 1 and message in result.stderr, result.stderr


def test_a_plugin_named_like_a_builtin_model_is_refused(tmp_path):
    env = install_tiny(tmp_path, name="cae")
    result = sflnet(env, "train", "--model", "cae", "--epochs", "1", "--out", str(tmp_path / "run"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: plug-in model refused: entry point 'cae' = 'sflnet_tiny_model:SPEC' (group sflnet.models) "
        "clashes with sflnet's own model 'cae'; rename the entry point"]


def test_load_plugin_refusals():
    """Each refusal is one line naming the entry point (checked without installing anything)."""
    def entry(name, loaded):
        return SimpleNamespace(name=name, value=f"pkg:{name}", load=lambda: loaded)
    assert ENTRY_POINT_GROUP == "sflnet.models" and "vae" in BUILTIN
    with pytest.raises(SflnetError, match=r"clashes with sflnet's own model 'vae'"):
        load_plugin(entry("vae", None))
    with pytest.raises(SflnetError, match=r"loads 42, which is not a sflnet.models.ModelSpec"):
        load_plugin(entry("other", 42))
    with pytest.raises(SflnetError, match=r"loads the spec of model 'cae'; the names must agree"):
        load_plugin(entry("other", BUILTIN["cae"]))
