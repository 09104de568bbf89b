"""Training loop: rate + lambda * MSE(0..255) with additive noise (``un``) or
soft rounding (``sr``), warm-up + cosine learning-rate schedule, checkpoints,
resume, warm starts, TensorBoard summaries and a progress bar.

Writes into ``out``: ``ckpt/`` (full training state, for --resume),
``weights.npz`` + ``train.json`` (inference weights + config, refreshed at every
checkpoint) and, at the end, the exported model (see ``export``).

Distribution (``strategy``): one device, ``tf.distribute.MirroredStrategy`` (several
GPUs of one host) or ``MultiWorkerMirroredStrategy`` (several hosts, ``TF_CONFIG``).
The global ``batch`` is split over the replicas; each replica's loss is its sum
over its share divided by the global batch, so the all-reduced (summed) gradient
is the single-device gradient of the whole batch. Only the chief writes files; the
workers agree each step (one small all-reduce) on stopping, checkpointing and the
elapsed time, so they take the same steps with the same schedule.
"""
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time

import numpy as np

from .. import families as F
from ..rates import lambda_at, lambda_position

DEFAULT_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "train")


def lr_at(step, frac, lr, warmup, decay_start):
    """Linear warm-up to ``lr`` over ``warmup`` steps, constant, then cosine decay
    to lr/100 between run fractions ``decay_start`` and 1."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if frac < decay_start:
        return lr
    t = min(1.0, (frac - decay_start) / max(1e-9, 1.0 - decay_start))
    return lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))


# A step that takes longer than PAUSE_SECONDS and PAUSE_FACTOR typical steps means the
# process was stopped (SIGSTOP, a machine asleep): it counts as a typical step toward
# --minutes, so a paused run keeps its budget for training.
PAUSE_SECONDS = 60.0
PAUSE_FACTOR = 20.0


def counted_seconds(dt, typical):
    """The seconds of a step of ``dt`` wall seconds that count toward --minutes, given the
    typical step so far (None before the first)."""
    if typical is not None and dt > max(PAUSE_SECONDS, PAUSE_FACTOR * typical):
        return typical
    return dt


STRATEGIES = ("auto", "one", "mirrored", "multiworker")
REWARM = 200  # steps of warm-up when a run resumes from its weights without optimizer state
DATA_SPLITS = ("seed", "slice")


def _tf_config():
    try:
        return json.loads(os.environ.get("TF_CONFIG") or "{}")
    except ValueError:
        raise ValueError("TF_CONFIG is not valid JSON") from None


def cluster_workers(cfg=None):
    """Number of processes in the TF_CONFIG cluster (chief + workers; 0 without one)."""
    cluster = (_tf_config() if cfg is None else cfg).get("cluster") or {}
    return sum(len(cluster.get(k) or ()) for k in ("chief", "worker"))


def resolve_strategy(name="auto"):
    """The strategy ``auto`` stands for: multiworker when TF_CONFIG names a cluster of
    several processes, mirrored when several GPUs are visible, else one."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r} (choose {', '.join(STRATEGIES)})")
    if name != "auto":
        return name
    if cluster_workers() > 1:
        return "multiworker"
    from . import _tf
    tf, _ = _tf.load()
    return "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "one"


def worker_role(strategy="auto"):
    """(worker index, number of workers, is chief) of this process under ``strategy``.
    The chief is task ``chief`` 0, or ``worker`` 0 when the cluster has no chief job;
    it is worker index 0, the other workers follow in TF_CONFIG order."""
    if resolve_strategy(strategy) != "multiworker":
        return 0, 1, True
    cfg = _tf_config()
    cluster, task = cfg.get("cluster") or {}, cfg.get("task") or {}
    n = max(1, cluster_workers(cfg))
    kind, index = task.get("type"), int(task.get("index") or 0)
    if kind is None or kind == "chief":
        return 0, n, True
    if kind != "worker":
        raise ValueError(f"TF_CONFIG task type {kind!r}: only chief and worker tasks train")
    i = index + (1 if cluster.get("chief") else 0)
    return i, n, i == 0


def _make_strategy(tf, name, devices=None):
    if name == "one":
        return tf.distribute.get_strategy()  # the default strategy: exactly the plain loop
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=devices)
    return tf.distribute.MultiWorkerMirroredStrategy()


_BF16_OK = None


def bf16_convolutions_work(tf):
    """Whether bfloat16 convolutions train here: some CPUs (no AVX512) make TensorFlow's
    graph optimizer emit a fused convolution without a bfloat16 kernel. Tries a tiny
    Conv2D forward and backward pass in a tf.function, once per process."""
    global _BF16_OK
    if _BF16_OK is None:
        try:
            layer = tf.keras.layers.Conv2D(2, 3, strides=2, padding="same",
                                           dtype="mixed_bfloat16")
            x = tf.zeros((2, 8, 8, 3))
            layer(x)

            @tf.function
            def probe(x):
                with tf.GradientTape() as tape:
                    loss = tf.reduce_sum(tf.square(tf.cast(layer(x), tf.float32)))
                return tape.gradient(loss, layer.trainable_variables)
            probe(x)
            _BF16_OK = True
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError,
                tf.errors.NotFoundError, tf.errors.InternalError):
            _BF16_OK = False
    return _BF16_OK


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


def _warm_start(model, init_from, base, images):
    """Load the weights of model directory ``init_from`` (card ``base``) into ``model``;
    a smaller model of a family that can widen is first widened to the model's N and M
    (uqcodec.widen). Parts the base does not have at all start fresh: a bypass fitted on
    training crops (``widen.fit_bypass``), a variable-rate gain at 1/2 log(lambda / base
    lambda), any other new part (a context model's networks) at its initial values.
    Returns the names of the parts that started at their initial values."""
    from .model import CompressionModel, size_keys
    from . import widen as Wd
    weights = os.path.join(init_from, "weights.npz")
    new_parts = [k for k in ("bypass", "lambda_range") if model.config.get(k) and not base.get(k)]
    # a variable-rate model may move its lambda range: its learned gains are remapped
    moved = bool(base.get("lambda_range") and model.config.get("lambda_range")
                 and list(model.config["lambda_range"]) != list(base["lambda_range"]))
    # (a lambda range that moves is remapped below; a fixed-rate model from a
    # variable-rate base drops the base's gains)
    grow = [k for k in size_keys(model.arch) if k in base and model.config.get(k) != base[k]
            and not (k == "lambda_range" and (moved or not model.config.get(k)))]
    if (grow and (not F.get(model.arch).widen or set(grow) - {"N", "M"}
                  or any(model.config[k] < base[k] for k in grow))):
        raise ValueError(f"--init-from {init_from}: cannot change "
                         + ", ".join(f"{k} {base[k]} -> {model.config.get(k)}" for k in grow)
                         + " (a model of a family that can widen can only grow N and M)")
    fresh = []  # parts the base lacks entirely (a widened model has none)
    if grow:
        small = CompressionModel(base)  # a card is a config (as codec.load uses it)
        small.load_weights_npz(weights)
        Wd.widen(small, model, images[0][None, :256, :256].astype("float32") / 255.0)
    else:
        with np.load(weights) as w:  # parts of the model that the base lacks entirely
            have = {n.split("/", 1)[0] for n in w.files}
        fresh = [p for p in model.parts() if p not in have]
        if fresh:
            print("uqcodec: new parts start fresh: " + ", ".join(fresh), file=sys.stderr,
                  flush=True)
        model.load_weights_npz(weights, fresh=tuple(p + "/" for p in fresh))
    if "bypass" in new_parts:
        Wd.fit_bypass(model, images, int(base["M"]))
    if "lambda_range" in new_parts:
        lo, hi = model.config["lambda_range"]
        ref = float(base.get("lambda") or hi)
        t = np.linspace(0.0, 1.0, len(model.rate.log_gain.numpy()))
        model.rate.assign_knots(0.5 * np.log(lambda_at(t, lo, hi) / ref))
    elif moved:
        old_knots = model.rate.knots.numpy().astype(np.float64)  # as loaded from the base
        model.rate.assign_knots(remap_gains(old_knots, base["lambda_range"],
                                            model.config["lambda_range"]))
    return fresh


def remap_gains(knots, old_range, new_range):
    """Log-gain knots of a variable-rate model moved from lambda range ``old_range`` to
    ``new_range``: inside the old range the learned gains (interpolated as the model does),
    outside it the nearest end's gain times sqrt(lambda / lambda_end), the rule a new
    range starts with, so the gains stay continuous and increasing."""
    knots = np.asarray(knots, np.float64)
    lo0, hi0 = (float(v) for v in old_range)
    lams = lambda_at(np.linspace(0.0, 1.0, len(knots)), *(float(v) for v in new_range))
    pos = np.array([lambda_position(v, lo0, hi0) for v in lams]) * (len(knots) - 1)
    out = np.interp(pos, np.arange(len(knots)), knots)
    out = np.where(lams < lo0, knots[0] + 0.5 * np.log(lams / lo0), out)
    return np.where(lams > hi0, knots[-1] + 0.5 * np.log(lams / hi0), out)


def train(arch, mode, lmbda, out, data=None, steps=20000, patch=128, batch=8, lr=5e-4,
          warmup=1000, decay_start=0.6, clip=1.0, alpha=(1.0, 8.0), alpha_ramp=1.0,
          alpha_r=None, low_variance=True, minutes=None,
          init_from=None, resume=False, seed=0, bf16=True, ckpt_minutes=5.0,
          model_args=None, log_every=100, progress=True, export=True,
          strategy="one", data_split="seed", devices=None, fresh_lr=None,
          train_only=None):
    """Train ``arch`` ("linear"/"hyperprior") in ``mode`` ("un"/"sr") at ``lmbda``.

    ``lmbda`` (lo, hi): a variable-rate hyperprior; every step draws lambda
    log-uniformly from the range, and the model codes the latents at its learned
    gain for that lambda.

    ``alpha``/``alpha_r``: (start, end) of s_alpha and r_alpha (r defaults to s),
    ramped over ``alpha_ramp`` of the run; ``low_variance``: expected gradients
    over the noise (sr); ``minutes``: wall-time budget (the schedules then follow
    the elapsed time, and the run stops at the budget or at ``steps``).

    ``strategy``: "one", "mirrored" (``devices``: default all GPUs), "multiworker"
    (``TF_CONFIG``) or "auto" (see ``resolve_strategy``); ``batch`` is the global
    batch. ``data_split``: "seed" (each worker draws its own crops, seeded by its
    worker index) or "slice" (every worker draws the global batch and the noise of
    the global batch from the run's seed and takes its share: the run computes
    what one process with the same global batch computes, up to float summation
    order). Only the chief writes files into ``out``.

    ``fresh_lr``: learning-rate multiplier of the parts that a warm start could not
    load (a context model's networks beside converged transforms; their own Adam);
    kept in train.json, so a resumed run goes on with it (default 1).

    ``train_only``: names of the parts that learn (e.g. ``["context"]``: a context model's
    networks on frozen transforms and hyperprior); the others stay as loaded. Kept in
    train.json like ``fresh_lr``.
    """
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    from . import _tf
    tf, tfc = _tf.load()
    if data_split not in DATA_SPLITS:
        raise ValueError(f"unknown data split {data_split!r} (choose {', '.join(DATA_SPLITS)})")
    strategy = resolve_strategy(strategy)
    worker, workers, chief = worker_role(strategy)
    # a multi-worker strategy configures the collectives: before any other TensorFlow op
    strat = _make_strategy(tf, strategy, devices)
    from . import data as D
    from .model import CompressionModel, size_keys

    replicas = strat.num_replicas_in_sync
    local_replicas = max(1, replicas // workers)
    if batch % replicas:
        raise ValueError(f"the global batch {batch} does not split over {replicas} replicas")
    per_replica = batch // replicas
    local_batch = per_replica * local_replicas
    if bf16 and not bf16_convolutions_work(tf):
        print("uqcodec: warning: bfloat16 convolutions do not run on this CPU; "
              "training in float32", file=sys.stderr, flush=True)
        bf16 = False

    if chief:
        os.makedirs(out, exist_ok=True)
    lambda_range = None
    if isinstance(lmbda, (tuple, list)):
        lambda_range = [float(lmbda[0]), float(lmbda[1])]
        if not F.get(arch).variable_rate or not 0 < lambda_range[0] < lambda_range[1]:
            raise ValueError("a lambda range LO:HI needs 0 < LO < HI and a family with "
                             "variable rate")
        lmbda = None
    config = {"arch": arch, "training": mode, "lambda": lmbda}
    if lambda_range:
        config["lambda_range"] = lambda_range
    config.update(model_args or {})
    init_steps = init_wall = 0
    state_path = os.path.join(out, "train.json")
    state = {"wall_seconds": 0.0}
    resumed = resume and os.path.exists(state_path)
    if resumed:  # the run's own config (its size), whatever today's defaults
        with open(state_path) as f:
            state = json.load(f)
        saved = state.get("config") or {k: state[k] for k in size_keys(arch) if k in state}
        for k, v in saved.items():
            if v is not None:
                config.setdefault(k, v)
    if init_from:
        with open(os.path.join(init_from, "model.json")) as f:
            base = json.load(f)
        for k in size_keys(arch):
            # (a fixed-rate run from a variable-rate base is a fixed-rate model)
            if k in base and not (k == "lambda_range" and lambda_range is None):
                config.setdefault(k, base[k])
        init_steps = base.get("steps") or 0
        init_wall = base.get("wall_seconds") or 0.0
    elif resumed:  # the warm start this run began with still counts
        init_steps = state.get("init_steps") or 0
        init_wall = state.get("init_wall_seconds") or 0.0
    else:
        for k, v in F.get(arch).new_model.items():
            config.setdefault(k, v)
    # Where this run starts in the stream of training data (image scales, crops, lambdas,
    # noise): a warm start goes on from its base's steps instead of replaying the crops
    # its base began with on the same scaled pictures.
    stream = seed + init_steps
    tf.random.set_seed(stream)
    images = D.load_all(data or DEFAULT_DATA, seed=stream, patch=patch)
    with strat.scope():
        model = CompressionModel(config, conv_dtype="mixed_bfloat16" if bf16 else "float32")
        fresh_parts = list(state.get("fresh_parts") or [])
        if init_from:
            fresh_parts = _warm_start(model, init_from, base, images)
        if fresh_lr is None:
            fresh_lr = float(state.get("fresh_lr") or 1.0)
        if train_only is None:
            train_only = state.get("train_only")
        train_only = list(train_only) if train_only else None
        if train_only and set(train_only) - set(model.parts()):
            raise ValueError(f"--train-only: {', '.join(sorted(set(train_only) - set(model.parts())))}"
                             f" is not a part of this model (parts: {', '.join(model.parts())})")
        step_var = tf.Variable(0, dtype=tf.int64, name="step")
        opt = tf.keras.optimizers.Adam(learning_rate=lr, global_clipnorm=clip)
        variables = model.trainable_variables
        if train_only:
            variables = [v for n, v in model.named_variables().items()
                         if n.split("/", 1)[0] in train_only]
        # the slots before the restore, so that a checkpoint always holds Adam's moments
        # (also one written by a resume that stops before its first step)
        opt.build(variables)
        # fresh parts at fresh_lr x the learning rate: an Adam of their own (``opt`` keeps
        # its slots for every variable, so checkpoints of either kind restore)
        fresh_ids = {id(v) for n, v in model.named_variables().items()
                     if n.split("/", 1)[0] in fresh_parts} if fresh_lr != 1.0 else set()
        is_fresh = [id(v) in fresh_ids for v in variables]
        opt_fresh = None
        if fresh_ids:
            opt_fresh = tf.keras.optimizers.Adam(learning_rate=lr * fresh_lr,
                                                 global_clipnorm=clip)
            opt_fresh.build([v for v, f in zip(variables, is_fresh) if f])
    objects = {"opt_fresh": opt_fresh} if opt_fresh is not None else {}
    ckpt = tf.train.Checkpoint(model=model, opt=opt, step=step_var, **objects)
    ckpt_dir = os.path.join(out, "ckpt")
    manager = tf.train.CheckpointManager(ckpt, ckpt_dir, max_to_keep=2) if chief else None
    latest = tf.train.latest_checkpoint(ckpt_dir) if resume else None
    rewarm_from = None
    if latest:  # every worker restores the chief's checkpoint (a shared run directory)
        ckpt.restore(latest)
    elif resumed and workers == 1 and os.path.exists(os.path.join(out, "weights.npz")):
        # a run carried to another machine as its weights and train.json (no optimizer
        # state): the same schedule goes on, Adam's moments start again with a short
        # warm-up of their own
        model.load_weights_npz(os.path.join(out, "weights.npz"))
        step_var.assign(int(state.get("steps") or 0))
        rewarm_from = int(step_var.numpy())
        print(f"uqcodec: resuming {out} at step {rewarm_from} from its weights (no optimizer "
              f"state: {REWARM} steps of learning-rate warm-up)", file=sys.stderr, flush=True)
    elif resume and workers > 1 and resumed:
        raise ValueError(f"--resume: worker {worker} sees {state_path} but no checkpoint in "
                         f"{ckpt_dir}")
    a_start, a_end = alpha
    r_start, r_end = alpha_r or alpha
    ds = iter(_dataset(tf, D, images, patch, batch, local_batch, worker,
                       stream + int(step_var.numpy()), data_split))
    if worker and data_split == "seed":  # the noise too differs from worker to worker
        tf.random.set_seed(stream + 1_000_003 * worker)
    writer = tf.summary.create_file_writer(os.path.join(out, "tb")) if chief else None
    num_pixels = float(batch * patch * patch)
    share = per_replica / batch  # one replica's share of the global batch

    def replica_step(x, lmbda_now, rate_now, alpha_now, alpha_r_now, step_now, control):
        ctx = tf.distribute.get_replica_context()
        rid = ctx.replica_id_in_sync_group
        rate = rate_now if lambda_range else None
        with tf.GradientTape() as tape:
            q = (alpha_now, alpha_r_now, low_variance) if mode == "sr" else ()
            if data_split == "slice":
                x_hat, bits_y, bits_z = _forward_global_noise(tf, model, x, q, stream, step_now,
                                                              batch, rid, rate)
            else:
                x_hat, bits_y, bits_z = model.forward(x, *q, rate=rate)
            # sums over this replica's share, divided by the global batch: the summed
            # gradients of the replicas are the gradient of the global batch
            mse = tf.reduce_mean(tf.square(x - x_hat)) * 255.0 ** 2
            if share != 1.0:
                mse = mse * share
            bpp = (bits_y + bits_z) / num_pixels
            loss = bpp + lmbda_now * mse
        grads = tape.gradient(loss, variables)
        if opt_fresh is None:
            opt.apply_gradients(zip(grads, variables))
        else:
            opt.apply_gradients([(g, v) for g, v, f in zip(grads, variables, is_fresh) if not f])
            opt_fresh.apply_gradients([(g, v) for g, v, f in zip(grads, variables, is_fresh)
                                       if f])
        vals = tf.cast(tf.stack([loss, bpp, mse, bits_z / num_pixels]), tf.float64)
        if replicas == 1:
            return vals, control
        # the workers' votes (stop, checkpoint) and the chief's clock: one per worker
        first = tf.cast(tf.equal(rid % local_replicas, 0), tf.float64)
        return ctx.all_reduce(tf.distribute.ReduceOp.SUM,
                              tf.concat([vals, control * first], 0)), None

    @tf.function
    def train_step(x, lr_now, lmbda_now, rate_now, alpha_now, alpha_r_now, step_now, control):
        opt.learning_rate.assign(lr_now)
        if opt_fresh is not None:
            opt_fresh.learning_rate.assign(lr_now * fresh_lr)
        if local_replicas > 1:
            x = strat.experimental_distribute_values_from_function(
                lambda ctx: x[(ctx.replica_id_in_sync_group % local_replicas) * per_replica:
                              (ctx.replica_id_in_sync_group % local_replicas + 1) * per_replica])
        vals, ctl = strat.run(replica_step, (x, lmbda_now, rate_now, alpha_now, alpha_r_now, step_now,
                                             control))
        if replicas == 1:
            return vals, ctl
        vals = strat.experimental_local_results(vals)[0]
        return vals[:4], vals[4:]

    def save(final=False):
        if not chief:  # every worker takes part in a save (collectives); only the chief keeps it
            tmp = tempfile.mkdtemp(prefix=f"uqcodec-worker{worker}-")
            try:
                tf.train.CheckpointManager(ckpt, tmp, max_to_keep=1).save()
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            return
        manager.save()
        with open(os.path.join(out, "weights.npz.tmp"), "wb") as f:
            f.write(model.weights_npz(half=False))
        os.replace(os.path.join(out, "weights.npz.tmp"), os.path.join(out, "weights.npz"))
        s = int(step_var.numpy())
        meta = dict(model.config, config=dict(model.config), steps=s, patch=patch, batch=batch, lr=lr, warmup=warmup,
                    decay_start=decay_start, clip=clip, bf16=bf16, seed=seed, data_stream=stream,
                    data=os.path.abspath(data or DEFAULT_DATA),
                    init_from=init_from or (state.get("init_from") if resumed else None),
                    wall_seconds=state["wall_seconds"], total_steps=steps,
                    init_steps=init_steps, init_wall_seconds=init_wall, minutes=minutes,
                    fresh_parts=fresh_parts, fresh_lr=fresh_lr, train_only=train_only)
        if strategy != "one":
            meta.update(strategy=strategy, replicas=replicas, workers=workers,
                        data_split=data_split)
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

    stop = {"flag": False, "local": False, "interrupts": 0}

    def frac():
        return run_fraction(int(step_var.numpy()), steps, state["wall_seconds"], minutes)

    def on_term(signum, frame):  # several workers stop together, after the next step
        stop["local"] = True
        if workers == 1:
            stop["flag"] = True
    signal.signal(signal.SIGTERM, on_term)
    old_int = None
    if workers > 1:
        # Ctrl-C: finish the step with the other workers, then all save; a second Ctrl-C
        # interrupts at once (the other workers then wait for this one until they time out)
        def on_int(signum, frame):
            stop["interrupts"] += 1
            if stop["interrupts"] > 1:
                raise KeyboardInterrupt
            print("interrupted: stopping after the next step", file=sys.stderr, flush=True)
            stop["local"] = True
        old_int = signal.signal(signal.SIGINT, on_int)

    if workers > 1:
        _check_workers_agree(tf, strat, int(step_var.numpy()), workers, local_replicas)

    bar = None
    if progress and chief:
        from tqdm import tqdm
        # with a time budget the step total is unknown: count steps, show the minutes left
        bar = tqdm(total=None if minutes else steps, initial=int(step_var.numpy()), unit="step",
                   dynamic_ncols=True, file=sys.stderr)
    last_ckpt = time.time()
    t_prev = time.time()
    typical, traced = None, False  # seconds of a typical step (``counted_seconds``)
    avg = None
    lmbda_t = tf.constant(lmbda or 0.0, tf.float32)
    t_rate = 1.0
    # the same lambdas on every worker (seeded by the run's seed and its step)
    rate_rng = np.random.default_rng([stream, int(step_var.numpy())])
    try:
        while frac() < 1.0 and not stop["flag"]:
            s = int(step_var.numpy())
            f = frac()
            x = next(ds)
            a_now = alpha_at(f, a_start, a_end, alpha_ramp)
            r_now = alpha_at(f, r_start, r_end, alpha_ramp)
            lr_now = lr_at(s, f, lr, warmup, decay_start)
            if rewarm_from is not None and s - rewarm_from < REWARM:
                lr_now *= (s - rewarm_from + 1) / REWARM
            # this worker's vote to stop or checkpoint after this step and the chief's
            # clock; summed over the workers in the step (nothing to agree on alone)
            t_step = time.time()
            # the time since the last step that counts (several workers: the chief's, sent
            # with its vote; its clock stops here and goes on at the next step)
            before = counted_seconds(t_step - t_prev, typical)
            want_ckpt = chief and t_step - last_ckpt > ckpt_minutes * 60
            control = tf.constant([float(stop["local"]), float(want_ckpt),
                                   state["wall_seconds"] + before if chief else 0.0],
                                  tf.float64)
            if lambda_range:  # this step's lambda: log-uniform over the range
                t_rate = float(rate_rng.uniform())
                lmbda_t = tf.constant(lambda_at(t_rate, *lambda_range), tf.float32)
            vals, ctl = train_step(x, tf.constant(lr_now, tf.float32), lmbda_t,
                                   tf.constant(t_rate, tf.float32),
                                   tf.constant(a_now, tf.float32),
                                   tf.constant(r_now, tf.float32),
                                   tf.constant(s, tf.int64), control)
            step_var.assign_add(1)
            now = time.time()
            dt = counted_seconds(now - t_prev, typical) if replicas == 1 else before
            if traced:  # (a process's first step traces the graph: not a typical step)
                typical = dt if typical is None else 0.95 * typical + 0.05 * dt
            traced = True
            if replicas == 1:
                state["wall_seconds"] += dt
                ctl_stop, ctl_ckpt = stop["local"], now - last_ckpt > ckpt_minutes * 60
            else:  # the chief's clock, stop if any worker stops, checkpoint when the chief does
                ctl = ctl.numpy()
                state["wall_seconds"] = float(ctl[2])
                ctl_stop, ctl_ckpt = ctl[0] > 0, ctl[1] > 0
                stop["flag"] = stop["flag"] or ctl_stop
            t_prev = now if replicas == 1 else t_step  # the chief counts this step next time
            vals = vals.numpy()
            avg = vals if avg is None else 0.98 * avg + 0.02 * vals
            if bar is not None:
                bar.update(1)
                if s % 20 == 0:
                    psnr = 10 * np.log10(255.0 ** 2 / max(avg[2], 1e-9))
                    left = ({"left": f"{max(0.0, minutes - state['wall_seconds'] / 60):.1f}min"}
                            if minutes else {})
                    bar.set_postfix(loss=f"{avg[0]:.3f}", bpp=f"{avg[1]:.3f}", psnr=f"{psnr:.2f}",
                                    **left)
            if s % log_every == 0 and chief:
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
            if ctl_ckpt and not stop["flag"]:
                save()
                last_ckpt = now
    except KeyboardInterrupt:
        print("interrupted: saving checkpoint", file=sys.stderr)
    finally:
        if bar is not None:
            bar.close()
        if replicas > 1:
            state["wall_seconds"] += time.time() - t_prev
        save()
        if old_int is not None:
            signal.signal(signal.SIGINT, old_int)
    if export and not stop["flag"] and chief:
        from .export import export_model
        export_model(out, out)
    return state


def _dataset(tf, D, images, patch, batch, local_batch, worker, seed, data_split):
    """This worker's batches (float32 in [0, 1]) of ``local_batch`` crops."""
    if data_split == "seed":  # worker 0 draws exactly what a single process draws
        return D.dataset(tf, images, patch, local_batch, seed=seed if worker == 0 else [seed, worker])

    def sliced():  # the global batch, every worker its own slice of it
        for b in D.crop_batches(images, patch, batch, seed):
            yield b[worker * local_batch:(worker + 1) * local_batch]
    ds = tf.data.Dataset.from_generator(
        sliced, output_signature=tf.TensorSpec((local_batch, patch, patch, 3), tf.uint8))
    return ds.map(lambda x: tf.cast(x, tf.float32) / 255.0).prefetch(8)


def _forward_global_noise(tf, model, x, q, seed, step, batch, replica, rate=None):
    """``model.forward`` with the noise of this replica's slice of the global batch,
    drawn from (seed, step): the same noise whatever the number of replicas."""
    y = model.analyze(x)
    z = model.hyper_latent(y)
    n = tf.shape(x)[0]
    noise = []
    for i, t in enumerate((y, z)):
        if t is None:
            noise.append(None)
            continue
        shape = tf.concat([[batch], tf.shape(t)[1:]], 0)
        u = tf.random.stateless_uniform(shape, tf.stack([step, 2 * seed + i]), -0.5, 0.5,
                                        dtype=t.dtype)
        noise.append(u[replica * n:(replica + 1) * n])
    return model.relaxed(y, z, *q, noise=tuple(noise), rate=rate)


def _check_workers_agree(tf, strat, step, workers, local_replicas):
    """All workers start at the same step (a resume needs the chief's run directory on
    every host), else every worker stops with the same error."""
    def vote():
        ctx = tf.distribute.get_replica_context()
        first = tf.cast(tf.equal(ctx.replica_id_in_sync_group % local_replicas, 0), tf.float64)
        v = tf.constant([float(step), float(step) ** 2], tf.float64) * first
        return ctx.all_reduce(tf.distribute.ReduceOp.SUM, v)
    total = strat.experimental_local_results(tf.function(lambda: strat.run(vote))())[0].numpy()
    if total[0] != workers * step or total[1] != workers * float(step) ** 2:
        raise ValueError(f"the workers start at different steps (this one at {step}): "
                         "--resume needs the chief's run directory (ckpt/, train.json) on "
                         "every host, e.g. on a shared file system")
