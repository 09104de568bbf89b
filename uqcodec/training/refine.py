"""Encoder-side latent refinement: optimize one image's latents before coding them.

The analysis transform is amortized: one network guesses the latents of every
image. With the decoder fixed, the encoder may instead search for the latents
that minimize this image's own rate + lambda * MSE (Campos et al. 2019, Yang et
al. 2020). The decoder and the file format do not change; encoding takes
``steps`` forward and backward passes through the synthesis (and
hyper-synthesis) on top of one analysis pass.

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

Deterministic: the phase-1 noise comes from a stateless generator seeded from the
file's seed, so the same image, model and seed give the same file.
"""
import numpy as np

from . import _tf
from ..entropy import MEAN_STEP

DEFAULT_LR = 0.1  # in latent units (one quantization step = 1)
EXACT_FRACTION = 0.3  # share of the steps spent on this file's own loss


class Refiner:
    """Refinement for one hyperprior model (traced once, reused for every image and tile)."""

    def __init__(self, model, lam=None, alpha=None, alpha_r=None):
        """``lam``: the model's lambda (a variable-rate model: given with each call)."""
        tf, tfc = _tf.load()
        self.tf, self.tfc = tf, tfc
        self.model = model
        self.variable = hasattr(model, "rate")
        self.lam = None if lam is None else float(lam)
        self.alpha, self.alpha_r = alpha, alpha_r or alpha
        M, N = model.config["M"], model.config["N"]
        lat = lambda c: tf.TensorSpec([1, None, None, c], tf.float32)  # noqa: E731
        scalar = lambda dt=tf.float32: tf.TensorSpec([], dt)  # noqa: E731
        self._sig = [lat(3), lat(M), lat(N), lat(M), lat(N), lat(M), lat(N), scalar(), scalar(),
                     scalar(tf.int32), scalar(tf.int32), tf.TensorSpec([2], tf.int32), lat(M),
                     lat(N), scalar(), scalar()]
        self._fns = {}

    def _fn(self, exact, centered=False):
        """The traced step for (phase, quantizer): built on first use."""
        key = (exact, exact and centered)
        if key not in self._fns:
            self._fns[key] = self.tf.function(
                lambda *a: self._step_fn(*a, exact=key[0], centered=key[1]),
                input_signature=self._sig)
        return self._fns[key]

    def _s(self, t):
        return t if self.alpha is None else self.tfc.ops.soft_round(t, self.alpha)

    def _effective_noise(self, t, u):
        """The noise that turns s(t) into the real decoder input round(s(t) - u) + u."""
        s = self._s(t)
        return self.tf.round(s - u) + u - s

    def _centered_noise(self, y, z, nz, gain=1.0):
        """Rounding mode: the codec rounds y around its (snapped) predicted mean,
        y_hat = mean + round(s(y) - mean); the noise that gives it, for the current z
        (``y``: the gained latent of a variable-rate model, its mean times the gain)."""
        tf = self.tf
        z_dec = self._s(z) + nz
        if self.alpha_r is not None:
            z_dec = self.tfc.ops.soft_round_conditional_mean(z_dec, self.alpha_r)
        mean, _ = self.model.hyper_synthesis.mean_log_scale(z_dec)
        mean = tf.round(mean / MEAN_STEP) * MEAN_STEP * gain  # entropy.snap_mean
        s = self._s(y)
        return mean + tf.round(s - mean) - s

    def _step_fn(self, x, y, z, my, mz, vy, vz, lr, t, h, w, seed, uy, uz, lam, log_gain, exact,
                 centered):
        """One Adam step. Returns the new state and the loss *before* the step.
        ``log_gain``: a variable-rate model codes gain * y (the noise is the gained
        latent's); 0 for fixed-rate models."""
        tf = self.tf
        gain = tf.exp(log_gain)
        if exact:
            nz = self._effective_noise(z, uz)
            ny = (self._centered_noise(y * gain, z, nz, gain) if centered
                  else self._effective_noise(y * gain, uy))
        else:
            ny = tf.random.stateless_uniform(tf.shape(y), seed, -0.5, 0.5)
            nz = tf.random.stateless_uniform(tf.shape(z), seed + [0, 1 << 30], -0.5, 0.5)
        with tf.GradientTape() as tape:
            tape.watch([y, z])
            x_hat, bits_y, bits_z = self.model.relaxed(
                y, z, self.alpha, self.alpha_r, noise=(ny, nz),
                log_gain=log_gain if self.variable else None)
            err = tf.clip_by_value(x_hat[:, :h, :w], 0.0, 1.0) - x[:, :h, :w]
            mse = tf.reduce_mean(tf.square(err)) * (255.0 ** 2)
            loss = (bits_y + bits_z) / tf.cast(h * w, tf.float32) + lam * mse
        grads = tape.gradient(loss, [y, z])
        b1, b2, eps = 0.9, 0.999, 1e-8
        out = []
        for p, g, m, v in ((y, grads[0], my, vy), (z, grads[1], mz, vz)):
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * tf.square(g)
            step = lr * (m / (1 - b1 ** t)) / (tf.sqrt(v / (1 - b2 ** t)) + eps)
            out.append((p - step, m, v))
        (y, my, vy), (z, mz, vz) = out
        return y, z, my, mz, vy, vz, loss

    def __call__(self, x, y, z, u_y, u_z, steps, seed=0, lr=None, valid=None, progress=None,
                 lam=None, log_gain=0.0):
        """Refine the latents ``y`` (HxWxM) and ``z`` of the padded image ``x`` (HxWx3 in
        [0, 1]; only its top-left ``valid`` = (h, w) part counts in the distortion).
        ``u_y``, ``u_z``: the dither the file will use, or None for rounding; ``seed``:
        int or tuple of ints for the phase-1 noise. Returns (y, z, info) with y, z
        float64 and info = {"losses", "initial", "best"} (losses of this file).
        ``lam``, ``log_gain``: a variable-rate model's lambda and the log of the exact gain
        of the rate parameter the file will use."""
        tf = self.tf
        lam = self.lam if lam is None else float(lam)
        if lam is None:
            raise ValueError("refinement needs a lambda")
        lr = DEFAULT_LR if lr is None else lr
        h, w = valid or x.shape[:2]
        f32 = lambda a: tf.constant(np.asarray(a, np.float32)[None])  # noqa: E731
        centered = u_y is None  # rounding: y around its mean, z to integers
        if centered:
            u_y, u_z = np.zeros(np.shape(y)), np.zeros(np.shape(z))
        xt, yt, zt, uy, uz = f32(x), f32(y), f32(z), f32(u_y), f32(u_z)
        my, vy, mz, vz = (tf.zeros_like(a) for a in (yt, yt, zt, zt))
        s = int(np.random.SeedSequence(seed).generate_state(1)[0] & 0x7FFFFFFF)
        steps = int(steps)
        first_exact = steps - max(1, int(round(steps * EXACT_FRACTION)))

        def call(fn, i, lr_i):
            return fn(xt, yt, zt, my, mz, vy, vz, tf.constant(lr_i, tf.float32),
                      tf.constant(i + 1, tf.float32), tf.constant(h), tf.constant(w),
                      tf.constant([s, i]), uy, uz, tf.constant(lam, tf.float32),
                      tf.constant(log_gain, tf.float32))

        exact_fn, noisy_fn = self._fn(True, centered), self._fn(False)
        initial = float(call(exact_fn, 0, 0.0)[-1])
        best, losses = (initial, yt, zt), []
        for i in range(steps):
            exact = i >= first_exact
            lr_i = lr * 0.5 * (1.0 + np.cos(np.pi * i / steps))
            *state, loss = call(exact_fn if exact else noisy_fn, i, lr_i)
            if exact:  # loss of the latents before this step
                losses.append(float(loss))
                if losses[-1] < best[0]:
                    best = (losses[-1], yt, zt)
            yt, zt, my, mz, vy, vz = state
            if progress:
                progress(i + 1)
        losses.append(float(call(exact_fn, steps, 0.0)[-1]))
        if losses[-1] < best[0]:
            best = (losses[-1], yt, zt)
        info = {"losses": losses, "initial": initial, "best": best[0]}
        return best[1].numpy()[0].astype(np.float64), best[2].numpy()[0].astype(np.float64), info
