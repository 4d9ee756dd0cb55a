#!/usr/bin/env bash
# Sets up the environment if needed and runs samdg end to end on a synthetic multi-domain dataset
# (LiteMedSAM weights, the GPU when there is one, else the CPU). Extra arguments go to samdg_demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/samdg_demo "$@"
