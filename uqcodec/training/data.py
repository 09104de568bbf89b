"""Training data: random crops from a folder of photographs.

Big images are randomly downscaled once at load (removes JPEG artefacts and
gives scale variety); crops are drawn with NumPy from a seeded generator and
fed through tf.data with prefetch.
"""
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm")


def list_images(folder):
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                   if f.lower().endswith(EXTS))
    if not files:
        raise ValueError(f"no images in {folder}")
    return files


def load_scaled(path, rng_seed, min_short=400, max_short=1000, patch=128):
    """Load an RGB image, downscaled so its short side is random in [min_short, max_short]."""
    rng = np.random.default_rng(rng_seed)
    with Image.open(path) as img:
        w, h = img.size
        short = min(w, h)
        target = int(rng.uniform(min_short, max_short))
        target = max(min(target, short), patch)
        if img.format == "JPEG" and short >= 2 * target:
            img.draft("RGB", (w * target // short, h * target // short))
        img = img.convert("RGB")
        w, h = img.size
        short = min(w, h)
        if short > target:
            f = target / short
            img = img.resize((max(patch, round(w * f)), max(patch, round(h * f))),
                             Image.Resampling.LANCZOS)
        a = np.asarray(img, dtype=np.uint8)
    if a.shape[0] < patch or a.shape[1] < patch:
        a = np.pad(a, ((0, max(0, patch - a.shape[0])), (0, max(0, patch - a.shape[1])), (0, 0)),
                   mode="reflect")
    return a


def load_all(folder, seed=0, patch=128, workers=2):
    files = list_images(folder)
    with ThreadPoolExecutor(workers) as ex:
        return list(ex.map(lambda i: load_scaled(files[i], seed * 100003 + i, patch=patch),
                           range(len(files))))


def crop_batches(images, patch, batch, seed=0):
    """Infinite generator of (batch, patch, patch, 3) uint8 random crops with flips."""
    rng = np.random.default_rng(seed)
    weights = np.array([a.shape[0] * a.shape[1] for a in images], dtype=np.float64)
    weights /= weights.sum()
    while True:
        out = np.empty((batch, patch, patch, 3), np.uint8)
        for b, i in enumerate(rng.choice(len(images), size=batch, p=weights)):
            a = images[i]
            y = rng.integers(0, a.shape[0] - patch + 1)
            x = rng.integers(0, a.shape[1] - patch + 1)
            c = a[y:y + patch, x:x + patch]
            if rng.random() < 0.5:
                c = c[:, ::-1]
            out[b] = c
        yield out


def dataset(tf, images, patch, batch, seed=0):
    """tf.data pipeline of float32 [0,1] batches."""
    ds = tf.data.Dataset.from_generator(
        lambda: crop_batches(images, patch, batch, seed),
        output_signature=tf.TensorSpec((batch, patch, patch, 3), tf.uint8))
    ds = ds.map(lambda x: tf.cast(x, tf.float32) / 255.0)
    return ds.prefetch(8)
