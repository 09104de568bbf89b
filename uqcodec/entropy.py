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


def _kernel_for(off):
    """The compiled table kernel for rows of these offsets: ``exactmath.KERNEL`` when it
    is built and every offset is finite, else None (NumPy computes the same rows)."""
    kernel = exactmath.KERNEL
    return kernel if kernel is not None and np.isfinite(off).all() else None


LEGACY_SCALES = np.exp(np.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), SCALE_LEVELS))
TAIL_MASS = 1e-7     # factorized tables cover all but this much mass (+ margin)
ROUND_ROW = DITHER_LEVELS  # table row for plain rounding (u = 0)
CODER_MIN_PROB = 2.0 ** -24  # Categorical(perfect=False) gives every symbol at least about this
CACHE_ENTRIES = 1 << 14  # Gaussian rows are evaluated in blocks of about this many entries
# The work budget (docs/format.md, "Decoder limits"): the Gaussian rows of a tile hold at
# most WORK_BUDGET coding table entries per element on average, plus WORK_SLACK. Photographs
# take 7-45 (Kodak, BSD68, Urban100, every quality), noise and text at quality 10 up to 130.
WORK_BUDGET = 144
WORK_SLACK = 1 << 14


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
        """The next ``n`` varints (each at most 6 bytes: values below 2^42), vectorized:
        a file's escapes cost NumPy time, not a Python loop per byte."""
        if n <= 0:
            return np.empty(0, np.int64)
        window = np.frombuffer(self.data, np.uint8, offset=self.pos)[:6 * n]
        ends = np.flatnonzero(window < 0x80)[:n]  # the last byte of each value
        starts = np.concatenate(([0], ends[:-1] + 1))
        too_long = np.flatnonzero(ends - starts >= 6)
        if len(too_long) or len(ends) < n:  # the first problem, in stream order
            first_long = starts[too_long[0]] if len(too_long) else None
            tail = (ends[-1] + 1) if len(ends) else 0  # where the unfinished value starts
            if first_long is not None or len(window) - tail >= 6:
                raise ValueError("escape value out of range")
            raise ValueError("escape stream truncated")
        used = window[:ends[-1] + 1].astype(np.int64)
        shift = 7 * (np.arange(len(used)) - np.repeat(starts, ends - starts + 1))
        self.pos += len(used)
        return np.add.reduceat((used & 0x7F) << shift, starts)


def _clip_escape(sym, lo, hi, esc):
    """Clip integer symbols to [lo, hi]; write the overflow of every end-bin symbol."""
    clipped = np.clip(sym, lo, hi)
    at_end = (clipped == lo) | (clipped == hi)
    esc.put(np.abs(sym - clipped)[at_end])
    return clipped


def _unescape(sym, lo, hi, esc, out=None):
    """Add the escape of every end-bin symbol (in order; ``lo``, ``hi``: per symbol or
    one for all) to it; into ``out`` (default: a new array)."""
    lo_mask = sym == lo
    hi_mask = sym == hi
    at_end = lo_mask | hi_mask
    extra = esc.get(int(at_end.sum()))
    if out is None:
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
        self._sums = None  # each table row's sum (``bits``)
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
        k = np.empty((C, rows.shape[0]), np.int64)  # channel by channel: the coding order
        for c in range(C):
            s = decoder.decode(self.model, self.tables[c][rows[:, c]].astype(np.float64))
            k[c] = np.asarray(s, np.int64) + self.lo[c]
        # the escapes of every channel at once, in the same order (channel by channel)
        _unescape(k.reshape(-1), np.repeat(self.lo, k.shape[1]),
                  np.repeat(self.hi, k.shape[1]), esc, out=k.reshape(-1))
        return k.T.reshape(shape)

    def bits(self, k, rows):
        """-log2 of the table probabilities of k (for diagnostics)."""
        C = self.channels
        k = k.reshape(-1, C)
        rows = rows.reshape(-1, C)
        if self._sums is None:
            self._sums = [t.sum(axis=1) for t in self.tables]
        total = 0.0
        for c in range(C):
            s = np.clip(k[:, c], self.lo[c], self.hi[c]) - self.lo[c]
            p = self.tables[c][rows[:, c], s] / self._sums[c][rows[:, c]]
            total += float(-np.log2(np.maximum(p, 1e-30)).sum())
        return total


# --- Gaussian conditional ------------------------------------------------------

def snap_scale_index(log_scale):
    """Index into SCALES of the nearest log-scale (versions 1/2; versions 3 and 4 take the
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

    ``exact`` (versions 3 and 4): every table is computed with ``exactmath`` from the
    scale index and the snapped mean, explicit rows for every model. Otherwise
    (versions 1/2): scipy/NumPy functions, and ``QuantizedGaussian`` for ``un`` models.

    The work budget (docs/format.md, "Decoder limits"): the explicit rows of one call
    (one tile) may hold at most ``work_budget`` table entries per element on average
    (plus WORK_SLACK in all), which the scale indices and the rate parameter decide
    before any row is built. The
    decoder refuses a file beyond it, the encoder refuses to write one. ``work_budget``
    None lifts it (tests and scripts that make such files).
    """
    work_budget = WORK_BUDGET

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
        """This coder with the scale table of rate parameter ``rate`` (versions 3 and 4)."""
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

    def work(self, idx):
        """Table entries per element that the rows of these scale indices hold (the
        average; 2 W + 1 per element, W as ``_window``)."""
        if not len(idx):
            return 0.0
        entries = 2.0 * np.ceil(6.0 * self.scales + 2.0) + 1.0
        return float(np.bincount(idx, minlength=len(entries)) @ entries) / len(idx)

    def check_work(self, idx, encoding, elements=None, spent=0.0):
        """Raise CodecError if these scale indices exceed the work budget. A latent coded
        in parts (the context model) checks each part against the budget of all its
        ``elements`` with the entries ``spent`` on the parts before it; returns the
        entries spent so far."""
        if self.work_budget is None or self.qg is not None:
            return spent
        spent += self.work(idx) * len(idx)
        n = len(idx) if elements is None else elements
        work = spent / max(n, 1)
        if spent > self.work_budget * n + WORK_SLACK:
            from .errors import BudgetError
            if encoding:
                raise BudgetError(
                    f"this image needs {work:.0f} coding table entries per latent at this "
                    f"rate, more than a decoder's work budget of {self.work_budget}: choose "
                    "a lower quality")
            raise BudgetError(f"file exceeds the decoder's work budget ({work:.0f} coding "
                             f"table entries per latent, at most {self.work_budget})")
        return spent

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
            off = self._offsets(mean, c, u)
            return self._exact_tables([(idx[0], W, np.arange(len(mean)))], off,
                                      _kernel_for(off))[0]
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

    def _offsets(self, mean, c, u):
        """Version 3: the rows' offset per element, (c - mean) + s_inv(u - 1/2): with c and
        d integers, s_inv(n + x) = n + s_inv(x) gives the edges c + d + u -/+ 1/2 from one
        s_inv per element (elementwise: the same values for any subset)."""
        return (c - mean) + Q.soft_round_inverse(u - 0.5, self.alpha, self.fm)

    def _exact_tables(self, groups, off, kernel=None):
        """Version 3: the rows of each group (scale index, W, elements) of ``groups``,
        from the elements' offsets ``off``. Every CDF value is the same elementwise
        sequence of operations as ever: in one compiled pass per group with ``kernel``
        (``_kernel_for(off)``), else with NumPy, in blocks of about
        CACHE_ENTRIES that stay in the CPU's cache (the rows of a large group in several
        blocks, small groups together in one), so neither wide rows nor many small groups
        cost more per entry than a photo's tables."""
        if kernel is not None:
            out = []
            for i, W, sel in groups:
                p = np.empty((len(sel), 2 * W + 1))
                kernel.rows(p, np.ascontiguousarray(off[sel], np.float64),
                            float(self.scales[i]), W, exactmath.KERNEL_CONSTANTS)
                out.append(p)
            return out
        out, batch = [], []
        buf = np.empty(2 * CACHE_ENTRIES)  # the CDF arguments of a batch of small groups
        used = 0

        def flush():  # the CDF of a batch of small groups in one evaluation
            nonlocal used
            if batch:
                cdf = self.ndtr(buf[:used])
                for rows, a, shape in batch:
                    _fill(rows, cdf[a:a + shape[0] * shape[1]].reshape(shape))
                batch.clear()
            used = 0
        for i, W, sel in groups:
            j = np.arange(-W, W + 2, dtype=np.float64)
            o, scale = off[sel], self.scales[i]
            p = np.empty((len(sel), 2 * W + 1))
            out.append(p)
            entries = len(sel) * len(j)
            if entries >= CACHE_ENTRIES:  # a large group: blocks of its rows
                step = max(1, CACHE_ENTRIES // len(j))
                for a in range(0, len(sel), step):
                    b = a + step
                    _fill(p[a:b], self.ndtr((o[a:b, None] + j[None, :]) / scale))
                continue
            if used + entries > len(buf):
                flush()
            t = buf[used:used + entries].reshape(len(sel), len(j))
            np.add(o[:, None], j[None, :], out=t)  # (o + j) / scale, as above
            np.divide(t, scale, out=t)
            batch.append((p, used, t.shape))
            used += entries
            if used >= CACHE_ENTRIES:
                flush()
        flush()
        return out

    def _rows(self, mean, idx, c, u):
        """((scale index, W, elements), table rows) in coding order. The rows do not depend
        on the coder's state, so further threads compute them ahead of the coder (one unit
        of at most 2^20 table entries per thread ahead)."""
        from concurrent.futures import ThreadPoolExecutor
        from .engine import threads
        groups = list(self._groups(idx))
        if self.exact:
            off = self._offsets(mean, c, u)
            units, unit, size = [], [], 0  # consecutive groups of at most 2^20 entries
            for g in groups:
                entries = len(g[2]) * (2 * g[1] + 1)
                if unit and size + entries > 1 << 20:
                    units.append(unit)
                    unit, size = [], 0
                unit.append(g)
                size += entries
            if unit:
                units.append(unit)
            kernel = _kernel_for(off)
            work = lambda unit: self._exact_tables(unit, off, kernel)  # noqa: E731
        else:
            units = [[g] for g in groups]
            work = lambda unit: [self._tables(mean[g[2]], idx[g[2]], c[g[2]], u[g[2]], g[1])  # noqa
                                 for g in unit]
        n = threads()
        if n == 1 or len(units) < 2:
            for unit in units:
                yield from zip(unit, work(unit))
            return
        with ThreadPoolExecutor(n) as pool:
            ahead = [pool.submit(work, unit) for unit in units[:n]]
            for k, unit in enumerate(units):
                rows = ahead[k].result()
                ahead[k] = None
                if k + n < len(units):
                    ahead.append(pool.submit(work, units[k + n]))
                yield from zip(unit, rows)

    def encode(self, encoder, d, mean, idx, c, u, esc):
        """All arrays flat float64/int64 of equal length, in coding order. Returns the
        bits of the coded symbols under the tables (NaN with QuantizedGaussian)."""
        if self.qg is not None:
            d = _clip_escape(d, -GAUSS_RADIUS, GAUSS_RADIUS, esc)
            encoder.encode(d.astype(np.int32), self.qg, mean - c - u, self.scales[idx])
            return float("nan")
        self.check_work(idx, encoding=True)
        bits = 0.0
        for (i, W, sel), p in self._rows(mean, idx, c, u):
            s = _clip_escape(d[sel], -W, W, esc) + W
            encoder.encode(s.astype(np.int32), self.cat, p)
            # (a row sums to 1 up to rounding: its end bins hold the tails)
            ps = p[np.arange(len(s)), s]
            bits -= float(np.log2(np.maximum(ps, CODER_MIN_PROB)).sum())
        return bits

    def decode(self, decoder, mean, idx, c, u, esc):
        n = len(mean)
        if self.qg is not None:
            d = np.asarray(decoder.decode(self.qg, mean - c - u, self.scales[idx]), np.int64)
            return _unescape(d, -GAUSS_RADIUS, GAUSS_RADIUS, esc)
        self.check_work(idx, encoding=False)
        s, sels, widths = [], [], []
        for (i, W, sel), p in self._rows(mean, idx, c, u):
            s.append(np.asarray(decoder.decode(self.cat, p), np.int64) - W)
            sels.append(sel)
            widths.append(np.full(len(sel), W))
        if not s:
            return np.empty(0, np.int64)
        # the escapes of every group at once, in coding order (group by group)
        s, w = np.concatenate(s), np.concatenate(widths)
        _unescape(s, -w, w, esc, out=s)
        d = np.empty(n, np.int64)
        d[np.concatenate(sels)] = s
        return d


def _fill(rows, cdf):
    """Rows of P(d), d = -W..W, from the CDF at the 2 W + 2 edges; the end bins hold the
    tails."""
    rows[:, 0] = cdf[:, 1]
    np.subtract(cdf[:, 2:-1], cdf[:, 1:-2], out=rows[:, 1:-1])
    rows[:, -1] = 1.0 - cdf[:, -2]
    np.maximum(rows, 0.0, out=rows)


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
