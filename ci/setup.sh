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
# The course site (ci/site.sh): KaTeX from npm, pinned by ci/site/package-lock.json.
if command -v npm > /dev/null; then
  if [ ! -f ci/site/node_modules/katex/package.json ] || [ ci/site/package-lock.json -nt ci/site/node_modules/.package-lock.json ]; then
    npm ci --prefix ci/site --no-audit --no-fund --loglevel=error || echo "npm ci in ci/site failed: the site cannot be built"
  fi
else
  echo "Node.js not found: the course site (ci/site.sh) cannot be built"
fi
# The browser tests (tests/test_site.py) use Debian's Chromium and ChromeDriver; install them when missing and
# possible (root with apt-get). Without them those tests are skipped with the reason. SKIP_BROWSER_INSTALL=1 skips this.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  if [ "${SKIP_BROWSER_INSTALL:-0}" != 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
    echo "installing chromium and chromium-driver (apt-get) for the browser tests"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } > .venv/apt-chromium.log 2>&1; then
      tail -5 .venv/apt-chromium.log; echo "chromium could not be installed (log: .venv/apt-chromium.log): the browser tests will be skipped"
    fi
  else
    echo "chromium not installed (needs root and apt-get): the browser tests will be skipped"
  fi
fi
