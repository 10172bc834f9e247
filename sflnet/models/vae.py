"""Dalal's β-VAE (model ``VAE1`` of *Deblurring Variational Autoencoders with Short-Time Fourier
Transform*): MNIST digits through a 2-D latent space.

======  ================================================  ==========================
part    what                                              parameters
======  ================================================  ==========================
input   x: (n, 1, 28, 28), pixels in [0, 1]
enc 1   conv 1→32, 3×3, stride 2, valid, ReLU → 13×13     conv1_w (32,1,3,3), conv1_b
enc 2   conv 32→64, 3×3, stride 2, valid, ReLU → 6×6      conv2_w (64,32,3,3), conv2_b
enc 3   flatten (2304), dense → 4 = (μ, log σ²)            enc_w (4,2304), enc_b
latent  z = μ + exp(½ log σ²)·ε, ε ~ N(0, I)               none
dec 1   dense 2→1568, ReLU, reshape to 32×7×7             dec_w (1568,2), dec_b
dec 2   transposed conv 32→64, 3×3, stride 2, ReLU → 14²  deconv1_w (32,64,3,3), deconv1_b
dec 3   transposed conv 64→32, 3×3, stride 2, ReLU → 28²  deconv2_w (64,32,3,3), deconv2_b
dec 4   transposed conv 32→1, 3×3, stride 1, sigmoid      deconv3_w (32,1,3,3), deconv3_b
======  ================================================  ==========================

The objective is ``E = β·KL + Σ_t w_t E_t``: the KL divergence of
:class:`sflnet.losses.kl.KLDivergence` and a reconstruction expression of
:mod:`sflnet.losses` (``--loss``). Every value is a mean over the batch's images,
like the CAE's losses; SSIM uses data range 1.

Two options make the authors' code's network (``--output``, ``--tconv-padding``):

* ``output="sigmoid"`` (the default): the decoder ends with the sigmoid, and the losses and the
  metrics see its output in [0, 1]. ``output="linear"``: no sigmoid; the losses and the metrics see
  the raw output of the last transposed convolution, unclipped, as the authors' code does
  (``decode(z, apply_sigmoid=False)``). Pictures (``sflnet reconstruct``, ``sample``) are clipped
  to [0, 1] only when they are drawn.
* ``tconv_padding="symmetric"`` (the default) or ``"tf-same"``: the transposed convolutions' padding,
  sflnet's symmetric one or TensorFlow's 'same' (see :class:`sflnet.nn.ConvTranspose2D`).

Training draws ε from the run's seeded generator (:attr:`VAE.noise`, a NumPy
``Generator``: the draws are made on the host in float64, so the CPU and the
GPU see the same ε). With ``noise`` None (evaluation, reconstruction) z = μ.
"""

from dataclasses import dataclass, replace

import numpy as np

from sflnet.backend import get_array_module, to_device, to_host
from sflnet.errors import SflnetError
from sflnet.nn import Conv2D, ConvTranspose2D, Flatten, Linear, ReLU, Reparameterize, Reshape, Sigmoid
from sflnet.losses import LossSettings, make_objective
from sflnet.losses.kl import KLDivergence
from sflnet.models.base import Hyperparameter, Model, is_whole_number, number_above, whole_number_from
from sflnet.optim import Adam, triangular2_lr

NAME = "vae"
ARCHITECTURE = "dalal-vae1"
LATENT = 2
IMAGE_SHAPE = (1, 28, 28)
DECODER_GRID = (32, 7, 7)
PARAM_SHAPES = {
    "conv1_w": (32, 1, 3, 3), "conv1_b": (32,),
    "conv2_w": (64, 32, 3, 3), "conv2_b": (64,),
    "enc_w": (2 * LATENT, 64 * 6 * 6), "enc_b": (2 * LATENT,),
    "dec_w": (32 * 7 * 7, LATENT), "dec_b": (32 * 7 * 7,),
    "deconv1_w": (32, 64, 3, 3), "deconv1_b": (64,),
    "deconv2_w": (64, 32, 3, 3), "deconv2_b": (32,),
    "deconv3_w": (32, 1, 3, 3), "deconv3_b": (1,),
}
PARAM_NAMES = tuple(PARAM_SHAPES)
DEFAULT_BETA = 0.005
# The seed's proposed objective: SSIM weight 500, STFT weight 0.0015 · (0.1 amplitude + 0.9 phase)
# = 0.00015 · (amplitude + 9 · phase), i.e. stft with λ = 9 (window 16, stride 4, Hann).
DEFAULT_EXPRESSION = "500*ssim+0.00015*stft"
VALUE_RANGE = (0.0, 1.0)
DEFAULT_MAX_CHUNK_IMAGES = 256
OUTPUTS = ("sigmoid", "linear")
TCONV_PADDINGS = ConvTranspose2D.PADDINGS
DEFAULT_OUTPUT = "sigmoid"
DEFAULT_TCONV_PADDING = "symmetric"


def _fans(name, shape):
    """(fan_in, fan_out) of a weight: conv (C_out, C_in, k, k), transposed conv (C_in, C_out, k, k), dense (out, in)."""
    if len(shape) == 2:
        return shape[1], shape[0]
    area = shape[2] * shape[3]
    if name.startswith("deconv"):
        return shape[0] * area, shape[1] * area
    return shape[1] * area, shape[0] * area


def init_params(seed=0, dtype=np.float32, xp=np):
    """Glorot-uniform weights (Keras' default, as the seed's TensorFlow code gets), zero biases.

    ``w ~ U(−a, a)`` with ``a = √(6 / (fan_in + fan_out))``, drawn on the host with
    ``numpy.random.default_rng(seed)`` in :data:`PARAM_NAMES` order (weights only),
    so the CPU and the GPU start from identical weights. returns {name: array} on ``xp``.
    """
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in PARAM_SHAPES.items():
        if name.endswith("_w"):
            fan_in, fan_out = _fans(name, shape)
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            host = rng.uniform(-limit, limit, size=shape)
        else:
            host = np.zeros(shape)
        params[name] = to_device(host.astype(dtype), xp)
    return params


def as_batch(batch, xp):
    """A batch as one (n, 1, 28, 28) array: a list of (1, 28, 28) images is stacked, an array is used as is."""
    if isinstance(batch, (list, tuple)):
        batch = xp.stack(batch)
    if batch.ndim == 3:
        batch = batch[None]
    if tuple(batch.shape[1:]) != IMAGE_SHAPE:
        raise ValueError(f"the VAE takes images of shape {IMAGE_SHAPE}, got {tuple(batch.shape[1:])}")
    return batch


@dataclass
class VAEPass:
    """One forward pass: recon (n, 1, 28, 28), mu and logvar (n, 2)."""

    recon: object
    mu: object
    logvar: object


class VAE(Model):
    """Dalal's VAE1 with its objective ``β·KL + Σ w_t E_t`` (see the module docstring).

    ``encoder`` and ``decoder`` are the ordered layer lists walked by
    :meth:`encode` / :meth:`decode`; :meth:`backward` walks them in reverse.
    Parameters live in the layers and are exposed by name through :attr:`params`.
    """

    PARAM_SHAPES = PARAM_SHAPES
    TRAINING_MEASURES_PAPER_TERMS = False

    def __init__(self, params, loss=DEFAULT_EXPRESSION, beta=DEFAULT_BETA, loss_settings=None,
                 max_chunk_images=DEFAULT_MAX_CHUNK_IMAGES, output=DEFAULT_OUTPUT,
                 tconv_padding=DEFAULT_TCONV_PADDING):
        """params: {conv1_w … deconv3_b} (one dtype, one device; held, not copied).
        loss: the reconstruction expression (``--loss``); beta: the KL weight β ≥ 0.
        loss_settings: :class:`LossSettings` (its value_range is replaced by (0, 1); default: one pl weight).
        output: "sigmoid" or "linear"; tconv_padding: "symmetric" or "tf-same" (see the module docstring)."""
        if output not in OUTPUTS:
            raise ValueError(f"the VAE's output must be one of {OUTPUTS}, got {output!r}")
        self.dtype, self.xp = self.check_params(params)
        self.output = output
        self.tconv_padding = tconv_padding
        settings = loss_settings or LossSettings(pl_weights=(1.0,))
        self.loss_settings = replace(settings, value_range=VALUE_RANGE)
        self.objective = make_objective(loss, self.loss_settings)
        self.loss = self.objective.expression
        self.beta = float(beta)
        self.kl = KLDivergence()
        self.max_chunk_images = int(max_chunk_images)
        self.noise = None   # a numpy Generator while training (z = μ + σε), None for z = μ

        p = params
        self.conv1 = Conv2D(p["conv1_w"], p["conv1_b"], stride=2, padding="valid")
        self.conv2 = Conv2D(p["conv2_w"], p["conv2_b"], stride=2, padding="valid")
        self.enc = Linear(p["enc_w"], p["enc_b"])
        self.dec = Linear(p["dec_w"], p["dec_b"])
        self.deconv1 = ConvTranspose2D(p["deconv1_w"], p["deconv1_b"], stride=2, padding=tconv_padding)
        self.deconv2 = ConvTranspose2D(p["deconv2_w"], p["deconv2_b"], stride=2, padding=tconv_padding)
        self.deconv3 = ConvTranspose2D(p["deconv3_w"], p["deconv3_b"], stride=1, padding=tconv_padding)
        self.encoder = [self.conv1, ReLU(), self.conv2, ReLU(), Flatten(), self.enc]
        self.reparameterize = Reparameterize()
        self.decoder = [self.dec, ReLU(), Reshape(DECODER_GRID), self.deconv1, ReLU(), self.deconv2, ReLU(),
                        self.deconv3] + ([Sigmoid()] if output == "sigmoid" else [])
        self._trainable = {"conv1": self.conv1, "conv2": self.conv2, "enc": self.enc, "dec": self.dec,
                           "deconv1": self.deconv1, "deconv2": self.deconv2, "deconv3": self.deconv3}

    @property
    def sfl_loss(self):
        return self.objective.losses["sfl"]

    @property
    def sigmas(self):
        return self.sfl_loss.sigmas

    @property
    def params(self):
        """{name: array} — the live parameter arrays (conv1_w … deconv3_b)."""
        return {f"{layer}_{kind}": obj.params[kind] for layer, obj in self._trainable.items() for kind in ("w", "b")}

    def layer_grads(self):
        """{name: ∂E/∂θ of the last backward} from the parameter layers."""
        return {f"{layer}_{kind}": obj.grads[kind] for layer, obj in self._trainable.items() for kind in ("w", "b")}

    # -- the network -----------------------------------------------------------
    def encode(self, x):
        """x: (n, 1, 28, 28) → (μ, log σ²), each (n, 2)."""
        h = x
        for layer in self.encoder:
            h = layer.forward(h)
        return h[:, :LATENT], h[:, LATENT:]

    def decode(self, z):
        """z: (n, 2) → reconstruction (n, 1, 28, 28): in [0, 1] (sigmoid output) or the raw, unclipped
        output of the last transposed convolution (linear output)."""
        h = z
        for layer in self.decoder:
            h = layer.forward(h)
        return h

    def forward(self, x, eps=None):
        """x: (n, 1, 28, 28); eps: (n, 2) or None (z = μ). returns :class:`VAEPass`."""
        mu, logvar = self.encode(x)
        z = self.reparameterize.forward(mu, logvar, eps)
        return VAEPass(self.decode(z), mu, logvar)

    def backward(self, grad_recon, grad_mu, grad_logvar):
        """Backprop ∂E/∂recon (n, 1, 28, 28) through the decoder and the sampling, add the direct
        ∂E/∂μ and ∂E/∂log σ² (the KL term's, (n, 2) each), and backprop through the encoder.
        Fills every layer's grads; ∂E/∂x is not computed."""
        xp = get_array_module(grad_recon)
        g = grad_recon
        for layer in reversed(self.decoder):
            g = layer.backward(g)
        d_mu, d_logvar = self.reparameterize.backward(g)
        g = xp.concatenate([d_mu + grad_mu, d_logvar + grad_logvar], axis=1)   # (n, 4) = ∂E/∂(μ, log σ²)
        for layer in reversed(self.encoder[1:]):
            g = layer.backward(g)
        self.encoder[0].backward(g, need_dx=False)

    # -- losses ----------------------------------------------------------------
    def _check_batch(self, batch):
        if batch.dtype != self.dtype:
            raise ValueError(f"images are {batch.dtype} but the model is {self.dtype}; convert them first")
        if get_array_module(batch) is not self.xp:
            raise ValueError("images and parameters are on different devices")

    def chunks(self, batch, batch_count, positions):
        """The batch ((n, 1, 28, 28) array or a list of (1, 28, 28) images) as (images, ε) chunks.

        ε for the whole batch is drawn first (from :attr:`noise`, if set), so chunking never changes
        the draws. With ``batch_count``, ``positions`` are this batch's positions in the step: ε is
        drawn for all ``batch_count`` images of the step and these rows are used, so every image gets
        the ε it gets in a single process, however the step is split over processes.
        returns (N_m, list of (x chunk, ε chunk or None)).
        """
        xp = self.xp
        x = as_batch(batch, xp)
        self._check_batch(x)
        n = x.shape[0]
        if batch_count is None:
            batch_count = n
        eps = None
        if self.noise is not None:
            draws = self.noise.standard_normal((batch_count, LATENT)).astype(self.dtype)
            eps = to_device(draws if positions is None else draws[list(positions)], xp)
        step = self.max_chunk_images
        return batch_count, [(x[s:s + step], None if eps is None else eps[s:s + step]) for s in range(0, n, step)]

    def measure(self, chunk, batch_count, names=None):
        """Forward one (x, ε) chunk; every reconstruction loss of the objective (or only ``names``), and
        ``kl`` at unit weight."""
        x, eps = chunk
        out = self.forward(x, eps)
        measured = dict(self.objective.forward(out.recon, x, batch_count, names))
        measured["kl"] = self.kl.forward(out.mu, out.logvar, batch_count)
        return measured

    def backward_measured(self):
        """The objective's ∂E/∂recon and β·∂KL/∂(μ, logvar) of the last chunk, back through the layers."""
        kl_mu, kl_logvar = self.kl.backward()
        self.backward(self.objective.backward(), self.beta * kl_mu, self.beta * kl_logvar)

    def extra_energy(self, terms):
        """β·KL, the VAE's own energy in E = β·KL + Σ w_t E_t."""
        return self.beta * terms["kl"]

    def reconstruct(self, images, noise=None):
        """Reconstructions with z = μ, or with z = μ + σε when ``noise`` (a NumPy Generator) is given:
        ε = ``noise.standard_normal((n, 2))`` in one draw, the draw :meth:`chunks` makes for a full batch
        of the same n images (so a copy of the generator the losses used replays their ε).
        images: list of (1, 28, 28) → list of (1, 28, 28), same order."""
        xp = self.xp
        x = as_batch(list(images), xp)
        self._check_batch(x)
        eps = None
        if noise is not None:
            eps = to_device(noise.standard_normal((x.shape[0], LATENT)).astype(self.dtype), xp)
        outputs = []
        for start in range(0, x.shape[0], self.max_chunk_images):
            mu, logvar = self.encode(x[start:start + self.max_chunk_images])
            z = mu if eps is None else self.reparameterize.forward(mu, logvar, eps[start:start + self.max_chunk_images])
            outputs.append(self.decode(z))
        recon = xp.concatenate(outputs) if len(outputs) > 1 else outputs[0]
        return [recon[i] for i in range(recon.shape[0])]



# ---------------------------------------------------------------------------
# What the run machinery calls (see sflnet.models.ModelSpec)
# ---------------------------------------------------------------------------

def _train_images_check(value):
    if value is None or (is_whole_number(value) and value % 10 == 0 and 10 <= value <= 4000):
        return None
    return "must be a multiple of 10 from 10 to 4000 (N/10 digits of each class)"


# The hyperparameters this model owns (``sflnet train --beta ...``); None in the other models' runs.
HYPERPARAMETERS = (
    Hyperparameter("beta", "float", DEFAULT_BETA, "β, the weight of the KL term (E = β·KL + the --loss terms).",
                   check=number_above(0, inclusive=True)),
    Hyperparameter("lr_min", "float", 1e-4, "lowest learning rate of Adam's triangular2 cycle (> 0).",
                   check=number_above(0)),
    Hyperparameter("lr_max", "float", 1e-3, "highest learning rate of the cycle (>= --lr-min).",
                   check=number_above(0)),
    Hyperparameter("lr_step", "int", 2000, "step size S of the cycle, in updates (a cycle is 2S updates, each "
                   "peak half the previous).", check=whole_number_from(1)),
    Hyperparameter("binarize", "bool", True, "binarise the digits at 0.5, as the seed paper does."),
    Hyperparameter("output", "choice", DEFAULT_OUTPUT, "the decoder's last layer: sigmoid (losses and metrics "
                   "see [0, 1]) or linear (they see the raw, unclipped output, as the authors' code does; "
                   "pictures are clipped to [0, 1]).", choices=OUTPUTS, added_later=True),
    Hyperparameter("tconv_padding", "choice", DEFAULT_TCONV_PADDING, "padding of the transposed convolutions: "
                   "symmetric (sflnet's) or tf-same (TensorFlow's 'same', extra row/column at the "
                   "bottom/right, as the authors' code).", choices=TCONV_PADDINGS, added_later=True),
    Hyperparameter("train_images", "int", None, "train on the first N/10 training digits of each class (a "
                   "multiple of 10, for quick trials).", check=_train_images_check,
                   default_help="all 4000, or all of a --data file's or folder's training split"),
)


def validate_options(options):
    """SflnetError (one line naming the option) for what the declared checks (:data:`HYPERPARAMETERS`)
    do not cover: the two rates' order, ``binarize``'s type and the number of --data files."""
    if options.lr_min > options.lr_max:
        raise SflnetError(f"--lr-min {options.lr_min:g} is larger than --lr-max {options.lr_max:g}")
    if not isinstance(options.binarize, bool):
        raise SflnetError(f"binarize must be true or false, got {options.binarize!r}")
    if options.data is not None and len(options.data) != 1:
        raise SflnetError(f"--model vae takes one --data (an .npz of digits or a folder of MNIST's IDX files), "
                          f"got {len(options.data)}")


def make_optimizer(options):
    """Adam with the triangular2 cyclical learning rate between ``lr_min`` and ``lr_max``, step size
    ``lr_step`` updates (Dalal's protocol). returns (optimizer, schedule: step count -> lr)."""
    return Adam(lr=options.lr_max), lambda step: triangular2_lr(step, options.lr_min, options.lr_max,
                                                                 options.lr_step)


def rate_label(options):
    """The learning rate as the curves' title shows it."""
    return f"lr {options.lr_min:g}-{options.lr_max:g}"


def smaller_rate(options):
    """The option a diverged run should try: a ten times smaller ``--lr-max``."""
    return f"--lr-max {options.lr_max / 10:g}"



# -- what the commands need (sflnet reconstruct / evaluate / sample) ---------------------------------

def reconstruct_inputs(options, inputs, size, skip_bad, count, warn):
    """The images ``sflnet reconstruct`` reads: digit pictures from ``inputs`` (square, resized to 28x28,
    averaged to grey, binarised like the run's data), or the first ``count`` test digits.
    returns a Dataset of (1, 28, 28) images on [0, 1] in the run's dtype."""
    from sflnet.io.digits import DIGITS_SIZE  # noqa: PLC0415
    from sflnet.io.images import Dataset, load_dataset  # noqa: PLC0415

    if size is not None:
        raise SflnetError("--size is not used with a vae checkpoint (digits are 28x28)")
    if not inputs:
        if count < 1:
            raise SflnetError(f"--count must be >= 1, got {count}")
        test = load_for_run(options, split="test")
        return Dataset(test.names[:count], test.images[:count], test.source)
    pictures = load_dataset(paths=list(inputs), size=DIGITS_SIZE, skip_bad=skip_bad, dtype=np.float64, warn=warn)
    images = []
    for name, picture in zip(pictures.names, pictures.images):
        if picture.shape[1:] != (DIGITS_SIZE, DIGITS_SIZE):
            raise SflnetError(f"image {name!r} is {picture.shape[1]}x{picture.shape[2]} at --size "
                              f"{DIGITS_SIZE}; a vae checkpoint needs square digit pictures")
        grey = (picture.mean(axis=0, keepdims=True) + 1.0) / 2.0          # [-1, 1] colour → [0, 1] grey
        if options.binarize:
            grey = (grey > 0.5).astype(np.float64)
        images.append(grey.astype(np.dtype(options.dtype)))
    return Dataset(pictures.names, images, pictures.source)


def evaluation_data(options, request):
    """What ``sflnet evaluate`` measures: the ``request["split"]`` (default "test") of the run's digits,
    or of ``request["data"]`` (one .npz, or a folder of MNIST's IDX files). returns (load: () -> Dataset,
    a description for the report)."""
    if request["size"] is not None or request["include"] or request["exclude"] or request["skip_bad"]:
        raise SflnetError("--size, --include, --exclude and --skip-bad are not used with a vae checkpoint")
    if request["data"]:
        options.data = request["data"]
        options.validate()
    split = request["split"] or "test"
    description = "28x28 digits, " + ("z = μ + σε" if request["sample_latent"] else "z = μ")
    return (lambda: load_for_run(options, split=split)), description


def energy_text(model):
    """What the model adds to the objective, as ``sflnet evaluate`` writes E: `` + β·E_KL``."""
    return f" + {model.beta:g}·E_KL"


def scored_text(model):
    """What ``sflnet evaluate``'s losses and metrics scored: the sigmoid output, or the raw linear one."""
    if model.output == "linear":
        return "the raw output of the last transposed convolution (--output linear), unclipped"
    return "the sigmoid output in [0, 1] (--output sigmoid)"


def init_for_run(options, xp):
    """Initial parameters of a run: :func:`init_params` with the options' seed and dtype."""
    return init_params(options.seed, np.dtype(options.dtype), xp)


def build_for_run(params, loss, settings, options=None):
    """The :class:`VAE` of a run, with the options' β, output and padding (default :data:`DEFAULT_BETA`,
    :data:`DEFAULT_OUTPUT`, :data:`DEFAULT_TCONV_PADDING`)."""
    def given(name, default):
        value = None if options is None else getattr(options, name, None)
        return default if value is None else value
    return VAE(params, loss=loss, beta=given("beta", DEFAULT_BETA), loss_settings=settings,
               output=given("output", DEFAULT_OUTPUT), tconv_padding=given("tconv_padding", DEFAULT_TCONV_PADDING))


def load_for_run(options, split="train", warn=None):
    """The digits of a run: the built-in MNIST 5k (or ``--data FILE.npz``, or ``--data FOLDER`` of MNIST's
    four IDX files, :mod:`sflnet.io.digits`), its train or test split.

    With ``options.train_images`` = N (a multiple of 10), the training split keeps only the first N/10
    digits of each class (in split order), for quick trials; the test split is always whole. This holds
    for every layout: with a file's or folder's own split (``x_train``, or ``train-images-idx3-ubyte``)
    it keeps the first N/10 of each class of that training split.
    """
    from sflnet.io.images import Dataset  # noqa: PLC0415
    from sflnet.io.digits import load_digits_with_labels  # noqa: PLC0415

    del warn
    path = options.data[0] if options.data else None
    dataset, labels = load_digits_with_labels(split=split, binarize=bool(options.binarize),
                                              dtype=np.dtype(options.dtype), path=path)
    if split != "train" or options.train_images is None:
        return dataset
    per_class = options.train_images // 10
    seen = [0] * 10             # digits of each class kept so far: one pass, also over 60,000 digits
    keep = []
    for i, label in enumerate(labels.tolist()):
        if seen[label] < per_class:
            seen[label] += 1
            keep.append(i)
    return Dataset([dataset.names[i] for i in keep], [dataset.images[i] for i in keep],
                   f"{dataset.source}, the first {per_class} of each digit")


def latent_grid_values(count, low_quantile=0.05):
    """The z values of a ``count × count`` latent grid: the standard normal's quantiles at ``count``
    evenly spaced probabilities from ``low_quantile`` to ``1 − low_quantile`` (the classic picture of a
    2-D VAE's manifold: equal prior mass between neighbours). returns (count,) float64."""
    from scipy.stats import norm  # noqa: PLC0415

    return norm.ppf(np.linspace(low_quantile, 1.0 - low_quantile, count))


def decode_grid(model, count, low_quantile=0.05):
    """Decode a ``count × count`` grid over the 2-D latent space into one picture.

    Row r (top to bottom) has z₂ = values[count − 1 − r], column c has z₁ = values[c], with
    ``values = latent_grid_values(count, low_quantile)``. returns (1, 28·count, 28·count) host float64 on [0, 1]
    (a linear output is clipped to [0, 1] for the picture; a sigmoid output is already there).
    """
    values = latent_grid_values(count, low_quantile)
    z1, z2 = np.meshgrid(values, values[::-1])
    z = np.stack([z1.ravel(), z2.ravel()], axis=1).astype(model.dtype)
    decoded = to_host(model.decode(to_device(z, model.xp))).astype(np.float64)    # (count², 1, 28, 28)
    digits = np.clip(decoded, 0.0, 1.0)
    side = IMAGE_SHAPE[1]
    tiles = digits.reshape(count, count, side, side).transpose(0, 2, 1, 3)
    return tiles.reshape(1, count * side, count * side)
