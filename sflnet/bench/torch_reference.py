"""The Table 1 autoencoder and its losses written with PyTorch: a reference for benchmarks and checks.

PyTorch is **never** a dependency of sflnet. This module imports ``torch`` at
the top, so only two places import it, and only when torch is installed:
``sflnet bench --compare-torch`` (:mod:`sflnet.bench.harness`) and the tests that skip
without torch. It is written the plain way a PyTorch user would (autograd is
fine here, in the reference only), so it checks sflnet's hand-written
backward and is the baseline sflnet's speed is compared against:

* layers 2-5: ``F.conv2d`` (padding 1, stride 1 or 2) + ReLU, with layer 4's
  ``F.interpolate(scale_factor=2, mode="bilinear", align_corners=False)``
  cropped to the input size, and tanh at the end;
* Eq. 4: ``Σ_c w_PL[c] · ½ · mean_xy (f^L − f^1)²`` per image;
* layer 6 and Eq. 6: the **literal** LoG bank of the paper, one ``F.conv2d``
  of the difference f^L − f^1 with the (S, 3, k_max, k_max) weights of
  :func:`sflnet.ops.filters.log_bank_weights` (k_max = 27), zero "same" padding;
* Eq. 7: the mean over the batch's images; each same-size group is one tensor;
* ``torch.optim.SGD(lr, momentum)``. Torch's momentum is ``v ← μ v + g;
  θ ← θ − η v``; with ``v' = −η v`` that is the paper's ``v' ← μ v' − η g;
  θ ← θ + v'``, the same steps for a constant η.

Memory layouts: ``"nchw"`` (contiguous) and ``"channels_last"`` (NHWC in
memory; often the faster one for oneDNN on CPUs).

The benchmark runs this module in a child process (``python -m
sflnet.bench.torch_reference IN.npz``, see :func:`main`): PyTorch's OpenMP threads
and NumPy's OpenBLAS threads in one process fight over the cores and slow
both down many times over, and a child also keeps torch out of sflnet's
memory figures.
"""

import argparse
import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from sflnet.backend import to_host
from sflnet.ops.filters import log_bank_weights
from sflnet.models.cae import DEFAULT_PL_WEIGHTS, DEFAULT_SFL_WEIGHTS, DEFAULT_SIGMAS, PARAM_NAMES

# channels-last first: it is the layout sflnet is compared against, so in each
# round its epoch runs first, as sflnet's does in sflnet's round
LAYOUTS = {"channels_last": torch.channels_last, "nchw": torch.contiguous_format}


def describe():
    """{"version", "threads"} of the installed torch."""
    return {"version": torch.__version__, "threads": torch.get_num_threads()}


def torch_device(device):
    """``device``: "cpu" or "cuda". On "cuda" TF32 is switched off, so both sides compute plain float32."""
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return device


class TorchReference:
    """The CAE + losses in PyTorch, on copies of sflnet's initial parameters.

    params: {w2 … b5} NumPy or CuPy arrays (copied). device: "cpu" or "cuda". loss: "pl+sfl" (E = E_PL +
    E_SFL) or "pl" (E = E_PL). measure_sfl: compute E_SFL (without gradient)
    also for "pl", as sflnet does; False leaves the LoG bank out entirely.
    """

    def __init__(self, params, device="cpu", loss="pl+sfl", sigmas=DEFAULT_SIGMAS, sfl_weights=DEFAULT_SFL_WEIGHTS,
                 pl_weights=DEFAULT_PL_WEIGHTS, lr=0.02, momentum=0.5, memory_format="nchw",
                 measure_sfl=True):
        if loss not in ("pl+sfl", "pl"):
            raise ValueError(f"loss must be 'pl+sfl' or 'pl', got {loss!r}")
        self.device = torch_device(device)
        self.loss = loss
        self.measure_sfl = bool(measure_sfl)
        self.memory_format = LAYOUTS[memory_format]
        host = {name: to_host(params[name]) for name in PARAM_NAMES}
        dtype = getattr(torch, host["w2"].dtype.name)
        self.params = {}
        for name in PARAM_NAMES:
            tensor = torch.tensor(host[name], dtype=dtype, device=self.device)
            if tensor.ndim == 4:
                tensor = tensor.contiguous(memory_format=self.memory_format)
            self.params[name] = tensor.requires_grad_(True)
        bank = log_bank_weights(sigmas, dtype=host["w2"].dtype)
        self.log_weights = torch.tensor(bank, device=self.device).contiguous(memory_format=self.memory_format)
        self.log_pad = bank.shape[-1] // 2
        self.sfl_weights = torch.tensor(sfl_weights, dtype=dtype, device=self.device)
        self.pl_weights = torch.tensor(pl_weights, dtype=dtype, device=self.device)
        self.optimizer = torch.optim.SGD(list(self.params.values()), lr=lr, momentum=momentum)

    def prepare(self, groups):
        """groups: list of (n, 3, H, W) NumPy/CuPy arrays → tensors on the device, in the chosen layout."""
        return [torch.tensor(to_host(g), device=self.device).contiguous(memory_format=self.memory_format)
                for g in groups]

    def reconstruct(self, x):
        """Layers 2-5: x (n, 3, H, W) → f^L (n, 3, H, W)."""
        p = self.params
        h = F.relu(F.conv2d(x, p["w2"], p["b2"], stride=1, padding=1))
        h = F.relu(F.conv2d(h, p["w3"], p["b3"], stride=2, padding=1))
        h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
        h = h[:, :, :x.shape[2], :x.shape[3]]
        h = F.relu(F.conv2d(h, p["w4"], p["b4"], stride=1, padding=1))
        return torch.tanh(F.conv2d(h, p["w5"], p["b5"], stride=1, padding=1))

    def group_losses(self, x, batch_count):
        """One group's shares of (E_PL, E_SFL or None), each a 0-d tensor: Σ over its images / N_m."""
        d = self.reconstruct(x) - x
        e_pl = (self.pl_weights * 0.5 * (d * d).mean(dim=(2, 3))).sum() / batch_count
        if not self.measure_sfl:
            return e_pl, None
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.loss == "pl+sfl"):
            bands = F.conv2d(d, self.log_weights, padding=self.log_pad)
            e_sfl = (self.sfl_weights * 0.5 * (bands * bands).mean(dim=(2, 3))).sum() / batch_count
        return e_pl, e_sfl

    def train_step(self, tensors):
        """One full-batch step on prepared ``tensors`` (gradients accumulated group by group). returns E (float)."""
        self.optimizer.zero_grad(set_to_none=False)
        batch_count = sum(t.shape[0] for t in tensors)
        total = 0.0
        for x in tensors:
            e_pl, e_sfl = self.group_losses(x, batch_count)
            objective = e_pl + e_sfl if self.loss == "pl+sfl" else e_pl
            objective.backward()
            total += float(objective.detach())
        self.optimizer.step()
        return total

    def loss_and_grads(self, groups):
        """(E, E_PL, E_SFL, {name: NumPy gradient}) on NumPy/CuPy ``groups``, without updating the parameters."""
        tensors = self.prepare(groups)
        batch_count = sum(t.shape[0] for t in tensors)
        for p in self.params.values():
            p.grad = None
        e_total = e_pl_total = e_sfl_total = 0.0
        for x in tensors:
            e_pl, e_sfl = self.group_losses(x, batch_count)
            objective = e_pl + e_sfl if self.loss == "pl+sfl" else e_pl
            objective.backward()
            e_total += float(objective.detach())
            e_pl_total += float(e_pl.detach())
            e_sfl_total += float(e_sfl.detach()) if e_sfl is not None else float("nan")
        grads = {name: p.grad.detach().cpu().numpy() for name, p in self.params.items()}
        return e_total, e_pl_total, e_sfl_total, grads


def build_variants(groups, params, device, loss):
    """Every layout × {"epoch", "cae"} variant: {"torch <layout> <kind>": (TorchReference, prepared tensors)}.

    "epoch" is a training step with ``loss`` (for "pl" the SFL is measured
    without gradient, as sflnet does); "cae" is the network with the pixel
    loss alone, without the LoG bank.
    """
    variants = {}
    for layout in LAYOUTS:
        for kind in ("epoch", "cae"):
            runner = TorchReference(params, device=device, loss=loss if kind == "epoch" else "pl",
                                    memory_format=layout, measure_sfl=(kind == "epoch"))
            variants[f"torch {layout} {kind}"] = (runner, runner.prepare(groups))
    return variants


def time_round(variants, device):
    """Run every variant's training step once, in order; returns {name: seconds}."""
    times = {}
    for name, (runner, batch) in variants.items():
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        runner.train_step(batch)
        if device == "cuda":
            torch.cuda.synchronize()
        times[name] = time.perf_counter() - start
    return times


def main(argv=None):
    """Child-process entry, driven line by line over stdin/stdout (JSON lines).

    ``python -m sflnet.bench.torch_reference IN.npz --device cpu|cuda --loss pl+sfl|pl --warmup W``

    IN.npz holds the parameters (keys w2 … b5) and the groups (keys group0,
    group1, …). The child builds every variant, runs ``W`` untimed warm-up
    steps of each and prints ``{"torch": {...}}``; then for every line
    ``round`` on stdin it times one step of each variant and prints
    ``{"times": {name: seconds}}``; ``quit`` or end of input ends it. The
    parent interleaves these rounds with its own timings.
    """
    parser = argparse.ArgumentParser(prog="python -m sflnet.bench.torch_reference")
    parser.add_argument("input")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--loss", choices=("pl+sfl", "pl"), default="pl+sfl")
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args(argv)
    with np.load(args.input) as data:
        params = {name: data[name] for name in PARAM_NAMES}
        groups = [data[f"group{i}"] for i in range(sum(k.startswith("group") for k in data.files))]
    variants = build_variants(groups, params, args.device, args.loss)
    for runner, batch in variants.values():
        for _ in range(args.warmup):
            runner.train_step(batch)
    print(json.dumps({"torch": describe()}), flush=True)
    for line in sys.stdin:
        if line.strip() != "round":
            break
        print(json.dumps({"times": time_round(variants, args.device)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
