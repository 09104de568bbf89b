"""Quiet, lazy import of TensorFlow and tensorflow-compression.

TensorFlow prints cuDNN/cuFFT registration noise on the C++ stderr even with
TF_CPP_MIN_LOG_LEVEL=3. We silence file descriptor 2 while importing it, so
the CLI's output stays clean, and only import it in code paths that need it.
"""
import os
import sys

_modules = None
TF_MODULES = ("tensorflow", "tensorflow_compression")
TRAIN_MODULES = TF_MODULES + ("tensorflow_probability", "scipy")  # the train extra
INSTALL = "pip install 'uqcodec[train]'"


def missing_message(what, module):
    """One line: ``what`` ("training", "uqcodec eval", ...) needs ``module`` of the train
    extra, which is not installed. The extra's TensorFlow 2.14 exists for Python 3.11
    only (pyproject.toml's markers): on a later Python the message says that instead of
    an install command that would install nothing."""
    if sys.version_info >= (3, 12):
        here = f"this is Python {sys.version_info[0]}.{sys.version_info[1]}"
        if module.startswith("tensorflow"):
            return (f"{what} needs the train extra (TensorFlow 2.14), which installs on "
                    f"Python 3.11 only ({here}): {INSTALL} under Python 3.11")
        return (f"{what} needs {module} (the train extra installs it on Python 3.11; "
                f"{here}: pip install {module})")
    return f"{what} needs the train extra ({module} is not installed): {INSTALL}"


def require(what, modules=TF_MODULES):
    """Raise ``CodecError`` with ``missing_message`` unless every module in ``modules`` can
    be imported (checked without importing them: TensorFlow takes seconds to load)."""
    import importlib.util
    for m in modules:
        try:
            found = importlib.util.find_spec(m) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            from ..errors import CodecError
            raise CodecError(missing_message(what, m))


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
            raise CodecError(missing_message("this", e.name or "tensorflow")) from None
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
