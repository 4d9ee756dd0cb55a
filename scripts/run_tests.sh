#!/usr/bin/env bash
# Sets up the environment if needed, lints, and runs the whole test suite on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# The linter (configured in ruff.toml) runs first; a finding fails the run.
.venv/bin/ruff check samdg tests dataset_conversion benchmarks
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
exec .venv/bin/python -m pytest -n 2 --dist loadfile -q -p no:cacheprovider tests "$@"
