"""BD-rate of models against a reference model, on real files (one process, one thread by
default): the quick check of a training run against the model it grew from.

    python scripts/compare_models.py --ref models/hyperprior8-sr-lo runs/out/NAME [...]
        [--images ../shared/data/kodak] [--limit 6] [--qualities 0,2,4,6,8,10] [--crop 256]

Every image (optionally a centre crop) is compressed at each quality with the same seed
by every model and decoded; prints per model its mean bpp and PSNR per quality and the
BD-rate against --ref (negative: smaller files at equal PSNR).
"""
import argparse
import glob
import os
import sys
import time

import numpy as np

import uqcodec
from uqcodec import imageio, metrics


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--ref", required=True)
    ap.add_argument("--images", default=os.path.join(os.path.dirname(__file__), "..", "..",
                                                     "shared", "data", "kodak"))
    ap.add_argument("--limit", type=int, default=6)
    ap.add_argument("--qualities", default="0,2,4,6,8,10")
    ap.add_argument("--crop", type=int, default=0, help="centre crop (pixels, 0: whole image)")
    ap.add_argument("--quantizer", default="uq")
    a = ap.parse_args()
    files = sorted(glob.glob(os.path.join(a.images, "*.png")))[:a.limit]
    if not files:
        sys.exit(f"no PNG images in {a.images}")
    qs = [float(q) for q in a.qualities.split(",")]
    xs = []
    for f in files:
        x = imageio.read_image(f)[0]
        if a.crop:
            h, w = x.shape[:2]
            t, l = max(0, (h - a.crop) // 2), max(0, (w - a.crop) // 2)
            x = x[t:t + a.crop, l:l + a.crop]
        xs.append(x)
    pixels = sum(x.shape[0] * x.shape[1] for x in xs)
    curves = {}
    for m in [a.ref] + a.models:
        t0, bpp, psnr = time.time(), [], []
        for q in qs:
            bits, d = 0, []
            for i, x in enumerate(xs):
                data = uqcodec.compress(x, model=m, quality=q, seed=100 + i, quantizer=a.quantizer)
                bits += 8 * len(data)
                d.append(metrics.psnr(x, uqcodec.decompress(data, model=m)))
            bpp.append(bits / pixels)
            psnr.append(float(np.mean(d)))
        curves[m] = (bpp, psnr)
        line = " ".join(f"{b:.4f}/{p:.2f}" for b, p in zip(bpp, psnr))
        bd = ("" if m == a.ref else
              f"  BD-rate vs ref {metrics.bd_rate(*curves[a.ref], bpp, psnr):+.2f} %")
        print(f"{os.path.basename(m.rstrip('/'))}: {line}{bd}  ({time.time() - t0:.0f} s)",
              flush=True)


if __name__ == "__main__":
    main()
