"""Optimisers and learning-rate schedules.

Momentum SGD, as in the first paper's Sec. 4 (Rumelhart et al.'s momentum term)::

    v ← μ·v − η·g
    θ ← θ + v

with learning rate η (0.02 in the paper) and momentum μ (0.5). The velocity
starts at zero.

Adam (Kingma & Ba 2015, Algorithm 1), used by the β-VAE of the second paper::

    t ← t + 1
    m ← β1·m + (1 − β1)·g            first moment (running mean of g)
    v ← β2·v + (1 − β2)·g²           second moment (running mean of g²)
    m̂ = m / (1 − β1^t),  v̂ = v / (1 − β2^t)      bias corrections
    θ ← θ − η·m̂ / (√v̂ + ε)

and the "triangular2" cyclical learning rate of Smith (2017), with which the
second paper drives Adam's η (:func:`triangular2_lr`).

All optimisers update the parameters in place (they belong to the model) and
never modify the gradients.
"""

import numpy as np

from sflnet.backend import get_array_module

# The arrays each optimiser keeps per parameter, by the prefix they get in a checkpoint
# (``velocity_w2``, ``adam_m_conv1_w``...): see :meth:`MomentumSGD.state_arrays`, :meth:`Adam.state_arrays`.
OPTIMIZER_STATE = {"momentum-sgd": ("velocity",), "adam": ("adam_m", "adam_v")}


class MomentumSGD:
    """v ← μ v − η g; θ ← θ + v, per named parameter."""

    def __init__(self, lr=0.02, momentum=0.5):
        if not lr > 0:
            raise ValueError(f"learning rate must be > 0, got {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.velocity = {}   # {name: array like the parameter}, created on the first step
        self.step_count = 0  # steps taken (not used by the update; kept like Adam's for the run machinery)

    def step(self, params, grads):
        """params, grads: {name: array}. Updates ``params`` in place and returns them."""
        self.step_count += 1
        for name, theta in params.items():
            g = grads[name]
            if name not in self.velocity:
                xp = get_array_module(theta)
                self.velocity[name] = xp.zeros_like(theta)
            v = self.velocity[name]
            v *= self.momentum
            v -= self.lr * g
            theta += v
        return params

    def state_dict(self):
        """{"lr", "momentum", "velocity": {name: array}} — arrays are the live ones, copy before saving elsewhere."""
        return {"lr": self.lr, "momentum": self.momentum, "velocity": dict(self.velocity)}

    def load_state_dict(self, state):
        """Restore from :meth:`state_dict` (velocity arrays are copied)."""
        self.lr = float(state["lr"])
        self.momentum = float(state["momentum"])
        self.velocity = {name: v.copy() for name, v in state["velocity"].items()}

    def state_arrays(self):
        """{"velocity": {name: array}}: what a checkpoint keeps (the live arrays)."""
        return {"velocity": self.velocity}

    def load_state_arrays(self, arrays, step_count=0):
        """Restore :meth:`state_arrays` (copied); an empty dict means a fresh start."""
        self.velocity = {name: v.copy() for name, v in arrays.get("velocity", {}).items()}
        self.step_count = int(step_count)


class Adam:
    """Adam (Kingma & Ba, Algorithm 1), per named parameter.

    Args:
        lr: step size η. The training loop may overwrite ``self.lr`` before
            every step (from a schedule such as :func:`triangular2_lr`).
        beta1, beta2: decay rates of the first and second moment estimates,
            in ``[0, 1)``.
        eps: ε in the denominator ``√v̂ + ε``. The default 1e-7 is Keras'
            (the seed paper trains with TensorFlow/Keras); the Adam paper and
            PyTorch use 1e-8.

    Attributes:
        step_count: t, the number of steps taken so far (0 before the first).
        m, v: ``{name: array}`` first and second moment estimates, shaped and
            typed like the parameters; created as zeros on the first step.

    Why the bias corrections: m and v start at zero, so after t steps with a
    constant gradient g, ``m = (1 − β1^t)·g`` (a geometric sum), which is
    biased towards zero; dividing by ``1 − β1^t`` gives back g. Likewise for
    v and g². On the first step therefore ``m̂ = g`` and ``v̂ = g²``, and every
    coordinate moves by ``η·g / (|g| + ε) ≈ η·sign(g)``.
    """

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7):
        if not lr > 0:
            raise ValueError(f"learning rate must be > 0, got {lr}")
        if not 0 <= beta1 < 1:
            raise ValueError(f"beta1 must be in [0, 1), got {beta1}")
        if not 0 <= beta2 < 1:
            raise ValueError(f"beta2 must be in [0, 1), got {beta2}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.lr = float(lr)
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self.eps = float(eps)
        self.step_count = 0
        self.m = {}   # {name: array like the parameter}, created on the first step
        self.v = {}

    def step(self, params, grads):
        """params, grads: {name: array}. Updates ``params`` in place and returns them.

        The moments are kept in the parameter's dtype, and the bias
        corrections ``1 − β^t`` are Python floats, so a float32 parameter
        stays float32 (NumPy and CuPy do not promote an array by a scalar).
        """
        self.step_count += 1
        t = self.step_count
        correction1 = 1.0 - self.beta1 ** t   # 1 − β1^t
        correction2 = 1.0 - self.beta2 ** t   # 1 − β2^t
        for name, theta in params.items():
            g = grads[name]
            xp = get_array_module(theta)
            if name not in self.m:
                self.m[name] = xp.zeros(theta.shape, dtype=theta.dtype)
                self.v[name] = xp.zeros(theta.shape, dtype=theta.dtype)
            m = self.m[name]
            v = self.v[name]
            # m ← β1 m + (1 − β1) g;  v ← β2 v + (1 − β2) g²  (in place: the moments are ours)
            m *= self.beta1
            m += (1.0 - self.beta1) * g
            v *= self.beta2
            v += (1.0 - self.beta2) * (g * g)
            # θ ← θ − η m̂ / (√v̂ + ε), with m̂ = m / (1 − β1^t), v̂ = v / (1 − β2^t)
            m_hat = m / correction1
            v_hat = v / correction2
            theta -= self.lr * m_hat / (xp.sqrt(v_hat) + self.eps)
        return params

    def state_dict(self):
        """{"lr", "beta1", "beta2", "eps", "step_count", "m": {...}, "v": {...}} (arrays are copies)."""
        return {
            "lr": self.lr,
            "beta1": self.beta1,
            "beta2": self.beta2,
            "eps": self.eps,
            "step_count": self.step_count,
            "m": {name: m.copy() for name, m in self.m.items()},
            "v": {name: v.copy() for name, v in self.v.items()},
        }

    def load_state_dict(self, state):
        """Restore from :meth:`state_dict` (moment arrays are copied)."""
        self.lr = float(state["lr"])
        self.beta1 = float(state["beta1"])
        self.beta2 = float(state["beta2"])
        self.eps = float(state["eps"])
        self.step_count = int(state["step_count"])
        self.m = {name: m.copy() for name, m in state["m"].items()}
        self.v = {name: v.copy() for name, v in state["v"].items()}

    def state_arrays(self):
        """{"adam_m": m, "adam_v": v}: what a checkpoint keeps (the live arrays; t is saved separately)."""
        return {"adam_m": self.m, "adam_v": self.v}

    def load_state_arrays(self, arrays, step_count=0):
        """Restore :meth:`state_arrays` (copied) and t = ``step_count``; an empty dict means a fresh start."""
        self.m = {name: a.copy() for name, a in arrays.get("adam_m", {}).items()}
        self.v = {name: a.copy() for name, a in arrays.get("adam_v", {}).items()}
        self.step_count = int(step_count)


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
