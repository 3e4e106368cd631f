# Sourced by chaos.sh and soak.sh: the `peer` binary they drive.
#
# resolve_peer sets TARGET_DIR (cargo's target directory) and PEER: $PEER_BIN if
# set (a binary built beforehand; PROFILE then says so), else `peer` built with
# the profile in $PROFILE (debug or release). Exits 2 if the build fails or no
# binary is there.
resolve_peer() {
    TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')" || exit 2
    if [[ -n "${PEER_BIN:-}" ]]; then
        PEER="$PEER_BIN"
        PROFILE="given by PEER_BIN"
    elif [[ "$PROFILE" == release ]]; then
        cargo build --release -p liquid-p2p-peer --bin peer || exit 2
        PEER="$TARGET_DIR/release/peer"
    else
        cargo build -p liquid-p2p-peer --bin peer || exit 2
        PEER="$TARGET_DIR/debug/peer"
    fi
    [[ -x "$PEER" ]] || { echo "no peer binary at $PEER"; exit 2; }
}
