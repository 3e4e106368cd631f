#!/usr/bin/env bash
# Coverage-guided fuzzing of the frame decoder and the protocol-exchange decoder.
#
#   scripts/fuzz.sh [minutes] [target...]
#
# Runs each target (default: frame_decoder exchange_decoder) for `minutes` (default
# 10), one after the other, each as one in-process libFuzzer worker (no -jobs or
# -fork: those start several processes, and the machine is shared). Prints
# a summary per target and exits non-zero if any target crashed; the crashing input
# is in fuzz/artifacts/<target>/.
#
# The fuzz crate needs libFuzzer's instrumentation flags, which are unstable (-Z)
# options. This project uses the stable toolchain only, so the script sets
# RUSTC_BOOTSTRAP=1, which lets stable rustc accept them; nothing else is built that
# way (fuzz/ is its own workspace). AddressSanitizer is on (cargo-fuzz's default);
# set FUZZ_SANITIZER=none to build without it (faster, finds only panics).
#
# Corpus: fuzz/seeds/<target>/ holds the committed seeds (regenerate them with
# `python3 fuzz/make_seeds.py`); the corpus a run grows goes to
# fuzz/corpus/<target>/ and stays local (git-ignored), so later runs start from it.
#
# Extra libFuzzer options can be passed in FUZZ_ARGS, e.g. FUZZ_ARGS="-seed=1".
set -euo pipefail

minutes="${1:-10}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(frame_decoder exchange_decoder)
fi
sanitizer="${FUZZ_SANITIZER:-address}"
if ! [[ "$minutes" =~ ^[1-9][0-9]*$ ]]; then
    echo "minutes must be a whole number of at least 1, not '$minutes'" >&2
    exit 2
fi

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/fuzz"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz from crates.io" >&2
    cargo install cargo-fuzz --locked
fi

for t in "${targets[@]}"; do
    cargo fuzz build --sanitizer "$sanitizer" "$t"
done

mkdir -p logs
summary=()
status=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "seeds/$t" "artifacts/$t"
    log="logs/$t.log"
    echo "== $t: $minutes min, 1 worker, sanitizer $sanitizer, log fuzz/$log" >&2
    started=$(date -u +%FT%TZ)
    before=$(find "artifacts/$t" -type f | wc -l)
    rc=0
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of options
    cargo fuzz run --sanitizer "$sanitizer" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time=$((minutes * 60)) -print_final_stats=1 \
        ${FUZZ_ARGS:-} >"$log" 2>&1 || rc=$?
    after=$(find "artifacts/$t" -type f | wc -l)
    # The last status line ("#N DONE cov: C ft: F corp: K/S exec/s: R ...") and the
    # final stats carry the figures.
    last=$(grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -n 1 || true)
    execs=$(grep -oE '^stat::number_of_executed_units:[[:space:]]*[0-9]+' "$log" | grep -oE '[0-9]+$' || true)
    rate=$(grep -oE '^stat::average_exec_per_sec:[[:space:]]*[0-9]+' "$log" | grep -oE '[0-9]+$' || true)
    cov=$(sed -nE 's/.*cov: ([0-9]+).*/\1/p' <<<"$last")
    ft=$(sed -nE 's/.*ft: ([0-9]+).*/\1/p' <<<"$last")
    corp=$(sed -nE 's/.*corp: ([0-9]+\/[0-9]+[a-zA-Z]*).*/\1/p' <<<"$last")
    crashes=$((after - before))
    if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
        status=1
    fi
    summary+=("$t started=$started minutes=$minutes execs=${execs:-?} exec/s=${rate:-?} cov=${cov:-?} features=${ft:-?} corpus=${corp:-?} new_crashes=$crashes exit=$rc")
done

echo
echo "== fuzz summary"
for line in "${summary[@]}"; do
    echo "$line"
done
if [ "$status" -ne 0 ]; then
    echo "crash or error: see fuzz/logs/ and fuzz/artifacts/; reproduce with" \
        "RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <artifact> (in fuzz/)"
fi
exit "$status"
