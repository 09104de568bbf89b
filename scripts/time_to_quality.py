#!/usr/bin/env python
"""Time to quality: Kodak bpp/PSNR after a fixed wall-time budget, textbook recipe vs ours.

    python scripts/time_to_quality.py --minutes 60 --out runs/ttq [--data DIR] [--kodak DIR]

Both recipes train the hyperprior (N=128, M=192, additive noise, lambda 0.01,
128x128 crops, batch 8, bfloat16 convolutions) from scratch at the same time, each
in its own process with one TensorFlow thread (one core each), so they see the same
machine. Then each is exported and measured on Kodak from real files (UN+Q and
UN+UQ). Prints a markdown table.

* textbook: Adam 1e-4, constant, no clipping;
* ours: linear warm-up (1,000 steps) to 5e-4, global-norm clipping at 1, cosine
  decay to 1/100 over the last 40% of the budget (the schedule follows wall time).
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

RECIPES = {
    "textbook": dict(lr=1e-4, warmup=0, decay_start=1.0, clip=None),
    "ours": dict(lr=5e-4, warmup=1000, decay_start=0.6, clip=1.0),
}


def train_one(name, args):
    from uqcodec import train
    train.train("hyperprior", "un", 0.01, os.path.join(args.out, name), data=args.data,
                steps=10 ** 7, minutes=args.minutes, progress=False, log_every=500,
                export=False, resume=True, **RECIPES[name])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--out", default=os.path.join("runs", "ttq"))
    ap.add_argument("--data", default=None)
    ap.add_argument("--kodak", default=os.path.join(ROOT, "..", "shared", "data", "kodak"))
    ap.add_argument("--recipe", choices=sorted(RECIPES), help=argparse.SUPPRESS)
    ap.add_argument("--measure-only", action="store_true")
    args = ap.parse_args()
    if args.recipe:
        return train_one(args.recipe, args)
    if not args.measure_only:
        env = dict(os.environ, UQCODEC_THREADS="1")
        procs = []
        for name in RECIPES:
            os.makedirs(os.path.join(args.out, name), exist_ok=True)
            log = open(os.path.join(args.out, name + ".log"), "w")
            cmd = [sys.executable, os.path.abspath(__file__), "--recipe", name, "--out", args.out,
                   "--minutes", str(args.minutes)] + (["--data", args.data] if args.data else [])
            procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
        for p in procs:
            p.wait()
    from uqcodec.evaluate import measure_model
    from uqcodec.export import export_model
    print(f"| recipe | steps in {args.minutes:g} min | steps/s | UN+Q bpp / PSNR | "
          "UN+UQ bpp / PSNR |")
    print("|---|---|---|---|---|")
    for name in RECIPES:
        run = os.path.join(args.out, name)
        with open(os.path.join(run, "train.json")) as f:
            state = json.load(f)
        model = os.path.join(args.out, "model-" + name)
        export_model(run, model, measure=False)
        q = measure_model(model, args.kodak, quantizer="round", progress=False)
        u = measure_model(model, args.kodak, quantizer="uq", progress=False)
        print(f"| {name} | {state['steps']} | {state['steps'] / state['wall_seconds']:.2f} | "
              f"{q['bpp']:.3f} / {q['psnr']:.2f} | {u['bpp']:.3f} / {u['psnr']:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
