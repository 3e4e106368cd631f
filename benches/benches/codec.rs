//! Frame encode and decode of 256 B and 1 MiB payloads, against a plain copy of
//! the payload (the least any framing must do) as the baseline measured in the same
//! run.
//!
//! - `encode`: `write_frame` into an in-memory writer (header and payload, one
//!   write for small frames) vs. copying the payload into the same writer.
//! - `decode`: `FrameReader::next_frame` over an in-memory stream of 64 frames vs.
//!   copying each payload out of the same bytes (inside a tokio runtime: the
//!   reader times out started frames with tokio's clock).

use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::{AsyncWriteExt, executor::block_on, io::Cursor};
use liquid_p2p_core::{FrameReader, codec};

const PROTOCOL: &str = "/chain/1/consensus/1";
const FRAMES: usize = 64;

fn sizes() -> [(&'static str, usize); 2] {
    [("256B", 256), ("1MiB", 1 << 20)]
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for (name, size) in sizes() {
        let payload = vec![7u8; size];
        let mut out = Vec::with_capacity(size + 64);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("write_frame", name), &payload, |b, p| {
            b.iter(|| {
                out.clear();
                block_on(codec::write_frame(
                    &mut Cursor::new(&mut out),
                    PROTOCOL,
                    p,
                    None,
                ))
                .expect("in-memory write");
            })
        });
        group.bench_with_input(BenchmarkId::new("copy_baseline", name), &payload, |b, p| {
            b.iter(|| {
                out.clear();
                block_on(Cursor::new(&mut out).write_all(p)).expect("in-memory write");
            })
        });
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    // The reader times out started frames with tokio's clock.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("decode");
    for (name, size) in sizes() {
        let payload = vec![7u8; size];
        let frame = codec::encode_frame(PROTOCOL, &payload);
        let stream: Vec<u8> = frame
            .iter()
            .copied()
            .cycle()
            .take(frame.len() * FRAMES)
            .collect();
        group.throughput(Throughput::Bytes((size * FRAMES) as u64));
        group.bench_with_input(BenchmarkId::new("frame_reader", name), &stream, |b, s| {
            b.iter(|| {
                rt.block_on(async {
                    let mut reader = FrameReader::new(&s[..], 2 << 20, Duration::from_secs(5));
                    let mut n = 0;
                    while let Some(f) = reader.next_frame().await.expect("valid frames") {
                        n += f.payload.len();
                    }
                    assert_eq!(n, size * FRAMES);
                })
            })
        });
        let header = frame.len() - size;
        group.bench_with_input(BenchmarkId::new("copy_baseline", name), &stream, |b, s| {
            b.iter(|| {
                let mut n = 0;
                for f in s.chunks(frame.len()) {
                    n += Bytes::copy_from_slice(&f[header..]).len();
                }
                assert_eq!(n, size * FRAMES);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);
