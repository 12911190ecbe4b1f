#!/usr/bin/env bash
# Build the course site into _site/ (one page per notebook, with outputs): `bash ci/site.sh [ci/site_build.py options]`.
# It renders the executed copies that the notebook tests leave in build/executed/ and runs only the notebooks that
# have none or an out-of-date one. KaTeX (ci/site/package.json) is installed from npm on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then bash ci/setup.sh; fi
if ! command -v node > /dev/null; then echo "ci/site.sh needs Node.js (node and npm) for KaTeX"; exit 1; fi
if [ ! -f ci/site/node_modules/katex/package.json ] || [ ci/site/package-lock.json -nt ci/site/node_modules/.package-lock.json ]; then
  npm ci --prefix ci/site --no-audit --no-fund --loglevel=error
fi
export MPLBACKEND=Agg PYTHONUNBUFFERED=1
exec .venv/bin/python ci/site_build.py "$@"
