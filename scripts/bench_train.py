"""Training speed of one process against two MultiWorkerMirroredStrategy workers on this
machine (127.0.0.1, one TensorFlow thread per process): steps/s and images/s.

    python scripts/bench_train.py [--model hyperprior] [--patch 128] [--batch 8] [--steps 40]

Rows: one process with --batch crops; two workers with the same global batch (each
half of it); two workers with twice the global batch (each --batch, the work of one
process per worker). A worker's step is its forward and backward pass plus the
all-reduce of the gradients (and of a small control vector); the difference to one
process at the same per-worker batch is the cost of the all-reduce and of waiting
for the slower worker. Times exclude start-up and the first --warm steps (tracing).
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNER = """
import json, sys
from uqcodec.training import train
kw = json.loads(sys.argv[1])
train.train(kw.pop("arch"), "un", 0.01, kw.pop("out"), progress=False, log_every=1,
            export=False, ckpt_minutes=1e9, **kw)
"""


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def run(args, workers, batch, tmp):
    """Start the processes; time the chief's per-step log lines as they arrive."""
    hosts = [f"127.0.0.1:{p}" for p in free_ports(workers)]
    procs = []
    for i in range(workers):
        kw = dict(arch=args.model, out=os.path.join(tmp, f"w{workers}-b{batch}-{i}"),
                  data=args.data, steps=args.warm + args.steps, patch=args.patch, batch=batch,
                  bf16=args.bf16, strategy="multiworker" if workers > 1 else "one",
                  warmup=10)
        env = dict(os.environ, UQCODEC_THREADS=str(args.threads),
                   PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        if workers > 1:
            env["TF_CONFIG"] = json.dumps({"cluster": {"worker": hosts},
                                           "task": {"type": "worker", "index": i}})
        procs.append(subprocess.Popen([sys.executable, "-c", RUNNER, json.dumps(kw)], env=env,
                                      stdout=subprocess.PIPE if i == 0 else subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, text=True, cwd=ROOT))
    times = {}
    for line in procs[0].stdout:
        if line.startswith("step "):
            times[int(line.split()[1])] = time.perf_counter()
    for p in procs:
        if p.wait():
            raise SystemExit(f"a worker failed (exit code {p.returncode})")
    first, last = args.warm, args.warm + args.steps - 1
    steps_s = (last - first) / (times[last] - times[first])
    return steps_s, steps_s * batch


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    from uqcodec import families
    ap.add_argument("--model", default="hyperprior", choices=families.names())
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8, help="per process in the first row")
    ap.add_argument("--steps", type=int, default=40, help="timed steps")
    ap.add_argument("--warm", type=int, default=5, help="untimed first steps")
    ap.add_argument("--threads", type=int, default=1, help="TensorFlow threads per process")
    ap.add_argument("--bf16", action="store_true", help="bfloat16 convolutions (where they run)")
    ap.add_argument("--data", default=os.path.join(ROOT, "tests", "data"),
                    help="training images (default: the test images; speed does not "
                         "depend on them)")
    args = ap.parse_args()
    rows = [("1 process", 1, args.batch), ("2 workers, same global batch", 2, args.batch),
            ("2 workers, 2x global batch", 2, 2 * args.batch)]
    print(f"{args.model}, {args.patch}x{args.patch} crops, {args.threads} thread(s) per "
          f"process, {args.steps} timed steps after {args.warm}")
    print("| run | global batch | per worker | steps/s | images/s | ms/step |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="uqcodec-bench-") as tmp:
        for name, workers, batch in rows:
            sps, ips = run(args, workers, batch, tmp)
            print(f"| {name} | {batch} | {batch // workers} | {sps:.2f} | {ips:.1f} | "
                  f"{1000 / sps:.0f} |", flush=True)


if __name__ == "__main__":
    main()
