#!/usr/bin/env bash
# After editing a notebook's py:percent twin (nbs/NAME.py): rebuild the .ipynb from it (keeping cell ids), clean it,
# and re-export the package. With no arguments: every notebook whose .py is newer than its .ipynb.
#   bash ci/nbsync.sh nbs/06_cc.py nbs/07_train.py
set -euo pipefail
cd "$(dirname "$0")/.."
files=()
for f in "$@"; do files+=("${f%.*}"); done
if [ ${#files[@]} -eq 0 ]; then
  for py in nbs/*.py; do [ "$py" -nt "${py%.py}.ipynb" ] && files+=("${py%.py}"); done
fi
for base in "${files[@]}"; do
  if [ -f "$base.ipynb" ]; then .venv/bin/jupytext --update --to ipynb "$base.py" -q
  else .venv/bin/jupytext --to ipynb "$base.py" -q; fi
  .venv/bin/nbdev_clean --fname "$base.ipynb"
done
.venv/bin/nbdev_export
