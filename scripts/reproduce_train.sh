#!/usr/bin/env bash
# The networks REPRODUCTION.md measures: ResNet20/56/110 at width 0.25 (depth), ResNet20 at width 0.5 (and 1
# with PRESET=gpu) (width), VGG19-BN at width 0.25, each trained the same way on a class-balanced 20,000-image
# subset of Fashion-MNIST for 4 epochs (seed 0), and ResNet56 on 2,000 images (data), into runs/repro/NAME/. A
# network already trained is kept. CPU: about 40 minutes on 2 cores. PRESET=gpu trains on all 60,000 images
# (and the 2,000-image subset) for 30 epochs on the GPU.
set -euo pipefail
# training, and so every result downstream of it, depends on the torch thread count: pin it (TORCH_THREADS, 1 by
# default; torch reads OMP_NUM_THREADS when it starts)
export OMP_NUM_THREADS="${TORCH_THREADS:-1}" MKL_NUM_THREADS="${TORCH_THREADS:-1}"
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "${PRESET:-cpu}" = gpu ]; then recipe=(--epochs 30 --device cuda); else recipe=(--subset 20000 --epochs 4); fi
train() { # name model width [more options]
  local name="$1" model="$2" width="$3"; shift 3
  [ -f "runs/repro/$name/best.safetensors" ] && return 0
  .venv/bin/layermod train --model "$model" --width "$width" --dataset fashion-mnist "${recipe[@]}" "$@" --seed 0 \
    --quiet --out "runs/repro/$name"
}
train resnet20-w0.25 resnet20 0.25
train resnet56-w0.25 resnet56 0.25
train resnet110-w0.25 resnet110 0.25
train vgg19-w0.25 vgg19 0.25
train resnet20-w0.5 resnet20 0.5
if [ "${PRESET:-cpu}" = gpu ]; then train resnet20-w1 resnet20 1; fi
# the same ResNet56 on a tenth of the data, for as many steps (ten times the epochs)
if [ "${PRESET:-cpu}" = gpu ]; then n2000_epochs=300; else n2000_epochs=40; fi
train resnet56-w0.25-n2000 resnet56 0.25 --subset 2000 --epochs "$n2000_epochs"
