"""The linear model: one strided convolution, its transposed convolution, and a
factorized prior (inference).

The analysis sees ``(x - 1/2) * LINEAR_GAIN``; the latents ``y`` (one value per
channel every ``stride`` pixels) are coded with the factorized prior's tables.
Per tile two streams: ``[y, escapes]``. Training's Keras version:
``training/linear.py``.
"""
import numpy as np

from . import engine as E, entropy
from .constants import LINEAR_GAIN
from .onnxgraph import Graph



class Linear:
    streams = 2  # per tile, escapes last

    def __init__(self, weights, tables, card, rounding):
        self.M, self.stride = int(card["M"]), int(card["stride"])
        self.multiple = self.stride  # images are padded to a multiple of this
        self.rounding = rounding
        g = Graph(3)
        E.scale(g, LINEAR_GAIN, -0.5 * LINEAR_GAIN)
        E.conv(g, weights, "analysis/conv", self.stride)
        self.analysis = E.Transform(g, self.M)
        g = Graph(self.M)
        E.deconv(g, weights, "synthesis/conv", self.stride)
        E.scale(g, 1.0 / LINEAR_GAIN, 0.5)
        self.synthesis = E.Transform(g, 3)
        self.factorized = entropy.FactorizedCoder(tables)

    def latent_shapes(self, height, width):
        s = self.stride
        return (-(-height // s), -(-width // s), self.M),

    def analyze(self, x):
        return self.analysis(x).astype(np.float64),

    variable = False  # one rate per model

    def encode(self, latents, dither, quantizer, esc, rate=0):
        y_dec, k, rows, stream = entropy.encode_factorized(
            self.factorized, latents[0], dither, quantizer, self.rounding, esc)
        return [stream], self.factorized.bits(k, rows), y_dec

    def decode(self, streams, shapes, dither, quantizer, esc, rate=0):
        return entropy.decode_factorized(self.factorized, streams[0], shapes[0], dither,
                                         quantizer, self.rounding, esc)
