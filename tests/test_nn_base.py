"""The Layer protocol of :mod:`sflnet.nn`: every layer is a Layer, keeps ``params`` and ``grads`` under the
same keys, and accepts ``need_dx=False``, which skips only the input gradient (the parameter gradients
stay bit-identical)."""

import numpy as np
import pytest

from sflnet import nn


def _layers(rng):
    """(name, layer, input) for every layer class, with the conv variants whose backward differ."""
    def conv_params(c_out, c_in, k=3):
        return rng.standard_normal((c_out, c_in, k, k)), rng.standard_normal(c_out)

    x4 = rng.standard_normal((2, 3, 7, 6))
    return [
        ("conv s1", nn.Conv2D(*conv_params(4, 3)), x4),
        ("conv s2", nn.Conv2D(*conv_params(4, 3), stride=2), x4),
        ("conv unfold=output", nn.Conv2D(*conv_params(2, 3), unfold="output"), x4),
        ("conv valid s2", nn.Conv2D(*conv_params(4, 3), stride=2, padding="valid"), x4),
        ("upsample conv", nn.UpsampleConv2D(*conv_params(2, 3), output_size=(13, 12)), x4),
        ("upsample conv, plain way", nn.UpsampleConv2D(*conv_params(2, 3)), rng.standard_normal((2, 3, 2, 5))),
        ("conv transpose s2", nn.ConvTranspose2D(rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(2), stride=2),
         rng.standard_normal((2, 3, 4, 5))),
        ("linear", nn.Linear(rng.standard_normal((5, 8)), rng.standard_normal(5)), rng.standard_normal((3, 8))),
        ("relu", nn.ReLU(), x4),
        ("tanh", nn.Tanh(), x4),
        ("sigmoid", nn.Sigmoid(), x4),
        ("upsample2x", nn.Upsample2x(output_size=(13, 12)), x4),
        ("logbank", nn.LoGBank(), x4),
        ("reshape", nn.Reshape((6, 7, 3)), x4),
        ("flatten", nn.Flatten(), x4),
    ]


@pytest.mark.parametrize("index", range(15))
def test_need_dx_false_skips_only_the_input_gradient(index):
    rng = np.random.default_rng(index)
    name, layer, x = _layers(rng)[index]
    assert isinstance(layer, nn.Layer), name
    assert list(layer.params) == list(layer.grads), name
    assert all(g is None for g in layer.grads.values()), name
    out = layer.forward(x)
    dy = rng.standard_normal(out.shape)
    dx = layer.backward(dy)
    assert dx.shape == x.shape, name
    grads = {k: g.copy() for k, g in layer.grads.items()}
    layer.forward(x)
    assert layer.backward(dy, need_dx=False) is None, name
    assert set(layer.grads) == set(grads)
    for key, g in grads.items():
        np.testing.assert_array_equal(layer.grads[key], g, err_msg=f"{name}: grads[{key!r}]")


def test_parameter_free_layers_have_empty_dicts():
    for layer in (nn.ReLU(), nn.Tanh(), nn.Sigmoid(), nn.Upsample2x(), nn.LoGBank(), nn.Flatten(),
                  nn.Reshape((4,)), nn.Reparameterize()):
        assert layer.params == {} and layer.grads == {}, type(layer).__name__


def test_reparameterize_need_dx_false():
    rng = np.random.default_rng(3)
    mu, logvar, eps = (rng.standard_normal((2, 4)) for _ in range(3))
    layer = nn.Reparameterize()
    layer.forward(mu, logvar, eps)
    dz = rng.standard_normal((2, 4))
    d_mu, d_logvar = layer.backward(dz)
    np.testing.assert_array_equal(d_mu, dz)
    assert d_logvar.shape == (2, 4)
    assert layer.backward(dz, need_dx=False) is None


def test_base_layer_is_abstract():
    layer = nn.Layer(w=np.zeros(2))
    assert list(layer.params) == ["w"] and layer.grads == {"w": None}
    with pytest.raises(NotImplementedError):
        layer.forward(np.zeros(2))
    with pytest.raises(NotImplementedError):
        layer.backward(np.zeros(2))
