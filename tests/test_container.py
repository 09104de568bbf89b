"""The .uq container: packing, parsing and validation."""
import pytest

from uqcodec import container, CodecError


def make(**kw):
    h = container.Header(model="m", fingerprint="0123456789abcdef", quantizer="uq", height=5,
                         width=7, mode="RGB", seed=2 ** 64 - 1)
    for k, v in kw.items():
        setattr(h, k, v)
    return h


def test_roundtrip():
    data = container.pack(make(), [b"abcd", b"", b"xy"])
    h, streams = container.unpack(data)
    assert streams == [b"abcd", b"", b"xy"]
    assert (h.model, h.height, h.width, h.seed, h.quantizer) == ("m", 5, 7, 2 ** 64 - 1, "uq")


def test_every_truncation_and_bitflip_is_rejected():
    data = container.pack(make(), [b"abcd" * 10, b"\x01\x02"])
    for n in range(len(data)):
        with pytest.raises(CodecError):
            container.unpack(data[:n])
    for i in range(len(data)):
        for bit in (0, 3, 7):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(CodecError):
                container.unpack(bytes(bad))


def test_version_is_checked():
    data = bytearray(container.pack(make(), [b""]))
    data[4] = 99
    with pytest.raises(CodecError, match="unsupported .uq format version 99"):
        container.unpack(bytes(data))


def test_size_limits():
    with pytest.raises(CodecError):
        container.unpack(container.pack(make(height=0), [b""]))


def test_version_1_layout_still_reads():
    """Version 1: no tile field, one-byte stream count; one tile covering the image."""
    h = make(version=1, tile=0)
    data = container.pack(h, [b"abcd", b"xy"])
    assert data[4] == 1 and len(data) == 41 + 1 + 4 * 2 + 6
    h2, streams = container.unpack(data)
    assert (h2.version, h2.tile, h2.tiles, streams) == (1, 0, [(0, 0, 5, 7)], [b"abcd", b"xy"])
    with pytest.raises(CodecError):
        container.pack(make(version=1, tile=64), [b""])


def test_tiles_and_stream_table():
    h = make(height=130, width=200, tile=64)
    assert len(h.tiles) == 3 * 4 and h.tiles[-1] == (128, 192, 2, 8)
    data = container.pack(h, [b"ab"] * 24)  # 2 streams per tile
    assert container.unpack(data)[0].tiles == h.tiles
    for n in (23, 25, 12 * 9):  # not a multiple of the tiles, or > 8 per tile
        with pytest.raises(CodecError, match="streams for 12 tiles"):
            container.unpack(container.pack(h, [b""] * n))
    for tile in (0, 32, 96 + 1, 4096):
        with pytest.raises(CodecError, match="tile size"):
            container.unpack(container.pack(make(tile=tile), [b""]))
