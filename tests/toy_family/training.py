"""The toy family in training: shared Keras GDN stacks + a factorized prior."""
from uqcodec.training import _tf
from uqcodec.training.layers import GDNAnalysis, GDNSynthesis
from uqcodec.training.model import FactorizedPriorModel

from .inference import DEPTH

tf, tfc = _tf.load()


class ToyModel(FactorizedPriorModel):
    arch = "toy"
    defaults = {"N": 8, "M": 8}

    @staticmethod
    def pad_multiple(cfg):
        return 2 ** DEPTH

    def make(self, cfg, conv_dtype):
        self.analysis = GDNAnalysis(cfg["N"], cfg["M"], conv_dtype, depth=DEPTH)
        self.synthesis = GDNSynthesis(cfg["N"], conv_dtype, depth=DEPTH)
        self.factorized = tfc.DeepFactorized(batch_shape=(cfg["M"],), name="prior")
