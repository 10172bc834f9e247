"""``sflnet calibrate`` and :mod:`sflnet.training.calibrate`: each term's value, ‖∂E_t/∂θ‖, ‖∂E_t/∂f^L‖,
and the balancing weights. Tiny generated images, float64, CPU; never the Willow data.

The norms are checked against central differences along the gradient's own direction: the directional
derivative along ĝ equals ‖g‖ only if g is the true gradient (a wrong direction gives less, a wrong
scale another number), so the check does not trust the code it checks.
"""

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from sflnet.losses import LOSSES, LossSettings, loss_names, make_loss, make_objective, parse_expression
from sflnet.losses.fft import focal_weights
from sflnet.models.cae import Autoencoder, init_params
from sflnet.training.calibrate import balanced_weights, calibrate, suggestions
from sflnet.training.history import read_history
from sflnet_cli.main import main

EXPRESSION = "pl+sfl+fft+stft(window=8,stride=4)"


def run_cli(args, cwd=None):
    """``sflnet ARGS`` in-process through the real ``main``: (exit code, stdout, stderr)."""
    runner = CliRunner()
    code = 0
    old = os.getcwd()
    with runner.isolation() as (out, err, _):
        if cwd is not None:
            os.chdir(cwd)
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            os.chdir(old)
        return code, out.getvalue().decode(), err.getvalue().decode()


def assert_one_line_error(code, stdout, stderr, *fragments):
    assert code != 0
    assert "Traceback" not in stdout + stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory):
    """Two smooth-ish 16×16 and 16×20 RGB PNGs."""
    folder = tmp_path_factory.mktemp("calib_images")
    rng = np.random.default_rng(3)
    for index, (h, w) in enumerate(((16, 16), (16, 20))):
        pixels = rng.integers(0, 256, size=(h, w, 3)).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{index}.png")
    return folder


@pytest.fixture(scope="module")
def checkpoint(images_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("calib_run") / "run"
    code, _, stderr = run_cli(["train", "--data", images_dir, "--size", "0", "--epochs", "2", "--device", "cpu",
                               "--dtype", "float64", "--loss", "pl+sfl", "--out", out])
    assert code == 0, stderr
    return out / "checkpoint.npz"


def calibrate_json(*args):
    code, stdout, stderr = run_cli(["calibrate", *args, "--device", "cpu", "--json"])
    assert code == 0, stderr
    return json.loads(stdout)


# -- the command ----------------------------------------------------------------------------------

def test_each_value_is_what_evaluate_reports_for_the_term_alone(checkpoint):
    report = calibrate_json(checkpoint, "--loss", EXPRESSION)
    assert list(report["terms"]) == ["pl", "sfl", "fft", "stft"]
    for name, alone in (("pl", "1*pl"), ("sfl", "1*sfl"), ("fft", "1*fft"), ("stft", "1*stft(window=8)")):
        code, stdout, stderr = run_cli(["evaluate", checkpoint, "--loss", alone, "--device", "cpu", "--json"])
        assert code == 0, stderr
        assert report["terms"][name]["value"] == json.loads(stdout)["terms"][name]


def test_json_shape_and_the_pasteable_expressions(checkpoint):
    report = calibrate_json(checkpoint, "--loss", "pl+2*fft")
    assert set(report) >= {"terms", "suggested"}
    assert set(report["terms"]["fft"]) == {"value", "grad_norm", "output_grad_norm"}
    for rule in ("value", "gradient"):
        entry = report["suggested"][rule]
        assert set(entry) >= {"reference", "weights", "expression"}
        assert entry["reference"] == "pl" and entry["weights"]["pl"] == 1.0
        terms = parse_expression(entry["expression"], loss_names())
        assert [t.name for t in terms] == ["pl", "fft"]
        assert terms[1].weight == entry["weights"]["fft"]
    value = report["terms"]
    assert report["suggested"]["value"]["weights"]["fft"] == pytest.approx(
        value["pl"]["value"] / value["fft"]["value"], rel=1e-5)
    code, stdout, _ = run_cli(["calibrate", checkpoint, "--loss", "pl+2*fft", "--device", "cpu"])
    assert code == 0
    assert report["suggested"]["value"]["expression"] in stdout
    assert report["suggested"]["gradient"]["expression"] in stdout


def test_without_a_checkpoint_it_measures_the_initial_weights_train_starts_from(images_dir, tmp_path):
    report = calibrate_json("--data", images_dir, "--size", "0", "--dtype", "float64", "--seed", "5",
                            "--loss", "pl+fft")
    code, _, stderr = run_cli(["train", "--data", images_dir, "--size", "0", "--epochs", "1", "--device", "cpu",
                               "--dtype", "float64", "--seed", "5", "--loss", "pl+fft", "--out", tmp_path / "r"])
    assert code == 0, stderr
    first = read_history(tmp_path / "r" / "history.csv")[0]   # measured before the first update
    assert report["terms"]["pl"]["value"] == pytest.approx(first["E_PL"], rel=1e-12)
    assert report["terms"]["fft"]["value"] == pytest.approx(first["E_FFT"], rel=1e-12)
    other_seed = calibrate_json("--data", images_dir, "--size", "0", "--dtype", "float64", "--loss", "pl+fft")
    assert other_seed["terms"]["fft"]["value"] != report["terms"]["fft"]["value"]


def _weighted_terms(expression, images, params, settings):
    """{name: w_t·E_t} of an expression, measured with a fresh model (not calibrate's code)."""
    model = Autoencoder(params, loss=expression, loss_settings=settings)
    terms = model.loss_and_grads(images, compute_grads=False).terms
    return {t.name: t.weight * terms[t.name] for t in model.objective.terms}


def test_the_suggested_weights_balance_the_terms(tiny):
    images, params, settings, build = tiny
    result = calibrate(build, EXPRESSION, images)
    for reference in (None, "fft"):
        chosen = suggestions(result, reference)
        weighted = _weighted_terms(chosen["value"]["expression"], images, params, settings)
        ref = reference or "pl"
        for name, value in weighted.items():
            assert value == pytest.approx(weighted[ref], rel=6e-6), name   # weights have 6 significant digits
        # the gradient rule: re-measure the balanced expression's terms, times their weights
        again = calibrate(build, chosen["gradient"]["expression"], images)
        norms = {t.name: t.term.weight * t.grad_norm for t in again.terms}
        for name, norm in norms.items():
            assert norm == pytest.approx(norms[ref], rel=6e-6), name   # weights have 6 significant digits
    assert balanced_weights(result, "value", "fft")["weights"]["fft"] == 1.0


# -- the norms, against central differences --------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    """float64 images (two sizes), initial parameters, settings and a builder."""
    rng = np.random.default_rng(0)
    images = [np.tanh(rng.normal(size=(3, 16, 16))), np.tanh(rng.normal(size=(3, 16, 20))),
              np.tanh(rng.normal(size=(3, 16, 16)))]
    params = init_params(1, std=0.1, dtype=np.float64)
    settings = LossSettings()

    def build(expression, params=params):
        return Autoencoder(params, loss=expression, loss_settings=settings)
    return images, params, settings, build


def _pairs(recons, images):
    """(reconstructions, targets) stacked per image size, in first-seen order (as the model groups them)."""
    groups = {}
    for recon, image in zip(recons, images):
        groups.setdefault(image.shape, []).append((recon, image))
    return [(np.stack([r for r, _ in g]), np.stack([x for _, x in g])) for g in groups.values()]


def _fft_frozen(build, params, images, weights):
    """The fft value with its focal weights held at ``weights``: the function fft's backward differentiates
    (Jiang et al. detach the weight matrix, so the plain value's derivative is not the loss's gradient)."""
    loss = make_loss("fft")
    pairs = _pairs(build("pl", params).reconstruct(images), images)
    return sum(float(loss.forward(r, t, len(images), weights=w)[0]) for (r, t), w in zip(pairs, weights))


@pytest.mark.parametrize("name", ["pl", "sfl", "fft", "stft"])
def test_grad_norm_is_the_directional_derivative_along_the_gradient(tiny, name):
    images, params, settings, build = tiny
    result = calibrate(build, EXPRESSION, images)
    entry = result.term(name)
    grads = build(entry.expression).loss_and_grads(images).grads
    norm = np.sqrt(sum((g ** 2).sum() for g in grads.values()))
    assert entry.grad_norm == pytest.approx(norm, rel=1e-12)
    step = 1e-6 / norm * max(1.0, np.sqrt(sum((p ** 2).sum() for p in params.values())))
    frozen = [focal_weights(r, t) for r, t in _pairs(build("pl").reconstruct(images), images)]

    def value_at(sign):
        moved = {k: p + sign * step * grads[k] / norm for k, p in params.items()}
        if name == "fft":
            return _fft_frozen(build, moved, images, frozen)
        return build(entry.expression, moved).loss_and_grads(images, compute_grads=False).terms[name]
    derivative = (value_at(1) - value_at(-1)) / (2 * step)
    assert derivative == pytest.approx(entry.grad_norm, rel=1e-5)


@pytest.mark.parametrize("name", ["pl", "fft", "stft"])
def test_output_grad_norm_is_the_losses_own_backward_and_a_directional_derivative(tiny, name):
    images, params, settings, build = tiny
    entry = calibrate(build, EXPRESSION, images).term(name)
    loss = make_objective(EXPRESSION, settings).losses[name]   # the loss with the expression's options
    pairs = _pairs(build("pl").reconstruct(images), images)
    grads = []
    loss.begin_batch()
    for recon, target in pairs:
        loss.forward(recon, target, len(images))
        grads.append(loss.backward())
    norm = np.sqrt(sum((g ** 2).sum() for g in grads))
    assert entry.output_grad_norm == pytest.approx(norm, rel=1e-10)
    step = 1e-7

    def value_at(sign):
        fresh = make_loss(name, settings, {"window": 8, "stride": 4} if name == "stft" else None)
        fresh.begin_batch()
        total = 0.0
        for (r, t), g in zip(pairs, grads):
            extra = {"weights": focal_weights(r, t)} if name == "fft" else {}
            total += float(fresh.forward(r + sign * step * g / norm, t, len(images), **extra)[0])
        return total
    assert (value_at(1) - value_at(-1)) / (2 * step) == pytest.approx(norm, rel=1e-5)


# -- a plug-in loss, and the refusals ----------------------------------------------------------------

PLUGIN = '''
import numpy as np
from sflnet.losses import Loss

class Scaled(Loss):
    """scale · mean absolute error (test plug-in)."""

    def __init__(self, scale=2.0):
        self.scale = scale

    def forward(self, recon, target, batch_count):
        self.sign = np.sign(recon - target) * self.scale
        self.batch_count = batch_count
        return (abs(recon - target) * self.scale).mean(axis=(1, 2, 3)).sum() / batch_count, {}

    def backward(self):
        return self.sign / (self.batch_count * self.sign[0].size)

class Flat(Loss):
    """A constant: value 1, gradient 0 (test plug-in)."""

    def forward(self, recon, target, batch_count):
        self.recon = recon
        return np.asarray(recon.shape[0] / batch_count, dtype=recon.dtype), {}

    def backward(self):
        return np.zeros_like(self.recon)
'''


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """The plug-ins ``scaled`` and ``flat`` installed as a hand-written distribution on sys.path."""
    (tmp_path / "calib_plug.py").write_text(PLUGIN)
    info = tmp_path / "calib_plug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: calib-plug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[sflnet.losses]\nscaled = calib_plug:Scaled\nflat = calib_plug:Flat\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    LOSSES.forget_plugins()
    yield
    LOSSES.forget_plugins()


def test_a_plugin_loss_is_calibrated_with_its_inline_options(plugins, checkpoint):
    report = calibrate_json(checkpoint, "--loss", "pl+scaled(scale=3)+l1")
    terms = report["terms"]
    assert list(terms) == ["pl", "scaled", "l1"]
    for key in ("value", "grad_norm", "output_grad_norm"):     # scaled(scale=3) = 3 · l1, exactly linear
        assert terms["scaled"][key] == pytest.approx(3 * terms["l1"][key], rel=1e-12)
    assert "scaled(scale=3)" in report["suggested"]["value"]["expression"]
    assert report["suggested"]["value"]["weights"]["scaled"] == pytest.approx(
        terms["pl"]["value"] / terms["scaled"]["value"], rel=1e-5)


def test_a_term_with_zero_gradient_is_a_one_line_error(plugins, checkpoint):
    code, stdout, stderr = run_cli(["calibrate", checkpoint, "--loss", "pl+flat", "--device", "cpu"])
    assert_one_line_error(code, stdout, stderr, "flat", "zero")


@pytest.mark.parametrize("args, fragments", [
    (["--loss", "pl+nosuch"], ("unknown loss", "nosuch")),
    (["--loss", "pl+fft", "--reference", "ssim"], ("--reference", "ssim")),
    (["--loss", "pl+fft", "--seed", "3"], ("--seed",)),
])
def test_bad_input_is_a_one_line_error(checkpoint, args, fragments):
    assert_one_line_error(*run_cli(["calibrate", checkpoint, *args, "--device", "cpu"]), *fragments)


def test_a_missing_checkpoint_is_a_one_line_error(tmp_path):
    code, stdout, stderr = run_cli(["calibrate", tmp_path / "none.npz", "--loss", "pl", "--device", "cpu"])
    assert_one_line_error(code, stdout, stderr, "none.npz")
