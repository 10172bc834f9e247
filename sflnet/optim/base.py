"""The state API every optimiser shares (:class:`Optimizer`).

An optimiser updates the parameters in place (they belong to the model) and never modifies the
gradients. What it keeps per parameter is named by :attr:`Optimizer.STATE`, {checkpoint prefix:
attribute}: momentum SGD keeps ``velocity`` (saved as ``velocity_w2`` …), Adam keeps ``m`` and
``v`` (``adam_m_<name>``, ``adam_v_<name>``). A checkpoint stores :meth:`Optimizer.state_arrays`
and the step count, and :meth:`Optimizer.load_state_arrays` restores both.
"""


class Optimizer:
    """Base of the optimisers: ``step(params, grads)``, ``step_count`` and the checkpoint state.

    NAME:  the optimiser's name in checkpoints and model specs ("momentum-sgd", "adam")
    STATE: {checkpoint prefix: attribute name}; each attribute is {parameter name: array like the
           parameter}, created on the first step
    """

    NAME = None
    STATE = {}

    def step(self, params, grads):
        """params, grads: {name: array}. Updates ``params`` in place and returns them."""
        raise NotImplementedError

    def state_arrays(self):
        """{prefix: {name: array}}: what a checkpoint keeps (the live arrays; the step count is saved separately)."""
        return {prefix: getattr(self, attribute) for prefix, attribute in self.STATE.items()}

    def load_state_arrays(self, arrays, step_count=0):
        """Restore :meth:`state_arrays` (copied) and ``step_count``; an empty dict means a fresh start."""
        for prefix, attribute in self.STATE.items():
            setattr(self, attribute, {name: a.copy() for name, a in arrays.get(prefix, {}).items()})
        self.step_count = int(step_count)
