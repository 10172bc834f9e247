"""Digest of what sflnet computes, to show that a restructure changed no number.

Run from the repository root after ``pip install ".[mpi]"``::

    python validation/behaviour_digest.py --write validation/results/behaviour/digest.json   # before
    python validation/behaviour_digest.py --check validation/results/behaviour/digest.json   # after

It runs five float64 training runs on the CPU through the command line (the one
interface a restructure keeps), evaluates each final checkpoint with
``sflnet evaluate --grads`` and records a SHA-256 of every number they wrote:

* ``cae_pl_sfl``: the Table 1 autoencoder, ``pl+sfl``, the eight built-in demo photos at
  300 px (mixed sizes, full batch processed in four chunks of at most two images), 5 epochs;
* ``cae_fft_ssim``: ``pl+100*fft+ssim`` on the demo photos at 96 px, 3 epochs;
* ``vae``: Dalal's β-VAE with its default loss on 500 of the built-in digits, 2 epochs;
* ``vae_authors_l2``, ``vae_authors_stft``, ``vae_sfl_ssim``: the authors' network (``--output linear
  --tconv-padding tf-same``) with mini-batches of 5, 32 and 8, trained with ``2*pl``, the default
  objective and ``500*ssim+4.3*sfl``;
* ``mpi2``: ``mpiexec -n 2`` of a ``pl+sfl`` run at 64 px, 3 epochs (skipped with a note when
  ``mpiexec`` or mpi4py is missing);
* ``resumed``: a ``pl+sfl`` run with mini-batches of 3 at 64 px, stopped after 2 epochs and
  resumed to 4.

What is hashed: ``history.csv`` without its ``seconds`` column, and again without the paper's
columns (``history_objective``: what a change of the measured-but-untrained terms keeps); every array of
``checkpoint.npz`` except ``meta`` (the parameters and the optimiser's state); the
checkpoint's epoch, step count and shuffling RNG state; every array of the gradient file;
the numbers of ``evaluate --json``. Equal digests mean equal bytes: bit for bit.
``--check`` prints each digest that differs and exits with status 1 if any does.
"""

import argparse
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from sflnet.errors import SflnetError, run_script

RUNS = {
    "cae_pl_sfl": ["--loss", "pl+sfl", "--epochs", "5", "--size", "300"],
    "cae_fft_ssim": ["--loss", "pl+100*fft+ssim", "--epochs", "3", "--size", "96"],
    "vae": ["--model", "vae", "--epochs", "2", "--train-images", "500"],
    "vae_authors_l2": ["--model", "vae", "--epochs", "2", "--train-images", "200", "--batch-size", "5", "--loss", "2*pl",
                       "--output", "linear", "--tconv-padding", "tf-same"],
    "vae_authors_stft": ["--model", "vae", "--epochs", "2", "--train-images", "300", "--batch-size", "32",
                         "--output", "linear", "--tconv-padding", "tf-same"],
    "vae_sfl_ssim": ["--model", "vae", "--epochs", "1", "--train-images", "100", "--batch-size", "8",
                     "--loss", "500*ssim+4.3*sfl", "--output", "linear", "--tconv-padding", "tf-same"],
    "mpi2": ["--loss", "pl+sfl", "--epochs", "3", "--size", "64"],
    "resumed": ["--loss", "pl+sfl", "--epochs", "4", "--size", "64", "--batch-size", "3"],
}
COMMON = ["--dtype", "float64", "--device", "cpu", "--seed", "3", "--snapshot-every", "0"]


def _sha(data):
    return hashlib.sha256(data).hexdigest()


def _array_digest(array):
    array = np.ascontiguousarray(array)
    return _sha(str(array.dtype).encode() + str(array.shape).encode() + array.tobytes())


#: The paper's columns, which a mini-batch VAE run measures only when its objective trains them.
PAPER_COLUMNS = ("E_PL", "E_SFL")


def _history_digest(path, drop_paper=False):
    """SHA-256 of history.csv without its ``seconds`` column (and, with ``drop_paper``, without the
    paper's columns ``E_PL``, ``E_SFL``, ``sfl_<σ>``: the digest of what the objective itself logs)."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    keep = [i for i, name in enumerate(rows[0]) if name != "seconds"
            and not (drop_paper and (name in PAPER_COLUMNS or name.startswith("sfl_")))]
    text = "\n".join(",".join(row[i] for i in keep) for row in rows)
    return _sha(text.encode())


def _npz_digests(path, prefix):
    out = {}
    with np.load(path, allow_pickle=False) as arrays:
        for key in sorted(arrays.files):
            if key == "meta":
                meta = json.loads(str(arrays[key].item()))
                for name in ("epoch", "rng_state", "optimizer"):
                    if name in meta:
                        out[f"{prefix}meta.{name}"] = _sha(json.dumps(meta[name], sort_keys=True).encode())
                continue
            out[f"{prefix}{key}"] = _array_digest(arrays[key])
    return out


def _json_digest(text):
    value = json.loads(text)
    return _sha(json.dumps(value, sort_keys=True).encode())


def _sflnet(args, env, prefix=()):
    command = [*prefix, sys.executable, "-m", "sflnet_cli.main", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-2000:]}")
    return done.stdout


def _mpiexec():
    found = shutil.which("mpiexec") or shutil.which("mpiexec", path=os.path.dirname(sys.executable))
    try:
        import mpi4py  # noqa: F401, PLC0415
    except ImportError:
        return None
    return found


def digest(names, scratch):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MPLBACKEND="Agg")
    result = {}
    for name in names:
        out = os.path.join(scratch, name)
        args = ["train", *RUNS[name], *COMMON, "--out", out]
        if name == "mpi2":
            mpiexec = _mpiexec()
            if mpiexec is None:
                result[name] = "skipped: no mpiexec/mpi4py"
                continue
            _sflnet(args, env, prefix=(mpiexec, "-n", "2"))
        elif name == "resumed":
            first = list(args)
            first[first.index("--epochs") + 1] = "2"
            _sflnet(first, env)
            _sflnet(["train", "--resume", "--out", out, "--epochs", "4"], env)
        else:
            _sflnet(args, env)
        grads = os.path.join(scratch, f"{name}_grads.npz")
        checkpoint = os.path.join(out, "checkpoint.npz")
        report = _sflnet(["evaluate", checkpoint, "--grads", grads, "--json", "--device", "cpu"], env)
        history = os.path.join(out, "history.csv")
        entry = {"history": _history_digest(history), "history_objective": _history_digest(history, drop_paper=True)}
        entry.update(_npz_digests(checkpoint, "checkpoint."))
        entry.update(_npz_digests(grads, "grads."))
        entry["evaluate"] = _json_digest(report)
        result[name] = entry
        print(f"{name}: {len(entry)} digests", flush=True)
    return result


def _read_digests(path):
    """The digests written by ``--write`` to ``path``; SflnetError if it cannot be read."""
    try:
        with open(path, encoding="utf-8") as handle:
            found = json.load(handle)
    except (OSError, ValueError) as exc:
        raise SflnetError(f"--check {path}: cannot read digests ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(found, dict):
        raise SflnetError(f"--check {path}: not a digest file (a JSON object of runs)")
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", metavar="FILE", help="write the digests to FILE")
    group.add_argument("--check", metavar="FILE", help="compare with the digests in FILE")
    parser.add_argument("--only", nargs="+", choices=sorted(RUNS), help="digest these runs only")
    args = parser.parse_args(argv)
    names = args.only or list(RUNS)
    want = _read_digests(args.check) if args.check else None      # before the runs, which take minutes
    scratch = tempfile.mkdtemp(prefix="sflnet-digest-")
    try:
        got = digest(names, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.write:
        os.makedirs(os.path.dirname(os.path.abspath(args.write)), exist_ok=True)
        with open(args.write, "w", encoding="utf-8") as handle:
            json.dump(got, handle, indent=1, sort_keys=True)
            handle.write("\n")
        print(f"wrote {args.write}")
        return 0
    differ = 0
    for name in names:
        if want.get(name) == got[name]:
            print(f"{name}: identical ({len(got[name]) if isinstance(got[name], dict) else got[name]})")
            continue
        if not isinstance(want.get(name), dict) or not isinstance(got[name], dict):
            print(f"{name}: expected {want.get(name)!r}, got {got[name]!r}")
            differ += 1
            continue
        for key in sorted(set(want[name]) | set(got[name])):
            if want[name].get(key) != got[name].get(key):
                print(f"{name}: {key} differs")
                differ += 1
    print("bit-identical" if not differ else f"{differ} digests differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(run_script(main))
