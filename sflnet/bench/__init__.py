"""Timing sflnet's training epoch, and the PyTorch + cuDNN/MKL-DNN reference it is compared with.

* :mod:`sflnet.bench.harness`          — one full-batch epoch timed (median of repeats), the per-layer
  breakdown, the convolutions' flop count, peak memory, and the report ``sflnet bench`` prints;
* :mod:`sflnet.bench.torch_reference`  — the same network and loss in PyTorch (optional: needs torch),
  run in a child process by the harness (``python -m sflnet.bench.torch_reference``);
* :mod:`sflnet.bench.vae`              — ``sflnet bench --model vae``: the β-VAE's mini-batch training step,
  timed in rounds, with a per-layer breakdown;
* :mod:`sflnet.bench.torch_vae`        — the β-VAE, its two objectives and Adam in PyTorch, its reference
  (``python -m sflnet.bench.torch_vae``, a child process).

The harness's public names are importable from here, e.g. ``from sflnet.bench import run_benchmark``.
"""

from sflnet.bench.harness import (BENCH_LOSSES, BREAKDOWN_KEYS, TorchChild, cae_epoch, conv_flops, format_report,
                                  group_by_shape, layer_breakdown, make_model, run_benchmark, torch_available,
                                  torch_ratios)

__all__ = ["BENCH_LOSSES", "BREAKDOWN_KEYS", "TorchChild", "cae_epoch", "conv_flops", "format_report",
           "group_by_shape", "layer_breakdown", "make_model", "run_benchmark", "torch_available", "torch_ratios"]
