//! Examples of liquid-p2p: the `peer` binary and the `demo`.
