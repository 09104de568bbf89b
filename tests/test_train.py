"""Training smoke tests (a few steps on tiny crops), resume, export, and coding with the result."""
import json
import os

import numpy as np
import pytest

import uqcodec
from conftest import DATA, load

SMALL = {"linear": {"M": 24}, "hyperprior": {"N": 16, "M": 24}}


@pytest.mark.parametrize("arch", ["linear", "hyperprior"])
@pytest.mark.parametrize("mode", ["un", "sr"])
def test_train_resume_export_code(tmp_path, arch, mode):
    from uqcodec import train
    from uqcodec.export import export_model
    run = str(tmp_path / "run")
    kw = dict(data=DATA, patch=64, batch=2, lr=1e-3, warmup=2, progress=False, bf16=False,
              model_args=SMALL[arch], export=False, log_every=1000)
    train.train(arch, mode, 0.01, run, steps=2, **kw)
    with open(os.path.join(run, "train.json")) as f:
        assert json.load(f)["steps"] == 2
    train.train(arch, mode, 0.01, run, steps=4, resume=True, **kw)
    with open(os.path.join(run, "train.json")) as f:
        state = json.load(f)
    assert state["steps"] == 4
    if mode == "sr":
        assert state["alpha"] > 1.0
    out = str(tmp_path / f"{arch}-{mode}")
    card = export_model(run, out, measure=False)
    assert card["arch"] == arch and card["training"] == mode and card["steps"] == 4
    x = load("kodim15_odd.png")
    for q in ("uq", "round"):
        data, info = uqcodec.compress_with_info(x, model=out, seed=4, quantizer=q,
                                                reconstruct=True)
        np.testing.assert_array_equal(uqcodec.decompress(data, model=out), info["reconstruction"])
        # exact coding distributions: the file size is the model's rate
        assert 8 * len(data) <= 1.01 * info["rate_bits"] + 8 * 100 + 96


def test_warm_start(tmp_path):
    from uqcodec import train
    from uqcodec.export import export_model
    kw = dict(data=DATA, patch=64, batch=2, progress=False, bf16=False, export=False,
              log_every=1000)
    train.train("linear", "un", 0.01, str(tmp_path / "a"), steps=2, model_args={"M": 24}, **kw)
    export_model(str(tmp_path / "a"), str(tmp_path / "A"), measure=False)
    state = train.train("linear", "sr", 0.02, str(tmp_path / "b"), steps=2,
                        init_from=str(tmp_path / "A"), **kw)
    assert state["M"] == 24 and state["init_from"].endswith("A")
