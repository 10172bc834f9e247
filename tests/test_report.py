"""``sflnet report`` and :func:`sflnet.figures.plot_overview` (also drawn by training at snapshot epochs)."""

import os

import numpy as np
import pytest
from PIL import Image

from sflnet.figures import plot_overview
from tests.test_cli import assert_clean_error, run_cli, train_args, write_images


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    write_images(root / "images")
    result = run_cli(train_args(root / "images", root / "run", 3, "--snapshot-every", "1"))
    assert result.code == 0, result
    return root / "run"


def test_training_writes_overview_at_snapshot_epochs(run_dir):
    overview = run_dir / "overview.png"
    assert overview.is_file()
    with Image.open(overview) as picture:
        width, height = picture.size
    assert height > width * 0.8   # 4 rows (original + 3 epochs) of 3 columns (2 images + close-up)


def test_plot_overview_rows_and_columns(tmp_path):
    rng = np.random.default_rng(0)
    for folder in ("original", "epoch_0002", "epoch_0010"):
        (tmp_path / "snapshots" / folder).mkdir(parents=True)
        for name in ("00_a.png", "01_b.png"):
            Image.fromarray(rng.integers(0, 256, size=(8, 6, 3), dtype=np.uint8)).save(
                tmp_path / "snapshots" / folder / name)
    path = plot_overview(tmp_path)
    assert path == tmp_path / "overview.png" and path.is_file()
    with Image.open(path) as one_epoch_more:
        tall = one_epoch_more.size[1]
    (tmp_path / "snapshots" / "epoch_0010" / "01_b.png").unlink()   # a missing file: a blank cell, no error
    for name in ("00_a.png", "01_b.png"):
        (tmp_path / "snapshots" / "epoch_0002" / name).unlink()
    (tmp_path / "snapshots" / "epoch_0002").rmdir()
    with Image.open(plot_overview(tmp_path, tmp_path / "other.png")) as fewer:
        assert fewer.size[1] < tall


def test_plot_overview_without_originals_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="no PNG snapshots"):
        plot_overview(tmp_path)


def test_report_prints_summary_and_redraws_figures(run_dir):
    for name in ("overview.png", "curves.png"):
        os.remove(run_dir / name)
    result = run_cli(["report", run_dir])
    assert result.code == 0, result
    out = result.stdout
    for fragment in ("model       cae", "loss        pl+sfl", "epochs done 3 of 3", "best E", "final E",
                     "(epoch 3)", "s/epoch     mean", "median", "sigmas      0.8,1.6,3.2"):
        assert fragment in out, out
    assert (run_dir / "overview.png").is_file() and (run_dir / "curves.png").is_file()
    result = run_cli(["report", run_dir, "--no-figures"])
    assert result.code == 0 and "Wrote" not in result.stdout


def test_report_best_epoch_is_the_smallest_E(tmp_path, run_dir):
    copy = tmp_path / "run"
    copy.mkdir()
    (copy / "config.json").write_text((run_dir / "config.json").read_text())
    header = (run_dir / "history.csv").read_text().splitlines()[0]
    width = len(header.split(",")) - 3   # all but epoch, E and seconds
    lines = [header] + [f"{e},{E}," + ",".join(["0.1"] * width) + f",{s}"
                        for e, E, s in ((1, 5.0, 1.0), (2, 2.0, 2.0), (3, 4.0, 9.0))]
    (copy / "history.csv").write_text("\n".join(lines) + "\n")
    result = run_cli(["report", copy])
    assert result.code == 0, result
    assert "best E      2 (epoch 2)" in result.stdout
    assert "final E     4 (epoch 3)" in result.stdout
    assert "mean 4, median 2" in result.stdout
    assert (copy / "curves.png").is_file()
    assert "warning: no overview.png" in result.stderr   # no snapshots in the copy


def test_not_a_run_is_a_one_line_error(tmp_path):
    assert_clean_error(run_cli(["report", tmp_path / "missing"]), "not a folder")
    assert_clean_error(run_cli(["report", tmp_path]), "not an sflnet run folder")
    (tmp_path / "config.json").write_text("{not json")
    (tmp_path / "history.csv").write_text("epoch,E\n")
    assert_clean_error(run_cli(["report", tmp_path]), "not valid JSON")
    assert not (tmp_path / "overview.png").exists()


def test_help():
    result = run_cli(["report", "--help"])
    assert result.code == 0 and "overview.png" in result.output and "curves.png" in result.output
