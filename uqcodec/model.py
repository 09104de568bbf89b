"""What every family's inference model is: float32 transforms + one latent codec.

A family (``linear.py``, ``hyperprior.py``, ...; registered in ``families.py``)
subclasses ``InferenceModel`` and gives its analysis and synthesis graphs (built on
first use: a decoder never needs the analysis), its latent codec
(``latent_codecs.py``), the multiple images are padded to and the latent shapes of a
tile. The tile pipeline (``codec.py``) only talks to this interface.

Variable rate: a model whose weights hold ``rate/log_gain`` (learned log-gains at
RATE_KNOTS points of its lambda range) codes its latents at the gain of the header's
rate parameter; ``rate_at`` is the encoder's choice of that parameter.
"""
import functools

import numpy as np

from .constants import LOG_SCALE_STEP, RATE_DIV, RATE_KNOT_SCALE


class InferenceModel:
    multiple = 64  # images are padded to a multiple of this (a family may change it)
    # The card fields that decide decoding: the model sees only these (``codec.py`` passes
    # a card restricted to them), and the file's fingerprint covers them (format v4). A
    # family adds the fields its own constructor reads.
    coding_keys = ("arch", "training", "alpha", "alpha_r")

    def __init__(self, weights, tables, card, rounding):
        self.weights, self.card, self.rounding = weights, card, rounding
        self.tables = tables
        knots = weights.get("rate/log_gain")
        self.rate_knots = None if knots is None else knots.astype(np.float64) * RATE_KNOT_SCALE

    @functools.cached_property
    def latent_codec(self):
        """Built on first use: a rate set loads all its models to choose one, and a
        model's integer networks take about 0.1 s to derive."""
        try:
            return self.make_latent_codec(self.weights, self.tables, self.card, self.rounding)
        except KeyError as e:
            from .errors import CodecError
            raise CodecError(f"the model's files are incomplete (no {e})") from None

    # --- what a family defines -------------------------------------------------------
    def make_latent_codec(self, weights, tables, card, rounding):
        raise NotImplementedError

    def build_analysis(self):
        """The analysis graph: padded image (H, W, 3) in [0, 1] -> y (``engine.Transform``)."""
        raise NotImplementedError

    def build_synthesis(self):
        """The synthesis graph: decoder input of y -> image in [0, 1] (unclipped)."""
        raise NotImplementedError

    def latent_shapes(self, height, width):
        """Shapes of the latents (``latent_codec.latents`` order) of a tile of this size."""
        raise NotImplementedError

    # --- the interface of the tile pipeline ------------------------------------------
    @functools.cached_property
    def analysis(self):
        return self.build_analysis()

    @functools.cached_property
    def synthesis(self):
        return self.build_synthesis()

    @property
    def streams(self):
        """Streams per tile: the latent codec's, then the escapes."""
        return self.latent_codec.streams + 1

    @property
    def variable(self):
        """True for a variable-rate model (one model, every rate in its lambda range)."""
        return self.rate_knots is not None

    def rate_at(self, t):
        """Rate parameter for position ``t`` in [0, 1] of the lambda range (encoder side:
        the decoder only needs the parameter, which the header carries)."""
        k = np.asarray(self.rate_knots, np.float64)
        log_gain = np.interp(t * (len(k) - 1), np.arange(len(k)), k)
        return int(np.rint(log_gain * RATE_DIV / LOG_SCALE_STEP))

    def analyze(self, x):
        """Padded image (H, W, 3) in [0, 1] -> the latents (float64 tuple)."""
        return self.latent_codec.latents(self.analysis(x).astype(np.float64))

    def encode(self, latents, dither, quantizer, esc, rate=0):
        """-> (streams except escapes, rate in bits, decoder input of y)."""
        return self.latent_codec.encode(latents, dither, quantizer, esc, rate)

    def decode(self, streams, shapes, dither, quantizer, esc, rate=0):
        return self.latent_codec.decode(streams, shapes, dither, quantizer, esc, rate)

    def noise(self, shapes, dither, quantizer):
        """The dither of each latent that a file with this dither uses (None: rounding)."""
        return self.latent_codec.noise(shapes, dither, quantizer)
