"""The mean & scale hyperprior in training: Keras layers and the training relaxation.

Minnen et al. (2018) without context model: four 5x5 stride-2 convolutions with
GDN (analysis), their transposed mirror with inverse GDN (synthesis), a
hyper-analysis and a hyper-synthesis that predicts a mean and a log-scale for
every latent element, a factorized prior on ``z``. The inference side of the same
family: ``uqcodec/hyperprior.py`` (with the integer hyper-synthesis of ``intnet.py``).
"""
from ..constants import (BYPASS_IN_SCALE, BYPASS_OUT_SCALE, LOG_SCALE_MIN, RATE_KNOT_SCALE,
                         RATE_KNOTS)
from . import _tf, priors
from .layers import conv_layer, gdn_transforms
from .model import BaseModel, noisy_latent

tf, tfc = _tf.load()
layers = tf.keras.layers


class HyperAnalysis(tf.keras.Sequential):
    """h_a: y -> z with 4x downsampling."""

    def __init__(self, N, conv_dtype="float32"):
        super().__init__(name="hyper_analysis")
        self.add(conv_layer(N, 3, 1, "conv0", conv_dtype, activation="relu"))
        self.add(conv_layer(N, 5, 2, "conv1", conv_dtype, activation="relu"))
        self.add(conv_layer(N, 5, 2, "conv2", conv_dtype))
        self.add(layers.Activation("linear", dtype="float32", name="out"))


class HyperSynthesis(tf.keras.Sequential):
    """h_s: z_hat -> (mean, log_scale) of every element of y."""

    def __init__(self, N, M, conv_dtype="float32"):
        super().__init__(name="hyper_synthesis")
        self.add(conv_layer(N, 5, 2, "deconv0", conv_dtype, transpose=True, activation="relu"))
        self.add(conv_layer(N * 3 // 2, 5, 2, "deconv1", conv_dtype, transpose=True,
                       activation="relu"))
        self.add(conv_layer(2 * M, 3, 1, "conv2", conv_dtype))
        self.add(layers.Activation("linear", dtype="float32", name="out"))

    def mean_log_scale(self, z_hat):
        out = self(z_hat)
        mean, log_scale = tf.split(out, 2, axis=-1)
        return mean, log_scale


class Rate(tf.Module):
    """Variable rate: the log-gain of the latents as a function of the position
    ``t`` in [0, 1] of the training lambda on its log range (piecewise linear over
    RATE_KNOTS learned knots, started at log a = 1/2 log(lambda / lambda_hi)).

    The variable holds the knots divided by KNOT_SCALE, so that Adam (which moves a
    weight by about the learning rate per step) moves the gains KNOT_SCALE times
    faster than the transforms' weights; ``knots`` are the log-gains themselves."""
    KNOT_SCALE = RATE_KNOT_SCALE

    def __init__(self, lambda_range):
        super().__init__(name="rate")
        lo, hi = (float(v) for v in lambda_range)
        t = tf.linspace(0.0, 1.0, RATE_KNOTS)
        init = 0.5 * (t - 1.0) * float(tf.math.log(hi / lo))
        self.log_gain = tf.Variable(init / self.KNOT_SCALE, name="log_gain")

    @property
    def knots(self):
        return self.log_gain * self.KNOT_SCALE

    def assign_knots(self, values):
        self.log_gain.assign(tf.constant(values, tf.float32) / self.KNOT_SCALE)

    def __call__(self, t):
        pos = tf.clip_by_value(t, 0.0, 1.0) * (RATE_KNOTS - 1)
        i = tf.minimum(tf.cast(tf.floor(pos), tf.int32), RATE_KNOTS - 2)
        f = pos - tf.cast(i, tf.float32)
        k = self.knots
        return (1.0 - f) * tf.gather(k, i) + f * tf.gather(k, i + 1)


class HyperpriorModel(BaseModel):
    """``bypass`` K (config): a linear K x K stride-K convolution beside the analysis
    (summed into y) and its transposed twin beside the synthesis, a path that is easy
    to invert. ``lambda_range`` [lo, hi]: one model for every rate (``Rate``)."""
    arch = "hyperprior"
    defaults = {"N": 128, "M": 192}

    @staticmethod
    def pad_multiple(cfg):
        return 64

    def make(self, cfg, conv_dtype):
        self.analysis, self.synthesis = gdn_transforms(cfg, conv_dtype)
        self.hyper_analysis = HyperAnalysis(cfg["N"], conv_dtype)
        self.hyper_synthesis = HyperSynthesis(cfg["N"], cfg["M"], conv_dtype)
        self.factorized = tfc.DeepFactorized(batch_shape=(cfg["N"],), name="hyperprior")
        k = int(cfg.get("bypass") or 0)
        if k:
            self.bypass_analysis = conv_layer(cfg["M"], k, k, "bypass", conv_dtype)
            self.bypass_synthesis = conv_layer(3, k, k, "bypass", conv_dtype, transpose=True)
        if cfg.get("lambda_range"):
            self.rate = Rate(cfg["lambda_range"])

    def analyze(self, x):
        y = self.analysis(x)
        if hasattr(self, "bypass_analysis"):
            y = y + BYPASS_IN_SCALE * tf.cast(self.bypass_analysis(x), tf.float32)
        return y

    def synthesize(self, y):
        x = self.synthesis(y)
        if hasattr(self, "bypass_synthesis"):
            x = x + BYPASS_OUT_SCALE * tf.cast(self.bypass_synthesis(y), tf.float32)
        return x

    def hyper_latent(self, y):
        return self.hyper_analysis(y)

    def relaxed(self, y, z=None, alpha=None, alpha_r=None, low_variance=True, noise=(None, None),
                rate=None, log_gain=None):
        """``rate``: for a variable-rate model, the lambda position t in [0, 1]: y is coded
        as gain * y with mean and scale times the gain (universal quantization with step
        1 / gain), and divided by the gain again before the synthesis. ``log_gain``: that
        gain's log given directly (refinement: the codec's exact gain of a rate parameter)."""
        q = dict(alpha=alpha, alpha_r=alpha_r, low_variance=low_variance)
        z_dec, bits_z = noisy_latent(
            z, lambda lo, hi: priors.factorized_bin_prob(self.factorized, lo, hi), u=noise[1], **q)
        mean, log_scale = self.hyper_synthesis.mean_log_scale(z_dec)
        log_scale = tfc.lower_bound(log_scale, LOG_SCALE_MIN)
        if log_gain is None and rate is not None and hasattr(self, "rate"):
            log_gain = self.rate(rate)
        y_dec, bits_y = self.code_latent(y, mean, log_scale, log_gain, noise[0], q)
        return self.synthesize(y_dec), bits_y, bits_z

    def code_latent(self, y, mean, log_scale, log_gain, u, q):
        """The Gaussian conditional of ``y`` given its mean and log-scale (model domain):
        (decoder input, bits). With ``log_gain`` (variable rate) y is coded as gain * y with
        mean and scale times the gain, and divided by the gain again for the synthesis."""
        gain = None
        if log_gain is not None:
            gain = tf.exp(log_gain)
            y, mean, log_scale = y * gain, mean * gain, log_scale + log_gain
        scale = tf.exp(log_scale)
        y_dec, bits_y = noisy_latent(
            y, lambda lo, hi: priors.gaussian_bin_prob(lo, hi, mean, scale), u=u, **q)
        if gain is not None:
            y_dec = y_dec / gain
        return y_dec, bits_y
