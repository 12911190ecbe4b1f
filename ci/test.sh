#!/usr/bin/env bash
# Set up the environment and run every test: the notebooks (each one is executed by nbdev_test), the trimmed
# papermill runs of nbs/train.ipynb for every method, the real-learning and resume checks, and the repository
# checks (notebooks clean, export in sync, jupytext pairs in sync).
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
export MPLBACKEND=Agg PYTHONUNBUFFERED=1
exec .venv/bin/python -m pytest tests -v -rs --durations=15 "$@"
