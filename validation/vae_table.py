"""Table 1 of Dalal's β-VAE paper (*Deblurring Variational Autoencoders with Short-Time Fourier
Transform*) on sflnet's β-VAE: five reconstruction losses, plus Ichimura's SFL, by PSNR and SSIM.

Run from the repository root after ``pip install .``::

    python validation/vae_table.py            # 6 objectives x 3 seeds, 50 epochs each, 4,000 training digits
    python validation/vae_table.py --quick    # 6 objectives x 1 seed, 2 epochs on 100 digits (a minute)
    python validation/vae_table.py --protocol authors   # the authors' code's protocol (see below)
    python validation/vae_table.py --protocol authors &   # twice side by side: they share the runs (2 cores)
    python validation/vae_table.py --protocol authors --data MNIST_DIR   # the full MNIST (60,000 / 10,000)

Two protocols. ``--protocol sflnet`` (the default, "sflnet scaling", results in
``validation/results/vae/``) is described first; ``--protocol authors`` (results in
``validation/results/vae_authors/``) is at the end of this docstring.

What it does, with the public ``sflnet`` API only:

1. Trains Dalal's VAE1 (``sflnet train --model vae``: Adam, triangular2 learning rate between 1e-4 and
   1e-3 with step size 2000, batch 32, β = 0.005, binarised digits) on the built-in MNIST 5k training
   split, once per objective (:data:`OBJECTIVES`) and seed. Each run is an ordinary run folder
   ``runs/<objective>_seed<k>/``; started again with the same options, the script skips finished runs and
   resumes the others exactly, so a long table can be computed over several sessions.
2. Measures every final checkpoint on the 1,000 test digits with z = μ: PSNR and SSIM (data range 1),
   the unit-weight SFL (the sum of the three subband SFLs, σ = 0.8, 1.6, 3.2) and the unit-weight STFT
   distance (window 16, stride 4, Hann, λ = 9), and the median seconds per epoch of its run.
3. Writes ``table.md`` / ``table.json`` (mean ± std over seeds, beside the paper's row) and
   ``digits.png`` (test digits, each objective's reconstructions and latent-space samples, seed 0).

The objectives. The SSIM rows all carry the paper's SSIM weight 500, so that they differ only by the added
frequency term:

* ``L2``: ``pl`` (Eq. 4 of Ichimura's paper: ½ the mean squared error per image);
* ``L1``: ``l1`` (the mean absolute error);
* ``SSIM``: ``500*ssim`` (1 − SSIM, Gaussian window, data range 1);
* ``DFT+SSIM``: ``500*ssim+0.00015*stft`` with one ``rect`` window of 28×28 covering the image, i.e. the
  global DFT, as the paper's baseline;
* ``STFT+SSIM``: ``500*ssim+0.00015*stft``, the paper's weights (STFT 0.0015 · (0.1 amplitude + 0.9 phase)
  = 0.00015 · (amplitude + 9 · phase), window 16, stride 4, Hann);
* ``SFL+SSIM``: ``500*ssim+3.5*sfl``, Ichimura's SFL (subband weights 100, 10, 10) in the place of
  the STFT term, its weight chosen so that it starts at the STFT term's size (at initialisation, on the
  training digits, 3.5·E_SFL ≈ 0.00015·E_STFT ≈ 4.7 for each of the three seeds).

``--protocol authors``: Dalal et al.'s code's protocol, as far as sflnet can run it. The same VAE1,
optimiser, β, batch 32 and data, with

* ``--output linear``: the losses and the metrics see the raw output of the last transposed
  convolution, unclipped (the authors' ``decode(z, apply_sigmoid=False)``);
* ``--tconv-padding tf-same``: TensorFlow's 'same' padding of the transposed convolutions;
* L2 as the full mean squared error, ``2*pl`` (``pl`` is ½·MSE, Eq. 4 of Ichimura's paper);
* the DFT row as their configuration ran it: one 28×28 window (stride 4, no taper), amplitude and
  phase weights 1 and 1 (λ = 1), STFT weight 0.0015: ``0.0015*stft(window=28,window_fn=rect,phase_weight=1)``;
* their STFT weights 0.0015 × (0.1·amplitude + 0.9·phase) = ``0.00015*stft`` (window 16, stride 4, Hann, λ = 9);
* one extra row, ``STFTcode+SSIM``: the STFT+SSIM row with the STFT loss as their code computes it
  (``0.00015*stft_code``, :class:`sflnet.losses.STFTCodeLoss`: a row-wise unnormalised 1-D DFT of the top
  half of each 16×16 frame, no window, the unwrapped phase), since their Table 1 came from that code; and
  ``DFTcode+SSIM``, their DFT configuration through the same code path
  (``0.0015*stft_code(window=28,phase_weight=1)``);
* the SFL+SSIM weight chosen as above, on this network: at initialisation, on the training digits,
  w·E_SFL = 0.00015·E_STFT, averaged over the seeds and rounded to two significant digits
  (computed once, stored in ``sfl_weight.json`` and in the table);
* their evaluation: z = μ + σε sampled from q with ε drawn with the run's seed, the whole test split,
  unclipped, data range 1 — exactly ``sflnet evaluate CHECKPOINT --sample-latent --seed SEED --split test``
  (each run's ``evaluate_args`` in table.json; ``run_dir`` is relative to the table's folder).

Batch 32 (``--batch-size``) and not the authors' configuration's 5 on the 4,000 built-in digits: the
paper names none, and those tables were made before the batch-5 step was made fast. Each row also gets
``kl``, the KL term in nats on the test set.

``--data MNIST_DIR`` (a folder of MNIST's four IDX files, or a Keras-layout ``.npz``) trains on its
training split (the full MNIST: 60,000 digits) and evaluates on its test split (10,000 digits); with
``--protocol authors`` it trains with the authors' configuration's batch of 5 (1.0–1.6 times the CPU
time per digit of batch 32, docs/vae.md) and the results go to ``validation/results/vae_mnist/``
(``vae_mnist_batch32/`` with ``--batch-size 32``) unless ``--out`` says otherwise.
``digits.png`` shows each row's reconstructions of test digits and its 20×20 latent grid (the paper's Fig. 2).
"""

import argparse
import json
import math
import os
import pathlib
import statistics
import sys

import numpy as np

from sflnet import SflnetError
from sflnet.backend import select_device, to_device, to_host
from sflnet.io.checkpoint import load_checkpoint, write_text_atomic
from sflnet.losses import LossSettings
from sflnet.models.vae import decode_grid
from sflnet.training.config import TrainOptions
from sflnet.training.data import load_training_data
from sflnet.training.evaluation import checkpoint_options, evaluate_model, model_from_checkpoint
from sflnet.training.history import read_history
from sflnet.training.run import run_training
from sflnet.training.runlock import RunFolderInUse
from sflnet.errors import run_script

REPO = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "validation" / "results" / "vae"
AUTHORS_OUT = REPO / "validation" / "results" / "vae_authors"
# --protocol authors with --data (e.g. the full MNIST's IDX folder): its own results folder, and the
# authors' configuration's batch of 5 (another --batch-size B goes to vae_mnist_batchB)
AUTHORS_DATA_OUT = REPO / "validation" / "results" / "vae_mnist"
AUTHORS_DATA_BATCH = 5
LATENT_GRID = 20   # the latent grid of digits.png: LATENT_GRID × LATENT_GRID decoded z values, as the paper's Fig. 2
SFL_WEIGHT = 3.5
# name → (expression, extra options)
OBJECTIVES = {
    "L2": ("pl", {}),
    "L1": ("l1", {}),
    "SSIM": ("500*ssim", {}),
    "DFT+SSIM": ("500*ssim+0.00015*stft", {"stft_window": 28, "stft_stride": 28, "stft_window_fn": "rect"}),
    "STFT+SSIM": ("500*ssim+0.00015*stft", {}),
    "SFL+SSIM": (f"500*ssim+{SFL_WEIGHT:g}*sfl", {}),
}
# The authors' code's protocol (--protocol authors): expressions and the options every run shares.
# "{sfl}" is replaced by the chosen SFL weight (sfl_weight()).
AUTHORS_OBJECTIVES = {
    "L2": ("2*pl", {}),
    "L1": ("l1", {}),
    "SSIM": ("500*ssim", {}),
    "DFT+SSIM": ("500*ssim+0.0015*stft(window=28,window_fn=rect,phase_weight=1)", {}),
    "STFT+SSIM": ("500*ssim+0.00015*stft", {}),
    "SFL+SSIM": ("500*ssim+{sfl}*sfl", {}),
    # The STFT+SSIM row with the STFT loss as the authors' code computes it (sflnet.losses.stft_code):
    # 0.0015·(0.1·amplitude + 0.9·phase), frames 16 at stride 4. Their Table 1 came from this code.
    "STFTcode+SSIM": ("500*ssim+0.00015*stft_code", {}),
    # The DFT row as their code ran it: their `dft` configuration (frame 28 = the image, amplitude and phase
    # weights 1 and 1, weight 0.0015) through the same code path (row-wise DFT of the top 14 rows).
    "DFTcode+SSIM": ("500*ssim+0.0015*stft_code(window=28,phase_weight=1)", {}),
}
AUTHORS_OPTIONS = {"output": "linear", "tconv_padding": "tf-same"}
# Dalal's paper, Table 1 (binarised MNIST, 60,000 training images, 50 epochs).
PAPER = {"L2": (10.20, 0.41), "L1": (10.13, 0.32), "SSIM": (11.38, 0.495), "DFT+SSIM": (11.51, 0.486),
         "STFT+SSIM": (11.93, 0.492), "SFL+SSIM": (None, None), "STFTcode+SSIM": (11.93, 0.492),
         "DFTcode+SSIM": (11.51, 0.486)}
# The yardsticks: the unit-weight STFT with the paper's settings, measured on every checkpoint.
YARDSTICK = LossSettings(pl_weights=(1.0,), value_range=(0.0, 1.0))
SHOWN_DIGITS = 12


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", choices=("sflnet", "authors"), default="sflnet",
                        help="sflnet scaling (default) or the authors' code's protocol")
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="results folder (default validation/results/vae or vae_authors)")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1 per objective")
    parser.add_argument("--train-images", type=int, default=None, help="digits used for training (default 4000)")
    parser.add_argument("--data", type=pathlib.Path, default=None,
                        help="a digits .npz or a folder of MNIST's four IDX files (raw or .gz) instead of "
                             "the built-in 5,000 (docs/data.md), e.g. the full MNIST")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="digits per training step (default 32; 5, the authors' configuration's, with "
                             "--protocol authors --data)")
    parser.add_argument("--only", default=None, help="comma-separated objective names to train now")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 epochs, 100 training digits")
    parser.add_argument("--table-only", action="store_true", help="measure and write the table, train nothing")
    args = parser.parse_args(argv)
    full_data = args.protocol == "authors" and args.data is not None
    if args.batch_size is None:
        args.batch_size = AUTHORS_DATA_BATCH if full_data else 32
    if args.out is None:
        if full_data:
            suffix = "" if args.batch_size == AUTHORS_DATA_BATCH else f"_batch{args.batch_size}"
            args.out = AUTHORS_DATA_OUT.with_name(AUTHORS_DATA_OUT.name + suffix)
        else:
            args.out = AUTHORS_OUT if args.protocol == "authors" else DEFAULT_OUT
    if args.batch_size < 1:
        raise SflnetError(f"--batch-size must be >= 1, got {args.batch_size}")
    args.sfl_weight = None
    if args.quick:
        args.epochs, args.seeds, args.train_images = 2, 1, 100
    return args


def run_folder(out, name, seed):
    return out / "runs" / f"{name.replace('+', '_')}_seed{seed}"


def objective(name, args):
    """(expression, extra options) of one row under ``args.protocol``."""
    if args.protocol == "sflnet":
        return OBJECTIVES[name]
    expression, extra = AUTHORS_OBJECTIVES[name]
    if "{sfl}" in expression:
        expression = expression.format(sfl=f"{sfl_weight(args):g}")
    return expression, dict(AUTHORS_OPTIONS, **extra)


def sfl_weight(args):
    """The authors' protocol's SFL+SSIM weight: read from ``sfl_weight.json``, or chosen (see the module
    docstring) and written there the first time."""
    if args.sfl_weight is not None:
        return args.sfl_weight
    path = args.out / "sfl_weight.json"
    if path.exists():
        args.sfl_weight = json.loads(path.read_text(encoding="utf-8"))["weight"]
        return args.sfl_weight
    from sflnet.models.vae import VAE, init_params  # noqa: PLC0415

    base = TrainOptions.for_model("vae", loss="pl+sfl+0.00015*stft", **AUTHORS_OPTIONS,
                                  **({"train_images": args.train_images} if args.train_images else {}),
                                  **({"data": (str(args.data.resolve()),)} if args.data else {})).validate()
    images = load_training_data(base, split="train").images
    ratios = []
    for seed in range(args.seeds):
        model = VAE(init_params(seed), loss=base.loss, loss_settings=base.loss_settings, **AUTHORS_OPTIONS)
        terms = model.loss_and_grads(images, compute_grads=False).terms
        ratios.append(0.00015 * terms["stft"] / terms["sfl"])
    weight = float(f"{statistics.fmean(ratios):.2g}")
    record = {"weight": weight, "ratios": ratios,
              "rule": "w·E_SFL = 0.00015·E_STFT at initialisation on the training digits, mean over seeds, "
                      "2 significant digits"}
    write_text_atomic(path, json.dumps(record, indent=1) + "\n", what="SFL weight")
    args.sfl_weight = weight
    return weight


def options_for(name, seed, args):
    expression, extra = objective(name, args)
    values = dict(extra, loss=expression, seed=seed, epochs=args.epochs, device=args.device,
                  snapshot_every=0, batch_size=args.batch_size)
    if args.train_images is not None:
        values["train_images"] = args.train_images
    if args.data is not None:
        values["data"] = (str(args.data.resolve()),)
    return TrainOptions.for_model("vae", **values).validate()


def train(name, seed, args):
    """Train (or resume, or skip) one run; returns its folder, or None when it trained nothing (the run was
    finished already, or another process is training it).

    So two invocations of the same command side by side share the table's runs (one per core): each
    skips the run folders the other holds (their lock, :mod:`sflnet.training.runlock`)."""
    folder = run_folder(args.out, name, seed)
    options = options_for(name, seed, args)
    resume = (folder / "checkpoint.npz").exists()
    print(f"{name} seed {seed}: {'resuming' if resume else 'training'} to epoch {args.epochs}", flush=True)
    try:
        result = run_training(options, str(folder), resume=resume,
                              overrides={"epochs": args.epochs} if resume else None)
    except RunFolderInUse:
        print(f"{name} seed {seed}: skipped, another process is training it", flush=True)
        return None
    if result.status == "up-to-date":
        return None
    if result.status == "interrupted":   # a signal stopped the run: stop the table too, do not start the next run
        raise SflnetError(f"stopped during {name} seed {seed} at epoch {result.epoch} (its checkpoint is saved); "
                          f"the same command resumes it")
    return folder


def measure(folder, test_images, xp):
    """PSNR, SSIM, unit SFL, unit STFT on the test digits (z = μ), and the run's median seconds per epoch."""
    ckpt = load_checkpoint(folder / "checkpoint.npz")
    model = model_from_checkpoint(ckpt, xp, loss="pl+stft", loss_settings=YARDSTICK)
    report, _ = evaluate_model(model, test_images)
    rows = read_history(str(folder / "history.csv"), checkpoint_options(ckpt).history_columns)
    return {"epoch": ckpt.epoch, "psnr": report["psnr"], "ssim": report["ssim"],
            "sfl": sum(report["sfl"].values()), "stft": report["terms"]["stft"],
            "sfl_subbands": report["sfl"],
            "seconds_per_epoch": statistics.median(r["seconds"] for r in rows) if rows else None}


def mean_std(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def show(mean, std, digits):
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def write_table(args, results):
    """table.md and table.json from {name: [measurement per seed]}."""
    lines = ["| loss | PSNR (dB) | SSIM | paper PSNR | paper SSIM | unit SFL | unit STFT | s/epoch | runs |",
             "|---|---|---|---|---|---|---|---|---|"]
    summary = {}
    for name, runs in results.items():
        psnr, ssim = mean_std([r["psnr"] for r in runs]), mean_std([r["ssim"] for r in runs])
        sfl, stft = mean_std([r["sfl"] for r in runs]), mean_std([r["stft"] for r in runs])
        secs = mean_std([r["seconds_per_epoch"] for r in runs])
        paper_psnr, paper_ssim = PAPER[name]
        epochs = sorted({r["epoch"] for r in runs})
        summary[name] = {"expression": OBJECTIVES[name][0], "options": OBJECTIVES[name][1], "runs": runs,
                         "psnr": psnr, "ssim": ssim, "sfl": sfl, "stft": stft, "paper": PAPER[name]}
        lines.append(f"| {name} (`{OBJECTIVES[name][0]}`) | {show(*psnr, 2)} | {show(*ssim, 3)} | "
                     f"{paper_psnr if paper_psnr is not None else '—'} | "
                     f"{paper_ssim if paper_ssim is not None else '—'} | {show(*sfl, 4)} | {show(*stft, 0)} | "
                     f"{show(*secs, 1)} | {len(runs)} (epoch {','.join(map(str, epochs))}) |")
    header = (f"Dalal's β-VAE (VAE1), {args.epochs} epochs, "
              f"{args.train_images or 4000} training digits, 1,000 test digits, z = μ; mean ± std over seeds.\n\n")
    write_text_atomic(args.out / "table.md", header + "\n".join(lines) + "\n", what="table")
    write_text_atomic(args.out / "table.json", json.dumps(summary, indent=1) + "\n", what="table")
    print(header + "\n".join(lines))


def draw_digits(args, names, test_images, xp):
    """digits.png, laid out as the paper's Fig. 2: a row per objective (seed 0) with its reconstructions of
    the same test digits (z = μ) and, beside them, its LATENT_GRID × LATENT_GRID latent grid; the test
    digits themselves on top."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    shown = [test_images[i] for i in range(0, len(test_images), max(1, len(test_images) // SHOWN_DIGITS))][
        :SHOWN_DIGITS]
    rows = [("test digits", np.concatenate([to_host(x)[0] for x in shown], axis=1), None)]
    for name in names:
        ckpt = load_checkpoint(run_folder(args.out, name, 0) / "checkpoint.npz")
        model = model_from_checkpoint(ckpt, xp)
        recons = [np.clip(to_host(r)[0], 0.0, 1.0) for r in model.reconstruct(shown)]
        rows.append((name, np.concatenate(recons, axis=1), decode_grid(model, LATENT_GRID)[0]))
    height = 0.9 + 1.7 * (len(rows) - 1)
    fig = Figure(figsize=(14, height))
    FigureCanvasAgg(fig)
    ratios = [0.5] + [1.7] * (len(rows) - 1)
    grid = fig.add_gridspec(len(rows), 2, width_ratios=[5.2, 1.0], height_ratios=ratios, left=0.09, right=0.99,
                            top=0.99, bottom=0.01, hspace=0.12, wspace=0.03)
    for k, (label, strip, latent) in enumerate(rows):
        ax = fig.add_subplot(grid[k, 0])
        ax.imshow(strip, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
        if latent is not None:
            ax = fig.add_subplot(grid[k, 1])
            ax.imshow(latent, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if k == 1:
                ax.set_title(f"latent grid ({LATENT_GRID}×{LATENT_GRID})", fontsize=8)
    fig.savefig(args.out / "digits.png", dpi=100)


def evaluate_args(seed):
    """The ``sflnet evaluate`` options (after the checkpoint) that give a run's authors'-protocol PSNR/SSIM."""
    return ["--sample-latent", "--seed", str(seed), "--split", "test", "--device", "cpu"]


def measure_authors(folder, seed, test_images, xp):
    """The authors' evaluation of one run (z sampled with the run's seed, unclipped, data range 1):
    PSNR, SSIM and KL (nats) on the test digits, as ``sflnet evaluate`` with :func:`evaluate_args`."""
    ckpt = load_checkpoint(folder / "checkpoint.npz")
    model = model_from_checkpoint(ckpt, xp)
    model.noise = np.random.default_rng(seed)
    report, _ = evaluate_model(model, test_images)
    rows = read_history(str(folder / "history.csv"), checkpoint_options(ckpt).history_columns)
    return {"seed": seed, "epoch": ckpt.epoch, "psnr": report["psnr"], "ssim": report["ssim"],
            "kl": report["terms"]["kl"], "run_dir": str(folder.relative_to(folder.parent.parent)),
            "evaluate_args": evaluate_args(seed),
            "seconds_per_epoch": statistics.median(r["seconds"] for r in rows) if rows else None}


def write_authors_table(args, names, test_images, xp, train_count):
    """table.md / table.json of the authors' protocol from the runs finished so far (a row with fewer
    than ``args.seeds`` runs is marked with its count)."""
    summary = {}
    lines = ["| loss | PSNR (dB) | SSIM | paper PSNR | paper SSIM | KL (nats) | s/epoch | runs |",
             "|---|---|---|---|---|---|---|---|"]
    for name in names:
        runs = []
        for seed in range(args.seeds):
            folder = run_folder(args.out, name, seed)
            if (folder / "checkpoint.npz").exists() and load_checkpoint(folder / "checkpoint.npz").epoch == args.epochs:
                runs.append(measure_authors(folder, seed, test_images, xp))
        psnr, ssim = mean_std([r["psnr"] for r in runs]), mean_std([r["ssim"] for r in runs])
        kl, secs = mean_std([r["kl"] for r in runs]), mean_std([r["seconds_per_epoch"] for r in runs])
        expression, options = objective(name, args)
        summary[name] = {"expression": expression, "options": options, "psnr": psnr, "ssim": ssim, "kl": kl,
                         "paper": PAPER[name], "complete": len(runs) == args.seeds, "runs": runs}
        paper_psnr, paper_ssim = PAPER[name]
        count = f"{len(runs)} of {args.seeds}" + ("" if len(runs) == args.seeds else " (incomplete)")
        lines.append(f"| {name} (`{expression}`) | {show(*psnr, 2)} | {show(*ssim, 3)} | "
                     f"{paper_psnr if paper_psnr is not None else '—'} | "
                     f"{paper_ssim if paper_ssim is not None else '—'} | {show(*kl, 2)} | {show(*secs, 1)} | "
                     f"{count} |")
    header = (f"Dalal's β-VAE (VAE1), the authors' code's protocol: linear output, TensorFlow 'same' transposed "
              f"convolutions, {args.epochs} epochs, batch {args.batch_size}, {train_count} training digits; "
              f"evaluated on the {len(test_images)} test digits with z sampled from q (ε from the run's seed), "
              f"unclipped, data range 1 (`sflnet evaluate CHECKPOINT --sample-latent --seed SEED --split test`). "
              f"SFL+SSIM weight {sfl_weight(args):g}. Mean ± std over the finished seeds.\n\n")
    summary_all = {"protocol": "authors", "epochs": args.epochs, "seeds": args.seeds,
                   "train_images": train_count, "test_images": len(test_images), "batch_size": args.batch_size,
                   "data": "built-in" if args.data is None else args.data.name, "sfl_weight": sfl_weight(args),
                   "rows": summary}
    write_text_atomic(args.out / "table.md", header + "\n".join(lines) + "\n", what="table")
    write_text_atomic(args.out / "table.json", json.dumps(summary_all, indent=1) + "\n", what="table")
    print(header + "\n".join(lines), flush=True)
    drawn = [n for n in names if (run_folder(args.out, n, 0) / "checkpoint.npz").exists()]
    if drawn:
        draw_digits(args, drawn, test_images, xp)


def main_authors(args, names, chosen):
    """The authors' protocol: train (or resume) the chosen rows, seed 0 of every row first, and rewrite
    the table after every run, so that an interrupted table holds every finished run."""
    xp = select_device(args.device)
    test = load_training_data(options_for(names[0], 0, args), split="test")
    test_images = [to_device(x, xp) for x in test.images]
    count = len(load_training_data(options_for(names[0], 0, args), split="train").images)
    trained = False
    if not args.table_only:
        for seed in range(args.seeds):
            for name in chosen:
                if train(name, seed, args) is not None:
                    write_authors_table(args, names, test_images, xp, count)
                    trained = True
    if not trained:
        write_authors_table(args, names, test_images, xp, count)
    return 0


def main(argv=None):
    args = parse_args(argv)
    names = list(AUTHORS_OBJECTIVES if args.protocol == "authors" else OBJECTIVES)
    chosen = names if args.only is None else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in chosen if n not in names]
    if unknown:
        raise SflnetError(f"unknown objective {unknown[0]!r}; choose from {', '.join(names)}")
    os.makedirs(args.out, exist_ok=True)
    if args.protocol == "authors":
        return main_authors(args, names, chosen)
    if not args.table_only:
        for seed in range(args.seeds):
            for name in chosen:
                train(name, seed, args)
    xp = select_device(args.device)
    options = options_for(names[0], 0, args)
    test = load_training_data(options, split="test")
    test_images = [to_device(x, xp) for x in test.images]
    results = {}
    for name in names:
        done = [run_folder(args.out, name, s) for s in range(args.seeds)]
        done = [f for f in done if (f / "checkpoint.npz").exists()]
        measured = [dict(measure(f, test_images, xp), seed=int(f.name.rsplit("seed", 1)[1])) for f in done]
        finished = [m for m in measured if m["epoch"] == args.epochs]   # runs still training are left out
        if finished:
            results[name] = finished
        if len(finished) < len(measured):
            print(f"{name}: {len(measured) - len(finished)} run(s) not finished yet, left out of the table")
    write_table(args, results)
    if all((run_folder(args.out, n, 0) / "checkpoint.npz").exists() for n in names):
        draw_digits(args, names, test_images, xp)
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
