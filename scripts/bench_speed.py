#!/usr/bin/env python
"""Speed of the codec against Pillow WebP, and against an older uqcodec, in one run.

For the default model of each family (or --models) on the images of --images
(default: Kodak):

* whole-process CLI ``uqcodec compress`` / ``decompress`` of one image, the default
  codec at each of --qualities and each model at its own rate: median of --runs
  processes (start-up, model load, PNG and .uq I/O included) and peak RSS;
  Pillow WebP (method 6) as a whole process, the same way;
* warm API compress + decompress per image (mean over --limit images), split into
  transforms (the inference engine) and the rest, and the same work on the
  TensorFlow path that version-2 files used (``legacy.py``, needs TensorFlow);
* batch: ``uqcodec compress DIR`` and ``uqcodec decompress DIR`` (the CLI's worker
  pool) over every image, in images per second;
* per-stage profile of one warm compress and decompress per model and image (PNG read
  and write, analysis, hyper-analysis, coding of z, integer networks (hyper-synthesis
  and context), Gaussian coding tables, range coding of y, synthesis), with the FLOPs
  and achieved GFLOP/s of each transform beside NumPy's float32 GEMM rate measured in
  the same run with the same thread count (``--profile-only``: just this table).

``--baseline DIR``: also time the CLI and batch of the uqcodec checked out in DIR
(e.g. ``git worktree add /tmp/old v0.8``), same images, same run.

    python scripts/bench_speed.py [--images DIR] [--limit 4] [--runs 5] [--models A,B]
                                  [--qualities 2,5,8] [--baseline DIR]
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


def warm_default(path, runs=5):
    """Median seconds of a warm ``uqcodec.compress`` + ``decompress`` of one image with the
    default codec at the default quality (the public API, as a program would call it)."""
    import uqcodec
    from uqcodec import imageio
    rgb = imageio.read_image(path)[0]
    uqcodec.decompress(uqcodec.compress(rgb, seed=1))  # warm up
    times = []
    for i in range(runs):
        t = time.perf_counter()
        uqcodec.decompress(uqcodec.compress(rgb, seed=i))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def gemm_rate(n_threads, size=1536, reps=5):
    """NumPy float32 GEMM GFLOP/s with ``n_threads`` BLAS threads (a fresh process, so the
    thread count takes effect), best of ``reps``."""
    code = ("import time, numpy as np\n"
            f"a = np.random.default_rng(0).standard_normal(({size}, {size}), np.float32)\n"
            "a @ a\nbest = 1e9\n"
            f"for _ in range({reps}):\n"
            "    t = time.perf_counter(); a @ a; best = min(best, time.perf_counter() - t)\n"
            f"print(2 * {size} ** 3 / best / 1e9)")
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(n_threads), OMP_NUM_THREADS=str(n_threads),
               MKL_NUM_THREADS=str(n_threads))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip())


class FlopCounter:
    """FLOPs of the transforms a model builds: while it is active the engine's layer
    builders record per graph (kind, kernel shape, stride, source) and every Transform
    keeps its graph's list (``flop_layers``); ``flops(layers, h, w)`` walks them at an
    input of h x w positions (a multiply-add = 2 FLOPs; GDN: its C x C convolution)."""

    def __init__(self):
        from uqcodec import engine as E
        self.E, self.saved = E, {}

    def __enter__(self):
        E = self.E
        for name in ("conv", "deconv", "gdn"):
            self.saved[name] = fn = getattr(E, name)

            def wrapped(g, w, layer, *a, _fn=fn, _kind=name, **kw):
                if _kind == "gdn":
                    shape, stride, src = w[layer + "/reparam_gamma"].shape, 1, None
                else:
                    shape = w[layer + "/kernel"].shape
                    stride = kw.get("stride", a[0] if a else (2 if _kind == "deconv" else 1))
                    src = kw.get("src")
                g.__dict__.setdefault("flop_layers", []).append((_kind, shape, stride, src))
                return _fn(g, w, layer, *a, **kw)
            setattr(E, name, wrapped)
        self.saved["init"] = init = E.Transform.__init__

        def transform_init(tr, graph, *a, **kw):
            init(tr, graph, *a, **kw)
            tr.flop_layers = list(getattr(graph, "flop_layers", []))
        E.Transform.__init__ = transform_init
        return self

    def __exit__(self, *exc):
        self.E.Transform.__init__ = self.saved.pop("init")
        for name, fn in self.saved.items():
            setattr(self.E, name, fn)

    @staticmethod
    def flops(layers, h, w):
        res, total = 1.0, 0.0  # the current layer's input resolution relative to the input
        for kind, shape, stride, src in layers:
            if src is not None:
                res = 1.0
            if kind == "gdn":
                total += 2.0 * shape[0] * shape[1] * h * w * res * res
                continue
            k2 = shape[0] * shape[1]
            cin, cout = (shape[2], shape[3]) if kind == "conv" else (shape[3], shape[2])
            out_res = res / stride if kind == "conv" else res * stride
            positions = h * w * (out_res if kind == "conv" else res) ** 2
            total += 2.0 * k2 * cin * cout * positions
            res = out_res
        return total


STAGES = (
    ("png_read", "PNG read"), ("analysis", "analysis"), ("hyper_analysis", "hyper-analysis"),
    ("z", "factorized coding (z; y of linear, factorized)"),
    ("intnet", "integer networks (hyper-synthesis, context)"),
    ("tables", "Gaussian coding tables"), ("range", "range coding of y"),
    ("synthesis", "synthesis"), ("png_write", "PNG write"))


def stage_profile(name, files):
    """Seconds per image of each stage of a warm compress + decompress (PNG read and write
    included), the transforms' FLOPs per image and the pixels per image. Each stage's
    function is wrapped (the range coding is the Gaussian coder's time without its tables;
    with several threads the tables are computed ahead of the coder, so the stages add up
    to more than the wall time)."""
    from uqcodec import codec, container, entropy, imageio, intnet, zoo
    with FlopCounter():
        c = codec.Codec(zoo.resolve(name))  # not the cached one: its transforms are built here
        graphs = {"analysis": c.family.analysis, "synthesis": c.family.synthesis}
        hyper = getattr(c.family, "hyper_analysis", None)
        if hasattr(hyper, "flop_layers"):
            graphs["hyper_analysis"] = hyper
    times = dict.fromkeys([k for k, _ in STAGES], 0.0)
    patches = []

    def wrap(obj, attr, stage):
        fn = getattr(obj, attr)

        def timed(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                times[stage] += time.perf_counter() - t
        setattr(obj, attr, timed)
        patches.append((obj, attr, fn))
    wrap(imageio, "read_image", "png_read")
    wrap(imageio, "png_bytes", "png_write")
    wrap(intnet.IntNet, "__call__", "intnet")
    wrap(intnet.IntNet, "at", "intnet")  # the context networks
    wrap(entropy.GaussianCoder, "_exact_tables", "tables")
    wrap(entropy.GaussianCoder, "encode", "range")
    wrap(entropy.GaussianCoder, "decode", "range")
    wrap(entropy, "encode_factorized", "z")
    wrap(entropy, "decode_factorized", "z")
    for stage, tr in graphs.items():  # the instance's engine runs (bands included)
        wrap(tr, "_run", stage)
    flops = dict.fromkeys(graphs, 0.0)
    pixels = 0
    try:
        for i, f in enumerate([files[0]] + list(files)):  # the first run warms up
            if i == 1:
                times.update(dict.fromkeys(times, 0.0))
            rgb = imageio.read_image(f)[0]
            data, _ = c.encode(rgb, i)
            imageio.png_bytes(c.decode(*container.unpack(data)))
            if i == 0:
                continue
            h, w = rgb.shape[:2]
            H, W = -(-h // c.multiple) * c.multiple, -(-w // c.multiple) * c.multiple
            pixels += h * w
            for stage, tr in graphs.items():
                # analysis: the padded image; synthesis and hyper-analysis: y's positions
                hh, ww = (H, W) if stage == "analysis" else (H // 16, W // 16)
                flops[stage] += FlopCounter.flops(tr.flop_layers, hh, ww)
    finally:
        for obj, attr, fn in reversed(patches):
            setattr(obj, attr, fn)
    n = len(files)
    times["range"] = max(0.0, times["range"] - times["tables"])
    return ({k: v / n for k, v in times.items()}, {k: v / n for k, v in flops.items()},
            pixels / n)


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


def profile(names, files):
    """The per-stage table (``stage_profile``) with the GEMM rate of the same thread count."""
    from uqcodec.engine import threads
    n = threads()
    gemm = gemm_rate(n)
    print(f"\nper-stage profile, warm API compress + decompress, seconds per image "
          f"({len(files)} images, {n} thread(s)); NumPy float32 GEMM {gemm:.1f} GFLOP/s")
    rows = {name: stage_profile(name, files) for name in names}
    print("\n| stage | " + " | ".join(rows) + " |")
    print("|---|" + "---|" * len(rows))
    for key, label in STAGES:
        cells = []
        for name, (times, flops, _) in rows.items():
            cell = f"{times[key]:.3f}"
            if key in flops and times[key] > 0:
                gf = flops[key] / 1e9
                cell += f" ({gf:.1f} GFLOP, {gf / times[key]:.1f} GFLOP/s)"
            cells.append(cell)
        print(f"| {label} | " + " | ".join(cells) + " |")
    print("| sum of stages | " + " | ".join(f"{sum(t.values()):.3f}"
                                          for t, _, _ in rows.values()) + " |")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default=KODAK)
    ap.add_argument("--limit", type=int, default=4, help="images for the warm API timings")
    ap.add_argument("--runs", type=int, default=5, help="processes per CLI median")
    ap.add_argument("--models", help="comma-separated (default: each family's default)")
    ap.add_argument("--qualities", default="2,5,8",
                    help="comma-separated qualities of the default codec for the whole-process "
                         "rows ('' for none)")
    ap.add_argument("--warm-image", default="kodim23",
                    help="image of the warm default-quality API timing")
    ap.add_argument("--baseline", help="an older uqcodec checkout to compare with")
    ap.add_argument("--no-batch", action="store_true")
    ap.add_argument("--no-legacy", action="store_true", help="skip the TensorFlow path")
    ap.add_argument("--profile-only", action="store_true",
                    help="only the per-stage profile (warm API, --limit images)")
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
    if args.profile_only:
        profile(names, files[:args.limit])
        return
    tmp = tempfile.mkdtemp(prefix="uqcodec-bench-")
    img = files[0]
    roots = [("uqcodec", ROOT)] + ([("baseline", os.path.abspath(args.baseline))]
                                  if args.baseline else [])
    print("\n| whole process (one image) | compress s | decompress s | peak RSS MiB |")
    print("|---|---|---|---|")
    qualities = [q for q in args.qualities.split(",") if q]
    for label, root in roots:
        cmd, e = cli(root, env)
        rows = [(f"default codec, quality {q}", ["--quality", q])  # (the default codec)
                for q in (qualities if label == "uqcodec" else [])]
        for row, how in rows + [(name, ["--model", name]) for name in names]:
            uq = os.path.join(tmp, "b.uq")
            ce, re_ = median_process(cmd + ["compress", img, "-o", uq, "--force"] + how, e,
                                     args.runs)
            cd, rd = median_process(cmd + ["decompress", uq, "-o", os.path.join(tmp, "b.png"),
                                           "--force"], e, args.runs)
            print(f"| {label} {row} | {ce:.2f} | {cd:.2f} | {max(re_, rd):.0f} |", flush=True)
    w, rw = median_process([sys.executable, "-c", WEBP, img, os.path.join(tmp, "w.webp")], env,
                           args.runs)
    print(f"| Pillow WebP q75 m6 (encode + decode) | {w:.2f} | | {rw:.0f} |")

    some = files[:args.limit]
    warm = [f for f in files if os.path.basename(f).startswith(args.warm_image)]
    if warm:
        print(f"\nwarm API compress + decompress of {os.path.basename(warm[0])}, default "
              f"codec and quality, median of {args.runs}: {warm_default(warm[0], args.runs):.3f} s")
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

    profile(names, some)

    if not args.no_batch:
        print(f"\n| batch CLI ({len(files)} images) | compress images/s | decompress images/s |")
        print("|---|---|---|")
        for label, root in roots:
            enc, dec = batch(root, env, folder, len(files))
            print(f"| {label} | {enc:.2f} | {dec:.2f} |", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
