"""The activations of Eq. 3 (ReLU for layers 2-4, tanh for the output layer 5) and the β-VAE's sigmoid output.

Each is elementwise, so its backward multiplies ``dy`` by the derivative at
the cached point: ``dx = dy · a'(o)``. Shapes: any → same.
"""

from sflnet.backend import get_array_module
from sflnet.nn.base import Layer
from sflnet.ops.threads import elementwise


class ReLU(Layer):
    """Eq. 3 with a(o) = max(0, o). Shapes: any → same.

    The elementwise products run through :func:`sflnet.ops.threads.elementwise`,
    which only splits them over the CPU threads.
    """

    def __init__(self):
        super().__init__()
        self.positive_mask = None   # boolean array, True where the input was > 0

    def forward(self, x):
        """x: any shape → max(0, x), computed as x · [x > 0]."""
        out, self.positive_mask = elementwise(_relu_and_mask, x, dtypes=(x.dtype, bool))
        return out

    def backward(self, dy, need_dx=True):
        """∂E/∂o = ∂E/∂f · a'(o) with a'(o) = 1 for o > 0 and 0 otherwise (Eq. 3; the kink at 0 takes 0).

        dy: the output's shape → the input's shape (``None`` when not ``need_dx``).
        """
        if not need_dx:
            return None
        xp = get_array_module(dy)
        return elementwise(xp.multiply, dy, self.positive_mask, dtype=dy.dtype)


def _relu_and_mask(x, out):
    """out = (x · [x > 0], [x > 0]): the ReLU and its mask, into the two arrays of ``out``."""
    xp = get_array_module(x)
    result, mask = out
    xp.greater(x, 0, out=mask)
    return xp.multiply(x, mask, out=result)


def _tanh_derivative_product(dy, f, out):
    """out = dy · (1 − f²), into ``out`` (no temporaries)."""
    xp = get_array_module(dy)
    xp.multiply(f, f, out=out)
    xp.subtract(1, out, out=out)
    return xp.multiply(dy, out, out=out)


class Tanh(Layer):
    """Eq. 3 with a(o) = tanh(o), the output layer (L = 5). Shapes: any → same."""

    def __init__(self):
        super().__init__()
        self.output = None   # tanh(o), reused by the derivative

    def forward(self, x):
        """x: any shape → tanh(x)."""
        xp = get_array_module(x)
        self.output = elementwise(xp.tanh, x)
        return self.output

    def backward(self, dy, need_dx=True):
        """∂E/∂o = ∂E/∂f · (1 − f²), since d tanh(o)/do = 1 − tanh²(o) (Eq. 3, the factor ∂f^L/∂o^L of Eq. 9).

        dy: the output's shape → the input's shape (``None`` when not ``need_dx``).
        """
        if not need_dx:
            return None
        return elementwise(_tanh_derivative_product, dy, self.output)


def _sigmoid(x):
    """σ(x) = 1 / (1 + e^{−x}), evaluated without overflow: only e^{−|x|} ∈ (0, 1] is ever computed.

    For x ≥ 0: σ = 1 / (1 + e^{−|x|}). For x < 0 multiply top and bottom by
    e^{x} = e^{−|x|}: σ = e^{−|x|} / (1 + e^{−|x|}). Both keep full relative
    precision (σ(−40) ≈ 4e−18 is not rounded to 0, as 1 − σ(40) would be).
    """
    xp = get_array_module(x)
    decay = xp.exp(-xp.abs(x))   # e^{−|x|}: underflows quietly to 0 for |x| ≳ 745, never overflows
    denominator = 1 + decay
    return xp.where(x >= 0, 1 / denominator, decay / denominator)


class Sigmoid(Layer):
    """The β-VAE's output activation, σ(x) = 1 / (1 + e^{−x}) ∈ (0, 1). Shapes: any → same.

    Numerically stable for any |x| (no overflow, no warnings): see :func:`_sigmoid`.
    """

    def __init__(self):
        super().__init__()
        self.output = None   # σ(x), reused by the derivative

    def forward(self, x):
        """x: any shape → σ(x), same dtype."""
        self.output = _sigmoid(x)
        return self.output

    def backward(self, dy, need_dx=True):
        """∂E/∂x = ∂E/∂σ · σ(1 − σ); dy: the output's shape → the input's shape (``None`` when not ``need_dx``).

        Derivation: σ = (1 + e^{−x})^{−1}, so
        ``dσ/dx = e^{−x} / (1 + e^{−x})² = σ · e^{−x}/(1 + e^{−x}) = σ · (1 − σ)``,
        since ``1 − σ = e^{−x}/(1 + e^{−x})``. It needs only the cached output.
        """
        if not need_dx:
            return None
        s = self.output
        return dy * (s * (1 - s))
