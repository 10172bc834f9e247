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
    for name, image in zip(dataset.names, dataset.images):
        problem = objective.size_problem(int(image.shape[-2]), int(image.shape[-1]))
        if problem:
            raise SflnetError(f"--loss {expression}: {problem} (image {name!r}); use larger images (--size) "
                              f"or another loss")


def describe_data(dataset):
    """The ``data`` entry of config.json: source, count, fingerprint, names and sizes."""
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
    if saved.get("sha256") != now["sha256"]:
        raise SflnetError(f"the training images' pixels differ from those recorded in {config_path} "
                          f"(files changed since the run started?)")
