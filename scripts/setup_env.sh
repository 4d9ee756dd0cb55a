#!/usr/bin/env bash
# Builds (or refreshes) the local virtual environment .venv with the pinned dependencies and samdg itself.
# Idempotent: a second run with unchanged requirements.txt and setup.py does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
stamp=.venv/.samdg-installed
want=$(cat requirements.txt setup.py | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "samdg: building .venv (first run installs PyTorch; this takes a few minutes)" >&2
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel
# torch and torchvision first and together, so that nothing else pulls a different build
.venv/bin/python -m pip install -q "$(grep '^torch==' requirements.txt)" "$(grep '^torchvision==' requirements.txt)"
.venv/bin/python -m pip install -q -r requirements.txt
.venv/bin/python -m pip install -q --no-deps -e .
echo "$want" > "$stamp"
