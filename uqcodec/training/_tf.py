"""Quiet, lazy import of TensorFlow and tensorflow-compression.

TensorFlow prints cuDNN/cuFFT registration noise on the C++ stderr even with
TF_CPP_MIN_LOG_LEVEL=3. We silence file descriptor 2 while importing it, so
the CLI's output stays clean, and only import it in code paths that need it.
"""
import os
import sys

_modules = None


def load(threads=None):
    """Return (tf, tfc), importing them quietly on first use."""
    global _modules
    if _modules is None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        # oneDNN convolutions, also on CPUs where TensorFlow would not pick them by
        # itself (no AVX-512): the arithmetic the version-1/2 files were written with
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            import tensorflow as tf
            import tensorflow_compression as tfc
            tf.get_logger().setLevel("ERROR")
        except ImportError as e:
            from ..errors import CodecError
            raise CodecError(f"this needs TensorFlow ({e.name} is not installed): "
                             "pip install 'uqcodec[train]'") from None
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)
        n = threads or os.environ.get("UQCODEC_THREADS")
        if n:
            tf.config.threading.set_intra_op_parallelism_threads(int(n))
            tf.config.threading.set_inter_op_parallelism_threads(int(n))
        _modules = (tf, tfc)
    return _modules
