"""Which model and rate parameter code an image: rate sets, qualities, target search.

A ``RateSet`` is what ``compress`` talks to: variable-rate models that together cover
one lambda range (one model, or a low- and a high-rate one) seen as one codec with a
continuous quality, or a fixed-rate model seen as a set of one rate (no quality). Its
``encode`` picks the model and rate parameter of a quality; ``encode_target`` searches
them for a file size or a PSNR.
"""
import math

from . import container
from .constants import RATE_MAX
from .errors import BudgetError, CodecError
from .rates import (DEFAULT_QUALITY, QUALITY_MAX, QUALITY_MIN, quality_lambda, set_edges,
                    set_member)

TARGET_BPP_TOLERANCE = 0.02  # --target-bpp: within 2 % of the size asked for
TARGET_PSNR_TOLERANCE = 0.1  # --target-psnr: within 0.1 dB
TARGET_EXTEND = 32  # a target search may take a model 32 rate steps (gain x1.63) past its
#                     trained top: into the gap before the next model's range, or beyond


class RateSet:
    """Variable-rate models that together cover one lambda range (one model, or a low-
    and a high-rate one), seen as one codec with a continuous quality; or one fixed-rate
    model (``fixed``: a set of one rate, which takes no quality and no target).

    Quality QUALITY_MIN..QUALITY_MAX is log-spaced in lambda over the union of the
    models' ranges; each lambda goes to the model that has it deepest inside its range
    (between two overlapping models the switch is at the geometric mean of the
    overlap's ends), then to that model's rate parameter.
    """

    def __init__(self, codecs):
        codecs = list(codecs)
        self.fixed = len(codecs) == 1 and not codecs[0].variable
        if not codecs or not (self.fixed or all(c.variable for c in codecs)):
            raise CodecError("a rate set is one fixed-rate model or variable-rate models")
        if self.fixed:
            self.codecs, self.edges = codecs, None
            return
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
        if self.fixed:
            return self.codecs[0], 0
        lmbda = self.lambda_of(quality)
        i = set_member(lmbda, self.edges)
        return self.codecs[i], self.codecs[i].rate_at_lambda(lmbda)

    def options(self):
        """Every (codec, rate parameter) of the set, from the lowest rate to the highest."""
        if self.fixed:
            return [(self.codecs[0], 0)]
        out = []
        for i, c in enumerate(self.codecs):
            a, b = c.rate_at_lambda(self.edges[i]), c.rate_at_lambda(self.edges[i + 1])
            out += [(c, r) for r in range(a, b + 1)]
        return out

    def encode(self, rgb, seed, quantizer="uq", mode="RGB", reconstruct=False,
               tile=container.DEFAULT_TILE, quality=None, refine=0, progress=None):
        """Encode at ``quality`` (None: DEFAULT_QUALITY; a fixed-rate model takes none)."""
        if self.fixed:
            if quality is not None:
                raise CodecError("give either --model or --quality, not both (the model "
                                 f"{self.name} has one rate)")
            c, r, lmbda = self.codecs[0], None, None
        else:
            quality = DEFAULT_QUALITY if quality is None else quality
            (c, r), lmbda = self.pick(quality), self.lambda_of(quality)
        data, info = c.encode(rgb, seed, quantizer, mode, reconstruct, tile, refine, progress,
                              rate=r, lmbda=lmbda)
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
        if self.fixed:
            raise CodecError("--target-bpp/--target-psnr need a variable-rate model "
                             f"({self.name} has one rate)")
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
                try:
                    data, info = c.encode(rgb, seed, quantizer, mode, psnr is not None, tile,
                                          rate=r, latents=latents[c.name])
                except BudgetError:  # beyond a decoder's work budget: out of reach
                    tried[c.name, r] = (math.inf, None, None)
                    return math.inf
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
        if data is None:
            raise BudgetError("every rate of this search is beyond a decoder's work budget "
                              "for this image")
        reached = (abs(v - target) <= TARGET_BPP_TOLERANCE * target if bpp is not None
                   else abs(v - target) <= TARGET_PSNR_TOLERANCE)
        info["target"] = {"kind": "bpp" if bpp is not None else "dB", "wanted": target,
                          "got": v, "reached": bool(reached), "encodes": len(tried)}
        return data, info
