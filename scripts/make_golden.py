#!/usr/bin/env python
"""Regenerate the golden .uq files in tests/data/golden/ and their expected decoded
pixels (golden.json: sha256 of the decoded uint8 array, its shape, the model
fingerprint). ONLY run this on a deliberate format or model change (and bump the
format version for a format change): tests/test_golden.py checks that today's
decoder still turns these exact bytes into these exact pixels.

    python scripts/make_golden.py [--models hyperprior-sr-0.01,linear-sr-0.01]

Files: {model}_{quantizer}_v{version}.uq for both quantizers, the current format
version and version 1 (one tile, the legacy layout), plus a current-version file
with several tiles per model. The source is a 48x32 crop of tests/data/kodim05_crop.png
(a 160x96 crop for the tiled files, tile 64 -> 3x2 tiles). The models are read
from tests/data/golden/models (frozen copies; copy a model there to use it).
"""
import argparse
import hashlib
import json
import os
import sys

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
GOLDEN = os.path.join(ROOT, "tests", "data", "golden")
GOLDEN_MODELS = os.path.join(GOLDEN, "models")  # frozen copies of the models below
MODELS = ("hyperprior-sr-0.01", "linear-sr-0.01")
SEED = 20201


def sha(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    os.environ["UQCODEC_MODELS"] = GOLDEN_MODELS
    import uqcodec
    from uqcodec import codec, container, zoo
    full = np.asarray(Image.open(os.path.join(ROOT, "tests", "data", "kodim05_crop.png"))
                      .convert("RGB"))
    small = full[32:64, 56:104]
    os.makedirs(GOLDEN, exist_ok=True)
    for f in os.listdir(GOLDEN):
        if f.endswith(".uq"):
            os.remove(os.path.join(GOLDEN, f))
    table = {}
    for name in args.models.split(","):
        c = codec.load(zoo.resolve(name))
        jobs = [(q, v, small, 0 if v == 1 else container.DEFAULT_TILE, "")
                for q in ("uq", "round") for v in (container.VERSION, 1)]
        jobs.append(("uq", container.VERSION, full, 64, "_tiled"))
        for q, v, img, tile, suffix in jobs:
            data, info = c.encode(img, SEED, q, "RGB", reconstruct=True, version=v,
                                  **({"tile": tile} if v != 1 else {}))
            out = uqcodec.decompress(data)
            assert np.array_equal(out, info["reconstruction"])
            fname = f"{name}_{q}_v{v}{suffix}.uq"
            with open(os.path.join(GOLDEN, fname), "wb") as f:
                f.write(data)
            table[fname] = {"model": name, "fingerprint": c.fingerprint, "quantizer": q,
                            "version": v, "tile": tile, "seed": SEED,
                            "shape": list(out.shape), "sha256": sha(out), "bytes": len(data),
                            "psnr": round(uqcodec.evaluate.psnr(img, out), 3)}
            print(fname, len(data), "bytes", table[fname]["psnr"], "dB")
    with open(os.path.join(GOLDEN, "golden.json"), "w") as f:
        json.dump(table, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
