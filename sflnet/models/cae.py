"""The Table 1 autoencoder with its losses, for batches of images of different sizes.

=====  ==========================================  ==================
layer  what                                        parameters
=====  ==========================================  ==================
1      input image f^1 (3 × H × W, in [−1, 1])
2      conv 3→32, 3×3, stride 1, ReLU              w2 (32,3,3,3), b2
3      conv 32→16, 3×3, stride 2, ReLU             w3 (16,32,3,3), b3
4      bilinear ×2 + crop, conv 16→32, ReLU        w4 (32,16,3,3), b4
5      conv 32→3, 3×3, tanh → f^L                  w5 (3,32,3,3), b5
6      fixed LoG bank (loss only)                  none
=====  ==========================================  ==================

A batch is a list of images (3, H_i, W_i), or a list of groups (n, 3, H, W)
of same-sized images, or one such 4-D array. The losses are per-image means
(each image normalised by its own H_i·W_i) averaged over the N_m images, so
the gradient is the mean of the per-image gradients whatever the grouping.
Groups are processed in chunks of at most ``max_chunk_pixels`` pixels and the
gradient is accumulated, so peak memory does not grow with the batch.
"""

import numpy as np

from sflnet.backend import get_array_module, to_device
from sflnet.errors import SflnetError
from sflnet.nn import Conv2D, ReLU, Tanh, Upsample2x, UpsampleConv2D
from sflnet.ops.filters import PAPER_SIGMAS
from sflnet.losses import DEFAULT_EXPRESSION, LossSettings, make_objective
from sflnet.losses.base import PAPER_SFL_WEIGHTS
from sflnet.models.base import Hyperparameter, Model, is_whole_number, number_above
from sflnet.optim import MomentumSGD

PARAM_NAMES = ("w2", "b2", "w3", "b3", "w4", "b4", "w5", "b5")
PARAM_SHAPES = {
    "w2": (32, 3, 3, 3), "b2": (32,),
    "w3": (16, 32, 3, 3), "b3": (16,),
    "w4": (32, 16, 3, 3), "b4": (32,),
    "w5": (3, 32, 3, 3), "b5": (3,),
}
DEFAULT_SIGMAS = PAPER_SIGMAS              # the SFL's LoG scales and weights (Sec. 4), defined once in
DEFAULT_SFL_WEIGHTS = PAPER_SFL_WEIGHTS    # sflnet.ops.filters and sflnet.losses.base
DEFAULT_PL_WEIGHTS = (1.0, 1.0, 1.0)
DEFAULT_MAX_CHUNK_PIXELS = 3 << 16   # 196608: two 300×300 or three 300×200 images per chunk


def init_params(seed=0, std=0.02, dtype=np.float32, xp=np):
    """Sec. 4 initialisation: weights ~ N(0, std²) (the paper's "N(0, 0.02)" read as a std), biases 0.

    Drawn on the host with ``numpy.random.default_rng(seed)`` in the order
    w2, w3, w4, w5, so the CPU and the GPU start from identical weights.
    returns {name: array} with the shapes of ``PARAM_SHAPES``, on ``xp``.
    """
    rng = np.random.default_rng(seed)
    params = {}
    for name in PARAM_NAMES:
        shape = PARAM_SHAPES[name]
        if name.startswith("w"):
            host = rng.normal(0.0, std, size=shape)
        else:
            host = np.zeros(shape)
        params[name] = to_device(host.astype(dtype), xp)
    return params


def as_groups(batch):
    """Normalise a batch to a list of (n, 3, H, W) arrays of same-sized images.

    Accepts one (3, H, W) image, one (n, 3, H, W) array, or a list mixing
    (3, H, W) images and (n, 3, H, W) groups. Loose images of the same size
    are stacked into one group (exact: the loss is a sum of per-image terms).
    """
    if hasattr(batch, "ndim"):
        batch = [batch]
    groups, loose = [], {}
    for item in batch:
        if item.ndim == 4:
            groups.append(item)
        elif item.ndim == 3:
            loose.setdefault(item.shape, []).append(item)
        else:
            raise ValueError(f"expected images (3, H, W) or groups (n, 3, H, W), got shape {item.shape}")
    for images in loose.values():
        xp = get_array_module(images[0])
        groups.append(xp.stack(images))
    for g in groups:
        if g.shape[1] != 3:
            raise ValueError(f"images must have 3 colour channels, got shape {g.shape}")
    return groups


def _chunks(group, max_pixels):
    """Split a group (n, 3, H, W) into consecutive slices of at most ``max_pixels`` pixels (at least one image)."""
    n, _, h, w = group.shape
    per = max(1, max_pixels // (h * w))
    return [group[i:i + per] for i in range(0, n, per)]


class Autoencoder(Model):
    """The Table 1 CAE (layers 2-5) plus its losses (layer 6 and Eq. 4/6/7).

    ``layers`` is the ordered list walked by :meth:`forward`; :meth:`backward`
    walks it in reverse. Parameters live in the Conv2D layers and are exposed
    by name (w2 … b5) through :attr:`params` and :attr:`grads`.
    """

    PARAM_SHAPES = PARAM_SHAPES

    def __init__(self, params, loss=DEFAULT_EXPRESSION, sigmas=DEFAULT_SIGMAS, sfl_weights=DEFAULT_SFL_WEIGHTS,
                 pl_weights=DEFAULT_PL_WEIGHTS, max_chunk_pixels=DEFAULT_MAX_CHUNK_PIXELS, loss_settings=None,
                 fuse_upsample=True):
        """params: {w2 … b5} arrays (all one dtype, one device; held, not copied).
        loss: a ``--loss`` expression (:mod:`sflnet.losses.objective`), e.g. "pl+sfl" (E = E_PL + E_SFL,
        the paper's Eq. 7) or "pl" (E = E_PL; the SFLs are measured, not backpropagated).
        loss_settings: :class:`sflnet.losses.LossSettings`; default: one built from sigmas,
        sfl_weights and pl_weights.
        fuse_upsample: layer 4 as one :class:`UpsampleConv2D` (the default, faster) or as
        :class:`Upsample2x` then :class:`Conv2D` (the readable reference; equal up to rounding)."""
        self.dtype, self.xp = self.check_params(params)
        if loss_settings is None:
            loss_settings = LossSettings(sigmas=tuple(sigmas), sfl_weights=tuple(sfl_weights),
                                         pl_weights=tuple(pl_weights))
        self.loss_settings = loss_settings
        self.objective = make_objective(loss, loss_settings)
        self.loss = self.objective.expression
        self.max_chunk_pixels = int(max_chunk_pixels)

        self.conv2 = Conv2D(params["w2"], params["b2"], stride=1)
        self.conv3 = Conv2D(params["w3"], params["b3"], stride=2)
        # 32 → 3 channels: unfolding the 3-channel side (27 rows) instead of the input (288 rows) is far cheaper.
        self.conv5 = Conv2D(params["w5"], params["b5"], stride=1, unfold="output")
        self.fuse_upsample = bool(fuse_upsample)
        if self.fuse_upsample:
            # layer 4 as one sub-pixel convolution at the low resolution (equal to the two layers below)
            self.up4 = None
            self.conv4 = UpsampleConv2D(params["w4"], params["b4"])
            layer4 = [self.conv4]
        else:
            self.up4 = Upsample2x()
            self.conv4 = Conv2D(params["w4"], params["b4"], stride=1)
            layer4 = [self.up4, self.conv4]
        self.layers = [self.conv2, ReLU(), self.conv3, ReLU(), *layer4, ReLU(), self.conv5, Tanh()]
        #: f^l → how many of ``layers`` produce it (a walk stops after that many layers)
        self.layer_ends = {2: 2, 3: 4, 4: 4 + len(layer4) + 1, 5: len(self.layers)}
        self._convs = {"2": self.conv2, "3": self.conv3, "4": self.conv4, "5": self.conv5}

    @property
    def pixel_loss(self):
        """The ``pl`` loss object (Eq. 4), always measured."""
        return self.objective.losses["pl"]

    @property
    def sfl_loss(self):
        """The ``sfl`` loss object (Eq. 6), always measured."""
        return self.objective.losses["sfl"]

    @property
    def sigmas(self):
        return self.sfl_loss.sigmas

    @property
    def params(self):
        """{name: array} — the live parameter arrays (w2 … b5)."""
        return {f"{kind}{num}": conv.params[kind] for num, conv in self._convs.items() for kind in ("w", "b")}

    def layer_grads(self):
        """{name: ∂E/∂θ of the last backward} from the Conv2D layers."""
        return {f"{kind}{num}": conv.grads[kind] for num, conv in self._convs.items() for kind in ("w", "b")}

    def forward(self, x):
        """x: (n, 3, H, W) → f^L: (n, 3, H, W). The upsampling is cropped back to H × W."""
        return self.activation(x, 5)

    def activation(self, x, layer):
        """f^layer (l = 2 … 5) of x: (n, 3, H, W); the walk stops after the layer that produces it."""
        (self.conv4 if self.fuse_upsample else self.up4).output_size = x.shape[-2:]
        for step in self.layers[:self.layer_ends[layer]]:
            x = step.forward(x)
        return x

    def backward(self, grad_recon):
        """grad_recon = ∂E/∂f^L: (n, 3, H, W). Walks the layers in reverse and fills each Conv2D's grads.

        The first layer's input gradient (∂E/∂f^1) is not needed and not computed.
        """
        g = grad_recon
        for layer in reversed(self.layers[1:]):
            g = layer.backward(g)
        self.layers[0].backward(g, need_dx=False)

    def _check_group(self, group):
        if group.dtype != self.dtype:
            raise ValueError(f"images are {group.dtype} but the model is {self.dtype}; convert them first")
        if get_array_module(group) is not self.xp:
            raise ValueError("images and parameters are on different devices")

    def chunks(self, batch, batch_count, positions):
        """The batch (see :func:`as_groups`) as chunks of same-sized images, each group checked first.

        returns (N_m, chunk generator): N_m is the number of images unless ``batch_count`` is given;
        ``positions`` are not used (the CAE has no per-image random draws).
        """
        del positions
        if hasattr(batch, "stream"):   # a streamed batch (sflnet.training.source): chunks as planned by chunk_plan
            return (len(batch) if batch_count is None else batch_count), self._checked(batch.stream())
        groups = as_groups(batch)
        if batch_count is None:
            batch_count = sum(g.shape[0] for g in groups)

        def each_chunk():
            for group in groups:
                self._check_group(group)
                yield from _chunks(group, self.max_chunk_pixels)
        return batch_count, each_chunk()

    def _checked(self, chunks):
        for chunk in chunks:
            self._check_group(chunk)
            yield chunk

    def chunk_plan(self, shapes):
        """The chunks :meth:`chunks` would cut a batch of images of these (C, H, W) ``shapes`` into, as lists of
        positions: by shape in order of first appearance, then consecutive runs of at most
        ``max_chunk_pixels`` pixels (as :func:`as_groups` and :func:`_chunks`), so a streamed batch
        gives the same chunks, and the same sums, as the images held in memory."""
        by_shape = {}
        for position, shape in enumerate(shapes):
            by_shape.setdefault(tuple(shape), []).append(position)
        plan = []
        for shape, positions in by_shape.items():
            per = max(1, self.max_chunk_pixels // (shape[-2] * shape[-1]))
            plan += [positions[i:i + per] for i in range(0, len(positions), per)]
        return plan

    def measure(self, chunk, batch_count, names=None):
        """Eq. 2-3 forward of one chunk (n, 3, H, W), then every measured loss (Eq. 4, 6 for ``pl+sfl``),
        or only ``names``."""
        return self.objective.forward(self.forward(chunk), chunk, batch_count, names)

    def backward_measured(self):
        """∂E/∂f^L of the last chunk (Eq. 8, 9 for ``pl+sfl``) back through the layers."""
        self.backward(self.objective.backward())

    def reconstruct(self, images):
        """f^L for each image. images: list of (3, H_i, W_i) → list of (3, H_i, W_i), same order.

        Same-sized images are run together (chunked by ``max_chunk_pixels``).
        """
        xp = self.xp
        by_shape = {}
        for index, image in enumerate(images):
            by_shape.setdefault(tuple(image.shape), []).append(index)
        outputs = [None] * len(images)
        for indices in by_shape.values():
            group = xp.stack([images[i] for i in indices])
            self._check_group(group)
            parts = [self.forward(chunk) for chunk in _chunks(group, self.max_chunk_pixels)]
            recon = xp.concatenate(parts) if len(parts) > 1 else parts[0]
            for row, i in enumerate(indices):
                outputs[i] = recon[row]
        return outputs


# ---------------------------------------------------------------------------
# What the run machinery calls (see sflnet.models.ModelSpec)
# ---------------------------------------------------------------------------

ARCHITECTURE = "ichimura-table1-cae"


def _momentum_check(value):
    return None if number_above(0, inclusive=True)(value) is None and value < 1 else "must be in [0, 1)"


# The hyperparameters this model owns (``sflnet train --lr ...``); None in the other models' runs.
HYPERPARAMETERS = (
    Hyperparameter("lr", "float", 0.02, "learning rate (> 0).", check=number_above(0)),
    Hyperparameter("momentum", "float", 0.5, "momentum, in [0, 1).", check=_momentum_check),
    Hyperparameter("init_std", "float", 0.02, "std of the normal initial weights (paper: N(0, 0.02)); biases "
                   "start at 0. (The vae starts from Glorot-uniform weights.)",
                   check=number_above(0, inclusive=True)),
)
EXCLUSIVE_OPTIONS = ("size",)   # a shared option only this model uses (the other models leave it None)


def validate_options(options):
    """SflnetError (one line naming the option) for a bad value of the options the declared checks
    (:data:`HYPERPARAMETERS`) do not cover: ``size``."""
    if not is_whole_number(options.size) or options.size < 0:
        raise SflnetError(f"--size must be 0 (native size) or a positive number of pixels, "
                          f"got {options.size!r}")


def make_optimizer(options):
    """Momentum SGD at the constant ``lr`` (paper Sec. 4); no schedule. returns (optimizer, None)."""
    return MomentumSGD(options.lr, options.momentum), None


def rate_label(options):
    """The learning rate as the curves' title shows it."""
    return f"lr {options.lr:g}"


def smaller_rate(options):
    """The option a diverged run should try: a ten times smaller ``--lr``."""
    return f"--lr {options.lr / 10:g}"



# -- what the commands need (sflnet reconstruct / evaluate) ---------------------------------------

def reconstruct_inputs(options, inputs, size, skip_bad, count, warn):
    """The images ``sflnet reconstruct`` reads: the INPUT files/folders at ``size`` (default: the run's
    --size), in the run's dtype; ``count`` is not used (there is no built-in test split)."""
    from sflnet.io.store import load_images  # noqa: PLC0415

    del count
    if not inputs:
        raise SflnetError("give at least one INPUT image file or folder to reconstruct")
    return load_images(list(inputs), size=size, skip_bad=skip_bad, dtype=np.dtype(options.dtype), warn=warn,
                       default_size=options.size, lazy=True)   # a store: read as used; its size unless --size


def evaluation_data(options, request):
    """What ``sflnet evaluate`` measures: ``request["data"]`` (absolute paths) with its include/exclude
    patterns, or else the run's own data and patterns, at ``request["size"]`` (default: the run's).
    returns (load: () -> Dataset, a description of the images for the report)."""
    from sflnet.io.store import load_images  # noqa: PLC0415

    if request["data"]:
        paths, include, exclude, skip_bad = (list(request["data"]), request["include"], request["exclude"],
                                             request["skip_bad"])
    else:
        paths = options.data
        include = request["include"] or tuple(options.include or ())
        exclude = request["exclude"] or tuple(options.exclude or ())
        skip_bad = request["skip_bad"] or bool(options.skip_bad)
    size = options.size if request["size"] is None else request["size"]

    def load():   # a store: its own size unless --size is given
        return load_images(paths or None, size=request["size"], include=include, exclude=exclude,
                           skip_bad=skip_bad, dtype=np.dtype(options.dtype), warn=request["warn"],
                           default_size=options.size, lazy=True)   # a store is streamed (evaluate_data)
    return load, f"longer side {size if size else 'native'}{' px' if size else ''}"


def init_for_run(options, xp):
    """Initial parameters of a run: :func:`init_params` with the options' seed, init_std and dtype."""
    return init_params(options.seed, options.init_std, np.dtype(options.dtype), xp)


def build_for_run(params, loss, settings, options=None):
    """The :class:`Autoencoder` of a run (``options`` adds nothing for this model)."""
    del options
    return Autoencoder(params, loss=loss, loss_settings=settings)


def load_for_run(options, split="train", warn=None):
    """The images of a run: ``--data`` (or the built-in demo photos) at ``--size``; there is no test split."""
    from sflnet.io.store import load_images  # noqa: PLC0415

    del split
    return load_images(list(options.data) if options.data else None, size=options.size, include=options.include,
                       exclude=options.exclude, skip_bad=options.skip_bad, dtype=np.dtype(options.dtype),
                       warn=warn, lazy=True)
