"""The codec pipeline: pixels -> latents -> symbols -> bytes, and back (no TensorFlow).

``Codec`` wraps one loaded model: its family (``linear.py`` or ``hyperprior.py``:
transforms on the float32 inference engine, and the coding steps of its
latents), its weights' fingerprint and card. Images are coded in independent
tiles, each with its own dither and streams:

1. pad the tile to the family's multiple (edge replication), analysis;
2. quantize and entropy-code the latents (``family.encode``); every coding table
   is computed exactly (factorized tables from the model's ``tables.npz``,
   Gaussian parameters from the integer hyper-synthesis, table functions from
   ``exactmath``), so the decoder rebuilds the encoder's tables on any machine;
3. synthesis, crop, clip, round to 8 bits.

Version-1/2 files (written before the exact entropy path) are decoded by
``training/legacy.py``, which imports TensorFlow: they decode where they were written.
"""
import atexit
import hashlib
import io
import math
import os
import threading
import time

import numpy as np

from . import container, entropy, quantization as Q, zoo
from .constants import RATE_MAX
from .errors import CodecError
from .hyperprior import Hyperprior
from .linear import Linear

# --quality of a variable-rate model: QUALITY_MIN (its lowest lambda) to QUALITY_MAX (its
# highest), log-spaced in lambda; any value in between.
QUALITY_MIN, QUALITY_MAX, DEFAULT_QUALITY = 0.0, 10.0, 5.0
TARGET_BPP_TOLERANCE = 0.02  # --target-bpp: within 2 % of the size asked for
TARGET_PSNR_TOLERANCE = 0.1  # --target-psnr: within 0.1 dB
TARGET_EXTEND = 32  # a target search may take a model 32 rate steps (gain x1.63) past its
#                     trained top: into the gap before the next model's range, or beyond

FAMILIES = {"hyperprior": Hyperprior, "linear": Linear}

_cache = {}
_lock = threading.Lock()


@atexit.register
def _release():
    _cache.clear()


def load(path):
    """Load (and cache) the model in directory ``path``."""
    path = os.path.abspath(path)
    with _lock:
        if path not in _cache:
            _cache[path] = Codec(path)
        return _cache[path]


def fingerprint(weights_bytes):
    """First 8 bytes of the SHA-256 of the weights file, as hex."""
    return hashlib.sha256(weights_bytes).hexdigest()[:16]


class Codec:
    def __init__(self, path):
        self.path = path
        self.card = zoo.read_card(path)
        self.name = self.card["name"]
        try:
            with open(os.path.join(path, "weights.npz"), "rb") as f:
                wbytes = f.read()
            weights = dict(np.load(io.BytesIO(wbytes)))
            tables = dict(np.load(os.path.join(path, "tables.npz")))
        except (OSError, ValueError) as e:
            raise CodecError(f"{path}: cannot read model files ({e})") from None
        self.fingerprint = fingerprint(wbytes)
        arch = self.card.get("arch")
        if arch not in FAMILIES:
            raise CodecError(f"{path}: unknown model family {arch!r}")
        self.arch = arch
        self.rounding = Q.Rounding.of(self.card)
        self.family = FAMILIES[arch](weights, tables, self.card, self.rounding)
        self.multiple = self.family.multiple
        self.transform_seconds = 0.0  # time in the inference engine (for benchmarks)
        self._legacy = self._refiner = None

    # --- helpers ---------------------------------------------------------------
    @property
    def legacy(self):
        """The TensorFlow decoder of version-1/2 files (loaded on first use)."""
        if self._legacy is None:
            from .training.legacy import LegacyCodec
            self._legacy = LegacyCodec(self.path)
        return self._legacy

    @property
    def refiner(self):
        """Encoder-side latent refinement for this model (TensorFlow; built on first use)."""
        if self._refiner is None:
            if self.arch != "hyperprior":
                raise CodecError(f"model {self.name} is linear: refinement is implemented "
                                 "for hyperprior models only")
            if not self.card.get("lambda") and not self.variable:
                raise CodecError(f"model {self.name} has no lambda in its card: cannot refine")
            from .training.model import CompressionModel
            from .training.refine import Refiner
            model = CompressionModel(self.card)  # the TensorFlow model, for its gradients
            model.load_weights_npz(os.path.join(self.path, "weights.npz"))
            self._refiner = Refiner(model, self.card.get("lambda"), self.rounding.alpha,
                                    self.rounding.alpha_r)
        return self._refiner

    def _timed(self, fn, *args):
        t = time.perf_counter()
        out = fn(*args)
        self.transform_seconds += time.perf_counter() - t
        return out

    def pad(self, rgb):
        """HxWx3 uint8 -> padded float32 image in [0, 1]."""
        h, w = rgb.shape[:2]
        m = self.multiple
        x = np.pad(rgb, ((0, -h % m), (0, -w % m), (0, 0)), mode="edge")
        return x.astype(np.float32) / np.float32(255.0)

    def analyze(self, rgb):
        """HxWx3 uint8 -> the family's latents (float64)."""
        return self._timed(self.family.analyze, self.pad(rgb))

    def synthesize(self, y_dec, height, width):
        """Decoder input of y -> HxWx3 uint8."""
        x = self._timed(self.family.synthesis, y_dec)[:height, :width]
        x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0)  # garbage in, no warnings out
        return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)

    # --- rate of a variable-rate model ---------------------------------------------
    @property
    def variable(self):
        """True for a variable-rate model (one model, every rate in its lambda range)."""
        return bool(getattr(self.family, "variable", False))

    def rate_at_lambda(self, lmbda):
        """The rate parameter (an integer) of lambda ``lmbda`` in this model's range."""
        t = lambda_position(lmbda, *self.card["lambda_range"])
        return self.family.rate_at(min(1.0, max(0.0, t)))

    # --- encode ----------------------------------------------------------------
    def encode(self, rgb, seed, quantizer="uq", mode="RGB", reconstruct=False,
               tile=container.DEFAULT_TILE, refine=0, progress=None, rate=None, latents=None,
               lmbda=None):
        """HxWx3 uint8 -> (file bytes, info). info has the rate of the coded symbols
        in bits and, when asked, the reconstruction (what every decoder gives back, up
        to float32 differences of the synthesis between machines).

        ``refine``: steps of encoder-side latent optimization per tile (see
        ``refine.py``; 0 = the analysis transform's latents as they are);
        ``progress(n)`` is called after each of them. Tiles of ``tile`` x ``tile``
        pixels (row-major) are coded independently, each with its own dither
        ``Dither(seed, index)`` and streams, so memory is bounded by the tile size.
        ``rate``, ``lmbda``: the rate parameter of a variable-rate model and the lambda
        that refinement optimizes for (default: the middle of the model's lambda range,
        and its rate parameter); ``latents``: the tiles' latents from ``tile_latents`` (a
        search over rates analyzes once)."""
        h, w = rgb.shape[:2]
        if self.variable:
            if lmbda is None:  # the middle of its lambda range
                lmbda = math.sqrt(math.prod(self.card["lambda_range"]))
            if rate is None:
                rate = self.rate_at_lambda(lmbda)
        elif rate:
            raise CodecError(f"model {self.name} has a fixed rate")
        else:
            rate = 0
        if refine:
            self.refiner  # noqa: B018  (a linear model fails here, before any work)
        container.check_tile(tile)
        if tile % self.multiple:
            raise CodecError(f"tile size must be a multiple of {self.multiple} for "
                             f"model {self.name}")
        container.check_size(h, w)
        streams, bits_total = [], 0.0
        recon = np.empty((h, w, 3), np.uint8) if reconstruct else None
        for i, (t, l, th, tw) in enumerate(container.tile_grid(h, w, tile)):
            part = rgb[t:t + th, l:l + tw]
            lat = latents[i] if latents is not None else self.analyze(part)
            if refine:
                lat = self._refine(part, lat, quantizer, (refine, seed, i, progress), rate,
                                   lmbda)
            esc = entropy.EscapeWriter()
            s, bits, y_dec = self.family.encode(lat, Q.Dither(seed, i), quantizer, esc, rate)
            streams += s + [bytes(esc.buf)]
            bits_total += bits
            if reconstruct:
                recon[t:t + th, l:l + tw] = self.synthesize(y_dec, th, tw)
        header = container.Header(self.name, self.fingerprint, quantizer, h, w, mode,
                                  int(seed), [len(s) for s in streams], tile, rate=int(rate))
        info = {"rate_bits": bits_total, "tiles": container.tile_count(h, w, tile),
                "rate": int(rate)}
        if reconstruct:
            info["reconstruction"] = recon
        return container.pack(header, streams), info

    def tile_latents(self, rgb, tile=container.DEFAULT_TILE):
        """The latents of every tile (what ``encode`` would compute), for ``latents=``."""
        h, w = rgb.shape[:2]
        return [self.analyze(rgb[t:t + th, l:l + tw])
                for t, l, th, tw in container.tile_grid(h, w, tile)]

    def _refine(self, rgb, latents, quantizer, refine, rate=0, lmbda=None):
        steps, seed, index, progress = refine
        y, z = latents
        if quantizer == "uq":  # the dither this tile will use (same draws, same order)
            d = Q.Dither(seed, index)
            u_z = d.levels(z.shape)[1]
            u_y = d.continuous(y.shape)
        else:  # rounding (y around its predicted mean)
            u_z = u_y = None
        t = time.perf_counter()
        gain = {"lam": lmbda, "log_gain": math.log(entropy.rate_gain(rate))} if self.variable \
            else {}
        y, z, _ = self.refiner(self.pad(rgb), y, z, u_y, u_z, steps, seed=(int(seed), index),
                               valid=rgb.shape[:2], progress=progress, **gain)
        self.transform_seconds += time.perf_counter() - t
        return y, z

    # --- decode ----------------------------------------------------------------
    def decode(self, header, streams):
        """Header + streams -> HxWx3 uint8, tile by tile."""
        if header.fingerprint != self.fingerprint:
            raise CodecError(f"file was made with different weights for model {self.name!r} "
                             f"(fingerprint {header.fingerprint}, installed {self.fingerprint})")
        if header.version < 3:
            return self.legacy.decode(header, streams)
        if header.rate and not self.variable:
            raise CodecError(f"file has rate parameter {header.rate}, but model {self.name} "
                             "has a fixed rate")
        out = np.empty((header.height, header.width, 3), np.uint8)
        for (t, l, th, tw), y_dec in self.decode_latents(header, streams):
            out[t:t + th, l:l + tw] = self.synthesize(y_dec, th, tw)
        return out

    def decode_latents(self, header, streams):
        """Version 3: yield ((top, left, height, width), decoder input of y) per tile.
        These values are exact: the same bits on every machine."""
        tiles = header.tiles
        per_tile = self.family.streams
        if len(streams) != per_tile * len(tiles):
            raise CodecError("corrupted file (wrong number of streams)")
        if header.tile % self.multiple:
            raise CodecError(f"corrupted file (tile size {header.tile} is not a multiple of "
                             f"{self.multiple})")
        for i, (t, l, th, tw) in enumerate(tiles):
            s = streams[per_tile * i:per_tile * (i + 1)]
            esc = entropy.EscapeReader(s[-1])
            try:
                y_dec = self.family.decode(s, self.family.latent_shapes(th, tw),
                                           Q.Dither(header.seed, i), header.quantizer, esc,
                                           header.rate)
            except (ValueError, KeyError, RuntimeError, OverflowError, AssertionError,
                    IndexError) as e:
                raise CodecError(f"corrupted file (entropy decoding failed: {e})") from None
            yield (t, l, th, tw), y_dec


def set_edges(ranges):
    """Lambda ranges of a rate set's models, sorted by their low ends -> the edges of the
    lambdas each model serves: model i serves [edges[i], edges[i + 1]], and between two
    models the switch is at the geometric mean of the overlap's (or gap's) ends."""
    return ([ranges[0][0]] + [math.sqrt(a[1] * b[0]) for a, b in zip(ranges, ranges[1:])]
            + [max(r[1] for r in ranges)])


def set_member(lmbda, edges):
    """The index of the model of a rate set (``set_edges``) that serves lambda ``lmbda``."""
    return next(i for i in range(len(edges) - 1) if lmbda <= edges[i + 1] or i == len(edges) - 2)


def lambda_at(t, lo, hi):
    """The lambda at position ``t`` (0..1) of the log range lo..hi: training draws t
    uniformly, the learned gains are functions of t."""
    return lo * (hi / lo) ** t


def lambda_position(lmbda, lo, hi):
    """The inverse of ``lambda_at``: the position of ``lmbda`` in the log range lo..hi."""
    return math.log(lmbda / lo) / math.log(hi / lo)


def quality_lambda(quality, lo, hi):
    """The lambda of a quality (QUALITY_MIN..QUALITY_MAX, log-spaced) in the range lo..hi."""
    return lambda_at((quality - QUALITY_MIN) / (QUALITY_MAX - QUALITY_MIN), lo, hi)


def set_quality(lmbda, edges):
    """The quality of lambda ``lmbda`` in a rate set with these edges."""
    return QUALITY_MIN + (QUALITY_MAX - QUALITY_MIN) * lambda_position(lmbda, edges[0], edges[-1])


class RateSet:
    """Variable-rate models that together cover one lambda range (one model, or a low-
    and a high-rate one), seen as one codec with a continuous quality.

    Quality QUALITY_MIN..QUALITY_MAX is log-spaced in lambda over the union of the
    models' ranges; each lambda goes to the model that has it deepest inside its range
    (between two overlapping models the switch is at the geometric mean of the
    overlap's ends), then to that model's rate parameter.
    """

    def __init__(self, codecs):
        if not codecs or not all(c.variable for c in codecs):
            raise CodecError("a rate set needs variable-rate models")
        self.codecs = sorted(codecs, key=lambda c: c.card["lambda_range"][0])
        self.edges = set_edges([c.card["lambda_range"] for c in self.codecs])
        self.lo, self.hi = self.edges[0], self.edges[-1]

    @property
    def name(self):
        return "+".join(c.name for c in self.codecs)

    def lambda_of(self, quality):
        q = float(quality)
        if not QUALITY_MIN <= q <= QUALITY_MAX:
            raise CodecError(f"quality must be between {QUALITY_MIN:g} and {QUALITY_MAX:g}")
        return quality_lambda(q, self.lo, self.hi)

    def pick(self, quality):
        """(codec, rate parameter) of a quality."""
        lmbda = self.lambda_of(quality)
        i = set_member(lmbda, self.edges)
        return self.codecs[i], self.codecs[i].rate_at_lambda(lmbda)

    def options(self):
        """Every (codec, rate parameter) of the set, from the lowest rate to the highest."""
        out = []
        for i, c in enumerate(self.codecs):
            a, b = c.rate_at_lambda(self.edges[i]), c.rate_at_lambda(self.edges[i + 1])
            out += [(c, r) for r in range(a, b + 1)]
        return out

    def encode(self, rgb, seed, quantizer="uq", mode="RGB", reconstruct=False,
               tile=container.DEFAULT_TILE, quality=DEFAULT_QUALITY, refine=0, progress=None):
        c, r = self.pick(quality)
        data, info = c.encode(rgb, seed, quantizer, mode, reconstruct, tile, refine, progress,
                              rate=r, lmbda=self.lambda_of(quality))
        info["model"] = c.name
        return data, info

    def encode_target(self, rgb, seed, quantizer="uq", mode="RGB", tile=container.DEFAULT_TILE,
                      bpp=None, psnr=None):
        """Encode at the (model, rate parameter) whose real file comes nearest a size
        (``bpp``, within TARGET_BPP_TOLERANCE) or a PSNR (``psnr``, within
        TARGET_PSNR_TOLERANCE dB). Each model's whole trained range is tried at its two
        ends (and up to TARGET_EXTEND rate steps past its top, so that more targets between
        two models' ranges or above the top are met); the first model (from low
        to high rates) whose ends enclose the target is searched by bisection (file size
        and PSNR grow with the rate parameter; the latents are computed once per model);
        if none does, the nearest end wins.
        Returns (bytes, info); info["target"] says what was asked, what was reached,
        whether it is within the tolerance and how many real encodes it took."""
        from .metrics import psnr as psnr_of
        if (bpp is None) == (psnr is None):
            raise CodecError("give one target: bpp or psnr")
        target = float(bpp if bpp is not None else psnr)
        if not (math.isfinite(target) and target > 0):
            raise CodecError("the target must be a positive number")
        h, w = rgb.shape[:2]
        tried, latents = {}, {}
        by_name = {c.name: c for c in self.codecs}

        def value(c, r):
            if (c.name, r) not in tried:
                if c.name not in latents:
                    latents[c.name] = c.tile_latents(rgb, tile)
                data, info = c.encode(rgb, seed, quantizer, mode, psnr is not None, tile,
                                      rate=r, latents=latents[c.name])
                v = (8.0 * len(data) / (h * w) if bpp is not None
                     else psnr_of(rgb, info.pop("reconstruction")))
                info["model"] = c.name
                tried[c.name, r] = (v, data, info)
            return tried[c.name, r][0]

        def miss(c, r):  # how far a file is from the target (relative for sizes)
            v = value(c, r)
            return abs(v / target - 1) if bpp is not None else abs(v - target)

        best = None
        for c in self.codecs:
            lo, hi = c.rate_at_lambda(c.card["lambda_range"][0]), \
                c.rate_at_lambda(c.card["lambda_range"][1])
            hi = min(hi + TARGET_EXTEND, RATE_MAX)  # past the trained range, into gaps
            if value(c, lo) <= target <= value(c, hi):
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if value(c, mid) < target:
                        lo = mid
                    else:
                        hi = mid
                best = min(((c, lo), (c, hi)), key=lambda k: miss(*k))
                break
        if best is None:  # out of every model's reach: the nearest end
            best = min(((by_name[n], r) for n, r in tried), key=lambda k: miss(*k))
        v, data, info = tried[best[0].name, best[1]]
        reached = (abs(v - target) <= TARGET_BPP_TOLERANCE * target if bpp is not None
                   else abs(v - target) <= TARGET_PSNR_TOLERANCE)
        info["target"] = {"kind": "bpp" if bpp is not None else "dB", "wanted": target,
                          "got": v, "reached": bool(reached), "encodes": len(tried)}
        return data, info
