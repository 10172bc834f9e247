"""The gradient-check rows of the losses: one per loss of :data:`sflnet.losses.REGISTRY`.

Every registered loss, a plug-in as much as a built-in, gets a row named
:func:`loss_row_name` (``pixel_loss`` for ``pl``, ``<name>_loss`` otherwise) with
a dense central-difference check of d(share)/d(recon) on a tiny shape and a
directional check on a realistic one (and, in :mod:`.network`, a whole-network
directional row). A loss without rows of its own is built by
``make_loss(name, LossSettings())`` (:func:`make_registered_loss_case`), so a new
loss added to the registry is checked by ``sflnet gradcheck`` with no edit here
and ``--layer <name>_loss`` selects it.

The built-in losses keep their own cases, which know where the loss has kinks or
constants (:func:`special_entries`):

* ``pl`` with unequal channel weights, ``sfl`` with the paper's σ and weights,
  each against its equation written out (:mod:`sflnet.gradcheck.references.losses`);
* ``l1`` keeps ``|recon − target| ≥ 0.05``, so no ε crosses the kink of ``|·|``;
* ``ssim`` (:mod:`.ssim`), and ``fft``, ``stft`` and ``stft_code`` (:mod:`.freq`): the fft focal
  weights are held at the base point's, the stft and stft_code recons are drawn away from their kinks.
"""

import numpy as np

from sflnet import losses
from sflnet.backend import to_device
from sflnet.gradcheck.cases import freq, ssim
from sflnet.gradcheck.engine import Case, LayerEntry, forward_measurement, shape_text, uniform
from sflnet.gradcheck.references import layers as ref_layers
from sflnet.gradcheck.references import losses as ref
from sflnet.losses import LossSettings
from sflnet.models import cae as model

PIXEL_WEIGHTS = (1.0, 0.5, 2.0)   # unequal, so a mixed-up channel index shows


def make_loss_case(kind):
    """Factory for PixelLoss ("pl") / SpatialFrequencyLoss ("sfl"): d(E)/d(recon), group of 2 in a batch of 3."""
    def make(rng, xp, dtype, size):
        shape = ((2, 3, 5, 6) if kind == "pl" else (2, 3, 7, 6)) if size == "tiny" else (2, 3, 64, 48)
        recon = uniform(rng, shape, xp, dtype)
        target = uniform(rng, shape, xp, dtype)
        batch_count = shape[0] + 1
        loss = losses.PixelLoss(PIXEL_WEIGHTS) if kind == "pl" else \
            losses.SpatialFrequencyLoss(model.DEFAULT_SIGMAS, model.DEFAULT_SFL_WEIGHTS)
        variables = {"recon": recon}

        def evaluate():
            return loss.forward(variables["recon"], target, batch_count)[0]

        def gradients(upstream):
            return {"recon": upstream * loss.backward()}
        return Case(variables, evaluate, gradients, f"recon{shape_text(shape)}, N_m={batch_count}")
    return make


def make_l1_case(rng, xp, dtype, size):
    """L1Loss: d(share)/d(recon) with every |recon − target| ≥ 0.05, so no ε crosses the kink of |·|."""
    shape = (2, 3, 5, 6) if size == "tiny" else (2, 3, 64, 48)
    target = uniform(rng, shape, xp, dtype)
    step = rng.uniform(0.05, 0.5, shape) * rng.choice([-1.0, 1.0], shape)
    variables = {"recon": target + to_device(step.astype(dtype), xp)}
    loss = losses.L1Loss()
    batch_count = shape[0] + 1

    def evaluate():
        return loss.forward(variables["recon"], target, batch_count)[0]

    def gradients(upstream):
        return {"recon": upstream * loss.backward()}
    return Case(variables, evaluate, gradients, f"recon{shape_text(shape)}, N_m={batch_count}, |d|>=0.05")


def forward_l1(rng, xp):
    recon, target = rng.uniform(-1, 1, (2, 3, 5, 6)), rng.uniform(-1, 1, (2, 3, 5, 6))
    value, _ = losses.L1Loss().forward(to_device(recon, xp), to_device(target, xp), 3)
    return forward_measurement("(2,3,5,6), N_m=3", value, ref.l1_loss_forward(recon, target, 3), "E_L1")


def forward_pixel_loss(rng, xp):
    recon, target = rng.uniform(-1, 1, (2, 3, 5, 6)), rng.uniform(-1, 1, (2, 3, 5, 6))
    value, _ = losses.PixelLoss(PIXEL_WEIGHTS).forward(to_device(recon, xp), to_device(target, xp), 3)
    return forward_measurement("(2,3,5,6), N_m=3", value,
                                ref.pixel_loss_forward(recon, target, 3, PIXEL_WEIGHTS), "E_PL")


def forward_sfl(rng, xp):
    recon, target = rng.uniform(-1, 1, (2, 3, 9, 8)), rng.uniform(-1, 1, (2, 3, 9, 8))
    loss = losses.SpatialFrequencyLoss(model.DEFAULT_SIGMAS, model.DEFAULT_SFL_WEIGHTS)
    weighted, parts = loss.forward(to_device(recon, xp), to_device(target, xp), 3)
    unit = [float(parts[column]) for column in loss.columns]
    ref_weighted, ref_unit = ref.sfl_forward(recon, target, 3, model.DEFAULT_SIGMAS, model.DEFAULT_SFL_WEIGHTS,
                                             bank=ref_layers.log_bank_scipy)
    computed = np.concatenate([[float(weighted)], unit])
    return forward_measurement("(2,3,9,8), N_m=3", computed, np.concatenate([[ref_weighted], ref_unit]),
                                "E_SFL and the 3 unit subbands")



# ---------------------------------------------------------------------------
# Any registered loss, built by make_loss
# ---------------------------------------------------------------------------

GENERIC_TINY_SHAPES = ((2, 3, 5, 6), (2, 3, 11, 12), (2, 3, 16, 17), (2, 3, 32, 33))   # the first the loss measures
GENERIC_REALISTIC_SHAPE = (2, 3, 64, 48)


def _measurable_shape(loss, shapes):
    """The first of ``shapes`` (n, C, H, W) whose H × W the loss can measure (``size_problem`` None)."""
    size_problem = getattr(loss, "size_problem", None)
    for shape in shapes:
        if size_problem is None or size_problem(shape[2], shape[3]) is None:
            return shape
    raise ValueError(f"loss {getattr(loss, 'name', loss)!r} measures none of {', '.join(map(shape_text, shapes))}")


def make_registered_loss_case(name):
    """Factory for d(share)/d(recon) of ``make_loss(name, LossSettings())``, a group of 2 in a batch of 3.

    size "tiny": the first of :data:`GENERIC_TINY_SHAPES` the loss can measure (dense check);
    "realistic": (2,3,64,48) (directional). recon and target uniform in [−1, 1]. Every evaluation
    starts a batch (``begin_batch``, when the loss has it), so it sees the same function each time.
    """
    def make(rng, xp, dtype, size):
        loss = losses.make_loss(name, LossSettings())
        shape = _measurable_shape(loss, GENERIC_TINY_SHAPES if size == "tiny" else (GENERIC_REALISTIC_SHAPE,))
        recon = uniform(rng, shape, xp, dtype)
        target = uniform(rng, shape, xp, dtype)
        batch_count = shape[0] + 1
        begin_batch = getattr(loss, "begin_batch", None)
        variables = {"recon": recon}

        def evaluate():
            if begin_batch is not None:
                begin_batch()
            return loss.forward(variables["recon"], target, batch_count)[0]

        def gradients(upstream):
            return {"recon": upstream * loss.backward()}
        return Case(variables, evaluate, gradients, f"recon{shape_text(shape)}, N_m={batch_count}")
    return make


def loss_row_name(name):
    """The gradcheck row of a registered loss: ``pixel_loss`` for ``pl``, ``<name>_loss`` otherwise."""
    return "pixel_loss" if name == "pl" else f"{name}_loss"


def special_entries():
    """loss name → :class:`~sflnet.gradcheck.engine.LayerEntry` of the built-in losses that have their own cases."""
    return {
        "pl": LayerEntry(make_loss_case("pl"), [("forward vs Eq. 4 loop", forward_pixel_loss)]),
        "sfl": LayerEntry(make_loss_case("sfl"), [("forward vs Eq. 6 loop", forward_sfl)]),
        "l1": LayerEntry(make_l1_case, [("forward vs mean |d| loop", forward_l1)]),
        "ssim": ssim.ssim_entry(),
        "fft": freq.fft_entry(),
        "stft": freq.stft_entry(),
        "stft_code": freq.stft_code_entry(),
    }


def registry_entries():
    """row name → LayerEntry for every loss of :data:`sflnet.losses.REGISTRY`, in registry order.

    Built when called, so a loss registered (or a class monkeypatched) since is picked up.
    """
    special = special_entries()
    return {loss_row_name(name): special[name] if name in special else LayerEntry(make_registered_loss_case(name))
            for name in losses.REGISTRY}
