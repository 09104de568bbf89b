"""Quantizers: universal quantization (shared-seed dither), rounding, soft rounding.

The codec uses these NumPy functions at test time (the training-time proxy
is ``model.noisy_latent``). Both sides of the codec regenerate the same dither from
the 64-bit seed in the file header with NumPy's PCG64.
"""
import numpy as np

from . import exactmath
from .constants import DITHER_BITS, DITHER_LEVELS

# the first format version whose dither comes from the raw outputs (``Dither``)
RAW_DITHER_VERSION = 4


class NumpyMath:
    """NumPy's own tanh/atanh: what version-1/2 files were coded with (their last
    bits may differ between machines; versions 3 and 4 use ``exactmath``)."""
    tanh = staticmethod(np.tanh)
    atanh = staticmethod(np.arctanh)


class Dither:
    """Deterministic stream of dither values u in (-1/2, 1/2) from a 64-bit seed.

    Draws are taken in a fixed order (hyper-latent first, then latent), so the
    encoder and decoder see the same values. Tile ``i`` of a tiled image uses
    ``PCG64(seed).jumped(i)``: tile 0 (and a version-1 file) draws from
    ``PCG64(seed)`` itself, and the tiles' streams never overlap.

    Format version 4 derives the values from the bit generator's raw 64-bit outputs
    (``random_raw``, which NumPy keeps stable): a level is the top 8 bits of one output,
    a continuous value ``(raw >> 11) * 2**-53 - 1/2``. Versions 1-3 used
    ``numpy.random.Generator``'s ``integers`` and ``random`` (identical in every NumPy
    tried, but promised only per build).
    """

    def __init__(self, seed, tile=0, version=RAW_DITHER_VERSION):
        bits = np.random.PCG64(int(seed))
        if tile:
            bits = bits.jumped(int(tile))
        self._bits = bits
        self._rng = None if version >= RAW_DITHER_VERSION else np.random.Generator(bits)

    def _raw(self, shape):
        """One raw 64-bit output per element, in C order (version 4)."""
        return self._bits.random_raw(int(np.prod(shape, dtype=np.int64))).reshape(shape)

    def continuous(self, shape):
        """u ~ U(-1/2, 1/2), float64."""
        if self._rng is not None:
            return self._rng.random(shape) - 0.5
        return (self._raw(shape) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53 - 0.5

    def levels(self, shape):
        """Dither on a grid of DITHER_LEVELS values: returns (level index, u)."""
        if self._rng is not None:
            idx = self._rng.integers(0, DITHER_LEVELS, size=shape, dtype=np.int64)
        else:
            idx = (self._raw(shape) >> np.uint64(64 - DITHER_BITS)).astype(np.int64)
        return idx, level_values()[idx]


def level_values():
    """The DITHER_LEVELS grid values (j + 1/2) / L - 1/2 (midpoints, symmetric)."""
    return (np.arange(DITHER_LEVELS) + 0.5) / DITHER_LEVELS - 0.5


# --- soft rounding (NumPy, float64) -----------------------------------------

# ``fm``: the elementary functions, ``exactmath`` (the same bits on every machine)
# or ``NumpyMath`` (version-1/2 files).

def soft_round(x, alpha, fm=exactmath):
    """s_alpha(x): identity for alpha -> 0, rounding for alpha -> inf."""
    if not alpha:
        return x
    m = np.floor(x) + 0.5
    return m + fm.tanh(alpha * (x - m)) / (2.0 * fm.tanh(np.float64(alpha) / 2.0))


def soft_round_inverse(y, alpha, fm=exactmath):
    """s_alpha^{-1}(y)."""
    if not alpha:
        return y
    if fm is exactmath:  # the compiled kernel's one pass where it is there (the same bits)
        fast = exactmath.soft_round_inverse(y, alpha)
        if fast is not None:
            return fast
    m = np.floor(y) + 0.5
    s = (y - m) * (2.0 * fm.tanh(np.float64(alpha) / 2.0))
    r = fm.atanh(np.clip(s, -1.0, 1.0)) / alpha
    return m + np.clip(r, -0.5, 0.5)


def soft_round_conditional_mean(z, alpha, fm=exactmath):
    """r_alpha(z) = E[Y | s_alpha(Y) + U = z] under a locally uniform prior."""
    if not alpha:
        return z
    return soft_round_inverse(z - 0.5, alpha, fm) + 0.5


class Rounding:
    """A model's soft rounding: ``s`` before the dither, ``decoder_input`` after it
    (identities for ``un`` models, which have no alpha)."""

    def __init__(self, alpha=None, alpha_r=None, fm=exactmath):
        self.alpha, self.alpha_r, self.fm = alpha, alpha_r or alpha, fm

    @classmethod
    def of(cls, card, fm=exactmath):
        alpha = card.get("alpha") if card.get("training") == "sr" else None
        return cls(alpha, card.get("alpha_r") if alpha else None, fm)

    def s(self, x):
        return soft_round(x, self.alpha, self.fm)

    def decoder_input(self, v):
        return soft_round_conditional_mean(v, self.alpha_r, self.fm)
