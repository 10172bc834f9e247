"""Learning-rate schedules: functions of the step count that the training loop assigns to ``optimizer.lr``
before every step."""

import numpy as np


def _is_whole_number(value):
    """True for Python and NumPy integers (bool excluded)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def triangular2_lr(step, lr_min, lr_max, step_size):
    """The "triangular2" cyclical learning rate of Smith (2017), as a Python float.

    The rate climbs linearly from ``lr_min`` to ``lr_max`` in ``S = step_size``
    updates, falls back to ``lr_min`` in the next S, and the height of every
    new triangle (cycle of 2S updates) is half the previous one::

        cycle = floor(1 + t / (2S))              1 for t in [0, 2S), 2 for [2S, 4S), ...
        x     = |t / S − 2·cycle + 1|            1 at the cycle's ends, 0 at its peak
        lr    = lr_min + (lr_max − lr_min) · max(0, 1 − x) / 2^(cycle − 1)

    So lr is lr_min at t = 0, 2S, 4S, ..., lr_max at t = S, and
    lr_min + (lr_max − lr_min)/2 at t = 3S, .../4 at t = 5S. The seed paper
    uses lr_min = 1e-4, lr_max = 1e-3, S = 2000.

    Args:
        step: t, the number of updates already taken (0 for the first update).
        lr_min, lr_max: the bounds, 0 < lr_min ≤ lr_max.
        step_size: S, updates per half cycle, a whole number ≥ 1.
    """
    if not _is_whole_number(step) or step < 0:
        raise ValueError(f"step must be a whole number >= 0, got {step!r}")
    if not _is_whole_number(step_size) or step_size < 1:
        raise ValueError(f"step_size must be a whole number >= 1, got {step_size!r}")
    if not 0 < lr_min <= lr_max:
        raise ValueError(f"need 0 < lr_min <= lr_max, got lr_min={lr_min}, lr_max={lr_max}")
    t = int(step)
    s = int(step_size)
    cycle = 1 + t // (2 * s)          # floor(1 + t/(2S)), exact in integers
    x = abs(t / s - 2 * cycle + 1)
    # 0.5 ** (cycle − 1) rather than 1 / 2 ** (cycle − 1): it underflows to 0
    # gracefully instead of overflowing after ~1000 cycles.
    height = (float(lr_max) - float(lr_min)) * 0.5 ** (cycle - 1)
    return float(lr_min) + height * max(0.0, 1.0 - x)
