#!/usr/bin/env bash
# The long version of the fault-injection and concurrency suites: runs them ROUNDS times
# (default 50) and prints "N passed, N failed" counting rounds. A failed round's log is
# kept under $TMPDIR. Needs .venv (run scripts/test.sh once) or PYTHON=/path/to/python.
#
#   scripts/stress.sh [ROUNDS]
set -uo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-50}"
python="${PYTHON:-.venv/bin/python}"
if [ ! -x "$python" ]; then
    echo "stress.sh: no $python; run scripts/test.sh once first, or set PYTHON" >&2
    exit 2
fi
logs="$(mktemp -d "${TMPDIR:-/tmp}/mmcv-patcher-stress.XXXXXX")"
passed=0
failed=0
for ((round = 1; round <= rounds; round++)); do
    log="$logs/round-$round.log"
    if "$python" -m pytest -q -p no:cacheprovider -m "faults or concurrency" tests/test_faults.py tests/test_concurrency.py >"$log" 2>&1; then
        passed=$((passed + 1))
        rm -f "$log"
        echo "round $round/$rounds: passed"
    else
        failed=$((failed + 1))
        echo "round $round/$rounds: FAILED (log: $log)"
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
