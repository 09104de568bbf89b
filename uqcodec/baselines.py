"""Classic codecs for comparison: Pillow JPEG 4:2:0, WebP, AVIF, and JPEG XL (cjxl/djxl).

Each codec is a ``Classic`` with a name, a quality sweep and ``encode(rgb, q) -> bytes``
/ ``decode(bytes) -> rgb``. ``available(key)`` says why a codec cannot run here (or None).
"""
import io
import os
import shutil
import subprocess
import tempfile

import numpy as np
from PIL import Image, features

KEYS = ("jpeg", "webp", "avif", "jxl")

# Quality sweeps: 6-8 points spanning about 0.15-2.5 bpp on Kodak (WebP to about 3.5 bpp:
# the top rate of a model is compared per image with WebP at the same rate).
QUALITIES = {
    "jpeg": (10, 20, 30, 40, 50, 60, 75, 90),
    "webp": (5, 15, 30, 50, 70, 80, 90, 95),
    "avif": (20, 35, 50, 60, 70, 80, 90),
    "jxl": (20, 35, 50, 65, 80, 90),
}


def _pil_decode(data):
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


class Classic:
    def __init__(self, key, name, qualities):
        self.key, self.name, self.qualities = key, name, tuple(qualities)

    def decode(self, data):
        return _pil_decode(data)


class _Pillow(Classic):
    def __init__(self, key, name, fmt, **options):
        super().__init__(key, name, QUALITIES[key])
        self.fmt, self.options = fmt, options

    def encode(self, rgb, quality):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, self.fmt, quality=int(quality), **self.options)
        return buf.getvalue()


class _JXL(Classic):
    """libjxl's command-line tools; the times include starting the process and PPM I/O."""

    def __init__(self):
        super().__init__("jxl", "JPEG XL (cjxl e7)", QUALITIES["jxl"])
        self.tmp = tempfile.mkdtemp(prefix="uqcodec-jxl-")

    def _run(self, *args):
        r = subprocess.run(args, capture_output=True)
        if r.returncode:
            raise RuntimeError(f"{args[0]} failed: {r.stderr.decode(errors='replace').strip()}")

    def encode(self, rgb, quality):
        src, out = os.path.join(self.tmp, "in.ppm"), os.path.join(self.tmp, "out.jxl")
        Image.fromarray(rgb).save(src)
        self._run("cjxl", src, out, "-q", str(quality), "--quiet")
        with open(out, "rb") as f:
            return f.read()

    def decode(self, data):
        src, out = os.path.join(self.tmp, "in.jxl"), os.path.join(self.tmp, "out.ppm")
        with open(src, "wb") as f:
            f.write(data)
        self._run("djxl", src, out, "--quiet")
        with Image.open(out) as img:
            return np.asarray(img.convert("RGB"))

    def close(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


def available(key):
    """None if codec ``key`` can run here, else the reason it cannot."""
    if key == "jpeg":
        return None if features.check("jpg") else "Pillow has no JPEG support"
    if key == "webp":
        return None if features.check("webp") else "Pillow has no WebP support"
    if key == "avif":
        return None if features.check("avif") else "Pillow has no AVIF support"
    if key == "jxl":
        if shutil.which("cjxl") and shutil.which("djxl"):
            return None
        return "cjxl/djxl not on PATH (Debian: apt-get install libjxl-tools)"
    return f"unknown codec {key!r} (choose from {', '.join(KEYS)})"


def make(key):
    """The codec object for ``key`` (check ``available`` first)."""
    if key == "jpeg":
        return _Pillow("jpeg", "JPEG 4:2:0 (Pillow)", "JPEG", subsampling=2)
    if key == "webp":
        return _Pillow("webp", "WebP m6 (Pillow)", "WEBP", method=6)
    if key == "avif":
        return _Pillow("avif", "AVIF s6 (Pillow)", "AVIF", speed=6, subsampling="4:2:0")
    if key == "jxl":
        return _JXL()
    raise ValueError(key)
