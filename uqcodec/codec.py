"""The codec pipeline: pixels -> latents -> symbols -> bytes, and back.

``Codec`` wraps one loaded model (weights, coding tables, card). Encoder and
decoder share every step that builds a coding distribution, so the decoder
reproduces the encoder's reconstruction bit for bit:

1. pad the image to the transform's multiple (edge replication), analysis;
2. hyper-latent ``z`` (hyperprior only): universal quantization with dither on a
   256-level grid, factorized tables, decoder input ``z_hat`` (``r_alpha`` under
   soft rounding), hyper-synthesis -> mean and scale, snapped to fixed grids;
3. latent ``y``: universally quantized with continuous dither (Gaussian) or
   grid dither (factorized, linear models);
4. synthesis, crop, clip, round to 8 bits.
"""
import atexit
import gc
import os
import threading
import time

import numpy as np

from . import container, entropy, quantization as Q
from .errors import CodecError

_cache = {}
_lock = threading.Lock()


@atexit.register
def _release():
    """Free the models before interpreter teardown (TensorFlow prints noise otherwise)."""
    _cache.clear()
    gc.collect()


def load(path):
    """Load (and cache) the model in directory ``path``."""
    path = os.path.abspath(path)
    with _lock:
        if path not in _cache:
            _cache[path] = Codec(path)
        return _cache[path]


class Codec:
    def __init__(self, path):
        from . import zoo, _tf
        from .model import CompressionModel, fingerprint
        tf, _ = _tf.load()
        self.tf = tf
        self.card = zoo.read_card(path)
        self.name = self.card["name"]
        try:
            with open(os.path.join(path, "weights.npz"), "rb") as f:
                wbytes = f.read()
            tables = dict(np.load(os.path.join(path, "tables.npz")))
        except (OSError, ValueError) as e:
            raise CodecError(f"{path}: cannot read model files ({e})") from None
        self.fingerprint = fingerprint(wbytes)
        self.model = CompressionModel(self.card)
        self.model.load_weights_npz(wbytes)
        self.arch = self.model.arch
        self.alpha = self.card.get("alpha") if self.card.get("training") == "sr" else None
        self.factorized = entropy.FactorizedCoder(tables)
        self.gaussian = entropy.GaussianCoder(self.alpha)
        from .model import pad_multiple
        self.multiple = pad_multiple(self.model.config)
        self.transform_seconds = 0.0  # time spent in TensorFlow (for benchmarks)
        m = self.model
        spec = lambda c: tf.TensorSpec([1, None, None, c], tf.float32)  # noqa: E731
        self._analysis = tf.function(m.analysis.call, input_signature=[spec(3)])
        self._synthesis = tf.function(m.synthesis.call,
                                      input_signature=[spec(m.config["M"])])
        if self.arch == "hyperprior":
            self._hyper_analysis = tf.function(m.hyper_analysis.call,
                                               input_signature=[spec(m.config["M"])])
            self._hyper_synthesis = tf.function(m.hyper_synthesis.call,
                                                input_signature=[spec(m.config["N"])])

    # --- helpers ---------------------------------------------------------------
    def _sr(self, x):
        return Q.soft_round(x, self.alpha)

    def _dec_input(self, v):
        return Q.soft_round_conditional_mean(v, self.alpha)

    def _run(self, fn, x):
        t = time.perf_counter()
        out = fn(self.tf.constant(x[None].astype(np.float32)))[0].numpy().astype(np.float64)
        self.transform_seconds += time.perf_counter() - t
        return out

    def latent_shape(self, height, width):
        m = self.multiple
        H, W = -(-height // m) * m, -(-width // m) * m
        if self.arch == "linear":
            s = self.model.config["stride"]
            return (H // s, W // s, self.model.config["M"]), None
        return (H // 16, W // 16, self.model.config["M"]), (H // 64, W // 64,
                                                             self.model.config["N"])

    def _hyper(self, z_dec):
        out = self._run(self._hyper_synthesis, z_dec)
        M = self.model.config["M"]
        return out[..., :M], out[..., M:]

    def _synthesize(self, y_dec, height, width):
        x = self._run(self._synthesis, y_dec)[:height, :width]
        return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)

    # --- encode ----------------------------------------------------------------
    def encode(self, rgb, seed, quantizer="uq", mode="RGB", reconstruct=False):
        """HxWx3 uint8 -> (file bytes, info). info has the model's rate in bits
        (sum of -log2 P(k|u) with unsnapped parameters) and, when asked, the
        encoder-side reconstruction."""
        h, w = rgb.shape[:2]
        m = self.multiple
        H, W = -(-h // m) * m, -(-w // m) * m
        x = np.pad(rgb, ((0, H - h), (0, W - w), (0, 0)), mode="edge").astype(np.float64) / 255.0
        y = self._run(self._analysis, x)
        dither = Q.Dither(seed)
        esc = entropy.EscapeWriter()
        streams = []
        info = {}
        if self.arch == "hyperprior":
            z = self._run(self._hyper_analysis, y)
            z_dec, kz, rows_z, zstream = self._encode_factorized(z, dither, quantizer, esc)
            streams.append(zstream)
            mean, log_scale = self._hyper(z_dec)
            y_dec, ystream, rate_y = self._encode_gaussian(y, mean, log_scale, dither,
                                                           quantizer, esc)
            streams.append(ystream)
            info["rate_bits"] = rate_y + self.factorized.bits(kz, rows_z)
        else:
            y_dec, ky, rows_y, ystream = self._encode_factorized(y, dither, quantizer, esc)
            streams.append(ystream)
            info["rate_bits"] = self.factorized.bits(ky, rows_y)
        streams.append(bytes(esc.buf))
        header = container.Header(self.name, self.fingerprint, quantizer, h, w, mode,
                                  int(seed), [len(s) for s in streams])
        data = container.pack(header, streams)
        if reconstruct:
            info["reconstruction"] = self._synthesize(y_dec, h, w)
        return data, info

    def _encode_factorized(self, t, dither, quantizer, esc):
        if quantizer == "uq":
            rows, u = dither.levels(t.shape)
        else:
            rows, u = np.full(t.shape, entropy.ROUND_ROW, np.int64), np.zeros(t.shape)
        k = np.rint(self._sr(t) - u).astype(np.int64)
        enc = entropy.new_encoder()
        self.factorized.encode(enc, k, rows, esc)
        return self._dec_input(k + u), k, rows, entropy.finish(enc)

    def _gauss_params(self, mean, quantizer, dither, shape):
        mean_q = entropy.snap_mean(mean).ravel()
        if quantizer == "uq":
            u = dither.continuous(shape).ravel()
            c = np.rint(mean_q)
        else:
            u = np.zeros(mean_q.shape)
            c = mean_q
        return mean_q, c, u

    def _encode_gaussian(self, y, mean, log_scale, dither, quantizer, esc):
        mean_q, c, u = self._gauss_params(mean, quantizer, dither, y.shape)
        idx = entropy.snap_scale_index(log_scale).ravel()
        d = np.rint(self._sr(y.ravel()) - c - u).astype(np.int64)
        enc = entropy.new_encoder()
        self.gaussian.encode(enc, d, mean_q, idx, c, u, esc)
        v = c + d + u
        # The model's own rate: training density with unsnapped parameters.
        scale = np.exp(np.maximum(log_scale.ravel(), np.log(entropy.SCALE_MIN)))
        p = entropy._bin_prob(Q.soft_round_inverse(v - 0.5, self.alpha),
                              Q.soft_round_inverse(v + 0.5, self.alpha), mean.ravel(), scale)
        rate = float(-np.log2(np.maximum(p, 1e-300)).sum())
        return self._dec_input(v).reshape(y.shape), entropy.finish(enc), rate

    # --- decode ----------------------------------------------------------------
    def decode(self, header, streams):
        """Header + streams -> HxWx3 uint8."""
        if header.fingerprint != self.fingerprint:
            raise CodecError(f"file was made with different weights for model {self.name!r} "
                             f"(fingerprint {header.fingerprint}, installed {self.fingerprint})")
        yshape, zshape = self.latent_shape(header.height, header.width)
        expected = 3 if self.arch == "hyperprior" else 2
        if len(streams) != expected:
            raise CodecError("corrupted file (wrong number of streams)")
        dither = Q.Dither(header.seed)
        esc = entropy.EscapeReader(streams[-1])
        try:
            if self.arch == "hyperprior":
                z_dec = self._decode_factorized(streams[0], zshape, dither, header.quantizer, esc)
                mean, log_scale = self._hyper(z_dec)
                mean_q, c, u = self._gauss_params(mean, header.quantizer, dither, yshape)
                idx = entropy.snap_scale_index(log_scale).ravel()
                dec = entropy.new_decoder(streams[1])
                d = self.gaussian.decode(dec, mean_q, idx, c, u, esc)
                y_dec = self._dec_input(c + d + u).reshape(yshape)
            else:
                y_dec = self._decode_factorized(streams[0], yshape, dither, header.quantizer, esc)
        except (ValueError, KeyError, RuntimeError, OverflowError, AssertionError) as e:
            raise CodecError(f"corrupted file (entropy decoding failed: {e})") from None
        return self._synthesize(y_dec, header.height, header.width)

    def _decode_factorized(self, data, shape, dither, quantizer, esc):
        if quantizer == "uq":
            rows, u = dither.levels(shape)
        else:
            rows, u = np.full(shape, entropy.ROUND_ROW, np.int64), np.zeros(shape)
        dec = entropy.new_decoder(data)
        k = self.factorized.decode(dec, rows, esc)
        return self._dec_input(k + u)
