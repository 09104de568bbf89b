"""A non-editable install (a wheel in a fresh venv) finds the shipped models and
compresses and decompresses without TensorFlow, run from another directory."""
import glob
import os
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image

from conftest import ROOT


def _run(cmd, **kw):
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kw)
    assert run.returncode == 0, (cmd, run.stdout[-2000:], run.stderr[-2000:])
    return run


def test_wheel_in_a_fresh_venv_compresses_and_decompresses(tmp_path):
    # build from a copy: setuptools leaves a build/ folder in the tree it builds
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "runs", "bases", "results", "tests", "*.egg-info",
        "__pycache__"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"),
          str(src)])
    wheel = glob.glob(str(tmp_path / "dist" / "uqcodec-*.whl"))
    assert len(wheel) == 1
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    _run([str(venv / "bin" / "pip"), "install", "-q", wheel[0]])
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "UQCODEC_MODELS")}
    exe = str(venv / "bin" / "uqcodec")
    sample = os.path.join(ROOT, "examples", "sample.png")
    _run([exe, "compress", sample, "-o", "s.uq"], cwd=work, env=env)
    _run([exe, "decompress", "s.uq", "-o", "s.png"], cwd=work, env=env)
    out = np.asarray(Image.open(work / "s.png"))
    src = np.asarray(Image.open(sample).convert("RGB"))
    assert out.shape == src.shape
    assert np.mean((out.astype(float) - src) ** 2) < 100  # a real reconstruction
    models = _run([exe, "models", "--json"], cwd=work, env=env).stdout
    assert "hyperprior" in models and "linear" in models
    # the installed package is the wheel's, with no TensorFlow in the venv
    where = _run([str(venv / "bin" / "python"), "-c",
                  "import uqcodec, importlib.util as u; print(uqcodec.__file__); "
                  "print(u.find_spec('tensorflow') is None)"], cwd=work, env=env).stdout.split()
    assert where[0].startswith(str(venv)) and where[1] == "True"
