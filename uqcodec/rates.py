"""Lambdas, qualities and rate sets: the arithmetic that the codec, the model zoo,
evaluation and training share (no model is loaded here).

A variable-rate model covers a lambda range [lo, hi] on a log scale: training draws
the position ``t`` in [0, 1] uniformly (``lambda_at``), the learned gains are functions
of ``t``. ``--quality`` QUALITY_MIN..QUALITY_MAX is log-spaced in lambda over a rate
set's range; between two models of a set the switch is at the geometric mean of the
overlap's (or gap's) ends (``set_edges``).
"""
import math

# --quality of a variable-rate model: QUALITY_MIN (its lowest lambda) to QUALITY_MAX (its
# highest), log-spaced in lambda; any value in between.
QUALITY_MIN, QUALITY_MAX, DEFAULT_QUALITY = 0.0, 10.0, 5.0


def lambda_at(t, lo, hi):
    """The lambda at position ``t`` (0..1) of the log range lo..hi: training draws t
    uniformly, the learned gains are functions of t."""
    return lo * (hi / lo) ** t


def lambda_position(lmbda, lo, hi):
    """The inverse of ``lambda_at``: the position of ``lmbda`` in the log range lo..hi."""
    return math.log(lmbda / lo) / math.log(hi / lo)


def quality_lambda(quality, lo, hi):
    """The lambda of a quality (QUALITY_MIN..QUALITY_MAX, log-spaced) in the range lo..hi."""
    return lambda_at((quality - QUALITY_MIN) / (QUALITY_MAX - QUALITY_MIN), lo, hi)


def set_edges(ranges):
    """Lambda ranges of a rate set's models, sorted by their low ends -> the edges of the
    lambdas each model serves: model i serves [edges[i], edges[i + 1]], and between two
    models the switch is at the geometric mean of the overlap's (or gap's) ends."""
    return ([ranges[0][0]] + [math.sqrt(a[1] * b[0]) for a, b in zip(ranges, ranges[1:])]
            + [max(r[1] for r in ranges)])


def set_member(lmbda, edges):
    """The index of the model of a rate set (``set_edges``) that serves lambda ``lmbda``."""
    return next(i for i in range(len(edges) - 1) if lmbda <= edges[i + 1] or i == len(edges) - 2)


def set_quality(lmbda, edges):
    """The quality of lambda ``lmbda`` in a rate set with these edges."""
    return QUALITY_MIN + (QUALITY_MAX - QUALITY_MIN) * lambda_position(lmbda, edges[0], edges[-1])
