"""The layers of the paper's autoencoder and of Dalal's β-VAE, one class each, with hand-written forward and backward.

* :mod:`sflnet.nn.base`        — :class:`Layer`: ``params``/``grads`` dicts, ``forward(x)``,
  ``backward(dy, need_dx=True) -> dx``, and the cache convention;
* :mod:`sflnet.nn.conv`        — :class:`Conv2D` (Eq. 2), :class:`UpsampleConv2D` (layer 4 in one
  piece), :class:`ConvTranspose2D` (the β-VAE's decoder);
* :mod:`sflnet.nn.activations` — :class:`ReLU`, :class:`Tanh` (Eq. 3), :class:`Sigmoid`;
* :mod:`sflnet.nn.linear`      — :class:`Linear`, :class:`Reshape`, :class:`Flatten`;
* :mod:`sflnet.nn.fixed`       — the parameter-free linear layers :class:`Upsample2x` (layer 4's
  bilinear ×2) and :class:`LoGBank` (layer 6, Eq. 5);
* :mod:`sflnet.nn.latent`      — :class:`Reparameterize` (z = μ + σ·ε).

The array kernels under them are in :mod:`sflnet.ops`; the losses built on them in
:mod:`sflnet.losses`. Every layer class is importable from here, e.g.
``from sflnet.nn import Conv2D``.

Notation (paper Sec. 2-3): ``f^l`` is the volume of layer l, ``o^{l+1}`` the
pre-activation of Eq. 2, ``a`` the activation of Eq. 3, ``f^L`` the
reconstruction (L = 5) and ``f^1`` the input image.
"""

from sflnet.nn.activations import ReLU, Sigmoid, Tanh
from sflnet.nn.base import Layer
from sflnet.nn.conv import Conv2D, ConvTranspose2D, UpsampleConv2D
from sflnet.nn.fixed import LoGBank, Upsample2x
from sflnet.nn.latent import Reparameterize
from sflnet.nn.linear import Flatten, Linear, Reshape

__all__ = ["Conv2D", "ConvTranspose2D", "Flatten", "Layer", "Linear", "LoGBank", "ReLU", "Reparameterize",
           "Reshape", "Sigmoid", "Tanh", "Upsample2x", "UpsampleConv2D"]
