"""The training transforms (Keras layers, uqcodec/training/) and the inference transforms
(onnxruntime graphs built from the weights file: uqcodec/linear.py, uqcodec/hyperprior.py)
are the same functions of the same shipped weights, within float32 rounding."""
import os

import numpy as np
import pytest

from conftest import load, shipped
from uqcodec import codec, zoo


def _model(arch):
    """A shipped model of the family: for the hyperprior, one with the linear bypass and
    a latent gain if one ships (every path of its transforms)."""
    if arch == "hyperprior":
        full = [c for c in zoo.list_models() if c.get("arch") == arch and c.get("bypass")]
        if full:
            return full[0]["path"]
    return zoo.resolve(shipped(arch))


def _close(got, want, what):
    """Equal up to float32 rounding of sums in another order: every element within 1e-5
    of the largest value (measured: at most 2.2e-6 of it)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, what
    scale = float(np.abs(want).max())
    assert scale > 0, what
    err = float(np.abs(got - want).max())
    assert err <= 1e-5 * scale, f"{what}: max |difference| {err:.3g} of values up to {scale:.3g}"
    return err / scale


@pytest.mark.parametrize("arch", ["linear", "hyperprior"])
def test_training_and_inference_transforms_agree(arch):
    from uqcodec.training import _tf
    from uqcodec.training.model import CompressionModel
    tf, _ = _tf.load()
    path = _model(arch)
    c = codec.load(path)
    model = CompressionModel(c.card)
    model.load_weights_npz(os.path.join(path, "weights.npz"))
    x = c.pad(load("kodim05_crop.png"))  # float32 in [0, 1], padded to the family's multiple
    y = c.family.analysis(x)
    errs = {"analysis": _close(model.analyze(tf.constant(x[None])).numpy()[0], y, "analysis")}
    if arch == "hyperprior":
        z = c.family.hyper_analysis(y)
        errs["hyper_analysis"] = _close(
            model.hyper_analysis(tf.constant(y[None], tf.float32)).numpy()[0], z, "hyper")
    y_hat = np.rint(y).astype(np.float32)  # a decoder input: what the synthesis sees
    errs["synthesis"] = _close(model.synthesize(tf.constant(y_hat[None])).numpy()[0],
                               c.family.synthesis(y_hat), "synthesis")
    print(os.path.basename(path), {k: f"{v:.1e}" for k, v in errs.items()})
