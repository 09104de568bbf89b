"""The .uq container: header + coded streams, specified in docs/format.md.

Everything the decoder needs besides the model weights is in the header. All
header values are validated against limits and the file length before the
decoder allocates anything.
"""
import struct
import zlib
from dataclasses import dataclass, field, asdict

from .errors import CodecError

MAGIC = b"UQC\x89"
VERSION = 1
QUANTIZERS = ("uq", "round")
MODES = ("RGB", "L", "RGBA", "P", "LA", "I;16", "I", "F", "CMYK", "YCbCr", "1", "other")
MAX_SIDE = 1 << 16          # pixels per side
MAX_PIXELS = 1 << 26        # 67 megapixels: whole-image coding (no tiling in version 1)
MAX_STREAMS = 8
_FIXED = struct.Struct("<4sBBB")      # magic, version, quantizer, mode
_DIMS = struct.Struct("<IIQB")        # height, width, seed, number of streams


def check_size(height, width):
    """Raise CodecError unless height x width is within the version's limits."""
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE) or height * width > MAX_PIXELS:
        raise CodecError(f"unsupported image size {width}x{height} (limits: {MAX_SIDE} pixels "
                         f"per side, {MAX_PIXELS / 1e6:.0f} megapixels)")


@dataclass
class Header:
    model: str
    fingerprint: str          # 16 hex digits
    quantizer: str            # "uq" | "round"
    height: int
    width: int
    mode: str                 # original image mode
    seed: int
    stream_lengths: list = field(default_factory=list)

    def as_dict(self):
        d = asdict(self)
        d["version"] = VERSION
        return d


def pack(header, streams):
    """Header + streams -> bytes."""
    name = header.model.encode("utf-8")
    if not 0 < len(name) < 256:
        raise CodecError("model name must be 1..255 bytes")
    if header.quantizer not in QUANTIZERS:
        raise CodecError(f"unknown quantizer {header.quantizer!r}")
    mode = header.mode if header.mode in MODES else "other"
    out = bytearray(_FIXED.pack(MAGIC, VERSION, QUANTIZERS.index(header.quantizer),
                                MODES.index(mode)))
    out += bytes([len(name)]) + name + bytes.fromhex(header.fingerprint)
    out += _DIMS.pack(header.height, header.width, header.seed, len(streams))
    for s in streams:
        out += struct.pack("<I", len(s))
    payload = b"".join(streams)
    out += struct.pack("<I", zlib.crc32(bytes(out)))
    out += struct.pack("<I", zlib.crc32(payload))
    return bytes(out) + payload


def unpack(data):
    """bytes -> (Header, [stream bytes]); raises CodecError for anything malformed."""
    header, offset = parse_header(data)
    payload = data[offset:]
    if len(payload) != sum(header.stream_lengths):
        raise CodecError("file is truncated or has trailing data "
                         f"({len(payload)} payload bytes, header says {sum(header.stream_lengths)})")
    crc = struct.unpack_from("<I", data, offset - 4)[0]
    if zlib.crc32(payload) != crc:
        raise CodecError("file is corrupted (payload CRC mismatch)")
    streams, pos = [], 0
    for n in header.stream_lengths:
        streams.append(payload[pos:pos + n])
        pos += n
    return header, streams


def parse_header(data):
    """Parse and validate the header only. Returns (Header, payload offset)."""
    data = bytes(data)
    if len(data) < 4 or data[:4] != MAGIC:
        raise CodecError("not a .uq file (bad magic)")
    if len(data) < _FIXED.size:
        raise CodecError("file is truncated (header)")
    _, version, q, mode = _FIXED.unpack_from(data, 0)
    if version != VERSION:
        raise CodecError(f"unsupported .uq format version {version} (this uqcodec reads {VERSION})")
    pos = _FIXED.size
    if len(data) < pos + 1:
        raise CodecError("file is truncated (header)")
    n = data[pos]
    pos += 1
    need = pos + n + 8 + _DIMS.size
    if n == 0 or len(data) < need:
        raise CodecError("file is truncated (header)")
    try:
        name = data[pos:pos + n].decode("utf-8")
    except UnicodeDecodeError:
        raise CodecError("corrupted header (model name)") from None
    pos += n
    fp = data[pos:pos + 8].hex()
    pos += 8
    height, width, seed, nstreams = _DIMS.unpack_from(data, pos)
    pos += _DIMS.size
    if nstreams > MAX_STREAMS or len(data) < pos + 4 * nstreams + 8:
        raise CodecError("file is truncated or corrupted (stream table)")
    lengths = list(struct.unpack_from(f"<{nstreams}I", data, pos))
    pos += 4 * nstreams
    hcrc = struct.unpack_from("<I", data, pos)[0]
    if zlib.crc32(data[:pos]) != hcrc:
        raise CodecError("file is corrupted (header CRC mismatch)")
    pos += 8
    if q >= len(QUANTIZERS) or mode >= len(MODES):
        raise CodecError("corrupted header (quantizer or mode)")
    check_size(height, width)
    return Header(name, fp, QUANTIZERS[q], height, width, MODES[mode], seed, lengths), pos
