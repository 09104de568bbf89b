"""Files decode on every machine: the exact entropy path (format versions 3 and 4).

Other machines are stood in for by settings that change this machine's float
arithmetic: OpenBLAS kernels of other CPUs (NumPy's matrix products), one BLAS
thread, NumPy's own kernels of older CPUs (no AVX-512; SSE only: other code paths
and results for exp, log, sin, tanh, ...), onnxruntime without graph optimizations
and with one or two threads. Every setting decodes in a fresh process and must give
exactly the encoder's latents and pixels within 1 level of its reconstruction.
"""
import hashlib
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import uqcodec
from uqcodec import codec, container, intnet, zoo
from conftest import ROOT, load, shipped

AVX512 = ("AVX512F", "AVX512CD", "AVX512_KNL", "AVX512_KNM", "AVX512_SKX", "AVX512_CLX",
          "AVX512_CNL", "AVX512_ICL", "AVX512_SPR")
SETTINGS = {
    "same": {},
    "openblas-haswell": {"OPENBLAS_CORETYPE": "Haswell"},
    "openblas-sandybridge": {"OPENBLAS_CORETYPE": "Sandybridge"},
    "openblas-skylakex": {"OPENBLAS_CORETYPE": "SkylakeX"},
    "openblas-1-thread": {"OPENBLAS_NUM_THREADS": "1"},
    # the coding tables from NumPy instead of the compiled kernel (a machine that had no
    # C compiler at install)
    "tables-numpy": {"UQCODEC_PURE_NUMPY": "1"},
    # ... and NumPy's SIMD kernels of an older CPU (the decoder never imports TensorFlow,
    # so TensorFlow's settings change nothing here)
    "numpy-no-avx512": {"NPY_DISABLE_CPU_FEATURES": " ".join(AVX512),
                        "UQCODEC_PURE_NUMPY": "1"},
    "numpy-sse-only": {"NPY_DISABLE_CPU_FEATURES": " ".join(("AVX", "F16C", "FMA3", "AVX2")
                                                            + AVX512),
                       "UQCODEC_PURE_NUMPY": "1"},
    "ort-no-optimization": {"UQCODEC_ORT_NO_OPT": "1"},
    "ort-1-thread": {"UQCODEC_THREADS": "1"},
    "ort-2-threads": {"UQCODEC_THREADS": "2"},
}

DECODE = r"""
import hashlib, json, sys
import numpy as np
import uqcodec
from uqcodec import codec, container, zoo
out = {}
for path in sys.argv[1:]:
    data = open(path, "rb").read()
    header, streams = container.unpack(data)
    c = codec.load(zoo.find_by_name(header.model))
    h = hashlib.sha256()
    for _, y_dec in c.decode_latents(header, streams):
        h.update(np.ascontiguousarray(y_dec, np.float64).tobytes())
    pixels = uqcodec.decompress(data, rgb=True)
    np.save(path + ".npy", pixels)
    out[path] = h.hexdigest()
out["tensorflow"] = any(m.startswith("tensorflow") for m in sys.modules)
print(json.dumps(out))
"""


def _latents_sha(c, data):
    h = hashlib.sha256()
    for _, y_dec in c.decode_latents(*container.unpack(data)):
        h.update(np.ascontiguousarray(y_dec, np.float64).tobytes())
    return h.hexdigest()


GOLDEN_MODELS = os.path.join(ROOT, "tests", "data", "golden", "models")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A models folder (UQCODEC_MODELS, here and in the decoding processes): the shipped
    models, and for every registered family that ships none yet its golden test model
    (tests/data/golden/models), so that every family is covered."""
    from uqcodec import families
    d = tmp_path_factory.mktemp("models")
    shipped_dir = zoo.models_dir()
    for name in os.listdir(shipped_dir):
        os.symlink(os.path.join(shipped_dir, name), d / name)
    have = {c.get("arch") for c in zoo.list_models()}
    extra = []
    for name in sorted(os.listdir(GOLDEN_MODELS)):
        arch = zoo.read_card(os.path.join(GOLDEN_MODELS, name)).get("arch")
        if arch in families.names() and arch not in have:
            os.symlink(os.path.join(GOLDEN_MODELS, name), d / name)
            extra.append(name)
            have.add(arch)
    assert have >= set(families.names())  # every family has a model to test
    old = os.environ.get("UQCODEC_MODELS")
    os.environ["UQCODEC_MODELS"] = str(d)
    yield extra
    if old is None:
        os.environ.pop("UQCODEC_MODELS")
    else:
        os.environ["UQCODEC_MODELS"] = old


@pytest.fixture(scope="module")
def written(tmp_path_factory, models):
    """Files of every family and both quantizers (one with several tiles), with the
    encoder's latents and reconstructions."""
    from uqcodec import families
    tmp = tmp_path_factory.mktemp("portable")
    img = load("kodim05_crop.png")
    files = {}
    hp = shipped("hyperprior")
    jobs = [(hp, "uq", 1024, None), (hp, "round", 1024, None), (hp, "uq", 64, None),
            (shipped("linear"), "uq", 1024, None)]
    # variable-rate models: a low and a high rate parameter (gain below and above 1)
    jobs += [(c["name"], q, 1024, quality) for c in zoo.variable_models()
             if c["name"] not in models for q, quality in (("uq", 1.0), ("round", 9.0))]
    # every other family that ships fixed-rate models: the middle one, both quantizers
    for arch in families.names():
        card = zoo.middle(arch) if arch not in ("hyperprior", "linear") else None
        if card is not None:
            jobs += [(card["name"], q, 1024, None) for q in ("uq", "round")]
    # families that ship no model yet: their golden test models, both quantizers
    # (a variable-rate one at a low quality: the tiny models' scales are wide)
    jobs += [(name, q, 64 if q == "round" else 1024,
              1.0 if zoo.read_card(zoo.find_by_name(name)).get("lambda_range") else None)
             for name in models for q in ("uq", "round")]
    for i, (model, q, tile, quality) in enumerate(jobs):
        data, info = uqcodec.compress_with_info(img, model=model, seed=1000 + i, quantizer=q,
                                                reconstruct=True, tile=tile, quality=quality)
        path = str(tmp / f"f{i}.uq")
        with open(path, "wb") as f:
            f.write(data)
        c = codec.load(zoo.resolve(model))
        files[path] = (_latents_sha(c, data), info["reconstruction"])
    return files


def _runs_here(env):
    """False if this CPU cannot run the setting (e.g. an OpenBLAS kernel for AVX-512)."""
    probe = subprocess.run([sys.executable, "-c", "import numpy as np; a = np.ones((64, 64), "
                            "np.float32); a @ a"], env=env, capture_output=True, timeout=120)
    return probe.returncode != -signal.SIGILL


# NumPy's transcendental functions on a fixed array, as a hash: they take other code
# paths (and give other last bits) under NumPy's kernels of another CPU
NUMPY_MATH = r"""
import hashlib
import numpy as np
x = np.random.default_rng(0).uniform(-20.0, 20.0, 1 << 16)
h = hashlib.sha256()
for t in (x, x.astype(np.float32)):
    for f in (np.exp, np.expm1, np.sin, np.cos, np.tanh, np.arctan):
        h.update(f(t).tobytes())
    h.update(np.log(np.abs(t) + 1).tobytes())
print(h.hexdigest())
"""


def _numpy_math(env):
    r = subprocess.run([sys.executable, "-c", NUMPY_MATH], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.strip()


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_files_decode_exactly_under_other_arithmetic(written, setting):
    env = dict(os.environ, PYTHONPATH=ROOT, **SETTINGS[setting])
    if not _runs_here(env):
        pytest.skip(f"this CPU cannot run {setting}")
    if "NPY_DISABLE_CPU_FEATURES" in SETTINGS[setting] and _numpy_math(env) == _numpy_math(
            dict(os.environ, PYTHONPATH=ROOT)):
        pytest.skip(f"{setting} changes nothing on this CPU (no such NumPy kernels to turn off)")
    run = subprocess.run([sys.executable, "-c", DECODE, *written], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got.pop("tensorflow") is False
    for path, (latents, recon) in written.items():
        assert got[path] == latents, f"{setting}: {os.path.basename(path)} latents differ"
        pixels = np.load(path + ".npy")
        assert np.abs(pixels.astype(int) - recon).max() <= 1


def _accumulate_int64(layer, a):
    """The same layer in int64 arithmetic, summed in another order (taps outermost,
    input channels reversed): an independent implementation of ``Layer.accumulate``."""
    w = layer.w.astype(np.int64)[:, :, ::-1, :]
    a = a.astype(np.int64)[:, :, ::-1]
    H, W, _ = a.shape
    k = layer.k
    if layer.transpose:
        s, pad = 2, (k - 2) // 2
        full = np.zeros(((H - 1) * s + k, (W - 1) * s + k, w.shape[-1]), np.int64)
        for p in reversed(range(k)):
            for q in reversed(range(k)):
                full[p:p + (H - 1) * s + 1:s, q:q + (W - 1) * s + 1:s] += np.tensordot(
                    a, w[p, q], axes=([2], [0]))
        acc = full[pad:pad + H * s, pad:pad + W * s]
    else:
        pad = (k - 1) // 2
        x = np.pad(a, ((pad, k - 1 - pad), (pad, k - 1 - pad), (0, 0)))
        acc = np.zeros((H, W, w.shape[-1]), np.int64)
        for p in reversed(range(k)):
            for q in reversed(range(k)):
                acc += np.tensordot(x[p:p + H, q:q + W], w[p, q], axes=([2], [0]))
    return acc + layer.b.astype(np.int64)


def _round_shift_int64(acc, shift):
    """round(acc / 2^shift) half up in int64 shifts, per channel (the reference of
    intnet's float64 rounding)."""
    shift = np.broadcast_to(np.asarray(shift, np.int64), acc.shape[-1:])
    left, right = np.maximum(-shift, 0), np.maximum(shift, 0)
    half = np.where(right > 0, np.left_shift(np.int64(1), np.maximum(right - 1, 0)), 0)
    return np.right_shift(np.left_shift(acc, left) + half, right)


def test_integer_hyper_synthesis_is_the_same_in_any_summation_order():
    c = codec.load(zoo.resolve(shipped("hyperprior")))
    hs = c.family.latent_codec.hyper_synthesis  # (mean index, scale index) of y
    net, M = hs.net, c.family.M
    img = load("kodim05_crop.png")
    y, z = c.analyze(img)
    rng = np.random.default_rng(0)
    z_hat = np.rint(z) + rng.random(z.shape) - 0.5
    mean_index, scale_index = hs(z_hat)
    # the same network in int64 with another summation order
    a = np.rint(np.ldexp(np.clip(z_hat, net.lo[0], net.hi[0]), intnet.IN_BITS))
    for layer, shift in zip(net.layers, net.shifts):
        acc = _accumulate_int64(layer, a)
        assert np.array_equal(acc, layer.accumulate(a))
        a = np.maximum(_round_shift_int64(acc, shift), 0)
    out = _round_shift_int64(_accumulate_int64(net.last, a), net.last.acc_shift)
    assert np.array_equal(out[..., :M], mean_index)
    assert np.array_equal(np.clip(out[..., M:], 0, 127), scale_index)
    # and the bound that makes float64 sums exact holds with margin
    assert max(layer.acc_bound for layer in net.layers + [net.last]) < 2.0 ** 50


def test_integer_hyper_synthesis_follows_the_float_one():
    """The integer network is a faithful copy: scale indices and snapped means agree with
    the float32 hyper-synthesis almost everywhere and never differ by more than one step."""
    from uqcodec import engine as E
    from uqcodec.onnxgraph import Graph
    name = shipped("hyperprior")
    c = codec.load(zoo.resolve(name))
    w = dict(np.load(os.path.join(zoo.resolve(name), "weights.npz")))
    g = Graph(c.family.N)
    E.deconv(g, w, "hyper_synthesis/deconv0", relu=True)
    E.deconv(g, w, "hyper_synthesis/deconv1", relu=True)
    E.conv(g, w, "hyper_synthesis/conv2", 1)
    float_hs = E.Transform(g, 2 * c.family.M)
    y, z = c.analyze(load("kodim05_crop.png"))
    z_hat = np.rint(z)
    out = float_hs(z_hat).astype(np.float64)
    M = c.family.M
    from uqcodec.constants import LOG_SCALE_MIN, LOG_SCALE_STEP
    scale_f = np.clip(np.rint((out[..., M:] - LOG_SCALE_MIN) / LOG_SCALE_STEP), 0, 127)
    mean_f = np.rint(out[..., :M] * 64)
    mean_i, scale_i = c.family.latent_codec.hyper_synthesis(z_hat)
    assert np.abs(scale_f - scale_i).max() <= 1 and np.mean(scale_f == scale_i) > 0.99
    assert np.abs(mean_f - mean_i).max() <= 1 and np.mean(mean_f == mean_i) > 0.99


CLI_WITHOUT_TF = r"""
import sys
from uqcodec import cli
for args in (["compress", sys.argv[1], "-o", sys.argv[2]], ["decompress", sys.argv[2], "-o",
             sys.argv[3]], ["info", sys.argv[2]], ["models"]):
    try:
        cli.main(args, standalone_mode=False)
    except SystemExit as e:
        assert not e.code, e.code
print("TF", any(m.startswith("tensorflow") for m in sys.modules))
"""


def test_cli_and_api_run_without_tensorflow(tmp_path):
    run = subprocess.run([sys.executable, "-c", CLI_WITHOUT_TF,
                          os.path.join(ROOT, "examples", "sample.png"), str(tmp_path / "s.uq"),
                          str(tmp_path / "s.png")], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "TF False"
    assert (tmp_path / "s.png").exists()
