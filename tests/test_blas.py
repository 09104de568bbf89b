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

