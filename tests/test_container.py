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
