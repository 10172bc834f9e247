"""The whole convolutional autoencoder (Table 1 + Eq. 4, 6, 7) from the naive references, one image at a time.

Built from :mod:`.layers` (the SciPy convolution and LoG bank, the loop bilinear ×2)
and :mod:`.losses`; compared with :meth:`sflnet.models.cae.Autoencoder.loss_and_grads`
by the ``network_pl`` / ``network_sfl`` forward rows of ``sflnet gradcheck``.
"""

import numpy as np

from sflnet.gradcheck.references.layers import conv2d_scipy, log_bank_scipy, upsample2x_forward
from sflnet.gradcheck.references.losses import pixel_loss_forward, sfl_forward
from sflnet.models import cae as model


def autoencoder_losses(params, images, loss, sigmas=model.DEFAULT_SIGMAS,
                       sfl_weights=model.DEFAULT_SFL_WEIGHTS, pl_weights=model.DEFAULT_PL_WEIGHTS):
    """The CAE's batch losses, each image through Table 1 on its own.

    params: {w2 … b5} host float64; images: list of (3, H_i, W_i) host float64;
    loss: "pl" (E = E_PL) or "pl+sfl" (E = E_PL + E_SFL).
    returns the vector ``[E, E_PL, E_SFL, SFL_σ1, …]`` (unit-weight subbands last).
    """
    count = len(images)
    e_pl, e_sfl, subbands = 0.0, 0.0, np.zeros(len(sigmas), dtype=np.float64)
    for image in images:
        f1 = image[None]
        a = np.maximum(conv2d_scipy(f1, params["w2"], params["b2"], 1), 0.0)
        a = np.maximum(conv2d_scipy(a, params["w3"], params["b3"], 2), 0.0)
        a = upsample2x_forward(a, image.shape[1], image.shape[2])
        a = np.maximum(conv2d_scipy(a, params["w4"], params["b4"], 1), 0.0)
        f_l = np.tanh(conv2d_scipy(a, params["w5"], params["b5"], 1))
        e_pl += pixel_loss_forward(f_l, f1, count, pl_weights)
        weighted, unit = sfl_forward(f_l, f1, count, sigmas, sfl_weights, bank=log_bank_scipy)
        e_sfl += weighted
        subbands += unit
    total = e_pl + e_sfl if loss == "pl+sfl" else e_pl
    return np.array([total, e_pl, e_sfl, *subbands])
