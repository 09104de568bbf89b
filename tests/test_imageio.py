"""imageio's PNG writer: lossless, a valid zlib stream over several bands of rows."""
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from uqcodec import imageio
from conftest import DATA


def _idat(png):
    """The concatenated IDAT data of a PNG, checking every chunk's CRC."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, data = 8, b""
    while pos < len(png):
        n, kind = struct.unpack(">I4s", png[pos:pos + 8])
        body = png[pos + 8:pos + 8 + n]
        assert struct.unpack(">I", png[pos + 8 + n:pos + 12 + n])[0] == zlib.crc32(kind + body)
        if kind == b"IDAT":
            data += body
        pos += 12 + n
    return data


@pytest.fixture(scope="module")
def rgb():
    return np.asarray(Image.open(f"{DATA}/kodim15_odd.png").convert("RGB"))


@pytest.mark.parametrize("threads", ["1", "2", "3"])
def test_png_bytes_round_trip_in_bands(rgb, threads, monkeypatch):
    """RGB and grayscale, one to three bands (one per thread, for an image of 2^18 bytes
    or more: the tiled crop), odd sizes and single rows or columns: Pillow reads back the
    same pixels, and zlib (which checks the Adler-32 combined from the bands') the rows."""
    monkeypatch.setenv("UQCODEC_THREADS", threads)
    big = np.tile(rgb, (8, 10, 1))
    assert big.size >= 3 * imageio.PNG_BAND_BYTES
    for x in (rgb, big, big[..., 1], rgb[:1], rgb[:, :1], rgb[:5, :7, 2]):
        png = imageio.png_bytes(x)
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), x)
        rows = np.frombuffer(zlib.decompress(_idat(png)), np.uint8).reshape(x.shape[0], -1)
        assert (rows[:, 0] == 1).all()  # PNG's Sub filter on every row


def test_other_arrays_go_to_pillow():
    x = np.arange(12, dtype=np.uint16).reshape(3, 4)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(imageio.png_bytes(x)))), x)


def test_adler32_combine():
    rng = np.random.default_rng(5)
    for _ in range(100):
        a, b = rng.bytes(int(rng.integers(0, 3000))), rng.bytes(int(rng.integers(0, 90000)))
        assert imageio.adler32_combine(zlib.adler32(a), zlib.adler32(b), len(b)) == \
            zlib.adler32(a + b)
