"""col2im_rows (the flat, row-padded col2im of the transposed convolution) equals col2im bit for bit."""

import itertools

import numpy as np
import pytest

from sflnet.ops.im2col import col2im, col2im_row_width, col2im_rows, conv_output_size

GEOMETRIES = [(h, w, k, s, p) for h, w, k, s, p in itertools.product((5, 6, 7, 13, 14, 15), (5, 8, 14), (1, 3, 5),
                                                                      (1, 2), (0, 1, 2))
              if p <= k - 1 and conv_output_size(h, k, s, p) >= 1 and conv_output_size(w, k, s, p) >= 1]


def _padded(cols, c, k, n, ho, wo, row):
    """cols (C·k², N·Ho·Wo) laid out ``row`` wide, the extra columns zero."""
    out = np.zeros((c * k * k, n, ho, row), dtype=cols.dtype)
    out[..., :wo] = cols.reshape(c * k * k, n, ho, wo)
    return out.reshape(c * k * k, n * ho * row)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("h, w, k, s, p", GEOMETRIES)
def test_col2im_rows_equals_col2im_bit_for_bit(h, w, k, s, p, dtype):
    n, c = 3, 2
    ho, wo = conv_output_size(h, k, s, p), conv_output_size(w, k, s, p)
    cols = np.random.default_rng(h * 1000 + w * 100 + k * 10 + s + p).standard_normal((c * k * k, n * ho * wo))
    cols = cols.astype(dtype)
    expected = np.ascontiguousarray(col2im(cols, (n, c, h, w), k, k, s, p))
    narrowest = col2im_row_width((h, w), k, k, s, p)
    for row in (narrowest, narrowest + 2):
        got = col2im_rows(_padded(cols, c, k, n, ho, wo, row), (n, c, h, w), k, k, s, p, row)
        assert got.shape == expected.shape and got.dtype == expected.dtype
        assert np.ascontiguousarray(got).tobytes() == expected.tobytes()


def test_too_narrow_rows_are_refused():
    """One column short of col2im_row_width, the flat shifts would wrap real entries: refused."""
    h, w, k, s, p = 14, 14, 3, 2, 0
    ho, wo = conv_output_size(h, k, s, p), conv_output_size(w, k, s, p)
    row = col2im_row_width((h, w), k, k, s, p)
    assert row > wo
    cols = np.zeros((k * k, ho * (row - 1)))
    with pytest.raises(ValueError, match="rows of at least"):
        col2im_rows(cols, (1, 1, h, w), k, k, s, p, row - 1)


def test_the_width_rule_is_needed():
    """Wrapping really happens below the width: a row one narrower gives a different (wrong) sum."""
    h, w, k, s, p = 7, 7, 3, 1, 1
    ho, wo = conv_output_size(h, k, s, p), conv_output_size(w, k, s, p)
    row = col2im_row_width((h, w), k, k, s, p)
    cols = np.random.default_rng(0).standard_normal((k * k, ho * wo))
    expected = col2im(cols, (1, 1, h, w), k, k, s, p)
    import sflnet.ops.im2col as module
    original = module.col2im_row_width
    try:
        module.col2im_row_width = lambda *args: row - 1     # disable the check to show the failure it prevents
        wrong = col2im_rows(_padded(cols, 1, k, 1, ho, wo, row - 1) if row - 1 >= wo else None,
                            (1, 1, h, w), k, k, s, p, row - 1)
    finally:
        module.col2im_row_width = original
    assert not np.array_equal(wrong, expected)


@pytest.mark.parametrize("h, w, k, s, p", [(15, 15, 3, 2, 0), (29, 29, 3, 2, 0), (14, 13, 3, 2, 1), (9, 9, 5, 1, 2)])
def test_keep_is_the_top_left_crop(h, w, k, s, p):
    n, c = 2, 3
    ho, wo = conv_output_size(h, k, s, p), conv_output_size(w, k, s, p)
    cols = np.random.default_rng(7).standard_normal((c * k * k, n * ho * wo))
    row = col2im_row_width((h, w), k, k, s, p)
    full = np.ascontiguousarray(col2im(cols, (n, c, h, w), k, k, s, p))
    got = col2im_rows(_padded(cols, c, k, n, ho, wo, row), (n, c, h, w), k, k, s, p, row, keep=(h - 1, w - 1))
    assert got.shape == (n, c, h - 1, w - 1)
    assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(full[:, :, :h - 1, :w - 1]).tobytes()
