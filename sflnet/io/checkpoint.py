"""Checkpoints: the network's parameters, the optimiser's state and the run's state in one ``.npz``.

File format (version 3; 4 for a mid-epoch checkpoint)
------------------------------------------------------
A plain NumPy ``.npz`` archive (a zip of ``.npy`` files), readable with
``numpy.load(path, allow_pickle=False)``. It holds only numeric arrays and one
string, never pickled Python objects:

===================  ===========================  ==========================================
key                  shape                        what
===================  ===========================  ==========================================
parameters           the model's shapes           ``w2`` … ``b5`` for the CAE (see ``sflnet.models.cae.PARAM_SHAPES``:
(``w2`` … ``b5``)    (C_out, C_in, kh, kw), (C,)  PyTorch conv layout, weights of a cross-correlation like
                                                  ``torch.nn.Conv2d``), ``sflnet.models.vae.PARAM_SHAPES`` for the VAE
``velocity_<name>``  same as the parameter        momentum SGD velocity ``v`` (``v ← μv − ηg; θ ← θ + v``)
``adam_m_<name>``,   same as the parameter        Adam's first and second moments (VAE checkpoints)
``adam_v_<name>``
``meta``             () unicode                   a JSON document, see below
``partial_rows``     (k, C) float64               mid-epoch checkpoints only: the history values of
                                                  the epoch's k finished steps, one column per
                                                  ``meta["partial_epoch"]["columns"]``
``partial_sizes``    (k,) int64                   mid-epoch checkpoints only: their image counts
===================  ===========================  ==========================================

Which state arrays a model's optimiser keeps is :data:`sflnet.optim.OPTIMIZER_STATE`.
All parameter and state arrays have the run's dtype (float32 or float64)
and live on the host.

``meta`` (JSON) holds:

* ``format`` (``"sflnet-checkpoint"``) and ``format_version``;
* ``sflnet_version`` that wrote the file;
* ``architecture``: ``{"name": "ichimura-table1-cae", "param_shapes": {...}}`` (``"dalal-vae1"`` for the VAE);
* ``optimizer``: ``{"name": "momentum-sgd" or "adam", "step_count": steps taken}`` (Adam's t, the
  learning-rate schedule's position; new in format 3);
* ``epoch``: the number of parameter updates (epochs) **already applied**.
  The checkpoint of "epoch k" holds the parameters after k epochs of
  training; ``epoch`` 0 is the initialisation. Row ``epoch = k + 1`` of the
  run's ``history.csv`` holds the losses measured with exactly these
  parameters (each history row is measured by the forward pass of its epoch,
  before that epoch's update);
* ``config``: the training options (model, loss, sigmas, sfl_weights, pl_weights,
  stft_window, stft_stride, stft_window_fn, stft_phase_weight, lr, momentum,
  init_std, seed, dtype, size, batch_size, data, include, exclude, skip_bad,
  epochs, snapshot_every, and the VAE's beta, lr_min, lr_max, lr_step, binarize, train_images)
  and the data fingerprint. ``loss`` is the canonical
  ``--loss`` expression (``"pl+sfl"``, ``"pl+100*fft"``, ``"pl+stft(window=8)"``); ``objective``
  (files written since the losses own their options; informative, never required) is the
  expression with every loss option resolved, the alias flags folded in
  (:func:`sflnet.losses.resolve`);
* ``rng_state``: ``numpy.random.Generator.bit_generator.state`` of the
  mini-batch shuffling generator (also the VAE's ε), so that a resumed run draws the same
  mini-batches as an uninterrupted one.
* ``partial_epoch`` (format 4, mid-epoch checkpoints only: a stop request or ``--checkpoint-every``
  in the middle of an epoch of mini-batches): ``{"epoch": e, "steps_done": k, "steps": S,
  "start_rng_state": …, "columns": [...], "seconds": s}``. The parameters and optimiser state are
  those after ``epoch`` (= e − 1) whole epochs and the first k of epoch e's S steps; ``rng_state``
  is the generator after those steps; ``start_rng_state`` the generator before epoch e drew its
  shuffled order (which a resume draws again from it); ``partial_rows``/``partial_sizes`` what the
  epoch's history row needs of the finished steps (:func:`sflnet.training.history.combine_rows`),
  ``seconds`` their compute time. history.csv holds rows 1 … e − 1. An epoch-end checkpoint has no
  ``partial_epoch`` and is written as format 3, so sflnet versions that predate mid-epoch
  checkpoints read it, and refuse (format 4 is newer than they read) the mid-epoch ones they could not
  resume.

Loading into PyTorch takes a few lines::

    import numpy as np, torch
    z = np.load("checkpoint.npz", allow_pickle=False)
    convs = {n: torch.nn.Conv2d(*z[f"w{n}"].shape[1::-1], 3, stride=2 if n == 3 else 1, padding=1)
             for n in (2, 3, 4, 5)}   # layer 4 is preceded by bilinear x2 upsampling (then crop)
    for n, conv in convs.items():
        conv.weight.data = torch.from_numpy(z[f"w{n}"]); conv.bias.data = torch.from_numpy(z[f"b{n}"])

Writing is atomic (:func:`atomic_writer`): the archive goes to a temporary
file in the same folder, is flushed and fsync'ed, then renamed over the old
one with :func:`os.replace`, so a crash at any moment leaves either the old or
the new checkpoint, never a half-written one. Non-finite parameters are never
written.

Older files still load, evaluate, reconstruct and resume. Version 1 (sflnet 0.1)
differs in ``config``: ``loss`` was ``"pl"`` or ``"sfl"`` (the latter meaning
``pl+sfl``) and the stft options did not exist (:func:`upgrade_legacy_options`).
Version 2 has no ``optimizer`` entry and no model options: all its runs were CAE
runs with momentum SGD (:func:`upgrade_model_options`). Versions 1 to 3 are epoch-end checkpoints.
:func:`load_checkpoint` returns their config upgraded to today's form.

Loading (:func:`load_checkpoint`) always uses ``allow_pickle=False`` and
checks everything: a broken zip, a file that is not an ``.npz``, missing
arrays, wrong shapes or dtypes, a foreign architecture, an unknown format
version, a malformed ``meta`` or a σ set that differs from the expected one
each raise :class:`SflnetError` with one line naming the file and the problem.
A pickled object inside the archive is refused, never unpickled.
"""

import json
import math
import os
import zipfile
from dataclasses import dataclass

import numpy as np

from sflnet import __version__
from sflnet.backend import DTYPES
from sflnet.errors import SflnetError
from sflnet.io.atomic import atomic_writer, write_npz_atomic, write_text_atomic  # noqa: F401  (re-exported)
from sflnet.losses import LEGACY_EXPRESSIONS, LossSettings, canonical
from sflnet.models import BY_ARCHITECTURE, CAE, REGISTRY
from sflnet.optim import OPTIMIZER_STATE

FORMAT_NAME = "sflnet-checkpoint"
FORMAT_VERSION = 4            # the newest this sflnet reads: 4 = a mid-epoch checkpoint (``partial_epoch``)
EPOCH_END_FORMAT_VERSION = 3  # written for an epoch-end checkpoint (it needs nothing of format 4)
PARTIAL_ARRAYS = ("partial_rows", "partial_sizes")
LEGACY_FORMAT_VERSION = 1     # sflnet 0.1: --loss "pl"/"sfl", no stft options
# Options added after sflnet 0.1, with the values that reproduce a 0.1 run (the defaults).
ADDED_OPTIONS = {"stft_window": LossSettings.stft_window, "stft_stride": LossSettings.stft_stride,
                 "stft_window_fn": LossSettings.stft_window_fn,
                 "stft_phase_weight": LossSettings.stft_phase_weight}
EPOCH_MEANING = ("parameters after `epoch` updates (0 = initialisation); history.csv row "
                 "epoch+1 holds the losses measured with these parameters")


@dataclass
class Checkpoint:
    """A loaded checkpoint, everything on the host.

    params:    {name: ndarray} the model's parameters (PyTorch layout, the run's dtype)
    state:     {prefix: {name: ndarray}} the optimiser's arrays, same shapes and dtype:
               {"velocity": …} for momentum SGD, {"adam_m": …, "adam_v": …} for Adam
    meta:      the decoded ``meta`` JSON (dict)
    path:      the file it came from (str)
    partial:   None for an epoch-end checkpoint; for a mid-epoch one ``meta["partial_epoch"]`` with
               ``rows`` ((k, C) float64) and ``sizes`` ((k,) int64) added (see the module docstring)
    """

    params: dict
    state: dict
    meta: dict
    path: str
    partial: dict = None

    @property
    def spec(self):
        """The :class:`sflnet.models.ModelSpec` of the checkpoint's architecture."""
        return BY_ARCHITECTURE[self.meta["architecture"]["name"]]

    @property
    def velocity(self):
        """The momentum SGD velocity {name: ndarray} (CAE checkpoints)."""
        return self.state["velocity"]

    @property
    def optimizer_step(self):
        """Optimiser steps taken so far (Adam's t; 0 in files that predate format 3)."""
        return self.meta.get("optimizer", {}).get("step_count", 0)

    @property
    def epoch(self):
        """Number of updates already applied to :attr:`params`."""
        return self.meta["epoch"]

    @property
    def config(self):
        """The training options stored with the checkpoint (dict)."""
        return self.meta["config"]

    @property
    def dtype(self):
        return np.dtype(self.meta["config"]["dtype"])

    def rng(self):
        """A new ``numpy.random.Generator`` in the saved mini-batch shuffling state."""
        return generator_from_state(self.meta["rng_state"])


def upgrade_legacy_options(config):
    """A copy of sflnet-0.1 training options in today's form.

    ``loss`` "pl" stays "pl", "sfl" (E = E_PL + E_SFL) becomes "pl+sfl"; the options
    added since (:data:`ADDED_OPTIONS`) get the values that reproduce a 0.1 run.
    Anything else is left for the validation to judge.
    """
    config = dict(config)
    loss = config.get("loss")
    if isinstance(loss, str) and loss in LEGACY_EXPRESSIONS:
        config["loss"] = LEGACY_EXPRESSIONS[loss]
    for name, value in ADDED_OPTIONS.items():
        config.setdefault(name, value)
    return upgrade_model_options(config)


def upgrade_model_options(config):
    """A copy of training options with what files written before a model existed lack: ``model`` "cae"
    (format/config version ≤ 2, all CAE runs), and the other models' hyperparameters
    (:attr:`sflnet.models.ModelSpec.hyperparameters`, e.g. the VAE's, added in format 3) unset (None);
    the model's own options marked ``added_later`` (e.g. the VAE's ``output``) at their default."""
    config = dict(config)
    config.setdefault("model", "cae")
    model = config["model"]
    own_options = REGISTRY[model].hyperparameters if isinstance(model, str) and model in REGISTRY else ()
    own = {h.name for h in own_options}
    for option in own_options:
        if option.added_later:
            config.setdefault(option.name, option.default)
    for spec in REGISTRY.values():
        for option in spec.hyperparameters:
            if option.name not in own:
                config.setdefault(option.name, None)
    return config


def generator_from_state(state):
    """``numpy.random.Generator`` whose bit generator is restored from ``state`` (JSON form).

    Raises ValueError/TypeError/KeyError for a malformed state.
    """
    name = state["bit_generator"]
    bit_generator_class = getattr(np.random, name, None)
    if not (isinstance(bit_generator_class, type)
            and issubclass(bit_generator_class, np.random.BitGenerator)):
        raise ValueError(f"unknown bit generator {name!r}")
    bit_generator = bit_generator_class()
    bit_generator.state = state
    return np.random.Generator(bit_generator)


def architecture_meta(spec=CAE):
    """The ``architecture`` entry of ``meta``: the model's name and every parameter's shape."""
    return {"name": spec.architecture, "param_shapes": {n: list(s) for n, s in spec.param_shapes.items()}}


# ---------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------

def make_meta(epoch, config, rng_state, spec=CAE, optimizer_step=0, partial_epoch=None):
    """The ``meta`` dict of a checkpoint (see the module docstring); ``partial_epoch`` (a dict) makes it
    a mid-epoch checkpoint (format 4), whose ``partial_rows`` and ``partial_sizes`` go to
    :func:`save_checkpoint`."""
    meta = {
        "format": FORMAT_NAME,
        "format_version": EPOCH_END_FORMAT_VERSION if partial_epoch is None else FORMAT_VERSION,
        "sflnet_version": __version__,
        "architecture": architecture_meta(spec),
        "optimizer": {"name": spec.optimizer, "step_count": int(optimizer_step)},
        "epoch": int(epoch),
        "epoch_meaning": EPOCH_MEANING,
        "config": config,
        "rng_state": rng_state,
    }
    if partial_epoch is not None:
        meta["partial_epoch"] = partial_epoch
    return meta


def save_checkpoint(path, params, state, meta, partial_arrays=None):
    """Write a checkpoint atomically.

    params:   {name: array (host or device)}, the model's parameters, all one float dtype
    state:    {prefix: {name: array}}, the optimiser's arrays (``{"velocity": …}`` for momentum SGD,
              ``{"adam_m": …, "adam_v": …}`` for Adam); a missing entry (before the first step) is saved as zeros
    meta:     dict from :func:`make_meta` (must be JSON-serialisable); its architecture names the model
    partial_arrays: a mid-epoch checkpoint's ``{"partial_rows": (k, C) float64, "partial_sizes": (k,) int64}``

    Raises ValueError if any parameter or velocity is not finite (a checkpoint
    must always be a good state to resume from), SflnetError if the file cannot
    be written (the previous file at ``path`` then stays as it was).
    """
    from sflnet.backend import to_host  # noqa: PLC0415  (keeps this module importable alone)

    spec = BY_ARCHITECTURE[meta["architecture"]["name"]]
    arrays = {}
    for name in spec.param_names:
        theta = np.array(to_host(params[name]), copy=True)
        saved = [theta]
        for prefix in OPTIMIZER_STATE[spec.optimizer]:
            held = state.get(prefix, {})
            v = np.array(to_host(held[name]), copy=True) if name in held else np.zeros(theta.shape, theta.dtype)
            arrays[f"{prefix}_{name}"] = v
            saved.append(v)
        if not all(np.isfinite(a).all() for a in saved):
            raise ValueError(f"refusing to save a checkpoint with non-finite values in {name}")
        arrays[name] = theta
    if ("partial_epoch" in meta) != (partial_arrays is not None):
        raise ValueError("a mid-epoch checkpoint needs both meta['partial_epoch'] and its partial arrays")
    for key in PARTIAL_ARRAYS if partial_arrays is not None else ():
        arrays[key] = np.array(partial_arrays[key], dtype=np.float64 if key == "partial_rows" else np.int64)
    arrays["meta"] = np.array(json.dumps(meta, allow_nan=False, sort_keys=True))
    write_npz_atomic(path, arrays, what="checkpoint")


# ---------------------------------------------------------------------------
# Loading and validation
# ---------------------------------------------------------------------------

def _one_line(exc):
    text = " ".join(str(exc).split())
    return text if text else type(exc).__name__


def _read_member(archive, key, path):
    """One array of an open NpzFile; pickles are refused (allow_pickle=False)."""
    try:
        value = archive[key]
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object arrays" in str(exc).lower():
            raise SflnetError(f"refusing checkpoint {path}: array {key!r} holds pickled Python objects, "
                              f"which sflnet never loads") from None
        raise SflnetError(f"corrupt checkpoint {path}: cannot read array {key!r} ({_one_line(exc)})") from None
    except Exception as exc:  # zlib/zip/CRC errors, truncated members
        raise SflnetError(f"corrupt checkpoint {path}: cannot read array {key!r} ({_one_line(exc)})") from None
    if not isinstance(value, np.ndarray):   # NpzFile hands back the raw bytes of a member that is not .npy
        raise SflnetError(f"corrupt checkpoint {path}: member {key!r} is not a NumPy array")
    return value


class _Archive:
    """The members of an open ``.npz``, each read (and decompressed) only when asked for, so a
    foreign or oversized member the checkpoint does not need is never inflated."""

    def __init__(self, archive, path):
        self.archive, self.path, self.loaded = archive, path, {}
        self.files = set(archive.files)

    def __contains__(self, key):
        return key in self.files

    def __getitem__(self, key):
        if key not in self.loaded:
            self.loaded[key] = _read_member(self.archive, key, self.path)
        return self.loaded[key]


def _read_archive(path):
    """The open ``.npz`` at ``path`` (allow_pickle=False), as an :class:`_Archive` context."""
    if not os.path.exists(path):
        raise SflnetError(f"checkpoint file does not exist: {path}")
    if os.path.isdir(path):
        raise SflnetError(f"expected a checkpoint file but got a folder: {path}")
    if not zipfile.is_zipfile(path):
        raise SflnetError(f"not a checkpoint: {path} is not an .npz archive (not a zip file)")
    try:
        archive = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise SflnetError(f"not a checkpoint: {path} cannot be read by numpy.load ({_one_line(exc)})") from None
    except Exception as exc:  # BadZipFile, OSError, EOFError, ...
        raise SflnetError(f"corrupt checkpoint {path}: {_one_line(exc)}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise SflnetError(f"not a checkpoint: {path} is not an .npz archive")
    return archive


def _decode_meta(arrays, path):
    if "meta" not in arrays:
        raise SflnetError(f"not an sflnet checkpoint: {path} has no 'meta' entry")
    raw = arrays["meta"]
    if raw.ndim != 0 or raw.dtype.kind != "U":
        raise SflnetError(f"corrupt checkpoint {path}: 'meta' must be a single unicode string, "
                          f"got dtype {raw.dtype} shape {raw.shape}")
    try:
        meta = json.loads(str(raw.item()))
    except RecursionError:
        raise SflnetError(f"corrupt checkpoint {path}: 'meta' is nested too deeply to be sflnet's JSON") from None
    except ValueError as exc:
        raise SflnetError(f"corrupt checkpoint {path}: 'meta' is not valid JSON ({_one_line(exc)})") from None
    if not isinstance(meta, dict):
        raise SflnetError(f"corrupt checkpoint {path}: 'meta' must be a JSON object")
    return meta


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_meta(meta, path):
    """Format, version, architecture, epoch, config and RNG state of a decoded ``meta``."""
    if meta.get("format") != FORMAT_NAME:
        raise SflnetError(f"not an sflnet checkpoint: {path} has format {meta.get('format')!r}, "
                          f"expected {FORMAT_NAME!r}")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise SflnetError(f"corrupt checkpoint {path}: bad format_version {version!r}")
    if version > FORMAT_VERSION:
        raise SflnetError(f"checkpoint {path} has format version {version}, newer than this sflnet "
                          f"({__version__}) reads ({FORMAT_VERSION}); upgrade sflnet")
    arch = meta.get("architecture")
    name = arch.get("name") if isinstance(arch, dict) else arch
    if not isinstance(name, str) or name not in BY_ARCHITECTURE:
        known = ", ".join(repr(a) for a in BY_ARCHITECTURE)
        raise SflnetError(f"checkpoint {path} is for architecture {_brief(name)}; sflnet only knows {known}")
    if not isinstance(arch, dict):
        raise SflnetError(f"corrupt checkpoint {path}: 'architecture' must be an object with name and "
                          f"param_shapes")
    spec = BY_ARCHITECTURE[name]
    if arch.get("param_shapes") != architecture_meta(spec)["param_shapes"]:
        raise SflnetError(f"checkpoint {path} describes different layer shapes than the {name} network")
    epoch = meta.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise SflnetError(f"corrupt checkpoint {path}: bad epoch {epoch!r}")
    config = meta.get("config")
    if not isinstance(config, dict):
        raise SflnetError(f"corrupt checkpoint {path}: 'config' is missing from meta")
    if version == LEGACY_FORMAT_VERSION:
        config = meta["config"] = upgrade_legacy_options(config)
    elif version < 3:
        config = meta["config"] = upgrade_model_options(config)
    if config.get("model") != spec.name:
        raise SflnetError(f"corrupt checkpoint {path}: config model {config.get('model')!r} does not match its "
                          f"architecture {name!r}")
    for key in ("loss", "sigmas", "sfl_weights", "pl_weights", "dtype", "size", *ADDED_OPTIONS):
        if key not in config:
            raise SflnetError(f"corrupt checkpoint {path}: config has no {key!r}")
    try:
        config["loss"] = canonical(config["loss"], option="loss")
    except SflnetError as exc:
        raise SflnetError(f"corrupt checkpoint {path}: {exc}") from None
    sigmas, weights = config["sigmas"], config["sfl_weights"]
    if (not isinstance(sigmas, list) or not sigmas or not all(_is_number(s) and s > 0 for s in sigmas)):
        raise SflnetError(f"corrupt checkpoint {path}: bad sigma set {sigmas!r}")
    if not isinstance(weights, list) or len(weights) != len(sigmas) or not all(_is_number(w) for w in weights):
        raise SflnetError(f"corrupt checkpoint {path}: sfl_weights {weights!r} do not match sigmas {sigmas!r}")
    pl_weights = config["pl_weights"]
    if not isinstance(pl_weights, list) or len(pl_weights) != spec.channels \
            or not all(_is_number(w) for w in pl_weights):
        raise SflnetError(f"corrupt checkpoint {path}: bad pl_weights {pl_weights!r}")
    if config["dtype"] not in DTYPES:
        raise SflnetError(f"corrupt checkpoint {path}: unknown dtype {config['dtype']!r}")
    size = config["size"]
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise SflnetError(f"corrupt checkpoint {path}: bad image size {size!r}")
    try:
        generator_from_state(meta["rng_state"])
    except Exception as exc:
        raise SflnetError(f"corrupt checkpoint {path}: bad rng_state ({_one_line(exc)})") from None
    _check_optimizer_meta(meta, spec, version, path)
    if version >= 4 or "partial_epoch" in meta:
        _check_partial_meta(meta, version, path)


def _is_count(value, least=0):
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _check_partial_meta(meta, version, path):
    """``meta["partial_epoch"]``: present exactly in format 4, and well formed (see the module docstring)."""
    partial = meta.get("partial_epoch")
    if version < 4:
        raise SflnetError(f"corrupt checkpoint {path}: format version {version} cannot hold 'partial_epoch'")
    if not isinstance(partial, dict):
        raise SflnetError(f"corrupt checkpoint {path}: format 4 needs a 'partial_epoch' object")
    epoch, done, steps = partial.get("epoch"), partial.get("steps_done"), partial.get("steps")
    if not (_is_count(epoch, 1) and epoch == meta["epoch"] + 1):
        raise SflnetError(f"corrupt checkpoint {path}: partial epoch {_brief(epoch)} does not follow epoch "
                          f"{meta['epoch']}")
    if not (_is_count(done, 1) and _is_count(steps, 2) and done < steps):
        raise SflnetError(f"corrupt checkpoint {path}: bad partial epoch position {_brief(done)} of "
                          f"{_brief(steps)} steps")
    columns = partial.get("columns")
    if not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns):
        raise SflnetError(f"corrupt checkpoint {path}: bad partial epoch columns {_brief(columns)}")
    seconds = partial.get("seconds")
    if not (_is_number(seconds) and seconds >= 0):
        raise SflnetError(f"corrupt checkpoint {path}: bad partial epoch seconds {_brief(seconds)}")
    try:
        generator_from_state(partial.get("start_rng_state"))
    except Exception as exc:
        raise SflnetError(f"corrupt checkpoint {path}: bad partial epoch start_rng_state ({_one_line(exc)})") \
            from None


def _partial_arrays(arrays, meta, path):
    """The ``partial_rows`` and ``partial_sizes`` of a mid-epoch checkpoint, checked against its meta."""
    partial = meta["partial_epoch"]
    missing = [key for key in PARTIAL_ARRAYS if key not in arrays]
    if missing:
        raise SflnetError(f"incomplete checkpoint {path}: missing array(s) {', '.join(missing)}")
    rows, sizes = arrays["partial_rows"], arrays["partial_sizes"]
    shape = (partial["steps_done"], len(partial["columns"]))
    if rows.dtype != np.float64 or tuple(rows.shape) != shape:
        raise SflnetError(f"checkpoint {path}: array 'partial_rows' has dtype {rows.dtype} shape "
                          f"{tuple(rows.shape)}, expected float64 {shape}")
    if sizes.dtype != np.int64 or tuple(sizes.shape) != shape[:1] or not (sizes >= 1).all():
        raise SflnetError(f"checkpoint {path}: array 'partial_sizes' must be {shape[0]} int64 image counts >= 1")
    if np.isinf(rows).any():     # nan is a paper's column a step did not measure; inf is never logged
        raise SflnetError(f"checkpoint {path}: array 'partial_rows' holds Inf values")
    return dict(partial, rows=rows, sizes=sizes)


def _check_optimizer_meta(meta, spec, version, path):
    """``meta["optimizer"]`` (format 3): {"name": the architecture's optimiser, "step_count": int ≥ 0}."""
    if "optimizer" not in meta and version < 3:
        return
    optimizer = meta.get("optimizer")
    if not isinstance(optimizer, dict):
        raise SflnetError(f"corrupt checkpoint {path}: 'optimizer' must be an object with name and step_count")
    if optimizer.get("name") != spec.optimizer:
        raise SflnetError(f"corrupt checkpoint {path}: optimizer {_brief(optimizer.get('name'))} is not the "
                          f"{spec.name} model's {spec.optimizer!r}")
    step = optimizer.get("step_count")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise SflnetError(f"corrupt checkpoint {path}: bad optimizer step_count {_brief(step)}")


def _check_arrays(arrays, spec, dtype_name, path):
    """The parameter and optimiser-state arrays: present, right shapes, one float dtype, finite."""
    prefixes = OPTIMIZER_STATE[spec.optimizer]
    expected = {name: shape for name, shape in spec.param_shapes.items()}
    expected.update({f"{prefix}_{name}": shape for prefix in prefixes for name, shape in spec.param_shapes.items()})
    missing = [key for key in expected if key not in arrays]
    if missing:
        raise SflnetError(f"incomplete checkpoint {path}: missing array(s) {', '.join(missing)}")
    for key, shape in expected.items():
        array = arrays[key]
        if tuple(array.shape) != shape:
            raise SflnetError(f"checkpoint {path}: array {key!r} has shape {tuple(array.shape)}, expected "
                              f"{shape} (a different architecture?)")
        if array.dtype != np.dtype(dtype_name):
            raise SflnetError(f"checkpoint {path}: array {key!r} has dtype {array.dtype}, expected {dtype_name}")
        if not np.isfinite(array).all():
            raise SflnetError(f"checkpoint {path}: array {key!r} holds NaN or Inf values")


def _check_expected(config, expect, path):
    """Compare the stored config with ``expect`` ({key: value}); one line on the first mismatch."""
    for key, wanted in expect.items():
        stored = config.get(key)
        if not same_value(stored, wanted):
            raise SflnetError(f"checkpoint {path} does not match: it has {key}={_show(stored)} "
                              f"but {_show(wanted)} is expected")


def same_value(a, b):
    """Config equality: lists/tuples element-wise, numbers compared as floats."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if _is_number(a) and _is_number(b):
        return float(a) == float(b)
    return a == b


def _brief(value, limit=80):
    """``repr(value)`` on one line, cut to ``limit`` characters (for values read from a damaged file)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _show(value):
    if isinstance(value, (list, tuple)):
        return ",".join(f"{v:g}" if _is_number(v) else str(v) for v in value)
    return str(value)


def load_checkpoint(path, expect=None):
    """Read and validate a checkpoint written by :func:`save_checkpoint`.

    path:   the ``.npz`` file
    expect: optional {config key: value} that must match the stored config,
            e.g. ``{"sigmas": [0.8, 1.6, 3.2], "loss": "sfl"}`` (lists compare
            element-wise as floats)

    returns :class:`Checkpoint` (host arrays). Raises :class:`SflnetError`
    (one line naming ``path``) for anything unusable.
    """
    path = os.fspath(path)
    with _read_archive(path) as archive:
        arrays = _Archive(archive, path)
        meta = _decode_meta(arrays, path)
        _check_meta(meta, path)
        spec = BY_ARCHITECTURE[meta["architecture"]["name"]]
        _check_arrays(arrays, spec, meta["config"]["dtype"], path)
        if expect:
            _check_expected(meta["config"], expect, path)
        params = {n: arrays[n] for n in spec.param_names}
        state = {prefix: {n: arrays[f"{prefix}_{n}"] for n in spec.param_names}
                 for prefix in OPTIMIZER_STATE[spec.optimizer]}
        partial = _partial_arrays(arrays, meta, path) if "partial_epoch" in meta else None
    return Checkpoint(params=params, state=state, meta=meta, path=path, partial=partial)
