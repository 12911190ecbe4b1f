#!/usr/bin/env bash
# Set up the environment and run every test: the notebooks (each one is executed by nbdev_test), the trimmed
# papermill runs of nbs/train.ipynb for every method, the real-learning and resume checks, and the repository
# checks (notebooks clean, export in sync, jupytext pairs in sync).
#
# With no arguments the suite runs as two pytest processes side by side, one per core of a small machine: the
# notebooks, the site built from their executed copies (which need them) and the trimmed paper runs; and everything
# else (the two halves take about the same time). The small networks
# train on one CPU thread (the trainer's default), so two processes keep two cores busy. Arguments are passed to one
# pytest process instead, e.g. `bash ci/test.sh tests/test_train.py -k resume`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
export MPLBACKEND=Agg PYTHONUNBUFFERED=1
PYTEST=(.venv/bin/python -m pytest -v -rs --durations=15)
if [ "$#" -gt 0 ]; then exec "${PYTEST[@]}" "$@"; fi

notebook_tests=(tests/test_notebooks.py tests/test_site.py tests/test_benchmarks.py)
other_tests=()
for t in tests/test_*.py; do
  case " ${notebook_tests[*]} " in *" $t "*) ;; *) other_tests+=("$t") ;; esac
done
log=$(mktemp -d)/notebooks.log
"${PYTEST[@]}" "${notebook_tests[@]}" > "$log" 2>&1 &
nb_pid=$!
set +e
"${PYTEST[@]}" "${other_tests[@]}"
rc_other=$?
wait "$nb_pid"
rc_nb=$?
set -e
echo; echo "================ the second process: ${notebook_tests[*]} ================"
cat "$log"
echo "exit status: ${notebook_tests[*]}: $rc_nb; the other tests: $rc_other"
# pytest's own codes: 0 all passed, 5 no test collected (kept, so that .ci/run can say so); any failure wins
if [ "$rc_nb" -ne 0 ] && [ "$rc_nb" -ne 5 ]; then exit "$rc_nb"; fi
if [ "$rc_other" -ne 0 ] && [ "$rc_other" -ne 5 ]; then exit "$rc_other"; fi
if [ "$rc_nb" -eq 5 ] && [ "$rc_other" -eq 5 ]; then exit 5; fi
exit 0
