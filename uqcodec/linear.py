"""The linear model: one strided convolution, its transposed convolution, and a
factorized prior (inference).

The analysis sees ``(x - 1/2) * LINEAR_GAIN``; the latents ``y`` (one value per
channel every ``stride`` pixels) are coded by a ``FactorizedLatentCodec``. Per tile
two streams: ``[y, escapes]``. Training's Keras version: ``training/linear.py``.
"""
from . import engine as E, latent_codecs as LC
from .constants import LINEAR_GAIN
from .model import InferenceModel
from .onnxgraph import Graph


class Linear(InferenceModel):
    coding_keys = InferenceModel.coding_keys + ("M", "stride")

    def __init__(self, weights, tables, card, rounding):
        self.M, self.stride = int(card["M"]), int(card["stride"])
        self.multiple = self.stride  # images are padded to a multiple of this
        super().__init__(weights, tables, card, rounding)

    def make_latent_codec(self, weights, tables, card, rounding):
        return LC.FactorizedLatentCodec(tables, rounding)

    def build_analysis(self):
        g = Graph(3)
        E.scale(g, LINEAR_GAIN, -0.5 * LINEAR_GAIN)
        E.conv(g, self.weights, "analysis/conv", self.stride)
        return E.Transform(g, self.M)

    def build_synthesis(self):
        g = Graph(self.M)
        E.deconv(g, self.weights, "synthesis/conv", self.stride)
        E.scale(g, 1.0 / LINEAR_GAIN, 0.5)
        return E.Transform(g, 3)

    def latent_shapes(self, height, width):
        s = self.stride
        return (-(-height // s), -(-width // s), self.M),
