"""Quantizers: universal quantization (shared-seed dither), rounding, soft rounding.

The NumPy functions here are used by the codec at test time; the TensorFlow
functions by training. Both sides of the codec regenerate the same dither from
the 64-bit seed in the file header with NumPy's PCG64.
"""
import numpy as np

DITHER_LEVELS = 256  # factorized latents: dither on a fixed grid (tables per level)


class Dither:
    """Deterministic stream of dither values u in (-1/2, 1/2) from a 64-bit seed.

    Draws are taken in a fixed order (hyper-latent first, then latent), so the
    encoder and decoder see the same values.
    """

    def __init__(self, seed):
        self._rng = np.random.Generator(np.random.PCG64(int(seed)))

    def continuous(self, shape):
        """u ~ U(-1/2, 1/2), float64."""
        return self._rng.random(shape) - 0.5

    def levels(self, shape):
        """Dither on a grid of DITHER_LEVELS values: returns (level index, u)."""
        idx = self._rng.integers(0, DITHER_LEVELS, size=shape, dtype=np.int64)
        return idx, level_values()[idx]


def level_values():
    """The DITHER_LEVELS grid values (j + 1/2) / L - 1/2 (midpoints, symmetric)."""
    return (np.arange(DITHER_LEVELS) + 0.5) / DITHER_LEVELS - 0.5


# --- soft rounding (NumPy, float64) -----------------------------------------

def soft_round(x, alpha):
    """s_alpha(x): identity for alpha -> 0, rounding for alpha -> inf."""
    if not alpha:
        return x
    m = np.floor(x) + 0.5
    return m + np.tanh(alpha * (x - m)) / (2.0 * np.tanh(alpha / 2.0))


def soft_round_inverse(y, alpha):
    """s_alpha^{-1}(y)."""
    if not alpha:
        return y
    m = np.floor(y) + 0.5
    s = (y - m) * (2.0 * np.tanh(alpha / 2.0))
    r = np.arctanh(np.clip(s, -1.0, 1.0)) / alpha
    return m + np.clip(r, -0.5, 0.5)


def soft_round_conditional_mean(z, alpha):
    """r_alpha(z) = E[Y | s_alpha(Y) + U = z] under a locally uniform prior."""
    if not alpha:
        return z
    return soft_round_inverse(z - 0.5, alpha) + 0.5


# --- training noise (TensorFlow) --------------------------------------------

def noisy(tf, tfc, y, alpha=None):
    """Training-time quantization proxy.

    Returns (v, decoder_input): v = y + u (additive noise) or s_alpha(y) + u
    (soft rounding); the decoder sees v, or r_alpha(v) under soft rounding.
    """
    u = tf.random.uniform(tf.shape(y), -0.5, 0.5, dtype=y.dtype)
    if alpha is None:
        return y + u, y + u
    v = tfc.ops.soft_round(y, alpha) + u
    return v, tfc.ops.soft_round_conditional_mean(v, alpha)
