"""The toy family in training: shared Keras GDN stacks + a factorized prior."""
from uqcodec.training import _tf
from uqcodec.training.layers import GDNAnalysis, GDNSynthesis
from uqcodec.training.model import BaseModel, factorized_latent

from .inference import DEPTH

tf, tfc = _tf.load()


class ToyModel(BaseModel):
    arch = "toy"
    defaults = {"N": 8, "M": 8}

    @staticmethod
    def pad_multiple(cfg):
        return 2 ** DEPTH

    def make(self, cfg, conv_dtype):
        self.analysis = GDNAnalysis(cfg["N"], cfg["M"], conv_dtype, depth=DEPTH)
        self.synthesis = GDNSynthesis(cfg["N"], conv_dtype, depth=DEPTH)
        self.factorized = tfc.DeepFactorized(batch_shape=(cfg["M"],), name="prior")

    def hyper_latent(self, y):
        return None

    def relaxed(self, y, z=None, alpha=None, alpha_r=None, low_variance=True, noise=(None, None),
                rate=None, log_gain=None):
        y_dec, bits_y = factorized_latent(self.factorized, y, alpha, alpha_r, low_variance,
                                          noise[0])
        return self.synthesis(y_dec), bits_y, tf.constant(0.0)
