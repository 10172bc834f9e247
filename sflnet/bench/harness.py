"""Benchmark harness behind ``sflnet bench``: time one full-batch training epoch.

What is measured
----------------
* **epoch**: one full-batch training step on all images (forward, loss,
  backward, momentum update), exactly as training runs it
  (:func:`sflnet.training.step.train_step`), timed with ``time.perf_counter`` after
  ``warmup`` untimed epochs; the figure quoted is the median of ``repeat``
  epochs. On the GPU every timed call ends with a device synchronisation.
* **cae**: the same epoch with the pixel loss only and without the LoG bank
  (forward through layers 2-5, Eq. 4, backward, update): the autoencoder on its
  own, for comparing the network code with another framework's.
* **breakdown**: a separate, instrumented epoch in which every layer's
  ``forward``/``backward`` call is timed on its own (with a synchronisation
  before and after each call on the GPU, which slows the GPU down, so the
  breakdown is a profile, not a second measurement of the epoch). Keys:
  ``conv2 conv3 upsample conv4 conv5 activations`` (the model computes layer 4 as one
  :class:`sflnet.nn.conv.UpsampleConv2D`, so ``conv4`` includes the bilinear ×2 and ``upsample``
  is 0 unless the model was built with ``fuse_upsample=False``), ``LoG loss`` (the SFL's
  forward and backward, i.e. layer 6 both ways), ``pixel loss``, ``update``,
  and ``other`` (grouping, chunking and gradient accumulation: the epoch
  minus the timed parts).
* **memory**: measured first, on a fresh model: the process's peak resident
  set after loading the images and one training epoch (``ru_maxrss``, which
  also counts the Python interpreter and NumPy), the peak of the NumPy
  allocations within that epoch (traced with ``tracemalloc``), and on the GPU
  the bytes held by CuPy's memory pool; plus the peak resident set of the
  whole benchmark run, which holds several models at once.

``compare_torch=True`` also times the same network and loss written with
PyTorch (:mod:`sflnet.bench.torch_reference`) on the same images, parameters,
device and dtype, in the same run: in a child process (so that the two
thread pools never compete), one round of torch steps after every round of
sflnet steps, in both memory layouts (channels-last and NCHW). It reports
sflnet / torch for each layout and against the faster one.

Threads: sflnet uses BLAS threads (OpenBLAS's own setting) plus its kernel
threads (:func:`sflnet.ops.threads.set_num_threads`, default: ``OMP_NUM_THREADS`` when set, else all
usable CPUs).

All timings are wall-clock seconds (floats). The result is a plain dict that
:func:`format_report` prints and ``json.dump`` writes.
"""

import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc

import numpy as np

from sflnet.backend import device_name, synchronize, to_device, to_host
from sflnet.errors import SflnetError
from sflnet.models.cae import DEFAULT_MAX_CHUNK_PIXELS, Autoencoder, init_params
from sflnet.optim import MomentumSGD
from sflnet.training.step import train_step

BENCH_LOSSES = ("pl+sfl", "pl")   # the objectives the PyTorch reference also implements

BREAKDOWN_KEYS = ("conv2", "conv3", "upsample", "conv4", "conv5", "activations",
                  "LoG loss", "pixel loss", "update", "other")


# ---------------------------------------------------------------------------
# Timing helpers
# ---------------------------------------------------------------------------

def time_round(functions, xp):
    """Call each zero-argument callable once, in order; returns {name: seconds}.

    Each call is timed with ``time.perf_counter`` and ends with a device
    synchronisation (a no-op on the CPU). Rounds of these, alternating with
    the reference's rounds, make comparisons fair when the machine's speed drifts.
    """
    times = {}
    for name, fn in functions.items():
        synchronize(xp)
        start = time.perf_counter()
        fn()
        synchronize(xp)
        times[name] = time.perf_counter() - start
    return times


def time_rounds(functions, repeat, warmup, xp, torch_child=None):
    """``warmup`` untimed calls of each function, then ``repeat`` rounds of :func:`time_round`.

    With a :class:`TorchChild`, each round is followed by one round of the
    torch variants, without a pause: on the test machine an idle pause made
    the next timed call slower (by up to 20 %), which would charge one side
    for the order. returns {name: [seconds] * repeat}.
    """
    for fn in functions.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in functions}
    for _ in range(repeat):
        rounds = [time_round(functions, xp)]
        if torch_child is not None:
            rounds.append(torch_child.time_round())
        for timed in rounds:
            for name, seconds in timed.items():
                times.setdefault(name, []).append(seconds)
    return times


class _LayerTimer:
    """Accumulates seconds per breakdown key while wrapped methods run."""

    def __init__(self, xp):
        self.xp = xp
        self.seconds = {}

    def wrap(self, obj, method_name, key):
        """Replace ``obj.method_name`` (on this instance only) by a timed call adding to ``key``."""
        original = getattr(obj, method_name)

        def timed(*args, **kwargs):
            synchronize(self.xp)
            start = time.perf_counter()
            result = original(*args, **kwargs)
            synchronize(self.xp)
            self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - start
            return result

        setattr(obj, method_name, timed)


def layer_breakdown(model, optimizer, groups, xp, epochs=3):
    """Instrumented training epochs: median seconds per :data:`BREAKDOWN_KEYS` entry (plus ``"epoch"``).

    ``model`` and ``optimizer`` are instrumented in place (instance attributes
    shadow the methods), so pass throw-away copies. One uninstrumented
    warm-up epoch runs first.
    """
    train_step(model, optimizer, groups)
    timer = _LayerTimer(xp)
    for name in ("conv2", "conv3", "conv4", "conv5"):
        layer = getattr(model, name)
        timer.wrap(layer, "forward", name)
        timer.wrap(layer, "backward", name)
    for layer in model.layers:
        if layer is model.up4:
            key = "upsample"
        elif layer in (model.conv2, model.conv3, model.conv4, model.conv5):
            continue
        else:
            key = "activations"
        timer.wrap(layer, "forward", key)
        timer.wrap(layer, "backward", key)
    for method in ("forward", "backward"):
        timer.wrap(model.sfl_loss, method, "LoG loss")
        timer.wrap(model.pixel_loss, method, "pixel loss")
    timer.wrap(optimizer, "step", "update")
    rounds = []
    for _ in range(epochs):
        timer.seconds = {}
        synchronize(xp)
        start = time.perf_counter()
        train_step(model, optimizer, groups)
        synchronize(xp)
        epoch = time.perf_counter() - start
        times = {key: timer.seconds.get(key, 0.0) for key in BREAKDOWN_KEYS if key != "other"}
        times["other"] = max(0.0, epoch - sum(times.values()))
        times["epoch"] = epoch
        rounds.append(times)
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}


# ---------------------------------------------------------------------------
# The sflnet side
# ---------------------------------------------------------------------------

def group_by_shape(images, xp, dtype):
    """images: list of (3, H_i, W_i) host arrays → list of (n, 3, H, W) device arrays, one per size (sorted)."""
    by_shape = {}
    for image in images:
        by_shape.setdefault(tuple(image.shape), []).append(np.asarray(image, dtype=dtype))
    return [to_device(np.stack(by_shape[shape]), xp) for shape in sorted(by_shape)]


def make_model(params, loss, max_chunk_pixels):
    """A fresh :class:`Autoencoder` and :class:`MomentumSGD` (paper settings) on copies of ``params``."""
    copies = {name: p.copy() for name, p in params.items()}
    return Autoencoder(copies, loss=loss, max_chunk_pixels=max_chunk_pixels), MomentumSGD(0.02, 0.5)


def cae_epoch(model, optimizer, groups):
    """One full-batch step of the autoencoder alone: Eq. 4 only, no LoG bank (the ``cae`` timing).

    Walks the same layers as :meth:`Autoencoder.loss_and_grads`, chunk by chunk,
    but skips the SFL, which that method always measures. returns E_PL (float).
    """
    xp = model.xp
    batch_count = sum(g.shape[0] for g in groups)
    grads = {name: xp.zeros_like(p) for name, p in model.params.items()}
    e_pl = 0.0
    convs = {num: getattr(model, f"conv{num}") for num in "2345"}
    for group in groups:
        n, _, h, w = group.shape
        per_chunk = max(1, model.max_chunk_pixels // (h * w))   # as the model chunks
        for start in range(0, n, per_chunk):
            chunk = group[start:start + per_chunk]
            recon = model.forward(chunk)
            value, _ = model.pixel_loss.forward(recon, chunk, batch_count)
            e_pl += float(value)
            model.backward(model.pixel_loss.backward())
            for num, conv in convs.items():
                grads[f"w{num}"] += conv.grads["w"]
                grads[f"b{num}"] += conv.grads["b"]
    optimizer.step(model.params, grads)
    return e_pl


def numpy_peak_bytes(fn):
    """Peak bytes of Python/NumPy host allocations while ``fn()`` runs (``tracemalloc``)."""
    tracemalloc.start()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


def max_rss_bytes():
    """The process's peak resident set size so far, in bytes (Linux reports KiB, macOS bytes)."""
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value if sys.platform == "darwin" else value * 1024


def gpu_pool_bytes(xp):
    """Bytes held by CuPy's default memory pool (0 on the CPU)."""
    if xp is np:
        return 0
    return int(xp.get_default_memory_pool().total_bytes())


def machine_info():
    """A dict describing the host: CPU model, core count, Python, NumPy and its BLAS."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    blas = "unknown"
    try:
        config = np.show_config(mode="dicts")
        info = config["Build Dependencies"]["blas"]
        blas = f"{info.get('name', '?')} {info.get('version', '')}".strip()
    except Exception:  # older NumPy without mode="dicts"
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas,
    }


# ---------------------------------------------------------------------------
# The work of an epoch, counted
# ---------------------------------------------------------------------------

def conv_flops(sizes):
    """Floating-point operations of the four convolutions in one training epoch over images of ``sizes``.

    sizes: iterable of (H, W), one per image. returns an int: 2 × the multiply-adds of
    the convolutions' forward and backward passes (what the GEMMs do; the activations,
    the upsampling, the losses and the update are not counted), for a full-resolution
    image of P = H·W pixels and the bottleneck's p = ⌈H/2⌉·⌈W/2⌉:

    * forward, Eq. 2, multiply-adds per output pixel C_out·C_in·9: conv2 32·3·9·P,
      conv3 16·32·9·p, conv4 32·16·9·P (on the upsampled image; the fused layer does
      4·32·16·9·p, the same up to the border), conv5 3·32·9·P;
    * backward: ∂E/∂w costs each layer's forward count again (one multiply-add per weight
      per output pixel), and ∂E/∂x too, except for conv2, whose input is the image.

    This is the "GFLOP per epoch" that the GFLOP/s of the report divide; an epoch of
    Willow70 at 300 px (4,555,200 pixels) is 196.9 GFLOP.
    """
    total = 0
    for height, width in sizes:
        full, half = height * width, -(-height // 2) * -(-width // 2)
        forward = {"conv2": 32 * 3 * 9 * full, "conv3": 16 * 32 * 9 * half, "conv4": 32 * 16 * 9 * full,
                   "conv5": 3 * 32 * 9 * full}
        multiply_adds = 2 * sum(forward.values()) + sum(v for k, v in forward.items() if k != "conv2")
        total += 2 * multiply_adds
    return total


# ---------------------------------------------------------------------------
# The whole benchmark
# ---------------------------------------------------------------------------

def run_benchmark(images, xp, dtype=np.float32, repeat=5, warmup=1, loss="pl+sfl",
                  max_chunk_pixels=DEFAULT_MAX_CHUNK_PIXELS, compare_torch=False, seed=0,
                  log=None):
    """Time sflnet (and optionally PyTorch) on ``images``; returns a JSON-ready dict.

    images: list of (3, H_i, W_i) NumPy arrays (host). xp: numpy or cupy.
    dtype: numpy float dtype for parameters and images. loss: "pl+sfl" or "pl" (:data:`BENCH_LOSSES`).
    compare_torch: also time :mod:`sflnet.bench.torch_reference` (needs torch
    installed; raises :class:`sflnet.errors.SflnetError` otherwise).
    log: optional callable(str) for progress lines.
    """
    log = log or (lambda message: None)
    if compare_torch and not torch_available():
        raise SflnetError("--compare-torch needs PyTorch, which is not installed here "
                          "(it is never a dependency of sflnet; install torch to compare)")
    dtype = np.dtype(dtype)
    groups = group_by_shape(images, xp, dtype)
    params = init_params(seed=seed, dtype=dtype, xp=xp)
    n_images = sum(g.shape[0] for g in groups)
    result = {
        "machine": machine_info(),
        "device": device_name(xp),
        "dtype": dtype.name,
        "loss": loss,
        "images": n_images,
        "sizes": {f"{g.shape[2]}x{g.shape[3]}": int(g.shape[0]) for g in groups},
        "pixels": int(sum(g.shape[0] * g.shape[2] * g.shape[3] for g in groups)),
        "conv_gflop": conv_flops((g.shape[2], g.shape[3]) for g in groups for _ in range(g.shape[0])) / 1e9,
        "repeat": repeat,
        "warmup": warmup,
        "max_chunk_pixels": int(max_chunk_pixels),
    }

    log("memory: one training epoch on a fresh model")
    m_model, m_opt = make_model(params, loss, max_chunk_pixels)
    if xp is np:
        result["numpy_peak_bytes"] = numpy_peak_bytes(lambda: train_step(m_model, m_opt, groups))
    else:
        train_step(m_model, m_opt, groups)
        synchronize(xp)
    result["gpu_pool_bytes"] = gpu_pool_bytes(xp)
    result["train_rss_bytes"] = max_rss_bytes()   # images + one model + one epoch, before anything else ran
    del m_model, m_opt

    model, opt = make_model(params, loss, max_chunk_pixels)
    cae_model, cae_opt = make_model(params, "pl", max_chunk_pixels)
    functions = {
        "sflnet epoch": lambda: train_step(model, opt, groups),
        "sflnet cae": lambda: cae_epoch(cae_model, cae_opt, groups),
    }
    torch_child = None
    if compare_torch:
        log("starting the PyTorch reference (child process: nchw and channels_last, epoch and cae)")
        torch_child = TorchChild(groups, params, xp, loss, warmup)
    log(f"timing: {warmup} warm-up + {repeat} timed epochs per variant, interleaved")
    try:
        times = time_rounds(functions, repeat, warmup, xp, torch_child)
    finally:
        if torch_child is not None:
            torch_child.close()
    result["times"] = times
    result["median"] = {name: statistics.median(ts) for name, ts in times.items()}
    result["gflops"] = {name: result["conv_gflop"] / t for name, t in result["median"].items()}
    if torch_child is not None:
        result["torch"] = torch_child.info
        result["ratios"] = torch_ratios(result["median"])

    del functions, model, opt, cae_model, cae_opt   # free their buffers before the next model
    log("instrumented epoch for the per-layer breakdown")
    b_model, b_opt = make_model(params, loss, max_chunk_pixels)
    result["breakdown"] = layer_breakdown(b_model, b_opt, groups, xp, epochs=max(1, min(repeat, 3)))

    result["max_rss_bytes"] = max_rss_bytes()     # the whole benchmark run (several models alive at once)

    return result


def torch_available():
    """True when ``import torch`` would find a module (checked without importing it)."""
    return importlib.util.find_spec("torch") is not None


class TorchChild:
    """:mod:`sflnet.bench.torch_reference` running in a child process, timed one round at a time.

    A child process, because PyTorch's OpenMP threads and NumPy's BLAS threads
    in one process compete for the cores and distort both timings; it also
    keeps torch out of sflnet's memory figures. The groups and parameters
    travel through a temporary ``.npz`` file; the child answers JSON lines.
    Call :meth:`close` when done.
    """

    def __init__(self, groups, params, xp, loss, warmup):
        self._tmp = tempfile.TemporaryDirectory(prefix="sflnet-bench-")
        path = os.path.join(self._tmp.name, "input.npz")
        arrays = {name: to_host(p) for name, p in params.items()}
        arrays.update({f"group{i}": to_host(g) for i, g in enumerate(groups)})
        np.savez(path, **arrays)
        command = [sys.executable, "-m", "sflnet.bench.torch_reference", path,
                   "--device", "cpu" if xp is np else "cuda", "--loss", loss, "--warmup", str(warmup)]
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True)
        self.info = self._read()["torch"]

    def _read(self):
        line = self._process.stdout.readline()
        if not line:
            self._process.wait()
            last = (self._process.stderr.read().strip().splitlines() or ["no output"])[-1]
            raise SflnetError(f"the PyTorch reference failed (exit {self._process.returncode}): {last}")
        return json.loads(line)

    def time_round(self):
        """One step of every torch variant: {"torch <layout> <kind>": seconds}."""
        self._process.stdin.write("round\n")
        self._process.stdin.flush()
        return self._read()["times"]

    def close(self):
        """Stop the child and delete the temporary file."""
        if self._process.poll() is None:
            self._process.stdin.write("quit\n")
            self._process.stdin.close()
            self._process.wait()
        self._tmp.cleanup()


def torch_ratios(median):
    """sflnet / torch for each torch variant, and against the fastest torch layout (``best``)."""
    ratios = {}
    for kind in ("epoch", "cae"):
        ours = median.get(f"sflnet {kind}")
        theirs = {name.split()[1]: t for name, t in median.items()
                  if name.startswith("torch ") and name.endswith(f" {kind}")}
        if ours is None or not theirs:
            continue
        for layout, t in theirs.items():
            ratios[f"{kind} vs {layout}"] = ours / t
        best = min(theirs, key=theirs.get)
        ratios[f"{kind} vs best"] = ours / theirs[best]
        ratios[f"{kind} best layout"] = best
    return ratios


def _mib(n_bytes):
    return f"{n_bytes / 2**20:.0f} MiB"


def format_report(result):
    """A short human-readable table of :func:`run_benchmark`'s result."""
    m = result["machine"]
    lines = [
        f"machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, NumPy {m['numpy']} ({m['blas']})",
        f"device: {result['device']}, dtype {result['dtype']}, loss {result['loss']}, "
        f"{result['images']} images ({', '.join(f'{k}:{v}' for k, v in result['sizes'].items())}), "
        f"max_chunk_pixels {result['max_chunk_pixels']}",
    ]
    if "torch" in result:
        t = result["torch"]
        lines.append(f"torch {t['version']}, {t['threads']} threads")
    lines.append(f"median of {result['repeat']} epochs after {result['warmup']} warm-up (seconds), and the "
                 f"convolutions' {result['conv_gflop']:.1f} GFLOP per epoch divided by it:")
    for name, t in result["median"].items():
        spread = result["times"][name]
        lines.append(f"  {name:28s} {t:8.4f}   (min {min(spread):.4f}, max {max(spread):.4f})   "
                     f"{result['gflops'][name]:6.1f} GFLOP/s")
    if "ratios" in result:
        lines.append("sflnet / torch:")
        for name, r in result["ratios"].items():
            lines.append(f"  {name:28s} {r if isinstance(r, str) else f'{r:.3f}'}")
    lines.append("per-layer breakdown of one instrumented epoch (seconds, forward + backward):")
    bd = result["breakdown"]
    for key in BREAKDOWN_KEYS:
        share = bd[key] / bd["epoch"] if bd["epoch"] > 0 else 0.0
        lines.append(f"  {key:28s} {bd[key]:8.4f}  {100 * share:5.1f} %")
    lines.append(f"  {'(instrumented epoch)':28s} {bd['epoch']:8.4f}")
    memory = (f"memory: peak RSS {_mib(result['train_rss_bytes'])} after loading and one training epoch "
              f"({_mib(result['max_rss_bytes'])} for the whole benchmark run)")
    if "numpy_peak_bytes" in result:
        memory += f", NumPy allocations peak {_mib(result['numpy_peak_bytes'])} within one epoch"
    if result["gpu_pool_bytes"]:
        memory += f", CuPy pool {_mib(result['gpu_pool_bytes'])}"
    lines.append(memory)
    return "\n".join(lines)
