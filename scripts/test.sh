#!/usr/bin/env bash
# Runs the whole test suite from a bare machine: makes .venv, installs the tool and its
# test dependencies, runs pytest. Slow artefacts (mmcv downloads and builds) are cached
# under $MMCV_PATCHER_CACHE (default ~/.cache/mmcv-patcher), so a second run is offline.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not e2e"`.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests" >&2
    exit 1
fi
exit "$status"
