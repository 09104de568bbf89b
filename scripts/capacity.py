#!/usr/bin/env python
"""Transform capacity: how far a model's transforms invert, without and with quantization.

    python scripts/capacity.py [--images DIR] [--limit 6] [--models NAME,...]

Prints, per model, the mean PSNR over the images of

* ``synthesis(analysis(x))``: no quantization at all, the transforms' own limit;
* ``synthesis(round(y))``: latents rounded (no entropy coding);
* the model card's Kodak PSNR (real files, universal quantization, all 24 images).

When the first is barely above the second, more rate cannot buy PSNR: the model
needs capacity (N, M) or training, not a higher lambda. Default models: every
shipped ``sr`` model of both families.
"""
import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
KODAK = os.path.join(ROOT, "..", "shared", "data", "kodak")


def measure(codec, images):
    """(PSNR without quantization, PSNR with rounded latents), means over images."""
    from uqcodec.metrics import psnr
    no_q, rounded = [], []
    for rgb in images:
        h, w = rgb.shape[:2]
        y = codec.analyze(rgb)[0]
        no_q.append(psnr(codec.synthesize(y, h, w), rgb))
        rounded.append(psnr(codec.synthesize(np.rint(y), h, w), rgb))
    return float(np.mean(no_q)), float(np.mean(rounded))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", default=KODAK)
    ap.add_argument("--limit", type=int, default=6, help="first N images (0: all)")
    ap.add_argument("--models", help="comma-separated names (default: every shipped sr model)")
    args = ap.parse_args()
    from uqcodec import codec, imageio, zoo
    files = sorted(f for f in os.listdir(args.images) if f.lower().endswith(".png"))
    files = files[:args.limit or None]
    if not files:
        raise SystemExit(f"no PNG images in {args.images}")
    images = [imageio.read_image(os.path.join(args.images, f))[0] for f in files]
    names = (args.models.split(",") if args.models else
             [c["name"] for c in zoo.list_models() if c.get("training") == "sr"])
    print(f"{len(files)} images from {args.images}")
    print("| model | lambda | PSNR no quantization | PSNR rounded y | Kodak bpp / PSNR (card) |")
    print("|---|---|---|---|---|")
    for name in names:
        c = codec.load(zoo.resolve(name))
        no_q, rounded = measure(c, images)
        card = c.card
        print(f"| {name} | {card.get('lambda')} | {no_q:.2f} | {rounded:.2f} | "
              f"{card.get('kodak_bpp')} / {card.get('kodak_psnr')} |", flush=True)


if __name__ == "__main__":
    main()
