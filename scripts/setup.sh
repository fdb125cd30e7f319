#!/usr/bin/env bash
# Set up .venv for layermod: the pinned torch and torchvision first (the build installed from this machine's local
# package mirror; it runs on the CPU and on a GPU alike, and an unpinned `torch` may pull something else), then
# layermod itself with the extras named in $1 (e.g. "test"), then Fashion-MNIST
# from Debian's dataset-fashion-mnist package when it is missing and we may install it, and with the "test"
# extra Debian's chromium for the browser check of the HTML report (tests/test_html.py).
# TORCH_SPEC overrides the torch requirement (e.g. TORCH_SPEC="torch torchvision" on a machine with internet).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
# one set-up at a time per checkout: two scripts started together would otherwise reinstall layermod over each
# other, and one of them find no .venv/bin/layermod
exec 9>.setup.lock
flock 9
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
pip_install() { .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@"; }
pip_install ${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}
pip_install -e ".${extras:+[$extras]}"
if [[ ",$extras," == *,test,* ]]; then
  # torchattacks pins requests~=2.25.1, which the docs tools (requests>=2.33) contradict: resolving both sends
  # pip's resolver backtracking for many minutes. It runs with the newer requests, so it goes in on its own.
  pip_install --no-deps "torchattacks>=3.5"
fi
if [ ! -e /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] && [ "$(id -u)" = 0 ] \
   && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
    || echo "setup: could not install dataset-fashion-mnist; layermod will look elsewhere or download it" >&2
fi
browser_found() { command -v chromium || command -v chromium-browser || command -v google-chrome; } >/dev/null
if [[ ",$extras," == *,test,* ]] && ! browser_found; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt_chromium() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1; }
    apt_chromium || { apt-get update -qq >/dev/null 2>&1 && apt_chromium; } || true
  fi
  browser_found || echo "setup: could not install chromium; the browser checks in tests/test_html.py will be skipped" \
    "(and fail when CI is set)" >&2
fi
