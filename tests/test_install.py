"""Non-editable installs: the wheel, built once, in fresh venvs, run from another directory.

* Python 3.11 without extras: compress and decompress without TensorFlow; ``train``,
  ``eval`` and ``--refine`` say in one line which extra they need.
* Python 3.11 with the ``train`` extra (its packages from this venv, so nothing is
  downloaded twice): ``uqcodec train`` for a few steps, ``uqcodec eval --limit 1``.
* A second interpreter (Python 3.13, else 3.12, with NumPy 2 from the index): the
  inference commands, and it decodes files written here (3.11, NumPy 1.26) to exactly
  the pixels this interpreter decodes.
"""
import glob
import json
import os
import shutil
import site
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

import uqcodec
from conftest import DATA, ROOT, load

GOLDEN = os.path.join(DATA, "golden")
GOLDEN_MODELS = os.path.join(GOLDEN, "models")
EXTRA_LINE = "pip install 'uqcodec[train]'"


def _run(cmd, ok=True, **kw):
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kw)
    if ok:
        assert run.returncode == 0, (cmd, run.stdout[-2000:], run.stderr[-2000:])
    return run


def _env(**extra):
    """The environment of a user's shell: nothing that points into this source tree."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "UQCODEC_MODELS")}
    env.update(extra)
    return env


def _bin(venv, name):
    return str(venv / "bin" / name)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel of this source tree, built once (from a copy: setuptools leaves a build/
    folder in the tree it builds)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "runs", "bases", "results", "tests", "logs", "*.egg-info",
        "__pycache__", "*.so", "*.pyd"))  # the extension of the editable install: rebuilt
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist"),
          str(src)])
    found = glob.glob(str(tmp / "dist" / "uqcodec-*.whl"))
    assert len(found) == 1
    return found[0]


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory):
    """Python 3.11 (this interpreter's), the wheel and its dependencies, no extras."""
    v = tmp_path_factory.mktemp("venv") / "venv"
    _run([sys.executable, "-m", "venv", str(v)])
    _run([_bin(v, "pip"), "install", "-q", wheel])
    return v


def test_wheel_holds_every_package_and_model(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    src = os.path.join(ROOT, "uqcodec")
    modules = {os.path.relpath(p, ROOT).replace(os.sep, "/")
               for p in glob.glob(os.path.join(src, "**", "*.py"), recursive=True)}
    assert "uqcodec/training/train.py" in modules
    assert modules <= names, sorted(modules - names)  # every subpackage, every module
    for card in glob.glob(os.path.join(ROOT, "models", "*", "model.json")):
        name = os.path.basename(os.path.dirname(card))
        for f in ("model.json", "weights.npz"):
            assert f"uqcodec/_models/{name}/{f}" in names
    if os.path.exists(os.path.join(ROOT, "models", "default.json")):  # the default codec
        assert "uqcodec/_models/default.json" in names
    if _compiler():  # the table kernel, for the stable ABI: one wheel for Python >= 3.11
        assert [n for n in names if n.startswith("uqcodec/_tables.")], sorted(names)[:20]
        assert "-cp311-abi3-" in os.path.basename(wheel)


def _compiler():
    """Whether this machine builds C extensions (the table kernel is optional)."""
    import sysconfig
    cc = (sysconfig.get_config_var("CC") or "").split()
    return bool(cc) and shutil.which(cc[0]) is not None


def test_wheel_in_a_fresh_venv_compresses_and_decompresses(venv, tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = _env()
    exe = _bin(venv, "uqcodec")
    sample = os.path.join(ROOT, "examples", "sample.png")
    _run([exe, "compress", sample, "-o", "s.uq"], cwd=work, env=env)
    _run([exe, "decompress", "s.uq", "-o", "s.png"], cwd=work, env=env)
    out = np.asarray(Image.open(work / "s.png"))
    src = np.asarray(Image.open(sample).convert("RGB"))
    assert out.shape == src.shape
    assert np.mean((out.astype(float) - src) ** 2) < 100  # a real reconstruction
    # the default codec is the checkout's (models/default.json, when it names one)
    from uqcodec import container, zoo
    _run([exe, "compress", sample, "-o", "low.uq", "-q", "0"], cwd=work, env=env)
    with open(work / "low.uq", "rb") as f:
        model = container.parse_header(f.read())[0].model
    assert model == min(zoo.default_variable(), key=lambda c: c["lambda_range"][0])["name"]
    models = _run([exe, "models", "--json"], cwd=work, env=env).stdout
    assert "hyperprior" in models and "linear" in models
    # the installed package is the wheel's, with no TensorFlow in the venv
    where = _run([_bin(venv, "python"), "-c",
                  "import uqcodec, importlib.util as u; print(uqcodec.__file__); "
                  "print(u.find_spec('tensorflow') is None); "
                  "from uqcodec import exactmath; print(exactmath.KERNEL is not None)"],
                 cwd=work, env=env).stdout.split()
    assert where[0].startswith(str(venv)) and where[1] == "True"
    assert where[2] == str(_compiler())  # the wheel's table kernel loads


def _one_line_naming_the_extra(run):
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("uqcodec: error: ") and "needs the train extra" in lines[0]
    assert EXTRA_LINE in lines[0] and "internal error" not in lines[0]
    return lines[0]


def test_without_the_train_extra_each_command_names_it(venv, tmp_path):
    exe, env = _bin(venv, "uqcodec"), _env()
    crop = os.path.join(DATA, "kodim05_crop.png")
    line = _one_line_naming_the_extra(_run(
        [exe, "train", "--lambda", "0.01", "--out", "m", "--data", DATA, "--steps", "2"],
        ok=False, cwd=tmp_path, env=env))
    assert line.startswith("uqcodec: error: training needs the train extra")
    assert not (tmp_path / "m").exists() and not (tmp_path / "runs").exists()  # no work done
    _one_line_naming_the_extra(_run([exe, "eval", DATA, "--out", "e", "--limit", "1"],
                                    ok=False, cwd=tmp_path, env=env))
    assert not (tmp_path / "e").exists()



def test_refine_without_the_train_extra(venv, tmp_path):
    """--refine runs on the plain install (its gradients are onnxruntime graphs): a
    refined file that the plain decoder reads, another file than the unrefined one."""
    exe, env = _bin(venv, "uqcodec"), _env()
    crop = os.path.join(DATA, "kodim05_crop.png")
    _run([exe, "compress", crop, "-o", "r.uq", "--refine", "4", "--seed", "3", "-q", "2"],
         cwd=tmp_path, env=env)
    _run([exe, "compress", crop, "-o", "p.uq", "--seed", "3", "-q", "2"], cwd=tmp_path, env=env)
    _run([exe, "decompress", "r.uq", "-o", "r.png"], cwd=tmp_path, env=env)
    assert (tmp_path / "r.png").exists()
    assert (tmp_path / "r.uq").read_bytes() != (tmp_path / "p.uq").read_bytes()


@pytest.fixture(scope="module")
def train_venv(wheel, tmp_path_factory):
    """Python 3.11, the wheel, and the train extra's packages taken from this venv (a
    path file: no second TensorFlow download; this venv's editable uqcodec is not on
    that path, so ``uqcodec`` is the wheel's)."""
    v = tmp_path_factory.mktemp("train-venv") / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(v)])
    purelib = _run([_bin(v, "python"), "-c", "import sysconfig; print(sysconfig.get_path("
                    "'purelib'))"]).stdout.strip()
    with open(os.path.join(purelib, "main-venv.pth"), "w") as f:
        f.write("\n".join(site.getsitepackages()) + "\n")
    # pip (run from this venv) installs the wheel into the new one, then resolves the
    # train extra there without an index: every requirement is already installed
    pip = [sys.executable, "-m", "pip", "--python", _bin(v, "python")]
    _run(pip + ["install", "-q", "--no-deps", wheel])
    resolved = _run(pip + ["install", "--dry-run", "--no-index", "uqcodec[train]"])
    assert "Would install" not in resolved.stdout, resolved.stdout
    return v


def test_wheel_with_the_train_extra_trains_and_evaluates(train_venv, tmp_path):
    exe, env = _bin(train_venv, "uqcodec"), _env(CUDA_VISIBLE_DEVICES="")
    where = _run([_bin(train_venv, "python"), "-c", "import uqcodec; print(uqcodec.__file__)"],
                 cwd=tmp_path, env=env).stdout.strip()
    assert where.startswith(str(train_venv))
    _run([exe, "train", "--model", "linear", "--mode", "sr", "--lambda", "0.01", "--M", "24",
          "--out", "m", "--run-dir", "run", "--data", DATA, "--steps", "3", "--patch", "64",
          "--batch", "2", "--warmup", "1", "--no-bf16", "--no-measure"], cwd=tmp_path, env=env)
    with open(tmp_path / "m" / "model.json") as f:
        card = json.load(f)
    assert card["arch"] == "linear" and card["steps"] == 3
    _run([exe, "eval", DATA, "--out", "ev", "--models", "m", "--baselines", "none",
          "--anchors", "none", "--limit", "1", "--quiet"], cwd=tmp_path, env=env)
    with open(tmp_path / "ev" / "summary.json") as f:
        summary = json.load(f)
    assert len(summary["images"]) == 1 and summary["curves"]
    assert not os.path.isabs(summary["dir"])  # no path of this machine in the results


LDEXP_CHECK = """
import numpy as np
real = np.ldexp
def ldexp(x, e, *args, **kw):
    # NumPy < 2 on Windows: ldexp's exponent is a C int or long, both 32 bits there, and
    # an int64 array does not cast safely to either (TypeError)
    if not isinstance(e, int) and not np.can_cast(np.asarray(e).dtype, np.int32):
        raise TypeError(f"ldexp exponent of dtype {np.asarray(e).dtype}")
    return real(x, e, *args, **kw)
np.ldexp = ldexp
import sys, uqcodec
from PIL import Image
crop = np.asarray(Image.open(sys.argv[1]).convert("RGB"))
for model in (None, sys.argv[2]):
    out = uqcodec.decompress(uqcodec.compress(crop, model=model, seed=1, tile=64))
    assert out.shape == crop.shape
print("ok")
"""


def test_ldexp_exponents_are_int32_as_windows_numpy_1_needs():
    """Importing uqcodec (entropy.py builds tables), encoding and decoding with both
    families (the hyperprior's integer network) pass np.ldexp only int32 exponents."""
    from uqcodec import zoo
    linear = next(c["name"] for c in zoo.list_models() if c.get("arch") == "linear")
    run = _run([sys.executable, "-c", LDEXP_CHECK, os.path.join(DATA, "kodim05_crop.png"),
                linear])
    assert run.stdout.strip() == "ok"


# --- a second interpreter --------------------------------------------------------------

def _other_python():
    """A Python >= 3.12 to install the wheel with: $UQCODEC_OTHER_PYTHON, else python3.13,
    python3.12 (PATH, then pyenv's versions); None if there is none."""
    names = ["python3.13", "python3.12"]
    candidates = [os.environ.get("UQCODEC_OTHER_PYTHON")]
    candidates += [shutil.which(n) for n in names]
    pyenv = os.path.join(os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv")),
                         "versions")
    for n in names:
        candidates += sorted(glob.glob(os.path.join(pyenv, n[6:] + "*", "bin", n)),
                             reverse=True)
    for c in candidates:
        if not c:
            continue
        try:  # a pyenv shim of a version that is not selected fails here
            run = subprocess.run([c, "-c", "import sys, venv; print(sys.version_info >= "
                                  "(3, 12)); print(sys.executable)"],
                                 capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            continue
        out = run.stdout.split()
        if run.returncode == 0 and out and out[0] == "True":
            return out[1]
    return None


@pytest.fixture(scope="module")
def other_venv(wheel, tmp_path_factory):
    python = _other_python()
    if python is None:
        pytest.skip("no Python 3.12 or 3.13 here (set UQCODEC_OTHER_PYTHON)")
    v = tmp_path_factory.mktemp("other-venv") / "venv"
    _run([python, "-m", "venv", str(v)])
    _run([_bin(v, "pip"), "install", "-q", wheel])
    return v


def _files_written_here(folder):
    """.uq files written by this interpreter: several tiles, grayscale, a fixed-rate
    linear model. Returns {name: pixels decoded here}."""
    from uqcodec import zoo
    crop = load("kodim05_crop.png")
    linear = next(c["name"] for c in zoo.list_models() if c.get("arch") == "linear")
    files = {"tiled.uq": uqcodec.compress(crop, seed=3, tile=64),
             "gray.uq": uqcodec.compress(crop[..., 1], seed=4, quality=8),
             "linear.uq": uqcodec.compress(crop, seed=5, model=linear)}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: uqcodec.decompress(data) for name, data in files.items()}


def test_other_python_runs_the_codec_and_decodes_files_written_here(other_venv, tmp_path,
                                                                   monkeypatch):
    py, exe, env = _bin(other_venv, "python"), _bin(other_venv, "uqcodec"), _env()
    versions = _run([py, "-c", "import sys, numpy; print(sys.version_info[1]); "
                     "print(numpy.__version__)"], env=env).stdout.split()
    assert int(versions[0]) >= 12 and int(versions[1].split(".")[0]) >= 2  # NumPy 2
    # the inference commands, on a crop
    models = json.loads(_run([exe, "models", "--json"], cwd=tmp_path, env=env).stdout)
    assert {c["arch"] for c in models} >= {"hyperprior", "linear"}
    crop = os.path.join(DATA, "kodim05_crop.png")
    _run([exe, "compress", crop, "-o", "c.uq", "--seed", "1"], cwd=tmp_path, env=env)
    _run([exe, "decompress", "c.uq", "-o", "c.png"], cwd=tmp_path, env=env)
    info = json.loads(_run([exe, "info", "c.uq", "--json"], cwd=tmp_path, env=env).stdout)
    assert (info["width"], info["height"], info["seed"]) == (160, 96, 1)
    # a file written there decodes here to the pixels decoded there
    there = np.asarray(Image.open(tmp_path / "c.png"))
    assert np.array_equal(there, uqcodec.decompress((tmp_path / "c.uq").read_bytes()))
    # files written here (this interpreter, NumPy 1.26) decode there to exactly the
    # pixels decoded here: new ones with the shipped models, and the golden version-3
    # files with their frozen models
    here = tmp_path / "here"
    here.mkdir()
    want = _files_written_here(here)
    golden = tmp_path / "golden"
    golden.mkdir()
    monkeypatch.setenv("UQCODEC_MODELS", GOLDEN_MODELS)
    with open(os.path.join(GOLDEN, "golden.json")) as f:
        table = json.load(f)
    for name in sorted(n for n, v in table.items() if v["version"] >= 3):  # no TensorFlow
        shutil.copy(os.path.join(GOLDEN, name), golden)
        want["golden/" + name] = uqcodec.decompress(open(os.path.join(GOLDEN, name), "rb").read())
    assert len(want) >= 3 + 4
    _run([exe, "decompress", str(here), "-j", "1"], env=env)
    _run([exe, "decompress", str(golden), "-j", "1"], env=_env(UQCODEC_MODELS=GOLDEN_MODELS))
    for name, pixels in want.items():
        got = np.asarray(Image.open((golden if name.startswith("golden/") else here)
                                    / (os.path.basename(name)[:-3] + ".png")))
        assert got.shape == pixels.shape and np.array_equal(got, pixels), name
    # training there: one line saying which Python the train extra needs
    run = _run([exe, "train", "--lambda", "0.01", "--out", "m", "--data", DATA], ok=False,
               cwd=tmp_path, env=env)
    assert run.returncode != 0 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "needs the train extra" in run.stderr and "Python 3.11 only" in run.stderr
    # and the Pillow plugin there reads the header
    size = _run([py, "-c", "import sys, uqcodec; from PIL import Image; "
                 "print(*Image.open(sys.argv[1]).size)", str(here / "tiled.uq")],
                env=env).stdout.split()
    assert size == ["160", "96"]
