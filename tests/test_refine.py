"""Encoder-side latent refinement: smaller loss of the real file, same decoder."""
import numpy as np
import pytest

import uqcodec
from uqcodec import CodecError, codec, evaluate, rates, rateset, zoo
from conftest import load, run_cli, shipped


def _file_loss(rgb, data, lam):
    """Rate + lambda * MSE (0..255) of a real file, decoded by the ordinary decoder."""
    out = uqcodec.decompress(data)
    bpp = 8 * len(data) / (rgb.shape[0] * rgb.shape[1])
    mse = float(np.mean((out.astype(np.float64) - rgb) ** 2))
    return bpp + lam * mse, out


def _shipped_hyperprior(training):
    """(model option, quality, lambda): sr the default codec (the variable-rate set) at
    the default quality; un its variable-rate set at quality 7.5 (lambda 0.013, served by
    hyperprior9-un-mid; at the default quality, lambda 0.004, 20 steps do not improve
    hyperprior8-un-lo's file of this crop: docs/history.md), else the middle of a
    fixed-rate un ladder."""
    cards = [c for c in zoo.variable_models("hyperprior") if c["training"] == training]
    if cards:
        s = rateset.RateSet([codec.load(c["path"]) for c in cards])
        q = rates.DEFAULT_QUALITY if training == "sr" else 7.5
        return [c["name"] for c in cards] if training == "un" else None, q, s.lambda_of(q)
    if training == "sr":
        pytest.skip("no shipped variable-rate sr models")
    card = zoo.middle("hyperprior", "un")
    if card is None:
        pytest.skip("no shipped un hyperprior")
    return card["name"], None, card["lambda"]


@pytest.mark.parametrize("quantizer", ["uq", "round"])
@pytest.mark.parametrize("training", ["sr", "un"])
def test_refined_file_has_lower_loss_and_decodes_exactly(quantizer, training):
    name, quality, lam = _shipped_hyperprior(training)
    x = load("kodim19_crop.png")
    plain = uqcodec.compress(x, model=name, quality=quality, seed=11, quantizer=quantizer)
    data, info = uqcodec.compress_with_info(x, model=name, quality=quality, seed=11,
                                            quantizer=quantizer, refine=20, reconstruct=True)
    before, _ = _file_loss(x, plain, lam)
    after, out = _file_loss(x, data, lam)
    np.testing.assert_array_equal(out, info["reconstruction"])  # the decoder is unchanged
    assert uqcodec.read_header(data).quantizer == quantizer
    assert after < 0.99 * before, (before, after)


def test_refinement_is_deterministic_and_follows_the_seed():
    x = load("kodim05_crop.png")
    name = shipped("hyperprior")
    a = uqcodec.compress(x, model=name, seed=4, refine=6)
    assert uqcodec.compress(x, model=name, seed=4, refine=6) == a
    assert uqcodec.compress(x, model=name, seed=5, refine=6) != a


def test_refinement_with_tiles_and_odd_sizes():
    x = load("kodim05_crop.png")[:95, :150]
    data, info = uqcodec.compress_with_info(x, model=shipped("hyperprior"), seed=2,
                                            refine=4, tile=64, reconstruct=True)
    assert len(uqcodec.read_header(data).tiles) == 6
    np.testing.assert_array_equal(uqcodec.decompress(data), info["reconstruction"])


def test_linear_models_are_refused():
    with pytest.raises(CodecError, match="hyperprior"):
        uqcodec.compress(load("kodim05_crop.png"), model=shipped("linear"), refine=3)
    with pytest.raises(CodecError, match="refine"):
        uqcodec.compress(load("kodim05_crop.png"), refine=-1)


def test_cli_refine(tmp_path):
    src = str(tmp_path / "a.png")
    from PIL import Image
    Image.fromarray(load("kodim19_crop.png")).save(src)
    r = run_cli("compress", src, "--refine", "3", "--seed", "1")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "a.uq").exists() and "bpp" in r.stdout
    r = run_cli("decompress", str(tmp_path / "a.uq"), "-o", str(tmp_path / "b.png"))
    assert r.returncode == 0, r.stderr
    # the refined file (the refinement codec at the default quality: the default codec
    # where its family refines, else the mean & scale set) is another file than that
    # codec's plain one of the same seed, decodes to the picture the CLI wrote, and has a
    # lower rate + lambda * MSE (3 steps: about -1.5 % on this crop)
    x = load("kodim19_crop.png")
    refined = (tmp_path / "a.uq").read_bytes()
    refine_set = zoo.default_variable(refine=True)
    plain = uqcodec.compress(x, seed=1, model=",".join(c["name"] for c in refine_set))
    assert refined != plain
    assert uqcodec.read_header(refined).model == uqcodec.read_header(plain).model
    lam = rateset.RateSet([codec.load(c["path"]) for c in refine_set]).lambda_of(
        rates.DEFAULT_QUALITY)
    after, out = _file_loss(x, refined, lam)
    before, _ = _file_loss(x, plain, lam)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "b.png")), out)
    assert after < 0.995 * before, (before, after)
    r = run_cli("compress", src, "--refine", "3", "--model", shipped("linear"), "-o",
                str(tmp_path / "c.uq"))
    assert r.returncode == 1 and "hyperprior" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "c.uq").exists()


def test_eval_plan_adds_refined_curves_for_hyperprior_sr():
    sr = sorted(zoo.variable_set("hyperprior"), key=lambda c: c["lambda_range"][0])
    cards = [zoo.read_card(zoo.resolve(shipped(a))) for a in ("hyperprior", "linear")] + sr
    settings = evaluate.plan(cards, refine=7)
    # only the sr hyperprior models are refined: the variable-rate ones as one rate set,
    # at every evaluated quality
    refined = [(c["name"], r) for c, q, r, _ in settings if r]
    assert refined == ([(cards[0]["name"], 7)] if cards[0]["training"] == "sr" else []) + (
        [("+".join(c["name"] for c in sr), 7)] * len(evaluate.EVAL_QUALITIES) if sr else [])
    assert evaluate.curve_name("hyperprior", "sr", "uq", 7) == "hyperprior UN+UQ+SR, refined 7"


@pytest.mark.parametrize("arch,training", [("hyperprior", "sr"), ("hyperprior", "un"),
                                           ("context", "sr")])
def test_gradients_match_tensorflow(arch, training):
    """One step's loss and gradients (NumPy + onnxruntime's backward graphs; a context
    model's networks in NumPy) equal TensorFlow's automatic differentiation of the
    training model's relaxation, with the same noise: what refinement follows is the
    training objective."""
    pytest.importorskip("tensorflow_compression")
    import math
    import tensorflow as tf
    from uqcodec import entropy
    from uqcodec.training.model import CompressionModel
    cards = [c for c in zoo.variable_models(arch) if c["training"] == training]
    if not cards:
        pytest.skip(f"no shipped variable-rate {training} {arch} model")
    cod = codec.load(cards[0]["path"])
    rgb = load("kodim19_crop.png")[:128]
    x, (y, z) = cod.pad(rgb), cod.analyze(rgb)
    rng = np.random.default_rng(1)
    ny, nz = rng.uniform(-0.5, 0.5, y.shape), rng.uniform(-0.5, 0.5, z.shape)
    lam = math.sqrt(math.prod(cod.card["lambda_range"]))
    log_gain = math.log(entropy.rate_gain(cod.rate_at_lambda(lam)))
    h, w = 120, 90  # the padded part is left out of the distortion
    a, a_r = cod.rounding.alpha, cod.rounding.alpha_r
    loss, g_y, g_z = cod.spec.refiner_class()(cod.family, None, a, a_r).loss_and_gradients(
        x, y, z, ny, nz, lam, log_gain, (h, w))

    model = CompressionModel(cod.card)
    model.load_weights_npz(cards[0]["path"] + "/weights.npz")
    f32 = lambda v: tf.constant(np.asarray(v, np.float32)[None])  # noqa: E731
    yt, zt = f32(y), f32(z)
    with tf.GradientTape() as tape:
        tape.watch([yt, zt])
        x_hat, bits_y, bits_z = model.relaxed(yt, zt, a, a_r, noise=(f32(ny), f32(nz)),
                                              log_gain=tf.constant(log_gain, tf.float32))
        err = tf.clip_by_value(x_hat[:, :h, :w], 0.0, 1.0) - f32(x)[:, :h, :w]
        tf_loss = (bits_y + bits_z) / (h * w) + lam * tf.reduce_mean(tf.square(err)) * 255 ** 2
    want = [v.numpy()[0] for v in tape.gradient(tf_loss, [yt, zt])]
    assert loss == pytest.approx(float(tf_loss), rel=1e-5)
    for got, ref in zip((g_y, g_z), want):
        assert np.linalg.norm(got - ref) < 1e-4 * np.linalg.norm(ref)


def test_refinement_needs_no_tensorflow():
    code = ("import sys, numpy as np, uqcodec; from PIL import Image; "
            "x = np.asarray(Image.open(sys.argv[1]).convert('RGB'))[:64, :64]; "
            "d = uqcodec.compress(x, seed=1, refine=2); uqcodec.decompress(d); "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    import subprocess
    import sys
    from conftest import DATA
    r = subprocess.run([sys.executable, "-c", code, f"{DATA}/kodim05_crop.png"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_soft_round_inverse_is_the_decoders():
    """Refinement's soft-rounding inverse (its bin edges and the decoder input it
    optimizes through) gives the decoder's values (exactmath's, compiled) where the
    kernel is built, NumPy's within rounding elsewhere; and its edges one bin apart."""
    from uqcodec import exactmath, quantization as Q, refine
    y = np.random.default_rng(3).normal(0.0, 3.0, 10_000)
    got = refine.soft_round_inverse(y, 6.0)
    if exactmath.KERNEL is not None:
        assert np.array_equal(got, Q.soft_round_inverse(y, 6.0, exactmath))
    assert np.allclose(got, Q.soft_round_inverse(y, 6.0, Q.NumpyMath), rtol=0, atol=1e-12)
    assert np.allclose(refine.soft_round_inverse(y + 1.0, 6.0), got + 1.0, rtol=0, atol=1e-12)


def _rate_of_refiner(refiner, m, x, seed, rate):
    """Bits of the analysis latents of ``x`` under this file's dither, as ``refiner`` rates
    them (its phase-2 loss at lambda 0)."""
    import math
    from uqcodec import container, entropy, quantization as Q
    lat = m.analyze(x)
    u_y, u_z = m.family.noise([t.shape for t in lat], Q.Dither(seed, 0, container.VERSION),
                              "uq")
    log_gain = math.log(entropy.rate_gain(rate))
    y, z = lat
    loss = refiner.loss_and_gradients(
        m.pad(x), y, z, refiner._noise(y, u_y, math.exp(log_gain)), refiner._noise(z, u_z),
        0.0, log_gain, x.shape[:2])[0]
    return loss * x.shape[0] * x.shape[1]


def test_context_refiner_rates_latents_as_the_coder_codes_them():
    """The context refiner's rate of a file's latents is the coded rate (its float context
    networks and hyper-synthesis against the decoder's exact ones: within a fraction of a
    percent); the hyperprior refiner's (no context) is several percent above it."""
    from uqcodec import refine
    m = codec.load(zoo.resolve(shipped("context")))
    x = load("kodim19_crop.png")
    _, info = m.encode(x, seed=3)
    assert isinstance(m.refiner, refine.ContextRefiner)
    bits = _rate_of_refiner(m.refiner, m, x, 3, info["rate"])
    assert abs(bits / info["rate_bits"] - 1) < 0.01, (bits, info["rate_bits"])
    plain = refine.Refiner(m.family, None, m.rounding.alpha, m.rounding.alpha_r)
    assert _rate_of_refiner(plain, m, x, 3, info["rate"]) > 1.03 * info["rate_bits"]


@pytest.mark.parametrize("quantizer", ["uq", "round"])
def test_context_refinement_lowers_the_files_loss(quantizer):
    """The default codec (context models) refined: a smaller rate + lambda * MSE of the
    real file, decoded by the ordinary decoder (20 steps, the default quality)."""
    name = shipped("context")
    lo, hi = codec.load(zoo.resolve(name)).card["lambda_range"]
    x = load("kodim19_crop.png")
    plain = uqcodec.compress(x, model=name, seed=11, quantizer=quantizer)
    data, info = uqcodec.compress_with_info(x, model=name, seed=11, quantizer=quantizer,
                                            refine=20, reconstruct=True)
    lam = float(np.sqrt(lo * hi))  # a lone variable-rate model: its middle
    before, _ = _file_loss(x, plain, lam)
    after, out = _file_loss(x, data, lam)
    np.testing.assert_array_equal(out, info["reconstruction"])
    assert after < 0.98 * before, (before, after)


@pytest.mark.parametrize("checkerboard", [True, False])
def test_context_networks_gradient_is_their_derivative(checkerboard):
    """``refine.ContextNets``' backward pass is the derivative of its forward one (central
    differences along a random direction of every input, float64 products), with and
    without the checkerboard, on random networks: no TensorFlow needed."""
    from uqcodec.refine import ContextNets
    rng = np.random.default_rng(5)
    H, W, groups, hidden = 6, 5, [3, 5], 8
    weights, a = {}, 0
    for g, n in enumerate(groups):
        ins = n + a + (n + 1 if checkerboard else 0)
        for i, (k, cin, cout) in enumerate([(3, ins, hidden), (1, hidden, hidden),
                                            (1, hidden, 2 * n)]):
            weights[f"context/g{g}_conv{i}/kernel"] = rng.normal(0, 0.3, (k, k, cin, cout))
            weights[f"context/g{g}_conv{i}/bias"] = rng.normal(0, 0.1, cout)
        a += n
    nets = ContextNets(weights, groups, checkerboard, np.float64)
    M = sum(groups)
    mean = rng.normal(0, 2, (H, W, M))
    log_scale = rng.uniform(-1.5, 2.0, (H, W, M))
    y_dec = mean + np.exp(log_scale) * rng.normal(0, 2, (H, W, M))
    wm, wl = rng.normal(size=(H, W, M)), rng.normal(size=(H, W, M))

    def f(m, s, y):
        out_m, out_s, _ = nets(m, s, y)
        return float(np.sum(wm * out_m) + np.sum(wl * out_s))
    g_m, g_s, g_y = nets(mean, log_scale, y_dec)[2](wm, wl)
    d = [rng.normal(size=(H, W, M)) for _ in range(3)]
    eps = 1e-6
    plus = f(mean + eps * d[0], log_scale + eps * d[1], y_dec + eps * d[2])
    minus = f(mean - eps * d[0], log_scale - eps * d[1], y_dec - eps * d[2])
    want = (plus - minus) / (2 * eps)
    got = sum(float(np.sum(g * v)) for g, v in zip((g_m, g_s, g_y), d))
    assert got == pytest.approx(want, rel=1e-6)
    assert np.abs(g_y).sum() > 0  # the corrections depend on the decoded values
