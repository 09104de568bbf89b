import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA = os.path.join(HERE, "data")
SHARED_KODAK = os.path.join(ROOT, "..", "shared", "data", "kodak")


def load(name):
    return np.asarray(Image.open(os.path.join(DATA, name)).convert("RGB"))


def shipped(arch):
    """A shipped model of the family: the middle of its fixed-rate ladder, else (a family
    that ships variable-rate models only) the one that codes its default quality."""
    from uqcodec import zoo
    card = zoo.middle(arch) or zoo.default_model(arch)
    if card is None:
        pytest.skip(f"no shipped {arch} model")
    return card["name"]


def write_variable_cards(folder, cards, training="sr"):
    """Model folders with only a card (zoo tests): one variable-rate model per (name,
    arch, lambda range[, training]) of ``cards``."""
    for name, arch, rng, *t in cards:
        os.makedirs(os.path.join(folder, name))
        with open(os.path.join(folder, name, "model.json"), "w") as f:
            json.dump({"name": name, "arch": arch, "training": t[0] if t else training,
                       "lambda": None, "lambda_range": rng}, f)


def family_names():
    """Every registered model family (uqcodec/families.py) that ships models."""
    from uqcodec import families, zoo
    shipped = {c.get("arch") for c in zoo.list_models()}
    return [n for n in families.names() if n in shipped]


@pytest.fixture(params=family_names())
def family(request):
    """A shipped model of each family (``shipped``)."""
    return shipped(request.param)


@pytest.fixture
def crop():
    return load("kodim05_crop.png")


def kodak_crop(i=1, box=(128, 128, 384, 320)):
    path = os.path.join(SHARED_KODAK, f"kodim{i:02d}.png")
    if not os.path.exists(path):
        pytest.skip("../shared/data/kodak not present")
    return np.asarray(Image.open(path).convert("RGB").crop(box))


def run_cli(*args, env=None, cwd=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "uqcodec.cli", *args], capture_output=True,
                          text=True, env=e, cwd=cwd, timeout=600)
