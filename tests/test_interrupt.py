"""Interrupted runs (Ctrl-C, disk full) leave no partial output or temporary files."""
import errno
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import uqcodec
from uqcodec import imageio
from conftest import DATA, ROOT, load, run_cli


def _big_png(path, side=1536):
    x = load("kodim05_crop.png")
    big = np.tile(x, (side // x.shape[0] + 1, side // x.shape[1] + 1, 1))[:side, :side]
    Image.fromarray(np.ascontiguousarray(big)).save(path)


def _rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _start(*args):
    env = dict(os.environ, UQCODEC_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "uqcodec.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _interrupt_when_busy(p, rss_mb=450, extra=1.0, timeout=300, ready=None):
    """SIGINT once TensorFlow and the model are loaded (coding has started), or once
    ``ready()`` is true."""
    ready = ready or (lambda: _rss_mb(p.pid) >= rss_mb)
    t = time.time()
    while p.poll() is None and not ready() and time.time() - t < timeout:
        time.sleep(0.05)
    time.sleep(extra)
    if p.poll() is not None:
        pytest.skip("the run finished before it could be interrupted")
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    return p.returncode, out, err


def test_ctrl_c_leaves_nothing_behind(tmp_path):
    src = tmp_path / "big.png"
    _big_png(src, 2048)
    p = _start("compress", str(src), "-o", str(tmp_path / "big.uq"), "--tile", "256")
    code, out, err = _interrupt_when_busy(p, extra=4.0)  # well into the tiles
    assert code == 130, err
    assert err.strip() == "uqcodec: error: interrupted"
    assert sorted(os.listdir(tmp_path)) == ["big.png"]


def test_ctrl_c_in_a_batch_leaves_only_complete_files(tmp_path):
    for i in range(6):
        _big_png(tmp_path / f"big{i}.png", 1024)
    p = _start("compress", str(tmp_path), "--seed", "1")
    # interrupt (the parent only, as `kill -INT` would) as soon as the first file is done
    code, out, err = _interrupt_when_busy(
        p, extra=0.0, ready=lambda: any(f.endswith(".uq") for f in os.listdir(tmp_path)))
    if code == 0:  # a heavily loaded machine may deliver the signal after the last file
        assert len([f for f in os.listdir(tmp_path) if f.endswith(".uq")]) == 6
    else:
        assert code == 130, err
    assert "Traceback" not in err
    time.sleep(1)  # the workers are gone: nothing is written after the exit
    files = sorted(os.listdir(tmp_path))
    assert not [f for f in files if f.endswith(".part") or f.startswith(".uqcodec-")]
    for f in files:
        if f.endswith(".uq"):
            uqcodec.read_header((tmp_path / f).read_bytes())  # complete, valid files only
    time.sleep(2)
    assert sorted(os.listdir(tmp_path)) == files


def test_write_failure_removes_the_temporary_file(tmp_path, monkeypatch):
    """Disk full (ENOSPC) or Ctrl-C in the middle of writing: simulated at the OS level."""
    real_fdopen = os.fdopen

    class Failing:
        def __init__(self, f, exc):
            self.f, self.exc = f, exc

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

        def write(self, data):
            self.f.write(data[:len(data) // 2])
            self.f.flush()
            raise self.exc

    for exc in (OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()):
        monkeypatch.setattr(imageio.os, "fdopen", lambda fd, mode: Failing(real_fdopen(fd, mode),
                                                                           exc))
        with pytest.raises(type(exc)):
            imageio.atomic_write(tmp_path / "out.uq", b"x" * 100000)
        assert os.listdir(tmp_path) == []
    monkeypatch.setattr(imageio.os, "fdopen", real_fdopen)


@pytest.fixture
def full_disk(tmp_path):
    """A tiny tmpfs, filled up (needs root and mount rights; skipped otherwise)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                       capture_output=True)
    if r.returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        try:
            with open(mnt / "filler", "wb") as f:
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
        except OSError:
            pass
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_disk_full(full_disk, tmp_path):
    src = os.path.join(DATA, "kodim05_crop.png")
    r = run_cli("compress", src, "-o", str(full_disk / "a.uq"), env={"UQCODEC_THREADS": "1"})
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert "No space left on device" in r.stderr and "Traceback" not in r.stderr
    assert os.listdir(full_disk) == ["filler"]
    # decompress too
    uq = tmp_path / "a.uq"
    uq.write_bytes(uqcodec.compress(src, seed=1))
    r = run_cli("decompress", str(uq), "-o", str(full_disk / "a.png"))
    assert r.returncode == 1 and "No space left on device" in r.stderr
    assert os.listdir(full_disk) == ["filler"]
