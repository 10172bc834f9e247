"""``sflnet evaluate``'s metrics computed many images at a time: the same numbers.

:func:`sflnet.metrics.psnr_ssim_values` computes the pairs of one shape together
(:func:`sflnet.metrics.psnr_ssim_batch`) instead of one :func:`psnr` and :func:`ssim` call per
image; each image's value must be bit for bit the per-image function's, whatever the blocks.

No timing is asserted (the machines these run on are shared). The comparisons use ``float.hex``,
so that nan and the sign of zero count too.
"""

import numpy as np
import pytest

from sflnet import metrics


def bits(values):
    """A list of floats as exact text (nan, inf and -0.0 included)."""
    return [float(v).hex() for v in values]


# ---------------------------------------------------------------------------
# The metrics, many images at a time
# ---------------------------------------------------------------------------

def per_image(originals, reconstructions, data_range, data_min):
    """The reference: one psnr() and one ssim() call per pair, as sflnet always computed them."""
    return ([metrics.psnr(o, r, data_range) for o, r in zip(originals, reconstructions)],
            [metrics.ssim(o, r, data_range, data_min=data_min) for o, r in zip(originals, reconstructions)])


def pairs(shapes, dtype, seed, identical=()):
    """Random image pairs: originals in [low, high], reconstructions near them (some far, some equal)."""
    rng = np.random.default_rng(seed)
    originals, recons = [], []
    for k, shape in enumerate(shapes):
        x = rng.uniform(-1.0, 1.0, size=shape).astype(dtype)
        y = x if k in identical else (x + rng.normal(0.0, 0.05 * (1 + k % 5), size=shape)).astype(dtype)
        originals.append(x)
        recons.append(y.copy())
    return originals, recons


MIXED = [(1, 28, 28)] * 7 + [(3, 17, 23), (3, 24, 20), (1, 28, 28), (3, 17, 23), (3, 9, 14), (3, 10, 30),
                             (3, 11, 11), (1, 28, 28), (3, 24, 20), (3, 9, 14)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("block_values", [1, 784 * 3 + 5, 1 << 18])
def test_batched_metrics_equal_the_per_image_functions_bit_for_bit(monkeypatch, dtype, block_values):
    monkeypatch.setattr(metrics, "BLOCK_VALUES", block_values)
    originals, recons = pairs(MIXED, dtype, seed=1, identical=(3, 12))
    for data_range, data_min in ((2.0, -1.0), (1.0, 0.0)):
        want = per_image(originals, recons, data_range, data_min)
        got = metrics.psnr_ssim_values(originals, recons, data_range, data_min=data_min)
        assert bits(got[0]) == bits(want[0]) and bits(got[1]) == bits(want[1])
        assert float("inf") in got[0] and any(v != v for v in got[1])     # identical pairs, images < 11 px
        assert bits(metrics.mean_psnr_ssim(originals, recons, data_range, data_min=data_min)) == bits(
            (np.mean(want[0]), np.mean(want[1])))
        finite = [i for i, v in enumerate(want[1]) if v == v]       # and a mean that is a number
        assert bits(metrics.mean_psnr_ssim([originals[i] for i in finite], [recons[i] for i in finite], data_range,
                                           data_min=data_min)) == bits((np.mean([want[0][i] for i in finite]),
                                                                        np.mean([want[1][i] for i in finite])))


@pytest.mark.parametrize("shape", [(3, 300, 300), (3, 200, 300), (1, 28, 28), (3, 11, 64)])
def test_a_stack_gives_each_image_its_own_numbers(shape, monkeypatch):
    """Large images (one per block, and several per block) and digits, through psnr_ssim_batch directly."""
    count = 3 if shape[1] >= 200 else 40
    originals, recons = pairs([shape] * count, np.float32, seed=7)
    want = per_image(originals, recons, 1.0, 0.0)
    for block_values in (1, 2 * int(np.prod(shape)), 1 << 22):
        monkeypatch.setattr(metrics, "BLOCK_VALUES", block_values)
        got = metrics.psnr_ssim_batch(np.stack(originals), np.stack(recons), 1.0, data_min=0.0)
        assert bits(got[0]) == bits(want[0]) and bits(got[1]) == bits(want[1])


def test_batched_metrics_read_their_inputs_only_and_check_shapes():
    originals, recons = pairs([(3, 16, 16)] * 3, np.float64, seed=2)
    before = [a.copy() for a in originals + recons]
    metrics.psnr_ssim_values(originals, recons)
    assert all(np.array_equal(a, b) for a, b in zip(originals + recons, before))
    with pytest.raises(ValueError, match="same shape"):
        metrics.psnr_ssim_values(originals, [r[:, :8] for r in recons])
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        metrics.psnr_ssim_values([o[0] for o in originals], [r[0] for r in recons])
    with pytest.raises(ValueError, match="as many"):
        metrics.psnr_ssim_values(originals, recons[:2])
