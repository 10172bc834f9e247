"""Dalal's β-VAE (VAE1) and its objectives written with PyTorch: the reference of ``sflnet bench --model vae``.

PyTorch is **never** a dependency of sflnet: this module imports ``torch`` at the top, and only
``sflnet bench --model vae --compare-torch`` (in a child process, :func:`main`) and the tests
that skip without torch import it. It is written the plain way a PyTorch user would, with
autograd, so it is both the baseline sflnet's speed is compared against and an independent
check of sflnet's hand-written VAE (the tests compare losses and gradients):

* the network of :mod:`sflnet.models.vae`, with the same parameter names and layouts:
  ``F.conv2d`` (stride 2, no padding) + ReLU twice, flatten, ``F.linear`` to (μ, log σ²);
  z = μ + exp(½ log σ²)·ε; ``F.linear`` + ReLU, reshape to 32×7×7, and three
  ``F.conv_transpose2d``: "tf-same" is the full transposed convolution (padding 0) cropped to
  its first s·h rows and columns from row ⌊max(k − s, 0)/2⌋, "symmetric" is padding (k−1)/2 with
  output_padding s − 1; the sigmoid at the end only for ``output="sigmoid"``;
* β·KL with ``KL_i = Σ_j ½ (μ² + e^ℓ − ℓ − 1)``, averaged over the batch;
* ``2*pl``: ``2 · mean_i ½ mean_xy (x̂ − x)²``, i.e. the mean squared error (the authors' L2);
* ``500*ssim+0.00015*stft`` (the authors' proposed objective, Dalal's defaults): SSIM with the
  11×11 Gaussian window (σ = 1.5, valid, data range 1) as ``F.conv2d`` of the five statistics,
  and the STFT loss as ``unfold`` into 16×16 frames at stride 4, the periodic Hann taper,
  ``torch.fft.rfft2(norm="ortho")`` (the half spectrum, each column counted as often as in the
  full one), ``|A_o − A_i|`` and ``9·|angle(F_o conj F_i)|`` weighted by ``r / max r``;
* ``torch.optim.Adam(lr, eps=1e-7)`` (Keras' ε, as sflnet's Adam).
"""

import argparse
import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from sflnet.losses.ssim import K1, K2, gaussian_taps
from sflnet.losses.stft import frequency_weights, window_taper
from sflnet.models.vae import DECODER_GRID, DEFAULT_BETA, LATENT, PARAM_NAMES
from sflnet.ops.spectral import half_spectrum_multiplicity

#: The objectives this reference implements (``--loss`` of ``sflnet bench --model vae``).
OBJECTIVES = ("500*ssim+0.00015*stft", "2*pl")
STFT_WINDOW, STFT_STRIDE, STFT_PHASE_WEIGHT = 16, 4, 9.0


def describe():
    """{"version", "threads"} of this torch."""
    return {"version": torch.__version__, "threads": torch.get_num_threads()}


def _tconv(x, w, b, stride, padding):
    """The transposed convolution of :class:`sflnet.nn.ConvTranspose2D`: (N, C_in, h, w) → (N, C_out, s·h, s·w)."""
    k = w.shape[2]
    if padding == "symmetric":
        return F.conv_transpose2d(x, w, b, stride=stride, padding=(k - 1) // 2, output_padding=stride - 1)
    top = max(k - stride, 0) // 2
    full = F.conv_transpose2d(x, w, b, stride=stride)          # (N, C_out, s·(h−1) + k, …)
    h, wd = stride * x.shape[2], stride * x.shape[3]
    return full[:, :, top:top + h, top:top + wd]


class TorchVAE:
    """VAE1 on ``params`` ({conv1_w … deconv3_b} NumPy arrays, copied to leaf tensors) with one objective."""

    def __init__(self, params, loss="2*pl", beta=DEFAULT_BETA, output="linear", tconv_padding="tf-same",
                 lr=1e-3, device="cpu"):
        if loss not in OBJECTIVES:
            raise ValueError(f"the torch VAE reference implements {OBJECTIVES}, not {loss!r}")
        self.loss, self.beta, self.output, self.tconv_padding = loss, float(beta), output, tconv_padding
        self.device = torch.device(device)
        self.params = {name: torch.tensor(np.asarray(params[name]), device=self.device, requires_grad=True)
                       for name in PARAM_NAMES}
        self.dtype = self.params["conv1_w"].dtype
        self.optimizer = torch.optim.Adam(list(self.params.values()), lr=lr, eps=1e-7)
        g = torch.tensor(gaussian_taps(), dtype=self.dtype, device=self.device)
        self.ssim_window = torch.outer(g, g)[None, None]                          # (1, 1, 11, 11)
        self.taper = torch.tensor(window_taper(STFT_WINDOW, "hann"), dtype=self.dtype, device=self.device)
        half = STFT_WINDOW // 2 + 1
        counted = frequency_weights(STFT_WINDOW)[:, :half] * half_spectrum_multiplicity(STFT_WINDOW)
        self.bin_weights = torch.tensor(counted, dtype=self.dtype, device=self.device)   # (16, 9)

    # -- the network --------------------------------------------------------------------------
    def forward(self, x, eps):
        """x: (N, 1, 28, 28), eps: (N, 2) tensors → (reconstruction, μ, log σ²)."""
        p = self.params
        h = F.relu(F.conv2d(x, p["conv1_w"], p["conv1_b"], stride=2))
        h = F.relu(F.conv2d(h, p["conv2_w"], p["conv2_b"], stride=2))
        code = F.linear(h.flatten(1), p["enc_w"], p["enc_b"])
        mu, logvar = code[:, :LATENT], code[:, LATENT:]
        z = mu + torch.exp(0.5 * logvar) * eps
        h = F.relu(F.linear(z, p["dec_w"], p["dec_b"])).reshape(-1, *DECODER_GRID)
        h = F.relu(_tconv(h, p["deconv1_w"], p["deconv1_b"], 2, self.tconv_padding))
        h = F.relu(_tconv(h, p["deconv2_w"], p["deconv2_b"], 2, self.tconv_padding))
        recon = _tconv(h, p["deconv3_w"], p["deconv3_b"], 1, self.tconv_padding)
        return (torch.sigmoid(recon) if self.output == "sigmoid" else recon), mu, logvar

    # -- the objective ------------------------------------------------------------------------
    def ssim_loss(self, recon, x):
        """mean_i (1 − SSIM_i), SSIM with data range 1 (images on [0, 1])."""
        n, c = x.shape[:2]
        stats = torch.cat([recon, x, recon * recon, x * x, recon * x], dim=1).reshape(n * 5 * c, 1, *x.shape[2:])
        local = F.conv2d(stats, self.ssim_window).reshape(n, 5, c, x.shape[2] - 10, x.shape[3] - 10)
        mu_o, mu_i, oo, ii, oi = local.unbind(1)
        var_o, var_i, cov = oo - mu_o * mu_o, ii - mu_i * mu_i, oi - mu_o * mu_i
        c1, c2 = K1 ** 2, K2 ** 2
        ssim_map = ((2 * mu_o * mu_i + c1) * (2 * cov + c2)) / ((mu_o ** 2 + mu_i ** 2 + c1) * (var_o + var_i + c2))
        return (1.0 - ssim_map.flatten(1).mean(dim=1)).mean()

    def stft_loss(self, recon, x):
        """mean_i Σ W (λ|ΔP| + |A_o − A_i|) over every frame and bin (see the module docstring)."""
        def spectrum(image):
            frames = image.unfold(2, STFT_WINDOW, STFT_STRIDE).unfold(3, STFT_WINDOW, STFT_STRIDE)
            return torch.fft.rfft2(frames * self.taper, norm="ortho")           # (N, C, Ky, Kx, 16, 9)
        f_o, f_i = spectrum(recon), spectrum(x)
        amplitude = (f_o.abs() - f_i.abs()).abs()
        cross = f_o * f_i.conj()
        zero = cross == 0                                       # angle 0 there, with a finite gradient
        phase = torch.where(zero, torch.zeros_like(cross.real), torch.angle(torch.where(zero, torch.ones_like(cross),
                                                                                     cross)).abs())
        per_bin = self.bin_weights * (STFT_PHASE_WEIGHT * phase + amplitude)
        return per_bin.flatten(1).sum(dim=1).mean()

    def objective(self, x, eps):
        """E = β·KL + the reconstruction objective, for one batch (a 0-d tensor)."""
        recon, mu, logvar = self.forward(x, eps)
        kl = (0.5 * (mu * mu + torch.exp(logvar) - logvar - 1.0)).sum(dim=1).mean()
        if self.loss == "2*pl":
            terms = torch.mean((recon - x) ** 2)
        else:
            terms = 500.0 * self.ssim_loss(recon, x) + 0.00015 * self.stft_loss(recon, x)
        return terms + self.beta * kl

    def loss_and_grads(self, x, eps):
        """(E as a float, {name: ∂E/∂θ as a NumPy array}) without an update (for the tests)."""
        for p in self.params.values():
            p.grad = None
        energy = self.objective(x, eps)
        energy.backward()
        return float(energy.detach()), {name: p.grad.detach().cpu().numpy() for name, p in self.params.items()}

    def train_step(self, x, eps):
        """One Adam step on the batch x (N, 1, 28, 28) with the draws eps (N, 2)."""
        self.optimizer.zero_grad(set_to_none=True)
        energy = self.objective(x, eps)
        energy.backward()
        self.optimizer.step()
        return energy


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None):
    """Child-process entry, driven line by line over stdin/stdout (JSON lines).

    ``python -m sflnet.bench.torch_vae IN.npz --loss L --batch-size B --output O --tconv-padding P``

    IN.npz holds the parameters (conv1_w … deconv3_b) and ``images`` (N, 1, 28, 28). The child
    builds the model, takes the batches ``images[k·B:(k+1)·B]`` in turn (wrapping around, the
    order the parent uses too) and prints ``{"torch": {...}}``; then for every line ``round S`` on
    stdin it times S training steps and prints ``{"seconds": total}``; ``quit`` ends it.
    """
    parser = argparse.ArgumentParser(prog="python -m sflnet.bench.torch_vae")
    parser.add_argument("input")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--loss", choices=OBJECTIVES, default=OBJECTIVES[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--output", default="linear")
    parser.add_argument("--tconv-padding", default="tf-same")
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args(argv)
    with np.load(args.input) as data:
        params = {name: data[name] for name in PARAM_NAMES}
        images = data["images"]
    model = TorchVAE(params, loss=args.loss, output=args.output, tconv_padding=args.tconv_padding, device=args.device)
    device = model.device
    batches = [torch.tensor(images[s:s + args.batch_size], device=device)
               for s in range(0, len(images) - args.batch_size + 1, args.batch_size)]
    generator = torch.Generator(device="cpu").manual_seed(0)
    position = 0

    def steps(count):
        nonlocal position
        for _ in range(count):
            x = batches[position % len(batches)]
            position += 1
            eps = torch.randn((x.shape[0], LATENT), generator=generator, dtype=x.dtype).to(device)
            model.train_step(x, eps)
        synchronize(device)

    steps(args.warmup)
    print(json.dumps({"torch": describe()}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if len(words) != 2 or words[0] != "round":
            break
        start = time.perf_counter()
        steps(int(words[1]))
        print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
