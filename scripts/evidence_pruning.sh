#!/usr/bin/env bash
# Pruning evidence on Fashion-MNIST: train VGG19-BN (deliberately deep for this data, so its curve has a
# plateau), measure its curve, then remove the same number of layers by every method (modularity, the
# opposite choice "steepest", cosine block influence, random, first, last), fine-tune each identically over 3
# seeds and write the comparison to docs/pruning/. CPU-sized by default (about 25 minutes on 2 cores); scale
# up with the environment, e.g. WIDTH=1 EPOCHS=30 FT_EPOCHS=5 FT_SUBSET=0 DEVICE=cuda.
set -euo pipefail
# training, and so every result downstream of it, depends on the torch thread count: pin it (TORCH_THREADS, 1 by
# default; torch reads OMP_NUM_THREADS when it starts)
export OMP_NUM_THREADS="${TORCH_THREADS:-1}" MKL_NUM_THREADS="${TORCH_THREADS:-1}"
cd "$(dirname "$0")/.."
bash scripts/setup.sh
WIDTH="${WIDTH:-0.25}" EPOCHS="${EPOCHS:-5}" REMOVE="${REMOVE:-4}" SEEDS="${SEEDS:-3}"
FT_EPOCHS="${FT_EPOCHS:-1}" FT_SUBSET="${FT_SUBSET:-6000}" DEVICE="${DEVICE:-auto}" OUT="${OUT:-docs/pruning}"
run="runs/vgg19-w${WIDTH}-fmnist"
if [ ! -f "$run/best.safetensors" ]; then
  .venv/bin/layermod train --model vgg19 --width "$WIDTH" --dataset fashion-mnist --epochs "$EPOCHS" \
    --device "$DEVICE" --out "$run"
fi
.venv/bin/layermod curve --weights "$run/best.safetensors" --dataset fashion-mnist --n-per-class 100 \
  --repeats 5 --device "$DEVICE" --out "$OUT/curve"
.venv/bin/layermod prune --weights "$run/best.safetensors" --curve "$OUT/curve/curve.json" --remove "$REMOVE" --method modularity \
  --seeds "$SEEDS" --finetune-epochs "$FT_EPOCHS" --finetune-subset "$FT_SUBSET" --out "$OUT"
rm -f "$OUT/pruned.safetensors"  # the weights stay out of the repository; plan.json and the sidecar remain
