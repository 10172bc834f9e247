"""The gradient-check rows of the β-VAE's layers and of the whole β-VAE (Dalal's β-VAE).

Layers: :class:`~sflnet.nn.Conv2D` with ``padding="valid"``,
:class:`~sflnet.nn.ConvTranspose2D` (stride 1 and 2), :class:`~sflnet.nn.Linear`,
:class:`~sflnet.nn.Sigmoid`, :class:`~sflnet.nn.Reparameterize` and the
latent term :class:`~sflnet.losses.kl.KLDivergence`. Per layer:

* ``make_*_case`` — the :class:`~sflnet.gradcheck.engine.Case` of the dense ("tiny") and
  directional ("realistic": the VAE's own MNIST-sized shapes) checks;
* ``forward_*`` — the output against an independent host float64 reference
  (:mod:`sflnet.gradcheck.references`):
  ``scipy.signal.correlate`` for the valid convolution, ``scipy.signal.convolve``
  of the zero-interleaved input for the transposed one (every input pixel times
  the kernel, added into the output), plain loops for Linear, ``scipy.special.expit``
  for the sigmoid, and the KL of two Gaussians written as ``log(1/σ) + (σ² + μ²)/2 − ½``;
* ``adjoint_*`` — ``⟨Ax, y⟩ = ⟨x, Aᵀy⟩`` for the maps that are linear in x (zero bias).

The whole network (:class:`sflnet.models.vae.VAE`) has rows too, one per objective of
:data:`VAE_NETWORK_OBJECTIVES` (``network_vae``, ``network_vae_sfl``): ``E = β·KL + Σ w_t E_t``
differentiated with respect to all fourteen parameter arrays at once, float64, with ε
FIXED (:class:`FixedNoise`: every draw of :attr:`VAE.noise` returns the same ε, so the
finite differences see one deterministic function of θ). See :func:`make_vae_network_case`.
Their dense rows score every sampled element against the size of the whole gradient
(``Case.error_scale = "gradient"``: max |∂E/∂θ| over all 69 989 parameters), not against
the sampled elements of its own tensor: E ≈ 500 (it is 500·(1 − SSIM) + …) is a float64
with ulp(500) = 5.7e-14, so a one-coordinate difference carries ~3e-14/ε of rounding,
which is ~1e-7 of a typical element at ε = 1e-6 and far more of a small one (measured:
per-tensor scores of 3e-8 … 3e-5 at the flip-free ε on 4 seeds, with nothing wrong).
Against the whole gradient the worst over seeds 0-7 of both rows was 1e-8 (threshold 1e-7),
while a KL gradient off by a factor 2 still scores ≥ 9e-5 and a reparameterization without ε ≥ 2e-2.

:func:`registry_entries` gives them all to :func:`sflnet.gradcheck.suite.default_registry`.
"""

import math

import numpy as np
import scipy.special

from sflnet import nn
from sflnet.backend import to_device, to_host
from sflnet.gradcheck.engine import (THRESHOLD_NETWORK_DENSE, THRESHOLD_NETWORK_DIRECTIONAL, Case, LayerEntry,
                                     adjoint_measurement, forward_measurement, layer_case, normal, random_cotangent,
                                     shape_text, worst_of)
from sflnet.gradcheck.references import layers as ref
from sflnet.gradcheck.references.losses import kl_divergence_forward
from sflnet.losses import LossSettings
from sflnet.losses.kl import KLDivergence
from sflnet.models import vae as vae_model

# ---------------------------------------------------------------------------
# Cases for the dense ("tiny") and directional ("realistic") checks
# ---------------------------------------------------------------------------

def make_conv_valid_case(stride):
    """Conv2D(padding="valid"): tiny (2,3,7,8) → 5×6 / 3×3; realistic = the VAE encoder's layers."""
    def make(rng, xp, dtype, size):
        if size == "tiny":
            x_shape, w_shape = (2, 3, 7, 8), (2, 3, 3, 3)
        else:   # stride 2: the encoder's second conv 13 → 6; stride 1: an odd×even image
            x_shape, w_shape = ((2, 32, 13, 13), (64, 32, 3, 3)) if stride == 2 else ((2, 8, 28, 27), (16, 8, 3, 3))
        x = normal(rng, x_shape, xp, dtype)
        w = normal(rng, w_shape, xp, dtype, scale=1.0 / math.sqrt(w_shape[1] * 9))
        b = normal(rng, w_shape[:1], xp, dtype)
        layer = nn.Conv2D(w, b, stride=stride, padding="valid")
        variables = {"x": x, "w": layer.params["w"], "b": layer.params["b"]}
        return layer_case(layer, variables, f"x{shape_text(x_shape)} w{shape_text(w_shape)} valid")
    return make


def make_conv_transpose_case(stride, padding="symmetric"):
    """ConvTranspose2D: tiny (2,3,4,5) → 2 channels; realistic = the VAE decoder's layers (7→14, 28→28)."""
    def make(rng, xp, dtype, size):
        if size == "tiny":
            x_shape, w_shape = (2, 3, 4, 5), (3, 2, 3, 3)
        else:
            x_shape, w_shape = ((2, 64, 7, 7), (64, 32, 3, 3)) if stride == 2 else ((2, 32, 28, 28), (32, 1, 3, 3))
        x = normal(rng, x_shape, xp, dtype)
        w = normal(rng, w_shape, xp, dtype, scale=1.0 / math.sqrt(w_shape[0] * 9))
        b = normal(rng, w_shape[1:2], xp, dtype)
        layer = nn.ConvTranspose2D(w, b, stride=stride, padding=padding)
        variables = {"x": x, "w": layer.params["w"], "b": layer.params["b"]}
        return layer_case(layer, variables, f"x{shape_text(x_shape)} w{shape_text(w_shape)} s{stride} {padding}")
    return make


def make_linear_case(rng, xp, dtype, size):
    """Linear: tiny x (2,5) w (3,5); realistic = the VAE encoder's head, 6·6·64 = 2304 → 2·latent."""
    x_shape, w_shape = ((2, 5), (3, 5)) if size == "tiny" else ((4, 2304), (20, 2304))
    x = normal(rng, x_shape, xp, dtype)
    w = normal(rng, w_shape, xp, dtype, scale=1.0 / math.sqrt(w_shape[1]))
    b = normal(rng, w_shape[:1], xp, dtype)
    layer = nn.Linear(w, b)
    variables = {"x": x, "w": layer.params["w"], "b": layer.params["b"]}
    return layer_case(layer, variables, f"x{shape_text(x_shape)} w{shape_text(w_shape)}")


def make_sigmoid_case(rng, xp, dtype, size):
    """Sigmoid on N(0, 3²) inputs (both tails and the middle): tiny (2,3,5,4), realistic (2,1,28,28)."""
    shape = (2, 3, 5, 4) if size == "tiny" else (2, 1, 28, 28)
    return layer_case(nn.Sigmoid(), {"x": normal(rng, shape, xp, dtype, scale=3.0)}, f"x{shape_text(shape)}")


def _latents(rng, shape, xp, dtype):
    """(mu, logvar) with logvar in [−3, 1]: σ from 0.22 to 1.65, as a trained encoder gives."""
    mu = normal(rng, shape, xp, dtype)
    logvar = to_device(rng.uniform(-3.0, 1.0, shape).astype(dtype), xp)
    return mu, logvar


def make_reparameterize_case(rng, xp, dtype, size):
    """z = μ + exp(½ logvar)·ε w.r.t. μ and logvar, ε fixed: tiny (2,3), realistic (32,16)."""
    shape = (2, 3) if size == "tiny" else (32, 16)
    mu, logvar = _latents(rng, shape, xp, dtype)
    eps = normal(rng, shape, xp, dtype)
    layer = nn.Reparameterize()
    variables = {"mu": mu, "logvar": logvar}

    def evaluate():
        return layer.forward(variables["mu"], variables["logvar"], eps)

    def gradients(dz):
        dmu, dlogvar = layer.backward(dz)
        return {"mu": dmu, "logvar": dlogvar}
    return Case(variables, evaluate, gradients, f"mu,logvar,eps{shape_text(shape)}")


def make_kl_case(rng, xp, dtype, size):
    """The KL share of a group of n in a batch of n + 1, w.r.t. μ and logvar: tiny (2,3), realistic (32,16)."""
    shape = (2, 3) if size == "tiny" else (32, 16)
    mu, logvar = _latents(rng, shape, xp, dtype)
    batch_count = shape[0] + 1
    loss = KLDivergence()
    variables = {"mu": mu, "logvar": logvar}

    def evaluate():
        return loss.forward(variables["mu"], variables["logvar"], batch_count)[0]

    def gradients(upstream):
        dmu, dlogvar = loss.backward()
        return {"mu": upstream * dmu, "logvar": upstream * dlogvar}
    return Case(variables, evaluate, gradients, f"mu,logvar{shape_text(shape)}, N_m={batch_count}")


# ---------------------------------------------------------------------------
# Forward references, one function per row: (rng, xp) -> Measurement
# ---------------------------------------------------------------------------

def forward_conv_valid(stride):
    """Valid Conv2D vs scipy.signal.correlate on (2,3,9,8) and on the VAE's (2,1,28,28).

    With stride 2, 28 × 28 has a last row and column that no window reads.
    """
    def check(rng, xp):
        parts = []
        for x_shape, w_shape in (((2, 3, 9, 8), (4, 3, 3, 3)), ((2, 1, 28, 28), (3, 1, 3, 3))):
            x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
            out = nn.Conv2D(to_device(w, xp), to_device(b, xp), stride=stride, padding="valid").forward(
                to_device(x, xp))
            expected = ref.conv2d_scipy(x, w, b, stride, pad=0)
            m = forward_measurement("", out, expected)
            if tuple(out.shape) != expected.shape:
                m.error = math.inf
            parts.append((f"{shape_text(x_shape)} -> {shape_text(out.shape)}", m))
        return worst_of(parts, "x(2,3,9,8) w(4,3,3,3); x(2,1,28,28) w(3,1,3,3)")
    return check


def forward_conv_transpose(stride, padding="symmetric"):
    """ConvTranspose2D vs convolve(zero-interleaved x, w, 'full') cropped: odd/even sizes and 7 → 14."""
    def check(rng, xp):
        parts = []
        for x_shape, w_shape in (((2, 3, 4, 5), (3, 2, 3, 3)), ((1, 4, 7, 7), (4, 3, 3, 3)),
                                 ((1, 2, 3, 3), (2, 2, 5, 5))):
            x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[1])
            out = nn.ConvTranspose2D(to_device(w, xp), to_device(b, xp), stride=stride,
                                     padding=padding).forward(to_device(x, xp))
            expected = ref.conv_transpose2d_scipy(x, w, b, stride, padding)
            m = forward_measurement("", out, expected)
            if tuple(out.shape) != expected.shape:
                m.error = math.inf
            parts.append((f"{shape_text(x_shape)} w{shape_text(w_shape)} -> {shape_text(out.shape)}", m))
        return worst_of(parts, "x(2,3,4,5) w(3,2,3,3); x(1,4,7,7) w(4,3,3,3); x(1,2,3,3) w(2,2,5,5)")
    return check


def forward_conv_transpose_is_conv_input_gradient(stride):
    """The definition: ``ConvTranspose2D(w, 0).forward(y) = Conv2D(w, 0, stride).backward(y)``.

    The convolution's input is (N, C_out, s·h, s·w), so its output and y are (N, C_in, h, w).
    """
    def check(rng, xp):
        x_shape, w_shape = (2, 4, 5, 6), (4, 3, 3, 3)   # transpose: 4 → 3 channels; the conv: 3 → 4
        h, wd = x_shape[2:]
        y = to_device(rng.standard_normal(x_shape), xp)
        w = to_device(rng.standard_normal(w_shape), xp)
        conv = nn.Conv2D(w, to_device(np.zeros(w_shape[0]), xp), stride=stride)
        conv.forward(to_device(np.zeros((2, w_shape[1], stride * h, stride * wd)), xp))
        expected = conv.backward(y)
        out = nn.ConvTranspose2D(w, to_device(np.zeros(w_shape[1]), xp), stride=stride).forward(y)
        m = forward_measurement(f"y{shape_text(x_shape)} w{shape_text(w_shape)}", out, to_host(expected),
                                 "vs Conv2D.backward")
        if tuple(out.shape) != tuple(expected.shape):
            m.error = math.inf
        return m
    return check


def forward_linear(rng, xp):
    x, w, b = rng.standard_normal((3, 7)), rng.standard_normal((4, 7)), rng.standard_normal(4)
    out = nn.Linear(to_device(w, xp), to_device(b, xp)).forward(to_device(x, xp))
    return forward_measurement("x(3,7) w(4,7)", out, ref.linear_forward(x, w, b))


def forward_sigmoid(rng, xp):
    """σ vs scipy.special.expit, including |x| = 40 and 1000 (no overflow, exact 0 and 1 at ±1000)."""
    x = np.concatenate([3 * rng.standard_normal(40), [-1000.0, -40.0, 0.0, 40.0, 1000.0]])
    with np.errstate(over="raise", divide="raise", invalid="raise"):   # NumPy: an overflow here raises
        out = nn.Sigmoid().forward(to_device(x, xp))
    m = forward_measurement("x(45,) incl. +-40, +-1000", out, scipy.special.expit(x))
    lo = float(out[-5])
    if not math.isfinite(lo) or lo != 0.0 or float(out[-1]) != 1.0:
        m.error = math.inf
    return m


def forward_reparameterize(rng, xp):
    """z = μ + sqrt(exp(logvar))·ε element by element; and ε = None gives z = μ."""
    mu, logvar, eps = rng.standard_normal((4, 3)), rng.uniform(-3, 1, (4, 3)), rng.standard_normal((4, 3))
    expected = ref.reparameterize_forward(mu, logvar, eps)
    layer = nn.Reparameterize()
    z = layer.forward(to_device(mu, xp), to_device(logvar, xp), to_device(eps, xp))
    z_eval = layer.forward(to_device(mu, xp), to_device(logvar, xp))
    return forward_measurement("(4,3); and eval mode", np.concatenate([to_host(z), to_host(z_eval)]),
                                np.concatenate([expected, mu]), "training rows, then eval rows (z = mu)")


def forward_kl(rng, xp):
    mu, logvar = rng.standard_normal((2, 5)), rng.uniform(-3, 1, (2, 5))
    share, parts = KLDivergence().forward(to_device(mu, xp), to_device(logvar, xp), 3)
    m = forward_measurement("(2,5), N_m=3", share, kl_divergence_forward(mu, logvar, 3),
                             "vs sum of log(1/sigma) + (sigma^2 + mu^2)/2 - 1/2")
    if parts != {} or tuple(share.shape) != ():
        m.error = math.inf
    return m


# ---------------------------------------------------------------------------
# Adjoint tests, one function per row: (rng, xp) -> Measurement
# ---------------------------------------------------------------------------

def adjoint_conv_valid(stride):
    def check(rng, xp):
        x = normal(rng, (2, 4, 28, 27), xp, np.float64)
        w = normal(rng, (5, 4, 3, 3), xp, np.float64)
        layer = nn.Conv2D(w, xp.zeros(5, dtype=np.float64), stride=stride, padding="valid")
        out = layer.forward(x)
        y = random_cotangent(rng, out, xp)
        return adjoint_measurement("x(2,4,28,27) w(5,4,3,3) b=0", out, x, y, layer.backward(y))
    return check


def adjoint_conv_transpose(stride, padding="symmetric"):
    def check(rng, xp):
        x = normal(rng, (2, 6, 7, 8), xp, np.float64)
        w = normal(rng, (6, 4, 3, 3), xp, np.float64)
        layer = nn.ConvTranspose2D(w, xp.zeros(4, dtype=np.float64), stride=stride, padding=padding)
        out = layer.forward(x)
        y = random_cotangent(rng, out, xp)
        return adjoint_measurement("x(2,6,7,8) w(6,4,3,3) b=0", out, x, y, layer.backward(y))
    return check


def adjoint_linear(rng, xp):
    x = normal(rng, (4, 300), xp, np.float64)
    layer = nn.Linear(normal(rng, (20, 300), xp, np.float64), xp.zeros(20, dtype=np.float64))
    out = layer.forward(x)
    y = random_cotangent(rng, out, xp)
    return adjoint_measurement("x(4,300) w(20,300) b=0", out, x, y, layer.backward(y))


# ---------------------------------------------------------------------------
# The whole β-VAE: E(θ) = β·KL + Σ w_t E_t with ε fixed
# ---------------------------------------------------------------------------

# The objectives of the whole-VAE rows: the model's default (Dalal's STFT+SSIM) and the SFL one of
# validation/vae_table.py (SFL+SSIM). β is the model's default.
VAE_NETWORK_OBJECTIVES = {
    "network_vae": vae_model.DEFAULT_EXPRESSION,    # 500*ssim+0.00015*stft
    "network_vae_sfl": "500*ssim+3.5*sfl",
}
VAE_NETWORK_BETA = vae_model.DEFAULT_BETA           # 0.005
VAE_TINY_IMAGES = 2          # dense check: 2 images, one chunk
VAE_REALISTIC_IMAGES = 3     # directional check: 3 images ...
VAE_REALISTIC_CHUNK = 2      # ... in chunks of 2 + 1, so the model's chunked accumulation is checked too
VAE_DENSE_SAMPLE = 1         # elements per parameter tensor (weights and biases) in the sampled dense check
VAE_FULL_WEIGHT_SAMPLE = 64  # --full: every bias (1765) and this many elements of each weight tensor


class FixedNoise:
    """A stand-in for :attr:`sflnet.models.vae.VAE.noise` (a NumPy ``Generator``) whose every draw is one ε.

    eps: (n, 2) host array. ``standard_normal(shape)`` returns a float64 copy of it (ValueError for
    another shape), so every ``loss_and_grads`` of a batch of n sees the same z = μ + σ·ε: a fixed,
    smooth function of θ that finite differences can check. The draw still goes through the
    model's own path (host → dtype → device, then sliced per chunk).
    """

    def __init__(self, eps):
        self.eps = np.array(eps, dtype=np.float64)

    def standard_normal(self, shape):
        if tuple(shape) != self.eps.shape:
            raise ValueError(f"FixedNoise holds eps of shape {self.eps.shape}, asked for {tuple(shape)}")
        return self.eps.copy()


def vae_check_params(rng, xp=np, dtype=np.float64):
    """VAE parameters for the checks: He-scaled weights ``N(0, 2/fan_in)``, biases ``N(0, 0.1²)``.

    Not the model's init (Glorot, zero biases): with zero biases, every all-black 3×3 patch of
    an MNIST-like image puts a conv1 ReLU exactly on its kink. fan_in as in
    :func:`sflnet.models.vae.init_params` (C_in·k² for both kinds of convolution, "in" for dense).
    returns {conv1_w … deconv3_b} with :data:`sflnet.models.vae.PARAM_SHAPES`.
    """
    params = {}
    for name, shape in vae_model.PARAM_SHAPES.items():
        if name.endswith("_w"):
            fan_in, _ = vae_model._fans(name, shape)
            params[name] = normal(rng, shape, xp, dtype, scale=math.sqrt(2.0 / fan_in))
        else:
            params[name] = normal(rng, shape, xp, dtype, scale=0.1)
    return params


def vae_digit_batch(rng, count, xp=np, dtype=np.float64):
    """``count`` digit-like binary images (count, 1, 28, 28): a 20×20 box, as MNIST centres its digits,
    holding a thresholded smooth random field (the brightest quarter: blobs and strokes), 0 around it."""
    import scipy.ndimage  # noqa: PLC0415

    images = np.zeros((count,) + vae_model.IMAGE_SHAPE)
    for i in range(count):
        field = scipy.ndimage.gaussian_filter(rng.standard_normal((20, 20)), 1.5)
        images[i, 0, 4:24, 4:24] = field > np.quantile(field, 0.75)
    return to_device(images.astype(dtype), xp)


def _record_kink_sides(net):
    """Make every forward of ``net`` record which side of its kinks each unit is on; returns the list.

    Wraps (on these instances only) the forward of every ReLU (its ``positive_mask``) and of the
    ``stft`` loss, if the objective has one: the sides of ``|A_o − A_i|`` and ``|ΔP|``, and the sign
    of F_o at the bins that are real for every frame (u, v ∈ {0, h/2}), where ΔP jumps between 0 and
    π when F_o changes sign. Recording per forward call covers every chunk of a batch.
    """
    record = []
    for layer in net.encoder + net.decoder:
        if isinstance(layer, nn.ReLU):
            def relu_forward(x, forward=layer.forward, layer=layer):
                out = forward(x)
                record.append(layer.positive_mask.copy())
                return out
            layer.forward = relu_forward
    stft = net.objective.losses.get("stft")
    if stft is not None:
        real = [0] + ([stft.window // 2] if stft.window % 2 == 0 else [])

        def stft_forward(recon, target, batch_count, forward=stft.forward):
            result = forward(recon, target, batch_count)
            real_bins = stft.output_spectrum.real[..., real, :][..., real]
            record.extend([stft.amplitude_sign > 0, stft.phase_sign > 0, real_bins > 0])
            return result
        stft.forward = stft_forward
    return record


def _tensor_sample(rng, shape, count, rows=None):
    """``count`` distinct random indices of a tensor (every index if it has no more), in C order.

    rows: the allowed values of the first index (default: all), e.g. the dense layer's live units.
    """
    allowed = np.arange(int(np.prod(shape))).reshape(shape)
    if rows is not None:
        allowed = allowed[np.asarray(rows)]
    allowed = allowed.reshape(-1)
    chosen = allowed if allowed.size <= count else np.sort(rng.choice(allowed, size=count, replace=False))
    return [tuple(int(i) for i in np.unravel_index(i, shape)) for i in chosen]


def _live_decoder_units(net, batch, eps):
    """The units of the decoder's dense layer that its ReLU passes for at least one image (host bool (1568,)).

    Forward information only: a unit that no image reaches has exactly zero gradient in dec_w[j] and
    dec_b[j] (so a sample there would compare 0 with 0), and the sample must not depend on the backward
    under test. With z of 2 dimensions, 5-40 % of the 1568 units are off for both of a pair of images.
    """
    relu = net.decoder[1]
    mu, logvar = net.encode(batch)
    relu.forward(net.dec.forward(net.reparameterize.forward(mu, logvar, eps)))
    return np.asarray(to_host(relu.positive_mask)).any(axis=0)


def vae_full_sample(rng, variables):
    """The ``--full`` dense sample of a VAE row: every bias, :data:`VAE_FULL_WEIGHT_SAMPLE` elements per weight.

    (Every element of all fourteen tensors, 70 k, would take hours at one VAE pass per evaluation.)
    """
    return {name: _tensor_sample(rng, v.shape, math.inf if name.endswith("_b") else VAE_FULL_WEIGHT_SAMPLE)
            for name, v in variables.items()}


def make_vae_network_case(expression, beta=VAE_NETWORK_BETA):
    """Factory for the whole :class:`~sflnet.models.vae.VAE` with objective ``β·KL + expression``: E(θ).

    variables: the fourteen live parameter arrays (conv1_w … deconv3_b), perturbed in place.
    tiny (dense): 2 digit-like binary images (:func:`vae_digit_batch`), one chunk, a sample of
    :data:`VAE_DENSE_SAMPLE` elements per tensor (for dec_w, dec_b: of a unit that some image reaches,
    :func:`_live_decoder_units`). realistic (directional): 3 images in chunks of 2 + 1.
    Parameters: :func:`vae_check_params`. ε: drawn once from ``rng`` and returned by every draw
    (:class:`FixedNoise`). Loss settings: ``LossSettings(pl_weights=(1.0,))`` (the model forces the value
    range (0, 1)). masks: the ReLU masks and stft kink sides of the last evaluation
    (:func:`_record_kink_sides`), so an ε whose perturbation crossed a kink is not used.
    """
    def make(rng, xp, dtype, size):
        tiny = size == "tiny"
        count = VAE_TINY_IMAGES if tiny else VAE_REALISTIC_IMAGES
        chunk = count if tiny else VAE_REALISTIC_CHUNK
        params = vae_check_params(rng, xp, dtype)
        batch = vae_digit_batch(rng, count, xp, dtype)
        net = vae_model.VAE(params, loss=expression, beta=beta, loss_settings=LossSettings(pl_weights=(1.0,)),
                            max_chunk_images=chunk)
        eps = rng.standard_normal((count, vae_model.LATENT))
        net.noise = FixedNoise(eps)
        live = _live_decoder_units(net, batch, to_device(eps.astype(dtype), xp)) if tiny else None
        record = _record_kink_sides(net)
        variables = net.params

        def run(compute_grads):
            record.clear()
            return net.loss_and_grads(batch, compute_grads=compute_grads)

        def evaluate():
            return xp.asarray(run(False).E, dtype=dtype)

        def gradients(upstream):
            return {name: upstream * g for name, g in run(True).grads.items()}

        def masks():
            return list(record)

        sample = {}
        if tiny:
            sample = {name: _tensor_sample(rng, v.shape, VAE_DENSE_SAMPLE,
                                           np.flatnonzero(live) if name.startswith("dec_") else None)
                      for name, v in variables.items()}
        chunks = "" if chunk >= count else f" in chunks of {chunk}"
        kinds = "ReLU masks and stft kink sides" if "stft" in net.objective.losses else "ReLU masks"
        return Case(variables, evaluate, gradients,
                    f"{count}x(1,28,28) binary{chunks}, beta {beta:g}, eps fixed", masks, sample, mask_kind=kinds,
                    error_scale="gradient")
    return make


# ---------------------------------------------------------------------------
# The rows, for sflnet.gradcheck.suite.default_registry
# ---------------------------------------------------------------------------

def registry_entries():
    """name → :class:`~sflnet.gradcheck.engine.LayerEntry` for the β-VAE's layers and whole network, in report order."""
    entries = {}
    for stride in (1, 2):
        entries[f"conv2d_valid_s{stride}"] = LayerEntry(
            make_conv_valid_case(stride), [("forward vs scipy.correlate valid", forward_conv_valid(stride))],
            [("adjoint w.r.t. x", adjoint_conv_valid(stride))])
    for stride in (1, 2):
        entries[f"conv_transpose_s{stride}"] = LayerEntry(
            make_conv_transpose_case(stride),
            [("forward vs scatter (convolve)", forward_conv_transpose(stride)),
             ("forward = Conv2D input gradient", forward_conv_transpose_is_conv_input_gradient(stride))],
            [("adjoint w.r.t. x", adjoint_conv_transpose(stride))])
    for stride in (1, 2):   # TensorFlow's 'same' padding (the authors' decoder, --tconv-padding tf-same)
        entries[f"conv_transpose_tf_same_s{stride}"] = LayerEntry(
            make_conv_transpose_case(stride, "tf-same"),
            [("forward vs scatter (convolve)", forward_conv_transpose(stride, "tf-same"))],
            [("adjoint w.r.t. x", adjoint_conv_transpose(stride, "tf-same"))])
    entries["linear"] = LayerEntry(make_linear_case, [("forward vs loop", forward_linear)],
                                   [("adjoint w.r.t. x", adjoint_linear)])
    entries["sigmoid"] = LayerEntry(make_sigmoid_case, [("forward vs scipy expit", forward_sigmoid)])
    entries["reparameterize"] = LayerEntry(make_reparameterize_case,
                                           [("forward vs elementwise", forward_reparameterize)])
    entries["kl_loss"] = LayerEntry(make_kl_case, [("forward vs Gaussian KL", forward_kl)])
    for name, expression in VAE_NETWORK_OBJECTIVES.items():   # the whole β-VAE, ε fixed
        entries[name] = LayerEntry(make_vae_network_case(expression), dense_threshold=THRESHOLD_NETWORK_DENSE,
                                   directional_threshold=THRESHOLD_NETWORK_DIRECTIONAL, full_sample=vae_full_sample)
    return entries
