#!/usr/bin/env bash
# `make test`: the lab's integration tests and the unit tests side by side.
#
# The unit tests are CPU-bound (most start the real CLI, each a fresh Python) and spread over
# pytest-xdist workers; the integration tests share one lab and run in this process, mostly
# waiting on guests and daemons. Run one after the other they took over an hour on a 2-core
# machine; side by side each fills the other's idle time. The unit run's output is kept in a
# file and printed after the integration run's, so neither is interleaved with the other.
# The slowest tests of each are listed (--durations): where the next minutes of CI are.
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
. ./.test-env 2>/dev/null || true
PYTEST=.venv/bin/pytest
WORKERS=${VIRTFLEET_TEST_WORKERS:-2}

out=$(mktemp -d /tmp/virtfleet-unit.XXXXXX)
# SIGINT re-armed in both: bash starts a background job with it ignored, and so does whatever
# ran `make` in the background; Ctrl-C must stop both runs and what they started
env --default-signal=INT "$PYTEST" -q --durations=15 -n "$WORKERS" tests/unit > "$out/unit.log" 2>&1 &
unit=$!
trap 'kill -INT "$unit" 2>/dev/null; wait "$unit"; exit 130' INT TERM

env --default-signal=INT "$PYTEST" -q --durations=25 tests/integration
integration=$?
wait "$unit"
units=$?
trap - INT TERM

echo
echo "================ unit tests (pytest -n $WORKERS tests/unit, run beside the above) ================"
cat "$out/unit.log"
rm -rf "$out"
echo "virtfleet tests: integration exit $integration, unit exit $units"
[ "$integration" -eq 0 ] && [ "$units" -eq 0 ]
