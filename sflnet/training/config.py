"""The options of a training run (``sflnet train``): :class:`TrainOptions`, their checks and their config.json form.

:class:`TrainOptions` holds the options every model shares (:data:`SHARED_OPTIONS`) and one
attribute per hyperparameter a registered model declares
(:attr:`sflnet.models.ModelSpec.hyperparameters`: ``options.lr``, ``options.beta``), so a new
model's hyperparameters need no edit here.

:func:`key_options` are the options that define a run: a resumed run must use the same values;
:data:`RESUME_OPTIONS` are those a resume may change (:func:`merge_resume_options`).
"""

import math
import re

from sflnet.backend import DEVICES, DTYPES
from sflnet.errors import SflnetError
from sflnet.io.checkpoint import same_value, upgrade_legacy_options, upgrade_model_options
from sflnet.losses import DEFAULT_EXPRESSION, STFT_WINDOW_FNS, LossSettings, canonical, resolve, sigma_label
from sflnet.models import DEFAULT_MODEL, MODEL_NAMES, get_spec, hyperparameters
from sflnet.models.base import is_finite_number, is_whole_number
from sflnet.models.cae import DEFAULT_PL_WEIGHTS, DEFAULT_SFL_WEIGHTS, DEFAULT_SIGMAS
from sflnet.training.history import extra_terms, history_columns


# Shared options that define the run (with every model's hyperparameters, :func:`key_options`).
SHARED_KEY_OPTIONS = ("model", "data", "include", "exclude", "size", "skip_bad", "loss", "sigmas", "sfl_weights",
                      "pl_weights", "stft_window", "stft_stride", "stft_window_fn", "stft_phase_weight", "dtype",
                      "seed", "batch_size")
# 2: --loss is an expression and the stft options exist (absent: sflnet 0.1); 3: --model and the VAE's options
CONFIG_VERSION = 3
# Options a resume may change.
RESUME_OPTIONS = ("epochs", "device", "snapshot_every", "checkpoint_every")
# Mid-epoch checkpoints (--checkpoint-every): at most every 10 minutes of training, so a crash or a
# scheduler's kill loses minutes, not an epoch; a short epoch's own checkpoint makes them unneeded.
DEFAULT_CHECKPOINT_EVERY = "10m"
_TIME_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_INTERVAL = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(s|m|h|steps?)")


def parse_checkpoint_every(value):
    """``--checkpoint-every``: ``None`` for ``"0"``/``"off"`` (checkpoints at epoch ends only),
    ``("seconds", t)`` for a time (``"90s"``, ``"10m"``, ``"1.5h"``), ``("steps", n)`` for a count of
    optimiser steps (``"500steps"``, ``"1step"``). SflnetError (one line) for anything else."""
    text = value.strip().lower() if isinstance(value, str) else None
    if text in ("0", "off"):
        return None
    found = _INTERVAL.fullmatch(text) if text is not None else None
    if found is not None:
        amount, unit = found.groups()
        if unit.startswith("step"):
            if amount.isdigit() and int(amount) >= 1:
                return ("steps", int(amount))
        else:
            seconds = float(amount) * _TIME_UNITS[unit]
            if seconds > 0 and math.isfinite(seconds):
                return ("seconds", seconds)
    raise SflnetError(f"--checkpoint-every must be a time (90s, 10m, 1.5h), a number of steps (500steps) or 0 "
                      f"(epoch ends only), got {value!r}")


def default_snapshot_every(epochs):
    """Snapshots about ten times per run: ``max(1, epochs // 10)`` (the final epoch always gets one)."""
    return max(1, epochs // 10)


def key_options():
    """The options that define a run (a resumed run must use the same values): the shared ones
    (:data:`SHARED_KEY_OPTIONS`), then every registered model's hyperparameters."""
    return SHARED_KEY_OPTIONS + tuple(hyperparameters())


# The options every model shares, {name: default}, in config.json's order (the models' hyperparameters follow).
SHARED_OPTIONS = {
    "model": DEFAULT_MODEL,
    "data": None,
    "include": (),
    "exclude": (),
    "size": 300,
    "skip_bad": False,
    "loss": DEFAULT_EXPRESSION,
    "epochs": 2000,
    "seed": 0,
    "sigmas": DEFAULT_SIGMAS,
    "sfl_weights": DEFAULT_SFL_WEIGHTS,
    "pl_weights": DEFAULT_PL_WEIGHTS,
    "stft_window": LossSettings.stft_window,
    "stft_stride": LossSettings.stft_stride,
    "stft_window_fn": LossSettings.stft_window_fn,
    "stft_phase_weight": LossSettings.stft_phase_weight,
    "batch_size": 0,
    "device": "auto",
    "dtype": "float32",
    "snapshot_every": None,
    "checkpoint_every": DEFAULT_CHECKPOINT_EVERY,
}


def option_defaults():
    """{name: default} of every option: :data:`SHARED_OPTIONS`, then each registered model's
    hyperparameters, at the default model's values (:data:`sflnet.models.DEFAULT_MODEL`) and None
    for the options the default model does not declare."""
    default_model = {h.name: h.default for h in get_spec(DEFAULT_MODEL).hyperparameters}
    return {**SHARED_OPTIONS, **{name: default_model.get(name) for name in hyperparameters()}}


class TrainOptions:
    """Every setting of a training run (the ``sflnet train`` options), as attributes.

    model:     a registered model name (:mod:`sflnet.models`): "cae" (Ichimura's Table 1 autoencoder),
               "vae" (Dalal's β-VAE), or a plug-in's
    data:      tuple of absolute image file/folder paths (vae: one .npz of digits), or None for the
               built-in images (cae: the demo photos; vae: the MNIST 5k digits)
    size:      longer image side in pixels (0: native size); None for the vae (28×28 digits)
    loss:      a --loss expression (:mod:`sflnet.losses.objective`); :meth:`validate` makes it canonical
    sigmas, sfl_weights, pl_weights: tuples of floats (pl_weights is not a CLI option)
    stft_window, stft_stride, stft_window_fn, stft_phase_weight: the stft loss's settings
    batch_size: 0 for full batch, else images per mini-batch
    snapshot_every: epochs between snapshots; 0 = only the final epoch; None = :func:`default_snapshot_every`
    checkpoint_every: mid-epoch checkpoints with mini-batches, :func:`parse_checkpoint_every` (a time such
               as "10m", the default, a step count such as "500steps", or "0": at epoch ends only)

    and one attribute per hyperparameter of every registered model
    (:attr:`sflnet.models.ModelSpec.hyperparameters`), None where the run's model does not declare it:
    the cae's lr, momentum, init_std (momentum SGD and initialisation); the vae's beta, lr_min, lr_max,
    lr_step, binarize (KL weight, triangular2 cyclical learning rate of Adam between lr_min and lr_max
    with step size lr_step updates, data binarisation) and train_images (the first train_images/10
    digits of each class; None: all 4,000).

    ``TrainOptions(**values)`` starts from :func:`option_defaults` (the default model's);
    :meth:`for_model` starts from a given model's defaults (its hyperparameters' and
    :attr:`sflnet.models.ModelSpec.defaults`). An unknown name is a TypeError.
    """

    def __init__(self, **values):
        defaults = option_defaults()
        unknown = [name for name in values if name not in defaults]
        if unknown:
            raise TypeError(f"TrainOptions() got an unexpected option {unknown[0]!r}")
        for name, default in defaults.items():
            setattr(self, name, values.get(name, default))

    @classmethod
    def option_names(cls):
        """Every option's name, in config.json's order."""
        return tuple(option_defaults())

    def __eq__(self, other):
        return type(other) is type(self) and vars(self) == vars(other)

    def __repr__(self):
        return f"TrainOptions({', '.join(f'{name}={value!r}' for name, value in vars(self).items())})"

    @classmethod
    def for_model(cls, model=DEFAULT_MODEL, **values):
        """Options of a ``model`` run: every hyperparameter unset (None) but the model's own at their
        defaults, then the model's :attr:`ModelSpec.defaults` of shared options, then ``values``."""
        if model not in MODEL_NAMES:
            raise SflnetError(f"--model must be one of {', '.join(MODEL_NAMES)}, got {model!r}")
        spec = get_spec(model)
        own = {h.name: h.default for h in spec.hyperparameters}
        unset = {name: None for name in hyperparameters()}
        return cls(**{**unset, **own, **spec.defaults, **values, "model": model})

    @property
    def spec(self):
        """The :class:`sflnet.models.ModelSpec` of :attr:`model`."""
        return get_spec(self.model)

    def _validate_model_options(self):
        """The options only one model uses: set for it, unset (None, (), False) for the others; then the
        checks of the model's hyperparameters and its own (:attr:`sflnet.models.ModelSpec.validate`)."""
        spec = self.spec
        for name in spec.unused:
            if getattr(self, name) not in (None, (), False):
                raise SflnetError(f"--{name.replace('_', '-')} is not used by --model {self.model}; leave it out")
        for other in (get_spec(name) for name in MODEL_NAMES if name != self.model):
            for name in other.own_options:
                if name not in spec.own_options and getattr(self, name) is not None:
                    raise SflnetError(f"--{name.replace('_', '-')} is only used by --model {other.name}; "
                                      f"leave it out")
        for option in spec.hyperparameters:
            problem = option.problem(getattr(self, option.name))
            if problem is not None:
                raise SflnetError(problem)
        if spec.validate is not None:
            spec.validate(self)

    def validate(self):
        """Raise :class:`SflnetError` (one line naming the option) for any bad value; returns self."""
        if self.model not in MODEL_NAMES:
            raise SflnetError(f"--model must be one of {', '.join(MODEL_NAMES)}, got {self.model!r}")
        if not is_whole_number(self.epochs) or self.epochs < 1:
            raise SflnetError(f"--epochs must be a whole number >= 1, got {self.epochs!r}")
        self._validate_model_options()
        if not is_whole_number(self.seed) or self.seed < 0:
            raise SflnetError(f"--seed must be a whole number >= 0, got {self.seed!r}")
        if not is_whole_number(self.batch_size) or self.batch_size < 0:
            raise SflnetError(f"--batch-size must be 0 (full batch) or positive, got {self.batch_size!r}")
        if self.snapshot_every is not None and (not is_whole_number(self.snapshot_every) or self.snapshot_every < 0):
            raise SflnetError(f"--snapshot-every must be 0 (final epoch only) or positive, "
                              f"got {self.snapshot_every!r}")
        parse_checkpoint_every(self.checkpoint_every)
        self.checkpoint_every = "".join(self.checkpoint_every.split()).lower()   # " 10 M" -> "10m"
        self.loss = canonical(self.loss)
        if not is_whole_number(self.stft_window) or self.stft_window < 1:
            raise SflnetError(f"--stft-window must be a whole number >= 1, got {self.stft_window!r}")
        if not is_whole_number(self.stft_stride) or self.stft_stride < 1:
            raise SflnetError(f"--stft-stride must be a whole number >= 1, got {self.stft_stride!r}")
        if self.stft_window_fn not in STFT_WINDOW_FNS:
            raise SflnetError(f"--stft-window-fn must be one of {', '.join(STFT_WINDOW_FNS)}, "
                              f"got {self.stft_window_fn!r}")
        if not is_finite_number(self.stft_phase_weight) or self.stft_phase_weight < 0:
            raise SflnetError(f"--stft-phase-weight must be a finite number >= 0, got {self.stft_phase_weight!r}")
        if self.device not in DEVICES:
            raise SflnetError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.dtype not in DTYPES:
            raise SflnetError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not self.sigmas:
            raise SflnetError("--sigmas needs at least one value")
        if not all(is_finite_number(s) and s > 0 for s in self.sigmas):
            raise SflnetError(f"--sigmas must all be finite numbers > 0, got {_join(self.sigmas)}")
        labels = [sigma_label(s) for s in self.sigmas]
        if len(set(labels)) != len(labels):
            raise SflnetError(f"--sigmas must be distinct (as printed with 6 significant digits), "
                              f"got {','.join(labels)}")
        if not all(is_finite_number(w) and w >= 0 for w in self.sfl_weights):
            raise SflnetError(f"--sfl-weights must all be finite numbers >= 0, got {_join(self.sfl_weights)}")
        if len(self.sfl_weights) != len(self.sigmas):
            raise SflnetError(f"--sfl-weights has {len(self.sfl_weights)} values but --sigmas has "
                              f"{len(self.sigmas)}; give one weight per sigma")
        channels = self.spec.channels
        if len(self.pl_weights) != channels or not all(is_finite_number(w) and w >= 0 for w in self.pl_weights):
            raise SflnetError(f"pl_weights must be {channels} finite number(s) >= 0 (one per channel), "
                              f"got {_join(self.pl_weights)}")
        # The losses' inline options (--loss pl+stft(window=8)) set their alias fields (stft_window).
        for name, value in resolve(self.loss, self.loss_settings).aliases.items():
            setattr(self, name, value)
        return self

    @property
    def loss_settings(self):
        """The :class:`sflnet.losses.LossSettings` of these options (on the model's value range)."""
        return LossSettings(sigmas=tuple(self.sigmas), sfl_weights=tuple(self.sfl_weights),
                            pl_weights=tuple(self.pl_weights), value_range=self.spec.value_range,
                            stft_window=self.stft_window, stft_stride=self.stft_stride,
                            stft_window_fn=self.stft_window_fn, stft_phase_weight=self.stft_phase_weight)

    @property
    def logged_terms(self):
        """The loss names with an ``E_<NAME>`` history column: the objective's extra terms, then the model's."""
        return extra_terms(self.loss) + tuple(self.spec.logged_terms)

    @property
    def history_columns(self):
        return history_columns(self.sigmas, self.logged_terms)

    @property
    def effective_snapshot_every(self):
        if self.snapshot_every is None:
            return default_snapshot_every(self.epochs)
        return self.snapshot_every

    @property
    def checkpoint_interval(self):
        """:func:`parse_checkpoint_every` of :attr:`checkpoint_every`: None, ("seconds", t) or ("steps", n)."""
        return parse_checkpoint_every(self.checkpoint_every)

    def is_snapshot_epoch(self, epoch):
        """True at multiples of ``snapshot_every`` and at the final epoch."""
        every = self.effective_snapshot_every
        return epoch == self.epochs or (every > 0 and epoch % every == 0)

    def to_config(self):
        """A JSON-friendly dict (tuples become lists), plus ``objective``: the loss with its options."""
        out = {}
        for name in self.option_names():
            value = getattr(self, name)
            out[name] = list(value) if isinstance(value, tuple) else value
        out["snapshot_every"] = self.effective_snapshot_every
        out["objective"] = resolve(self.loss, self.loss_settings).objective   # the loss with its options
        return out

    @classmethod
    def from_config(cls, config, where="config.json", legacy=False):
        """Rebuild from :meth:`to_config` output; SflnetError if malformed.

        legacy: the options come from sflnet 0.1 (--loss "pl"/"sfl", no stft options),
        see :func:`sflnet.io.checkpoint.upgrade_legacy_options`.
        """
        known = cls.option_names()
        config = upgrade_legacy_options(config) if legacy else upgrade_model_options(config)
        config.setdefault("checkpoint_every", DEFAULT_CHECKPOINT_EVERY)   # run folders that predate the option
        try:
            values = {}
            for name in known:
                if name not in config:
                    raise SflnetError(f"{where} has no option {name!r}")
                value = config[name]
                if isinstance(value, list):
                    value = tuple(value)
                values[name] = value
            options = cls(**values)
        except TypeError as exc:
            raise SflnetError(f"{where}: malformed options ({exc})") from None
        return options.validate()


def _join(values):
    return ",".join(str(v) for v in values)


def show_value(value):
    if value is None:
        return "demo images"
    if isinstance(value, (list, tuple)):
        return ",".join(f"{v:g}" if is_finite_number(v) else str(v) for v in value) or "(none)"
    return str(value)


def merge_resume_options(saved_options, overrides, config_path):
    """The options of a resumed run: the saved ones, with ``overrides`` (options the user gave explicitly).

    Run-defining options (:func:`key_options`) must equal the saved values;
    ``epochs``, ``device``, ``snapshot_every`` and ``checkpoint_every`` may change.
    """
    values = saved_options.to_config()
    key = key_options()
    for name, value in overrides.items():
        if name in key:
            if not same_value(value, values[name]):
                flag = "--data" if name == "data" else "--" + name.replace("_", "-")
                raise SflnetError(f"{flag} {show_value(value)} differs from the run's {config_path} "
                                  f"({show_value(values[name])}); a resumed run keeps its settings, start a "
                                  f"new run (another --out) to change them")
        elif name in RESUME_OPTIONS:
            values[name] = value
        else:
            raise ValueError(f"unknown option {name!r}")
    return TrainOptions.from_config(values, where=config_path)
