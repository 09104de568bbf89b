"""The registry of model families: the one place that knows which families exist.

A family is one inference module (transforms on the inference engine + a latent codec,
no TensorFlow), one training module (its Keras layers and training relaxation, imported
only when training needs it) and one ``Family`` entry here. Everything else (the codec,
training, export, evaluation, the model zoo, the command line and the tests) looks a
family up by the ``arch`` of a model card and asks it for capabilities instead of
comparing names:

* ``hyper_latent``: the model codes a side latent ``z`` (a hyperprior);
* ``variable_rate``: one model may be trained for a lambda range (``--lambda LO:HI``);
* ``refine``: encoder-side refinement of the latents (``refiner``: its class, built on the
  family's inference model);
* ``widen``: a trained model can grow to more channels (``--init-from`` with a larger
  ``--N``/``--M``);
* ``legacy``: files of format versions 1 and 2 exist for it (``training/legacy.py``).

A new family (or a plugin, or a test's toy family) calls ``register(Family(...))``.
"""
import importlib
from dataclasses import dataclass, field

from .errors import CodecError


@dataclass(frozen=True)
class Family:
    name: str                 # the "arch" of its model cards
    inference: str            # "module:Class" of the inference model (no TensorFlow)
    training: str             # "module:Class" of the training model (TensorFlow)
    description: str = ""
    new_model: dict = field(default_factory=dict)  # config of a model trained from scratch
    hyper_latent: bool = False
    variable_rate: bool = False
    refine: bool = False
    widen: bool = False
    legacy: bool = False
    refiner: str = ""         # "module:Class" of the encoder-side refiner (refine)

    def inference_class(self):
        return _load(self.inference)

    def training_class(self):
        return _load(self.training)

    def refiner_class(self):
        return _load(self.refiner)


def _load(spec):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


_REGISTRY = {}
DEFAULT = "hyperprior"  # the family of the default codec


def register(family, replace=False):
    """Add a family (``replace``: a family of the same name may be replaced)."""
    if family.name in _REGISTRY and not replace:
        raise ValueError(f"model family {family.name!r} is already registered")
    _REGISTRY[family.name] = family
    return family


def unregister(name):
    _REGISTRY.pop(name, None)


def get(name):
    """The family of a model card's ``arch``, or CodecError."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise CodecError(f"unknown model family {name!r} (known: {', '.join(names())})") \
            from None


def names():
    return sorted(_REGISTRY)


def all_families():
    return [_REGISTRY[n] for n in names()]


register(Family(
    "linear", "uqcodec.linear:Linear", "uqcodec.training.linear:LinearModel",
    "one strided convolution and its transpose, factorized prior",
    legacy=True))
register(Family(
    "factorized", "uqcodec.factorized:Factorized", "uqcodec.training.factorized:FactorizedModel",
    "GDN transforms, factorized prior (Balle et al. 2018 'factorized'; no hyper-latent)",
    new_model={"N": 64, "M": 128, "latent_gain": 16.0}))
register(Family(
    "hyperprior", "uqcodec.hyperprior:Hyperprior",
    "uqcodec.training.hyperprior:HyperpriorModel",
    "GDN transforms, mean & scale hyperprior (Minnen et al. 2018, no context model)",
    # smaller than Minnen et al.'s N=128/M=192: about 3x the steps per second on a CPU,
    # which wins on a budget of hours (docs/history.md, "Time to quality"); latent gain 16 puts y
    # near unit scale at initialisation, so the unit quantization noise does not drown it
    new_model={"N": 64, "M": 128, "latent_gain": 16.0},
    hyper_latent=True, variable_rate=True, refine=True, widen=True, legacy=True,
    refiner="uqcodec.refine:Refiner"))
register(Family(
    "context", "uqcodec.context:ContextHyperprior", "uqcodec.training.context:ContextModel",
    "the hyperprior with channel-group and checkerboard context (exact integer networks)",
    new_model={"N": 64, "M": 128, "latent_gain": 16.0},
    hyper_latent=True, variable_rate=True, refine=True, refiner="uqcodec.refine:ContextRefiner"))
