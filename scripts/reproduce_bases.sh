#!/usr/bin/env bash
# Finding 8 and the methods beyond the paper over independently trained base networks, one prune-study per base
# network: every method, budgets of 15, 30, 45 and 60 % of the FLOPs, one fine-tuning epoch on a class-balanced
# subset of the training set, accuracy on 2,000 test images, the curve and every score measured on class-balanced
# training images held out from the fine-tuning (--probe-split train-heldout), so the choice never sees the images
# that score it. Writes docs/reproduction/bases/NAME-seedS/ (matched.json/.csv/.md, pareto-flops.png and the
# curve that chose; no weights) and each network's training record to docs/reproduction/networks/.
#   design (the default): VGG19-BN and ResNet56 (width 0.25; the recipe of scripts/reproduce_train.sh) with
#     seeds 0, 1, 2 and retraining seed 0 each; ResNet110 with seed 0; the 6-block ViT of scripts/evidence_hub.sh
#     with seed 0 and retraining seeds 0, 1, 2. The default method is chosen on these (scripts/pruning_evidence.py).
#   held-out (named, run once after that choice): VGG16-BN (width 0.25) with seeds 0, 1, 2; ResNet32 at width 0.5
#     with seed 0 and retraining seeds 0, 1, 2.
#   retraining: ResNet56 seed 0, the best four methods of the design networks at 30 and 60 %, fine-tuned for 3
#     epochs on 20,000 images (docs/reproduction/retraining/).
#   8c: the paper's ResNet56 row: the curve's choice at 60 % of the FLOPs and the unpruned network, each of the 3
#     base networks fine-tuned for 8 epochs on 20,000 images (docs/reproduction/8c/).
# scripts/reproduction_tables.py pools the studies of one architecture with the base network as the unit. CPU,
# one torch thread per job, training included: design about 75 minutes of one core, held-out about 45,
# retraining about 16 (WORKERS=2: two retraining jobs at a time), 8c about 30; run two at once, e.g.
# `bash scripts/reproduce_bases.sh vgg19-w0.25 & bash scripts/reproduce_bases.sh resnet56-w0.25`.
set -euo pipefail
# training, and so every result downstream of it, depends on the torch thread count: pin it
export OMP_NUM_THREADS="${TORCH_THREADS:-1}" MKL_NUM_THREADS="${TORCH_THREADS:-1}"
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT="${OUT:-docs/reproduction}"
METHODS=none,modularity,modularity-phase,modularity-ablation,steepest,cosine,angular,cka,reinit,ablation-accuracy,random,first,last
BEST4=modularity-ablation,ablation-accuracy,cosine,reinit  # the best four pooled on the design networks
# the ViT of the README (scripts/evidence_hub.sh): timm's ViT with 6 blocks of width 64, 4 heads, 7x7 patches
VIT=(--model timm:vit_tiny_patch16_224 --arch-arg img_size=28 --arch-arg patch_size=7 --arch-arg depth=6
     --arch-arg embed_dim=64 --arch-arg num_heads=4 --in-channels 1 --num-classes 10 --subset 10000 --epochs 15
     --lr 0.03)
trained() { # network, seed: train it unless it is there, keep its record, print its checkpoint
  local name="$1" seed="$2" run="runs/repro/$1"
  [ "$seed" = 0 ] || run="$run-seed$seed"
  if [ ! -f "$run/best.safetensors" ]; then
    if [ "$name" = vit6 ]; then recipe=("${VIT[@]}"); else
      recipe=(--model "${name%-w*}" --width "${name##*-w}" --subset 20000 --epochs 4); fi
    .venv/bin/layermod train "${recipe[@]}" --dataset fashion-mnist --seed "$seed" --quiet --out "$run" >&2
  fi
  mkdir -p "$OUT/networks/${run#runs/repro/}"
  cp "$run/best.json" "$run/metrics.csv" "$OUT/networks/${run#runs/repro/}/"
  echo "$run/best.safetensors"
}
study() { # network, seed, fine-tuning subset, retraining seeds, where, then more options
  local name="$1" seed="$2" subset="$3" seeds="$4" out="$5" weights
  shift 5
  weights="$(trained "$name" "$seed")"
  [ -f "$out/matched.json" ] && return 0
  .venv/bin/layermod prune-study --weights "$weights" --probe-split train-heldout --n-per-class 100 --repeats 5 \
    --match flops --retrain finetune --seeds "$seeds" --train-subset "$subset" --test-subset 2000 --quiet \
    --out "$out" "$@" >/dev/null
}
base() { # network, seed, fine-tuning subset, retraining seeds
  study "$@" "$OUT/bases/$1-seed$2" --methods "$METHODS" --budgets 0.15,0.3,0.45,0.6 --finetune-epochs 1
}
networks=("${@:-vgg19-w0.25 resnet56-w0.25 resnet110-w0.25 vit6}")
for name in ${networks[*]}; do
  case "$name" in
    vgg19-w0.25 | vgg16-w0.25) for seed in 0 1 2; do base "$name" "$seed" 1500 1; done ;;
    resnet56-w0.25) for seed in 0 1 2; do base "$name" "$seed" 3000 1; done ;;
    resnet110-w0.25) base "$name" 0 2000 1 ;;
    vit6 | resnet32-w0.5) base "$name" 0 2000 3 ;;
    retraining) study resnet56-w0.25 0 20000 1 "$OUT/retraining/resnet56-w0.25-seed0" --methods "none,$BEST4" \
      --budgets 0.3,0.6 --finetune-epochs 3 --workers "${WORKERS:-1}" ;;
    8c) for seed in 0 1 2; do study resnet56-w0.25 "$seed" 20000 1 "$OUT/8c/resnet56-w0.25-seed$seed" \
      --methods none,modularity --budgets 0.6 --finetune-epochs 8; done ;;
    *) echo "unknown network $name: vgg19-w0.25, resnet56-w0.25, resnet110-w0.25, vit6 (design), vgg16-w0.25," \
      "resnet32-w0.5 (held out), retraining or 8c" >&2; exit 2 ;;
  esac
done
