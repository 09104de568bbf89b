"""Elementary functions that give the same bits on every machine.

The coding tables of version-3 files are computed from these, never from
``np.exp``/``np.log``/``scipy.special`` (whose last bits depend on the CPU's
vector unit, the libm and the compiler). Each function here is a fixed sequence
of IEEE-754 operations that are correctly rounded by definition (+, -, *, /,
floor, and ldexp/frexp, which are exact), applied elementwise by NumPy, with
constants written out as literals: the same inputs give the same outputs
everywhere. One exception: ldexp is not exact where its result is subnormal
(below 2^-1022; ``exp`` of arguments under about -708), where glibc rounds and
Windows' C library truncates; such values lie far below what the coder's
quantization of probabilities can resolve, so the tables come out the same.
Accuracy is about 1e-15 relative (``exp``, ``log``) and 1.2e-7 relative
(``erfc``: the Chebyshev fit of Numerical Recipes, section 6.2), plenty for
coding tables; what matters is that encoder and decoder agree.

Where the install built ``uqcodec/_tables.c`` (``KERNEL``), ``exp``, ``log`` and ``ndtr``
and the Gaussian rows (``entropy``) run there in one compiled pass: the same operations
in the same order, the same bits (``tests/test_tables_kernel.py``), 2-6x faster.
"""
import functools
import os

import numpy as np

LN2_HI = 6.93147180369123816490e-01  # Cody-Waite split of log(2): n * LN2_HI is exact
LN2_LO = 1.90821492927058770002e-10
INV_LN2 = 1.44269504088896338700e+00
SQRT_HALF = 7.07106781186547524401e-01
_EXP_TERMS = 14  # Taylor terms of exp(r), |r| <= log(2)/2
_LOG_TERMS = 12  # odd terms of atanh series, |f| <= 0.1716
_ERFC = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807,
         -1.13520398, 1.48851587, -0.82215223, 0.17087277)


def ldexp_exponent(e):
    """``e`` as an exponent for ``np.ldexp``: int32. Its loops take the C ``int`` or
    ``long``, and with NumPy < 2 on Windows ``long`` is 32 bits: an int64 array does not
    cast safely there (TypeError). Exponents here are far inside int32, so no value
    changes."""
    return np.asarray(e).astype(np.int32)


BLOCK = 16384  # elements per evaluation: the temporaries of a block stay in the CPU's cache


def _blocked(fn, compiled=False):
    """Evaluate an elementwise function block by block (the same operations on each
    element, so the same bits; 2-5x faster on large arrays, whose dozens of temporaries
    would otherwise stream through memory). ``compiled``: a function that the kernel
    evaluates in one pass when it is there, on the whole array at once."""
    def blocked(x, *args, **kwargs):
        x = np.asarray(x, np.float64)
        if x.size <= BLOCK or (compiled and KERNEL is not None):
            return fn(x, *args, **kwargs)
        flat = x.reshape(-1)
        out = np.empty(x.size, np.float64)
        for i in range(0, x.size, BLOCK):
            out[i:i + BLOCK] = fn(flat[i:i + BLOCK], *args, **kwargs)
        return out.reshape(x.shape)
    blocked.__name__, blocked.__doc__ = fn.__name__, fn.__doc__
    return blocked


_INV_FACTORIAL = [1.0]
for _k in range(1, 20):
    _INV_FACTORIAL.append(_INV_FACTORIAL[-1] / _k)
_LOG_COEFFS = [1.0 / (2 * k + 1) for k in range(_LOG_TERMS + 1)]  # log's series


def _load_kernel():
    """The compiled kernel (uqcodec/_tables.c, built at install where a C compiler is
    found), or None: then NumPy evaluates the same operations. UQCODEC_PURE_NUMPY=1
    turns it off (the tests compare the two)."""
    if os.environ.get("UQCODEC_PURE_NUMPY", "") not in ("", "0"):
        return None
    try:
        from . import _tables
    except ImportError:
        return None
    return _tables


KERNEL = _load_kernel()
# The constants in the order the kernel takes them (erfc's coefficients, 1/k! for
# k = 0..9, INV_LN2, LN2_HI, LN2_LO, SQRT_HALF): the same values, defined here once.
KERNEL_CONSTANTS = np.array(list(_ERFC) + _INV_FACTORIAL[:10] + [INV_LN2, LN2_HI, LN2_LO,
                                                                 SQRT_HALF], np.float64)
_KERNEL_FACTORIALS = np.array(_INV_FACTORIAL, np.float64)
_KERNEL_LOG = np.array(_LOG_COEFFS, np.float64)


_NDTR, _EXP, _LOG, _SRINV = 0, 1, 2, 3  # the kernel's ``kind`` of elementwise function


def _kernel_apply(kind, x, table=KERNEL_CONSTANTS, terms=0):
    """One of the kernel's elementwise functions of ``x``, in a new float64 array."""
    out = np.empty(np.shape(x), np.float64)
    KERNEL.elementwise(out, np.ascontiguousarray(x, np.float64), kind, KERNEL_CONSTANTS,
                       table, terms)
    return out


@functools.partial(_blocked, compiled=True)
def exp(x, terms=_EXP_TERMS):
    """e^x; ``terms`` Taylor terms after range reduction (9 give about 1e-11)."""
    if KERNEL is not None:
        return _kernel_apply(_EXP, x, _KERNEL_FACTORIALS, terms)
    x = np.minimum(np.maximum(np.asarray(x, np.float64), -745.0), 709.0)
    n = np.floor(x * INV_LN2 + 0.5)
    r = x - n * LN2_HI
    r -= n * LN2_LO
    p = np.full_like(r, _INV_FACTORIAL[terms])
    for k in range(terms - 1, -1, -1):  # Horner form of sum r^k / k!
        p *= r
        p += _INV_FACTORIAL[k]
    return np.ldexp(p, ldexp_exponent(n))


@functools.partial(_blocked, compiled=True)
def log(x):
    """Natural logarithm of x > 0."""
    if KERNEL is not None:
        return _kernel_apply(_LOG, x, _KERNEL_LOG)
    m, e = np.frexp(np.asarray(x, np.float64))  # x = m 2^e, m in [1/2, 1)
    small = m < SQRT_HALF
    m = np.where(small, m * 2.0, m)
    e = np.where(small, e - 1, e).astype(np.float64)
    f = (m - 1.0) / (m + 1.0)
    f2 = f * f
    s = np.full_like(f, _LOG_COEFFS[_LOG_TERMS])
    for k in range(_LOG_TERMS - 1, -1, -1):
        s = _LOG_COEFFS[k] + f2 * s
    return 2.0 * f * s + (e * LN2_HI + e * LN2_LO)


@_blocked
def tanh(x):
    x = np.asarray(x, np.float64)
    t = exp(-2.0 * np.abs(x))
    return np.sign(x) * (1.0 - t) / (1.0 + t)


@_blocked
def atanh(x):
    """Inverse hyperbolic tangent; |x| is clipped to 1 - 2^-53 (about +-18.7 there)."""
    x = np.clip(np.asarray(x, np.float64), -1.0 + 2.0 ** -53, 1.0 - 2.0 ** -53)
    return 0.5 * log((1.0 + x) / (1.0 - x))


@_blocked
def erfc(x, fast=False):
    """``fast``: NumPy's own exp instead of ``exp`` (not the same bits everywhere: for
    work that needs no exact values, such as encoder-side refinement)."""
    x = np.asarray(x, np.float64)
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = np.full_like(t, _ERFC[-1])
    for c in _ERFC[-2::-1]:
        poly *= t
        poly += c
    poly -= z * z
    ans = np.exp(poly) if fast else exp(poly, terms=9)  # the fit's own error is 1.2e-7
    ans *= t
    return np.where(x >= 0.0, ans, 2.0 - ans)


def soft_round_inverse(y, alpha):
    """``quantization.soft_round_inverse(y, alpha)`` (with this module's atanh) in the
    kernel's one pass: the same operations in the same order, so the same bits; None where
    the kernel is not there or ``y`` is not all finite (then NumPy evaluates it)."""
    y = np.asarray(y, np.float64)
    if KERNEL is None or not np.isfinite(y).all():
        return None
    k2 = 2.0 * tanh(np.float64(alpha) / 2.0)  # as soft_round_inverse computes it
    table = np.concatenate([[float(alpha), float(k2)], _KERNEL_LOG])
    return _kernel_apply(_SRINV, y, table)


@functools.partial(_blocked, compiled=True)
def ndtr(t):
    """P(N(0,1) < t); relative accuracy 1.2e-7 in the lower tail (callers pass -|t|)."""
    t = np.asarray(t, np.float64)
    if KERNEL is not None and np.isfinite(t).all():
        return _kernel_apply(_NDTR, t)
    return 0.5 * erfc(-t * SQRT_HALF)
