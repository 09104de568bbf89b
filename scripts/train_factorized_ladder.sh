#!/usr/bin/env bash
# The factorized family's fixed-rate ladder (issue 31): both modes at four lambdas, each
# warm-started from the low-rate hyperprior of its mode (its GDN transforms; the prior
# starts fresh at --fresh-lr x the learning rate), MINUTES of one core each, in the order
# that leaves matched un/sr pairs if it is stopped early.
#   scripts/train_factorized_ladder.sh [MINUTES]   (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-10}
UQ=${UQ:-.venv/bin/uqcodec}
for lam in 0.01 0.003 0.001 0.03; do
  for mode in sr un; do
    name=factorized1-$mode-$lam
    [ -f "runs/out/$name/model.json" ] && continue
    alpha=(); [ "$mode" = sr ] && alpha=(--alpha 5.5:6)
    UQCODEC_THREADS=1 $UQ train --model factorized --mode "$mode" --lambda "$lam" \
      --init-from "models/hyperprior8-$mode-lo" --out "runs/out/$name" --run-dir "runs/$name" \
      --lr 1e-4 --fresh-lr 10 --warmup 200 --decay-start 0.5 "${alpha[@]}" \
      --minutes "$MINUTES" --steps 10000000 --seed 1 --no-measure --resume
  done
done
