"""The context family (channel groups + checkerboard, exact integer context networks):
what the encoder codes the decoder rebuilds bit for bit, on any float arithmetic; the
file size is the model's rate; with zero corrections it is the hyperprior it grew from."""
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import uqcodec
from uqcodec import codec, container, latent_codecs as LC
from conftest import DATA, ROOT, load

TINY = os.path.join(DATA, "golden", "models", "context-vr-tiny")  # raw inputs (0.14)
RESIDUAL = os.path.join(DATA, "golden", "models", "context-res-tiny")  # residual inputs (0.15)
BOTH = pytest.mark.parametrize("tiny", [TINY, RESIDUAL], ids=["raw", "residual"])
BASE = os.path.join(DATA, "golden", "models", "hyperprior-vr-tiny")


def latents_sha(c, data):
    h = hashlib.sha256()
    for _, y_dec in c.decode_latents(*container.unpack(data)):
        h.update(np.ascontiguousarray(y_dec, np.float64).tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("quantizer", ["uq", "round"])
@pytest.mark.parametrize("quality", [0, 7])
@BOTH
def test_decoder_rebuilds_the_encoder(quantizer, quality, tiny):
    x = load("kodim15_odd.png")
    data, info = uqcodec.compress_with_info(x, model=tiny, seed=5, quantizer=quantizer,
                                            quality=quality, reconstruct=True)
    np.testing.assert_array_equal(uqcodec.decompress(data, model=tiny), info["reconstruction"])
    assert 8 * len(data) <= 1.01 * info["rate_bits"] + 8 * 100 + 96
    assert container.parse_header(data)[0].rate == info["rate"]


def _variant(src, dst, arch, zero_context):
    """A copy of model ``src`` as family ``arch`` (same weights; the context networks'
    corrections zeroed, or dropped for a hyperprior)."""
    dst.mkdir()
    w = dict(np.load(os.path.join(src, "weights.npz")))
    for k in list(w):
        if k.startswith("context/") and (arch != "context" or (zero_context and "conv2" in k)):
            if arch != "context":
                del w[k]
            else:
                w[k] = np.zeros_like(w[k])
    np.savez(dst / "weights.npz", **w)
    card = json.load(open(os.path.join(src, "model.json")))
    card.update(arch=arch, name=dst.name)
    (dst / "model.json").write_text(json.dumps(card))
    (dst / "tables.npz").write_bytes(open(os.path.join(src, "tables.npz"), "rb").read())
    return str(dst)


@BOTH
def test_zero_context_is_the_hyperprior_and_the_context_changes_the_parameters(tmp_path,
                                                                            monkeypatch, tiny):
    """With its corrections zeroed the context model codes the symbols of the hyperprior
    with the same weights (same size up to the coder's last words, same decoded latents:
    universal quantization does not depend on the parameters); the trained context nets
    change the parameters, so the file changes and the latents do not."""
    from uqcodec import entropy
    monkeypatch.setattr(entropy.GaussianCoder, "work_budget", None)  # (a tiny toy model)
    x = load("kodim05_crop.png")
    zero = _variant(tiny, tmp_path / "zero", "context", True)
    hyper = _variant(tiny, tmp_path / "hyper", "hyperprior", False)
    files = {m: uqcodec.compress(x, model=m, seed=9, quality=2) for m in (tiny, zero, hyper)}
    streams = {m: container.unpack(d)[1] for m, d in files.items()}
    assert streams[zero][0] == streams[hyper][0]  # z: the same stream
    assert abs(len(streams[zero][1]) - len(streams[hyper][1])) <= 8  # y: the same symbols
    # the same escaped symbols (in another order: the coding orders differ)
    assert sorted(streams[zero][2]) == sorted(streams[hyper][2])
    lat = {m: latents_sha(codec.load(m), d) for m, d in files.items()}
    assert lat[zero] == lat[hyper] == lat[tiny]
    assert streams[tiny][1] != streams[zero][1]


def test_coding_order_is_groups_then_halves():
    parts = list(LC.ContextLatentCodec._parts(
        type("C", (), {"groups": [2, 3], "checkerboard": True})(), (3, 4, 5)))
    assert [(g, s.start, s.stop, second) for g, s, _, second in parts] == [
        (0, 0, 2, False), (0, 0, 2, True), (1, 2, 5, False), (1, 2, 5, True)]
    anchors = parts[0][2]
    assert anchors[0, 0] and not anchors[0, 1] and anchors[1, 1] and anchors.sum() == 6


SCRIPT = r"""
import hashlib, sys, numpy as np
from uqcodec import codec, container
c = codec.load(sys.argv[1])
h = hashlib.sha256()
for _, y in c.decode_latents(*container.unpack(open(sys.argv[2], "rb").read())):
    h.update(np.ascontiguousarray(y, np.float64).tobytes())
print(h.hexdigest())
"""


@pytest.mark.parametrize("env", [
    {"UQCODEC_THREADS": "1"},
    {"UQCODEC_THREADS": "2", "UQCODEC_ORT_NO_OPT": "1"},
    {"NPY_DISABLE_CPU_FEATURES": "AVX512F,AVX512CD,AVX512_SKX,AVX512_CLX,AVX512_CNL,"
                                 "AVX512_ICL,AVX2,FMA3", "OPENBLAS_CORETYPE": "Haswell"},
], ids=["one-thread", "ort-unoptimized", "no-avx512"])
@BOTH
def test_same_latents_on_other_arithmetic(env, tmp_path, tiny):
    x = load("kodim05_crop.png")
    data = uqcodec.compress(x, model=tiny, seed=21, quality=4, tile=64)
    f = tmp_path / "a.uq"
    f.write_bytes(data)
    want = latents_sha(codec.load(tiny), data)
    e = dict(os.environ, **env)
    r = subprocess.run([sys.executable, "-c", SCRIPT, tiny, str(f)], capture_output=True,
                       text=True, env=e, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == want


def test_card_declares_the_context():
    card = json.load(open(os.path.join(TINY, "model.json")))
    assert card["arch"] == "context" and card["groups"] == [4, 8, 12] and card["checkerboard"]
    assert "context_inputs" not in card  # 0.14: raw inputs
    res = json.load(open(os.path.join(RESIDUAL, "model.json")))
    assert res["context_inputs"] == "residual" and sum(res["groups"]) == res["M"]
    # the field decides decoding: it is in the fingerprint
    assert codec.coding_card(res)["context_inputs"] == "residual"


def test_corrections_add_to_the_hyper_scale_beyond_the_grid(tmp_path, crop):
    """Training adds a group's log-scale correction to the hyper-synthesis' log-scale
    bounded below only, so a trained model may put the hyper scales far above the grid
    and take them back in the context networks (a 4-hour run did). The codec must add the
    corrections to the unclipped index too: a model whose hyper log-scales are raised by
    128 grid steps (all beyond the grid) and whose corrections take them off again codes what the model without
    the shift codes (clipping first made a trained model's files 1.7x its rate)."""
    from uqcodec import constants as K, quantization as Q, entropy
    card = json.load(open(os.path.join(TINY, "model.json")))
    groups, M = card["groups"], card["M"]
    shift = 128 * K.LOG_SCALE_STEP
    bits = []
    for name, raise_hyper in (("plain", False), ("raised", True)):
        d = tmp_path / name
        d.mkdir()
        w = {k: v.astype(np.float32) for k, v in np.load(os.path.join(TINY, "weights.npz")).items()}
        for g, n in enumerate(groups):  # the networks ignore the hyper log-scale input
            w[f"context/g{g}_conv0/kernel"][:, :, n:2 * n, :] = 0.0
            if raise_hyper:
                w[f"context/g{g}_conv2/bias"][n:] -= shift / K.CONTEXT_OUT_SCALE
        if raise_hyper:
            w["hyper_synthesis/conv2/bias"][M:] += shift
        np.savez(d / "weights.npz", **w)
        (d / "model.json").write_text(json.dumps(dict(card, name=name)))
        (d / "tables.npz").write_bytes(open(os.path.join(TINY, "tables.npz"), "rb").read())
        c = codec.Codec(str(d))
        lat = c.analyze(crop[:64, :96])
        if raise_hyper:  # the shift really leaves the grid
            _, scale = c.family.latent_codec._hyper_params(
                c.family.latent_codec.hyper.z_codec.encode(
                    (lat[1],), Q.Dither(3, 0, 4), "uq", entropy.EscapeWriter())[2])
            assert scale.min() >= K.SCALE_LEVELS
        _, b, _ = c.family.encode(lat, Q.Dither(3, 0, 4), "uq", entropy.EscapeWriter(),
                                  c.rate_at_lambda(0.01))
        bits.append(b)
    assert abs(bits[1] - bits[0]) <= 0.01 * bits[0], bits


def _random_context(base, dst, inputs, magnitude, seed=3, hidden=32):
    """Model ``base`` (a shipped mean & scale hyperprior) with context networks of random
    weights added (uneven groups, checkerboard): a context model whose corrections are
    far from zero, as no test-sized training run makes them."""
    from uqcodec.training.context import default_groups
    card = json.load(open(os.path.join(base, "model.json")))
    M = card["M"]
    groups = default_groups(M)
    w = dict(np.load(os.path.join(base, "weights.npz")))
    rng = np.random.default_rng(seed)
    a = 0
    for g, n in enumerate(groups):
        cin = n + a + n + 1 + (0 if inputs == "residual" else n)
        for i, (k, ci, co) in enumerate(((3, cin, hidden), (1, hidden, hidden),
                                         (1, hidden, 2 * n))):
            scale = magnitude if i == 2 else 1.0 / np.sqrt(k * k * ci)
            w[f"context/g{g}_conv{i}/kernel"] = (rng.standard_normal((k, k, ci, co))
                                                  * scale).astype(np.float32)
            w[f"context/g{g}_conv{i}/bias"] = np.zeros(co, np.float32)
        a += n
    dst.mkdir()
    np.savez(dst / "weights.npz", **w)
    card.update(arch="context", name=dst.name, groups=groups, checkerboard=True,
                context_hidden=hidden)
    if inputs == "residual":
        card["context_inputs"] = "residual"
    (dst / "model.json").write_text(json.dumps(card))
    (dst / "tables.npz").write_bytes(open(os.path.join(base, "tables.npz"), "rb").read())
    return str(dst)


def _tf_rate(c, path, x, rate, seed):
    """The TensorFlow training model's rate (bits of y and z) of image ``x`` on the codec's
    latents and with the dither of a file with this seed (one tile)."""
    import math
    from uqcodec import entropy, quantization as Q
    from uqcodec.training import _tf
    from uqcodec.training.model import CompressionModel
    tf, tfc = _tf.load()
    gain = entropy.rate_gain(rate)
    y, z = c.analyze(x)
    u_y, u_z = c.family.latent_codec.noise((y.shape, z.shape),
                                           Q.Dither(seed, 0, container.VERSION), "uq")
    model = CompressionModel(c.card)
    model.load_weights_npz(os.path.join(path, "weights.npz"))
    a, ar = c.rounding.alpha, c.rounding.alpha_r
    s = lambda t: tfc.ops.soft_round(t, a)  # noqa: E731  (sr models)
    yt, zt = (tf.constant(v[None], tf.float32) for v in (y, z))
    uy, uz = (tf.constant(v[None], tf.float32) for v in (u_y, u_z))
    noise = (tf.round(s(yt * gain) - uy) + uy - s(yt * gain), tf.round(s(zt) - uz) + uz - s(zt))
    _, by, bz = model.relaxed(yt, zt, a, ar, noise=noise, log_gain=tf.constant(math.log(gain)))
    return float(by + bz)


@pytest.mark.parametrize("inputs", ["raw", "residual"])
def test_the_codec_codes_at_the_training_models_rate(tmp_path, inputs):
    """The exact integer context networks compute what training's float networks do: on
    the same latents and dither, the TensorFlow model's rate of a context model on a
    shipped hyperprior whose networks make large corrections (random weights) is the
    codec's coded rate within 1 %, while the corrections change that rate by far more."""
    pytest.importorskip("tensorflow_compression")
    base = os.path.join(ROOT, "models", "hyperprior8-sr-lo")
    if not os.path.isdir(base):
        pytest.skip("hyperprior8-sr-lo is not in models/")
    x = load("kodim05_crop.png")
    got = {}
    # large corrections, but not so large that the grids (the snapped mean and scale the
    # codec's networks see where training's see floats) make a random network differ
    for name, mag in (("zero", 0.0), ("strong", 0.003 if inputs == "raw" else 0.001)):
        path = _random_context(base, tmp_path / name, inputs, mag)
        c = codec.Codec(path)
        rate = c.family.rate_at(0.3)
        _, info = c.encode(x, 7, rate=rate)
        tf_bits = _tf_rate(c, path, x, rate, 7)
        got[name] = info["rate_bits"]
        assert abs(info["rate_bits"] - tf_bits) <= 0.01 * tf_bits, (name, info["rate_bits"],
                                                                     tf_bits)
    assert abs(got["strong"] - got["zero"]) > 0.03 * got["zero"], got


def test_a_network_at_some_positions_is_the_whole_network_there():
    """The codec evaluates a context network only where a part's elements are (half the
    positions with the checkerboard): the same integers as the whole map at them."""
    from uqcodec import intnet
    rng = np.random.default_rng(0)
    layers = [(rng.standard_normal((3, 3, 5, 7)), rng.standard_normal(7), False),
              (rng.standard_normal((1, 1, 7, 6)), rng.standard_normal(6), False),
              (rng.standard_normal((1, 1, 6, 4)), rng.standard_normal(4), False)]
    net = intnet.IntNet([(np.full(5, -3.0), np.full(5, 3.0))], layers)
    x = rng.uniform(-4, 4, (9, 11, 5))
    for pos in (LC.anchors(9, 11), ~LC.anchors(9, 11), np.ones((9, 11), bool)):
        np.testing.assert_array_equal(net.at(pos, x), net(x)[pos])
    # even widths take the checkerboard's strided path; inputs split between the whole
    # map's first-layer products (``first_layer``, shared by a group's halves) and the
    # part's own, or left out as zeros: the same integers
    two = intnet.IntNet([(np.full(3, -3.0), np.full(3, 3.0)), (np.full(2, 0.0), np.full(2, 2.0))],
                        layers)
    a, b = rng.uniform(-4, 4, (8, 10, 3)), rng.uniform(-1, 3, (8, 10, 2))
    for pos in (LC.anchors(8, 10), ~LC.anchors(8, 10)):
        whole = two(a, b)[pos]
        np.testing.assert_array_equal(two.at(pos, a, b), whole)
        np.testing.assert_array_equal(two.at(pos, None, b, partial=two.first_layer(a, None)),
                                      whole)
        np.testing.assert_array_equal(two.at(pos, None, None, partial=two.first_layer(a, b)),
                                      whole)
        np.testing.assert_array_equal(two.at(pos, a, None), two(a, np.zeros_like(b))[pos])
