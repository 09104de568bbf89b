"""Soft rounding identities, dither reproducibility and the schedules."""
import numpy as np
import pytest

from uqcodec import quantization as Q
from uqcodec.training.train import alpha_at, lr_at, run_fraction


def test_soft_round_limits():
    x = np.linspace(-3, 3, 1001)
    assert np.max(np.abs(Q.soft_round(x, 1e-4) - x)) < 1e-3
    far = np.abs(x - np.round(x)) < 0.45  # away from the half-integers, where rounding jumps
    errs = [np.max(np.abs(Q.soft_round(x, a) - np.round(x))[far]) for a in (5.0, 20.0, 200.0)]
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-6
    for a in (0.5, 2.0, 8.0):
        s = Q.soft_round(x, a)
        assert np.all(np.diff(s) > 0)  # monotonic
        np.testing.assert_allclose(Q.soft_round_inverse(s, a), x, atol=1e-6)
        # integers and half-integers are fixed points
        n = np.arange(-3, 4) + 0.0
        np.testing.assert_allclose(Q.soft_round(n + 0.5, a), n + 0.5, atol=1e-12)


def test_conditional_mean_is_consistent_with_soft_round():
    """r_alpha(z) = E[Y | s_alpha(Y) + U = z] for Y locally uniform (Monte Carlo)."""
    rng = np.random.default_rng(0)
    a = 4.0
    y = rng.uniform(-4, 4, 4_000_000)
    z = Q.soft_round(y, a) + rng.uniform(-0.5, 0.5, y.shape)
    for z0 in (-0.3, 0.0, 0.25, 0.5, 1.1, 2.45):
        sel = np.abs(z - z0) < 0.005
        assert abs(y[sel].mean() - Q.soft_round_conditional_mean(np.array(z0), a)) < 0.015


def test_numpy_matches_tensorflow_compression():
    from uqcodec.training import _tf
    tf, tfc = _tf.load()
    x = np.linspace(-2.7, 2.7, 301)
    for a in (0.5, 3.0, 9.0):
        np.testing.assert_allclose(Q.soft_round(x, a),
                                   tfc.ops.soft_round(tf.constant(x), tf.constant(a, tf.float64)).numpy(), atol=1e-9)
        np.testing.assert_allclose(Q.soft_round_conditional_mean(x, a),
                                   tfc.ops.soft_round_conditional_mean(tf.constant(x), tf.constant(a, tf.float64)).numpy(),
                                   atol=1e-6)


def test_dither_is_reproducible_and_uniform():
    a = Q.Dither(123).continuous((1000,))
    b = Q.Dither(123).continuous((1000,))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, Q.Dither(124).continuous((1000,)))
    assert a.min() >= -0.5 and a.max() < 0.5 and abs(a.mean()) < 0.05
    idx, u = Q.Dither(5).levels((10000,))
    assert idx.min() == 0 and idx.max() == Q.DITHER_LEVELS - 1
    assert np.allclose(u, Q.level_values()[idx])


def test_schedules():
    assert lr_at(0, 0.0, 1e-3, 10, 0.5) == pytest.approx(1e-4)
    assert lr_at(30, 0.3, 1e-3, 10, 0.5) == 1e-3
    assert lr_at(99, 0.99, 1e-3, 10, 0.5) < 2e-5
    assert lr_at(50, 0.75, 1e-3, 10, 0.5) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5))
    assert alpha_at(0.0, 1, 8, 1.0) == 1 and alpha_at(1.0, 1, 8, 1.0) == 8
    assert alpha_at(0.25, 1, 8, 0.5) == pytest.approx(4.5) and alpha_at(0.9, 1, 8, 0.5) == 8
    # a time budget drives the schedule when it is further along than the step count
    assert run_fraction(10, 100, 0.0) == 0.1
    assert run_fraction(10, 100, 1800.0, minutes=60) == 0.5
    assert run_fraction(200, 100, 0.0) == 1.0
