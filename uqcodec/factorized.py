"""The nonlinear factorized-prior model (Ballé et al. 2017/2018, "factorized"): inference.

The hyperprior's GDN analysis and synthesis (four 5x5 stride-2 layers, 16x
downsampling, latent gain) with a learned factorized prior on ``y`` and no
hyper-latent: between the linear model (one linear layer each way, the same prior)
and the hyperprior (the same transforms, a prior predicted per element). The latents
are coded by a ``FactorizedLatentCodec`` (exact tables computed at export, one row per
dither level). Per tile two streams: ``[y, escapes]``. Training: ``training/
factorized.py``.
"""
from . import engine as E, latent_codecs as LC
from .model import InferenceModel
from .onnxgraph import Graph

MULTIPLE = 16  # images are padded to a multiple of this


class Factorized(InferenceModel):
    multiple = MULTIPLE
    coding_keys = InferenceModel.coding_keys + ("N", "M", "latent_gain")

    def __init__(self, weights, tables, card, rounding):
        self.N, self.M = int(card["N"]), int(card["M"])
        self._gain = float(card.get("latent_gain") or 1.0)
        super().__init__(weights, tables, card, rounding)

    def make_latent_codec(self, weights, tables, card, rounding):
        return LC.FactorizedLatentCodec(tables, rounding)

    def build_analysis(self):
        g = Graph(3)
        E.gdn_analysis(g, self.weights, "analysis")
        if self._gain != 1.0:
            E.scale(g, self._gain)
        return E.Transform(g, self.M)

    def build_synthesis(self):
        g = Graph(self.M)
        if self._gain != 1.0:
            E.scale(g, 1.0 / self._gain)
        E.gdn_synthesis(g, self.weights, "synthesis")
        return E.Transform(g, 3)

    def latent_shapes(self, height, width):
        H, W = -(-height // MULTIPLE) * MULTIPLE, -(-width // MULTIPLE) * MULTIPLE
        return ((H // 16, W // 16, self.M),)
