"""Encoder-side latent refinement: optimize one image's latents before coding them.

The analysis transform is amortized: one network guesses the latents of every
image. With the decoder fixed, the encoder may instead search for the latents
that minimize this image's own rate + lambda * MSE (Campos et al. 2019, Yang et
al. 2020). The decoder and the file format do not change; encoding takes
``steps`` forward and backward passes through the synthesis and the
hyper-synthesis on top of one analysis pass (for a context model, ``ContextRefiner``,
also through its context networks, in NumPy). No TensorFlow: the gradients of the
transforms are ONNX graphs built from the forward ones (``gradients.py``), run by
onnxruntime in the same session as the forward pass; the rest (soft rounding, the
rates of both latents and their gradients) is NumPy.

Two phases, Adam with a cosine-decayed step size:

1. *expected loss* (the first 70 % of the steps): the training relaxation, fresh
   noise each step. Under universal quantization it is exact in distribution:
   the decoder input ``k + u`` is distributed like ``y + U`` (``s_alpha(y) + U``
   under soft rounding), so this minimizes the expected loss of the file.
2. *this file's loss* (the rest): the encoder knows the dither ``u`` the file
   will use, so the forward pass computes the real decoder input
   ``round(s - u) + u`` and the real rate (straight-through gradient). Its loss
   is the file's own rate + lambda * MSE (up to the decoder's parameter grids and
   8-bit output), so the best latents seen are kept, the analysis transform's
   own among them: refinement never makes that loss worse. With rounding
   (``--quantizer round``) the real decoder input is ``round(s(z))`` for the
   hyper-latent and ``mean + round(s(y) - mean)`` for the latent, the mean being
   the decoder's (snapped) prediction from the current ``z``.

The gradients are those of training (``training/model.py``, ``noisy_latent``): with
soft rounding, the lower-variance estimate (the rate's derivative with respect to
``s_alpha(y)`` is its expectation over the noise, ``h(s + 1/2) - h(s - 1/2)``, and
``r_alpha`` passes the gradient straight through); without, the exact derivative of
the bin probability. ``tests/test_refine.py`` checks one step against TensorFlow's
automatic differentiation of the training model.

Deterministic: the phase-1 noise comes from a generator seeded from the file's seed,
so the same image, model and seed give the same file.
"""
import math

import numpy as np

from . import engine as E, exactmath, gradients, intnet, quantization as Q
from .constants import CONTEXT_CLAMP, CONTEXT_OUT_SCALE, LOG_SCALE_MAX, LOG_SCALE_MIN, MEAN_STEP
from .errors import CodecError

DEFAULT_LR = 0.1  # in latent units (one quantization step = 1)
EXACT_FRACTION = 0.3  # share of the steps spent on this file's own loss
PROB_FLOOR = 1e-9  # the rate of a bin counts at least this probability (as in training)
LN2 = math.log(2.0)
_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


# --- soft rounding (quantization.py's; its inverse compiled where it can be) -----------

def soft_round(x, alpha):
    return Q.soft_round(x, alpha, Q.NumpyMath)


def soft_round_derivative(x, alpha):
    if alpha is None:
        return 1.0
    t = np.tanh(alpha * (x - np.floor(x) - 0.5))
    return alpha * (1.0 - t * t) / (2.0 * math.tanh(alpha / 2.0))


def soft_round_inverse(y, alpha):
    """The compiled kernel's one pass where it is built (exactmath's functions: the
    decoder's own values, about 3x faster than NumPy's atanh), else on NumPy's atanh."""
    if alpha:  # (None without the kernel or for non-finite values)
        fast = exactmath.soft_round_inverse(y, alpha)
        if fast is not None:
            return fast
    with np.errstate(divide="ignore"):  # atanh(+-1) = +-inf, clipped to +-1/2
        return Q.soft_round_inverse(y, alpha, Q.NumpyMath)


def conditional_mean(v, alpha):
    """r_alpha(v) = E[Y | s_alpha(Y) + U = v]."""
    return v if alpha is None else soft_round_inverse(v - 0.5, alpha) + 0.5


def bin_edges(v, alpha):
    return soft_round_inverse(v - 0.5, alpha), soft_round_inverse(v + 0.5, alpha)


def _ndtr(t):
    """P(N(0, 1) < t) with ``exactmath``'s erfc fit: the compiled kernel's where it is
    built (one pass), else on NumPy's exp (refinement needs no bit-exact rates, only
    fast ones)."""
    if exactmath.KERNEL is not None:
        return exactmath.ndtr(t)
    return 0.5 * exactmath.erfc(-np.asarray(t, np.float64) * _SQRT_HALF, fast=True)


# --- the two priors: bin probabilities and their derivatives ----------------------

class Gaussian:
    """P(lo < Y < hi), Y ~ N(mean, scale), from the lower tail (as in training), and with
    ``derivatives`` (p, dP/d(shift of the bin), (dP/dmean, dP/dscale))."""

    @staticmethod
    def prob(lo, hi, mean, scale, derivatives=False):
        mid = (lo + hi) / 2.0 - mean
        half = (hi - lo) / 2.0
        d = -np.abs(mid)
        b, a = (d + half) / scale, (d - half) / scale
        p = _ndtr(b) - _ndtr(a)
        if not derivatives:
            return p
        pb, pa = np.exp(-0.5 * b * b) * _INV_SQRT_2PI, np.exp(-0.5 * a * a) * _INV_SQRT_2PI
        dp_dmean = np.sign(mid) * (pb - pa) / scale  # d = -|mid|, mid = centre - mean
        dp_dscale = -(b * pb - a * pa) / scale
        # P depends on the bin through (lo - mean, hi - mean): shifting it is -d/dmean
        return p, -dp_dmean, (dp_dmean, dp_dscale)


class Factorized:
    """tfc.DeepFactorized (a per-channel monotone network for the CDF's logits) from a
    model's weights ``prefix``/{matrix,bias,factor}_i, channels last."""

    def __init__(self, weights, prefix):
        self.matrices, self.biases, self.factors = [], [], []
        i = 0
        while f"{prefix}/matrix_{i}" in weights:
            m = weights[f"{prefix}/matrix_{i}"].astype(np.float64)
            self.matrices.append(np.logaddexp(0.0, m))  # softplus: (C, out, in)
            self.biases.append(weights[f"{prefix}/bias_{i}"].astype(np.float64)[..., 0])
            if f"{prefix}/factor_{i}" in weights:
                self.factors.append(np.tanh(weights[f"{prefix}/factor_{i}"]
                                            .astype(np.float64))[..., 0])
            i += 1

    def logits(self, x, derivative=False):
        """Logits of the CDF at x (..., C) and, if asked, their derivative in x."""
        shape = x.shape
        h = x.reshape(-1, shape[-1]).T[:, None, :]  # (C, 1, n)
        dh = np.ones_like(h) if derivative else None
        for i, (m, b) in enumerate(zip(self.matrices, self.biases)):
            h = m @ h + b[:, :, None]
            if derivative:
                dh = m @ dh
            if i < len(self.factors):
                t = np.tanh(h)
                if derivative:
                    dh = dh * (1.0 + self.factors[i][:, :, None] * (1.0 - t * t))
                h = h + self.factors[i][:, :, None] * t
        out = h[:, 0, :].T.reshape(shape)
        return (out, dh[:, 0, :].T.reshape(shape)) if derivative else out

    def prob(self, lo, hi, derivatives=False):
        """P(lo < Y < hi) by the side of the median where it is precise (as in training:
        ``priors.factorized_bin_prob``); with ``derivatives`` (p, dP/d(shift of the bin),
        ())."""
        if not derivatives:
            l_lo, l_hi = self.logits(lo), self.logits(hi)
        else:
            (l_lo, d_lo), (l_hi, d_hi) = self.logits(lo, True), self.logits(hi, True)
        sign = -np.sign(l_lo + l_hi)
        s_hi, s_lo = _sigmoid(sign * l_hi), _sigmoid(sign * l_lo)
        p = np.abs(s_hi - s_lo)
        if not derivatives:
            return p
        sgn = np.sign(s_hi - s_lo) * sign
        return p, sgn * (s_hi * (1.0 - s_hi) * d_hi - s_lo * (1.0 - s_lo) * d_lo), ()


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _bits_of(p):
    """-log2 of the floored probabilities, and the factor d(-log2 p)/dp (0 where floored)."""
    q = np.maximum(p, PROB_FLOOR)
    return -np.log2(q), np.where(p > PROB_FLOOR, -1.0 / (LN2 * q), 0.0)


def _log_scale_bound_gradient(log_scale, grad):
    """The gradient through LOG_SCALE_MIN as tfc.lower_bound passes it (training's bound
    of every log-scale): above the bound, or where the step would raise the value."""
    return np.where((log_scale >= LOG_SCALE_MIN) | (grad < 0), grad, 0.0)


def _log2_prob(p):
    return np.log2(np.maximum(p, PROB_FLOOR))


class Refiner:
    """Refinement for one hyperprior model (its ONNX graphs built once, reused for every
    image and tile)."""

    def __init__(self, model, lam=None, alpha=None, alpha_r=None):
        """``model``: the family's inference model (``hyperprior.Hyperprior``); ``lam``: the
        model's lambda (a variable-rate model: given with each call)."""
        self.model = model
        self.variable = model.variable
        self.lam = None if lam is None else float(lam)
        self.alpha, self.alpha_r = alpha, alpha_r or alpha
        self.M, self.N = model.M, model.N
        self.prior = Factorized(model.weights, "factorized/hyperprior")
        self._synthesis = self._hyper = self._hyper_forward = None

    # --- the transforms and their gradients (onnxruntime) ----------------------------
    def _synthesis_graph(self):
        """(y_dec, image, weight) -> (x_hat, d loss / d y_dec) with loss the weighted
        squared error of the clipped reconstruction, sum(weight * (clip(x_hat) - x)^2)."""
        g = self.model.synthesis_graph()
        x_hat = g.last
        target, weight = g.input("target", 3), g.input("weight", 1)
        zero, one = g.const(np.float32(0.0).reshape(())), g.const(np.float32(1.0).reshape(()))
        clipped = g.node("Clip", [x_hat, zero, one])
        inside = g.node("Cast", [g.node("Equal", [clipped, x_hat])], to=1)  # clip's gradient
        err = g.node("Sub", [clipped, target])
        two_w = g.node("Mul", [weight, g.const(np.float32(2.0).reshape(()))])
        seed = g.node("Mul", [g.node("Mul", [err, two_w]), inside])
        grad = gradients.backward(g, seed, x_hat, "x")
        return E.session(g, [(x_hat, 3), (grad, self.M)])

    def _hyper_graph(self):
        """(z_dec, d loss / d [mean, log-scale]) -> ([mean, log-scale], d loss / d z_dec)."""
        g = self.model.hyper_synthesis_graph()
        out = g.last
        seed = g.input("seed", 2 * self.M)
        grad = gradients.backward(g, seed, out, "x")
        return E.session(g, [(out, 2 * self.M), (grad, self.N)])

    @staticmethod
    def _nchw(a):
        return np.ascontiguousarray(np.asarray(a, np.float32).transpose(2, 0, 1)[None])

    @staticmethod
    def _hwc(a):
        return a[0].transpose(1, 2, 0).astype(np.float64)

    def _hyper_mean_log_scale(self, z_dec):
        if self._hyper_forward is None:
            self._hyper_forward = E.Transform(self.model.hyper_synthesis_graph(), 2 * self.M)
        return self._hyper_forward(z_dec).astype(np.float64)

    def _hyper_gradient(self, z_dec, seed):
        if self._hyper is None:
            self._hyper = self._hyper_graph()
        sess, opts = self._hyper
        out, grad = sess.run(None, {"x": self._nchw(z_dec), "seed": self._nchw(seed)}, opts)
        return self._hwc(grad)

    def _synthesis_run(self, y_dec, target, weight):
        if self._synthesis is None:
            self._synthesis = self._synthesis_graph()
        sess, opts = self._synthesis
        feed = {"x": self._nchw(y_dec), "target": target, "weight": weight}
        x_hat, grad = sess.run(None, feed, opts)
        return x_hat, self._hwc(grad)

    # --- one step: the loss and its gradient ---------------------------------------------
    def _rate(self, v, s, prob):
        """Bits of the noisy values ``v``, d bits / d ``s`` (the clean soft-rounded values:
        the lower-variance expectation with soft rounding; without, the exact derivative
        in v = s + noise), d bits / dP and the prior's dP/d(parameters).
        ``prob(lo, hi, derivatives)``: the bin probability (``Gaussian``, ``Factorized``)."""
        a = self.alpha
        p, dp_dv, params = prob(*bin_edges(v, a), True)
        bits, dbits = _bits_of(p)
        if a is None:
            return bits.sum(), dbits * dp_dv, dbits, params
        # the edges of s - 1/2 and of s + 1/2: r(s - 1), r(s), r(s + 1) with r(v + 1) =
        # r(v) + 1 (to rounding: refinement needs no exact rates)
        e = soft_round_inverse(s, a)
        h_hi = _log2_prob(prob(e, e + 1.0, False))
        h_lo = _log2_prob(prob(e - 1.0, e, False))
        return bits.sum(), -(h_hi - h_lo), dbits, params

    def _decoder_input(self, z_dec, mean, sy, ny, gain):
        """The soft-rounded decoder input of y: ``sy + ny``, or with ``ny`` None (rounding)
        ``sy`` rounded around the decoder's snapped mean (``mean``: the hyper-synthesis')."""
        if ny is None:
            m = np.rint(mean / MEAN_STEP) * MEAN_STEP * gain
            return m + np.rint(sy - m)
        return sy + ny

    def _y_parameters(self, mean, log_scale, y_dec):
        """y's Gaussian parameters from the hyper-synthesis' (``log_scale`` bounded below)
        and y's decoder input: here the hyper-synthesis' own. Returns (mean, log-scale,
        backward), ``backward(d mean, d log-scale)`` -> (d ``mean``, d ``log_scale``, d
        ``y_dec``)."""
        return mean, log_scale, lambda g_mean, g_log_scale: (g_mean, g_log_scale, 0.0)

    def loss_and_gradients(self, x, y, z, ny, nz, lam, log_gain, valid):
        """The loss (bits per pixel + lam * MSE on the 0..255 scale over the ``valid``
        (h, w) part) of latents ``y``, ``z`` with noise ``ny``, ``nz`` (both None for
        rounding: computed from the current latents, see the module's phase 2), and
        its gradients with respect to y and z. Everything float64 except the transforms.
        ``x``: the padded image HxWx3 in [0, 1]."""
        h, w = valid
        a, gain = self.alpha, math.exp(log_gain)
        pixels = float(h * w)
        # z: the factorized prior
        sz = soft_round(z, a)
        if nz is None:  # rounding: the effective noise of round(s(z))
            nz = np.rint(sz) - sz
        vz = sz + nz
        z_dec = conditional_mean(vz, self.alpha_r)
        bits_z, g_sz, _, _ = self._rate(vz, sz, self.prior.prob)
        # y: the Gaussian conditional, mean and scale from the float hyper-synthesis
        hyper = self._hyper_mean_log_scale(z_dec)
        mean, raw_log_scale = hyper[..., :self.M], hyper[..., self.M:]
        log_scale = np.maximum(raw_log_scale, LOG_SCALE_MIN)
        yg = y * gain
        sy = soft_round(yg, a)
        vy = self._decoder_input(z_dec, mean, sy, ny, gain)
        y_dec = conditional_mean(vy, self.alpha_r) / gain
        mean, log_scale, backward = self._y_parameters(mean, log_scale, y_dec)
        mg, scale = mean * gain, np.exp(log_scale + log_gain)
        bits_y, g_sy, dby, (dp_dm, dp_ds) = self._rate(
            vy, sy, lambda lo, hi, d: Gaussian.prob(lo, hi, mg, scale, d))
        # distortion and its gradient (onnxruntime)
        target = self._nchw(x)
        weight = np.zeros((1, 1) + x.shape[:2], np.float32)
        scale_mse = lam * 255.0 ** 2 / (3.0 * pixels)
        weight[0, 0, :h, :w] = scale_mse
        x_hat, g_ydec = self._synthesis_run(y_dec, target, weight)
        err = np.clip(x_hat[0, :, :h, :w].astype(np.float64), 0.0, 1.0) - target[0, :, :h, :w]
        loss = (bits_y + bits_z) / pixels + scale_mse * float(np.sum(err * err))
        # the rate's gradient with respect to y's parameters, then back to the
        # hyper-synthesis' (and, through a context model's networks, to y_dec)
        g_mean, g_log_scale, g_ctx = backward(dby * dp_dm * gain / pixels,
                                              dby * dp_ds * scale / pixels)
        # back to y: straight through r_alpha, the rate's expectation in s, s' in y
        g_y = ((g_ydec + g_ctx) / gain + g_sy / pixels) * soft_round_derivative(yg, a) * gain
        # back to z through the mean and the scale of y
        g_log_scale = _log_scale_bound_gradient(raw_log_scale, g_log_scale)
        g_zdec = self._hyper_gradient(z_dec, np.concatenate([g_mean, g_log_scale], axis=-1))
        g_z = (g_zdec + g_sz / pixels) * soft_round_derivative(z, a)
        return loss, g_y, g_z

    def _noise(self, latent, u, gain=1.0):
        """The noise that turns s(gain * latent) into the real decoder input."""
        s = soft_round(latent * gain, self.alpha)
        return np.rint(s - u) + u - s

    def __call__(self, x, y, z, u_y, u_z, steps, seed=0, lr=None, valid=None, progress=None,
                 lam=None, log_gain=0.0):
        """Refine the latents ``y`` (HxWxM) and ``z`` of the padded image ``x`` (HxWx3 in
        [0, 1]; only its top-left ``valid`` = (h, w) part counts in the distortion).
        ``u_y``, ``u_z``: the dither the file will use, or None for rounding; ``seed``:
        int or tuple of ints for the phase-1 noise. Returns (y, z, info) with y, z
        float64 and info = {"losses", "initial", "best"} (losses of this file).
        ``lam``, ``log_gain``: a variable-rate model's lambda and the log of the exact gain
        of the rate parameter the file will use."""
        lam = self.lam if lam is None else float(lam)
        if lam is None:
            raise ValueError("refinement needs a lambda")
        log_gain = float(log_gain) if self.variable else 0.0
        gain = math.exp(log_gain)
        lr = DEFAULT_LR if lr is None else lr
        valid = tuple(valid or x.shape[:2])
        centered = u_y is None  # rounding: y around its mean, z to integers
        rng = np.random.default_rng(np.random.SeedSequence(seed))
        y, z = np.asarray(y, np.float64), np.asarray(z, np.float64)
        state = {"y": (y, np.zeros_like(y), np.zeros_like(y)),
                 "z": (z, np.zeros_like(z), np.zeros_like(z))}
        steps = int(steps)
        first_exact = steps - max(1, int(round(steps * EXACT_FRACTION)))

        def exact_loss(y, z):
            if centered:
                return self.loss_and_gradients(x, y, z, None, None, lam, log_gain, valid)
            return self.loss_and_gradients(x, y, z, self._noise(y, u_y, gain),
                                           self._noise(z, u_z), lam, log_gain, valid)

        initial = exact_loss(y, z)[0]
        best, losses = (initial, y, z), []
        b1, b2, eps = 0.9, 0.999, 1e-8
        for i in range(steps):
            y, z = state["y"][0], state["z"][0]
            if i >= first_exact:
                loss, g_y, g_z = exact_loss(y, z)
                losses.append(loss)  # the loss of the latents before this step
                if loss < best[0]:
                    best = (loss, y, z)
            else:
                ny = rng.uniform(-0.5, 0.5, y.shape)
                nz = rng.uniform(-0.5, 0.5, z.shape)
                loss, g_y, g_z = self.loss_and_gradients(x, y, z, ny, nz, lam, log_gain, valid)
            lr_i = lr * 0.5 * (1.0 + math.cos(math.pi * i / steps))
            for key, grad in (("y", g_y), ("z", g_z)):
                p, m, v = state[key]
                m = b1 * m + (1 - b1) * grad
                v = b2 * v + (1 - b2) * grad * grad
                step = lr_i * (m / (1 - b1 ** (i + 1))) / (np.sqrt(v / (1 - b2 ** (i + 1))) + eps)
                state[key] = (p - step, m, v)
            if progress:
                progress(i + 1)
        y, z = state["y"][0], state["z"][0]
        losses.append(exact_loss(y, z)[0])
        if losses[-1] < best[0]:
            best = (losses[-1], y, z)
        info = {"losses": losses, "initial": initial, "best": best[0]}
        return best[1], best[2], info


def _conv3x3(x, kernel):
    """A 3x3 'same' convolution (cross-correlation, zeros outside) of x (H, W, C) with
    ``kernel`` (3, 3, C, O) as a (9 C, O) matrix: (H * W, O)."""
    H, W, C = x.shape
    p = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    cols = np.concatenate([p[i:i + H, j:j + W] for i in range(3) for j in range(3)], -1)
    return cols.reshape(H * W, 9 * C) @ kernel


def _conv3x3_input_gradient(g, kernel, shape):
    """The gradient with respect to x of ``_conv3x3``, given ``g`` (H * W, O)."""
    H, W, C = shape
    cols = (g @ kernel.T).reshape(H, W, 9, C)
    p = np.zeros((H + 2, W + 2, C), cols.dtype)
    for k in range(9):
        i, j = divmod(k, 3)
        p[i:i + H, j:j + W] += cols[:, :, k]
    return p[1:-1, 1:-1]


class ContextNets:
    """A context model's networks in float (``training/context.py``, residual inputs):
    corrected (mean, log-scale) of y from the hyper-synthesis' and y's decoder input, and
    the vector-Jacobian product of that map. Each group's network is 3x3 conv + ReLU, 1x1
    + ReLU, 1x1 (float32 products by default). With the checkerboard, a group's network
    runs once: each position takes the half it is coded in (the anchors the first, the
    others the second), and the two halves' first layers differ only by the products of
    the group's anchors and the flag, which the first half sees as zeros."""

    def __init__(self, weights, groups, checkerboard, dtype=np.float32):
        self.groups, self.checkerboard = list(groups), bool(checkerboard)
        self.dtype = dtype  # of the products (the tests' derivative check: float64)
        self.nets = []
        for g, n in enumerate(self.groups):
            (k0, b0), (k1, b1), (k2, b2) = [
                (weights[f"context/g{g}_conv{i}/kernel"].astype(dtype),
                 weights[f"context/g{g}_conv{i}/bias"].astype(dtype)) for i in range(3)]
            own = k0.shape[2] - (n + 1 if self.checkerboard else 0)  # log-scale + earlier
            k_own, k_half = (np.ascontiguousarray(k).reshape(-1, k0.shape[3])
                             for k in (k0[:, :, :own], k0[:, :, own:]))
            self.nets.append((k_own, k_half, b0, k1[0, 0], b1, k2[0, 0], b2))

    def __call__(self, mean, log_scale, y_dec):
        """(mean, log-scale before its lower bound, backward): ``log_scale`` is the
        hyper-synthesis' bounded below; ``backward(d mean, d log-scale)`` -> (d ``mean``,
        d ``log_scale``, d ``y_dec``)."""
        H, W, M = mean.shape
        dt = self.dtype
        top = np.minimum(log_scale, LOG_SCALE_MAX)
        scale = np.exp(top)
        r = (y_dec - mean) / scale
        ctx = np.clip(r, -CONTEXT_CLAMP, CONTEXT_CLAMP)
        anc = intnet.anchors(H, W)[..., None]
        second = (~anc).reshape(H * W, 1)
        flag = np.ones((H, W, 1))
        out_mean, out_log_scale = mean.copy(), log_scale.copy()
        tapes, a = [], 0
        for (k_own, k_half, b0, k1, b1, k2, b2), n in zip(self.nets, self.groups):
            b = a + n
            pre = _conv3x3(np.concatenate([top[..., a:b], ctx[..., :a]], -1).astype(dt), k_own)
            if self.checkerboard:  # the second half: its anchors' residuals and the flag
                half = np.concatenate([ctx[..., a:b] * anc, flag], -1).astype(dt)
                pre += _conv3x3(half, k_half) * second
            h0 = np.maximum(pre + b0, 0.0)
            h1 = np.maximum(h0 @ k1 + b1, 0.0)
            out = ((h1 @ k2 + b2) * CONTEXT_OUT_SCALE).reshape(H, W, 2 * n)
            out_mean[..., a:b] += out[..., :n] * scale[..., a:b]
            out_log_scale[..., a:b] += out[..., n:]
            tapes.append((h0, h1, out[..., :n]))
            a = b

        def backward(g_mean, g_log_scale):
            g_scale, g_top, g_ctx = np.zeros_like(mean), np.zeros_like(mean), np.zeros_like(mean)
            a = 0
            for (k_own, k_half, _, k1, _, k2, _), (h0, h1, d_mean), n in zip(
                    self.nets, tapes, self.groups):
                b = a + n
                g_scale[..., a:b] += g_mean[..., a:b] * d_mean
                g = np.concatenate([g_mean[..., a:b] * scale[..., a:b], g_log_scale[..., a:b]],
                                   -1).reshape(H * W, 2 * n).astype(dt) * CONTEXT_OUT_SCALE
                g = ((g @ k2.T) * (h1 > 0)) @ k1.T * (h0 > 0)
                g_own = _conv3x3_input_gradient(g, k_own, (H, W, n + a))
                g_top[..., a:b] += g_own[..., :n]
                g_ctx[..., :a] += g_own[..., n:]
                if self.checkerboard:
                    g_half = _conv3x3_input_gradient(g * second, k_half, (H, W, n + 1))
                    g_ctx[..., a:b] += g_half[..., :n] * anc
                a = b
            g_r = g_ctx * (np.abs(r) <= CONTEXT_CLAMP)
            g_scale -= g_r * r / scale
            g_top += g_scale * scale
            return (g_mean - g_r / scale, g_log_scale + g_top * (log_scale <= LOG_SCALE_MAX),
                    g_r / scale)
        return out_mean, out_log_scale, backward


class ContextRefiner(Refiner):
    """Refinement for a context model (``context.py``, residual context inputs): the
    hyperprior's, with y's mean and log-scale corrected by the context networks as in
    training (``ContextNets``: float, from the hyper-synthesis' parameters and y's decoder
    input), and the gradient through them: into the hyper-synthesis' parameters and into
    the decoder inputs the corrections were computed from. With rounding, the decoder
    input of each latent part is rounded around its mean as the decoder snaps it, so the
    parts are walked in coding order with the decoder's exact networks
    (``latent_codecs.ContextLatentCodec``) for it."""

    def __init__(self, model, lam=None, alpha=None, alpha_r=None):
        super().__init__(model, lam, alpha, alpha_r)
        card = model.card
        if card.get("context_inputs", "raw") != "residual":
            raise CodecError("refinement needs a context model with residual context inputs "
                             "(uqcodec 0.15 and later)")
        self.context = ContextNets(model.weights, [int(n) for n in card["groups"]],
                                   bool(card.get("checkerboard")))

    def _decoder_input(self, z_dec, mean, sy, ny, gain):
        if ny is not None:
            return sy + ny
        codec = self.model.latent_codec
        mean_index, scale_index = codec._hyper_params(z_dec)
        vy = np.empty_like(sy)
        grid, shared = np.zeros(sy.shape), {}
        for g, sl, pos, second in codec._parts(sy.shape):
            mi, _ = codec._params(g, sl, pos, second, mean_index, scale_index, grid, shared)
            m = mi * MEAN_STEP * gain
            v = m + np.rint(sy[..., sl][pos] - m)
            vy[..., sl][pos] = v
            codec._to_grid(grid, conditional_mean(v, self.alpha_r) / gain, (pos, sl),
                           mean_index, scale_index)
        return vy

    def _y_parameters(self, mean, log_scale, y_dec):
        mean, pre, backward = self.context(mean, log_scale, y_dec)

        def bounded_backward(g_mean, g_log_scale):  # the bound, as in training
            return backward(g_mean, _log_scale_bound_gradient(pre, g_log_scale))
        return mean, np.maximum(pre, LOG_SCALE_MIN), bounded_backward
