"""A compression model: transforms + priors of one family, with weight I/O.

``CompressionModel(config)`` builds the Keras transforms of ``config["arch"]``
("linear" or "hyperprior") and the factorized prior (tfc.DeepFactorized) of the
factorized latent (``y`` for linear, ``z`` for hyperprior). ``forward`` is the
training graph (noisy latents, rate in bits); the codec uses the transform
methods (``analysis``, ``hyper_params``...) on real quantized values.
"""
import io
import json
import os

import numpy as np

from . import _tf, priors
from .codec import fingerprint  # noqa: F401  (export and cards use it)

tf, tfc = _tf.load()
from . import transforms as T  # noqa: E402

DEFAULTS = {
    "linear": {"M": 192, "stride": 8, "kernel": 16},
    "hyperprior": {"N": 128, "M": 192},
}
PAD_MULTIPLE = {"linear": None, "hyperprior": 64}
# Config keys that fix the shape of a model's weights (a warm start or resume must keep them).
SIZE_KEYS = ("N", "M", "stride", "kernel", "latent_gain")


def full_config(config):
    """Fill family defaults into a config dict."""
    cfg = dict(DEFAULTS[config["arch"]])
    cfg.update(config)
    cfg.setdefault("training", "un")
    cfg.setdefault("alpha", None)
    return cfg


def pad_multiple(cfg):
    """Image sizes are padded to a multiple of this before the analysis transform."""
    return cfg["stride"] if cfg["arch"] == "linear" else 64


class CompressionModel(tf.Module):
    """Transforms and priors of one model."""

    def __init__(self, config, conv_dtype="float32"):
        super().__init__(name="uqcodec")
        self.config = cfg = full_config(config)
        self.arch = cfg["arch"]
        if self.arch == "linear":
            self.analysis = T.LinearAnalysis(cfg["M"], cfg["stride"], cfg["kernel"], conv_dtype)
            self.synthesis = T.LinearSynthesis(cfg["stride"], cfg["kernel"], conv_dtype)
            self.factorized = tfc.DeepFactorized(batch_shape=(cfg["M"],), name="prior")
        elif self.arch == "hyperprior":
            gain = float(cfg.get("latent_gain") or 1.0)
            self.analysis = T.HyperAnalysis(cfg["N"], cfg["M"], conv_dtype, gain)
            self.synthesis = T.HyperSynthesis(cfg["N"], conv_dtype, gain)
            self.hyper_analysis = T.HyperPriorAnalysis(cfg["N"], conv_dtype)
            self.hyper_synthesis = T.HyperPriorSynthesis(cfg["N"], cfg["M"], conv_dtype)
            self.factorized = tfc.DeepFactorized(batch_shape=(cfg["N"],), name="hyperprior")
        else:
            raise ValueError(f"unknown architecture {self.arch!r}")
        self._build()

    def _build(self):
        m = pad_multiple(self.config)
        x = tf.zeros((1, m, m, 3))
        y = self.analysis(x)
        self.synthesis(y)
        if self.arch == "hyperprior":
            self.hyper_synthesis(self.hyper_analysis(y))
        self.factorized.cdf(tf.zeros((1, self.factorized.batch_shape[0])))

    # --- training graph -----------------------------------------------------
    def forward(self, x, alpha=None, alpha_r=None, low_variance=True):
        """Noisy forward pass. Returns (x_hat, bits_y, bits_z) summed over the batch.

        ``alpha`` (soft rounding s_alpha, None for additive noise only) and
        ``alpha_r`` (the r_alpha of the decoder input, default ``alpha``);
        ``low_variance`` takes the expectation over the noise in the gradient.
        """
        y = self.analysis(x)
        z = self.hyper_analysis(y) if self.arch == "hyperprior" else None
        return self.relaxed(y, z, alpha, alpha_r, low_variance)

    def relaxed(self, y, z=None, alpha=None, alpha_r=None, low_variance=True, noise=(None, None)):
        """The training relaxation from given latents ``y`` (and ``z``): noisy decoder
        inputs, rates and reconstruction, as ``forward``. ``noise``: optional (u_y, u_z)."""
        q = dict(alpha=alpha, alpha_r=alpha_r, low_variance=low_variance)
        if self.arch == "linear":
            y_dec, bits_y = noisy_latent(
                y, lambda lo, hi: priors.factorized_bin_prob(self.factorized, lo, hi),
                u=noise[0], **q)
            bits_z = tf.constant(0.0)
        else:
            z_dec, bits_z = noisy_latent(
                z, lambda lo, hi: priors.factorized_bin_prob(self.factorized, lo, hi),
                u=noise[1], **q)
            mean, log_scale = self.hyper_synthesis.mean_log_scale(z_dec)
            scale = tf.exp(tfc.lower_bound(log_scale, T.LOG_SCALE_MIN))
            y_dec, bits_y = noisy_latent(
                y, lambda lo, hi: priors.gaussian_bin_prob(lo, hi, mean, scale), u=noise[0], **q)
        x_hat = self.synthesis(y_dec)
        return x_hat, bits_y, bits_z

    # --- weights --------------------------------------------------------------
    def named_variables(self):
        """{stable name: tf.Variable} for every weight of the model."""
        out = {}
        parts = ["analysis", "synthesis", "hyper_analysis", "hyper_synthesis", "factorized"]
        for part in parts:
            if not hasattr(self, part):
                continue
            for v in getattr(self, part).trainable_variables:
                name = part + "/" + v.name.split(":")[0]
                if name in out:
                    raise RuntimeError(f"duplicate variable name {name}")
                out[name] = v
        return out

    def weights_npz(self, half=True):
        """Serialize weights (conv kernels as float16 when ``half``) to npz bytes."""
        arrays = {}
        for name, v in sorted(self.named_variables().items()):
            a = v.numpy()
            if half and "kernel" in name:
                a = a.astype(np.float16)
            arrays[name] = a
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    def load_weights_npz(self, path_or_bytes):
        data = np.load(io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes)
                       else path_or_bytes)
        variables = self.named_variables()
        missing = set(variables) - set(data.files)
        if missing:
            raise ValueError(f"weights file lacks {sorted(missing)[:3]}")
        for name, v in variables.items():
            v.assign(data[name].astype(np.float32))


def noisy_latent(y, bin_prob, alpha=None, alpha_r=None, low_variance=True, u=None):
    """Training proxy of (universal) quantization: returns (decoder input, bits).

    Additive noise: v = y + u, decoder input v, rate -log2 P(v-1/2 < Y < v+1/2).
    Soft rounding: v = s_alpha(y) + u, decoder input r_alpha(v), rate from the
    bins s_inv(v -/+ 1/2). With ``low_variance`` the gradient with respect to
    s_alpha(y) uses expectations over u (Agustsson & Theis 2020): for the
    log-probability h, E_u[h'(s + u)] = h(s + 1/2) - h(s - 1/2), and for r_alpha,
    E_u[r'(s + u)] = r(s + 1/2) - r(s - 1/2) = 1. Values are unchanged; gradients
    with respect to the prior's parameters are exact. ``u``: the noise (default: drawn).
    """
    if u is None:
        u = tf.random.uniform(tf.shape(y), -0.5, 0.5, dtype=y.dtype)
    if alpha is None:
        v = y + u
        return v, priors.bits(bin_prob(v - 0.5, v + 0.5))
    alpha_r = alpha if alpha_r is None else alpha_r
    s = tfc.ops.soft_round(y, alpha)
    if not low_variance:
        v = s + u
        return (tfc.ops.soft_round_conditional_mean(v, alpha_r),
                priors.bits(bin_prob(*priors.bin_edges(v, alpha))))
    s0 = tf.stop_gradient(s)
    v0 = s0 + u
    bits = priors.bits(bin_prob(*priors.bin_edges(v0, alpha)))
    h_hi = priors.log2_prob(bin_prob(*priors.bin_edges(s0 + 0.5, alpha)))
    h_lo = priors.log2_prob(bin_prob(*priors.bin_edges(s0 - 0.5, alpha)))
    bits -= tf.reduce_sum(tf.stop_gradient(h_hi - h_lo) * (s - s0))
    r = tfc.ops.soft_round_conditional_mean(v0, alpha_r)
    return r + (s - s0), bits


def save_model_dir(model, out_dir, card):
    """Write weights.npz + tables.npz + model.json into out_dir (atomically per file)."""
    from . import entropy
    os.makedirs(out_dir, exist_ok=True)
    wbytes = model.weights_npz(half=True)
    # Reload the shipped (float16) weights so tables match exactly what ships.
    model.load_weights_npz(wbytes)
    tables = entropy.factorized_tables(model)
    _atomic_write(os.path.join(out_dir, "weights.npz"), wbytes)
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: (v.astype(np.float16) if k == "probs" else v) for k, v in tables.items()})
    _atomic_write(os.path.join(out_dir, "tables.npz"), buf.getvalue())
    card = dict(card)
    card.update({k: model.config[k] for k in model.config})
    card["fingerprint"] = fingerprint(wbytes)
    _atomic_write(os.path.join(out_dir, "model.json"),
                  (json.dumps(card, indent=2, sort_keys=True) + "\n").encode())
    return card


def _atomic_write(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
