"""Build small ONNX graphs (convolutions, GDN) without the ``onnx`` package.

onnxruntime reads a serialized ``ModelProto``; the handful of messages a
transform needs are written here directly in protobuf's wire format (field
numbers from onnx/onnx.proto). ``Graph`` collects nodes and float32
initializers; the serialized graph references its initializers as external data,
and ``engine.session`` hands onnxruntime their values in memory.
"""
import numpy as np

OPSET = 13
FLOAT = 1  # TensorProto.DataType
_INT, _INTS = 2, 7  # AttributeProto.AttributeType


def _varint(n):
    n &= (1 << 64) - 1  # negative int64 values: two's complement, 10 bytes
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field, wire):
    return _varint((field << 3) | wire)


def _int(field, n):
    return _key(field, 0) + _varint(int(n))


def _bytes(field, data):
    if isinstance(data, str):
        data = data.encode()
    return _key(field, 2) + _varint(len(data)) + data


EXTERNAL_LOCATION = "uqcodec-memory"  # where an external initializer says its data is


def _tensor(name, a):
    """A float32 TensorProto of ``a`` whose data is external: a reference (location
    ``EXTERNAL_LOCATION``) to the value the session is given in memory (``engine.session``:
    onnxruntime then copies the weights once instead of parsing them out of the model)."""
    entry = lambda k, v: _bytes(13, _bytes(1, k) + _bytes(2, v))  # noqa: E731
    return (b"".join(_int(1, d) for d in a.shape) + _int(2, FLOAT) + _bytes(8, name)
            + entry("location", EXTERNAL_LOCATION) + entry("offset", "0")
            + entry("length", str(a.nbytes)) + _int(14, 1))


def _attribute(name, value):
    if isinstance(value, (list, tuple)):
        return _bytes(1, name) + b"".join(_int(8, v) for v in value) + _int(20, _INTS)
    return _bytes(1, name) + _int(3, value) + _int(20, _INT)


def _value_info(name, channels):
    """A float32 NCHW tensor with symbolic batch and spatial sizes."""
    dims = [_bytes(2, "n"), _int(1, channels), _bytes(2, "h"), _bytes(2, "w")]
    shape = b"".join(_bytes(1, d) for d in dims)
    tensor_type = _int(1, FLOAT) + _bytes(2, shape)
    return _bytes(1, name) + _bytes(2, _bytes(1, tensor_type))


class Graph:
    """A straight-line graph from an NCHW input ``x`` (more with ``input``) to one output
    (or several: ``serialize``)."""

    def __init__(self, in_channels, name="transform"):
        self.name = name
        self.nodes = []
        self.ops = []  # (op, inputs, output, attributes) of every node (``gradients.py``)
        self.arrays = {}  # the initializers' values by name
        # {node: (input, weight, stride, pads)}: a composite layer whose gradient at input
        # is Conv(gradient at node, weight, stride, pads) (``engine.deconv``)
        self.adjoints = {}
        self.inputs = [("x", in_channels)]
        self._n = 0
        self.last = "x"

    def input(self, name, channels):
        """Another NCHW float32 input."""
        self.inputs.append((name, channels))
        return name

    def _tmp(self, prefix):
        self._n += 1
        return f"{prefix}{self._n}"

    def const(self, array, prefix="c"):
        name = self._tmp(prefix)
        self.arrays[name] = np.ascontiguousarray(array, dtype="<f4")
        return name

    def node(self, op, inputs, **attrs):
        out = self._tmp(op.lower())
        self.ops.append((op, list(inputs), out, attrs))
        self.nodes.append(b"".join(_bytes(1, i) for i in inputs) + _bytes(2, out)
                          + _bytes(3, out) + _bytes(4, op)
                          + b"".join(_bytes(5, _attribute(k, v)) for k, v in attrs.items()))
        self.last = out
        return out

    def serialize(self, out_channels):
        """``out_channels``: the channels of the last node, the one output; or a list of
        (node, channels), the outputs. The initializers are references to external data:
        the session is given ``arrays``."""
        outputs = ([(self.last, out_channels)] if isinstance(out_channels, int)
                   else out_channels)
        graph = (b"".join(_bytes(1, n) for n in self.nodes) + _bytes(2, self.name)
                 + b"".join(_bytes(5, _tensor(n, a)) for n, a in self.arrays.items())
                 + b"".join(_bytes(11, _value_info(n, c)) for n, c in self.inputs)
                 + b"".join(_bytes(12, _value_info(n, c)) for n, c in outputs))
        opset = _bytes(1, "") + _int(2, OPSET)
        return _int(1, 7) + _bytes(2, "uqcodec") + _bytes(7, graph) + _bytes(8, opset)
