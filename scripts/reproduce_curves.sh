#!/usr/bin/env bash
# Findings 1, 3 and 4 (REPRODUCTION.md): the curves of networks growing in depth and width, and one network's
# curve for k = 3..11 and N = 100..1,000 per class, as sweeps (scripts/specs/*.toml) into
# docs/reproduction/sweep-*/ (results.csv, summary.png, one curve run per item). About 10 minutes on 2 cores
# after scripts/reproduce_train.sh; WORKERS=2 runs two items at a time.
set -euo pipefail
# training, and so every result downstream of it, depends on the torch thread count: pin it (TORCH_THREADS, 1 by
# default; torch reads OMP_NUM_THREADS when it starts)
export OMP_NUM_THREADS="${TORCH_THREADS:-1}" MKL_NUM_THREADS="${TORCH_THREADS:-1}"
cd "$(dirname "$0")/.."
bash scripts/reproduce_train.sh
OUT="${OUT:-docs/reproduction}"
for spec in size sensitivity-k sensitivity-n; do
  .venv/bin/layermod sweep "scripts/specs/$spec.toml" --workers "${WORKERS:-1}" --resume --out "$OUT/sweep-$spec"
done
