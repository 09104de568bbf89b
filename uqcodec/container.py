"""The .uq container: header + coded streams, specified in docs/format.md.

Everything the decoder needs besides the model weights is in the header. All
header values are validated against limits and the file length before the
decoder allocates anything.

Version 4 has version 3's layout; its fingerprint covers everything that decides
decoding (weights, tables, the card's coding fields) and its dither comes from the
bit generator's raw outputs (``quantization.Dither``). Version 3 (exact entropy path) adds a signed 16-bit rate parameter to the
version-2 header (0 for fixed-rate models). Version 2 codes the image in
independent square tiles (tile size in the header); version 1 files (one tile
covering the whole image) are still read.
"""
import os
import stat
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, asdict

from .constants import RATE_MAX, RATE_MIN
from .errors import CodecError

MAGIC = b"UQC\x89"
VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)
QUANTIZERS = ("uq", "round")
MODES = ("RGB", "L", "RGBA", "P", "LA", "I;16", "I", "F", "CMYK", "YCbCr", "1", "other")
MAX_SIDE = 1 << 16          # pixels per side
MAX_PIXELS = 1 << 27        # 134 megapixels (tiled: memory is bounded by the tile size)
MAX_PIXELS_V1 = 1 << 26     # version 1 coded the whole image at once
TILE_MULTIPLE = 64          # tile sizes are multiples of this (the hyperprior's padding)
MIN_TILE, MAX_TILE = 64, 2048
DEFAULT_TILE = 1024
MAX_STREAMS = 8             # per tile
# Decoder limit (docs/format.md, "Decoder limits"): the streams of a tile hold at most
# TILE_BYTES_PER_PIXEL bytes per pixel of the tile padded to a multiple of 64, plus
# TILE_BYTES_SLACK (the densest file a shipped model writes, binary noise with the
# highest-rate linear model, holds 3.2 bytes per pixel).
TILE_BYTES_PER_PIXEL = 16
TILE_BYTES_SLACK = 1024
# The largest stream table of any valid header: tiles of 64 over 2^27 pixels.
MAX_TILES = (MAX_PIXELS // (MIN_TILE * MIN_TILE) + 2 * MAX_SIDE // MIN_TILE + 1)
MAX_STREAM_TABLE = MAX_TILES * MAX_STREAMS
_FIXED = struct.Struct("<4sBBB")      # magic, version, quantizer, mode
_DIMS_V1 = struct.Struct("<IIQB")     # height, width, seed, number of streams
_DIMS_V2 = struct.Struct("<IIQII")    # height, width, seed, tile size, number of streams
_DIMS = struct.Struct("<IIQIhI")      # height, width, seed, tile size, rate, number of streams
_DIMS_OF = {1: _DIMS_V1, 2: _DIMS_V2, 3: _DIMS, 4: _DIMS}  # version 4: version 3's layout


def check_size(height, width, version=VERSION):
    """Raise CodecError unless height x width is within the version's limits."""
    limit = MAX_PIXELS if version >= 2 else MAX_PIXELS_V1
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE) or height * width > limit:
        raise CodecError(f"unsupported image size {width}x{height} (limits: {MAX_SIDE} pixels "
                         f"per side, {limit / 1e6:.0f} megapixels)")


def check_tile(tile):
    """Raise CodecError unless ``tile`` is a valid version-2 tile size."""
    if not (MIN_TILE <= tile <= MAX_TILE and tile % TILE_MULTIPLE == 0):
        raise CodecError(f"unsupported tile size {tile} (a multiple of {TILE_MULTIPLE} "
                         f"from {MIN_TILE} to {MAX_TILE})")


def tile_grid(height, width, tile):
    """Tiles in coding order (row-major): list of (top, left, height, width).
    ``tile`` 0 means one tile covering the image (version 1)."""
    if not tile:
        return [(0, 0, height, width)]
    return [(t, l, min(tile, height - t), min(tile, width - l))
            for t in range(0, height, tile) for l in range(0, width, tile)]


def tile_count(height, width, tile):
    if not tile:
        return 1
    return (-(-height // tile)) * (-(-width // tile))


def tile_byte_limit(height, width):
    """The most bytes the streams of a tile of this size may hold (a decoder limit)."""
    padded = (-(-height // TILE_MULTIPLE) * TILE_MULTIPLE) * (-(-width // TILE_MULTIPLE)
                                                              * TILE_MULTIPLE)
    return TILE_BYTES_PER_PIXEL * padded + TILE_BYTES_SLACK


def check_tile_bytes(header, writing=False):
    """Raise CodecError if the streams of a tile hold more than ``tile_byte_limit``."""
    tiles = header.tiles
    per_tile = len(header.stream_lengths) // len(tiles)
    lengths = header.stream_lengths
    for i, (_, _, th, tw) in enumerate(tiles):
        n = sum(lengths[per_tile * i:per_tile * (i + 1)])
        if n > tile_byte_limit(th, tw):
            limit = f"more than the decoder's limit of {tile_byte_limit(th, tw)} for its size"
            raise CodecError(f"tile {i} would hold {n} bytes, {limit}" if writing else
                             f"corrupted file (tile {i} holds {n} bytes, {limit})")


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
    tile: int = DEFAULT_TILE  # tile size; 0 = one tile covering the image (version 1)
    version: int = VERSION
    rate: int = 0             # rate parameter (versions 3, 4; 0 for fixed-rate models)

    def as_dict(self):
        return asdict(self)

    @property
    def tiles(self):
        return tile_grid(self.height, self.width, self.tile)


def pack(header, streams):
    """Header + streams -> bytes (in ``header.version``: 4; 3, 2, or 1 for a single
    tile, only to make test files of old versions)."""
    name = header.model.encode("utf-8")
    if not 0 < len(name) < 256:
        raise CodecError("model name must be 1..255 bytes")
    if header.quantizer not in QUANTIZERS:
        raise CodecError(f"unknown quantizer {header.quantizer!r}")
    if header.version not in READABLE_VERSIONS:
        raise CodecError(f"cannot write .uq format version {header.version}")
    mode = header.mode if header.mode in MODES else "other"
    out = bytearray(_FIXED.pack(MAGIC, header.version, QUANTIZERS.index(header.quantizer),
                                MODES.index(mode)))
    out += bytes([len(name)]) + name + bytes.fromhex(header.fingerprint)
    if header.version == 1:
        if header.tile or len(streams) > MAX_STREAMS:
            raise CodecError("version 1 files hold a single tile")
        out += _DIMS_V1.pack(header.height, header.width, header.seed, len(streams))
    elif header.version == 2:
        out += _DIMS_V2.pack(header.height, header.width, header.seed, header.tile,
                             len(streams))
    else:
        if not RATE_MIN <= header.rate <= RATE_MAX:
            raise CodecError(f"rate parameter {header.rate} out of range "
                             f"({RATE_MIN}..{RATE_MAX})")
        out += _DIMS.pack(header.height, header.width, header.seed, header.tile, header.rate,
                          len(streams))
    try:  # a file the decoder would refuse for its size is never written
        check_size(header.height, header.width, header.version)
        if header.version >= 2:
            check_tile(header.tile)
        ntiles = tile_count(header.height, header.width, header.tile)
    except CodecError:
        ntiles = 0  # (only tests write such headers)
    if ntiles and streams and len(streams) % ntiles == 0:
        check_tile_bytes(Header(**{**header.as_dict(), "stream_lengths":
                                   [len(s) for s in streams]}), writing=True)
    out += struct.pack(f"<{len(streams)}I", *(len(s) for s in streams))
    payload = b"".join(streams)
    out += struct.pack("<I", zlib.crc32(bytes(out)))
    out += struct.pack("<I", zlib.crc32(payload))
    return bytes(out) + payload


def unpack(data):
    """bytes -> (Header, [stream bytes]); raises CodecError for anything malformed."""
    header, offset = parse_header(data)
    payload = memoryview(data)[offset:]
    if len(payload) != sum(header.stream_lengths):
        raise CodecError("file is truncated or has trailing data "
                         f"({len(payload)} payload bytes, header says {sum(header.stream_lengths)})")
    crc = struct.unpack_from("<I", data, offset - 4)[0]
    if zlib.crc32(payload) != crc:
        raise CodecError("file is corrupted (payload CRC mismatch)")
    streams, pos = [], 0
    for n in header.stream_lengths:
        streams.append(bytes(payload[pos:pos + n]))
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
    if version not in READABLE_VERSIONS:
        raise CodecError(f"unsupported .uq format version {version} (this uqcodec reads "
                         f"versions {', '.join(map(str, READABLE_VERSIONS))})")
    dims = _DIMS_OF[version]
    pos = _FIXED.size
    if len(data) < pos + 1:
        raise CodecError("file is truncated (header)")
    n = data[pos]
    pos += 1
    need = pos + n + 8 + dims.size
    if n == 0 or len(data) < need:
        raise CodecError("file is truncated (header)")
    try:
        name = data[pos:pos + n].decode("utf-8")
    except UnicodeDecodeError:
        raise CodecError("corrupted header (model name)") from None
    pos += n
    fp = data[pos:pos + 8].hex()
    pos += 8
    rate = 0
    if version >= 3:
        height, width, seed, tile, rate, nstreams = dims.unpack_from(data, pos)
    elif version == 2:
        height, width, seed, tile, nstreams = dims.unpack_from(data, pos)
    else:
        (height, width, seed, nstreams), tile = dims.unpack_from(data, pos), 0
    pos += dims.size
    # The stream table must fit in the file before we read (or allocate) it.
    if nstreams > (len(data) - pos - 8) // 4:
        raise CodecError("file is truncated or corrupted (stream table)")
    table_end = pos + 4 * nstreams
    hcrc = struct.unpack_from("<I", data, table_end)[0]
    if zlib.crc32(memoryview(data)[:table_end]) != hcrc:
        raise CodecError("file is corrupted (header CRC mismatch)")
    if q >= len(QUANTIZERS) or mode >= len(MODES):
        raise CodecError("corrupted header (quantizer or mode)")
    check_size(height, width, version)
    if not RATE_MIN <= rate <= RATE_MAX:
        raise CodecError(f"corrupted header (rate parameter {rate} out of range)")
    if version >= 2:
        check_tile(tile)
    ntiles = tile_count(height, width, tile)
    if nstreams == 0 or nstreams % ntiles or nstreams // ntiles > MAX_STREAMS:
        raise CodecError(f"corrupted header ({nstreams} streams for {ntiles} tiles)")
    lengths = list(struct.unpack_from(f"<{nstreams}I", data, pos))
    header = Header(name, fp, QUANTIZERS[q], height, width, MODES[mode], seed, lengths, tile,
                    version, rate)
    check_tile_bytes(header)
    return header, table_end + 8


# --- reading a file in bounded steps ----------------------------------------------------

def _read_upto(f, n):
    """Up to ``n`` bytes from the binary file ``f`` (fewer only at its end)."""
    chunks, got = [], 0
    while got < n:
        b = f.read(n - got)
        if not b:
            break
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def read_head(f, size=None):
    """The header of a .uq file from the binary file ``f``, read in steps that each field
    bounds: the magic and version first, then the fixed fields, then the stream table
    (at most MAX_STREAM_TABLE entries, and within ``size``, the file's length when it is
    known). Returns (header bytes, Header); raises CodecError as ``parse_header``."""
    buf = _read_upto(f, _FIXED.size + 1)
    if len(buf) < 4 or buf[:4] != MAGIC:
        raise CodecError("not a .uq file (bad magic)")
    if len(buf) < _FIXED.size + 1 or buf[4] not in READABLE_VERSIONS or buf[7] == 0:
        parse_header(buf)  # the error of a short, unknown or nameless header
    version, n = buf[4], buf[7]
    dims = _DIMS_OF[version]
    buf += _read_upto(f, n + 8 + dims.size)
    end = len(buf)
    if end < _FIXED.size + 1 + n + 8 + dims.size:
        raise CodecError("file is truncated (header)")
    nstreams = buf[end - 1] if version == 1 else struct.unpack_from("<I", buf, end - 4)[0]
    if nstreams > MAX_STREAM_TABLE or (size is not None and end + 4 * nstreams + 8 > size):
        raise CodecError("file is truncated or corrupted (stream table)")
    buf += _read_upto(f, 4 * nstreams + 8)
    header, offset = parse_header(buf)
    return buf[:offset], header


class FileStreams(Sequence):
    """The streams of an open .uq file, each read from the file when it is indexed (a
    decoder holds one tile's streams at a time)."""

    def __init__(self, fd, offset, lengths):
        self.fd, self.lengths = fd, list(lengths)
        self.offsets = [offset]
        for n in self.lengths[:-1]:
            self.offsets.append(self.offsets[-1] + n)

    def __len__(self):
        return len(self.lengths)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n, at = self.lengths[i], self.offsets[i]
        data = _pread(self.fd, n, at)
        if len(data) != n:
            raise CodecError("file is truncated (it changed while it was read)")
        return data


def _pread(fd, n, offset):
    chunks, got = [], 0
    while got < n:
        b = os.pread(fd, min(n - got, 1 << 24), offset + got)
        if not b:
            break
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


class File:
    """A .uq file opened for decoding (``open_file``): ``header``, ``size`` in bytes and
    ``streams`` (read when indexed, from a regular file; in memory from a pipe)."""

    def __init__(self, header, size, streams, f):
        self.header, self.size, self.streams, self._f = header, size, streams, f

    def close(self):
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


CRC_CHUNK = 1 << 20


def open_file(path):
    """Open and validate a .uq file without reading more than it holds, and never all of
    it at once: the header first (``read_head``: magic, version, fields, stream table,
    the decoder limits), then its length against the header's (a regular file: from its
    size, before reading the payload; a pipe or device: reading at most one byte more than
    the header says), then the payload CRC in chunks. Returns a ``File``."""
    f = open(path, "rb", buffering=0)
    try:
        st = os.fstat(f.fileno())
        regular = stat.S_ISREG(st.st_mode)
        head, header = read_head(f, st.st_size if regular else None)
        want = sum(header.stream_lengths)
        crc = struct.unpack_from("<I", head, len(head) - 4)[0]
        if regular:
            have = st.st_size - len(head)
        else:
            payload = _read_upto(f, want + 1)
            have = len(payload)
        if have != want:
            raise CodecError("file is truncated or has trailing data "
                             f"({have} payload bytes, header says {want})")
        if regular:
            got, pos = 0, len(head)
            while pos < st.st_size:
                chunk = _pread(f.fileno(), min(CRC_CHUNK, st.st_size - pos), pos)
                if not chunk:
                    break
                got = zlib.crc32(chunk, got)
                pos += len(chunk)
            streams = FileStreams(f.fileno(), len(head), header.stream_lengths)
        else:
            got = zlib.crc32(payload)
            streams, pos = [], 0
            for n in header.stream_lengths:
                streams.append(payload[pos:pos + n])
                pos += n
        if got != crc:
            raise CodecError("file is corrupted (payload CRC mismatch)")
        return File(header, len(head) + want, streams, f)
    except BaseException:
        f.close()
        raise
