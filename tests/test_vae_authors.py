"""The authors' code's protocol for Dalal et al.'s β-VAE: the linear output, the full MSE (``2*pl``),
TensorFlow's 'same' padding as a VAE option, digit files with their own split, the sampled-z
evaluation and ``validation/vae_table.py --protocol authors``'s ``evaluate_args``."""

import importlib.util
import json
import pathlib

import numpy as np
import pytest

from sflnet import SflnetError
from sflnet.io.checkpoint import load_checkpoint
from sflnet.io.digits import load_digits_with_labels
from sflnet.losses import LossSettings, make_objective
from sflnet.models.vae import VAE, decode_grid, init_params
from sflnet.nn import Sigmoid
from sflnet.training.config import TrainOptions
from sflnet.training.runlock import RunFolderInUse
from tests.test_cli import assert_clean_error, run_cli

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "validation" / "vae_table.py"


def _vae_table():
    """validation/vae_table.py as a module (a fresh one each time, so a monkeypatch stays in its test)."""
    spec = importlib.util.spec_from_file_location("vae_table", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def _digits(rng, n):
    return rng.integers(0, 2, size=(n, 1, 28, 28)).astype(np.float64)


def test_linear_output_is_the_sigmoid_models_pre_activation():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((3, 2))
    linear = VAE(init_params(2, np.float64), output="linear")
    sigmoid = VAE(init_params(2, np.float64))
    assert not any(isinstance(layer, Sigmoid) for layer in linear.decoder)
    raw = linear.decode(z)
    assert np.allclose(1.0 / (1.0 + np.exp(-raw)), sigmoid.decode(z), rtol=0, atol=1e-15)
    assert raw.min() < 0.0   # the raw output is not squashed into [0, 1]


def test_the_losses_of_a_linear_model_see_the_raw_output_and_two_pl_is_the_mse():
    rng = np.random.default_rng(2)
    x = _digits(rng, 4)
    model = VAE(init_params(3, np.float64), loss="2*pl", beta=0.0, output="linear", tconv_padding="tf-same")
    mu, _ = model.encode(x)
    raw = model.decode(mu)
    result = model.loss_and_grads(list(x), compute_grads=False)
    assert abs(result.E - np.mean((raw - x) ** 2)) <= 1e-14
    mse = make_objective("2*pl", LossSettings(pl_weights=(1.0,), value_range=(0.0, 1.0)))
    y = rng.random((3, 1, 5, 6))
    target = rng.random((3, 1, 5, 6))
    total, _ = mse.forward(y, target, 3)["pl"]
    assert abs(2 * float(total) - np.mean((y - target) ** 2)) <= 1e-15


def test_tf_same_model_differs_from_the_symmetric_one_only_in_the_decoder():
    rng = np.random.default_rng(3)
    x = _digits(rng, 2)
    sym, tf = VAE(init_params(4, np.float64)), VAE(init_params(4, np.float64), tconv_padding="tf-same")
    assert np.array_equal(sym.encode(x)[0], tf.encode(x)[0])
    assert tf.deconv1.padding == tf.deconv2.padding == tf.deconv3.padding == "tf-same"
    assert not np.allclose(sym.decode(sym.encode(x)[0]), tf.decode(tf.encode(x)[0]))


def test_the_options_default_to_todays_network_and_refuse_bad_values():
    options = TrainOptions.for_model("vae").validate()
    assert (options.output, options.tconv_padding) == ("sigmoid", "symmetric")
    with pytest.raises(SflnetError, match="--output must be one of sigmoid, linear, got 'tanh'"):
        TrainOptions.for_model("vae", output="tanh").validate()
    with pytest.raises(SflnetError, match="--tconv-padding"):
        TrainOptions.for_model("vae", tconv_padding="same").validate()
    with pytest.raises(SflnetError, match="only used by --model vae"):
        TrainOptions.for_model("cae", output="linear").validate()


def test_a_config_written_before_the_options_reads_as_sigmoid_and_symmetric():
    config = TrainOptions.for_model("vae").validate().to_config()
    del config["output"], config["tconv_padding"]
    options = TrainOptions.from_config(config)
    assert (options.output, options.tconv_padding) == ("sigmoid", "symmetric")


def test_the_latent_grid_of_a_linear_model_is_clipped_for_the_picture():
    params = init_params(5, np.float64)
    params["deconv3_b"] = params["deconv3_b"] + 3.0   # raw outputs far above 1
    model = VAE(params, output="linear")
    assert model.decode(np.zeros((1, 2))).max() > 1.5
    grid = decode_grid(model, 3)
    assert grid.min() >= 0.0 and grid.max() == 1.0


def _write_own_split_file(path, n_train_per_class, n_test_per_class):
    rng = np.random.default_rng(6)
    arrays = {}
    for part, count in (("train", n_train_per_class), ("test", n_test_per_class)):
        labels = np.tile(np.arange(10, dtype=np.uint8), count)
        arrays[f"x_{part}"] = rng.integers(0, 256, size=(labels.size, 28, 28), dtype=np.uint8)
        arrays[f"y_{part}"] = labels
    np.savez(path, **arrays)
    return arrays


def test_a_digit_file_with_its_own_split(tmp_path):
    path = tmp_path / "mnist_like.npz"
    arrays = _write_own_split_file(path, 3, 2)   # 30 training and 20 test digits (fewer than 500 a class)
    train, train_labels = load_digits_with_labels("train", binarize=False, dtype=np.float64, path=path)
    test, test_labels = load_digits_with_labels("test", binarize=True, dtype=np.float64, path=path)
    assert len(train.images) == 30 and len(test.images) == 20
    assert np.array_equal(train_labels, arrays["y_train"]) and np.array_equal(test_labels, arrays["y_test"])
    assert np.array_equal(train.images[7][0], arrays["x_train"][7] / 255.0)
    assert np.array_equal(test.images[19][0], (arrays["x_test"][19] > 127).astype(np.float64))
    np.savez(tmp_path / "half.npz", x_train=arrays["x_train"], y_train=arrays["y_train"])
    with pytest.raises(SflnetError, match="has no array 'images'.*x_train, y_train, x_test, y_test"):
        load_digits_with_labels("train", path=tmp_path / "half.npz")
    np.savez(tmp_path / "bad.npz", x_train=arrays["x_train"], y_train=arrays["y_train"][:5],
             x_test=arrays["x_test"], y_test=arrays["y_test"])
    with pytest.raises(SflnetError, match="30 x_train but 5 y_train"):
        load_digits_with_labels("train", path=tmp_path / "bad.npz")


def test_train_and_evaluate_the_authors_network_on_a_digit_file(tmp_path):
    data = tmp_path / "digits.npz"
    _write_own_split_file(data, 2, 1)
    out = tmp_path / "run"
    done = run_cli(["train", "--model", "vae", "--data", data, "--output", "linear", "--tconv-padding", "tf-same",
                    "--loss", "2*pl", "--epochs", "1", "--batch-size", "10", "--snapshot-every", "0",
                    "--device", "cpu", "--out", out])
    assert done.code == 0, done.output
    ckpt = load_checkpoint(out / "checkpoint.npz")
    assert (ckpt.config["output"], ckpt.config["tconv_padding"]) == ("linear", "tf-same")
    text = run_cli(["evaluate", out / "checkpoint.npz", "--sample-latent", "--seed", "4", "--device", "cpu"])
    assert text.code == 0, text.output
    assert "10 images" in text.output
    assert "scored      the raw output of the last transposed convolution" in text.output
    assert "z = μ + σε" in text.output
    report = json.loads(run_cli(["evaluate", out / "checkpoint.npz", "--sample-latent", "--seed", "4",
                                 "--device", "cpu", "--json"]).stdout)
    # by hand: z = μ + exp(½ logvar)·ε with ε the seed's one draw of (10, 2), raw output, PSNR at data range 1
    model = VAE({k: ckpt.params[k] for k in ckpt.params}, output="linear", tconv_padding="tf-same")
    x, _ = load_digits_with_labels("test", path=data, dtype=ckpt.dtype)
    x = np.stack(x.images)
    mu, logvar = model.encode(x)
    eps = np.random.default_rng(4).standard_normal((10, 2)).astype(ckpt.dtype)
    recon = model.decode(mu + np.exp(0.5 * logvar) * eps).astype(np.float64)
    psnr = np.mean([10 * np.log10(1.0 / np.mean((recon[i] - x[i]) ** 2)) for i in range(10)])
    assert abs(report["psnr"] - psnr) <= 1e-4
    mean_only = json.loads(run_cli(["evaluate", out / "checkpoint.npz", "--device", "cpu", "--json"]).stdout)
    assert mean_only["psnr"] != report["psnr"]


def test_a_bad_output_flag_is_a_one_line_error(tmp_path):
    done = run_cli(["train", "--model", "vae", "--output", "tanh", "--out", tmp_path / "r"])
    assert done.code != 0 and "Traceback" not in done.output and "--output" in done.output
    done = run_cli(["train", "--output", "linear", "--epochs", "1", "--out", tmp_path / "c"])
    assert_clean_error(done, "--output", "only used by --model vae")


def test_vae_table_authors_evaluate_args_reproduce_its_numbers(tmp_path):
    script = _vae_table()
    out = tmp_path / "authors"
    data = tmp_path / "digits.npz"
    _write_own_split_file(data, 2, 1)
    assert script.main(["--protocol", "authors", "--epochs", "1", "--seeds", "1", "--data", str(data),
                        "--only", "L2", "--out", str(out), "--device", "cpu"]) == 0
    table = json.loads((out / "table.json").read_text())
    assert table["protocol"] == "authors" and list(table["rows"]) == list(script.AUTHORS_OBJECTIVES)
    row = table["rows"]["L2"]
    assert row["expression"] == "2*pl" and row["options"] == {"output": "linear", "tconv_padding": "tf-same"}
    assert len(row["runs"]) == 1 and not table["rows"]["L1"]["runs"] and not table["rows"]["L1"]["complete"]
    run = row["runs"][0]
    assert row["psnr"] == [run["psnr"], 0.0] and row["paper"] == [10.2, 0.41]
    checkpoint = out / run["run_dir"] / "checkpoint.npz"
    assert not pathlib.Path(run["run_dir"]).is_absolute() and checkpoint.exists()
    report = json.loads(run_cli(["evaluate", checkpoint, *run["evaluate_args"], "--json"]).stdout)
    assert (report["psnr"], report["ssim"], report["terms"]["kl"]) == (run["psnr"], run["ssim"], run["kl"])
    assert table["train_images"] == 20 and table["test_images"] == 10
    assert "0 of 1 (incomplete)" in (out / "table.md").read_text()
    assert (out / "digits.png").exists()


def test_vae_table_stops_when_a_run_is_stopped(tmp_path, monkeypatch):
    """A signal that stops one run (run_training returns "interrupted") ends the table with a one-line
    error; the next run is not started."""
    script = _vae_table()
    data = tmp_path / "digits.npz"
    _write_own_split_file(data, 2, 1)
    calls = []

    class Stopped:
        status, epoch = "interrupted", 3

    monkeypatch.setattr(script, "run_training", lambda *args, **kwargs: calls.append(args) or Stopped())
    with pytest.raises(SflnetError, match="stopped during L2 seed 0 at epoch 3 .*the same command resumes it"):
        script.main(["--protocol", "authors", "--epochs", "5", "--seeds", "2", "--data", str(data),
                     "--only", "L2,L1", "--out", str(tmp_path / "authors"), "--device", "cpu"])
    assert len(calls) == 1


def test_vae_table_skips_a_run_another_process_is_training(tmp_path, monkeypatch):
    """Two invocations side by side share the runs: a run folder whose lock another process holds is skipped,
    and the next run is trained; any other error still stops the table."""
    script = _vae_table()
    data = tmp_path / "digits.npz"
    _write_own_split_file(data, 2, 1)
    calls = []

    def busy_then_broken(options, folder, **kwargs):
        calls.append(pathlib.Path(folder).name)
        if len(calls) == 1:
            raise RunFolderInUse(f"run folder {folder} is in use by another sflnet train (pid 1 on host)")
        raise SflnetError("something else went wrong")

    monkeypatch.setattr(script, "run_training", busy_then_broken)
    with pytest.raises(SflnetError, match="something else went wrong"):
        script.main(["--protocol", "authors", "--epochs", "5", "--seeds", "1", "--data", str(data),
                     "--only", "L2,L1", "--out", str(tmp_path / "authors"), "--device", "cpu"])
    assert calls == ["L2_seed0", "L1_seed0"]
