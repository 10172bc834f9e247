"""A prepared image store: the training images decoded once, kept as pixels in one flat file.

``sflnet prepare DATA... --out STORE`` finds, decodes, converts and resizes every image exactly as
training from the folder does (:func:`sflnet.io.images.find_image_files`, ``_decode_file``,
``_target_shape``, ``_resize_chw``), and writes each image's pixels, channels first ``(3, H, W)``,
one after another into ``STORE/pixels.bin``, read back through :func:`numpy.memmap`:

* an image already at its target size (or ``size`` 0) is stored as its integer pixels, ``uint8``
  (a 16-bit grey source: ``uint16``); at load they become floats by the same
  :func:`sflnet.io.images.pixels_to_float` as the folder path, so the floats are bit-identical;
* an image that had to be resized is stored as ``float32``: today's resize is Pillow's LANCZOS on
  32-bit float channels, clipped to [-1, 1], so its result is a float32 array, and storing it
  keeps the floats bit-identical too (uint8 pixels would not: the resize happens after the
  conversion to float). Prepare at the size the images already have to get a pure uint8 store.

``STORE/index.json`` (written last, atomically) holds the settings (``size``, include/exclude,
skip_bad), the sources, and per image (as columns) its name, dtype, shape, byte offset, CRC-32
checksum of its bytes, and its source file's path, size and modification time. ``checksum`` is
the SHA-256 of the rest of the index (a damaged index is refused); runs record it in config.json.

A killed ``prepare`` leaves ``pixels.bin.part`` and ``prepare.journal`` (one JSON line per image
done); run again, it keeps the journal's images whose sources did not change and goes on.
"""

import concurrent.futures
import hashlib
import json
import os
import pathlib
import zlib
from collections import deque

import numpy as np

from sflnet.errors import SflnetError
from sflnet.io.atomic import write_text_atomic
from sflnet.io.images import (_BadImageError, _check_size_argument, _decode_file, _resize_chw, _target_shape,
                              check_dtype_argument, find_image_files, pixels_to_float)

FORMAT = "sflnet-image-store"
VERSION = 1
INDEX = "index.json"
PIXELS = "pixels.bin"
PART = "pixels.bin.part"
JOURNAL = "prepare.journal"
ALIGN = 64            # every image starts at a multiple of 64 bytes
COLUMNS = ("name", "dtype", "shape", "offset", "crc32", "source", "source_size", "source_mtime_ns")
STALE_SHOWN = 5       # names shown in a stale-store message


def is_store(path):
    """True when ``path`` is a folder holding a store's index or an unfinished prepare."""
    path = pathlib.Path(path)
    return path.is_dir() and ((path / INDEX).is_file() or (path / JOURNAL).is_file())


def store_path(paths):
    """The store among the ``--data`` paths, or None; SflnetError if a store is given with other paths."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths or ())
    stores = [p for p in paths if is_store(p)]
    if not stores:
        return None
    if len(paths) > 1:
        raise SflnetError(f"--data {stores[0]} is an image store; a store must be the only --data")
    return stores[0]


def _prepared_image(path, size):
    """One source file → (C, H, W) array to store: integer pixels at the target size, else the float32
    result of the float resize (both exactly what the folder path computes). Raises _BadImageError."""
    pixels = np.transpose(_decode_file(path, raw=True), (2, 0, 1))      # (3, H, W) uint8/uint16
    height, width = _target_shape(pixels.shape[1], pixels.shape[2], size)
    if (height, width) == pixels.shape[1:]:
        return np.ascontiguousarray(pixels)
    return np.ascontiguousarray(_resize_chw(pixels_to_float(pixels), height, width), dtype=np.float32)


def _source_stat(path):
    info = os.stat(path)
    return int(info.st_size), int(info.st_mtime_ns)


def _index_checksum(body):
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class ImageStore:
    """An opened store: ``names``, ``shapes`` ((C, H, W) tuples), ``size``, ``checksum``; pixels on demand.

    Opening checks the index's format and checksum and the pixel file's length (one line
    SflnetError naming the problem); :meth:`verify` checks every image's CRC-32 and :meth:`stale`
    the sources.
    """

    def __init__(self, path):
        self.path = pathlib.Path(path)
        where = self.path
        if (where / JOURNAL).is_file() and not (where / INDEX).is_file():
            raise SflnetError(f"image store {where} is incomplete (an interrupted sflnet prepare): run the same "
                              f"sflnet prepare again to finish it")
        try:
            index = json.loads((where / INDEX).read_text(encoding="utf-8"))
            body = {k: v for k, v in index.items() if k != "checksum"}
            bad_checksum = index.get("checksum") != _index_checksum(body)
            columns = index["images"]
            self.names = list(columns["name"])
            count = len(self.names)
            if any(len(columns[c]) != count for c in COLUMNS) or count == 0:
                raise ValueError("columns of different lengths")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SflnetError(f"image store {where} has a damaged index {INDEX} ({type(exc).__name__}); "
                              f"run sflnet prepare again") from None
        if index.get("format") != FORMAT or index.get("version") != VERSION:
            raise SflnetError(f"{where / INDEX} is not a version {VERSION} sflnet image store index")
        if bad_checksum:
            raise SflnetError(f"image store {where} has a damaged index {INDEX} (its checksum does not match); "
                              f"run sflnet prepare again")
        self.index = index
        self.checksum = index["checksum"]
        self.size = int(index["settings"]["size"])
        self.dtypes = [np.dtype(d) for d in columns["dtype"]]
        self.shapes = [tuple(int(s) for s in shape) for shape in columns["shape"]]
        self.offsets = [int(o) for o in columns["offset"]]
        self.crcs = [int(c) for c in columns["crc32"]]
        self.nbytes = [int(np.prod(s)) * d.itemsize for s, d in zip(self.shapes, self.dtypes)]
        expected = int(index["pixels_bytes"])
        try:
            actual = os.path.getsize(where / PIXELS)
        except OSError:
            raise SflnetError(f"image store {where} has no {PIXELS} (damaged store); run sflnet prepare again") \
                from None
        if actual != expected:
            raise SflnetError(f"image store {where} is damaged: {PIXELS} has {actual} bytes, its index expects "
                              f"{expected} (truncated?); run sflnet prepare again")
        if self.offsets[-1] + self.nbytes[-1] > expected:
            raise SflnetError(f"image store {where} has a wrong index: images reach beyond {PIXELS}")
        self._map = np.memmap(where / PIXELS, dtype=np.uint8, mode="r")

    def __len__(self):
        return len(self.names)

    @property
    def pixels(self):
        """H · W of every image (for the pixel-balanced sharding)."""
        return [int(s[-2] * s[-1]) for s in self.shapes]

    def raw(self, i):
        """Image ``i`` as stored (a read-only view of the memory map), shape (C, H, W)."""
        start = self.offsets[i]
        return self._map[start:start + self.nbytes[i]].view(self.dtypes[i]).reshape(self.shapes[i])

    def image(self, i, dtype=np.float32):
        """Image ``i`` as a new (C, H, W) float array in [-1, 1], the same bits as the folder path's."""
        raw = self.raw(i)
        values = raw if raw.dtype.kind == "f" else pixels_to_float(raw)
        return np.ascontiguousarray(values, dtype=dtype)

    def check(self, i):
        """SflnetError if image ``i``'s bytes do not match its checksum."""
        start = self.offsets[i]
        if zlib.crc32(self._map[start:start + self.nbytes[i]]) != self.crcs[i]:
            raise SflnetError(f"image store {self.path} is damaged: image {self.names[i]!r} fails its checksum; "
                              f"run sflnet prepare again")

    def verify(self):
        """Check every image's CRC-32 (one pass over the pixel file); SflnetError at the first bad one."""
        for i in range(len(self)):
            self.check(i)

    def stale(self):
        """Names of the images whose source file is missing or changed (size or mtime) since prepare,
        plus the image files now found among the sources that the store lacks. [] when the sources
        are gone altogether (a store may outlive its folder)."""
        columns = self.index["images"]
        roots = [p for p in self.index["sources"] if os.path.exists(p)]
        if not roots:
            return []
        changed = []
        for name, source, size, mtime in zip(self.names, columns["source"], columns["source_size"],
                                             columns["source_mtime_ns"]):
            try:
                if _source_stat(source) != (size, mtime):
                    changed.append(name)
            except OSError:
                changed.append(name)
        if len(roots) == len(self.index["sources"]):
            known = set(self.names) | {name for name, _ in self.index["skipped"]}
            try:
                found = find_image_files(roots, self.index["settings"]["include"], self.index["settings"]["exclude"])
            except SflnetError:
                found = []
            changed += [name for _, name in found if name not in known]
        return changed

    def check_stale(self):
        """SflnetError naming the changed images when :meth:`stale` finds any."""
        changed = self.stale()
        if changed:
            shown = ", ".join(repr(n) for n in changed[:STALE_SHOWN])
            more = f" and {len(changed) - STALE_SHOWN} more" if len(changed) > STALE_SHOWN else ""
            raise SflnetError(f"image store {self.path} is stale: {len(changed)} source images changed, were "
                              f"removed or added since it was prepared ({shown}{more}); run sflnet prepare again")

    def summary(self):
        """What config.json records of the store (not one entry per image)."""
        counts = {}
        for dtype in self.dtypes:
            counts[str(dtype)] = counts.get(str(dtype), 0) + 1
        return {"path": str(self.path.resolve()), "index_sha256": self.checksum, "size": self.size,
                "count": len(self), "pixels_bytes": int(self.index["pixels_bytes"]), "dtypes": counts,
                "shapes": len(set(self.shapes))}


def open_store(path, size=None, check_sources=True, verify=True):
    """Open the store at ``path`` for use: damaged or (``check_sources``) stale stores are refused, and
    with ``verify`` every image's checksum is checked first. ``size``: the --size asked for; SflnetError
    if it differs from the store's."""
    store = ImageStore(path)
    if size is not None and int(size) != store.size:
        raise SflnetError(f"--size {size} differs from the size {store.size} that image store {path} was "
                          f"prepared at; leave --size out, or run sflnet prepare --size {size}")
    if check_sources:
        store.check_stale()
    if verify:
        store.verify()
    return store


def store_dataset(path, size=None, dtype=np.float32, lazy=True):
    """A :class:`StoreDataset` over the store at ``path`` (checked by :func:`open_store`), or with
    ``lazy`` False an in-memory :class:`sflnet.io.images.Dataset` of every image."""
    from sflnet.io.images import Dataset  # noqa: PLC0415

    store = open_store(path, size)
    view = StoreDataset(store, dtype)
    return view if lazy else Dataset(list(view.names), [store.image(i, view.dtype) for i in range(len(store))],
                                     view.source)


class StoreImages:
    """The images of a store as a read-only sequence of float arrays, each read when indexed."""

    def __init__(self, store, dtype):
        self.store, self.dtype = store, dtype

    def __len__(self):
        return len(self.store)

    def __getitem__(self, key):
        if isinstance(key, slice):
            return [self.store.image(i, self.dtype) for i in range(*key.indices(len(self)))]
        return self.store.image(range(len(self))[key], self.dtype)


class StoreDataset:
    """A store seen as a data set: ``names``, ``source``, ``images`` (:class:`StoreImages`), ``shapes``,
    and the store itself, so that training can stream it instead of holding it."""

    def __init__(self, store, dtype):
        self.store = store
        self.dtype = check_dtype_argument(dtype)
        self.names = store.names
        self.shapes = store.shapes
        self.source = f"image store {store.path}"
        self.images = StoreImages(store, self.dtype)

    def __len__(self):
        return len(self.store)


def load_images(paths=None, size=None, include=(), exclude=(), skip_bad=False, dtype=np.float32, warn=None,
                lazy=False, default_size=300):
    """The images of ``--data``: a store (:func:`store_dataset`; ``size`` None takes the store's size,
    include/exclude/skip_bad do not apply) or files and folders (:func:`sflnet.io.images.load_dataset`
    at ``size``, or ``default_size`` when None)."""
    from sflnet.io.images import load_dataset  # noqa: PLC0415

    store = store_path(paths)
    if store is not None:
        if include or exclude:
            raise SflnetError(f"--include/--exclude do not apply to image store {store}; give them to sflnet "
                              f"prepare")
        return store_dataset(store, size, dtype, lazy)
    return load_dataset(paths=paths or None, size=default_size if size is None else size, include=include,
                        exclude=exclude, skip_bad=skip_bad, dtype=dtype, warn=warn)


# -- prepare -------------------------------------------------------------------------------------

def _read_journal(folder, header):
    """The journal's entries when its header equals ``header``, else [] (a different prepare); a torn
    last line (a kill while writing it) ends the list."""
    try:
        lines = (folder / JOURNAL).read_text(encoding="utf-8").splitlines()
        if not lines or json.loads(lines[0]) != header:
            return []
    except (OSError, ValueError):
        return []
    entries = []
    for line in lines[1:]:
        try:
            entries.append(json.loads(line))
        except ValueError:
            break
    return entries


def _kept_entries(entries, files, part_bytes):
    """The journal's leading entries that still match the file list and the bytes in the part file."""
    kept = []
    for entry, (path, name) in zip(entries, files):
        if entry["name"] != name or entry["source"] != str(path.resolve()):
            break
        try:
            if _source_stat(path) != (entry["source_size"], entry["source_mtime_ns"]):
                break
        except OSError:
            break
        if "skipped" not in entry and entry["offset"] + entry["nbytes"] > part_bytes:
            break
        kept.append(entry)
    return kept


def _check_out(folder):
    if folder.exists() and not folder.is_dir():
        raise SflnetError(f"--out {folder} exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not is_store(folder):
        raise SflnetError(f"--out {folder} is a non-empty folder that is not an image store; give a new or "
                          f"empty folder")


def prepare_store(paths, out, size=300, include=(), exclude=(), skip_bad=False, workers=None, progress=None,
                  warn=None, after_image=None):
    """Build (or finish, or refresh) the store ``out`` from the images under ``paths``.

    workers:  decoding threads (default: every CPU); Pillow releases the GIL while decoding.
    progress: optional ``progress(n)`` called after each image with the number done (including kept ones).
    warn:     ``warn(line)`` for each skipped bad file (with ``skip_bad``).
    after_image: test hook ``after_image(count)`` called after each new image is journaled.
    returns   ("up-to-date" | "prepared", :class:`ImageStore`).
    """
    size = _check_size_argument(size)
    folder = pathlib.Path(out)
    _check_out(folder)
    path_list = [str(pathlib.Path(p).resolve()) for p in ([paths] if isinstance(paths, (str, os.PathLike))
                                                          else paths)]
    settings = {"size": size, "include": list(include), "exclude": list(exclude), "skip_bad": bool(skip_bad)}
    files = find_image_files(path_list, include=include, exclude=exclude)
    if (folder / INDEX).is_file():
        try:
            old = ImageStore(folder)
            if old.index["settings"] == settings and old.index["sources"] == path_list and not old.stale():
                return "up-to-date", old
            del old
        except SflnetError:
            pass
        (folder / INDEX).unlink()
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / PIXELS).is_file() and not (folder / PART).exists():
        os.replace(folder / PIXELS, folder / PART)      # a prepare killed between its last two renames
    header = {"format": FORMAT, "version": VERSION, "settings": settings, "sources": path_list}
    part_bytes = os.path.getsize(folder / PART) if (folder / PART).is_file() else 0
    kept = _kept_entries(_read_journal(folder, header), files, part_bytes) if part_bytes or \
        (folder / JOURNAL).is_file() else []
    end = max([e["offset"] + e["nbytes"] for e in kept if "skipped" not in e], default=0)
    with open(folder / JOURNAL, "w", encoding="utf-8") as journal:
        journal.write(json.dumps(header) + "\n")
        for entry in kept:
            journal.write(json.dumps(entry) + "\n")
    entries = list(kept)
    mode = "r+b" if (folder / PART).is_file() else "wb"
    with open(folder / PART, mode) as pixels, open(folder / JOURNAL, "a", encoding="utf-8") as journal:
        pixels.truncate(end)
        pixels.seek(end)
        if progress is not None and kept:
            progress(len(kept))
        _write_images(files[len(kept):], size, skip_bad, workers, pixels, journal, entries, end,
                      progress, warn, after_image)
        pixels.flush()
        os.fsync(pixels.fileno())
    return "prepared", _finish(folder, header, entries, files)


def _write_images(files, size, skip_bad, workers, pixels, journal, entries, end, progress, warn, after_image):
    """Decode ``files`` on a thread pool (a bounded window ahead) and append them in order."""
    workers = max(1, int(workers or os.cpu_count() or 1))
    window = deque()
    pending = iter(files)
    done = 0

    def decode(path):
        try:
            return _prepared_image(path, size), None
        except _BadImageError as exc:
            return None, str(exc)

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        def fill():
            while len(window) < 4 * workers:
                item = next(pending, None)
                if item is None:
                    return
                window.append((item, _source_stat(item[0]), pool.submit(decode, item[0])))
        fill()
        while window:
            (path, name), (source_size, mtime), future = window.popleft()
            array, problem = future.result()
            entry = {"name": name, "source": str(path.resolve()), "source_size": source_size,
                     "source_mtime_ns": mtime}
            if problem is not None:
                if not skip_bad:
                    raise SflnetError(f"cannot load image {path}: {problem}")
                (warn or (lambda line: None))(f"skipping {name}: {problem}")
                entry["skipped"] = problem
            else:
                data = array.tobytes()
                pad = (-end) % ALIGN
                pixels.write(b"\0" * pad)
                end += pad
                pixels.write(data)
                pixels.flush()
                entry.update(dtype=str(array.dtype), shape=list(array.shape), offset=end, nbytes=len(data),
                             crc32=zlib.crc32(data))
                end += len(data)
            journal.write(json.dumps(entry) + "\n")
            journal.flush()
            entries.append(entry)
            done += 1
            if progress is not None:
                progress(1)
            if after_image is not None:
                after_image(done)
            fill()


def _finish(folder, header, entries, files):
    """Rename the pixel file into place and write the index last (atomically); remove the journal."""
    images = [e for e in entries if "skipped" not in e]
    if not images:
        raise SflnetError(f"none of the {len(files)} image files could be loaded (all were skipped as bad)")
    last = images[-1]
    body = dict(header, pixels_bytes=last["offset"] + last["nbytes"],
                skipped=[[e["name"], e["skipped"]] for e in entries if "skipped" in e],
                images={column: [e[column] for e in images] for column in COLUMNS})
    os.replace(folder / PART, folder / PIXELS)
    write_text_atomic(folder / INDEX, json.dumps(dict(body, checksum=_index_checksum(body))), what="store index")
    (folder / JOURNAL).unlink()
    return ImageStore(folder)
