"""Naive textbook versions of every layer: the short version beside the fast one.

**These are not an alternative for users.** Nothing in sflnet's training path calls
them, and there is no option to pick them: they are slow (plain Python loops over
output pixels, or one SciPy call per channel pair) and run on NumPy in float64 only.
They exist so that a reader can read a 10-20 line version of each forward and
backward pass, written straight from the paper's equations, and trust the fast
layers of :mod:`sflnet.nn` (im2col, GEMMs, separable filters, threads):
``tests/test_reference.py`` proves the two equal to ~1e-12 in float64, and the
forward rows of ``sflnet gradcheck`` (:mod:`sflnet.gradcheck.cases`) compare the
fast layers with them.

Each function takes and returns plain arrays (no caches, no classes): a forward
``*_forward(inputs…) -> output`` and a backward ``*_backward(upstream, inputs…)
-> gradients``. Backward functions recompute what they need from the inputs.
Arrays are NCHW; equation numbers are those of the paper (Ichimura, "Spatial
Frequency Loss for Learning Convolutional Autoencoders").

Two kinds of reference exist for the convolutions and the LoG bank, on purpose:
the ``*_forward`` / ``*_backward`` loops are the readable derivation (with a
backward), while the ``*_scipy`` versions (:func:`conv2d_scipy`,
:func:`conv_transpose2d_scipy`, :func:`log_bank_scipy`) are one
``scipy.signal`` call per channel pair: a second opinion written by someone else
(SciPy's own correlation), fast enough for the realistic shapes of the gradcheck
rows and of the whole-network reference (:mod:`.network`).

=========================================  ===============================  ================================
reference                                  fast version                     paper
=========================================  ===============================  ================================
conv2d_forward / _backward, conv2d_scipy   nn.Conv2D                        Eq. 2 (+ the bias of Eq. 3)
conv_transpose2d_forward / _backward,      nn.ConvTranspose2D           the adjoint of Eq. 2
conv_transpose2d_scipy
relu_*, tanh_*, sigmoid_*                  nn.ReLU, Tanh, Sigmoid           Eq. 3 (the activation a(·))
upsample2x_forward / _backward             nn.Upsample2x                    Tab. 1, layer 4 ("stride 0.5")
log_kernel, log_bank_*                     nn.LoGBank                       Eq. 5 weights in Eq. 2 (layer 6)
linear_*, reparameterize_*                 nn.Linear, Reparameterize        Dalal's β-VAE
=========================================  ===============================  ================================

``Reshape``/``Flatten`` are relabellings of the same numbers and have no reference.
"""

import math
from fractions import Fraction

import numpy as np
import scipy.signal

from sflnet.ops import filters
from sflnet.ops.filters import PAPER_SIGMAS

def as_float64(*arrays):
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
    x, w, b = as_float64(x, w, b)
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
    dout, x, w = as_float64(dout, x, w)
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

def conv2d_scipy(x, w, b, stride=1, pad=None):
    """Eq. 2 with SciPy: ``o[n,c] = Σ_{c'} correlate(pad(x[n,c']), w[c,c'], 'valid')[::s, ::s] + b[c]``.

    pad: zeros on each side; None is "same", (k−1)/2; 0 is "valid".
    x: (N, C_in, H, W), w: (C_out, C_in, k, k), b: (C_out,) → (N, C_out, ⌊(H + 2p − k)/s⌋ + 1, …)
    (⌈H/s⌉ for "same").
    """
    p = (w.shape[-1] - 1) // 2 if pad is None else pad
    x_pad = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    out = []
    for n in range(x.shape[0]):
        maps = []
        for c in range(w.shape[0]):
            total = sum(scipy.signal.correlate(x_pad[n, ci], w[c, ci], mode="valid", method="direct")
                        for ci in range(w.shape[1]))
            maps.append(total[::stride, ::stride] + b[c])
        out.append(np.stack(maps))
    return np.stack(out)


def tconv_top_padding(k, stride, h, padding="symmetric"):
    """Rows of the full transposed convolution (length s·(h−1) + k) dropped before the s·h kept ones.

    "symmetric": p = (k−1)/2, the padding of sflnet's "same" Eq. 2 on each side.
    "tf-same": TensorFlow's SAME rule for the convolution whose input gradient this is (input length
    H = s·h, output ⌈H/s⌉ = h): total padding ``max((h − 1)·s + k − H, 0)``, its smaller half
    ``⌊total/2⌋`` before (top/left), the rest after (bottom/right).
    """
    if padding == "symmetric":
        return (k - 1) // 2
    if padding == "tf-same":
        big = stride * h
        out = -(-big // stride)
        total = max((out - 1) * stride + k - big, 0)
        return total // 2
    raise ValueError(f"unknown padding {padding!r}")


def conv_transpose2d_forward(x, w, b, stride=1, padding="symmetric"):
    """The transposed convolution: the adjoint of a "same" Eq. 2 w.r.t. its input, plus a bias; a scatter loop.

    Every input pixel x[n, c', i, j] adds ``x[n, c', i, j] · w[c']`` onto the k×k window of the
    full output whose top-left corner is (s·i, s·j); the output is then the s·h × s·w rows and columns
    from p = :func:`tconv_top_padding` on (what lands outside is dropped, as in Eq. 2's zero padding).

    x: (N, C_in, h, w); w: (C_in, C_out, k, k); b: (C_out,); stride s; padding "symmetric" or "tf-same".
    returns (N, C_out, s·h, s·w).
    """
    x, w, b = as_float64(x, w, b)
    n_img, c_in, h, wd = x.shape
    _, c_out, k, _ = w.shape
    py, px = tconv_top_padding(k, stride, h, padding), tconv_top_padding(k, stride, wd, padding)
    full = np.zeros((n_img, c_out, stride * h + k, stride * wd + k))
    for n in range(n_img):
        for c in range(c_in):
            for i in range(h):
                for j in range(wd):
                    full[n, :, i * stride:i * stride + k, j * stride:j * stride + k] += x[n, c, i, j] * w[c]
    return full[:, :, py:py + stride * h, px:px + stride * wd] + b[None, :, None, None]


def conv_transpose2d_backward(dout, x, w, stride=1, padding="symmetric"):
    """Backward of :func:`conv_transpose2d_forward`: each input pixel gathers from the window it scattered to.

    With g_win = the upstream gradient on that window (zero outside the kept rows and columns):
    ``∂E/∂x[n, c', i, j] = Σ g_win · w[c']`` (this is Eq. 2's forward: the adjoint's adjoint),
    ``∂E/∂w[c'] += x[n, c', i, j] · g_win``, ``∂E/∂b[c] = Σ_{n,y,x} dout[n, c, y, x]``.

    dout: (N, C_out, s·h, s·w); x: (N, C_in, h, w); w: (C_in, C_out, k, k).
    returns (dx (N, C_in, h, w), dw (C_in, C_out, k, k), db (C_out,)).
    """
    dout, x, w = as_float64(dout, x, w)
    n_img, c_in, h, wd = x.shape
    k = w.shape[-1]
    py, px = tconv_top_padding(k, stride, h, padding), tconv_top_padding(k, stride, wd, padding)
    g_full = np.pad(dout, ((0, 0), (0, 0), (py, k), (px, k)))     # full-output coordinates
    dx, dw = np.zeros_like(x), np.zeros_like(w)
    for n in range(n_img):
        for c in range(c_in):
            for i in range(h):
                for j in range(wd):
                    window = g_full[n, :, i * stride:i * stride + k, j * stride:j * stride + k]
                    dx[n, c, i, j] = np.sum(window * w[c])
                    dw[c] += x[n, c, i, j] * window
    return dx, dw, dout.sum(axis=(0, 2, 3))


def conv_transpose2d_scipy(x, w, b, stride=1, padding="symmetric"):
    """The transposed convolution as a true convolution of the zero-interleaved input (SciPy).

    Put x[i, j] at (s·i, s·j) of an otherwise zero grid (``x_up``); then
    ``full[c] = Σ_{c'} convolve(x_up[c'], w[c', c], 'full')`` is every input pixel
    times the kernel, added at its place (a convolution, unlike a correlation,
    does not flip the roles: ``full[y] = Σ_i x_up[i] w[y − i]``). The result is
    ``full[p : p + s·h, p : p + s·w] + b``, p = :func:`tconv_top_padding` ((k−1)/2 for "symmetric"),
    zero-extended where full is shorter.
    A different construction from the scatter loop of :func:`conv_transpose2d_forward`.

    x: (N, C_in, h, w), w: (C_in, C_out, k, k), b: (C_out,) → (N, C_out, s·h, s·w).
    """
    n_img, c_in, h, wd = x.shape
    c_out, k = w.shape[1], w.shape[2]
    py, px = tconv_top_padding(k, stride, h, padding), tconv_top_padding(k, stride, wd, padding)
    x_up = np.zeros((n_img, c_in, (h - 1) * stride + 1, (wd - 1) * stride + 1), dtype=np.float64)
    x_up[:, :, ::stride, ::stride] = x
    out = np.zeros((n_img, c_out, stride * h, stride * wd), dtype=np.float64)
    for n in range(n_img):
        for c in range(c_out):
            full = sum(scipy.signal.convolve(x_up[n, ci], w[ci, c], mode="full", method="direct")
                       for ci in range(c_in))
            part = full[py:py + stride * h, px:px + stride * wd]
            out[n, c, :part.shape[0], :part.shape[1]] = part
            out[n, c] += b[c]
    return out


# ---------------------------------------------------------------------------
# Activations, Eq. 3
# ---------------------------------------------------------------------------

def relu_forward(x):
    """Eq. 3 with a(o) = max(0, o). x: any shape → same."""
    (x,) = as_float64(x)
    return np.where(x > 0, x, 0.0)


def relu_backward(dout, x):
    """a'(o) = 1 where o > 0, else 0 (the kink at 0 takes 0): ``∂E/∂x = dout · [x > 0]``. Shapes: any → same."""
    dout, x = as_float64(dout, x)
    return np.where(x > 0, dout, 0.0)


def tanh_forward(x):
    """Eq. 3 with a(o) = tanh(o), the output layer L = 5 (f^L). x: any shape → same."""
    (x,) = as_float64(x)
    return np.tanh(x)


def tanh_backward(dout, x):
    """d tanh(o)/do = 1 − tanh²(o), the factor ∂f^L/∂o^L of Eq. 9. dout, x: any shape → same."""
    dout, x = as_float64(dout, x)
    return dout * (1.0 - np.tanh(x) ** 2)


def sigmoid_forward(x):
    """The β-VAE's output activation σ(x) = 1 / (1 + e^{−x}), the textbook formula. x: any shape → same."""
    (x,) = as_float64(x)
    return 1.0 / (1.0 + np.exp(-x))


def sigmoid_backward(dout, x):
    """dσ/dx = σ(x)(1 − σ(x)). dout, x: any shape → same."""
    dout, x = as_float64(dout, x)
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
    (x,) = as_float64(x)
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
    (dout,) = as_float64(dout)
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

    Size k = ⌈8σ⌉, plus 1 if even (7, 13, 27 for σ = 0.8, 1.6, 3.2), in exact decimal
    arithmetic (8 · 0.8 is 6.4, not 6.4000000000000004); not renormalised.
    Written element by element, independently of :func:`sflnet.ops.filters.log_kernel`.
    returns (k, k) float64, rows y, columns x.
    """
    k = math.ceil(Fraction(str(sigma)) * 8)
    if k % 2 == 0:
        k += 1
    s = (k - 1) // 2
    kernel = np.empty((k, k), dtype=np.float64)
    for row, y in enumerate(range(-s, s + 1)):
        for col, x in enumerate(range(-s, s + 1)):
            r2 = x * x + y * y
            kernel[row, col] = (-(2 - r2 / sigma ** 2) * math.exp(-r2 / (2 * sigma ** 2))
                                / (2 * math.pi * sigma ** 2))
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


def log_bank_forward(f, sigmas=PAPER_SIGMAS):
    """Layer 6: Eq. 2 with the Eq. 5 weights of :func:`log_bank_weights`, no bias, identity activation.

    ``out[n, c] = Σ_{c'} K_{σ_c} ⋆ f[n, c']`` (zero "same" padding): the LoG of the sum of the colours.
    f: (N, C, H, W) → (N, S, H, W).
    """
    w6 = log_bank_weights(sigmas, f.shape[1])
    return conv2d_forward(f, w6, np.zeros(len(sigmas)), 1, (w6.shape[-1] - 1) // 2)


def log_bank_backward(dout, f_shape, sigmas=PAPER_SIGMAS):
    """Layer 6's input gradient: Eq. 2's backward with the fixed weights (their gradient is discarded).

    dout: (N, S, H, W); f_shape: (N, C, H, W) → ∂E/∂f: (N, C, H, W).
    """
    w6 = log_bank_weights(sigmas, f_shape[1])
    dx, _, _ = conv2d_backward(dout, np.zeros(f_shape), w6, 1, (w6.shape[-1] - 1) // 2)
    return dx


def log_bank_scipy(f, sigmas):
    """Layer 6 with SciPy: ``out[n,c] = Σ_{c'} correlate2d(f[n,c'], K_{σ_c}, 'same', zero fill)``.

    The kernels are the production :func:`sflnet.ops.filters.log_kernel` (checked on their own
    against :func:`log_kernel`), so this checks the bank's correlation, padding and colour sum.
    f: (N, C, H, W) → (N, S, H, W).
    """
    out = np.zeros((f.shape[0], len(sigmas)) + f.shape[2:], dtype=np.float64)
    for n in range(f.shape[0]):
        for c, sigma in enumerate(sigmas):
            kernel = filters.log_kernel(sigma)
            for ci in range(f.shape[1]):
                out[n, c] += scipy.signal.correlate2d(f[n, ci], kernel, mode="same", boundary="fill")
    return out


# ---------------------------------------------------------------------------
# The β-VAE's dense layer and sampling step (Dalal's β-VAE)
# ---------------------------------------------------------------------------

def linear_forward(x, w, b):
    """``y[n, o] = Σ_i x[n, i] · w[o, i] + b[o]``, one output at a time (math.fsum).

    x: (N, in); w: (out, in); b: (out,) → y: (N, out).
    """
    x, w, b = as_float64(x, w, b)
    out = np.empty((x.shape[0], w.shape[0]), dtype=np.float64)
    for n in range(x.shape[0]):
        for o in range(w.shape[0]):
            out[n, o] = math.fsum(float(x[n, i]) * float(w[o, i]) for i in range(x.shape[1])) + b[o]
    return out


def linear_backward(dout, x, w):
    """``∂E/∂x[n] = Σ_o dout[n, o] w[o]``, ``∂E/∂w[o] = Σ_n dout[n, o] x[n]``, ``∂E/∂b[o] = Σ_n dout[n, o]``.

    dout: (N, out); x: (N, in); w: (out, in). returns (dx (N, in), dw (out, in), db (out,)).
    """
    dout, x, w = as_float64(dout, x, w)
    dx, dw = np.zeros_like(x), np.zeros_like(w)
    for n in range(x.shape[0]):
        for o in range(w.shape[0]):
            dx[n] += dout[n, o] * w[o]
            dw[o] += dout[n, o] * x[n]
    return dx, dw, dout.sum(axis=0)


def reparameterize_forward(mu, logvar, eps):
    """``z = μ + σ · ε`` with σ = sqrt(exp(logvar)), element by element (ε drawn by the caller).

    mu, logvar, eps: (N, D) → z: (N, D).
    """
    mu, logvar, eps = as_float64(mu, logvar, eps)
    return np.array([[m + math.sqrt(math.exp(lv)) * e for m, lv, e in zip(*rows)]
                     for rows in zip(mu, logvar, eps)]).reshape(mu.shape)


def reparameterize_backward(dz, logvar, eps):
    """``∂E/∂μ = dz``, ``∂E/∂logvar = dz · ε · ½ e^{½·logvar}``. All (N, D). returns (dmu, dlogvar)."""
    dz, logvar, eps = as_float64(dz, logvar, eps)
    return dz.copy(), dz * eps * 0.5 * np.exp(0.5 * logvar)
