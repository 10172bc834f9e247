"""Naive textbook versions of every layer and loss: the short version beside the fast one.

**These are not an alternative for users.** Nothing in sflnet calls them, and
there is no option to pick them: they are slow (plain Python loops over output
pixels) and run on NumPy in float64 only. They exist so that a reader can read
a 10-20 line version of each forward and backward pass, written straight from
the paper's equations, and trust the fast layers of :mod:`sflnet.layers` and
:mod:`sflnet.losses` (im2col, GEMMs, separable filters, FFTs, threads), because
``tests/test_reference.py`` proves the two equal to ~1e-12 in float64.

Each function takes and returns plain arrays (no caches, no classes): a forward
``*_forward(inputs…) -> output`` and a backward ``*_backward(upstream, inputs…)
-> gradients``. Backward functions recompute what they need from the inputs.
Arrays are NCHW; equation numbers are those of the paper (Ichimura, "Spatial
Frequency Loss for Learning Convolutional Autoencoders").

====================================  ===============================  ================================
reference                             fast version                     paper
====================================  ===============================  ================================
conv2d_forward / _backward            layers.Conv2D                    Eq. 2 (+ the bias of Eq. 3)
conv_transpose2d_forward / _backward  layers.ConvTranspose2D           the adjoint of Eq. 2
relu_*, tanh_*, sigmoid_*             layers.ReLU, Tanh, Sigmoid       Eq. 3 (the activation a(·))
upsample2x_forward / _backward        layers.Upsample2x                Tab. 1, layer 4 ("stride 0.5")
log_kernel, log_bank_*                layers.LoGBank                   Eq. 5 weights in Eq. 2 (layer 6)
linear_*, reparameterize_*            layers.Linear, Reparameterize    the β-VAE of seed 004
pixel_loss_forward / _backward        losses.pixel.PixelLoss           Eq. 4 / Eq. 9
sfl_forward / sfl_backward            losses.sfl.SpatialFrequencyLoss  Eq. 6 / Eq. 8
l1_loss_*                             losses.l1.L1Loss
kl_divergence_*                       losses.kl.KLDivergence           the β-VAE's KL term
fft_loss_forward / _backward          losses.fft.FocalFrequencyLoss    Jiang et al. 2021; DFT by sums
====================================  ===============================  ================================

Two losses already carry their own naive forward next to the fast one, so they
are not repeated here: :func:`sflnet.losses.ssim.naive_ssim` (SSIM, a loop over
channels and window positions) and :func:`sflnet.losses.stft.naive_stft_loss`
(the STFT loss, frame by frame). Their backward passes are checked against
finite differences instead (``tests/test_loss_ssim.py``, ``tests/test_loss_stft.py``).
``Reshape``/``Flatten`` are relabellings of the same numbers and have no reference.
"""

import math

import numpy as np


def _f64(*arrays):
    """The arguments as float64 NumPy arrays (copies only where a conversion is needed)."""
    return tuple(np.asarray(a, dtype=np.float64) for a in arrays)


# ---------------------------------------------------------------------------
# Convolution, Eq. 2
# ---------------------------------------------------------------------------

def conv2d_forward(x, w, b, stride=1, pad=1):
    """Eq. 2 (+ the bias of Eq. 3): zero-padded cross-correlation, one output pixel at a time.

    ``o[n, c, i, j] = Σ_{c', dy, dx} x_pad[n, c', s·i + dy, s·j + dx] · w[c, c', dy, dx] + b[c]``

    x: (N, C_in, H, W); w: (C_out, C_in, k, k); b: (C_out,); stride s; pad p zeros on
    each side (p = (k−1)/2 is "same", p = 0 is "valid").
    returns o: (N, C_out, Ho, Wo), Ho = ⌊(H + 2p − k)/s⌋ + 1, Wo likewise.
    """
    x, w, b = _f64(x, w, b)
    n_img, _, h, wd = x.shape
    c_out, _, k, _ = w.shape
    x_pad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    out = np.zeros((n_img, c_out, ho, wo))
    for n in range(n_img):
        for c in range(c_out):
            for i in range(ho):
                for j in range(wo):
                    window = x_pad[n, :, i * stride:i * stride + k, j * stride:j * stride + k]
                    out[n, c, i, j] = np.sum(window * w[c]) + b[c]
    return out


def conv2d_backward(dout, x, w, stride=1, pad=1):
    """Backward of Eq. 2, the same loop as :func:`conv2d_forward`, each output sending its gradient back.

    Output (n, c, i, j) was ``Σ window · w[c] + b[c]``, so with g = dout[n, c, i, j]:
    ``∂E/∂w[c] += g · window``, ``∂E/∂b[c] += g``, and ``∂E/∂window += g · w[c]``
    (the window is a slice of the padded input; gradient landing on the padding is dropped).

    dout: (N, C_out, Ho, Wo); x: (N, C_in, H, W); w: (C_out, C_in, k, k).
    returns (dx (N, C_in, H, W), dw (C_out, C_in, k, k), db (C_out,)).
    """
    dout, x, w = _f64(dout, x, w)
    _, _, h, wd = x.shape
    k = w.shape[-1]
    x_pad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dx_pad, dw = np.zeros_like(x_pad), np.zeros_like(w)
    n_img, c_out, ho, wo = dout.shape
    for n in range(n_img):
        for c in range(c_out):
            for i in range(ho):
                for j in range(wo):
                    rows, cols = slice(i * stride, i * stride + k), slice(j * stride, j * stride + k)
                    dw[c] += dout[n, c, i, j] * x_pad[n, :, rows, cols]
                    dx_pad[n, :, rows, cols] += dout[n, c, i, j] * w[c]
    db = dout.sum(axis=(0, 2, 3))
    return dx_pad[:, :, pad:pad + h, pad:pad + wd], dw, db


def conv_transpose2d_forward(x, w, b, stride=1):
    """The transposed convolution: the adjoint of a "same" Eq. 2 w.r.t. its input, plus a bias; a scatter loop.

    Every input pixel x[n, c', i, j] adds ``x[n, c', i, j] · w[c']`` onto the k×k window of the
    padded output whose top-left corner is (s·i, s·j); the output is then cropped by p = (k−1)/2
    on the top/left (what lands on the padding is dropped, as in Eq. 2's zero padding).

    x: (N, C_in, h, w); w: (C_in, C_out, k, k); b: (C_out,); stride s.
    returns (N, C_out, s·h, s·w).
    """
    x, w, b = _f64(x, w, b)
    n_img, c_in, h, wd = x.shape
    _, c_out, k, _ = w.shape
    p = (k - 1) // 2
    out_pad = np.zeros((n_img, c_out, stride * h + 2 * p, stride * wd + 2 * p))
    for n in range(n_img):
        for c in range(c_in):
            for i in range(h):
                for j in range(wd):
                    out_pad[n, :, i * stride:i * stride + k, j * stride:j * stride + k] += x[n, c, i, j] * w[c]
    return out_pad[:, :, p:p + stride * h, p:p + stride * wd] + b[None, :, None, None]


def conv_transpose2d_backward(dout, x, w, stride=1):
    """Backward of :func:`conv_transpose2d_forward`: each input pixel gathers from the window it scattered to.

    With g_win = the (padded) upstream gradient on that window:
    ``∂E/∂x[n, c', i, j] = Σ g_win · w[c']`` (this is Eq. 2's forward: the adjoint's adjoint),
    ``∂E/∂w[c'] += x[n, c', i, j] · g_win``, ``∂E/∂b[c] = Σ_{n,y,x} dout[n, c, y, x]``.

    dout: (N, C_out, s·h, s·w); x: (N, C_in, h, w); w: (C_in, C_out, k, k).
    returns (dx (N, C_in, h, w), dw (C_in, C_out, k, k), db (C_out,)).
    """
    dout, x, w = _f64(dout, x, w)
    n_img, c_in, h, wd = x.shape
    k = w.shape[-1]
    p = (k - 1) // 2
    g_pad = np.pad(dout, ((0, 0), (0, 0), (p, p), (p, p)))
    dx, dw = np.zeros_like(x), np.zeros_like(w)
    for n in range(n_img):
        for c in range(c_in):
            for i in range(h):
                for j in range(wd):
                    window = g_pad[n, :, i * stride:i * stride + k, j * stride:j * stride + k]
                    dx[n, c, i, j] = np.sum(window * w[c])
                    dw[c] += x[n, c, i, j] * window
    return dx, dw, dout.sum(axis=(0, 2, 3))


# ---------------------------------------------------------------------------
# Activations, Eq. 3
# ---------------------------------------------------------------------------

def relu_forward(x):
    """Eq. 3 with a(o) = max(0, o). x: any shape → same."""
    (x,) = _f64(x)
    return np.where(x > 0, x, 0.0)


def relu_backward(dout, x):
    """a'(o) = 1 where o > 0, else 0 (the kink at 0 takes 0): ``∂E/∂x = dout · [x > 0]``. Shapes: any → same."""
    dout, x = _f64(dout, x)
    return np.where(x > 0, dout, 0.0)


def tanh_forward(x):
    """Eq. 3 with a(o) = tanh(o), the output layer L = 5 (f^L). x: any shape → same."""
    (x,) = _f64(x)
    return np.tanh(x)


def tanh_backward(dout, x):
    """d tanh(o)/do = 1 − tanh²(o), the factor ∂f^L/∂o^L of Eq. 9. dout, x: any shape → same."""
    dout, x = _f64(dout, x)
    return dout * (1.0 - np.tanh(x) ** 2)


def sigmoid_forward(x):
    """The β-VAE's output activation σ(x) = 1 / (1 + e^{−x}), the textbook formula. x: any shape → same."""
    (x,) = _f64(x)
    return 1.0 / (1.0 + np.exp(-x))


def sigmoid_backward(dout, x):
    """dσ/dx = σ(x)(1 − σ(x)). dout, x: any shape → same."""
    dout, x = _f64(dout, x)
    s = sigmoid_forward(x)
    return dout * s * (1.0 - s)


# ---------------------------------------------------------------------------
# Layer 4's bilinear ×2 (Tab. 1, "stride 0.5")
# ---------------------------------------------------------------------------

def _bilinear_taps(o, n):
    """Output index o of a ×2 bilinear resize of a length-n axis (half-pixel centres, clamped edges).

    The output centre o + ½ sits at input coordinate t = (o + ½)/2 − ½, clamped at 0;
    it reads i0 = ⌊t⌋ with weight 1 − (t − i0) and i1 = min(i0 + 1, n − 1) with weight t − i0.
    (This gives ¾·in[i] + ¼·in[i∓1] for o = 2i, 2i+1.) returns (i0, i1, w0, w1).
    """
    t = max((o + 0.5) / 2 - 0.5, 0.0)
    i0 = int(math.floor(t))
    frac = t - i0
    return i0, min(i0 + 1, n - 1), 1.0 - frac, frac


def upsample2x_forward(x, out_h, out_w):
    """Bilinear ×2 (PyTorch's align_corners=False), cropped to out_h × out_w; one output pixel at a time.

    ``out[y, x] = Σ_{a,b ∈ {0,1}} wy_a · wx_b · in[iy_a, ix_b]`` with the taps of :func:`_bilinear_taps`.

    x: (N, C, h, w) → (N, C, out_h, out_w), out_h ∈ {2h−1, 2h}, out_w ∈ {2w−1, 2w}.
    """
    (x,) = _f64(x)
    n_img, chans, h, w = x.shape
    out = np.zeros((n_img, chans, out_h, out_w))
    for oy in range(out_h):
        y0, y1, wy0, wy1 = _bilinear_taps(oy, h)
        for ox in range(out_w):
            x0, x1, wx0, wx1 = _bilinear_taps(ox, w)
            out[:, :, oy, ox] = (wy0 * wx0 * x[:, :, y0, x0] + wy0 * wx1 * x[:, :, y0, x1]
                                 + wy1 * wx0 * x[:, :, y1, x0] + wy1 * wx1 * x[:, :, y1, x1])
    return out


def upsample2x_backward(dout, in_h, in_w):
    """The transpose of :func:`upsample2x_forward` (layer 4's backward): each output pixel sends its
    gradient back to the four inputs it read, with the weights it read them with.

    dout: (N, C, out_h, out_w) → ∂E/∂in: (N, C, in_h, in_w).
    """
    (dout,) = _f64(dout)
    n_img, chans, out_h, out_w = dout.shape
    dx = np.zeros((n_img, chans, in_h, in_w))
    for oy in range(out_h):
        y0, y1, wy0, wy1 = _bilinear_taps(oy, in_h)
        for ox in range(out_w):
            x0, x1, wx0, wx1 = _bilinear_taps(ox, in_w)
            g = dout[:, :, oy, ox]
            dx[:, :, y0, x0] += wy0 * wx0 * g
            dx[:, :, y0, x1] += wy0 * wx1 * g
            dx[:, :, y1, x0] += wy1 * wx0 * g
            dx[:, :, y1, x1] += wy1 * wx1 * g
    return dx


# ---------------------------------------------------------------------------
# Layer 6: the Laplacian-of-Gaussian bank, Eq. 5 weights in Eq. 2
# ---------------------------------------------------------------------------

def log_kernel(sigma):
    """Eq. 5 sampled at integer offsets: ``K_σ(x, y) = −(2 − (x²+y²)/σ²) · e^{−(x²+y²)/2σ²} / (2πσ²)``.

    Size k = ⌈8σ⌉, plus 1 if even (7, 13, 27 for σ = 0.8, 1.6, 3.2); not renormalised.
    returns (k, k) float64, rows y, columns x.
    """
    k = math.ceil(round(8 * sigma, 9))   # round first: 8·0.8 is 6.4000000000000004 in floating point, still 7
    k += 1 - k % 2                       # even → odd
    s = (k - 1) // 2
    kernel = np.zeros((k, k))
    for row, y in enumerate(range(-s, s + 1)):
        for col, x in enumerate(range(-s, s + 1)):
            r2 = x * x + y * y
            g = math.exp(-r2 / (2 * sigma ** 2)) / (2 * math.pi * sigma ** 2)
            kernel[row, col] = -(2 - r2 / sigma ** 2) * g
    return kernel


def log_bank_weights(sigmas, colours=3):
    """The literal layer-6 weights: ``W6[c, c'] = K_{σ_c}`` for every colour c', kernels centred in k_max × k_max.

    returns (S, colours, k_max, k_max), S = len(sigmas).
    """
    kernels = [log_kernel(s) for s in sigmas]
    k_max = max(k.shape[0] for k in kernels)
    w6 = np.zeros((len(sigmas), colours, k_max, k_max))
    for c, k in enumerate(kernels):
        off = (k_max - k.shape[0]) // 2
        w6[c, :, off:off + k.shape[0], off:off + k.shape[0]] = k
    return w6


def log_bank_forward(f, sigmas=(0.8, 1.6, 3.2)):
    """Layer 6: Eq. 2 with the Eq. 5 weights of :func:`log_bank_weights`, no bias, identity activation.

    ``out[n, c] = Σ_{c'} K_{σ_c} ⋆ f[n, c']`` (zero "same" padding): the LoG of the sum of the colours.
    f: (N, C, H, W) → (N, S, H, W).
    """
    w6 = log_bank_weights(sigmas, f.shape[1])
    return conv2d_forward(f, w6, np.zeros(len(sigmas)), 1, (w6.shape[-1] - 1) // 2)


def log_bank_backward(dout, f_shape, sigmas=(0.8, 1.6, 3.2)):
    """Layer 6's input gradient: Eq. 2's backward with the fixed weights (their gradient is discarded).

    dout: (N, S, H, W); f_shape: (N, C, H, W) → ∂E/∂f: (N, C, H, W).
    """
    w6 = log_bank_weights(sigmas, f_shape[1])
    dx, _, _ = conv2d_backward(dout, np.zeros(f_shape), w6, 1, (w6.shape[-1] - 1) // 2)
    return dx


# ---------------------------------------------------------------------------
# The β-VAE's dense layer and sampling step (seed 004)
# ---------------------------------------------------------------------------

def linear_forward(x, w, b):
    """``y[n, o] = Σ_i x[n, i] · w[o, i] + b[o]``. x: (N, in); w: (out, in); b: (out,) → y: (N, out)."""
    x, w, b = _f64(x, w, b)
    out = np.zeros((x.shape[0], w.shape[0]))
    for n in range(x.shape[0]):
        for o in range(w.shape[0]):
            out[n, o] = np.sum(x[n] * w[o]) + b[o]
    return out


def linear_backward(dout, x, w):
    """``∂E/∂x[n] = Σ_o dout[n, o] w[o]``, ``∂E/∂w[o] = Σ_n dout[n, o] x[n]``, ``∂E/∂b[o] = Σ_n dout[n, o]``.

    dout: (N, out); x: (N, in); w: (out, in). returns (dx (N, in), dw (out, in), db (out,)).
    """
    dout, x, w = _f64(dout, x, w)
    dx, dw = np.zeros_like(x), np.zeros_like(w)
    for n in range(x.shape[0]):
        for o in range(w.shape[0]):
            dx[n] += dout[n, o] * w[o]
            dw[o] += dout[n, o] * x[n]
    return dx, dw, dout.sum(axis=0)


def reparameterize_forward(mu, logvar, eps):
    """``z = μ + e^{½·logvar} · ε`` (ε drawn by the caller). mu, logvar, eps: (N, D) → z: (N, D)."""
    mu, logvar, eps = _f64(mu, logvar, eps)
    return mu + np.exp(0.5 * logvar) * eps


def reparameterize_backward(dz, logvar, eps):
    """``∂E/∂μ = dz``, ``∂E/∂logvar = dz · ε · ½ e^{½·logvar}``. All (N, D). returns (dmu, dlogvar)."""
    dz, logvar, eps = _f64(dz, logvar, eps)
    return dz.copy(), dz * eps * 0.5 * np.exp(0.5 * logvar)


# ---------------------------------------------------------------------------
# Losses. Each returns a batch value (1/N_m) Σ_i ℓ_i, N_m = batch_count, and its gradient w.r.t. recon f^L.
# ---------------------------------------------------------------------------

def pixel_loss_forward(recon, target, batch_count, weights=(1.0, 1.0, 1.0)):
    """Eq. 4: ``E_PL = (1/N_m) Σ_i Σ_c w_PL[c] · ½ · (1/(W H)) Σ_{x,y} (f^L_i − f^1_i)²``.

    recon f^L, target f^1: (N, C, H, W). returns a Python float.
    """
    recon, target = _f64(recon, target)
    n_img, chans, h, w = recon.shape
    total = 0.0
    for i in range(n_img):
        for c in range(chans):
            total += weights[c] * 0.5 * np.sum((recon[i, c] - target[i, c]) ** 2) / (w * h)
    return total / batch_count


def pixel_loss_backward(recon, target, batch_count, weights=(1.0, 1.0, 1.0)):
    """Eq. 9 without the tanh factor: ``∂E_PL/∂f^L[i, c, y, x] = w_PL[c] / (N_m W H) · (f^L − f^1)``.

    recon, target: (N, C, H, W) → (N, C, H, W).
    """
    recon, target = _f64(recon, target)
    _, chans, h, w = recon.shape
    grad = np.zeros_like(recon)
    for c in range(chans):
        grad[:, c] = weights[c] / (batch_count * w * h) * (recon[:, c] - target[:, c])
    return grad


def sfl_forward(recon, target, batch_count, sigmas=(0.8, 1.6, 3.2), weights=(100.0, 10.0, 10.0)):
    """Eq. 6: ``E_SFL = (1/N_m) Σ_i Σ_c w_SFL[c] · ½ · (1/(W H)) Σ_{x,y} (f^{L+1}_i − f^1_i(·|σ_c))²``.

    f^{L+1} = LoG bank of f^L and f^1(·|σ_c) = LoG bank of f^1, each filtered separately as in the paper.
    recon, target: (N, 3, H, W). returns (E_SFL (float), unit-weight subband values (S,)).
    """
    lr, lt = log_bank_forward(recon, sigmas), log_bank_forward(target, sigmas)
    n_img, bands, h, w = lr.shape
    subbands = np.zeros(bands)
    for i in range(n_img):
        for c in range(bands):
            subbands[c] += 0.5 * np.sum((lr[i, c] - lt[i, c]) ** 2) / (w * h) / batch_count
    return float(np.sum(np.asarray(weights) * subbands)), subbands


def sfl_backward(recon, target, batch_count, sigmas=(0.8, 1.6, 3.2), weights=(100.0, 10.0, 10.0)):
    """Eq. 8, ``∂E_SFL/∂o^{L+1}[i, c] = w_SFL[c] / (N_m W H) · (f^{L+1}_i − f^1_i(·|σ_c))``,
    carried down to f^L by layer 6's backward (:func:`log_bank_backward`).

    recon, target: (N, 3, H, W) → ∂E_SFL/∂f^L: (N, 3, H, W).
    """
    lr, lt = log_bank_forward(recon, sigmas), log_bank_forward(target, sigmas)
    _, bands, h, w = lr.shape
    grad_bands = np.zeros_like(lr)
    for c in range(bands):
        grad_bands[:, c] = weights[c] / (batch_count * w * h) * (lr[:, c] - lt[:, c])
    return log_bank_backward(grad_bands, recon.shape, sigmas)


def l1_loss_forward(recon, target, batch_count):
    """``E_L1 = (1/N_m) Σ_i mean_{c,y,x} |f^L_i − f^1_i|``. recon, target: (N, C, H, W). returns a float."""
    recon, target = _f64(recon, target)
    total = 0.0
    for i in range(recon.shape[0]):
        total += np.mean(np.abs(recon[i] - target[i]))
    return total / batch_count


def l1_loss_backward(recon, target, batch_count):
    """``sign(f^L − f^1) / (N_m C H W)`` (subgradient 0 where they are equal): (N, C, H, W)."""
    recon, target = _f64(recon, target)
    _, chans, h, w = recon.shape
    return np.sign(recon - target) / (batch_count * chans * h * w)


def kl_divergence_forward(mu, logvar, batch_count):
    """``E_KL = (1/N_m) Σ_i Σ_j ½ (μ_ij² + e^{logvar_ij} − logvar_ij − 1)``. mu, logvar: (N, D). returns a float."""
    mu, logvar = _f64(mu, logvar)
    total = 0.0
    for i in range(mu.shape[0]):
        for j in range(mu.shape[1]):
            total += 0.5 * (mu[i, j] ** 2 + math.exp(logvar[i, j]) - logvar[i, j] - 1)
    return total / batch_count


def kl_divergence_backward(mu, logvar, batch_count):
    """``∂E_KL/∂μ = μ / N_m``, ``∂E_KL/∂logvar = ½ (e^{logvar} − 1) / N_m``. returns (dmu, dlogvar), each (N, D)."""
    mu, logvar = _f64(mu, logvar)
    return mu / batch_count, 0.5 * (np.exp(logvar) - 1) / batch_count


def _dft_basis(h, w):
    """The orthonormal 2-D DFT as an array: ``F[u, v, y, x] = e^{−2πi(uy/H + vx/W)} / √(HW)``, (H, W, H, W)."""
    u, v, y, x = np.meshgrid(np.arange(h), np.arange(w), np.arange(h), np.arange(w), indexing="ij")
    return np.exp(-2j * np.pi * (u * y / h + v * x / w)) / math.sqrt(h * w)


def _focal_spectrum(recon, target):
    """D = F(f^L − f^1) by sums, and the focal weight |D| / max_{u,v} |D| (0 if the max is 0). Both (N, C, H, W)."""
    d = recon - target
    n_img, chans, h, w = d.shape
    basis = _dft_basis(h, w)
    spectrum = np.zeros(d.shape, dtype=complex)
    for i in range(n_img):
        for c in range(chans):
            for u in range(h):
                for v in range(w):
                    spectrum[i, c, u, v] = np.sum(basis[u, v] * d[i, c])
    peak = np.abs(spectrum).max(axis=(2, 3), keepdims=True)
    return spectrum, np.abs(spectrum) / np.where(peak > 0, peak, 1.0)


def fft_loss_forward(recon, target, batch_count):
    """The focal frequency loss: ``(1/N_m) Σ_i mean_{c,u,v} w · |D|²``, D the orthonormal DFT of f^L − f^1.

    recon, target: (N, C, H, W). returns a float.
    """
    recon, target = _f64(recon, target)
    spectrum, focal = _focal_spectrum(recon, target)
    _, chans, h, w = recon.shape
    return float(np.sum(focal * np.abs(spectrum) ** 2)) / (batch_count * chans * h * w)


def fft_loss_backward(recon, target, batch_count):
    """The gradient with the focal weight w held constant (detached, as in the fast loss):
    ``∂/∂f^L[y, x] = 2 Re Σ_{u,v} conj(F[u, v, y, x]) · w[u, v] · D[u, v] / (N_m C H W)``.

    recon, target: (N, C, H, W) → (N, C, H, W).
    """
    recon, target = _f64(recon, target)
    spectrum, focal = _focal_spectrum(recon, target)
    n_img, chans, h, w = recon.shape
    basis = _dft_basis(h, w)
    grad = np.zeros_like(recon)
    for y in range(h):
        for x in range(w):
            back = np.sum(np.conj(basis[:, :, y, x]) * focal * spectrum, axis=(2, 3))   # (N, C)
            grad[:, :, y, x] = 2 * back.real / (batch_count * chans * h * w)
    return grad
