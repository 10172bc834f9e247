"""The built-in handwritten digits (5,000 MNIST images) for the β-VAE.

The package ships ``digits_data/mnist5k.npz`` (attribution in
``digits_data/README.md``): 500 images of each digit 0-9, 28x28 pixels, white
digit on black. The file holds two arrays:

* ``images``: uint8, shape ``(N, 28, 28)``, grey levels 0-255;
* ``labels``: uint8, shape ``(N,)``, the digit 0-9 shown in each image.

The train/test split is fixed, so every run sees the same images:

* for each digit class 0-9, the first :data:`TRAIN_PER_CLASS` (400) images of
  that class, in file order, are training images, and its last
  :data:`TEST_PER_CLASS` (100) are test images;
* ``"train"`` (4,000 images) and ``"test"`` (1,000 images) are stratified
  (400 and 100 per class), disjoint, and both kept in file order;
* ``"all"`` is every image in file order.

For a file with exactly 500 images per class (the packaged one), train and test
together are the whole file. A user file may have more per class; the images
between the first 400 and the last 100 of a class are then in neither split.

A user file (``--data FILE.npz``) has one of two layouts:

* ``images`` + ``labels`` (as above): the fixed 400/100-per-class split;
* ``x_train``, ``y_train``, ``x_test``, ``y_test`` (the layout of Keras' ``mnist.npz``: uint8
  ``(N, 28, 28)`` images and uint8 ``(N,)`` labels each): its own split, ``"train"`` is every
  ``x_train`` image and ``"test"`` every ``x_test`` image, in file order (``"all"``: train then test).
  The full MNIST (60,000 + 10,000 digits) in this layout gives Dalal et al.'s training set.

Every image becomes a float array of shape ``(1, 28, 28)`` (one grey channel,
channels first like the colour images of :mod:`sflnet.io.images`) with the value
``pixel / 255`` in ``[0, 1]`` -- not ``[-1, 1]`` as the colour photos: the
VAE's decoder ends in a sigmoid and its pixels are Bernoulli probabilities.
With ``binarize=True`` (the default, like the binarised MNIST of the paper)
each value becomes exactly 0 or 1 by the test ``pixel / 255 > 0.5``.
"""

from __future__ import annotations

import os
import pathlib
import zipfile
from typing import Optional, Union

import numpy as np

from sflnet.io.images import Dataset, check_dtype_argument, one_line
from sflnet.errors import SflnetError

#: Height and width of every digit image, in pixels.
DIGITS_SIZE = 28

#: Images per digit class in the "train" split (the first ones of the class).
TRAIN_PER_CLASS = 400

#: Images per digit class in the "test" split (the last ones of the class).
TEST_PER_CLASS = 100

#: The digit classes 0, 1, ..., 9.
NUM_CLASSES = 10

#: Accepted values of ``split``.
SPLITS = ("train", "test", "all")

PathLike = Union[str, "os.PathLike[str]"]

#: The first four bytes of every zip archive, hence of every .npz file.
_ZIP_MAGIC = b"PK\x03\x04"


def digits_path() -> pathlib.Path:
    """The packaged ``mnist5k.npz`` (inside the installed ``sflnet`` package)."""
    return pathlib.Path(__file__).resolve().parents[1] / "digits_data" / "mnist5k.npz"   # sflnet/digits_data/


#: The arrays of a file that brings its own train/test split (Keras' ``mnist.npz`` layout).
SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _read_arrays(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray, Optional[int]]:
    """Read and check ``images`` (uint8, (N, 28, 28)) and ``labels`` (uint8, (N,)), or the four arrays of
    :data:`SPLIT_KEYS`. returns (images, labels, n_train): n_train None for the fixed per-class split,
    else the file's own split (the first n_train images, ``x_train``, are the training split).

    Raises:
        SflnetError: one line naming the file and the problem.
    """
    if not path.exists():
        raise SflnetError(f"digits file does not exist: {path}")
    if path.is_dir():
        raise SflnetError(f"expected a digits .npz file but got a folder: {path}")
    # An .npz is a zip archive; look at the first bytes so that a wrong file
    # gets a clear message rather than NumPy's guess (e.g. "pickled data").
    try:
        with open(path, "rb") as handle:
            magic = handle.read(len(_ZIP_MAGIC))
    except OSError as exc:
        raise SflnetError(f"cannot read digits file {path}: {one_line(exc)}") from None
    if not magic:
        raise SflnetError(f"digits file {path} is empty (0 bytes)")
    if magic != _ZIP_MAGIC:
        raise SflnetError(f"digits file {path} is not an .npz archive (not a zip file)")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise SflnetError(f"cannot read digits file {path}: {one_line(exc)}") from None
    n_train = None
    with loaded:
        found = sorted(loaded.files)
        own_split = "images" not in found and all(key in found for key in SPLIT_KEYS)
        for key in (SPLIT_KEYS if own_split else ("images", "labels")):
            if key not in found:
                raise SflnetError(
                    f"digits file {path} has no array {key!r} (it holds: {', '.join(found) or 'nothing'}; "
                    f"expected images and labels, or {', '.join(SPLIT_KEYS)})"
                )
        try:
            if own_split:
                arrays = {key: loaded[key] for key in SPLIT_KEYS}
            else:
                images = loaded["images"]
                labels = loaded["labels"]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            # ValueError also covers object arrays, which allow_pickle=False refuses
            raise SflnetError(f"cannot read digits file {path}: {one_line(exc)}") from None
    if own_split:
        for part in ("train", "test"):
            _check_arrays(path, arrays[f"x_{part}"], arrays[f"y_{part}"], f"x_{part}", f"y_{part}")
        n_train = int(arrays["x_train"].shape[0])
        images = np.concatenate([arrays["x_train"], arrays["x_test"]])
        labels = np.concatenate([arrays["y_train"], arrays["y_test"]])
        return images, labels, n_train
    _check_arrays(path, images, labels, "images", "labels")
    return images, labels, None


def _check_arrays(path, images, labels, images_key, labels_key):
    """SflnetError (one line) unless images are uint8 (N, 28, 28) and labels uint8 (N,) digits, N ≥ 1."""

    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (DIGITS_SIZE, DIGITS_SIZE):
        raise SflnetError(
            f"digits file {path}: {images_key!r} must be uint8 of shape (N, {DIGITS_SIZE}, {DIGITS_SIZE}), "
            f"got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise SflnetError(
            f"digits file {path}: {labels_key!r} must be uint8 of shape (N,), got {labels.dtype} {labels.shape}"
        )
    if labels.shape[0] != images.shape[0]:
        raise SflnetError(
            f"digits file {path} has {images.shape[0]} {images_key} but {labels.shape[0]} {labels_key}"
        )
    if images.shape[0] == 0:
        raise SflnetError(f"digits file {path} holds no images in {images_key!r}")
    if labels.max() >= NUM_CLASSES:
        raise SflnetError(
            f"digits file {path}: {labels_key} must be digits 0-{NUM_CLASSES - 1}, found {int(labels.max())}"
        )


def split_indices(labels: np.ndarray, split: str = "train") -> np.ndarray:
    """Indices into the file of the images in ``split``, in file order.

    Args:
        labels: ``(N,)`` integer digit labels 0-9, in file order.
        split: ``"train"`` (first :data:`TRAIN_PER_CLASS` of each class),
            ``"test"`` (last :data:`TEST_PER_CLASS` of each class) or ``"all"``.

    Returns:
        int64 array of increasing indices.

    Raises:
        SflnetError: unknown split; for "train"/"test", a class with fewer
            than ``TRAIN_PER_CLASS + TEST_PER_CLASS`` images (the two splits
            would overlap).
    """
    if split not in SPLITS:
        raise SflnetError(f"unknown digits split {split!r}: choose one of {', '.join(SPLITS)}")
    labels = np.asarray(labels)
    if split == "all":
        return np.arange(labels.shape[0], dtype=np.int64)
    needed = TRAIN_PER_CLASS + TEST_PER_CLASS
    chosen = []
    for digit in range(NUM_CLASSES):
        of_class = np.flatnonzero(labels == digit)   # this class, in file order
        if of_class.shape[0] < needed:
            raise SflnetError(
                f"digit class {digit} has {of_class.shape[0]} images, the train/test split needs "
                f"at least {needed} ({TRAIN_PER_CLASS} train + {TEST_PER_CLASS} test)"
            )
        if split == "train":
            chosen.append(of_class[:TRAIN_PER_CLASS])
        else:
            chosen.append(of_class[-TEST_PER_CLASS:])
    # Sorting the union of the per-class lists restores the file order.
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def load_digits_with_labels(
    split: str = "train",
    binarize: bool = True,
    dtype=np.float32,
    path: Optional[PathLike] = None,
) -> tuple[Dataset, np.ndarray]:
    """Like :func:`load_digits`, and also the labels.

    Returns:
        ``(dataset, labels)``: ``labels[i]`` (int64) is the digit shown in
        ``dataset.images[i]``.
    """
    if split not in SPLITS:
        raise SflnetError(f"unknown digits split {split!r}: choose one of {', '.join(SPLITS)}")
    dtype = check_dtype_argument(dtype)
    packaged = path is None
    path = digits_path() if packaged else pathlib.Path(path)
    images, labels, n_train = _read_arrays(path)
    if n_train is not None:     # the file's own split (x_train / x_test)
        indices = {"train": np.arange(n_train), "test": np.arange(n_train, labels.shape[0]),
                   "all": np.arange(labels.shape[0])}[split].astype(np.int64)
    else:
        try:
            indices = split_indices(labels, split)
        except SflnetError as exc:
            raise SflnetError(f"digits file {path}: {exc}") from None

    # (n, 28, 28) uint8 -> (n, 1, 28, 28) in [0, 1]; the division is done in
    # float64 so that float32 and float64 results agree to the last bit of float32.
    values = images[indices].astype(np.float64) / 255.0
    if binarize:
        values = (values > 0.5).astype(dtype)
    else:
        values = values.astype(dtype)
    values = values.reshape(indices.shape[0], 1, DIGITS_SIZE, DIGITS_SIZE)

    width = max(5, len(str(images.shape[0] - 1)))
    names = [f"{path.stem}/{int(i):0{width}d}_label{int(labels[i])}" for i in indices]
    what = "binarised" if binarize else "grey"
    where = f"built-in digits {path.name}" if packaged else f"digits file {path}"
    source = f"{where}, split {split!r} ({indices.shape[0]} {what} images)"
    dataset = Dataset(names=names, images=[values[k] for k in range(indices.shape[0])], source=source)
    return dataset, labels[indices].astype(np.int64)


def load_digits(
    split: str = "train",
    binarize: bool = True,
    dtype=np.float32,
    path: Optional[PathLike] = None,
) -> Dataset:
    """The built-in MNIST digits as a :class:`sflnet.io.images.Dataset`.

    Args:
        split: ``"train"`` (4,000 images), ``"test"`` (1,000) or ``"all"``
            (5,000); see the module docstring for the fixed split.
        binarize: if True, every pixel becomes exactly 0 or 1
            (``pixel / 255 > 0.5``); if False, it is ``pixel / 255``.
        dtype: floating dtype of the images (float32 or float64).
        path: another ``.npz`` with the same layout (``images`` uint8
            ``(N, 28, 28)``, ``labels`` uint8 ``(N,)``) or with its own split (``x_train``,
            ``y_train``, ``x_test``, ``y_test``, see the module docstring); None for the packaged file.

    Returns:
        A Dataset whose images are ``(1, 28, 28)`` arrays in ``[0, 1]``,
        named ``"<file stem>/<index in file>_label<digit>"``, e.g.
        ``"mnist5k/01234_label7"``. For the labels as an array use
        :func:`load_digits_with_labels`.

    Raises:
        SflnetError: bad split or dtype; the file is missing, unreadable, not
            an .npz, lacks an array, has wrong shapes/dtypes, or (for
            "train"/"test") a class with fewer than 500 images.
    """
    dataset, _ = load_digits_with_labels(split=split, binarize=binarize, dtype=dtype, path=path)
    return dataset
