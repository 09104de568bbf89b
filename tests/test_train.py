"""Training smoke tests (a few steps on tiny crops), resume, export, and coding with the result."""
import json
import os

import numpy as np
import pytest

import uqcodec
from conftest import DATA, load

SMALL = {"linear": {"M": 24}, "hyperprior": {"N": 16, "M": 24}}


@pytest.mark.parametrize("arch", ["linear", "hyperprior"])
@pytest.mark.parametrize("mode", ["un", "sr"])
def test_train_resume_export_code(tmp_path, arch, mode):
    from uqcodec.training import train
    from uqcodec.training.export import export_model
    run = str(tmp_path / "run")
    kw = dict(data=DATA, patch=64, batch=2, lr=1e-3, warmup=2, progress=False, bf16=False,
              model_args=SMALL[arch], export=False, log_every=1000)
    train.train(arch, mode, 0.01, run, steps=2, **kw)
    with open(os.path.join(run, "train.json")) as f:
        assert json.load(f)["steps"] == 2
    train.train(arch, mode, 0.01, run, steps=4, resume=True, **kw)
    with open(os.path.join(run, "train.json")) as f:
        state = json.load(f)
    assert state["steps"] == 4
    if mode == "sr":
        assert state["alpha"] > 1.0
    out = str(tmp_path / f"{arch}-{mode}")
    card = export_model(run, out, measure=False)
    assert card["arch"] == arch and card["training"] == mode and card["steps"] == 4
    x = load("kodim15_odd.png")
    for q in ("uq", "round"):
        data, info = uqcodec.compress_with_info(x, model=out, seed=4, quantizer=q,
                                                reconstruct=True)
        np.testing.assert_array_equal(uqcodec.decompress(data, model=out), info["reconstruction"])
        # exact coding distributions: the file size is the model's rate
        assert 8 * len(data) <= 1.01 * info["rate_bits"] + 8 * 100 + 96


def test_warm_start(tmp_path):
    from uqcodec.training import train
    from uqcodec.training.export import export_model
    kw = dict(data=DATA, patch=64, batch=2, progress=False, bf16=False, export=False,
              log_every=1000)
    train.train("linear", "un", 0.01, str(tmp_path / "a"), steps=2, model_args={"M": 24}, **kw)
    export_model(str(tmp_path / "a"), str(tmp_path / "A"), measure=False)
    state = train.train("linear", "sr", 0.02, str(tmp_path / "b"), steps=2,
                        init_from=str(tmp_path / "A"), seed=5, **kw)
    assert state["M"] == 24 and state["init_from"].endswith("A")
    # the warm start goes on in the data stream after its base's 2 steps (new image
    # scales, crops, lambdas and noise) instead of replaying them
    assert (state["seed"], state["init_steps"], state["data_stream"]) == (5, 2, 7)
    # resumed without --init-from, the run still counts its warm start
    state = train.train("linear", "sr", 0.02, str(tmp_path / "b"), steps=3, resume=True,
                        seed=5, **kw)
    assert (state["steps"], state["init_steps"], state["data_stream"]) == (3, 2, 7)
    assert state["init_from"].endswith("A")
    card = export_model(str(tmp_path / "b"), str(tmp_path / "B"), measure=False)
    assert card["steps"] == 5


def test_new_model_size_and_resume_keeps_the_run_size(tmp_path):
    """A new hyperprior gets the fast recipe's size (N=64, M=128, latent gain 16); a
    resumed run keeps its own size without being told."""
    from uqcodec.training import train
    kw = dict(data=DATA, patch=64, batch=2, progress=False, bf16=False, export=False,
              log_every=1000)
    run = str(tmp_path / "r")
    train.train("hyperprior", "un", 0.01, run, steps=1,
                model_args={"N": 16, "M": 24, "latent_gain": 4.0}, **kw)
    state = train.train("hyperprior", "un", 0.01, run, steps=2, resume=True, **kw)
    assert (state["N"], state["M"], state["latent_gain"], state["steps"]) == (16, 24, 4.0, 2)
    state = train.train("hyperprior", "un", 0.01, str(tmp_path / "new"), steps=1, **kw)
    assert (state["N"], state["M"], state["latent_gain"]) == (64, 128, 16.0)


def test_low_variance_gradient_is_the_expected_gradient():
    """Soft rounding: same values with and without the low-variance gradient, and its
    gradient equals the average of the plain gradient over the noise (Monte Carlo)."""
    from uqcodec.training import _tf, priors
    from uqcodec.training.model import noisy_latent
    tf, _ = _tf.load()
    y0 = np.array([-1.3, -0.45, 0.1, 0.5, 0.8, 2.2], np.float64)
    mean, scale, alpha = 0.3, 1.7, tf.constant(3.0, tf.float64)

    def prob(lo, hi):
        return priors.gaussian_bin_prob(lo, hi, tf.constant(mean, tf.float64),
                                        tf.constant(scale, tf.float64))

    def grad(low_variance, reps, seed):
        y = tf.Variable(np.tile(y0, (reps, 1)))
        tf.random.set_seed(seed)
        with tf.GradientTape() as tape:
            dec, bits = noisy_latent(y, prob, alpha, low_variance=low_variance)
            loss = bits + tf.reduce_sum(dec)
        return dec.numpy(), bits.numpy(), tape.gradient(loss, y).numpy().mean(axis=0)

    dec_a, bits_a, g_low = grad(True, 1, 7)
    dec_b, bits_b, _ = grad(False, 1, 7)
    np.testing.assert_allclose(dec_a, dec_b, atol=1e-12)
    np.testing.assert_allclose(bits_a, bits_b, rtol=1e-12)
    _, _, g_mc = grad(False, 200_000, 1)
    np.testing.assert_allclose(g_low, g_mc, rtol=0.03, atol=0.02)


def test_latent_gain_scales_the_latents_only():
    """config latent_gain G: analysis output x G, synthesis input / G, same weights."""
    from uqcodec.training import _tf
    from uqcodec.training.model import CompressionModel
    tf, _ = _tf.load()
    base = CompressionModel({"arch": "hyperprior", "N": 16, "M": 24})
    gained = CompressionModel({"arch": "hyperprior", "N": 16, "M": 24, "latent_gain": 4.0})
    gained.load_weights_npz(base.weights_npz(half=False))
    x = tf.constant(load("kodim05_crop.png")[None, :64, :64].astype(np.float32) / 255.0)
    y = base.analysis(x).numpy()
    assert np.abs(y).max() > 0
    np.testing.assert_allclose(gained.analysis(x).numpy(), 4.0 * y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gained.synthesis(tf.constant(4.0 * y)).numpy(),
                               base.synthesis(tf.constant(y)).numpy(), rtol=1e-4, atol=1e-5)


def test_widened_model_computes_what_the_small_one_did(tmp_path, crop):
    """Warm start into a larger hyperprior: the old latents, their means and scales and
    the reconstruction are unchanged, the new latents start near zero, and training
    and coding work on the grown model."""
    import tensorflow as tf
    from uqcodec.training import train
    from uqcodec.training.export import export_model
    from uqcodec.training.model import CompressionModel
    from uqcodec.training.widen import NEW_STD, widen
    kw = dict(data=DATA, patch=64, batch=2, progress=False, bf16=False, export=False,
              log_every=1000)
    train.train("hyperprior", "un", 0.01, str(tmp_path / "a"), steps=3,
                model_args={"N": 16, "M": 24, "latent_gain": 4.0}, **kw)
    small_dir = str(tmp_path / "A")
    export_model(str(tmp_path / "a"), small_dir, measure=False)
    small = CompressionModel({"arch": "hyperprior", "N": 16, "M": 24, "latent_gain": 4.0})
    small.load_weights_npz(small_dir + "/weights.npz")
    big = CompressionModel({"arch": "hyperprior", "N": 24, "M": 40, "latent_gain": 4.0})
    x = tf.constant(crop[None, :128, :128].astype("float32") / 255.0)
    widen(small, big, x)
    y0, y1 = small.analysis(x), big.analysis(x)
    np.testing.assert_allclose(y1[..., :24], y0, atol=1e-4)
    assert 0 < float(tf.math.reduce_std(y1[..., 24:])) < 2 * NEW_STD
    z = tf.round(small.hyper_analysis(y0))
    m0, s0 = small.hyper_synthesis.mean_log_scale(z)
    m1, s1 = big.hyper_synthesis.mean_log_scale(
        tf.concat([z, tf.zeros(z.shape[:-1] + (8,))], -1))
    np.testing.assert_allclose(m1[..., :24], m0, atol=1e-4)
    np.testing.assert_allclose(s1[..., :24], s0, atol=1e-4)
    yq = tf.round(y0)
    np.testing.assert_allclose(big.synthesis(tf.concat([yq, tf.zeros(yq.shape[:-1] + (16,))], -1)),
                               small.synthesis(yq), atol=1e-4)
    state = train.train("hyperprior", "sr", 0.01, str(tmp_path / "b"), steps=2,
                        init_from=small_dir, model_args={"N": 24, "M": 40}, **kw)
    assert (state["N"], state["M"], state["latent_gain"]) == (24, 40, 4.0)
    out = str(tmp_path / "B")
    export_model(str(tmp_path / "b"), out, measure=False)
    data, info = uqcodec.compress_with_info(crop, model=out, seed=3, reconstruct=True)
    np.testing.assert_array_equal(uqcodec.decompress(data, model=out), info["reconstruction"])
    with pytest.raises(ValueError, match="can only grow"):
        train.train("hyperprior", "un", 0.01, str(tmp_path / "c"), steps=1, init_from=small_dir,
                    model_args={"N": 8}, **kw)
