#!/usr/bin/env python
"""Speed of the codec against Pillow WebP, and against an older uqcodec, in one run.

For the default model of each family (or --models) on the images of --images
(default: Kodak):

* whole-process CLI ``uqcodec compress`` / ``decompress`` of one image: median of
  --runs processes (start-up, model load, PNG and .uq I/O included) and peak RSS;
  Pillow WebP (method 6) as a whole process, the same way;
* warm API compress + decompress per image (mean over --limit images), split into
  transforms (the inference engine) and the rest, and the same work on the
  TensorFlow path that version-2 files used (``legacy.py``, needs TensorFlow);
* batch: ``uqcodec compress DIR`` and ``uqcodec decompress DIR`` (the CLI's worker
  pool) over every image, in images per second.

``--baseline DIR``: also time the CLI and batch of the uqcodec checked out in DIR
(e.g. ``git worktree add /tmp/old v0.8``), same images, same run.

    python scripts/bench_speed.py [--images DIR] [--limit 4] [--runs 5] [--models A,B]
                                  [--baseline DIR]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
KODAK = os.path.join(ROOT, "..", "shared", "data", "kodak")
WEBP = ("import sys; from PIL import Image; import numpy as np; "
        "Image.open(sys.argv[1]).convert('RGB').save(sys.argv[2], 'WEBP', quality=75, method=6); "
        "np.asarray(Image.open(sys.argv[2]).convert('RGB'))")


def process(cmd, env, cwd=ROOT):
    """Wall seconds and peak RSS (MiB) of one process."""
    t = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t
        if os.waitstatus_to_exitcode(status):
            err.seek(0)
            raise SystemExit(f"failed: {' '.join(cmd)}: {err.read().decode()[-500:]}")
    return wall, ru.ru_maxrss / 1024.0


def median_process(cmd, env, runs):
    results = [process(cmd, env) for _ in range(runs)]
    return statistics.median(r[0] for r in results), max(r[1] for r in results)


# `python -m uqcodec.cli` from the checkout ``root``, even where another checkout is
# installed in editable mode (its import hook would otherwise take precedence)
LAUNCH = ("import sys, runpy; sys.meta_path[:] = [f for f in sys.meta_path if not "
          "type(f).__module__.startswith('__editable__')]; sys.path.insert(0, sys.argv.pop(1)); "
          "runpy.run_module('uqcodec.cli', run_name='__main__', alter_sys=True)")


def cli(root, env):
    return [sys.executable, "-c", LAUNCH, root], dict(env)


def warm_api(name, files, legacy=False):
    """Mean seconds per image of compress + decompress (and the transform share)."""
    from uqcodec import codec, container, imageio, zoo
    if legacy:
        from uqcodec.training.legacy import LegacyCodec
        c = LegacyCodec(zoo.resolve(name))
    else:
        c = codec.load(zoo.resolve(name))
    rgbs = [imageio.read_image(f)[0] for f in files]
    data, _ = c.encode(rgbs[0], 1)
    c.decode(*container.unpack(data))  # warm up
    c.transform_seconds = 0.0
    t = time.perf_counter()
    for i, rgb in enumerate(rgbs):
        data, _ = c.encode(rgb, i)
        c.decode(*container.unpack(data))
    return (time.perf_counter() - t) / len(rgbs), c.transform_seconds / len(rgbs)


def batch(root, env, folder, n):
    """Images per second of the CLI's batch compress and decompress of a folder."""
    cmd, e = cli(root, env)
    out = tempfile.mkdtemp(prefix="uqcodec-batch-")
    try:
        src = os.path.join(out, "src")
        shutil.copytree(folder, src, ignore=shutil.ignore_patterns("*.txt", "README*",
                                                                    "SHA256SUMS"))
        enc = process(cmd + ["compress", src], e)[0]
        for f in os.listdir(src):
            if not f.endswith(".uq"):
                os.remove(os.path.join(src, f))
        dec = process(cmd + ["decompress", src], e)[0]
        return n / enc, n / dec
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default=KODAK)
    ap.add_argument("--limit", type=int, default=4, help="images for the warm API timings")
    ap.add_argument("--runs", type=int, default=5, help="processes per CLI median")
    ap.add_argument("--models", help="comma-separated (default: each family's default)")
    ap.add_argument("--baseline", help="an older uqcodec checkout to compare with")
    ap.add_argument("--no-batch", action="store_true")
    ap.add_argument("--no-legacy", action="store_true", help="skip the TensorFlow path")
    args = ap.parse_args()
    from uqcodec import zoo
    from uqcodec.training.data import list_images
    folder = args.images if os.path.isdir(args.images) else os.path.join(ROOT, "tests", "data")
    files = list_images(folder)
    names = args.models.split(",") if args.models else [
        c["name"] for c in (zoo.default_model(a) for a in ("hyperprior", "linear")) if c]
    env = dict(os.environ)
    print(f"images: {folder} ({len(files)}), UQCODEC_THREADS="
          f"{env.get('UQCODEC_THREADS', 'default')}, {os.cpu_count()} CPUs, "
          f"median of {args.runs} processes")
    tmp = tempfile.mkdtemp(prefix="uqcodec-bench-")
    img = files[0]
    roots = [("uqcodec", ROOT)] + ([("baseline", os.path.abspath(args.baseline))]
                                  if args.baseline else [])
    print("\n| whole process (one image) | compress s | decompress s | peak RSS MiB |")
    print("|---|---|---|---|")
    for label, root in roots:
        cmd, e = cli(root, env)
        for name in names:
            uq = os.path.join(tmp, "b.uq")
            ce, re_ = median_process(cmd + ["compress", img, "-o", uq, "--model", name,
                                            "--force"], e, args.runs)
            cd, rd = median_process(cmd + ["decompress", uq, "-o", os.path.join(tmp, "b.png"),
                                           "--force"], e, args.runs)
            print(f"| {label} {name} | {ce:.2f} | {cd:.2f} | {max(re_, rd):.0f} |", flush=True)
    w, rw = median_process([sys.executable, "-c", WEBP, img, os.path.join(tmp, "w.webp")], env,
                           args.runs)
    print(f"| Pillow WebP q75 m6 (encode + decode) | {w:.2f} | | {rw:.0f} |")

    some = files[:args.limit]
    print(f"\n| warm API, per image ({len(some)} images) | compress + decompress s | "
          "of which transforms |")
    print("|---|---|---|")
    for name in names:
        paths = [("inference engine (version 4)", False)]
        if not args.no_legacy:
            paths.append(("TensorFlow path (version 2)", True))
        for label, legacy in paths:
            total, transforms = warm_api(name, some, legacy)
            print(f"| {name}, {label} | {total:.3f} | {transforms:.3f} |", flush=True)

    if not args.no_batch:
        print(f"\n| batch CLI ({len(files)} images) | compress images/s | decompress images/s |")
        print("|---|---|---|")
        for label, root in roots:
            enc, dec = batch(root, env, folder, len(files))
            print(f"| {label} | {enc:.2f} | {dec:.2f} |", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
