"""Property-based fuzzing (Hypothesis) of the image loader and the checkpoint loader.

Contract under test (sflnet.io.images, sflnet.io.checkpoint): whatever bytes a file holds,
loading it ends in either

* a clean error: :class:`sflnet.errors.SflnetError` with a one-line message that
  names the file, or
* a valid load: for images a ``(3, H, W)`` array of the requested float dtype with
  finite values in ``[-1, 1]`` (longer side = ``size``); for checkpoints a
  :class:`sflnet.io.checkpoint.Checkpoint` whose arrays have the expected names,
  shapes and dtype, are finite, and whose documented properties work,

never a traceback (any other exception fails the test), never a hang (Hypothesis
``deadline``: an example slower than :data:`DEADLINE_MS` fails) and never a write
(every load runs with the current directory set to a fresh folder whose listing
and file bytes are compared before and after; the pickled objects planted in
some checkpoints would create a file there if they were ever unpickled).

Seeds: PNG and JPEG files made here with Pillow (several colour modes, 16-bit,
palette with transparency, progressive, CMYK, EXIF orientation), one shipped demo
photo read as bytes, and real checkpoints written with
:func:`sflnet.io.checkpoint.save_checkpoint` (a CAE one in float32 and float64, a
compressed copy, a VAE one). They are mutated with Hypothesis strategies:
random bytes, truncation, bit flips, overwrites with random or "interesting"
values, inserted/deleted/duplicated/repeated chunks, format tokens, splices of
two seeds; for PNG optionally with the chunk CRCs repaired (so the mutation
reaches the decoder) and with the IHDR width/height (JPEG: SOF) replaced; for
checkpoints also mutated ``.npy`` members re-zipped into a valid zip, and
structurally valid archives with missing/extra keys, wrong dtypes and shapes,
NaN/Inf, pickled object arrays and a ``meta`` JSON mutated as a tree or as text.

Every Hypothesis test is derandomized (``derandomize=True``, ``database=None``),
so CI runs the same cases every time. Number of cases per test (``max_examples``,
see :data:`EXAMPLES`; Hypothesis stops earlier only when it has found a failure
or has exhausted the strategy):

=============================================  =====
test_load_image_mutated_bytes                    300
test_load_dataset_mutated_file                   150
test_image_header_dimensions                     120
test_checkpoint_mutated_zip_bytes                250
test_checkpoint_mutated_npy_members              200
test_checkpoint_structural_mutations             200
test_checkpoint_mutated_meta_text                150
=============================================  =====
total Hypothesis cases                          1370   (image loader 570, checkpoint loader 800)
=============================================  =====

Besides: test_checkpoint_meta_type_confusion_exhaustive runs 465 fixed cases (every
node of depth 1-2 of a checkpoint's meta replaced by 13+ values of other JSON types)
and the CLI tests 10 fixed mutated inputs (6 for ``evaluate``, 4 for ``train``).
"""

import copy
import hashlib
import io
import json
import os
import shutil
import struct
import tempfile
import warnings
import zipfile
import zlib
from contextlib import contextmanager

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from PIL import Image

from sflnet.backend import DTYPES
from sflnet.io import checkpoint as ck
from sflnet.io.images import IMAGE_EXTENSIONS, MAX_IMAGE_PIXELS, demo_dir, load_dataset, load_image
from sflnet.errors import SflnetError
from sflnet.models import BY_ARCHITECTURE, CAE, VAE
from sflnet.models import cae as cae_model
from sflnet.models import vae as vae_model
from sflnet.optim import OPTIMIZER_STATE

DEADLINE_MS = 2000

EXAMPLES = {
    "test_load_image_mutated_bytes": 300,
    "test_load_dataset_mutated_file": 150,
    "test_image_header_dimensions": 120,
    "test_checkpoint_mutated_zip_bytes": 250,
    "test_checkpoint_mutated_npy_members": 200,
    "test_checkpoint_structural_mutations": 200,
    "test_checkpoint_mutated_meta_text": 150,
}
TOTAL_EXAMPLES = sum(EXAMPLES.values())
assert TOTAL_EXAMPLES >= 1000


def fuzz_settings(name):
    """Reproducible, hang-detecting settings for one fuzz test."""
    return settings(max_examples=EXAMPLES[name], deadline=DEADLINE_MS, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


# ---------------------------------------------------------------------------
# Seeds: real PNG, JPEG and .npz bytes
# ---------------------------------------------------------------------------

def _encode(image, fmt, **options):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _make_image_seeds():
    rng = np.random.default_rng(1234)
    rgb = Image.fromarray(rng.integers(0, 256, size=(9, 12, 3), dtype=np.uint8))          # 12x9
    grey = Image.fromarray(rng.integers(0, 256, size=(9, 12), dtype=np.uint8))
    rgba = Image.fromarray(rng.integers(0, 256, size=(9, 12, 4), dtype=np.uint8))
    sixteen = Image.fromarray(rng.integers(0, 65536, size=(9, 12), dtype=np.uint16))      # mode I;16
    palette = rgb.quantize(colors=7)
    exif = Image.Exif()
    exif[0x0112] = 6                                                                          # rotate 90°
    png = {
        "rgb.png": _encode(rgb, "PNG"),
        "grey.png": _encode(grey, "PNG"),
        "grey_alpha.png": _encode(grey.convert("LA"), "PNG"),
        "rgba.png": _encode(rgba, "PNG"),
        "palette.png": _encode(palette, "PNG", transparency=0),
        "onebit.png": _encode(grey.convert("1"), "PNG"),
        "sixteen.png": _encode(sixteen, "PNG"),
        "exif.png": _encode(rgb, "PNG", exif=exif.tobytes()),
    }
    jpeg = {
        "rgb.jpg": _encode(rgb, "JPEG", quality=80),
        "grey.jpg": _encode(grey, "JPEG"),
        "progressive.jpg": _encode(rgb, "JPEG", progressive=True),
        "cmyk.jpg": _encode(rgb.convert("CMYK"), "JPEG"),
        "subsampled.jpg": _encode(rgb, "JPEG", subsampling=2),
        "exif.jpg": _encode(rgb, "JPEG", exif=exif.tobytes()),
    }
    # One shipped demo photo (300x200 RGB PNG), read as bytes from the installed package.
    demo = {"demo.png": (demo_dir() / "rocket.png").read_bytes()}
    return png, jpeg, demo


PNG_SEEDS, JPEG_SEEDS, DEMO_SEEDS = _make_image_seeds()
IMAGE_SEEDS = {**PNG_SEEDS, **JPEG_SEEDS, **DEMO_SEEDS}
GOOD_PNG = PNG_SEEDS["rgb.png"]

CAE_CONFIG = {"model": "cae", "loss": "pl+sfl", "sigmas": [0.8, 1.6, 3.2], "sfl_weights": [100.0, 10.0, 10.0],
              "pl_weights": [1.0, 1.0, 1.0], "stft_window": 16, "stft_stride": 4, "stft_window_fn": "hann",
              "stft_phase_weight": 9.0, "dtype": "float32", "size": 16, "lr": 0.02, "momentum": 0.5,
              "data": None, "include": [], "exclude": [], "skip_bad": False, "seed": 0}
VAE_CONFIG = dict(CAE_CONFIG, model="vae", loss=vae_model.DEFAULT_EXPRESSION, pl_weights=[1.0], size=None,
                  beta=1.0, binarize=True)


def _checkpoint_bytes(spec, dtype, compressed=False):
    """A real checkpoint written by save_checkpoint (in a throw-away folder) -> its bytes."""
    if spec is CAE:
        params = cae_model.init_params(seed=0, std=0.1, dtype=dtype)
        config = dict(CAE_CONFIG, dtype=np.dtype(dtype).name)
    else:
        params = vae_model.init_params(seed=0, dtype=dtype)
        config = dict(VAE_CONFIG, dtype=np.dtype(dtype).name)
    rng = np.random.default_rng(5)
    state = {prefix: {n: rng.normal(size=p.shape).astype(dtype) for n, p in params.items()}
             for prefix in OPTIMIZER_STATE[spec.optimizer]}
    generator = np.random.default_rng(7)
    generator.permutation(5)
    meta = ck.make_meta(3, config, generator.bit_generator.state, spec=spec, optimizer_step=3)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "seed.npz")
        ck.save_checkpoint(path, params, state, meta)
        if not compressed:
            with open(path, "rb") as stream:
                return stream.read()
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        return buffer.getvalue()


CKPT_SEEDS = {
    "cae32.npz": _checkpoint_bytes(CAE, np.float32),
    "cae64.npz": _checkpoint_bytes(CAE, np.float64),
    "cae32_deflated.npz": _checkpoint_bytes(CAE, np.float32, compressed=True),
    "vae32.npz": _checkpoint_bytes(VAE, np.float32),
}


def _npz_members(data):
    """{member name: bytes} of a zip."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def _npz_arrays(data):
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


CKPT_MEMBERS = {name: _npz_members(data) for name, data in CKPT_SEEDS.items()}
CKPT_ARRAYS = {name: _npz_arrays(data) for name, data in CKPT_SEEDS.items()}
CKPT_METAS = {name: json.loads(str(arrays["meta"])) for name, arrays in CKPT_ARRAYS.items()}


# ---------------------------------------------------------------------------
# Byte-level mutation strategies
# ---------------------------------------------------------------------------

# Format tokens (like an AFL dictionary): PNG, JPEG, zip and .npy structure.
TOKENS = [
    b"\x89PNG\r\n\x1a\n", b"IHDR", b"IDAT", b"IEND", b"PLTE", b"tRNS", b"iCCP", b"zTXt", b"eXIf", b"acTL",
    b"fcTL", b"\x00\x00\x00\x0dIHDR", b"\xff\xd8", b"\xff\xd9", b"\xff\xc0", b"\xff\xc2", b"\xff\xc4",
    b"\xff\xda", b"\xff\xdb", b"\xff\xdd", b"\xff\xe1Exif\x00\x00", b"\xff\xee", b"PK\x03\x04", b"PK\x01\x02",
    b"PK\x05\x06", b"PK\x06\x06", b"\x93NUMPY\x01\x00", b"\x93NUMPY\x02\x00", b"\x93NUMPY\x03\x00",
    b"'descr': '|O'", b"'descr': '<f8'", b"'descr': '<U1'", b"'fortran_order': True", b"'shape': (", b"),",
    b"(2147483647,", b"(0,", b"-1,", b"{", b"}", b"[", b"]", b"\"", b"\\", b"NaN", b"Infinity", b"1e999",
]
INTERESTING = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\x01", b"\x00\x00", b"\xff\xff", b"\x7f\xff", b"\x80\x00",
               b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00",
               b"\x00\x00\xff\xff", b"\x00\x01\x00\x00"]
OPERATIONS = ("truncate", "flip", "overwrite", "interesting", "insert", "delete", "duplicate", "repeat",
              "token", "splice", "random")


class Case:
    """A fuzz input: the bytes (or arrays) plus a short recipe, so that a failure report
    shows how the input was made instead of a 100 kB repr."""

    def __init__(self, value, recipe, data=None):
        self.value = value
        self.recipe = list(recipe)
        self.data = data if data is not None else value

    def __repr__(self):
        size = f"{len(self.data)} bytes, sha256 {hashlib.sha256(self.data).hexdigest()[:16]}" \
            if isinstance(self.data, (bytes, bytearray)) else ""
        return f"Case({'; '.join(self.recipe)}{' -> ' if size else ''}{size})"


def _short(chunk):
    return repr(bytes(chunk[:24])) + (f"...({len(chunk)} bytes)" if len(chunk) > 24 else "")


@st.composite
def mutate(draw, data, others=(), tokens=TOKENS, max_ops=4):
    """1..max_ops random mutations of ``data`` (bytes); ``others`` are splice partners.
    returns (mutated bytes, list of the operations as text)."""
    data = bytearray(data)
    ops = []
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(OPERATIONS))
        n = len(data)
        if op == "truncate":
            cut = draw(st.integers(0, n))
            data = data[:cut]
            ops.append(f"truncate at {cut}")
        elif op == "flip" and n:
            pos, bit = draw(st.integers(0, n - 1)), draw(st.integers(0, 7))
            data[pos] ^= 1 << bit
            ops.append(f"flip bit {bit} of byte {pos}")
        elif op in ("overwrite", "interesting") and n:
            pos = draw(st.integers(0, n - 1))
            chunk = draw(st.binary(min_size=1, max_size=8) if op == "overwrite" else st.sampled_from(INTERESTING))
            data[pos:pos + len(chunk)] = chunk
            ops.append(f"overwrite at {pos} with {_short(chunk)}")
        elif op == "insert":
            pos = draw(st.integers(0, n))
            chunk = draw(st.binary(min_size=1, max_size=64))
            data[pos:pos] = chunk
            ops.append(f"insert at {pos} {_short(chunk)}")
        elif op == "delete" and n:
            pos, length = draw(st.integers(0, n - 1)), draw(st.integers(1, 64))
            del data[pos:pos + length]
            ops.append(f"delete {length} at {pos}")
        elif op == "duplicate" and n:
            start, length, pos = draw(st.integers(0, n - 1)), draw(st.integers(1, 256)), draw(st.integers(0, n))
            data[pos:pos] = data[start:start + length]
            ops.append(f"copy {length} from {start} to {pos}")
        elif op == "repeat":
            pos = draw(st.integers(0, n))
            unit = draw(st.sampled_from(tokens) | st.binary(min_size=1, max_size=2))
            times = draw(st.integers(1, 4096 // len(unit) + 1))
            data[pos:pos] = unit * times
            ops.append(f"insert at {pos} {_short(unit)} x {times}")
        elif op == "token":
            pos, token, replace = draw(st.integers(0, n)), draw(st.sampled_from(tokens)), draw(st.booleans())
            if replace:
                data[pos:pos + len(token)] = token
            else:
                data[pos:pos] = token
            ops.append(f"{'overwrite' if replace else 'insert'} at {pos} {_short(token)}")
        elif op == "splice" and others:
            index = draw(st.integers(0, len(others) - 1))
            other = others[index]
            cut, start = draw(st.integers(0, n)), draw(st.integers(0, len(other)))
            data = data[:cut] + other[start:]
            ops.append(f"keep {cut} bytes, then partner #{index} from {start}")
        elif op == "random":
            data = bytearray(draw(st.binary(max_size=512)))
            ops.append(f"replace all by {_short(data)}")
    return bytes(data), ops


def fix_png_crcs(data):
    """Recompute the CRC of every complete chunk of a (mutated) PNG, so that Pillow's
    CRC check passes and the mutation reaches the chunk parsers and the decoder."""
    data = bytearray(data)
    pos = 8
    while pos + 12 <= len(data):
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        end = pos + 8 + length
        if end + 4 > len(data):
            break
        data[end:end + 4] = struct.pack(">I", zlib.crc32(bytes(data[pos + 4:end])) & 0xFFFFFFFF)
        pos = end + 4
    return bytes(data)


@st.composite
def mutated_image(draw):
    """Case: mutated bytes of an image seed, with ``extension`` (the file name's suffix)."""
    names = sorted(IMAGE_SEEDS)
    name = draw(st.sampled_from(names))
    others = [IMAGE_SEEDS[k] for k in names]
    data, ops = draw(mutate(IMAGE_SEEDS[name], others))
    recipe = [f"seed {name}", *ops, f"(splice partners: {names})"] if any("partner" in o for o in ops) \
        else [f"seed {name}", *ops]
    if name.endswith(".png") and draw(st.booleans()):
        data = fix_png_crcs(data)
        recipe.append("fix PNG CRCs")
    # Mostly the seed's own extension; sometimes another one (the format is sniffed, not guessed).
    own = os.path.splitext(name)[1]
    extension = draw(st.sampled_from([own, own, own.upper(), *IMAGE_EXTENSIONS]))
    recipe.append(f"saved as *{extension}")
    case = Case(data, recipe)
    case.extension = extension
    return case


# ---------------------------------------------------------------------------
# Checking the outcome: clean error or valid load, and nothing written
# ---------------------------------------------------------------------------

def _event(text):
    """hypothesis.event (statistics), ignored outside a Hypothesis test."""
    try:
        event(text)
    except InvalidArgument:
        pass


def snapshot(folder):
    """{relative path: bytes (files) or None (folders)} of everything under ``folder``."""
    result = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            result[os.path.relpath(os.path.join(root, name), folder)] = None
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as stream:
                result[os.path.relpath(path, folder)] = stream.read()
    return result


@contextmanager
def fresh_folder(base):
    """A new empty folder under ``base``, also the current directory while it is in use."""
    folder = tempfile.mkdtemp(dir=base)
    old_cwd = os.getcwd()
    os.chdir(folder)
    try:
        yield folder
    finally:
        os.chdir(old_cwd)
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def nothing_written(folder):
    before = snapshot(folder)
    yield
    after = snapshot(folder)
    assert sorted(after) == sorted(before), f"the load changed the folder: {sorted(set(after) ^ set(before))}"
    changed = [name for name in before if before[name] != after[name]]
    assert not changed, f"the load modified {changed}"


def assert_clean_error(exc, names_file):
    message = str(exc)
    assert isinstance(exc, SflnetError)
    assert message and message.splitlines() == [message], repr(message)     # one line (any line break)
    assert names_file in message, (names_file, message)
    # Statistics (pytest --hypothesis-show-statistics): which checks the cases reach.
    reason = message.replace(names_file, "PATH").split("(")[0].split(":")[-1 if ": " in message else 0]
    _event("error: " + " ".join(reason.split()[:6]))


def assert_valid_image(image, size, dtype):
    _event("valid load")
    assert isinstance(image, np.ndarray)
    assert image.dtype == np.dtype(dtype)
    assert image.ndim == 3 and image.shape[0] == 3 and min(image.shape[1:]) >= 1, image.shape
    if size:
        assert max(image.shape[1:]) == size, image.shape
    assert np.isfinite(image).all()
    assert image.min() >= -1.0 and image.max() <= 1.0


def assert_valid_checkpoint(checkpoint, path):
    _event("valid load")
    spec = checkpoint.spec
    assert spec in BY_ARCHITECTURE.values()
    assert checkpoint.path == os.fspath(path)
    dtype = checkpoint.dtype
    assert dtype.name in DTYPES
    assert set(checkpoint.params) == set(spec.param_names)
    assert set(checkpoint.state) == set(OPTIMIZER_STATE[spec.optimizer])
    for arrays in (checkpoint.params, *checkpoint.state.values()):
        for name, array in arrays.items():
            assert isinstance(array, np.ndarray)
            assert array.shape == spec.param_shapes[name] and array.dtype == dtype
            assert np.isfinite(array).all()
    assert isinstance(checkpoint.epoch, int) and checkpoint.epoch >= 0
    assert isinstance(checkpoint.config, dict)
    step = checkpoint.optimizer_step
    assert isinstance(step, int) and not isinstance(step, bool) and step >= 0, step
    checkpoint.rng().random()
    if spec is CAE:
        assert isinstance(checkpoint.velocity, dict)


def check_checkpoint_file(folder, filename, data):
    """Write ``data`` to ``folder/filename``, load it; clean error or valid checkpoint, nothing written."""
    path = os.path.join(folder, filename)
    with open(path, "wb") as stream:
        stream.write(data)
    with nothing_written(folder):
        try:
            checkpoint = ck.load_checkpoint(path)
        except SflnetError as exc:
            assert_clean_error(exc, path)
            return "error"
    assert_valid_checkpoint(checkpoint, path)
    return "loaded"


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory):
    """Base folder of this module's fuzz cases; each case gets a fresh folder inside."""
    return str(tmp_path_factory.mktemp("fuzz"))


# ---------------------------------------------------------------------------
# Image loader
# ---------------------------------------------------------------------------

@fuzz_settings("test_load_image_mutated_bytes")
@given(case=mutated_image(), size=st.sampled_from([16, 0, 1, 7]), dtype=st.sampled_from([np.float32, np.float64]))
def test_load_image_mutated_bytes(fuzz_root, case, size, dtype):
    extension, data = case.extension, case.data
    with fresh_folder(fuzz_root) as folder:
        path = os.path.join(folder, "fuzz" + extension)
        with open(path, "wb") as stream:
            stream.write(data)
        with nothing_written(folder):
            try:
                image = load_image(path, size=size, dtype=dtype)
            except SflnetError as exc:
                assert_clean_error(exc, path)
                return
        assert_valid_image(image, size, dtype)


@fuzz_settings("test_load_dataset_mutated_file")
@given(case=mutated_image(), skip_bad=st.booleans(), size=st.sampled_from([16, 0]))
def test_load_dataset_mutated_file(fuzz_root, case, skip_bad, size):
    """A folder with one good PNG and one mutated file: every file loads, or a clean error
    (skip_bad=False) / one one-line warning per skipped file naming it (skip_bad=True)."""
    extension, data = case.extension, case.data
    with fresh_folder(fuzz_root) as folder:
        images = os.path.join(folder, "images")
        os.mkdir(images)
        with open(os.path.join(images, "a_good.png"), "wb") as stream:
            stream.write(GOOD_PNG)
        bad_name = "b_fuzz" + extension
        with open(os.path.join(images, bad_name), "wb") as stream:
            stream.write(data)
        warnings = []
        with nothing_written(folder):
            try:
                dataset = load_dataset(paths=[images], size=size, skip_bad=skip_bad, dtype=np.float32,
                                       warn=warnings.append)
            except SflnetError as exc:
                assert not skip_bad, f"skip_bad=True with a good image still failed: {exc}"
                assert_clean_error(exc, os.path.join(images, bad_name))
                return
        assert dataset.names in (["a_good.png"], ["a_good.png", bad_name])
        if len(dataset) == 1:
            assert skip_bad
            assert len(warnings) == 1 and warnings[0].startswith(f"skipping {bad_name}: "), warnings
            assert warnings[0].splitlines() == [warnings[0]], warnings
        else:
            assert warnings == []
        for image in dataset.images:
            assert_valid_image(image, size, np.float32)


def _set_png_size(data, width, height):
    data = bytearray(data)
    data[16:24] = struct.pack(">II", width, height)          # IHDR is always the first chunk
    return fix_png_crcs(data)


def _set_jpeg_size(data, width, height):
    data = bytearray(data)
    for marker in (b"\xff\xc0", b"\xff\xc1", b"\xff\xc2"):
        pos = data.find(marker)
        if pos >= 0:
            data[pos + 5:pos + 9] = struct.pack(">HH", height, width)
    return bytes(data)


_SMALL_SIDE = st.integers(1, 1024)
# JPEG sizes are 16-bit. Under the limit, JPEG sizes are kept to <= 1024 x 1024: libjpeg fills a
# short scan with zeros instead of failing, so a ~600-byte JPEG claiming e.g. 7000x7000 is
# *decoded* (~14 s, ~1.9 GB) - see the report that came with this file.
_JPEG_DIMENSIONS = st.one_of(
    st.tuples(_SMALL_SIDE, _SMALL_SIDE),
    # over the limit: width * height > MAX_IMAGE_PIXELS
    st.integers(MAX_IMAGE_PIXELS // 65535 + 1, 65535).flatmap(
        lambda w: st.tuples(st.just(w), st.integers(MAX_IMAGE_PIXELS // w + 1, 65535))),
    st.sampled_from([(0, 0), (0, 9), (12, 0), (65535, 65535), (7072, 7072)]),
)
_PNG_DIMENSIONS = st.one_of(
    st.tuples(_SMALL_SIDE, _SMALL_SIDE),
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    st.tuples(st.integers(1, 2**16), st.integers(1, 2**16)),
    st.sampled_from([(7071, 7071), (7072, 7072), (50_000_000, 1), (1, 50_000_001), (2**31, 1), (2**31 - 1, 2),
                     (0, 0), (2**32 - 1, 2**32 - 1), (100_000, 1000)]),
)


@fuzz_settings("test_image_header_dimensions")
@given(data=st.data(), seed=st.sampled_from(sorted(PNG_SEEDS) + sorted(JPEG_SEEDS) + ["demo.png"]))
def test_image_header_dimensions(fuzz_root, data, seed):
    """Corrupted width/height in the PNG IHDR (CRC repaired) or the JPEG SOF: a clean error
    ("too large" above MAX_IMAGE_PIXELS, checked before decoding) or a valid load, never a
    memory blow-up."""
    png = seed.endswith(".png")
    width, height = data.draw(_PNG_DIMENSIONS if png else _JPEG_DIMENSIONS, label="width, height")
    raw = IMAGE_SEEDS[seed]
    mutated = _set_png_size(raw, width, height) if png else _set_jpeg_size(raw, width, height)
    with fresh_folder(fuzz_root) as folder:
        path = os.path.join(folder, "dims" + os.path.splitext(seed)[1])
        with open(path, "wb") as stream:
            stream.write(mutated)
        with nothing_written(folder):
            try:
                image = load_image(path, size=16)
            except SflnetError as exc:
                assert_clean_error(exc, path)
                if width * height > MAX_IMAGE_PIXELS:
                    assert "too large" in str(exc), str(exc)
                return
        assert width * height <= MAX_IMAGE_PIXELS
        assert_valid_image(image, 16, np.float32)


# ---------------------------------------------------------------------------
# Checkpoint loader
# ---------------------------------------------------------------------------

@st.composite
def mutated_checkpoint_bytes(draw):
    names = sorted(CKPT_SEEDS)
    name = draw(st.sampled_from(names))
    others = [CKPT_SEEDS[k] for k in names] + [GOOD_PNG]
    data, ops = draw(mutate(CKPT_SEEDS[name], others))
    return Case(data, [f"seed {name}", *ops] + ([f"(partners: {names} + rgb.png)"] if any(
        "partner" in o for o in ops) else []))


@fuzz_settings("test_checkpoint_mutated_zip_bytes")
@given(case=mutated_checkpoint_bytes())
def test_checkpoint_mutated_zip_bytes(fuzz_root, case):
    with fresh_folder(fuzz_root) as folder:
        check_checkpoint_file(folder, "checkpoint.npz", case.data)


NPY_TOKENS = TOKENS + [b"'descr': '|S3'", b"'descr': '<c16'", b"'descr': '<i8'", b"'descr': [('a', '<f4')]",
                       b"'shape': ()", b"'shape': (1, 1, 1, 1, 1)", b"'shape': (99999999999,", b" " * 70]
MEMBER_NAMES = ["meta", "meta.npy", "w2", "../../escape.npy", "/absolute.npy", "sub/dir/b2.npy", "w2.npy.npy",
                "META.npy", ""]
COMPRESSIONS = [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA]


@st.composite
def rezipped_checkpoint(draw):
    """A valid zip whose members come from a real checkpoint, one or two of them mutated
    (bytes, name), some dropped or duplicated: the mutation reaches numpy's .npy parser
    and sflnet's checks instead of stopping at the zip CRC."""
    seed = draw(st.sampled_from(sorted(CKPT_MEMBERS)))
    members = list(CKPT_MEMBERS[seed].items())
    recipe = [f"seed {seed}"]
    for _ in range(draw(st.integers(1, 2))):
        if not members:
            break
        index = draw(st.integers(0, len(members) - 1))
        name, payload = members[index]
        action = draw(st.sampled_from(["bytes", "bytes", "bytes", "rename", "drop", "duplicate"]))
        if action == "bytes":
            partners = [p for _, p in members]
            payload, ops = draw(mutate(payload, partners, tokens=NPY_TOKENS, max_ops=2))
            members[index] = (name, payload)
            recipe.append(f"member {name}: {', '.join(ops)}")
        elif action == "rename":
            new_name = draw(st.sampled_from(MEMBER_NAMES))
            members[index] = (new_name, payload)
            recipe.append(f"rename member {name} to {new_name!r}")
        elif action == "drop":
            del members[index]
            recipe.append(f"drop member {name}")
        else:
            payload, ops = draw(mutate(payload, tokens=NPY_TOKENS, max_ops=1))
            members.append((name, payload))
            recipe.append(f"append a second {name}: {', '.join(ops)}")
    # (bzip2 and lzma are slow on the 0.9 MB VAE checkpoint: the CAE ones only)
    compression = draw(st.sampled_from(COMPRESSIONS if seed.startswith("cae") else COMPRESSIONS[:1]))
    recipe.append(f"zip with compression {compression}")
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)          # zipfile: "Duplicate name"
        with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
            for name, payload in members:
                archive.writestr(zipfile.ZipInfo(name or "noname"), payload, compress_type=compression)
    return Case(buffer.getvalue(), recipe)


@fuzz_settings("test_checkpoint_mutated_npy_members")
@given(case=rezipped_checkpoint())
def test_checkpoint_mutated_npy_members(fuzz_root, case):
    with fresh_folder(fuzz_root) as folder:
        check_checkpoint_file(folder, "checkpoint.npz", case.data)


class _Armed:
    """Unpickling this creates the file ``path`` (relative: in the watched current folder)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


INTERESTING_STRINGS = ["", "cae", "vae", *BY_ARCHITECTURE, "sflnet-checkpoint", "float16", "float32", "float64",
                       "int32", "object", "<f4", "pl", "sfl", "pl+sfl", "1*sfl", "0*pl", "pl+pl", "ssim", "stft",
                       "500*ssim+0.00015*stft", "1e999*pl", "PCG64", "MT19937", "Philox", "SFC64", "BitGenerator",
                       "SeedSequence", "Generator", "hann", "rect", "velocity", "adam", "momentum-sgd", "\x00",
                       "\n", "\u2028", "\ud800"]
JSON_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.integers(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.sampled_from(INTERESTING_STRINGS))
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8) | st.sampled_from(INTERESTING_STRINGS), inner,
                                             max_size=4), max_leaves=8)


def _json_paths(node, prefix=()):
    """Every path (tuple of keys/indices) inside a JSON document, the root included."""
    yield prefix
    if isinstance(node, dict):
        for key in node:
            yield from _json_paths(node[key], prefix + (key,))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _json_paths(item, prefix + (index,))


def _get(node, path):
    for key in path:
        node = node[key]
    return node


def _retyped(value):
    """(description, value) pairs: ``value`` turned into other JSON types - type confusion,
    e.g. a dict replaced by one of its values, a number by its text, a list by its first item."""
    options = [("unwrapped", item) for item in (value.values() if isinstance(value, dict) else
                                                 value if isinstance(value, list) else ())]
    options += [("wrapped in a list", [value]), ("wrapped in a dict", {"name": value}),
                ("as text", json.dumps(value) if not isinstance(value, str) else value + "x"),
                ("null", None), ("true", True), ("zero", 0), ("minus one", -1), ("a float", 2.5),
                ("NaN", float("nan")), ("empty text", ""), ("empty list", []), ("empty dict", {})]
    return [(kind, copy.deepcopy(item)) for kind, item in options]


def _brief(value, limit=120):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


@st.composite
def mutated_meta(draw, meta):
    """The meta document with 1..3 tree mutations: a node replaced by a random JSON value or
    by another node of the same document, a key deleted, or a key added.
    returns (document, list of the mutations as text)."""
    meta = copy.deepcopy(meta)
    ops = []
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_json_paths(meta))
        # Half of the time a node near the top (meta's own keys, config, architecture, ...).
        shallow = [p for p in paths if len(p) <= 2]
        path = draw(st.sampled_from(shallow if draw(st.booleans()) else paths))
        where = "meta" + "".join(f"[{key!r}]" for key in path)
        action = draw(st.sampled_from(["retype", "replace", "replace", "swap", "delete", "add"]))
        if action == "retype":
            kind, value = draw(st.sampled_from(_retyped(_get(meta, path))))
            ops.append(f"{where} = {kind}: {_brief(value)}")
            if not path:
                meta = value
            else:
                _get(meta, path[:-1])[path[-1]] = value
        elif action in ("replace", "swap"):
            if action == "replace":
                value = draw(JSON_VALUES)
                ops.append(f"{where} = {_brief(value)}")
            else:
                source = draw(st.sampled_from(paths))
                value = copy.deepcopy(_get(meta, source))
                ops.append(f"{where} = meta{''.join(f'[{key!r}]' for key in source)}")
            if not path:
                meta = value
            else:
                _get(meta, path[:-1])[path[-1]] = value
        elif action == "delete" and path:
            del _get(meta, path[:-1])[path[-1]]
            ops.append(f"del {where}")
        elif action == "add":
            node = _get(meta, path)
            if isinstance(node, dict):
                key = draw(st.text(max_size=8) | st.sampled_from(INTERESTING_STRINGS))
                node[key] = draw(JSON_VALUES)
                ops.append(f"{where}[{key!r}] = {_brief(node[key])}")
            elif isinstance(node, list):
                index = draw(st.integers(0, len(node)))
                node.insert(index, draw(JSON_VALUES))
                ops.append(f"{where}.insert({index}, {_brief(node[index])})")
    return meta, ops


def _meta_array(kind, text):
    """The ``meta`` member: a 0-d unicode array (as written), or of a wrong type."""
    if kind == "unicode":
        return np.array(text)
    if kind == "bytes":
        return np.array(text.encode("utf-8", "surrogatepass"))
    if kind == "list":
        return np.array([text, text])
    if kind == "number":
        return np.array(3.0)
    if kind == "pickled":
        return np.array(text, dtype=object)
    return np.array([], dtype="<U1")


_ARRAY_DTYPES = ["float16", "float32", "float64", "longdouble", "int32", "uint8", "bool", "complex64", "<U4", "|S4",
                 ">f4", ">f8"]


def _npz_bytes(arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@st.composite
def structural_checkpoint(draw):
    """Case: .npz bytes written by np.savez (object arrays pickled, as numpy does by default)
    from a real checkpoint's arrays with a mutated meta and/or mutated arrays."""
    seed = draw(st.sampled_from(sorted(CKPT_ARRAYS)))
    arrays = dict(CKPT_ARRAYS[seed])
    recipe = [f"seed {seed}"]
    meta = CKPT_METAS[seed]
    if draw(st.booleans()):
        meta, ops = draw(mutated_meta(meta))
        recipe += ops
    text = json.dumps(meta, allow_nan=True)
    kind = draw(st.sampled_from(["unicode"] * 25 + ["bytes", "list", "number", "pickled", "empty"]))
    arrays["meta"] = _meta_array(kind, text)
    if kind != "unicode":
        recipe.append(f"meta stored as {kind}")
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(sorted(arrays)))
        array = arrays[key]
        action = draw(st.sampled_from(["delete", "dtype", "shape", "nonfinite", "pickled", "extra", "scalar"]))
        if action == "delete":
            del arrays[key]
            recipe.append(f"delete {key}")
        elif action == "dtype" and array.dtype.kind in "fiub":
            dtype = draw(st.sampled_from(_ARRAY_DTYPES))
            with np.errstate(invalid="ignore", over="ignore"):
                arrays[key] = array.astype(dtype)
            recipe.append(f"{key} as {dtype}")
        elif action == "shape":
            flat = array.reshape(-1)
            shapes = {"flat": flat, "one short": flat[:-1] if flat.size else flat,
                      "doubled": np.concatenate([flat, flat]), "transposed": array.T, "extra axis": array[None],
                      "empty": flat[:0]}
            how = draw(st.sampled_from(sorted(shapes)))
            arrays[key] = shapes[how]
            recipe.append(f"{key} {how}")
        elif action == "nonfinite" and array.dtype.kind == "f" and array.size:
            array = array.copy()
            index, value = draw(st.integers(0, array.size - 1)), draw(st.sampled_from([np.nan, np.inf, -np.inf]))
            array.reshape(-1)[index] = value
            arrays[key] = array
            recipe.append(f"{key}.flat[{index}] = {value}")
        elif action == "pickled":
            # The object would create ./unpickled in the watched folder if it were ever unpickled.
            arrays[key] = np.array([_Armed("unpickled")], dtype=object)
            recipe.append(f"{key} = pickled object array")
        elif action == "extra":
            extra = draw(st.sampled_from(["extra", "velocity_w2x", "adam_m_w2", "meta2"]))
            arrays[extra] = np.zeros(3)
            recipe.append(f"add {extra}")
        elif action == "scalar":
            arrays[key] = np.array(array.reshape(-1)[0] if array.size else 0.0)
            recipe.append(f"{key} as 0-d")
    case = Case(arrays, recipe, data=_npz_bytes(arrays))
    case.pickled = any(np.asarray(a).dtype.hasobject for a in arrays.values())
    return case


@fuzz_settings("test_checkpoint_structural_mutations")
@given(case=structural_checkpoint())
def test_checkpoint_structural_mutations(fuzz_root, case):
    """Structurally valid .npz files with wrong contents: clean error or valid load; pickles
    are refused (an error), never loaded."""
    with fresh_folder(fuzz_root) as folder:
        outcome = check_checkpoint_file(folder, "checkpoint.npz", case.data)
        if case.pickled:
            assert outcome == "error"


def _type_confusion_cases(seed="cae32.npz"):
    """(path, kind, value) for every node of depth 1 or 2 of the seed's meta (the VAE's meta has
    the same structure; the Hypothesis tests above cover it)."""
    meta = CKPT_METAS[seed]
    return [(path, kind, value) for path in _json_paths(meta) if 1 <= len(path) <= 2
            for kind, value in _retyped(_get(meta, path))]


TYPE_CONFUSION_CASES = _type_confusion_cases()


def test_checkpoint_meta_type_confusion_exhaustive(fuzz_root):
    """Every key of meta and of its dicts (config, architecture, optimizer, rng_state) replaced
    in turn by each value of :func:`_retyped`: clean error or valid load. All cases run;
    the failures are listed together."""
    failures = []
    arrays = dict(CKPT_ARRAYS["cae32.npz"])
    with fresh_folder(fuzz_root) as folder:
        for path, kind, value in TYPE_CONFUSION_CASES:
            meta = copy.deepcopy(CKPT_METAS["cae32.npz"])
            _get(meta, path[:-1])[path[-1]] = value
            arrays["meta"] = np.array(json.dumps(meta, allow_nan=True))
            try:
                check_checkpoint_file(folder, "checkpoint.npz", _npz_bytes(arrays))
            except Exception as exc:  # noqa: BLE001  (collect them all, fail below)
                where = "meta" + "".join(f"[{key!r}]" for key in path)
                message = str(exc).split("\n")[0]
                failures.append(f"{where} = {kind} {_brief(value, 60)}: {type(exc).__name__}: {_brief(message, 150)}")
    assert not failures, f"{len(failures)} of {len(TYPE_CONFUSION_CASES)} cases failed:\n" + "\n".join(failures)


META_TOKENS = [b"[", b"{", b"]", b"}", b"\"", b"\\", b",", b":", b"NaN", b"-Infinity", b"1e999", b"true", b"null",
               b"\\ud800", b"\"epoch\": ", b"\"architecture\": ", b"\"config\": ", b"0" * 5000]


@st.composite
def mutated_meta_text(draw):
    """Case: a real checkpoint whose meta JSON text is mutated byte-wise (arrays intact)."""
    seed = draw(st.sampled_from(sorted(CKPT_ARRAYS)))
    text = str(CKPT_ARRAYS[seed]["meta"])
    recipe = [f"seed {seed}", "meta text:"]
    if draw(st.integers(0, 4)) == 0:
        # A deeply nested value (a "JSON bomb") in place of one value of the document.
        values = [i + 2 for i in range(len(text)) if text.startswith(": ", i)]
        pos = draw(st.sampled_from(values))
        depth = draw(st.sampled_from([5000, 1000, 50_000, 500, 100, 10]))   # (Hypothesis favours the first)
        end = draw(st.sampled_from(["balanced", "unbalanced"]))
        text = text[:pos] + "[" * depth + ("]" * depth if end == "balanced" else "") + text[pos:]
        recipe.append(f"insert {depth} x '[' ({end}) at {pos}")
    raw, ops = draw(mutate(text.encode("utf-8"), tokens=META_TOKENS, max_ops=3))
    text = raw.decode("utf-8", "replace")
    return Case(text, [*recipe, *ops],
                data=_npz_bytes(dict(CKPT_ARRAYS[seed], meta=np.array(text))))


@fuzz_settings("test_checkpoint_mutated_meta_text")
@given(case=mutated_meta_text())
def test_checkpoint_mutated_meta_text(fuzz_root, case):
    with fresh_folder(fuzz_root) as folder:
        check_checkpoint_file(folder, "checkpoint.npz", case.data)


# ---------------------------------------------------------------------------
# Command line: a few fixed mutated inputs through the real `sflnet` entry point
# ---------------------------------------------------------------------------

def run_sflnet(args, cwd):
    """``sflnet ARGS`` in-process through ``sflnet_cli.main.main`` (the one-line error policy),
    inside CliRunner's isolation. Any exception other than SystemExit (a traceback) propagates."""
    from sflnet_cli.main import main  # noqa: PLC0415  (the loader tests do not need the CLI)

    runner = CliRunner()
    old_cwd = os.getcwd()
    with runner.isolation() as (out, err, _):
        os.chdir(cwd)
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        else:
            code = 0
        finally:
            os.chdir(old_cwd)
        return code, out.getvalue().decode(), err.getvalue().decode()


def assert_cli_clean_error(code, stdout, stderr, names):
    output = stdout + stderr
    assert code != 0, output
    assert "Traceback" not in output, output
    error_lines = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1, output
    assert names in error_lines[0], (names, output)


def _ckpt_with_member(seed, member, new_bytes):
    members = dict(CKPT_MEMBERS[seed])
    members[member] = new_bytes
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)
    return buffer.getvalue()


def _ckpt_with_meta_text(seed, text):
    buffer = io.BytesIO()
    np.savez(buffer, **dict(CKPT_ARRAYS[seed], meta=np.array(text)))
    return buffer.getvalue()


_CAE = CKPT_SEEDS["cae32.npz"]
CLI_CHECKPOINTS = {
    "truncated": _CAE[:len(_CAE) // 2],
    "flipped-central-directory": _CAE[:-30] + bytes([_CAE[-30] ^ 0x40]) + _CAE[-29:],
    "png-bytes": GOOD_PNG,
    "meta-member-without-npy-magic": _ckpt_with_member("cae32.npz", "meta.npy",
                                                       b"X" + CKPT_MEMBERS["cae32.npz"]["meta.npy"][1:]),
    "meta-deeply-nested-json": _ckpt_with_meta_text("cae32.npz", "[" * 100_000),
    "architecture-as-a-string": _ckpt_with_meta_text("cae32.npz", json.dumps(
        dict(CKPT_METAS["cae32.npz"], architecture=CAE.architecture))),
}


@pytest.mark.parametrize("case", sorted(CLI_CHECKPOINTS))
def test_cli_evaluate_mutated_checkpoint(tmp_path, case):
    data_folder = tmp_path / "data"
    data_folder.mkdir()
    (data_folder / "img.png").write_bytes(GOOD_PNG)
    checkpoint = tmp_path / "checkpoint.npz"
    checkpoint.write_bytes(CLI_CHECKPOINTS[case])
    before = snapshot(tmp_path)
    code, stdout, stderr = run_sflnet(["evaluate", checkpoint, "--data", data_folder, "--size", "16",
                                       "--device", "cpu"], cwd=tmp_path)
    assert_cli_clean_error(code, stdout, stderr, str(checkpoint))
    assert snapshot(tmp_path) == before


CLI_IMAGES = {
    "truncated.png": PNG_SEEDS["rgb.png"][:60],
    "flipped-idat.png": fix_png_crcs(PNG_SEEDS["rgb.png"][:45] + b"\xff\xff\xff" + PNG_SEEDS["rgb.png"][48:]),
    "huge-ihdr.png": _set_png_size(PNG_SEEDS["rgb.png"], 100_000, 100_000),
    "jpeg-bytes-only-header.jpg": JPEG_SEEDS["rgb.jpg"][:200],
}


@pytest.mark.parametrize("case", sorted(CLI_IMAGES))
def test_cli_train_on_one_mutated_image(tmp_path, case):
    data_folder = tmp_path / "data"
    data_folder.mkdir()
    (data_folder / case).write_bytes(CLI_IMAGES[case])
    before = snapshot(tmp_path)
    code, stdout, stderr = run_sflnet(["train", "--data", data_folder, "--epochs", "1", "--size", "16",
                                       "--device", "cpu", "--out", tmp_path / "run"], cwd=tmp_path)
    assert_cli_clean_error(code, stdout, stderr, str(data_folder / case))
    if case == "huge-ihdr.png":
        assert "too large" in stderr
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "runs").exists()
    assert snapshot(tmp_path) == before
