#!/usr/bin/env bash
# A cluster at scale: N `peer` processes (default 100) and one seed on the chain
# `scale`, each in its own network namespace with 20 ms emulated latency per link
# (tc netem on veths to a bridge where the kernel has sch_netem, else a user-space
# hub over TUN devices), or all on 127.0.0.1 with no latency when not root, when
# namespaces are unavailable, or with --loopback; the first output line says which
# mode ran. Measures the time until every node has >= min_peers peers, gossip
# broadcast latency / loss / duplicates, and direct-send loss over kill -9 /
# restart cycles; scripts/py/cluster.py's docstring says how. Not in CI. See
# docs/SCALE.md.
#
#   scripts/cluster.sh [--release] [--nodes N] [--min-peers M] [--messages K]
#                      [--cycles C] [--latency-ms L] [--loopback] [--keep]
#                      [other cluster.py options, e.g. --rate 50 --batch 10]
#   PEER_BIN=/path/to/peer scripts/cluster.sh ...   # use a binary built beforehand
#
# Results: target/cluster/<timestamp>/ (CLUSTER_OUT overrides): cluster-results.json,
# broadcast-latency.svg, peers-over-time.svg, cluster.log (this output). Without
# --keep the per-process logs and keys there are removed at the end.
#
# Exit: 0 all checks passed, 1 a check failed, 2 set-up failed, 130 interrupted;
# 0 with a line "SKIP cluster: ..." when python3 is missing.
set -euo pipefail

cd "$(dirname "$0")/.."
PROFILE=debug
KEEP=0
ARGS=()
for arg in "$@"; do
    case "$arg" in
        --release) PROFILE=release ;;
        --keep) KEEP=1 ;;
        *) ARGS+=("$arg") ;;
    esac
done

skip() {
    echo "SKIP cluster: $*"
    exit 0
}
command -v python3 >/dev/null || skip "python3 not installed"

PREFIX="lqs$$"
OUT=""
cleanup() {
    # cluster.py removes what it made; this catches a crash or a kill of it.
    if [[ -n "$OUT" && -f "$OUT/pids" ]]; then
        # Only processes this run started (their ids are in $OUT/pids) and that
        # still run the peer binary.
        while read -r pid; do
            if [[ -n "$pid" && "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$(readlink -f "$PEER")" ]]; then
                kill -9 "$pid" 2>/dev/null || true
            fi
        done <"$OUT/pids"
    fi
    if [[ "$(id -u)" == 0 ]] && command -v ip >/dev/null; then
        for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$PREFIX-" || true); do
            ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
            ip netns del "$ns" 2>/dev/null || true
        done
    fi
    if [[ -n "$OUT" && -d "$OUT" && "$KEEP" == 0 ]]; then
        rm -f "$OUT"/*.stdout "$OUT"/*.stderr "$OUT"/*.key "$OUT/pids"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=scripts/lib/peer.sh
source scripts/lib/peer.sh
resolve_peer
OUT="${CLUSTER_OUT:-$TARGET_DIR/cluster/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
echo "peer: $PEER ($PROFILE); results: $OUT"
# Many processes, each with a few dozen sockets.
ulimit -n 65536 2>/dev/null || true

set +e
python3 scripts/py/cluster.py --peer "$PEER" --out "$OUT" --prefix "$PREFIX" "${ARGS[@]}" 2>&1 | (trap "" INT; tee "$OUT/cluster.log")
rc=${PIPESTATUS[0]}
set -e
exit "$rc"
