"""Tests for sflnet.io.images: finding, decoding, resizing and saving images.

All fixture images are generated here with Pillow inside pytest's tmp_path.
"""

import hashlib
import pathlib

import numpy as np
import pytest
from PIL import Image

from sflnet.io import images as data
from sflnet.errors import SflnetError


# ---------------------------------------------------------------------------
# Fixture helpers
# ---------------------------------------------------------------------------


def random_rgb(height, width, seed=0):
    """Random 8-bit RGB pixels, shape (height, width, 3)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def write_rgb(path, height=40, width=60, seed=0, **save_options):
    """Write a random RGB image (format from the extension); return its pixels."""
    pixels = random_rgb(height, width, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **save_options)
    return pixels


def expected_from_uint8(pixels_hwc):
    """Independent reference: (H, W, 3) uint8 -> (3, H, W) float64 in [-1, 1]."""
    return np.transpose(pixels_hwc.astype(np.float64), (2, 0, 1)) * (2.0 / 255.0) - 1.0


def file_digest(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------------------
# Formats and colour modes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("filename", ["img.png", "img.bmp", "img.tif", "img.tiff", "IMG.PNG"])
def test_lossless_formats_are_exact_at_native_size(tmp_path, filename):
    pixels = write_rgb(tmp_path / filename)
    image = data.load_image(tmp_path / filename, size=0, dtype=np.float64)
    assert image.shape == (3, 40, 60)
    assert image.dtype == np.float64
    np.testing.assert_allclose(image, expected_from_uint8(pixels), atol=1e-12)


def test_lossless_webp_is_exact(tmp_path):
    pixels = write_rgb(tmp_path / "img.webp", lossless=True)
    image = data.load_image(tmp_path / "img.webp", size=0, dtype=np.float64)
    np.testing.assert_allclose(image, expected_from_uint8(pixels), atol=1e-12)


@pytest.mark.parametrize("filename", ["img.jpg", "img.jpeg", "img.JPG"])
def test_jpeg_loads_close_to_original(tmp_path, filename):
    # A smooth gradient survives JPEG compression with small errors.
    y, x = np.mgrid[0:40, 0:60]
    pixels = np.stack([x * 4, y * 6, (x + y) * 2], axis=-1).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / filename, quality=95)
    image = data.load_image(tmp_path / filename, size=0)
    assert image.shape == (3, 40, 60)
    assert np.abs(image - expected_from_uint8(pixels)).mean() < 0.02


def test_extreme_pixel_values_map_to_minus_one_and_plus_one(tmp_path):
    pixels = np.zeros((2, 2, 3), dtype=np.uint8)
    pixels[0, 0] = 255
    pixels[1, 1] = (0, 255, 0)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    image = data.load_image(tmp_path / "x.png", size=0)
    assert image[:, 0, 0].tolist() == [1.0, 1.0, 1.0]
    assert image[:, 0, 1].tolist() == [-1.0, -1.0, -1.0]
    assert image[:, 1, 1].tolist() == [-1.0, 1.0, -1.0]


def test_grey_image_becomes_three_equal_channels(tmp_path):
    grey = np.array([[0, 51], [204, 255]], dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    assert Image.open(tmp_path / "g.png").mode == "L"
    image = data.load_image(tmp_path / "g.png", size=0, dtype=np.float64)
    expected = grey / 127.5 - 1.0
    for channel in range(3):
        np.testing.assert_allclose(image[channel], expected, atol=1e-12)


def test_palette_image_uses_palette_colours(tmp_path):
    palette_image = Image.new("P", (3, 2))
    palette = [255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6)
    palette_image.putpalette(palette)
    palette_image.putpixel((1, 0), 1)  # blue pixel, the rest is index 0 = red
    palette_image.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    image = data.load_image(tmp_path / "p.png", size=0)
    assert image[:, 0, 0].tolist() == [1.0, -1.0, -1.0]
    assert image[:, 0, 1].tolist() == [-1.0, -1.0, 1.0]


def test_palette_image_with_transparency_keeps_colours(tmp_path):
    palette_image = Image.new("P", (2, 2))
    palette_image.putpalette([0, 255, 0, 255, 255, 255] + [0] * (256 * 3 - 6))
    palette_image.putpixel((0, 0), 1)
    palette_image.save(tmp_path / "pt.png", transparency=0)
    reopened = Image.open(tmp_path / "pt.png")
    assert reopened.mode == "P" and "transparency" in reopened.info
    image = data.load_image(tmp_path / "pt.png", size=0)
    # The transparent index 0 is green; its colour is kept (alpha dropped).
    assert image[:, 1, 1].tolist() == [-1.0, 1.0, -1.0]
    assert image[:, 0, 0].tolist() == [1.0, 1.0, 1.0]


def test_rgba_alpha_is_dropped_not_composited(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red everywhere
    rgba[..., 3] = 0  # fully transparent
    Image.fromarray(rgba).save(tmp_path / "a.png")
    assert Image.open(tmp_path / "a.png").mode == "RGBA"
    image = data.load_image(tmp_path / "a.png", size=0)
    assert image.shape == (3, 2, 2)
    np.testing.assert_array_equal(image[0], 1.0)
    np.testing.assert_array_equal(image[1:], -1.0)


@pytest.mark.parametrize("mode", ["LA", "1", "CMYK"])
def test_other_modes_load_as_rgb(tmp_path, mode):
    pixels = write_rgb(tmp_path / "rgb.png", 8, 10)
    converted = Image.fromarray(pixels).convert(mode)
    path = tmp_path / ("m.tif" if mode == "CMYK" else "m.png")
    converted.save(path)
    assert Image.open(path).mode == mode
    image = data.load_image(path, size=0, dtype=np.float64)
    assert image.shape == (3, 8, 10)
    expected = expected_from_uint8(np.asarray(converted.convert("RGB")))
    np.testing.assert_allclose(image, expected, atol=1e-12)


def test_sixteen_bit_grey_png_uses_full_range(tmp_path):
    values = np.array([[0, 32768], [65535, 1000]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    reopened_mode = Image.open(tmp_path / "g16.png").mode
    assert reopened_mode in ("I;16", "I")  # depends on the Pillow version
    image = data.load_image(tmp_path / "g16.png", size=0, dtype=np.float64)
    assert image.shape == (3, 2, 2)
    for channel in range(3):
        assert image[channel, 0, 0] == -1.0
        assert image[channel, 1, 0] == 1.0
        assert abs(image[channel, 0, 1]) < 1e-4
        assert image[channel, 1, 1] == pytest.approx(2 * 1000 / 65535 - 1, abs=1e-12)


def test_sixteen_bit_big_endian_and_32_bit_int_tiff(tmp_path):
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    big_endian = Image.frombytes("I;16B", (3, 1), values.astype(">u2").tobytes())
    big_endian.save(tmp_path / "be.tif")
    assert Image.open(tmp_path / "be.tif").mode == "I;16B"
    Image.fromarray(values.astype(np.int32)).save(tmp_path / "i32.tif")
    assert Image.open(tmp_path / "i32.tif").mode == "I"
    for name in ("be.tif", "i32.tif"):
        image = data.load_image(tmp_path / name, size=0, dtype=np.float64)
        assert image[0, 0, 0] == -1.0
        assert abs(image[1, 0, 1]) < 1e-4
        assert image[2, 0, 2] == 1.0


def test_sixteen_bit_precision_survives_resize(tmp_path):
    # A 16-bit ramp whose neighbouring steps differ by less than one 8-bit step.
    ramp = (30000 + np.arange(64, dtype=np.uint16) * 3).reshape(8, 8)
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    image = data.load_image(tmp_path / "ramp.png", size=16, dtype=np.float64)
    assert image.shape == (3, 16, 16)
    # 8-bit quantisation would leave at most ~3 distinct levels in this range.
    assert len(np.unique(np.round(image[0], 6))) > 20
    assert image.min() > 30000 / 32767.5 - 1 - 1e-3
    assert image.max() < 30189 / 32767.5 - 1 + 1e-3


# ---------------------------------------------------------------------------
# Sizes and dtypes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "height, width, size, expected",
    [
        (40, 60, 30, (20, 30)),  # landscape, shrink
        (60, 40, 30, (30, 20)),  # portrait
        (40, 60, 120, (80, 120)),  # enlarge small images too
        (50, 50, 7, (7, 7)),
        (1, 100, 10, (1, 10)),  # short side never below 1
        (40, 60, 0, (40, 60)),  # 0 keeps native size
        (40, 60, 60, (40, 60)),
        (1, 1, 0, (1, 1)),
        (1, 1, 5, (5, 5)),
        (2, 2, 0, (2, 2)),
        (2, 3, 3, (2, 3)),
        (5, 10, 5, (3, 5)),  # 2.5 rounds half up to 3
    ],
)
def test_longer_side_becomes_size(tmp_path, height, width, size, expected):
    write_rgb(tmp_path / "img.png", height, width)
    image = data.load_image(tmp_path / "img.png", size=size)
    assert image.shape == (3,) + expected
    assert image.min() >= -1.0 and image.max() <= 1.0


def test_resize_of_constant_image_stays_constant(tmp_path):
    pixels = np.full((10, 14, 3), (0, 255, 51), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "c.png")
    image = data.load_image(tmp_path / "c.png", size=37, dtype=np.float64)
    assert image.shape == (3, 26, 37)
    np.testing.assert_allclose(image[0], -1.0, atol=1e-6)
    np.testing.assert_allclose(image[1], 1.0, atol=1e-6)
    np.testing.assert_allclose(image[2], 51 / 127.5 - 1, atol=1e-6)


def test_values_stay_in_range_after_resize_of_noise(tmp_path):
    write_rgb(tmp_path / "noise.png", 31, 17, seed=3)
    image = data.load_image(tmp_path / "noise.png", size=100)
    assert image.min() >= -1.0 and image.max() <= 1.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_preserved(tmp_path, dtype):
    write_rgb(tmp_path / "img.png")
    assert data.load_image(tmp_path / "img.png", size=30, dtype=dtype).dtype == dtype
    dataset = data.load_dataset(tmp_path, size=30, dtype=dtype)
    assert all(image.dtype == dtype for image in dataset.images)


@pytest.mark.parametrize("bad_size", [-1, 2.5, "300", None, True])
def test_bad_size_is_an_error(tmp_path, bad_size):
    write_rgb(tmp_path / "img.png")
    with pytest.raises(SflnetError, match="size"):
        data.load_image(tmp_path / "img.png", size=bad_size)
    with pytest.raises(SflnetError, match="size"):
        data.load_dataset(tmp_path, size=bad_size)


def test_numpy_integer_size_is_accepted(tmp_path):
    write_rgb(tmp_path / "img.png")
    assert data.load_image(tmp_path / "img.png", size=np.int64(30)).shape == (3, 20, 30)


def test_integer_dtype_is_refused(tmp_path):
    write_rgb(tmp_path / "img.png")
    with pytest.raises(SflnetError, match="dtype"):
        data.load_image(tmp_path / "img.png", dtype=np.uint8)


# ---------------------------------------------------------------------------
# Finding files, include/exclude
# ---------------------------------------------------------------------------


def make_tree(root):
    """A small nested image folder with non-images and hidden entries."""
    write_rgb(root / "b.png", 4, 6)
    write_rgb(root / "a.JPG", 4, 6)
    write_rgb(root / "winebottle(M)" / "w1.png", 4, 6)
    write_rgb(root / "winebottle(L)" / "deep" / "w2.bmp", 4, 6)
    write_rgb(root / "shelf" / "winebottle(S)" / "w3.png", 4, 6)
    write_rgb(root / "shelf" / "cup.tif", 4, 6)
    write_rgb(root / ".hidden" / "h.png", 4, 6)
    write_rgb(root / ".dot.png", 4, 6)
    (root / "notes.txt").write_text("not an image")
    (root / "shelf" / "readme.md").write_text("not an image")


def names_of(pairs):
    return [name for _, name in pairs]


def test_find_recurses_sorts_and_skips_hidden_and_non_images(tmp_path):
    make_tree(tmp_path)
    found = data.find_image_files(tmp_path)
    assert names_of(found) == [
        "a.JPG",
        "b.png",
        "shelf/cup.tif",
        "shelf/winebottle(S)/w3.png",
        "winebottle(L)/deep/w2.bmp",
        "winebottle(M)/w1.png",
    ]
    for path, name in found:
        assert path == tmp_path / name


def test_exclude_glob_drops_folders_at_any_depth(tmp_path):
    make_tree(tmp_path)
    found = data.find_image_files([tmp_path], exclude=["winebottle*"])
    assert names_of(found) == ["a.JPG", "b.png", "shelf/cup.tif"]


def test_include_glob_keeps_only_matches(tmp_path):
    make_tree(tmp_path)
    assert names_of(data.find_image_files(tmp_path, include=["*.png"])) == [
        "b.png",
        "shelf/winebottle(S)/w3.png",
        "winebottle(M)/w1.png",
    ]
    assert names_of(data.find_image_files(tmp_path, include=["shelf"])) == [
        "shelf/cup.tif",
        "shelf/winebottle(S)/w3.png",
    ]
    assert names_of(data.find_image_files(tmp_path, include=["shelf/*"], exclude=["*.png"])) == [
        "shelf/cup.tif",
    ]


def test_single_string_pattern_is_one_pattern(tmp_path):
    make_tree(tmp_path)
    assert names_of(data.find_image_files(tmp_path, include="b.png")) == ["b.png"]


def test_file_given_directly_is_named_and_matched_by_file_name(tmp_path):
    write_rgb(tmp_path / "sub" / "x.png", 4, 6)
    write_rgb(tmp_path / "y.png", 4, 6)
    found = data.find_image_files([tmp_path / "y.png", tmp_path / "sub" / "x.png"])
    assert names_of(found) == ["x.png", "y.png"]
    found = data.find_image_files([tmp_path / "sub" / "x.png"], include=["x.*"])
    assert names_of(found) == ["x.png"]


def test_same_file_reached_twice_is_listed_once(tmp_path):
    write_rgb(tmp_path / "x.png", 4, 6)
    found = data.find_image_files([tmp_path, tmp_path, tmp_path / "x.png"])
    assert names_of(found) == ["x.png"]


def test_filters_that_leave_nothing_are_an_error(tmp_path):
    make_tree(tmp_path)
    with pytest.raises(SflnetError, match="include/exclude") as info:
        data.find_image_files(tmp_path, include=["*.webp"])
    assert str(tmp_path) in str(info.value)
    with pytest.raises(SflnetError, match="include/exclude"):
        data.load_dataset(tmp_path, exclude=["*"])


def test_missing_path_is_an_error(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(SflnetError, match="does not exist") as info:
        data.load_dataset(missing)
    assert str(missing) in str(info.value)
    with pytest.raises(SflnetError, match="does not exist"):
        data.load_image(missing / "x.png")


def test_empty_folder_is_an_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SflnetError, match="no image files") as info:
        data.load_dataset(empty)
    assert str(empty) in str(info.value)
    assert ".png" in str(info.value) and ".webp" in str(info.value)


def test_folder_with_only_text_files_is_an_error(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / ".hidden.png").write_bytes(b"")
    with pytest.raises(SflnetError, match="no image files") as info:
        data.load_dataset(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_file_with_unsupported_extension_given_directly_is_an_error(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(SflnetError, match="a.txt"):
        data.load_dataset(tmp_path / "a.txt")


# ---------------------------------------------------------------------------
# Bad files
# ---------------------------------------------------------------------------


def make_zero_byte(path):
    path.write_bytes(b"")


def make_text_named_png(path):
    path.write_text("this is not a PNG file\n")


def make_truncated_png(path):
    write_rgb(path, 40, 60)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])


def make_truncated_jpeg(path):
    write_rgb(path, 64, 64, quality=95)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])


BAD_FILES = [
    ("empty.png", make_zero_byte, "empty"),
    ("text.png", make_text_named_png, "not a readable image"),
    ("cut.png", make_truncated_png, "truncated"),
    ("cut.jpg", make_truncated_jpeg, "truncated"),
]


@pytest.mark.parametrize("filename, make, reason", BAD_FILES)
def test_bad_file_is_an_error_naming_the_path(tmp_path, filename, make, reason):
    path = tmp_path / filename
    make(path)
    with pytest.raises(SflnetError, match=reason) as info:
        data.load_image(path)
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message
    with pytest.raises(SflnetError, match=reason) as info:
        data.load_dataset(tmp_path)
    assert str(path) in str(info.value)


def test_over_limit_image_is_refused_before_decoding(tmp_path, monkeypatch):
    write_rgb(tmp_path / "big.png", 20, 20)
    pillow_limit_before = Image.MAX_IMAGE_PIXELS
    monkeypatch.setattr(data, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(SflnetError, match="too large") as info:
        data.load_image(tmp_path / "big.png")
    message = str(info.value)
    assert str(tmp_path / "big.png") in message
    assert "100" in message
    # Pillow's global setting is restored afterwards.
    assert Image.MAX_IMAGE_PIXELS == pillow_limit_before


@pytest.mark.parametrize("pixels", [150, 250])
def test_limit_applies_to_pillow_warning_and_error_range(tmp_path, monkeypatch, pixels):
    # 20x20 = 400 pixels. Pillow raises DecompressionBombError above twice its
    # limit (150) and only warns between the limit and twice it (250): both
    # must be refused.
    write_rgb(tmp_path / "big.png", 20, 20)
    monkeypatch.setattr(data, "MAX_IMAGE_PIXELS", pixels)
    with pytest.raises(SflnetError, match=f"limit is {pixels}"):
        data.load_image(tmp_path / "big.png")


def test_image_at_the_limit_is_accepted(tmp_path, monkeypatch):
    write_rgb(tmp_path / "ok.png", 10, 10)
    monkeypatch.setattr(data, "MAX_IMAGE_PIXELS", 100)
    assert data.load_image(tmp_path / "ok.png", size=0).shape == (3, 10, 10)


def test_skip_bad_skips_with_warnings(tmp_path, monkeypatch):
    good = write_rgb(tmp_path / "good.png", 4, 6)
    (tmp_path / "bad").mkdir()
    for filename, make, _ in BAD_FILES:
        make(tmp_path / "bad" / filename)
    write_rgb(tmp_path / "big.png", 20, 20)
    monkeypatch.setattr(data, "MAX_IMAGE_PIXELS", 100)

    warnings = []
    dataset = data.load_dataset(tmp_path, size=0, skip_bad=True, warn=warnings.append)

    assert dataset.names == ["good.png"]
    assert len(dataset) == 1
    np.testing.assert_allclose(dataset.images[0], expected_from_uint8(good), atol=1e-6)
    assert len(warnings) == 5
    assert all(w.startswith("skipping ") and "\n" not in w for w in warnings)
    joined = "\n".join(warnings)
    for filename, _, reason in BAD_FILES:
        assert f"skipping bad/{filename}: " in joined
    assert "skipping big.png: image is too large" in joined


def test_skip_bad_with_nothing_left_is_an_error(tmp_path):
    make_zero_byte(tmp_path / "a.png")
    make_text_named_png(tmp_path / "b.jpg")
    warnings = []
    with pytest.raises(SflnetError, match="could be loaded"):
        data.load_dataset(tmp_path, skip_bad=True, warn=warnings.append)
    assert len(warnings) == 2


def test_skip_bad_default_warning_goes_to_stderr(tmp_path, capsys):
    write_rgb(tmp_path / "good.png", 4, 6)
    make_zero_byte(tmp_path / "zero.png")
    data.load_dataset(tmp_path, skip_bad=True)
    assert "skipping zero.png: file is empty" in capsys.readouterr().err


def test_loading_never_modifies_files(tmp_path):
    make_tree(tmp_path)
    make_truncated_png(tmp_path / "cut.png")
    before = {p: file_digest(p) for p in tmp_path.rglob("*") if p.is_file()}
    data.load_dataset(tmp_path, size=13, skip_bad=True, warn=lambda message: None)
    after = {p: file_digest(p) for p in tmp_path.rglob("*") if p.is_file()}
    assert before == after


# ---------------------------------------------------------------------------
# Dataset and demo images
# ---------------------------------------------------------------------------


def test_load_dataset_from_folder_and_file_list(tmp_path):
    make_tree(tmp_path)
    dataset = data.load_dataset(tmp_path, size=12)
    assert len(dataset) == 6
    assert dataset.names[0] == "a.JPG"
    assert dataset.source == str(tmp_path)
    assert all(image.shape == (3, 8, 12) for image in dataset.images)

    dataset = data.load_dataset([str(tmp_path / "b.png"), tmp_path / "shelf"], size=0)
    assert dataset.names == ["b.png", "cup.tif", "winebottle(S)/w3.png"]


def test_demo_images_load():
    assert data.demo_dir().is_dir()
    for paths in (None, [], ()):
        dataset = data.load_dataset(paths, size=300)
        assert len(dataset) == 8
        assert dataset.source == "built-in demo images"
    assert all(name.endswith(".png") and "/" not in name for name in dataset.names)
    assert dataset.names == sorted(dataset.names)
    for image in dataset.images:
        assert image.dtype == np.float32
        assert image.ndim == 3 and image.shape[0] == 3
        assert max(image.shape[1:]) == 300
        assert image.min() >= -1.0 and image.max() <= 1.0


def test_demo_images_respect_filters_and_size():
    dataset = data.load_dataset(None, size=32, include=["c*"])
    assert dataset.names == ["chelsea.png", "china.png", "coffee.png"]
    assert all(max(image.shape[1:]) == 32 for image in dataset.images)


# ---------------------------------------------------------------------------
# Writing images
# ---------------------------------------------------------------------------


def test_image_to_uint8_rounds_and_clips():
    image = np.array(
        [[[-1.0, 1.0, 0.0, -2.0, 3.0, np.nan]]] * 3, dtype=np.float32
    )  # shape (3, 1, 6)
    original = image.copy()
    result = data.image_to_uint8(image)
    assert result.shape == (1, 6, 3)
    assert result.dtype == np.uint8
    assert result[0, :, 0].tolist() == [0, 255, 128, 0, 255, 128]
    np.testing.assert_array_equal(image, original)  # input untouched


def test_image_to_uint8_rejects_wrong_shape():
    with pytest.raises(ValueError):
        data.image_to_uint8(np.zeros((4, 4, 3), dtype=np.float32))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_save_png_round_trip(tmp_path, dtype):
    pixels = write_rgb(tmp_path / "src.png", 7, 9, seed=5)
    image = data.load_image(tmp_path / "src.png", size=0, dtype=dtype)
    target = tmp_path / "new" / "folder" / "out.png"
    data.save_png(image, target)
    with Image.open(target) as reopened:
        assert reopened.format == "PNG"
        assert reopened.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(reopened), pixels)
    np.testing.assert_array_equal(data.image_to_uint8(image), pixels)


def test_save_png_into_a_file_path_is_an_error(tmp_path):
    (tmp_path / "blocker").write_text("a file, not a folder")
    with pytest.raises(SflnetError, match="blocker"):
        data.save_png(np.zeros((3, 2, 2), dtype=np.float32), tmp_path / "blocker" / "x.png")


def test_image_to_uint8_default_range_matches_the_plus_one_times_127_5_formula():
    rng = np.random.default_rng(11)
    # Random values, every exact 8-bit level, and the half-way points between levels.
    levels = np.arange(256) / 127.5 - 1.0
    halves = (np.arange(255) + 0.5) / 127.5 - 1.0
    flat = np.concatenate([levels, halves, rng.uniform(-1.2, 1.2, 3 * 8 * 40 - 256 - 255)])
    image = flat.reshape(3, 8, 40)
    expected = np.transpose(np.clip(np.round((image + 1.0) * 127.5), 0, 255), (1, 2, 0)).astype(np.uint8)
    np.testing.assert_array_equal(data.image_to_uint8(image), expected)
    np.testing.assert_array_equal(data.image_to_uint8(image, value_range=(-1.0, 1.0)), expected)
    np.testing.assert_array_equal(data.image_to_uint8(levels.reshape(1, 1, 256)), np.arange(256).reshape(1, 256))


def test_image_to_uint8_grey_gives_a_two_dimensional_picture():
    grey = np.array([[[-1.0, 0.0, 1.0], [np.inf, -np.inf, np.nan]]], dtype=np.float32)  # (1, 2, 3)
    original = grey.copy()
    result = data.image_to_uint8(grey)
    assert result.shape == (2, 3) and result.dtype == np.uint8
    assert result.tolist() == [[0, 128, 255], [255, 0, 128]]
    np.testing.assert_array_equal(grey, original)


def test_image_to_uint8_unit_range():
    # (0, 1): x → round(255·x); 0.5 → 127.5, which rounds to the even 128.
    image = np.array([[[0.0, 1.0, 0.5, -0.2, 1.3, np.nan, np.inf, -np.inf]]])  # (1, 1, 8)
    result = data.image_to_uint8(image, value_range=(0.0, 1.0))
    assert result.tolist() == [[0, 255, 128, 0, 255, 128, 255, 0]]
    # Every 8-bit level k/255, in float32 as the digits are, comes back as k.
    levels = (np.arange(256, dtype=np.float64) / 255.0).astype(np.float32).reshape(1, 16, 16)
    np.testing.assert_array_equal(data.image_to_uint8(levels, value_range=(0, 1)), np.arange(256).reshape(16, 16))
    # RGB works with other ranges too: low → 0, high → 255, middle → 128.
    rgb = np.broadcast_to(np.array([2.0, 6.0, 4.0]).reshape(3, 1, 1), (3, 2, 2))
    assert data.image_to_uint8(rgb, value_range=(2, 6))[0, 0].tolist() == [0, 255, 128]


@pytest.mark.parametrize("shape", [(2, 4, 4), (4, 4, 4), (4, 4), (1, 3, 4, 4)])
def test_image_to_uint8_rejects_other_channel_counts(shape):
    with pytest.raises(ValueError, match=r"\(1, H, W\)"):
        data.image_to_uint8(np.zeros(shape, dtype=np.float32))


@pytest.mark.parametrize("value_range", [(1.0, 1.0), (1.0, -1.0), (0.0, np.inf), (np.nan, 1.0), (0.0,), "ab", None])
def test_image_to_uint8_rejects_bad_value_ranges(value_range):
    with pytest.raises(ValueError, match="value_range"):
        data.image_to_uint8(np.zeros((3, 2, 2), dtype=np.float32), value_range=value_range)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_save_png_grey_unit_range_round_trip(tmp_path, dtype):
    rng = np.random.default_rng(4)
    pixels = rng.integers(0, 256, size=(28, 28), dtype=np.uint8)
    image = (pixels.astype(np.float64) / 255.0).astype(dtype)[None]   # (1, 28, 28) in [0, 1]
    original = image.copy()
    target = tmp_path / "digits" / "one.png"
    data.save_png(image, target, value_range=(0.0, 1.0))
    with Image.open(target) as reopened:
        assert reopened.format == "PNG" and reopened.mode == "L"
        np.testing.assert_array_equal(np.asarray(reopened), pixels)
    np.testing.assert_array_equal(image, original)


def test_save_png_grey_default_range(tmp_path):
    data.save_png(np.array([[[-1.0, 0.0, 1.0]]]), tmp_path / "g.png")
    with Image.open(tmp_path / "g.png") as reopened:
        assert reopened.mode == "L"
        assert np.asarray(reopened).tolist() == [[0, 128, 255]]


def test_saved_grey_png_loads_back_as_three_equal_channels(tmp_path):
    grey = np.array([[[-1.0, 1.0], [51 / 127.5 - 1, 204 / 127.5 - 1]]])
    data.save_png(grey, tmp_path / "g.png")
    image = data.load_image(tmp_path / "g.png", size=0, dtype=np.float64)
    for channel in range(3):
        np.testing.assert_allclose(image[channel], grey[0], atol=1e-12)
