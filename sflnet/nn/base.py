"""The base class of every layer: what a layer holds, and the forward/backward protocol.

A layer is one map ``x ↦ y`` of the network with a hand-written adjoint:

* ``forward(x) -> y`` computes the map and keeps what ``backward`` will need;
* ``backward(dy, need_dx=True) -> dx`` takes ``dy = ∂E/∂y`` (the shape of y) and
  returns ``dx = ∂E/∂x`` (the shape of x); on the way it fills ``grads``.

``params`` and ``grads`` are dicts under the same keys (``{"w": …, "b": …}`` for
the convolutions and the dense layer; empty for the parameter-free layers).
``params`` holds the caller's arrays themselves, not copies, so an optimiser
updates them in place; ``grads[name]`` (same shape and dtype as
``params[name]``) is ``None`` until the first ``backward``, and each
``backward`` replaces it (it never accumulates).

``need_dx=False`` says that the caller has no use for ∂E/∂x (the first layer
of a network, whose input is the data): the layer still fills ``grads`` but
skips the input gradient and returns ``None``. Every layer accepts it.

Caches: everything that ``forward`` keeps for ``backward`` is an attribute set
to ``None`` in ``__init__`` and named for what it holds (``input_shape``,
``positive_mask``, ``output``, …), never a generic ``cache``. A backward before
any forward is an error.

The same code runs on NumPy and CuPy arrays (``xp = get_array_module(x)``);
inputs and upstream gradients are never modified in place, and the dtype of
the input is the dtype of every result. Each ``backward`` docstring derives
its formula and names the paper's equation.
"""


class Layer:
    """One layer: ``params``/``grads`` dicts under the same keys, ``forward(x)``, ``backward(dy, need_dx)``.

    ``Layer(w=w, b=b)`` holds the given arrays as ``params`` (not copied) and
    sets ``grads`` to ``{"w": None, "b": None}``; ``Layer()`` has no parameters.
    """

    def __init__(self, **params):
        self.params = dict(params)
        self.grads = {name: None for name in self.params}

    def forward(self, x):
        """x: the layer's input shape → y: its output shape. Keeps the caches ``backward`` needs."""
        raise NotImplementedError

    def backward(self, dy, need_dx=True):
        """dy = ∂E/∂y: y's shape → ∂E/∂x: x's shape (``None`` when not ``need_dx``). Fills ``grads``."""
        raise NotImplementedError
