"""The model zoo: ladders, the default model and --quality, on a models folder of cards."""
import json
import os

import pytest

from uqcodec import zoo
from uqcodec.errors import CodecError
from conftest import ROOT, write_variable_cards


@pytest.fixture
def models(tmp_path, monkeypatch):
    cards = [("hp-sr-0.01", "hyperprior", "sr", 0.01, 0.5), ("hp-un-0.01", "hyperprior", "un", 0.01, 0.6),
             ("hp-sr-0.1", "hyperprior", "sr", 0.1, 1.2), ("hp-un-0.03", "hyperprior", "un", 0.03, 0.9),
             ("hp-sr-0.001", "hyperprior", "sr", 0.001, 0.2), ("lin-un-0.01", "linear", "un", 0.01, 1.0)]
    for name, arch, training, lmbda, bpp in cards:
        os.makedirs(tmp_path / name)
        (tmp_path / name / "model.json").write_text(json.dumps(
            {"name": name, "arch": arch, "training": training, "lambda": lmbda, "kodak_bpp": bpp}))
    monkeypatch.setenv("UQCODEC_MODELS", str(tmp_path))
    return tmp_path


def names(cards):
    return [c["name"] for c in cards]


def test_ladder_one_model_per_lambda_sr_preferred(models):
    assert names(zoo.ladder()) == ["hp-sr-0.001", "hp-sr-0.01", "hp-un-0.03", "hp-sr-0.1"]
    assert names(zoo.ladder("hyperprior", "un")) == ["hp-un-0.01", "hp-un-0.03"]
    assert names(zoo.ladder("linear")) == ["lin-un-0.01"]
    assert zoo.ladder("linear", "sr") == []


def test_default_is_the_middle_and_quality_counts_up(models):
    assert zoo.middle()["name"] == "hp-sr-0.01"
    assert zoo.middle("hyperprior", "un")["name"] == "hp-un-0.01"
    assert zoo.middle("linear", "sr") is None
    assert os.path.basename(zoo.resolve()) == "hp-sr-0.01"
    assert [os.path.basename(zoo.resolve(quality=q)) for q in (1, 4)] == ["hp-sr-0.001", "hp-sr-0.1"]
    with pytest.raises(CodecError, match="between 1 and 4"):
        zoo.resolve(quality=5)
    with pytest.raises(CodecError, match="unknown model"):
        zoo.resolve("hp-sr-0.3")


def test_variable_rate_models_stay_out_of_the_ladder_and_are_the_default(models):
    write_variable_cards(models, [("hpv-sr", "hyperprior", [0.0004, 0.01], "sr"),
                                  ("hpv-un", "hyperprior", [0.0004, 0.01], "un"),
                                  ("hpv-sr-hi", "hyperprior", [0.008, 0.25], "sr")])
    assert names(zoo.ladder()) == ["hp-sr-0.001", "hp-sr-0.01", "hp-un-0.03", "hp-sr-0.1"]
    assert os.path.basename(zoo.resolve()) == "hp-sr-0.01"  # the ladder's own default
    assert sorted(names(zoo.variable_set())) == ["hpv-sr", "hpv-sr-hi"]  # sr preferred
    # the default codec: the variable-rate set, also while fixed-rate models ship
    assert sorted(names(zoo.default_variable())) == ["hpv-sr", "hpv-sr-hi"]
    # quality 5 is lambda 0.01 of 0.0004-0.25, above the switch at sqrt(0.008 * 0.01)
    assert zoo.default_model()["name"] == "hpv-sr-hi"
    assert zoo.default_model("linear")["name"] == "lin-un-0.01"
    for d in models.iterdir():
        if d.name.startswith("hpv"):
            for f in d.iterdir():
                f.unlink()
            d.rmdir()
    assert zoo.default_variable() == []  # none ship: the ladder is the default
    assert zoo.default_model()["name"] == "hp-sr-0.01"


def test_carried_runs_are_in_the_repository():
    """Every run that bases/README.md lists as carried between sessions is in bases/runs/
    with its weights and train.json at the step the table gives (a clean clone resumes
    from them: a session once carried runs that .gitignore kept out of git), and every
    run in bases/runs/ is listed (none listed: the README says so)."""
    import re
    text = open(os.path.join(ROOT, "bases", "README.md")).read()
    table = text.split("## Runs carried between sessions", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| ([\w.-]+) \|.*\| ([\d,]+) \| [\d,]+ \|$", table, re.M)
    runs = os.path.join(ROOT, "bases", "runs")
    present = sorted(os.listdir(runs)) if os.path.isdir(runs) else []
    assert sorted(name for name, _ in rows) == present
    if not rows:
        assert "None is being carried now" in table
    for name, step in rows:
        run = os.path.join(ROOT, "bases", "runs", name)
        with open(os.path.join(run, "train.json")) as f:
            assert json.load(f)["steps"] == int(step.replace(",", "")), name
        assert os.path.getsize(os.path.join(run, "weights.npz")) > 0


def test_a_model_missing_weights_fails_in_one_line(tmp_path):
    """Models load lazily (a rate set loads all its models to choose one), so a weight
    missing from a model directory is found at first use: a CodecError naming it."""
    import shutil
    import numpy as np
    import uqcodec
    from conftest import load
    cards = zoo.default_variable()
    if not cards:
        pytest.skip("no shipped variable-rate models")
    src = cards[0]["path"]
    broken = tmp_path / "broken"
    shutil.copytree(src, broken)
    w = dict(np.load(broken / "weights.npz"))
    del w["hyper_synthesis/conv2/kernel"]
    np.savez(broken / "weights.npz", **w)
    with pytest.raises(uqcodec.CodecError, match="incomplete.*hyper_synthesis/conv2/kernel"):
        uqcodec.compress(load("kodim05_crop.png"), model=str(broken))


def test_default_json_names_the_default_codec_across_families(models):
    """models/default.json makes the best model of each range the default codec, whatever
    its family; --refine keeps it when every family in it refines (hyperprior, context)
    and falls back to the default family's set when a named model's family has no
    refiner; a missing model falls back too; a broken file is a CodecError."""
    write_variable_cards(models, [("hpv-sr", "hyperprior", [0.0004, 0.01]),
                                  ("hpv-sr-hi", "hyperprior", [0.008, 0.25]),
                                  ("ctx-sr", "context", [0.0004, 0.01]),
                                  ("fac-sr", "factorized", [0.0004, 0.01])])
    assert sorted(names(zoo.default_variable())) == ["hpv-sr", "hpv-sr-hi"]  # no file
    (models / "default.json").write_text(json.dumps({"default": ["ctx-sr", "hpv-sr-hi"]}))
    assert names(zoo.default_variable()) == ["ctx-sr", "hpv-sr-hi"]
    assert zoo.default_model()["name"] == "hpv-sr-hi"
    assert zoo.default_model("hyperprior")["name"] == "hpv-sr-hi"
    assert names(zoo.default_variable(refine=True)) == ["ctx-sr", "hpv-sr-hi"]
    assert sorted(names(zoo.variable_set())) == ["hpv-sr", "hpv-sr-hi"]  # the family's own
    (models / "default.json").write_text(json.dumps({"default": ["fac-sr", "hpv-sr-hi"]}))
    assert names(zoo.default_variable()) == ["fac-sr", "hpv-sr-hi"]
    assert sorted(names(zoo.default_variable(refine=True))) == ["hpv-sr", "hpv-sr-hi"]
    (models / "default.json").write_text(json.dumps({"default": ["ctx-sr", "gone"]}))
    assert sorted(names(zoo.default_variable())) == ["hpv-sr", "hpv-sr-hi"]
    (models / "default.json").write_text("{not json")
    with pytest.raises(CodecError, match="not a list of default models"):
        zoo.default_variable()


def test_weights_load_as_views_with_np_load_values(tmp_path):
    """A model's stored (uncompressed) weights.npz is read as views into the file's bytes:
    the same names, dtypes, shapes and values as np.load, read-only; a compressed archive
    (another writer's) falls back to np.load with the same values."""
    import numpy as np
    from uqcodec.codec import _npz_views
    path = os.path.join(ROOT, "models", "context2-sr-lo", "weights.npz")
    data = open(path, "rb").read()
    views, ref = _npz_views(data), dict(np.load(path))
    assert views.keys() == ref.keys() and len(ref) > 20
    for k, a in ref.items():
        v = views[k]
        assert v.dtype == a.dtype and v.shape == a.shape and np.array_equal(v, a), k
        assert not v.flags.writeable and v.base is not None  # a view, not a copy
    np.savez_compressed(tmp_path / "c.npz", a=np.arange(6.0).reshape(2, 3),
                        f=np.asfortranarray(np.arange(6, dtype=np.float16).reshape(2, 3)))
    back = _npz_views((tmp_path / "c.npz").read_bytes())
    assert np.array_equal(back["a"], np.arange(6.0).reshape(2, 3))
    np.savez(tmp_path / "s.npz", f=np.asfortranarray(np.arange(6, dtype=np.float16).reshape(2, 3)))
    f = _npz_views((tmp_path / "s.npz").read_bytes())["f"]
    assert np.array_equal(f, np.arange(6, dtype=np.float16).reshape(2, 3)) and not f.flags.writeable
