"""How to weight a frequency term against the pixel loss: a sweep of ``pl+W*term`` for sfl, fft and stft.

Run from the repository root after ``pip install .``::

    python validation/weight_sweep.py           # 70 Willow images, 64 px, 150 epochs per run
    python validation/weight_sweep.py --quick   # the built-in demo images, 32 px, 20 epochs (about a minute)

What it does, with the public ``sflnet`` API:

1. Calibrates ``pl+sfl+fft+stft`` at the shared initial weights (seed 0) on the training images, as
   ``sflnet calibrate --loss pl+sfl+fft+stft --seed 0`` does (:mod:`sflnet.training.calibrate`):
   for each frequency term the value-balancing weight V (``V·E_term = E_PL``) and the
   gradient-balancing weight G (``G·‖∂E_term/∂θ‖ = ‖∂E_PL/∂θ‖``). They are written to
   ``weights.json`` and reused when the sweep is resumed.
2. Trains the Table 1 CAE (full batch, momentum SGD, lr 0.02, momentum 0.5, all from the same
   initial weights) with ``pl`` and, for each term, ``pl+W*term`` with W = V × 0.1, 1, 10, 100 and
   W = G. Each run is an ordinary run folder ``runs/<name>/``, trained, resumed or skipped through
   :func:`compare_losses.train_or_resume`: start the script again to continue an interrupted sweep.
   A run that diverges or collapses is recorded (``outcome.json``) and measured at its last good
   checkpoint.
3. Measures every final checkpoint with every yardstick at unit weight (PSNR, SSIM, the subband
   SFLs, E_PL, fft, stft: :func:`compare_losses.measure`) and writes ``table.json``, ``table.md``
   and ``weights.png`` (PSNR and the σ = 0.8 SFL against W, log x, one curve per term) to ``--out``.
"""

import argparse
import json
import math
import os
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from compare_losses import (DEFAULT_DATA, DEFAULT_EXCLUDE, REPO_ROOT, measure, portable_path,  # noqa: E402
                            train_or_resume)
from sflnet import SflnetError  # noqa: E402
from sflnet.backend import device_name, select_device, to_device  # noqa: E402
from sflnet.io.checkpoint import load_checkpoint  # noqa: E402
from sflnet.training.calibrate import calibrate, initial_setup, suggestions  # noqa: E402
from sflnet.training.config import TrainOptions  # noqa: E402
from sflnet.training.data import check_image_sizes, load_training_data  # noqa: E402
from sflnet.training.run_folder import CHECKPOINT_FILE  # noqa: E402
from sflnet.errors import run_script  # noqa: E402

TERMS = ("sfl", "fft", "stft")
MULTIPLES = (0.1, 1.0, 10.0, 100.0)
FULL = {"size": 64, "epochs": 150, "out": "validation/results/weights"}
QUICK = {"size": 32, "epochs": 20, "out": "validation/results/weights_quick"}
FIGURE = "weights.png"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python validation/weight_sweep.py",
        description="Train the Table 1 CAE with pl and pl+W*term (term sfl, fft, stft) for W = the calibrated "
                    "value-balancing weight × 0.1, 1, 10, 100 and the gradient-balancing weight, from the same "
                    "initial weights; table and figure of the results.")
    parser.add_argument("--data", default=None,
                        help=f"image folder (default: {DEFAULT_DATA}; --quick: the built-in demo images)")
    parser.add_argument("--exclude", action="append", default=None, metavar="GLOB",
                        help="leave out matching folders/files (repeatable; default 'winebottle*': 70 Willow "
                             "images; none with --quick)")
    parser.add_argument("--size", type=int, default=None, help="longer image side in pixels (default 64; 32 quick)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default 150; 20 quick)")
    parser.add_argument("--quick", action="store_true", help="the demo images, small and short (about a minute)")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "gpu"))
    parser.add_argument("--seed", type=int, default=0, help="seed of the shared initial weights")
    parser.add_argument("--out", default=None, help="output folder (default validation/results/weights[_quick])")
    parser.add_argument("--table-only", action="store_true",
                        help="train nothing: table and figure of the runs finished so far (the others are listed "
                             "as pending)")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for key in ("size", "epochs"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    args.out = (pathlib.Path(args.out) if args.out else REPO_ROOT / preset["out"]).resolve()
    if args.data is None and not args.quick:
        args.data = DEFAULT_DATA
    args.data = pathlib.Path(args.data).resolve() if args.data is not None else None
    if args.exclude is None:
        args.exclude = [] if args.quick and args.data is None else list(DEFAULT_EXCLUDE)
    if args.epochs < 1 or args.size < 16:
        raise SflnetError("--epochs must be >= 1 and --size >= 16 (the stft window is 16 px)")
    return args


def run_names():
    """The runs, most telling first (so that a sweep cut short has its main comparisons):
    {name: (term or None, multiple of V or "G")}."""
    names = {"pl": (None, None)}
    for multiple in (1.0, 10.0, "G", 100.0, 0.1):
        for term in TERMS:
            names[f"{term}_{'g' if multiple == 'G' else f'v{multiple:g}'}"] = (term, multiple)
    return names


def choose_weights(args, options, xp, path):
    """{"value": {term: V}, "gradient": {term: G}, ...} from :func:`sflnet.training.calibrate.calibrate`
    at the initial weights; read back from ``path`` when it exists (a resumed sweep)."""
    if path.exists():
        return json.loads(path.read_text())
    build, dataset = initial_setup(options, xp)
    images = [to_device(image, xp) for image in dataset.images]
    expression = "pl+" + "+".join(TERMS)
    check_image_sizes(expression, options.loss_settings, dataset)
    calibration = calibrate(build, expression, images)
    suggested = suggestions(calibration, reference="pl")
    chosen = {"calibrated": expression, "reference": "pl", "images": len(images),
              "terms": calibration.to_json(),
              "value": {t: suggested["value"]["weights"][t] for t in TERMS},
              "gradient": {t: suggested["gradient"]["weights"][t] for t in TERMS},
              "rule": "value: W·E_term = E_PL; gradient: W·|dE_term/dtheta| = |dE_PL/dtheta|; at the shared "
                      "initial weights (sflnet calibrate)"}
    path.write_text(json.dumps(chosen, indent=2) + "\n")
    return chosen


def run_weight(weights, term, multiple):
    """W of one run: ``multiple`` × the value-balancing weight, or the gradient-balancing one ("G")."""
    if multiple == "G":
        return weights["gradient"][term]
    return float(f"{weights['value'][term] * multiple:.6g}")


def expression_of(weights, term, multiple):
    return "pl" if term is None else f"pl+{run_weight(weights, term, multiple)!r}*{term}"


def train_sweep(args, weights, options):
    """Every run of :func:`run_names` (trained, resumed or skipped; with ``--table-only`` none is trained);
    returns {name: folder} of the finished runs (complete, or recorded as diverged/collapsed)."""
    folders = {}
    for name, (term, multiple) in run_names().items():
        folder = args.out / "runs" / name
        run_options = TrainOptions(**{**vars(options), "loss": expression_of(weights, term, multiple)}).validate()
        if not args.table_only:
            train_or_resume(folder, run_options, name, "python validation/weight_sweep.py " + " ".join(args.argv))
        if finished(folder, args.epochs):
            folders[name] = folder
    return folders


def finished(folder, epochs):
    """True for a run at ``epochs`` or recorded as diverged/collapsed (outcome.json)."""
    if (folder / "outcome.json").exists():
        return True
    return (folder / CHECKPOINT_FILE).exists() and load_checkpoint(folder / CHECKPOINT_FILE).epoch >= epochs


def collapsed(entry):
    """True for a run recorded as diverged/collapsed, or whose reconstructions are flat (PSNR < 10 dB)."""
    return entry["status"] != "completed" or not (entry["psnr"] > 10.0)


def build_table(table, weights):
    """{name: row} of the measured runs, in :func:`run_names` order."""
    rows = {}
    for name, (term, multiple) in run_names().items():
        if name not in table:
            continue
        entry = {k: v for k, v in table[name].items() if k not in ("recons",)}
        entry.update(term=term, rule=None if term is None else ("gradient" if multiple == "G" else "value"),
                     multiple=None if multiple in (None, "G") else multiple,
                     weight=None if term is None else run_weight(weights, term, multiple))
        entry["collapsed_or_diverged"] = collapsed(entry)
        rows[name] = entry
    return rows


def write_markdown(path, rows, weights, settings):
    sigmas = list(next(iter(rows.values()))["sfl"])
    head = ["run", "objective", "W", "PSNR dB", "SSIM", *(f"SFL σ={s} ×1e-3" for s in sigmas), "E_PL ×1e-3",
            "fft ×1e-3", "stft ×1e5", "collapsed / diverged"]
    lines = [f"# Weight sweep ({settings['preset']})", "",
             f"{settings['images']} images ({settings['data']}), longer side {settings['size']} px, "
             f"{settings['epochs']} full-batch epochs per run, momentum SGD (lr 0.02, momentum 0.5), all from the "
             f"same initial weights (seed {settings['seed']}), {settings['device']}.",
             "V: the value-balancing weight (V·E_term = E_PL at the initial weights), G: the gradient-balancing "
             "weight (G·‖∂E_term/∂θ‖ = ‖∂E_PL/∂θ‖), both from `sflnet calibrate --loss pl+sfl+fft+stft`: "
             + ", ".join(f"{t} V = {weights['value'][t]:.3g}, G = {weights['gradient'][t]:.3g}" for t in TERMS)
             + ".",
             "Every column is measured on the final parameters with every loss at unit weight (E_SFL's subband "
             "weights 100, 10, 10 are not in the σ columns). A run that collapsed or diverged is measured at its "
             "last good checkpoint.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in rows.items():
        w = "—" if row["term"] is None else (f"G = {row['weight']:.3g}" if row["rule"] == "gradient"
                                              else f"{row['multiple']:g}·V = {row['weight']:.3g}")
        flag = row["status"] if row["status"] != "completed" else ("yes (PSNR < 10 dB)" if row["collapsed_or_diverged"]
                                                                   else "no")
        cells = [name, f"`{row['objective']}`", w, f"{row['psnr']:.2f}", f"{row['ssim']:.3f}",
                 *(f"{row['sfl'][s] * 1e3:.3g}" for s in sigmas), f"{row['E_PL'] * 1e3:.3g}",
                 f"{row['fft'] * 1e3:.3g}", f"{row['stft'] / 1e5:.4g}", flag]
        lines.append("| " + " | ".join(cells) + " |")
    pending = [name for name in run_names() if name not in rows]
    if pending:
        lines += ["", f"Not finished yet (start the script again to continue): {', '.join(pending)}."]
    path.write_text("\n".join(lines) + "\n")


def plot(path, rows):
    """PSNR and the σ = 0.8 SFL against W (log x), one curve per term; pl as a dashed line; collapsed runs
    as crosses; the gradient-balanced run as a square on its term's curve."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    first_sigma = next(iter(next(iter(rows.values()))["sfl"]))
    panels = [("psnr", "PSNR (dB)", lambda r: r["psnr"]),
              (f"sfl_{first_sigma}", f"unit-weight SFL σ={first_sigma}", lambda r: r["sfl"][first_sigma])]
    for index, (_, label, read) in enumerate(panels):
        ax = fig.add_subplot(1, 2, index + 1)
        for term, color in zip(TERMS, ("C0", "C1", "C2")):
            runs = sorted((r for r in rows.values() if r["term"] == term), key=lambda r: r["weight"])
            ax.plot([r["weight"] for r in runs], [read(r) for r in runs], "-", color=color, label=f"pl+W·{term}")
            for r in runs:
                marker = "x" if r["collapsed_or_diverged"] else ("s" if r["rule"] == "gradient" else "o")
                ax.plot([r["weight"]], [read(r)], marker, color=color, markersize=8 if marker == "s" else 5,
                        markerfacecolor="none" if marker == "s" else color)
        if "pl" in rows:
            ax.axhline(read(rows["pl"]), color="gray", linestyle="--", label="pl")
        ax.set_xscale("log")
        if index == 1:
            ax.set_yscale("log")
        ax.set_xlabel("W (o: V×0.1, 1, 10, 100; □: G; x: collapsed)")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def finite_or_none(value):
    """NaN/Inf (not valid JSON) as None, recursively."""
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def main(argv=None):
    args = parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    os.chdir(REPO_ROOT)   # relative data paths in the run folders are relative to the repository root
    started = time.perf_counter()
    xp = select_device(args.device)
    device = "gpu" if xp is not np else "cpu"
    data = (portable_path(args.data),) if args.data is not None else None
    options = TrainOptions(data=data, exclude=tuple(args.exclude), size=args.size, loss="pl", epochs=args.epochs,
                           seed=args.seed, device=device, snapshot_every=0).validate()
    args.out.mkdir(parents=True, exist_ok=True)
    weights = choose_weights(args, options, xp, args.out / "weights.json")
    print(f"value-balancing weights {weights['value']}, gradient-balancing {weights['gradient']}", flush=True)
    folders = train_sweep(args, weights, options)
    dataset = load_training_data(options)
    images = [to_device(image, xp) for image in dataset.images]
    rows = build_table(measure(folders, images, xp), weights)
    settings = {"preset": "--quick preset" if args.quick else "full preset", "images": len(images),
                "data": os.path.relpath(args.data, REPO_ROOT) if args.data else "built-in demo images",
                "exclude": list(args.exclude), "size": args.size, "epochs": args.epochs, "seed": args.seed,
                "device": device_name(xp),
                "wall time of this invocation (s)": round(time.perf_counter() - started, 1)}
    safe = finite_or_none(rows)
    pending = [name for name in run_names() if name not in rows]
    (args.out / "table.json").write_text(json.dumps({"settings": settings, "weights": weights, "runs": safe,
                                                     "pending": pending},
                                                    indent=2) + "\n")
    write_markdown(args.out / "table.md", rows, weights, settings)
    plot(args.out / FIGURE, rows)
    print(f"wrote table.md, table.json and {FIGURE} to {args.out}", flush=True)


if __name__ == "__main__":
    sys.exit(run_script(main, "Interrupted: start the same command again to resume."))
