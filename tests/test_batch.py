"""Batch mode: many files and directories, two workers, failures reported at the end."""
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import DATA, run_cli
from test_cli import one_line_error

GOOD = ("kodim05_crop.png", "kodim15_odd.png", "kodim19_crop.png")


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for f in GOOD:
        shutil.copy(os.path.join(DATA, f), d / f)
    (d / "broken.png").write_text("not an image")
    (d / "notes.txt").write_text("ignored: not an image extension")
    return d


def test_directory_batch_reports_bad_file_at_the_end(folder):
    r = run_cli("compress", str(folder), "--seed", "3", env={"UQCODEC_THREADS": "1"})
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("uqcodec: error: ")
    assert "broken.png" in lines[0] and "not a readable image" in lines[0]
    assert "Traceback" not in r.stderr
    assert "compressed 3 of 4 files, 1 failed" in r.stdout
    for f in GOOD:
        uq = folder / f.replace(".png", ".uq")
        assert uq.read_bytes()[:4] == b"UQC\x89"
    assert not (folder / "broken.uq").exists() and not (folder / "notes.uq").exists()
    assert not [f for f in os.listdir(folder) if f.endswith(".part")]

    # decompress the folder: every .uq, with two workers; no clobbering of the sources
    for f in GOOD:
        os.remove(folder / f)
    (folder / "junk.uq").write_bytes(b"UQC\x89 junk")
    r = run_cli("decompress", str(folder), "--jobs", "2")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "junk.uq" in lines[0]
    for f in GOOD:
        a = np.asarray(Image.open(folder / f))
        assert a.shape[:2] == np.asarray(Image.open(os.path.join(DATA, f))).shape[:2]
    # same decoded pixels as a single-file run
    r = run_cli("decompress", str(folder / "kodim15_odd.uq"), "-o", str(folder / "single.png"))
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.asarray(Image.open(folder / "single.png")),
                                  np.asarray(Image.open(folder / "kodim15_odd.png")))


def test_several_files_and_no_clobbering(folder, tmp_path):
    a, b = folder / GOOD[0], folder / GOOD[2]
    (folder / "kodim19_crop.uq").write_bytes(b"precious")
    r = run_cli("compress", str(a), str(b), str(folder / "missing.png"), "--seed", "1")
    assert r.returncode == 1
    err = r.stderr.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("uqcodec: error: ") for e in err)
    assert "kodim19_crop.uq exists" in err[0] and "missing.png" in err[1]  # input order
    assert (folder / "kodim19_crop.uq").read_bytes() == b"precious"
    assert (folder / "kodim05_crop.uq").exists()
    # --force overwrites; every file succeeds -> exit code 0
    r = run_cli("compress", str(a), str(b), "--seed", "1", "--force")
    assert r.returncode == 0, r.stderr
    assert (folder / "kodim19_crop.uq").read_bytes()[:4] == b"UQC\x89"
    assert "compressed 2 of 2 files" in r.stdout


def test_output_option_needs_a_single_input(folder, tmp_path):
    r = run_cli("compress", str(folder / GOOD[0]), str(folder / GOOD[1]), "-o",
                str(tmp_path / "x.uq"))
    one_line_error(r)
    assert "only valid with a single input" in r.stderr
    one_line_error(run_cli("decompress", str(folder), "-o", str(tmp_path / "x.png")))
    assert not (tmp_path / "x.uq").exists() and not (tmp_path / "x.png").exists()


def test_empty_directory(tmp_path):
    r = run_cli("compress", str(tmp_path))
    one_line_error(r)
    assert "no input files" in r.stderr


def test_batch_same_bytes_as_single_file(tmp_path):
    """Workers run with UQCODEC_THREADS=1; the files are what single runs write."""
    for f in GOOD[:2]:
        shutil.copy(os.path.join(DATA, f), tmp_path / f)
    r = run_cli("compress", *(str(tmp_path / f) for f in GOOD[:2]), "--seed", "8")
    assert r.returncode == 0, r.stderr
    r = run_cli("compress", str(tmp_path / GOOD[0]), "-o", str(tmp_path / "one.uq"),
                "--seed", "8")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "one.uq").read_bytes() == (tmp_path / "kodim05_crop.uq").read_bytes()
