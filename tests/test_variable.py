"""Variable-rate hyperprior: one model, any rate in its range (the header's rate parameter).

Training (a tiny model, a few steps, lambda drawn from a range; a warm start that grows
the latents and fits the linear bypass), the exact rate path (gain and scale table on
the log grid), ``--quality``, ``--target-bpp``/``--target-psnr`` and the CLI around them.
"""
import json
import os

import numpy as np
import pytest

import uqcodec
from conftest import DATA, load, run_cli
from test_cli import one_line_error
from uqcodec import codec, container, entropy, exactmath, rates, rateset, zoo
from uqcodec.constants import LOG_SCALE_STEP, RATE_DIV

TINY = {"N": 16, "M": 24}


def shipped_variable():
    cards = zoo.variable_models("hyperprior")
    if not cards:
        pytest.skip("no shipped variable-rate model")
    cards.sort(key=lambda c: (c.get("training") != "sr", c["name"]))
    return cards[0]["path"]


def test_rate_gain_and_scales_are_the_log_grid_shifted():
    assert entropy.rate_gain(0) == 1.0
    np.testing.assert_array_equal(entropy.rate_scales(0), entropy.SCALES)
    for r in (-170, -3, 1, 4, 57):
        g = entropy.rate_gain(r)
        assert abs(g / np.exp(LOG_SCALE_STEP * r / RATE_DIV) - 1) < 1e-14
        # the table at rate r is SCALES times the gain, and r = 4 is one index step
        np.testing.assert_allclose(entropy.rate_scales(r), entropy.SCALES * g, rtol=1e-13)
    np.testing.assert_array_equal(entropy.rate_scales(4)[:-1], exactmath.exp(
        -2.2072749131897207 + LOG_SCALE_STEP * (np.arange(1, 128) + 0.0)))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny variable-rate model with a bypass: trained from scratch, resumed, exported."""
    from uqcodec.training import train
    from uqcodec.training.export import export_model
    tmp = tmp_path_factory.mktemp("variable")
    run = str(tmp / "run")
    kw = dict(data=DATA, patch=64, batch=2, lr=1e-3, warmup=2, progress=False, bf16=False,
              model_args=dict(TINY, bypass=16), export=False, log_every=1000)
    train.train("hyperprior", "sr", (0.001, 0.1), run, steps=2, **kw)
    train.train("hyperprior", "sr", (0.001, 0.1), run, steps=4, resume=True, **kw)
    with open(os.path.join(run, "train.json")) as f:
        state = json.load(f)
    assert state["steps"] == 4 and state["lambda_range"] == [0.001, 0.1]
    out = str(tmp / "tiny-vr")
    card = export_model(run, out, measure=False)
    assert card["lambda_range"] == [0.001, 0.1] and card["bypass"] == 16
    return out


def test_tiny_model_codes_every_quality_exactly(tiny):
    x = load("kodim15_odd.png")
    c = codec.load(tiny)
    assert c.variable
    params = []
    for q in (0, 3.3, 10):
        data, info = uqcodec.compress_with_info(x, model=tiny, seed=4, quality=q,
                                                reconstruct=True)
        header = container.parse_header(data)[0]
        assert header.rate == info["rate"] == rateset.RateSet([c]).pick(q)[1]
        params.append(header.rate)
        np.testing.assert_array_equal(uqcodec.decompress(data, model=tiny),
                                      info["reconstruction"])
        assert 8 * len(data) <= 1.01 * info["rate_bits"] + 8 * 100 + 96
    assert params == sorted(params) and params[0] < params[-1]


def test_fitted_bypass_feeds_the_new_latents_and_lowers_the_error():
    """Growing M with a bypass (``widen.fit_bypass``): the old latents are unchanged, the
    new ones come from the linear path fitted to what the old reconstruction misses, and
    the transforms (no quantization) reconstruct the fitted pictures better than before."""
    from uqcodec.training import widen
    from uqcodec.training.model import CompressionModel
    small = CompressionModel({"arch": "hyperprior", **TINY})
    # an old path that reconstructs nothing (constant output): what it misses is linear
    # in the picture, so the fit must catch a large part of it
    for name in ("analysis/conv3/kernel", "analysis/conv3/bias"):
        v = small.named_variables()[name]
        v.assign(np.zeros(v.shape, np.float32))
    big = CompressionModel({"arch": "hyperprior", "N": 16, "M": 40, "bypass": 16})
    img = np.tile(load("kodim19_crop.png"), (6, 4, 1))  # 576 x 640
    x = img[None, :256, :256].astype(np.float32) / 255.0
    widen.widen(small, big, x)
    widen.fit_bypass(big, [img], TINY["M"], crops=16)
    y_small, y_big = small.analyze(x).numpy(), big.analyze(x).numpy()
    np.testing.assert_allclose(y_big[..., :TINY["M"]], y_small, rtol=1e-5, atol=1e-5)
    assert np.abs(y_big[..., TINY["M"]:]).max() > 0

    def mse(m):
        return float(np.mean((m.synthesize(m.analyze(x)).numpy() - x) ** 2))
    before, after = mse(small), mse(big)
    assert after < 0.5 * before, (before, after)
    # the new latents' predicted scales start at their spread, not at the smallest scale
    b = big.named_variables()["hyper_synthesis/conv2/bias"].numpy()
    assert np.all(b[40 + TINY["M"]:] > -2.2)


def test_quality_is_monotone_and_targets_are_met():
    m = shipped_variable()
    x = load("kodim05_crop.png")
    sizes = [len(uqcodec.compress(x, model=m, seed=1, quality=q)) for q in (1, 5, 9)]
    assert sizes[0] < sizes[1] < sizes[2]
    # without a model, a target uses the shipped variable-rate models (all of them, one
    # set); targets between what qualities 2 and 3 give on this crop
    from uqcodec.metrics import psnr
    n = x.shape[0] * x.shape[1]
    pts = []
    for q in (2, 3):
        data = uqcodec.compress(x, seed=1, model=",".join(c["name"] for c in zoo.variable_set()),
                                quality=q)
        pts.append((8 * len(data) / n, psnr(uqcodec.decompress(data, rgb=True), x)))
    want = np.sqrt(pts[0][0] * pts[1][0])
    data, info = uqcodec.compress_with_info(x, seed=1, target_bpp=want)
    bpp = 8 * len(data) / n
    assert info["target"]["reached"] and abs(bpp / want - 1) <= 0.02, (bpp, want)
    want = (pts[0][1] + pts[1][1]) / 2
    data, info = uqcodec.compress_with_info(x, seed=1, target_psnr=want)
    got = psnr(uqcodec.decompress(data, rgb=True), x)
    assert info["target"]["reached"] and abs(got - want) <= 0.1, (got, want)


def test_unreachable_target_says_so_and_codes_the_nearest(tmp_path):
    m = shipped_variable()
    src = os.path.join(DATA, "kodim05_crop.png")
    out = tmp_path / "a.uq"
    r = run_cli("compress", src, "--target-bpp", "40", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "out of reach" in r.stderr and out.exists()
    h = container.parse_header(out.read_bytes())[0]
    top = rateset.RateSet([codec.load(c["path"]) for c in zoo.default_variable()]).options()[-1]
    # the search goes TARGET_EXTEND rate steps past the top of the trained range
    assert (h.model, h.rate) == (top[0].name, top[1] + rateset.TARGET_EXTEND)
    r = run_cli("info", str(out))
    assert f"rate            {h.rate}" in r.stdout.splitlines()


def test_cli_errors_are_one_line(tmp_path):
    src = os.path.join(DATA, "kodim05_crop.png")
    m = shipped_variable()
    fixed = [c["name"] for c in zoo.list_models() if not c.get("lambda_range")]
    assert fixed  # the shipped linear ladder (and hyperprior7-un-0.1)
    for args, why in ((["--model", m, "-q", "11"], "quality must be between 0 and 10"),
                      (["--model", m, "-q", "3", "--target-bpp", "1"], "give one of"),
                      (["--model", m, "--target-bpp", "-1"], "must be a positive number"),
                      (["--model", fixed[0], "--target-bpp", "0.5"],
                       "need a variable-rate model")):
        r = run_cli("compress", src, *args, "-o", str(tmp_path / "x.uq"))
        one_line_error(r)
        assert why in r.stderr, (args, r.stderr)
        assert not (tmp_path / "x.uq").exists()


def test_models_lists_the_range():
    shipped_variable()
    r = run_cli("models")
    assert r.returncode == 0
    # rows: "* NAME ..." for the default codec's models, "  NAME ..." for the others
    lines = {l.lstrip("* ").split()[0]: l.lstrip("* ").split()
             for l in r.stdout.splitlines()[1:] if l.strip()}
    for c in zoo.variable_models():
        row = lines[c["name"]]
        assert row[3] == "{:g}-{:g}".format(*c["lambda_range"])
        q0, q1 = (float(v) for v in row[-1].split("-"))
        assert 0 <= q0 < q1 <= 10
    marked = {l.split()[1] for l in r.stdout.splitlines()[1:] if l.startswith("*")}
    assert marked == {c["name"] for c in zoo.default_variable()}  # the default codec


def test_refinement_of_a_variable_rate_model(tiny):
    """--refine optimizes the latents for the lambda of the quality, coded at the exact
    gain of its rate parameter: the file decodes to the encoder's reconstruction and
    costs less rate + lambda * MSE than the unrefined one. The tiny model's analysis is
    4 steps into training, far from the best latents: 12 steps gain about 1.4 % of the
    loss, in the model's rate and in the real file."""
    x = load("kodim05_crop.png")
    s = rateset.RateSet([codec.load(tiny)])
    lam = s.lambda_of(7)
    losses, files = [], []
    for steps in (0, 12):
        data, info = uqcodec.compress_with_info(x, model=tiny, seed=2, quality=7, refine=steps,
                                                reconstruct=True)
        np.testing.assert_array_equal(uqcodec.decompress(data, model=tiny),
                                      info["reconstruction"])
        assert container.parse_header(data)[0].rate == s.pick(7)[1]
        mse = np.mean((info["reconstruction"].astype(float) - x) ** 2)
        losses.append(info["rate_bits"] / (x.shape[0] * x.shape[1]) + lam * mse)
        files.append(8 * len(data) / (x.shape[0] * x.shape[1]) + lam * mse)
    assert losses[1] < 0.995 * losses[0], losses
    assert files[1] < 0.995 * files[0], files


def test_the_codec_reads_the_gains_that_training_learned(tiny):
    from uqcodec.training.model import CompressionModel
    card = zoo.read_card(tiny)
    model = CompressionModel(card)
    model.load_weights_npz(os.path.join(tiny, "weights.npz"))
    c = codec.load(tiny)
    np.testing.assert_allclose(c.family.rate_knots, model.rate.knots.numpy(), rtol=1e-6)
    for t in (0.0, 0.3, 1.0):
        assert c.family.rate_at(t) == int(np.rint(float(model.rate(t)) * RATE_DIV
                                                   / LOG_SCALE_STEP))


def test_a_rate_set_splits_its_range_between_models(tiny, tmp_path):
    """Two variable-rate models as one codec: quality 0 goes to the low one, 10 to the
    high one, the switch is at the geometric mean of the overlap, and the options run
    from the lowest rate of one to the highest of the other."""
    import shutil
    lo_dir, hi_dir = tmp_path / "lo", tmp_path / "hi"
    for d, rng in ((lo_dir, [0.0001, 0.002]), (hi_dir, [0.001, 0.1])):
        shutil.copytree(tiny, d)
        card = json.loads((d / "model.json").read_text())
        card.update(lambda_range=rng, name=d.name)
        (d / "model.json").write_text(json.dumps(card))
    s = rateset.RateSet([codec.load(str(hi_dir)), codec.load(str(lo_dir))])
    assert [c.name for c in s.codecs] == ["lo", "hi"]
    assert s.pick(0)[0].name == "lo" and s.pick(10)[0].name == "hi"
    switch = np.sqrt(0.002 * 0.001)
    q_switch = 10 * np.log(switch / 0.0001) / np.log(0.1 / 0.0001)
    assert s.pick(q_switch - 0.01)[0].name == "lo" and s.pick(q_switch + 0.01)[0].name == "hi"
    opts = s.options()
    assert opts[0] == (s.codecs[0], s.pick(0)[1]) and opts[-1] == (s.codecs[1], s.pick(10)[1])
    with pytest.raises(uqcodec.CodecError):
        s.pick(10.5)


def test_train_rejects_a_bad_lambda_range_in_one_line(tmp_path):
    for args in (["--model", "linear", "--lambda", "0.01:0.1"], ["--lambda", "0.1:0.01"],
                 ["--lambda", "abc"], ["--lambda", "0.1:0.2:0.3"]):
        r = run_cli("train", *args, "--out", str(tmp_path / "m"), "--data", DATA)
        one_line_error(r)
        assert not (tmp_path / "m").exists()


def test_warm_start_can_move_the_lambda_range(tiny, tmp_path):
    """``--init-from`` a variable-rate model with another lambda range keeps its weights
    and remaps its learned gains: the same lambda gets the same rate parameter inside the
    old range, and outside it the gain goes on growing as sqrt(lambda)."""
    from uqcodec.training import train
    from uqcodec.training.export import export_model
    run, out = str(tmp_path / "run"), str(tmp_path / "moved")
    train.train("hyperprior", "sr", (0.0005, 0.05), run, steps=1, lr=1e-12, warmup=1,
                data=DATA, patch=64, batch=2, progress=False, bf16=False, export=False,
                init_from=tiny, log_every=1000)
    export_model(run, out, measure=False)
    old, new = codec.load(tiny).family, codec.load(out).family
    assert codec.load(out).card["lambda_range"] == [0.0005, 0.05]

    def rate(fam, lmbda, lo, hi):
        return fam.rate_at(rates.lambda_position(lmbda, lo, hi))
    for lmbda in (0.001, 0.003, 0.02, 0.05):
        assert abs(rate(new, lmbda, 0.0005, 0.05) - rate(old, lmbda, 0.001, 0.1)) <= 1
    step = 0.5 * np.log(2.0) * RATE_DIV / LOG_SCALE_STEP  # lambda halved: gain / sqrt(2)
    assert abs(rate(new, 0.0005, 0.0005, 0.05) - (rate(old, 0.001, 0.001, 0.1) - step)) <= 1


def _two_range_copies(tiny, folder):
    """The tiny model under two overlapping lambda ranges: a rate set of two models."""
    import shutil
    dirs = []
    for name, rng in (("tiny-lo", [0.0001, 0.002]), ("tiny-hi", [0.001, 0.1])):
        d = folder / name
        shutil.copytree(tiny, d)
        card = json.loads((d / "model.json").read_text())
        card.update(lambda_range=rng, name=name)
        (d / "model.json").write_text(json.dumps(card))
        dirs.append(str(d))
    return dirs


def test_eval_of_a_rate_set_with_refinement_and_the_gradient_bias_table(tiny, tmp_path):
    """`uqcodec eval --paper --refine 4 --limit 1` on two variable-rate models: they are
    one curve of 11 points at the lambdas of qualities 0..10 over the union of their
    ranges (log-spaced, 0.0001 to 0.1), decoded with dither and with rounding, plus the
    refined curve, whose files cost no more rate + lambda * MSE than the plain ones; only
    the first image is measured; paper.md holds the gradient-bias table of both models
    (64 draws of each gradient estimator on a 128x128 crop of that image): the two
    estimators' means agree in direction, the lower-variance one varies less."""
    from PIL import Image
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    crop = load("kodim19_crop.png")
    big = np.concatenate([crop, crop[:, ::-1]], 1)[:128]  # 128 x 192: a 128x128 crop fits
    Image.fromarray(big).save(imgs / "a.png")
    Image.fromarray(crop).save(imgs / "b.png")  # after a.png: left out by --limit 1
    lo, hi = _two_range_copies(tiny, tmp_path)
    out = tmp_path / "res"
    r = run_cli("eval", str(imgs), "--models", f"{lo},{hi}", "--baselines", "none",
                "--anchors", "none", "--paper", "--refine", "4", "--limit", "1", "--quiet",
                "--out", str(out), env={"UQCODEC_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["images"] == ["a.png"] and s["refine"] == 4
    lambdas = [0.0001 * 1000 ** (q / 10) for q in range(11)]
    curves = {c["name"]: c for c in s["curves"]}
    plain = "hyperprior UN+UQ+SR, variable rate"
    refined = "hyperprior UN+UQ+SR, refined 4, variable rate"
    assert set(curves) == {plain, refined, "hyperprior UN+SR+Q, variable rate"}
    for c in curves.values():
        pts = sorted(c["points"], key=lambda p: p["lambda"])
        np.testing.assert_allclose([p["lambda"] for p in pts], lambdas, rtol=1e-9)
        assert all(p["setting"].startswith("tiny-lo+tiny-hi q") for p in pts)

    def loss(p):  # rate + lambda * MSE of a point (one image: its file)
        return p["bpp"] + p["lambda"] * 255.0 ** 2 * 10 ** (-p["psnr"] / 10)
    flush = 2 * 64 / big[..., 0].size  # the range coders' flush: the file's bits beyond the rate
    by_lambda = {p["setting"]: p for p in curves[plain]["points"]}
    gains = []
    for p in curves[refined]["points"]:
        q = by_lambda[p["setting"]]
        assert loss(p) <= loss(q) + flush, (p, q)
        gains.append(loss(q) - loss(p))
    assert max(gains) > flush  # refinement did change files
    rows = (out / "per_image.csv").read_text().splitlines()
    assert len(rows) == 1 + 33 and all(",a.png," in "," + row for row in rows[1:])
    # the gradient-bias table: one row per model, with its steps, alpha and 64 draws
    paper = (out / "paper.md").read_text()
    assert "on 1 crops of 128x128" in paper
    table = [line for line in paper.splitlines() if line.startswith("| tiny-")]
    assert sorted(line.split("|")[1].strip() for line in table) == ["tiny-hi", "tiny-lo"]
    card = zoo.read_card(tiny)
    for line in table:
        cells = [c.strip() for c in line.strip("|").split("|")]
        steps, alpha, draws = int(cells[1]), float(cells[2]), int(cells[3])
        rel_bias, cosine, noise, var_plain, var_lv = (float(c) for c in cells[4:9])
        assert (steps, draws) == (card["steps"], 64) and alpha == round(card["alpha"], 2)
        assert rel_bias >= 0 and noise > 0 and 0.9 < cosine <= 1  # about the same mean
        assert 0 <= var_lv < var_plain  # the lower-variance estimator (measured 0.00 / 0.41)


def test_export_measures_the_model_on_kodak(tiny, tmp_path):
    """export_model(..., measure=True, kodak=DIR): a variable-rate model is measured at
    qualities 0, 5 and 10 (real files, dither seed 1 for the first image), the card's
    kodak_bpp / kodak_psnr are those of quality 5."""
    from PIL import Image

    from uqcodec.metrics import psnr
    from uqcodec.training.export import export_model
    kodak = tmp_path / "kodak"
    kodak.mkdir()
    x = load("kodim05_crop.png")
    Image.fromarray(x).save(kodak / "kodim01.png")
    out = str(tmp_path / "measured")
    card = export_model(os.path.join(os.path.dirname(tiny), "run"), out, measure=True,
                        kodak=str(kodak))
    assert card["kodak_images"] == 1
    assert [p["quality"] for p in card["kodak_points"]] == [0, 5, 10]
    for p in card["kodak_points"]:
        data = uqcodec.compress(x, model=out, seed=1, quality=p["quality"])
        assert p["bpp"] == round(8 * len(data) / (x.shape[0] * x.shape[1]), 4)
        assert p["psnr"] == round(psnr(x, uqcodec.decompress(data, model=out)), 3)
    mid = card["kodak_points"][1]
    assert (card["kodak_bpp"], card["kodak_psnr"]) == (mid["bpp"], mid["psnr"])
    assert zoo.read_card(out) == card  # written to the model's card
