"""The mean & scale hyperprior (Minnen et al. 2018, no context model): inference.

Analysis: four 5x5 stride-2 convolutions with GDN (16x downsampling) -> ``y``;
hyper-analysis: 3x3 conv + two 5x5 stride-2 convolutions with ReLU -> ``z``;
``z`` is coded with the factorized prior's tables; the hyper-synthesis (an
integer network, ``intnet.py``) gives the snapped mean and the scale index of
every element of ``y``, which is coded with Gaussian tables; the synthesis
(transposed convolutions with inverse GDN) rebuilds the image.
Per tile three streams: ``[z, y, escapes]``. Training's Keras version of the
same layers: ``training/hyperprior.py``.
"""
import functools

import numpy as np

from . import engine as E, entropy, intnet
from .constants import (BYPASS_IN_SCALE, BYPASS_OUT_SCALE, LOG_SCALE_STEP, MEAN_STEP, RATE_DIV,
                        RATE_KNOT_SCALE)
from .onnxgraph import Graph

MULTIPLE = 64  # images are padded to a multiple of this


class Hyperprior:
    streams = 3  # per tile, escapes last

    def __init__(self, weights, tables, card, rounding):
        self.N, self.M = int(card["N"]), int(card["M"])
        self.multiple = MULTIPLE
        gain = float(card.get("latent_gain") or 1.0)
        self.rounding = rounding
        self._weights, self._gain = weights, gain
        self.bypass = int(card.get("bypass") or 0)
        self.factorized = entropy.FactorizedCoder(tables)
        f = self.factorized
        self.hyper_synthesis = intnet.HyperSynthesis(weights, self.M, f.lo - 1.0, f.hi + 1.0)
        self.gaussian = entropy.GaussianCoder(rounding.alpha)
        # variable rate: the learned log-gain at RATE_KNOTS points of the lambda range
        knots = weights.get("rate/log_gain")
        self.rate_knots = None if knots is None else knots.astype(np.float64) * RATE_KNOT_SCALE
        self.lambda_range = card.get("lambda_range")

    @property
    def variable(self):
        return self.rate_knots is not None

    def rate_at(self, t):
        """Rate parameter for position ``t`` in [0, 1] of the lambda range (encoder side:
        the decoder only needs the parameter, which the header carries)."""
        k = np.asarray(self.rate_knots, np.float64)
        log_gain = np.interp(t * (len(k) - 1), np.arange(len(k)), k)
        return int(np.rint(log_gain * RATE_DIV / LOG_SCALE_STEP))

    # The float32 transforms, built on first use (a decoder never needs the analysis).
    @functools.cached_property
    def analysis(self):
        w, g = self._weights, Graph(3)
        for i in range(3):
            E.conv(g, w, f"analysis/conv{i}", 2)
            E.gdn(g, w, f"analysis/gdn{i}")
        E.conv(g, w, "analysis/conv3", 2)
        if self._gain != 1.0:
            E.scale(g, self._gain)
        if self.bypass:  # the linear path beside the analysis
            main = g.last
            E.conv(g, w, "bypass_analysis/bypass", self.bypass, src="x")
            E.scale(g, BYPASS_IN_SCALE)
            E.add(g, main, g.last)
        return E.Transform(g, self.M)

    @functools.cached_property
    def synthesis(self):
        w, g = self._weights, Graph(self.M)
        if self._gain != 1.0:
            E.scale(g, 1.0 / self._gain)
        for i in range(3):
            E.deconv(g, w, f"synthesis/deconv{i}")
            E.gdn(g, w, f"synthesis/igdn{i}", inverse=True)
        E.deconv(g, w, "synthesis/deconv3")
        if self.bypass:  # the linear path beside the synthesis
            main = g.last
            E.deconv(g, w, "bypass_synthesis/bypass", self.bypass, src="x")
            E.scale(g, BYPASS_OUT_SCALE)
            E.add(g, main, g.last)
        return E.Transform(g, 3)

    @functools.cached_property
    def hyper_analysis(self):
        w, g = self._weights, Graph(self.M)
        E.conv(g, w, "hyper_analysis/conv0", 1, relu=True)
        E.conv(g, w, "hyper_analysis/conv1", 2, relu=True)
        E.conv(g, w, "hyper_analysis/conv2", 2)
        return E.Transform(g, self.N)

    def latent_shapes(self, height, width):
        """Shapes of (y, z) for a tile of this size (padded to MULTIPLE)."""
        H, W = -(-height // MULTIPLE) * MULTIPLE, -(-width // MULTIPLE) * MULTIPLE
        return (H // 16, W // 16, self.M), (H // 64, W // 64, self.N)

    def analyze(self, x):
        """Padded image (H, W, 3) in [0, 1] -> latents (y, z), float64."""
        y = self.analysis(x).astype(np.float64)
        return y, self.hyper_analysis(y).astype(np.float64)

    def encode(self, latents, dither, quantizer, esc, rate=0):
        """-> (streams except escapes, rate in bits, decoder input of y). ``rate``: the
        rate parameter of a variable-rate model (y is coded at gain ``rate_gain(rate)``)."""
        y, z = latents
        z_dec, kz, rows, zstream = entropy.encode_factorized(
            self.factorized, z, dither, quantizer, self.rounding, esc)
        gain = entropy.rate_gain(rate) if rate else 1.0
        mean_q, idx, c, u = self._gaussian(z_dec, y.shape, dither, quantizer, gain)
        d = np.rint(self.rounding.s(y.ravel() * gain) - c - u).astype(np.int64)
        enc = entropy.new_encoder()
        bits_y = self.gaussian.at_rate(rate).encode(enc, d, mean_q, idx, c, u, esc)
        bits = bits_y + self.factorized.bits(kz, rows)
        y_dec = self.rounding.decoder_input(c + d + u).reshape(y.shape)
        return [zstream, entropy.finish(enc)], bits, (y_dec / gain if rate else y_dec)

    def decode(self, streams, shapes, dither, quantizer, esc, rate=0):
        yshape, zshape = shapes
        z_dec = entropy.decode_factorized(self.factorized, streams[0], zshape, dither,
                                          quantizer, self.rounding, esc)
        gain = entropy.rate_gain(rate) if rate else 1.0
        mean_q, idx, c, u = self._gaussian(z_dec, yshape, dither, quantizer, gain)
        d = self.gaussian.at_rate(rate).decode(entropy.new_decoder(streams[1]), mean_q, idx,
                                               c, u, esc)
        y_dec = self.rounding.decoder_input(c + d + u).reshape(yshape)
        return y_dec / gain if rate else y_dec

    def _gaussian(self, z_dec, yshape, dither, quantizer, gain=1.0):
        """Coding parameters of y (flat, C order) from the decoder input of z: snapped mean
        (times the gain of a variable-rate model: one correctly rounded product), scale
        index (both exact), offset c and dither u (see entropy.gaussian_offsets)."""
        mean_index, idx = self.hyper_synthesis(z_dec)
        mean_q = mean_index.ravel() * MEAN_STEP
        if gain != 1.0:
            mean_q = mean_q * gain
        c, u = entropy.gaussian_offsets(mean_q, yshape, dither, quantizer)
        return mean_q, idx.ravel(), c, u
