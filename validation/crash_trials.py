"""kill -9 trials: crash ``sflnet train`` at random moments, load what is left, resume, compare.

Run from the repository root after ``pip install .``::

    python validation/crash_trials.py                 # 10 trials, seed 0
    python validation/crash_trials.py --trials 20 --seed 3 --json trials.json

What it does:

1. Writes two tiny random RGB images (6x7 and 5x5 pixels) to a scratch folder,
   so one epoch takes a few milliseconds and the run is dominated by the
   checkpoint written (atomically, with fsync) after every epoch.
2. Runs ``sflnet train`` once without interruption (the reference) in a
   subprocess and measures how long its training phase lasts (from its
   epoch-0 checkpoint to its last history row).
3. For each trial: draws a delay uniformly from that phase (seeded),
   starts the same command in a subprocess, waits for its epoch-0 checkpoint,
   sleeps the delay and sends SIGKILL. Then it loads ``checkpoint.npz`` with
   :func:`sflnet.io.checkpoint.load_checkpoint` (it must load and be finite),
   notes the epoch found, the complete history rows, a cut last line and
   leftover temporary files, runs ``sflnet train --resume --out RUN`` to the
   end, and compares ``history.csv`` (without the seconds column) and the
   final parameters and momentum (bit for bit) with the reference.

Prints a Markdown table, one row per trial; exit status 1 if any trial failed.
Run it on a tree nobody is editing: the reference and the resumed runs must
execute the same code for the bit-for-bit comparison to mean anything.
Everything is written to a temporary folder (``--keep`` to keep it).
"""

import argparse
import json
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

from sflnet.io.checkpoint import load_checkpoint
from sflnet.errors import SflnetError, run_script
from sflnet.models.cae import PARAM_NAMES


def sflnet_command():
    exe = pathlib.Path(sys.executable).with_name("sflnet")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "sflnet_cli.main"]


def write_images(folder):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, (h, w) in (("a.png", (6, 7)), ("b.png", (5, 5))):
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(folder / name)


def train_command(images, run, args):
    return sflnet_command() + ["train", "--data", str(images), "--size", "0", "--epochs", str(args.epochs),
                               "--device", "cpu", "--dtype", args.dtype, "--snapshot-every",
                               str(args.snapshot_every), "--out", str(run)]


def wait_for_file(path, process, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not appear (exit status {process.poll()})")
        time.sleep(0.002)


def history_lines(run):
    """(complete data rows without the seconds column, whether the last line was cut)."""
    text = (run / "history.csv").read_text()
    lines = text.splitlines(keepends=True)[1:]
    cut = bool(lines) and not lines[-1].endswith("\n")
    complete = [line.rstrip("\n").rsplit(",", 1)[0] for line in lines if line.endswith("\n")]
    return complete, cut


def state(path):
    loaded = load_checkpoint(path)
    return {n: (loaded.params[n].tobytes(), loaded.velocity[n].tobytes()) for n in PARAM_NAMES}


def reference_run(images, run, args):
    """Run uninterrupted; returns (seconds to the epoch-0 checkpoint, seconds from there to the last
    history row, i.e. the training phase without the final figure drawing)."""
    process = subprocess.Popen(train_command(images, run, args), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    started = time.monotonic()
    wait_for_file(run / "checkpoint.npz", process)
    first_checkpoint = time.monotonic()
    while len(history_lines(run)[0]) < args.epochs and process.poll() is None:
        time.sleep(0.002)
    last_row = time.monotonic()
    if process.wait() != 0:
        raise RuntimeError("the reference run failed")
    return first_checkpoint - started, last_row - first_checkpoint


def trial(images, run, delay, args, reference):
    record = {"delay_s": round(delay, 3)}
    process = subprocess.Popen(train_command(images, run, args), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    wait_for_file(run / "checkpoint.npz", process)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    status = process.wait()
    record["killed"] = status == -signal.SIGKILL
    record["tmp_files_left"] = len(list(run.rglob("*.tmp")))
    try:
        loaded = load_checkpoint(run / "checkpoint.npz")
    except SflnetError as exc:
        record.update(loaded=False, outcome=f"FAILED: checkpoint does not load ({exc})")
        return record
    finite = all(np.isfinite(loaded.params[n]).all() and np.isfinite(loaded.velocity[n]).all()
                 for n in PARAM_NAMES)
    rows, cut = history_lines(run)
    record.update(loaded=True, finite=bool(finite), epoch_found=loaded.epoch, history_rows=len(rows),
                  cut_line=cut)
    resumed = subprocess.run(sflnet_command() + ["train", "--resume", "--out", str(run), "--device", "cpu"],
                             capture_output=True, text=True)
    record["resume_status"] = resumed.returncode
    if resumed.returncode != 0:
        record["outcome"] = f"FAILED: resume exited {resumed.returncode}: {resumed.stderr.strip()[-200:]}"
        return record
    same_history = history_lines(run)[0] == reference["history"]
    same_state = state(run / "checkpoint.npz") == reference["state"]
    record.update(same_history=same_history, bit_identical=same_state)
    ok = finite and same_history and same_state and loaded.epoch <= len(rows)
    record["outcome"] = "ok" if ok else "FAILED: differs from the reference"
    return record


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random delays")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--snapshot-every", type=int, default=5)
    parser.add_argument("--dtype", default="float64", choices=("float32", "float64"))
    parser.add_argument("--json", type=pathlib.Path, default=None, help="also write the records here")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()

    scratch = pathlib.Path(tempfile.mkdtemp(prefix="sflnet-crash-trials-"))
    try:
        images = scratch / "images"
        write_images(images)
        startup, training = reference_run(images, scratch / "reference", args)
        reference = {"history": history_lines(scratch / "reference")[0],
                     "state": state(scratch / "reference" / "checkpoint.npz")}
        print(f"reference: {args.epochs} epochs, {args.dtype}; start-up to epoch-0 checkpoint {startup:.2f} s, "
              f"training {training:.2f} s; delays drawn from [0, {training:.2f}) s after the epoch-0 checkpoint")
        delays = np.random.default_rng(args.seed).uniform(0.0, training, size=args.trials)
        records = []
        print("| trial | delay (s) | killed | epoch in checkpoint | history rows | cut line | .tmp left "
              "| loads, finite | resume | outcome |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for number, delay in enumerate(delays, start=1):
            record = trial(images, scratch / f"trial{number:02d}", float(delay), args, reference)
            record["trial"] = number
            records.append(record)
            print(f"| {number} | {record['delay_s']:.3f} | {'yes' if record['killed'] else 'no (had finished)'} "
                  f"| {record.get('epoch_found', '-')} | {record.get('history_rows', '-')} "
                  f"| {record.get('cut_line', '-')} | {record['tmp_files_left']} "
                  f"| {record.get('loaded') and record.get('finite')} | exit {record.get('resume_status', '-')} "
                  f"| {record['outcome']} |", flush=True)
        if args.json:
            args.json.write_text(json.dumps(records, indent=2) + "\n")
        failed = [r for r in records if r["outcome"] != "ok"]
        print(f"{len(records) - len(failed)}/{len(records)} trials ok")
        return 1 if failed else 0
    finally:
        if args.keep:
            print(f"scratch folder kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(run_script(main))
