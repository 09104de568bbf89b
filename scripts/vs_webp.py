#!/usr/bin/env python
"""Per image: a curve's points against WebP at the same rate, from an eval's per_image.csv.

    python scripts/vs_webp.py results/kodak/per_image.csv [--curve NAME] [--top]

For every image and every point of the curve (default: the first curve with
"variable rate" in its name, else the first model curve), WebP's PSNR at the same
bpp is interpolated between the WebP points of the same image (PSNR linear in
log bpp; points outside WebP's range are skipped). Prints the mean and the worst
difference per point of the curve and, with ``--top``, every image's difference at
the curve's highest rate (the acceptance of issue 17: none more than 0.5 dB under).
"""
import argparse
import csv
import math
from collections import defaultdict

import numpy as np

WEBP = "WebP m6 (Pillow)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv")
    ap.add_argument("--curve")
    ap.add_argument("--top", action="store_true", help="every image at the highest rate")
    args = ap.parse_args()
    rows = list(csv.DictReader(open(args.csv)))
    curves = [r["curve"] for r in rows if r["kind"] == "model"]
    name = args.curve or next((c for c in curves if "variable rate" in c), curves[0])
    webp = defaultdict(list)
    ours = defaultdict(dict)
    for r in rows:
        if r["curve"] == WEBP:
            webp[r["image"]].append((float(r["bpp"]), float(r["psnr"])))
        elif r["curve"] == name:
            ours[r["setting"]][r["image"]] = (float(r["bpp"]), float(r["psnr"]))
    if not webp:
        raise SystemExit("no WebP rows in this eval (run it with --baselines webp)")

    def webp_at(image, bpp):
        pts = sorted(webp[image])
        b = [math.log(p[0]) for p in pts]
        if not b[0] <= math.log(bpp) <= b[-1]:
            return None
        return float(np.interp(math.log(bpp), b, [p[1] for p in pts]))

    print(f"curve: {name}")
    print("| setting | mean bpp | mean PSNR | mean vs WebP (dB) | worst image | worst (dB) | "
          "images compared |")
    print("|---|---|---|---|---|---|---|")
    order = sorted(ours, key=lambda s: np.mean([v[0] for v in ours[s].values()]))
    for s in order:
        diffs = {}
        for img, (b, p) in ours[s].items():
            w = webp_at(img, b)
            if w is not None:
                diffs[img] = p - w
        bpp = np.mean([v[0] for v in ours[s].values()])
        psnr = np.mean([v[1] for v in ours[s].values()])
        if diffs:
            worst = min(diffs, key=diffs.get)
            print(f"| {s} | {bpp:.4f} | {psnr:.3f} | {np.mean(list(diffs.values())):+.2f} | "
                  f"{worst} | {diffs[worst]:+.2f} | {len(diffs)} |")
        else:
            print(f"| {s} | {bpp:.4f} | {psnr:.3f} | - | - | - | 0 |")
    if args.top:
        s = order[-1]
        print(f"\nhighest rate ({s}), per image:")
        print("| image | bpp | PSNR | WebP at that bpp | difference (dB) |")
        print("|---|---|---|---|---|")
        for img, (b, p) in sorted(ours[s].items()):
            w = webp_at(img, b)
            print(f"| {img} | {b:.4f} | {p:.3f} | {'-' if w is None else f'{w:.3f}'} | "
                  f"{'-' if w is None else f'{p - w:+.2f}'} |")


if __name__ == "__main__":
    main()
