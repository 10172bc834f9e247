"""Compare reconstruction losses on the same network: pl, pl+sfl (the paper), l1, ssim, fft and stft.

Run from the repository root after ``pip install .``::

    python validation/compare_losses.py            # 70 Willow images, 64 px, 1000 epochs per objective
    python validation/compare_losses.py --quick    # 12 Willow images, 32 px, 150 epochs (a few minutes)

What it does, using only the public ``sflnet`` API:

1. Loads the Willow images (default ``../shared/data/willow`` next to the
   repository, without the ``winebottle*`` folders: 70 images), longer side
   ``--size`` pixels.
2. Chooses the weight W of each added frequency term so that the term starts
   at the size of the pixel loss: with the shared initial weights (seed 0),
   ``W_t = E_PL / E_t`` rounded to two significant digits. The stft term's
   gradient is then ~55× the pixel loss's (its phase derivative grows like
   1/|F| on weak bins) and ``pl+W*stft`` collapses under the paper's SGD
   (lr 0.02), so the stft term is also run with G, the weight that matches
   the *gradient* norms at the start: ``G = W · |∇E_PL| / |∇(W E_stft)|``. The
   weights are written to ``weights.json`` and reused when the comparison is
   resumed. A run that diverges or collapses is recorded as such
   (``runs/<name>/outcome.json``) and measured at its last good checkpoint.
3. Trains the Table 1 CAE once per objective (:data:`OBJECTIVES`), all from the
   same initial weights, full batch, momentum SGD (lr 0.02, momentum 0.5), with
   ``sflnet.training.run.run_training``: each run is an ordinary run folder
   ``runs/<name>/`` (config.json, history.csv, checkpoint.npz, curves.png). An
   interrupted comparison continues exactly where it stopped when started
   again with the same options: finished runs are skipped, the others resume.
4. Measures every final checkpoint with every yardstick: PSNR, SSIM, each
   unit-weight subband SFL, E_PL, l1 and the unit-weight fft and stft
   distances (``sflnet evaluate --loss ...`` computes the same numbers), and
   the median seconds per epoch of its run.
5. Times each loss alone (forward + backward on the 70 reconstructions) against
   the autoencoder alone (forward + backward + update, pixel loss only).
6. Writes ``table.md``, ``table.json`` and ``reconstructions.png`` (originals and
   every objective's reconstruction, with close-ups).

Only the files named above (and the run folders) are written in ``--out``.

The run folders are kept portable: where the data lies beside the repository (the
default), config.json and the checkpoints record the data folder relative to the
repository root (``../shared/data/willow``), and runs are trained and resumed from
the repository root, so a clone with the data beside it can resume or evaluate them.
"""

import argparse
import json
import math
import os
import pathlib
import sys
import time

import numpy as np

from sflnet import SflnetError, figures
from sflnet.backend import device_name, select_device, synchronize, to_device, to_host
from sflnet.bench import cae_epoch, group_by_shape, make_model
from sflnet.io.checkpoint import load_checkpoint, save_checkpoint, write_text_atomic
from sflnet.io.images import load_dataset
from sflnet.losses import LossSettings, make_loss
from sflnet.models.cae import Autoencoder, init_params
from sflnet.training.callbacks import Reporter
from sflnet.training.config import TrainOptions
from sflnet.training.evaluation import evaluate_model, model_from_checkpoint
from sflnet.training.history import read_history
from sflnet.training.run import run_training
from sflnet.training.run_folder import CHECKPOINT_FILE
from sflnet.errors import run_script

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared/data/willow"
DEFAULT_EXCLUDE = ("winebottle*",)

# name (run folder) → expression; "W" stands for the weight chosen in step 2 for that term, "G" for the
# weight that instead matches the size of the term's initial *gradient* to the pixel loss's (see below).
OBJECTIVES = {
    "pl": "pl",
    "pl_sfl": "pl+sfl",
    "l1": "l1",
    "ssim": "ssim",
    "pl_fft": "pl+W*fft",
    "pl_stft": "pl+W*stft",
    "pl_stft_g": "pl+G*stft",
    "ssim_stft_g": "ssim+G*stft",
    "ssim_stft": "ssim+W*stft",
}
SCALED_TERMS = ("fft", "stft")
YARDSTICK = "pl+sfl+l1+ssim+fft+stft"   # every loss at unit weight (E_SFL keeps w_SFL = 100, 10, 10)
FULL = {"size": 64, "epochs": 1000, "images": None, "out": "validation/results/losses"}
QUICK = {"size": 32, "epochs": 150, "images": 12, "out": "validation/results/losses_quick"}
N_SHOWN = 3
COST_REPEATS = 5


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python validation/compare_losses.py",
        description="Train the Table 1 CAE with pl, pl+sfl, l1, ssim, pl+W*fft, pl+W*stft and ssim+W*stft from "
                    "the same initial weights, and judge every result by every loss.")
    parser.add_argument("--data", default=None, help=f"folder with the Willow images (default: {DEFAULT_DATA})")
    parser.add_argument("--exclude", action="append", default=None, metavar="GLOB",
                        help="leave out matching folders/files (repeatable; default: 'winebottle*', giving 70 images)")
    parser.add_argument("--size", type=int, default=None, help="longer image side in pixels (default 64; 32 quick)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per objective (default 1000; 150 quick)")
    parser.add_argument("--images", type=int, default=None,
                        help="use only the first N images in name order (default all; 12 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a small preset that runs in a few minutes")
    parser.add_argument("--only", default=None, metavar="NAMES",
                        help=f"comma-separated subset of the objectives {', '.join(OBJECTIVES)} (default all)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "gpu"))
    parser.add_argument("--out", default=None, help="output folder (default validation/results/losses[_quick])")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shared initial weights")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for key in ("size", "epochs", "images"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    args.out = pathlib.Path(args.out) if args.out else REPO_ROOT / preset["out"]
    args.data = pathlib.Path(args.data) if args.data else DEFAULT_DATA
    if args.exclude is None:
        args.exclude = list(DEFAULT_EXCLUDE)
    names = list(OBJECTIVES)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in OBJECTIVES]
        if unknown:
            raise SflnetError(f"--only: unknown objective(s) {', '.join(unknown)}; choose from {', '.join(OBJECTIVES)}")
    args.names = names
    if args.epochs < 1 or args.size < 16:
        raise SflnetError("--epochs must be >= 1 and --size >= 16 (the stft window is 16 px)")
    return args


def two_digits(x):
    """``x`` rounded to two significant digits (0.000123456 → 0.00012)."""
    if x == 0 or not math.isfinite(x):
        raise SflnetError(f"cannot scale a term whose initial value is {x}")
    return float(f"{x:.2g}")


def choose_weights(images, xp, seed, path):
    """{term: W} with W·E_term(θ0) ≈ E_PL(θ0); read from ``path`` if it exists (a resumed comparison)."""
    if path.exists():
        return json.loads(path.read_text())["weights"]
    params = init_params(seed, dtype=images[0].dtype, xp=xp)
    result = Autoencoder(params, loss="pl+" + "+".join(SCALED_TERMS)).loss_and_grads(images, compute_grads=False)
    initial = {name: result.terms[name] for name in ("pl", *SCALED_TERMS)}
    weights = {name: two_digits(initial["pl"] / initial[name]) for name in SCALED_TERMS}
    # For the reader: the size of each weighted term's gradient at the start, next to the pixel loss's.
    norms = {}
    for name, expr in (("pl", "pl"), *((t, f"{weights[t]!r}*{t}") for t in SCALED_TERMS)):
        grads = Autoencoder(params, loss=expr).loss_and_grads(images).grads
        norms[expr] = math.sqrt(sum(float((to_host(g).astype(np.float64) ** 2).sum()) for g in grads.values()))
    path.write_text(json.dumps({"rule": "W = E_PL / E_term at the shared initial weights, 2 significant digits",
                                "initial values": initial, "weights": weights,
                                "initial gradient norms |dE/dtheta|": norms}, indent=2) + "\n")
    return weights


def gradient_matched(path):
    """G for stft: ``W · |∇E_PL| / |∇(W·E_stft)|`` from the norms recorded in weights.json, 2 digits."""
    chosen = json.loads(path.read_text())
    norms, w = chosen["initial gradient norms |dE/dtheta|"], chosen["weights"]["stft"]
    return two_digits(w * norms["pl"] / norms[f"{w!r}*stft"])


def expression(name, weights):
    text = OBJECTIVES[name]
    for term in SCALED_TERMS:
        text = text.replace(f"W*{term}", f"{weights[term]!r}*{term}")
    return text.replace("G*stft", f"{weights['stft_gradient_matched']!r}*stft")


class _Quiet(Reporter):
    def __init__(self, label, every):
        self.label, self.every, self.start_time = label, every, time.perf_counter()

    def epoch(self, row):
        if row["epoch"] % self.every == 0:
            elapsed = time.perf_counter() - self.start_time
            print(f"[{self.label}] epoch {row['epoch']}  E {row['E']:.4e}  E_PL {row['E_PL']:.4e}  "
                  f"({elapsed:.0f}s)", flush=True)

    def note(self, message):
        print(f"[{self.label}] {message}", flush=True)


def portable_path(path):
    """``path`` relative to the repository root when it lies beside it (``../shared/...``), else unchanged."""
    absolute = pathlib.Path(path).resolve()
    if REPO_ROOT.parent in absolute.parents:
        return os.path.relpath(absolute, REPO_ROOT)
    return str(path)


def make_portable(folder):
    """Rewrite absolute data paths in a run folder's config.json and checkpoint.npz as :func:`portable_path`.

    Runs trained before the script recorded relative paths are converted once; the
    stored values are otherwise unchanged (same data, same fingerprint).
    """
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    data = config["options"].get("data")
    if not data or all(not os.path.isabs(p) for p in data):
        return
    portable = [portable_path(p) for p in data]
    config["options"]["data"] = portable
    config["data"]["source"] = ", ".join(portable)
    write_text_atomic(config_path, json.dumps(config, indent=2, allow_nan=False) + "\n", what="config")
    for path in [folder / CHECKPOINT_FILE, *sorted((folder / "checkpoints").glob("*.npz"))]:
        ckpt = load_checkpoint(path)
        ckpt.meta["config"]["data"] = portable
        save_checkpoint(path, ckpt.params, ckpt.state, ckpt.meta)


def train_all(args, weights, device):
    """Train (or resume, or skip when complete) one run folder per objective; returns {name: folder}."""
    folders = {}
    for name in args.names:
        folder = args.out / "runs" / name
        folders[name] = folder
        options = TrainOptions(data=(portable_path(args.data),), exclude=tuple(args.exclude), size=args.size,
                               loss=expression(name, weights), epochs=args.epochs, seed=args.seed,
                               device=device, snapshot_every=0,
                               include=tuple(args.include_names or ()))
        train_or_resume(folder, options, name, "python validation/compare_losses.py " + " ".join(args.argv))
    return folders


def train_or_resume(folder, options, name, command):
    """Train one run folder to ``options.epochs``: skipped when complete or recorded as failed
    (outcome.json), resumed when it has a checkpoint, else started; a run that diverges or collapses
    gets its outcome.json (:func:`record_failure`). The runs of :mod:`weight_sweep` go through here too."""
    reporter = _Quiet(name, max(1, options.epochs // 10))
    outcome = folder / "outcome.json"
    if outcome.exists():
        print(f"[{name}] {json.loads(outcome.read_text())['status']} earlier: not retried", flush=True)
        return
    if (folder / CHECKPOINT_FILE).exists():
        make_portable(folder)
        done = load_checkpoint(folder / CHECKPOINT_FILE).epoch
        if done >= options.epochs:
            print(f"[{name}] complete ({done} epochs)", flush=True)
            return
        print(f"[{name}] resuming from epoch {done}", flush=True)
    try:
        if (folder / CHECKPOINT_FILE).exists():
            result = run_training(out=folder, resume=True, overrides={"epochs": options.epochs}, reporter=reporter)
        else:
            print(f"[{name}] training {options.loss} for {options.epochs} epochs", flush=True)
            result = run_training(options, folder, overwrite=folder.exists(), reporter=reporter, command=command)
    except SflnetError as exc:
        if "diverged" not in str(exc):
            raise
        record_failure(folder, str(exc))
        return
    if result.status != "completed":
        raise SflnetError(f"the {name} run stopped ({result.status}) at epoch {result.epoch}; "
                          f"start the script again to resume it")
    make_portable(folder)


def record_failure(folder, message):
    """outcome.json for a run that diverged or collapsed; it keeps its last good checkpoint."""
    epoch = load_checkpoint(folder / CHECKPOINT_FILE).epoch
    status = f"collapsed after epoch {epoch}" if "collapsed" in message else f"diverged after epoch {epoch}"
    print(f"[{folder.name}] {status}: {message}", flush=True)
    make_portable(folder)
    (folder / "outcome.json").write_text(json.dumps({"status": status, "epoch": epoch,
                                                     "message": message.replace(str(REPO_ROOT), ".")},
                                                    indent=2) + "\n")


def time_median(fn, repeats, xp):
    times = []
    for _ in range(repeats):
        synchronize(xp)
        start = time.perf_counter()
        fn()
        synchronize(xp)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def loss_costs(images, xp, seed, settings):
    """Seconds per epoch of each loss alone (forward + backward on fixed reconstructions) and of the CAE alone."""
    groups = group_by_shape([to_host(im) for im in images], xp, images[0].dtype)
    params = init_params(seed, dtype=images[0].dtype, xp=xp)
    model, optimizer = make_model(params, "pl", 1 << 40)
    recons = [model.forward(g) for g in groups]
    count = sum(g.shape[0] for g in groups)
    costs = {"cae": time_median(lambda: cae_epoch(model, optimizer, groups), COST_REPEATS, xp)}
    for name in ("pl", "sfl", "l1", "ssim", "fft", "stft"):
        loss = make_loss(name, settings)

        def one_epoch(loss=loss):
            loss.begin_batch()
            for recon, group in zip(recons, groups):
                loss.forward(recon, group, count)
                loss.backward()
        one_epoch()   # warm-up
        costs[name] = time_median(one_epoch, COST_REPEATS, xp)
    return costs


def measure(folders, images, xp):
    """Every yardstick on every final checkpoint, plus the run's median seconds per epoch."""
    table = {}
    for name, folder in folders.items():
        ckpt = load_checkpoint(folder / CHECKPOINT_FILE)
        model = model_from_checkpoint(ckpt, xp, loss=YARDSTICK)
        report, _ = evaluate_model(model, images)
        rows = read_history(folder / "history.csv")
        seconds = [row["seconds"] for row in rows]
        table[name] = {
            "objective": ckpt.config["loss"], "epochs": ckpt.epoch,
            "psnr": report["psnr"], "ssim": report["ssim"],
            "sfl": report["sfl"], "E_PL": report["terms"]["pl"], "l1": report["terms"]["l1"],
            "fft": report["terms"]["fft"], "stft": report["terms"]["stft"],
            "seconds_per_epoch": float(np.median(seconds)),
            "status": (json.loads((folder / "outcome.json").read_text())["status"]
                       if (folder / "outcome.json").exists() else "completed"),
            "recons": [to_host(r) for r in model.reconstruct(images)],
        }
    return table


def shown_images(names, count=N_SHOWN):
    """Indices of the first image of each of the first ``count`` categories (top folder up to "(")."""
    seen, chosen = set(), []
    for index, name in enumerate(names):
        category = name.split("/")[0].split("(")[0]
        if category not in seen:
            seen.add(category)
            chosen.append(index)
    return (chosen + [i for i in range(len(names)) if i not in chosen])[:count]


def write_outputs(args, table, costs, weights, settings_text, host_images, names):
    out = args.out
    shown = shown_images(names)
    rows = [(table[name]["objective"] + ("" if table[name]["status"] == "completed" else " †"),
             [table[name]["recons"][i] for i in shown]) for name in table]
    figures.plot_reconstruction_grid([host_images[i] for i in shown], rows, out / "reconstructions.png")
    sigmas = list(next(iter(table.values()))["sfl"])
    clean = {name: {k: v for k, v in entry.items() if k != "recons"} for name, entry in table.items()}
    (out / "table.json").write_text(json.dumps({"settings": settings_text, "weights": weights,
                                                "final": clean, "seconds_per_epoch_alone": costs},
                                               indent=2) + "\n")
    head = ["objective", "PSNR dB", "SSIM", *(f"SFL σ={s} ×1e-3" for s in sigmas), "E_PL ×1e-3", "l1 ×1e-2",
            "fft ×1e-3", "stft", "s/epoch"]
    lines = [f"# Loss comparison ({settings_text['preset']})", "",
             f"{settings_text['images']} Willow images, longer side {settings_text['size']} px, "
             f"{settings_text['epochs']} full-batch epochs per objective, momentum SGD (lr 0.02, momentum 0.5), "
             f"all from the same initial weights (seed {settings_text['seed']}), {settings_text['device']}.",
             f"Term weights W = E_PL / E_term at the initial weights: fft {weights['fft']:g}, "
             f"stft {weights['stft']:g}; G = {weights['stft_gradient_matched']:g} matches the initial gradient "
             f"norm of the stft term to the pixel loss's instead.",
             "Every column is measured on the final parameters with every loss at unit weight (SSIM and PSNR "
             "on the [-1, 1] images, data range 2; SSIM = 1 − the ssim loss). Best value per column in bold. "
             "A collapsed run (†) is measured at its last good checkpoint. s/epoch: the median epoch of the "
             "run itself (runs shared the 2 cores, so compare the 'alone' table below instead).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    columns = [("psnr", max, 1.0, ".2f"), ("ssim", max, 1.0, ".3f"),
               *((f"sfl:{s}", min, 1e3, ".3g") for s in sigmas), ("E_PL", min, 1e3, ".3g"),
               ("l1", min, 1e2, ".3g"), ("fft", min, 1e3, ".3g"), ("stft", min, 1.0, ".4g"),
               ("seconds_per_epoch", None, 1.0, ".3f")]

    def value(entry, key):
        return entry["sfl"][key[4:]] if key.startswith("sfl:") else entry[key]
    best = {key: pick(value(e, key) for e in table.values()) for key, pick, _, _ in columns if pick}
    for name, entry in table.items():
        cells = [f"`{entry['objective']}`" + ("" if entry["status"] == "completed" else f" ({entry['status']})")]
        for key, pick, scale, fmt in columns:
            v = value(entry, key)
            text = format(v * scale, fmt)
            cells.append(f"**{text}**" if pick and v == best[key] else text)
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Seconds per epoch of each piece alone (median of "
              f"{COST_REPEATS}; forward + backward over all images; the CAE includes its update):", "",
              "| piece | s/epoch | × CAE |", "|---|---|---|"]
    for name, seconds in costs.items():
        lines.append(f"| {name} | {seconds:.4f} | {seconds / costs['cae']:.2f} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")


def main(argv=None):
    args = parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.out = args.out.resolve()
    args.data = args.data.resolve()
    os.chdir(REPO_ROOT)   # relative data paths in the run folders are relative to the repository root
    wall_start = time.perf_counter()
    xp = select_device(args.device)
    device = "gpu" if xp is not np else "cpu"
    dataset = load_dataset(paths=[args.data], size=args.size, exclude=args.exclude, dtype=np.float32)
    args.include_names = None
    if args.images and args.images < len(dataset.names):
        args.include_names = dataset.names[:args.images]
        dataset = load_dataset(paths=[args.data], size=args.size, include=args.include_names, dtype=np.float32)
    args.out.mkdir(parents=True, exist_ok=True)
    images = [to_device(im, xp) for im in dataset.images]
    host_images = list(dataset.images)
    print(f"{len(images)} images from {args.data}, longer side {args.size} px, {device_name(xp)}", flush=True)
    weights = dict(choose_weights(images, xp, args.seed, args.out / "weights.json"))
    weights["stft_gradient_matched"] = gradient_matched(args.out / "weights.json")
    print(f"term weights: {weights}", flush=True)
    folders = train_all(args, weights, device)
    table = measure(folders, images, xp)
    costs = loss_costs(images, xp, args.seed, LossSettings())
    settings_text = {"preset": "--quick preset" if args.quick else "full preset", "images": len(images),
                     "size": args.size, "epochs": args.epochs, "seed": args.seed, "device": device_name(xp),
                     "data": os.path.relpath(args.data, REPO_ROOT), "exclude": list(args.exclude),
                     "wall time of this invocation (s)": round(time.perf_counter() - wall_start, 1)}
    write_outputs(args, table, costs, weights, settings_text, host_images, dataset.names)
    print(f"wrote table.md, table.json and reconstructions.png to {args.out}", flush=True)


if __name__ == "__main__":
    sys.exit(run_script(main, "Interrupted: start the same command again to resume."))
