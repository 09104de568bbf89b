"""The context model (inference): the mean & scale hyperprior whose latents are coded by
channel groups and checkerboard halves, each part's Gaussian parameters corrected by an
exact integer network from the parts decoded before it (``latent_codecs.
ContextLatentCodec``). Transforms, hyper-analysis and hyper-synthesis are the
hyperprior's (``hyperprior.py``). Training: ``training/context.py``.
"""
import numpy as np

from . import constants as K, latent_codecs as LC
from .errors import CodecError
from .hyperprior import Hyperprior


class ContextHyperprior(Hyperprior):
    coding_keys = Hyperprior.coding_keys + ("groups", "checkerboard", "context_inputs")

    def make_latent_codec(self, weights, tables, card, rounding):
        hyper = super().make_latent_codec(weights, tables, card, rounding)
        groups, checker = [int(n) for n in card["groups"]], bool(card.get("checkerboard"))
        inputs_kind = card.get("context_inputs", "raw")  # 0.14's cards have no such field
        if inputs_kind not in K.CONTEXT_INPUTS:
            raise CodecError(f"unknown context_inputs {inputs_kind!r} in the model card")
        residual = inputs_kind == "residual"
        grid = K.CONTEXT_RESIDUAL_GRID if residual else K.MEAN_GRID
        nets, a = [], 0
        for g, n in enumerate(groups):
            clamp = lambda c: (np.full(c, -K.CONTEXT_CLAMP), np.full(c, K.CONTEXT_CLAMP))  # noqa
            inputs = [(np.full(n, K.LOG_SCALE_MIN), np.full(n, K.LOG_SCALE_MAX))]
            if not residual:
                inputs.insert(0, clamp(n))
            if a:
                inputs.append(clamp(a))
            if checker:
                inputs += [clamp(n), (np.zeros(1), np.ones(1))]
            names = [f"context/g{g}_conv{i}" for i in range(3)]
            layers = [(weights[m + "/kernel"], weights[m + "/bias"], False) for m in names]
            nets.append(LC.correction_net(layers, n, inputs, grid))
            a += n
        return LC.ContextLatentCodec(hyper, nets, groups, checker, residual)
