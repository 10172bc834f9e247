"""The gradient-check rows of the whole convolutional autoencoder, one per objective.

``network_pl`` (E = E_PL) and ``network_sfl`` (E = E_PL + E_SFL) are the paper's:
forward vs :func:`sflnet.gradcheck.references.network.autoencoder_losses`, a dense
check (every bias and :data:`NETWORK_DENSE_SAMPLE` random elements per weight
tensor; ``--full``: all 11 027) and a directional check. Every other loss of
:data:`sflnet.losses.REGISTRY` (plug-ins included) gets ``network_<name>``, the
whole CAE trained on that loss alone, and ``network_mixed`` all six built-ins
together: directional only (their images must fit the 11×11 SSIM and 16×16 STFT
windows). See :func:`network_objectives`.

The network checks use He-scaled weights and non-zero biases
(:func:`check_params`; not the paper's std-0.02 init, whose pre-activations crowd
around 0), and every numeric evaluation compares all ReLU masks with the
unperturbed ones (``Case.masks``).
"""

import math

import numpy as np

from sflnet import losses, nn
from sflnet.backend import to_device
from sflnet.gradcheck.engine import (THRESHOLD_NETWORK_DENSE, THRESHOLD_NETWORK_DIRECTIONAL, Case, LayerEntry,
                                     forward_measurement, normal, shape_text, uniform)
from sflnet.gradcheck.references.network import autoencoder_losses
from sflnet.losses.fft import focal_weights
from sflnet.models import cae as model

NETWORK_DENSE_SAMPLE = 24       # weights checked per weight tensor in the default (sampled) network dense check

# The paper's objectives, with forward and dense rows; the other losses' rows are directional only.
PAPER_OBJECTIVES = {"network_pl": "pl", "network_sfl": "pl+sfl"}
MIXED_OBJECTIVE = "pl+sfl+0.5*l1+2*ssim+3*fft+0.0001*stft"   # network_mixed: all six built-in losses


def network_objectives():
    """row name → ``--loss`` expression of the whole-network rows of the added losses, in report order:
    ``network_<name>`` for every registered loss other than pl and sfl, then ``network_mixed``."""
    rows = {f"network_{name}": name for name in losses.REGISTRY if name not in ("pl", "sfl")}
    rows["network_mixed"] = MIXED_OBJECTIVE
    return rows


def check_params(rng, xp=np, dtype=np.float64):
    """Network parameters for the checks: He-scaled weights ``N(0, 2/fan_in)``, biases ``N(0, 0.1²)``.

    Not the paper's init (std 0.02, zero biases): with that, ReLU pre-activations
    sit within ~1e-4 of 0 and a finite difference crosses kinks. Here they are O(1),
    so the ReLU masks stay fixed under the ε perturbations (which the checks verify).
    returns {w2 … b5} with :data:`sflnet.models.cae.PARAM_SHAPES`.
    """
    params = {}
    for name in model.PARAM_NAMES:
        shape = model.PARAM_SHAPES[name]
        if name.startswith("w"):
            fan_in = shape[1] * shape[2] * shape[3]
            params[name] = normal(rng, shape, xp, dtype, scale=math.sqrt(2.0 / fan_in))
        else:
            params[name] = normal(rng, shape, xp, dtype, scale=0.1)
    return params


def network_batch(rng, xp, dtype, size):
    """Images in [−1, 1]: tiny = (3,5,6) + (3,4,3); realistic = 2 × (3,64,48) + (3,37,53)."""
    shapes = [(3, 5, 6), (3, 4, 3)] if size == "tiny" else [(3, 64, 48), (3, 64, 48), (3, 37, 53)]
    return [uniform(rng, s, xp, dtype) for s in shapes]


def make_network_case(loss):
    """Factory for the whole Autoencoder with the objective ``loss``: E(θ) over all eight parameter arrays.

    An ``fft`` term's focal weights are computed at the base point and passed to it in every
    evaluation (they are constants by definition, see :class:`sflnet.losses.FocalFrequencyLoss`
    and :func:`_hold_focal_weights`).
    """
    def make(rng, xp, dtype, size):
        params = check_params(rng, xp, dtype)
        batch = network_batch(rng, xp, dtype, size)
        net = model.Autoencoder(params, loss=loss)
        variables = net.params
        _hold_focal_weights(net, batch)

        def evaluate():
            return xp.asarray(net.loss_and_grads(batch, compute_grads=False).E, dtype=dtype)

        def gradients(upstream):
            grads = net.loss_and_grads(batch, compute_grads=True).grads
            return {name: upstream * g for name, g in grads.items()}

        def masks():
            found = []
            for group in model.as_groups(batch):
                net.forward(group)
                found += [layer.positive_mask.copy() for layer in net.layers if isinstance(layer, nn.ReLU)]
            return found

        sample = {}
        if size == "tiny":
            for name in model.PARAM_NAMES:
                shape = model.PARAM_SHAPES[name]
                count = int(np.prod(shape))
                if name.startswith("w") and count > NETWORK_DENSE_SAMPLE:
                    flat = np.sort(rng.choice(count, size=NETWORK_DENSE_SAMPLE, replace=False))
                    sample[name] = [np.unravel_index(i, shape) for i in flat]
        images = " + ".join(shape_text(image.shape) for image in batch)
        return Case(variables, evaluate, gradients, f"batch {images}", masks, sample)
    return make


def forward_network(loss):
    def check(rng, xp):
        params = check_params(rng, np, np.float64)
        images = network_batch(rng, np, np.float64, "realistic")
        net = model.Autoencoder({n: to_device(p, xp) for n, p in params.items()}, loss=loss)
        result = net.loss_and_grads([to_device(i, xp) for i in images], compute_grads=False)
        computed = np.array([result.E, result.E_PL, result.E_SFL, *result.sfl])
        shape = "batch " + " + ".join(shape_text(i.shape) for i in images)
        return forward_measurement(shape, computed, autoencoder_losses(params, images, loss),
                                    "E, E_PL, E_SFL, 3 subbands")
    return check


def _hold_focal_weights(net, batch):
    """Give the fft loss of ``net``'s objective (if any) the focal weights of the base point, in every evaluation.

    Wraps ``forward`` and ``begin_batch`` of that loss instance: the k-th forward call since the
    batch began (one per group of same-size images) passes ``weights=`` the w that
    :func:`sflnet.losses.fft.focal_weights` gave for the k-th call of the first evaluation,
    which this runs now, at the unperturbed parameters.
    """
    fft = net.objective.losses.get("fft")
    if fft is None:
        return
    held, calls = [], [0]       # w per forward call at the base point; forward calls since begin_batch

    def begin_batch():
        calls[0] = 0

    def forward(recon, target, batch_count, original=fft.forward):
        k = calls[0]
        calls[0] += 1
        if k == len(held):      # the first evaluation: the base point
            held.append(focal_weights(recon, target))
        return original(recon, target, batch_count, weights=held[k])
    fft.begin_batch, fft.forward = begin_batch, forward
    net.loss_and_grads(batch, compute_grads=False)


def registry_entries():
    """row name → LayerEntry of the whole CAE: network_pl, network_sfl, then :func:`network_objectives`."""
    paper = {name: LayerEntry(make_network_case(expression),
                              [("forward vs reference net", forward_network(expression))],
                              dense_threshold=THRESHOLD_NETWORK_DENSE,
                              directional_threshold=THRESHOLD_NETWORK_DIRECTIONAL)
             for name, expression in PAPER_OBJECTIVES.items()}
    added = {name: LayerEntry(make_network_case(expression), dense=False,
                              directional_threshold=THRESHOLD_NETWORK_DIRECTIONAL)
             for name, expression in network_objectives().items()}
    return {**paper, **added}
