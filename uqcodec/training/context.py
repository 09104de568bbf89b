"""The context model in training: the mean & scale hyperprior, plus context networks that
correct each latent's mean and scale from what the decoder already has.

``y`` is split into channel groups (uneven, as in ELIC: He et al. 2022) coded one after
the other; with ``checkerboard`` each group is coded in two halves (He et al., CVPR
2021): the anchors, then the other positions, which also see the decoded anchors around
them. The network of group ``g`` sees, at every latent position, what the decoder has:

* ``context_inputs: residual`` (uqcodec 0.15): the group's hyper log-scale, the
  *normalized residuals* ``(y_dec - mean) / scale`` of the groups before it (under the
  hyper-synthesis' mean and scale, clamped to +-CONTEXT_CLAMP) and for the second half
  the group's decoded anchors' residuals (zeros in the first half) and a flag; it
  outputs a mean correction in units of the hyper scale and a log-scale correction.
  On frozen transforms (12 minutes) they saved 4.7 % on Kodak where the raw inputs
  below saved 0.2 % (docs/history.md, "The context model's third round").
* ``raw`` (uqcodec 0.14): the group's hyper mean and log-scale, the decoded latents of
  the groups before it and the group's decoded anchors, all divided by CONTEXT_DIV; it
  outputs a mean correction (model units) and a log-scale correction.

The networks' last layers start at zero, so a warm start from a mean & scale hyperprior
starts as that model. The decoder input that the context sees is what the codec's
decoder has: with universal quantization it does not depend on the mean. Inference
(exact integer networks): ``uqcodec/context.py``.
"""
from ..constants import (CONTEXT_CLAMP, CONTEXT_DIV, CONTEXT_INPUTS, CONTEXT_OUT_SCALE,
                         LOG_SCALE_MAX, LOG_SCALE_MIN)
from . import _tf
from .hyperprior import HyperpriorModel
from .layers import conv_layer

tf, tfc = _tf.load()
layers = tf.keras.layers
# train --context: both parts (default), the checkerboard alone (one group of all
# channels), the channel groups alone (no checkerboard)
CONTEXT_PARTS = ("both", "checkerboard", "groups")


def default_groups(M):
    """ELIC's uneven channel groups (16, 16, 32, 64, rest of 192) scaled to M channels."""
    sizes = [max(1, round(M * f)) for f in (1 / 12, 1 / 12, 1 / 6, 1 / 3)]
    return sizes + [M - sum(sizes)]


def anchor_mask(h, w):
    """1 at the anchors of the checkerboard ((row + column) even), else 0: (h, w)."""
    i = tf.range(h)[:, None] + tf.range(w)[None, :]
    return tf.cast(tf.equal(i % 2, 0), tf.float32)


def decoder_input(y, alpha=None, alpha_r=None, low_variance=True, u=None):
    """The decoder input of ``noisy_latent`` (same value and gradient), without the rate."""
    if alpha is None:
        return y + u
    alpha_r = alpha if alpha_r is None else alpha_r
    s = tfc.ops.soft_round(y, alpha)
    if not low_variance:
        return tfc.ops.soft_round_conditional_mean(s + u, alpha_r)
    s0 = tf.stop_gradient(s)
    return tfc.ops.soft_round_conditional_mean(s0 + u, alpha_r) + (s - s0)


class ContextNets(tf.Module):
    """One parameter network per channel group: 3x3 conv (ReLU), 1x1 (ReLU), 1x1 (times
    CONTEXT_OUT_SCALE) -> the corrections (mean, log-scale) of the group's channels."""

    def __init__(self, M, groups, hidden, checkerboard, conv_dtype="float32", inputs="residual"):
        super().__init__(name="context")
        self.groups, self.checkerboard = list(groups), bool(checkerboard)
        if inputs not in CONTEXT_INPUTS:
            raise ValueError(f"context_inputs {inputs!r} is not one of {CONTEXT_INPUTS}")
        self.residual = inputs == "residual"
        if sum(self.groups) != M:
            raise ValueError(f"context groups {self.groups} do not add up to M={M}")
        self.nets = []
        for g, n in enumerate(self.groups):
            net = tf.keras.Sequential(name=f"g{g}")
            net.add(conv_layer(hidden, 3, 1, f"g{g}_conv0", conv_dtype, activation="relu"))
            net.add(conv_layer(hidden, 1, 1, f"g{g}_conv1", conv_dtype, activation="relu"))
            last = conv_layer(2 * n, 1, 1, f"g{g}_conv2", conv_dtype)
            last.kernel_initializer = tf.keras.initializers.Zeros()
            net.add(last)
            net.add(layers.Activation("linear", dtype="float32", name=f"g{g}_out"))
            self.nets.append(net)

    @staticmethod
    def _clamp(t):
        return tf.clip_by_value(t / CONTEXT_DIV, -CONTEXT_CLAMP, CONTEXT_CLAMP)

    def __call__(self, mean, log_scale, y_dec):
        """Hyper-synthesis parameters and the decoder input of y (model domain, all known
        in training) -> corrected (mean, log-scale)."""
        h, w = tf.shape(y_dec)[1], tf.shape(y_dec)[2]
        anchors = anchor_mask(h, w)[None, :, :, None]
        log_scale_in = tf.clip_by_value(log_scale, LOG_SCALE_MIN, LOG_SCALE_MAX)
        if self.residual:  # the decoder's view of y: residuals in units of the hyper scale
            scale = tf.exp(log_scale_in)
            ctx = tf.clip_by_value((y_dec - mean) / scale, -CONTEXT_CLAMP, CONTEXT_CLAMP)
        else:
            ctx = self._clamp(y_dec)
        means, log_scales, a = [], [], 0
        for g, (n, net) in enumerate(zip(self.groups, self.nets)):
            b = a + n
            parts = [log_scale_in[..., a:b]]
            if not self.residual:
                parts.insert(0, self._clamp(mean[..., a:b]))
            if a:
                parts.append(ctx[..., :a])
            if self.checkerboard:
                zeros = tf.zeros_like(y_dec[..., a:b])
                first = net(tf.concat(parts + [zeros, zeros[..., :1]], -1))
                second = net(tf.concat(parts + [ctx[..., a:b] * anchors,
                                                tf.ones_like(zeros[..., :1])], -1))
                out = anchors * first + (1.0 - anchors) * second
            else:
                out = net(tf.concat(parts, -1))
            out = out * CONTEXT_OUT_SCALE
            d_mean = out[..., :n] * scale[..., a:b] if self.residual else out[..., :n]
            means.append(mean[..., a:b] + d_mean)
            log_scales.append(log_scale[..., a:b] + out[..., n:])
            a = b
        return tf.concat(means, -1), tfc.lower_bound(tf.concat(log_scales, -1), LOG_SCALE_MIN)


class ContextModel(HyperpriorModel):
    """``groups`` (channel group sizes, default ``default_groups(M)``; one group: no
    channel context), ``checkerboard`` (two halves per group), ``context_hidden``
    (width of the parameter networks)."""
    arch = "context"
    defaults = {"N": 128, "M": 192, "checkerboard": True, "context_hidden": 64,
                "context_inputs": "residual"}
    size_keys = ("groups", "checkerboard", "context_hidden", "context_inputs")
    options = ("context",)  # train --context (CONTEXT_PARTS)

    def __init__(self, config, conv_dtype="float32"):
        config = dict(config)
        if config.get("groups") and "context_inputs" not in config:
            config["context_inputs"] = "raw"  # a model or run of uqcodec 0.14
        M = config.get("M") or self.defaults["M"]
        parts = config.pop("context", None) or "both"  # train --context: which parts
        if parts not in CONTEXT_PARTS:
            raise ValueError(f"context {parts!r} is not one of {CONTEXT_PARTS}")
        if parts == "checkerboard" and not config.get("groups"):
            config["groups"] = [M]
        if parts == "groups":
            config.setdefault("checkerboard", False)
        if not config.get("groups"):
            config["groups"] = default_groups(M)
        super().__init__(config, conv_dtype)

    def make(self, cfg, conv_dtype):
        super().make(cfg, conv_dtype)
        self.context = ContextNets(cfg["M"], cfg["groups"], cfg["context_hidden"],
                                   cfg["checkerboard"], conv_dtype, cfg["context_inputs"])

    def code_latent(self, y, mean, log_scale, log_gain, u, q):
        if u is None:
            u = tf.random.uniform(tf.shape(y), -0.5, 0.5, dtype=y.dtype)
        gain = 1.0 if log_gain is None else tf.exp(log_gain)
        # what the decoder has of y (model domain): independent of the parameters
        y_ctx = decoder_input(y * gain, u=u, **q) / gain
        mean, log_scale = self.context(mean, log_scale, y_ctx)
        return super().code_latent(y, mean, log_scale, log_gain, u, q)
