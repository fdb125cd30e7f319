#!/usr/bin/env bash
# Train a VGG-style and a ResNet-style zoo network on Fashion-MNIST with the modularity curve tracked every
# epoch, then measure each final curve on 5 x 1,000 test images with a 20-shuffle null. Writes docs/evidence/.
# CPU-sized by default; scale up with the environment, e.g. on a GPU:
#   WIDTH=1 EPOCHS=30 DEVICE=cuda bash scripts/evidence_fmnist.sh
set -euo pipefail
# training, and so every result downstream of it, depends on the torch thread count: pin it (TORCH_THREADS, 1 by
# default; torch reads OMP_NUM_THREADS when it starts)
export OMP_NUM_THREADS="${TORCH_THREADS:-1}" MKL_NUM_THREADS="${TORCH_THREADS:-1}"
cd "$(dirname "$0")/.."
bash scripts/setup.sh
WIDTH="${WIDTH:-0.25}" EPOCHS="${EPOCHS:-4}" DEVICE="${DEVICE:-cpu}" OUT="${OUT:-docs/evidence}"
for arch in vgg11 resnet20; do
  width="$WIDTH"
  [ "$arch" = resnet20 ] && width=$(python3 -c "print(min(1.0, 2 * $WIDTH))")  # ResNet20 is already narrow
  run="runs/${arch}-w${width}-fmnist"
  rm -rf "$run"
  .venv/bin/layermod train --model "$arch" --width "$width" --dataset fashion-mnist --epochs "$EPOCHS" \
    --track-every 1 --device "$DEVICE" --out "$run"
  .venv/bin/layermod curve --weights "$run/best.safetensors" --dataset fashion-mnist --n-per-class 100 \
    --repeats 5 --null 20 --device "$DEVICE" --out "$OUT/$arch"
  cp "$run/dynamics.json" "$run/dynamics.png" "$run/metrics.csv" "$run/best.json" "$OUT/$arch/"
done
