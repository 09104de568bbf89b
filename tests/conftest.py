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
    """A shipped model of the family: the default for hyperprior, soft rounding for linear."""
    from uqcodec import zoo
    if arch == "hyperprior" and zoo.ladder():
        return os.path.basename(zoo.resolve())
    cards = [c for c in zoo.list_models() if c["arch"] == arch]
    if not cards:
        pytest.skip(f"no shipped {arch} model")
    sr = [c for c in cards if c["training"] == "sr"]
    return (sr or cards)[0]["name"]


@pytest.fixture(params=["linear", "hyperprior"])
def family(request):
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
