"""PSNR, MS-SSIM (against TensorFlow's implementation) and the Bjontegaard delta rate."""
import io
import math

import numpy as np
import pytest
from PIL import Image

from conftest import load
from uqcodec.metrics import bd_rate, ms_ssim, psnr


def jpeg(rgb, q=20):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=q)
    return np.asarray(Image.open(buf).convert("RGB"))


def tf_ms_ssim(a, b, **kw):
    from uqcodec.training import _tf
    tf, _ = _tf.load()
    return float(tf.image.ssim_multiscale(tf.constant(a, tf.float32), tf.constant(b, tf.float32),
                                          255.0, **kw))


def test_psnr_known_values():
    a = np.zeros((4, 5, 3), np.uint8)
    assert psnr(a, a + 1) == pytest.approx(20 * math.log10(255), abs=1e-12)  # MSE 1
    b = a.copy()
    b[0, 0, 0] = 255  # MSE = 255^2 / 60
    assert psnr(a, b) == pytest.approx(10 * math.log10(60), abs=1e-12)
    assert psnr(a, a) == math.inf


def test_ms_ssim_matches_tensorflow():
    crop = load("kodim05_crop.png")  # 96x160: too small for the 11-tap window at 5 scales
    big = np.concatenate([crop, crop[::-1]], 0)
    big = np.concatenate([big, big[:, ::-1]], 1)  # 192x320, mirrored tiles
    dist = jpeg(big)
    assert ms_ssim(big, dist) == pytest.approx(tf_ms_ssim(big, dist), abs=1e-5)
    odd, dist_odd = big[:191, :317], dist[:191, :317]  # odd sizes: padded before pooling
    assert ms_ssim(odd, dist_odd) == pytest.approx(tf_ms_ssim(odd, dist_odd), abs=1e-5)
    # small image: the window shrinks to the coarsest scale (96 -> 6 rows)
    small = jpeg(crop, 30)
    assert ms_ssim(crop, small) == pytest.approx(tf_ms_ssim(crop, small, filter_size=6),
                                                 abs=1e-5)
    assert 0.5 < ms_ssim(big, dist) < 1.0


def test_ms_ssim_identical_is_one():
    crop = load("kodim19_crop.png")
    assert ms_ssim(crop, crop) == 1.0
    assert ms_ssim(crop[..., 0], crop[..., 0]) == 1.0


def test_ms_ssim_falls_with_distortion():
    crop = load("kodim19_crop.png")
    big = np.concatenate([crop, crop[::-1]], 0)
    big = np.concatenate([big, big[:, ::-1]], 1)  # 192x320: the standard 5-scale window
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(big.shape)
    noisy = [ms_ssim(big, np.clip(np.rint(big + s * noise), 0, 255).astype(np.uint8))
             for s in (2, 6, 18)]
    compressed = [ms_ssim(big, jpeg(big, q)) for q in (90, 50, 10)]
    for values in (noisy, compressed):
        assert 1.0 > values[0] > values[1] > values[2] > 0.3, values
    assert ms_ssim(big, jpeg(big, 50)) == ms_ssim(jpeg(big, 50), big)  # symmetric


def test_ms_ssim_of_flat_images_is_the_luminance_term():
    """Known value: for two flat images every contrast-structure term is 1 (no variance)
    and the last scale's SSIM is its luminance term l = (2 a b + C1) / (a^2 + b^2 + C1),
    C1 = (0.01 * 255)^2, so MS-SSIM is the mean over channels of l ** 0.1333 (the weight
    of the last scale)."""
    a, b = (100.0, 50.0, 200.0), (110.0, 50.0, 180.0)
    x = np.ones((192, 192, 3)) * np.array(a, np.uint8)
    y = np.ones((192, 192, 3)) * np.array(b, np.uint8)
    c1 = (0.01 * 255) ** 2
    want = np.mean([((2 * p * q + c1) / (p * p + q * q + c1)) ** 0.1333 for p, q in zip(a, b)])
    assert want < 1 - 1e-4  # far from 1 at the tolerance below
    assert ms_ssim(x.astype(np.uint8), y.astype(np.uint8)) == pytest.approx(want, abs=1e-6)
    assert ms_ssim(x[..., 0].astype(np.uint8), y[..., 0].astype(np.uint8)) == pytest.approx(
        ((2 * a[0] * b[0] + c1) / (a[0] ** 2 + b[0] ** 2 + c1)) ** 0.1333, abs=1e-6)


A_RATE = [0.2, 0.4, 0.8, 1.6, 2.4]
A_PSNR = [26.0, 29.0, 32.0, 35.0, 37.0]


@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_bd_rate_constant_factor(method):
    b = [r * 0.9 for r in A_RATE]
    assert bd_rate(A_RATE, A_PSNR, b, A_PSNR, method=method) == pytest.approx(-10.0, abs=1e-9)
    assert bd_rate(A_RATE, A_PSNR, A_RATE, A_PSNR, method=method) == pytest.approx(0.0,
                                                                                   abs=1e-12)
    c = [r * 1.25 for r in A_RATE]
    assert bd_rate(A_RATE, A_PSNR, c, A_PSNR, method=method) == pytest.approx(25.0, abs=1e-9)


def test_bd_rate_hand_computed_two_point_curves():
    # log rate is linear in PSNR: A = ln2 (p-30)/2, B = ln2 (p-30) - ln2 on [30, 32];
    # mean difference over the range: -ln2/2, so BD = 2^-1/2 - 1.
    v = bd_rate([1, 2], [30, 32], [0.5, 2], [30, 32])
    assert v == pytest.approx((2 ** -0.5 - 1) * 100, abs=1e-9)
    # only the overlap [31, 34] counts: B is A shifted by 1 dB to the right in PSNR
    v = bd_rate([1, 2, 4], [30, 32, 34], [1, 2, 4], [31, 33, 35])
    assert v == pytest.approx((2 ** -0.5 - 1) * 100, abs=1e-9)


def test_bd_rate_undefined_cases():
    assert math.isnan(bd_rate(A_RATE, A_PSNR, [1.0], [30.0]))  # one point
    assert math.isnan(bd_rate(A_RATE, A_PSNR, [1, 2], [40, 41]))  # no PSNR overlap
    assert math.isnan(bd_rate(A_RATE, A_PSNR, [1, 2], [30, 30]))  # one distinct PSNR
    # unsorted input and non-finite points are handled
    v = bd_rate(A_RATE[::-1], A_PSNR[::-1], [r * 0.9 for r in A_RATE] + [1.0],
                A_PSNR + [math.inf])
    assert v == pytest.approx(-10.0, abs=1e-9)
