"""The GPU path end to end: ``sflnet train/evaluate/reconstruct/gradcheck --device gpu`` through the
CLI, equal to the CPU in float64, and the sync budget of a training step (at most one device→host
transfer, for the logged scalars and the step's health checks together).

Runs on real CuPy where a GPU is usable, and otherwise on the strict CuPy test double
(``tests/strict_cupy``, see tests/conftest.py), whose counters measure the transfers.
"""

import json

import numpy as np
import pytest
from PIL import Image

from sflnet import optim
from sflnet.backend import to_device
from sflnet.models.cae import Autoencoder, init_params
from sflnet.models.vae import VAE
from sflnet.models.vae import init_params as vae_init_params
from sflnet.training.step import train_step
from tests.test_cli import run_cli


def counters(cupy):
    """The double's counters, or None on real CuPy (which has none: the budget tests then skip)."""
    return getattr(cupy, "strict_counters", None)


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i, (h, w) in enumerate([(18, 22), (18, 22), (16, 12)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


# ---------------------------------------------------------------------------
# The sync budget
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("loss", ["pl+sfl", "pl+100*fft+ssim+0.01*stft"])
def test_a_cae_training_step_syncs_once_and_uploads_nothing(cupy_module, loss):
    count = counters(cupy_module)
    if count is None:
        pytest.skip("real CuPy has no transfer counters")
    rng = np.random.default_rng(0)
    params = {k: cupy_module.asarray(v) for k, v in init_params(seed=1).items()}
    model = Autoencoder(params, loss=loss)
    opt = optim.MomentumSGD(1e-4, 0.5)      # small: the heavy objective collapses the net at 0.02
    batch = [cupy_module.asarray(rng.uniform(-1, 1, (3, 20, 20)).astype(np.float32)) for _ in range(3)]
    batch.append(cupy_module.asarray(rng.uniform(-1, 1, (3, 18, 24)).astype(np.float32)))
    train_step(model, opt, batch)           # the first step uploads the filter taps and loss weights once
    count.reset()
    for _ in range(3):
        result = train_step(model, opt, batch)
    assert count.syncs == 3, count.sync_report(chains=True)
    assert count.uploads == 0, count.upload_locations
    assert result.flags == {"params_finite": True, "grads_nonzero": True}


def test_a_vae_training_step_syncs_once(cupy_module):
    count = counters(cupy_module)
    if count is None:
        pytest.skip("real CuPy has no transfer counters")
    rng = np.random.default_rng(0)
    params = {k: cupy_module.asarray(v) for k, v in vae_init_params(seed=1).items()}
    model = VAE(params, loss="500*ssim+0.00015*stft")
    model.noise = np.random.default_rng(5)
    opt = optim.Adam(lr=1e-3)
    batch = cupy_module.asarray((rng.uniform(0, 1, (4, 1, 28, 28)) > 0.5).astype(np.float32))
    train_step(model, opt, batch)
    count.reset()
    train_step(model, opt, batch)
    assert count.syncs == 1, count.sync_report(chains=True)
    assert count.uploads == 1    # ε, drawn on the host from the run's seeded generator (via to_device)
    assert count.upload_locations[0][0] == "cupy.asarray(ndarray)"


def test_the_health_flags_catch_nan_without_another_sync(cupy_module):
    count = counters(cupy_module)
    params = {k: cupy_module.asarray(v) for k, v in init_params(seed=1).items()}
    model = Autoencoder(params, loss="pl+sfl")
    batch = [to_device(np.random.default_rng(0).uniform(-1, 1, (3, 12, 12)).astype(np.float32), cupy_module)]
    opt = optim.MomentumSGD(float("inf"), 0.5)       # the update makes every parameter non-finite
    if count is not None:
        count.reset()
    with np.errstate(invalid="ignore", over="ignore"):
        result = train_step(model, opt, batch)
    assert result.flags["params_finite"] is False
    if count is not None:
        assert count.syncs == 1


# ---------------------------------------------------------------------------
# The CLI with --device gpu, float64 equal to the CPU
# ---------------------------------------------------------------------------

def _arrays(path):
    with np.load(path, allow_pickle=False) as archive:
        return {k: archive[k] for k in archive.files if k != "meta"}


def _history(path):
    rows = path.read_text().splitlines()
    return [row.rsplit(",", 1)[0] for row in rows[1:]]    # without seconds


def test_train_evaluate_reconstruct_on_the_gpu_equal_the_cpu(cupy_module, tmp_path, images):
    common = ["train", "--data", images, "--size", "0", "--epochs", "3", "--dtype", "float64",
              "--batch-size", "2", "--snapshot-every", "2", "--loss", "pl+sfl+ssim"]
    cpu = run_cli([*common, "--device", "cpu", "--out", tmp_path / "cpu"])
    gpu = run_cli([*common, "--device", "gpu", "--out", tmp_path / "gpu"])
    assert cpu.code == 0 and gpu.code == 0, gpu
    assert "gpu (cupy" in gpu.stdout
    a, b = _arrays(tmp_path / "cpu" / "checkpoint.npz"), _arrays(tmp_path / "gpu" / "checkpoint.npz")
    assert max(float(np.max(np.abs(a[k] - b[k]))) / float(np.max(np.abs(a[k]))) for k in a) < 1e-10
    h_cpu, h_gpu = _history(tmp_path / "cpu" / "history.csv"), _history(tmp_path / "gpu" / "history.csv")
    assert len(h_cpu) == len(h_gpu) == 3
    for row_cpu, row_gpu in zip(h_cpu, h_gpu):
        assert np.allclose([float(v) for v in row_cpu.split(",")], [float(v) for v in row_gpu.split(",")],
                           rtol=1e-10, atol=0)

    resumed = run_cli(["train", "--resume", "--out", tmp_path / "gpu", "--epochs", "4", "--device", "gpu"])
    assert resumed.code == 0, resumed

    ck = tmp_path / "cpu" / "checkpoint.npz"
    ev_cpu = run_cli(["evaluate", ck, "--data", images, "--size", "0", "--json", "--device", "cpu"])
    ev_gpu = run_cli(["evaluate", ck, "--data", images, "--size", "0", "--json", "--device", "gpu"])
    assert ev_cpu.code == 0 and ev_gpu.code == 0, ev_gpu
    e_cpu, e_gpu = json.loads(ev_cpu.stdout), json.loads(ev_gpu.stdout)
    assert e_gpu["E"] == pytest.approx(e_cpu["E"], rel=1e-10)

    rec = run_cli(["reconstruct", ck, str(images / "im2.png"), "--size", "0", "--out", tmp_path / "rec",
                   "--device", "gpu"])
    rec_cpu = run_cli(["reconstruct", ck, str(images / "im2.png"), "--size", "0", "--out", tmp_path / "rc",
                       "--device", "cpu"])
    assert rec.code == 0 and rec_cpu.code == 0, rec
    out_gpu = sorted((tmp_path / "rec").iterdir())
    out_cpu = sorted((tmp_path / "rc").iterdir())
    assert [p.name for p in out_gpu] == [p.name for p in out_cpu]
    assert all(np.array_equal(np.asarray(Image.open(g)), np.asarray(Image.open(c)))
               for g, c in zip(out_gpu, out_cpu))


def test_vae_trains_and_samples_on_the_gpu(cupy_module, tmp_path):
    args = ["train", "--model", "vae", "--epochs", "1", "--train-images", "60", "--batch-size", "32",
            "--dtype", "float64"]
    cpu = run_cli([*args, "--device", "cpu", "--out", tmp_path / "cpu"])
    gpu = run_cli([*args, "--device", "gpu", "--out", tmp_path / "gpu"])
    assert cpu.code == 0 and gpu.code == 0, gpu
    a, b = _arrays(tmp_path / "cpu" / "checkpoint.npz"), _arrays(tmp_path / "gpu" / "checkpoint.npz")
    assert max(float(np.max(np.abs(a[k] - b[k]))) / max(float(np.max(np.abs(a[k]))), 1e-300) for k in a) < 1e-9
    sample = run_cli(["sample", tmp_path / "gpu" / "checkpoint.npz", "--out", tmp_path / "grid", "--grid", "4",
                      "--device", "gpu"])
    assert sample.code == 0, sample


def test_gradcheck_cli_on_the_gpu(cupy_module):
    result = run_cli(["gradcheck", "--device", "gpu", "--layer", "conv2d_s2", "--layer", "sfl_loss", "--json"])
    assert result.code == 0, result
    rows = json.loads(result.stdout)["rows"]
    gpu_rows = [r for r in rows if r["device"] == "gpu"]
    assert gpu_rows and all(r["passed"] for r in rows)
    assert {r["check"] for r in gpu_rows} >= {"dense", "float32 gpu vs cpu"}
