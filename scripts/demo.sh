#!/usr/bin/env bash
# Set up and run the demo: train (or reuse) a small CNN on Fashion-MNIST and write its modularity curve
# to runs/demo/. Extra arguments go to `layermod demo` (see `layermod demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/layermod demo "$@"
