#!/usr/bin/env bash
# Finding 8 (REPRODUCTION.md): every pruning method at budgets matched by FLOPs (and for ResNet56 also by
# parameters) of 15, 30, 45 and 60 % of the model's cost, 3 seeds: ResNet56 (width 0.25) fine-tuned from its
# trained weights and trained from scratch, ResNet110 (width 0.25, a plateau in the middle) and VGG19-BN (width
# 0.25, a plateau at the end) fine-tuned; all trained on Fashion-MNIST by scripts/reproduce_train.sh. Writes
# docs/reproduction/pruning-*/ (matched.json/.csv/.md, pareto-*.png). CPU preset (default), about 2 hours of
# one core: one epoch of fine-tuning or 4 from scratch on a class-balanced subset of the training set (1,500 to
# 3,000 images), accuracy on 2,000 test images; WORKERS=2 runs two retraining jobs at a time. PRESET=gpu: all
# 60,000 training and 10,000 test images, 5 fine-tuning epochs and 30 from scratch, both costs matched.
set -euo pipefail
# training, and so every result downstream of it, depends on the torch thread count: pin it (TORCH_THREADS, 1 by
# default; torch reads OMP_NUM_THREADS when it starts)
export OMP_NUM_THREADS="${TORCH_THREADS:-1}" MKL_NUM_THREADS="${TORCH_THREADS:-1}"
cd "$(dirname "$0")/.."
bash scripts/reproduce_train.sh
OUT="${OUT:-docs/reproduction}"
gpu() { [ "${PRESET:-cpu}" = gpu ]; }
study() { # model, retraining, then its options
  local name="$1" retrain="$2"; shift 2
  [ -f "$OUT/curves/$name/curve.json" ] || .venv/bin/layermod curve --weights "runs/repro/$name/best.safetensors" \
    --dataset fashion-mnist --n-per-class 100 --repeats 5 --out "$OUT/curves/$name" --quiet >/dev/null
  if gpu; then set -- --finetune-epochs 5 --scratch-epochs 30 --device cuda; fi  # every cost, all the data
  .venv/bin/layermod prune-study --weights "runs/repro/$name/best.safetensors" --curve "$OUT/curves/$name" \
    --budgets 0.15,0.3,0.45,0.6 --seeds 3 --retrain "$retrain" --workers "${WORKERS:-1}" --quiet "$@" \
    --out "$OUT/pruning-$name-$retrain" >/dev/null
}
study resnet56-w0.25 finetune --train-subset 3000 --test-subset 2000 --finetune-epochs 1
study resnet56-w0.25 scratch --match flops --train-subset 2000 --test-subset 2000 --scratch-epochs 4
study resnet110-w0.25 finetune --match flops --train-subset 2000 --test-subset 2000 --finetune-epochs 1
study vgg19-w0.25 finetune --match flops --train-subset 1500 --test-subset 2000 --finetune-epochs 1
