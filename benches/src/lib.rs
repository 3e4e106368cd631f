//! Benchmarks of liquid-p2p live in `benches/`.
