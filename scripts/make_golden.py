#!/usr/bin/env python
"""Write the golden .uq files of the current format version in tests/data/golden/
and their expected results (golden.json). ONLY run this on a deliberate format
change, together with a version bump: tests/test_golden.py checks that today's
decoder still turns these exact bytes into these results. Files of older versions
are frozen: their entries are kept as they are (version 1 and 2 files were written
by uqcodec 0.1 to 0.8, with ``legacy.py``).

    python scripts/make_golden.py [--models hyperprior-sr-0.01,linear-sr-0.01]

Per version-3/4 file golden.json holds the sha256 of the decoder's exact latents
(the same bits on every machine) and of the decoded pixels on the machine that
wrote it, and ``NAME.png`` the pixels (other machines: within 1 level).
Files: {model}_{quantizer}_v{version}.uq for both quantizers, plus a file
with several tiles per model. A variable-rate model gets a file at the lowest rate parameter of its
range (uq) and one at the highest (round) instead. Only the entries of the models
written are replaced. The source is a 48x32 crop of tests/data/kodim05_crop.png
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


def latents_sha(c, data):
    """sha256 of the exact decoder inputs of y, tile after tile (float64)."""
    from uqcodec import container
    h = hashlib.sha256()
    for _, y_dec in c.decode_latents(*container.unpack(data)):
        h.update(np.ascontiguousarray(y_dec, np.float64).tobytes())
    return h.hexdigest()


def _fits(c, img, rate):
    from uqcodec.errors import BudgetError
    try:
        c.encode(img, SEED, "round", "RGB", rate=rate)
        return True
    except BudgetError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    os.environ["UQCODEC_MODELS"] = GOLDEN_MODELS
    import uqcodec
    from uqcodec import codec, container, rateset, zoo
    full = np.asarray(Image.open(os.path.join(ROOT, "tests", "data", "kodim05_crop.png"))
                      .convert("RGB"))
    small = full[32:64, 56:104]
    os.makedirs(GOLDEN, exist_ok=True)
    with open(os.path.join(GOLDEN, "golden.json")) as f:
        names = args.models.split(",")
        table = {k: v for k, v in json.load(f).items()
                 if v["version"] < container.VERSION or v["model"] not in names}
    v = container.VERSION
    for name in names:
        c = codec.load(zoo.resolve(name))
        jobs = [(q, small, container.DEFAULT_TILE, "", 0) for q in ("uq", "round")]
        jobs.append(("uq", full, 64, "_tiled", 0))
        if c.variable:  # the lowest and the highest rate parameter of its range (the
            # highest within the decoder's work budget for this crop)
            opts = [r for _, r in rateset.RateSet([c]).options()]
            top = next(r for r in reversed(opts) if _fits(c, small, r))
            jobs = [(q, small, container.DEFAULT_TILE, f"_r{r}", r)
                    for q, r in (("uq", opts[0]), ("round", top))]
        for q, img, tile, suffix, rate in jobs:
            data, info = c.encode(img, SEED, q, "RGB", reconstruct=True, tile=tile, rate=rate)
            out = uqcodec.decompress(data)
            assert np.array_equal(out, info["reconstruction"])
            fname = f"{name}_{q}_v{v}{suffix}.uq"
            with open(os.path.join(GOLDEN, fname), "wb") as f:
                f.write(data)
            Image.fromarray(out).save(os.path.join(GOLDEN, fname[:-3] + ".png"))
            table[fname] = {"model": name, "fingerprint": c.fingerprint, "quantizer": q,
                            "version": v, "tile": tile, "seed": SEED, "rate": rate,
                            "shape": list(out.shape), "sha256": sha(out), "bytes": len(data),
                            "latents_sha256": latents_sha(c, data),
                            "psnr": round(uqcodec.evaluate.psnr(img, out), 3)}
            print(fname, len(data), "bytes", table[fname]["psnr"], "dB")
    with open(os.path.join(GOLDEN, "golden.json"), "w") as f:
        json.dump(table, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
