"""The training data of a run: loading it for the options, its fingerprint and description in
config.json, and the checks that a resumed run sees the same images and that every loss can measure them."""

import hashlib

import numpy as np

from sflnet.backend import to_host
from sflnet.errors import SflnetError
from sflnet.losses import make_objective


def data_fingerprint(images):
    """SHA-256 over every image's shape, dtype and bytes (order matters)."""
    digest = hashlib.sha256()
    for image in images:
        host = np.ascontiguousarray(to_host(image))
        digest.update(f"{host.shape}{host.dtype}".encode())
        digest.update(host.tobytes())
    return digest.hexdigest()


def load_training_data(options, warn=None, split="train"):
    """The :class:`sflnet.io.images.Dataset` selected by the options (the model's built-in images when ``data``
    is None); ``split`` "test" is the VAE's held-out digits (the CAE has no split)."""
    return options.spec.load_data(options, split, warn)


def check_image_sizes(expression, settings, dataset):
    """SflnetError (one line) if a loss of the objective cannot measure an image of the data set.

    ssim needs images of at least 11×11 pixels and stft at least one window; pl, sfl and l1 take any size.
    """
    objective = make_objective(expression, settings)
    shapes = dataset.shapes if hasattr(dataset, "store") else [image.shape for image in dataset.images]
    for name, shape in zip(dataset.names, shapes):
        problem = objective.size_problem(int(shape[-2]), int(shape[-1]))
        if problem:
            raise SflnetError(f"--loss {expression}: {problem} (image {name!r}); use larger images (--size) "
                              f"or another loss")


#: an image store's run lists its images in config.json only up to this many (else the store's summary)
LISTED_IMAGES = 1000


def describe_data(dataset):
    """The ``data`` entry of config.json: source, count, fingerprint, names and sizes. For an image store
    (:mod:`sflnet.io.store`) the fingerprint is the store's index checksum (it covers every image's
    checksum), ``store`` its summary, and the names are listed only up to :data:`LISTED_IMAGES` images."""
    if hasattr(dataset, "store"):
        entry = {"source": dataset.source, "count": len(dataset), "sha256": dataset.store.checksum,
                 "store": dataset.store.summary()}
        if len(dataset) <= LISTED_IMAGES:
            entry["images"] = [{"name": name, "height": int(shape[1]), "width": int(shape[2])}
                               for name, shape in zip(dataset.names, dataset.shapes)]
        return entry
    return {
        "source": dataset.source,
        "count": len(dataset),
        "sha256": data_fingerprint(dataset.images),
        "images": [{"name": name, "height": int(image.shape[1]), "width": int(image.shape[2])}
                   for name, image in zip(dataset.names, dataset.images)],
    }


def check_same_data(saved, dataset, config_path):
    """SflnetError (one line) if ``dataset`` differs from the ``data`` entry saved in config.json."""
    now = describe_data(dataset)
    if "images" in saved and "images" in now:
        _check_same_images(saved, now, config_path)
    elif saved.get("count") != now["count"]:
        raise SflnetError(f"the training images differ from those in {config_path}: {now['count']} images now, "
                          f"{saved.get('count')} in the run")
    if saved.get("sha256") != now["sha256"]:
        kind = "image store" if "store" in saved or "store" in now else "pixels"
        raise SflnetError(f"the training images' {kind} differ from those recorded in {config_path} "
                          f"(files changed since the run started, or another --data?)")


def _check_same_images(saved, now, config_path):
    saved_names = [item["name"] for item in saved.get("images", [])]
    now_names = [item["name"] for item in now["images"]]
    if saved_names != now_names:
        missing = [n for n in saved_names if n not in now_names]
        added = [n for n in now_names if n not in saved_names]
        detail = (f"missing {missing[0]!r}" if missing else f"new {added[0]!r}" if added else "different order")
        raise SflnetError(f"the training images differ from those in {config_path}: {len(now_names)} images now, "
                          f"{len(saved_names)} in the run ({detail})")
    for old, new in zip(saved["images"], now["images"]):
        if (old["height"], old["width"]) != (new["height"], new["width"]):
            raise SflnetError(f"image {new['name']!r} is {new['height']}x{new['width']} now but was "
                              f"{old['height']}x{old['width']} in {config_path}")
