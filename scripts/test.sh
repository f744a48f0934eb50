#!/usr/bin/env bash
# Command 2: set up a fresh machine and run the whole test suite on JAX, then on PyTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh jax torch test docs   # docs: tests/test_docs.py builds the API site
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1   # no network at run time, ever
status=0
for backend in jax torch; do
  echo "=== test suite on the $backend backend ==="
  KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider --durations=15 "$@" || status=1
done
exit $status
