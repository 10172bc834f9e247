"""Adam (Kingma & Ba 2015, Algorithm 1), used by Dalal's β-VAE::

    t ← t + 1
    m ← β1·m + (1 − β1)·g            first moment (running mean of g)
    v ← β2·v + (1 − β2)·g²           second moment (running mean of g²)
    m̂ = m / (1 − β1^t),  v̂ = v / (1 − β2^t)      bias corrections
    θ ← θ − η·m̂ / (√v̂ + ε)

Its learning rate η is driven by the "triangular2" schedule of
:func:`sflnet.optim.schedules.triangular2_lr` in the β-VAE runs.
"""

from sflnet.backend import get_array_module
from sflnet.optim.base import Optimizer


class Adam(Optimizer):
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

    NAME = "adam"
    STATE = {"adam_m": "m", "adam_v": "v"}

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
