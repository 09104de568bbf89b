"""The toy family's inference model: shared GDN stacks + a factorized latent codec."""
from uqcodec import engine as E, latent_codecs as LC
from uqcodec.model import InferenceModel
from uqcodec.onnxgraph import Graph

DEPTH = 2  # two stride-2 layers: 4x downsampling


class Toy(InferenceModel):
    multiple = 2 ** DEPTH
    coding_keys = InferenceModel.coding_keys + ("M",)

    def __init__(self, weights, tables, card, rounding):
        self.M = int(card["M"])
        super().__init__(weights, tables, card, rounding)

    def make_latent_codec(self, weights, tables, card, rounding):
        return LC.FactorizedLatentCodec(tables, rounding)

    def build_analysis(self):
        g = Graph(3)
        E.gdn_analysis(g, self.weights, "analysis", DEPTH)
        return E.Transform(g, self.M)

    def build_synthesis(self):
        g = Graph(self.M)
        E.gdn_synthesis(g, self.weights, "synthesis", DEPTH)
        return E.Transform(g, 3)

    def latent_shapes(self, height, width):
        m = self.multiple
        return (-(-height // m), -(-width // m), self.M),
