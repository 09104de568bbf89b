"""`uqcodec eval`: a real run on two small images, curves and output files."""
import csv
import json
import os
import shutil

import pytest

from conftest import DATA, run_cli, write_variable_cards
from test_cli import one_line_error
from uqcodec import evaluate, zoo

ENV = {"UQCODEC_THREADS": "1"}


def small_models():
    """Up to two shipped models, linear ones first (fastest); at least one 'un' model."""
    from uqcodec import zoo
    cards = sorted(zoo.list_models(), key=lambda c: (c.get("arch") != "linear",
                                                     c.get("training") != "un"))
    if not cards:
        pytest.skip("no shipped models")
    return cards[:2]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    for n in ("kodim05_crop.png", "kodim19_crop.png"):
        shutil.copy(os.path.join(DATA, n), d / n)
    anchors = d.parent / "anchors.csv"
    anchors.write_text(
        "codec,source,bpp,psnr_rgb_db\n"
        + "".join(f'"Minnen 2018 mean-scale hyperprior, no context (TFC)",x,{b},{p}\n'
                  for b, p in ((0.2, 28.0), (0.5, 31.5), (1.0, 35.0), (2.0, 39.0)))
        + "Some codec,x,0.5,\n")  # a row without PSNR is skipped
    return d, anchors


@pytest.fixture(scope="module")
def run(images, tmp_path_factory):
    d, anchors = images
    out = tmp_path_factory.mktemp("res") / "small"
    cards = small_models()
    r = run_cli("eval", str(d), "--models", ",".join(c["name"] for c in cards),
                "--baselines", "jpeg,webp", "--paper", "--anchors", str(anchors), "--out",
                str(out), env=ENV)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return out, cards, r


def test_outputs(run):
    out, cards, r = run
    assert sorted(os.listdir(out)) == ["bdrate.csv", "paper.md", "per_image.csv", "rd.png",
                                       "summary.json"]
    with open(out / "rd.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    from uqcodec.baselines import QUALITIES
    # every model with uq and (--paper) with rounding, the JPEG and WebP sweeps
    assert len(rows) == 2 * (2 * len(cards) + len(QUALITIES["jpeg"]) + len(QUALITIES["webp"]))
    assert {r["image"] for r in rows} == {"kodim05_crop.png", "kodim19_crop.png"}
    for row in rows:
        assert int(row["width"]) * int(row["height"]) == 160 * 96
        assert float(row["bpp"]) == pytest.approx(8 * int(row["bytes"]) / (160 * 96), rel=1e-5)
        assert 15 < float(row["psnr"]) < 60 and 0 < float(row["ms_ssim"]) <= 1
        assert float(row["encode_s"]) > 0 and float(row["decode_s"]) > 0
    models = [r for r in rows if r["kind"] == "model"]
    assert {r["quantizer"] for r in models} == {"uq", "round"}


def test_summary_and_bdrate(run):
    out, cards, _ = run
    s = json.load(open(out / "summary.json"))
    assert len(s["images"]) == 2 and s["paper"] is True
    names = {c["name"] for c in s["curves"]}
    assert {"JPEG 4:2:0 (Pillow)", "WebP m6 (Pillow)"} <= names
    for c in s["curves"]:
        bpps = [p["bpp"] for p in c["points"]]
        assert bpps == sorted(bpps)
        if c["kind"] == "model":  # one point per lambda
            assert len({p["lambda"] for p in c["points"]}) == len(c["points"])
    assert s["published"] == ["Minnen 2018 mean-scale hyperprior, no context (TFC)"]
    bd = list(csv.DictReader(open(out / "bdrate.csv")))
    anchors = {r["anchor"] for r in bd}
    assert anchors == {"WebP m6 (Pillow)", "JPEG 4:2:0 (Pillow)",
                       "Minnen 2018 mean-scale hyperprior, no context (TFC)"}
    jpeg_vs_webp = [r for r in bd if r["curve"] == "JPEG 4:2:0 (Pillow)"
                    and r["anchor"] == "WebP m6 (Pillow)"][0]
    assert 0 < float(jpeg_vs_webp["bd_rate_percent"]) < 300  # JPEG needs more bits than WebP
    for r in bd:  # an empty BD-rate always says why
        assert r["bd_rate_percent"] or r["note"]
    paper = open(out / "paper.md").read()
    assert "BD-rate vs UN+Q" in paper and cards[0]["arch"] in paper


def test_results_hold_no_path_of_this_machine(run, images):
    """The folder is named relative to the current directory when it lies in it or beside
    it (../shared/data/kodak), else by its name: results are committed."""
    out, _, _ = run
    d, _ = images
    s = json.load(open(out / "summary.json"))
    # a temporary folder: by its name, or relative where it lies beside the current
    # directory (a checkout in /tmp), never as an absolute path
    assert s["dir"] == evaluate.shown_dir(str(d)) and not os.path.isabs(s["dir"])
    assert s["dir"].endswith(d.name)
    for f in ("summary.json", "paper.md", "per_image.csv", "bdrate.csv"):
        assert str(d.parent) not in open(out / f).read(), f
    here = os.getcwd()
    assert evaluate.shown_dir(os.path.join(here, "a", "b")) == "a/b"
    assert evaluate.shown_dir(os.path.join(os.path.dirname(here), "shared", "kodak")) == (
        "../shared/kodak")


def test_refuses_existing_results_and_bad_input(run, images):
    out, _, _ = run
    d, _ = images
    r = run_cli("eval", str(d), "--out", str(out), "--models", "none", "--baselines", "jpeg",
                env=ENV)
    one_line_error(r)
    assert "--force" in r.stderr
    one_line_error(run_cli("eval", str(d / "missing"), "--out", str(out.parent / "x"), env=ENV))
    one_line_error(run_cli("eval", str(d), "--out", str(out.parent / "y"), "--baselines", "bpg",
                           env=ENV))
    one_line_error(run_cli("eval", str(d), "--out", str(out.parent / "z"), "--models", "nope",
                           env=ENV))
    assert not any(os.path.exists(out.parent / n) for n in "xyz")


def test_force_baselines_only(images, tmp_path):
    d, _ = images
    out = tmp_path / "res"
    out.mkdir()
    (out / "paper.md").write_text("stale")
    r = run_cli("eval", str(d), "--out", str(out), "--models", "none", "--baselines", "webp",
                "--anchors", "none", "--force", "--quiet", env=ENV)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(out)) == ["bdrate.csv", "per_image.csv", "rd.png", "summary.json"]


def test_curves_one_point_per_lambda():
    def row(setting, lmbda, steps, bpp):
        return {"curve": "hyperprior UN+UQ", "setting": setting, "kind": "model",
                "arch": "hyperprior", "training": "un", "quantizer": "uq", "quality": "",
                "lambda": lmbda, "steps": steps, "bpp": bpp, "psnr": 30.0, "ms_ssim": 0.9,
                "encode_s": 1.0, "decode_s": 1.0}
    rows = [row("b", 0.01, 100, 0.8), row("a", 0.004, 100, 0.4), row("c", 0.01, 900, 0.7),
            row("b", 0.01, 100, 0.6)]
    (c,) = evaluate.curves(rows)
    assert [p["setting"] for p in c["points"]] == ["a", "c"] and c["dropped"] == ["b"]


def test_paper_plan_and_matched_points_of_fixed_and_variable_models():
    """--paper measures a variable-rate set also at the lambdas of the fixed-rate models
    of its family, so UN+Q / UN+UQ (fixed un models) and UN+UQ+SR / UN+SR+Q (the sr
    set) meet at matched points."""
    from uqcodec import rates, report
    un = {"name": "hp-un-0.03", "arch": "hyperprior", "training": "un", "lambda": 0.03}
    far = {"name": "hp-un-1", "arch": "hyperprior", "training": "un", "lambda": 1.0}
    lo = {"name": "v-lo", "arch": "hyperprior", "training": "sr", "lambda_range": [0.001, 0.01],
          "path": "lo"}
    hi = {"name": "v-hi", "arch": "hyperprior", "training": "sr", "lambda_range": [0.008, 0.1],
          "path": "hi"}
    settings = evaluate.plan([un, far, lo, hi], paper=True)
    qs = [q for c, quant, _, q in settings if c["name"] == "v-lo+v-hi" and quant == "uq"]
    extra = [q for q in qs if q not in evaluate.EVAL_QUALITIES]
    assert len(extra) == 1 and len(qs) == len(evaluate.EVAL_QUALITIES) + 1  # 1.0 is out of range
    assert abs(rates.quality_lambda(extra[0], 0.001, 0.1) / 0.03 - 1) < 1e-12
    assert not [q for c, _, _, q in evaluate.plan([un, lo, hi]) if q not in (None,) +
                evaluate.EVAL_QUALITIES]  # without --paper: the usual qualities

    def curve(name, training, quantizer, variable, pts):
        return {"name": name, "kind": "model", "arch": "hyperprior", "training": training,
                "quantizer": quantizer, "variable": variable, "refine": 0,
                "points": [{"setting": s, "lambda": l, "bpp": b, "psnr": p, "ms_ssim": 0.9}
                           for s, l, b, p in pts]}
    lam = rates.quality_lambda(extra[0], 0.001, 0.1)
    curves = [curve("a", "un", "round", False, [("hp-un-0.03", 0.03, 1.0, 33.0)]),
              curve("b", "un", "uq", False, [("hp-un-0.03", 0.03, 1.1, 33.2)]),
              curve("c", "sr", "uq", True, [("v q0", 0.001, 0.2, 27.0),
                                             (f"v q{extra[0]:g}", lam, 0.9, 33.5)])]
    md = report.paper_md(curves, {"n_images": 1, "dir": "x"}).decode()
    rows = [l for l in md.splitlines() if "vs UN+Q" in l and l.startswith("| hyperprior |")]
    assert any("UN+UQ+SR vs UN+Q" in l and "-10.0 %" in l and "+0.500" in l for l in rows), md
    assert any("UN+UQ vs UN+Q" in l and "+10.0 %" in l for l in rows), md


def test_paper_plan_puts_the_variable_sets_of_a_family_on_one_lambda_grid():
    """With --paper, a un rate set over a narrower range is measured at the lambdas of the
    family's quality grid (the sr set's points) that fall in its range, plus its ends, so
    every point of the un set has an sr point at the same lambda."""
    from uqcodec import rates

    def card(name, training, lo, hi):
        return {"name": name, "arch": "hyperprior", "training": training,
                "lambda_range": [lo, hi], "path": name}
    cards = [card("s-lo", "sr", 0.0004, 0.01), card("s-hi", "sr", 0.008, 0.25),
             card("u-lo", "un", 0.0004, 0.01), card("u-hi", "un", 0.008, 0.04)]
    settings = evaluate.plan(cards, paper=True)

    def lambdas(name, quant):
        (c,) = {id(c): c for c, _, _, _ in settings if c["name"] == name}.values()
        lo, hi = c["lambda_range"]
        return [rates.quality_lambda(q, lo, hi) for d, qz, _, q in settings
                if d["name"] == name and qz == quant]
    sr, un = lambdas("s-lo+s-hi", "uq"), lambdas("u-lo+u-hi", "uq")
    assert len(sr) == len(evaluate.EVAL_QUALITIES)  # the widest set: its usual points
    assert lambdas("u-lo+u-hi", "round") == un
    assert min(un) == 0.0004 and abs(max(un) / 0.04 - 1) < 1e-12  # its own ends
    inner = [l for l in un if l < 0.0399]
    assert len(inner) >= 7 and all(any(abs(l / s - 1) < 1e-9 for s in sr) for l in inner)


def test_avif_and_jpeg_xl_baselines_with_limit(images, tmp_path):
    """--baselines avif,jxl --limit 1: the first image only (in name order), AVIF's
    quality sweep measured on it (Pillow's AVIF encoder, speed 6, 4:2:0: the same bytes
    as Pillow writes with those options), rate growing with quality; JPEG XL with
    cjxl/djxl effort 7 where they are installed, else skipped with a warning that says
    why, noted in summary.json, and the run goes on."""
    import io

    import numpy as np
    from PIL import Image

    from uqcodec import baselines
    from uqcodec.baselines import QUALITIES
    why = baselines.available("avif")
    if why:
        pytest.skip(f"AVIF cannot run here: {why}")
    d, _ = images
    out = tmp_path / "res"
    r = run_cli("eval", str(d), "--models", "none", "--baselines", "avif,jxl", "--limit", "1",
                "--anchors", "none", "--quiet", "--out", str(out), env=ENV)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    s = json.load(open(out / "summary.json"))
    assert s["images"] == ["kodim05_crop.png"] and {r["image"] for r in rows} == set(s["images"])
    want = {"AVIF s6 (Pillow)": QUALITIES["avif"]}
    jxl = baselines.available("jxl")
    if jxl is None:
        want["JPEG XL (cjxl e7)"] = QUALITIES["jxl"]
        assert s["skipped"] == []
    else:
        assert f"uqcodec: warning: skipping jxl: {jxl}" in r.stderr.splitlines()
        assert s["skipped"] == [f"jxl: {jxl}"]
    assert {r["curve"] for r in rows} == set(want)
    rgb = np.asarray(Image.open(d / "kodim05_crop.png").convert("RGB"))
    for name, qualities in want.items():
        mine = [r for r in rows if r["curve"] == name]
        assert [int(r["quality"]) for r in mine] == list(qualities)
        bpp = [float(r["bpp"]) for r in mine]
        psnr = [float(r["psnr"]) for r in mine]
        assert bpp == sorted(bpp) and bpp[0] < 0.5 * bpp[-1], (name, bpp)
        assert psnr[-1] > psnr[0] + 5 and all(20 < p < 60 for p in psnr), (name, psnr)
        (curve,) = [c for c in s["curves"] if c["name"] == name]
        assert len(curve["points"]) == len(qualities)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "AVIF", quality=50, speed=6, subsampling="4:2:0")
    (q50,) = [r for r in rows if r["curve"] == "AVIF s6 (Pillow)" and r["quality"] == "50"]
    assert int(q50["bytes"]) == len(buf.getvalue())


def test_several_folders_summary_and_resume(tmp_path):
    """Two image folders: one results folder each, summary.md with the UQ penalty and the
    SR gain per family and dataset; the same command again keeps both (a resumed run);
    other settings over the same results are refused without --force."""
    from uqcodec import zoo
    names = {c["name"] for c in zoo.list_models()}
    models = [f"linear3-{m}-{l}" for m in ("un", "sr") for l in ("0.01", "0.03")]
    if not set(models) <= names:
        pytest.skip("the linear3 ladder is not shipped")
    dirs = []
    for n in ("kodim05_crop.png", "kodim19_crop.png"):
        d = tmp_path / n.split("_")[0]
        d.mkdir()
        shutil.copy(os.path.join(DATA, n), d / "photo.png")  # not named as Kodak's
        dirs.append(str(d))
    out = tmp_path / "res"
    args = ("eval", *dirs, "--models", ",".join(models), "--baselines", "none", "--paper",
            "--quiet", "--out", str(out))
    r = run_cli(*args, env=ENV)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(out)) == ["kodim05", "kodim19", "summary.md", "summary.png"]
    assert (out / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for d in ("kodim05", "kodim19"):
        assert "paper.md" in os.listdir(out / d)
        s = json.load(open(out / d / "summary.json"))
        assert s["models"][0]["fingerprint"] and s["images"] == ["photo.png"]
        assert s["published"] == []  # Kodak's published curves are for Kodak only
    md = (out / "summary.md").read_text()
    rows = [l for l in md.splitlines() if l.startswith("| linear |")]
    assert [l.split(" | ")[1] for l in rows] == ["kodim05", "kodim19"]
    for l in rows:  # universal quantization costs the linear model rate
        assert float(l.split(" | ")[4]) > 0, l
    assert "uqcodec eval --models" in md and str(tmp_path) not in md
    before = {d: os.path.getmtime(out / d / "per_image.csv") for d in ("kodim05", "kodim19")}
    r = run_cli(*args, env=ENV)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("kept") == 2
    assert before == {d: os.path.getmtime(out / d / "per_image.csv") for d in before}
    one_line_error(run_cli(*args, "--seed", "7", env=ENV))
    one_line_error(run_cli("eval", dirs[0], dirs[0], "--out", str(tmp_path / "twice"), env=ENV))


def test_a_default_codec_that_mixes_families_is_a_curve_of_its_own(tmp_path, monkeypatch):
    """models/default.json may take each range's model from another family; eval then
    measures that codec as one rate set beside each family's own (not with --paper)."""
    write_variable_cards(tmp_path, [("hp-lo", "hyperprior", [0.0004, 0.01]),
                                    ("hp-hi", "hyperprior", [0.008, 0.25]),
                                    ("ctx-lo", "context", [0.0004, 0.01])])
    monkeypatch.setenv("UQCODEC_MODELS", str(tmp_path))
    sets = lambda paper: sorted({(c["name"], c["arch"]) for c, _, _, _ in evaluate.plan(
        zoo.list_models(), paper=paper)})
    assert sets(False) == [("ctx-lo", "context"), ("hp-lo+hp-hi", "hyperprior")]
    (tmp_path / "default.json").write_text(json.dumps({"default": ["ctx-lo", "hp-hi"]}))
    assert sets(False) == [("ctx-lo", "context"), ("ctx-lo+hp-hi", "context+hyperprior"),
                           ("hp-lo+hp-hi", "hyperprior")]
    assert ("ctx-lo+hp-hi", "context+hyperprior") not in sets(True)
    only = {(c["name"], c["arch"]) for c, _, _, _ in evaluate.plan(
        evaluate.select_models("default"))}
    assert only == {("ctx-lo+hp-hi", "context+hyperprior")}  # --models default
