"""Reverse-mode gradients of the engine's ONNX graphs, as more ONNX nodes.

``backward(g, seed, wrt)`` appends to graph ``g`` the vector-Jacobian product of its
forward nodes: given the node ``seed`` (the gradient of a scalar loss with respect to
the node it was computed for, ``of``), it adds the nodes that compute the gradient with
respect to the node ``wrt`` (an input). The forward nodes stay as they are, so the same
graph computes the transform and its gradient in one run, with the activations the
gradient needs kept by onnxruntime. Gradients flow only into nodes, never into
initializers (the weights are fixed: encoder-side refinement, ``refine.py``).

The ops the engine's transforms use, each with its rule:

* ``Conv`` with stride 1 (the engine runs transposed convolutions as stride-1
  convolutions + ``DepthToSpace``): the convolution of the gradient with the kernel
  flipped in space and transposed in channels, padded by ``K - 1 - pad`` on each side;
* ``DepthToSpace`` (DCR): ``SpaceToDepth``, its inverse and adjoint (a permutation);
* a composite layer the graph lists in ``g.adjoints`` (the engine's transposed
  convolutions: a stride-1 convolution over every output phase and ``DepthToSpace``): the convolution it
  names, from the layer's output straight to its input (a transposed convolution's
  adjoint is the strided convolution with the same kernel);
* ``Relu``: the gradient where the output is positive (``Sign`` of the output);
* ``Abs``: times ``Sign`` of the input;
* ``Add``, ``Mul``, ``Div`` (of two nodes, or of a node and a scalar constant).
"""
import numpy as np


def _conv_input_gradient(g, grad, weight, attrs):
    strides = attrs.get("strides", [1, 1])
    if list(strides) != [1, 1] or attrs.get("group", 1) != 1:
        raise NotImplementedError("gradients of strided or grouped convolutions")
    w = g.arrays[weight]  # (out, in, K, K)
    K = w.shape[2]
    pads = attrs.get("pads", [0, 0, 0, 0])  # [top, left, bottom, right]
    back = [K - 1 - p for p in pads]
    if min(back) < 0:
        raise NotImplementedError("convolutions padded by more than the kernel")
    flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    return g.node("Conv", [grad, g.const(flipped)], strides=[1, 1], pads=back)


def _is_const(g, name):
    return name in g.arrays


def backward(g, seed, of, wrt="x"):
    """Append the gradient with respect to ``wrt`` of the loss whose gradient with
    respect to node ``of`` is node ``seed``; returns the gradient's node name."""
    grads = {of: seed}

    def give(name, grad):  # accumulate a node's gradient (``grad``: builds it, if needed)
        if _is_const(g, name):
            return
        grad = grad()
        grads[name] = g.node("Add", [grads[name], grad]) if name in grads else grad

    for op, inputs, out, attrs in reversed(list(g.ops)):
        if out not in grads:
            continue
        d = grads.pop(out)
        if out in g.adjoints:  # the nodes inside the layer get no gradients of their own
            x, weight, stride, pads = g.adjoints[out]
            give(x, lambda: g.node("Conv", [d, g.const(weight)], strides=[stride, stride],
                                   pads=pads))
            continue
        if op == "Conv":
            give(inputs[0], lambda: _conv_input_gradient(g, d, inputs[1], attrs))
        elif op == "DepthToSpace":
            if attrs.get("mode", "DCR") != "DCR":
                raise NotImplementedError("DepthToSpace in CRD mode")
            give(inputs[0], lambda: g.node("SpaceToDepth", [d], blocksize=attrs["blocksize"]))
        elif op == "Relu":
            give(inputs[0], lambda: g.node("Mul", [d, g.node("Sign", [out])]))
        elif op == "Abs":
            give(inputs[0], lambda: g.node("Mul", [d, g.node("Sign", [inputs[0]])]))
        elif op in ("Add", "Mul", "Div"):
            a, b = inputs
            for c in (a, b):
                if _is_const(g, c) and g.arrays[c].size != 1:
                    raise NotImplementedError(f"{op} of a broadcast constant")
            if op == "Add":
                give(a, lambda: d)
                give(b, lambda: d)
            elif op == "Mul":
                give(a, lambda: g.node("Mul", [d, b]))
                give(b, lambda: g.node("Mul", [d, a]))
            else:  # d(a/b)/db = -(a/b)/b
                give(a, lambda: g.node("Div", [d, b]))
                give(b, lambda: g.node("Neg", [g.node("Div", [g.node("Mul", [d, out]), b])]))
        else:
            raise NotImplementedError(f"no gradient rule for {op}")
    if wrt not in grads:
        raise ValueError(f"the loss does not depend on {wrt}")
    if set(grads) != {wrt}:
        raise ValueError(f"gradients left at {sorted(set(grads) - {wrt})}")
    return grads[wrt]
