#!/usr/bin/env bash
# Flaky-test hunt (not in CI): builds the suite once, then runs the README's test
# command (`scripts/test.sh`, as CI runs it, with --no-fail-fast so one failure
# hides nothing) N times. The second half of the runs (10 of the default 20) go under
# CPU stress: one busy loop per core for the whole run, so timing margins are
# tried on a loaded machine. At the end it prints every test that failed, with
# how many runs it failed in and whether under stress, and exits 1 if any did.
#
#   scripts/flaky.sh [N]            # default 20 runs, the last N/2 under stress
#   FLAKY_STRESS=0 scripts/flaky.sh 5   # no stress runs
#   FLAKY_STRESS=all scripts/flaky.sh 5 # every run under stress
#   RUN_LIMIT=600 scripts/flaky.sh      # seconds a run may take (default 900)
#
# Logs of every run: $TARGET_DIR/flaky/<timestamp>/run-<i>.log
set -euo pipefail

cd "$(dirname "$0")/.."
RUNS="${1:-20}"
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || { echo "usage: scripts/flaky.sh [N]"; exit 2; }
case "${FLAKY_STRESS:-half}" in
    half) STRESSED=$((RUNS / 2)) ;;
    all) STRESSED=$RUNS ;;
    0) STRESSED=0 ;;
    *) echo "FLAKY_STRESS must be half, all or 0"; exit 2 ;;
esac
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
OUT="$TARGET_DIR/flaky/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"

echo "building the suite once"
scripts/test.sh --no-run >"$OUT/build.log" 2>&1 || { echo "build failed: $OUT/build.log"; exit 2; }

STRESS_PIDS=()
stop_stress() {
    for pid in "${STRESS_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    STRESS_PIDS=()
}
trap stop_stress EXIT
start_stress() {
    local cores
    cores="$(nproc)"
    for _ in $(seq "$cores"); do
        # A busy loop in its own shell: nothing to install, killed with the run.
        bash -c 'while :; do :; done' &
        STRESS_PIDS+=("$!")
    done
}

FIRST_STRESSED=$((RUNS - STRESSED + 1))
for i in $(seq "$RUNS"); do
    label="calm"
    if (( i >= FIRST_STRESSED )); then
        label="stress"
        start_stress
    fi
    start=$(date +%s)
    status=0
    # A hung test must not stop the hunt: a run gets RUN_LIMIT seconds (default
    # 900, eight times a calm run) and then counts as failed with a timeout.
    timeout --kill-after=10 "${RUN_LIMIT:-900}" \
        scripts/test.sh --no-fail-fast >"$OUT/run-$i.log" 2>&1 || status=$?
    if (( status == 124 || status == 137 )); then
        echo "run timed out after ${RUN_LIMIT:-900} s (a test hung)" >>"$OUT/run-$i.log"
    fi
    stop_stress
    # Test names that failed in this run, as `<test binary> <test name>`.
    python3 - "$OUT/run-$i.log" "$label" >"$OUT/run-$i.failed" <<'EOF'
import re, sys
binary, failures = "?", 0
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"\s+Running (\S+)", line) or re.match(r"\s+Doc-tests (\S+)", line)
    if m:
        binary, failures = m.group(1), 0
    m = re.match(r"test (.+?) \.\.\. FAILED", line)
    if m:
        failures += 1
        print(f"{binary} {m.group(1)}\t{sys.argv[2]}")
    # A binary that failed without a failing test (crashed, killed) says only this.
    if "process didn't exit successfully" in line and failures == 0:
        print(f"{binary} <the test binary itself failed>\t{sys.argv[2]}")
EOF
    if (( status == 124 || status == 137 )); then
        # The hung test is among those still running when the limit struck.
        sed -n 's/^test \(.*\) has been running for over 60 seconds$/\1/p' "$OUT/run-$i.log" |
            sed "s/\$/ <hung: run timed out>\t$label/" >>"$OUT/run-$i.failed"
    fi
    failed=$(wc -l <"$OUT/run-$i.failed")
    echo "run $i/$RUNS ($label): exit $status, $failed failed, $(( $(date +%s) - start )) s"
done

echo
cat "$OUT"/run-*.failed | sort | uniq -c | sort -rn >"$OUT/summary.txt" || true
if [[ -s "$OUT/summary.txt" ]]; then
    echo "failed tests (runs failed, condition):"
    cat "$OUT/summary.txt"
    echo "logs: $OUT"
    exit 1
fi
echo "all $RUNS runs green ($STRESSED under stress); logs: $OUT"
