"""Damaged and hostile .uq files: an image of the header's size or a CodecError, nothing else.

The fuzzer (mutations, oracle) lives in scripts/fuzz.py; `python scripts/fuzz.py 20000`
is the long run with hang detection in a worker process. Here 2,000 of its inputs run
in-process.
"""
import importlib.util
import json
import os
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest

import uqcodec
from uqcodec import container
from conftest import DATA, ROOT, load, shipped

_spec = importlib.util.spec_from_file_location("fuzz", os.path.join(ROOT, "scripts", "fuzz.py"))
fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz)


@pytest.fixture(scope="module")
def bases():
    return fuzz.base_files()


def test_fuzzed_files_decode_or_raise_codec_error(bases):
    from uqcodec import zoo
    n, outcomes, slowest = 2000, {}, 0.0
    kinds = set()
    arch = {c["name"]: c["arch"] for c in zoo.list_models()}
    for i in range(n):
        kind, name, data = fuzz.mutate(bases, 2020, i)
        t = time.perf_counter()
        try:
            outcome = fuzz.check(data)  # AssertionError / anything else fails the test
        except Exception as e:
            raise AssertionError(f"input {i} ({name}, {kind}): {type(e).__name__}: {e}") from e
        slowest = max(slowest, time.perf_counter() - t)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        kinds.add((kind, arch[name.split("/")[0]]))
    assert outcomes["codec_error"] > n // 2
    assert outcomes["decoded"] > 50  # mutations with valid CRCs do reach the decoders
    from uqcodec import families
    assert {k for k, _ in kinds} == set(fuzz.KINDS) and {a for _, a in kinds} == {
        f.name for f in families.all_families() if zoo.middle(f.name) or zoo.default_model(f.name)}
    assert slowest < 30, f"slowest input took {slowest:.1f} s"


def _with_field(data, field, value):
    """Set a version-2 header field (offsets: docs/format.md) and fix the header CRC."""
    fields, hcrc_at = fuzz._layout(data)
    off, fmt = fields[field]
    raw = bytearray(data)
    struct.pack_into("<" + fmt, raw, off, value)
    struct.pack_into("<I", raw, hcrc_at, zlib.crc32(bytes(raw[:hcrc_at])))
    return bytes(raw)


@pytest.mark.parametrize("field,value", [
    ("height", 2 ** 32 - 1), ("width", 0), ("height", 2 ** 16 + 1), ("tile", 0), ("tile", 65),
    ("tile", 2 ** 32 - 1), ("tile", 4096), ("nstreams", 2 ** 32 - 1), ("nstreams", 0),
    ("height", 65536), ("len0", 2 ** 32 - 1)])
def test_extreme_header_values_fail_fast(family, field, value):
    data = uqcodec.compress(load("kodim15_odd.png"), model=family, seed=1)
    t = time.perf_counter()
    with pytest.raises(uqcodec.CodecError):
        uqcodec.decompress(_with_field(data, field, value))
    assert time.perf_counter() - t < 5  # rejected from the header, before any allocation


def test_rate_parameters_out_of_range_fail_fast():
    """The fuzzer found it: a variable-rate file whose header claims rate 32767 (gain
    e^500) made the decoder build Gaussian rows of astronomical length. The format
    allows RATE_MIN..RATE_MAX; anything else is refused from the header, and the
    encoder refuses to write it."""
    from uqcodec import zoo
    from uqcodec.constants import RATE_MAX, RATE_MIN
    cards = zoo.variable_models("hyperprior")
    if not cards:
        pytest.skip("no shipped variable-rate model")
    x = load("kodim15_odd.png")
    data = uqcodec.compress(x, model=cards[0]["name"], seed=1, quality=3)
    for r in (RATE_MAX + 1, 32767, RATE_MIN - 1, -32768):
        t = time.perf_counter()
        with pytest.raises(uqcodec.CodecError, match="rate parameter"):
            uqcodec.decompress(_with_field(data, "rate", r & 0xFFFF))
        assert time.perf_counter() - t < 5
    from uqcodec import codec
    c = codec.load(cards[0]["path"])
    for r in (RATE_MAX, RATE_MIN):  # files at the ends of the range decode
        enc, info = c.encode(x, 1, rate=r, reconstruct=True)
        assert container.parse_header(enc)[0].rate == r
        np.testing.assert_array_equal(uqcodec.decompress(enc), info["reconstruction"])
    h, streams = container.unpack(data)
    h.rate = RATE_MAX + 1
    with pytest.raises(uqcodec.CodecError, match="out of range"):
        container.pack(h, streams)


def test_size_limits_follow_the_tiles(family):
    """A header may claim a huge image only with a stream table for every tile, so the
    file length bounds the work; huge tiles are refused outright."""
    data = uqcodec.compress(load("kodim15_odd.png"), model=family, seed=1)
    h, streams = container.unpack(data)
    h.height, h.width = 6000, 8000   # 48 tiles of 1024, but one tile's streams
    with pytest.raises(uqcodec.CodecError, match="streams for 48 tiles"):
        uqcodec.decompress(container.pack(h, streams))
    with pytest.raises(uqcodec.CodecError, match="unsupported image size"):
        container.check_size(1 << 16, 1 << 12)
    container.check_size(6000, 8000)


def test_mismatched_size_fails_or_decodes_the_same_latents(family):
    """A header whose image size disagrees with its streams: more pixels than the streams
    hold is a corrupted file (the range decoder runs out of data); a size with the same
    latent grid reads the same latents, so it decodes to the same picture, cropped."""
    x = load("kodim15_odd.png")  # 51 x 67
    data, info = uqcodec.compress_with_info(x, model=family, seed=1, reconstruct=True)
    h, streams = container.unpack(data)
    h.height, h.width = 300, 400
    with pytest.raises(uqcodec.CodecError, match="corrupted file"):
        uqcodec.decompress(container.pack(h, streams))
    h.height, h.width = 51, 66  # padded to the same multiple as 51 x 67
    out = uqcodec.decompress(container.pack(h, streams))
    np.testing.assert_array_equal(out, info["reconstruction"][:, :66])


# Peak memory, measured in a fresh process (VmHWM: the high-water mark of its resident
# memory) from after the model is loaded and has decoded once.
MEMORY = r"""
import json, sys
import numpy as np
import uqcodec
from uqcodec import container, entropy

def peak_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) / 1024 for l in f if l.startswith("VmHWM:"))

out = {}
if sys.argv[1] == "file":
    # a file with valid CRCs whose hyper-latent is random and whose escapes are huge
    model, src = sys.argv[2:4]
    from PIL import Image
    data = uqcodec.compress(np.asarray(Image.open(src).convert("RGB")), model=model, seed=1)
    uqcodec.decompress(data)
    h, streams = container.unpack(data)
    base, outcomes = peak_mb(), []
    rng = np.random.default_rng(0)
    for trial in range(5):
        z = rng.integers(0, 256, 4 * 64, dtype=np.uint8).tobytes()
        esc = b"\xff\xff\xff\xff\x7f" * 400
        try:
            shape = uqcodec.decompress(container.pack(h, [z, streams[1], esc])).shape
            outcomes.append(list(shape[:2]) == [h.height, h.width])
        except uqcodec.CodecError:
            outcomes.append("codec_error")
    out = {"growth_mb": peak_mb() - base, "outcomes": outcomes}
else:
    # the worst case of the Gaussian tables: N latent elements, all at the largest scale
    # (rows of 2 W + 1 = 3077 entries), coded and decoded
    n = int(sys.argv[2])
    rng = np.random.default_rng(0)
    coder = entropy.GaussianCoder(alpha=None)
    coder.work_budget = None  # files this costly are refused; here: how the rows are built
    idx = np.full(n, len(entropy.SCALES) - 1)
    mean = rng.normal(0.0, 5.0, n)
    c, u = np.rint(mean), rng.uniform(-0.5, 0.5, n)
    d = np.rint(rng.normal(0.0, 200.0, n)).astype(np.int64)
    base = peak_mb()
    enc, esc = entropy.new_encoder(), entropy.EscapeWriter()
    coder.encode(enc, d, mean, idx, c, u, esc)
    got = coder.decode(entropy.new_decoder(entropy.finish(enc)), mean, idx, c, u,
                       entropy.EscapeReader(bytes(esc.buf)))
    assert np.array_equal(got, d)
    out = {"growth_mb": peak_mb() - base,
           "row": 2 * int(np.ceil(6.0 * entropy.SCALES[-1] + 2.0)) + 1}
print(json.dumps(out))
"""


def _memory(*args):
    r = subprocess.run([sys.executable, "-c", MEMORY, *args], capture_output=True, text=True,
                       timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_garbage_latents_do_not_blow_up_memory():
    """Hostile files decode in bounded memory: the Gaussian tables are built in chunks
    of at most 2^20 entries, whatever the decoded scales. Five files with random
    hyper-latents and huge escapes: a decoded image of the header's size or a
    CodecError each, within 64 MB of the memory of an ordinary decode (measured: 17 MB).
    The worst case, every element of y at the largest scale (rows of 3077 entries): 3000
    more elements cost no more memory (measured: within 8 MB with 1 or 2 threads; 70 MB
    more when the tables are built in one piece)."""
    got = _memory("file", shipped("hyperprior"), os.path.join(DATA, "kodim05_crop.png"))
    assert len(got["outcomes"]) == 5 and all(o in (True, "codec_error") for o in got["outcomes"])
    assert got["growth_mb"] < 64, got
    small, large = _memory("worst", "1000"), _memory("worst", "4000")
    assert small["row"] == 3077 and 3000 * small["row"] * 8 > 70e6  # 70 MB of rows alone
    assert large["growth_mb"] - small["growth_mb"] < 32, (small, large)
