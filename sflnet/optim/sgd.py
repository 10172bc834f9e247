"""Momentum SGD, as in Ichimura's paper, Sec. 4 (Rumelhart et al.'s momentum term)::

    v ← μ·v − η·g
    θ ← θ + v

with learning rate η (0.02 in the paper) and momentum μ (0.5). The velocity
starts at zero.
"""

from sflnet.backend import get_array_module
from sflnet.optim.base import Optimizer


class MomentumSGD(Optimizer):
    """v ← μ v − η g; θ ← θ + v, per named parameter."""

    NAME = "momentum-sgd"
    STATE = {"velocity": "velocity"}

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
