"""The prepared image store (sflnet prepare, sflnet.io.store): the same floats as the folder, bit for
bit, in every dtype and for every kind of stored image (uint8, uint16, resized float32); a run from a
store has the same float64 history as the run from its folder; a killed prepare continues; stale and
damaged stores are refused with one line."""

import csv
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from sflnet.errors import SflnetError
from sflnet.io import store as store_module
from sflnet.io.store import ImageStore, load_images, open_store, prepare_store
from sflnet_cli.main import cli


@pytest.fixture
def source(tmp_path):
    """Seven small images: native 24-px RGB (stored uint8), others resized (float32), one 16-bit grey."""
    folder = tmp_path / "src"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(3)
    for i, (h, w) in enumerate([(24, 20), (16, 24), (24, 24), (30, 12), (12, 10)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    Image.fromarray(rng.integers(0, 256, (24, 18), dtype=np.uint8), mode="L").save(folder / "sub" / "grey.png")
    Image.fromarray(rng.integers(0, 65536, (18, 24), dtype=np.uint16)).save(folder / "sub" / "deep.png")
    return folder


def expected_float(path, size, dtype):
    """The folder path's float image, recomputed here from the formula in sflnet.io.images' docstring for
    an image already at its size: x / 127.5 - 1 (8 bit) or x / 32767.5 - 1 (16 bit), grey copied to RGB."""
    with Image.open(path) as img:
        raw = np.asarray(img)
    scale = 32767.5 if raw.dtype == np.uint16 else 127.5
    if raw.ndim == 2:
        raw = np.stack([raw] * 3, axis=-1)
    assert max(raw.shape[:2]) == size
    return (np.transpose(raw, (2, 0, 1)).astype(np.float64) / scale - 1.0).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_store_gives_the_folders_floats_bit_for_bit(tmp_path, source, dtype):
    status, store = prepare_store([source], tmp_path / "store", size=24, workers=2)
    assert status == "prepared"
    folder = load_images([source], size=24, dtype=dtype)
    assert store.names == folder.names
    kinds = {}
    for i, name in enumerate(store.names):
        got = store.image(i, dtype)
        assert got.dtype == dtype and got.tobytes() == folder.images[i].tobytes(), name
        kinds[name] = str(store.dtypes[i])
    # images at their size keep integer pixels (16 bits for the 16-bit source); resized ones float32
    assert kinds == {"im0.png": "uint8", "im1.png": "uint8", "im2.png": "uint8", "im3.png": "float32",
                     "im4.png": "float32", "sub/deep.png": "uint16", "sub/grey.png": "uint8"}
    for name in ("im0.png", "sub/deep.png", "sub/grey.png"):
        i = store.names.index(name)
        assert np.array_equal(store.image(i, dtype), expected_float(source / name, 24, dtype))
    assert os.path.getsize(tmp_path / "store" / "pixels.bin") < sum(a.nbytes for a in folder.images)


def test_cli_run_from_a_store_has_the_folders_history(tmp_path, source):
    runner = CliRunner()
    made = runner.invoke(cli, ["prepare", str(source), "--size", "24", "--out", str(tmp_path / "store")])
    assert made.exit_code == 0, made.output
    histories = []
    for data, size in ((source, ["--size", "24"]), (tmp_path / "store", [])):
        out = tmp_path / f"run{len(histories)}"
        result = runner.invoke(cli, ["train", "--data", str(data), *size, "--epochs", "2", "--batch-size", "3",
                                     "--dtype", "float64", "--device", "cpu", "--out", str(out)])
        assert result.exit_code == 0, result.output
        with open(out / "history.csv", newline="") as stream:
            histories.append([row[:-1] for row in csv.reader(stream)])   # without "seconds"
    assert histories[0] == histories[1] and len(histories[0]) == 3
    config = json.loads((tmp_path / "run1" / "config.json").read_text())
    assert config["data"]["store"]["index_sha256"] == ImageStore(tmp_path / "store").checksum
    assert config["options"]["size"] == 24
    # resuming checks the data: the same store resumes, another store is refused
    resumed = runner.invoke(cli, ["train", "--resume", "--out", str(tmp_path / "run1"), "--epochs", "3"])
    assert resumed.exit_code == 0, resumed.output
    wrong = runner.invoke(cli, ["train", "--data", str(tmp_path / "store"), "--size", "30", "--epochs", "1",
                                "--out", str(tmp_path / "run9")])
    assert wrong.exit_code != 0 and "--size 30 differs from the size 24" in str(wrong.exception)


def test_a_killed_prepare_continues_where_it_stopped(tmp_path, source, monkeypatch):
    out = tmp_path / "store"

    def kill_after(count):
        if count == 3:
            raise KeyboardInterrupt   # as if the process were killed after three images

    with pytest.raises(KeyboardInterrupt):
        prepare_store([source], out, size=24, workers=1, after_image=kill_after)
    assert not (out / "index.json").exists()                      # not a store yet ...
    with pytest.raises(SflnetError, match="incomplete"):          # ... and clearly not one
        open_store(out)
    decoded = []
    original = store_module._prepared_image
    monkeypatch.setattr(store_module, "_prepared_image", lambda path, size: decoded.append(path) or
                        original(path, size))
    status, store = prepare_store([source], out, size=24, workers=1)
    assert status == "prepared" and len(decoded) == 7 - 3         # only the images not yet done
    fresh = prepare_store([source], tmp_path / "fresh", size=24)[1]
    assert (out / "pixels.bin").read_bytes() == (tmp_path / "fresh" / "pixels.bin").read_bytes()
    assert store.checksum == fresh.checksum
    assert sorted(os.listdir(out)) == ["index.json", "pixels.bin"]
    assert prepare_store([source], out, size=24)[0] == "up-to-date"


def test_stale_store_names_the_changed_images(tmp_path, source):
    prepare_store([source], tmp_path / "store", size=24)
    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(source / "im1.png")
    os.utime(source / "im1.png", ns=(1, 1))
    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(source / "new.png")
    with pytest.raises(SflnetError, match=r"stale: 2 source images .*'im1.png', 'new.png'"):
        open_store(tmp_path / "store")
    assert prepare_store([source], tmp_path / "store", size=24)[0] == "prepared"   # refreshed
    assert len(open_store(tmp_path / "store")) == 8


def test_damaged_stores_are_refused_in_one_line(tmp_path, source):
    prepare_store([source], tmp_path / "store", size=24)
    pixels, index = tmp_path / "store" / "pixels.bin", tmp_path / "store" / "index.json"
    good_pixels, good_index = pixels.read_bytes(), index.read_text()
    runner = CliRunner()

    def train_error():
        result = runner.invoke(cli, ["train", "--data", str(tmp_path / "store"), "--epochs", "1", "--device", "cpu",
                                     "--out", str(tmp_path / "run")])
        assert result.exit_code != 0 and not (tmp_path / "run").exists()
        return str(result.exception)

    pixels.write_bytes(good_pixels[:-10])                            # truncated
    assert "truncated" in train_error()
    damaged = bytearray(good_pixels)
    damaged[100] ^= 0xFF                                             # one flipped byte in the first image
    pixels.write_bytes(bytes(damaged))
    assert "fails its checksum" in train_error()
    pixels.write_bytes(good_pixels)
    edited = json.loads(good_index)
    edited["images"]["offset"][1] += 64                              # a wrong index
    index.write_text(json.dumps(edited))
    assert "damaged index" in train_error()
    index.write_text(good_index[:50])                                # a torn index
    assert "damaged index" in train_error()
    index.write_text(good_index)
    assert len(open_store(tmp_path / "store")) == 7


def test_prepare_refuses_a_folder_that_is_not_a_store(tmp_path, source):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    result = CliRunner().invoke(cli, ["prepare", str(source), "--out", str(other)])
    assert result.exit_code != 0 and "not an image store" in str(result.exception)
    assert (other / "notes.txt").read_text() == "mine"
