"""The β-VAE on the run machinery: ``sflnet train --model vae``, resume, evaluate, reconstruct, sample.

Runs train on a few built-in digits (``--train-images 20``: 2 of each class) for 1-3 epochs, so that
each takes a second or two. The exactness tests compare whole history rows and checkpoint bytes.
"""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from sflnet import SflnetError
from sflnet.io.checkpoint import load_checkpoint
from sflnet import optim
from sflnet.optim import triangular2_lr
from sflnet.training.config import TrainOptions
from sflnet.training.run import run_training
from tests.test_cli import run_cli

TINY = ["--model", "vae", "--train-images", "20", "--batch-size", "8", "--snapshot-every", "0"]


def _rows(folder):
    with open(folder / "history.csv", newline="") as stream:
        return list(csv.DictReader(stream))


def _arrays(path):
    ckpt = np.load(path, allow_pickle=False)
    return {k: ckpt[k].tobytes() for k in ckpt.files if k != "meta"}


def test_train_writes_a_vae_run_folder_with_kl_column_and_adam_state(tmp_path):
    out = tmp_path / "run"
    result = run_cli(["train", *TINY, "--epochs", "2", "--out", out, "--device", "cpu"])
    assert result.code == 0, result.output
    rows = _rows(out)
    assert list(rows[0]) == ["epoch", "E", "E_PL", "E_SFL", "sfl_0.8", "sfl_1.6", "sfl_3.2", "E_SSIM", "E_STFT",
                             "E_KL", "seconds"]
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for row in rows:   # E = 500·E_SSIM + 0.00015·E_STFT + β·E_KL, β = 0.005 (the defaults)
        expected = 500 * float(row["E_SSIM"]) + 0.00015 * float(row["E_STFT"]) + 0.005 * float(row["E_KL"])
        assert float(row["E"]) == pytest.approx(expected, rel=1e-12)
    ckpt = load_checkpoint(out / "checkpoint.npz")
    assert ckpt.spec.name == "vae" and ckpt.epoch == 2
    assert set(ckpt.state) == {"adam_m", "adam_v"}
    assert ckpt.optimizer_step == 2 * 3     # 20 images in batches of 8: 3 steps per epoch
    assert any(np.any(m) for m in ckpt.state["adam_m"].values())
    config = json.loads((out / "config.json").read_text())
    assert config["options"]["model"] == "vae" and config["options"]["lr"] is None
    assert config["data"]["count"] == 20
    assert len(list((out / "snapshots" / "original").iterdir())) == 8


def test_resume_continues_exactly(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run_cli(["train", *TINY, "--epochs", "3", "--out", straight, "--device", "cpu"]).code == 0
    assert run_cli(["train", *TINY, "--epochs", "1", "--out", split, "--device", "cpu"]).code == 0
    assert run_cli(["train", "--resume", "--epochs", "3", "--out", split]).code == 0
    drop_seconds = [{k: v for k, v in r.items() if k != "seconds"} for r in _rows(straight)]
    assert drop_seconds == [{k: v for k, v in r.items() if k != "seconds"} for r in _rows(split)]
    assert _arrays(straight / "checkpoint.npz") == _arrays(split / "checkpoint.npz")


def test_the_learning_rate_follows_triangular2(tmp_path, monkeypatch):
    """Every Adam step uses lr = triangular2(t) with t = the steps taken before it."""
    seen = []
    step = optim.Adam.step

    def spy(self, params, grads):
        seen.append((self.step_count, self.lr))
        return step(self, params, grads)

    monkeypatch.setattr(optim.Adam, "step", spy)
    options = TrainOptions.for_model("vae", train_images=20, batch_size=8, epochs=2, lr_step=2,
                                     lr_min=0.001, lr_max=0.003, device="cpu", snapshot_every=0)
    run_training(options, str(tmp_path / "run"))
    assert [t for t, _ in seen] == list(range(6))
    # by hand: S = 2; t = 0, 1, 2, 3, 4, 5 → 0.001, 0.002, 0.003, 0.002, 0.001, 0.0015
    assert [lr for _, lr in seen] == pytest.approx([0.001, 0.002, 0.003, 0.002, 0.001, 0.0015], rel=1e-12)
    assert [lr for _, lr in seen] == [triangular2_lr(t, 0.001, 0.003, 2) for t, _ in seen]


def test_evaluate_reconstruct_and_sample_a_vae_checkpoint(tmp_path):
    out = tmp_path / "run"
    assert run_cli(["train", *TINY, "--epochs", "1", "--out", out, "--device", "cpu"]).code == 0
    ckpt = out / "checkpoint.npz"
    result = run_cli(["evaluate", ckpt, "--json", "--device", "cpu"])
    assert result.code == 0, result.output
    report = json.loads(result.stdout)
    assert report["images"] == 1000 and set(report["terms"]) == {"pl", "sfl", "ssim", "stft", "kl"}
    assert 0 < report["ssim"] < 1 and report["psnr"] > 0
    # the same number as training would log: E = 500 E_SSIM + 0.00015 E_STFT + 0.005 E_KL
    terms = report["terms"]
    assert report["E"] == pytest.approx(500 * terms["ssim"] + 0.00015 * terms["stft"] + 0.005 * terms["kl"])
    sampled = json.loads(run_cli(["evaluate", ckpt, "--json", "--sample-latent", "--device", "cpu"]).stdout)
    assert sampled["terms"]["kl"] == terms["kl"] and sampled["E_PL"] != report["E_PL"]
    train_report = json.loads(run_cli(["evaluate", ckpt, "--json", "--split", "train", "--device", "cpu"]).stdout)
    assert train_report["images"] == 20

    grid = run_cli(["sample", ckpt, "--out", tmp_path / "s", "--grid", "5", "--device", "cpu"])
    assert grid.code == 0, grid.output
    picture = np.asarray(Image.open(tmp_path / "s" / "latent_grid.png"))
    assert picture.shape == (140, 140) and picture.dtype == np.uint8
    again = run_cli(["sample", ckpt, "--out", tmp_path / "s", "--grid", "5"])
    assert again.code == 1 and "already exists" in again.output and "Traceback" not in again.output

    recon = run_cli(["reconstruct", ckpt, "--out", tmp_path / "r", "--count", "3", "--side-by-side",
                     "--device", "cpu"])
    assert recon.code == 0, recon.output
    assert len(list((tmp_path / "r").glob("mnist5k/*_side_by_side.png"))) == 3
    digit = np.zeros((56, 56), dtype=np.uint8)
    digit[10:46, 24:32] = 255
    Image.fromarray(digit).save(tmp_path / "one.png")
    mine = run_cli(["reconstruct", ckpt, tmp_path / "one.png", "--out", tmp_path / "mine", "--device", "cpu"])
    assert mine.code == 0, mine.output
    assert np.asarray(Image.open(tmp_path / "mine" / "one.png")).shape == (28, 28)


@pytest.mark.parametrize("args, message", [
    (["--model", "vae", "--lr", "0.1"], "--lr is not used by --model vae"),
    (["--model", "vae", "--size", "64"], "--size is not used by --model vae"),
    (["--beta", "1"], "--beta is only used by --model vae"),
    (["--model", "vae", "--lr-min", "0.01", "--lr-max", "0.001"], "--lr-min 0.01 is larger than --lr-max"),
    (["--model", "vae", "--train-images", "15"], "--train-images must be a multiple of 10"),
    (["--model", "vae", "--beta", "-1"], "--beta must be a finite number >= 0"),
    (["--model", "vae", "--lr-step", "0"], "--lr-step must be a whole number >= 1"),
    (["--model", "gan"], "Invalid value for '--model'"),
])
def test_bad_vae_options_are_one_line_errors_and_write_nothing(tmp_path, args, message):
    out = tmp_path / "run"
    result = run_cli(["train", *args, "--out", out])
    assert result.code != 0 and message in result.output, result.output
    assert "Traceback" not in result.output and not out.exists()


def test_sample_refuses_a_cae_checkpoint(tmp_path):
    image = (np.arange(16 * 16 * 3) % 251).astype(np.uint8).reshape(16, 16, 3)
    Image.fromarray(image).save(tmp_path / "a.png")
    assert run_cli(["train", "--data", tmp_path / "a.png", "--size", "0", "--epochs", "1", "--out",
                    tmp_path / "cae", "--device", "cpu"]).code == 0
    result = run_cli(["sample", tmp_path / "cae" / "checkpoint.npz", "--out", tmp_path / "s"])
    assert result.code == 1 and "sample needs one of --model vae" in result.output


def test_resume_refuses_changed_vae_settings(tmp_path):
    out = tmp_path / "run"
    assert run_cli(["train", *TINY, "--epochs", "1", "--out", out, "--device", "cpu"]).code == 0
    result = run_cli(["train", "--resume", "--out", out, "--epochs", "2", "--beta", "0.5"])
    assert result.code == 1 and "--beta 0.5 differs" in result.output


def test_vae_options_defaults_are_the_seed_papers():
    options = TrainOptions.for_model("vae").validate()
    assert (options.lr_min, options.lr_max, options.lr_step, options.epochs) == (1e-4, 1e-3, 2000, 50)
    assert options.beta == 0.005 and options.binarize is True and options.batch_size == 32
    assert options.loss == "500*ssim+0.00015*stft"
    assert (options.stft_window, options.stft_stride, options.stft_phase_weight) == (16, 4, 9.0)
    with pytest.raises(SflnetError, match="--model must be one of"):
        TrainOptions.for_model("gan")
