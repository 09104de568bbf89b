"""Integer networks: what decides a coding table, computed exactly everywhere.

Everything that decides a Gaussian coding table (the snapped mean and the scale
index of every element of ``y``: the hyper-synthesis, and later context networks)
is computed by an ``IntNet`` from exact inputs (the decoded hyper-latent, decoded
latents) with integer arithmetic only, so encoder and decoder agree bit for bit on any
machine (Ballé, Johnston & Minnen, ICLR 2019; docs/format.md, "Exact entropy
parameters", states the argument). The network is derived at load time from the
model's float weights by fixed rules, with no data and no stored calibration:

* inputs: each clamped to its declared range (for ``z``: the factorized prior's
  support) and rounded to ``2^-IN_BITS``, several inputs concatenated;
* weights of output channel c: ``round(w * 2^s_c)`` with ``s_c`` such that
  ``max |w_int| <= 2^WEIGHT_BITS``; biases in the accumulator's units;
* each ReLU layer's output is ``accumulator`` shifted right (rounding half up)
  to a per-layer activation scale chosen so that the largest value the layer
  can produce for *any* input in range (an interval bound) stays below
  ``2^ACT_BITS``: no clipping ever occurs;
* the last layer folds its output grid into its weights (the hyper-synthesis:
  ``(log_scale - LOG_SCALE_MIN) / LOG_SCALE_STEP`` and the mean times MEAN_GRID,
  ``latent_codecs.gaussian_parameters``), so its outputs are the mean on the
  ``MEAN_STEP`` grid and the scale index, both rounded by one integer shift.

Products and sums are taken in float64 (BLAS; small products on one thread,
``blas.matmul``) on integers: exact in any order while every partial sum stays below
2^53, which ``check_bounds`` asserts from the same interval bounds. The rounding
shifts are exact in float64 too (``_round_shift_f``); the outputs are int64.
"""
import numpy as np

from .blas import matmul
from .exactmath import ldexp_exponent

IN_BITS = 10       # hyper-latent input resolution 2^-10
WEIGHT_BITS = 16   # |w_int| <= 2^16
ACT_BITS = 22      # 0 <= activation < 2^22
EXACT_LIMIT = 2.0 ** 53


def _quantize(w, b, in_shift):
    """Per-output-channel integer weights (last axis = output channel) and biases."""
    w = np.asarray(w, np.float64)
    out = w.shape[-1]
    maxabs = np.abs(w.reshape(-1, out)).max(axis=0)
    _, e = np.frexp(np.where(maxabs > 0, maxabs, 1.0))  # maxabs < 2^e
    wshift = (WEIGHT_BITS - e).astype(np.int64)
    w_int = np.rint(np.ldexp(w, ldexp_exponent(wshift)))
    b_int = np.rint(np.ldexp(np.asarray(b, np.float64), ldexp_exponent(wshift + in_shift)))
    return w_int, b_int, wshift + in_shift  # accumulator units: 2^-(wshift + in_shift)


def _vecmat(v, m):
    """v @ m for the bounds, without BLAS: a vector-matrix product this small costs
    milliseconds in BLAS's thread hand-offs on a busy machine (the model load runs several).
    The products and sums are integers below 2^53, exact in any order: the same values."""
    return (v[:, None] * m).sum(axis=0)


class Layer:
    """Integer convolution (stride 1) or transposed convolution (stride 2), 'same'
    padding as TensorFlow's, taps (k, k, in, out) in float64 holding integers."""

    def __init__(self, kernel, bias, in_shift, transpose, in_hi, in_lo=None):
        kernel = np.asarray(kernel, np.float64)
        if transpose:  # Keras (k, k, out, in) -> (k, k, in, out)
            kernel = kernel.transpose(0, 1, 3, 2)
        self.transpose = transpose
        self.k = kernel.shape[0]
        self.w, self.b, self.acc_shift = _quantize(kernel, bias, in_shift)
        in_lo = np.zeros_like(in_hi) if in_lo is None else in_lo
        # Interval bound of the accumulator for inputs in [in_lo, in_hi] (integers):
        # each output position sees one residue class of taps (transposed) or all.
        s = 2 if transpose else 1
        his, mags = [], []
        for p in range(s):
            for q in range(s):
                taps = self.w[p::s, q::s]
                wp = np.maximum(taps, 0).sum(axis=(0, 1))  # (in, out)
                wn = np.minimum(taps, 0).sum(axis=(0, 1))
                his.append(_vecmat(in_hi, wp) + _vecmat(in_lo, wn))  # the largest accumulator
                mags.append(_vecmat(np.maximum(np.abs(in_hi), np.abs(in_lo)), wp - wn))
        hi, mag = np.max(his, axis=0), np.max(mags, axis=0)
        self.acc_hi = hi + self.b
        self.acc_bound = float((mag + np.abs(self.b)).max())
        if transpose:  # (in, k k out): every tap's products of an input position in one row
            self._taps_by_input = np.ascontiguousarray(
                self.w.transpose(2, 0, 1, 3).reshape(self.w.shape[2], -1))

    def accumulate(self, a):
        """(H, W, in) integer activations -> (H', W', out) exact integer accumulators
        (float64: exact, ``acc_bound``)."""
        H, W, C = a.shape
        k = self.k
        if self.transpose:
            s, pad = 2, (k - 2) // 2
            cols = matmul(a.reshape(H * W, C), self._taps_by_input)
            cols = cols.reshape(H, W, k, k, -1)
            full = np.zeros(((H - 1) * s + k, (W - 1) * s + k, cols.shape[-1]))
            for p in range(k):
                for q in range(k):
                    full[p:p + (H - 1) * s + 1:s, q:q + (W - 1) * s + 1:s] += cols[:, :, p, q]
            acc = full[pad:pad + H * s, pad:pad + W * s]
        else:
            pad = (k - 1) // 2
            x = np.pad(a, ((pad, k - 1 - pad), (pad, k - 1 - pad), (0, 0)))
            patches = np.empty((H, W, k, k, C))
            for p in range(k):
                for q in range(k):
                    patches[:, :, p, q] = x[p:p + H, q:q + W]
            acc = matmul(patches.reshape(H * W, -1), self.w.reshape(-1, self.w.shape[-1]))
            acc = acc.reshape(H, W, -1)
        return acc + self.b

    def accumulate_at(self, a, positions, w=None):
        """The accumulators of a stride-1 convolution at the (row, column) ``positions``
        (a boolean (H, W) mask) only: (P, out) in C order of the positions, the same
        integers as ``accumulate(a)[positions]`` (each output sums the same products), as
        float64 (exact: ``acc_bound``). ``w``: the taps of ``a``'s channels when ``a``
        holds only some of the layer's inputs (the others zeros, whose products are 0)."""
        assert not self.transpose
        w = self.w if w is None else w
        H, W, C = a.shape
        k = self.k
        pad = (k - 1) // 2
        x = np.pad(a, ((pad, k - 1 - pad), (pad, k - 1 - pad), (0, 0)))
        half = _checkerboard_half(positions)
        if half is None:
            rows, cols = np.nonzero(positions)
            patches = np.empty((len(rows), k, k, C))
            for p in range(k):
                for q in range(k):
                    patches[:, p, q] = x[rows + p, cols + q]
        else:  # one half of a checkerboard: every other column, strided copies
            patches = np.empty((H, W // 2, k, k, C))
            for r in range(min(2, H)):
                n, c0 = len(range(r, H, 2)), (r + half) % 2  # its rows, its first column
                for p in range(k):
                    for q in range(k):
                        patches[r::2, :, p, q] = x[r + p:r + p + 2 * n - 1:2,
                                                   c0 + q:c0 + q + W - 1:2]
        acc = matmul(patches.reshape(-1, k * k * C), w.reshape(-1, w.shape[-1]))
        return acc + self.b

    def products(self, a, w=None):
        """The sums of products of a stride-1 convolution over the whole map, bias not
        added: (H, W, out). Each input position times all the taps in one product (a
        GEMM over the padded map, no patch copies), then the taps' shifted sums: the same
        products as ``accumulate`` in another order (exact integers)."""
        assert not self.transpose
        w = self.w if w is None else w
        H, W, C = a.shape
        k, out = self.k, w.shape[-1]
        pad = (k - 1) // 2
        x = np.pad(a, ((pad, k - 1 - pad), (pad, k - 1 - pad), (0, 0)))
        z = matmul(x.reshape(-1, C), w.transpose(2, 0, 1, 3).reshape(C, -1)).reshape(
            H + k - 1, W + k - 1, k, k, out)
        acc = np.zeros((H, W, out))
        for p in range(k):
            for q in range(k):
                acc += z[p:p + H, q:q + W, p, q]
        return acc


def anchors(h, w):
    """Checkerboard anchors: True where (row + column) is even, (h, w)."""
    return (np.add.outer(np.arange(h), np.arange(w)) % 2) == 0


def _checkerboard_half(positions):
    """0 if ``positions`` is the checkerboard's anchors, 1 if the other half, None if
    neither (or an odd width: rows of unequal lengths)."""
    H, W = positions.shape
    if W % 2 or not H:
        return None
    half = 0 if positions[0, 0] else 1
    anc = anchors(H, W)
    return half if np.array_equal(positions, anc if half == 0 else ~anc) else None


class OnGrid:
    """An input of ``IntNet.at`` already clamped to its range and on the input grid
    (``to_grid``), so it is used as it is (a codec keeps its decoded parts this way
    instead of clamping and rounding them again for every later part)."""
    __slots__ = ("a",)

    def __init__(self, a):
        self.a = a


def to_grid(x, lo, hi):
    """An input clamped to [lo, hi] and rounded to 2^-IN_BITS, in grid units (what
    ``IntNet`` does to each input, element by element)."""
    return np.rint(np.ldexp(np.clip(np.asarray(x, np.float64), lo, hi), IN_BITS))


class IntNet:
    """An integer network: a stack of integer convolutions, ReLU between them, the last
    layer linear, evaluated exactly (the same integers on every machine).

    ``inputs``: one (lo, hi) pair per input (arrays of its channels' bounds, float64);
    the inputs are clamped to their ranges, put on the grid 2^-IN_BITS and concatenated
    along the channels, in order (signed inputs are fine: the bounds say where they lie).
    ``layers``: (kernel, bias, transpose) per layer (Keras layouts; ``transpose``: a
    stride-2 transposed convolution, else stride 1; masked taps are zeros in the kernel).
    ``fold(kernel, bias)``: the output grid folded into the last layer's float weights
    (for example the mean grid and the scale index), so that one rounding shift gives the
    outputs. Every partial sum is bounded (``check_bounds``) from the input ranges."""

    def __init__(self, inputs, layers, fold=None):
        self.lo = [np.asarray(lo, np.float64) for lo, _ in inputs]
        self.hi = [np.asarray(hi, np.float64) for _, hi in inputs]
        in_bits = IN_BITS
        in_lo = np.concatenate([np.ldexp(np.broadcast_to(lo, np.shape(hi)), IN_BITS)
                                for lo, hi in zip(self.lo, self.hi)])
        in_hi = np.concatenate([np.ldexp(hi, IN_BITS) for hi in self.hi])
        self.layers, self.shifts = [], []
        *hidden, (kernel, bias, transpose) = layers
        for k, b, t in hidden:
            layer = Layer(k, b, in_bits, t, in_hi, in_lo)
            # the largest activation any input in range can produce, in real units
            top = float(np.ldexp(np.maximum(layer.acc_hi, 0.0),
                                 ldexp_exponent(-layer.acc_shift)).max())
            out_bits = ACT_BITS - int(np.frexp(max(top, 1e-300))[1])  # top < 2^(ACT_BITS-out_bits)
            shift = layer.acc_shift - out_bits
            self.layers.append(layer)
            self.shifts.append(shift)
            in_lo, in_hi = None, np.maximum(_round_shift_f(layer.acc_hi, shift), 0.0)
            in_bits = out_bits
        kernel = np.asarray(kernel, np.float64).copy()
        bias = np.asarray(bias, np.float64).copy()
        if fold is not None:
            kernel, bias = fold(kernel, bias)
        self.last = Layer(kernel, bias, in_bits, transpose, in_hi, in_lo)
        self.check_bounds()

    def check_bounds(self):
        for layer in self.layers + [self.last]:
            if not layer.acc_bound < EXACT_LIMIT:
                raise ValueError("integer network exceeds the exact range of float64")

    def _input(self, inputs):
        return np.concatenate([to_grid(x, lo, hi) for x, lo, hi in zip(inputs, self.lo, self.hi)],
                              axis=-1)

    def __call__(self, *inputs):
        """Float inputs (H, W, C_i) -> int64 outputs (H', W', C_out)."""
        a = self._input(inputs)
        for layer, shift in zip(self.layers, self.shifts):  # shift, ReLU
            a = np.maximum(_round_shift_f(layer.accumulate(a), shift), 0.0)
        return _round_shift_f(self.last.accumulate(a), self.last.acc_shift).astype(np.int64)

    def at(self, positions, *inputs, partial=None):
        """The outputs at the (row, column) ``positions`` only (a boolean (H, W) mask):
        (P, C_out) int64 in C order of the positions, equal to ``self(*inputs)[positions]``,
        for a network whose first layer is a stride-1 convolution and whose later layers
        are 1x1 (a context network): the other positions are never computed.

        An input may be ``OnGrid`` (already on the grid: used as it is) or None: all
        zeros (whose range holds 0: its products are zeros, so they are skipped), or,
        with ``partial``, an input whose products that holds (``first_layer``'s output
        for those inputs, added here). The accumulators stay in float64 (exact: every partial sum is bounded by
        ``acc_bound``), each layer's rounding shift is ``floor(acc 2^-s + 1/2)``, as in
        ``__call__``."""
        layers = self.layers + [self.last]
        self._check_context_shape()
        a, kept = self._grid_inputs(inputs, zeros_checked=partial is None)
        if a is None:
            acc = partial[positions] + layers[0].b
        else:
            acc = layers[0].accumulate_at(a, positions, self._first_taps(kept))
            if partial is not None:
                acc += partial[positions]
        for i, layer in enumerate(layers[1:]):  # shift, ReLU, the next 1x1 layer
            a = np.maximum(_round_shift_f(acc, self.shifts[i]), 0.0)
            acc = matmul(a, layer.w.reshape(-1, layer.w.shape[-1])) + layer.b
        return _round_shift_f(acc, self.last.acc_shift).astype(np.int64)

    def first_layer(self, *inputs):
        """The first layer's products of the given inputs (None: left out) over the
        whole map, bias not added (``Layer.products``): for ``at``'s ``partial``, when
        several parts share these inputs (a group's two checkerboard halves)."""
        self._check_context_shape()
        a, kept = self._grid_inputs(inputs)
        return self._first.products(a, self._first_taps(kept))

    @property
    def _first(self):
        return (self.layers + [self.last])[0]

    def _check_context_shape(self):
        layers = self.layers + [self.last]
        if any(layer.transpose for layer in layers) or any(layer.k != 1 for layer in layers[1:]):
            raise ValueError("IntNet.at needs a stride-1 first layer and 1x1 layers after it")

    def _grid_inputs(self, inputs, zeros_checked=True):
        """(the given inputs on the grid, concatenated, or None; their indices). A None
        input left out as zeros must have 0 in its range (``zeros_checked``)."""
        parts, kept = [], []
        for i, (x, lo, hi) in enumerate(zip(inputs, self.lo, self.hi)):
            if x is None:
                if zeros_checked and not (np.all(lo <= 0) and np.all(hi >= 0)):
                    raise ValueError("a zero input outside its range")
                continue
            parts.append(x.a if isinstance(x, OnGrid) else to_grid(x, lo, hi))
            kept.append(i)
        if not parts:
            return None, ()
        return (parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)), tuple(kept)

    def _first_taps(self, kept):
        """The first layer's taps of the inputs ``kept`` (indices into the inputs)."""
        if len(kept) == len(self.lo):
            return None
        cache = self.__dict__.setdefault("_taps", {})
        if kept not in cache:
            edges = np.cumsum([0] + [np.size(hi) for hi in self.hi])
            rows = np.concatenate([np.arange(edges[i], edges[i + 1]) for i in kept])
            cache[kept] = np.ascontiguousarray(self._first.w[:, :, rows])
        return cache[kept]


def _round_shift_f(x, shift):
    """round(x / 2^shift) half up, per channel (last axis) shifts, of exact integers held
    in float64 (below 2^53; the same integers as an int64 shift): x 2^-s is exact
    (a power of two), and so is adding 1/2 (its bits reach from 2^(52-s) down to 2^-s)."""
    return np.floor(np.ldexp(np.asarray(x, np.float64), ldexp_exponent(-np.asarray(shift))) + 0.5)
