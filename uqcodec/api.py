"""Python API: ``compress`` and ``decompress``. Models are loaded once and cached."""
import os
import sys

from . import container, imageio
from .errors import CodecError

MAX_SEED = (1 << 64) - 1
MAX_REFINE = 10000


def _model_dir(model=None, quality=None):
    from . import zoo
    return zoo.resolve(model, quality)


def compress_with_info(image, model=None, seed=None, quantizer="uq", quality=None,
                       reconstruct=False, warn=None, tile=None, refine=0, progress=None):
    """Like ``compress`` but returns (bytes, info); info holds the model's rate in bits,
    warnings and, with ``reconstruct``, the encoder-side reconstruction.
    ``progress(n)``: called after each refinement step."""
    from . import codec
    if quantizer not in container.QUANTIZERS:
        raise CodecError(f"unknown quantizer {quantizer!r} (choose uq or round)")
    if seed is None:
        seed = int.from_bytes(os.urandom(8), "little")
    if not 0 <= int(seed) <= MAX_SEED:
        raise CodecError("seed must be an integer in [0, 2^64)")
    tile = container.DEFAULT_TILE if tile is None else int(tile)
    container.check_tile(tile)
    if not 0 <= int(refine or 0) <= MAX_REFINE:
        raise CodecError(f"refine must be 0..{MAX_REFINE} steps")
    rgb, mode, notes = imageio.read_image(image)
    container.check_size(*rgb.shape[:2])
    c = codec.load(_model_dir(model, quality))
    data, info = c.encode(rgb, int(seed), quantizer, mode, reconstruct, tile=tile,
                          refine=int(refine or 0), progress=progress)
    info["warnings"] = notes
    info["model"] = c.name
    return data, info


def compress(image, model=None, seed=None, quantizer="uq", quality=None, tile=None, refine=0):
    """Compress an image (path, or HxWx3 / HxW uint8 array) to .uq bytes.

    ``model``: shipped model name or model directory (default: the middle of the
    default ladder); ``seed``: 64-bit dither seed (default: fresh from os.urandom);
    ``quantizer``: "uq" (universal quantization) or "round"; ``tile``: tile size in
    pixels (default 1024; a multiple of 64, at most 2048), tiles are coded independently;
    ``refine``: steps of encoder-side latent optimization (slower encoding, smaller
    files at the same quality; the decoder is unchanged).
    """
    data, info = compress_with_info(image, model, seed, quantizer, quality, tile=tile,
                                    refine=refine)
    for n in info["warnings"]:
        print(f"uqcodec: warning: {n}", file=sys.stderr)
    return data


def read_header(data):
    return container.parse_header(data)[0]


def decompress(data, model=None, rgb=False):
    """.uq bytes -> uint8 array (HxWx3; HxW for grayscale originals unless ``rgb``)."""
    from . import codec, zoo
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError("decompress expects bytes")
    header, streams = container.unpack(bytes(data))
    path = _model_dir(model) if model is not None else zoo.find_by_name(header.model)
    c = codec.load(path)
    out = c.decode(header, streams)
    return out if rgb else imageio.from_rgb(out, header.mode)
