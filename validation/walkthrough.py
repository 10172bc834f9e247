"""Follow one small image through the paper's autoencoder, forward and backward, one layer at a time.

Run from the repository root::

    python validation/walkthrough.py                 # one 3×8×8 image, seed 0
    python validation/walkthrough.py --size 7 --seed 3

What it prints, for one image f¹ (float64, uniform in [−1, 1], seeded) and the
paper's objective E = E_PL + E_SFL (Eq. 7), N_m = 1:

1. the forward pass, step by step: each layer's name, input shape → output
   shape, and the paper's equation it implements (Eq. 2 convolution, Eq. 3
   activation, Tab. 1's bilinear "stride 0.5", the Eq. 5 LoG bank), then the
   three loss values (Eq. 4, 6, 7);
2. the backward pass, step by step, with every gradient's shape: from E into
   the LoG bank (Eq. 8), the pixel-loss gradient added at f^L (Eq. 9), then
   tanh, conv5, …, conv2;
3. that these hand-chained gradients are the ones ``Autoencoder.loss_and_grads``
   computes (the largest relative error over the eight parameter arrays);
4. for a few hand-picked parameters and input pixels, the analytic derivative
   beside a central finite difference (eps = 1e-6) and their relative error.

Steps 3 and 4 are checked, not only printed: the script stops with an
``AssertionError`` if an error is too large.

The layers are the real ones of :mod:`sflnet.nn` (not the textbook versions
of :mod:`sflnet.gradcheck.references`), built from the model's parameter dict the way
:class:`~sflnet.models.cae.Autoencoder` builds them and called explicitly, so
the reader sees the whole chain. The weights are drawn as in the paper (normal,
biases 0) but with a larger standard deviation by default (``--init-std 0.2``
instead of the paper's 0.02). With 0.02 the signal fades layer by layer, some
gradients are ~1e-5 of E, and their finite differences agree only to a few
1e-7; with 0.2 the gradients are of order 1 and agree to ~1e-9.
"""

import argparse
from dataclasses import dataclass

import numpy as np

from sflnet.gradcheck.engine import rel_error
from sflnet.nn import Conv2D, LoGBank, ReLU, Tanh, Upsample2x
from sflnet.models.cae import PARAM_NAMES, Autoencoder, init_params

SIGMAS = (0.8, 1.6, 3.2)            # the LoG scales of layer 6 (Sec. 4)
SFL_WEIGHTS = (100.0, 10.0, 10.0)   # w_SFL of Eq. 6 (Sec. 4)
PL_WEIGHTS = (1.0, 1.0, 1.0)        # w_PL of Eq. 4 (Sec. 4)
EPS = 1e-6                          # central-difference step
FD_TOLERANCE = 1e-6                 # analytic vs central difference
MODEL_TOLERANCE = 1e-10             # hand-chained vs Autoencoder.loss_and_grads (same arithmetic)

# Hand-picked (parameter, index) pairs: one weight and one bias of every convolution.
PARAMETER_PICKS = (("w2", (0, 0, 1, 1)), ("b2", (5,)), ("w3", (3, 7, 0, 2)), ("b3", (2,)),
                   ("w4", (10, 4, 1, 1)), ("b4", (0,)), ("w5", (1, 20, 2, 0)), ("b5", (2,)))

# The backward chain in short, layer by layer (the ReLUs left out).
SHORT_CHAIN = "E → LoG → tanh → conv5 → conv4 → upsample → conv3 → conv2"


@dataclass
class Step:
    """One layer of the walk.

    name:      this script's name for it (conv2 … conv5 and up4 are the Autoencoder's attribute names)
    layer:     the sflnet layer object (forward(x), backward(dy))
    operation: what it does, in words
    forward:   the paper's equation of its forward
    source:    the symbol of its input, so that backward returns ∂E/∂source
    backward:  the formula of its backward, in words
    """

    name: str
    layer: object
    operation: str
    forward: str
    source: str
    backward: str


def make_image(seed, size):
    """The input f¹: (1, 3, size, size) float64, uniform in [−1, 1] (the tanh range), from ``default_rng(seed)``."""
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (1, 3, size, size))


def build_network(params, size):
    """Layers 2-5 of Table 1, built from the parameter dict as :class:`Autoencoder` builds them.

    params: {w2 … b5} float64 arrays (held by the layers, not copied); size: the image side H = W.
    returns the list of :class:`Step`, in forward order.
    """
    conv_back = "Eq. 2 backward: ∂E/∂input = Eq. 2ᵀ, and ∂E/∂w, ∂E/∂b"
    relu_back = "Eq. 3: × a'(o) = [o > 0]"
    return [
        Step("conv2", Conv2D(params["w2"], params["b2"], stride=1), "conv 3→32, 3×3, stride 1, + b2",
             "Eq. 2 (o², with the bias of Eq. 3)", "f¹", conv_back),
        Step("relu2", ReLU(), "ReLU", "Eq. 3 (f²)", "o²", relu_back),
        Step("conv3", Conv2D(params["w3"], params["b3"], stride=2), "conv 32→16, 3×3, stride 2, + b3",
             "Eq. 2 (o³, with the bias of Eq. 3)", "f²", conv_back),
        Step("relu3", ReLU(), "ReLU", "Eq. 3 (f³)", "o³", relu_back),
        Step("up4", Upsample2x(output_size=(size, size)), f"bilinear ×2, crop to {size}×{size}",
             "Tab. 1 (\"stride 0.5\")", "f³", "Upsample2xᵀ: each output's ¾, ¼ sent back"),
        Step("conv4", Conv2D(params["w4"], params["b4"], stride=1), "conv 16→32, 3×3, stride 1, + b4",
             "Eq. 2 (o⁴, with the bias of Eq. 3)", "up(f³)", conv_back),
        Step("relu4", ReLU(), "ReLU", "Eq. 3 (f⁴)", "o⁴", relu_back),
        # As in Autoencoder: 32 → 3 channels, so the 3-channel side is unfolded (same numbers, cheaper).
        Step("conv5", Conv2D(params["w5"], params["b5"], stride=1, unfold="output"),
             "conv 32→3, 3×3, stride 1, + b5", "Eq. 2 (o⁵, with the bias of Eq. 3)", "f⁴", conv_back),
        Step("tanh5", Tanh(), "tanh → reconstruction f^L", "Eq. 3 (f⁵ = f^L)", "o⁵",
             "Eq. 9's factor ∂f^L/∂o^L = 1 − (f^L)²"),
    ]


def run_forward(network, image, show=None):
    """Run the steps in order. image: (1, 3, H, W) → f^L: (1, 3, H, W).

    show: None, or a print function that receives one line per step.
    """
    x = image
    for number, step in enumerate(network, start=1):
        y = step.layer.forward(x)
        if show:
            show(f"  F{number:<3d} {step.name:6s} {step.operation:34s} {str(x.shape):15s} → {str(y.shape):15s} "
                 f"{step.forward}")
        x = y
    return x


def objective(recon, target, bank):
    """Eq. 4, 6 and 7 for one image (N_m = 1). recon f^L, target f¹: (1, 3, H, W).

    returns ({"E_PL", "E_SFL", "E"}: floats, LoG(f^L): (1, 3, H, W), LoG(f¹): (1, 3, H, W)).
    """
    _, colours, h, w = recon.shape
    bands_recon, bands_target = bank.forward(recon), bank.forward(target)
    e_pl = sum(PL_WEIGHTS[c] * 0.5 * np.sum((recon[0, c] - target[0, c]) ** 2) / (w * h) for c in range(colours))
    e_sfl = sum(SFL_WEIGHTS[c] * 0.5 * np.sum((bands_recon[0, c] - bands_target[0, c]) ** 2) / (w * h)
                for c in range(len(SIGMAS)))
    return {"E_PL": float(e_pl), "E_SFL": float(e_sfl), "E": float(e_pl + e_sfl)}, bands_recon, bands_target


def energy(network, bank, image, target):
    """E (Eq. 7) as a plain function of the current parameters and network input, for the finite differences."""
    return objective(run_forward(network, image), target, bank)[0]["E"]


def run_backward(network, bank, recon, target, bands_recon, bands_target, show):
    """The backward pass, one step at a time, printing each gradient's shape.

    recon f^L, target f¹: (1, 3, H, W); bands_*: the layer-6 outputs (1, 3, H, W).
    returns ({name: ∂E/∂θ} for w2 … b5, ∂E/∂f¹: (1, 3, H, W) through the network, the target held fixed).
    """
    _, _, h, w = recon.shape
    n_m = 1

    def line(step, source, what, array, formula=""):
        show(f"  {step:4s} {source:16s} {what:14s} {str(array.shape):15s} {formula}".rstrip())

    # Eq. 8: the gradient at the output o⁶ of layer 6 (identity activation, so it is also ∂E/∂f⁶).
    g6 = np.asarray(SFL_WEIGHTS)[None, :, None, None] / (n_m * w * h) * (bands_recon - bands_target)
    line("B1", "E", "∂E/∂o⁶", g6, "Eq. 8: w_SFL[c]/(N_m W H)·(LoG_c(f^L) − LoG_c(f¹))")
    g_sfl = bank.backward(g6)
    line("B2", "log6.backward", "∂E_SFL/∂f^L", g_sfl, "layer 6ᵀ: Σ_c K_c ⋆ ∂E/∂o⁶_c, the same for every colour")
    g_pl = np.asarray(PL_WEIGHTS)[None, :, None, None] / (n_m * w * h) * (recon - target)
    line("B3", "pixel loss", "∂E_PL/∂f^L", g_pl, "Eq. 9 without ∂f^L/∂o^L: w_PL[c]/(N_m W H)·(f^L − f¹)")
    g = g_sfl + g_pl
    line("B4", "B2 + B3", "∂E/∂f^L", g, "Sec. 3: Eq. 9's gradient \"added to\" the one from layer L+1")

    grads = {}
    for number, step in enumerate(reversed(network), start=5):
        g = step.layer.backward(g)
        line(f"B{number}", f"{step.name}.backward", f"∂E/∂{step.source}", g, step.backward)
        for kind, grad in getattr(step.layer, "grads", {}).items():
            name = f"{kind}{step.name[-1]}"
            grads[name] = grad
            line("", "", f"∂E/∂{name}", grad)
    return grads, g


def central_difference(function, array, index, eps=EPS):
    """(function() with array[index] + eps − with array[index] − eps) / 2 eps; array[index] is restored exactly."""
    old = array[index]
    array[index] = old + eps
    plus = function()
    array[index] = old - eps
    minus = function()
    array[index] = old
    return (plus - minus) / (2 * eps)


def main(argv=None):
    """Parse the options, print the walkthrough and check it. returns a summary dict."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the image and of the weights (default 0)")
    parser.add_argument("--size", type=int, default=8, help="the image side H = W in pixels (default 8)")
    parser.add_argument("--init-std", type=float, default=0.2,
                        help="std of the normal initial weights (default 0.2; the paper's is 0.02)")
    args = parser.parse_args(argv)
    if args.size < 1:
        parser.error("--size must be at least 1")
    show = print

    image = make_image(args.seed, args.size)
    params = init_params(args.seed, args.init_std, np.float64)
    network = build_network(params, args.size)
    bank = LoGBank(SIGMAS)

    show(f"One image f¹ {image.shape} (float64, seed {args.seed}, N_m = 1) through the Table 1 autoencoder, "
         f"E = E_PL + E_SFL; weights ~ N(0, {args.init_std:g}²), biases 0.")
    show("Paper numbering: layer 1 is the input f¹, layers 2-5 the autoencoder (f⁵ = f^L, the reconstruction), "
         "layer 6 the LoG bank.")
    show("")
    show("Forward pass")
    show(f"  {'step':4s} {'layer':6s} {'operation':34s} {'input shape':15s} → {'output shape':15s} paper")
    recon = run_forward(network, image, show)
    values, bands_recon, bands_target = objective(recon, image, bank)
    show(f"  F{len(network) + 1:<3d} {'log6':6s} {'LoG bank σ = 0.8, 1.6, 3.2, on f^L':34s} {str(recon.shape):15s} → "
         f"{str(bands_recon.shape):15s} Eq. 5 weights in Eq. 2 (o⁶ = f⁶: identity, no bias)")
    show(f"  {'':4s} {'log6':6s} {'the same bank on the target f¹':34s} {str(image.shape):15s} → "
         f"{str(bands_target.shape):15s} f¹(·|σ_c) of Eq. 6")
    show("Loss")
    show(f"  E_PL  = {values['E_PL']:.10f}   Eq. 4 (w_PL = 1, 1, 1)")
    show(f"  E_SFL = {values['E_SFL']:.10f}   Eq. 6 (w_SFL = 100, 10, 10)")
    show(f"  E     = {values['E']:.10f}   Eq. 7: E = E_PL + E_SFL")
    show("")

    show("Backward pass")
    show(f"  {'step':4s} {'from':16s} {'gradient':14s} {'shape':15s} paper")
    grads, grad_input = run_backward(network, bank, recon, image, bands_recon, bands_target, show)
    show("")
    show(f"The chain in short:                {SHORT_CHAIN}")
    show("and with the names used here:      E → log6 → tanh5 → conv5 → relu4 → conv4 → up4 → relu3 → conv3 "
         "→ relu2 → conv2")
    show("  conv2 … conv5 and up4 are attributes of sflnet.models.cae.Autoencoder(fuse_upsample=False). Each ReLU")
    show("  is a layer of its own, which the short chain leaves out; tanh5 and relu2-4 name the unnamed Tanh and")
    show("  ReLU entries of Autoencoder.layers; log6 is the LoGBank that the SFL loss holds (SpatialFrequencyLoss.bank).")
    show("  By default the model computes up4 and conv4 (F5, F6; B8, B9) as ONE layer, UpsampleConv2D, a sub-pixel")
    show("  convolution at the low resolution; the comparison below is against that default model.")
    show("")

    # The hand-chained gradients are the model's own.
    model = Autoencoder(params, loss="pl+sfl", sigmas=SIGMAS, sfl_weights=SFL_WEIGHTS, pl_weights=PL_WEIGHTS)
    result = model.loss_and_grads(image)
    model_error = max(rel_error(grads[name], result.grads[name]) for name in PARAM_NAMES)
    energy_error = abs(result.E - values["E"]) / abs(result.E)
    show(f"Against Autoencoder.loss_and_grads: max rel error over {', '.join(PARAM_NAMES)} = {model_error:.1e}; "
         f"E differs by {energy_error:.1e}")
    if model_error > MODEL_TOLERANCE or energy_error > MODEL_TOLERANCE:
        raise AssertionError(f"the hand-chained pass differs from Autoencoder.loss_and_grads: gradients "
                             f"{model_error:.2e}, E {energy_error:.2e}")
    show("")

    # Finite differences: parameters (perturbed in place, in the arrays the layers hold) and input pixels.
    show(f"Finite differences (central, eps = {EPS:g}, float64). For the input pixels only the network input moves;")
    show("the target f¹ of the losses is held fixed. rel error = |a − n| / max(1e-8, max(|a|, s) + |n|), with s the")
    show("largest |entry| of that whole gradient array (sflnet.gradcheck.engine.rel_error): an entry that is ~0 next to")
    show("the rest of its array is judged on that array's scale, not on the rounding noise of E.")
    show(f"  {'variable':10s} {'index':16s} {'analytic':>16s} {'central diff.':>16s} {'rel error':>10s}")
    target = image.copy()
    size = args.size
    picks = [(name, index, params[name], grads[name]) for name, index in PARAMETER_PICKS]
    picks += [("f¹", (0, c, y, x), image, grad_input)
              for c, y, x in ((0, 0, 0), (1, size // 2, size // 2), (2, size - 1, size // 3))]
    rows = []
    for name, index, array, gradient in picks:
        analytic = float(gradient[index])
        numeric = central_difference(lambda: energy(network, bank, image, target), array, index)
        error = rel_error(analytic, numeric, analytic_scale=float(np.max(np.abs(gradient))))
        rows.append((name, index, analytic, numeric, error))
        show(f"  {name:10s} {str(index):16s} {analytic:16.9e} {numeric:16.9e} {error:10.1e}")
    worst = max(row[-1] for row in rows)
    show(f"Largest FD rel error: {worst:.1e} (required < {FD_TOLERANCE:g})")
    if worst >= FD_TOLERANCE:
        raise AssertionError(f"a finite difference disagrees with backpropagation: rel error {worst:.2e}")
    return {"values": values, "model_error": model_error, "fd": rows}


if __name__ == "__main__":
    main()
