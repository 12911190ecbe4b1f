#!/usr/bin/env bash
# Set up (or update) the project's virtual environment in .venv: the pinned stack from settings.ini and the
# package itself in editable mode. Safe to run again; pip only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
mkdir -p runs  # run folders and executed notebooks (git-ignored)
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# torch===2.13.0 (exact string match) picks the standard PyPI build; nbdev 2.4.14 needs fastcore<2 and execnb<0.2.
if ! .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]" > .venv/pip-install.log 2>&1; then
  grep -v "is ignored" .venv/pip-install.log; echo "pip install failed (log: .venv/pip-install.log)"; exit 1
fi
.venv/bin/python -c "import torch, torchvision, nbdev, papermill, deepcluster_nb; print('deepcluster_nb', deepcluster_nb.__version__, '| torch', torch.__version__, '| cuda', torch.cuda.is_available())"
