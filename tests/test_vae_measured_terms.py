"""A VAE training step measures only its objective's own terms (issue: the untrained pl and 27×27 LoG
sfl cost a sixth of a small step); everything it trains on is the same as when it measures all."""

import csv
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from sflnet.io.digits import load_digits_with_labels
from sflnet.models.vae import VAE, init_params


def _batch(count=6):
    dataset, _ = load_digits_with_labels(split="train", binarize=True, dtype=np.float64)
    return np.stack(dataset.images[:count])


@pytest.mark.parametrize("loss, measured", [("500*ssim+0.00015*stft", {"ssim", "stft", "kl"}),
                                            ("2*pl", {"pl", "kl"}),
                                            ("500*ssim+4.3*sfl", {"ssim", "sfl", "kl"})])
def test_own_terms_only_and_the_same_numbers(loss, measured):
    x = _batch()
    results = {}
    for paper_terms in (True, False):
        model = VAE(init_params(2, np.float64), loss=loss, output="linear", tconv_padding="tf-same")
        model.noise = np.random.default_rng(9)
        results[paper_terms] = model.loss_and_grads(x, paper_terms=paper_terms)
    everything, own = results[True], results[False]
    assert set(own.terms) == measured
    assert set(everything.terms) == measured | {"pl", "sfl"}
    assert own.E == everything.E                    # E is the same float: the same terms in the same order
    for name in own.terms:
        assert own.terms[name] == everything.terms[name]
    for name, g in everything.grads.items():
        assert own.grads[name].tobytes() == g.tobytes(), name
    assert ("sfl" in own.terms) == any(k.startswith("sfl_") for k in own.parts)


def test_the_training_step_asks_for_own_terms_only():
    """train_step passes the model's TRAINING_MEASURES_PAPER_TERMS: False for the VAE, True for the CAE."""
    from sflnet.models.cae import Autoencoder  # noqa: PLC0415
    assert VAE.TRAINING_MEASURES_PAPER_TERMS is False and Autoencoder.TRAINING_MEASURES_PAPER_TERMS is True


def _train(tmp_path, loss):
    out = tmp_path / loss.replace("*", "x").replace("+", "_")
    sflnet = shutil.which("sflnet") or os.path.join(os.path.dirname(sys.executable), "sflnet")
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    done = subprocess.run([sflnet, "train", "--model", "vae", "--epochs", "1", "--train-images", "20", "--batch-size",
                           "10", "--loss", loss, "--device", "cpu", "--snapshot-every", "0", "--out", str(out)],
                          capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    with open(out / "history.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))[0], out


@pytest.mark.parametrize("loss, finite, missing", [("500*ssim+0.00015*stft", ("E_SSIM", "E_STFT", "E_KL"),
                                                    ("E_PL", "E_SFL", "sfl_0.8")),
                                                   ("2*pl", ("E_PL", "E_KL"), ("E_SFL", "sfl_1.6"))])
def test_history_leaves_untrained_paper_columns_nan(tmp_path, loss, finite, missing):
    row, out = _train(tmp_path, loss)
    assert all(math.isfinite(float(row[key])) for key in ("E", *finite))
    assert all(math.isnan(float(row[key])) for key in missing)
    # evaluate still measures every paper column
    sflnet = shutil.which("sflnet") or os.path.join(os.path.dirname(sys.executable), "sflnet")
    done = subprocess.run([sflnet, "evaluate", str(out / "checkpoint.npz"), "--device", "cpu", "--json"],
                          capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), check=False)
    assert done.returncode == 0, done.stderr
    import json  # noqa: PLC0415
    report = json.loads(done.stdout)
    assert math.isfinite(report["E_PL"]) and math.isfinite(report["E_SFL"])
