#!/usr/bin/env bash
# The pruning methods beyond the paper (ablation-accuracy, modularity-ablation, modularity-phase) beside the
# paper's rule and the strong baselines, at matched FLOPs, on a network none of them was designed on: a
# ResNet32 at width 0.25, trained on Fashion-MNIST here. CPU-sized by default (about 20 minutes on 2 cores);
# scale up with the environment, e.g. SUBSET=0 EPOCHS=30 TRAIN_SUBSET=0 SEEDS=3 BUDGETS=0.1,0.2,0.3,0.4
# DEVICE=cuda. Writes docs/beyond/<network>/ (matched.json/.csv/.md, the curve); no weights.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS="${THREADS:-2}"  # training depends on the thread count: pinned, and recorded below
MODEL="${MODEL:-resnet32}" WIDTH="${WIDTH:-0.25}" SUBSET="${SUBSET:-12000}" EPOCHS="${EPOCHS:-3}"
SEEDS="${SEEDS:-2}" BUDGETS="${BUDGETS:-0.2,0.4}" TRAIN_SUBSET="${TRAIN_SUBSET:-3000}" DEVICE="${DEVICE:-auto}"
METHODS="${METHODS:-modularity,modularity-phase,modularity-ablation,ablation-accuracy,cosine,angular,reinit,random}"
name="${MODEL}-w${WIDTH}-fmnist"
run="runs/beyond/$name" out="${OUT:-docs/beyond}/$name"
if [ ! -f "$run/best.safetensors" ]; then
  .venv/bin/layermod train --model "$MODEL" --width "$WIDTH" --in-channels 1 --dataset fashion-mnist \
    --subset "$SUBSET" --epochs "$EPOCHS" --device "$DEVICE" --quiet --out "$run"
fi
.venv/bin/layermod curve --weights "$run/best.safetensors" --dataset fashion-mnist --n-per-class 50 \
  --repeats 3 --null 0 --device "$DEVICE" --quiet --out "$out/curve"
.venv/bin/layermod prune-study --weights "$run/best.safetensors" --curve "$out/curve/curve.json" \
  --budgets "$BUDGETS" --match flops --retrain finetune --methods "$METHODS" --seeds "$SEEDS" \
  --train-subset "$TRAIN_SUBSET" --device "$DEVICE" --quiet --out "$out/study"
echo "{\"threads\": $OMP_NUM_THREADS, \"model\": \"$MODEL\", \"width\": $WIDTH, \"subset\": $SUBSET, \"epochs\": $EPOCHS}" \
  > "$out/setup.json"
