"""The command line: happy paths and every kind of bad input."""
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import DATA, run_cli, shipped


def one_line_error(r):
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("uqcodec: error:")
    assert "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    src = d / "photo.png"
    shutil.copy(os.path.join(DATA, "kodim05_crop.png"), src)
    r = run_cli("compress", str(src), "--seed", "42")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # no TensorFlow noise
    return d, src, d / "photo.uq"


def test_compress_decompress_info(encoded):
    d, src, uq = encoded
    assert uq.exists()
    r = run_cli("decompress", str(uq), "-o", str(d / "out.png"))
    assert r.returncode == 0, r.stderr
    out = np.asarray(Image.open(d / "out.png"))
    assert out.shape == (96, 160, 3)
    r = run_cli("info", str(uq), "--json")
    info = json.loads(r.stdout)
    assert info["width"] == 160 and info["height"] == 96 and info["seed"] == 42
    assert info["quantizer"] == "uq" and len(info["fingerprint"]) == 16
    r = run_cli("info", str(uq))
    assert "fingerprint" in r.stdout and r.returncode == 0


def test_models_json():
    r = run_cli("models", "--json")
    assert r.returncode == 0
    cards = json.loads(r.stdout)
    from uqcodec import families
    archs = {c["arch"] for c in cards}
    assert families.DEFAULT in archs and archs <= set(families.names())
    for c in cards:
        for k in ("name", "arch", "training", "lambda", "steps", "kodak_bpp", "kodak_psnr"):
            assert k in c
        assert c["training"] in ("un", "sr")
    assert run_cli("models").returncode == 0
    # the shipped models: the default variable-rate sr set and a variable-rate un set (each
    # one lambda range with no gap, each model measured at three qualities), fixed-rate un
    # models only inside the sr range (the paper's matched points), linear 4 + 4; every
    # model measured on Kodak, rate growing with lambda
    ladders, ranges = {}, {}
    for c in cards:
        if c.get("lambda_range"):
            bpp = [p["bpp"] for p in c["kodak_points"]]
            assert len(bpp) == 3 and bpp == sorted(bpp), c["name"]
            if c["arch"] == families.DEFAULT:
                ranges.setdefault(c["training"], []).append(c["lambda_range"])
            continue
        ladders.setdefault((c["arch"], c["training"]), []).append(c)
    for training in ("sr", "un"):
        rs = sorted(ranges.get(training, []))
        assert len(rs) >= 2 and all(a[1] >= b[0] for a, b in zip(rs, rs[1:])), training
    sr = sorted(ranges["sr"])
    assert sr[0][0] <= min(r[0] for r in ranges["un"]) < max(r[1] for r in ranges["un"]) <= sr[-1][1]
    need = {("linear", "sr"): 4, ("linear", "un"): 4}
    for key, n in need.items():
        lad = sorted(ladders.get(key, []), key=lambda c: c["lambda"])
        assert len({c["lambda"] for c in lad}) >= n, key
        bpp = [c["kodak_bpp"] for c in lad]
        assert None not in bpp and bpp == sorted(bpp), key
    assert all(sr[0][0] <= c["lambda"] <= sr[-1][1]
               for c in ladders.get((families.DEFAULT, "un"), []))


def test_help_is_fast_and_clean():
    """`uqcodec --help` imports neither TensorFlow nor onnxruntime nor the entropy coder
    (python -X importtime lists every module the real entry point imports), and answers
    in well under a second (measured 0.25 s here; importing TensorFlow alone takes
    several seconds, onnxruntime 0.4 s)."""
    import subprocess
    import sys
    import time
    r = run_cli("--help")
    assert r.returncode == 0 and "compress" in r.stdout and r.stderr == ""
    timed = []
    for _ in range(3):  # the best of three: the machine may be busy with other work
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-X", "importtime", "-m", "uqcodec.cli", "--help"],
                           capture_output=True, text=True, timeout=120)
        timed.append(time.perf_counter() - t)
        assert r.returncode == 0 and "compress" in r.stdout
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines()
                if line.startswith("import time:")}
    assert {"uqcodec", "click"} <= imported  # the listing is complete
    heavy = {m for m in imported
             if m.split(".")[0] in ("tensorflow", "onnxruntime", "constriction", "scipy",
                                    "matplotlib", "tensorflow_compression")}
    assert not heavy, sorted(heavy)
    assert min(timed) < 1.0, timed


def test_version_is_the_code_version_and_names_the_table_kernel():
    import uqcodec
    from uqcodec import exactmath
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.startswith(f"uqcodec {uqcodec.__version__} (")
    assert ("coding tables: compiled" in r.stdout) == (exactmath.KERNEL is not None)
    r = run_cli("--version", env={"UQCODEC_PURE_NUMPY": "1"})
    assert r.stdout.strip() == (f"uqcodec {uqcodec.__version__} "
                                "(coding tables: NumPy (no compiled kernel))")


def test_quality_and_round_quantizer(encoded, tmp_path):
    _, src, _ = encoded
    r = run_cli("compress", str(src), "-o", str(tmp_path / "q.uq"), "--quality", "1",
                "--quantizer", "round")
    assert r.returncode == 0, r.stderr
    r = run_cli("info", str(tmp_path / "q.uq"), "--json")
    assert json.loads(r.stdout)["quantizer"] == "round"
    r = run_cli("decompress", str(tmp_path / "q.uq"))
    assert r.returncode == 0 and (tmp_path / "q.png").exists()


def test_missing_file(tmp_path):
    r = run_cli("compress", str(tmp_path / "nope.png"))
    one_line_error(r)
    assert not (tmp_path / "nope.uq").exists()
    one_line_error(run_cli("decompress", str(tmp_path / "nope.uq")))
    one_line_error(run_cli("info", str(tmp_path / "nope.uq")))


def test_not_an_image(tmp_path):
    p = tmp_path / "text.png"
    p.write_text("this is not an image")
    one_line_error(run_cli("compress", str(p)))
    assert not (tmp_path / "text.uq").exists()


# The CLI run by root without the capabilities that let root ignore file permissions
# (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH): dropped from the bounding set, then exec, so
# the CLI starts without them (its permitted set is the bounding set): permissions
# apply to it as to any other user.
WITHOUT_ROOT_ACCESS = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2
for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
    if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0):
        sys.exit(f"prctl(PR_CAPBSET_DROP, {cap}): {os.strerror(ctypes.get_errno())}")
os.execv(sys.executable, [sys.executable, "-m", "uqcodec.cli"] + sys.argv[1:])
"""


def test_unreadable_file(encoded, tmp_path):
    """An input without read permission: one line naming it, for compress, decompress
    and info (as root too: the CLI then runs without root's file access)."""
    import subprocess
    import sys
    _, _, uq = encoded
    png, secret_uq = tmp_path / "secret.png", tmp_path / "secret.uq"
    shutil.copy(os.path.join(DATA, "kodim15_odd.png"), png)
    shutil.copy(uq, secret_uq)
    os.chmod(png, 0)
    os.chmod(secret_uq, 0)
    for args, src in ((["compress", str(png), "-o", str(tmp_path / "out.uq")], png),
                      (["decompress", str(secret_uq), "-o", str(tmp_path / "out.png")],
                       secret_uq),
                      (["info", str(secret_uq)], secret_uq)):
        if os.geteuid() == 0:  # root reads anything: run the CLI without that power
            r = subprocess.run([sys.executable, "-c", WITHOUT_ROOT_ACCESS, *args],
                               capture_output=True, text=True, timeout=300)
            assert "prctl" not in r.stderr, r.stderr
        else:
            r = run_cli(*args)
        one_line_error(r)
        assert r.stderr.strip().lower() == f"uqcodec: error: {src}: permission denied", args
    assert sorted(os.listdir(tmp_path)) == ["secret.png", "secret.uq"]


def test_not_a_uq_file(tmp_path):
    p = tmp_path / "x.uq"
    shutil.copy(os.path.join(DATA, "kodim15_odd.png"), p)
    r = run_cli("decompress", str(p))
    one_line_error(r)
    assert "not a .uq file" in r.stderr
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("damage", ["truncate", "flip", "extend", "header"])
def test_damaged_files(encoded, tmp_path, damage):
    _, _, uq = encoded
    data = bytearray(uq.read_bytes())
    if damage == "truncate":
        data = data[:len(data) - 10]
    elif damage == "flip":
        data[-5] ^= 0x10
    elif damage == "extend":
        data += b"\0\0\0\0"
    else:
        data[20] ^= 0xFF
    p = tmp_path / "bad.uq"
    p.write_bytes(bytes(data))
    r = run_cli("decompress", str(p))
    one_line_error(r)
    assert not (tmp_path / "bad.png").exists()


def test_unknown_model(encoded, tmp_path):
    _, src, uq = encoded
    one_line_error(run_cli("compress", str(src), "-o", str(tmp_path / "a.uq"), "--model", "nope"))
    assert not (tmp_path / "a.uq").exists()
    # a file that names a model that is not installed
    from uqcodec import container
    header, streams = container.unpack(uq.read_bytes())
    header.model = "not-installed"
    p = tmp_path / "other.uq"
    p.write_bytes(container.pack(header, streams))
    r = run_cli("decompress", str(p))
    one_line_error(r)
    assert "not installed" in r.stderr


def test_other_weights_fingerprint(encoded, tmp_path):
    """A file decoded with a model whose weights differ is refused, not garbled."""
    _, src, _ = encoded
    from uqcodec import zoo
    name = shipped("hyperprior")
    other = tmp_path / name
    shutil.copytree(zoo.resolve(name), other)
    w = dict(np.load(other / "weights.npz"))
    key = sorted(w)[0]
    w[key] = w[key] * 1.001
    np.savez(other / "weights.npz", **w)
    r = run_cli("compress", str(src), "-o", str(tmp_path / "a.uq"), "--model", name)
    assert r.returncode == 0
    r = run_cli("decompress", str(tmp_path / "a.uq"), "--model", str(other))
    one_line_error(r)
    assert "different version of model" in r.stderr and "weights, tables or coding" in r.stderr
    assert not (tmp_path / "a.png").exists()


def test_existing_output_needs_force(encoded, tmp_path):
    _, src, uq = encoded
    target = tmp_path / "exists.uq"
    target.write_bytes(b"precious")
    one_line_error(run_cli("compress", str(src), "-o", str(target)))
    assert target.read_bytes() == b"precious"
    r = run_cli("compress", str(src), "-o", str(target), "--force")
    assert r.returncode == 0 and target.read_bytes()[:4] == b"UQC\x89"
    png = tmp_path / "exists.png"
    png.write_bytes(b"precious")
    one_line_error(run_cli("decompress", str(uq), "-o", str(png)))
    assert png.read_bytes() == b"precious"
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".part")]


def test_outputs_honour_the_umask(encoded, tmp_path):
    """New .uq and .png files get the usual permissions (0644 under umask 022, 0600 under
    077), not the 0600 of the temporary file they are written through."""
    import subprocess
    import sys
    d, src, uq = encoded
    for mask, want in ((0o022, 0o644), (0o077, 0o600)):
        out_uq, out_png = tmp_path / f"m{mask:o}.uq", tmp_path / f"m{mask:o}.png"
        script = (f"import os, sys; os.umask({mask}); from uqcodec import cli; "
                  f"sys.argv = ['uqcodec'] + sys.argv[1:]; cli.run()")
        for args in (["compress", str(src), "-o", str(out_uq)],
                     ["decompress", str(out_uq), "-o", str(out_png)]):
            r = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                               text=True, timeout=300)
            assert r.returncode == 0, r.stderr
        assert out_uq.stat().st_mode & 0o777 == want
        assert out_png.stat().st_mode & 0o777 == want


def test_write_error_names_the_output_not_the_temporary_file(encoded):
    """A folder that exists but takes no new files (/proc; root ignores permissions)."""
    d, src, uq = encoded
    if not os.path.isdir("/proc/self"):
        pytest.skip("no /proc")
    for cmd, target in (("compress", "/proc/uqcodec-test.uq"), ("decompress", "/proc/x.png")):
        r = run_cli(cmd, str(src if cmd == "compress" else uq), "-o", target)
        one_line_error(r)
        assert target in r.stderr and ".part" not in r.stderr


def test_train_without_a_training_set_says_so_before_tensorflow(tmp_path):
    """A fresh clone has no ../shared: one line that --data is needed, TensorFlow not loaded."""
    import subprocess
    import sys
    script = ("import sys; from uqcodec import cli; from uqcodec.training import train; "
              f"train.DEFAULT_DATA = {str(tmp_path / 'absent')!r}; "
              "sys.argv = ['uqcodec', 'train', '--lambda', '0.01', '--out', "
              f"{str(tmp_path / 'm')!r}]\n"
              "try:\n    cli.main(sys.argv[1:], standalone_mode=False)\n"
              "except SystemExit as e:\n    code = e.code\n"
              "print('TF', any(m.startswith('tensorflow') for m in sys.modules))\n"
              "sys.exit(code)")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=300)
    one_line_error(r)
    assert "--data" in r.stderr
    assert r.stdout.strip() == "TF False"
    assert not (tmp_path / "m").exists()


def test_train_context_parts_need_a_context_family(tmp_path):
    """--context (which context parts a new context model has) on another family: one line."""
    pytest.importorskip("tensorflow_compression")
    r = run_cli("train", "--model", "hyperprior", "--context", "groups", "--lambda", "0.01",
                "--data", DATA, "--out", str(tmp_path / "m"), "--steps", "1")
    one_line_error(r)
    assert "--context" in r.stderr and not (tmp_path / "m").exists()


def test_models_lists_a_model_without_measurements(tmp_path):
    """`uqcodec models` lists a model whose card has no lambda and no Kodak numbers (a
    fresh export without ../shared) instead of failing on its format."""
    import json as _json
    src = os.path.join(DATA, "golden", "models", "factorized-sr-tiny")
    dst = tmp_path / "bare"
    shutil.copytree(src, dst)
    card = _json.loads((dst / "model.json").read_text())
    for k in ("lambda", "kodak_bpp", "kodak_psnr", "steps"):
        card.pop(k, None)
    (dst / "model.json").write_text(_json.dumps(card))
    r = run_cli("models", env={"UQCODEC_MODELS": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    line = next(l for l in r.stdout.splitlines() if "factorized-sr-tiny" in l)
    fields = line.lstrip("* ").split()
    assert fields[1:7] == ["factorized", "sr", "-", "-", "-", "-"], line
