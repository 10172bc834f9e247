"""``--data FOLDER`` of MNIST's own IDX files for the β-VAE (sflnet.io.digits).

Every folder here is written into pytest's tmp_path by :func:`write_idx`, which builds the IDX header
by hand (independently of the reader): 20 synthetic training digits and 10 test digits. The reference
each folder is compared with is the same digits in the Keras ``.npz`` layout (``x_train``, ``y_train``,
``x_test``, ``y_test``) read through the existing ``.npz`` code. The real MNIST is never read.
"""

import gzip
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sflnet.errors import SflnetError
from sflnet.io import digits
from sflnet.models.vae import load_for_run, validate_options
from sflnet.training.config import TrainOptions

N_TRAIN, N_TEST = 20, 10

#: the four files as MNIST names them (without .gz)
TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"


def idx_bytes(array, type_code=0x08, ndim=None, shape=None):
    """An IDX file of ``array``'s bytes: 0, 0, type code, number of dimensions, the dimensions as big-endian
    uint32, then the values in C order. ``ndim`` and ``shape`` override the header (for bad files)."""
    shape = array.shape if shape is None else shape
    ndim = len(shape) if ndim is None else ndim
    header = bytes([0, 0, type_code, ndim]) + b"".join(struct.pack(">I", d) for d in shape)
    return header + np.ascontiguousarray(array).tobytes()


def write_idx(path, content, gz=False):
    """Write ``content`` (bytes) to ``path``, gzip-compressed under ``path.gz`` when ``gz``. returns the path."""
    path = Path(str(path) + ".gz") if gz else Path(path)
    path.write_bytes(gzip.compress(content) if gz else content)
    return path


def synthetic_arrays(seed=3):
    """{x_train (20, 28, 28), y_train (20,), x_test (10, 28, 28), y_test (10,)} uint8: random grey levels
    0-255 (so binarisation matters) and labels 0-9 in a shuffled order."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for part, count in (("train", N_TRAIN), ("test", N_TEST)):
        arrays[f"x_{part}"] = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        arrays[f"y_{part}"] = rng.permutation(np.arange(count) % 10).astype(np.uint8)
    return arrays


def write_folder(folder, arrays, gz=False, dotted=False):
    """MNIST's four IDX files of ``arrays`` in ``folder`` (raw or .gz; ``dotted``: ``train-images.idx3-ubyte``)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, key in ((TRAIN_IMAGES, "x_train"), (TRAIN_LABELS, "y_train"), (TEST_IMAGES, "x_test"),
                      (TEST_LABELS, "y_test")):
        if dotted:
            name = name.replace("-idx", ".idx")
        write_idx(folder / name, idx_bytes(arrays[key]), gz=gz)
    return folder


@pytest.fixture
def arrays():
    return synthetic_arrays()


@pytest.fixture
def folder(tmp_path, arrays):
    """A raw IDX folder named ``digits`` of the synthetic digits."""
    return write_folder(tmp_path / "idx" / "digits", arrays)


# ---------------------------------------------------------------------------
# Round trip: the IDX folder equals the same digits in the Keras .npz layout
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("gz,dotted", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("split", ["train", "test", "all"])
def test_idx_folder_equals_the_keras_npz_layout(tmp_path, arrays, gz, dotted, split):
    idx = write_folder(tmp_path / "idx" / "digits", arrays, gz=gz, dotted=dotted)
    npz = tmp_path / "npz" / "digits.npz"          # the same stem, so the image names agree too
    npz.parent.mkdir()
    np.savez(npz, **arrays)
    for binarize, dtype in ((True, np.float32), (False, np.float64), (False, np.float32)):
        got, got_labels = digits.load_digits_with_labels(split, binarize=binarize, dtype=dtype, path=idx)
        want, want_labels = digits.load_digits_with_labels(split, binarize=binarize, dtype=dtype, path=npz)
        assert got.names == want.names
        assert np.array_equal(got_labels, want_labels) and got_labels.dtype == np.int64
        assert len(got.images) == {"train": N_TRAIN, "test": N_TEST, "all": N_TRAIN + N_TEST}[split]
        for a, b in zip(got.images, want.images):
            assert a.shape == (1, 28, 28) and a.dtype == dtype and np.array_equal(a, b)
        assert f"MNIST IDX folder {idx}, split {split!r}" in got.source


def test_splits_are_the_files_in_file_order(folder, arrays):
    train, train_labels = digits.load_digits_with_labels("train", binarize=False, dtype=np.float64, path=folder)
    test, test_labels = digits.load_digits_with_labels("test", binarize=False, dtype=np.float64, path=folder)
    assert np.array_equal(train_labels, arrays["y_train"]) and np.array_equal(test_labels, arrays["y_test"])
    assert np.array_equal(np.stack(train.images)[:, 0], arrays["x_train"] / 255.0)
    assert np.array_equal(np.stack(test.images)[:, 0], arrays["x_test"] / 255.0)
    # numbered in train-then-test order, as the x_train layout numbers them
    assert train.names[0] == f"digits/00000_label{arrays['y_train'][0]}"
    assert test.names[0] == f"digits/{N_TRAIN:05d}_label{arrays['y_test'][0]}"


def test_binarisation_is_pixel_over_255_above_one_half_for_every_grey_level(tmp_path):
    levels = np.arange(256 * 4, dtype=np.int64).reshape(-1) % 256
    images = np.resize(levels.astype(np.uint8), (2, 28, 28))        # every level 0-255 at least once
    arrays = {"x_train": images, "y_train": np.array([3, 4], np.uint8),
              "x_test": images[::-1].copy(), "y_test": np.array([5, 6], np.uint8)}
    idx = write_folder(tmp_path / "levels", arrays, gz=True)
    for dtype in (np.float32, np.float64):
        dataset = digits.load_digits(split="all", binarize=True, dtype=dtype, path=idx)
        want = (np.concatenate([images, images[::-1]]).astype(np.float64) / 255.0 > 0.5).astype(dtype)
        assert np.array_equal(np.stack(dataset.images)[:, 0], want)


def test_read_idx_returns_the_files_arrays(tmp_path, arrays):
    images = write_idx(tmp_path / TRAIN_IMAGES, idx_bytes(arrays["x_train"]), gz=True)
    labels = write_idx(tmp_path / TRAIN_LABELS, idx_bytes(arrays["y_train"]))
    got = digits.read_idx(images, "images")
    assert got.dtype == np.uint8 and got.shape == (N_TRAIN, 28, 28) and np.array_equal(got, arrays["x_train"])
    assert np.array_equal(digits.read_idx(labels, "labels"), arrays["y_train"])


def test_raw_files_are_preferred_to_gz_when_both_are_there(folder, arrays):
    # torchvision's MNIST/raw folder keeps both; a broken .gz beside a good raw file is never opened
    (folder / (TRAIN_IMAGES + ".gz")).write_bytes(b"not gzip")
    assert len(digits.load_digits("train", path=folder)) == N_TRAIN


def test_only_the_files_a_split_needs_are_read(folder):
    (folder / TRAIN_IMAGES).write_bytes(b"\x00\x00\x08\x03")          # broken training images
    assert len(digits.load_digits("test", path=folder)) == N_TEST
    with pytest.raises(SflnetError, match="truncated"):
        digits.load_digits("train", path=folder)


def test_train_images_keeps_the_first_of_each_class_as_for_the_npz_layout(tmp_path, folder, arrays):
    npz = tmp_path / "digits.npz"
    np.savez(npz, **arrays)
    by_folder = load_for_run(TrainOptions.for_model("vae", train_images=10, data=(str(folder),)).validate())
    by_file = load_for_run(TrainOptions.for_model("vae", train_images=10, data=(str(npz),)).validate())
    assert by_folder.names == by_file.names and len(by_folder.names) == 10
    first = [int(np.flatnonzero(arrays["y_train"] == d)[0]) for d in range(10)]
    assert by_folder.names == [f"digits/{i:05d}_label{arrays['y_train'][i]}" for i in sorted(first)]
    assert all(np.array_equal(a, b) for a, b in zip(by_folder.images, by_file.images))
    test = load_for_run(TrainOptions.for_model("vae", train_images=10, data=(str(folder),)).validate(), "test")
    assert len(test.names) == N_TEST                                   # the test split is always whole


def test_two_data_paths_are_one_line_error():
    options = TrainOptions.for_model("vae", data=("/a", "/b"))
    with pytest.raises(SflnetError, match=r"one --data \(an .npz of digits or a folder of MNIST's IDX files\)"):
        validate_options(options)


# ---------------------------------------------------------------------------
# Bad folders and files: one line each
# ---------------------------------------------------------------------------

def _gz(data):
    return gzip.compress(data)


def _bad(arrays):
    """case -> (the file to replace, its new bytes (None: just delete it), stored under NAME.gz?, message)."""
    x, y = arrays["x_train"], arrays["y_train"]
    good = idx_bytes(x)
    corrupted = bytearray(_gz(good))
    corrupted[len(corrupted) // 2] ^= 0xFF
    return {
        "missing file": (TEST_LABELS, None, False, (r"lacks MNIST's t10k-labels-idx1-ubyte \(raw or .gz\); "
                                                    r"it holds: t10k-images-idx3-ubyte, train-images")),
        "empty file": (TRAIN_IMAGES, b"", False, "is empty"),
        "wrong magic": (TRAIN_IMAGES, b"\x01\x02" + good[2:], False, "not an IDX file: magic number 0x01020803"),
        "gzip not named .gz": (TRAIN_IMAGES, _gz(good), False, "looks gzip-compressed"),
        "wrong type code": (TRAIN_IMAGES, idx_bytes(x.astype(">f4"), type_code=0x0D), False,
                            r"IDX type 0x0d \(float32\), expected 0x08"),
        "wrong dims": (TRAIN_IMAGES, idx_bytes(x.reshape(N_TRAIN, 28 * 28)), False, "has 2 dimensions"),
        "labels with 2 dims": (TRAIN_LABELS, idx_bytes(y.reshape(2, 10)), False, "has 2 dimensions"),
        "not 28x28": (TRAIN_IMAGES, idx_bytes(np.zeros((5, 32, 32), np.uint8)), False, "holds 32x32 images"),
        "truncated": (TRAIN_IMAGES, good[:-1], False, "truncated: its header says 20 images"),
        "truncated header": (TRAIN_IMAGES, good[:9], False, "truncated: 9 bytes, its header alone is 16"),
        "trailing bytes": (TRAIN_IMAGES, good + b"\x00\x00\x00", False, "3 bytes more than its header says"),
        "truncated gz": (TRAIN_IMAGES, _gz(good)[:-20], True, "corrupt .gz"),
        "corrupted gz": (TRAIN_IMAGES, bytes(corrupted), True, "corrupt .gz"),
        "garbage gz": (TRAIN_IMAGES, b"definitely not compressed", True, "not a gzip file"),
        "count mismatch": (TRAIN_LABELS, idx_bytes(y[:19]), False,
                           "train-images-idx3-ubyte has 20 images but train-labels-idx1-ubyte has 19 labels"),
        "label out of range": (TRAIN_LABELS, idx_bytes(np.where(y == 9, 10, y).astype(np.uint8)), False,
                               "labels must be digits 0-9, found 10"),
        "no images": (TRAIN_LABELS, idx_bytes(np.zeros(0, np.uint8)), False, "holds no labels"),
    }


@pytest.mark.parametrize("case", list(_bad(synthetic_arrays())))
def test_bad_folders_are_one_line_errors(folder, arrays, case):
    name, content, gz, message = _bad(arrays)[case]
    (folder / name).unlink()
    if content is not None:                  # the bytes as given, under NAME or NAME.gz
        (folder / (name + ".gz" if gz else name)).write_bytes(content)
    with pytest.raises(SflnetError, match=message) as caught:
        digits.load_digits_with_labels("all", path=folder)
    text = str(caught.value)
    assert "\n" not in text and (str(folder) in text)


def test_a_folder_without_idx_files_says_what_it_holds(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    message = f"digits folder {empty} holds none of MNIST's four IDX files \\({TRAIN_IMAGES}, .*it holds: nothing$"
    with pytest.raises(SflnetError, match=message):
        digits.load_digits("train", path=empty)
    photos = tmp_path / "photos"
    photos.mkdir()
    for k in range(11):
        (photos / f"img{k:02d}.png").write_bytes(b"x")
    with pytest.raises(SflnetError, match=r"it holds: img00.png, .*, img07.png and 3 more"):
        digits.load_digits("train", path=photos)


# ---------------------------------------------------------------------------
# The installed console script
# ---------------------------------------------------------------------------

def test_train_and_evaluate_on_an_idx_folder_through_the_console_script(tmp_path, arrays):
    exe = Path(sys.executable).with_name("sflnet")
    if not exe.exists():
        pytest.skip(f"the sflnet entry point is not installed next to {sys.executable}")
    idx = write_folder(tmp_path / "mnist", arrays, gz=True)
    run = tmp_path / "run"
    done = subprocess.run([str(exe), "train", "--model", "vae", "--data", str(idx), "--epochs", "1",
                           "--batch-size", "8", "--snapshot-every", "0", "--device", "cpu", "--out", str(run)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert config["data"]["count"] == N_TRAIN and "MNIST IDX folder" in config["data"]["source"]
    evaluated = subprocess.run([str(exe), "evaluate", str(run / "checkpoint.npz"), "--json", "--device", "cpu"],
                               capture_output=True, text=True, timeout=300, check=False)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["images"] == N_TEST               # the t10k digits

    bad = tmp_path / "not_mnist"
    shutil.copytree(idx, bad)
    (bad / (TEST_LABELS + ".gz")).unlink()
    failed = subprocess.run([str(exe), "train", "--model", "vae", "--data", str(bad), "--epochs", "1",
                             "--device", "cpu", "--out", str(tmp_path / "bad_run")],
                            capture_output=True, text=True, timeout=300, check=False)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: digits folder") and TEST_LABELS in lines[0]
