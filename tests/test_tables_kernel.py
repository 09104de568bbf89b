"""The compiled table kernel (uqcodec/_tables.c) gives NumPy's coding-table rows bit for
bit: the rows of version-3 and later files must not depend on whether a machine built it.
(tests/test_portable.py decodes files with the NumPy rows as well.)"""
import numpy as np
import pytest

from uqcodec import entropy, exactmath

kernel = exactmath._load_kernel()
pytestmark = pytest.mark.skipif(kernel is None, reason="uqcodec._tables not built here "
                                "(no C compiler at install): NumPy computes the rows")


def numpy_rows(off, scale, W):
    j = np.arange(-W, W + 2, dtype=np.float64)
    rows = np.empty((len(off), 2 * W + 1))
    entropy._fill(rows, exactmath.ndtr((off[:, None] + j[None, :]) / scale))
    return rows


def kernel_rows(off, scale, W, simd=True):
    rows = np.empty((len(off), 2 * W + 1))
    kernel.rows(rows, np.ascontiguousarray(off), float(scale), W,
                exactmath.KERNEL_CONSTANTS, simd)
    return rows


SCALES = np.concatenate([entropy.SCALES, entropy.rate_scales(-40), entropy.rate_scales(50)])


@pytest.mark.parametrize("simd", [True, False])
def test_rows_are_numpys_bit_for_bit(simd):
    rng = np.random.default_rng(7)
    for scale in SCALES[::2]:
        W = int(np.ceil(6.0 * scale + 2.0))
        n = max(4, 20000 // (2 * W + 2))
        # offsets as files make them (within about 1.5 of 0), their edge cases, and far
        # ones whose rows lie wholly in a tail
        off = np.concatenate([rng.uniform(-1.5, 1.5, n), [0.0, -0.0, 0.5, -0.5, 1e-300,
                                                          -1.0, 40.0, -900.0, 1e6]])
        got, want = kernel_rows(off, scale, W, simd), numpy_rows(off, scale, W)
        assert got.view(np.int64).tolist() == want.view(np.int64).tolist(), scale
    # the kernel takes elements in blocks of 8: counts below, at and just past one block
    off = rng.uniform(-1.5, 1.5, 17)
    for n in (1, 5, 8, 9, 17):
        for W in (1, 3, 4):
            got, want = kernel_rows(off[:n], 0.7, W, simd), numpy_rows(off[:n], 0.7, W)
            assert got.view(np.int64).tolist() == want.view(np.int64).tolist(), (n, W)


def test_rows_of_a_coder_match_with_and_without_the_kernel():
    """The coder's own path (groups, units, threads) with and without the kernel."""
    rng = np.random.default_rng(3)
    n = 5000
    coder = entropy.GaussianCoder(alpha=6.0)
    mean = rng.normal(0, 3, n)
    idx = rng.integers(0, len(entropy.SCALES) - 10, n)
    c, u = np.rint(mean), rng.uniform(-0.5, 0.5, n)
    off = coder._offsets(mean, c, u)
    groups = list(coder._groups(idx))
    for a, b in zip(coder._exact_tables(groups, off, kernel),
                    coder._exact_tables(groups, off, None)):
        assert a.view(np.int64).tolist() == b.view(np.int64).tolist()


def test_bad_arguments_raise_instead_of_writing_out_of_bounds():
    off = np.zeros(4)
    with pytest.raises(ValueError):
        kernel.rows(np.empty((4, 5)), off, 1.0, 3, exactmath.KERNEL_CONSTANTS)  # 2W+1 = 7
    with pytest.raises(ValueError):
        kernel.rows(np.empty((4, 7)), off, 0.0, 3, exactmath.KERNEL_CONSTANTS)
    with pytest.raises(ValueError):
        kernel.rows(np.empty((4, 7)), off, 1.0, 3, exactmath.KERNEL_CONSTANTS[:5])
    with pytest.raises((ValueError, BufferError, TypeError)):
        kernel.rows(np.empty((7, 4)).T, off, 1.0, 3, exactmath.KERNEL_CONSTANTS)


def _numpy_path(monkeypatch, fn, *args, **kwargs):
    with monkeypatch.context() as m, np.errstate(all="ignore"):
        m.setattr(exactmath, "KERNEL", None)
        return fn(*args, **kwargs)


@pytest.mark.parametrize("terms", [9, 14])
def test_exp_is_numpys_bit_for_bit(monkeypatch, terms):
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.uniform(-750, 720, 50000), rng.normal(0, 1, 50000),
                        [0.0, -0.0, 1e-310, -745.0, -746.0, 709.0, 710.0, np.inf, -np.inf,
                         -708.5, -740.0]])
    got = exactmath.exp(x, terms=terms)
    want = _numpy_path(monkeypatch, exactmath.exp, x, terms=terms)
    assert got.view(np.int64).tolist() == want.view(np.int64).tolist()
    assert np.isnan(exactmath.exp(np.array([np.nan]))).all()


def test_log_tanh_atanh_ndtr_are_numpys_bit_for_bit(monkeypatch):
    rng = np.random.default_rng(6)
    x = np.concatenate([np.exp(rng.uniform(-700, 700, 50000)), rng.uniform(0, 2, 50000),
                        [1.0, 0.5, 2.0, 1e-310, 5e-324, 1.7e308, np.sqrt(0.5)]])
    for fn, arg in ((exactmath.log, x), (exactmath.tanh, rng.normal(0, 5, 50000)),
                    (exactmath.ndtr, np.concatenate([rng.normal(0, 10, 50000),
                                                     [0.0, -40.0, 40.0, 1e300, -1e300]])),
                    (exactmath.atanh, rng.uniform(-1, 1, 50000))):
        got, want = fn(arg), _numpy_path(monkeypatch, fn, arg)
        assert got.view(np.int64).tolist() == want.view(np.int64).tolist(), fn.__name__


@pytest.mark.parametrize("alpha", [6.0, 5.52, 1.0, 14.0])
def test_soft_round_inverse_is_numpys_bit_for_bit(monkeypatch, alpha):
    """The kernel's soft-rounding inverse (the decoder's inputs and every table offset of a
    soft-rounding model) is the NumPy sequence of operations bit for bit; a non-finite input
    goes to NumPy."""
    from uqcodec import quantization as Q
    rng = np.random.default_rng(7)
    y = np.concatenate([rng.uniform(-40, 40, 100000), rng.normal(0, 3, 50000) - 0.5,
                        np.arange(-5, 5, 0.25), [0.5, -0.5, 1e-300, -1e-300, 0.0, -0.0,
                                                 2.5 - 2 ** -51, 1e15 + 0.5, -1e15]])
    got = Q.soft_round_inverse(y, alpha)
    assert exactmath.soft_round_inverse(y, alpha) is not None  # (the kernel's)
    want = _numpy_path(monkeypatch, Q.soft_round_inverse, y, alpha)
    assert got.view(np.int64).tolist() == want.view(np.int64).tolist()
    assert exactmath.soft_round_inverse(np.array([0.2, np.nan]), alpha) is None
    assert np.isnan(Q.soft_round_inverse(np.array([0.2, np.nan]), alpha)[1])
