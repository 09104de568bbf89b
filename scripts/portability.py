#!/usr/bin/env python
"""Do files decode on other machines? Kodak written here, decoded under other arithmetic.

    python scripts/portability.py [--images DIR] [--model NAME] [--limit N]
    python scripts/portability.py --rate-cost [--models NAME,...]

Writes every image with the given model (default: the default model; seeds
1000, 1001, ...), then decodes all files in a fresh process per setting (the
settings of tests/test_portable.py: OpenBLAS kernels of other CPUs, one BLAS
thread, TensorFlow without oneDNN, onnxruntime without graph optimizations or
with 1/2 threads) and prints, per setting, how many files fail to decode, how
many give latents other than the encoder's, and the largest pixel difference.

``--rate-cost``: the price of the exact entropy path. Codes each image with the
version-3 codec and with the version-2 one it replaced (TensorFlow float
hyper-synthesis, ``legacy.py``), same seed, and prints the mean bpp and PSNR of
both per model (default: every shipped hyperprior model).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
KODAK = os.path.join(ROOT, "..", "shared", "data", "kodak")


def images(folder, limit):
    from uqcodec import imageio
    names = sorted(f for f in os.listdir(folder) if f.lower().endswith(".png"))[:limit]
    return [(n, imageio.read_image(os.path.join(folder, n))[0]) for n in names]


def portability(args):
    import uqcodec
    from uqcodec import codec, zoo
    from test_portable import DECODE, SETTINGS, _latents_sha, _runs_here
    model = args.model or zoo.default_model("hyperprior")["name"]
    c = codec.load(zoo.resolve(model))
    tmp = tempfile.mkdtemp(prefix="uqcodec-port-")
    files = {}
    for i, (name, rgb) in enumerate(images(args.images, args.limit)):
        data, info = uqcodec.compress_with_info(rgb, model=model, seed=1000 + i,
                                                reconstruct=True)
        path = os.path.join(tmp, name[:-4] + ".uq")
        with open(path, "wb") as f:
            f.write(data)
        files[path] = (_latents_sha(c, data), info["reconstruction"])
    print(f"{len(files)} files written with {model}")
    print("| setting | fail to decode | other latents | max pixel difference |")
    print("|---|---|---|---|")
    for setting, extra in sorted(SETTINGS.items()):
        env = dict(os.environ, PYTHONPATH=ROOT, **extra)
        if not _runs_here(env):
            print(f"| {setting} | (this CPU cannot run it) | | |")
            continue
        fail = other = 0
        worst = 0
        for path, (latents, recon) in files.items():  # one process per file: a failure
            run = subprocess.run([sys.executable, "-c", DECODE, path], env=env,  # stays local
                                 capture_output=True, text=True, timeout=600)
            if run.returncode:
                fail += 1
                print(f"  {setting}: {os.path.basename(path)}: "
                      f"{(run.stderr.strip().splitlines() or ['?'])[-1]}", flush=True)
                continue
            got = json.loads(run.stdout.strip().splitlines()[-1])
            other += got[path] != latents
            worst = max(worst, int(np.abs(np.load(path + ".npy").astype(int) - recon).max()))
        print(f"| {setting} | {fail} of {len(files)} | {other} | {worst} |", flush=True)


def rate_cost(args):
    from uqcodec import codec, container, legacy, metrics, zoo
    names = args.models.split(",") if args.models else [
        c["name"] for c in zoo.list_models() if c.get("arch") == "hyperprior"]
    imgs = images(args.images, args.limit)
    print("| model | v2 bpp | v2 PSNR | v3 bpp | v3 PSNR | rate change |")
    print("|---|---|---|---|---|---|")
    for name in names:
        path = zoo.resolve(name)
        res = {}
        for key, c in (("v2", legacy.LegacyCodec(path)), ("v3", codec.load(path))):
            bpp, psnr = [], []
            for i, (_, rgb) in enumerate(imgs):
                data, info = c.encode(rgb, 1000 + i, reconstruct=True)
                header, streams = container.unpack(data)
                bpp.append(8 * len(data) / rgb.shape[0] / rgb.shape[1])
                psnr.append(metrics.psnr(rgb, c.decode(header, streams)))
            res[key] = (np.mean(bpp), np.mean(psnr))
        (b2, p2), (b3, p3) = res["v2"], res["v3"]
        print(f"| {name} | {b2:.4f} | {p2:.3f} | {b3:.4f} | {p3:.3f} | {100 * (b3 / b2 - 1):+.2f} % |",
              flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default=KODAK)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--model")
    ap.add_argument("--models")
    ap.add_argument("--rate-cost", action="store_true")
    args = ap.parse_args()
    (rate_cost if args.rate_cost else portability)(args)


if __name__ == "__main__":
    main()
