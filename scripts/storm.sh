#!/usr/bin/env bash
# Redial storm check (not in CI): a required peer refused by a full host backs off
# on its schedule, is told why, and costs the host under 2 % of one core. See
# scripts/py/storm.py.
#
#   scripts/storm.sh [--release] [storm.py options, e.g. --seconds 25]
#   PEER_BIN=/path/to/peer scripts/storm.sh ...   # use a binary built beforehand
#
# Exit: 0 pass, 1 fail, 2 set-up failed.
set -euo pipefail

cd "$(dirname "$0")/.."
PROFILE=debug
if [[ "${1:-}" == "--release" ]]; then
    PROFILE=release
    shift
fi
command -v python3 >/dev/null || { echo "storm needs python3"; exit 2; }

# shellcheck source=scripts/lib/peer.sh
source scripts/lib/peer.sh
resolve_peer
echo "peer: $PEER ($PROFILE)"
exec python3 scripts/py/storm.py --peer "$PEER" "$@"
