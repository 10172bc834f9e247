"""Everything a lent GPU must show, in one command and one report.

Run from the repository root on a machine with a CUDA GPU, after
``pip install ".[gpu-cuda13,test]"`` (or ``".[gpu,test]"`` for CUDA 12.x)::

    python validation/gpu_check.py --out validation/results/gpu            # about 8 minutes on an H100
    python validation/gpu_check.py --quick --out /tmp/gpu                  # under 2 minutes

It runs in one process (pytest in a child) and writes ``DIR/report.json`` and ``DIR/report.md``:

* **device**: GPU name, memory, CUDA runtime and driver, CuPy; or the plain statement that this is not
  a real GPU (the strict CuPy test double of ``tests/strict_cupy``, or no CuPy at all). Then every
  timing in the report is marked "not a GPU timing".
* **correctness**: pytest on the CuPy-parametrised tests (``-k "cupy or gpu"``, on real CuPy:
  passed, failed, skipped); the gradient-check suite on the GPU (what ``sflnet gradcheck --device gpu`` runs); one
  full-batch step (losses and gradients, no update) in float32 and float64 on the GPU against the
  CPU, on the demo images and on generated mixed-size images, with the worst relative differences.
* **speed**: a full-batch float32 training epoch (forward, ``pl+sfl``, backward, momentum update) of
  the 8 demo images and of 70 generated photo-like images with the sizes of the paper's 70 Willow
  images, at 300 px: CUDA events, warm-up, the median of 20 (5 with ``--quick``); a per-layer
  breakdown with events around every layer; and PyTorch + cuDNN on the same GPU when torch with CUDA
  is installed (channels-last, the same loss with the literal 27×27 LoG convolution, TF32 off).
* **memory**: the CuPy memory pool's high-water mark over one Willow-sized epoch.
* **syncs**: device→host transfers per training step, counted (exactly by the test double's
  counters; on real CuPy by wrapping ``sflnet.backend.to_host`` and ``cupy.asnumpy``).
* **train**: ``sflnet train --device gpu`` for 20 epochs at 300 px on the demo images, its first
  history row against a CPU run's.

and says which goals are met: a Willow-sized epoch ≤ 30 ms, and ≤ 1.0× PyTorch + cuDNN.

Under the test double (``PYTHONPATH=tests/strict_cupy``), ``--quick`` shrinks the images to 32 px and
runs a few checks only, so that CI runs the whole script end to end in seconds.
"""

import argparse
import contextlib
import csv
import importlib.util
import io
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

# The sflnet API this script uses, all of it (adjust here when modules move).
from sflnet import __version__ as SFLNET_VERSION
from sflnet import backend
from sflnet.bench import BREAKDOWN_KEYS, group_by_shape, make_model
from sflnet.io.images import load_dataset
from sflnet.gradcheck import run_suite
from sflnet.models.cae import DEFAULT_MAX_CHUNK_PIXELS, init_params
from sflnet.training.step import train_step
from sflnet_cli.main import cli as sflnet_command
from sflnet.errors import run_script

REPO = Path(__file__).resolve().parent.parent

# The sizes (H, W) of the paper's 70 Willow images at longer side 300 px, with their counts
# (from validation/results/bench_cpu_willow70.json; the images themselves are never stored here).
WILLOW_SIZES = {(153, 300): 1, (179, 300): 1, (190, 300): 1, (195, 300): 1, (198, 300): 2, (200, 300): 16,
                (201, 300): 5, (209, 300): 3, (210, 300): 2, (220, 300): 1, (225, 300): 27, (226, 300): 1,
                (227, 300): 1, (236, 300): 2, (247, 300): 1, (249, 300): 1, (268, 300): 1, (269, 300): 2,
                (297, 300): 1}
WILLOW_SIZES_FLAT = [shape for shape, n in WILLOW_SIZES.items() for _ in range(n)]    # 70
MIXED_SIZES = ((3, 40, 52), (2, 33, 47), (1, 29, 29))     # (count, H, W) for the correctness step
GOAL_EPOCH_MS = 30.0
GOAL_TORCH_RATIO = 1.0
LOSS = "pl+sfl"
NOT_A_GPU = "not a GPU timing"


# ---------------------------------------------------------------------------
# Device
# ---------------------------------------------------------------------------

def device_section():
    """(section dict, xp or None). xp is CuPy (real or the double) when it works, else None."""
    try:
        xp = backend.select_device("gpu")
    except Exception as exc:  # SflnetError: no CuPy, or no usable device
        return {"real_gpu": False, "statement": f"This is not a real GPU: no usable CuPy ({exc}).",
                "cupy": None}, None
    if getattr(xp, "STRICT_DOUBLE", False):
        return {"real_gpu": False, "cupy": "strict CuPy test double (tests/strict_cupy, NumPy underneath)",
                "statement": "This is not a real GPU: CuPy is the strict test double of tests/strict_cupy, "
                             "which computes with NumPy on the CPU; every timing below is not a GPU timing."}, xp
    runtime = xp.cuda.runtime
    props = runtime.getDeviceProperties(xp.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    free, total = xp.cuda.Device().mem_info
    return {"real_gpu": True, "statement": f"A real GPU: {name}.", "name": name,
            "memory_bytes": int(total), "free_bytes": int(free),
            "compute_capability": str(xp.cuda.Device().compute_capability),
            "cuda_runtime": _cuda_version(runtime.runtimeGetVersion()),
            "driver": _cuda_version(runtime.driverGetVersion()), "cupy": xp.__version__}, xp


def _cuda_version(number):
    """CUDA's integer version (e.g. 12040) as "12.4"."""
    return f"{number // 1000}.{number % 1000 // 10}"


# ---------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------

def photo_like(rng, height, width):
    """A (3, H, W) float32 image in [−1, 1] that looks a little like a photo: smooth colour fields at
    several scales, a few sharp-edged rectangles (edges for the LoG bank), and a little noise."""
    image = np.zeros((3, height, width))
    for sigma, amplitude in ((height / 6, 1.0), (height / 25, 0.5), (1.5, 0.15)):
        image += amplitude * ndimage.gaussian_filter(rng.standard_normal((3, height, width)), (0, sigma, sigma))
    for _ in range(4):
        top, left = rng.integers(0, height - 8), rng.integers(0, width - 8)
        image[:, top:top + rng.integers(4, height // 3 + 5), left:left + rng.integers(4, width // 3 + 5)] += \
            rng.uniform(-1, 1, (3, 1, 1))
    image += 0.02 * rng.standard_normal(image.shape)
    image = image - image.mean()
    return (0.95 * image / np.abs(image).max()).astype(np.float32)


def willow_like(size, count=70, seed=0):
    """Photo-like images with the Willow sizes, scaled to longer side ``size`` (300: as they are).

    count: 70 for all of them; fewer takes the most common sizes first (the CI run under the double).
    """
    rng = np.random.default_rng(seed)
    by_frequency = sorted(WILLOW_SIZES.items(), key=lambda item: (-item[1], item[0]))
    sizes = [shape for shape, n in by_frequency for _ in range(n)][:count]
    return [photo_like(rng, max(12, round(h * size / 300)), max(12, round(w * size / 300))) for h, w in sizes]


def mixed_images(scale=1.0, seed=1):
    """A few generated images in three sizes (the correctness step's mixed-size batch)."""
    rng = np.random.default_rng(seed)
    return [photo_like(rng, max(12, round(h * scale)), max(12, round(w * scale)))
            for count, h, w in MIXED_SIZES for _ in range(count)]


def demo_images(size):
    """The 8 built-in demo images at longer side ``size`` (float32, host)."""
    return list(load_dataset(None, size=size, dtype=np.float32).images)


# ---------------------------------------------------------------------------
# Correctness
# ---------------------------------------------------------------------------

def pytest_section(settings, device):
    """Run the CuPy-parametrised tests in a child pytest; counts of passed, failed, skipped."""
    if settings["pytest"] is None:
        return {"status": "skipped", "why": settings["pytest_skip_why"]}
    env = dict(os.environ)
    if device["real_gpu"]:
        env["SFLNET_TEST_CUPY"] = "real"      # on the GPU: real CuPy, never the double
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *settings["pytest"]]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env,
                              timeout=settings["pytest_timeout"])
        output, returncode = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:     # what it printed so far still counts
        partial = exc.stdout or ""
        output = partial.decode(errors="replace") if isinstance(partial, bytes) else partial
        returncode = "timeout"
    counts = {kind: 0 for kind in ("passed", "failed", "skipped", "errors", "deselected")}
    summary = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed|skipped|error)", line)]
    for number, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", summary[-1] if summary else ""):
        counts["errors" if kind.startswith("error") else kind] = int(number)
    failures = [line for line in output.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    return {"status": "ok" if returncode == 0 else "failed", "command": " ".join(command[1:]),
            "returncode": returncode, **counts, "failures": failures[:30],
            "summary": summary[-1].strip("= ") if summary else (output.strip().splitlines() or [""])[-1],
            "seconds": round(time.perf_counter() - start, 1)}


def gradcheck_section(settings):
    """The gradient-check suite with the GPU rows (``sflnet gradcheck --device gpu``)."""
    start = time.perf_counter()
    report = run_suite(device="gpu", layer=settings["gradcheck_layers"])
    rows = report.rows
    by_device = {}
    for row in rows:
        tally = by_device.setdefault(row.device, {"rows": 0, "failed": 0})
        tally["rows"] += 1
        tally["failed"] += 0 if row.passed else 1
    return {"status": "ok" if report.passed else "failed", "layers": settings["gradcheck_layers"] or "all",
            "rows": len(rows), "by_device": by_device, "gpu_note": report.gpu_note,
            "failed_rows": [f"{r.device} {r.layer} {r.check}: {r.error} > {r.threshold}" for r in rows
                            if not r.passed][:30],
            "seconds": round(time.perf_counter() - start, 1)}


def relative_difference(a, b):
    """max |a − b| / max(max |b|, 1e-30) over the arrays (b is the CPU's)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


def one_step(images, xp, dtype):
    """Losses and gradients of one full-batch step (no update) from the seed-0 initial weights, on the host."""
    groups = group_by_shape(images, xp, dtype)
    model, _ = make_model(init_params(seed=0, dtype=dtype, xp=xp), LOSS, DEFAULT_MAX_CHUNK_PIXELS)
    result = model.loss_and_grads(groups)
    losses = {"E": result.E, **{f"E_{name}": value for name, value in (result.terms or {}).items()}}
    return losses, {name: backend.to_host(g) for name, g in result.grads.items()}


def gpu_vs_cpu_section(xp, settings):
    """float32 and float64: the GPU's losses and gradients against the CPU's, worst relative differences."""
    cases = {f"demo images at {settings['compare_size']} px": demo_images(settings["compare_size"]),
             "generated mixed-size images": mixed_images(settings["mixed_scale"])}
    section = {"tolerance": {"float32": 1e-3, "float64": 1e-9}, "cases": {}}
    worst_ok = True
    for case, images in cases.items():
        for dtype in (np.float32, np.float64):
            gpu_losses, gpu_grads = one_step(images, xp, dtype)
            cpu_losses, cpu_grads = one_step(images, np, dtype)
            loss_diff = {name: relative_difference(gpu_losses[name], cpu_losses[name]) for name in cpu_losses}
            grad_diff = {name: relative_difference(gpu_grads[name], cpu_grads[name]) for name in cpu_grads}
            worst = max(max(loss_diff.values()), max(grad_diff.values()))
            ok = worst <= section["tolerance"][np.dtype(dtype).name]
            worst_ok = worst_ok and ok
            section["cases"][f"{case}, {np.dtype(dtype).name}"] = {
                "images": len(images), "worst_loss": max(loss_diff.values()), "worst_grad": max(grad_diff.values()),
                "worst_grad_param": max(grad_diff, key=grad_diff.get), "losses": loss_diff, "ok": ok}
    section["status"] = "ok" if worst_ok else "failed"
    return section


# ---------------------------------------------------------------------------
# Speed, memory and syncs
# ---------------------------------------------------------------------------

def event_times(step, xp, repeat, warmup):
    """Milliseconds of ``step()`` by CUDA events (start and end recorded around it), after warm-up."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeat):
        start, end = xp.cuda.Event(), xp.cuda.Event()
        start.record()
        step()
        end.record()
        end.synchronize()
        times.append(float(xp.cuda.get_elapsed_time(start, end)))
    return times


def summary_ms(times, gpu_timing):
    entry = {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "n": len(times)}
    if not gpu_timing:
        entry["note"] = NOT_A_GPU
    return entry


class EventBreakdown:
    """CUDA events around every layer's forward and backward (no sync per call: read after the epoch).

    The keys are :data:`sflnet.bench.BREAKDOWN_KEYS`, wrapped as ``sflnet.bench.layer_breakdown`` does.
    """

    def __init__(self, model, optimizer, xp):
        self.xp, self.pairs = xp, []
        for name in ("conv2", "conv3", "conv4", "conv5"):
            self._wrap(getattr(model, name), ("forward", "backward"), name)
        for layer in model.layers:
            if layer in (model.conv2, model.conv3, model.conv4, model.conv5):
                continue
            self._wrap(layer, ("forward", "backward"), "upsample" if layer is model.up4 else "activations")
        self._wrap(model.sfl_loss, ("forward", "backward"), "LoG loss")
        self._wrap(model.pixel_loss, ("forward", "backward"), "pixel loss")
        self._wrap(optimizer, ("step",), "update")

    def _wrap(self, obj, methods, key):
        for method in methods:
            original = getattr(obj, method)

            def timed(*args, _original=original, **kwargs):
                start, end = self.xp.cuda.Event(), self.xp.cuda.Event()
                start.record()
                result = _original(*args, **kwargs)
                end.record()
                self.pairs.append((key, start, end))
                return result

            setattr(obj, method, timed)

    def collect(self):
        """{key: ms} of the events recorded since the last call (after a device sync)."""
        self.pairs[-1][2].synchronize() if self.pairs else None
        ms = {}
        for key, start, end in self.pairs:
            ms[key] = ms.get(key, 0.0) + float(self.xp.cuda.get_elapsed_time(start, end))
        self.pairs = []
        return ms


def breakdown(images, xp, epochs):
    """Median ms per layer over ``epochs`` instrumented float32 epochs, plus ``epoch`` and ``other``."""
    groups = group_by_shape(images, xp, np.float32)
    model, optimizer = make_model(init_params(seed=0, dtype=np.float32, xp=xp), LOSS, DEFAULT_MAX_CHUNK_PIXELS)
    train_step(model, optimizer, groups)
    timer = EventBreakdown(model, optimizer, xp)
    rounds = []
    for _ in range(epochs):
        epoch = event_times(lambda: train_step(model, optimizer, groups), xp, 1, 0)[0]
        ms = timer.collect()
        parts = {key: ms.get(key, 0.0) for key in BREAKDOWN_KEYS if key != "other"}
        parts["other"] = max(0.0, epoch - sum(parts.values()))
        parts["epoch"] = epoch
        rounds.append(parts)
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}


def torch_cuda_available():
    if importlib.util.find_spec("torch") is None:
        return False, "torch is not installed"
    import torch  # noqa: PLC0415  (optional: only for the comparison)
    if not torch.cuda.is_available():
        return False, "torch is installed without a usable CUDA device"
    return True, f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}"


def torch_epoch_ms(images, repeat, warmup):
    """PyTorch + cuDNN on the same images: channels-last, pl+sfl with the literal LoG conv, TF32 off."""
    import torch  # noqa: PLC0415
    from sflnet.bench.torch_reference import TorchReference  # noqa: PLC0415  (imports torch at its top)

    groups = group_by_shape(images, np, np.float32)
    reference = TorchReference(init_params(seed=0, dtype=np.float32), device="cuda", loss=LOSS,
                               memory_format="channels_last")
    tensors = reference.prepare(groups)
    for _ in range(warmup):
        reference.train_step(tensors)
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        reference.train_step(tensors)
        end.record()
        end.synchronize()
        times.append(float(start.elapsed_time(end)))
    return times


def speed_section(xp, device, settings):
    """Epoch timings (demo and Willow-sized), the per-layer breakdown, and PyTorch + cuDNN."""
    gpu_timing = device["real_gpu"]
    size = settings["speed_size"]
    cases = {f"8 demo images at {size} px": demo_images(size),
             f"{settings['willow_count']} Willow-sized generated images at {size} px":
                 willow_like(size, settings["willow_count"])}
    torch_ok, torch_why = torch_cuda_available() if gpu_timing else (False, "not a real GPU")
    section = {"size": size, "dtype": "float32", "loss": LOSS, "repeat": settings["repeat"],
               "warmup": settings["warmup"], "timer": "CUDA events around each training step",
               "torch": torch_why, "cases": {}}
    for case, images in cases.items():
        groups = group_by_shape(images, xp, np.float32)
        model, optimizer = make_model(init_params(seed=0, dtype=np.float32, xp=xp), LOSS, DEFAULT_MAX_CHUNK_PIXELS)
        times = event_times(lambda: train_step(model, optimizer, groups), xp, settings["repeat"], settings["warmup"])
        entry = {"images": len(images), "pixels": int(sum(i.shape[1] * i.shape[2] for i in images)),
                 "sflnet": summary_ms(times, gpu_timing)}
        del model, optimizer, groups
        entry["breakdown_ms"] = breakdown(images, xp, settings["breakdown_epochs"])
        if torch_ok:
            torch_times = torch_epoch_ms(images, settings["repeat"], settings["warmup"])
            entry["torch_channels_last"] = summary_ms(torch_times, gpu_timing)
            entry["ratio_vs_torch"] = entry["sflnet"]["median_ms"] / entry["torch_channels_last"]["median_ms"]
        section["cases"][case] = entry
    return section


def memory_section(xp, device, settings):
    """The CuPy pool's high-water mark over one Willow-sized epoch (the pool keeps every block it took)."""
    pool = xp.get_default_memory_pool()
    pool.free_all_blocks()
    groups = group_by_shape(willow_like(settings["speed_size"], settings["willow_count"]), xp, np.float32)
    images_bytes = int(pool.total_bytes())
    model, optimizer = make_model(init_params(seed=0, dtype=np.float32, xp=xp), LOSS, DEFAULT_MAX_CHUNK_PIXELS)
    train_step(model, optimizer, groups)
    backend.synchronize(xp)
    section = {"case": f"{settings['willow_count']} Willow-sized images at {settings['speed_size']} px, "
                       "float32, one epoch",
               "pool_high_water_bytes": int(pool.total_bytes()), "images_bytes": images_bytes,
               "pool_used_after_bytes": int(pool.used_bytes())}
    if not device["real_gpu"]:
        section["note"] = "the test double's pool counts NumPy buffers; not GPU memory"
    return section


@contextlib.contextmanager
def counted_transfers(xp):
    """Count calls of ``sflnet.backend.to_host`` (wherever sflnet imported it by name) and ``cupy.asnumpy``."""
    count = {"to_host": 0, "asnumpy": 0}
    original_to_host, original_asnumpy = backend.to_host, xp.asnumpy

    def to_host(array):
        count["to_host"] += 1
        return original_to_host(array)

    def asnumpy(*args, **kwargs):
        count["asnumpy"] += 1
        return original_asnumpy(*args, **kwargs)

    patched = [module for name, module in sys.modules.items()
               if name.startswith(("sflnet", "sflnet_cli")) and getattr(module, "to_host", None) is original_to_host]
    for module in patched:
        module.to_host = to_host
    xp.asnumpy = asnumpy
    try:
        yield count
    finally:
        for module in patched:
            module.to_host = original_to_host
        xp.asnumpy = original_asnumpy


def syncs_section(xp, device, settings):
    """Device→host syncs per training step, for a few steps after the first."""
    groups = group_by_shape(mixed_images(settings["mixed_scale"]), xp, np.float32)
    model, optimizer = make_model(init_params(seed=0, dtype=np.float32, xp=xp), LOSS, DEFAULT_MAX_CHUNK_PIXELS)
    train_step(model, optimizer, groups)        # the first step uploads filter taps and weights once
    steps = 3
    counters = getattr(xp, "strict_counters", None)
    if counters is not None:
        counters.reset()
    with counted_transfers(xp) as count:
        for _ in range(steps):
            train_step(model, optimizer, groups)
    section = {"steps": steps, "to_host_per_step": count["to_host"] / steps,
               "asnumpy_per_step": count["asnumpy"] / steps, "budget_per_step": 1}
    if counters is not None:
        section["method"] = "the strict double's counters (every transfer and host-blocking sync)"
        section["syncs_per_step"] = counters.syncs / steps
        section["uploads_per_step"] = counters.uploads / steps
        section["by_kind"] = {k: v for k, v in counters.as_dict().items() if v}
    else:
        section["method"] = ("wrapped sflnet.backend.to_host and cupy.asnumpy; implicit conversions "
                             "(float() or .item() of a device array) are not seen on real CuPy")
        section["syncs_per_step"] = (count["to_host"] + count["asnumpy"]) / steps
    section["status"] = "ok" if section["syncs_per_step"] <= section["budget_per_step"] else "failed"
    return section


# ---------------------------------------------------------------------------
# The train command
# ---------------------------------------------------------------------------

def run_train(arguments):
    """``sflnet train ARGUMENTS`` in this process; returns (exit status, captured output)."""
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        try:
            sflnet_command.main(args=["train", *arguments], prog_name="sflnet", standalone_mode=False)
            status = 0
        except SystemExit as exc:
            status = exc.code or 0
        except Exception as exc:  # an SflnetError or a crash: recorded, not raised
            output.write(f"\nError: {type(exc).__name__}: {exc}")
            status = 1
    return status, output.getvalue()


def read_history(run_dir):
    with open(Path(run_dir) / "history.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def train_section(device, settings):
    """A short GPU training run through the CLI, its first history row against a CPU run's."""
    size, epochs = settings["train_size"], settings["train_epochs"]
    with tempfile.TemporaryDirectory(prefix="sflnet-gpu-check-") as tmp:
        common = ["--size", str(size), "--snapshot-every", str(epochs)]
        gpu_status, gpu_output = run_train([*common, "--epochs", str(epochs), "--device", "gpu",
                                            "--out", f"{tmp}/gpu"])
        cpu_status, cpu_output = run_train([*common, "--epochs", "1", "--device", "cpu", "--out", f"{tmp}/cpu"])
        section = {"command": f"sflnet train --device gpu --size {size} --epochs {epochs}",
                   "gpu_exit": gpu_status, "cpu_exit": cpu_status}
        if gpu_status or cpu_status:
            section.update(status="failed", output=(gpu_output + cpu_output)[-2000:])
            return section
        gpu_rows, cpu_rows = read_history(f"{tmp}/gpu"), read_history(f"{tmp}/cpu")
    first = {key: relative_difference(float(gpu_rows[0][key]), float(cpu_rows[0][key]))
             for key in cpu_rows[0] if key not in ("epoch", "seconds")}
    seconds = [float(row["seconds"]) for row in gpu_rows[1:]] or [float(gpu_rows[0]["seconds"])]
    section.update(epochs_written=len(gpu_rows), first_epoch_rel_diff=first, worst_first_epoch=max(first.values()),
                   median_epoch_seconds=statistics.median(seconds), tolerance=1e-3)
    if not device["real_gpu"]:
        section["note"] = NOT_A_GPU
    section["status"] = "ok" if len(gpu_rows) == epochs and section["worst_first_epoch"] <= 1e-3 else "failed"
    return section


# ---------------------------------------------------------------------------
# Goals and the report
# ---------------------------------------------------------------------------

def goals(report):
    """Which goals are met: Willow-sized epoch ≤ 30 ms, ≤ 1.0× PyTorch + cuDNN.

    Judged only on a real GPU with all 70 Willow sizes at 300 px; otherwise ``met`` is None and ``why`` says why.
    """
    speed = report.get("speed") or {}
    willow = next((entry for case, entry in speed.get("cases", {}).items() if "Willow-sized" in case), None)
    judged = (report["device"]["real_gpu"] and speed.get("size") == 300 and willow is not None
              and willow["images"] == len(WILLOW_SIZES_FLAT))
    why = None if judged else ("not judged: not a GPU timing" if not report["device"]["real_gpu"]
                               else "not judged: not all 70 Willow sizes at 300 px")
    epoch_ms = willow["sflnet"]["median_ms"] if willow else None
    ratio = willow.get("ratio_vs_torch") if willow else None
    return {
        "willow_epoch_le_30ms": {"value_ms": epoch_ms, "goal_ms": GOAL_EPOCH_MS,
                                 "met": (epoch_ms <= GOAL_EPOCH_MS) if judged else None, "why": why},
        "le_1x_torch_cudnn": {"ratio": ratio, "goal": GOAL_TORCH_RATIO,
                              "met": (ratio <= GOAL_TORCH_RATIO) if judged and ratio is not None else None,
                              "why": why or (None if ratio is not None else f"not judged: {speed.get('torch')}")},
    }


def _ms(entry):
    text = f"{entry['median_ms']:.2f} ms (min {entry['min_ms']:.2f}, max {entry['max_ms']:.2f}, n = {entry['n']})"
    return text + (f" — {entry['note']}" if "note" in entry else "")


def _status(section):
    return section.get("status", "—") if isinstance(section, dict) else "—"


def to_markdown(report):
    """The report as Markdown, one section per part."""
    d = report["device"]
    lines = ["# GPU check", "", f"sflnet {report['sflnet']}, Python {report['python']}, "
             f"{'--quick' if report['quick'] else 'full'} run, {report['seconds']:.0f} s.", "", "## Device", "",
             d["statement"]]
    if d["real_gpu"]:
        lines += [f"- GPU: {d['name']} (compute capability {d['compute_capability']}), "
                  f"{d['memory_bytes'] / 2**30:.1f} GiB", f"- CUDA runtime {d['cuda_runtime']}, driver {d['driver']}",
                  f"- CuPy {d['cupy']}"]
    c = report["correctness"]
    lines += ["", "## Correctness", "", f"**pytest on the CuPy tests**: {_status(c['pytest'])}"]
    if "passed" in c["pytest"]:
        p = c["pytest"]
        lines += [f"- {p['passed']} passed, {p['failed']} failed, {p['skipped']} skipped, {p['errors']} errors "
                  f"(`{p['command']}`, {p['seconds']} s)"] + [f"  - {f}" for f in p["failures"]]
    else:
        lines.append(f"- {c['pytest'].get('why', '')}")
    g = c["gradcheck"]
    lines += ["", f"**gradcheck on the GPU** (`sflnet gradcheck --device gpu`, layers: {g.get('layers')}): "
              f"{_status(g)}"]
    lines += [f"- {dev}: {t['rows']} rows, {t['failed']} failed" for dev, t in g.get("by_device", {}).items()]
    lines += [f"  - {row}" for row in g.get("failed_rows", [])]
    v = c["gpu_vs_cpu"]
    lines += ["", f"**GPU vs CPU, one full-batch step** (losses and gradients, worst relative difference; "
              f"tolerance float32 {v['tolerance']['float32']:g}, float64 {v['tolerance']['float64']:g}): "
              f"{_status(v)}", "", "| case | images | worst loss | worst gradient (parameter) | ok |",
              "|---|---:|---:|---:|---|"]
    lines += [f"| {case} | {e['images']} | {e['worst_loss']:.2e} | {e['worst_grad']:.2e} ({e['worst_grad_param']}) "
              f"| {'yes' if e['ok'] else 'NO'} |" for case, e in v["cases"].items()]
    s = report["speed"]
    lines += ["", "## Speed", "", f"Full-batch float32 training epoch ({s['loss']}), {s['timer']}, "
              f"{s['warmup']} warm-up, median of {s['repeat']}. PyTorch + cuDNN: {s['torch']}.", ""]
    if not d["real_gpu"]:
        lines += [f"Every timing here is **{NOT_A_GPU}**.", ""]
    for case, e in s["cases"].items():
        lines.append(f"- **{case}** ({e['pixels']:,} pixels): sflnet {_ms(e['sflnet'])}")
        if "torch_channels_last" in e:
            lines.append(f"  - PyTorch + cuDNN channels-last: {_ms(e['torch_channels_last'])}; "
                         f"sflnet / torch = {e['ratio_vs_torch']:.3f}")
    for case, e in s["cases"].items():
        bd = e["breakdown_ms"]
        lines += ["", f"Per-layer breakdown, {case} (CUDA events around each layer, ms per epoch"
                  f"{'; ' + NOT_A_GPU if not d['real_gpu'] else ''}):", "", "| part | ms | share |", "|---|---:|---:|"]
        lines += [f"| {key} | {bd[key]:.3f} | {100 * bd[key] / bd['epoch'] if bd['epoch'] else 0:.1f} % |"
                  for key in BREAKDOWN_KEYS]
        lines.append(f"| (instrumented epoch) | {bd['epoch']:.3f} | |")
    m = report["memory"]
    lines += ["", "## Memory", "",
              f"{m['case']}: CuPy pool high-water mark {m['pool_high_water_bytes'] / 2**20:.1f} MiB "
              f"(of which the images {m['images_bytes'] / 2**20:.1f} MiB)"
              + (f" — {m['note']}" if "note" in m else "")]
    y = report["syncs"]
    lines += ["", "## Syncs", "", f"{y['syncs_per_step']:g} device→host syncs per training step "
              f"(budget {y['budget_per_step']}; {y['method']}): {_status(y)}"]
    if "by_kind" in y:
        lines.append(f"- by kind over {y['steps']} steps: {y['by_kind']}; uploads per step {y['uploads_per_step']:g}")
    t = report["train"]
    lines += ["", "## The train command", "", f"`{t['command']}`: {_status(t)}"]
    if "worst_first_epoch" in t:
        lines += [f"- {t['epochs_written']} epochs written; first history row vs a CPU run: worst relative "
                  f"difference {t['worst_first_epoch']:.2e} (tolerance {t['tolerance']:g})",
                  f"- median epoch {t['median_epoch_seconds']:.4f} s" + (f" — {t['note']}" if "note" in t else "")]
    lines += ["", "## Goals", ""]
    for name, goal in report["goals"].items():
        verdict = {True: "met", False: "NOT met", None: goal["why"]}[goal["met"]]
        value = goal.get("value_ms", goal.get("ratio"))
        lines.append(f"- {name}: {verdict}" + (f" (measured {value:.3f})" if value is not None else ""))
    return "\n".join(lines) + "\n"


def settings_for(quick, device):
    """What to run: the full check, --quick on a GPU, or --quick under the test double (CI)."""
    double = device["cupy"] is not None and not device["real_gpu"]
    settings = {"pytest": ["-k", "(cupy or gpu) and not gpu_check", "tests"], "pytest_timeout": 300,
                "pytest_skip_why": None,
                "gradcheck_layers": None, "compare_size": 300, "mixed_scale": 1.0, "speed_size": 300,
                "repeat": 20, "warmup": 3, "breakdown_epochs": 5, "train_size": 300, "train_epochs": 20,
                "willow_count": 70}
    if quick:
        settings.update(pytest=["-k", "cupy or gpu", "tests/test_gpu_path.py", "tests/test_layers.py"],
                        pytest_timeout=60, gradcheck_layers=["relu", "pixel_loss"], repeat=5, warmup=1,
                        breakdown_epochs=2, train_epochs=5)
    if quick and double:      # CI: the whole script in seconds on NumPy
        settings.update(pytest=None, pytest_skip_why="skipped: --quick under the test double (the CuPy tests "
                        "run on the double in the ordinary test suite)", compare_size=32, mixed_scale=0.5,
                        speed_size=32, repeat=2, warmup=1, breakdown_epochs=1, train_size=32, train_epochs=2,
                        willow_count=6)
    return settings


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller check (under 2 minutes on a GPU)")
    parser.add_argument("--out", type=Path, default=REPO / "validation" / "results" / "gpu",
                        help="folder for report.json and report.md")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    device, xp = device_section()
    report = {"sflnet": SFLNET_VERSION, "python": platform.python_version(), "quick": args.quick, "device": device}
    if xp is None:
        for part in ("correctness", "speed", "memory", "syncs", "train"):
            report[part] = {"status": "skipped", "why": device["statement"]}
    else:
        settings = report["settings"] = settings_for(args.quick, device)
        steps = [("correctness", lambda: {"pytest": pytest_section(settings, device),
                                          "gradcheck": gradcheck_section(settings),
                                          "gpu_vs_cpu": gpu_vs_cpu_section(xp, settings)}),
                 ("speed", lambda: speed_section(xp, device, settings)),
                 ("memory", lambda: memory_section(xp, device, settings)),
                 ("syncs", lambda: syncs_section(xp, device, settings)),
                 ("train", lambda: train_section(device, settings))]
        for name, run in steps:
            print(f"gpu_check: {name} …", file=sys.stderr, flush=True)
            report[name] = run()
    report["goals"] = goals(report)
    report["seconds"] = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    markdown = to_markdown(report) if xp is not None else (
        f"# GPU check\n\n## Device\n\n{device['statement']}\n\nNothing else ran.\n")
    (args.out / "report.md").write_text(markdown, encoding="utf-8")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
