#!/usr/bin/env bash
# The whole test suite, as CI runs it (README, "Tests").
#
# Arguments go to both cargo commands (scripts/flaky.sh passes --no-fail-fast, or
# --no-run to build the suite). Both commands run even if the first fails; the
# script fails if either did.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0

# Every crate with every feature (QUIC, DNS, serde, and any feature added later).
cargo test --workspace --all-features "$@" || status=$?

# The two library crates with no default feature: no QUIC, no DNS, no serde. Only
# a run limited to them builds them bare (the examples turn serde on, the
# benchmarks QUIC). Their unit tests, and the end-to-end tests whose code changes
# with the features: what a missing feature does (transports), listen and dial
# errors through a transport without the resolver layer (errors), a network key
# with no QUIC to leave out (membership), and a broad send/receive run over the
# bare transport. The other end-to-end tests run over TCP, the same code with or
# without the features, in the run above.
cargo test -p liquid-p2p-core -p liquid-p2p --no-default-features \
  --lib --test transports --test errors --test membership --test send_receive "$@" || status=$?
exit "$status"
