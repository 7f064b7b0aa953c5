#!/usr/bin/env bash
# Runs the whole test suite from a bare machine: makes .venv, installs the tool and its
# test dependencies, runs the static checks (ruff, mypy), then pytest. Slow artefacts (mmcv
# downloads and builds) are cached under $MMCV_PATCHER_CACHE (default ~/.cache/mmcv-patcher),
# so a second run is offline.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not e2e"`.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
echo "ruff: pyflakes, pycodestyle errors, isort, bugbear; and the formatter" >&2
.venv/bin/python -m ruff check --no-cache mmcv_patcher patches tests scripts noxfile.py
.venv/bin/python -m ruff format --no-cache --check mmcv_patcher patches tests scripts noxfile.py
echo "mypy --strict: the package, its patches, tests and scripts" >&2
.venv/bin/python -m mypy --no-incremental
set +e
# Test files run side by side, one process per CPU, each file in one process (its module
# fixtures, such as the e2e suite's venv, made once), handed out in the order tests/conftest.py
# puts them in (the longest first) rather than by their number of tests; the cache is made
# once (releases.made_once).
.venv/bin/python -m pytest -n auto --dist loadfile --no-loadscope-reorder "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests" >&2
    exit 1
fi
exit "$status"
