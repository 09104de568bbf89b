#!/usr/bin/env python
"""Warm encode/decode time of a 768x512 Kodak image through the Python API,
split into transforms (TensorFlow) and entropy coding (+ everything else).

    python scripts/bench_codec.py [--image PATH] [--repeat 3] [--threads N]
"""
import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default=os.path.join(ROOT, "..", "shared", "data", "kodak",
                                                    "kodim05.png"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--models", default=None, help="comma-separated model names")
    args = ap.parse_args()
    import uqcodec
    from uqcodec import codec, imageio, zoo
    if os.path.exists(args.image):
        rgb, _, _ = imageio.read_image(args.image)
    else:  # no ../shared: tile the bundled sample to 768x512
        s, _, _ = imageio.read_image(os.path.join(ROOT, "examples", "sample.png"))
        rgb = np.tile(s, (2, 3, 1))[:512, :768]
        args.image = "examples/sample.png tiled to 768x512"
    names = args.models.split(",") if args.models else [
        zoo.default_model()["name"]] + [
        c["name"] for c in zoo.list_models() if c["arch"] == "linear"][:1]
    print(f"image: {args.image} ({rgb.shape[1]}x{rgb.shape[0]}), threads: "
          f"{os.environ.get('UQCODEC_THREADS', 'default')}, repeat {args.repeat} (best)")
    print(f"{'model':28s} {'bpp':>6s} | {'enc total':>9s} {'transf':>7s} {'entropy':>7s} | "
          f"{'dec total':>9s} {'transf':>7s} {'entropy':>7s} | {'enc+dec':>7s}")
    for name in names:
        c = codec.load(zoo.resolve(name))
        data = uqcodec.compress(rgb, model=name, seed=0)  # warm-up (tracing)
        uqcodec.decompress(data, model=name)
        best = None
        for r in range(args.repeat):
            c.transform_seconds = 0.0
            t0 = time.perf_counter()
            data = uqcodec.compress(rgb, model=name, seed=r)
            t1 = time.perf_counter()
            et = c.transform_seconds
            c.transform_seconds = 0.0
            uqcodec.decompress(data, model=name)
            t2 = time.perf_counter()
            dt = c.transform_seconds
            row = (t1 - t0, et, t2 - t1, dt)
            if best is None or sum(row[::2]) < sum(best[::2]):
                best = row
        enc, et, dec, dt = best
        bpp = 8 * len(data) / (rgb.shape[0] * rgb.shape[1])
        print(f"{name:28s} {bpp:6.3f} | {enc:8.3f}s {et:6.3f}s {enc - et:6.3f}s | "
              f"{dec:8.3f}s {dt:6.3f}s {dec - dt:6.3f}s | {enc + dec:6.3f}s")


if __name__ == "__main__":
    main()
