"""The cost of one ``sflnet.torch.Objective("pl+sfl")`` forward + backward, against the same loss in plain torch.

    python validation/torch_loss_cost.py [--batch 8] [--size 300] [--repeats 5] [--device cpu|cuda]

The plain-torch loss is Eq. 4 + Eq. 6 written the way a PyTorch user would: the literal LoG bank
(:func:`sflnet.ops.filters.log_bank_weights`, one ``conv2d`` with zero "same" padding) and torch's
autograd. Both get the same float32 (N, 3, H, W) pair; the best of ``--repeats`` timings is
printed, with the largest difference of the two gradients. Needs torch (and CuPy for cuda).
"""

import argparse
import sys
import time

import torch
import torch.nn.functional as F

from sflnet.losses.base import PAPER_SFL_WEIGHTS
from sflnet.ops.filters import PAPER_SIGMAS, log_bank_weights
from sflnet.torch import Objective
from sflnet.errors import run_script


def plain_pl_sfl(pred, target, bank, weights):
    """E_PL + E_SFL in plain torch: pred, target (N, 3, H, W), bank (S, 3, k, k), weights (S,) → 0-d."""
    d = pred - target
    e_pl = (0.5 * (d * d).mean(dim=(2, 3))).sum() / d.shape[0]
    bands = F.conv2d(d, bank, padding=bank.shape[-1] // 2)
    return e_pl + (weights * 0.5 * (bands * bands).mean(dim=(2, 3))).sum() / d.shape[0]


def best_time(step, repeats, device):
    """The fastest of ``repeats`` runs of ``step()`` (after one warm-up), in seconds."""
    step()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    shape = (args.batch, 3, args.size, args.size)
    pred = (2 * torch.rand(shape, generator=generator) - 1).to(args.device).requires_grad_(True)
    target = (2 * torch.rand(shape, generator=generator) - 1).to(args.device)
    bank = torch.from_numpy(log_bank_weights(PAPER_SIGMAS, dtype="float32")).to(args.device)
    weights = torch.tensor(PAPER_SFL_WEIGHTS, dtype=torch.float32, device=args.device)
    loss_fn = Objective("pl+sfl")
    grads = {}

    def run(name, compute):
        def step():
            pred.grad = None
            compute().backward()
            grads[name] = pred.grad
        return best_time(step, args.repeats, args.device)

    ours = run("sflnet", lambda: loss_fn(pred, target))
    plain = run("torch", lambda: plain_pl_sfl(pred, target, bank, weights))
    difference = (grads["sflnet"] - grads["torch"]).abs().max().item() / grads["torch"].abs().max().item()
    print(f"{args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, batch {shape}, float32")
    print(f"sflnet.torch.Objective('pl+sfl') forward+backward: {ours * 1e3:9.1f} ms")
    print(f"plain torch (literal LoG conv2d + autograd):        {plain * 1e3:9.1f} ms")
    print(f"largest gradient difference / largest gradient: {difference:.2e}")


if __name__ == "__main__":
    sys.exit(run_script(main))
