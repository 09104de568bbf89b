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

import numpy as np

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


def conv(g, w, name, stride=1, relu=False, src=None):
    """``src``: the input node (default: the last one)."""
    k = w[name + "/kernel"].astype(np.float32)  # (kh, kw, in, out)
    g.node("Conv", [src or g.last, g.const(k.transpose(3, 2, 0, 1)), g.const(w[name + "/bias"])],
           strides=[stride, stride], pads=_same_pads(k.shape[0], stride))
    if relu:
        g.node("Relu", [g.last])
    return g.last


def deconv(g, w, name, stride=2, relu=False, src=None):
    k = w[name + "/kernel"].astype(np.float32)  # (kh, kw, out, in)
    g.node("ConvTranspose", [src or g.last, g.const(k.transpose(3, 2, 0, 1)),
                             g.const(w[name + "/bias"])],
           strides=[stride, stride], pads=_same_pads(k.shape[0], stride))
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
    return max(1, int(n)) if n else (os.cpu_count() or 1)


class Transform:
    """One graph, run on HxWxC float32 arrays (a batch of one)."""

    def __init__(self, graph, out_channels):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # no busy-waiting between runs: the coding tables use the same cores meanwhile
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if os.environ.get("UQCODEC_ORT_NO_OPT"):  # (tests: other float arithmetic)
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self.session = ort.InferenceSession(graph.serialize(out_channels), opts,
                                            providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x):
        x = np.ascontiguousarray(np.asarray(x, np.float32).transpose(2, 0, 1)[None])
        out = self.session.run(None, {self.input: x})[0]
        return out[0].transpose(1, 2, 0)
