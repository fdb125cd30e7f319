#!/usr/bin/env bash
# Clean vs FGSM vs PGD curves (eps 0.1 and the paper's 0.3), D vs CKA heat maps and the HTML report on a Fashion-MNIST VGG16-BN trained by
# layermod (width 1/4, 4 epochs: the CPU size). Writes the runs to docs/adversarial/ and the page to
# docs/adversarial/report.html. Scale up with the environment, e.g. on a GPU:
#   WIDTH=1 EPOCHS=30 DEVICE=cuda bash scripts/evidence_adversarial.sh
set -euo pipefail
# training, and so every result downstream of it, depends on the torch thread count: pin it (TORCH_THREADS, 1 by
# default; torch reads OMP_NUM_THREADS when it starts)
export OMP_NUM_THREADS="${TORCH_THREADS:-1}" MKL_NUM_THREADS="${TORCH_THREADS:-1}"
cd "$(dirname "$0")/.."
bash scripts/setup.sh views
WIDTH="${WIDTH:-0.25}" EPOCHS="${EPOCHS:-4}" DEVICE="${DEVICE:-cpu}" OUT="${OUT:-docs/adversarial}"
run="runs/vgg16-w${WIDTH}-fmnist"
if [ ! -f "$run/best.safetensors" ]; then
  .venv/bin/layermod train --model vgg16 --width "$WIDTH" --dataset fashion-mnist --epochs "$EPOCHS" \
    --track-every 1 --device "$DEVICE" --out "$run"
fi
measure() {
  .venv/bin/layermod "$@" --weights "$run/best.safetensors" --dataset fashion-mnist --n-per-class 50 \
    --repeats 5 --device "$DEVICE"
}
measure curve --null 20 --views 3 --view-method tsne --out "$OUT/curve"
attacks=()
for eps in ${EPS:-0.1 0.3}; do
  measure attack --method fgsm --eps "$eps" --out "$OUT/fgsm-eps$eps"
  measure attack --method pgd --eps "$eps" --steps 40 --step-size 0.01 --out "$OUT/pgd-eps$eps"
  attacks+=("$OUT/fgsm-eps$eps" "$OUT/pgd-eps$eps")
done
measure compare --out "$OUT/compare"
mkdir -p "$OUT/train"
cp "$run/best.json" "$run/metrics.csv" "$run/dynamics.json" "$OUT/train/"
.venv/bin/layermod report "$OUT/train" "$OUT/curve" "${attacks[@]}" "$OUT/compare" \
  --title "VGG16-BN (width ${WIDTH}) on Fashion-MNIST" --out "$OUT/report.html"
