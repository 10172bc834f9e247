"""``sflnet gradcheck --explain NAME``: the derivation (backward docstring) behind a checked layer."""

import inspect

from sflnet import losses, nn
from sflnet.errors import SflnetError
from sflnet.gradcheck.cases.losses import loss_row_name
from sflnet.gradcheck.cases.network import network_objectives
from sflnet.gradcheck.cases.vae import VAE_NETWORK_OBJECTIVES
from sflnet.gradcheck.suite import layer_names
from sflnet.models import cae as model
from sflnet.models import vae as vae_model
from sflnet.ops.im2col import col2im


def backward_targets():
    """name → (label, the backward whose docstring holds the derivation, its class or None) for every
    checked layer name (``im2col`` names the function :func:`sflnet.ops.im2col.col2im`)."""
    def method(cls):
        return (f"{cls.__module__}.{cls.__qualname__}.backward", cls.backward, cls)

    targets = {
        "im2col": ("sflnet.ops.im2col.col2im (the adjoint of im2col)", col2im, None),
        "conv2d_s1": method(nn.Conv2D), "conv2d_s2": method(nn.Conv2D),
        "relu": method(nn.ReLU), "tanh": method(nn.Tanh), "upsample2x": method(nn.Upsample2x),
        "upsample_conv": method(nn.UpsampleConv2D), "logbank": method(nn.LoGBank),
        "conv2d_valid_s1": method(nn.Conv2D), "conv2d_valid_s2": method(nn.Conv2D),
        "conv_transpose_s1": method(nn.ConvTranspose2D), "conv_transpose_s2": method(nn.ConvTranspose2D),
        "conv_transpose_tf_same_s1": method(nn.ConvTranspose2D),
        "conv_transpose_tf_same_s2": method(nn.ConvTranspose2D),
        "linear": method(nn.Linear), "sigmoid": method(nn.Sigmoid),
        "reparameterize": method(nn.Reparameterize), "kl_loss": method(losses.KLDivergence),
    }
    for name in losses.REGISTRY:    # every registered loss, plug-ins included: the class make_loss builds
        targets[loss_row_name(name)] = method(type(losses.make_loss(name, losses.LossSettings())))
    for name in ("network_pl", "network_sfl", *network_objectives()):
        targets[name] = method(model.Autoencoder)
    for name in VAE_NETWORK_OBJECTIVES:
        targets[name] = method(vae_model.VAE)
    return targets


def explain(layer):
    """The derivation of one checked layer's backward: a title line and its docstring, as text.

    When the backward's docstring points to its class ("see the class docstring"), the class
    docstring follows. An unknown layer is an SflnetError listing the known ones.
    """
    names = layer_names()
    name = layer.strip().lower().replace("-", "_")
    if name not in names:
        raise SflnetError(f"--explain {layer!r} is not a checked layer; choose one of {', '.join(names)}")
    label, function, cls = backward_targets()[name]
    text = inspect.getdoc(function) or "(no docstring)"
    parts = [f"{name}: {label}", "", text]
    if cls is not None and "class docstring" in text and inspect.getdoc(cls):
        parts += ["", f"{cls.__qualname__}:", "", inspect.getdoc(cls)]
    return "\n".join(parts)
