#!/usr/bin/env python
"""Carry a training run to another machine: its weights (convolution kernels as float16,
as shipped models keep them) and train.json, small enough to commit; the optimizer state
stays behind.

    python scripts/carry_run.py runs/NAME bases/runs/NAME     # before a session stops
    cp -r bases/runs/NAME runs/NAME && uqcodec train ... --run-dir runs/NAME --resume

``--resume`` on such a run directory (train.json and weights.npz, no ckpt/) goes on at
the run's step with its schedule and config; Adam's moments start again with a short
warm-up of their own (training/train.py, REWARM).
"""
import argparse
import io
import json
import os
import shutil

import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("out")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    with np.load(os.path.join(args.run, "weights.npz")) as w:
        arrays = {k: (w[k].astype(np.float16) if k.endswith("kernel") else w[k]) for k in w.files}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with open(os.path.join(args.out, "weights.npz"), "wb") as f:
        f.write(buf.getvalue())
    shutil.copy(os.path.join(args.run, "train.json"), os.path.join(args.out, "train.json"))
    with open(os.path.join(args.out, "train.json")) as f:
        state = json.load(f)
    print(f"{args.out}: step {state['steps']}, {state['wall_seconds'] / 60:.1f} of "
          f"{state.get('minutes')} minutes, {len(buf.getvalue()) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
