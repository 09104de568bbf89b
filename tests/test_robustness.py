"""Damaged and hostile .uq files: an image of the header's size or a CodecError, nothing else."""
import struct
import zlib

import numpy as np
import pytest

import uqcodec
from uqcodec import container
from conftest import load


def test_random_mutations_are_rejected(family):
    data = uqcodec.compress(load("kodim15_odd.png"), model=family, seed=1)
    rng = np.random.default_rng(0)
    for _ in range(300):
        bad = bytearray(data)
        kind = rng.integers(4)
        if kind == 0:
            i = rng.integers(len(bad))
            bad[i] ^= 1 << rng.integers(8)
        elif kind == 1:
            bad = bad[:rng.integers(len(bad))]
        elif kind == 2:
            bad += bytes(rng.integers(0, 256, rng.integers(1, 50), dtype=np.uint8))
        else:
            i = rng.integers(len(bad))
            bad[i] = rng.integers(256)
        if bytes(bad) == data:
            continue
        with pytest.raises(uqcodec.CodecError):
            uqcodec.decompress(bytes(bad))


def test_garbage_streams_with_valid_crcs(family):
    """Random payloads that pass the CRCs reach the entropy decoder: it must not crash."""
    data = uqcodec.compress(load("kodim15_odd.png"), model=family, seed=1)
    header, streams = container.unpack(data)
    rng = np.random.default_rng(1)
    for trial in range(12):
        new = [bytes(rng.integers(0, 256, 4 * rng.integers(0, 40), dtype=np.uint8))
               for _ in streams[:-1]]
        new.append(bytes(rng.integers(0, 256, rng.integers(0, 30), dtype=np.uint8)))
        try:
            out = uqcodec.decompress(container.pack(header, new))
        except uqcodec.CodecError:
            continue
        assert out.shape[:2] == (header.height, header.width)


def test_extreme_header_values(family):
    data = uqcodec.compress(load("kodim15_odd.png"), model=family, seed=1)
    h, streams = container.unpack(data)
    for field, value in (("height", 2 ** 32 - 1), ("width", 0), ("height", 2 ** 16 + 1)):
        raw = bytearray(container.pack(h, streams))
        # write the extreme value into the packed header (offsets: docs/format.md), fix the CRC
        n = len(h.model.encode())
        off = 16 + n if field == "height" else 20 + n
        struct.pack_into("<I", raw, off, value)
        hlen = 33 + n + 4 * len(streams)
        struct.pack_into("<I", raw, hlen, zlib.crc32(bytes(raw[:hlen])))
        with pytest.raises(uqcodec.CodecError):
            uqcodec.decompress(bytes(raw))
    # a valid header with a mismatched size decodes to that size or fails cleanly
    h.height, h.width = 300, 400
    try:
        out = uqcodec.decompress(container.pack(h, streams))
        assert out.shape[:2] == (300, 400)
    except uqcodec.CodecError:
        pass
