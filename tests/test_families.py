"""The family registry: a family registered at run time (the toy family of
tests/toy_family, which no module of uqcodec knows) trains, exports, lists, codes and
evaluates through the ordinary command line and API; capabilities, not names, decide."""
import json
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

import uqcodec
from uqcodec import cli, container, families
from conftest import DATA, ROOT, load
from toy_family import TOY


@pytest.fixture
def toy():
    families.register(TOY, replace=True)
    yield TOY
    families.unregister(TOY.name)


def invoke(*args):
    r = CliRunner().invoke(cli.main, [str(a) for a in args], catch_exceptions=False)
    return r


def test_a_new_family_works_everywhere(toy, tmp_path, monkeypatch):
    models = tmp_path / "models"
    out = models / "toy-sr-0.01"
    r = invoke("train", "--model", "toy", "--mode", "sr", "--lambda", "0.01", "--steps", 3,
               "--patch", 64, "--batch", 2, "--warmup", 1, "--data", DATA, "--out", out,
               "--run-dir", tmp_path / "run", "--no-bf16", "--no-measure")
    assert r.exit_code == 0, r.output
    card = json.loads((out / "model.json").read_text())
    assert card["arch"] == "toy" and card["steps"] == 3 and card["N"] == 8
    with np.load(out / "weights.npz") as w:  # every part saved: transforms and prior
        assert {n.split("/")[0] for n in w.files} == {"analysis", "synthesis", "factorized"}
    # a run resumed and exported again keeps the family's config
    r = invoke("train", "--model", "toy", "--mode", "sr", "--lambda", "0.01", "--steps", 4,
               "--patch", 64, "--batch", 2, "--warmup", 1, "--data", DATA, "--out", out,
               "--run-dir", tmp_path / "run", "--no-bf16", "--no-measure", "--resume")
    assert r.exit_code == 0, r.output
    assert json.loads((out / "model.json").read_text())["steps"] == 4

    monkeypatch.setenv("UQCODEC_MODELS", str(models))
    r = invoke("models", "--json")
    assert r.exit_code == 0 and [c["arch"] for c in json.loads(r.output)] == ["toy"]
    r = invoke("models", "--families")
    assert r.exit_code == 0 and "toy" in r.output and "hyperprior" in r.output

    x = load("kodim15_odd.png")
    data, info = uqcodec.compress_with_info(x, model="toy-sr-0.01", seed=3, reconstruct=True)
    header = container.parse_header(data)[0]
    assert header.model == "toy-sr-0.01" and len(header.stream_lengths) % 2 == 0
    np.testing.assert_array_equal(uqcodec.decompress(data), info["reconstruction"])
    assert 8 * len(data) <= 1.01 * info["rate_bits"] + 8 * 100 + 96
    # a fixed-rate model takes no quality, and no target
    with pytest.raises(uqcodec.CodecError, match="one rate"):
        uqcodec.compress(x, model="toy-sr-0.01", quality=3)
    with pytest.raises(uqcodec.CodecError, match="variable-rate"):
        uqcodec.compress(x, model="toy-sr-0.01", target_bpp=1.0)
    # refinement is a capability the toy family does not have: a clear error
    with pytest.raises(uqcodec.CodecError, match="refinement"):
        uqcodec.compress(x, model="toy-sr-0.01", refine=2)

    src = tmp_path / "img"
    src.mkdir()
    shutil.copy(os.path.join(DATA, "kodim15_odd.png"), src)
    r = invoke("compress", src / "kodim15_odd.png", "--model", "toy-sr-0.01", "--seed", 1)
    assert r.exit_code == 0, r.output
    r = invoke("decompress", src / "kodim15_odd.uq", "-o", tmp_path / "back.png")
    assert r.exit_code == 0, r.output
    r = invoke("eval", src, "--models", "toy-sr-0.01", "--baselines", "none", "--limit", 1,
               "--out", tmp_path / "eval", "--quiet", "--anchors", "none")
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    names = [c["name"] for c in summary["curves"]]
    assert names == ["toy UN+UQ+SR"], names


def test_unknown_family_is_a_clear_error(tmp_path):
    model = tmp_path / "m"
    shutil.copytree(os.path.join(ROOT, "tests", "data", "golden", "models", "linear-sr-0.01"),
                    model)
    card = json.loads((model / "model.json").read_text())
    card["arch"] = "no-such-family"
    (model / "model.json").write_text(json.dumps(card))
    with pytest.raises(uqcodec.CodecError, match="unknown model family 'no-such-family'"):
        uqcodec.compress(load("kodim15_odd.png"), model=str(model))
    r = invoke("train", "--model", "no-such-family", "--lambda", "0.01", "--out", tmp_path / "x")
    assert r.exit_code == 2 and "is not a model family" in r.output


def test_capabilities_not_names():
    """Nothing outside the registry compares family names."""
    import re
    pkg = os.path.join(ROOT, "uqcodec")
    hits = []
    for folder, _, files in os.walk(pkg):
        for f in files:
            if f.endswith(".py") and f != "families.py":
                text = open(os.path.join(folder, f)).read()
                hits += [f"{f}: {m.group(0)}" for m in
                         re.finditer(r"arch\s*[!=]=\s*[\"'][a-z]+[\"']", text)]
                hits += [f"{f}: {m.group(0)}" for m in
                         re.finditer(r"[\"'](linear|hyperprior)[\"']\s*[!=]=", text)]
    assert hits == []


def test_every_part_of_a_model_is_saved():
    """A weight outside the model's parts would be trained and lost: refused."""
    from uqcodec.training import _tf
    from uqcodec.training.model import CompressionModel
    tf, _ = _tf.load()
    m = CompressionModel({"arch": "linear", "M": 8})
    assert m.named_variables() and set(m.parts()) == {"analysis", "synthesis", "factorized"}
    m._hidden = [tf.Variable(1.0, name="lost")]  # tracked by tf.Module, not a part
    with pytest.raises(ValueError, match="would not be saved"):
        m.weights_npz()
