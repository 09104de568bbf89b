"""Python API: ``compress`` and ``decompress``. Models are loaded once and cached."""
import os
import sys

from . import container, imageio
from .errors import CodecError

MAX_SEED = (1 << 64) - 1
MAX_REFINE = 10000


def _is_int(v):
    import numbers
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v):
    import math
    import numbers
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _check_model(model):
    ok = model is None or isinstance(model, (str, os.PathLike)) or (
        isinstance(model, (list, tuple)) and model
        and all(isinstance(m, (str, os.PathLike)) for m in model))
    if not ok:
        raise CodecError("model must be a model name or directory, or a list of them, not "
                         f"{type(model).__name__}")


def _check_threads():
    n = os.environ.get("UQCODEC_THREADS")
    if n and not (n.strip().isdigit() and int(n) > 0):
        raise CodecError(f"UQCODEC_THREADS must be a positive integer, not {n[:20]!r}")


def _check_compress(image, model, seed, quantizer, quality, tile, refine, progress, warn,
                    target_bpp, target_psnr):
    """Every argument of ``compress_with_info`` checked before any work: a CodecError with
    a short message instead of a TypeError or ValueError from deep inside."""
    import numpy as np
    if not isinstance(image, (str, os.PathLike, bytes, bytearray, memoryview, np.ndarray)):
        raise CodecError("image must be a path, the bytes of an image file or an HxWx3 "
                         f"uint8 array, not {type(image).__name__}")
    _check_model(model)
    if seed is not None and not (_is_int(seed) and 0 <= seed <= MAX_SEED):
        raise CodecError("seed must be an integer in [0, 2^64)")
    if not isinstance(quantizer, str) or quantizer not in container.QUANTIZERS:
        raise CodecError(f"unknown quantizer {str(quantizer)[:20]!r} (choose uq or round)")
    for name, v in (("quality", quality), ("target_bpp", target_bpp),
                    ("target_psnr", target_psnr)):
        if v is not None and not _is_number(v):
            raise CodecError(f"{name} must be a number")
    if tile is not None and not _is_int(tile):
        raise CodecError(f"tile must be an integer (a multiple of {container.TILE_MULTIPLE} "
                         f"from {container.MIN_TILE} to {container.MAX_TILE})")
    if refine is not None and not (_is_int(refine) and 0 <= refine <= MAX_REFINE):
        raise CodecError(f"refine must be 0..{MAX_REFINE} steps")
    for name, f in (("progress", progress), ("warn", warn)):
        if f is not None and not callable(f):
            raise CodecError(f"{name} must be a function")
    _check_threads()


def _model_dir(model=None, quality=None):
    from . import zoo
    return zoo.resolve(model, quality)


def _as_set(model):
    """"LOW,HIGH" (names of variable-rate models that form one rate set) -> a list."""
    if isinstance(model, str) and "," in model:
        return [m.strip() for m in model.split(",") if m.strip()]
    return model


def _choose(model, quality, refine=0):
    """A ``rateset.RateSet``: without a model, the default codec's variable-rate models
    (``zoo.default_variable``; with ``refine``, models that can refine) as one rate set,
    else (none ship) the model of the default family's fixed-rate ladder that ``quality``
    1..N picks; ``model``: a model (a variable-rate model is a rate set of its own, a
    fixed-rate one a set of one rate), or a list of variable-rate models or their names
    separated by commas (one rate set). Returns (rate set, quality for its encode)."""
    from . import codec, zoo
    from .rateset import RateSet
    model = _as_set(model)
    if model is None:
        cards = zoo.default_variable(refine=bool(refine))
        if cards:
            return RateSet([codec.load(c["path"]) for c in cards]), quality
        if quality is not None and float(quality) != int(quality):
            raise CodecError("quality picks one of the fixed-rate models here: give an "
                             "integer 1..N (uqcodec models)")
        path = zoo.resolve(None, None if quality is None else int(quality))
        return RateSet([codec.load(path)]), None
    if isinstance(model, (list, tuple)):
        return RateSet([codec.load(zoo.resolve(m)) for m in model]), quality
    return RateSet([codec.load(zoo.resolve(model))]), quality


def compress_with_info(image, model=None, seed=None, quantizer="uq", quality=None,
                       reconstruct=False, warn=None, tile=None, refine=0, progress=None,
                       target_bpp=None, target_psnr=None):
    """Like ``compress`` but returns (bytes, info); info holds the model's rate in bits,
    warnings and, with ``reconstruct``, the encoder-side reconstruction.
    ``progress(n)``: called after each refinement step. ``target_bpp``/``target_psnr``:
    a variable-rate model searches the rate for this image (``RateSet.encode_target``)."""
    _check_compress(image, model, seed, quantizer, quality, tile, refine, progress, warn,
                    target_bpp, target_psnr)
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
    targets = [t for t in (target_bpp, target_psnr) if t is not None]
    if len(targets) + (quality is not None) > 1:
        raise CodecError("give one of --quality, --target-bpp and --target-psnr")
    chosen, quality = _choose(model, quality, refine)
    if targets:
        if refine:
            raise CodecError("--target-bpp/--target-psnr do not combine with --refine yet")
        data, info = chosen.encode_target(rgb, int(seed), quantizer, mode, tile,
                                          bpp=target_bpp, psnr=target_psnr)
        t = info["target"]
        if not t["reached"]:
            notes = list(notes) + [
                f"target {t['wanted']:g} {t['kind']} is out of reach for {chosen.name}: "
                f"nearest {t['got']:.4g} {t['kind']} ({info['model']}, rate {info['rate']})"]
        if reconstruct:
            c = next(c for c in chosen.codecs if c.name == info["model"])
            info["reconstruction"] = c.decode(*container.unpack(data))
    else:
        data, info = chosen.encode(rgb, int(seed), quantizer, mode, reconstruct, tile, quality,
                                   refine=int(refine or 0), progress=progress)
    info["warnings"] = notes
    return data, info


def compress(image, model=None, seed=None, quantizer="uq", quality=None, tile=None, refine=0,
             target_bpp=None, target_psnr=None):
    """Compress an image (path, or HxWx3 / HxW uint8 array) to .uq bytes.

    ``model``: shipped model name or model directory, or variable-rate models that cover
    one range together ("LOW,HIGH" or a list) (default: the default codec,
    ``zoo.default_variable``, or the middle of the default family's fixed-rate ladder
    when no variable-rate models ship); ``quality``:
    a variable-rate model's quality, 0 (smallest files) to 10 (best), default 5, any
    value between (fixed-rate ladder: 1..N picks a model); ``target_bpp`` /
    ``target_psnr``: instead of a quality, search this image's rate for that size or
    PSNR (with the shipped variable-rate models when no model is given); ``seed``:
    64-bit dither seed (default: fresh from os.urandom);
    ``quantizer``: "uq" (universal quantization) or "round"; ``tile``: tile size in
    pixels (default 1024; a multiple of 64, at most 2048), tiles are coded independently;
    ``refine``: steps of encoder-side latent optimization (slower encoding, smaller
    files at the same quality; the decoder is unchanged).
    """
    data, info = compress_with_info(image, model, seed, quantizer, quality, tile=tile,
                                    refine=refine, target_bpp=target_bpp,
                                    target_psnr=target_psnr)
    for n in info["warnings"]:
        print(f"uqcodec: warning: {n}", file=sys.stderr)
    return data


def read_header(data):
    """.uq bytes (the header is enough) -> ``container.Header``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"read_header expects bytes, not {type(data).__name__}")
    return container.parse_header(data)[0]


def decompress(data, model=None, rgb=False):
    """.uq bytes -> uint8 array (HxWx3; HxW for grayscale originals unless ``rgb``).
    ``data`` may also be an open ``container.File`` (``container.open_file``: its
    streams are read from the file tile by tile)."""
    from . import codec, zoo
    _check_model(model)
    _check_threads()
    if isinstance(data, container.File):
        header, streams = data.header, data.streams
    elif isinstance(data, (bytes, bytearray, memoryview)):
        header, streams = container.unpack(bytes(data))
    else:
        raise CodecError(f"decompress expects bytes, not {type(data).__name__}")
    model = _as_set(model)
    if isinstance(model, (list, tuple)):  # a rate set: the model the file names
        paths = [zoo.resolve(m) for m in model]
        names = {zoo.read_card(p)["name"]: p for p in paths}
        if header.model not in names:
            raise CodecError(f"file needs model {header.model!r}, not one of {sorted(names)}")
        path = names[header.model]
    else:
        path = _model_dir(model) if model is not None else zoo.find_by_name(header.model)
    c = codec.load(path)
    out = c.decode(header, streams)
    return out if rgb else imageio.from_rgb(out, header.mode)
