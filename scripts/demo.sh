#!/usr/bin/env bash
# Command 1: set up a fresh machine and run the main job (semantic search with the real
# all-MiniLM-L6-v2 weights, loaded by kerasformer). KERAS_BACKEND=torch runs it on PyTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${KERAS_BACKEND:-jax}
bash scripts/setup.sh "$backend"
. .venv/bin/activate
KERAS_BACKEND=$backend kerasformer demo "$@"
