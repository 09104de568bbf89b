"""Version-1/2 files: the TensorFlow pipeline they were written with.

Before format version 3 the Gaussian parameters came from TensorFlow's float32
hyper-synthesis and the tables from NumPy/SciPy functions, so such a file decodes
only where those give the same bits as where it was written (the machine that
wrote it, and most machines like it). This module keeps that path unchanged,
decoder and encoder (``scripts/make_golden.py`` writes test files with it).

``LegacyCodec`` wraps one loaded model (weights, coding tables, card). Encoder and
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
import contextlib
import gc
import os
import signal
import threading
import time

import numpy as np

from .. import container, entropy, families, quantization as Q
from ..errors import CodecError

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
            with _interrupt_deferred():
                _cache[path] = LegacyCodec(path)
        return _cache[path]


@contextlib.contextmanager
def _interrupt_deferred():
    """Hold Ctrl-C while a model is built (Keras can swallow it mid-build and leave
    a half-built model behind); raise KeyboardInterrupt once the build is done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
    if got:
        signal.raise_signal(signal.SIGINT)  # now, to the handler that was in place


class LegacyCodec:
    def __init__(self, path):
        from . import _tf
        _tf.require("decoding a version-1/2 file")  # one line, before anything imports it
        from .. import zoo
        from ..codec import fingerprint
        from .model import CompressionModel
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
        # the two layouts of version-1/2 files: a hyper-latent and y (Gaussian), or y alone
        self.hyper = families.get(self.arch).hyper_latent
        self.rounding = Q.Rounding.of(self.card, Q.NumpyMath)  # NumPy's tanh/arctanh
        self.factorized = entropy.FactorizedCoder(tables)
        self.gaussian = entropy.GaussianCoder(self.rounding.alpha, exact=False)
        from .model import pad_multiple
        self.multiple = pad_multiple(self.model.config)
        self.transform_seconds = 0.0  # time spent in TensorFlow (for benchmarks)
        m = self.model
        spec = lambda c: tf.TensorSpec([1, None, None, c], tf.float32)  # noqa: E731
        self._analysis = tf.function(m.analysis.call, input_signature=[spec(3)])
        self._synthesis = tf.function(m.synthesis.call,
                                      input_signature=[spec(m.config["M"])])
        if self.hyper:
            self._hyper_analysis = tf.function(m.hyper_analysis.call,
                                               input_signature=[spec(m.config["M"])])
            self._hyper_synthesis = tf.function(m.hyper_synthesis.call,
                                                input_signature=[spec(m.config["N"])])
        # Trace now, while load() holds Ctrl-C: an interrupt during tracing can be lost.
        for name in ("_analysis", "_synthesis", "_hyper_analysis", "_hyper_synthesis"):
            if hasattr(self, name):
                getattr(self, name).get_concrete_function()

    # --- helpers ---------------------------------------------------------------
    def _run(self, fn, x):
        t = time.perf_counter()
        out = fn(self.tf.constant(x[None].astype(np.float32)))[0].numpy().astype(np.float64)
        self.transform_seconds += time.perf_counter() - t
        return out

    def latent_shape(self, height, width):
        m = self.multiple
        H, W = -(-height // m) * m, -(-width // m) * m
        if not self.hyper:
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
        x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0)  # garbage in, no warnings out
        return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)

    # --- encode ----------------------------------------------------------------
    def encode(self, rgb, seed, quantizer="uq", mode="RGB", reconstruct=False,
               tile=container.DEFAULT_TILE, version=2):
        """HxWx3 uint8 -> (file bytes, info). info has the model's rate in bits
        (sum of -log2 P(k|u) with unsnapped parameters) and, when asked, the
        encoder-side reconstruction.

        Kept to write test files of the old versions (``scripts/make_golden.py`` made
        the frozen ones); uqcodec itself writes version 3 (``codec.py``).

        The image is coded in independent ``tile`` x ``tile`` tiles (row-major), each
        with its own dither (``Dither(seed, index)``) and its own streams, so memory
        is bounded by the tile size. ``version=1`` writes a version-1 file (one tile
        covering the image; only for regenerating test files)."""
        h, w = rgb.shape[:2]
        if version == 1:
            tile = 0
            container.check_size(h, w, 1)
        else:
            container.check_tile(tile)
            if tile % self.multiple:
                raise CodecError(f"tile size must be a multiple of {self.multiple} for "
                                 f"model {self.name}")
            container.check_size(h, w)
        streams = []
        rate = 0.0
        recon = np.empty((h, w, 3), np.uint8) if reconstruct else None
        for i, (t, l, th, tw) in enumerate(container.tile_grid(h, w, tile)):
            s, bits, r = self._encode_tile(rgb[t:t + th, l:l + tw], Q.Dither(seed, i, version),
                                           quantizer, reconstruct)
            streams += s
            rate += bits
            if reconstruct:
                recon[t:t + th, l:l + tw] = r
        header = container.Header(self.name, self.fingerprint, quantizer, h, w, mode,
                                  int(seed), [len(s) for s in streams], tile, version)
        info = {"rate_bits": rate, "tiles": container.tile_count(h, w, tile)}
        if reconstruct:
            info["reconstruction"] = recon
        return container.pack(header, streams), info

    def _encode_tile(self, rgb, dither, quantizer, reconstruct):
        """One tile -> (streams, rate in bits, reconstruction or None)."""
        h, w = rgb.shape[:2]
        m = self.multiple
        H, W = -(-h // m) * m, -(-w // m) * m
        x = np.pad(rgb, ((0, H - h), (0, W - w), (0, 0)), mode="edge").astype(np.float64) / 255.0
        y = self._run(self._analysis, x)
        z = self._run(self._hyper_analysis, y) if self.hyper else None
        del x
        esc = entropy.EscapeWriter()
        streams = []
        if self.hyper:
            z_dec, kz, rows_z, zstream = entropy.encode_factorized(
                self.factorized, z, dither, quantizer, self.rounding, esc)
            streams.append(zstream)
            mean, log_scale = self._hyper(z_dec)
            y_dec, ystream, rate_y = self._encode_gaussian(y, mean, log_scale, dither,
                                                           quantizer, esc)
            streams.append(ystream)
            rate = rate_y + self.factorized.bits(kz, rows_z)
        else:
            y_dec, ky, rows_y, ystream = entropy.encode_factorized(
                self.factorized, y, dither, quantizer, self.rounding, esc)
            streams.append(ystream)
            rate = self.factorized.bits(ky, rows_y)
        streams.append(bytes(esc.buf))
        return streams, rate, self._synthesize(y_dec, h, w) if reconstruct else None

    def _encode_gaussian(self, y, mean, log_scale, dither, quantizer, esc):
        mean_q = entropy.snap_mean(mean).ravel()
        c, u = entropy.gaussian_offsets(mean_q, y.shape, dither, quantizer)
        idx = entropy.snap_scale_index(log_scale).ravel()
        d = np.rint(self.rounding.s(y.ravel()) - c - u).astype(np.int64)
        enc = entropy.new_encoder()
        self.gaussian.encode(enc, d, mean_q, idx, c, u, esc)
        v = c + d + u
        # The model's own rate: training density with unsnapped parameters.
        scale = np.exp(np.maximum(log_scale.ravel(), np.log(entropy.SCALE_MIN)))
        alpha = self.rounding.alpha
        p = entropy.bin_prob(Q.soft_round_inverse(v - 0.5, alpha, Q.NumpyMath),
                             Q.soft_round_inverse(v + 0.5, alpha, Q.NumpyMath),
                             mean.ravel(), scale)
        rate = float(-np.log2(np.maximum(p, 1e-300)).sum())
        return self.rounding.decoder_input(v).reshape(y.shape), entropy.finish(enc), rate

    # --- decode ----------------------------------------------------------------
    def decode(self, header, streams):
        """Header + streams -> HxWx3 uint8, tile by tile."""
        if header.fingerprint != self.fingerprint:
            raise CodecError(f"file was made with different weights for model {self.name!r} "
                             f"(fingerprint {header.fingerprint}, installed {self.fingerprint})")
        tiles = header.tiles
        per_tile = 3 if self.hyper else 2
        if len(streams) != per_tile * len(tiles):
            raise CodecError("corrupted file (wrong number of streams)")
        if header.tile % self.multiple:
            raise CodecError(f"corrupted file (tile size {header.tile} is not a multiple of "
                             f"{self.multiple})")
        out = np.empty((header.height, header.width, 3), np.uint8)
        for i, (t, l, th, tw) in enumerate(tiles):
            out[t:t + th, l:l + tw] = self._decode_tile(
                streams[per_tile * i:per_tile * (i + 1)], th, tw,
                Q.Dither(header.seed, i, header.version), header.quantizer)
        return out

    def _decode_tile(self, streams, height, width, dither, quantizer):
        yshape, zshape = self.latent_shape(height, width)
        esc = entropy.EscapeReader(streams[-1])
        try:
            if self.hyper:
                z_dec = entropy.decode_factorized(self.factorized, streams[0], zshape, dither,
                                                  quantizer, self.rounding, esc)
                mean, log_scale = self._hyper(z_dec)
                if not (np.isfinite(mean).all() and np.isfinite(log_scale).all()):
                    raise ValueError("non-finite hyper-synthesis output")
                mean_q = entropy.snap_mean(mean).ravel()
                c, u = entropy.gaussian_offsets(mean_q, yshape, dither, quantizer)
                idx = entropy.snap_scale_index(log_scale).ravel()
                dec = entropy.new_decoder(streams[1])
                d = self.gaussian.decode(dec, mean_q, idx, c, u, esc)
                y_dec = self.rounding.decoder_input(c + d + u).reshape(yshape)
            else:
                y_dec = entropy.decode_factorized(self.factorized, streams[0], yshape, dither,
                                                  quantizer, self.rounding, esc)
        except (ValueError, KeyError, RuntimeError, OverflowError, AssertionError,
                IndexError) as e:
            raise CodecError(f"corrupted file (entropy decoding failed: {e})") from None
        return self._synthesize(y_dec, height, width)
