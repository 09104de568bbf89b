"""How biased is the lower-variance gradient of soft rounding (UN+UQ+SR)?

Agustsson & Theis (2020) replace two derivatives in the training relaxation of a
soft-rounding model by their expectations over the uniform noise ``u``: the
rate term's ``h'(s + u)`` by ``h(s + 1/2) - h(s - 1/2)`` and the decoder input's
``r_alpha'(s + u)`` by 1 (``model.noisy_latent`` with ``low_variance``). Each is
exact for its own term, but the loss couples them (the downstream gradient
depends on the same ``u``), so the estimator's mean need not be the gradient of
the expected loss. This measures it: the mean of the plain (reparametrized)
gradient over many draws of ``u`` (a Monte Carlo estimate of the true gradient)
against the mean of the lower-variance gradient over the same number of draws,
on one fixed batch, for every weight of the model.

Reported per model (a stage of training): the relative bias
``|E[g_lv] - E[g]| / |E[g]|``, their cosine, the part of that difference that the
Monte Carlo noise alone explains (``noise``: the expected norm of the
difference of two means if there were no bias), and the per-draw variance of
each estimator relative to ``|E[g]|^2``.
"""
import numpy as np

from . import _tf


def gradient_bias(model, x, lmbda, alpha, draws=64, seed=0, rate=None):
    """Statistics of the two gradient estimators (see the module doc) on batch ``x``
    (float32, (B, H, W, 3) in [0, 1]). ``rate``: a variable-rate model's lambda
    position t in [0, 1] (``lmbda`` must be the lambda of that position)."""
    tf, _ = _tf.load()
    x = tf.constant(x, tf.float32)
    variables = model.trainable_variables
    num_pixels = float(np.prod(x.shape[:3]))

    def grad(low_variance, step):
        with tf.GradientTape() as tape:
            y = model.analyze(x)
            z = model.hyper_latent(y)
            noise = tuple(None if t is None else tf.random.stateless_uniform(
                tf.shape(t), tf.stack([step, 2 * seed + i]), -0.5, 0.5)
                for i, t in enumerate((y, z)))
            x_hat, bits_y, bits_z = model.relaxed(y, z, alpha, alpha, low_variance, noise=noise,
                                                  rate=rate)
            mse = tf.reduce_mean(tf.square(x - x_hat)) * 255.0 ** 2
            loss = (bits_y + bits_z) / num_pixels + lmbda * mse
        g = tape.gradient(loss, variables)
        return tf.concat([tf.reshape(tf.cast(v, tf.float64), [-1]) for v in g], 0)

    stats = {}
    for name, lv in (("plain", False), ("low_variance", True)):
        fn = tf.function(lambda step, lv=lv: grad(lv, step))
        s1 = s2 = 0.0
        for k in range(draws):
            g = fn(tf.constant(k, tf.int64)).numpy()
            s1 = s1 + g
            s2 = s2 + float(g @ g)
        mean = s1 / draws
        stats[name] = (mean, s2 / draws - float(mean @ mean))  # mean, trace of variance
    (m_p, v_p), (m_l, v_l) = stats["plain"], stats["low_variance"]
    ref = float(m_p @ m_p)
    diff = m_l - m_p
    return {"draws": draws, "alpha": float(alpha),
            "rel_bias": float(np.sqrt(diff @ diff / ref)),
            "cosine": float(m_l @ m_p / np.sqrt(ref * float(m_l @ m_l))),
            "noise": float(np.sqrt((v_p + v_l) / draws / ref)),
            "var_plain": v_p / ref, "var_low_variance": v_l / ref}


def table(rows):
    """Markdown table of ``[(label, steps, stats)]``."""
    out = ["| model | steps | alpha | draws | rel. bias of E[g_lv] | cosine | MC noise floor | "
           "variance per draw: plain | low-variance |",
           "|---|---|---|---|---|---|---|---|---|"]
    for label, steps, s in rows:
        out.append(f"| {label} | {steps} | {s['alpha']:.2f} | {s['draws']} | {s['rel_bias']:.3f} | "
                   f"{s['cosine']:.4f} | {s['noise']:.3f} | {s['var_plain']:.2f} | "
                   f"{s['var_low_variance']:.2f} |")
    return "\n".join(out) + "\n"
