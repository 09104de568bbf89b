"""Stable format: committed .uq files decode to the committed results.

The files in tests/data/golden/ were written by scripts/make_golden.py (the
version-1 files are byte-identical to files written by uqcodec 0.1.0, before
tiling; version 1 and 2 files are frozen). Version-3 and 4 files must give exactly the
committed latents (the exact entropy path: the same bits on every machine) and
pixels within 1 level of the committed PNG (the float32 synthesis); version 1/2
files exactly the committed pixels (TensorFlow's oneDNN arithmetic, which they
were written with). If this fails, the decoder changed what existing files mean:
either fix the regression, or -- for a deliberate format change -- bump
container.VERSION, keep reading the old versions, and add files with
scripts/make_golden.py. The files are decoded with frozen copies of the two
models that wrote them (tests/data/golden/models), so the shipped zoo can move on
without touching them.
"""
import hashlib
import json
import os
import struct
import zlib

import numpy as np
import pytest

import importlib.util

import uqcodec
from uqcodec import container
from conftest import DATA, ROOT

_spec = importlib.util.spec_from_file_location(
    "make_golden", os.path.join(ROOT, "scripts", "make_golden.py"))
make_golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_golden)

GOLDEN = os.path.join(DATA, "golden")
GOLDEN_MODELS = os.path.join(GOLDEN, "models")
with open(os.path.join(GOLDEN, "golden.json")) as _f:
    TABLE = json.load(_f)


@pytest.fixture(autouse=True)
def golden_models(monkeypatch):
    monkeypatch.setenv("UQCODEC_MODELS", GOLDEN_MODELS)


def test_golden_set_is_complete(monkeypatch):
    from uqcodec import families, zoo
    kinds = {(v["model"].split("-")[0], v["quantizer"], v["version"]) for v in TABLE.values()}
    monkeypatch.delenv("UQCODEC_MODELS")  # the shipped models, not the golden copies
    shipped = {c["arch"] for c in zoo.list_models()}
    for f in families.all_families():  # a family that ships models: golden files of its versions
        if f.name not in shipped:
            continue
        for q in ("uq", "round"):
            for version in ((1, 2) if f.legacy else ()) + (container.VERSION,):
                assert (f.name, q, version) in kinds
    assert any(v["tile"] and v["shape"][0] > v["tile"] for v in TABLE.values())  # several tiles
    # variable rate: files with a negative and a positive rate parameter
    rates = {v.get("rate", 0) for v in TABLE.values()}
    assert min(rates) < 0 < max(rates)


@pytest.mark.parametrize("name", sorted(TABLE))
def test_golden_file_decodes_to_committed_pixels(name):
    from uqcodec import codec, zoo
    want = TABLE[name]
    data = open(os.path.join(GOLDEN, name), "rb").read()
    header = uqcodec.read_header(data)
    assert (header.model, header.version, header.quantizer, header.seed) == (
        want["model"], want["version"], want["quantizer"], want["seed"])
    # no skip: the golden models are frozen in tests/data/golden/models
    c = codec.load(zoo.find_by_name(want["model"]))
    installed = c.fingerprint if want["version"] >= 4 else c.fingerprint_v3
    assert installed == want["fingerprint"], (
        f"model {want['model']} was replaced (fingerprint {installed}, golden files made with "
        f"{want['fingerprint']}): regenerate with scripts/make_golden.py")
    out = uqcodec.decompress(data)
    assert list(out.shape) == want["shape"]
    if want["version"] < 3:
        assert hashlib.sha256(out.tobytes()).hexdigest() == want["sha256"]
        return
    from PIL import Image
    assert make_golden.latents_sha(c, data) == want["latents_sha256"]
    ref = np.asarray(Image.open(os.path.join(GOLDEN, name[:-3] + ".png")))
    assert np.abs(out.astype(int) - ref).max() <= 1


def _forge_version(data, version):
    """Set the version byte and recompute the header CRC (the file is otherwise intact)."""
    header, offset = container.parse_header(data)
    buf = bytearray(data)
    buf[4] = version
    struct.pack_into("<I", buf, offset - 8, zlib.crc32(bytes(buf[:offset - 8])))
    return bytes(buf)


@pytest.mark.parametrize("version", [0, container.VERSION + 1, 255])
def test_unknown_version_is_refused_clearly(version):
    data = open(os.path.join(GOLDEN, "hyperprior-sr-0.01_uq_v2.uq"), "rb").read()
    with pytest.raises(uqcodec.CodecError, match=f"unsupported .uq format version {version}"):
        uqcodec.decompress(_forge_version(data, version))


def test_version_byte_is_not_ignored():
    """A v2 file relabelled as v1 (valid CRC) is read with the v1 layout: it must fail
    cleanly or decode to the header's size, never be silently taken as v2."""
    data = open(os.path.join(GOLDEN, "linear-sr-0.01_uq_v2.uq"), "rb").read()
    with pytest.raises(uqcodec.CodecError):
        uqcodec.decompress(_forge_version(data, 1))


def test_encoder_still_writes_the_golden_v1_bytes():
    """Version-1 writing is kept (legacy.py) for the golden files: it must reproduce them
    exactly on this machine (TensorFlow's float arithmetic is not guaranteed across CPUs)."""
    from PIL import Image
    from uqcodec import zoo
    from uqcodec.training import legacy
    name = "linear-sr-0.01_uq_v1.uq"
    want = TABLE[name]
    img = np.asarray(Image.open(os.path.join(DATA, "kodim05_crop.png")).convert("RGB"))
    c = legacy.LegacyCodec(zoo.find_by_name(want["model"]))
    data, _ = c.encode(img[32:64, 56:104], want["seed"], "uq", "RGB", version=1)
    assert data == open(os.path.join(GOLDEN, name), "rb").read()


def test_current_encoder_writes_the_golden_bytes():
    """The encoder is deterministic: the same crop, model and seed give the golden bytes."""
    from PIL import Image
    from uqcodec import codec, zoo
    name = f"hyperprior-sr-0.01_uq_v{container.VERSION}.uq"
    want = TABLE[name]
    img = np.asarray(Image.open(os.path.join(DATA, "kodim05_crop.png")).convert("RGB"))
    c = codec.load(zoo.find_by_name(want["model"]))
    data, _ = c.encode(img[32:64, 56:104], want["seed"], "uq", "RGB")
    assert data == open(os.path.join(GOLDEN, name), "rb").read()


def _altered_model(tmp_path, name, tables=None, card=None, resave=False):
    """A copy of golden model ``name`` in tmp_path/models with ``tables(dict)`` /
    ``card(dict)`` applied; ``resave``: weights.npz rewritten with the same arrays."""
    import shutil
    dst = tmp_path / "models" / name
    shutil.copytree(os.path.join(GOLDEN_MODELS, name), dst)
    if tables:
        t = dict(np.load(dst / "tables.npz"))
        tables(t)
        np.savez_compressed(dst / "tables.npz", **t)
    if card:
        c = json.loads((dst / "model.json").read_text())
        card(c)
        (dst / "model.json").write_text(json.dumps(c))
    if resave:
        w = dict(np.load(dst / "weights.npz"))
        np.savez(dst / "weights.npz", **w)  # uncompressed: other bytes, same arrays
    return str(tmp_path / "models")


def _one_step_up(t):
    p = t["probs"].copy()
    p[0, :] = np.nextafter(p[0, :], np.float16(1))  # channel 0 moved by one float16 step
    t["probs"] = p


@pytest.mark.parametrize("alter", [
    {"tables": _one_step_up},
    {"card": lambda c: c.update(alpha=c["alpha"] + 0.5)},
    {"card": lambda c: c.update(training="un")},
])
def test_changed_tables_or_card_are_refused_not_decoded(tmp_path, monkeypatch, alter):
    """Format 4's fingerprint covers the tables and the card's coding fields: a model
    re-exported with one table entry or its alpha changed refuses the file with a clear
    error instead of decoding it to garbage (a tiled v3 file decoded to max pixel error
    255 with one float16 step in one table)."""
    from uqcodec import codec
    name = "hyperprior-sr-0.01_uq_v4_tiled.uq"
    data = open(os.path.join(GOLDEN, name), "rb").read()
    monkeypatch.setenv("UQCODEC_MODELS", _altered_model(tmp_path, TABLE[name]["model"], **alter))
    codec._cache.clear()
    try:
        with pytest.raises(uqcodec.CodecError, match="different version of model "
                           "'hyperprior-sr-0.01'.*weights, tables or coding settings differ"):
            uqcodec.decompress(data)
    finally:
        codec._cache.clear()


def test_fingerprint_is_over_values_not_file_bytes(tmp_path, monkeypatch):
    """Weights saved again with the same values (other zip bytes) and a card with alpha
    written as an integer keep the fingerprint: such a model still decodes version-4
    files exactly. Documentation fields of the card are not covered."""
    from uqcodec import codec
    name = "hyperprior-sr-0.01_uq_v4.uq"
    data = open(os.path.join(GOLDEN, name), "rb").read()
    def card(c):
        c.update(alpha=int(c["alpha"]) if c["alpha"] == int(c["alpha"]) else c["alpha"],
                 kodak_psnr=1.0, description="edited")
    monkeypatch.setenv("UQCODEC_MODELS", _altered_model(tmp_path, TABLE[name]["model"],
                                                        card=card, resave=True))
    codec._cache.clear()
    try:
        out = uqcodec.decompress(data)
    finally:
        codec._cache.clear()
    from PIL import Image
    ref = np.asarray(Image.open(os.path.join(GOLDEN, name[:-3] + ".png")))
    assert np.abs(out.astype(int) - ref).max() <= 1
