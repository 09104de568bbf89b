"""The float32 inference engine: the transforms' layers as onnxruntime graphs.

Layers mirror the Keras layers that training uses (``training/linear.py``, ``training/hyperprior.py``),
read from a model's ``weights.npz``: convolutions and transposed convolutions
with TensorFlow's "same" padding, ReLU, GDN and inverse GDN (tensorflow-
compression's default form: ``x / (beta + |x| gamma)``, ``x * (...)`` for the
inverse, with its non-negative reparametrization undone here). Images and
latents enter and leave as float32 HxWxC arrays.

Float results may differ between CPUs in the last bits: nothing that decides a
coding table is computed here (``intnet.py`` does that exactly).
"""
import os
import threading

import numpy as np

_ARENA_LOCK = threading.Lock()
_PEDESTAL = 2.0 ** -36  # tfc.GDN's reparametrization offset (2^-18) squared


def _nonneg(reparam, minimum):
    """tfc's NonnegativeParameterization: max(v, sqrt(minimum + p))^2 - p."""
    v = np.asarray(reparam, np.float64)
    bound = np.sqrt(minimum + _PEDESTAL)
    return np.maximum(v, bound) ** 2 - _PEDESTAL


def _same_pads(kernel, stride):
    """TensorFlow's "same" padding (input sizes are multiples of the stride)."""
    total = max(kernel - stride, 0)
    return [total // 2, total // 2, total - total // 2, total - total // 2]


def _record(g, kind, kernel, stride, src):
    """Remember a layer's geometry on the graph (``Transform`` runs big inputs in bands)."""
    if not hasattr(g, "geometry"):
        g.geometry = []
    g.geometry.append((kind, int(kernel), int(stride), src is not None))


def conv(g, w, name, stride=1, relu=False, src=None):
    """``src``: the input node (default: the last one)."""
    k = w[name + "/kernel"].astype(np.float32)  # (kh, kw, in, out)
    _record(g, "conv", k.shape[0], stride, src)
    g.node("Conv", [src or g.last, g.const(k.transpose(3, 2, 0, 1)), g.const(w[name + "/bias"])],
           strides=[stride, stride], pads=_same_pads(k.shape[0], stride))
    if relu:
        g.node("Relu", [g.last])
    return g.last


def subpixel_kernel(k, stride):
    """A transposed convolution (TensorFlow's "same" padding) as a convolution and a
    depth-to-space: Keras kernel ``k`` (kh, kw, out, in) -> (kernel (K, K, in, s*s*out),
    pads [begin, begin, end, end]) of the stride-1 convolution whose output channel
    ``(r * s + c) * out + o`` is output phase (r, c) of channel o (ONNX DepthToSpace, DCR
    order). Output row ``s m + r`` of the transposed convolution sums input rows ``m + d``
    with taps ``t = r + p - s d`` (p its leading padding), so each phase is an ordinary
    convolution over the offsets d; taps a phase does not use are zeros. The same
    products as the transposed convolution (plus zeros), summed in another order."""
    n, s = k.shape[0], stride
    p = _same_pads(n, s)[0]
    taps = {r: {(r + p - t) // s: t for t in range(n) if (t - r - p) % s == 0} for r in range(s)}
    offsets = sorted({d for r in taps for d in taps[r]})
    lo, hi = offsets[0], offsets[-1]
    K = hi - lo + 1
    cout, cin = k.shape[2], k.shape[3]
    out = np.zeros((K, K, cin, s * s * cout), np.float32)
    for r in range(s):
        for c in range(s):
            ch = (r * s + c) * cout
            for dy, ty in taps[r].items():
                for dx, tx in taps[c].items():
                    out[dy - lo, dx - lo, :, ch:ch + cout] = k[ty, tx].T
    return out, [-lo, -lo, hi, hi]


def deconv(g, w, name, stride=2, relu=False, src=None):
    """A transposed convolution, run as a convolution and a depth-to-space
    (``subpixel_kernel``): onnxruntime's convolutions are about twice as fast per
    multiply-add here as its transposed ones (one convolution per output phase, without
    the zero taps, measured slower in the whole graph). ``g.adjoints`` remembers its
    gradient with respect to its input (``gradients.py``): the convolution of stride
    ``stride`` with the same kernel and "same" padding, of which a transposed
    convolution is the adjoint."""
    k = w[name + "/kernel"].astype(np.float32)  # (kh, kw, out, in)
    _record(g, "deconv", k.shape[0], stride, src)
    x = src or g.last
    kernel, pads = subpixel_kernel(k, stride)
    bias = np.tile(np.asarray(w[name + "/bias"], np.float32), stride * stride)
    g.node("Conv", [x, g.const(kernel.transpose(3, 2, 0, 1)), g.const(bias)],
           strides=[1, 1], pads=pads)
    out = g.node("DepthToSpace", [g.last], blocksize=stride)
    g.adjoints[out] = (x, k.transpose(3, 2, 0, 1), stride, _same_pads(k.shape[0], stride))
    if relu:
        g.node("Relu", [g.last])
    return g.last


def gdn(g, w, name, inverse=False):
    beta = _nonneg(w[name + "/reparam_beta"], 1e-6)
    gamma = _nonneg(w[name + "/reparam_gamma"], 0.0)  # (in, out)
    x = g.last
    pool = g.node("Conv", [g.node("Abs", [x]), g.const(gamma.T[:, :, None, None]),
                           g.const(beta)])
    g.node("Mul" if inverse else "Div", [x, pool])


def add(g, a, b):
    return g.node("Add", [a, b])


def scale(g, factor, offset=0.0):
    """x * factor + offset."""
    g.node("Mul", [g.last, g.const(np.float32(factor).reshape(()))])
    if offset:
        g.node("Add", [g.last, g.const(np.float32(offset).reshape(()))])


def threads():
    """Threads for the transforms and the coding tables: UQCODEC_THREADS, else all CPUs."""
    n = os.environ.get("UQCODEC_THREADS")
    if not n:
        return os.cpu_count() or 1
    try:
        return max(1, int(n))
    except ValueError:
        from .errors import CodecError
        raise CodecError(f"UQCODEC_THREADS must be a positive integer, not {n[:20]!r}") \
            from None


_ARENA = []  # the one CPU arena every session of the process shares (``_shared_arena``)


def _shared_arena(ort):
    """Register, once per process, the CPU memory arena that every session allocates its
    activations from (``session.use_env_allocators``). One arena for all: a process that
    holds many models (uqcodec eval: 20 models, 60 sessions) holds the activations of its
    largest run once, not once per session; and the memory stays mapped between runs, so
    a run does not page its activations in again (measured: a Kodak synthesis 0.16 s with a
    per-session arena given back after each run, 0.13 s with this one)."""
    with _ARENA_LOCK:
        if not _ARENA:
            info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0,
                                     ort.OrtMemType.DEFAULT)
            # max_mem 0: no limit; extend strategy 1 (kSameAsRequested): grow by what a
            # run asks for, not to the next power of two
            ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, 1, -1, -1))
            _ARENA.append(info)


def session(graph, outputs):
    """(onnxruntime session, run options) of a graph (``Graph.serialize``'s outputs)."""
    import onnxruntime as ort
    _shared_arena(ort)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # no busy-waiting between runs: the coding tables use the same cores meanwhile
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.use_env_allocators", "1")
    if os.environ.get("UQCODEC_ORT_NO_OPT"):  # (tests: other float arithmetic)
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    # the weights as external initializers from memory (``onnxgraph._tensor``)
    names = list(graph.arrays)
    opts.add_external_initializers(names, [ort.OrtValue.ortvalue_from_numpy(graph.arrays[n])
                                           for n in names])
    sess = ort.InferenceSession(graph.serialize(outputs), opts,
                                providers=["CPUExecutionProvider"])
    return sess, ort.RunOptions()


class Transform:
    """One graph, run on HxWxC float32 arrays (a batch of one)."""

    def __init__(self, graph, out_channels):
        self.session, self.run_options = session(graph, out_channels)
        import onnxruntime as ort
        self.band_options = ort.RunOptions()
        self.band_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self.input = self.session.get_inputs()[0].name
        self.up, self.down, self.halo = _band_geometry(getattr(graph, "geometry", []))

    def _run(self, x, band=False):
        """``band``: one band of a banded run; the arena gives its free memory back after
        it (bands differ in height at the image's edges, and an arena that keeps its
        blocks grows with each new size: a banded 1100 x 1100 tile decoded in 674 MB
        against 596 MB in default tiles)."""
        x = np.ascontiguousarray(np.asarray(x, np.float32).transpose(2, 0, 1)[None])
        opts = self.band_options if band else self.run_options
        out = self.session.run(None, {self.input: x}, opts)[0]
        return out[0].transpose(1, 2, 0)

    def __call__(self, x):
        """HxWxC float32 -> H'xW'xC'. An input whose fine side (the output of a synthesis,
        the input of an analysis) has more than BAND_PIXELS pixels runs in bands of rows
        with a halo of ``self.halo`` rows of the coarse side on each side (exactly what
        the layers' receptive fields reach), so memory stays below that of a default tile
        whatever the tile size. Every output row is computed from the same inputs as in
        one run (only the float32 summation order may differ: the pixel tolerance of the
        format; measured: the same bits)."""
        H, W = x.shape[:2]
        up, down, halo = self.up, self.down, self.halo
        ratio = up if up > 1 else down  # fine rows per coarse row
        fine_w = W * up if up > 1 else W  # fine columns
        coarse_h = H if up > 1 else H // down
        if (halo is None or H * W * up * up <= BAND_PIXELS or coarse_h < 2
                or (up == 1 and H % down)):
            return self._run(x)
        rows = max(1, BAND_RUN // (ratio * fine_w) - 2 * halo)  # coarse rows per band
        out = None
        for a in range(0, coarse_h, rows):
            b = min(coarse_h, a + rows)
            a0, b0 = max(0, a - halo), min(coarse_h, b + halo)
            if up > 1:  # x is the coarse side: output rows are `ratio` times finer
                part = self._run(x[a0:b0], True)[(a - a0) * ratio:(b - a0) * ratio]
                at = slice(a * ratio, b * ratio)
            else:  # x is the fine side
                part = self._run(x[a0 * down:b0 * down], True)[a - a0:b - a0]
                at = slice(a, b)
            if out is None:
                out = np.empty((coarse_h * (ratio if up > 1 else 1),) + part.shape[1:],
                               np.float32)
            out[at] = part
        return out


# A transform whose fine side (synthesis output, analysis input) has more than BAND_PIXELS
# pixels (a tile larger than the default 1024 x 1024) runs in bands of rows of at most
# BAND_RUN pixels, halo included: its memory is then below that of a default tile.
BAND_PIXELS = 1 << 20
BAND_RUN = 1 << 19


def _band_geometry(layers):
    """(up, down, halo) of a graph from its layers' geometry: the up- and downsampling
    factors of the main path and the halo (in rows of the coarse side) that covers every
    layer's receptive field, also of side paths (``src``); halo None: not banded (no
    geometry, or up- and downsampling in one graph)."""
    if not layers:
        return 1, 1, None
    up = down = 1
    for kind, k, s, side in layers:
        if not side:
            if kind == "deconv":
                up *= s
            else:
                down *= s
    if up > 1 and down > 1:
        return up, down, None

    def extra(kind, k, s):  # rows of its input a layer needs beyond a band's own rows
        pb = max(k - s, 0) // 2  # the "same" padding before (_same_pads)
        if kind == "deconv":  # output o reads inputs (o + pb - k + 1) / s .. (o + pb) / s
            return max((k - 1 - pb) // s, (s - 1 + pb) // s)
        return max(pb, k - s - pb)  # output o reads inputs o s - pb .. o s - pb + k - 1

    def need(path):  # rows of the graph's coarse side a band needs on each side
        n = 0
        for kind, k, s, _ in reversed(path):  # from the graph's output back to its input
            n = extra(kind, k, s) + (-(-n // s) if kind == "deconv" else n * s)
        return n if up > 1 else -(-n // down)

    main = [layer for layer in layers if not layer[3]]
    halo = max([need(main)] + [need([layer]) for layer in layers if layer[3]])
    return up, down, halo


# --- stacks that several families share -------------------------------------------

def gdn_analysis(g, w, prefix="analysis", layers=4):
    """``layers`` 5x5 stride-2 convolutions with GDN between them (``prefix``/conv{i},
    /gdn{i}): Ballé et al.'s analysis transform (16x downsampling with 4 layers)."""
    for i in range(layers - 1):
        conv(g, w, f"{prefix}/conv{i}", 2)
        gdn(g, w, f"{prefix}/gdn{i}")
    return conv(g, w, f"{prefix}/conv{layers - 1}", 2)


def gdn_synthesis(g, w, prefix="synthesis", layers=4):
    """The mirror of ``gdn_analysis``: transposed convolutions with inverse GDN."""
    for i in range(layers - 1):
        deconv(g, w, f"{prefix}/deconv{i}")
        gdn(g, w, f"{prefix}/igdn{i}", inverse=True)
    return deconv(g, w, f"{prefix}/deconv{layers - 1}")
