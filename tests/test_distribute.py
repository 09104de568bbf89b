"""Training under tf.distribute on this machine: two MultiWorkerMirroredStrategy workers on
127.0.0.1 (one TensorFlow thread each) against one process with the same global batch,
SIGTERM to the chief and --resume, the bfloat16 fallback, and TF_CONFIG roles."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import uqcodec
from conftest import DATA, ROOT, load

STEPS = 4
# Same gradients up to float summation order: measured max |difference| 1.9e-7 after 4
# steps (2026-12-02, this CPU); the weights themselves move by about 1e-3 per step.
TOL = 1e-5
ARGS = ["--model", "linear", "--M", "24", "--lambda", "0.01", "--data", DATA, "--patch", "64",
        "--batch", "2", "--lr", "1e-3", "--warmup", "2", "--no-bf16", "--no-measure"]
KW = dict(data=DATA, patch=64, batch=2, lr=1e-3, warmup=2, progress=False, bf16=False,
          export=False, log_every=1000)


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _start_workers(tmp, args, run_dirs, out):
    """Two `uqcodec train --strategy multiworker` processes, worker 0 the chief."""
    hosts = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    scratch = os.path.join(tmp, "scratch")  # the workers' temporary files
    os.makedirs(scratch, exist_ok=True)
    procs = []
    for i in range(2):
        env = dict(os.environ, UQCODEC_THREADS="1", TMPDIR=scratch,
                   TF_CONFIG=json.dumps({"cluster": {"worker": hosts},
                                         "task": {"type": "worker", "index": i}}))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "uqcodec.cli", "train", *args, "--strategy", "multiworker",
             "--run-dir", run_dirs[i], "--out", out[i]],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def _finish(procs, timeout=600):
    res = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            res.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for code, out, err in res:
        assert code == 0, err[-3000:]
        assert "Traceback" not in err
    return res


def _weights(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A common start for every run (fresh initialisations differ between strategies)."""
    from uqcodec.training import train
    from uqcodec.training.export import export_model
    tmp = tmp_path_factory.mktemp("base")
    train.train("linear", "un", 0.01, str(tmp / "run"), steps=1, model_args={"M": 24}, **KW)
    export_model(str(tmp / "run"), str(tmp / "base"), measure=False)
    return str(tmp / "base")


@pytest.fixture(scope="module")
def reference(base, tmp_path_factory):
    """STEPS steps of one process with global batch 2 (sr, data split slice): weights."""
    from uqcodec.training import train
    ref = str(tmp_path_factory.mktemp("ref") / "run")
    train.train("linear", "sr", 0.01, ref, steps=STEPS, init_from=base, seed=3,
                data_split="slice", strategy="one", **KW)
    return _weights(os.path.join(ref, "weights.npz"))


def _compare(weights, reference, base, what):
    start = _weights(os.path.join(base, "weights.npz"))
    diff = max(float(np.abs(weights[k] - reference[k]).max()) for k in reference)
    moved = min(float(np.abs(reference[k] - start[k]).max()) for k in reference)
    print(f"max |weights({what}) - weights(1 process)| = {diff:.2e}; "
          f"smallest move of a weight array = {moved:.2e}")
    assert diff <= TOL
    assert moved > 100 * TOL


def test_two_workers_compute_what_one_process_computes(tmp_path, base, reference):
    """2 workers x 1 crop == 1 process x 2 crops (same crops and noise: --data-split
    slice): the all-reduced gradient is the gradient of the global batch."""
    args = ARGS + ["--mode", "sr", "--steps", str(STEPS), "--init-from", base, "--seed", "3",
                   "--data-split", "slice"]
    runs = [str(tmp_path / "host0" / "run"), str(tmp_path / "host1" / "run")]
    outs = [str(tmp_path / "host0" / "model"), str(tmp_path / "host1" / "model")]
    res = _finish(_start_workers(str(tmp_path), args, runs, outs))
    assert "worker 1 of 2 done" in res[1][1]
    # only the chief wrote files: checkpoint, summaries, weights, state and the export
    assert not os.path.exists(tmp_path / "host1")
    # the other worker's checkpoint (a throwaway) is gone
    assert not [f for f in os.listdir(tmp_path / "scratch") if f.startswith("uqcodec-")]
    assert {"ckpt", "tb", "train.json", "weights.npz"} <= set(os.listdir(runs[0]))
    assert os.listdir(os.path.join(runs[0], "tb"))
    with open(os.path.join(runs[0], "train.json")) as f:
        state = json.load(f)
    assert (state["steps"], state["strategy"], state["workers"], state["replicas"]) == \
        (STEPS, "multiworker", 2, 2)
    # the exported model codes
    x = load("kodim05_crop.png")[:64, :96]
    data, info = uqcodec.compress_with_info(x, model=outs[0], seed=5, reconstruct=True)
    np.testing.assert_array_equal(uqcodec.decompress(data, model=outs[0]), info["reconstruction"])
    # the same steps in one process, global batch 2
    _compare(_weights(os.path.join(runs[0], "weights.npz")), reference, base, "2 workers")


MIRRORED = """
import sys
from uqcodec.training import _tf
tf, _ = _tf.load()
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from uqcodec.training import train
kw = dict(data=sys.argv[3], patch=64, batch=2, lr=1e-3, warmup=2, progress=False, bf16=False,
          export=False, log_every=1000)
state = train.train("linear", "sr", 0.01, sys.argv[2], steps=int(sys.argv[4]), init_from=sys.argv[1],
                    seed=3, data_split="slice", strategy="mirrored",
                    devices=["/cpu:0", "/cpu:1"], **kw)
assert state["replicas"] == 2, state
"""


def test_mirrored_replicas_compute_what_one_process_computes(tmp_path, base, reference):
    """MirroredStrategy over two (logical) CPU devices of one process, as over two GPUs."""
    run = str(tmp_path / "run")
    r = subprocess.run([sys.executable, "-c", MIRRORED, base, run, DATA, str(STEPS)], cwd=ROOT,
                       env=dict(os.environ, UQCODEC_THREADS="1"), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    _compare(_weights(os.path.join(run, "weights.npz")), reference, base, "2 mirrored replicas")


def test_sigterm_to_the_chief_then_resume(tmp_path, base):
    """SIGTERM to the chief mid-run: both workers stop after the same step, the chief's
    checkpoint is usable, and --resume under the same strategy continues from it (the
    first run on a time budget: the schedules follow the chief's clock)."""
    run = str(tmp_path / "run")  # one run directory, as on a shared file system
    out = str(tmp_path / "model")
    args = ARGS + ["--mode", "un", "--init-from", base]
    procs = _start_workers(str(tmp_path), args + ["--steps", "1000000", "--minutes", "30"],
                           [run, run], [out, out])
    tb = os.path.join(run, "tb")
    t = time.time()
    while not (os.path.isdir(tb) and os.listdir(tb)) and time.time() - t < 400:
        assert all(p.poll() is None for p in procs), procs[0].stderr.read()[-3000:]
        time.sleep(0.2)
    time.sleep(2.0)  # a few steps in
    procs[0].send_signal(signal.SIGTERM)
    _finish(procs)
    with open(os.path.join(run, "train.json")) as f:
        stopped = json.load(f)["steps"]
    assert 0 < stopped < 1000000
    assert os.path.exists(os.path.join(run, "ckpt", "checkpoint"))
    procs = _start_workers(str(tmp_path), args + ["--steps", str(stopped + 3), "--resume"],
                           [run, run], [out, out])
    _finish(procs)
    with open(os.path.join(run, "train.json")) as f:
        assert json.load(f)["steps"] == stopped + 3
    x = load("kodim05_crop.png")[:64, :64]
    data = uqcodec.compress(x, model=out, seed=1)
    assert uqcodec.decompress(data, model=out).shape == x.shape


def test_bf16_falls_back_to_float32_where_it_cannot_run(tmp_path, capsys):
    """--bf16 (the default) trains everywhere: in bfloat16 where TensorFlow runs its
    convolutions, else in float32 with a one-line warning."""
    from uqcodec.training import _tf, train
    tf, _ = _tf.load()
    # where bfloat16 runs, from the CPU itself: TensorFlow takes bfloat16 convolutions
    # on CPUs with AVX-512 or AVX-NE-CONVERT (tensorflow/core/util/util.cc,
    # IsBF16SupportedByOneDNNOnThisCPU); elsewhere its graph optimizer emits a fused
    # convolution without a bfloat16 kernel
    with open("/proc/cpuinfo") as f:
        flags = set(next(line for line in f if line.startswith("flags")).split(":")[1].split())
    works = bool(flags & {"avx512f", "avx_ne_convert"})
    assert train.bf16_convolutions_work(tf) is works
    state = train.train("linear", "un", 0.01, str(tmp_path / "r"), steps=1,
                        model_args={"M": 24}, **dict(KW, bf16=True))
    err = capsys.readouterr().err
    assert state["bf16"] is works and state["steps"] == 1
    warnings = [line for line in err.splitlines() if "bfloat16" in line]
    assert warnings == ([] if works else
                        ["uqcodec: warning: bfloat16 convolutions do not run on this CPU; "
                         "training in float32"])


def test_tf_config_roles(monkeypatch):
    from uqcodec.training import train
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert train.worker_role("one") == (0, 1, True)
    assert train.resolve_strategy("one") == "one"
    hosts = ["a:1", "b:2", "c:3"]
    for task, role in [({"type": "worker", "index": 0}, (0, 3, True)),
                       ({"type": "worker", "index": 2}, (2, 3, False))]:
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": hosts},
                                                    "task": task}))
        assert train.resolve_strategy("auto") == "multiworker"
        assert train.worker_role("auto") == role
        assert train.worker_role("one") == (0, 1, True)  # not a cluster run
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["a:1"], "worker": hosts[1:]},
                                                "task": {"type": "worker", "index": 0}}))
    assert train.worker_role("multiworker") == (1, 3, False)
    with pytest.raises(ValueError, match="unknown strategy"):
        train.resolve_strategy("ps")
