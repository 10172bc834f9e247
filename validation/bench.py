"""The benchmark behind ``validation/results/bench_cpu.md`` (thin over :mod:`sflnet.bench`).

Run from the repository root after ``pip install .``::

    python validation/bench.py --out validation/results/bench_cpu.json
    python validation/bench.py --willow ../shared/data/willow --out validation/results/bench_cpu.json

1. Times one full-batch epoch on the built-in demo images (longer side 300,
   float32, CPU), the autoencoder alone, and a per-layer breakdown; with
   PyTorch installed (never a dependency) also the PyTorch reference in NCHW
   and channels-last, in the same run (``--compare-torch``).
2. With ``--willow DIR``: the memory figure for the paper's 70 Willow images
   (``DIR`` without the ``winebottle*`` folders) at 300 px in full batch,
   measured in a fresh process (``sflnet bench --repeat 1``), so its peak RSS
   is that of training alone.

Writes one JSON file (``--out``; an existing file is replaced) and prints the tables.
"""

import argparse
import json
import os
import subprocess
import sys

import sflnet  # noqa: F401,I001  (first: sets the BLAS idle-thread default before NumPy loads OpenBLAS)
import numpy as np

from sflnet import bench
from sflnet.backend import select_device
from sflnet.errors import SflnetError, run_script
from sflnet.io.images import load_dataset


def willow_memory(folder, device):
    """Run ``sflnet bench`` on Willow70 in a child process; returns its JSON result.

    Raises:
        SflnetError: the child failed (its own one-line error is passed on).
    """
    command = [sys.executable, "-m", "sflnet_cli.main", "bench", "--data", str(folder), "--exclude", "winebottle*",
               "--device", device, "--repeat", "1", "--warmup", "0", "--json"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise SflnetError(f"--willow: sflnet bench failed: {lines[-1].removeprefix('Error: ')}")
    return json.loads(done.stdout)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu", "auto"))
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--no-torch", action="store_true", help="do not time the PyTorch reference")
    parser.add_argument("--willow", metavar="DIR", help="Willow folder for the 70-image memory figure")
    parser.add_argument("--out", metavar="FILE.json", help="write all results here")
    args = parser.parse_args(argv)
    if args.willow and not os.path.isdir(args.willow):       # before the demo benchmark, not after
        raise SflnetError(f"--willow {args.willow} is not a folder")

    xp = select_device(args.device)
    images = load_dataset(None, size=300, dtype=np.float32).images
    compare = bench.torch_available() and not args.no_torch
    demo = bench.run_benchmark(images, xp, repeat=args.repeat, compare_torch=compare,
                               log=lambda m: print(m, file=sys.stderr))
    results = {"demo": demo}
    print(bench.format_report(demo))
    if args.willow:
        print("Willow70 (fresh process, 1 epoch):", file=sys.stderr)
        willow = willow_memory(args.willow, args.device)
        willow["data"] = "Willow, without winebottle*"   # not the local path
        results["willow70"] = willow
        print(bench.format_report(willow))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
