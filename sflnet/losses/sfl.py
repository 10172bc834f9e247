"""``sfl``: the spatial frequency loss of the paper, Eq. 6, and its gradient, Eq. 8."""

from sflnet.backend import device_constant
from sflnet.nn.fixed import LoGBank
from sflnet.losses.base import PAPER_SFL_WEIGHTS, Loss, Option
from sflnet.ops.filters import PAPER_SIGMAS


def sigma_label(sigma):
    """How a σ is written in column names and JSON keys: ``f"{sigma:g}"`` (0.8 → "0.8")."""
    return f"{sigma:g}"


def subband_column(sigma):
    """The history column of the unit-weight SFL of one subband: ``sfl_0.8``."""
    return f"sfl_{sigma_label(sigma)}"


def sigmas_problem(sigmas):
    """Why a σ list is not allowed (one line), or None: at least one, all > 0, distinct as labelled."""
    if not sigmas:
        return "needs at least one value"
    if not all(s > 0 for s in sigmas):
        return "must all be > 0"
    labels = [sigma_label(s) for s in sigmas]
    if len(set(labels)) != len(labels):
        return "must be distinct (as printed with 6 significant digits)"
    return None


def weights_problem(weights):
    """Why an SFL weight list is not allowed, or None: all ≥ 0."""
    return None if all(w >= 0 for w in weights) else "must all be >= 0"


class SpatialFrequencyLoss(Loss):
    """Eq. 6, the spatial frequency loss through the fixed LoG bank (layer 6).

    ``SFL(i, c) = ½ · mean_{x,y} (LoG_c(f^L_i) − LoG_c(f^1_i))²`` and
    ``E_SFL = (1/N_m) Σ_i Σ_c w_SFL[c] · SFL(i, c)``.

    Layer 6 is linear, so ``LoG(f^L) − LoG(f^1) = LoG(f^L − f^1)``: one pass on
    the difference gives both terms exactly. ``forward`` also returns, as its
    parts, the unit-weight subband losses ``(1/N_m) Σ_i SFL(i, c)`` that Fig. 5
    plots (history columns ``sfl_0.8``, ``sfl_1.6``, ``sfl_3.2``).
    """

    name = "sfl"
    summary = "spatial frequency loss, paper Eq. 6 / 8 (history columns sfl_<σ> follow its sigmas)"
    options = (
        Option("sigmas", "floats", PAPER_SIGMAS, "LoG scales σ of the subbands, colon-separated (> 0)",
               check=sigmas_problem, alias="sigmas"),
        Option("weights", "floats", PAPER_SFL_WEIGHTS, "one SFL weight per σ, colon-separated (>= 0)",
               check=weights_problem, alias="sfl_weights"),
    )

    @classmethod
    def options_problem(cls, values):
        """One weight per σ."""
        if len(values["sigmas"]) != len(values["weights"]):
            return (f"sigmas has {len(values['sigmas'])} values but weights has {len(values['weights'])}; "
                    f"give one weight per sigma")
        return None

    def __init__(self, sigmas=PAPER_SIGMAS, weights=PAPER_SFL_WEIGHTS):
        if len(sigmas) != len(weights):
            raise ValueError(f"{len(sigmas)} sigmas but {len(weights)} SFL weights")
        self.bank = LoGBank(sigmas)
        self.weights = tuple(float(w) for w in weights)
        self.columns = tuple(subband_column(s) for s in self.bank.sigmas)
        self.band_difference = None   # LoG(f^L − f^1), (n, S, H, W)
        self.batch_count = None       # N_m

    @property
    def sigmas(self):
        return self.bank.sigmas

    def subbands(self, recon, target, batch_count):
        """The unit-weight subband shares ``(1/N_m) Σ_{i in group} SFL(i, c)``: (S,) array; caches for backward."""
        d6 = self.bank.forward(recon - target)
        self.band_difference = d6
        self.batch_count = batch_count
        return 0.5 * (d6 * d6).mean(axis=(2, 3)).sum(axis=0) / batch_count   # (S,)

    def forward(self, recon, target, batch_count):
        """recon, target: (n, 3, H, W) → (E_SFL share (0-d), {"sfl_<σ>": unit-weight subband share (0-d)})."""
        subbands = self.subbands(recon, target, batch_count)
        w = device_constant(self.weights, recon)
        return (w * subbands).sum(), {column: subbands[i] for i, column in enumerate(self.columns)}

    def backward(self):
        """Returns ∂E_SFL/∂f^L: (n, 3, H, W).

        Eq. 8: ``∂E_SFL/∂o^6 = w_SFL[c] / (N_m H W) · (LoG_c(f^L) − LoG_c(f^1))`` (derivative of
        each ½ d² / (N_m H W) term); layer 6 has identity activation, so this
        is also ∂E/∂f^6, and the bank's transpose carries it down to f^L.
        """
        _, _, h, w = self.band_difference.shape
        scale = device_constant(self.weights, self.band_difference) / (self.batch_count * h * w)
        grad_bands = self.band_difference * scale[None, :, None, None]
        return self.bank.backward(grad_bands)
