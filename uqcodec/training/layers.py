"""Keras layers that several families share (TensorFlow): convolutions with TensorFlow's
"same" padding and the GDN transforms of Ballé et al. The inference engine builds the
same stacks from the saved weights (``uqcodec/engine.py``: ``gdn_analysis``,
``gdn_synthesis``)."""
from . import _tf

tf, tfc = _tf.load()
layers = tf.keras.layers


def conv_layer(filters, kernel, stride, name, dtype, transpose=False, activation=None):
    """A Keras (transposed) convolution with TensorFlow's "same" padding."""
    cls = layers.Conv2DTranspose if transpose else layers.Conv2D
    return cls(filters, kernel, strides=stride, padding="same", use_bias=True,
               activation=activation, name=name, dtype=dtype)


class GDNAnalysis(tf.keras.Sequential):
    """``depth`` 5x5 stride-2 convolutions with GDN between them: x -> y (16x downsampling
    with 4); ``gain``: a fixed gain on the output (y starts near unit scale)."""

    def __init__(self, N, M, conv_dtype="float32", gain=1.0, depth=4, name="analysis"):
        super().__init__(name=name)
        for i in range(depth - 1):
            self.add(conv_layer(N, 5, 2, f"conv{i}", conv_dtype))
            self.add(tfc.GDN(name=f"gdn{i}", dtype="float32"))
        self.add(conv_layer(M, 5, 2, f"conv{depth - 1}", conv_dtype))
        self.add(layers.Activation("linear", dtype="float32", name="out"))
        if gain != 1.0:
            self.add(layers.Lambda(lambda y: y * gain, dtype="float32", name="gain"))


class GDNSynthesis(tf.keras.Sequential):
    """The mirror of ``GDNAnalysis``: y_hat -> x_hat (unclipped, [0, 1] units)."""

    def __init__(self, N, conv_dtype="float32", gain=1.0, depth=4, name="synthesis"):
        super().__init__(name=name)
        if gain != 1.0:
            self.add(layers.Lambda(lambda y: y / gain, dtype="float32", name="ungain"))
        for i in range(depth - 1):
            self.add(conv_layer(N, 5, 2, f"deconv{i}", conv_dtype, transpose=True))
            self.add(tfc.GDN(inverse=True, name=f"igdn{i}", dtype="float32"))
        self.add(conv_layer(3, 5, 2, f"deconv{depth - 1}", conv_dtype, transpose=True))
        self.add(layers.Activation("linear", dtype="float32", name="out"))


def gdn_transforms(cfg, conv_dtype="float32"):
    """The analysis and synthesis of a config's N, M and latent gain (the hyperprior's, the
    factorized family's)."""
    gain = float(cfg.get("latent_gain") or 1.0)
    return (GDNAnalysis(cfg["N"], cfg["M"], conv_dtype, gain),
            GDNSynthesis(cfg["N"], conv_dtype, gain))
