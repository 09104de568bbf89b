"""Backward graphs (``gradients.py``): the gradient of a transform, as onnxruntime runs it,
against finite differences of the same transform's forward pass."""
import numpy as np
import pytest

from uqcodec import codec, engine, gradients, zoo
from uqcodec.onnxgraph import Graph
from conftest import shipped


def _directional_check(graph, in_channels, out_channels, size, up):
    out = graph.last
    seed = graph.input("seed", out_channels)
    grad = gradients.backward(graph, seed, out, "x")
    session, opts = engine.session(graph, [(out, out_channels), (grad, in_channels)])
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(1, in_channels, size, size)) * 2).astype(np.float32)
    g_out = rng.normal(size=(1, out_channels, size * up, size * up)).astype(np.float32)
    _, g_in = session.run(None, {"x": x, "seed": g_out}, opts)
    # a direction along which the loss changes well above the float32 rounding of the
    # forward passes: the gradient itself plus as much of a random direction
    dx = (g_in / g_in.std() + rng.normal(size=x.shape)).astype(np.float32)
    eps = 1e-3
    plus, minus = (session.run(None, {"x": x + s * eps * dx, "seed": g_out}, opts)[0]
                   .astype(np.float64) for s in (1, -1))
    numeric = float((g_out * (plus - minus)).sum() / (2 * eps))
    analytic = float((g_in.astype(np.float64) * dx).sum())
    assert analytic == pytest.approx(numeric, rel=1e-2)


@pytest.mark.parametrize("part", ["synthesis", "hyper_synthesis"])
def test_backward_graph_matches_finite_differences(part):
    family = codec.load(zoo.resolve(shipped("hyperprior"))).family
    if part == "synthesis":  # transposed convolutions (folded into strided ones), GDN
        _directional_check(family.synthesis_graph(), family.M, 3, 6, 16)
    else:  # ReLU, a stride-1 convolution
        _directional_check(family.hyper_synthesis_graph(), family.N, 2 * family.M, 3, 4)


def test_backward_refuses_what_it_cannot_differentiate():
    g = Graph(4)
    g.node("Conv", ["x", g.const(np.ones((4, 4, 3, 3)))], strides=[2, 2], pads=[1, 1, 1, 1])
    with pytest.raises(NotImplementedError, match="strided"):
        gradients.backward(g, g.input("seed", 4), g.last, "x")
    g = Graph(4)
    g.node("Tanh", ["x"])
    with pytest.raises(NotImplementedError, match="Tanh"):
        gradients.backward(g, g.input("seed", 4), g.last, "x")
