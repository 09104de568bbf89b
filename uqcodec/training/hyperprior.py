"""The mean & scale hyperprior in training: Keras layers and the training relaxation.

Minnen et al. (2018) without context model: four 5x5 stride-2 convolutions with
GDN (analysis), their transposed mirror with inverse GDN (synthesis), a
hyper-analysis and a hyper-synthesis that predicts a mean and a log-scale for
every latent element, a factorized prior on ``z``. The inference side of the same
family: ``uqcodec/hyperprior.py`` (with the integer hyper-synthesis of ``intnet.py``).
"""
from ..constants import LOG_SCALE_MIN
from . import _tf, priors
from .model import BaseModel, conv_layer, noisy_latent

tf, tfc = _tf.load()
layers = tf.keras.layers


class HyperAnalysis(tf.keras.Sequential):
    """GDN conv stack: x -> y with 16x downsampling."""

    def __init__(self, N, M, conv_dtype="float32", gain=1.0):
        super().__init__(name="analysis")
        for i in range(3):
            self.add(conv_layer(N, 5, 2, f"conv{i}", conv_dtype))
            self.add(tfc.GDN(name=f"gdn{i}", dtype="float32"))
        self.add(conv_layer(M, 5, 2, "conv3", conv_dtype))
        self.add(layers.Activation("linear", dtype="float32", name="out"))
        if gain != 1.0:  # fixed latent gain (config "latent_gain"): y starts near unit scale
            self.add(layers.Lambda(lambda y: y * gain, dtype="float32", name="gain"))


class HyperSynthesis(tf.keras.Sequential):
    """Inverse-GDN transposed-conv stack: y_hat -> x_hat (unclipped, [0,1] units)."""

    def __init__(self, N, conv_dtype="float32", gain=1.0):
        super().__init__(name="synthesis")
        if gain != 1.0:
            self.add(layers.Lambda(lambda y: y / gain, dtype="float32", name="ungain"))
        for i in range(3):
            self.add(conv_layer(N, 5, 2, f"deconv{i}", conv_dtype, transpose=True))
            self.add(tfc.GDN(inverse=True, name=f"igdn{i}", dtype="float32"))
        self.add(conv_layer(3, 5, 2, "deconv3", conv_dtype, transpose=True))
        self.add(layers.Activation("linear", dtype="float32", name="out"))


class HyperPriorAnalysis(tf.keras.Sequential):
    """h_a: y -> z with 4x downsampling."""

    def __init__(self, N, conv_dtype="float32"):
        super().__init__(name="hyper_analysis")
        self.add(conv_layer(N, 3, 1, "conv0", conv_dtype, activation="relu"))
        self.add(conv_layer(N, 5, 2, "conv1", conv_dtype, activation="relu"))
        self.add(conv_layer(N, 5, 2, "conv2", conv_dtype))
        self.add(layers.Activation("linear", dtype="float32", name="out"))


class HyperPriorSynthesis(tf.keras.Sequential):
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


class HyperpriorModel(BaseModel):
    arch = "hyperprior"
    defaults = {"N": 128, "M": 192}

    @staticmethod
    def pad_multiple(cfg):
        return 64

    def make(self, cfg, conv_dtype):
        gain = float(cfg.get("latent_gain") or 1.0)
        self.analysis = HyperAnalysis(cfg["N"], cfg["M"], conv_dtype, gain)
        self.synthesis = HyperSynthesis(cfg["N"], conv_dtype, gain)
        self.hyper_analysis = HyperPriorAnalysis(cfg["N"], conv_dtype)
        self.hyper_synthesis = HyperPriorSynthesis(cfg["N"], cfg["M"], conv_dtype)
        self.factorized = tfc.DeepFactorized(batch_shape=(cfg["N"],), name="hyperprior")

    def hyper_latent(self, y):
        return self.hyper_analysis(y)

    def relaxed(self, y, z=None, alpha=None, alpha_r=None, low_variance=True, noise=(None, None)):
        q = dict(alpha=alpha, alpha_r=alpha_r, low_variance=low_variance)
        z_dec, bits_z = noisy_latent(
            z, lambda lo, hi: priors.factorized_bin_prob(self.factorized, lo, hi), u=noise[1], **q)
        mean, log_scale = self.hyper_synthesis.mean_log_scale(z_dec)
        scale = tf.exp(tfc.lower_bound(log_scale, LOG_SCALE_MIN))
        y_dec, bits_y = noisy_latent(
            y, lambda lo, hi: priors.gaussian_bin_prob(lo, hi, mean, scale), u=noise[0], **q)
        return self.synthesis(y_dec), bits_y, bits_z
