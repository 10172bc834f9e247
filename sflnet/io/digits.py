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

A user folder (``--data FOLDER``) holds MNIST's own four IDX files, the files the MNIST site distributes
and torchvision, Keras and TensorFlow Datasets download (:data:`IDX_FILES`): ``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each raw or
gzip-compressed (``.gz``), also spelt with ``.idx`` (``train-images.idx3-ubyte``). Its split is its own,
exactly as the ``x_train`` ... layout: ``"train"`` is every ``train-*`` digit and ``"test"`` every ``t10k-*``
digit, in file order (``"all"``: train then test). An IDX file is a big-endian header -- two zero bytes, the
type code 0x08 (unsigned byte), the number of dimensions d, then d dimensions as uint32 -- followed by the
values in C order: images ``(N, 28, 28)`` (d = 3), labels ``(N,)`` (d = 1). Only the files a split needs
are read, when it is loaded: the two label files (small) and the images of the split.

Every image becomes a float array of shape ``(1, 28, 28)`` (one grey channel,
channels first like the colour images of :mod:`sflnet.io.images`) with the value
``pixel / 255`` in ``[0, 1]`` -- not ``[-1, 1]`` as the colour photos: the
VAE's decoder ends in a sigmoid and its pixels are Bernoulli probabilities.
With ``binarize=True`` (the default, like the binarised MNIST of the paper)
each value becomes exactly 0 or 1 by the test ``pixel / 255 > 0.5``.
"""

from __future__ import annotations

import gzip
import os
import pathlib
import zipfile
import zlib
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


# ---------------------------------------------------------------------------
# MNIST's own IDX files (--data FOLDER)
# ---------------------------------------------------------------------------

#: MNIST's four IDX files: (split, kind, file name without ``.gz``), in the order they are looked for.
IDX_FILES = (
    ("train", "images", "train-images-idx3-ubyte"),
    ("train", "labels", "train-labels-idx1-ubyte"),
    ("test", "images", "t10k-images-idx3-ubyte"),
    ("test", "labels", "t10k-labels-idx1-ubyte"),
)

#: The IDX type code of unsigned bytes, the only one MNIST's files (and sflnet) use.
IDX_UBYTE = 0x08

#: IDX type codes and their value types, to name a wrong one.
IDX_TYPES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32",
             0x0E: "float64"}

#: Number of dimensions of an IDX file of each kind: images (N, 28, 28), labels (N,).
IDX_DIMS = {"images": 3, "labels": 1}

#: The first two bytes of every gzip file.
_GZIP_MAGIC = b"\x1f\x8b"


def idx_file_names(name: str) -> tuple[str, ...]:
    """The file names that may hold IDX file ``name`` (e.g. ``"train-images-idx3-ubyte"``), in order of
    preference: raw before ``.gz`` (torchvision's ``raw/`` folder keeps both), the ``-idx`` spelling before
    the ``.idx`` one (``train-images.idx3-ubyte``)."""
    dotted = name.replace("-idx", ".idx")
    return (name, dotted, name + ".gz", dotted + ".gz")


def _find_idx_files(folder: pathlib.Path) -> dict[tuple[str, str], pathlib.Path]:
    """{(split, kind): path} of the four IDX files of ``folder`` (:data:`IDX_FILES`).

    Raises:
        SflnetError: one line naming every missing file and what the folder holds.
    """
    found, missing = {}, []
    for split, kind, name in IDX_FILES:
        for candidate in idx_file_names(name):
            if (folder / candidate).is_file():
                found[(split, kind)] = folder / candidate
                break
        else:
            missing.append(name)
    if missing:
        try:
            held = sorted(entry.name for entry in folder.iterdir())
        except OSError as exc:
            raise SflnetError(f"cannot list digits folder {folder}: {one_line(exc)}") from None
        shown = ", ".join(" ".join(name.split()) for name in held[:8]) or "nothing"
        if len(held) > 8:
            shown += f" and {len(held) - 8} more"
        if len(missing) == len(IDX_FILES):
            raise SflnetError(
                f"digits folder {folder} holds none of MNIST's four IDX files ({', '.join(missing)}; raw or "
                f".gz); it holds: {shown}"
            )
        raise SflnetError(f"digits folder {folder} lacks MNIST's {', '.join(missing)} (raw or .gz); it holds: {shown}")
    return found


def _idx_bytes(path: pathlib.Path) -> bytes:
    """The whole content of IDX file ``path``, decompressed if its name ends in ``.gz``.

    Raises:
        SflnetError: the file cannot be read, or is not a complete gzip stream.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SflnetError(f"cannot read digits file {path}: {one_line(exc)}") from None
    if not path.name.endswith(".gz"):
        return data
    if data[:2] != _GZIP_MAGIC:
        raise SflnetError(f"digits file {path} is not a gzip file (a corrupt .gz, or a raw IDX file named .gz)")
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:   # gzip.BadGzipFile is an OSError
        raise SflnetError(f"digits file {path} is a corrupt .gz ({one_line(exc)})") from None


def read_idx(path: PathLike, kind: str) -> np.ndarray:
    """Read one MNIST IDX file of uint8 values.

    Args:
        path: the file, raw or gzip-compressed (a name ending in ``.gz``).
        kind: ``"images"`` (3 dimensions, each image 28x28) or ``"labels"`` (1 dimension, digits 0-9).

    Returns:
        A read-only uint8 array of the file's shape: ``(N, 28, 28)`` images or ``(N,)`` labels (N ≥ 1).

    Raises:
        SflnetError: one line naming the file: unreadable or a corrupt .gz, a wrong magic number (not two
            zero bytes), a type code other than 0x08, a wrong number of dimensions, images not 28x28,
            fewer or more bytes than the header says, no values, labels outside 0-9.
    """
    path = pathlib.Path(path)
    ndim = IDX_DIMS[kind]
    data = _idx_bytes(path)
    if not data:
        raise SflnetError(f"digits file {path} is empty (0 bytes)")
    if len(data) < 4:
        raise SflnetError(f"digits file {path} is truncated: {len(data)} bytes, shorter than an IDX header")
    if data[:2] != b"\x00\x00":
        hint = " (it looks gzip-compressed: name it .gz)" if data[:2] == _GZIP_MAGIC else ""
        raise SflnetError(
            f"digits file {path} is not an IDX file: magic number 0x{data[:4].hex()}, an IDX file of {kind} "
            f"starts 0x0000{IDX_UBYTE:02x}{ndim:02x}{hint}"
        )
    if data[2] != IDX_UBYTE:
        what = IDX_TYPES.get(data[2], "unknown")
        raise SflnetError(
            f"digits file {path} holds IDX type 0x{data[2]:02x} ({what}), expected 0x{IDX_UBYTE:02x} (unsigned byte)"
        )
    if data[3] != ndim:
        raise SflnetError(
            f"digits file {path} has {data[3]} dimensions, an IDX file of {kind} has {ndim}: "
            f"{'(N, 28, 28)' if kind == 'images' else '(N,)'}"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise SflnetError(f"digits file {path} is truncated: {len(data)} bytes, its header alone is {header}")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    if kind == "images" and shape[1:] != (DIGITS_SIZE, DIGITS_SIZE):
        raise SflnetError(
            f"digits file {path} holds {shape[1]}x{shape[2]} images, expected {DIGITS_SIZE}x{DIGITS_SIZE}"
        )
    expected = int(np.prod(shape, dtype=np.int64))
    body = len(data) - header
    if body < expected:
        raise SflnetError(
            f"digits file {path} is truncated: its header says {shape[0]} {kind} ({expected} bytes), "
            f"it holds {body} bytes after the header"
        )
    if body > expected:
        raise SflnetError(
            f"digits file {path} has {body - expected} bytes more than its header says ({shape[0]} {kind}, "
            f"{expected} bytes)"
        )
    if shape[0] == 0:
        raise SflnetError(f"digits file {path} holds no {kind}")
    values = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)
    if kind == "labels" and values.max() >= NUM_CLASSES:
        raise SflnetError(
            f"digits file {path}: labels must be digits 0-{NUM_CLASSES - 1}, found {int(values.max())}"
        )
    return values


def _read_idx_split(folder: pathlib.Path, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The digits of ``split`` from a folder of MNIST's IDX files, reading only what the split needs (both
    label files, which are small, and the images of the split).

    Returns:
        ``(images, labels, positions, total)``: uint8 ``(n, 28, 28)`` and ``(n,)`` of the split in file order,
        int64 ``(n,)`` the index of each in the folder's train-then-test order (as the ``x_train`` layout
        numbers them), and the number of digits in train and test together.

    Raises:
        SflnetError: a missing or bad file (:func:`read_idx`), or image and label counts that differ.
    """
    paths = _find_idx_files(folder)
    labels = {part: read_idx(paths[(part, "labels")], "labels") for part in ("train", "test")}
    parts = ("train", "test") if split == "all" else (split,)
    images = {}
    for part in parts:
        images[part] = read_idx(paths[(part, "images")], "images")
        if images[part].shape[0] != labels[part].shape[0]:
            raise SflnetError(
                f"digits folder {folder}: {paths[(part, 'images')].name} has {images[part].shape[0]} images "
                f"but {paths[(part, 'labels')].name} has {labels[part].shape[0]} labels"
            )
    n_train, n_test = labels["train"].shape[0], labels["test"].shape[0]
    first = {"train": 0, "test": n_train}
    if len(parts) == 1:
        chosen_images, chosen_labels = images[split], labels[split]
    else:
        chosen_images = np.concatenate([images["train"], images["test"]])
        chosen_labels = np.concatenate([labels["train"], labels["test"]])
    positions = np.arange(first[parts[0]], first[parts[0]] + chosen_labels.shape[0], dtype=np.int64)
    return chosen_images, chosen_labels, positions, n_train + n_test


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
    if path.is_dir():           # MNIST's IDX files, their own split
        images, labels, positions, total = _read_idx_split(path, split)
        stem = path.name
    else:
        all_images, all_labels, n_train = _read_arrays(path)
        if n_train is not None:     # the file's own split (x_train / x_test)
            positions = {"train": np.arange(n_train), "test": np.arange(n_train, all_labels.shape[0]),
                         "all": np.arange(all_labels.shape[0])}[split].astype(np.int64)
        else:
            try:
                positions = split_indices(all_labels, split)
            except SflnetError as exc:
                raise SflnetError(f"digits file {path}: {exc}") from None
        images, labels, total = all_images[positions], all_labels[positions], all_images.shape[0]
        stem = path.stem
    count = positions.shape[0]

    # (n, 28, 28) uint8 -> (n, 1, 28, 28) in [0, 1]. Binarised: pixel / 255 > 0.5 exactly when
    # pixel >= 128 (127/255 < 0.5 < 128/255), so the 0/1 values come without a float64 copy of every
    # pixel. Grey: the division is done in float64 so that float32 and float64 results agree to the
    # last bit of float32.
    if binarize:
        values = (images >= 128).astype(dtype)
    else:
        values = (images.astype(np.float64) / 255.0).astype(dtype)
    values = values.reshape(count, 1, DIGITS_SIZE, DIGITS_SIZE)

    width = max(5, len(str(total - 1)))
    names = [f"{stem}/{i:0{width}d}_label{label}" for i, label in zip(positions.tolist(), labels.tolist())]
    what = "binarised" if binarize else "grey"
    if packaged:
        where = f"built-in digits {path.name}"
    elif path.is_dir():
        where = f"MNIST IDX folder {path}"
    else:
        where = f"digits file {path}"
    source = f"{where}, split {split!r} ({count} {what} images)"
    dataset = Dataset(names=names, images=list(values), source=source)
    return dataset, labels.astype(np.int64)


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
            ``y_train``, ``x_test``, ``y_test``, see the module docstring); a folder of MNIST's four IDX
            files (:data:`IDX_FILES`, raw or ``.gz``; its own split, like ``x_train`` ...); None for the
            packaged file.

    Returns:
        A Dataset whose images are ``(1, 28, 28)`` arrays in ``[0, 1]``,
        named ``"<file stem>/<index in file>_label<digit>"``, e.g.
        ``"mnist5k/01234_label7"``. For the labels as an array use
        :func:`load_digits_with_labels`.

    Raises:
        SflnetError: bad split or dtype; the file is missing, unreadable, not
            an .npz, lacks an array, has wrong shapes/dtypes, or (for
            "train"/"test") a class with fewer than 500 images; a folder lacks an IDX
            file or holds a bad one (:func:`read_idx`), or image and label counts differ.
    """
    dataset, _ = load_digits_with_labels(split=split, binarize=binarize, dtype=dtype, path=path)
    return dataset
