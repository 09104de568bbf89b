#!/usr/bin/env python
"""Encoder-side refinement on Kodak: file size, PSNR and seconds per step.

    python scripts/bench_refine.py [--images kodim03,kodim08,kodim14,kodim23] [--steps 50]
                                   [--quality 5] [--threads 1]

For each image: the plain file and the refined one (same seed), their bpp and PSNR,
and the refinement's time per step (the refined encode minus the plain one, over the
steps). Runs without TensorFlow.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KODAK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..",
                     "shared", "data", "kodak")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default="kodim03,kodim08,kodim14,kodim23")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--quality", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", default=None, help="default: the default rate set")
    args = ap.parse_args()
    os.environ["UQCODEC_THREADS"] = str(args.threads)
    import uqcodec
    from PIL import Image
    print(f"--refine {args.steps}, quality {args.quality}, {args.threads} thread(s), "
          f"tensorflow imported: {'tensorflow' in sys.modules}")
    print("| image | plain bpp / dB | refined bpp / dB | rate | s per step |")
    print("|---|---|---|---|---|")
    for name in args.images.split(","):
        rgb = np.asarray(Image.open(os.path.join(KODAK, name + ".png")).convert("RGB"))
        opts = dict(model=args.model, quality=args.quality, seed=1)
        t = time.perf_counter()
        plain = uqcodec.compress(rgb, **opts)
        t_plain = time.perf_counter() - t
        t = time.perf_counter()
        refined = uqcodec.compress(rgb, refine=args.steps, **opts)
        per_step = (time.perf_counter() - t - t_plain) / args.steps
        pixels = rgb.shape[0] * rgb.shape[1]

        def psnr(data):
            err = uqcodec.decompress(data).astype(np.float64) - rgb
            return 10 * np.log10(255.0 ** 2 / np.mean(err ** 2))
        b0, b1 = 8 * len(plain) / pixels, 8 * len(refined) / pixels
        print(f"| {name} | {b0:.4f} / {psnr(plain):.3f} | {b1:.4f} / {psnr(refined):.3f} | "
              f"{100 * (b1 / b0 - 1):+.1f} % | {per_step:.3f} |", flush=True)
    print(f"tensorflow imported: {'tensorflow' in sys.modules}")


if __name__ == "__main__":
    main()
