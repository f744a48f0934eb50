#!/usr/bin/env bash
# Command 2: set up a fresh machine and run the whole test suite on JAX, then on PyTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh jax torch test docs   # docs: tests/test_docs.py builds the API site
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1   # no network at run time, ever
# One pytest-xdist worker per core (at most 4: each holds its own compiled models), whole
# files per worker (--dist loadfile) so that a module's shared fixtures are built once; most
# of the suite's time is XLA compiling small models, one core per compile. One thread per
# worker: the models are tiny, and torch's thread pools stall when oversubscribed.
workers=$(python -c "import os; print(max(1, min(4, len(os.sched_getaffinity(0)))))")
export OMP_NUM_THREADS=1
status=0
for backend in jax torch; do
  echo "=== test suite on the $backend backend ($workers workers) ==="
  KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider -n "$workers" --dist loadfile \
    --durations=15 "$@" || status=1
done
exit $status
