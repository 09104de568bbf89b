#!/usr/bin/env python
"""Bias of the lower-variance soft-rounding gradient against a Monte Carlo average.

    python scripts/gradient_bias.py DIR [DIR ...] [--draws 64] [--images DIR] [--t 0.5]

Each DIR is a model directory (model.json + weights.npz) or a snapshot of a training
run (train.json + weights.npz): one stage of training per row. The batch is 8 crops of
128x128 from the images (default: Kodak), the same for every row. Prints a Markdown
table (``uqcodec/training/gradbias.py`` says what the columns mean). For a
variable-rate model, ``--t`` is the position in its lambda range (0 lowest, 1 highest).
"""
import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
KODAK = os.path.join(ROOT, "..", "shared", "data", "kodak")


def load(path):
    from uqcodec.training.model import CompressionModel
    name = "model.json" if os.path.exists(os.path.join(path, "model.json")) else "train.json"
    with open(os.path.join(path, name)) as f:
        cfg = json.load(f)
    model = CompressionModel(cfg)
    model.load_weights_npz(os.path.join(path, "weights.npz"))
    steps = (cfg.get("steps") or 0) + (cfg.get("init_steps") or 0 if name == "train.json" else 0)
    return model, cfg, steps


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--draws", type=int, default=64)
    ap.add_argument("--images", default=KODAK)
    ap.add_argument("--t", type=float, default=0.5, help="variable rate: lambda position")
    ap.add_argument("--labels", help="comma-separated row labels (default: directory names)")
    args = ap.parse_args()
    from uqcodec import imageio
    from uqcodec.training.data import list_images
    from uqcodec.training.gradbias import gradient_bias, table
    rng = np.random.default_rng(0)
    files = list_images(args.images)[:8]
    if not files:
        raise SystemExit(f"no images in {args.images}")
    crops = []
    for f in files:
        im = imageio.read_image(f)[0]
        a, b = rng.integers(0, im.shape[0] - 128), rng.integers(0, im.shape[1] - 128)
        crops.append(im[a:a + 128, b:b + 128])
    x = np.stack(crops).astype(np.float32) / 255.0
    labels = args.labels.split(",") if args.labels else [os.path.basename(os.path.normpath(d))
                                                         for d in args.dirs]
    rows = []
    for label, d in zip(labels, args.dirs):
        model, cfg, steps = load(d)
        if cfg.get("training") != "sr":
            print(f"{d}: not a soft-rounding model, skipped", file=sys.stderr)
            continue
        rate, lmbda = None, cfg.get("lambda")
        if cfg.get("lambda_range"):
            lo, hi = cfg["lambda_range"]
            rate, lmbda = args.t, lo * (hi / lo) ** args.t
        s = gradient_bias(model, x, lmbda, cfg["alpha"], draws=args.draws, rate=rate)
        rows.append((label, steps, s))
        print(f"{label}: {s}", file=sys.stderr, flush=True)
    print(table(rows), end="")


if __name__ == "__main__":
    main()
