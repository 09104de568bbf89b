#!/usr/bin/env python
"""Hostile files against the decoder's budgets (docs/format.md, "Decoder limits"): peak
RSS and time of `uqcodec decompress` on crafted files next to a real photo of the same
dimensions, and `info`/`decompress` of /dev/zero and a 20 GB sparse file.

    python scripts/hostile.py [--sizes 768x512,1024x1024,2048x2048] [--model NAME]
                              [--big] [--keep DIR] [--repeat N]

For each size: a real photo (a mosaic of Kodak images, coded by `uqcodec compress`
with its defaults), a file whose one tile is as large as the format allows (tile 2048),
files whose hyper-latents drive the Gaussian tables as wide as the work budget admits
(crafted `z` at the top rate parameter, blended down to just below the budget) in one
tile of 2048 and in tiles of 64 (the most tiles, each with its fixed costs), and one
beyond the budget (refused). Each decode is a fresh child process
(`python -m uqcodec.cli`, UQCODEC_THREADS=1), the fastest of --repeat runs; peak RSS is
the child's own ru_maxrss (``run_measured``).
--big: also compress and decompress a 48-megapixel mosaic (8000x6000; a minute or two).
Exits non-zero if a limit of the acceptance is missed.
"""
import argparse
import glob
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
KODAK = os.path.join(ROOT, "..", "shared", "data", "kodak")

RSS_LIMIT_MB = 1536      # up to 1024x1024 pixels
TIME_FACTOR = 5.0        # crafted decode time / real photo decode time
INSTANT_S = 1.0          # /dev/zero, sparse files
BIG_LIMIT_MB = 3072      # 48 megapixels, compress and decompress


# --- crafting (also used by tests/test_hostile.py and scripts/fuzz.py) ---------------

def hyper(c):
    """(hyper-synthesis: decoded z -> (mean index, scale index), (lo, hi) support of z)."""
    lc = getattr(c.family, "latent_codec", None)
    if lc is not None and hasattr(lc, "hyper_synthesis"):
        return lc.hyper_synthesis, lc.z_codec.support
    f = c.family.factorized  # (before the latent codecs)
    return c.family.hyper_synthesis, (f.lo - 1.0, f.hi + 1.0)


def entries(c, scale_index, rate):
    """Table entries the Gaussian rows of these scale indices take at this rate."""
    from uqcodec import entropy
    coder = entropy.GaussianCoder(c.rounding.alpha).at_rate(rate)
    w = np.ceil(6.0 * coder.scales + 2.0)
    return (2 * w + 1)[np.asarray(scale_index).ravel()]


def extreme_z(c, rate, top=True, rounds=2, rng=None):
    """A hyper-latent vector (one value per channel, each at an end of its support or 0)
    whose scale indices make the Gaussian tables as wide (``top``) or as narrow as a
    greedy search over the channels finds. ``rng``: random start (fuzzing)."""
    hs, (lo, hi) = hyper(c)
    n = len(lo)
    choices = np.stack([lo, hi, np.zeros(n)])
    pick = (rng.integers(0, 3, n) if rng is not None
            else np.full(n, 1 if top else 2))
    sign = 1.0 if top else -1.0

    def score(p):
        z = np.broadcast_to(choices[p, np.arange(n)], (3, 3, n))
        return sign * entries(c, hs(z)[1][1:-1, 1:-1], rate).mean()
    best = score(pick)
    for _ in range(rounds):
        for ch in range(n):
            for v in range(3):
                if v != pick[ch]:
                    p = pick.copy()
                    p[ch] = v
                    s = score(p)
                    if s > best:
                        best, pick = s, p
    return choices[pick, np.arange(n)]


def craft(c, height, width, tile, rate=0, z_top=None, z_low=None, fill=1.0, seed=1,
          quantizer="uq"):
    """A valid file whose tiles' hyper-latents are ``z_top`` at the first ``fill`` of the
    positions (row-major) and ``z_low`` elsewhere (0 when None), and y = 0. Returns bytes
    (the encoder's work budget is lifted while it writes: use it to make files beyond)."""
    from uqcodec import container, entropy
    lats = []
    for t, l, th, tw in container.tile_grid(height, width, tile):
        shapes = c.family.latent_shapes(th, tw)
        if len(shapes) == 1:  # a factorized model: y only
            lats.append((np.zeros(shapes[0]),))
            continue
        ys, zs = shapes
        z = np.zeros(zs) if z_low is None else np.broadcast_to(z_low, zs).copy()
        if z_top is not None:
            k = int(round(fill * zs[0] * zs[1]))
            z.reshape(-1, zs[2])[:k] = z_top
        lats.append((np.zeros(ys), z))
    budget = getattr(entropy.GaussianCoder, "work_budget", None)
    entropy.GaussianCoder.work_budget = None
    try:
        data, _ = c.encode(np.zeros((height, width, 3), np.uint8), seed, quantizer,
                           tile=tile, rate=rate, latents=lats)
    finally:
        entropy.GaussianCoder.work_budget = budget
    return data


def tile_entries(c, z, rate):
    """Entries per element of the Gaussian tables that hyper-latent ``z`` (one tile) asks."""
    hs, _ = hyper(c)
    return entries(c, hs(z)[1], rate).mean()


def blend_to_budget(c, height, width, tile, rate, z_top, z_low, budget):
    """z_low + a (z_top - z_low), one vector for every position, with the largest a in
    [0, 1] (bisection) that keeps the first tile (the largest) within ``budget`` table
    entries per element."""
    from uqcodec import container
    t, l, th, tw = container.tile_grid(height, width, tile)[0]
    zs = c.family.latent_shapes(th, tw)[1]

    def z_at(a):
        return z_low + a * (z_top - z_low)

    def ok(a):
        return tile_entries(c, np.broadcast_to(z_at(a), zs), rate) <= budget
    if ok(1.0):
        return z_at(1.0)
    lo, hi = 0.0, 1.0
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return z_at(lo)


def file_work(data):
    """The most table entries per element that any tile of a file asks for (decoded
    in-process with the Gaussian tables left out: each tile's scale indices only)."""
    import uqcodec
    from uqcodec import entropy
    seen = []
    decode = entropy.GaussianCoder.decode

    def scales_only(self, decoder, mean, idx, c, u, esc):
        seen.append(self.work(idx))
        return np.zeros(len(mean), np.int64)
    entropy.GaussianCoder.decode = scales_only
    try:
        uqcodec.decompress(data)
    except uqcodec.CodecError:
        pass
    finally:
        entropy.GaussianCoder.decode = decode
    return max(seen, default=0.0)


def craft_at_budget(c, height, width, tile, rate, z_top, z_low, budget, tries=6):
    """A file whose tiles ask for just below ``budget`` entries per element (the decoder
    sees the quantized z: the blend is corrected on the file itself)."""
    target = budget
    for _ in range(tries):
        z = blend_to_budget(c, height, width, tile, rate, z_top, z_low, target)
        data = craft(c, height, width, tile, rate, z_top=z)
        work = file_work(data)
        if work <= budget:
            return data, work
        target *= 0.995 * budget / work
    return data, work


def biggest_model():
    """The shipped hyperprior with the most latent channels (variable-rate preferred)."""
    from uqcodec import zoo
    cards = [c for c in zoo.list_models() if c.get("arch") == "hyperprior"]
    return max(cards, key=lambda c: (c.get("M", 0), bool(c.get("lambda_range"))))["name"]


# --- measuring ---------------------------------------------------------------------

AS_LIMIT = 12 << 30  # address space of a child: a decoder that runs away fails, not the host

# A child's ru_maxrss starts at its parent's RSS (Linux carries the old memory's high-water
# mark over fork and exec), so a measuring process that holds models would see its own size.
# The command runs under this small launcher instead: a fresh process forks it and reports
# its peak RSS (KB) and exit code on stdout.
_LAUNCHER = """
import os, resource, sys
address_space, file_size, out_fd = (int(v) for v in sys.argv[1:4])
if address_space:
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
if file_size:
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
pid = os.fork()
if pid == 0:
    os.dup2(out_fd, 1)
    os.execv(sys.argv[4], sys.argv[4:])
_, status, ru = os.wait4(pid, 0)
print(ru.ru_maxrss, os.waitstatus_to_exitcode(status), flush=True)
"""


def run_measured(argv, env=None, timeout=3600, address_space=0, file_size=0, cwd=ROOT):
    """Run ``argv`` (its first item an absolute path) with its own peak RSS measured:
    (exit code or None after ``timeout``, stdout, stderr, seconds, peak RSS MB)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        p = subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(address_space),
                              str(file_size), str(out.fileno()), *argv], cwd=cwd, env=env,
                             stdout=subprocess.PIPE, stderr=err, pass_fds=(out.fileno(),),
                             start_new_session=True)
        try:
            report, _ = p.communicate(timeout=timeout)
            rss_kb, code = (int(v) for v in report.split())
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)
            p.communicate()
            rss_kb, code = 0, None
        dt = time.perf_counter() - t
        out.seek(0)
        err.seek(0)
        return (code, out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                dt, rss_kb / 1024)


def run_cli(*args, timeout=3600):
    """(seconds, peak RSS MB, exit code, stderr) of `python -m uqcodec.cli ARGS` in a fresh
    child (UQCODEC_THREADS=1, address space limited to AS_LIMIT; ``run_measured``). A child
    that runs past ``timeout`` is killed (exit code None)."""
    env = dict(os.environ, UQCODEC_THREADS="1")
    code, _, err, dt, rss = run_measured([sys.executable, "-m", "uqcodec.cli", *args], env,
                                         timeout, AS_LIMIT)
    return dt, rss, code, err.strip()


def measure(path, out, timeout=3600):
    return run_cli("decompress", path, "-o", out, "-f", timeout=timeout)


def mosaic(width, height):
    files = sorted(glob.glob(os.path.join(KODAK, "kodim*.png"))) or \
        sorted(glob.glob(os.path.join(ROOT, "tests", "data", "*.png")))
    from PIL import Image
    imgs = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    out = np.empty((height, width, 3), np.uint8)
    k = 0
    for y in range(0, height, 512):
        for x in range(0, width, 512):
            im = imgs[k % len(imgs)]
            k += 1
            h, w = min(512, height - y), min(512, width - x)
            out[y:y + h, x:x + w] = im[:h, :w]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="768x512,1024x1024,2048x2048")
    ap.add_argument("--model", default=None, help="model of the crafted files (default: the "
                    "shipped hyperprior with the most latent channels)")
    ap.add_argument("--big", action="store_true", help="also 48 megapixels")
    ap.add_argument("--keep", help="keep the files in this folder")
    ap.add_argument("--repeat", type=int, default=2, help="decodes per file: the fastest "
                    "counts (other processes on the machine slow single runs down)")
    args = ap.parse_args()
    import uqcodec
    from uqcodec import codec, constants, entropy, zoo
    from PIL import Image
    tmp = args.keep or tempfile.mkdtemp(prefix="uqcodec-hostile-")
    os.makedirs(tmp, exist_ok=True)
    failed = []

    def check(ok, what):
        if not ok:
            failed.append(what)
        return "ok" if ok else "MISSED"

    # 1. /dev/zero and a sparse 20 GB file
    sparse = os.path.join(tmp, "sparse20g.uq")
    with open(sparse, "wb") as f:
        f.truncate(20 << 30)
    lying = os.path.join(tmp, "header20g.uq")  # a real header, then 20 GB it does not declare
    with open(lying, "wb") as f:
        f.write(uqcodec.compress(np.zeros((64, 64, 3), np.uint8), seed=1))
        f.truncate(20 << 30)
    print("instant refusals (one-line error, under 1 s):")
    for path in ("/dev/zero", sparse, lying):
        for cmd in (["info", path], ["decompress", path, "-o", os.path.join(tmp, "z.png"),
                                     "-f"]):
            dt, rss, code, err = run_cli(*cmd, timeout=20)
            one = len(err.splitlines()) == 1 and err.startswith("uqcodec: error:")
            print(f"  {' '.join(cmd[:2]):40s} {dt:5.2f} s {rss:6.0f} MB exit {code}: {err!r} "
                  f"{check(dt < INSTANT_S and one and code != 0, cmd[0] + ' ' + path)}")
    os.unlink(sparse)
    os.unlink(lying)

    # 2. per size: real photo, largest tile, work budget
    name = args.model or biggest_model()
    c = codec.load(zoo.resolve(name))
    rate = constants.RATE_MAX if c.variable else 0
    budget = entropy.GaussianCoder.work_budget
    z_top = extreme_z(c, rate, top=True)
    z_low = extreme_z(c, rate, top=False)
    print(f"\ncrafted files: model {name}, rate {rate}; z_top asks "
          f"{tile_entries(c, np.broadcast_to(z_top, (4, 4, len(z_top))), rate):.0f} "
          f"table entries per element, the work budget is {budget}")
    print(f"{'size':>10s} {'file':28s} {'bytes':>9s} {'seconds':>8s} {'peak MB':>8s}  result")
    for size in [s for s in args.sizes.split(",") if s and s != "none"]:
        w, h = (int(v) for v in size.split("x"))
        real = os.path.join(tmp, f"real_{size}.uq")
        Image.fromarray(mosaic(w, h)).save(os.path.join(tmp, f"real_{size}.png"))
        dt, rss, code, err = run_cli("compress", os.path.join(tmp, f"real_{size}.png"), "-o",
                                     real, "-f", "--seed", "1")
        if code:
            raise SystemExit(f"compress of the real photo failed: {err}")
        files = [("real photo (defaults)", real)]
        if c.variable:  # the same photo with the crafted files' model, at its top quality
            same = os.path.join(tmp, f"real_{name}_{size}.uq")
            with open(same, "wb") as f:
                f.write(uqcodec.compress(os.path.join(tmp, f"real_{size}.png"), model=name,
                                         quality=10, seed=1))
            files.append((f"real photo (q 10)", same))
        big_tile = os.path.join(tmp, f"tile2048_{size}.uq")
        with open(big_tile, "wb") as f:
            f.write(craft(c, h, w, 2048, rate))
        files.append(("one tile of 2048", big_tile))
        for tile in (2048, 64):  # the widest tables the budget admits, in large or tiny tiles
            data, work = craft_at_budget(c, h, w, tile, rate, z_top, z_low, budget)
            at = os.path.join(tmp, f"work{tile}_{size}.uq")
            with open(at, "wb") as f:
                f.write(data)
            files.append((f"budget ({work:.0f}), tiles of {tile}", at))
        beyond = os.path.join(tmp, f"beyond_{size}.uq")
        z = blend_to_budget(c, h, w, 2048, rate, z_top, z_low, 1.5 * budget)
        with open(beyond, "wb") as f:  # (just beyond: encoding far beyond would take hours)
            f.write(craft(c, h, w, 2048, rate, z_top=z))
        files.append(("beyond the work budget", beyond))
        base_t = base_rss = None  # the real photos: time of the default file, memory of both
        for label, path in files:
            runs = [measure(path, os.path.join(tmp, "out.png")) for _ in range(args.repeat)]
            dt, rss, code, err = min(runs)
            if label.startswith("real"):
                base_t = base_t or dt
                base_rss = max(base_rss or 0, rss)
                verdict = (f"({dt / base_t:.1f}x time)" if code == 0 else f"FAILED: {err}")
            elif label.startswith("beyond"):
                verdict = check(code == 1 and "budget" in err and dt <= TIME_FACTOR * base_t,
                                f"{size} {label}") + f" ({err.splitlines()[-1] if err else ''})"
            else:
                ok = (code == 0 and dt <= TIME_FACTOR * base_t
                      and rss <= max(base_rss * 1.05, base_rss + 50)
                      and (w * h > 1 << 20 or rss <= RSS_LIMIT_MB))
                verdict = check(ok, f"{size} {label}") + \
                    f" ({dt / base_t:.1f}x time, {rss / base_rss:.2f}x memory)"
                if code:
                    verdict += f" exit {code}: {err}"
            print(f"{size:>10s} {label:28s} {os.path.getsize(path):9d} {dt:8.1f} {rss:8.0f}  "
                  f"{verdict}", flush=True)

    # 3. 48 megapixels
    if args.big:
        src = os.path.join(tmp, "big48.png")
        Image.fromarray(mosaic(8000, 6000)).save(src)
        dt, rss, code, err = run_cli("compress", src, "-o", os.path.join(tmp, "big48.uq"), "-f")
        print(f"\n48 MP compress:   {dt:6.1f} s, peak {rss:6.0f} MB "
              f"{check(code == 0 and rss < BIG_LIMIT_MB, '48 MP compress')} {err}")
        dt, rss, code, err = measure(os.path.join(tmp, "big48.uq"),
                                     os.path.join(tmp, "big48.out.png"))
        print(f"48 MP decompress: {dt:6.1f} s, peak {rss:6.0f} MB "
              f"{check(code == 0 and rss < BIG_LIMIT_MB, '48 MP decompress')} {err}")
    if failed:
        print("\nMISSED:", "; ".join(failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
