"""Round trips of the codec on real (Kodak) images, for both families."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import uqcodec
from uqcodec import container
from conftest import kodak_crop, load, DATA


@pytest.mark.parametrize("quantizer", ["uq", "round"])
def test_decoder_matches_encoder_bit_for_bit(family, crop, quantizer):
    data, info = uqcodec.compress_with_info(crop, model=family, seed=123, quantizer=quantizer,
                                            reconstruct=True)
    out = uqcodec.decompress(data)
    assert out.shape == crop.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, info["reconstruction"])
    # and it is an actual picture of the input, not noise
    assert uqcodec.evaluate.psnr(crop, out) > 20


def test_full_kodak_crop_roundtrip(family):
    x = kodak_crop(7)
    data, info = uqcodec.compress_with_info(x, model=family, seed=9, reconstruct=True)
    np.testing.assert_array_equal(uqcodec.decompress(data), info["reconstruction"])


def test_two_seeds_two_files_both_decode(family, crop):
    a = uqcodec.compress(crop, model=family, seed=1)
    b = uqcodec.compress(crop, model=family, seed=2)
    assert a != b
    da, db = uqcodec.decompress(a), uqcodec.decompress(b)
    assert uqcodec.read_header(a).seed == 1 and uqcodec.read_header(b).seed == 2
    assert not np.array_equal(da, db)  # different dither, different reconstruction
    for d in (da, db):
        assert uqcodec.evaluate.psnr(crop, d) > 20
    # same seed, same file
    assert uqcodec.compress(crop, model=family, seed=1) == a


def test_default_seed_is_fresh(family, crop):
    a = uqcodec.read_header(uqcodec.compress(crop, model=family)).seed
    b = uqcodec.read_header(uqcodec.compress(crop, model=family)).seed
    assert a != b


@pytest.mark.parametrize("source", ["bundled", "kodak"])
def test_file_size_matches_model_rate(family, source):
    """Universal quantization: coded size == the model's own rate (sum -log2 P(k|u))."""
    x = load("kodim19_crop.png") if source == "bundled" else kodak_crop(21, (0, 0, 384, 256))
    from uqcodec.entropy import CODER_MIN_PROB
    data, info = uqcodec.compress_with_info(x, model=family, seed=5)
    header, streams = container.unpack(data)
    assert len(header.tiles) == 1 and len(data) == container.parse_header(data)[1] + sum(
        header.stream_lengths)  # the file: header, then the streams, nothing else
    # per tile: the range-coded streams, then the escapes (bytes, not in the rate)
    *coded, escapes = streams
    coded_bits = 8 * sum(len(s) for s in coded)
    n_escaped = sum(b < 0x80 for b in escapes)  # one varint (last byte < 0x80) per symbol
    rate = info["rate_bits"]
    # a range-coded stream is whole 32-bit words and its coder flushes at most two of
    # them, plus 1e-4 of the rate for the coder's 24-bit probabilities (measured gaps:
    # 57 bits at most, flush included); an escaped symbol is coded as its end bin, which
    # the rate counts at no more than -log2(CODER_MIN_PROB) = 24 bits, the coder at no
    # less than 0
    over = 64 * len(coded) + 1e-4 * rate
    under = over - np.log2(CODER_MIN_PROB) * n_escaped
    assert -under <= coded_bits - rate <= over, (coded_bits, rate, n_escaped)


_CHILD = """
import hashlib, sys, uqcodec
from conftest import load
if sys.argv[1] == "encode":
    data = uqcodec.compress(load("kodim05_crop.png"), model=sys.argv[3], seed=77, tile=64)
    open(sys.argv[2], "wb").write(data)
    print(hashlib.sha256(data).hexdigest())
else:
    d = uqcodec.decompress(open(sys.argv[2], "rb").read())
    print(hashlib.sha256(d.tobytes()).hexdigest())
"""


def _child(threads, *args):
    env = dict(os.environ, UQCODEC_THREADS=threads)
    r = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True,
                       env=env, timeout=300, cwd=os.path.dirname(os.path.abspath(__file__)))
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_determinism_across_processes_and_thread_counts(family, tmp_path):
    """A tiled file (3x2 tiles): the same seed gives the same file in two separate
    processes, and the decoded pixels do not depend on TensorFlow's thread count."""
    a, b = tmp_path / "a.uq", tmp_path / "b.uq"
    assert _child("1", "encode", str(a), family) == _child("1", "encode", str(b), family)
    assert a.read_bytes() == b.read_bytes()
    assert len(uqcodec.read_header(a.read_bytes()).stream_lengths) > 6
    outs = {_child(t, "decode", str(a)) for t in ("1", "2")}
    assert len(outs) == 1
    # and the same pixels as this process decodes
    import hashlib
    assert outs == {hashlib.sha256(uqcodec.decompress(a.read_bytes()).tobytes()).hexdigest()}


@pytest.mark.parametrize("quantizer", ["uq", "round"])
@pytest.mark.parametrize("shape,tile", [((130, 200), 64), ((96, 160), 64), ((65, 129), 128)])
def test_tiled_decoder_matches_encoder_bit_for_bit(family, quantizer, shape, tile):
    x = np.ascontiguousarray(np.tile(load("kodim05_crop.png"), (2, 2, 1))[:shape[0], :shape[1]])
    data, info = uqcodec.compress_with_info(x, model=family, seed=5, quantizer=quantizer,
                                            tile=tile, reconstruct=True)
    h = uqcodec.read_header(data)
    assert h.tile == tile and info["tiles"] == len(h.tiles) == (
        -(-shape[0] // tile)) * (-(-shape[1] // tile))
    out = uqcodec.decompress(data)
    np.testing.assert_array_equal(out, info["reconstruction"])
    assert uqcodec.evaluate.psnr(x, out) > 20


def test_tiles_have_their_own_dither(family):
    """Two identical tiles side by side code differently (own seed per tile), and the
    first tile of a tiled file equals a single-tile file of the same pixels."""
    x = load("kodim05_crop.png")[:64, :64]
    data, info = uqcodec.compress_with_info(np.concatenate([x, x], axis=1), model=family,
                                            seed=9, tile=64, reconstruct=True)
    _, streams = container.unpack(data)
    n = len(streams) // 2
    assert streams[:n] != streams[n:]
    single, sinfo = uqcodec.compress_with_info(x, model=family, seed=9, tile=64,
                                               reconstruct=True)
    assert container.unpack(single)[1] == streams[:n]
    np.testing.assert_array_equal(sinfo["reconstruction"], info["reconstruction"][:, :64])


def test_tiles_coded_one_ahead_give_the_same_file_and_pixels(family, monkeypatch):
    """With several tiles the next tile's analysis (encoder) or entropy decoding (decoder)
    runs in another thread while this one is coded or synthesized: the same bytes and
    pixels as one tile after the other."""
    import threading
    from uqcodec import codec
    x = np.ascontiguousarray(np.tile(load("kodim05_crop.png"), (2, 2, 1))[:192, :320])
    ahead = uqcodec.compress(x, model=family, seed=3, tile=64)
    seen = set()
    real = codec._ahead

    def spy(items, count):  # the real pipeline, noting the threads it runs in
        for item in real(items, count):
            seen.update(t.name for t in threading.enumerate())
            yield item
    monkeypatch.setattr(codec, "_ahead", spy)
    out = uqcodec.decompress(ahead)
    assert "uqcodec-tiles" in seen

    def one_by_one(items, count):
        yield from items
    monkeypatch.setattr(codec, "_ahead", one_by_one)
    assert uqcodec.compress(x, model=family, seed=3, tile=64) == ahead
    np.testing.assert_array_equal(uqcodec.decompress(ahead), out)


def test_the_thread_ahead_hands_over_items_and_errors_in_order_and_stops():
    """``codec._ahead``: a tile's error (a corrupted stream) reaches the caller after the
    tiles before it, in the caller's thread; a caller that stops early (an error in its
    own work, Ctrl-C) stops the producer after at most two more items."""
    import threading
    from uqcodec import codec

    def alive():
        return [t for t in threading.enumerate() if t.name == "uqcodec-tiles"]

    def failing():
        yield 1
        yield 2
        raise uqcodec.CodecError("corrupted file (tile 3)")
    got = []
    with pytest.raises(uqcodec.CodecError, match="tile 3"):
        for item in codec._ahead(failing(), 5):
            got.append(item)
    assert got == [1, 2] and not alive()
    produced = []

    def many():
        for i in range(100):
            produced.append(i)
            yield i
    items = codec._ahead(many(), 100)
    assert next(items) == 0
    items.close()
    assert len(produced) <= 3 and not alive()


def test_a_rate_set_reads_only_the_model_that_codes():
    """The default codec is several models; a compress chooses one from their cards and
    the lists of their weights files' arrays, and loads only that one (each model's
    weights cost tens of milliseconds to read)."""
    code = ("import numpy as np, uqcodec\n"
            "from uqcodec import codec\n"
            "x = np.asarray(__import__('PIL.Image').Image.open(%r).convert('RGB'))\n"
            "uqcodec.compress(x, quality=2)\n"
            "print(__import__('json').dumps(sorted((c.name, 'family' in vars(c))\n"
            "                                      for c in codec._cache.values())))\n"
            % os.path.join(DATA, "kodim05_crop.png"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    loaded = json.loads(out)  # [(name, loaded?)] of the models the rate set opened
    if len(loaded) < 2:
        pytest.skip("the default codec is one model")
    assert sum(flag for _, flag in loaded) == 1, loaded


@pytest.mark.parametrize("tile", [0, 32, 100, 4096])
def test_bad_tile_sizes(tile):
    with pytest.raises(uqcodec.CodecError, match="tile size"):
        uqcodec.compress(np.zeros((8, 8, 3), np.uint8), tile=tile)


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 1), (33, 65), (64, 64), (70, 130)])
def test_any_size(family, shape):
    x = load("kodim15_odd.png")
    x = np.resize(x, shape + (3,)).astype(np.uint8)
    data, info = uqcodec.compress_with_info(x, model=family, seed=3, reconstruct=True)
    out = uqcodec.decompress(data)
    assert out.shape == x.shape
    np.testing.assert_array_equal(out, info["reconstruction"])


def test_grayscale_comes_back_grayscale(family, tmp_path):
    from PIL import Image
    from conftest import run_cli
    p = tmp_path / "g.png"
    gray = np.asarray(Image.open(os.path.join(DATA, "kodim05_crop.png")).convert("L"))
    Image.fromarray(gray).save(p)
    data = uqcodec.compress(str(p), model=family, seed=1)
    assert uqcodec.read_header(data).mode == "L"
    out = uqcodec.decompress(data)
    assert out.ndim == 2 and out.shape == (96, 160) and out.dtype == np.uint8
    # the same picture: about as close as the colour crop comes back (measured 28.5 dB
    # linear, 33.9 dB hyperprior; the colour crop 27.5 and 32.0 dB)
    rgb = load("kodim05_crop.png")
    colour = uqcodec.decompress(uqcodec.compress(rgb, model=family, seed=1))
    assert uqcodec.evaluate.psnr(gray, out) > uqcodec.evaluate.psnr(rgb, colour) - 1.0
    # the CLI writes an 8-bit grayscale PNG of these pixels
    uq = tmp_path / "g.uq"
    uq.write_bytes(data)
    r = run_cli("decompress", str(uq), "-o", str(tmp_path / "back.png"))
    assert r.returncode == 0, r.stderr
    with Image.open(tmp_path / "back.png") as back:
        assert back.mode == "L"
        np.testing.assert_array_equal(np.asarray(back), out)


def test_sixteen_bit_and_palette_and_rgba(family, tmp_path, capsys):
    from PIL import Image
    x = load("kodim15_odd.png")
    g16 = (x[..., 1].astype(np.uint16) * 257)
    p16 = tmp_path / "g16.png"
    Image.fromarray(g16).save(p16)
    out = uqcodec.decompress(uqcodec.compress(str(p16), model=family, seed=1))
    assert out.shape == g16.shape and uqcodec.evaluate.psnr(x[..., 1], out) > 20
    pal = tmp_path / "p.png"
    Image.fromarray(x).convert("P").save(pal)
    out = uqcodec.decompress(uqcodec.compress(str(pal), model=family, seed=1))
    assert out.shape == x.shape
    rgba = tmp_path / "a.png"
    Image.fromarray(np.dstack([x, np.full(x.shape[:2], 128, np.uint8)])).save(rgba)
    out = uqcodec.decompress(uqcodec.compress(str(rgba), model=family, seed=1))
    assert out.shape == x.shape
    assert "alpha channel dropped" in capsys.readouterr().err


def test_api_errors_are_codec_errors(tmp_path):
    with pytest.raises(uqcodec.CodecError):
        uqcodec.decompress(b"hello")
    with pytest.raises(uqcodec.CodecError):
        uqcodec.compress(str(tmp_path / "missing.png"))
    with pytest.raises(uqcodec.CodecError):
        uqcodec.compress(np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(uqcodec.CodecError):
        uqcodec.compress(np.zeros((4, 4, 3), np.uint8), model="no-such-model")
