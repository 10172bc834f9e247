"""``sflnet bench --model vae``: the β-VAE's small training step, timed against PyTorch.

What is measured
----------------
* **step**: one mini-batch training step of Dalal's VAE1 (forward, the objective, β·KL, the
  hand-written backward, Adam), exactly as ``sflnet train --model vae`` runs it
  (:func:`sflnet.training.step.train_step`), on consecutive batches of ``batch_size`` digits.
  A round is ``steps`` such steps timed together; the figure quoted is the median over
  ``repeat`` rounds, divided by ``steps`` (seconds per step).
* **torch**: with ``compare_torch``, the same network, objective, parameters, batches and Adam in
  PyTorch (:mod:`sflnet.bench.torch_vae`), in a child process (so that the two thread pools never
  compete), one torch round right after every sflnet round. ``ratio`` is sflnet / torch.
* **breakdown**: a separate, instrumented round in which every layer's ``forward`` and
  ``backward``, the objective, the KL term and the update are timed on their own (milliseconds per
  step); ``other`` is the step minus the timed parts (batching, ε, gradient sums, the transfer of
  the scalars). A profile, not a second measurement of the step.

The objectives are those of :data:`sflnet.bench.torch_vae.OBJECTIVES` (the authors' proposed one,
the default, and ``2*pl``, their L2). Threads: as in :mod:`sflnet.bench.harness` (``OMP_NUM_THREADS``).
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time
import json

import numpy as np

from sflnet.backend import device_name, synchronize, to_device, to_host
from sflnet.errors import SflnetError
from sflnet.models.vae import VAE, init_params
from sflnet.ops.threads import get_num_threads
from sflnet.optim import Adam
from sflnet.training.step import train_step

#: The objectives the PyTorch reference also implements (kept here so that torch is never imported).
VAE_BENCH_LOSSES = ("500*ssim+0.00015*stft", "2*pl")


def make_vae(params, loss, output, tconv_padding, seed=0):
    """A fresh :class:`VAE` (on copies of ``params``, ε drawn from ``seed``) and its Adam."""
    model = VAE({name: p.copy() for name, p in params.items()}, loss=loss, output=output,
                tconv_padding=tconv_padding)
    model.noise = np.random.default_rng(seed)
    return model, Adam(lr=1e-3)


class _Batches:
    """Consecutive batches of ``batch_size`` device arrays (N, 1, 28, 28), in turn, wrapping around."""

    def __init__(self, images, batch_size, xp):
        self.batches = [to_device(np.stack(images[s:s + batch_size]), xp)
                        for s in range(0, len(images) - batch_size + 1, batch_size)]
        self.position = 0

    def next(self):
        batch = self.batches[self.position % len(self.batches)]
        self.position += 1
        return batch


def steps_function(model, optimizer, batches, steps):
    """A zero-argument callable running ``steps`` training steps on the next batches."""
    def run():
        for _ in range(steps):
            train_step(model, optimizer, batches.next())
    return run


def breakdown(model, optimizer, batches, steps, xp):
    """ms per step of every layer (forward + backward), the objective, KL and the update; see the module docstring."""
    seconds = {}

    def wrap(obj, method, key):
        original = getattr(obj, method)

        def timed(*args, **kwargs):
            synchronize(xp)
            start = time.perf_counter()
            result = original(*args, **kwargs)
            synchronize(xp)
            seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - start
            return result
        setattr(obj, method, timed)

    names = {id(layer): name for name, layer in model._trainable.items()}
    for layer in model.encoder + model.decoder:
        key = names.get(id(layer), "activations and reshapes")
        for method in ("forward", "backward"):
            wrap(layer, method, key)
    for method in ("forward", "backward"):
        wrap(model.objective, method, "objective")
        wrap(model.reparameterize, method, "sampling")
    wrap(model.kl, "forward", "kl")
    wrap(model.kl, "backward", "kl")
    wrap(optimizer, "step", "update")
    run = steps_function(model, optimizer, batches, steps)
    run()
    seconds.clear()
    synchronize(xp)
    start = time.perf_counter()
    run()
    synchronize(xp)
    total = time.perf_counter() - start
    result = {key: 1e3 * value / steps for key, value in seconds.items()}
    result["other"] = max(0.0, 1e3 * total / steps - sum(result.values()))
    result["step"] = 1e3 * total / steps
    return result


class TorchVAEChild:
    """:mod:`sflnet.bench.torch_vae` in a child process, timed one round at a time (see :class:`TorchChild`)."""

    def __init__(self, images, params, xp, loss, batch_size, output, tconv_padding, warmup):
        self._tmp = tempfile.TemporaryDirectory(prefix="sflnet-bench-vae-")
        path = os.path.join(self._tmp.name, "input.npz")
        arrays = {name: to_host(p) for name, p in params.items()}
        arrays["images"] = np.stack(images)
        np.savez(path, **arrays)
        command = [sys.executable, "-m", "sflnet.bench.torch_vae", path, "--device", "cpu" if xp is np else "cuda",
                   "--loss", loss, "--batch-size", str(batch_size), "--output", output,
                   "--tconv-padding", tconv_padding, "--warmup", str(warmup)]
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

    def time_round(self, steps):
        """Seconds of ``steps`` torch training steps."""
        self._process.stdin.write(f"round {steps}\n")
        self._process.stdin.flush()
        return self._read()["seconds"]

    def close(self):
        if self._process.poll() is None:
            self._process.stdin.write("quit\n")
            self._process.stdin.close()
            self._process.wait()
        self._tmp.cleanup()


def run_vae_benchmark(images, xp, dtype=np.float32, batch_size=32, loss=VAE_BENCH_LOSSES[0], output="linear",
                      tconv_padding="tf-same", steps=20, repeat=5, warmup=5, compare_torch=False, seed=0,
                      log=None):
    """Time the VAE's training step on ``images`` (list of (1, 28, 28) host arrays); a JSON-ready dict.

    batch_size: digits per step (≤ the number of images); steps: steps per timed round; repeat: rounds.
    The defaults are the authors' network (linear output, TensorFlow's 'same' padding).
    """
    from sflnet.bench.harness import machine_info, torch_available  # noqa: PLC0415

    log = log or (lambda message: None)
    if loss not in VAE_BENCH_LOSSES:
        raise SflnetError(f"--loss for --model vae must be one of {', '.join(VAE_BENCH_LOSSES)}, got {loss!r}")
    if not 1 <= batch_size <= len(images):
        raise SflnetError(f"--batch-size must be from 1 to the {len(images)} digits, got {batch_size}")
    if compare_torch and not torch_available():
        raise SflnetError("--compare-torch needs PyTorch, which is not installed here "
                          "(it is never a dependency of sflnet; install torch to compare)")
    dtype = np.dtype(dtype)
    host = [np.asarray(image, dtype=dtype) for image in images]
    params = init_params(seed, dtype, xp)
    result = {"machine": machine_info(), "device": device_name(xp), "dtype": dtype.name, "model": "vae",
              "loss": loss, "output": output, "tconv_padding": tconv_padding, "batch_size": int(batch_size),
              "images": len(host), "steps": int(steps), "repeat": int(repeat), "warmup": int(warmup),
              "threads": get_num_threads()}
    model, optimizer = make_vae(params, loss, output, tconv_padding, seed)
    run = steps_function(model, optimizer, _Batches(host, batch_size, xp), steps)
    for _ in range(max(1, -(-warmup // steps))):
        run()
    child = None
    if compare_torch:
        log("starting the PyTorch reference (child process)")
        child = TorchVAEChild(host, params, xp, loss, batch_size, output, tconv_padding, warmup)
        result["torch"] = child.info
    log(f"timing: {repeat} rounds of {steps} steps of batch {batch_size}" + (", then torch's" if child else ""))
    ours, theirs = [], []
    try:
        for _ in range(repeat):
            synchronize(xp)
            start = time.perf_counter()
            run()
            synchronize(xp)
            ours.append((time.perf_counter() - start) / steps)
            if child is not None:
                theirs.append(child.time_round(steps) / steps)
    finally:
        if child is not None:
            child.close()
    result["step_seconds"] = ours
    result["median_step"] = statistics.median(ours)
    if theirs:
        result["torch_step_seconds"] = theirs
        result["torch_median_step"] = statistics.median(theirs)
        result["ratio"] = result["median_step"] / result["torch_median_step"]
    log("instrumented round for the per-layer breakdown")
    b_model, b_optimizer = make_vae(params, loss, output, tconv_padding, seed)
    result["breakdown_ms"] = breakdown(b_model, b_optimizer, _Batches(host, batch_size, xp), steps, xp)
    return result


def format_vae_report(result):
    """A short human-readable table of :func:`run_vae_benchmark`'s result."""
    m = result["machine"]
    lines = [f"machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, NumPy {m['numpy']} ({m['blas']})",
             f"device: {result['device']}, dtype {result['dtype']}, {result['threads']} kernel threads; VAE1 "
             f"(--output {result['output']} --tconv-padding {result['tconv_padding']}), loss {result['loss']}, "
             f"batch {result['batch_size']} of {result['images']} digits"]
    if "torch" in result:
        lines.append(f"torch {result['torch']['version']}, {result['torch']['threads']} threads")
    lines.append(f"median of {result['repeat']} rounds of {result['steps']} steps (ms per step):")
    spread = result["step_seconds"]
    lines.append(f"  {'sflnet step':28s} {1e3 * result['median_step']:8.2f}   "
                 f"(min {1e3 * min(spread):.2f}, max {1e3 * max(spread):.2f})")
    if "ratio" in result:
        spread = result["torch_step_seconds"]
        lines.append(f"  {'torch step':28s} {1e3 * result['torch_median_step']:8.2f}   "
                     f"(min {1e3 * min(spread):.2f}, max {1e3 * max(spread):.2f})")
        lines.append(f"  {'sflnet / torch':28s} {result['ratio']:8.3f}")
    lines.append("per-layer breakdown of one instrumented round (ms per step, forward + backward):")
    bd = result["breakdown_ms"]
    for key, value in bd.items():
        if key != "step":
            lines.append(f"  {key:28s} {value:8.3f}  {100 * value / bd['step']:5.1f} %")
    lines.append(f"  {'(instrumented step)':28s} {bd['step']:8.3f}")
    return "\n".join(lines)
