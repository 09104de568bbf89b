"""The linear model in training: Keras layers and the training relaxation (TensorFlow).

One strided convolution (analysis) and its transposed convolution (synthesis),
no nonlinearity, and a factorized prior (tfc.DeepFactorized) on ``y``. The
inference side of the same family: ``uqcodec/linear.py``.
"""
from ..constants import LINEAR_GAIN
from . import _tf
from .layers import conv_layer
from .model import FactorizedPriorModel

tf, tfc = _tf.load()
layers = tf.keras.layers


class LinearAnalysis(tf.keras.Sequential):
    """x (N,H,W,3) in [0,1] -> y (N,H/s,W/s,M)."""

    def __init__(self, M, stride, kernel, conv_dtype="float32"):
        super().__init__(name="analysis")
        self.add(layers.Lambda(lambda x: (x - 0.5) * LINEAR_GAIN, name="center"))
        self.add(conv_layer(M, kernel, stride, "conv", conv_dtype))
        self.add(layers.Activation("linear", dtype="float32", name="out"))


class LinearSynthesis(tf.keras.Sequential):
    """y_hat -> x_hat (unclipped, in [0,1] units)."""

    def __init__(self, stride, kernel, conv_dtype="float32"):
        super().__init__(name="synthesis")
        self.add(conv_layer(3, kernel, stride, "conv", conv_dtype, transpose=True))
        self.add(layers.Lambda(lambda x: tf.cast(x, tf.float32) / LINEAR_GAIN + 0.5,
                               dtype="float32", name="uncenter"))


class LinearModel(FactorizedPriorModel):
    arch = "linear"
    defaults = {"M": 192, "stride": 8, "kernel": 16}

    @staticmethod
    def pad_multiple(cfg):
        return cfg["stride"]

    def make(self, cfg, conv_dtype):
        self.analysis = LinearAnalysis(cfg["M"], cfg["stride"], cfg["kernel"], conv_dtype)
        self.synthesis = LinearSynthesis(cfg["stride"], cfg["kernel"], conv_dtype)
        self.factorized = tfc.DeepFactorized(batch_shape=(cfg["M"],), name="prior")
