"""The β-VAE's dense layers: :class:`Linear`, and the shape changes around it (:class:`Reshape`, :class:`Flatten`)."""

import math

from sflnet.nn.base import Layer


class Linear(Layer):
    """A dense (fully connected) layer: ``y = x · wᵀ + b``.

    ``y[n, o] = Σ_i x[n, i] · w[o, i] + b[o]``

    Weight layout (out, in), as PyTorch's ``Linear``; b: (out,).
    Shapes: x (N, in) → y (N, out).
    """

    def __init__(self, w, b):
        """w: (out, in); b: (out,). The arrays are held, not copied."""
        if w.ndim != 2 or b.shape != (w.shape[0],):
            raise ValueError(f"Linear needs w (out, in) and b (out,), got {w.shape} and {b.shape}")
        super().__init__(w=w, b=b)
        self.input = None   # x: (N, in), the last forward input

    def forward(self, x):
        """x: (N, in) → (N, out)."""
        w, b = self.params["w"], self.params["b"]
        if x.ndim != 2 or x.shape[1] != w.shape[1]:
            raise ValueError(f"Linear expects input (N, {w.shape[1]}), got {x.shape}")
        self.input = x
        out = x @ w.T
        out += b
        return out

    def backward(self, dy, need_dx=True):
        """dy = ∂E/∂y: (N, out) → ∂E/∂x: (N, in) (``None`` when not ``need_dx``).

        Derivation. y[n, o] depends on w[o, i] through the one term x[n, i]·w[o, i],
        on b[o] with slope 1, and on x[n, i] through every output o. The chain
        rule, summed over what each variable touches:

        * ``∂E/∂w[o, i] = Σ_n dy[n, o] x[n, i]``  →  ``∂E/∂w = dyᵀ · x``  (out, in)
        * ``∂E/∂b[o] = Σ_n dy[n, o]``               (out,)
        * ``∂E/∂x[n, i] = Σ_o dy[n, o] w[o, i]``  →  ``∂E/∂x = dy · w``  (N, in)

        The map x ↦ x·wᵀ has the transpose dy ↦ dy·w: the backward is the adjoint.
        """
        w = self.params["w"]
        self.grads["w"] = dy.T @ self.input
        self.grads["b"] = dy.sum(axis=0)
        if not need_dx:
            return None
        return dy @ w


class Reshape(Layer):
    """Keep the batch axis, reshape the rest: (N, *anything) → (N, *shape), C order.

    shape: the per-image target shape, e.g. (32, 7, 7) after the decoder's Linear.
    No arithmetic, so no parameters.
    """

    def __init__(self, shape):
        super().__init__()
        self.shape = None if shape is None else tuple(int(s) for s in shape)   # per image; None: flatten
        self.input_shape = None   # (N, …) of the last forward input

    def forward(self, x):
        """x: (N, …) → (N, *shape) with the same elements in C order (a view when x's memory allows)."""
        target = self.shape if self.shape is not None else (math.prod(x.shape[1:]),)
        if math.prod(target) != math.prod(x.shape[1:]):
            raise ValueError(f"{type(self).__name__} cannot map {x.shape[1:]} to {target}")
        self.input_shape = x.shape
        return x.reshape((x.shape[0],) + target)

    def backward(self, dy, need_dx=True):
        """dy: (N, *shape) → (N, …) of the input (``None`` when not ``need_dx``).

        Reshaping is a permutation-free relabelling of the same elements: element
        j of the output is element j of the input (C order), with slope 1. So the
        gradient of each input element is the gradient of the output element it
        became: ``∂E/∂x = dy`` read back in the input's shape.
        """
        if not need_dx:
            return None
        return dy.reshape(self.input_shape)


class Flatten(Reshape):
    """(N, C, H, W) (or any (N, …)) → (N, D), D = C·H·W, in C order (channel, then row, then column).

    A :class:`Reshape` whose target is "everything but the batch axis in one";
    backward reshapes back.
    """

    def __init__(self):
        super().__init__(None)
