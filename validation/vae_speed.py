"""The β-VAE's small training step against PyTorch's: the table of docs/vae.md ("Speed of a small step").

Run from the repository root after ``pip install ".[torch]"``::

    python validation/vae_speed.py                       # writes validation/results/vae_speed/
    python validation/vae_speed.py --repeat 9 --out DIR

For each objective (the authors' ``500*ssim+0.00015*stft`` and ``2*pl``), batch size (5, 32) and thread
setting (the default: every CPU; and one thread, ``OMP_NUM_THREADS=1``), it runs
``sflnet bench --model vae --compare-torch --json`` in a fresh process: rounds of sflnet steps, each
followed by a round of the same steps in PyTorch (``sflnet.bench.torch_vae``), on the built-in
training digits, float32, the authors' network (linear output, TensorFlow 'same' padding). A round
is about 320 digits (64 steps of 5, 10 of 32); the figures are medians over ``--repeat`` rounds, in
milliseconds per step, and sflnet / PyTorch from the same run. ``table.md`` and ``bench.json`` are
written to the results folder.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys

from sflnet.errors import SflnetError, run_script
from sflnet.io.atomic import write_text_atomic

REPO = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "validation" / "results" / "vae_speed"
OBJECTIVES = ("500*ssim+0.00015*stft", "2*pl")
BATCHES = (5, 32)
THREADS = ("default", "1")
DIGITS_PER_ROUND = 320


def bench(loss, batch, threads, repeat):
    """One ``sflnet bench --model vae --compare-torch --json`` in a child process; its JSON result."""
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    env.pop("OPENBLAS_NUM_THREADS", None)
    if threads != "default":
        env["OMP_NUM_THREADS"] = threads
    command = [sys.executable, "-m", "sflnet_cli.main", "bench", "--model", "vae", "--device", "cpu",
               "--loss", loss, "--batch-size", str(batch), "--steps", str(max(1, DIGITS_PER_ROUND // batch)),
               "--repeat", str(repeat), "--compare-torch", "--json"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SflnetError(f"sflnet bench failed ({done.returncode}) for {loss}, batch {batch}, threads {threads}: {last}")
    return json.loads(done.stdout)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    parser.add_argument("--repeat", type=int, default=7, help="timed rounds per configuration (median)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        raise SflnetError(f"--repeat must be >= 1, got {args.repeat}")
    results = []
    for loss in OBJECTIVES:
        for batch in BATCHES:
            for threads in THREADS:
                result = bench(loss, batch, threads, args.repeat)
                result["threads_setting"] = threads
                results.append(result)
                print(f"{loss:24s} batch {batch:2d} threads {threads:7s}: sflnet {1e3 * result['median_step']:6.2f} ms, "
                      f"torch {1e3 * result['torch_median_step']:6.2f} ms, ratio {result['ratio']:.3f}", flush=True)
    machine = results[0]["machine"]
    lines = [f"VAE1 training step (authors' network), float32, {machine['cpu']}, {machine['cores']} cores; "
             f"torch {results[0]['torch']['version']}; median of {args.repeat} rounds of ~{DIGITS_PER_ROUND} digits, "
             f"ms per step; sflnet and PyTorch alternate round by round in one run.", "",
             "| objective | batch | threads | sflnet (ms) | PyTorch (ms) | sflnet / PyTorch |",
             "|---|---:|---|---:|---:|---:|"]
    for r in results:
        lines.append(f"| `{r['loss']}` | {r['batch_size']} | {r['threads_setting']} ({r['threads']} kernel, "
                     f"torch {r['torch']['threads']}) | {1e3 * r['median_step']:.2f} | "
                     f"{1e3 * r['torch_median_step']:.2f} | {r['ratio']:.3f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "table.md", "\n".join(lines) + "\n", what="table")
    write_text_atomic(args.out / "bench.json", json.dumps(results, indent=1) + "\n", what="results")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
