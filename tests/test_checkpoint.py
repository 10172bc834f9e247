"""Checkpoint files: round trip, validation, atomic writes, refusal of pickles and non-finite values."""

import errno
import json
import os

import numpy as np
import pytest

from sflnet.io import checkpoint as ck
from sflnet.io import atomic
from sflnet.errors import SflnetError
from sflnet.models.cae import PARAM_NAMES, PARAM_SHAPES, init_params

CONFIG = {"model": "cae", "loss": "pl+sfl", "sigmas": [0.8, 1.6, 3.2], "sfl_weights": [100.0, 10.0, 10.0],
          "pl_weights": [1.0, 1.0, 1.0], "stft_window": 16, "stft_stride": 4, "stft_window_fn": "hann",
          "stft_phase_weight": 9.0, "dtype": "float64", "size": 0, "lr": 0.02, "momentum": 0.5}
# The config of a checkpoint written by sflnet 0.1 (format version 1): --loss was "pl" or "sfl" (= pl+sfl).
LEGACY_CONFIG = {"loss": "sfl", "sigmas": [0.8, 1.6, 3.2], "sfl_weights": [100.0, 10.0, 10.0],
                 "pl_weights": [1.0, 1.0, 1.0], "dtype": "float64", "size": 0, "lr": 0.02, "momentum": 0.5}


def _state(dtype=np.float64, seed=0):
    params = init_params(seed=seed, std=0.1, dtype=dtype)
    rng = np.random.default_rng(seed + 100)
    velocity = {n: rng.normal(size=PARAM_SHAPES[n]).astype(dtype) for n in PARAM_NAMES}
    config = dict(CONFIG, dtype=np.dtype(dtype).name)
    generator = np.random.default_rng((seed, 1))
    generator.permutation(10)   # advance it so the state is not the initial one
    return params, velocity, ck.make_meta(7, config, generator.bit_generator.state), generator


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_is_exact(tmp_path, dtype):
    params, velocity, meta, generator = _state(dtype)
    path = tmp_path / "c.npz"
    ck.save_checkpoint(path, params, {"velocity": velocity}, meta)
    loaded = ck.load_checkpoint(path)
    assert loaded.epoch == 7 and loaded.dtype == np.dtype(dtype)
    for name in PARAM_NAMES:
        assert loaded.params[name].tobytes() == params[name].tobytes()
        assert loaded.velocity[name].tobytes() == velocity[name].tobytes()
    assert loaded.config["sigmas"] == [0.8, 1.6, 3.2]
    # The restored generator continues exactly where the saved one stopped.
    np.testing.assert_array_equal(loaded.rng().permutation(50), generator.permutation(50))
    # Readable by plain NumPy without pickles, meta is a 0-d unicode array holding JSON.
    with np.load(path, allow_pickle=False) as archive:
        assert archive["meta"].shape == () and archive["meta"].dtype.kind == "U"
        assert json.loads(str(archive["meta"]))["format"] == "sflnet-checkpoint"


def test_missing_velocity_is_saved_as_zeros(tmp_path):
    params, _, meta, _ = _state()
    ck.save_checkpoint(tmp_path / "c.npz", params, {"velocity": {}}, meta)
    loaded = ck.load_checkpoint(tmp_path / "c.npz")
    assert all(not loaded.velocity[n].any() and loaded.velocity[n].dtype == np.float64 for n in PARAM_NAMES)


def test_non_finite_parameters_are_never_written(tmp_path):
    params, velocity, meta, _ = _state()
    path = tmp_path / "c.npz"
    ck.save_checkpoint(path, params, {"velocity": velocity}, meta)
    before = path.read_bytes()
    bad = dict(params, b4=np.full(PARAM_SHAPES["b4"], np.nan))
    with pytest.raises(ValueError, match="non-finite"):
        ck.save_checkpoint(path, bad, {"velocity": velocity}, meta)
    assert path.read_bytes() == before


@pytest.mark.parametrize("failing", ["savez", "replace", "mkstemp"])
def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch, failing):
    """Disk full while writing, a failing rename, or a read-only folder: one-line error, old file intact."""
    params, velocity, meta, _ = _state()
    path = tmp_path / "c.npz"
    ck.save_checkpoint(path, params, {"velocity": velocity}, meta)
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        if failing == "savez":      # write part of the data first, like a real full disk
            args[0].write(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    if failing == "savez":
        monkeypatch.setattr(ck.np, "savez", disk_full)
    elif failing == "replace":
        monkeypatch.setattr(ck.os, "replace", disk_full)
    else:
        monkeypatch.setattr(atomic.tempfile, "mkstemp", read_only)   # atomic writing lives in sflnet.io.atomic
    new_params = {n: p + 1 for n, p in params.items()}
    with pytest.raises(SflnetError) as info:
        ck.save_checkpoint(path, new_params, {"velocity": velocity}, meta)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert ("No space left" in message) or ("Permission denied" in message)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"]   # no temporary file left behind
    assert ck.load_checkpoint(path).params["w2"].tobytes() == params["w2"].tobytes()


def test_loading_never_allows_pickles(tmp_path, monkeypatch):
    params, velocity, meta, _ = _state()
    ck.save_checkpoint(tmp_path / "c.npz", params, {"velocity": velocity}, meta)
    calls = []
    real_load = np.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("allow_pickle"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(ck.np, "load", spy)
    ck.load_checkpoint(tmp_path / "c.npz")
    assert calls == [False]


class _Armed:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickled_member_is_refused_and_not_executed(tmp_path):
    """A pickled array where sflnet needs one is refused; a pickled extra member is never even read
    (members are inflated only when needed). Neither is ever unpickled."""
    params, velocity, meta, _ = _state()
    marker = tmp_path / "unpickled"
    arrays = {**params, **{f"velocity_{n}": v for n, v in velocity.items()}, "meta": np.array(json.dumps(meta))}
    with open(tmp_path / "evil.npz", "wb") as stream:
        np.savez(stream, **dict(arrays, w2=np.array([_Armed(marker)], dtype=object)))
    with pytest.raises(SflnetError, match="pickle"):
        ck.load_checkpoint(tmp_path / "evil.npz")
    with open(tmp_path / "extra.npz", "wb") as stream:
        np.savez(stream, **dict(arrays, extra=np.array([_Armed(marker)], dtype=object)))
    assert ck.load_checkpoint(tmp_path / "extra.npz").epoch == meta["epoch"]
    assert not marker.exists()


def test_write_npz_atomic_refuses_object_arrays(tmp_path):
    with pytest.raises(ValueError, match="objects"):
        ck.write_npz_atomic(tmp_path / "x.npz", {"a": np.array([{}], dtype=object)})
    assert not list(tmp_path.iterdir())


def _save_with_meta(tmp_path, change):
    params, velocity, meta, _ = _state()
    change(meta)
    arrays = {**params, **{f"velocity_{n}": v for n, v in velocity.items()}, "meta": np.array(json.dumps(meta))}
    path = tmp_path / "m.npz"
    with open(path, "wb") as stream:
        np.savez(stream, **arrays)
    return path


@pytest.mark.parametrize("change, fragment", [
    (lambda m: m.update(format="something-else"), "not an sflnet checkpoint"),
    (lambda m: m.update(format_version=99), "upgrade"),
    (lambda m: m["architecture"].update(name="unet"), "architecture"),
    (lambda m: m["architecture"]["param_shapes"].update(w2=[64, 3, 3, 3]), "shapes"),
    (lambda m: m.update(epoch=-1), "epoch"),
    (lambda m: m["config"].update(sigmas=[]), "sigma"),
    (lambda m: m["config"].update(sfl_weights=[1.0]), "sfl_weights"),
    (lambda m: m["config"].update(dtype="float16"), "dtype"),
    (lambda m: m["config"].pop("loss"), "loss"),
    (lambda m: m.update(rng_state={"bit_generator": "os.system"}), "rng_state"),
    (lambda m: m["config"].update(dtype="float32"), "dtype"),   # arrays are float64
])
def test_malformed_meta_is_refused(tmp_path, change, fragment):
    path = _save_with_meta(tmp_path, change)
    with pytest.raises(SflnetError) as info:
        ck.load_checkpoint(path)
    assert fragment.lower() in str(info.value).lower() and "\n" not in str(info.value)
    assert str(path) in str(info.value)


def test_meta_that_is_not_json(tmp_path):
    params, velocity, _, _ = _state()
    arrays = {**params, **{f"velocity_{n}": v for n, v in velocity.items()}, "meta": np.array("{not json")}
    with open(tmp_path / "m.npz", "wb") as stream:
        np.savez(stream, **arrays)
    with pytest.raises(SflnetError, match="JSON"):
        ck.load_checkpoint(tmp_path / "m.npz")


def test_expected_config_must_match(tmp_path):
    params, velocity, meta, _ = _state()
    ck.save_checkpoint(tmp_path / "c.npz", params, {"velocity": velocity}, meta)
    assert ck.load_checkpoint(tmp_path / "c.npz", expect={"sigmas": (0.8, 1.6, 3.2), "loss": "pl+sfl"})
    with pytest.raises(SflnetError, match="sigmas=0.8,1.6,3.2"):
        ck.load_checkpoint(tmp_path / "c.npz", expect={"sigmas": (0.8, 1.6)})
    with pytest.raises(SflnetError, match="loss"):
        ck.load_checkpoint(tmp_path / "c.npz", expect={"loss": "pl"})


def test_a_folder_and_a_missing_file(tmp_path):
    with pytest.raises(SflnetError, match="folder"):
        ck.load_checkpoint(tmp_path)
    with pytest.raises(SflnetError, match="does not exist"):
        ck.load_checkpoint(tmp_path / "nope.npz")


@pytest.mark.parametrize("legacy_loss, expression", [("sfl", "pl+sfl"), ("pl", "pl")])
def test_a_version_1_checkpoint_loads_with_its_loss_upgraded(tmp_path, legacy_loss, expression):
    """sflnet 0.1 wrote format_version 1, loss "pl"/"sfl" and no stft options; they still load."""
    params, velocity, meta, _ = _state()
    meta = dict(meta, format_version=1, config=dict(LEGACY_CONFIG, loss=legacy_loss))
    ck.save_checkpoint(tmp_path / "old.npz", params, {"velocity": velocity}, meta)
    loaded = ck.load_checkpoint(tmp_path / "old.npz", expect={"loss": expression, "stft_window": 16})
    assert loaded.config["loss"] == expression
    assert {k: loaded.config[k] for k in ck.ADDED_OPTIONS} == {
        "stft_window": 16, "stft_stride": 4, "stft_window_fn": "hann", "stft_phase_weight": 9.0}


def test_a_checkpoint_with_a_bad_loss_expression_is_refused(tmp_path):
    params, velocity, meta, _ = _state()
    meta["config"]["loss"] = "pl+zz"
    ck.save_checkpoint(tmp_path / "c.npz", params, {"velocity": velocity}, meta)
    with pytest.raises(SflnetError, match="corrupt checkpoint .*zz"):
        ck.load_checkpoint(tmp_path / "c.npz")
    meta["config"]["loss"] = "sfl"    # ambiguous in version 2: never silently read as pl+sfl
    ck.save_checkpoint(tmp_path / "c.npz", params, {"velocity": velocity}, meta)
    with pytest.raises(SflnetError, match="ambiguous"):
        ck.load_checkpoint(tmp_path / "c.npz")
