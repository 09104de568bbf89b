"""Image I/O: anything Pillow reads -> HxWx3 uint8 RGB, and PNG out (written here, on all
threads; atomically)."""
import os
import tempfile
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from .container import MAX_PIXELS, MAX_SIDE, check_size
from .errors import CodecError, short

# Pillow's own bomb check, at the container's limit: Image.open refuses an image of more
# than twice this many pixels (DecompressionBombError) and warns above it; read_image
# checks the size against the container's limits before it decodes any pixel.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def to_rgb(img):
    """PIL image -> (HxWx3 uint8 array, original mode, list of warning strings)."""
    mode = img.mode
    notes = []
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(img).astype(np.float64)
        if mode == "I" and a.max(initial=0) <= 255:
            a8 = a
        else:
            a8 = a / 257.0
        a = np.clip(np.rint(a8), 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2), "I;16" if mode != "I" else "I", notes
    if mode == "F":
        a = np.asarray(img, dtype=np.float64)
        a = np.clip(np.rint(a * 255.0 if a.max(initial=0) <= 1.0 else a), 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2), mode, notes
    if mode in ("L", "1"):
        a = np.asarray(img.convert("L"))
        return np.repeat(a[..., None], 3, axis=2), "L" if mode == "L" else "1", notes
    if mode == "LA" or mode == "La":
        notes.append("alpha channel dropped")
        a = np.asarray(img.convert("L"))
        return np.repeat(a[..., None], 3, axis=2), "LA", notes
    if mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in img.info):
        notes.append("alpha channel dropped")
        return np.asarray(img.convert("RGBA").convert("RGB")), "RGBA", notes
    return np.asarray(img.convert("RGB")), mode, notes


def read_image(source):
    """Path, bytes of an image file or array -> (HxWx3 uint8, original mode, warnings).
    Raises CodecError. The image's size is checked (``container.check_size``) before any
    pixel is decoded or copied; of an animated (or multi-page) image, the first frame is
    coded, with a warning."""
    if isinstance(source, np.ndarray):
        a = source
        if a.ndim in (2, 3) and a.shape[0] >= 1 and a.shape[1] >= 1:
            check_size(*a.shape[:2])
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
            mode = "L"
        elif a.ndim == 3 and a.shape[2] == 3:
            mode = "RGB"
        else:
            raise CodecError(f"image array must be HxWx3 (or HxW), got shape {a.shape}")
        if a.dtype != np.uint8:
            raise CodecError(f"image array must be uint8, got {a.dtype}")
        if a.shape[0] < 1 or a.shape[1] < 1:
            raise CodecError("image is empty")
        return np.ascontiguousarray(a), mode, []
    if isinstance(source, (bytes, bytearray, memoryview)):
        import io
        name, fp = "image data", io.BytesIO(bytes(source))
    else:
        path = os.fspath(source)
        name = short(path)
        try:
            if not os.path.exists(path):
                raise CodecError(f"{name}: no such file")
        except ValueError:  # a NUL in the path
            raise CodecError(f"{name}: no such file") from None
        if os.path.isdir(path):
            raise CodecError(f"{name}: is a directory")
        fp = path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (DecompressionBombWarning: checked below)
            with Image.open(fp) as img:
                w, h = img.size  # from the header: nothing decoded yet
                try:
                    check_size(h, w)
                except CodecError as e:
                    raise CodecError(f"{name}: {e}") from None
                notes = []
                if getattr(img, "is_animated", False):
                    notes.append("animated or multi-page image: only the first frame is "
                                 "coded")
                    img.seek(0)
                img.load()
                rgb, mode, more = to_rgb(img)
                return rgb, mode, notes + more
    except Image.DecompressionBombError:
        raise CodecError(f"{name}: unsupported image size (over {2 * MAX_PIXELS / 1e6:.0f} "
                         f"megapixels; limits: {MAX_SIDE} pixels per side, "
                         f"{MAX_PIXELS / 1e6:.0f} megapixels)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
        if isinstance(e, PermissionError):
            raise CodecError(f"{name}: permission denied") from None
        raise CodecError(f"{name}: not a readable image") from None


# original modes that decode to grayscale (HxW, Pillow mode "L"); every other mode to RGB
GRAY_MODES = ("L", "1", "LA", "I;16", "I", "F")


def output_mode(mode):
    """The Pillow mode a file of this original mode decodes to: "L" or "RGB"."""
    return "L" if mode in GRAY_MODES else "RGB"


def from_rgb(rgb, mode):
    """Decoded RGB array -> array in the output mode (grayscale comes back grayscale)."""
    if output_mode(mode) == "L":
        return np.asarray(Image.fromarray(rgb, "RGB").convert("L"))
    return rgb


def atomic_write(path, data):
    """Write bytes to path via a temporary file in the same folder + rename."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".uqcodec-", suffix=".part", dir=folder)
    except OSError as e:  # name the output, not the temporary file
        raise OSError(e.errno, e.strerror, path) from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a new file honours the umask
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and e.filename in (None, tmp):  # disk full, ...: the output
            raise OSError(e.errno, e.strerror or str(e), path) from None
        raise


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


PNG_LEVEL = 1  # zlib level (Pillow's files of decoded Kodak images: 0.9 % larger than at level
#               3 and 1 % smaller than at its default 6, in 30 ms instead of 41)
PNG_BLOCK_BYTES = 1 << 20  # filtered rows a thread builds and compresses at a time (memory)
PNG_BAND_BYTES = 1 << 18  # the least a thread gets: smaller images are one band


def png_bytes(array):
    """A PNG of an 8-bit RGB (HxWx3) or grayscale (HxW) array, written here: every row
    with PNG's Sub filter, deflated at PNG_LEVEL in ``threads()`` bands of rows at once
    (each a raw deflate stream; all but the last end with a sync flush, so that they join
    into one zlib stream, whose Adler-32 is combined from the bands'). Pillow at the same
    level tries five filters per row on one thread: for a decoded Kodak image 25 -> 9 ms
    here on a quiet machine (two threads), files 2 % larger. Other arrays: Pillow."""
    a = np.asarray(array)
    if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)) \
            or 0 in a.shape:
        return _pillow_png(a)
    import struct
    import zlib
    from .engine import threads
    h, w = a.shape[:2]
    c = 1 if a.ndim == 2 else 3
    rows = np.ascontiguousarray(a).reshape(h, w * c)
    line = 1 + w * c  # a filtered row: its filter byte, then the row
    n = max(1, min(threads(), h, h * line // PNG_BAND_BYTES))
    cuts = [h * i // n for i in range(n + 1)]
    step = max(1, PNG_BLOCK_BYTES // line)

    def band(i):
        """(deflated rows cuts[i] .. cuts[i + 1] - 1, their Adler-32, their length)"""
        z = zlib.compressobj(PNG_LEVEL, zlib.DEFLATED, -15)
        out, adler = [], 1
        for r0 in range(cuts[i], cuts[i + 1], step):
            r1 = min(cuts[i + 1], r0 + step)
            f = np.empty((r1 - r0, line), np.uint8)
            f[:, 0] = 1  # Sub: each byte minus the byte one pixel to its left (mod 256)
            f[:, 1:1 + c] = rows[r0:r1, :c]
            np.subtract(rows[r0:r1, c:], rows[r0:r1, :-c], out=f[:, 1 + c:])
            adler = zlib.adler32(f, adler)
            out.append(z.compress(f))
        out.append(z.flush(zlib.Z_FINISH if i == n - 1 else zlib.Z_SYNC_FLUSH))
        return b"".join(out), adler, (cuts[i + 1] - cuts[i]) * line

    if n == 1:
        bands = [band(0)]
    else:
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(n) as pool:
            bands = list(pool.map(band, range(n)))
    adler = bands[0][1]
    for _, a2, length in bands[1:]:
        adler = adler32_combine(adler, a2, length)
    stream = b"\x78\x01" + b"".join(d for d, _, _ in bands) + struct.pack(">I", adler)

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    header = struct.pack(">IIBBBBB", w, h, 8, 2 if c == 3 else 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", stream)
            + chunk(b"IEND", b""))


def adler32_combine(a1, a2, length2):
    """The Adler-32 of two byte strings joined, from theirs and the second's length: the
    second's running sums each start from the first's sum instead of 1."""
    base = 65521
    s1 = ((a1 & 0xFFFF) + (a2 & 0xFFFF) - 1) % base
    s2 = ((a1 >> 16) + (a2 >> 16) + length2 * ((a1 & 0xFFFF) - 1)) % base
    return (s2 << 16) | s1


def _pillow_png(array):
    import io
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=PNG_LEVEL)
    return buf.getvalue()
