"""One BLAS thread for the integer networks' small products (and all of them when uqcodec
runs on one thread).

NumPy's OpenBLAS splits every product over all cores. For the small products of the
integer networks (a context network of a Kodak image at quality 8: 768 x 64 by 64 x 64;
the hyper-synthesis' transposed layers) handing the work to its threads costs far more
than the product, and its waiting threads spin on the cores the coding tables need:
measured here, 3.4 ms on two threads against 0.19 ms on one, and the entropy decoding
of kodim01 at quality 8 about 0.35 -> 0.29 s. ``matmul`` takes one thread for a product
below SMALL multiply-adds (a block: ``one_thread()``), for OpenBLAS as NumPy's wheels
bundle it (found among the libraries the process has loaded); with another BLAS it
changes nothing. The products are exact integers either way (``intnet.py``): the same
values.
"""
import contextlib
import ctypes
import functools
import glob
import os
import threading

from .engine import threads

SMALL = 1 << 29  # multiply-adds: the hyper-synthesis' last layer of a Kodak image at M=320
#                 (1.3e9) is faster on two threads, its transposed layers (1.3e8) on one
_lock = threading.Lock()
_state = {"users": 0, "saved": None}


def _candidates():
    """Paths of the OpenBLAS libraries this process has loaded (Linux), else those in
    NumPy's wheel directories."""
    paths = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.rstrip("\n").split(" ")[-1]
                if "openblas" in os.path.basename(path).lower():
                    paths.append(path)
    except OSError:
        pass
    if not paths:
        import numpy
        root = os.path.dirname(numpy.__file__)
        for d in (root + ".libs", os.path.join(root, ".libs"), os.path.join(root, ".dylibs")):
            paths += glob.glob(os.path.join(d, "*openblas*"))
    return list(dict.fromkeys(paths))


@functools.lru_cache(maxsize=None)
def _openblas():
    """(get, set) of the loaded OpenBLAS's thread count, or None (found once)."""
    mode = getattr(os, "RTLD_NOLOAD", 0) | getattr(os, "RTLD_LAZY", 0)
    try:
        paths = _candidates()
    except Exception:  # noqa: BLE001 (no OpenBLAS control: nothing changes)
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path, mode=mode)  # the loaded copy, not another one
        except OSError:
            continue
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                if get is not None and put is not None:
                    get.restype, put.argtypes = ctypes.c_int, [ctypes.c_int]
                    return get, put
    return None


@contextlib.contextmanager
def one_thread():
    """A block whose NumPy products run on one BLAS thread (several threads may be in such
    blocks at once: the count is restored when the last leaves)."""
    fns = _openblas()
    if fns is None:
        yield
        return
    get, put = fns
    with _lock:
        if _state["users"] == 0:
            _state["saved"] = get()
            put(1)
        _state["users"] += 1
    try:
        yield
    finally:
        with _lock:
            _state["users"] -= 1
            if _state["users"] == 0:
                put(_state["saved"])


def on_one_thread(a, b):
    """Whether ``matmul`` runs ``a @ b`` on one BLAS thread: when it is small, or when
    uqcodec runs on one thread (``UQCODEC_THREADS=1``, as the batch workers do: two
    processes on two cores, each of whose large products otherwise took both cores' BLAS
    threads; a batch decompress of the 24 Kodak files at quality 8, medians of three:
    6.06 -> 5.88 s)."""
    return a.shape[0] * a.shape[1] * b.shape[1] < SMALL or threads() == 1


def matmul(a, b):
    """``a @ b`` (2-D), on one BLAS thread when ``on_one_thread``."""
    if not on_one_thread(a, b):
        return a @ b
    with one_thread():
        return a @ b
