"""The nonlinear factorized-prior model in training (Ballé et al. 2017/2018): the
hyperprior's GDN transforms (``layers.GDNAnalysis`` / ``GDNSynthesis``, with its latent
gain) over a learned factorized prior on ``y`` (``FactorizedPriorModel``), no
hyper-latent. A warm start from a hyperprior model loads its transforms; the prior
(part ``prior``: the hyperprior's own ``factorized`` is its prior on ``z``) starts
fresh. Inference: ``uqcodec/factorized.py``."""
from . import _tf
from ..factorized import MULTIPLE
from .layers import gdn_transforms
from .model import FactorizedPriorModel

tf, tfc = _tf.load()


class FactorizedModel(FactorizedPriorModel):
    arch = "factorized"
    defaults = {"N": 64, "M": 128}

    @staticmethod
    def pad_multiple(cfg):
        return MULTIPLE

    def make(self, cfg, conv_dtype):
        self.analysis, self.synthesis = gdn_transforms(cfg, conv_dtype)
        self.prior = tfc.DeepFactorized(batch_shape=(cfg["M"],), name="prior")

    @property
    def factorized(self):  # what FactorizedPriorModel and the export's tables use
        return self.prior
