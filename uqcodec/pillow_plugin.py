"""Pillow plugin for .uq files, registered when ``uqcodec`` is imported (as
pillow-avif-plugin and pillow-jxl-plugin register theirs on import)::

    import uqcodec
    from PIL import Image
    im = Image.open("photo.uq")       # reads the header only: size, mode
    im.load()                         # decodes (also implied by any pixel access)
    im.save("copy.uq", quality=7)     # encodes; also target_bpp=, model=, seed=, ...

``Image.open`` reads the header alone (``container.read_head``): ``size``, ``mode``
("L" for grayscale originals, else "RGB") and ``info`` (model, quantizer, seed, rate)
without decoding; the pixels are decoded on ``load()``. A file that cannot be
decoded (truncated, corrupted, a model that is not installed) fails there with an
``OSError`` that says why. ``save`` takes the options of ``uqcodec.compress``:
``quality``, ``target_bpp``, ``target_psnr``, ``model``, ``seed``, ``quantizer`` and
``tile``; images in other modes are converted as ``uqcodec compress`` converts them
(alpha dropped, with a warning).

``register()`` (``uqcodec.register_pillow``) registers again, for example after
something replaced Pillow's registries.
"""
import warnings

from PIL import Image, ImageFile

from . import container, imageio
from .errors import CodecError

FORMAT = "UQ"
EXTENSION = ".uq"
MIME = "image/x-uq"
SAVE_OPTIONS = ("quality", "target_bpp", "target_psnr", "model", "seed", "quantizer", "tile")


def _accept(prefix):
    return prefix[:4] == container.MAGIC


def _tile(size, length):
    """The one tile of the image: the whole file, decoded by ``UqDecoder``."""
    args = ("uq", (0, 0) + size, 0, (length,))
    return ImageFile._Tile(*args) if hasattr(ImageFile, "_Tile") else args


class UqImageFile(ImageFile.ImageFile):
    format = FORMAT
    format_description = "uqcodec learned image codec"

    def _open(self):
        try:
            head, header = container.read_head(self.fp)
        except CodecError as e:  # Image.open then tries the other formats
            raise SyntaxError(f"not a readable .uq file: {e}") from None
        self.uq_header = header
        self._size = (header.width, header.height)
        mode = imageio.output_mode(header.mode)
        if isinstance(getattr(type(self), "mode", None), property):  # Pillow >= 10.1
            self._mode = mode
        else:
            self.mode = mode
        self.info.update(model=header.model, quantizer=header.quantizer, seed=header.seed,
                         rate=header.rate)
        self.tile = [_tile(self.size, len(head) + sum(header.stream_lengths))]


class UqDecoder(ImageFile.PyDecoder):
    """Reads the whole file from the image's file object and decodes it with
    ``uqcodec.decompress``."""
    _pulls_fd = True

    def decode(self, buffer):
        from . import api
        (length,) = self.args
        data = self.fd.read(length + 1)  # one byte more: trailing data is refused
        try:
            pixels = api.decompress(data)
        except CodecError as e:
            raise OSError(f"cannot decode .uq file: {e}") from e
        self.set_as_raw(pixels.tobytes())
        return -1, 0


def _save(im, fp, filename):
    from . import api
    opts = {k: im.encoderinfo[k] for k in SAVE_OPTIONS if im.encoderinfo.get(k) is not None}
    im.load()
    rgb, mode, notes = imageio.to_rgb(im)
    # grayscale stays grayscale
    image = rgb[..., 0] if imageio.output_mode(mode) == "L" else rgb
    data, info = api.compress_with_info(image, **opts)
    for n in notes + info["warnings"]:
        warnings.warn(f"uqcodec: {n}", stacklevel=3)
    fp.write(data)


def register():
    """Register the format with Pillow: open, save, the extension .uq, the MIME type
    and the decoder. Idempotent."""
    Image.register_open(FORMAT, UqImageFile, _accept)
    Image.register_save(FORMAT, _save)
    Image.register_extension(FORMAT, EXTENSION)
    Image.register_mime(FORMAT, MIME)
    Image.register_decoder("uq", UqDecoder)
