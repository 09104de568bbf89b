"""Training loop: rate + lambda * MSE(0..255) with additive noise (``un``) or
soft rounding (``sr``), warm-up + cosine learning-rate schedule, checkpoints,
resume, warm starts, TensorBoard summaries and a progress bar.

Writes into ``out``: ``ckpt/`` (full training state, for --resume),
``weights.npz`` + ``train.json`` (inference weights + config, refreshed at every
checkpoint) and, at the end, the exported model (see ``export``).
"""
import json
import math
import os
import signal
import sys
import time

import numpy as np

DEFAULT_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "train")

# Size of a new (not warm-started) model, unless given. The hyperprior is smaller than
# Minnen et al.'s N=128/M=192: about 3x the steps per second on a CPU, which wins on a
# budget of hours (README, "Time to quality"); latent gain 16 puts y near unit scale
# at initialisation, so the unit quantization noise does not drown it.
NEW_MODEL = {"hyperprior": {"N": 64, "M": 128, "latent_gain": 16.0}, "linear": {}}


def lr_at(step, frac, lr, warmup, decay_start):
    """Linear warm-up to ``lr`` over ``warmup`` steps, constant, then cosine decay
    to lr/100 between run fractions ``decay_start`` and 1."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if frac < decay_start:
        return lr
    t = min(1.0, (frac - decay_start) / max(1e-9, 1.0 - decay_start))
    return lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))


def alpha_at(frac, alpha_start, alpha_end, ramp):
    """Soft-rounding alpha: linear ramp from alpha_start to alpha_end over the
    first ``ramp`` fraction of the run."""
    t = min(1.0, frac / max(1e-9, ramp))
    return alpha_start + (alpha_end - alpha_start) * t


def run_fraction(step, steps, wall_seconds, minutes=None):
    """How far the run is (0..1): by steps, or by wall time when ``minutes`` is set."""
    frac = step / max(1, steps)
    if minutes:
        frac = max(frac, wall_seconds / (60.0 * minutes))
    return min(1.0, frac)


def _warm_start(model, init_from, base, picture):
    """Load the weights of model directory ``init_from`` (card ``base``) into ``model``;
    a smaller hyperprior is first widened to the model's N and M (uqcodec.widen)."""
    from .model import SIZE_KEYS, CompressionModel
    weights = os.path.join(init_from, "weights.npz")
    grow = [k for k in SIZE_KEYS if k in base and model.config.get(k) != base[k]]
    if not grow:
        model.load_weights_npz(weights)
        return
    if (model.arch != "hyperprior" or set(grow) - {"N", "M"}
            or any(model.config[k] < base[k] for k in grow)):
        raise ValueError(f"--init-from {init_from}: cannot change "
                         + ", ".join(f"{k} {base[k]} -> {model.config.get(k)}" for k in grow)
                         + " (a hyperprior can only grow N and M)")
    from .widen import widen
    small = CompressionModel(base)  # a card is a config (as codec.load uses it)
    small.load_weights_npz(weights)
    widen(small, model, picture[None, :256, :256].astype("float32") / 255.0)


def train(arch, mode, lmbda, out, data=None, steps=20000, patch=128, batch=8, lr=5e-4,
          warmup=1000, decay_start=0.6, clip=1.0, alpha=(1.0, 8.0), alpha_ramp=1.0,
          alpha_r=None, low_variance=True, minutes=None,
          init_from=None, resume=False, seed=0, bf16=True, ckpt_minutes=5.0,
          model_args=None, log_every=100, progress=True, export=True):
    """Train ``arch`` ("linear"/"hyperprior") in ``mode`` ("un"/"sr") at ``lmbda``.

    ``alpha``/``alpha_r``: (start, end) of s_alpha and r_alpha (r defaults to s),
    ramped over ``alpha_ramp`` of the run; ``low_variance``: expected gradients
    over the noise (sr); ``minutes``: wall-time budget (the schedules then follow
    the elapsed time, and the run stops at the budget or at ``steps``).
    """
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    from . import _tf
    tf, tfc = _tf.load()
    from . import data as D
    from .model import SIZE_KEYS, CompressionModel

    tf.random.set_seed(seed)
    os.makedirs(out, exist_ok=True)
    config = {"arch": arch, "training": mode, "lambda": lmbda}
    config.update(model_args or {})
    init_steps = init_wall = 0
    state_path = os.path.join(out, "train.json")
    state = {"wall_seconds": 0.0}
    resumed = resume and os.path.exists(state_path)
    if resumed:  # the run's own size, whatever today's defaults
        with open(state_path) as f:
            state = json.load(f)
        for k in SIZE_KEYS:
            if state.get(k) is not None:
                config.setdefault(k, state[k])
    if init_from:
        with open(os.path.join(init_from, "model.json")) as f:
            base = json.load(f)
        for k in SIZE_KEYS:
            if k in base:
                config.setdefault(k, base[k])
        init_steps = base.get("steps") or 0
        init_wall = base.get("wall_seconds") or 0.0
    elif not resumed:
        for k, v in NEW_MODEL[arch].items():
            config.setdefault(k, v)
    model = CompressionModel(config, conv_dtype="mixed_bfloat16" if bf16 else "float32")
    images = D.load_all(data or DEFAULT_DATA, seed=seed, patch=patch)
    if init_from:
        _warm_start(model, init_from, base, images[0])
    step_var = tf.Variable(0, dtype=tf.int64, name="step")
    opt = tf.keras.optimizers.Adam(learning_rate=lr, global_clipnorm=clip)
    ckpt = tf.train.Checkpoint(model=model, opt=opt, step=step_var)
    manager = tf.train.CheckpointManager(ckpt, os.path.join(out, "ckpt"), max_to_keep=2)
    if resume and manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint)
    a_start, a_end = alpha
    r_start, r_end = alpha_r or alpha
    ds = iter(D.dataset(tf, images, patch, batch, seed=seed + int(step_var.numpy())))
    writer = tf.summary.create_file_writer(os.path.join(out, "tb"))
    variables = model.trainable_variables
    num_pixels = float(batch * patch * patch)

    @tf.function
    def train_step(x, lr_now, alpha_now, alpha_r_now):
        with tf.GradientTape() as tape:
            if mode == "sr":
                x_hat, bits_y, bits_z = model.forward(x, alpha_now, alpha_r_now, low_variance)
            else:
                x_hat, bits_y, bits_z = model.forward(x)
            mse = tf.reduce_mean(tf.square(x - x_hat)) * 255.0 ** 2
            bpp = (bits_y + bits_z) / num_pixels
            loss = bpp + lmbda * mse
        grads = tape.gradient(loss, variables)
        opt.learning_rate.assign(lr_now)
        opt.apply_gradients(zip(grads, variables))
        return loss, bpp, mse, bits_z / num_pixels

    def save(final=False):
        manager.save()
        with open(os.path.join(out, "weights.npz.tmp"), "wb") as f:
            f.write(model.weights_npz(half=False))
        os.replace(os.path.join(out, "weights.npz.tmp"), os.path.join(out, "weights.npz"))
        s = int(step_var.numpy())
        meta = dict(model.config, steps=s, patch=patch, batch=batch, lr=lr, warmup=warmup,
                    decay_start=decay_start, clip=clip, bf16=bf16, seed=seed,
                    data=os.path.abspath(data or DEFAULT_DATA), init_from=init_from,
                    wall_seconds=state["wall_seconds"], total_steps=steps,
                    init_steps=init_steps, init_wall_seconds=init_wall, minutes=minutes)
        if mode == "sr":
            f = frac()
            meta["alpha"] = alpha_at(f, a_start, a_end, alpha_ramp)
            meta["alpha_schedule"] = {"start": a_start, "end": a_end, "ramp": alpha_ramp}
            if alpha_r:
                meta["alpha_r"] = alpha_at(f, r_start, r_end, alpha_ramp)
                meta["alpha_schedule"].update(r_start=r_start, r_end=r_end)
            meta["low_variance_grad"] = low_variance
        state.update(meta)
        with open(state_path + ".tmp", "w") as f:
            json.dump(state, f, indent=2)
        os.replace(state_path + ".tmp", state_path)

    stop = {"flag": False}

    def frac():
        return run_fraction(int(step_var.numpy()), steps, state["wall_seconds"], minutes)

    def on_term(signum, frame):
        stop["flag"] = True
    signal.signal(signal.SIGTERM, on_term)

    bar = None
    if progress:
        from tqdm import tqdm
        # with a time budget the step total is unknown: count steps, show the minutes left
        bar = tqdm(total=None if minutes else steps, initial=int(step_var.numpy()), unit="step",
                   dynamic_ncols=True, file=sys.stderr)
    last_ckpt = time.time()
    t_prev = time.time()
    avg = None
    try:
        while frac() < 1.0 and not stop["flag"]:
            s = int(step_var.numpy())
            f = frac()
            x = next(ds)
            a_now = alpha_at(f, a_start, a_end, alpha_ramp)
            r_now = alpha_at(f, r_start, r_end, alpha_ramp)
            lr_now = lr_at(s, f, lr, warmup, decay_start)
            loss, bpp, mse, bpp_z = train_step(x, tf.constant(lr_now, tf.float32),
                                               tf.constant(a_now, tf.float32),
                                               tf.constant(r_now, tf.float32))
            step_var.assign_add(1)
            now = time.time()
            state["wall_seconds"] += now - t_prev
            t_prev = now
            vals = np.array([float(loss), float(bpp), float(mse), float(bpp_z)])
            avg = vals if avg is None else 0.98 * avg + 0.02 * vals
            if bar is not None:
                bar.update(1)
                if s % 20 == 0:
                    psnr = 10 * np.log10(255.0 ** 2 / max(avg[2], 1e-9))
                    left = ({"left": f"{max(0.0, minutes - state['wall_seconds'] / 60):.1f}min"}
                            if minutes else {})
                    bar.set_postfix(loss=f"{avg[0]:.3f}", bpp=f"{avg[1]:.3f}", psnr=f"{psnr:.2f}",
                                    **left)
            if s % log_every == 0:
                psnr = 10 * np.log10(255.0 ** 2 / max(avg[2], 1e-9))
                with writer.as_default(step=s):
                    tf.summary.scalar("loss", avg[0])
                    tf.summary.scalar("bpp", avg[1])
                    tf.summary.scalar("bpp_z", avg[3])
                    tf.summary.scalar("psnr", psnr)
                    tf.summary.scalar("lr", lr_now)
                if not progress:
                    print(f"step {s} loss {avg[0]:.4f} bpp {avg[1]:.4f} bpp_z {avg[3]:.4f} "
                          f"psnr {psnr:.2f} "
                          + (f"alpha {a_now:.2f} " if mode == "sr" else "")
                          + f"wall {state['wall_seconds']:.0f}",
                          flush=True)
            if now - last_ckpt > ckpt_minutes * 60:
                save()
                last_ckpt = now
    except KeyboardInterrupt:
        print("interrupted: saving checkpoint", file=sys.stderr)
    finally:
        if bar is not None:
            bar.close()
        save()
    if export and not stop["flag"]:
        from .export import export_model
        export_model(out, out)
    return state
