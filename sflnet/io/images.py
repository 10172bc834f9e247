"""Finding, decoding and resizing the training images; writing PNGs.

Every image becomes a float array of shape ``(3, H, W)`` (channels first, RGB)
with values in ``[-1, 1]``: an 8-bit value ``x`` maps to ``x / 127.5 - 1`` and a
16-bit value ``x`` maps to ``x / 32767.5 - 1`` (that is ``2 * x / 65535 - 1``),
so 0 is always -1 and the largest value is always +1.

Pipeline for one file (see :func:`load_image`):

1. Refuse a zero-byte file.
2. Open it with Pillow. This reads only the header, so the image size is known
   before any pixels are decoded. An image with more than
   :data:`MAX_IMAGE_PIXELS` pixels is refused at this point (decompression-bomb
   guard: a tiny compressed file can describe a gigantic image).
3. Decode all pixels (``img.load()``). Truncated files are errors: Pillow's
   ``ImageFile.LOAD_TRUNCATED_IMAGES`` is kept ``False`` while loading.
4. Apply the EXIF orientation tag, if any (photos from phones and cameras are
   often stored sideways with a tag that says how to rotate them).
5. Convert to RGB. Grey, grey+alpha, palette (also with transparency), RGBA,
   CMYK and 1-bit images go through Pillow's ``convert("RGB")``; the alpha
   channel is simply dropped (no compositing onto a background). 16-bit grey
   images (Pillow modes ``I;16``, ``I;16L``, ``I;16B``, ``I;16N`` and ``I``) are
   scaled by 65535 instead of 255 and copied to all three channels; values of
   a 32-bit ``I`` image outside ``[0, 65535]`` are clipped.
6. Resize so that the LONGER side equals ``size`` (paper: 300), keeping the
   aspect ratio; this also enlarges small images. ``size=0`` keeps the native
   size. The resize uses Pillow's LANCZOS filter on each channel as a 32-bit
   float image (mode ``F``), so 16-bit precision survives; LANCZOS can
   overshoot a little at sharp edges, so the result is clipped to ``[-1, 1]``.

Nothing on disk is ever modified: files are only opened for reading.

User-fixable problems (missing path, empty folder, corrupt file, ...) raise
:class:`sflnet.errors.SflnetError` with a one-line message naming the file or
option.
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
import os
import pathlib
import sys
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from sflnet.errors import SflnetError

#: File extensions treated as images when searching folders (compared
#: case-insensitively, so ``.PNG`` and ``.Jpg`` count too).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

#: Largest accepted image, in pixels (width * height), checked from the file
#: header BEFORE the pixels are decoded. 50 million pixels is e.g. 8660x5773;
#: decoding it to RGB takes 150 MB, and the float copy 600 MB. Larger files are
#: refused as possible decompression bombs. While loading, Pillow's own limit
#: ``PIL.Image.MAX_IMAGE_PIXELS`` is set to this value and Pillow's
#: ``DecompressionBombWarning`` is turned into an error as well.
MAX_IMAGE_PIXELS: int = 50_000_000

#: Pillow modes holding 16-bit (or wider integer) grey values, scaled by 65535.
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class Dataset:
    """A list of images, each kept at its own size.

    Attributes:
        names: one display name per image: the path relative to the folder it
            was found in (posix separators, e.g. ``"cats/tom.png"``), or the
            file name for a file given directly and for the demo images.
        images: one array per image, shape ``(3, H_i, W_i)``, floating dtype,
            values in ``[-1, 1]`` (:func:`load_dataset`); the built-in digits
            of :mod:`sflnet.io.digits` are ``(1, 28, 28)`` with values in
            ``[0, 1]``.
        source: human-readable description of where the images came from,
            e.g. the folder path or ``"built-in demo images"``.
    """

    names: list[str]
    images: list[np.ndarray]
    source: str

    def __post_init__(self) -> None:
        if len(self.names) != len(self.images):
            raise ValueError(
                f"Dataset needs one name per image, got {len(self.names)} names "
                f"and {len(self.images)} images"
            )

    def __len__(self) -> int:
        return len(self.images)


class _BadImageError(Exception):
    """Internal: one file could not be used. The message is the reason only
    (one line, without the path); callers add the path or the name."""


# ---------------------------------------------------------------------------
# Finding files
# ---------------------------------------------------------------------------


def demo_dir() -> pathlib.Path:
    """Folder holding the 8 built-in demo photos (shipped inside the package)."""
    return pathlib.Path(__file__).resolve().parents[1] / "demo_data"   # sflnet/demo_data/


def _as_path_list(paths: Union[PathLike, Sequence[PathLike], None]) -> list[pathlib.Path]:
    """Turn one path or a sequence of paths into a list of ``Path`` objects."""
    if paths is None:
        return []
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    result = []
    for path in paths:
        if str(path) == "":
            raise SflnetError("an empty string was given as an image path")
        result.append(pathlib.Path(path))
    return result


def _as_pattern_tuple(patterns: Union[str, Iterable[str], None]) -> tuple[str, ...]:
    """Accept ``None``, one pattern string, or several patterns."""
    if patterns is None:
        return ()
    if isinstance(patterns, str):
        return (patterns,)
    return tuple(patterns)


def _has_image_extension(path: pathlib.Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _pattern_matches(relative_name: str, pattern: str) -> bool:
    """Does a glob pattern select this file?

    ``relative_name`` is the file's path relative to the folder that was
    searched, with ``/`` separators (e.g. ``"winebottle(M)/img_01.png"``).
    Matching is case-sensitive (:func:`fnmatch.fnmatchcase`) on every system.
    A pattern selects the file when it matches:

    * the whole relative path (``*`` also matches ``/``), or
    * for a pattern without ``/``: any single component, i.e. a folder name or
      the file name, at any depth (``winebottle*`` selects everything inside
      ``winebottle(M)/`` and ``shelf/winebottle(L)/``; ``*.jpg`` selects every
      JPEG), or
    * for a pattern with ``/``: a leading folder path (``shelf/old`` selects
      everything under ``shelf/old/``).
    """
    if fnmatch.fnmatchcase(relative_name, pattern):
        return True
    parts = relative_name.split("/")
    if "/" not in pattern:
        return any(fnmatch.fnmatchcase(part, pattern) for part in parts)
    leading_folders = ["/".join(parts[:i]) for i in range(1, len(parts))]
    return any(fnmatch.fnmatchcase(folder, pattern) for folder in leading_folders)


def _is_selected(relative_name: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    """Include patterns (if any) keep only matches; exclude patterns then drop."""
    if include and not any(_pattern_matches(relative_name, p) for p in include):
        return False
    return not any(_pattern_matches(relative_name, p) for p in exclude)


def _walk_images(folder: pathlib.Path) -> Iterator[tuple[pathlib.Path, str]]:
    """Yield ``(file path, relative posix name)`` for image files under a folder.

    Searches recursively; hidden files and folders (name starting with ``.``)
    below ``folder`` are skipped. Symbolic links to files are followed, links to
    folders are not (this avoids endless loops).
    """
    for dirpath, dirnames, filenames in os.walk(folder):
        # Editing dirnames in place is how os.walk is told to skip folders.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in sorted(filenames):
            if filename.startswith("."):
                continue
            file_path = pathlib.Path(dirpath) / filename
            if not _has_image_extension(file_path) or not file_path.is_file():
                continue
            relative_name = file_path.relative_to(folder).as_posix()
            yield file_path, relative_name


def find_image_files(
    paths: Union[PathLike, Sequence[PathLike]],
    include: Union[str, Iterable[str]] = (),
    exclude: Union[str, Iterable[str]] = (),
) -> list[tuple[pathlib.Path, str]]:
    """List the image files named by ``paths``, after include/exclude filtering.

    Args:
        paths: one folder or file, or a sequence of them. Folders are searched
            recursively for files whose extension is in
            :data:`IMAGE_EXTENSIONS`; hidden files and folders are skipped.
        include: fnmatch glob patterns; if any are given, only files matching at
            least one are kept (see :func:`_pattern_matches` for the rules).
        exclude: fnmatch glob patterns; matching files are dropped. Patterns are
            matched against the path relative to the given folder (posix
            separators); a file given directly is matched on its file name.

    Returns:
        ``(file path, display name)`` pairs sorted by display name (then by
        path). The display name is the relative path for files found in a
        folder and the file name for files given directly. A file reached
        twice (e.g. folder given twice) is listed once.

    Raises:
        SflnetError: a path does not exist; a file given directly has an
            unsupported extension; a folder holds no image files; or the
            include/exclude patterns left nothing.
    """
    path_list = _as_path_list(paths)
    include = _as_pattern_tuple(include)
    exclude = _as_pattern_tuple(exclude)
    if not path_list:
        raise SflnetError("no image paths were given")

    candidates: list[tuple[pathlib.Path, str]] = []
    for path in path_list:
        if not path.exists():
            raise SflnetError(f"image path does not exist: {path}")
        if path.is_dir():
            found = list(_walk_images(path))
            if not found:
                raise SflnetError(
                    f"no image files found in folder {path} "
                    f"(looked for extensions {', '.join(IMAGE_EXTENSIONS)}, in any letter case)"
                )
            candidates.extend(found)
        elif path.is_file():
            if not _has_image_extension(path):
                raise SflnetError(
                    f"not an image file name: {path} "
                    f"(supported extensions: {', '.join(IMAGE_EXTENSIONS)})"
                )
            candidates.append((path, path.name))
        else:
            raise SflnetError(f"image path is neither a file nor a folder: {path}")

    selected = []
    seen = set()
    for file_path, name in candidates:
        key = os.path.realpath(file_path)
        if key in seen:
            continue
        seen.add(key)
        if _is_selected(name, include, exclude):
            selected.append((file_path, name))

    if not selected:
        where = ", ".join(str(p) for p in path_list)
        raise SflnetError(
            f"the include/exclude patterns left no images in {where} "
            f"(include={list(include)}, exclude={list(exclude)}; "
            f"{len(seen)} image files were found before filtering)"
        )
    selected.sort(key=lambda pair: (pair[1], str(pair[0])))
    return selected


# ---------------------------------------------------------------------------
# Decoding and resizing one image
# ---------------------------------------------------------------------------


def _check_size_argument(size: object) -> int:
    """``size`` must be a non-negative integer (bool is refused)."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise SflnetError(f"image size must be a whole number of pixels, got {size!r}")
    if size < 0:
        raise SflnetError(f"image size must be 0 (keep native size) or positive, got {size}")
    return int(size)


def check_dtype_argument(dtype: object) -> np.dtype:
    """``dtype`` must be a floating NumPy dtype such as float32 or float64."""
    try:
        checked = np.dtype(dtype)
    except TypeError:
        raise SflnetError(f"dtype must be a floating type such as float32, got {dtype!r}") from None
    if checked.kind != "f":
        raise SflnetError(f"dtype must be a floating type such as float32, got {checked}")
    return checked


def one_line(exc: BaseException) -> str:
    """An exception as a single line of text (Pillow messages may hold newlines)."""
    text = " ".join(str(exc).split())
    return text if text else type(exc).__name__


@contextlib.contextmanager
def _safe_pillow_settings() -> Iterator[None]:
    """Temporarily apply our decompression-bomb limit and strict truncation.

    Sets ``PIL.Image.MAX_IMAGE_PIXELS`` to :data:`MAX_IMAGE_PIXELS`, keeps
    ``ImageFile.LOAD_TRUNCATED_IMAGES`` False, and makes Pillow's
    ``DecompressionBombWarning`` raise. Everything is restored afterwards, so
    global Pillow and warning settings are unchanged outside this block.
    """
    old_max_pixels = Image.MAX_IMAGE_PIXELS
    old_load_truncated = ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = old_max_pixels
        ImageFile.LOAD_TRUNCATED_IMAGES = old_load_truncated


def _too_large_reason(pixels: Optional[int] = None) -> str:
    detail = f"{pixels} pixels, " if pixels is not None else ""
    return (
        f"image is too large ({detail}limit is {MAX_IMAGE_PIXELS} pixels, "
        f"see sflnet.io.images.MAX_IMAGE_PIXELS)"
    )


def _pil_to_pixels(img: Image.Image) -> np.ndarray:
    """Decoded Pillow image -> integer array (H, W, 3): uint8, or uint16 for 16-bit grey (clipped)."""
    if img.mode in _SIXTEEN_BIT_MODES:
        grey = np.clip(np.asarray(img), 0, 65535).astype(np.uint16)  # (H, W), 0..65535
        return np.stack([grey, grey, grey], axis=-1)
    if img.mode in ("P", "PA"):
        # Going through RGBA makes Pillow apply the palette's transparency
        # cleanly; the alpha channel is then dropped by convert("RGB").
        img = img.convert("RGBA")
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def pixels_to_float(pixels: np.ndarray) -> np.ndarray:
    """uint8 (x / 127.5 - 1) or uint16 (x / 32767.5 - 1) pixels -> float64 in [-1, 1], same shape."""
    scale = 32767.5 if pixels.dtype == np.uint16 else 127.5
    return pixels.astype(np.float64) / scale - 1.0


def _decode_file(path: pathlib.Path, raw: bool = False) -> np.ndarray:
    """Read one image file -> float64 array (H, W, 3) in [-1, 1], native size
    (``raw``: the integer pixels of :func:`_pil_to_pixels` instead).

    Raises:
        _BadImageError: with a one-line reason (no path) for any unusable file.
    """
    try:
        n_bytes = path.stat().st_size
    except OSError as exc:
        raise _BadImageError(f"cannot read file ({one_line(exc)})") from None
    if n_bytes == 0:
        raise _BadImageError("file is empty (0 bytes)")

    with _safe_pillow_settings():
        try:
            img = Image.open(path)  # reads the header only
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):
            raise _BadImageError(_too_large_reason()) from None
        except UnidentifiedImageError:
            raise _BadImageError("not a readable image (unknown format or corrupt file)") from None
        except Exception as exc:  # Pillow raises many types for broken headers
            raise _BadImageError(f"cannot open image ({one_line(exc)})") from None

        with img:
            width, height = img.size
            # Explicit check from the header size, before any pixel is decoded.
            if width * height > MAX_IMAGE_PIXELS:
                raise _BadImageError(_too_large_reason(width * height))
            try:
                img.load()  # decodes; raises on truncated or corrupt data
                oriented = ImageOps.exif_transpose(img)
                pixels = _pil_to_pixels(oriented)
                return pixels if raw else pixels_to_float(pixels)
            except (Image.DecompressionBombWarning, Image.DecompressionBombError):
                raise _BadImageError(_too_large_reason(width * height)) from None
            except MemoryError:
                raise _BadImageError("not enough memory to decode the image") from None
            except Exception as exc:  # OSError, SyntaxError, ValueError, ...
                raise _BadImageError(f"cannot decode image ({one_line(exc)})") from None


def _target_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(H, W) after scaling the longer side to ``size`` (0: unchanged).

    The shorter side is ``max(1, round(short * size / long))``, rounding
    halves up.
    """
    if size == 0:
        return height, width
    longer = max(height, width)
    scaled = [max(1, int(math.floor(side * size / longer + 0.5))) for side in (height, width)]
    if height >= width:
        scaled[0] = size
    else:
        scaled[1] = size
    return scaled[0], scaled[1]


def _resize_chw(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a (3, H, W) float array to (3, height, width).

    Each channel is resized as a Pillow 32-bit float image (mode ``F``) with
    the LANCZOS filter, then the result is clipped to [-1, 1] because LANCZOS
    can overshoot slightly at sharp edges.
    """
    channels = []
    for channel in image:
        pil_channel = Image.fromarray(np.ascontiguousarray(channel, dtype=np.float32))  # mode "F"
        resized = pil_channel.resize((width, height), Image.Resampling.LANCZOS)
        channels.append(np.asarray(resized, dtype=np.float64))
    return np.clip(np.stack(channels, axis=0), -1.0, 1.0)


def _load_checked(path: pathlib.Path, size: int, dtype: np.dtype) -> np.ndarray:
    """Decode + resize with already validated arguments. Raises _BadImageError."""
    hwc = _decode_file(path)  # (H, W, 3) float64
    chw = np.transpose(hwc, (2, 0, 1))  # (3, H, W)
    height, width = _target_shape(chw.shape[1], chw.shape[2], size)
    if (height, width) != chw.shape[1:]:
        chw = _resize_chw(chw, height, width)
    return np.ascontiguousarray(chw, dtype=dtype)


def load_image(path: PathLike, size: int = 300, dtype=np.float32) -> np.ndarray:
    """Load one image file as a ``(3, H, W)`` array with values in ``[-1, 1]``.

    Args:
        path: the image file.
        size: target length of the LONGER side in pixels (aspect ratio kept,
            small images are enlarged); 0 keeps the native size.
        dtype: floating dtype of the result (float32 or float64).

    Returns:
        Array of shape ``(3, H, W)`` and the requested dtype.

    Raises:
        SflnetError: bad ``size`` or ``dtype``; the file is missing, empty,
            not a decodable image, truncated, or larger than
            :data:`MAX_IMAGE_PIXELS`.
    """
    size = _check_size_argument(size)
    dtype = check_dtype_argument(dtype)
    path = pathlib.Path(path)
    if not path.exists():
        raise SflnetError(f"image file does not exist: {path}")
    if path.is_dir():
        raise SflnetError(f"expected an image file but got a folder: {path}")
    try:
        return _load_checked(path, size, dtype)
    except _BadImageError as exc:
        raise SflnetError(f"cannot load image {path}: {exc}") from None


def _print_warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def load_dataset(
    paths: Union[PathLike, Sequence[PathLike], None] = None,
    size: int = 300,
    include: Union[str, Iterable[str]] = (),
    exclude: Union[str, Iterable[str]] = (),
    skip_bad: bool = False,
    dtype=np.float32,
    warn: Optional[Callable[[str], None]] = None,
) -> Dataset:
    """Load every image under ``paths`` (or the built-in demo images).

    Args:
        paths: ``None`` or an empty sequence for the 8 built-in demo photos;
            otherwise a folder or file, or a sequence of folders and files
            (see :func:`find_image_files`).
        size: longer side of every image after resizing; 0 keeps native sizes.
        include, exclude: fnmatch glob patterns, see :func:`find_image_files`.
        skip_bad: if True, files that cannot be loaded (empty, corrupt,
            truncated, too large) are skipped with a warning each instead of
            stopping with an error.
        dtype: floating dtype of the image arrays.
        warn: called with one line ``"skipping NAME: REASON"`` per skipped
            file; default prints it to stderr.

    Returns:
        A :class:`Dataset`, images in the order of their names.

    Raises:
        SflnetError: bad arguments, nothing found, a bad file (unless
            ``skip_bad``), or no image left after skipping.
    """
    size = _check_size_argument(size)
    dtype = check_dtype_argument(dtype)
    warn = _print_warning if warn is None else warn

    path_list = _as_path_list(paths)
    if path_list:
        source = ", ".join(str(p) for p in path_list)
    else:
        path_list = [demo_dir()]
        source = "built-in demo images"

    files = find_image_files(path_list, include=include, exclude=exclude)

    names: list[str] = []
    images: list[np.ndarray] = []
    for file_path, name in files:
        try:
            image = _load_checked(file_path, size, dtype)
        except _BadImageError as exc:
            if not skip_bad:
                raise SflnetError(f"cannot load image {file_path}: {exc}") from None
            warn(f"skipping {name}: {exc}")
            continue
        names.append(name)
        images.append(image)

    if not images:
        raise SflnetError(
            f"none of the {len(files)} image files in {source} could be loaded "
            f"(all were skipped as bad)"
        )
    return Dataset(names=names, images=images, source=source)


# ---------------------------------------------------------------------------
# Writing images
# ---------------------------------------------------------------------------


def _check_value_range(value_range) -> tuple[float, float]:
    """``value_range`` must be two finite numbers ``(low, high)`` with ``low < high``."""
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(f"value_range must be two numbers (low, high), got {value_range!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"value_range must be finite with low < high, got {value_range!r}")
    return low, high


def image_to_uint8(arr: np.ndarray, value_range=(-1.0, 1.0)) -> np.ndarray:
    """Network image -> 8-bit picture.

    Args:
        arr: NumPy array of shape ``(3, H, W)`` (RGB) or ``(1, H, W)`` (grey),
            any float dtype, values nominally in ``value_range``.
        value_range: ``(low, high)``: low maps to 0 and high to 255. The
            default ``(-1, 1)`` suits the autoencoder's images; use ``(0, 1)``
            for the digits of :mod:`sflnet.io.digits`.

    Returns:
        ``uint8`` array of shape ``(H, W, 3)`` for RGB or ``(H, W)`` for grey:
        ``round((x − low) · 255 / (high − low))`` clipped to ``[0, 255]``
        (for the default range that is ``round((x + 1) · 127.5)``; NumPy
        rounds halves to even). NaN becomes 128 (mid grey: the middle of the
        range maps to 127.5), +inf 255 and −inf 0. The input is not modified.
    """
    low, high = _check_value_range(value_range)
    values = np.asarray(arr, dtype=np.float64)
    if values.ndim != 3 or values.shape[0] not in (1, 3):
        raise ValueError(f"expected an image of shape (3, H, W) or (1, H, W), got {values.shape}")
    values = np.nan_to_num(values, nan=(low + high) / 2.0, posinf=high, neginf=low)
    scaled = np.clip(np.round((values - low) * (255.0 / (high - low))), 0.0, 255.0)
    pixels = scaled.astype(np.uint8)
    if pixels.shape[0] == 1:
        return np.ascontiguousarray(pixels[0])                         # (H, W)
    return np.ascontiguousarray(np.transpose(pixels, (1, 2, 0)))       # (H, W, 3)


def save_png(arr: np.ndarray, path: PathLike, value_range=(-1.0, 1.0)) -> None:
    """Write a ``(3, H, W)`` or ``(1, H, W)`` image as an 8-bit PNG.

    An RGB image is saved in Pillow mode ``"RGB"``, a one-channel image as
    8-bit grey (mode ``"L"``). ``value_range`` is as in
    :func:`image_to_uint8` (default ``(-1, 1)``). The file is always PNG,
    whatever its extension; parent folders are created as needed. Raises
    SflnetError if the file cannot be written.
    """
    pixels = image_to_uint8(arr, value_range=value_range)
    path = pathlib.Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, format="PNG")
    except OSError as exc:
        raise SflnetError(f"cannot write PNG file {path}: {one_line(exc)}") from None
