"""Tests for sflnet.figures: the numbers behind Fig. 3 and Fig. 4 checked against independent
derivations, and smoke tests that every plot writes a valid, non-empty PNG."""

import csv
import json
import math
import os
import pathlib
import statistics
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from sflnet import figures
from sflnet.io.images import demo_dir
from sflnet.ops.filters import log_kernel
from sflnet.gradcheck.references import layers as references

SIGMAS = (0.8, 1.6, 3.2)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def continuous_log_transform(u, v, sigma):
    """Fourier transform of the continuous Eq. 5 kernel, derived by hand.

    K_σ = σ² ∇²G_σ with G_σ(r) = exp(−r²/2σ²)/(2πσ²). The transform of G_σ is
    exp(−σ²ω²/2) (ω = 2π|f|), and ∇² multiplies a transform by −ω², so
    K̂_σ(f) = −σ² ω² exp(−σ²ω²/2).
    """
    w2 = (2 * np.pi) ** 2 * (u * u + v * v)
    return -sigma * sigma * w2 * np.exp(-sigma * sigma * w2 / 2)


def sampled_log_transform(u, v, sigma, copies=3):
    """DTFT of the kernel sampled at integer points, by the Poisson summation formula:
    the sum of the continuous transform over its periodic copies (aliasing)."""
    return sum(continuous_log_transform(u + k, v + m, sigma)
               for k in range(-copies, copies + 1) for m in range(-copies, copies + 1))


def assert_png(path, min_size=(50, 50)):
    """The file exists, starts with the PNG signature, decodes, and is at least min_size pixels."""
    data = path.read_bytes()
    assert len(data) > 1000
    assert data[:8] == PNG_SIGNATURE
    with Image.open(path) as img:
        img.load()
        assert img.format == "PNG"
        assert img.size[0] >= min_size[0] and img.size[1] >= min_size[1]


# ---------------------------------------------------------------------------
# Fig. 3: the frequency response
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("sigma", SIGMAS)
def test_log_response_peak_radius_is_sqrt2_over_2pi_sigma(sigma):
    # |K̂| ∝ ω² exp(−σ²ω²/2) is largest where d/d(ω²) = (1 − σ²ω²/2) exp(...) = 0, i.e. ω = √2/σ,
    # f* = √2/(2πσ) cycles/pixel. Sampling (aliasing) moves the σ = 0.8 peak by a few per cent,
    # so it gets a looser tolerance; the others must match to one frequency bin (1/n).
    n = 512
    power = figures.log_frequency_response(sigma, n)
    freqs = figures.frequency_axis(n)
    row, col = np.unravel_index(np.argmax(power), power.shape)
    radius = math.hypot(freqs[row], freqs[col])
    expected = math.sqrt(2) / (2 * math.pi * sigma)
    if sigma < 1:
        assert radius == pytest.approx(expected, rel=0.06)
    else:
        assert abs(radius - expected) <= 1.0 / n


@pytest.mark.parametrize("sigma", (1.6, 3.2))
def test_log_response_peak_amplitude_is_2_over_e(sigma):
    # At ω² = 2/σ², |K̂| = σ² (2/σ²) e^{−1} = 2/e, independent of σ.
    power = figures.log_frequency_response(sigma, 512)
    assert math.sqrt(power.max()) == pytest.approx(2 / math.e, rel=0.01)


@pytest.mark.parametrize("sigma", SIGMAS)
def test_log_response_matches_aliased_continuous_transform(sigma):
    n = 128
    freqs = figures.frequency_axis(n)
    u, v = np.meshgrid(freqs, freqs)           # columns u, rows v
    expected = np.abs(sampled_log_transform(u, v, sigma))
    got = np.sqrt(figures.log_frequency_response(sigma, n))
    # Differences come only from truncating the kernel to ⌈8σ⌉(+1) taps.
    np.testing.assert_allclose(got, expected, atol=5e-3)


def test_log_response_layout_dc_centre_and_symmetry():
    n = 64
    sigma = 1.6
    power = figures.log_frequency_response(sigma, n)
    assert power.shape == (n, n) and power.dtype == np.float64
    # The DC term of a DFT is the sum of the samples.
    assert power[n // 2, n // 2] == pytest.approx(log_kernel(sigma).sum() ** 2, rel=1e-9)
    assert figures.frequency_axis(n)[n // 2] == 0.0
    # The kernel is real and symmetric in x and y, so the power is symmetric under u → −u and v ↔ u.
    inner = power[1:, 1:]                      # drop the unpaired −1/2 row and column
    np.testing.assert_allclose(inner, inner[::-1, :], rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(inner, inner.T, rtol=1e-9, atol=1e-15)


def test_smaller_sigma_passes_higher_frequencies():
    freqs = figures.frequency_axis(256)
    peaks = []
    for sigma in SIGMAS:
        power = figures.log_frequency_response(sigma, 256)
        row, col = np.unravel_index(np.argmax(power), power.shape)
        peaks.append(math.hypot(freqs[row], freqs[col]))
    assert peaks[0] > peaks[1] > peaks[2]


# ---------------------------------------------------------------------------
# Fig. 4: quantisation rule and subband outputs
# ---------------------------------------------------------------------------

def test_subband_levels_by_hand():
    # Squared values as fractions of the band maximum: 0, .05, .1, .55, .95, 1 → levels
    # floor(10 t) capped at 9: 0, 0, 1, 5, 9, 9 → grey round(q · 255 / 9): 0, 0, 28, 142, 255, 255.
    fractions = np.array([0.0, 0.05, 0.1, 0.55, 0.95, 1.0])
    band = np.sqrt(fractions * 4.0)               # squares are 4 · fractions, max 4
    band[1] = -band[1]                            # the sign does not matter after squaring
    bands = band.reshape(1, 2, 3)
    got = figures.subband_levels(bands)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got.reshape(-1), [0, 0, 28, 142, 255, 255])
    assert bands[0, 0, 1] < 0                     # input not modified


def test_subband_levels_uses_ten_levels_and_zero_band():
    rng = np.random.default_rng(0)
    # Squares spread uniformly over [0, 1] (plus the maximum 1) hit every one of the 10 bins.
    squares = np.append(rng.uniform(0, 1, size=1599), 1.0).reshape(1, 40, 40)
    bands = np.concatenate([np.sqrt(squares), np.zeros((1, 40, 40))])
    got = figures.subband_levels(bands)
    allowed = {round(q * 255 / 9) for q in range(10)}
    assert set(np.unique(got[0]).tolist()) <= allowed
    assert len(np.unique(got[0])) == 10
    assert np.all(got[1] == 0)


def test_subband_outputs_are_the_log_of_the_colour_sum():
    # Independent reference: the loop LoG bank of the textbook references (Eq. 5 kernels, zero padding).
    rng = np.random.default_rng(1)
    image = rng.uniform(-1, 1, size=(3, 11, 14)).astype(np.float32)
    sigma = 0.8
    bands = figures.subband_outputs(image, (sigma,))
    assert bands.shape == (1, 11, 14) and bands.dtype == np.float64
    expected = references.log_bank_forward(image.astype(np.float64)[None], (sigma,))[0, 0]
    np.testing.assert_allclose(bands[0], expected, rtol=1e-9, atol=1e-12)


def test_closeup_box():
    assert figures.closeup_box((3, 100, 200)) == (35, 70, 30, 60)
    assert figures.closeup_box((3, 10, 10), (0.9, 0.9, 0.5, 0.5)) == (5, 5, 5, 5)   # clipped inside
    assert figures.closeup_box((3, 4, 4), (0.0, 0.0, 0.01, 0.01)) == (0, 0, 1, 1)   # at least 1 pixel


# ---------------------------------------------------------------------------
# Smoke tests: every plot writes a valid PNG
# ---------------------------------------------------------------------------

def fake_history(epochs, sigmas, decay):
    rows = []
    for e in range(1, epochs + 1):
        sfl = {f"sfl_{s:g}": 0.1 * s * math.exp(-decay * e) for s in sigmas}
        e_sfl = sum(w * v for w, v in zip((100, 10, 10), sfl.values()))
        rows.append({"epoch": float(e), "E": 0.3 * math.exp(-decay * e) + e_sfl,
                     "E_PL": 0.3 * math.exp(-decay * e), "E_SFL": e_sfl, **sfl, "seconds": 0.1})
    return rows


def test_plot_log_responses_writes_png(tmp_path):
    path = figures.plot_log_responses(SIGMAS, tmp_path / "sub" / "fig3.png", n=64)
    assert path == tmp_path / "sub" / "fig3.png"
    assert_png(path)


def test_plot_subbands_writes_png_and_keeps_input(tmp_path):
    rng = np.random.default_rng(2)
    image = rng.uniform(-1, 1, size=(3, 24, 32)).astype(np.float32)
    before = image.copy()
    assert_png(figures.plot_subbands(image, SIGMAS, tmp_path / "fig4.png"))
    np.testing.assert_array_equal(image, before)


def test_plot_curves_and_fig5_write_png(tmp_path):
    pl = fake_history(30, SIGMAS, 0.01)
    sfl = fake_history(30, SIGMAS, 0.05)
    # Strings as read back from a CSV are accepted too; a zero value is simply not drawn on log axes.
    as_text = [{k: str(v) for k, v in row.items()} for row in pl]
    as_text[0]["E_SFL"] = "0"
    assert_png(figures.plot_curves(as_text, SIGMAS, tmp_path / "curves.png", title="demo"))
    assert_png(figures.plot_fig5(pl, sfl, SIGMAS, (100, 10, 10), tmp_path / "fig5.png"))


def test_plot_reconstruction_grid_writes_png(tmp_path):
    rng = np.random.default_rng(3)
    originals = [rng.uniform(-1, 1, size=(3, 20, 30)), rng.uniform(-1, 1, size=(3, 30, 22))]
    rows = [("SFL epoch 5", [o * 0.5 for o in originals]), ("PL epoch 5", [o * 0.1 for o in originals])]
    assert_png(figures.plot_reconstruction_grid(originals, rows, tmp_path / "fig6.png"))
    assert_png(figures.plot_reconstruction_grid(originals, rows, tmp_path / "fig6b.png",
                                                closeup=(0.1, 0.1, 0.5, 0.5)))
    assert_png(figures.plot_reconstruction_grid(originals, rows, tmp_path / "fig7.png", closeup=False))


def test_plot_reconstruction_grid_rejects_mismatched_rows(tmp_path):
    originals = [np.zeros((3, 8, 8))]
    with pytest.raises(ValueError, match="1 originals"):
        figures.plot_reconstruction_grid(originals, [("x", [])], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="shape"):
        figures.plot_reconstruction_grid(originals, [("x", [np.zeros((3, 8, 9))])], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


# ---------------------------------------------------------------------------
# validation/reproduce.py end to end, on the built-in demo images (never the Willow data)
# ---------------------------------------------------------------------------

REPRODUCE = pathlib.Path(__file__).resolve().parents[1] / "validation" / "reproduce.py"


def run_reproduce(*args):
    return subprocess.run([sys.executable, str(REPRODUCE), *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})


def test_reproduce_end_to_end_on_demo_images(tmp_path):
    out = tmp_path / "out"
    done = run_reproduce("--data", str(demo_dir()), "--size", "24", "--epochs", "3",
                         "--snap-epochs", "1,2", "--device", "cpu", "--out", str(out))
    assert done.returncode == 0, done.stderr
    for name in ("fig3_log_responses.png", "fig4_subbands.png", "fig5_curves.png", "fig6_reconstructions.png",
                 "fig7_epochs.png", "fig7_epochs_cd.png"):
        assert_png(out / name)
    for loss in ("pl", "sfl"):
        with open(out / f"history_{loss}.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
        assert list(rows[0]) == ["epoch", "E", "E_PL", "E_SFL", "sfl_0.8", "sfl_1.6", "sfl_3.2", "seconds"]
        if loss == "pl":
            pl_rows = rows
        else:
            sfl_rows = rows
    # Same initial weights: the first forward pass (before any update) is identical in both runs.
    for key in ("E_PL", "sfl_0.8", "sfl_1.6", "sfl_3.2"):
        assert float(pl_rows[0][key]) == float(sfl_rows[0][key])
    # E of the SFL run is E_PL + E_SFL; of the PL run, E_PL alone.
    first = sfl_rows[0]
    assert float(first["E"]) == pytest.approx(float(first["E_PL"]) + float(first["E_SFL"]), rel=1e-6)
    assert float(pl_rows[0]["E"]) == pytest.approx(float(pl_rows[0]["E_PL"]), rel=1e-6)
    table = json.loads((out / "table.json").read_text())
    assert table["settings"]["images"] == len(list(demo_dir().glob("*.png")))
    assert table["settings"]["snapshot epochs"] == [1, 2, 3]
    assert table["final"]["pl"]["sfl"] == pytest.approx([float(pl_rows[-1][f"sfl_{s:g}"]) for s in SIGMAS])
    expected_lower = table["final"]["sfl"]["sfl"][0] < table["final"]["pl"]["sfl"][0]
    assert table["final"]["sfl_run_highest_subband_lower"] == expected_lower
    # Fewer epochs than the late window: the medians are over all 3 logged epochs of each history file.
    assert table["final"]["late_epochs"] == 3
    for key, rows in (("pl", pl_rows), ("sfl", sfl_rows)):
        final = table["final"][key]
        assert final["sfl_late_median"] == pytest.approx(
            [statistics.median(float(r[f"sfl_{s:g}"]) for r in rows) for s in SIGMAS], rel=1e-6)
        assert final["median_epoch_seconds"] == pytest.approx(
            statistics.median(float(r["seconds"]) for r in rows), rel=1e-5)
    text = (out / "table.md").read_text()
    assert "18.9" in text
    assert "| PL+SFL, this run, median of the last 3 epochs |" in text


def test_reproduce_resumes_its_run_folders_exactly(tmp_path):
    """A run stopped after 2 epochs and continued to 4 by a second call equals one call to 4 (every logged
    loss, bit for bit): the runs live in resumable run folders and the second call retrains nothing."""
    common = ("--data", str(demo_dir()), "--size", "16", "--snap-epochs", "1", "--device", "cpu", "--dtype", "float64")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert run_reproduce(*common, "--epochs", "4", "--out", str(straight)).returncode == 0
    assert run_reproduce(*common, "--epochs", "2", "--out", str(resumed)).returncode == 0
    first_checkpoint = (resumed / "runs" / "pl" / "checkpoints" / "epoch_0002.npz").read_bytes()
    done = run_reproduce(*common, "--epochs", "4", "--out", str(resumed))
    assert done.returncode == 0, done.stderr
    assert (resumed / "runs" / "pl" / "checkpoints" / "epoch_0002.npz").read_bytes() == first_checkpoint
    for loss in ("pl", "sfl"):
        rows = [list(csv.DictReader(open(folder / f"history_{loss}.csv", newline=""))) for folder in (straight, resumed)]
        assert [r["epoch"] for r in rows[1]] == ["1", "2", "3", "4"]
        for a, b in zip(*rows):
            assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
        assert json.loads((resumed / "runs" / loss / "config.json").read_text())["options"]["epochs"] == 4


def test_reproduce_only_trains_one_run_and_the_final_call_matches_a_straight_one(tmp_path):
    """--only pl / --only sfl train one run folder each and write no figures; a later call without --only
    trains nothing more and gives the same histories as one straight call (bit for bit, float64)."""
    common = ("--data", str(demo_dir()), "--size", "16", "--epochs", "3", "--snap-epochs", "2", "--device", "cpu",
              "--dtype", "float64")
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run_reproduce(*common, "--out", str(straight)).returncode == 0
    done = run_reproduce(*common, "--only", "pl", "--out", str(split))
    assert done.returncode == 0, done.stderr
    assert "epoch 3 of 3" in done.stdout
    assert sorted(p.name for p in split.iterdir()) == ["runs"]          # no figures, no table
    assert sorted(p.name for p in (split / "runs").iterdir()) == ["pl"]  # the other run untouched
    assert run_reproduce(*common, "--only", "sfl", "--out", str(split)).returncode == 0
    checkpoints = {loss: (split / "runs" / loss / "checkpoint.npz").read_bytes() for loss in ("pl", "sfl")}
    done = run_reproduce(*common, "--out", str(split))
    assert done.returncode == 0, done.stderr
    assert "completed" not in done.stdout                                # nothing retrained
    assert (split / "table.json").is_file()
    for loss in ("pl", "sfl"):
        assert (split / "runs" / loss / "checkpoint.npz").read_bytes() == checkpoints[loss]
        rows = [list(csv.DictReader(open(folder / f"history_{loss}.csv", newline=""))) for folder in (straight, split)]
        assert len(rows[0]) == len(rows[1]) == 3
        for a, b in zip(*rows):
            assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}


def test_reproduce_only_rejects_an_unknown_run(tmp_path):
    done = run_reproduce("--data", str(demo_dir()), "--only", "vae", "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "--only" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_reproduce_missing_data_is_one_line_error(tmp_path):
    done = run_reproduce("--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "--data" in lines[0]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_curves_of_a_vae_history_show_its_own_terms(tmp_path):
    """A VAE history leaves the paper's columns nan: the figure plots the E_<TERM> columns and E instead
    (the lines drawn are read back from the saved figure's axes)."""
    import matplotlib  # noqa: PLC0415
    matplotlib.use("Agg")
    from sflnet import figures  # noqa: PLC0415

    nan = float("nan")
    rows = [{"epoch": e, "E": 10.0 / e, "E_PL": nan, "E_SFL": nan, "sfl_0.8": nan, "sfl_1.6": nan, "sfl_3.2": nan,
             "E_SSIM": 0.5 / e, "E_KL": 0.1 * e, "seconds": 1.0} for e in (1, 2, 3)]
    drawn = {}
    original = figures._save

    def keep(fig, out_path, dpi):
        drawn["labels"] = [[line.get_label() for line in ax.get_lines()] for ax in fig.axes]
        return original(fig, out_path, dpi)

    figures._save = keep
    try:
        figures.plot_curves(rows, (0.8, 1.6, 3.2), str(tmp_path / "curves.png"))
    finally:
        figures._save = original
    assert drawn["labels"] == [["E_SSIM", "E_KL"], ["E (trained)"]]
    assert (tmp_path / "curves.png").stat().st_size > 0
