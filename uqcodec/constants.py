"""Constants that the encoder, the decoder and training must share bit for bit.

Written as literals (not computed with a machine's libm), so every machine has
the same values. docs/format.md refers to them by these names.
"""
# Gaussian conditional (hyperprior y): scales on a log grid from SCALE_MIN to SCALE_MAX.
SCALE_MIN, SCALE_MAX, SCALE_LEVELS = 0.11, 256.0, 128
LOG_SCALE_MIN = -2.2072749131897207    # log(SCALE_MIN): also the lower bound of training's log-scale
LOG_SCALE_STEP = 0.061042931950151834  # (log(SCALE_MAX) - log(SCALE_MIN)) / (SCALE_LEVELS - 1)
LOG_SCALE_MAX = LOG_SCALE_MIN + (SCALE_LEVELS - 1) * LOG_SCALE_STEP  # the grid's top (IEEE: same bits)
MEAN_GRID = 64                         # means are snapped to multiples of 1/MEAN_GRID
MEAN_STEP = 1.0 / MEAN_GRID
GAUSS_RADIUS = 4096                    # version 1/2 QuantizedGaussian support [-R, R]

# Factorized latents (z of the hyperprior, y of linear models): dither on a grid.
DITHER_BITS = 8
DITHER_LEVELS = 1 << DITHER_BITS

# Linear models see (x - 1/2) * LINEAR_GAIN: a unit quantization step is ~32 pixel levels.
LINEAR_GAIN = 8.0

# Variable-rate models: the latents are coded at gain a = exp(LOG_SCALE_STEP * r / RATE_DIV)
# for the header's rate parameter r, i.e. the scale index moves by r / RATE_DIV steps.
RATE_DIV = 4
# The rate parameters a file may carry (docs/format.md, "Variable rate"): gains from x0.0004
# (r = -512) to x2.66 (r = 64), so the largest Gaussian window stays within 2.7x that of a
# fixed-rate model and decoding time stays bounded.
RATE_MIN, RATE_MAX = -512, 64
RATE_KNOTS = 9                         # training: learned log-gain at 9 points of the lambda range
RATE_KNOT_SCALE = 10.0                 # weights hold the log-gains / 10 (they train 10x faster)

# Hyperprior bypass (a linear path beside analysis and synthesis): its convolutions are
# scaled by these constants, so that their weights are of the size of the other layers'
# (Adam moves every weight by about the learning rate per step).
BYPASS_IN_SCALE = 16.0
BYPASS_OUT_SCALE = 0.03125

# Context model (family "context"): its exact parameter networks see the decoded latents and
# the hyper-synthesis' means divided by CONTEXT_DIV (a power of two: exact) and clamped to
# [-CONTEXT_CLAMP, CONTEXT_CLAMP], and the log-scales of the scale grid (LOG_SCALE_MIN to
# LOG_SCALE_MIN + (SCALE_LEVELS - 1) * LOG_SCALE_STEP) as they are.
CONTEXT_DIV = 16.0
CONTEXT_CLAMP = 8.0
# ... and their corrections are the networks' last layer times CONTEXT_OUT_SCALE, so that
# Adam moves the new context networks that many times faster than the converged transforms
# they are trained with (the idea of RATE_KNOT_SCALE).
CONTEXT_OUT_SCALE = 32.0
# What the context networks see of the decoded latents (card field ``context_inputs``):
# "raw" (uqcodec 0.14, the card has no such field) y / CONTEXT_DIV; "residual" (0.15) the
# normalized residual (y - mean) / scale under the hyper-synthesis' parameters, clamped
# to [-CONTEXT_CLAMP, CONTEXT_CLAMP], and the mean correction in units of that scale.
CONTEXT_INPUTS = ("raw", "residual")
# ... whose networks put the "residual" mean correction on the grid 1 / CONTEXT_RESIDUAL_GRID
# (in units of the scale); the codec adds rint(scale * correction * MEAN_GRID) mean steps.
CONTEXT_RESIDUAL_GRID = 1024
