"""The shipped models: discovery, the default codec, the fixed-rate ladders.

A model is a directory with ``model.json`` (the model card and config),
``weights.npz`` (inference weights) and ``tables.npz`` (the factorized prior's
coding tables, computed at export). Shipped models live in ``models/`` at the
repository root, installed as ``uqcodec/_models`` (override with the UQCODEC_MODELS
environment variable).

The default codec is the variable-rate set of the default family, unless the models
folder's ``default.json`` names its models: then the best measured model of each lambda
range, whatever its family (a newer family can serve the low rates while the older one
serves the rest; the models it replaced stay installed for old files and comparisons).
"""
import json
import os

from .errors import CodecError
from . import families
from .families import DEFAULT as DEFAULT_ARCH


def models_dir():
    """UQCODEC_MODELS, else ``models/`` of a source checkout, else the installed copy."""
    env = os.environ.get("UQCODEC_MODELS")
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    source = os.path.join(os.path.dirname(here), "models")
    if os.path.isdir(source) and os.path.exists(os.path.join(os.path.dirname(here),
                                                             "pyproject.toml")):
        return source
    return os.path.join(here, "_models")  # pip install (wheel): package data


def read_card(path):
    try:
        with open(os.path.join(path, "model.json")) as f:
            card = json.load(f)
    except (OSError, ValueError):
        raise CodecError(f"{path}: not a uqcodec model directory") from None
    card.setdefault("name", os.path.basename(os.path.normpath(path)))
    card["path"] = os.path.abspath(path)
    return card


def list_models():
    """Cards of every shipped model, sorted by family, training and rate."""
    root = models_dir()
    cards = []
    if os.path.isdir(root):
        for d in sorted(os.listdir(root)):
            if os.path.exists(os.path.join(root, d, "model.json")):
                cards.append(read_card(os.path.join(root, d)))
    return sorted(cards, key=lambda c: (c.get("arch", ""), c.get("training", ""),
                                        c.get("kodak_bpp") or 0, c["name"]))


def ladder(arch=None, training=None):
    """Models of ``arch`` (default: the default family, or all models when it has none)
    from low to high rate: one per lambda, soft rounding preferred (only ``training``
    models when given)."""
    cards = [c for c in list_models() if c.get("arch") == (arch or DEFAULT_ARCH)
             and not c.get("lambda_range")]
    if not cards and arch is None:
        cards = [c for c in list_models() if not c.get("lambda_range")]
    if training:
        cards = [c for c in cards if c.get("training") == training]
    best = {}
    for c in cards:
        key = c.get("lambda")
        if key not in best or (c.get("training") == "sr" and best[key].get("training") != "sr"):
            best[key] = c
    return sorted(best.values(), key=lambda c: (c.get("kodak_bpp") or 0, c.get("lambda") or 0))


def variable_models(arch=None):
    """Cards of the variable-rate models (one model for a range of lambdas)."""
    return [c for c in list_models() if c.get("lambda_range")
            and (arch is None or c.get("arch") == arch)]


def variable_set(arch=DEFAULT_ARCH):
    """The family's variable-rate models that serve as one codec (``rateset.RateSet``): the
    soft-rounding ones if any (one model, or several that together cover a lambda range)."""
    cards = variable_models(arch)
    sr = [c for c in cards if c.get("training") == "sr"]
    return sr or cards


DEFAULT_FILE = "default.json"  # in the models folder: {"default": [names], "why": "..."}


def default_names():
    """The model names that the models folder's ``default.json`` makes the default codec
    (variable-rate models, possibly of several families, that together cover one lambda
    range: the best measured model of each range), or None (no such file)."""
    path = os.path.join(models_dir(), DEFAULT_FILE)
    try:
        with open(path) as f:
            names = json.load(f)["default"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        raise CodecError(f"{path}: not a list of default models") from None
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise CodecError(f"{path}: not a list of default models")
    return names


def default_variable(refine=False):
    """The default codec when it ships: the models ``default.json`` names when all of them
    are installed, else ``variable_set()`` of the default family (a fixed-rate ladder is
    then reached by name only); [] when neither ships, and the middle of the ladder is
    the default. ``refine``: the codec of encoder-side refinement (``--refine``), the
    default family's set when a named model's family has no refiner."""
    names = default_names()
    if names:
        cards = {c["name"]: c for c in variable_models()}
        if all(n in cards for n in names):
            chosen = [cards[n] for n in names]
            if not refine or all(families.get(c.get("arch")).refine for c in chosen):
                return chosen
    return variable_set()


def default_model(arch=None):
    """The card of the model that codes the default quality: the member of the default
    codec (``arch``: of the family's variable-rate set) that serves
    ``rates.DEFAULT_QUALITY``, else the middle of the fixed-rate ladder (None: the family
    ships no model)."""
    from .rates import DEFAULT_QUALITY, quality_lambda, set_edges, set_member
    cards = sorted(variable_set(arch) if arch else default_variable(),
                   key=lambda c: c["lambda_range"][0])
    if not cards:
        return middle(arch)
    edges = set_edges([c["lambda_range"] for c in cards])
    return cards[set_member(quality_lambda(DEFAULT_QUALITY, edges[0], edges[-1]), edges)]


def middle(arch=None, training=None):
    """The card in the middle of a ladder (the default of a family that ships no
    variable-rate models), or None."""
    return _middle_of(ladder(arch, training))


def _middle_of(lad):
    return lad[(len(lad) - 1) // 2] if lad else None


def resolve(model=None, quality=None):
    """Model name, directory or None (+ optional quality 1..N) -> model directory."""
    if model is not None and quality is not None:
        raise CodecError("give either --model or --quality, not both")
    if model is None:
        lad = ladder()
        if not lad:
            raise CodecError(f"no models found in {models_dir()}")
        if quality is None:
            return _middle_of(lad)["path"]
        if not 1 <= quality <= len(lad):
            raise CodecError(f"quality must be between 1 and {len(lad)}")
        return lad[quality - 1]["path"]
    if os.path.isdir(model):
        read_card(model)
        return os.path.abspath(model)
    path = os.path.join(models_dir(), model)
    if os.path.exists(os.path.join(path, "model.json")):
        return path
    names = ", ".join(c["name"] for c in list_models()) or "none"
    raise CodecError(f"unknown model {model!r} (shipped: {names})")


def find_by_name(name):
    """Directory of the shipped model called ``name`` (for decoding), or CodecError."""
    path = os.path.join(models_dir(), name)
    if os.path.sep in name or name in (".", "..") or not os.path.exists(
            os.path.join(path, "model.json")):
        raise CodecError(f"file needs model {name!r}, which is not installed in {models_dir()} "
                         "(an older uqcodec shipped it: copy its directory there, or set "
                         "UQCODEC_MODELS)")
    return path
