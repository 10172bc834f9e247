"""``sflnet bench --model vae`` and its PyTorch reference (sflnet.bench.torch_vae).

The reference is what sflnet's VAE step is compared against, so it must compute the same thing: its
objective and gradients in float64 equal sflnet's hand-written ones (two independent
implementations: autograd through torch's convolutions, FFTs and SSIM against sflnet's
backward passes). The command is run as users run it, the installed console script.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from sflnet.bench.vae import VAE_BENCH_LOSSES, breakdown, make_vae, run_vae_benchmark, _Batches
from sflnet.io.digits import load_digits_with_labels
from sflnet.models.vae import init_params


def _digits(count, dtype=np.float64):
    dataset, _ = load_digits_with_labels(split="train", binarize=True, dtype=dtype)
    return [dataset.images[i] for i in range(count)]


class _FixedNoise:
    """A stand-in for the VAE's generator that hands out given ε."""

    def __init__(self, eps):
        self.eps = eps

    def standard_normal(self, shape):
        assert shape == self.eps.shape
        return self.eps


@pytest.mark.parametrize("loss", VAE_BENCH_LOSSES)
@pytest.mark.parametrize("output, padding", [("linear", "tf-same"), ("sigmoid", "symmetric")])
def test_torch_reference_equals_sflnet_in_float64(loss, output, padding):
    torch = pytest.importorskip("torch")
    from sflnet.bench.torch_vae import TorchVAE  # noqa: PLC0415

    x = np.stack(_digits(6))
    eps = np.random.default_rng(1).standard_normal((6, 2))
    params = init_params(5, np.float64)
    model, _ = make_vae(params, loss, output, padding)
    model.noise = _FixedNoise(eps)
    ours = model.loss_and_grads(list(x))
    energy, grads = TorchVAE(params, loss=loss, output=output, tconv_padding=padding).loss_and_grads(
        torch.tensor(x), torch.tensor(eps))
    assert abs(energy - ours.E) <= 1e-12 * abs(ours.E)
    for name, g in grads.items():
        scale = np.abs(g).max()
        assert scale > 0, name
        # the STFT's phase term has gradients ~1/|F| at weak bins: float64 round-off grows there
        assert np.abs(ours.grads[name] - g).max() <= 1e-8 * scale, name


def test_torch_reference_refuses_other_objectives():
    pytest.importorskip("torch")
    from sflnet.bench.torch_vae import TorchVAE  # noqa: PLC0415

    with pytest.raises(ValueError, match="implements"):
        TorchVAE(init_params(0), loss="l1")


def test_breakdown_times_every_layer_and_adds_up():
    model, optimizer = make_vae(init_params(0, np.float32), "2*pl", "linear", "tf-same")
    result = breakdown(model, optimizer, _Batches(_digits(40, np.float32), 8, np), 3, np)
    expected = {"conv1", "conv2", "enc", "dec", "deconv1", "deconv2", "deconv3", "activations and reshapes",
                "sampling", "objective", "kl", "update", "other", "step"}
    assert set(result) == expected
    assert all(value >= 0 for value in result.values())
    parts = sum(value for key, value in result.items() if key != "step")
    assert parts == pytest.approx(result["step"], rel=1e-9) or result["other"] == 0.0


def test_run_vae_benchmark_structure_and_errors():
    images = _digits(30, np.float32)
    result = run_vae_benchmark(images, np, batch_size=5, loss="2*pl", steps=2, repeat=3, warmup=1)
    assert len(result["step_seconds"]) == 3 and all(t > 0 for t in result["step_seconds"])
    assert result["median_step"] == sorted(result["step_seconds"])[1]
    assert "ratio" not in result and result["batch_size"] == 5
    from sflnet.errors import SflnetError  # noqa: PLC0415
    with pytest.raises(SflnetError, match="--batch-size"):
        run_vae_benchmark(images, np, batch_size=31)
    with pytest.raises(SflnetError, match="--loss"):
        run_vae_benchmark(images, np, loss="pl+sfl")


def _sflnet():
    found = shutil.which("sflnet") or os.path.join(os.path.dirname(sys.executable), "sflnet")
    return [found]


def _run(args, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    return subprocess.run(_sflnet() + args, capture_output=True, text=True, env=env, timeout=timeout, check=False)


def test_cli_bench_vae_compare_torch_json():
    pytest.importorskip("torch")
    done = _run(["bench", "--model", "vae", "--device", "cpu", "--batch-size", "5", "--steps", "2", "--repeat", "2",
                 "--warmup", "1", "--loss", "2*pl", "--compare-torch", "--json"])
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["model"] == "vae" and result["loss"] == "2*pl" and result["batch_size"] == 5
    assert result["ratio"] == pytest.approx(result["median_step"] / result["torch_median_step"])
    assert result["torch"]["version"]


@pytest.mark.parametrize("args, word", [(["--loss", "pl+sfl"], "--loss"), (["--size", "28"], "--size"),
                                        (["--batch-size", "5000"], "--batch-size")])
def test_cli_bench_vae_user_errors_are_one_line(args, word):
    done = _run(["bench", "--model", "vae", "--device", "cpu", *args])
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and word in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_cli_bench_cae_rejects_a_vae_objective():
    done = _run(["bench", "--loss", "2*pl", "--device", "cpu"])
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--loss" in done.stderr
