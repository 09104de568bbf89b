"""Interrupted runs (Ctrl-C, disk full) leave no partial output or temporary files."""
import errno
import os
import select
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import uqcodec
from uqcodec import container, imageio
from conftest import DATA, ROOT, load, run_cli


def _big_png(path, side=1536):
    x = load("kodim05_crop.png")
    big = np.tile(x, (side // x.shape[0] + 1, side // x.shape[1] + 1, 1))[:side, :side]
    Image.fromarray(np.ascontiguousarray(big)).save(path)


# The CLI's entry point (``uqcodec.cli.run``), with one line on a pipe of its own each
# time the encoder starts a tile: the dither of tile I is drawn when tile I starts, so
# "tile 1" says that tile 0 is coded. The codec runs unchanged; this only watches it.
TRACED_CLI = r"""
import os, sys
from uqcodec import quantization
fd = int(os.environ["UQCODEC_TEST_PROGRESS_FD"])
draw = quantization.Dither.__init__
def traced(self, seed, *args, **kw):
    tile = args[0] if args else kw.get("tile", 0)
    os.write(fd, b"tile %d\n" % int(tile))
    draw(self, seed, *args, **kw)
quantization.Dither.__init__ = traced
from uqcodec import cli
sys.argv = ["uqcodec"] + sys.argv[1:]
cli.run()
"""


def _start(*args, progress_fd=None):
    env = dict(os.environ, UQCODEC_THREADS="1")
    if progress_fd is None:
        cmd = [sys.executable, "-m", "uqcodec.cli", *args]
    else:
        cmd = [sys.executable, "-c", TRACED_CLI, *args]
        env["UQCODEC_TEST_PROGRESS_FD"] = str(progress_fd)
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            pass_fds=() if progress_fd is None else (progress_fd,))


def _interrupt_when(p, ready, timeout=300):
    """SIGINT to the process (the parent only, as `kill -INT` would) as soon as
    ``ready()``; it must still be running then."""
    t = time.time()
    try:
        while not ready():
            assert p.poll() is None, "the run ended before it could be interrupted: " + \
                p.stderr.read()[-2000:]
            assert time.time() - t < timeout, "the run never got ready to be interrupted"
            time.sleep(0.02)
        assert p.poll() is None, "the run ended before it could be interrupted"
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:  # a failed test leaves no run behind
            p.kill()
            p.communicate()
    return p.returncode, out, err


def test_ctrl_c_after_the_first_tile_leaves_nothing_behind(tmp_path):
    """Ctrl-C in the middle of a 64-tile image, once its first tile is coded: exit code
    130, one line, no output and no temporary file."""
    src = tmp_path / "big.png"
    _big_png(src, 1024)
    tiles = container.tile_count(1024, 1024, 128)
    assert tiles == 64
    rfd, wfd = os.pipe()
    try:
        p = _start("compress", str(src), "-o", str(tmp_path / "big.uq"), "--tile", "128",
                   progress_fd=wfd)
        os.close(wfd)
        wfd = None
        seen = []

        def first_tile_coded():
            if select.select([rfd], [], [], 0.05)[0]:
                seen.extend(int(v) for v in os.read(rfd, 1 << 16).split()[1::2])
            return any(t >= 1 for t in seen)
        code, out, err = _interrupt_when(p, first_tile_coded)
        while True:  # the tiles started before the signal took effect
            chunk = os.read(rfd, 1 << 16)
            if not chunk:
                break
            seen.extend(int(v) for v in chunk.split()[1::2])
    finally:
        os.close(rfd)
        if wfd is not None:
            os.close(wfd)
    assert code == 130, err
    assert err.strip() == "uqcodec: error: interrupted"
    assert 1 <= max(seen) < tiles - 1, seen  # stopped in the middle of the image
    assert sorted(os.listdir(tmp_path)) == ["big.png"]


def test_ctrl_c_in_a_batch_leaves_only_complete_files(tmp_path):
    for i in range(6):
        _big_png(tmp_path / f"big{i}.png", 1024)
    p = _start("compress", str(tmp_path), "--seed", "1")
    # interrupt as soon as the first file is done: two workers, each file about 2 s of
    # coding, so at least three files are still to do
    code, out, err = _interrupt_when(
        p, lambda: any(f.endswith(".uq") for f in os.listdir(tmp_path)))
    assert code == 130, err
    assert "Traceback" not in err
    time.sleep(1)  # the workers are gone: nothing is written after the exit
    files = sorted(os.listdir(tmp_path))
    assert not [f for f in files if f.endswith(".part") or f.startswith(".uqcodec-")]
    coded = [f for f in files if f.endswith(".uq")]
    assert 1 <= len(coded) < 6, files
    for f in coded:
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


# The CLI under a limit on the size of the files it writes (RLIMIT_FSIZE, inherited by
# the CLI it execs): a write past the limit fails with EFBIG ("File too large"), as a
# write to a full disk fails with ENOSPC. Python ignores SIGXFSZ, so the write returns
# the error instead of killing the process.
LIMITED_CLI = r"""
import os, resource, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
os.execv(sys.executable, [sys.executable, "-m", "uqcodec.cli"] + sys.argv[2:])
"""
FILE_SIZE_LIMIT = 1024  # bytes: below every output written here (.uq about 3 kB, PNG 40 kB)


@pytest.fixture(params=["tmpfs", "file-size-limit"])
def full_disk(request, tmp_path):
    """(folder, run, error): a folder where no output fits, the CLI runner to use there,
    and the error the operating system gives. "tmpfs": a tiny tmpfs, filled up (needs
    root and mount rights); "file-size-limit": an ordinary folder, the CLI limited to
    files of FILE_SIZE_LIMIT bytes (runs anywhere)."""
    if request.param == "file-size-limit":
        folder = tmp_path / "out"
        folder.mkdir()

        def limited(*args):
            return subprocess.run([sys.executable, "-c", LIMITED_CLI, str(FILE_SIZE_LIMIT),
                                   *args], capture_output=True, text=True, cwd=ROOT,
                                  env=dict(os.environ, UQCODEC_THREADS="1"), timeout=600)
        yield folder, limited, "File too large"
        return
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                       capture_output=True)
    if r.returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root and mount rights; "
                    "the file-size-limit case runs instead)")
    try:
        try:
            with open(mnt / "filler", "wb") as f:
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
        except OSError:
            pass
        yield mnt, lambda *args: run_cli(*args, env={"UQCODEC_THREADS": "1"}), \
            "No space left on device"
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_disk_full(full_disk, tmp_path):
    """A write that fails (disk full, file too large): exit code 1, one line that names
    the output file and the system's error, no output and no temporary file; for
    compress and decompress."""
    folder, cli, error = full_disk
    before = sorted(os.listdir(folder))
    src = os.path.join(DATA, "kodim05_crop.png")
    uq = tmp_path / "a.uq"
    uq.write_bytes(uqcodec.compress(src, seed=1))
    for args, out in ((["compress", src], folder / "a.uq"),
                      (["decompress", str(uq)], folder / "a.png")):
        r = cli(*args, "-o", str(out))
        assert r.returncode == 1, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("uqcodec: error: "), r.stderr
        assert error in lines[0] and "Traceback" not in r.stderr
        assert str(out) in lines[0], lines[0]  # names the output, not a temporary file
        assert ".part" not in lines[0]
        assert sorted(os.listdir(folder)) == before
