#!/usr/bin/env bash
# Library models: a small timm ViT trained on Fashion-MNIST by `layermod train --model timm:...`, and a tiny BERT
# (transformers config, random init, word-level tokenizer, all built offline) trained by scripts/hub_text.py on a
# synthetic 3-class sentence task (two words; the class is the sum of their groups mod 3); then the modularity
# curve of each. Writes docs/vit/ and docs/text/ (curves, training metrics, the ViT checkpoint's sidecar; no
# weights), and a depth-pruning comparison of the ViT's blocks in docs/vit/prune/. Generated data and weights go
# to runs/hub/.
# Expects .venv with the vision and hf extras (bash scripts/test.sh sets it up). CPU-sized: a few minutes on
# 2 cores; scale with the environment, e.g. EPOCHS=30 SUBSET=0 DEVICE=cuda.
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS="${EPOCHS:-15}" SUBSET="${SUBSET:-10000}" LR="${LR:-0.03}" DEVICE="${DEVICE:-auto}"
TEXT_EPOCHS="${TEXT_EPOCHS:-10}" RUNS="${RUNS:-runs/hub}"
start=$(date +%s)

# 1. ViT: 6 blocks, width 64, 4 heads, 7x7 patches of 28x28 images (16 tokens + [CLS]).
vit="$RUNS/vit"
rm -rf "$vit"
.venv/bin/layermod train --model timm:vit_tiny_patch16_224 --arch-arg img_size=28 --arch-arg patch_size=7 \
  --arch-arg depth=6 --arch-arg embed_dim=64 --arch-arg num_heads=4 --in-channels 1 --num-classes 10 \
  --dataset fashion-mnist --subset "$SUBSET" --epochs "$EPOCHS" --lr "$LR" --device "$DEVICE" --quiet --out "$vit"
.venv/bin/layermod curve --weights "$vit/best.safetensors" --dataset fashion-mnist --pool cls \
  --n-per-class 100 --repeats 5 --null 20 --device "$DEVICE" --out docs/vit
.venv/bin/layermod curve --weights "$vit/best.safetensors" --dataset fashion-mnist --pool auto \
  --n-per-class 100 --repeats 5 --null 20 --views 0 --device "$DEVICE" --out docs/vit/auto
cp "$vit/metrics.csv" "$vit/best.json" docs/vit/
# Depth pruning guided by the [CLS] curve: 2 of the 6 blocks by each method, fine-tuned 1 epoch on 6,000 images.
.venv/bin/layermod prune --weights "$vit/best.safetensors" --curve docs/vit/curve.json --remove 2 --method modularity \
  --methods none,modularity,cosine,angular,random,last --seeds 3 --finetune-epochs 1 --finetune-subset 6000 \
  --quiet --out docs/vit/prune
rm -f docs/vit/prune/pruned.safetensors  # no weights in the repository; plan.json and the sidecar remain
vit_done=$(date +%s)

# 2. Text: data, model and training by the helper, the curve by layermod (--pool auto: [CLS] for BERT).
text="$RUNS/text"
rm -rf "$text"
.venv/bin/python scripts/hub_text.py data "$text" --task mod3
.venv/bin/python scripts/hub_text.py model "$text/bert"
.venv/bin/python scripts/hub_text.py train "$text/bert" "$text" --epochs "$TEXT_EPOCHS" --metrics docs/text/metrics.csv
.venv/bin/layermod curve --model "hf:$text/bert" --pretrained --dataset "$text/test.csv" --text-column text \
  --label-column label --n-per-class 100 --repeats 5 --null 20 --device "$DEVICE" --out docs/text
.venv/bin/layermod curve --model "hf:$text/bert" --pretrained --dataset "$text/test.csv" --text-column text \
  --label-column label --pool mean --n-per-class 100 --repeats 5 --null 20 --views 0 --device "$DEVICE" \
  --out docs/text/mean
cp "$text/bert/config.json" docs/text/
end=$(date +%s)
echo "evidence_hub: ViT $((vit_done - start)) s, text $((end - vit_done)) s, total $((end - start)) s"
