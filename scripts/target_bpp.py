#!/usr/bin/env python
"""--target-bpp (or --target-psnr) on every image of a folder: what each file got.

    python scripts/target_bpp.py [--bpp 0.5 | --psnr 32] [--images DIR] [--model A,B]

Codes each image with the search of ``RateSet.encode_target`` (default: the shipped
variable-rate models) and prints, per image, the size or PSNR reached, whether it is
within the tolerance (2 % of the bpp, 0.1 dB), the model and rate parameter used, the
number of real encodes the search took and the wall time; then a summary line.
"""
import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
KODAK = os.path.join(ROOT, "..", "shared", "data", "kodak")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bpp", type=float)
    ap.add_argument("--psnr", type=float)
    ap.add_argument("--images", default=KODAK)
    ap.add_argument("--model", help="variable-rate models, comma-separated (default: shipped)")
    args = ap.parse_args()
    if args.bpp is None and args.psnr is None:
        args.bpp = 0.5
    import uqcodec
    from uqcodec import imageio
    from uqcodec.metrics import psnr
    from uqcodec.training.data import list_images
    kind = "bpp" if args.bpp is not None else "PSNR"
    print(f"| image | {kind} | within tolerance | model | rate | encodes | seconds |")
    print("|---|---|---|---|---|---|---|")
    got, ok, secs = [], 0, []
    for i, f in enumerate(list_images(args.images)):
        rgb = imageio.read_image(f)[0]
        t = time.perf_counter()
        data, info = uqcodec.compress_with_info(rgb, model=args.model, seed=i,
                                                target_bpp=args.bpp, target_psnr=args.psnr)
        secs.append(time.perf_counter() - t)
        v = (8 * len(data) / (rgb.shape[0] * rgb.shape[1]) if args.bpp is not None
             else psnr(uqcodec.decompress(data, rgb=True), rgb))
        got.append(v)
        ok += info["target"]["reached"]
        print(f"| {os.path.basename(f)} | {v:.4f} | {'yes' if info['target']['reached'] else 'no'}"
              f" | {info['model']} | {info['rate']} | {info['target']['encodes']} | "
              f"{secs[-1]:.1f} |", flush=True)
    print(f"\n{ok} of {len(got)} within tolerance; {kind} {min(got):.4f}-{max(got):.4f}, "
          f"mean {np.mean(got):.4f}; {np.mean(secs):.1f} s per image")


if __name__ == "__main__":
    main()
