"""Entropy coding of integer symbols with constriction's range coder.

Two kinds of latents:

* factorized (``y`` of linear models, ``z`` of hyperprior models): per-channel
  probability tables, precomputed at export for each of the DITHER_LEVELS dither
  values (plus one row for u = 0, used by plain rounding), coded with
  ``Categorical(perfect=False)``.
* Gaussian-conditional (``y`` of hyperprior models): mean snapped to a 1/64 grid,
  scale snapped to an index into a log-spaced table. With additive-noise models
  we code with ``QuantizedGaussian``; soft-rounding models need the bin edges
  ``s_inv(k + u -/+ 1/2)`` and use explicit per-element tables.

Symbols beyond a table's support are clipped to its end bins (which hold the
tail mass) and the overflow is written as a varint to an escape stream, so no
symbol can crash the coder or be silently altered.
"""
import math

import numpy as np
import constriction

from . import exactmath, quantization as Q
from .constants import (DITHER_LEVELS, GAUSS_RADIUS, LOG_SCALE_MIN, LOG_SCALE_STEP,
                        MEAN_STEP, RATE_DIV, SCALE_LEVELS, SCALE_MAX, SCALE_MIN)

# Gaussian scale table: log-spaced from the training lower bound 0.11 to 256. Version 3
# computes it from the literal grid constants with exactmath (the same bits everywhere);
# versions 1/2 used np.exp (LEGACY_SCALES, which may differ in the last bit elsewhere).
SCALES = exactmath.exp(LOG_SCALE_MIN + LOG_SCALE_STEP * np.arange(SCALE_LEVELS))


def rate_scales(rate):
    """The scale table of a variable-rate model's latents at rate parameter ``rate``:
    every scale times the gain, i.e. the log grid shifted by rate / RATE_DIV steps
    (``rate_scales(0)`` is ``SCALES``)."""
    return exactmath.exp(LOG_SCALE_MIN + LOG_SCALE_STEP * (np.arange(SCALE_LEVELS)
                                                           + rate / RATE_DIV))


def rate_gain(rate):
    """The gain of the latents at rate parameter ``rate``: exp(LOG_SCALE_STEP * rate /
    RATE_DIV), the same float64 on every machine."""
    return float(exactmath.exp(np.array([LOG_SCALE_STEP * (rate / RATE_DIV)]))[0])
LEGACY_SCALES = np.exp(np.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), SCALE_LEVELS))
TAIL_MASS = 1e-7     # factorized tables cover all but this much mass (+ margin)
ROUND_ROW = DITHER_LEVELS  # table row for plain rounding (u = 0)
CODER_MIN_PROB = 2.0 ** -24  # Categorical(perfect=False) gives every symbol at least about this


class EscapeWriter:
    def __init__(self):
        self.buf = bytearray()

    def put(self, values):
        for v in np.asarray(values, dtype=np.int64).ravel():
            v = int(v)
            while v >= 0x80:
                self.buf.append((v & 0x7F) | 0x80)
                v >>= 7
            self.buf.append(v)


class EscapeReader:
    def __init__(self, data):
        self.data = bytes(data)
        self.pos = 0

    def get(self, n):
        out = np.empty(n, np.int64)
        for i in range(n):
            v, shift = 0, 0
            while True:
                if self.pos >= len(self.data):
                    raise ValueError("escape stream truncated")
                b = self.data[self.pos]
                self.pos += 1
                v |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
                if shift > 35:
                    raise ValueError("escape value out of range")
            out[i] = v
        return out


def _clip_escape(sym, lo, hi, esc):
    """Clip integer symbols to [lo, hi]; write the overflow of every end-bin symbol."""
    clipped = np.clip(sym, lo, hi)
    at_end = (clipped == lo) | (clipped == hi)
    esc.put(np.abs(sym - clipped)[at_end])
    return clipped


def _unescape(sym, lo, hi, esc):
    lo_mask = sym == lo
    hi_mask = sym == hi
    at_end = lo_mask | hi_mask
    extra = esc.get(int(at_end.sum()))
    out = sym.astype(np.int64).copy()
    sign = np.where(hi_mask[at_end], 1, -1)
    out[at_end] += sign * extra
    return out


class FactorizedCoder:
    """Codes factorized latents (..., C) given dither level indices."""

    def __init__(self, tables):
        self.lo = np.asarray(tables["lo"], np.int64)
        self.size = np.asarray(tables["size"], np.int64)
        self.hi = self.lo + self.size - 1
        probs = np.asarray(tables["probs"], np.float32)
        offsets = np.concatenate([[0], np.cumsum(self.size)])
        # One (LEVELS+1, S_c) array per channel.
        self.tables = [np.ascontiguousarray(probs[offsets[c]:offsets[c + 1]].T)
                       for c in range(len(self.lo))]
        self.model = constriction.stream.model.Categorical(perfect=False)

    @property
    def channels(self):
        return len(self.lo)

    def encode(self, encoder, k, rows, esc):
        """k, rows: int arrays (..., C). Returns the (escape-exact) k unchanged."""
        C = self.channels
        k = k.reshape(-1, C)
        rows = rows.reshape(-1, C)
        for c in range(C):
            s = _clip_escape(k[:, c], self.lo[c], self.hi[c], esc) - self.lo[c]
            encoder.encode(s.astype(np.int32), self.model,
                           self.tables[c][rows[:, c]].astype(np.float64))

    def decode(self, decoder, rows, esc):
        C = self.channels
        shape = rows.shape
        rows = rows.reshape(-1, C)
        k = np.empty(rows.shape, np.int64)
        for c in range(C):
            s = decoder.decode(self.model, self.tables[c][rows[:, c]].astype(np.float64))
            s = np.asarray(s, np.int64) + self.lo[c]
            k[:, c] = _unescape(s, self.lo[c], self.hi[c], esc)
        return k.reshape(shape)

    def bits(self, k, rows):
        """-log2 of the table probabilities of k (for diagnostics)."""
        C = self.channels
        k = k.reshape(-1, C)
        rows = rows.reshape(-1, C)
        total = 0.0
        for c in range(C):
            t = self.tables[c][rows[:, c]]
            s = np.clip(k[:, c], self.lo[c], self.hi[c]) - self.lo[c]
            p = t[np.arange(len(s)), s] / t.sum(axis=1)
            total += float(-np.log2(np.maximum(p, 1e-30)).sum())
        return total


# --- Gaussian conditional ------------------------------------------------------

def snap_scale_index(log_scale):
    """Index into SCALES of the nearest log-scale (versions 1/2; version 3 takes the
    index from the integer hyper-synthesis)."""
    step = (math.log(SCALE_MAX) - math.log(SCALE_MIN)) / (SCALE_LEVELS - 1)
    idx = np.rint((np.asarray(log_scale, np.float64) - math.log(SCALE_MIN)) / step)
    return np.clip(idx, 0, SCALE_LEVELS - 1).astype(np.int64)


def snap_mean(mean):
    return np.rint(np.asarray(mean, np.float64) / MEAN_STEP) * MEAN_STEP


def bin_prob(lo, hi, mean, scale):
    """P(lo < Y < hi), Y ~ N(mean, scale), evaluated in the lower tail (float64): the
    model's own rate (unsnapped parameters), for diagnostics."""
    mid = (lo + hi) / 2.0 - mean
    half = (hi - lo) / 2.0
    d = -np.abs(mid)
    return exactmath.ndtr((d + half) / scale) - exactmath.ndtr((d - half) / scale)


class GaussianCoder:
    """Codes y = c + d + u with c = round(mean) (uq) or c = mean (round).

    ``exact`` (version 3): every table is computed with ``exactmath`` from the
    scale index and the snapped mean, explicit rows for every model. Otherwise
    (versions 1/2): scipy/NumPy functions, and ``QuantizedGaussian`` for ``un`` models.
    """

    def __init__(self, alpha=None, exact=True):
        self.alpha = alpha
        self.exact = exact
        if exact:
            self.scales, self.fm, self.ndtr = SCALES, exactmath, exactmath.ndtr
        else:
            from scipy.special import ndtr
            self.scales, self.fm, self.ndtr = LEGACY_SCALES, Q.NumpyMath, ndtr
        self.qg = (constriction.stream.model.QuantizedGaussian(-GAUSS_RADIUS, GAUSS_RADIUS)
                   if alpha is None and not exact else None)
        self.cat = constriction.stream.model.Categorical(perfect=False)
        self._at = {}

    def at_rate(self, rate):
        """This coder with the scale table of rate parameter ``rate`` (version 3)."""
        if not rate:
            return self
        if rate not in self._at:
            import copy
            c = copy.copy(self)
            c.scales = rate_scales(rate)
            c._at = {}
            self._at[rate] = c
        return self._at[rate]

    def _window(self, idx):
        return int(math.ceil(6.0 * self.scales[idx] + 2.0))

    def _groups(self, idx, max_entries=1 << 20):
        """(scale index, window, element indices) in coding order: groups by increasing
        scale index, elements in order; large groups come in consecutive chunks (the
        range coder's output does not depend on the chunking) so that the tables in
        memory stay small whatever the scales are."""
        # by scale index, elements in order (a radix sort: indices fit in 16 bits)
        order = np.argsort(idx.astype(np.int16), kind="stable")
        values, starts = np.unique(idx[order], return_index=True)
        for i, a, b in zip(values, starts, list(starts[1:]) + [len(order)]):
            sel = order[a:b]
            W = self._window(i)
            step = max(1, max_entries // (2 * W + 1))
            for j in range(0, len(sel), step):
                yield i, W, sel[j:j + step]

    def _tables(self, mean, idx, c, u, W):
        """Rows of P(d) for d = -W..W (end bins hold the tails), soft-rounding edges.

        The CDF is evaluated once per bin edge, as a tail probability on the
        near side of the mean, so that bins far out in either tail stay precise.
        """
        if self.exact:
            # s_inv(n + x) = n + s_inv(x) for integers n: with c and d integers, the edges
            # c + d + u -/+ 1/2 need one s_inv per element, s_inv(u - 1/2)
            off = (c - mean) + Q.soft_round_inverse(u - 0.5, self.alpha, self.fm)
            j = np.arange(-W, W + 2, dtype=np.float64)
            t = (off[:, None] + j[None, :]) / self.scales[idx][:, None]
            cdf = self.ndtr(t)  # absolute error ~1e-16: far below the coder's resolution
            p = np.empty((len(t), 2 * W + 1))
            p[:, 0] = cdf[:, 1]
            np.subtract(cdf[:, 2:-1], cdf[:, 1:-2], out=p[:, 1:-1])
            p[:, -1] = 1.0 - cdf[:, -2]
            return np.maximum(p, 0.0)
        else:
            d = np.arange(-W, W + 2, dtype=np.float64) - 0.5
            edges = Q.soft_round_inverse((c + u)[:, None] + d[None, :], self.alpha, self.fm)
            t = (edges - mean[:, None]) / self.scales[idx][:, None]
        g = self.ndtr(-np.abs(t))     # tail mass beyond each edge
        above = t > 0
        lo_a, hi_a = above[:, :-1], above[:, 1:]
        p = np.where(lo_a, g[:, :-1] - g[:, 1:],
                     np.where(hi_a, 1.0 - g[:, :-1] - g[:, 1:], g[:, 1:] - g[:, :-1]))
        p[:, 0] = np.where(above[:, 1], 1.0 - g[:, 1], g[:, 1])
        p[:, -1] = np.where(above[:, -2], g[:, -2], 1.0 - g[:, -2])
        return np.maximum(p, 0.0)

    def _rows(self, mean, idx, c, u):
        """((scale index, W, elements), table rows) in coding order. The rows do not depend
        on the coder's state, so further threads compute them ahead of the coder."""
        from concurrent.futures import ThreadPoolExecutor
        from .engine import threads
        groups = list(self._groups(idx))
        rows = lambda g: self._tables(mean[g[2]], idx[g[2]], c[g[2]], u[g[2]], g[1])  # noqa
        n = threads()
        if n == 1 or len(groups) < 2:
            yield from ((g, rows(g)) for g in groups)
            return
        with ThreadPoolExecutor(n) as pool:
            yield from zip(groups, pool.map(rows, groups))

    def encode(self, encoder, d, mean, idx, c, u, esc):
        """All arrays flat float64/int64 of equal length, in coding order. Returns the
        bits of the coded symbols under the tables (NaN with QuantizedGaussian)."""
        if self.qg is not None:
            d = _clip_escape(d, -GAUSS_RADIUS, GAUSS_RADIUS, esc)
            encoder.encode(d.astype(np.int32), self.qg, mean - c - u, self.scales[idx])
            return float("nan")
        bits = 0.0
        for (i, W, sel), p in self._rows(mean, idx, c, u):
            s = _clip_escape(d[sel], -W, W, esc) + W
            encoder.encode(s.astype(np.int32), self.cat, p)
            ps = p[np.arange(len(s)), s] / p.sum(axis=1)
            bits -= float(np.log2(np.maximum(ps, CODER_MIN_PROB)).sum())
        return bits

    def decode(self, decoder, mean, idx, c, u, esc):
        n = len(mean)
        if self.qg is not None:
            d = np.asarray(decoder.decode(self.qg, mean - c - u, self.scales[idx]), np.int64)
            return _unescape(d, -GAUSS_RADIUS, GAUSS_RADIUS, esc)
        d = np.empty(n, np.int64)
        for (i, W, sel), p in self._rows(mean, idx, c, u):
            s = np.asarray(decoder.decode(self.cat, p), np.int64) - W
            d[sel] = _unescape(s, -W, W, esc)
        return d


def new_encoder():
    return constriction.stream.queue.RangeEncoder()


def finish(encoder):
    return encoder.get_compressed().astype("<u4").tobytes()


def new_decoder(data):
    if len(data) % 4:
        raise ValueError("coded stream length is not a multiple of 4")
    return constriction.stream.queue.RangeDecoder(np.frombuffer(data, "<u4").astype(np.uint32))


# --- the coding steps of one latent tensor (both families) ---------------------

def encode_factorized(coder, t, dither, quantizer, rounding, esc):
    """Factorized latent ``t`` (..., C) -> (decoder input, symbols, table rows, stream)."""
    rows, u = _factorized_dither(t.shape, dither, quantizer)
    k = np.rint(rounding.s(t) - u).astype(np.int64)
    enc = new_encoder()
    coder.encode(enc, k, rows, esc)
    return rounding.decoder_input(k + u), k, rows, finish(enc)


def decode_factorized(coder, data, shape, dither, quantizer, rounding, esc):
    rows, u = _factorized_dither(shape, dither, quantizer)
    k = coder.decode(new_decoder(data), rows, esc)
    return rounding.decoder_input(k + u)


def _factorized_dither(shape, dither, quantizer):
    if quantizer == "uq":
        return dither.levels(shape)
    return np.full(shape, ROUND_ROW, np.int64), np.zeros(shape)


def gaussian_offsets(mean_q, shape, dither, quantizer):
    """(c, u): the integer offset (uq: round(mean)) or the mean itself (round), and the
    dither of the latent (continuous, drawn after the hyper-latent's)."""
    if quantizer == "uq":
        return np.rint(mean_q), dither.continuous(shape).ravel()
    return mean_q, np.zeros(mean_q.shape)
