#!/usr/bin/env python
"""Speed of the codec, split into its parts, with Pillow WebP/AVIF for comparison.

For the default model of each family (the middle of the family's ladder, soft
rounding preferred), on the images of --images (default: Kodak):

* TensorFlow import and model load (first load in the process);
* per-image encode and decode (warm, means over --limit images), split into
  transforms (TensorFlow), entropy coding (constriction), other NumPy work
  (padding, dither, parameter snapping, container) and file I/O (PNG/.uq read/write);
* the transforms' FLOPs (counted analytically from the Keras layers' kernel shapes
  and output sizes) and the achieved FLOP/s;
* the end-to-end CLI (``python -m uqcodec.cli compress/decompress``, one process per
  call, so Python and TensorFlow start-up included) and its peak RSS;
* images per second compressing (and decompressing) every image of --images in one process.

    python scripts/bench_speed.py [--images DIR] [--limit 4] [--models NAME,...]
"""
import argparse
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


# --- FLOPs ---------------------------------------------------------------------------------
def layer_flops(layer, shape):
    """(FLOPs, output shape (h, w, c)) of one Keras layer; a multiply-add counts as 2."""
    from uqcodec import _tf
    tf, tfc = _tf.load()
    h, w, c = shape
    if isinstance(layer, tf.keras.layers.Conv2DTranspose):
        kh, kw, cout, cin = layer.kernel.shape
        s = layer.strides[0]
        H, W = h * s, w * s
        return 2 * h * w * kh * kw * cin * cout + H * W * cout, (H, W, cout)
    if isinstance(layer, tf.keras.layers.Conv2D):
        kh, kw, cin, cout = layer.kernel.shape
        s = layer.strides[0]
        H, W = -(-h // s), -(-w // s)
        return 2 * H * W * kh * kw * cin * cout + H * W * cout, (H, W, cout)
    if isinstance(layer, tfc.GDN):  # 1x1 convolution with gamma (CxC), + beta, sqrt, divide
        return 2 * h * w * c * c + 3 * h * w * c, shape
    return 0, shape


def transform_flops(seq, shape):
    total = 0
    for layer in seq.layers:
        f, shape = layer_flops(layer, shape)
        total += f
    return total, shape


def codec_flops(c, height, width):
    """FLOPs of the transforms an encode and a decode run (the encoder skips synthesis)."""
    m = c.model
    mult = c.multiple
    H, W = -(-height // mult) * mult, -(-width // mult) * mult
    fa, yshape = transform_flops(m.analysis, (H, W, 3))
    fs, _ = transform_flops(m.synthesis, yshape)
    if c.arch != "hyperprior":
        return fa, fs
    fha, zshape = transform_flops(m.hyper_analysis, yshape)
    fhs, _ = transform_flops(m.hyper_synthesis, zshape)
    return fa + fha + fhs, fhs + fs


# --- timing helpers --------------------------------------------------------------------------
class Counter:
    """Wraps the entropy coders' encode/decode methods of a loaded codec to time them."""

    def __init__(self, c):
        self.seconds = 0.0
        for coder in (getattr(c, "factorized", None), getattr(c, "gaussian", None)):
            for name in ("encode", "decode"):
                if coder is not None and hasattr(coder, name):
                    setattr(coder, name, self._wrap(getattr(coder, name)))

    def _wrap(self, fn):
        def timed(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.seconds += time.perf_counter() - t
        return timed


def split_times(c, counter, files, tmp):
    """Mean per-image seconds: encode and decode, each as dict of parts."""
    from uqcodec import api, imageio
    enc, dec = [], []
    for i, f in enumerate(files):
        t0 = time.perf_counter()
        rgb, _, _ = imageio.read_image(f)
        t1 = time.perf_counter()
        c.transform_seconds, counter.seconds = 0.0, 0.0
        data, _ = api.compress_with_info(rgb, model=c.card["path"], seed=i)
        t2 = time.perf_counter()
        tr, en = c.transform_seconds, counter.seconds
        out_uq = os.path.join(tmp, "x.uq")
        imageio.atomic_write(out_uq, data)
        t3 = time.perf_counter()
        enc.append({"total": t3 - t0, "transforms": tr, "entropy": en,
                    "other": (t2 - t1) - tr - en, "io": (t1 - t0) + (t3 - t2)})
        t0 = time.perf_counter()
        with open(out_uq, "rb") as fh:
            data = fh.read()
        t1 = time.perf_counter()
        c.transform_seconds, counter.seconds = 0.0, 0.0
        pixels = api.decompress(data, model=c.card["path"])
        t2 = time.perf_counter()
        tr, en = c.transform_seconds, counter.seconds
        imageio.atomic_write(os.path.join(tmp, "x.png"), imageio.png_bytes(pixels))
        t3 = time.perf_counter()
        dec.append({"total": t3 - t0, "transforms": tr, "entropy": en,
                    "other": (t2 - t1) - tr - en, "io": (t1 - t0) + (t3 - t2)})
    mean = lambda rows: {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}  # noqa
    return mean(enc), mean(dec), 8 * len(data) / (rgb.shape[0] * rgb.shape[1])


def cli_run(args, env):
    """Wall seconds and peak RSS (MiB) of one CLI process."""
    t = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen([sys.executable, "-m", "uqcodec.cli", *args], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=err)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t
        if p.returncode:
            err.seek(0)
            raise SystemExit(f"CLI failed: {' '.join(args)}: {err.read().decode().strip()}")
    return wall, ru.ru_maxrss / 1024.0


def throughput(fn, files):
    t = time.perf_counter()
    for i, f in enumerate(files):
        fn(i, f)
    return len(files) / (time.perf_counter() - t)


def pillow_times(files, fmt, **opts):
    import io
    from PIL import Image
    enc, dec, bpp = [], [], []
    for f in files:
        with Image.open(f) as img:
            img = img.convert("RGB")
        img.load()
        buf = io.BytesIO()
        t = time.perf_counter()
        img.save(buf, fmt, **opts)
        enc.append(time.perf_counter() - t)
        t = time.perf_counter()
        with Image.open(io.BytesIO(buf.getvalue())) as im:
            np.asarray(im.convert("RGB"))
        dec.append(time.perf_counter() - t)
        bpp.append(8 * buf.tell() / (img.width * img.height))
    return float(np.mean(enc)), float(np.mean(dec)), float(np.mean(bpp))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default=os.path.join(ROOT, "..", "shared", "data", "kodak"),
                    help="folder of images (default: ../shared/data/kodak; falls back to "
                         "tests/data)")
    ap.add_argument("--limit", type=int, default=4,
                    help="images for the split per-image timings (default 4)")
    ap.add_argument("--models", help="comma-separated model names (default: each family's "
                                     "default model)")
    ap.add_argument("--no-cli", action="store_true", help="skip the subprocess CLI runs")
    ap.add_argument("--no-throughput", action="store_true",
                    help="skip compressing every image of --images")
    args = ap.parse_args()
    from uqcodec.data import list_images
    folder = args.images if os.path.isdir(args.images) else os.path.join(ROOT, "tests", "data")
    files = list_images(folder)
    some = files[:args.limit]
    threads = os.environ.get("UQCODEC_THREADS", "default")
    print(f"images: {folder} ({len(files)} files; split timings on the first {len(some)}), "
          f"UQCODEC_THREADS={threads}, {os.cpu_count()} CPUs")

    from uqcodec import zoo
    if args.models:
        cards = [zoo.read_card(zoo.resolve(n)) for n in args.models.split(",")]
    else:
        # the default of each family: the middle of its ladder
        cards = [c for c in (zoo.middle(a) for a in ("hyperprior", "linear")) if c]
    results = [{"name": c["name"]} for c in cards]
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as tmp:
        # CLI processes first: a child's peak RSS counts the parent's RSS at fork time,
        # so this process must not hold TensorFlow yet.
        for card, r in zip(cards, results):
            if not args.no_cli:
                uq = os.path.join(tmp, "cli.uq")
                r["cli_enc"] = cli_run(["compress", some[0], "-o", uq, "--model", card["name"],
                                        "--force"], env)
                r["cli_dec"] = cli_run(["decompress", uq, "-o", os.path.join(tmp, "cli.png"),
                                        "--force"], env)

        t = time.perf_counter()
        from uqcodec import _tf, api, codec, imageio
        _tf.load()
        tf_import = time.perf_counter() - t
        print(f"TensorFlow import: {tf_import:.2f} s")
        for card, r in zip(cards, results):
            t = time.perf_counter()
            c = codec.load(card["path"])
            load_s = time.perf_counter() - t
            counter = Counter(c)
            rgb0, _, _ = imageio.read_image(some[0])
            t = time.perf_counter()
            d0, _ = api.compress_with_info(rgb0, model=card["path"], seed=0)
            api.decompress(d0, model=card["path"])
            first_s = time.perf_counter() - t
            enc, dec, bpp = split_times(c, counter, some, tmp)
            h, w = rgb0.shape[:2]
            r.update({"load": load_s, "first": first_s, "enc": enc, "dec": dec, "bpp": bpp,
                      "flops": codec_flops(c, h, w), "size": (w, h)})
            if not args.no_throughput:
                blobs = {}

                def comp(i, f):
                    blobs[f] = api.compress_with_info(f, model=card["path"], seed=i)[0]
                r["enc_ips"] = throughput(comp, files)
                r["dec_ips"] = throughput(lambda i, f: api.decompress(blobs[f],
                                                                      model=card["path"]), files)

    print()
    print(f"{'per image (s)':24s} {'bpp':>6s} | {'encode':>6s} {'transf':>6s} {'entropy':>7s} "
          f"{'other':>6s} {'I/O':>6s} | {'decode':>6s} {'transf':>6s} {'entropy':>7s} "
          f"{'other':>6s} {'I/O':>6s}")
    for r in results:
        e, d = r["enc"], r["dec"]
        print(f"{r['name']:24s} {r['bpp']:6.3f} | {e['total']:6.3f} {e['transforms']:6.3f} "
              f"{e['entropy']:7.3f} {e['other']:6.3f} {e['io']:6.3f} | {d['total']:6.3f} "
              f"{d['transforms']:6.3f} {d['entropy']:7.3f} {d['other']:6.3f} {d['io']:6.3f}")
    print()
    print(f"{'model':24s} {'load s':>6s} {'1st call':>8s} | {'GFLOP enc':>9s} {'GFLOP/s':>7s} "
          f"{'GFLOP dec':>9s} {'GFLOP/s':>7s} | {'CLI enc s':>9s} {'RSS MiB':>7s} "
          f"{'CLI dec s':>9s} {'RSS MiB':>7s} | {'enc img/s':>9s} {'dec img/s':>9s}")
    for r in results:
        fe, fd = r["flops"]
        ce, cd = r.get("cli_enc", (math.nan, math.nan)), r.get("cli_dec", (math.nan, math.nan))
        print(f"{r['name']:24s} {r['load']:6.2f} {r['first']:8.2f} | {fe / 1e9:9.2f} "
              f"{fe / 1e9 / r['enc']['transforms']:7.1f} {fd / 1e9:9.2f} "
              f"{fd / 1e9 / r['dec']['transforms']:7.1f} | {ce[0]:9.2f} {ce[1]:7.0f} "
              f"{cd[0]:9.2f} {cd[1]:7.0f} | {r.get('enc_ips', math.nan):9.2f} "
              f"{r.get('dec_ips', math.nan):9.2f}")
    if results:
        w, h = results[0]["size"]
        print(f"(FLOPs for a {w}x{h} image, multiply-add = 2; GFLOP/s = FLOPs / transform time)")

    print()
    print(f"{'Pillow, per image (s)':24s} {'bpp':>6s} | {'encode':>6s} | {'decode':>6s}")
    from PIL import features
    for label, fmt, opts in (("WebP q75 m6", "WEBP", {"quality": 75, "method": 6}),
                             ("AVIF q60 s6", "AVIF", {"quality": 60, "speed": 6})):
        if not features.check(fmt.lower()):
            print(f"{label:24s} (not available)")
            continue
        e, d, b = pillow_times(some, fmt, **opts)
        print(f"{label:24s} {b:6.3f} | {e:6.3f} | {d:6.3f}")


if __name__ == "__main__":
    main()
