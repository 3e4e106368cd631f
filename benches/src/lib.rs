//! Benchmarks of liquid-p2p.
//!
//! - `benches/pool.rs`: criterion micro-benchmark of `SendStreamPool`.
//! - [`compare`]: the side-by-side comparison behind
//!   `cargo run --release -p liquid-p2p-benches --bin compare`, which measures
//!   liquid-p2p against plain rust-libp2p ways of sending the same messages and
//!   writes `benches/RESULTS.md`, `benches/results.json` and `benches/charts/`.

pub mod compare;
