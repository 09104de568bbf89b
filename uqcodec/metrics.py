"""Image quality and rate-distortion metrics: PSNR, MS-SSIM, Bjontegaard delta rate.

NumPy/SciPy only (no TensorFlow), so evaluation of classic codecs stays light.
"""
import math

import numpy as np

# Wang, Simoncelli & Bovik (2003): weights of the five scales.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def psnr(a, b):
    """PSNR in dB of two uint8 arrays (MSE over all pixels and channels); inf if identical."""
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0 ** 2 / mse))


def _gauss(size, sigma):
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-x ** 2 / (2.0 * sigma ** 2))
    return g / g.sum()


def _blur_valid(x, g):
    """Separable Gaussian over the last two axes of a ...xHxW stack, 'valid' region only."""
    from scipy.ndimage import correlate1d
    k = len(g)
    lo, hi = k // 2, k - 1 - k // 2
    x = correlate1d(x, g, axis=-1, mode="constant")[..., lo:x.shape[-1] - hi]
    return correlate1d(x, g, axis=-2, mode="constant")[..., lo:x.shape[-2] - hi, :]


def _ssim_parts(x, y, g, max_val, k1, k2):
    """Per-channel mean SSIM and mean contrast-structure term of CxHxW float32 stacks."""
    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
    mx, my, sxy, sxx = _blur_valid(np.stack([x, y, x * y, x * x + y * y]), g)
    num0 = 2.0 * mx * my
    den0 = mx * mx + my * my
    lum = (num0 + c1) / (den0 + c1)
    cs = (2.0 * sxy - num0 + c2) / (sxx - den0 + c2)
    return (lum * cs).mean(axis=(1, 2), dtype=np.float64), cs.mean(axis=(1, 2), dtype=np.float64)


def _downsample(x):
    """2x2 average pooling of CxHxW; odd sizes are first padded by repeating the last
    row/column."""
    h, w = x.shape[1:]
    x = np.pad(x, ((0, 0), (0, h % 2), (0, w % 2)), mode="symmetric")
    return 0.25 * (x[:, 0::2, 0::2] + x[:, 1::2, 0::2] + x[:, 0::2, 1::2] + x[:, 1::2, 1::2])


def ms_ssim(a, b, max_val=255.0, filter_size=11, sigma=1.5, k1=0.01, k2=0.03,
            weights=MS_SSIM_WEIGHTS):
    """Multi-scale SSIM of two HxWxC (or HxW) images, the definition of
    tf.image.ssim_multiscale: Gaussian window, 'valid' filtering, contrast-structure at
    the first four scales and SSIM at the last, weighted geometric mean per channel,
    then the mean over channels. 1.0 for identical images.

    The 5-scale standard needs both sides >= 176 pixels for the 11-tap window; for
    smaller images the window shrinks to the smallest side at the coarsest scale
    (documented deviation; Kodak-sized images use the standard window)."""
    x = np.asarray(a, np.float32)
    y = np.asarray(b, np.float32)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {x.shape} vs {y.shape}")
    if x.ndim == 2:
        x, y = x[..., None], y[..., None]
    x = np.ascontiguousarray(x.transpose(2, 0, 1))  # float32 CxHxW, as TensorFlow computes
    y = np.ascontiguousarray(y.transpose(2, 0, 1))
    coarse = min(x.shape[1:])
    for _ in range(len(weights) - 1):
        coarse = (coarse + 1) // 2
    size = min(filter_size, coarse)
    if size < 1:
        raise ValueError("image too small for MS-SSIM")
    g = _gauss(size, sigma).astype(np.float32)
    terms = []
    for i in range(len(weights)):
        if i:
            x, y = _downsample(x), _downsample(y)
        ssim, cs = _ssim_parts(x, y, g, max_val, k1, k2)
        terms.append(np.maximum(cs, 0.0))
    terms[-1] = np.maximum(ssim, 0.0)
    per_channel = np.prod([t ** w for t, w in zip(terms, weights)], axis=0)
    return float(np.mean(per_channel))


# --- Bjontegaard delta rate ------------------------------------------------------------

BD_MIN_POINTS = 2
BD_METHOD = ("Bjontegaard: least-squares cubic polynomial of log(rate) as a function of PSNR "
             "(degree 1 or 2 for a curve of 2 or 3 points), integrated over the overlapping "
             "PSNR range; NaN when the overlap is empty or a curve has fewer than 2 distinct "
             "points")


def _curve(rate, dist):
    """Sorted by distortion, duplicates of the distortion averaged, non-finite dropped."""
    r = np.asarray(rate, np.float64)
    d = np.asarray(dist, np.float64)
    ok = np.isfinite(r) & np.isfinite(d) & (r > 0)
    r, d = r[ok], d[ok]
    uniq, inv = np.unique(d, return_inverse=True)
    logr = np.bincount(inv, np.log(r)) / np.bincount(inv)
    return uniq, logr


def _integral(d, logr, lo, hi, method):
    if method == "cubic":
        p = np.polyint(np.polyfit(d, logr, min(3, len(d) - 1)))
        return np.polyval(p, hi) - np.polyval(p, lo)
    from scipy.interpolate import PchipInterpolator
    return float(PchipInterpolator(d, logr).integrate(lo, hi))


def bd_rate(rate_a, psnr_a, rate_b, psnr_b, method="cubic", min_points=BD_MIN_POINTS):
    """Bjontegaard delta rate of curve B against anchor curve A, in percent (negative:
    B needs fewer bits for the same PSNR), over the PSNR range both curves cover.

    ``method``: "cubic" (default: Bjontegaard's least-squares cubic polynomial of
    log-rate over PSNR; a curve of 2 or 3 points gets a polynomial of degree 1 or 2)
    or "pchip" (piecewise cubic Hermite interpolation, exact at the points). Returns
    NaN when a curve has fewer than ``min_points`` distinct PSNR values or the PSNR
    ranges do not overlap."""
    da, la = _curve(rate_a, psnr_a)
    db, lb = _curve(rate_b, psnr_b)
    need = max(min_points, 2)
    if len(da) < need or len(db) < need:
        return math.nan
    lo, hi = max(da[0], db[0]), min(da[-1], db[-1])
    if not hi > lo:
        return math.nan
    avg = (_integral(db, lb, lo, hi, method) - _integral(da, la, lo, hi, method)) / (hi - lo)
    return float((math.exp(avg) - 1.0) * 100.0)


def bd_overlap(psnr_a, psnr_b):
    """The PSNR interval (lo, hi) both curves cover, or None."""
    a = [p for p in psnr_a if np.isfinite(p)]
    b = [p for p in psnr_b if np.isfinite(p)]
    if not a or not b:
        return None
    lo, hi = max(min(a), min(b)), min(max(a), max(b))
    return (float(lo), float(hi)) if hi > lo else None
