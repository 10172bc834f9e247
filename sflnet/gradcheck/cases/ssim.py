"""The gradient-check rows of the ``ssim`` loss.

* :func:`forward_ssim` — the loss value and the per-image SSIM against
  scikit-image's ``structural_similarity`` (Gaussian window σ 1.5, population
  covariances, data range L, channel axis 0) when scikit-image is importable,
  otherwise against :func:`sflnet.gradcheck.references.losses.ssim_forward`, a loop over window
  positions (both: :func:`sflnet.gradcheck.references.losses.ssim_library`);
* :func:`make_ssim_case` — d(share)/d(recon) for the dense ("tiny") and
  directional ("realistic") checks;
* :func:`adjoint_ssim_filter` — ``⟨G x, m⟩ = ⟨x, Gᵀ m⟩`` for the valid Gaussian filtering.
"""

import numpy as np

from sflnet.backend import to_device, to_host
from sflnet.gradcheck.engine import (Case, LayerEntry, Measurement, adjoint_measurement, forward_measurement, normal,
                                     random_cotangent, shape_text)
from sflnet.gradcheck.references.losses import ssim_library
from sflnet.losses.ssim import SSIMLoss, ssim_per_image, valid_filter, valid_filter_adjoint

TINY_SHAPE = (2, 3, 11, 12)           # valid map 1×2: every pixel reaches S; an even width
REALISTIC_SHAPE = (2, 3, 64, 48)
FORWARD_SHAPES = ((2, 3, 23, 17), (2, 3, 12, 16))   # odd and even sizes
ADJOINT_SHAPE = (2, 3, 23, 17)


def _related_pair(rng, shape, xp, dtype, low=-1.0, high=1.0):
    """(recon, target) in [low, high]: target uniform, recon = target + noise, clipped (SSIM well inside (0, 1))."""
    target = rng.uniform(low, high, size=shape)
    recon = np.clip(target + 0.25 * (high - low) * rng.standard_normal(shape), low, high)
    return to_device(recon.astype(dtype), xp), to_device(target.astype(dtype), xp)


def forward_ssim(rng, xp):
    """The share Σ(1 − SSIM_i)/N_m of a group of 2 in a batch of 3, and each SSIM_i, vs a reference."""
    worst, samples, note = None, [], ""
    for shape in FORWARD_SHAPES:
        recon, target = _related_pair(rng, shape, xp, np.float64)
        batch_count = shape[0] + 1
        share, _ = SSIMLoss().forward(recon, target, batch_count)
        values = ssim_per_image(recon, target, 2.0, -1.0)
        reference, which = ssim_library(to_host(recon), to_host(target), 2.0, -1.0)
        expected = np.concatenate([[sum(1.0 - v for v in reference) / batch_count], reference])
        computed = np.concatenate([[float(share)], to_host(values)])
        m = forward_measurement("", computed, expected)
        worst = m if worst is None or m.error > worst.error else worst
        samples += [f"{shape_text(shape)}, N_m={batch_count}: element 0 = share, then SSIM per image"] + m.samples
        note = f"vs {which}; share and the per-image SSIM"
    shapes = "; ".join(shape_text(s) for s in FORWARD_SHAPES)
    return Measurement(f"{shapes}, N_m=3", worst.error, None, note, samples)


def make_ssim_case(rng, xp, dtype, size, *, shape=None, value_range=(-1.0, 1.0)):
    """d(share)/d(recon) of :class:`SSIMLoss`, a group of n in a batch of n + 1.

    size: "tiny" (2,3,11,12) for the dense check, "realistic" (2,3,64,48) for the directional one;
    shape overrides it; value_range is the loss's (low, high) and the data's range.
    """
    if shape is None:
        shape = TINY_SHAPE if size == "tiny" else REALISTIC_SHAPE
    recon, target = _related_pair(rng, shape, xp, dtype, *value_range)
    batch_count = shape[0] + 1
    loss = SSIMLoss(value_range)
    variables = {"recon": recon}

    def evaluate():
        return loss.forward(variables["recon"], target, batch_count)[0]

    def gradients(upstream):
        return {"recon": upstream * loss.backward()}
    range_text = "" if tuple(value_range) == (-1.0, 1.0) else f", range {tuple(value_range)}"
    return Case(variables, evaluate, gradients, f"recon{shape_text(shape)}, N_m={batch_count}{range_text}")


def adjoint_ssim_filter(rng, xp):
    """⟨G x, m⟩ = ⟨x, Gᵀ m⟩ for the valid 11×11 Gaussian correlation G: (2,3,23,17) → (2,3,13,7)."""
    x = normal(rng, ADJOINT_SHAPE, xp, np.float64)
    out = valid_filter(x)
    m = random_cotangent(rng, out, xp)
    back = valid_filter_adjoint(m, *ADJOINT_SHAPE[2:])
    return adjoint_measurement(f"x{shape_text(ADJOINT_SHAPE)} -> {shape_text(out.shape)}", out, x, m, back)


def ssim_entry():
    """The ``ssim_loss`` row: forward vs a reference, dense and directional, the filter's adjoint."""
    return LayerEntry(make_ssim_case, [("forward vs reference", forward_ssim)],
                      [("adjoint valid Gaussian filter", adjoint_ssim_filter)])
