#!/usr/bin/env python
"""Encoder-side refinement on Kodak: file size, PSNR and seconds per step.

    python scripts/bench_refine.py [--images kodim03,kodim08,kodim14,kodim23] [--steps 50]
                                   [--quality 5] [--threads 1] [--model NAME]
                                   [--baseline DIR]

For each image: the plain file and the refined one (same seed), their bpp and PSNR,
and the refinement's time per step (the refined encode minus the plain one, over the
steps), warm: a 2-step refinement of the first image first pays the one-time costs
(sessions, TensorFlow's import and tracing). Runs without TensorFlow. ``--baseline``:
the same in a child process on an older checkout too, one after the other (for
example uqcodec 0.14's TensorFlow path: ``git worktree add /tmp/v014 e9f0905``, then
``--baseline /tmp/v014 --model hyperprior9-sr-mid``: its models directory is used).
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KODAK = os.path.join(ROOT, "..", "shared", "data", "kodak")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default="kodim03,kodim08,kodim14,kodim23")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--quality", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", default=None, help="default: the default rate set")
    ap.add_argument("--baseline", default=None, help="an older uqcodec checkout to run too")
    ap.add_argument("--root", default=ROOT, help=argparse.SUPPRESS)  # (the child's checkout)
    args = ap.parse_args()
    if args.baseline:
        argv = [a for a in sys.argv[1:] if a != "--baseline" and a != args.baseline]
        for root in (ROOT, os.path.abspath(args.baseline)):
            env = dict(os.environ, UQCODEC_MODELS=os.path.join(root, "models"))
            subprocess.run([sys.executable, __file__, *argv, "--root", root], env=env,
                           check=True)
        return
    os.environ["UQCODEC_THREADS"] = str(args.threads)
    sys.path.insert(0, args.root)
    import uqcodec
    from PIL import Image
    print(f"{args.root}: uqcodec {uqcodec.__version__}, --refine {args.steps}, quality "
          f"{args.quality}, {args.threads} thread(s)")
    print("| image | plain bpp / dB | refined bpp / dB | rate | s per step |")
    print("|---|---|---|---|---|")
    warm = True
    for name in args.images.split(","):
        rgb = np.asarray(Image.open(os.path.join(KODAK, name + ".png")).convert("RGB"))
        opts = dict(model=args.model, quality=args.quality, seed=1)
        if warm:  # the one-time costs, outside the timing
            uqcodec.compress(rgb, refine=2, **opts)
            warm = False
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
