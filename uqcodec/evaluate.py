"""Evaluation: PSNR and rate from real files written by the codec."""
import os

import numpy as np

from . import imageio


def psnr(a, b):
    """PSNR in dB of two uint8 arrays (over all channels)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)


def measure_model(model_dir, folder, seed=1, quantizer="uq", progress=True):
    """Mean bpp (real file size, header included) and mean PSNR over a folder."""
    from .api import compress_with_info, decompress
    from .data import list_images
    files = list_images(folder)
    bpps, psnrs = [], []
    it = files
    if progress:
        from tqdm import tqdm
        it = tqdm(files, desc=os.path.basename(model_dir), unit="img", leave=False)
    for i, f in enumerate(it):
        rgb, _, _ = imageio.read_image(f)
        data, _ = compress_with_info(rgb, model=model_dir, seed=seed + i, quantizer=quantizer)
        out = decompress(data, model=model_dir, rgb=True)
        bpps.append(8.0 * len(data) / (rgb.shape[0] * rgb.shape[1]))
        psnrs.append(psnr(rgb, out))
    return {"bpp": float(np.mean(bpps)), "psnr": float(np.mean(psnrs)), "images": len(files)}
