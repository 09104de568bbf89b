"""The Pillow plugin (uqcodec/pillow_plugin.py): after ``import uqcodec``,
``Image.open`` reads a .uq file's size and mode from its header and decodes on
``load()``; ``im.save("x.uq", ...)`` encodes with the options of ``uqcodec.compress``."""
import io
import os

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

import uqcodec
from uqcodec import api
from conftest import DATA, load

CROP = os.path.join(DATA, "kodim05_crop.png")


def _psnr(a, b):
    return 10 * np.log10(255.0 ** 2 / np.mean((a.astype(float) - b.astype(float)) ** 2))


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A .uq file of the crop (default model, fixed seed) and its bytes."""
    path = tmp_path_factory.mktemp("pillow") / "crop.uq"
    data = uqcodec.compress(load("kodim05_crop.png"), seed=11)
    path.write_bytes(data)
    return path, data


def test_registered_with_pillow():
    assert Image.registered_extensions()[".uq"] == "UQ"
    assert Image.MIME["UQ"] == "image/x-uq"
    uqcodec.register_pillow()  # again: idempotent
    assert Image.ID.count("UQ") == 1


def test_open_reads_the_header_and_decodes_on_load(written, monkeypatch):
    path, data = written
    calls = []
    real = api.decompress
    monkeypatch.setattr(api, "decompress", lambda *a, **k: calls.append(1) or real(*a, **k))
    with Image.open(path) as im:
        header = uqcodec.read_header(data)
        assert im.format == "UQ" and im.get_format_mimetype() == "image/x-uq"
        assert im.size == (header.width, header.height) == (160, 96) and im.mode == "RGB"
        assert im.info["model"] == header.model and im.info["seed"] == 11
        assert calls == []  # nothing decoded yet
        im.load()
        assert calls == [1]
        pixels = np.asarray(im)
    assert np.array_equal(pixels, real(data))  # what uqcodec.decompress gives
    assert _psnr(pixels, load("kodim05_crop.png")) > 28  # a real reconstruction


def test_truncated_file_has_a_size_but_does_not_load(written, tmp_path):
    path, data = written
    cut = tmp_path / "cut.uq"
    cut.write_bytes(data[:len(data) // 2])
    with Image.open(cut) as im:
        assert im.size == (160, 96) and im.mode == "RGB"  # the header is intact
        with pytest.raises(OSError, match="truncated"):
            im.load()


def test_a_broken_header_is_not_identified(written, tmp_path):
    path, data = written
    bad = bytearray(data)
    bad[10] ^= 0xFF  # in the model name: header CRC mismatch
    (tmp_path / "bad.uq").write_bytes(bytes(bad))
    (tmp_path / "short.uq").write_bytes(data[:12])
    for name in ("bad.uq", "short.uq"):
        with pytest.raises(UnidentifiedImageError):
            Image.open(tmp_path / name)


def test_save_passes_the_options_to_the_encoder(tmp_path):
    src = Image.open(CROP)
    rgb = np.asarray(src.convert("RGB"))
    sizes = {}
    for q in (2, 8):
        src.save(tmp_path / f"q{q}.uq", quality=q, seed=5)
        data = (tmp_path / f"q{q}.uq").read_bytes()
        assert data == uqcodec.compress(rgb, quality=q, seed=5)  # the same bytes as the API
        sizes[q] = len(data)
    assert sizes[2] < sizes[8]
    # a model by name, and a target size
    model = uqcodec.read_header((tmp_path / "q8.uq").read_bytes()).model
    buf = io.BytesIO()
    src.save(buf, format="UQ", model=model, seed=7)
    h = uqcodec.read_header(buf.getvalue())
    assert (h.model, h.seed) == (model, 7)
    src.save(tmp_path / "t.uq", target_bpp=1.0, seed=5)
    data = (tmp_path / "t.uq").read_bytes()
    assert data == uqcodec.compress(rgb, target_bpp=1.0, seed=5)
    assert abs(8 * len(data) / (160 * 96) - 1.0) < 0.05
    with pytest.raises(uqcodec.CodecError):
        src.save(tmp_path / "x.uq", quality="best")
    assert not (tmp_path / "x.uq").exists()  # Pillow removes a file it failed to write


def test_round_trip_through_pillow(tmp_path):
    src = Image.open(CROP).convert("RGB")
    src.save(tmp_path / "r.uq", quality=9)
    with Image.open(tmp_path / "r.uq") as im:
        out = np.asarray(im.convert("RGB"))
    assert out.shape == (96, 160, 3)
    assert _psnr(out, np.asarray(src)) > 33


def test_grayscale_stays_grayscale(tmp_path):
    gray = Image.open(CROP).convert("L")
    gray.save(tmp_path / "g.uq", quality=7, seed=3)
    data = (tmp_path / "g.uq").read_bytes()
    assert uqcodec.read_header(data).mode == "L"
    with Image.open(tmp_path / "g.uq") as im:
        assert im.mode == "L" and im.size == gray.size
        out = np.asarray(im)
    assert out.shape == (96, 160) and np.array_equal(out, uqcodec.decompress(data))
    assert _psnr(out, np.asarray(gray)) > 28


def test_alpha_is_dropped_with_a_warning(tmp_path):
    rgba = Image.open(CROP).convert("RGBA")
    with pytest.warns(UserWarning, match="alpha"):
        rgba.save(tmp_path / "a.uq", seed=1)
    with Image.open(tmp_path / "a.uq") as im:
        assert im.mode == "RGB"
