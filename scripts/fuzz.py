#!/usr/bin/env python
"""Fuzz the decoder: mutated .uq files must decode to an image of the header's size
(only possible when the CRCs pass) or raise uqcodec.CodecError -- nothing else, no
hang, no huge allocation.

    python scripts/fuzz.py N [--seed S] [--timeout SECONDS] [--crafted M]

The base files are real encodes of the small crops in tests/data with both model
families and both quantizers (one of them with several tiles). Mutation i is a
pure function of (seed, i). The decoder runs in a worker process; a file that
takes longer than --timeout is a hang (the worker is restarted). At the end the
script prints the counts per outcome and mutation kind, the slowest file and the
worker's peak RSS, and exits non-zero if anything but CodecError or a correct
image came out. tests/test_robustness.py runs the same mutations in-process.

After the N mutations come M crafted inputs (``--crafted``, default 200): random
mutations never find a hyper-latent that drives the Gaussian tables wide (it needs a
valid z stream whose integer hyper-synthesis gives high scale indices), so these
re-encode a base file with crafted hyper-latents (each channel at an end of its
support, at 0 or random, at a random rate parameter; scripts/hostile.py) around the
decoder's work budget: each must decode, or be refused with a CodecError, in bounded
time.
"""
import argparse
import os
import struct
import sys
import time
import traceback
import zlib

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DATA = os.path.join(ROOT, "tests", "data")

KINDS = ("bitflip", "byteset", "truncate", "extend", "header_raw", "header_field",
         "payload_crc_ok", "streams_crc_ok")
CRAFTED = "crafted_z"
EXTREMES = (0, 1, 2, 7, 8, 63, 64, 65, 255, 256, 1023, 1024, 2047, 2048, 2049, 4096, 65535,
            65536, 65537, 2 ** 26, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1)


def _shipped(arch, training):
    """Name of a shipped model of the family and training mode: the family's default
    model if it has that training (a variable-rate one, whose files carry a rate
    parameter), else the middle of its fixed-rate ladder."""
    from uqcodec import zoo
    card = zoo.default_model(arch)
    if card is None or card.get("training") != training:
        card = zoo.middle(arch, training)
    return card and card["name"]


def base_files():
    """Real encodes: [(name, bytes)] for every family that ships models: its sr model with
    both quantizers and a tiled file, its un model with universal quantization."""
    from PIL import Image
    import uqcodec
    from uqcodec import families
    crop = np.asarray(Image.open(os.path.join(DATA, "kodim05_crop.png")).convert("RGB"))
    odd = np.asarray(Image.open(os.path.join(DATA, "kodim15_odd.png")).convert("RGB"))
    out = []
    for f in families.all_families():
        sr, un = _shipped(f.name, "sr"), _shipped(f.name, "un")
        for model, q in ((sr, "uq"), (sr, "round"), (un, "uq")):
            if model:
                out.append((f"{model}/{q}", uqcodec.compress(odd, model=model, seed=11,
                                                             quantizer=q)))
        if sr:  # 3x2 tiles of 64
            out.append((f"{sr}/tiled", uqcodec.compress(crop[:96, :160], model=sr, seed=12,
                                                        tile=64)))
    return out


def _layout(data):
    """Offsets of a valid version-3 file: dict of field -> (offset, struct format)."""
    n = data[7]
    s = struct.unpack_from("<I", data, 38 + n)[0]
    f = {"version": (4, "B"), "quantizer": (5, "B"), "mode": (6, "B"), "namelen": (7, "B"),
         "height": (16 + n, "I"), "width": (20 + n, "I"), "seed": (24 + n, "Q"),
         "tile": (32 + n, "I"), "rate": (36 + n, "H"), "nstreams": (38 + n, "I")}
    for i in range(s):
        f[f"len{i}"] = (42 + n + 4 * i, "I")
    return f, 42 + n + 4 * s  # fields, header CRC offset


def _fix_crcs(buf, hcrc_at):
    struct.pack_into("<I", buf, hcrc_at, zlib.crc32(bytes(buf[:hcrc_at])))
    struct.pack_into("<I", buf, hcrc_at + 4, zlib.crc32(bytes(buf[hcrc_at + 8:])))


def mutate(bases, seed, i):
    """Mutation i: (kind, base name, bytes)."""
    from uqcodec import container
    rng = np.random.default_rng([seed, i])
    name, data = bases[rng.integers(len(bases))]
    kind = KINDS[rng.integers(len(KINDS))]
    buf = bytearray(data)
    fields, hcrc_at = _layout(data)
    if kind == "bitflip":
        for _ in range(rng.integers(1, 5)):
            j = rng.integers(len(buf))
            buf[j] ^= 1 << rng.integers(8)
    elif kind == "byteset":
        for _ in range(rng.integers(1, 5)):
            buf[rng.integers(len(buf))] = rng.integers(256)
    elif kind == "truncate":
        buf = buf[:rng.integers(len(buf))]
    elif kind == "extend":
        buf += rng.integers(0, 256, rng.integers(1, 200), dtype=np.uint8).tobytes()
    elif kind in ("header_raw", "header_field"):
        # a header field set to an extreme value; header_field also fixes both CRCs
        key = list(fields)[rng.integers(len(fields))]
        off, fmt = fields[key]
        bits = 8 * struct.calcsize(fmt)
        v = int(EXTREMES[rng.integers(len(EXTREMES))]) if rng.random() < 0.8 else \
            int(rng.integers(0, 2 ** min(bits, 63)))
        struct.pack_into("<" + fmt, buf, off, v % (1 << bits))
        if kind == "header_field":
            _fix_crcs(buf, hcrc_at)
    else:
        header, streams = container.unpack(data)
        streams = list(streams)
        if kind == "payload_crc_ok":
            # damage the payload, then make the CRCs right: reaches the entropy decoder
            j = rng.integers(len(streams))
            s = bytearray(streams[j])
            op = rng.integers(4)
            if op == 0 and s:
                for _ in range(rng.integers(1, 4)):
                    k = rng.integers(len(s))
                    s[k] ^= 1 << rng.integers(8)
            elif op == 1:
                s = rng.integers(0, 256, 4 * rng.integers(0, 64), dtype=np.uint8).tobytes()
            elif op == 2:
                s = s[:rng.integers(len(s) + 1)]
            else:
                s += rng.integers(0, 256, rng.integers(1, 64), dtype=np.uint8).tobytes()
            streams[j] = bytes(s)
        else:
            # structural lies with valid CRCs: other size / tile / seed / version / streams
            op = rng.integers(6)
            if op == 0:
                header.height = int(EXTREMES[rng.integers(len(EXTREMES))]) or 1
            elif op == 1:
                header.width = int(EXTREMES[rng.integers(len(EXTREMES))]) or 1
            elif op == 2:
                header.tile = int(EXTREMES[rng.integers(len(EXTREMES))])
            elif op == 3:
                header.seed = int(rng.integers(0, 2 ** 63)) * 2 + int(rng.integers(2))
            elif op == 4:
                header.version, header.tile = 1, 0
                streams = streams[:8]
            else:
                k = rng.integers(len(streams))
                streams = streams[:k] + streams[k + 1:] if rng.random() < 0.5 else \
                    streams + [streams[k]]
        try:
            buf = bytearray(container.pack(header, streams))
        except (uqcodec_error(), struct.error, OverflowError):
            buf = bytearray(data[:rng.integers(len(data))])
    return kind, name, bytes(buf)


def craft_z(bases, seed, i):
    """Crafted input i: (CRAFTED, base name, bytes): a hyperprior base file re-encoded with
    crafted hyper-latents and y = 0, at most 3x beyond the work budget (encoding costs
    the same work as decoding)."""
    import importlib.util
    from uqcodec import codec, constants, container, entropy, zoo
    spec = importlib.util.spec_from_file_location(
        "hostile", os.path.join(ROOT, "scripts", "hostile.py"))
    hostile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hostile)
    rng = np.random.default_rng([seed, i, 7])
    hp = [(n, d) for n, d in bases
          if zoo.read_card(zoo.find_by_name(container.parse_header(d)[0].model)).get("arch")
          == "hyperprior"]
    name, data = hp[rng.integers(len(hp))]
    h = container.parse_header(data)[0]
    c = codec.load(zoo.find_by_name(h.model))
    _, (lo, hi) = hostile.hyper(c)
    pick = rng.integers(0, 4, len(lo))
    z = np.where(pick == 0, lo, np.where(pick == 1, hi, np.where(
        pick == 2, 0.0, rng.uniform(lo, hi))))
    rate = int(rng.integers(constants.RATE_MIN, constants.RATE_MAX + 1)) if c.variable else 0
    work = hostile.tile_entries(c, np.broadcast_to(z, (3, 3, len(z))), rate)
    budget = entropy.GaussianCoder.work_budget or entropy.WORK_BUDGET
    fill = 1.0 if work <= 3 * budget else float(rng.uniform(0.1, 3.0)) * budget / work
    return CRAFTED, name, hostile.craft(c, h.height, h.width, h.tile or 1024, rate, z_top=z,
                                        fill=fill, seed=h.seed, quantizer=h.quantizer)


def uqcodec_error():
    from uqcodec import CodecError
    return CodecError


def check(data):
    """Decode; returns "decoded" or "codec_error", raises AssertionError for a wrong
    image and lets any other exception through."""
    import uqcodec
    from uqcodec import container
    try:
        out = uqcodec.decompress(data)
    except uqcodec.CodecError as e:
        msg = str(e)
        assert msg and "\n" not in msg, f"unclear CodecError message {msg!r}"
        return "codec_error"
    header, _ = container.unpack(data)  # decoding is only possible with passing CRCs
    assert out.shape[:2] == (header.height, header.width), (out.shape, header)
    assert out.dtype == np.uint8
    return "decoded"


def peak_rss_mb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _worker(conn, seed, start, stop, mutations=None):
    """Decode mutations start..stop-1, sending (i, kind, outcome, seconds, detail)."""
    os.environ.setdefault("UQCODEC_THREADS", "1")
    bases = base_files()
    conn.send(("ready", peak_rss_mb()))
    for i in range(start, stop):
        kind, name, data = (mutate(bases, seed, i) if mutations is None or i < mutations
                            else craft_z(bases, seed, i))
        conn.send(("start", i))
        t = time.perf_counter()
        try:
            outcome, detail = check(data), ""
        except Exception as e:  # noqa: BLE001 - this is what we are looking for
            outcome = "crash"
            detail = f"{name} {kind}: {type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}"
        conn.send(("done", i, kind, outcome, time.perf_counter() - t, detail, peak_rss_mb()))
    conn.send(("end", peak_rss_mb()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", type=int, nargs="?", default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per file")
    ap.add_argument("--crafted", type=int, default=200,
                    help="crafted hyper-latents after the N mutations")
    args = ap.parse_args()
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    counts, by_kind, crashes, hangs = {}, {}, [], []
    slowest, rss = (0.0, None), 0.0
    t0 = time.time()
    i = 0
    mutations, args.n = args.n, args.n + args.crafted
    while i < args.n:
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_worker, args=(child, args.seed, i, args.n, mutations),
                        daemon=True)
        p.start()
        current, ready_wait = None, 600.0
        while True:
            if not parent.poll(ready_wait if current is None else args.timeout):
                if current is None:
                    raise SystemExit("fuzz worker did not start")
                hangs.append(current)
                print(f"HANG at input {current}", flush=True)
                p.kill()
                p.join()
                i = current + 1
                break
            try:
                msg = parent.recv()
            except EOFError:  # worker died (segfault, OOM kill): a crash of input `current`
                crashes.append((current, "worker died", f"exit code {p.exitcode}"))
                print(f"CRASH (worker died, exit {p.exitcode}) at input {current}", flush=True)
                p.join()
                i = (current if current is not None else i) + 1
                break
            if msg[0] == "ready":
                ready_wait = args.timeout
                current = -1
            elif msg[0] == "start":
                current = msg[1]
            elif msg[0] == "done":
                _, j, kind, outcome, dt, detail, r = msg
                counts[outcome] = counts.get(outcome, 0) + 1
                by_kind.setdefault(kind, {}).setdefault(outcome, 0)
                by_kind[kind][outcome] += 1
                rss = max(rss, r)
                if dt > slowest[0]:
                    slowest = (dt, j)
                if outcome == "crash":
                    crashes.append((j, kind, detail))
                    print(f"CRASH at input {j}: {detail}", flush=True)
                if (j + 1) % 1000 == 0:
                    print(f"{j + 1} inputs, {time.time() - t0:.0f} s: {counts}", flush=True)
                current = j
            elif msg[0] == "end":
                rss = max(rss, msg[1])
                p.join()
                i = args.n
                break
    wall = time.time() - t0
    print(f"\n{args.n} inputs (seed {args.seed}) in {wall:.0f} s wall "
          f"({1000 * wall / max(1, args.n):.1f} ms per input)")
    print(f"outcomes: decoded {counts.get('decoded', 0)}, CodecError "
          f"{counts.get('codec_error', 0)}, other exceptions {len(crashes)}, hangs "
          f"(> {args.timeout:.0f} s) {len(hangs)}")
    for kind in KINDS + (CRAFTED,):
        print(f"  {kind:15s} {by_kind.get(kind, {})}")
    print(f"slowest input: {slowest[0]:.2f} s (#{slowest[1]}); worker peak RSS {rss:.0f} MB")
    sys.exit(1 if crashes or hangs else 0)


if __name__ == "__main__":
    main()
