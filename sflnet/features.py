"""Encoder features of the Table 1 autoencoder: the activation f^l of one layer per image.

:meth:`sflnet.models.cae.Autoencoder.activation` walks the model's layers in order and stops
after the one that produces f^l:

=====  ===========================================  =====================
l      what                                         shape of f^l
=====  ===========================================  =====================
2      conv2 (3→32, stride 1) + ReLU                (32, H, W)
3      conv3 (32→16, stride 2) + ReLU, bottleneck   (16, ⌈H/2⌉, ⌈W/2⌉)
4      bilinear ×2 + crop, conv4 (16→32) + ReLU     (32, H, W)
5      conv5 (32→3) + tanh, the reconstruction      (3, H, W)
=====  ===========================================  =====================

Pooling turns a map (C, H', W') into a vector (C,): ``mean`` or ``max`` over the
spatial axes; ``none`` keeps the map.
"""

import numpy as np

from sflnet.backend import to_host
from sflnet.errors import SflnetError

LAYERS = (2, 3, 4, 5)   #: the f^l that can be exported
DEFAULT_LAYER = 3
POOLS = ("none", "mean", "max")
DEFAULT_POOL = "none"


def check_layer_and_pool(layer, pool):
    """SflnetError (one line) for a layer outside 2..5 or an unknown pooling."""
    if layer not in LAYERS:
        raise SflnetError(f"--layer must be one of {', '.join(str(n) for n in LAYERS)} "
                          f"(f^2 … f^5 of the autoencoder), got {layer}")
    if pool not in POOLS:
        raise SflnetError(f"--pool must be one of {', '.join(POOLS)}, got {pool!r}")


def layer_activation(model, group, layer):
    """f^layer of a group of images. group: (n, 3, H, W) on the model's device and dtype.

    returns the device array (n, C, H', W') (see the table in the module docstring).
    """
    check_layer_and_pool(layer, DEFAULT_POOL)
    return model.activation(group, layer)


def pool_features(feature, pool):
    """feature: (C, H', W') host array → (C,) for ``mean``/``max``, unchanged for ``none``."""
    if pool == "mean":
        return feature.mean(axis=(1, 2))
    if pool == "max":
        return feature.max(axis=(1, 2))
    return feature


def encode_images(model, images, layer=DEFAULT_LAYER, pool=DEFAULT_POOL):
    """Features of each image, one at a time (images may differ in size).

    model: an :class:`sflnet.models.cae.Autoencoder`.
    images: list of (3, H_i, W_i) arrays on the model's device, in its dtype, values in [−1, 1].
    returns a list of host NumPy arrays, same order: (C, H'_i, W'_i) for ``pool="none"``,
    (C,) for ``mean``/``max``.
    """
    check_layer_and_pool(layer, pool)
    features = []
    for image in images:
        activation = layer_activation(model, image[None], layer)[0]
        features.append(pool_features(np.asarray(to_host(activation)), pool))
    return features
