#!/usr/bin/env python
"""Big images in bounded memory: time and peak RSS of `uqcodec compress` and
`uqcodec decompress` at about 1, 4, 16 and 48 megapixels, and the bpp / PSNR
cost of tiling on Kodak against whole-image coding.

    python scripts/bench_big.py [--sizes 1,4,16,48] [--tile 1024] [--model NAME]
                                [--tiles 256,512] [--kodak 24] [--skip-big] [--skip-kodak]

Each run is a fresh child process (`python -m uqcodec.cli ...`); its peak RSS is
the child's ru_maxrss from os.wait4. Big images are mosaics of Kodak images
(or of the bundled crops when ../shared/data/kodak is absent).
"""
import argparse
import glob
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
KODAK = os.path.join(ROOT, "..", "shared", "data", "kodak")
SIZES = {1: (1152, 864), 4: (2304, 1728), 16: (4608, 3456), 48: (8000, 6000)}


def sources():
    files = sorted(glob.glob(os.path.join(KODAK, "kodim*.png")))
    if not files:
        files = sorted(glob.glob(os.path.join(ROOT, "tests", "data", "*.png")))
    return [np.asarray(Image.open(f).convert("RGB")) for f in files]


def mosaic(width, height, imgs):
    """A width x height image tiled from the source images (row by row, cycling)."""
    out = np.empty((height, width, 3), np.uint8)
    k, y = 0, 0
    while y < height:
        x, row_h = 0, 0
        while x < width:
            im = imgs[k % len(imgs)]
            k += 1
            h, w = min(im.shape[0], height - y), min(im.shape[1], width - x)
            out[y:y + h, x:x + w] = im[:h, :w]
            x += w
            row_h = max(row_h, h)
        y += min(row_h, min(i.shape[0] for i in imgs))
    return out


def run(args, threads):
    """Run `python -m uqcodec.cli ARGS` in a child; returns (seconds, peak RSS bytes)."""
    env = dict(os.environ)
    if threads:
        env["UQCODEC_THREADS"] = str(threads)
    t = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "uqcodec.cli", *args], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t
    err = p.stderr.read().decode()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        raise SystemExit(f"failed: uqcodec {' '.join(args)}\n{err}")
    return dt, usage.ru_maxrss * 1024


def big_table(sizes, tile, model, threads):
    imgs = sources()
    print(f"model {model or 'default'}, tile {tile}, UQCODEC_THREADS={threads or 'default'}; "
          "time includes process start, model load and PNG I/O")
    print(f"| {'image':>11s} | {'MP':>5s} | {'bpp':>6s} | {'compress s':>10s} | {'s/MP':>5s} | "
          f"{'peak RSS':>8s} | {'decompress s':>12s} | {'s/MP':>5s} | {'peak RSS':>8s} |")
    print("|" + "|".join("-" * n for n in (13, 7, 8, 12, 7, 10, 14, 7, 10)) + "|")
    with tempfile.TemporaryDirectory() as d:
        for mp in sizes:
            w, h = SIZES.get(mp, (int((mp * 4e6 / 3) ** 0.5) // 8 * 8 * 4 // 3,
                                  int((mp * 4e6 / 3) ** 0.5) // 8 * 8 * 3 // 4))
            src, uq, png = (os.path.join(d, f"big{mp}{e}") for e in (".png", ".uq", ".out.png"))
            Image.fromarray(mosaic(w, h, imgs)).save(src, compress_level=1)
            opts = ["--model", model] if model else []
            tc, rc = run(["compress", src, "-o", uq, "--seed", "1", "--tile", str(tile),
                          "--force", *opts], threads)
            td, rd = run(["decompress", uq, "-o", png, "--force"], threads)
            mpx = w * h / 1e6
            bpp = 8 * os.path.getsize(uq) / (w * h)
            print(f"| {w:>5d}x{h:<5d} | {mpx:5.1f} | {bpp:6.3f} | {tc:10.1f} | {tc / mpx:5.2f} | "
                  f"{rc / 2**30:6.2f}GB | {td:12.1f} | {td / mpx:5.2f} | {rd / 2**30:6.2f}GB |",
                  flush=True)
            for f in (src, uq, png):
                os.remove(f)


def tiling_cost(tiles, model, n):
    """bpp / PSNR on Kodak of each tile size against whole-image coding (one tile)."""
    import uqcodec
    from uqcodec import container
    files = sorted(glob.glob(os.path.join(KODAK, "kodim*.png")))[:n]
    if not files:
        print("Kodak not present: skipping the tiling cost table")
        return
    whole = container.MAX_TILE  # >= every Kodak side: one tile
    configs = [("whole image", whole)] + [(f"tile {t}", t) for t in tiles]
    res = {name: ([], []) for name, _ in configs}
    for i, f in enumerate(files):
        rgb = np.asarray(Image.open(f).convert("RGB"))
        for name, t in configs:
            data, info = uqcodec.compress_with_info(rgb, model=model, seed=i, tile=t,
                                                    reconstruct=True)
            res[name][0].append(8 * len(data) / (rgb.shape[0] * rgb.shape[1]))
            res[name][1].append(uqcodec.evaluate.psnr(rgb, info["reconstruction"]))
    b0, p0 = (np.mean(v) for v in res["whole image"])
    print(f"\nKodak ({len(files)} images, model {model or 'default'}, --quantizer uq): "
          "cost of tiling")
    print(f"| {'coding':12s} | {'bpp':>6s} | {'PSNR dB':>7s} | {'bpp cost':>8s} | {'PSNR cost':>9s} |")
    print("|--------------|--------|---------|----------|-----------|")
    for name, _ in configs:
        b, p = (np.mean(v) for v in res[name])
        print(f"| {name:12s} | {b:6.4f} | {p:7.3f} | {100 * (b / b0 - 1):+7.2f}% | "
              f"{p - p0:+8.3f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,4,16,48", help="megapixels (1, 4, 16, 48 or any)")
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", default=os.environ.get("UQCODEC_THREADS"))
    ap.add_argument("--tiles", default="256,512", help="tile sizes for the Kodak cost table")
    ap.add_argument("--kodak", type=int, default=24, help="number of Kodak images")
    ap.add_argument("--skip-big", action="store_true")
    ap.add_argument("--skip-kodak", action="store_true")
    args = ap.parse_args()
    if not args.skip_big:
        big_table([float(s) if "." in s else int(s) for s in args.sizes.split(",")],
                  args.tile, args.model, args.threads)
    if not args.skip_kodak:
        tiling_cost([int(t) for t in args.tiles.split(",")], args.model, args.kodak)


if __name__ == "__main__":
    main()
