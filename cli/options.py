"""What the commands share: option groups (data, STFT), list parsing, the progress reporter, output checks.

Used by every module of :mod:`sflnet_cli` that defines a command; it defines none itself. What only
a command's work needs (the training options, the evaluation) is imported inside the functions, not
when ``sflnet`` starts.
"""

import datetime
import math
import os
import shlex
import sys

import click

from sflnet import SflnetError
from sflnet.io.images import MAX_IMAGE_PIXELS
from sflnet.losses import STFT_WINDOW_FNS, LossSettings, sigma_label
from sflnet.models import MODEL_NAMES
from sflnet.training.callbacks import Reporter


EXIT_INTERRUPTED = 130


SIDE_BY_SIDE_GAP = 4   # white pixels between original and reconstruction


# ---------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------

def parse_float_list(text, option):
    """``"0.8,1.6,3.2"`` → (0.8, 1.6, 3.2); SflnetError naming ``option`` if malformed."""
    parts = [part.strip() for part in str(text).split(",")]
    if not any(parts):
        raise SflnetError(f"{option} is empty; give comma-separated numbers such as 0.8,1.6,3.2")
    values = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            raise SflnetError(f"{option} {text!r}: {part!r} is not a number") from None
        if not math.isfinite(value):
            raise SflnetError(f"{option} {text!r}: {part!r} is not a finite number")
        values.append(value)
    return tuple(values)


def format_list(values):
    return ",".join(f"{v:g}" for v in values)


def absolute_paths(paths):
    return tuple(os.path.abspath(p) for p in paths) if paths else None


def stderr_note(message):
    click.echo(message, err=True)


def data_warning(message):
    """``warn`` callback of :func:`load_dataset` (one line per skipped file)."""
    stderr_note(f"warning: {message}")


LOSS_HELP = ("Objective: terms joined by '+', each NAME or WEIGHT*NAME, optionally NAME(OPTION=VALUE,...), "
             "NAME one of the losses listed at the end. "
             "pl+sfl = E_PL + E_SFL (paper Eq. 7); pl = pixel loss only (Eq. 4); e.g. pl+100*fft, "
             "500*ssim+0.00015*stft. pl and sfl are always measured (history columns), other terms add an "
             "E_<NAME> column.")


def stft_options(defaults):
    """The stft loss's options (train: with defaults; evaluate: default None = the checkpoint's)."""
    def show(value):
        return {"default": value, "show_default": True} if defaults else {"default": None}

    def decorate(command):
        command = click.option("--stft-phase-weight", type=float, **show(LossSettings.stft_phase_weight),
                               help="stft loss: λ, the weight of the phase term (>= 0).")(command)
        command = click.option("--stft-window-fn", type=click.Choice(STFT_WINDOW_FNS),
                               **show(LossSettings.stft_window_fn),
                               help="stft loss: periodic 2-D Hann window or none (rect).")(command)
        command = click.option("--stft-stride", type=int, **show(LossSettings.stft_stride),
                               help="stft loss: pixels between window positions.")(command)
        command = click.option("--stft-window", type=int, **show(LossSettings.stft_window),
                               help="stft loss: side h of the square window; images need at least h x h "
                                    "pixels.")(command)
        return command
    return decorate


def data_options(size_default, data_default):
    """The options that pick images, shared by ``train`` and ``evaluate``."""
    size_help = ("Longer image side in pixels, aspect ratio kept; 0 keeps the native size (cae only)."
                 + ("  [default: 300]" if size_default is not None else "  [default: the checkpoint's]"))

    def decorate(command):
        command = click.option("--skip-bad", is_flag=True,
                               help="Skip unreadable image files with a warning instead of stopping.")(command)
        command = click.option("--size", type=int, default=size_default, show_default=False,
                               help=size_help)(command)
        command = click.option("--exclude", "exclude", multiple=True, metavar="GLOB",
                               help="Drop images whose path relative to the data folder matches (repeatable).")(
            command)
        command = click.option("--include", "include", multiple=True, metavar="GLOB",
                               help="Keep only images whose path relative to the data folder matches "
                                    "(repeatable).")(command)
        command = click.option("--data", "data", multiple=True, type=click.Path(), metavar="PATH",
                               help="Image file or folder (searched recursively); repeatable. A vae "
                                    "checkpoint: one digits .npz or a folder of MNIST's IDX files "
                                    "(docs/data.md). "
                                    f"Default: {data_default}. Images over {MAX_IMAGE_PIXELS:,} pixels "
                                    "(sflnet.io.images.MAX_IMAGE_PIXELS) are refused as possible "
                                    "decompression bombs.")(command)
        return command
    return decorate


# ---------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------

class ProgressReporter(Reporter):
    """A click progress bar on stderr (epoch, E, the subband SFLs, ETA); plain lines when not a terminal."""

    def __init__(self, sigmas):
        self.labels = [sigma_label(s) for s in sigmas]
        self.bar = None
        self.last = 0
        self.every = 1
        self.tty = False

    def describe(self, row):
        if row is None:
            return ""
        # the row's own subband columns: they follow the run's sigmas (--sigmas or sfl(sigmas=...), or a resumed run's)
        # (nan: not measured by a VAE's training steps, see sflnet.training.history)
        sfl = " ".join(f"sfl{key[4:]}={value:.3e}" for key, value in row.items()
                       if key.startswith("sfl_") and value == value)
        return f"epoch {row['epoch']}/{self.last} E={row['E']:.4e} {sfl}"

    def start(self, first_epoch, last_epoch):
        stream = sys.stderr
        self.tty = stream.isatty()
        self.last = last_epoch
        total = max(0, last_epoch - first_epoch + 1)
        self.every = max(1, total // 20)
        self.bar = click.progressbar(length=total, label="training", file=stream, show_eta=True,
                                     show_pos=True, width=20, item_show_func=self.describe)
        self.bar.__enter__()

    def epoch(self, row):
        self.bar.update(1, row)
        if not self.tty and (row["epoch"] % self.every == 0 or row["epoch"] == self.last):
            click.echo(self.describe(row), err=True)

    def note(self, message):
        if self.bar is not None and self.tty:
            click.echo("", err=True)
        click.echo(message, err=True)

    def close(self):
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def default_out():
    """``runs/YYYYmmdd-HHMMSS`` (with ``-2``, ``-3``, ... if that exists already)."""
    base = os.path.join("runs", datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    candidate, number = base, 1
    while os.path.lexists(candidate):
        number += 1
        candidate = f"{base}-{number}"
    return candidate


def command_line(ctx):
    """The full ``sflnet train ...`` command with every option spelled out (for config.json)."""
    words = ["sflnet", "train"]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        flag = param.opts[0]
        if param.name in ("resume", "overwrite") or value is None or value == ():
            continue
        if param.is_flag:
            if value:
                words.append(flag)
        elif param.multiple:
            for item in value:
                words += [flag, str(item)]
        else:
            words += [flag, str(value)]
    return shlex.join(words)


def both_defaults(option):
    """``[default: X (cae), Y (vae)]`` for an option whose default depends on --model."""
    from sflnet.training.config import TrainOptions  # noqa: PLC0415  (not needed when sflnet starts)

    def show(value):
        return "unused" if value is None else format_list(value) if isinstance(value, tuple) else str(value)
    defaults = (f"{show(getattr(TrainOptions.for_model(name), option))} ({name})" for name in MODEL_NAMES)
    return f"  [default: {', '.join(defaults)}]"


# ---------------------------------------------------------------------------
# reconstruct
# ---------------------------------------------------------------------------

def check_size(size):
    if size is not None and size < 0:
        raise SflnetError(f"--size must be 0 (native size) or a positive number of pixels, got {size}")


def refuse_existing(paths, overwrite):
    if overwrite:
        return
    existing = [p for p in paths if os.path.lexists(p)]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise SflnetError(f"output file {existing[0]} already exists{more}; pass --overwrite to replace it")


# ---------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------

def json_safe(value):
    """Replace NaN/Inf (not valid JSON) by None, recursively; PSNR of identical images is Inf → None."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------------------
# filters
# ---------------------------------------------------------------------------

FIG3_FILE = "fig3_log_responses.png"


FIG4_FILE = "fig4_subbands.png"


def evaluation_settings(ckpt, stft_window, stft_stride, stft_window_fn, stft_phase_weight):
    """The checkpoint's loss settings, with the stft options given on the command line (validated)."""
    from sflnet.training.config import TrainOptions  # noqa: PLC0415  (not needed when sflnet starts)
    from sflnet.training.evaluation import checkpoint_loss_settings  # noqa: PLC0415

    given = {"stft_window": stft_window, "stft_stride": stft_stride, "stft_window_fn": stft_window_fn,
             "stft_phase_weight": stft_phase_weight}
    settings = checkpoint_loss_settings(ckpt, **given)
    check = TrainOptions.for_model(ckpt.spec.name, stft_window=settings.stft_window, stft_stride=settings.stft_stride,
                                   stft_window_fn=settings.stft_window_fn, stft_phase_weight=settings.stft_phase_weight)
    check.validate()
    return settings

