#!/usr/bin/env python
"""Time to quality: Kodak bpp/PSNR after a fixed wall-time budget, textbook recipe vs ours.

    python scripts/time_to_quality.py --minutes 60 --out runs/ttq [--recipes textbook,ours,fast]
                                      [--alone] [--data DIR] [--kodak DIR]

The recipes train the hyperprior (additive noise, lambda 0.01, 128x128 crops,
batch 8, bfloat16 convolutions) from scratch for the same wall time. By default
they run at the same time, each in its own process with one TensorFlow thread (one
core each), so they see the same machine; with --alone one after the other with
all cores. Then each is exported and measured on Kodak from real files (UN+Q and
UN+UQ). Prints a markdown table.

* textbook: N=128, M=192, Adam 1e-4, constant, no clipping;
* ours: N=128, M=192, linear warm-up (1,000 steps) to 5e-4, global-norm clipping
  at 1, cosine decay to 1/100 over the last 40% of the budget (the schedule
  follows wall time);
* fast: the schedule of "ours" with the smaller model N=64, M=128 (about 3x the
  steps per second on this CPU) and latent gain 16 (the default of `uqcodec
  train` for new hyperprior models).
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from uqcodec.training.train import NEW_MODEL  # noqa: E402  (no TensorFlow at import)

BIG = {"N": 128, "M": 192, "latent_gain": 1.0}
RECIPES = {
    "textbook": dict(lr=1e-4, warmup=0, decay_start=1.0, clip=None, model_args=BIG),
    "ours": dict(lr=5e-4, warmup=1000, decay_start=0.6, clip=1.0, model_args=BIG),
    "fast": dict(lr=5e-4, warmup=1000, decay_start=0.6, clip=1.0,
                 model_args=dict(NEW_MODEL["hyperprior"])),
}


def train_one(name, args):
    from uqcodec.training import train
    train.train("hyperprior", "un", 0.01, os.path.join(args.out, name), data=args.data,
                steps=10 ** 7, minutes=args.minutes, progress=False, log_every=500,
                export=False, resume=True, **RECIPES[name])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--out", default=os.path.join("runs", "ttq"))
    ap.add_argument("--data", default=None)
    ap.add_argument("--kodak", default=os.path.join(ROOT, "..", "shared", "data", "kodak"))
    ap.add_argument("--recipes", default="textbook,fast",
                    help="comma-separated: " + ", ".join(RECIPES))
    ap.add_argument("--alone", action="store_true",
                    help="one recipe after the other, each with all cores")
    ap.add_argument("--recipe", choices=sorted(RECIPES), help=argparse.SUPPRESS)
    ap.add_argument("--measure-only", action="store_true")
    args = ap.parse_args()
    if args.recipe:
        return train_one(args.recipe, args)
    names = args.recipes.split(",")
    unknown = set(names) - set(RECIPES)
    if unknown:
        ap.error(f"unknown recipe(s): {', '.join(sorted(unknown))}")
    if not args.measure_only:
        env = dict(os.environ) if args.alone else dict(os.environ, UQCODEC_THREADS="1")
        procs = []
        for name in names:
            os.makedirs(os.path.join(args.out, name), exist_ok=True)
            log = open(os.path.join(args.out, name + ".log"), "w")
            cmd = [sys.executable, os.path.abspath(__file__), "--recipe", name, "--out", args.out,
                   "--minutes", str(args.minutes)] + (["--data", args.data] if args.data else [])
            procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
            if args.alone:
                procs[-1].wait()
        for p in procs:
            p.wait()
    from uqcodec.evaluate import measure_model
    from uqcodec.training.export import export_model
    print(f"| recipe | steps in {args.minutes:g} min | steps/s | UN+Q bpp / PSNR | "
          "UN+UQ bpp / PSNR |")
    print("|---|---|---|---|---|")
    for name in names:
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
