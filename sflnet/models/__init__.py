"""The models sflnet trains, by name (``sflnet train --model NAME``).

=====  ============================================  ==================  ===============
name   what                                          optimiser           module
=====  ============================================  ==================  ===============
cae    Ichimura's Table 1 autoencoder (the default)  momentum SGD        :mod:`.cae`
vae    Dalal's β-VAE (model ``VAE1``)                Adam, triangular2   :mod:`.vae`
=====  ============================================  ==================  ===============

A model module provides its parameter names and shapes, an ``init_params``,
a model class (a :class:`sflnet.models.base.Model` with ``loss_and_grads``,
``reconstruct`` and ``params``), its data, its hyperparameters
(:class:`sflnet.models.base.Hyperparameter`: name, kind, default, help, check)
and its optimiser; :class:`ModelSpec` gathers what the run machinery
(:mod:`sflnet.training`), the checkpoints (:mod:`sflnet.io.checkpoint`) and the
CLI need, so that none of them hard-codes a model: :class:`sflnet.training.config.TrainOptions`
gets an attribute, and ``sflnet train`` a flag, for every declared hyperparameter.
A new model is one new module plus one line in :data:`BUILTIN`.

**Plug-ins.** Another installed package adds a model through an entry point in
the group :data:`ENTRY_POINT_GROUP` (``sflnet.models``) that loads its
:class:`ModelSpec`; the entry point's name is the ``--model`` value. In its
``pyproject.toml``::

    [project.entry-points."sflnet.models"]
    tiny = "sflnet_tiny_model:SPEC"

As for the losses (:mod:`sflnet.losses.registry`), the plug-ins are found the
first time the registry is read, and a plug-in is refused with one line naming
its entry point when its name clashes with a built-in model, differs from its
spec's name, cannot be loaded or is not a :class:`ModelSpec`.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sflnet.models import cae, vae
from sflnet.plugins import PluginRegistry


@dataclass(frozen=True)
class ModelSpec:
    """What the run machinery needs to know about one model.

    name:          the ``--model`` value
    architecture:  the name written into checkpoints (``meta["architecture"]["name"]``)
    param_shapes:  {name: shape}, in the model's order
    optimizer:     "momentum-sgd" or "adam" (:data:`sflnet.optim.OPTIMIZERS`)
    value_range:   (low, high) of images and reconstructions
    channels:      image channels (3 for photos, 1 for digits)
    defaults:      shared option values that differ from :data:`sflnet.training.config.SHARED_OPTIONS`
    unused:        options this model ignores; they must keep their "unset" value (None, () or False)
    logged_terms:  loss names always measured besides the objective's (a history column each)
    hyperparameters: tuple of :class:`sflnet.models.base.Hyperparameter`, the options this model owns
                   (checked by their own ``check``, then by :attr:`validate`); unset (None) for the others.
                   Files written before a model existed lack its hyperparameters: they read as None.
    exclusive:     shared options only this model uses (the cae's ``size``); the others leave them None
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
    hyperparameters: tuple = ()
    exclusive: tuple = ()
    validate: object = None       # (options) -> None, SflnetError for what the hyperparameters' checks miss
    make_optimizer: object = None  # (options) -> (optimizer, schedule or None), see sflnet.optim
    rate_label: object = None     # (options) -> "lr 0.02", the learning rate in the curves' title
    smaller_rate: object = None   # (options) -> "--lr 0.002", what a diverged run should try
    # What the commands need; a hook that is None means the command does not apply to the model.
    reconstruct_inputs: object = None  # (options, inputs, size, skip_bad, count, warn) -> Dataset
    evaluation_data: object = None     # (options, request) -> (load: () -> Dataset, description)
    energy_text: object = None         # (model) -> " + 0.005·E_KL", what the model adds to E
    scored_text: object = None         # (model) -> what the metrics scored, e.g. "the raw (linear) output"
    sample_grid: object = None         # (model, count, quantile) -> image of a count × count latent grid
    features: bool = False             # model.activation(x, layer) for ``sflnet encode``

    @property
    def param_names(self):
        return tuple(self.param_shapes)

    @property
    def own_options(self):
        """The options only this model uses: its hyperparameters' names, then :attr:`exclusive`."""
        return tuple(h.name for h in self.hyperparameters) + tuple(self.exclusive)



CAE = ModelSpec(name="cae", architecture=cae.ARCHITECTURE, param_shapes=dict(cae.PARAM_SHAPES),
                optimizer="momentum-sgd", value_range=(-1.0, 1.0), channels=3,
                init=cae.init_for_run, build=cae.build_for_run, load_data=cae.load_for_run,
                hyperparameters=cae.HYPERPARAMETERS, exclusive=cae.EXCLUSIVE_OPTIONS,
                validate=cae.validate_options, make_optimizer=cae.make_optimizer,
                rate_label=cae.rate_label, smaller_rate=cae.smaller_rate, reconstruct_inputs=cae.reconstruct_inputs,
                evaluation_data=cae.evaluation_data, features=True)
VAE = ModelSpec(
    name="vae", architecture=vae.ARCHITECTURE, param_shapes=dict(vae.PARAM_SHAPES), optimizer="adam",
    value_range=vae.VALUE_RANGE, channels=1,
    defaults={"loss": vae.DEFAULT_EXPRESSION, "epochs": 50, "batch_size": 32, "pl_weights": (1.0,), "size": None},
    unused=("lr", "momentum", "init_std", "size", "include", "exclude", "skip_bad"),
    logged_terms=("kl",), init=vae.init_for_run, build=vae.build_for_run, load_data=vae.load_for_run,
    hyperparameters=vae.HYPERPARAMETERS, validate=vae.validate_options,
    make_optimizer=vae.make_optimizer, rate_label=vae.rate_label, smaller_rate=vae.smaller_rate,
    reconstruct_inputs=vae.reconstruct_inputs, evaluation_data=vae.evaluation_data, energy_text=vae.energy_text,
    scored_text=vae.scored_text, sample_grid=vae.decode_grid)

ENTRY_POINT_GROUP = "sflnet.models"
# name → spec of the models that ship with sflnet. A new built-in model is one module plus one line here.
BUILTIN = {"cae": CAE, "vae": VAE}
DEFAULT_MODEL = "cae"


def _check_spec(entry_point, loaded):
    if not isinstance(loaded, ModelSpec):
        return f" loads {loaded!r}, which is not a sflnet.models.ModelSpec"
    if loaded.name != entry_point.name:
        return f" loads the spec of model {loaded.name!r}; the names must agree"
    if loaded.architecture in {spec.architecture for spec in BUILTIN.values()}:
        return f" clashes with the architecture {loaded.architecture!r} of a built-in model"
    return None


# name → ModelSpec, built-ins first (the shared mechanism is sflnet.plugins.PluginRegistry)
REGISTRY = PluginRegistry(BUILTIN, ENTRY_POINT_GROUP, "model", _check_spec)


def load_plugin(entry_point):
    """The :class:`ModelSpec` of one entry point; SflnetError (one line naming it) if it is refused."""
    return REGISTRY.load(entry_point)


class _Names(Sequence):
    """The registered model names, read from :data:`REGISTRY` on every use (so plug-ins are included)."""

    def __getitem__(self, index):
        return tuple(REGISTRY)[index]

    def __len__(self):
        return len(REGISTRY)

    def __repr__(self):
        return repr(tuple(REGISTRY))


class _ByArchitecture(Mapping):
    """architecture name → :class:`ModelSpec`, read from :data:`REGISTRY` on every use."""

    def _all(self):
        return {spec.architecture: spec for spec in REGISTRY.values()}

    def __getitem__(self, name):
        return self._all()[name]

    def __iter__(self):
        return iter(self._all())

    def __len__(self):
        return len(self._all())


MODEL_NAMES = _Names()
BY_ARCHITECTURE = _ByArchitecture()


def names_with(hook):
    """The model names whose spec has ``hook`` (e.g. "sample_grid"), for the commands' messages."""
    return tuple(name for name, spec in REGISTRY.items() if getattr(spec, hook))


def get_spec(name):
    """The :class:`ModelSpec` of a ``--model`` name (KeyError if unknown)."""
    return REGISTRY[name]


def hyperparameters():
    """{name: (Hyperparameter, model names that declare it)} over every registered model, in registry
    order (the first declaration of a name gives its kind and help)."""
    found = {}
    for spec in REGISTRY.values():
        for option in spec.hyperparameters:
            first, names = found.get(option.name, (option, ()))
            found[option.name] = (first, names + (spec.name,))
    return found
