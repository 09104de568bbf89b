#!/usr/bin/env bash
# The factorized family's fixed-rate ladder (issue 31): both modes at lambdas 0.01, 0.003
# and 0.001 (LAMBDAS="..." for others), each warm-started from the low-rate hyperprior of its
# mode (hyperprior8-*-lo; above 0.01 hyperprior9-*-mid, whose wider transforms make a
# 5.5 MB model: the shipped ladder stops at 0.01 to keep the family under 15 MB): its GDN
# transforms; the prior starts fresh at --fresh-lr x the learning rate. MINUTES of one
# core each, in the order that leaves matched un/sr pairs if it is stopped early.
#   scripts/train_factorized_ladder.sh [MINUTES]   (default 10)
# MODES="sr" or "un" trains one mode only (two processes, one per core); a model already in
# models/ or runs/out/ is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-10}
UQ=${UQ:-.venv/bin/uqcodec}
MODES=${MODES:-sr un}
for lam in ${LAMBDAS:-0.01 0.003 0.001}; do
  for mode in $MODES; do
    name=factorized1-$mode-$lam
    [ -f "runs/out/$name/model.json" ] || [ -f "models/$name/model.json" ] && continue
    alpha=(); [ "$mode" = sr ] && alpha=(--alpha 5.5:6)
    base=hyperprior8-$mode-lo; [ "$lam" = 0.03 ] && base=hyperprior9-$mode-mid
    UQCODEC_THREADS=1 $UQ train --model factorized --mode "$mode" --lambda "$lam" \
      --init-from "models/$base" --out "runs/out/$name" --run-dir "runs/$name" \
      --lr 1e-4 --fresh-lr 10 --warmup 200 --decay-start 0.5 "${alpha[@]}" \
      --minutes "$MINUTES" --steps 10000000 --seed 1 --no-measure --resume
  done
done
