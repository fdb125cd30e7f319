#!/usr/bin/env bash
# The GPU checks, in one go on one CUDA GPU (about 5 minutes; under 8): set up .venv, run the CUDA tests, then the
# GPU benchmark (benchmarks/bench_scale.py --only gpu) and one timed end-to-end `layermod curve` of ResNet18 on the
# whole Fashion-MNIST test set (N = 10,000). Figures go to $OUT (when set) or benchmarks/results/: cuda_tests.txt,
# bench_scale_gpu.json, curve_cli.txt (+ the curve's run directory). Exit status: that of the CUDA tests.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
bash scripts/setup.sh test >"$out/setup.log" 2>&1 || { echo "device_check: setup failed, see $out/setup.log" >&2; exit 1; }
py=.venv/bin/python
if ! "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "device_check: torch sees no CUDA device; nothing to check" | tee "$out/cuda_tests.txt" >&2
  exit 1
fi
"$py" -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())' | tee "$out/device.txt"

timeout 180 "$py" -m pytest -q -rs -m cuda tests/test_cuda.py 2>&1 | tee "$out/cuda_tests.txt"
tests=${PIPESTATUS[0]}

timeout 200 "$py" benchmarks/bench_scale.py --only gpu --json "$out/bench_scale_gpu.json" 2>&1 | tail -n 20

start=$(date +%s%N)
timeout 120 .venv/bin/layermod curve --model resnet18 --in-channels 1 --num-classes 10 --dataset fashion-mnist \
  --n-per-class 1000 --repeats 1 --device cuda --quiet --out "$out/curve_resnet18_fmnist" >"$out/curve_cli.log" 2>&1
status=$?
end=$(date +%s%N)
ms=$(( (end - start) / 1000000 ))
printf 'layermod curve ResNet18, Fashion-MNIST test (N=10000), cuda, end to end incl. start-up: %d.%03d s (exit %d)\n' \
  $((ms / 1000)) $((ms % 1000)) "$status" | tee "$out/curve_cli.txt"
exit "$tests"
