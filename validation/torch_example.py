"""The SFL effect through PyTorch: a small PyTorch autoencoder (not sflnet's) trained with ``pl`` and ``pl+sfl``.

    python validation/torch_example.py [--steps 300] [--size 64] [--seed 0] [--out FILE.json]

The network is written here in plain PyTorch (conv 3→32, stride-2 conv 32→16, bilinear ×2 +
conv 16→32, conv 32→3 + tanh, 3×3 kernels, ReLUs, PyTorch's default initialisation) and trained
with Adam (lr 1e-3) on the built-in demo images, resized so the shorter side is ``--size`` and
centre-cropped to ``size × size`` so they stack into one batch. The only sflnet parts are the
losses, :class:`sflnet.torch.Objective`, whose forward and backward are sflnet's own. Both runs
start from the same weights (``--seed``) and see the same batch at every step.

At the end each model is measured with the unit-weight subband SFLs of the paper's σ set
(``Objective("1*sfl(weights=1:1:1)")`` restricted to one σ at a time) and the pixel loss, and
a short table is printed (and written to ``--out`` as JSON). The PL+SFL model should have the
smaller subband errors, most of all at σ = 0.8 (the highest frequencies), as in the paper's
Fig. 4 and 5. Needs torch.
"""

import sys
import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from sflnet.io.images import demo_dir, find_image_files, load_image
from sflnet.ops.filters import PAPER_SIGMAS
from sflnet.torch import Objective
from sflnet.errors import run_script


class SmallAutoencoder(torch.nn.Module):
    """(N, 3, H, W) → (N, 3, H, W), H and W even: the paper's Table 1 shape, in plain PyTorch."""

    def __init__(self):
        super().__init__()
        self.conv2 = torch.nn.Conv2d(3, 32, 3, padding=1)
        self.conv3 = torch.nn.Conv2d(32, 16, 3, stride=2, padding=1)
        self.conv4 = torch.nn.Conv2d(16, 32, 3, padding=1)
        self.conv5 = torch.nn.Conv2d(32, 3, 3, padding=1)

    def forward(self, x):
        h = F.relu(self.conv2(x))
        h = F.relu(self.conv3(h))
        h = F.interpolate(h, size=x.shape[-2:], mode="bilinear", align_corners=False)
        h = F.relu(self.conv4(h))
        return torch.tanh(self.conv5(h))


def demo_batch(size):
    """The 8 demo images as one (8, 3, size, size) float32 tensor in [−1, 1] (shorter side resized, centre crop)."""
    images = []
    for path, _ in find_image_files(demo_dir()):
        image = load_image(path, size=0)               # (3, H, W) in [−1, 1], native size
        h, w = image.shape[1:]
        scale = size / min(h, w)
        tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
        tensor = F.interpolate(tensor, size=(max(size, round(h * scale)), max(size, round(w * scale))),
                               mode="bilinear", align_corners=False, antialias=True)[0]
        top, left = (tensor.shape[1] - size) // 2, (tensor.shape[2] - size) // 2
        images.append(tensor[:, top:top + size, left:left + size])
    return torch.stack(images).clamp(-1.0, 1.0)


def train(expression, batch, steps, seed):
    """One model trained ``steps`` Adam steps on ``batch`` with ``Objective(expression)``; returns (model, seconds)."""
    torch.manual_seed(seed)
    model = SmallAutoencoder()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = Objective(expression)
    start = time.perf_counter()
    for _ in range(steps):
        optimiser.zero_grad()
        loss_fn(model(batch), batch).backward()
        optimiser.step()
    return model, time.perf_counter() - start


def measure(model, batch):
    """{column: value} of the trained model: E_PL and the unit-weight subband SFLs, one per σ."""
    with torch.no_grad():
        recon = model(batch)
    row = {"E_PL": float(Objective("1*pl")(recon, batch))}
    for sigma in PAPER_SIGMAS:
        row[f"sfl_{sigma:g}"] = float(Objective(f"1*sfl(sigmas={sigma:g},weights=1)")(recon, batch))
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python validation/torch_example.py", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the table as JSON here")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.size < 16 or args.size % 2:
        parser.error("--steps must be >= 1 and --size an even number >= 16")
    batch = demo_batch(args.size)
    rows = {}
    for expression in ("pl", "pl+sfl"):
        model, seconds = train(expression, batch, args.steps, args.seed)
        rows[expression] = {**measure(model, batch), "seconds": round(seconds, 1)}
    columns = ["E_PL"] + [f"sfl_{s:g}" for s in PAPER_SIGMAS]
    print(f"{len(batch)} demo images at {args.size}x{args.size} px, {args.steps} Adam steps, seed {args.seed}")
    print("| trained with | " + " | ".join(columns) + " | seconds |")
    print("|---|" + "---:|" * (len(columns) + 1))
    for expression, row in rows.items():
        print(f"| {expression} | " + " | ".join(f"{row[c]:.3e}" for c in columns) + f" | {row['seconds']} |")
    ratios = {c: rows["pl+sfl"][c] / rows["pl"][c] for c in columns}
    print("| pl+sfl / pl | " + " | ".join(f"{ratios[c]:.3f}" for c in columns) + " | |")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"steps": args.steps, "size": args.size, "seed": args.seed, "rows": rows,
                       "ratios": ratios}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
