"""Grow a trained hyperprior model to more channels (N, M) without changing what it computes.

Used by ``uqcodec train --init-from MODEL --N .. --M ..`` when MODEL is smaller: every
old weight is copied; new units get small random incoming weights (so they carry
signal and can learn) and zero outgoing weights (so the old outputs never see them).
New latent channels predict mean 0 at the smallest scale, new hyper-latent channels
copy the prior of the most peaked old channel, new GDN channels get the default
init (beta 1, gamma 0.1 I) without cross terms. New latents and hyper-latents start
near zero (std ``NEW_STD`` on a natural picture), so they cost little rate until
they learn to carry something; the reconstruction from the old latents is unchanged.
"""
import numpy as np

NEW_STD = 0.05


def _out_index(layer, n_old, m_old, m_new):
    """New positions of a layer's old output channels."""
    if layer == "hyper_synthesis/conv2":  # [mean (M) | log_scale (M)]
        return np.r_[np.arange(m_old), m_new + np.arange(m_old)]
    return np.arange(n_old)


def widen_weights(old_w, fresh_w, m_old, m_new, log_scale_min, peaked_channel, rng):
    """{name: array} of the grown model from the old weights and a fresh init."""
    out = {}
    for name, fresh in fresh_w.items():
        if name not in old_w:  # a part the old model does not have (bypass, rate): fresh
            out[name] = fresh
            continue
        old = old_w[name].astype(np.float32)
        layer = name.rsplit("/", 1)[0]
        if name.startswith("factorized/"):  # (channels, ...) per hyper-latent channel
            a = np.repeat(old[peaked_channel:peaked_channel + 1], fresh.shape[0], axis=0)
            a[:old.shape[0]] = old
        elif name.endswith("/kernel"):
            transpose = "deconv" in layer  # Conv2DTranspose kernels are (k, k, out, in)
            a = old.transpose(0, 1, 3, 2) if transpose else old
            shape = fresh.shape[:2] + ((fresh.shape[3], fresh.shape[2]) if transpose
                                       else fresh.shape[2:])
            new = rng.normal(0.0, 0.5 * a.std(), size=shape).astype(np.float32)
            if layer == "hyper_synthesis/conv2":
                new[:] = 0.0  # new means and log-scales start as constants (the biases)
            oi = _out_index(layer, a.shape[3], m_old, m_new)
            new[:, :, a.shape[2]:, :][..., oi] = 0.0  # old outputs never see new inputs
            new[:, :, :a.shape[2], oi] = a
            a = new.transpose(0, 1, 3, 2) if transpose else new
        elif name.endswith("/bias"):
            a = np.zeros(fresh.shape, np.float32)
            if layer == "hyper_synthesis/conv2":
                a[m_new:] = log_scale_min
            a[_out_index(layer, old.shape[0], m_old, m_new)] = old
        elif name.endswith("reparam_beta") or name.endswith("reparam_gamma"):
            a = fresh.copy()  # beta 1, gamma 0.1 on the diagonal, zero elsewhere
            a[tuple(slice(0, n) for n in old.shape)] = old
        else:
            raise ValueError(f"do not know how to widen {name}")
        if a.shape != fresh.shape:
            raise ValueError(f"{name}: widened to {a.shape}, expected {fresh.shape}")
        out[name] = a
    return out


def widen(old, new, sample, seed=0):
    """Set the weights of ``new`` (a larger, built CompressionModel) from ``old``.

    ``sample``: a float32 batch (1, H, W, 3) in [0, 1] of a natural picture, on which
    the new latents and hyper-latents are scaled to std NEW_STD.
    """
    from . import _tf, priors
    from ..constants import LOG_SCALE_MIN
    tf, _ = _tf.load()
    n_old, m_old = old.config["N"], old.config["M"]
    n_new, m_new = new.config["N"], new.config["M"]
    from .. import families
    if (old.arch != new.arch or not families.get(new.arch).widen or n_new < n_old
            or m_new < m_old):
        raise ValueError("widen: needs two models of a family that can widen, the new one "
                         "at least as large")
    ones = tf.ones((1, n_old))
    peaked = int(np.argmax(priors.factorized_bin_prob(old.factorized, -0.5 * ones,
                                                      0.5 * ones).numpy()[0]))
    old_w = {k: v.numpy() for k, v in old.named_variables().items()}
    variables = new.named_variables()
    fresh_w = {k: v.numpy() for k, v in variables.items()}
    w = widen_weights(old_w, fresh_w, m_old, m_new, LOG_SCALE_MIN, peaked,
                      np.random.default_rng(seed))
    for k, v in variables.items():
        v.assign(w[k])
    x = tf.convert_to_tensor(sample, tf.float32)
    # one layer after the other: the hyper-latents are measured on the rescaled latents
    for layer, width, fn in (("analysis/conv3", m_old, lambda: new.analysis(x)),
                             ("hyper_analysis/conv2", n_old,
                              lambda: new.hyper_analysis(new.analysis(x)))):
        out = fn()
        if out.shape[-1] > width:
            std = float(tf.math.reduce_std(out[..., width:]))
            k = variables[layer + "/kernel"]
            k.assign(tf.concat([k[..., :width], k[..., width:] * (NEW_STD / max(std, 1e-9))], -1))
    return new


BYPASS_GAIN = 16.0  # new latents = BYPASS_GAIN x coefficients of pixels in [0, 1]


def fit_bypass(model, images, m_old, seed=0, crops=48, size=256):
    """Start the linear bypass of a hyperprior grown from ``m_old`` latent channels.

    The old channels keep their nonlinear path (the bypass gives them nothing); the new
    channels ``m_old..M`` come from the bypass alone: a reduced-rank linear regression,
    on k x k blocks of training crops, of what the old path's reconstruction (no
    quantization) misses onto the pixels, of rank ``M - m_old``. The analysis bypass
    computes its coefficients (times BYPASS_GAIN), the synthesis bypass adds their
    reconstruction, so the transforms' ceiling rises at once.
    """
    from . import _tf
    from ..constants import BYPASS_IN_SCALE, BYPASS_OUT_SCALE, SCALE_MIN
    tf, _ = _tf.load()
    variables = model.named_variables()
    k = int(model.config["bypass"])
    M = int(model.config["M"])
    rank = M - m_old
    for name in ("analysis/conv3/kernel", "analysis/conv3/bias"):
        v = variables[name].numpy()
        v[..., m_old:] = 0.0
        variables[name].assign(v)
    for part in ("bypass_analysis", "bypass_synthesis"):
        for name, v in variables.items():
            if name.startswith(part + "/"):
                v.assign(tf.zeros_like(v))
    if rank <= 0:
        return
    rng = np.random.default_rng(seed)
    X, R = [], []
    for i in range(crops):
        im = images[i % len(images)]
        h, w = im.shape[:2]
        s = min(size, h, w) // 64 * 64
        a, b = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
        x = im[a:a + s, b:b + s].astype(np.float32)[None] / 255.0
        rec = model.synthesize(model.analyze(tf.constant(x))).numpy()
        X.append(_blocks(x[0], k))
        R.append(_blocks(x[0] - rec[0], k))
    X, R = np.concatenate(X).astype(np.float64), np.concatenate(R).astype(np.float64)
    mu = X.mean(0)
    Xc, Rc = X - mu, R - R.mean(0)
    cxx = Xc.T @ Xc / len(X)
    cxx += 1e-3 * np.trace(cxx) / len(cxx) * np.eye(len(cxx))  # ridge: few or smooth crops
    W = (Rc.T @ Xc / len(X)) @ np.linalg.inv(cxx)           # R ~ W (x - mu)
    _, U = np.linalg.eigh(W @ cxx @ W.T)
    U = U[:, ::-1][:, :rank]                                 # best rank-r output subspace
    A = U.T @ W                                              # (rank, k*k*3)
    ka = np.zeros((k, k, 3, M), np.float32)
    ka[..., m_old:] = (BYPASS_GAIN / BYPASS_IN_SCALE * A.T).reshape(k, k, 3, rank)
    ba = np.zeros(M, np.float32)
    ba[m_old:] = -BYPASS_GAIN / BYPASS_IN_SCALE * (A @ mu)
    ks = np.zeros((k, k, 3, M), np.float32)                  # Conv2DTranspose: (k, k, out, in)
    ks[..., m_old:] = (U / (BYPASS_GAIN * BYPASS_OUT_SCALE)).reshape(k, k, 3, rank)
    variables["bypass_analysis/bypass/kernel"].assign(ka)
    variables["bypass_analysis/bypass/bias"].assign(ba)
    variables["bypass_synthesis/bypass/kernel"].assign(ks)
    # and the mean of what the old path misses, per colour channel (the bias of a
    # transposed convolution is per output channel)
    variables["bypass_synthesis/bypass/bias"].assign(
        (R.mean(0).reshape(k, k, 3).mean((0, 1)) / BYPASS_OUT_SCALE).astype(np.float32))
    # The new latents' predicted scale starts at their spread on the crops (not at the
    # smallest scale, which would make them cost many bits until the bias has moved:
    # Adam moves a bias by about the learning rate per step).
    std = BYPASS_GAIN * np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", A, cxx, A), 1e-12))
    bias = variables["hyper_synthesis/conv2/bias"]
    b = bias.numpy()
    b[M + m_old:] = np.log(np.maximum(std, SCALE_MIN))
    bias.assign(b)


def _blocks(x, k):
    """(H, W, 3) -> (H/k * W/k, k*k*3) blocks in (row, column, channel) order."""
    h, w = x.shape[0] // k * k, x.shape[1] // k * k
    return (x[:h, :w].reshape(h // k, k, w // k, k, 3).transpose(0, 2, 1, 3, 4)
            .reshape(-1, k * k * 3))
