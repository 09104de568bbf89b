"""Entropy-model densities used in training (TensorFlow).

Every rate here is the exact probability that the codec later uses:
the mass of the prior between two bin edges. For additive uniform noise the
edges of a noisy value ``v`` are ``v -/+ 1/2``; with soft rounding they are
``s_inv(v -/+ 1/2)`` (see docs/format.md and shared notes on UQ math).
"""
import math

from . import _tf

tf, tfc = _tf.load()

LOG2 = math.log(2.0)
PROB_FLOOR = 1e-9


def _ndtr(x):
    return 0.5 * tf.math.erfc(-x * (1.0 / math.sqrt(2.0)))


def gaussian_bin_prob(lo, hi, mean, scale):
    """P(lo < Y < hi) for Y ~ N(mean, scale), evaluated in the lower tail for accuracy."""
    mid = (lo + hi) / 2.0 - mean
    half = (hi - lo) / 2.0
    d = -tf.abs(mid)
    return _ndtr((d + half) / scale) - _ndtr((d - half) / scale)


def factorized_bin_prob(prior, lo, hi):
    """P(lo < Y < hi) under a tfc.DeepFactorized prior (channels last)."""
    lo = prior._broadcast_inputs(lo)
    hi = prior._broadcast_inputs(hi)
    l_lo = prior._logits_cumulative(lo)
    l_hi = prior._logits_cumulative(hi)
    sign = tf.stop_gradient(-tf.sign(l_lo + l_hi))
    return tf.abs(tf.sigmoid(sign * l_hi) - tf.sigmoid(sign * l_lo))


def bin_edges(v, alpha):
    """Bin edges in latent space of a noisy value v (soft rounding if alpha)."""
    if alpha is None:
        return v - 0.5, v + 0.5
    return (tfc.ops.soft_round_inverse(v - 0.5, alpha),
            tfc.ops.soft_round_inverse(v + 0.5, alpha))


def log2_prob(prob):
    """Elementwise log2(prob), floored."""
    return tf.math.log(tf.maximum(prob, PROB_FLOOR)) / LOG2


def bits(prob):
    """-log2(prob), summed over everything."""
    return -tf.reduce_sum(log2_prob(prob))
