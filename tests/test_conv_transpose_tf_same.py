"""ConvTranspose2D(padding="tf-same"): TensorFlow's 'same' transposed convolution (the authors' decoder).

Expected values come from outside the layer: TensorFlow's SAME rule written out here for the
convolution whose input gradient the layer is (explicit zero rows before and after, then a plain
valid correlation), the naive scatter loop of :mod:`sflnet.gradcheck.references.layers`, and, when
installed, PyTorch's ``conv_transpose2d`` with explicit cropping and ``output_padding``.
"""

import numpy as np
import pytest

from sflnet.backend import to_device, to_host
from sflnet.gradcheck.engine import EPS_SWEEP, THRESHOLD_ADJOINT, THRESHOLD_SMOOTH, adjoint_measurement, dense_check
from sflnet.gradcheck.engine import layer_case
from sflnet.gradcheck.references import layers as ref
from sflnet.nn import ConvTranspose2D

TOL = 1e-12


def tf_same_pads(size_out, k, s):
    """TensorFlow's SAME padding (before, after) of a convolution reading ``size_out`` pixels at stride s,
    written from its documentation: out = ceil(n / s), total = max((out − 1)·s + k − n, 0), before = total // 2."""
    out = -(-size_out // s)
    total = max((out - 1) * s + k - size_out, 0)
    return total // 2, total - total // 2


def tf_same_conv(y, w, s):
    """The convolution TensorFlow's conv2d_transpose is the input gradient of: y (N, C_out, s·h, s·w) →
    (N, C_in, h, w) with w (C_in, C_out, k, k), SAME padding as explicit zeros, then a valid correlation."""
    k = w.shape[-1]
    (t, bt), (l, r) = tf_same_pads(y.shape[2], k, s), tf_same_pads(y.shape[3], k, s)
    padded = np.pad(y, ((0, 0), (0, 0), (t, bt), (l, r)))
    return ref.conv2d_forward(padded, w, np.zeros(w.shape[0]), stride=s, pad=0)


def test_tf_same_pads_of_the_vae_decoder():
    # k = 3: stride 2 pads 0 before and 1 after (the extra at the bottom/right); stride 1 pads 1 and 1.
    assert tf_same_pads(14, 3, 2) == (0, 1)
    assert tf_same_pads(28, 3, 2) == (0, 1)
    assert tf_same_pads(28, 3, 1) == (1, 1)
    assert ref.tconv_top_padding(3, 2, 7, "tf-same") == 0
    assert ref.tconv_top_padding(3, 1, 28, "tf-same") == 1
    assert ref.tconv_top_padding(5, 2, 7, "tf-same") == 1


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("hw, k", [((3, 4), 3), ((5, 5), 3), ((4, 3), 5), ((1, 2), 3)])
def test_tf_same_matches_the_naive_reference(stride, hw, k):
    rng = np.random.default_rng(41)
    x = rng.standard_normal((2, 3, *hw))
    w = rng.standard_normal((3, 2, k, k))
    b = rng.standard_normal(2)
    layer = ConvTranspose2D(w, b, stride=stride, padding="tf-same")
    out = layer.forward(x)
    assert out.shape == (2, 2, stride * hw[0], stride * hw[1])
    dout = rng.standard_normal(out.shape)
    dx = layer.backward(dout)
    ref_dx, ref_dw, ref_db = ref.conv_transpose2d_backward(dout, x, w, stride, "tf-same")
    for got, want in ((out, ref.conv_transpose2d_forward(x, w, b, stride, "tf-same")),
                      (out, ref.conv_transpose2d_scipy(x, w, b, stride, "tf-same")),
                      (dx, ref_dx), (layer.grads["w"], ref_dw), (layer.grads["b"], ref_db)):
        assert np.max(np.abs(got - want)) <= TOL * max(1.0, np.max(np.abs(want)))


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("k", [3, 5])
def test_tf_same_is_the_adjoint_of_tensorflows_same_convolution(stride, k):
    """<T x, y> = <x, C y>, C the SAME convolution built here from TensorFlow's padding rule."""
    rng = np.random.default_rng(42)
    x = rng.standard_normal((2, 4, 5, 6))
    w = rng.standard_normal((4, 3, k, k))
    tx = ConvTranspose2D(w, np.zeros(3), stride=stride, padding="tf-same").forward(x)
    y = rng.standard_normal(tx.shape)
    lhs, rhs = np.sum(tx * y), np.sum(x * tf_same_conv(y, w, stride))
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)
    if stride == 2 and k == 3:   # and it is not the symmetric layer's adjoint
        sym = ConvTranspose2D(w, np.zeros(3), stride=stride).forward(x)
        assert abs(np.sum(sym * y) - rhs) > 1e-3 * abs(rhs)


def test_tf_same_is_the_symmetric_layer_shifted_by_one_output_pixel():
    rng = np.random.default_rng(43)
    x = rng.standard_normal((1, 2, 4, 5))
    w = rng.standard_normal((2, 3, 3, 3))
    b = rng.standard_normal(3)
    sym = ConvTranspose2D(w, b, stride=2).forward(x)
    tf = ConvTranspose2D(w, b, stride=2, padding="tf-same").forward(x)
    assert np.allclose(tf[:, :, 1:, 1:], sym[:, :, :-1, :-1], rtol=0, atol=1e-13)
    assert not np.allclose(tf, sym)
    one = ConvTranspose2D(w, b, stride=1, padding="tf-same").forward(x)
    assert np.array_equal(one, ConvTranspose2D(w, b, stride=1).forward(x))


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("x_shape", [(1, 2, 4, 3), (2, 1, 1, 2)])
def test_tf_same_dense_fd(xp, stride, x_shape):
    rng = np.random.default_rng(44)
    w = to_device(rng.standard_normal((x_shape[1], 2, 3, 3)), xp)
    b = to_device(rng.standard_normal(2), xp)
    layer = ConvTranspose2D(w, b, stride, padding="tf-same")
    case = layer_case(layer, {"x": to_device(rng.standard_normal(x_shape), xp), "w": w, "b": b}, "test")
    upstream = to_device(rng.standard_normal(case.evaluate().shape), xp)
    assert dense_check(case, upstream, EPS_SWEEP).error <= THRESHOLD_SMOOTH


@pytest.mark.parametrize("stride", [1, 2])
def test_tf_same_input_adjoint_of_its_backward(xp, stride):
    rng = np.random.default_rng(45)
    x = to_device(rng.standard_normal((2, 5, 6, 7)), xp)
    layer = ConvTranspose2D(to_device(rng.standard_normal((5, 3, 3, 3)), xp), to_device(np.zeros(3), xp), stride,
                            padding="tf-same")
    ax = layer.forward(x)
    y = to_device(rng.standard_normal(ax.shape), xp)
    assert adjoint_measurement("", ax, x, y, layer.backward(y)).error <= THRESHOLD_ADJOINT


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tf_same_keeps_dtype_and_inputs(xp, dtype):
    rng = np.random.default_rng(46)
    x = to_device(rng.standard_normal((2, 3, 7, 7)).astype(dtype), xp)
    w = to_device(rng.standard_normal((3, 2, 3, 3)).astype(dtype), xp)
    before = to_host(x).copy()
    layer = ConvTranspose2D(w, to_device(np.zeros(2, dtype=dtype), xp), 2, padding="tf-same")
    out = layer.forward(x)
    dout = to_device(rng.standard_normal(out.shape).astype(dtype), xp)
    dout_before = to_host(dout).copy()
    dx = layer.backward(dout)
    assert out.dtype == dx.dtype == layer.grads["w"].dtype == dtype
    assert np.array_equal(to_host(x), before) and np.array_equal(to_host(dout), dout_before)


def test_tf_same_rejects_an_unknown_padding():
    with pytest.raises(ValueError, match="padding"):
        ConvTranspose2D(np.zeros((2, 3, 3, 3)), np.zeros(3), stride=2, padding="same")


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("k", [3, 5])
def test_against_torch_conv_transpose2d(stride, k):
    """PyTorch (written independently): the full transposed convolution (padding 0) cropped to the s·h rows
    from TensorFlow's top padding; and for k = 3, s = 2, symmetric = padding 1 with output_padding 1."""
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    rng = np.random.default_rng(47)
    x = rng.standard_normal((2, 3, 5, 4))
    w = rng.standard_normal((3, 2, k, k))
    b = rng.standard_normal(2)
    top_h, _ = tf_same_pads(stride * 5, k, stride)
    top_w, _ = tf_same_pads(stride * 4, k, stride)
    full = functional.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                                       stride=stride).numpy()
    expected = full[:, :, top_h:top_h + stride * 5, top_w:top_w + stride * 4]
    out = ConvTranspose2D(w, b, stride, padding="tf-same").forward(x)
    assert np.max(np.abs(out - expected)) <= 1e-12 * np.max(np.abs(expected))
    if k == 3 and stride == 2:
        sym = functional.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), stride=2,
                                          padding=1, output_padding=1).numpy()
        assert np.max(np.abs(ConvTranspose2D(w, b, 2).forward(x) - sym)) <= 1e-12 * np.max(np.abs(sym))
