"""Analysis and synthesis transforms of the two model families (Keras layers).

* ``linear``: one strided convolution (analysis) and one transposed convolution
  (synthesis), no nonlinearity.
* ``hyperprior``: the mean & scale hyperprior of Minnen et al. (2018) without
  context model: four 5x5 stride-2 convolutions with GDN, a hyper-analysis and a
  hyper-synthesis that predicts a mean and a log-scale for every latent element.

Images enter as float32 in [0, 1], NHWC. ``conv_dtype`` lets training run the
convolutions in bfloat16 (GDN always runs in float32); inference uses float32.
"""
from . import _tf

tf, tfc = _tf.load()
layers = tf.keras.layers

LOG_SCALE_MIN = -2.2072749131897207  # log(0.11), the scale lower bound
LINEAR_GAIN = 8.0  # linear models see (x - 1/2) * 8: a unit quantization step is ~32 pixel levels at init


def _conv(filters, kernel, stride, name, dtype, transpose=False, activation=None):
    cls = layers.Conv2DTranspose if transpose else layers.Conv2D
    return cls(filters, kernel, strides=stride, padding="same", use_bias=True,
               activation=activation, name=name, dtype=dtype)


class LinearAnalysis(tf.keras.Sequential):
    """x (N,H,W,3) in [0,1] -> y (N,H/s,W/s,M)."""

    def __init__(self, M, stride, kernel, conv_dtype="float32"):
        super().__init__(name="analysis")
        self.add(layers.Lambda(lambda x: (x - 0.5) * LINEAR_GAIN, name="center"))
        self.add(_conv(M, kernel, stride, "conv", conv_dtype))
        self.add(layers.Activation("linear", dtype="float32", name="out"))


class LinearSynthesis(tf.keras.Sequential):
    """y_hat -> x_hat (unclipped, in [0,1] units)."""

    def __init__(self, stride, kernel, conv_dtype="float32"):
        super().__init__(name="synthesis")
        self.add(_conv(3, kernel, stride, "conv", conv_dtype, transpose=True))
        self.add(layers.Lambda(lambda x: tf.cast(x, tf.float32) / LINEAR_GAIN + 0.5,
                               dtype="float32", name="uncenter"))


class HyperAnalysis(tf.keras.Sequential):
    """GDN conv stack: x -> y with 16x downsampling."""

    def __init__(self, N, M, conv_dtype="float32", gain=1.0):
        super().__init__(name="analysis")
        for i in range(3):
            self.add(_conv(N, 5, 2, f"conv{i}", conv_dtype))
            self.add(tfc.GDN(name=f"gdn{i}", dtype="float32"))
        self.add(_conv(M, 5, 2, "conv3", conv_dtype))
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
            self.add(_conv(N, 5, 2, f"deconv{i}", conv_dtype, transpose=True))
            self.add(tfc.GDN(inverse=True, name=f"igdn{i}", dtype="float32"))
        self.add(_conv(3, 5, 2, "deconv3", conv_dtype, transpose=True))
        self.add(layers.Activation("linear", dtype="float32", name="out"))


class HyperPriorAnalysis(tf.keras.Sequential):
    """h_a: y -> z with 4x downsampling."""

    def __init__(self, N, conv_dtype="float32"):
        super().__init__(name="hyper_analysis")
        self.add(_conv(N, 3, 1, "conv0", conv_dtype, activation="relu"))
        self.add(_conv(N, 5, 2, "conv1", conv_dtype, activation="relu"))
        self.add(_conv(N, 5, 2, "conv2", conv_dtype))
        self.add(layers.Activation("linear", dtype="float32", name="out"))


class HyperPriorSynthesis(tf.keras.Sequential):
    """h_s: z_hat -> (mean, log_scale) of every element of y."""

    def __init__(self, N, M, conv_dtype="float32"):
        super().__init__(name="hyper_synthesis")
        self.add(_conv(N, 5, 2, "deconv0", conv_dtype, transpose=True, activation="relu"))
        self.add(_conv(N * 3 // 2, 5, 2, "deconv1", conv_dtype, transpose=True,
                       activation="relu"))
        self.add(_conv(2 * M, 3, 1, "conv2", conv_dtype))
        self.add(layers.Activation("linear", dtype="float32", name="out"))

    def mean_log_scale(self, z_hat):
        out = self(z_hat)
        mean, log_scale = tf.split(out, 2, axis=-1)
        return mean, log_scale
