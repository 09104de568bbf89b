"""Training smoke tests (a few steps on tiny crops), resume, export, and coding with the result."""
import json
import os
import shutil

import numpy as np
import pytest

import uqcodec
from conftest import DATA, load

SMALL = {"linear": {"M": 24}, "hyperprior": {"N": 16, "M": 24}}
ADAM_STEPS = "opt/_iterations/.ATTRIBUTES/VARIABLE_VALUE"  # in a run's checkpoint
ADAM_BETA2 = 0.999  # Keras' default, which training uses


def _weights(run):
    with np.load(os.path.join(run, "weights.npz")) as f:
        return {k: f[k] for k in f.files}


def _checkpoint(run):
    """{name: value} of the latest checkpoint of a training run."""
    from uqcodec.training import _tf
    tf, _ = _tf.load()
    reader = tf.train.load_checkpoint(os.path.join(run, "ckpt"))
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()}


def _adam_moments(ckpt):
    """Adam's second moments in a checkpoint: the optimizer keeps, per weight, the first
    moment then the second (slots 1, 2 for the first weight, 3, 4 for the next, ...)."""
    v = {k: a for k, a in ckpt.items()
         if k.startswith("opt/_variables/") and int(k.split("/")[2]) % 2 == 0}
    assert all(np.all(a >= 0) for a in v.values())  # second moments
    return v


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
    w2, ckpt2 = _weights(run), _checkpoint(run)
    assert int(ckpt2[ADAM_STEPS]) == 2
    # a resume that takes no step writes back exactly the checkpoint's weights (a fresh
    # start from the same seed would write the initial ones, two Adam steps away), and
    # its checkpoint keeps the optimizer's state
    again = str(tmp_path / "again")
    shutil.copytree(run, again)
    assert train.train(arch, mode, 0.01, again, steps=2, resume=True, **kw)["steps"] == 2
    w = _weights(again)
    assert w.keys() == w2.keys() and all(np.array_equal(w[k], w2[k]) for k in w2)
    assert _adam_moments(_checkpoint(again)).keys() == _adam_moments(ckpt2).keys()
    train.train(arch, mode, 0.01, run, steps=4, resume=True, **kw)
    with open(os.path.join(run, "train.json")) as f:
        state = json.load(f)
    assert state["steps"] == 4
    # the optimizer went on from its saved state: 4 Adam steps, not 2 of a new optimizer,
    # and second moments v4 = b2^2 v2 + (1 - b2)(b2 g3^2 + g4^2) >= b2^2 v2 for every
    # weight (new moments would be (1 - b2)(b2 g3^2 + g4^2) alone, below that wherever
    # this step's gradients are smaller than the first two steps')
    ckpt4 = _checkpoint(run)
    assert int(ckpt4[ADAM_STEPS]) == 4
    v2, v4 = _adam_moments(ckpt2), _adam_moments(ckpt4)
    assert v2.keys() == v4.keys() and sum(float(v.sum()) for v in v2.values()) > 0
    for k in v2:
        assert np.all(v4[k] >= ADAM_BETA2 ** 2 * v2[k] * (1 - 1e-6)), k
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


def test_export_measures_the_model_on_kodak(tmp_path):
    """export_model(..., measure=True, kodak=DIR) fills the card's Kodak numbers: the mean
    bpp (real files, header included; image i coded with dither seed 1 + i) and PSNR over
    the images of DIR."""
    from PIL import Image

    from uqcodec.metrics import psnr
    from uqcodec.training import train
    from uqcodec.training.export import export_model
    kodak = tmp_path / "kodak"
    kodak.mkdir()
    images = [load("kodim05_crop.png"), load("kodim15_odd.png")]
    for i, x in enumerate(images):
        Image.fromarray(x).save(kodak / f"kodim{i + 1:02d}.png")
    run, out = str(tmp_path / "run"), str(tmp_path / "model")
    train.train("linear", "un", 0.01, run, steps=1, data=DATA, patch=64, batch=2,
                progress=False, bf16=False, model_args={"M": 24}, export=False,
                log_every=1000)
    card = export_model(run, out, measure=True, kodak=str(kodak))
    bpp, db = [], []
    for i, x in enumerate(images):
        data = uqcodec.compress(x, model=out, seed=1 + i)
        bpp.append(8 * len(data) / (x.shape[0] * x.shape[1]))
        db.append(psnr(x, uqcodec.decompress(data, model=out)))
    assert card["kodak_images"] == 2
    assert card["kodak_bpp"] == round(float(np.mean(bpp)), 4)
    assert card["kodak_psnr"] == round(float(np.mean(db)), 3)
    assert uqcodec.zoo.read_card(out)["kodak_bpp"] == card["kodak_bpp"]  # in the card
    # without measure (or without the folder), the card says "not measured"
    assert export_model(run, str(tmp_path / "m2"), measure=False)["kodak_bpp"] is None


def test_time_budget_and_periodic_checkpoints(tmp_path):
    """--minutes: the run stops at its wall-time budget, long before its steps, and its
    schedules follow the time (the learning rate has decayed to about 1/100 at the end,
    where the step count is still in the warm-up of a million steps); ckpt_minutes:
    checkpoints are written during the run, not only at its end."""
    from uqcodec.training import _tf, train
    tf, _ = _tf.load()
    run, budget, lr = str(tmp_path / "run"), 0.15, 1e-3
    state = train.train("linear", "un", 0.01, run, steps=10 ** 6, minutes=budget,
                        ckpt_minutes=0.02, data=DATA, patch=64, batch=2, lr=lr, warmup=2,
                        progress=False, bf16=False, model_args={"M": 24}, export=False,
                        log_every=10 ** 6)
    assert 1 < state["steps"] < 10 ** 6 and state["minutes"] == budget
    assert 60 * budget <= state["wall_seconds"] < 60 * budget + 15, state["wall_seconds"]
    ckpt = _checkpoint(run)
    assert int(ckpt["step/.ATTRIBUTES/VARIABLE_VALUE"]) == state["steps"]
    assert float(ckpt["opt/_learning_rate/.ATTRIBUTES/VARIABLE_VALUE"]) < 0.05 * lr
    # the checkpoint manager numbers its saves: before the final save (the last number)
    # came periodic ones, every 1.2 s; the older of the two it keeps is from mid-run
    saved = tf.train.get_checkpoint_state(os.path.join(run, "ckpt")).all_model_checkpoint_paths
    assert len(saved) == 2 and int(saved[-1].rsplit("-", 1)[1]) >= 3, list(saved)
    older = tf.train.load_checkpoint(saved[0]).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")
    assert 0 < int(older) < state["steps"]


def test_a_paused_run_keeps_its_time_budget(tmp_path):
    """A training process stopped mid-run (SIGSTOP: a benchmark needed the CPU, the machine
    slept) does not spend --minutes on the pause: it trains on after SIGCONT until it has
    trained for its budget. (The pause threshold is lowered from a minute to 2 s here.)"""
    import signal
    import subprocess
    import sys
    import time
    run, budget, pause = tmp_path / "run", 0.12, 8.0
    code = ("import sys; from uqcodec.training import train; train.PAUSE_SECONDS = 2.0; "
            "train.train('linear', 'un', 0.01, sys.argv[1], steps=10 ** 6, minutes=%r, "
            "data=sys.argv[2], patch=64, batch=2, lr=1e-3, warmup=2, progress=False, "
            "bf16=False, model_args={'M': 24}, export=False, log_every=1)" % budget)
    p = subprocess.Popen([sys.executable, "-c", code, str(run), DATA], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    try:
        steps_seen = 0
        for line in p.stdout:  # a few steps after the first (tracing) one
            steps_seen += line.startswith("step ")
            if steps_seen == 5:
                break
        p.send_signal(signal.SIGSTOP)
        time.sleep(pause)
        p.send_signal(signal.SIGCONT)
        lines = p.stdout.read().splitlines()
        assert p.wait(timeout=120) == 0
    finally:
        if p.poll() is None:
            p.kill()
    state = json.loads((run / "train.json").read_text())
    assert 60 * budget <= state["wall_seconds"] < 60 * budget + 5, state["wall_seconds"]
    # it trained on after the pause (counted, the pause alone would have ended the run)
    assert sum(line.startswith("step ") for line in lines) > 5


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


def test_resume_from_carried_weights_continues_the_schedule(tmp_path, capfd):
    """A run carried to another machine as its weights.npz and train.json (the committed
    resume point, no optimizer state) goes on at its step with its schedule and config,
    starting from exactly those weights."""
    import shutil
    from uqcodec.training import train
    kw = dict(data=DATA, patch=64, batch=2, lr=1e-3, warmup=2, progress=False, bf16=False,
              export=False, log_every=1000)
    run, carried = tmp_path / "run", tmp_path / "carried"
    train.train("hyperprior", "sr", (0.001, 0.1), str(run), steps=3,
                model_args={"N": 16, "M": 24}, **kw)
    carried.mkdir()
    for f in ("weights.npz", "train.json"):
        shutil.copy(run / f, carried / f)
    before = dict(np.load(carried / "weights.npz"))
    # no step to take: the weights written back are the carried ones, bit for bit
    state = train.train("hyperprior", "sr", (0.001, 0.1), str(carried), steps=3, resume=True,
                        **kw)
    assert state["steps"] == 3 and state["N"] == 16 and state["M"] == 24
    after = dict(np.load(carried / "weights.npz"))
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert "from its weights" in capfd.readouterr().err
    state = train.train("hyperprior", "sr", (0.001, 0.1), str(carried), steps=5, resume=True,
                        **kw)
    assert state["steps"] == 5 and state["lambda_range"] == [0.001, 0.1]
    moved = dict(np.load(carried / "weights.npz"))
    assert any(not np.array_equal(before[k], moved[k]) for k in before)


def test_factorized_from_a_variable_rate_hyperprior_with_fresh_lr(tmp_path):
    """A fixed-rate factorized model warm-started from a variable-rate hyperprior: the
    transforms come from the base, the prior starts fresh and learns at --fresh-lr x the
    rate (its own Adam), the base's lambda range and gains are dropped (a fixed-rate
    model), and a resumed run keeps the multiplier."""
    from uqcodec.training import train
    base = os.path.join(DATA, "golden", "models", "hyperprior-vr-tiny")
    kw = dict(data=DATA, patch=64, batch=2, warmup=1, progress=False, bf16=False,
              export=False, log_every=1000)
    runs = {}
    for fresh in (1.0, 100.0):  # the same steps; only the prior's learning rate differs
        run = tmp_path / f"f{fresh:g}"
        state = train.train("factorized", "sr", 0.01, str(run), steps=3, lr=1e-9,
                            init_from=base, fresh_lr=fresh, **kw)
        assert state["fresh_parts"] == ["prior"] and state["fresh_lr"] == fresh
        assert "lambda_range" not in state["config"] or not state["config"]["lambda_range"]
        runs[fresh] = dict(np.load(run / "weights.npz"))
    w0 = dict(np.load(os.path.join(base, "weights.npz")))
    for k, v in runs[100.0].items():
        if k.startswith("analysis/"):  # lr 1e-9: the base's transforms, as loaded
            assert np.allclose(v, w0[k].astype(np.float32), atol=1e-6), k
    assert not any(k.startswith(("rate/", "hyper")) for k in runs[100.0])
    moved = {k: np.abs(runs[100.0][k] - runs[1.0][k]).max() for k in runs[1.0]
             if k.startswith("prior/")}
    assert max(moved.values()) > 1e-8  # the prior moved 100x the base learning rate
    state = train.train("factorized", "sr", 0.01, str(tmp_path / "f100"), steps=4, lr=1e-9,
                        resume=True, **kw)
    assert state["steps"] == 4 and state["fresh_lr"] == 100.0


def test_train_only_keeps_the_other_parts_as_loaded(tmp_path):
    """--train-only context: a context model warm-started from a hyperprior learns only its
    context networks (every other weight exactly as loaded); a resumed run keeps the
    choice; a part the model lacks is refused."""
    from uqcodec.training import train
    base = os.path.join(DATA, "golden", "models", "hyperprior-vr-tiny")
    kw = dict(data=DATA, patch=64, batch=2, warmup=1, progress=False, bf16=False,
              export=False, log_every=1000, lr=1e-2)
    run = tmp_path / "ctx"
    state = train.train("context", "sr", (0.001, 0.1), str(run), steps=3, init_from=base,
                        train_only=["context"], **kw)
    assert state["train_only"] == ["context"]
    w0, w = dict(np.load(os.path.join(base, "weights.npz"))), dict(np.load(run / "weights.npz"))
    same = [k for k in w0 if k in w]
    assert same and all(np.array_equal(w[k], w0[k].astype(w[k].dtype)) for k in same)
    assert any(np.abs(w[k]).max() > 0 for k in w if k.startswith("context/") and "conv2" in k)
    state = train.train("context", "sr", (0.001, 0.1), str(run), steps=4, resume=True, **kw)
    assert state["steps"] == 4 and state["train_only"] == ["context"]
    assert all(np.array_equal(np.load(run / "weights.npz")[k], w[k]) for k in same)
    with pytest.raises(ValueError, match="not a part"):
        train.train("context", "sr", (0.001, 0.1), str(tmp_path / "x"), steps=1,
                    init_from=base, train_only=["nope"], **kw)


def test_context_parts_and_inputs_of_a_new_and_an_old_config():
    """train --context picks the parts (the checkerboard alone: one group of every channel;
    the groups alone: no checkerboard); a new model sees normalized residuals, a config of
    uqcodec 0.14 (groups but no context_inputs) keeps its raw inputs."""
    from uqcodec.training.context import ContextModel, default_groups
    new = {"arch": "context", "training": "sr", "N": 16, "M": 24, "lambda_range": [0.001, 0.1]}
    cfg = ContextModel(dict(new, context="checkerboard")).config
    assert cfg["groups"] == [24] and cfg["checkerboard"] and cfg["context_inputs"] == "residual"
    assert "context" not in cfg
    cfg = ContextModel(dict(new, context="groups")).config
    assert cfg["groups"] == default_groups(24) and not cfg["checkerboard"]
    cfg = ContextModel(dict(new, groups=[4, 8, 12])).config
    assert cfg["context_inputs"] == "raw"
    with pytest.raises(ValueError, match="context"):
        ContextModel(dict(new, context="spatial"))
