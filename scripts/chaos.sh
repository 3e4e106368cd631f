#!/usr/bin/env bash
# Faults with real processes and links (issue 7 item 4): link down and up, packet
# loss and delay, repeated kill -9 of a required peer. Test hosts are `peer`
# processes in two network namespaces joined by a veth pair; the checks are in
# scripts/py/chaos.py (its docstring says what each checks). Needs root and
# `ip netns`; skips (exit 0) with a message where they are missing. Not in CI.
#
#   scripts/chaos.sh [--release] [chaos.py options, e.g. --checks kill --cycles 5]
#   PEER_BIN=/path/to/peer scripts/chaos.sh ...   # use a binary built beforehand
#
# Exit: 0 all checks passed (or skipped), 1 a check failed, 2 set-up failed.
set -euo pipefail

cd "$(dirname "$0")/.."
PROFILE=debug
if [[ "${1:-}" == "--release" ]]; then
    PROFILE=release
    shift
fi

skip() {
    echo "SKIP chaos: $*"
    exit 0
}
[[ "$(id -u)" == 0 ]] || skip "needs root (network namespaces, veth, tc)"
command -v ip >/dev/null || skip "iproute2 (ip) not installed"
command -v python3 >/dev/null || skip "python3 not installed"
ip netns list >/dev/null 2>&1 || skip "ip netns unavailable"
PREFIX="lqc$$"
if ! ip netns add "$PREFIX-probe" 2>/dev/null; then
    skip "cannot create a network namespace here"
fi
ip netns del "$PREFIX-probe"

cleanup() {
    # chaos.py removes what it made; this catches a crash or a kill of it.
    for ns in "$PREFIX-a" "$PREFIX-b"; do
        # Processes left in our namespaces are peers this run started.
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=scripts/lib/peer.sh
source scripts/lib/peer.sh
resolve_peer
OUT="${CHAOS_OUT:-$TARGET_DIR/chaos/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
echo "peer: $PEER ($PROFILE); logs and results: $OUT"

python3 scripts/py/chaos.py --peer "$PEER" --out "$OUT" --prefix "$PREFIX" "$@"
