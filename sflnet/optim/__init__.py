"""Optimisers and learning-rate schedules, with one state API (:class:`sflnet.optim.base.Optimizer`).

================  =========================================  ==========
name              what                                       module
================  =========================================  ==========
``momentum-sgd``  v ← μv − ηg; θ ← θ + v (the CAE)           :mod:`.sgd`
``adam``          Adam, Kingma & Ba Algorithm 1 (the VAE)    :mod:`.adam`
================  =========================================  ==========

:func:`.schedules.triangular2_lr` is Smith's cyclical learning rate. All optimisers update the
parameters in place (they belong to the model) and never modify the gradients.
"""

from sflnet.optim.adam import Adam
from sflnet.optim.base import Optimizer
from sflnet.optim.schedules import triangular2_lr
from sflnet.optim.sgd import MomentumSGD

# The optimisers by the name model specs and checkpoints use.
OPTIMIZERS = {cls.NAME: cls for cls in (MomentumSGD, Adam)}
# The arrays each optimiser keeps per parameter, by the prefix they get in a checkpoint
# (``velocity_w2``, ``adam_m_conv1_w``...): :attr:`Optimizer.STATE`.
OPTIMIZER_STATE = {name: tuple(cls.STATE) for name, cls in OPTIMIZERS.items()}

__all__ = ["OPTIMIZERS", "OPTIMIZER_STATE", "Adam", "MomentumSGD", "Optimizer", "triangular2_lr"]
