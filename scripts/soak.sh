#!/usr/bin/env bash
# Soak (issue 7 item 7; not in CI): 20 `peer` processes on loopback in a full
# mesh, mixed small and large traffic, random kill -9 and restart, for a
# configurable time (default 10 minutes). RSS, open files, tasks, pool and
# inbound stream counts are sampled every 10 s to a CSV; the run fails if a
# survivor's figures grow (rule in scripts/py/soak.py) or if the mesh is not
# whole and consistent at rest at the end.
#
#   scripts/soak.sh [--release] [soak.py options, e.g. --seconds 120 --hosts 10]
#   PEER_BIN=/path/to/peer scripts/soak.sh ...   # use a binary built beforehand
#
# Exit: 0 pass, 1 fail, 2 set-up failed.
set -euo pipefail

cd "$(dirname "$0")/.."
PROFILE=debug
if [[ "${1:-}" == "--release" ]]; then
    PROFILE=release
    shift
fi
command -v python3 >/dev/null || { echo "soak needs python3"; exit 2; }

# shellcheck source=scripts/lib/peer.sh
source scripts/lib/peer.sh
resolve_peer
OUT="${SOAK_OUT:-$TARGET_DIR/soak/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
echo "peer: $PEER ($PROFILE); logs, samples and results: $OUT"
# soak.py quits every peer it started, also on failure; a hard kill of the
# script leaves them to be stopped by hand (their command lines name $OUT).
exec python3 scripts/py/soak.py --peer "$PEER" --out "$OUT" "$@"
