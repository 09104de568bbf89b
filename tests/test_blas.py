"""blas.one_thread: the integer networks' small products on one BLAS thread."""
import threading

import pytest

from uqcodec import blas

fns = blas._openblas()
pytestmark = pytest.mark.skipif(fns is None, reason="NumPy's BLAS here is not OpenBLAS")


def test_one_thread_inside_and_the_count_restored_after_nested_and_concurrent_blocks():
    get, put = fns
    before = get()
    put(2)
    try:
        inside, release = [], threading.Event()

        def worker():
            with blas.one_thread():
                inside.append(get())
                release.wait(10)

        t = threading.Thread(target=worker)
        with blas.one_thread():
            with blas.one_thread():
                assert get() == 1
            t.start()
            while not inside:
                pass
            assert get() == 1  # the worker's block is still open
        assert get() == 1  # ... and this one closed: one thread until the worker leaves
        release.set()
        t.join()
        assert inside == [1] and get() == 2
    finally:
        put(before)


def test_large_products_take_one_thread_when_uqcodec_runs_on_one(monkeypatch):
    """A product of 2^29 multiply-adds or more (the hyper-synthesis' last layer at M=320)
    keeps all BLAS threads, unless UQCODEC_THREADS=1 (the batch workers)."""
    import numpy as np
    big, small = (np.empty((1536, 1296)), np.empty((1296, 640))), (np.empty((768, 64)),
                                                                     np.empty((64, 64)))
    monkeypatch.setenv("UQCODEC_THREADS", "2")
    assert blas.on_one_thread(*small) and not blas.on_one_thread(*big)
    monkeypatch.setenv("UQCODEC_THREADS", "1")
    assert blas.on_one_thread(*small) and blas.on_one_thread(*big)
