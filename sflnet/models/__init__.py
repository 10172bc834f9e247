"""The models sflnet trains, by name (``sflnet train --model NAME``).

=====  ============================================  ==================  ===============
name   what                                          optimiser           module
=====  ============================================  ==================  ===============
cae    Ichimura's Table 1 autoencoder (the default)  momentum SGD        :mod:`.cae`
vae    Dalal's β-VAE (model ``VAE1``)                Adam, triangular2   :mod:`.vae`
=====  ============================================  ==================  ===============

A model module provides its parameter names and shapes, an ``init_params``,
a model class (a :class:`sflnet.models.base.Model` with ``loss_and_grads``,
``reconstruct`` and ``params``), its data, its own options and their checks, and
its optimiser; :class:`ModelSpec` gathers what the run machinery
(:mod:`sflnet.training`) and the checkpoints (:mod:`sflnet.io.checkpoint`) need,
so that neither hard-codes a model. A new model is one new module plus one line
in :data:`REGISTRY` (its own hyperparameters still need a field of
:class:`sflnet.training.config.TrainOptions`).
"""

from dataclasses import dataclass, field

from sflnet.models import cae, vae


@dataclass(frozen=True)
class ModelSpec:
    """What the run machinery needs to know about one model.

    name:          the ``--model`` value
    architecture:  the name written into checkpoints (``meta["architecture"]["name"]``)
    param_shapes:  {name: shape}, in the model's order
    optimizer:     "momentum-sgd" or "adam" (:data:`sflnet.optim.OPTIMIZERS`)
    value_range:   (low, high) of images and reconstructions
    channels:      image channels (3 for photos, 1 for digits)
    defaults:      option values that differ from :class:`sflnet.training.config.TrainOptions`' own defaults
    unused:        options this model ignores; they must keep their "unset" value (None, () or False)
    logged_terms:  loss names always measured besides the objective's (a history column each)
    own_options:   the options only this model uses; the other models must leave them unset (None)
    added_options: the options this model added to config.json and checkpoints in format 3; files
                   written before (all CAE runs) get them as None
    """

    name: str
    architecture: str
    param_shapes: dict
    optimizer: str
    value_range: tuple
    channels: int
    defaults: dict = field(default_factory=dict)
    unused: tuple = ()
    logged_terms: tuple = ()

    init: object = None           # (options, xp) -> {name: array}, the initial parameters
    build: object = None          # (params, loss, settings, options) -> the model object
    load_data: object = None      # (options, split, warn) -> sflnet.io.images.Dataset; split "train" or "test"
    own_options: tuple = ()
    added_options: tuple = ()
    validate: object = None       # (options) -> None, SflnetError for a bad value of the model's own options
    make_optimizer: object = None  # (options) -> (optimizer, schedule or None), see sflnet.optim
    rate_label: object = None     # (options) -> "lr 0.02", the learning rate in the curves' title
    smaller_rate: object = None   # (options) -> "--lr 0.002", what a diverged run should try
    # What the commands need; a hook that is None means the command does not apply to the model.
    reconstruct_inputs: object = None  # (options, inputs, size, skip_bad, count, warn) -> Dataset
    evaluation_data: object = None     # (options, request) -> (load: () -> Dataset, description)
    energy_text: object = None         # (model) -> " + 0.005·E_KL", what the model adds to E
    sample_grid: object = None         # (model, count, quantile) -> image of a count × count latent grid
    features: bool = False             # model.activation(x, layer) for ``sflnet encode``

    @property
    def param_names(self):
        return tuple(self.param_shapes)



CAE = ModelSpec(name="cae", architecture=cae.ARCHITECTURE, param_shapes=dict(cae.PARAM_SHAPES),
                optimizer="momentum-sgd", value_range=(-1.0, 1.0), channels=3,
                init=cae.init_for_run, build=cae.build_for_run, load_data=cae.load_for_run,
                own_options=cae.OWN_OPTIONS, validate=cae.validate_options, make_optimizer=cae.make_optimizer,
                rate_label=cae.rate_label, smaller_rate=cae.smaller_rate, reconstruct_inputs=cae.reconstruct_inputs,
                evaluation_data=cae.evaluation_data, features=True)
VAE = ModelSpec(
    name="vae", architecture=vae.ARCHITECTURE, param_shapes=dict(vae.PARAM_SHAPES), optimizer="adam",
    value_range=vae.VALUE_RANGE, channels=1,
    defaults={"loss": vae.DEFAULT_EXPRESSION, "epochs": 50, "batch_size": 32, "pl_weights": (1.0,),
              "beta": vae.DEFAULT_BETA, "lr_min": 1e-4, "lr_max": 1e-3, "lr_step": 2000, "binarize": True,
              "lr": None, "momentum": None, "init_std": None, "size": None},
    unused=("lr", "momentum", "init_std", "size", "include", "exclude", "skip_bad"),
    logged_terms=("kl",), init=vae.init_for_run, build=vae.build_for_run, load_data=vae.load_for_run,
    own_options=vae.OWN_OPTIONS, added_options=vae.OWN_OPTIONS, validate=vae.validate_options,
    make_optimizer=vae.make_optimizer, rate_label=vae.rate_label, smaller_rate=vae.smaller_rate,
    reconstruct_inputs=vae.reconstruct_inputs, evaluation_data=vae.evaluation_data, energy_text=vae.energy_text,
    sample_grid=vae.decode_grid)

REGISTRY = {"cae": CAE, "vae": VAE}
MODEL_NAMES = tuple(REGISTRY)
DEFAULT_MODEL = "cae"
BY_ARCHITECTURE = {spec.architecture: spec for spec in REGISTRY.values()}


def names_with(hook):
    """The model names whose spec has ``hook`` (e.g. "sample_grid"), for the commands' messages."""
    return tuple(name for name, spec in REGISTRY.items() if getattr(spec, hook))


def get_spec(name):
    """The :class:`ModelSpec` of a ``--model`` name (KeyError if unknown)."""
    return REGISTRY[name]
