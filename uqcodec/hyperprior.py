"""The mean & scale hyperprior (Minnen et al. 2018, no context model): inference.

Analysis: four 5x5 stride-2 convolutions with GDN (16x downsampling) -> ``y``;
hyper-analysis: 3x3 conv + two 5x5 stride-2 convolutions with ReLU -> ``z``. The
latents are coded by a ``HyperpriorLatentCodec`` (``latent_codecs.py``): ``z`` with
the factorized prior's tables, the snapped mean and the scale index of every element
of ``y`` from the integer hyper-synthesis (``intnet.py``), ``y`` with Gaussian tables;
the synthesis (transposed convolutions with inverse GDN) rebuilds the image. Per tile
three streams: ``[z, y, escapes]``. Optional: a linear bypass beside analysis and
synthesis, variable rate. Training's Keras version of the same layers:
``training/hyperprior.py``.
"""
import functools

import numpy as np

from . import engine as E, latent_codecs as LC
from .constants import BYPASS_IN_SCALE, BYPASS_OUT_SCALE
from .model import InferenceModel
from .onnxgraph import Graph

MULTIPLE = 64  # images are padded to a multiple of this


class Hyperprior(InferenceModel):
    multiple = MULTIPLE
    coding_keys = InferenceModel.coding_keys + ("N", "M", "latent_gain", "bypass")

    def __init__(self, weights, tables, card, rounding):
        self.N, self.M = int(card["N"]), int(card["M"])
        self._gain = float(card.get("latent_gain") or 1.0)
        self.bypass = int(card.get("bypass") or 0)
        super().__init__(weights, tables, card, rounding)

    def make_latent_codec(self, weights, tables, card, rounding):
        z_codec = LC.FactorizedLatentCodec(tables, rounding)
        names = ("hyper_synthesis/deconv0", "hyper_synthesis/deconv1", "hyper_synthesis/conv2")
        layers = [(weights[n + "/kernel"], weights[n + "/bias"], "deconv" in n) for n in names]
        hyper_synthesis = LC.gaussian_parameters(layers, self.M, [z_codec.support])
        return LC.HyperpriorLatentCodec(
            lambda y: self.hyper_analysis(y).astype(np.float64), hyper_synthesis, z_codec,
            LC.GaussianConditionalLatentCodec(rounding))

    def build_analysis(self):
        return E.Transform(self.analysis_graph(), self.M)

    def analysis_graph(self):
        w, g = self.weights, Graph(3)
        E.gdn_analysis(g, w, "analysis")
        if self._gain != 1.0:
            E.scale(g, self._gain)
        if self.bypass:  # the linear path beside the analysis
            main = g.last
            E.conv(g, w, "bypass_analysis/bypass", self.bypass, src="x")
            E.scale(g, BYPASS_IN_SCALE)
            E.add(g, main, g.last)
        return g

    def build_synthesis(self):
        return E.Transform(self.synthesis_graph(), 3)

    def synthesis_graph(self):
        w, g = self.weights, Graph(self.M)
        if self._gain != 1.0:
            E.scale(g, 1.0 / self._gain)
        E.gdn_synthesis(g, w, "synthesis")
        if self.bypass:  # the linear path beside the synthesis
            main = g.last
            E.deconv(g, w, "bypass_synthesis/bypass", self.bypass, src="x")
            E.scale(g, BYPASS_OUT_SCALE)
            E.add(g, main, g.last)
        return g

    def hyper_synthesis_graph(self):
        """The float32 hyper-synthesis: z_hat -> [mean, log-scale] (2 M channels; the codec
        uses the integer one, ``intnet.py``; encoder-side refinement this one)."""
        w, g = self.weights, Graph(self.N)
        E.deconv(g, w, "hyper_synthesis/deconv0", 2, relu=True)
        E.deconv(g, w, "hyper_synthesis/deconv1", 2, relu=True)
        E.conv(g, w, "hyper_synthesis/conv2", 1)
        return g

    @functools.cached_property
    def hyper_analysis(self):
        w, g = self.weights, Graph(self.M)
        E.conv(g, w, "hyper_analysis/conv0", 1, relu=True)
        E.conv(g, w, "hyper_analysis/conv1", 2, relu=True)
        E.conv(g, w, "hyper_analysis/conv2", 2)
        return E.Transform(g, self.N)

    def latent_shapes(self, height, width):
        """Shapes of (y, z) for a tile of this size (padded to MULTIPLE)."""
        H, W = -(-height // MULTIPLE) * MULTIPLE, -(-width // MULTIPLE) * MULTIPLE
        return (H // 16, W // 16, self.M), (H // 64, W // 64, self.N)
