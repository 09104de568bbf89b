"""uqcodec: a learned image codec with universally quantized neural compression.

    import uqcodec
    data = uqcodec.compress("photo.png")      # bytes of a .uq file
    pixels = uqcodec.decompress(data)         # uint8 array

Importing it registers the Pillow plugin for .uq files (``pillow_plugin.py``):
``PIL.Image.open("photo.uq")``, ``im.save("photo.uq", quality=7)``.

Compression, decompression and ``--refine`` run without TensorFlow (NumPy and
onnxruntime); training, evaluation and files of format versions 1 and 2 import it when used.
"""
from .errors import CodecError
from .api import compress, decompress, compress_with_info, read_header
from .pillow_plugin import register as register_pillow

__version__ = "0.20.0"
__all__ = ["CodecError", "compress", "decompress", "compress_with_info", "read_header", "evaluate",
           "register_pillow"]

register_pillow()  # Image.open("photo.uq") and im.save("photo.uq", quality=7) just work


def __getattr__(name):
    """``uqcodec.evaluate`` is imported when first used: a compress or decompress process
    does not pay for it (about 15 ms of a 0.8 s command)."""
    if name == "evaluate":
        import importlib
        return importlib.import_module(".evaluate", __name__)
    raise AttributeError(f"module 'uqcodec' has no attribute {name!r}")
