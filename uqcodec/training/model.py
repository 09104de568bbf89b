"""A compression model in training: the family's transforms and priors, with weight I/O.

``CompressionModel(config)`` builds the training model of ``config["arch"]``, looked up
in the family registry (``uqcodec/families.py``): the family's Keras transforms and
priors (``linear.py``, ``hyperprior.py``, ...) on the shared ``BaseModel`` (weight I/O,
the training forward pass). Every sub-module a model holds is saved: ``named_variables``
finds them, and a trainable weight outside them is refused (``check_saved``), so a new
part cannot be trained and then left out of ``weights.npz``. ``noisy_latent`` is the
training proxy of quantization; ``save_model_dir`` and ``factorized_tables`` write a
model directory for the codec.
"""
import io
import json
import os

import numpy as np

from .. import entropy, families as F, quantization
from . import _tf, priors
from ..errors import CodecError
from ..codec import coding_card, model_fingerprint
from .layers import conv_layer  # noqa: F401  (families build their layers with it)

tf, tfc = _tf.load()
layers = tf.keras.layers

# Config keys that fix the shape of a model's weights (a warm start or resume must keep
# them); a family adds its own as ``size_keys``.
SIZE_KEYS = ("N", "M", "stride", "kernel", "latent_gain", "bypass", "lambda_range")


def model_class(arch):
    """The training model class of family ``arch`` (ValueError if unknown)."""
    try:
        family = F.get(arch)
    except CodecError as e:  # an unknown family
        raise ValueError(str(e)) from None
    return family.training_class()


def size_keys(arch):
    return SIZE_KEYS + tuple(getattr(model_class(arch), "size_keys", ()))


def CompressionModel(config, conv_dtype="float32"):  # noqa: N802  (constructs a model)
    """The training model of ``config["arch"]``."""
    return model_class(config.get("arch"))(config, conv_dtype)


def full_config(config):
    """Fill family defaults into a config dict."""
    cfg = dict(model_class(config["arch"]).defaults)
    cfg.update(config)
    cfg.setdefault("training", "un")
    cfg.setdefault("alpha", None)
    return cfg


def pad_multiple(cfg):
    """Image sizes are padded to a multiple of this before the analysis transform."""
    return model_class(cfg["arch"]).pad_multiple(cfg)


class BaseModel(tf.Module):
    """Transforms and priors of one model; a family (``linear.py``, ``hyperprior.py``)
    adds ``defaults`` (config), ``pad_multiple``, ``make`` (its layers, each an attribute),
    ``hyper_latent`` and ``relaxed``."""

    def __init__(self, config, conv_dtype="float32"):
        super().__init__(name="uqcodec")
        self.config = cfg = full_config(config)
        self.make(cfg, conv_dtype)
        self.build_weights()
        self.check_saved()

    def build_weights(self):
        """Create every weight: one relaxed forward pass on a small blank image, with zero
        noise (no random numbers drawn)."""
        m = self.pad_multiple(self.config)
        y = self.analyze(tf.zeros((1, m, m, 3)))
        z = self.hyper_latent(y)
        self.relaxed(y, z, noise=(tf.zeros_like(y), None if z is None else tf.zeros_like(z)),
                     rate=tf.constant(0.5) if self.config.get("lambda_range") else None)

    # --- training graph -----------------------------------------------------
    def analyze(self, x):
        """x -> y (a family may add paths beside ``analysis``)."""
        return self.analysis(x)

    def synthesize(self, y):
        return self.synthesis(y)

    def forward(self, x, alpha=None, alpha_r=None, low_variance=True, rate=None):
        """Noisy forward pass. Returns (x_hat, bits_y, bits_z) summed over the batch.

        ``alpha`` (soft rounding s_alpha, None for additive noise only) and
        ``alpha_r`` (the r_alpha of the decoder input, default ``alpha``);
        ``low_variance`` takes the expectation over the noise in the gradient.
        ``relaxed`` does the same from given latents ``y`` (and ``z``), with optional
        noise ``(u_y, u_z)``. ``rate``: a variable-rate model's lambda position in [0, 1].
        """
        y = self.analyze(x)
        return self.relaxed(y, self.hyper_latent(y), alpha, alpha_r, low_variance, rate=rate)

    # --- weights --------------------------------------------------------------
    def parts(self):
        """{attribute: sub-module} of every part this model holds (its transforms, priors,
        gains, ...): what is saved, each part's weights named ``part/variable``."""
        return {k: v for k, v in sorted(vars(self).items())
                if not k.startswith("_") and isinstance(v, tf.Module)}

    def named_variables(self):
        """{stable name: tf.Variable} for every weight of the model."""
        out = {}
        for part, module in self.parts().items():
            for v in module.trainable_variables:
                name = part + "/" + v.name.split(":")[0]
                if name in out:
                    raise RuntimeError(f"duplicate variable name {name}")
                out[name] = v
        return out

    def check_saved(self):
        """Refuse a model with trainable weights that ``named_variables`` would not save
        (a sub-module kept somewhere else than in an attribute of the model)."""
        saved = {id(v) for v in self.named_variables().values()}
        lost = [v.name for v in self.trainable_variables if id(v) not in saved]
        if lost:
            raise ValueError(f"{type(self).__name__}: trainable weights that would not be "
                             f"saved: {', '.join(sorted(lost)[:5])}")

    def weights_npz(self, half=True):
        """Serialize weights (conv kernels as float16 when ``half``) to npz bytes."""
        self.check_saved()
        arrays = {}
        for name, v in sorted(self.named_variables().items()):
            a = v.numpy()
            if half and "kernel" in name:
                a = a.astype(np.float16)
            arrays[name] = a
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    def load_weights_npz(self, path_or_bytes, fresh=()):
        """Load every weight; names starting with a prefix in ``fresh`` may be missing
        (they keep their initial values)."""
        data = np.load(io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes)
                       else path_or_bytes)
        variables = self.named_variables()
        missing = {n for n in set(variables) - set(data.files) if not n.startswith(tuple(fresh))}
        if missing:
            raise ValueError(f"weights file lacks {sorted(missing)[:3]}")
        for name, v in variables.items():
            if name in data.files:
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


def factorized_latent(prior, y, alpha=None, alpha_r=None, low_variance=True, u=None):
    """``noisy_latent`` of a latent coded with a factorized prior (tfc.DeepFactorized):
    (decoder input, bits)."""
    return noisy_latent(y, lambda lo, hi: priors.factorized_bin_prob(prior, lo, hi),
                        alpha, alpha_r, low_variance, u)


class FactorizedPriorModel(BaseModel):
    """A family whose latent ``y`` has a factorized prior (``self.factorized``, a
    tfc.DeepFactorized) and no hyper-latent: the linear model, and any transforms over
    the same prior."""

    def hyper_latent(self, y):
        return None

    def relaxed(self, y, z=None, alpha=None, alpha_r=None, low_variance=True, noise=(None, None),
                rate=None, log_gain=None):
        y_dec, bits_y = factorized_latent(self.factorized, y, alpha, alpha_r, low_variance,
                                          noise[0])
        return self.synthesize(y_dec), bits_y, tf.constant(0.0)


def save_model_dir(model, out_dir, card):
    """Write weights.npz + tables.npz + model.json into out_dir (atomically per file)."""
    os.makedirs(out_dir, exist_ok=True)
    wbytes = model.weights_npz(half=True)
    # Reload the shipped (float16) weights so tables match exactly what ships.
    model.load_weights_npz(wbytes)
    tables = factorized_tables(model)
    _atomic_write(os.path.join(out_dir, "weights.npz"), wbytes)
    tables = {k: (v.astype(np.float16) if k == "probs" else v) for k, v in tables.items()}
    buf = io.BytesIO()
    np.savez_compressed(buf, **tables)
    _atomic_write(os.path.join(out_dir, "tables.npz"), buf.getvalue())
    card = dict(card)
    card.update({k: model.config[k] for k in model.config})
    # what files of format 4 carry (informational: the decoder computes it from the files)
    card["fingerprint"] = model_fingerprint(dict(np.load(io.BytesIO(wbytes))), tables,
                                            coding_card(card))
    _atomic_write(os.path.join(out_dir, "model.json"),
                  (json.dumps(card, indent=2, sort_keys=True) + "\n").encode())
    return card


def _atomic_write(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# --- coding tables of the factorized prior (computed at export) -------------

def factorized_tables(model):
    """Per-channel probability tables of a model's factorized prior.

    Returns {"lo": (C,), "size": (C,), "probs": (sum_c size_c, LEVELS+1)} as
    float32: row j of channel c's block is P(k | u_j) for k = lo_c .. lo_c+size_c-1,
    with the end bins holding the tail mass. Soft-rounding models use the
    soft-rounding-inverted bin edges.
    """
    from tensorflow_compression.python.distributions import helpers
    prior = model.factorized
    alpha = model.config.get("alpha") if model.config.get("training") == "sr" else None
    # traced: TFC's tail search is a loop of gradient steps, slow when run eagerly
    lower = tf.function(lambda: helpers.lower_tail(prior, entropy.TAIL_MASS))().numpy()
    upper = tf.function(lambda: helpers.upper_tail(prior, entropy.TAIL_MASS))().numpy()
    lo = np.floor(lower).astype(np.int64) - 1
    hi = np.ceil(upper).astype(np.int64) + 1
    size = hi - lo + 1
    u = np.concatenate([quantization.level_values(), [0.0]])  # (L+1,)
    C, smax = len(lo), int(size.max())
    # Bin edges of every channel, padded to a common length: (L+1, smax+1, C).
    k = lo[None, :] + np.minimum(np.arange(smax)[:, None], size[None, :] - 1)  # (smax, C)
    v = k[None, :, :].astype(np.float64) + u[:, None, None]
    e_lo = quantization.soft_round_inverse(v - 0.5, alpha)
    e_hi = quantization.soft_round_inverse(v + 0.5, alpha)
    edges = np.concatenate([e_lo, e_hi[:, -1:, :]], axis=1)
    logits = np.empty(edges.shape)
    flat = edges.reshape(-1, C)
    out = logits.reshape(-1, C)
    for i in range(0, len(flat), 65536):
        out[i:i + 65536] = prior._logits_cumulative(
            tf.constant(flat[i:i + 65536], tf.float32)).numpy()
    blocks = []
    for c in range(C):
        n = int(size[c])
        lg = np.concatenate([logits[:, :n, c], logits[:, -1:, c] * 0 + _last_edge(
            prior, e_hi[:, n - 1, c], c, C, tf)], axis=1) if n < smax else logits[:, :, c]
        cdf = 1.0 / (1.0 + np.exp(-lg))
        sf = 1.0 / (1.0 + np.exp(lg))
        # Interior bins by CDF or survival differences (whichever is more precise).
        p = np.where(lg[:, :-1] + lg[:, 1:] > 0, sf[:, :-1] - sf[:, 1:], cdf[:, 1:] - cdf[:, :-1])
        p[:, 0] = cdf[:, 1]
        p[:, -1] = sf[:, -2]
        blocks.append(np.maximum(p, 0.0).T.astype(np.float32))  # (S, L+1)
    probs = np.concatenate(blocks, axis=0)
    return {"lo": lo, "size": size, "probs": probs}


def _last_edge(prior, edge, c, C, tf):
    """Logits of the upper edge of channel c's last bin (shape (L+1,))."""
    x = np.zeros((len(edge), C), np.float32)
    x[:, c] = edge
    return prior._logits_cumulative(tf.constant(x)).numpy()[:, c:c + 1].astype(np.float64)
