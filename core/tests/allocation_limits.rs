//! The decoders never allocate more than their configured limits allow.
//!
//! A hostile peer controls every length prefix we read. The codec checks each length
//! against its limit before buffering what it announces, so the memory one decode can
//! cost is bounded by the configuration (`max_frame_size`, `max_protocols` × 256), not
//! by the peer. Unit tests can only look at buffer capacities; this file counts every
//! byte handed out by the global allocator while a decode runs, so an allocation
//! anywhere in the call (a `Vec::with_capacity(announced)`, a `BytesMut::reserve`, a
//! decompression buffer) is seen.
//!
//! The counter is per thread: `cargo test` runs tests on parallel threads, and each
//! measured call runs to completion on the thread that started it (plain calls, or a
//! current-thread tokio runtime).

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    time::Duration,
};

use bytes::BytesMut;
use liquid_p2p_core::{
    FrameDecoder, FrameReader, MAX_PROTOCOL_LEN,
    codec::{FLAG_COMPRESSED, encode_frame, encode_header},
    exchange::{encode_protocol_list, read_protocol_list},
};
use proptest::prelude::*;

/// Counts the bytes live on this thread and the peak since the last reset.
struct CountingAllocator;

thread_local! {
    // `const` initialisers and `Cell<isize>` have no destructor to register, so these
    // can be touched from inside the allocator without allocating.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn on_alloc(size: usize) {
    // `try_with` so an allocation during thread teardown is simply not counted.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + size as isize;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn on_dealloc(size: usize) {
    // Memory freed here may have been allocated on another thread, so `LIVE` can dip
    // below its starting value; only the peak above the start is measured.
    let _ = LIVE.try_with(|live| live.set(live.get() - size as isize));
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            on_alloc(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            on_alloc(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        on_dealloc(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Counted as the old block and the new one both live, as they may be
            // during the copy.
            on_alloc(new_size);
            on_dealloc(layout.size());
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Starts a measurement on this thread: returns the bytes live now, and resets the
/// peak to it.
fn start_measuring() -> isize {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    start
}

/// The peak number of bytes allocated on this thread since `start_measuring`, above
/// what was live then.
fn peak_since(start: isize) -> usize {
    (PEAK.with(Cell::get) - start).max(0) as usize
}

/// Runs `f` and returns its result with the peak number of bytes it had allocated.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let start = start_measuring();
    let out = f();
    (out, peak_since(start))
}

/// Allowance for the small allocations a call makes regardless of input: the
/// `Shared` header `BytesMut::split_to` creates, tokio's timer entry, error strings.
const SLACK: usize = 8 * 1024;

/// Bytes a frame header can take beyond its protocol id: three varints of at most
/// 9 bytes.
const MAX_HEADER: usize = 3 * 9 + MAX_PROTOCOL_LEN;

/// `FrameDecoder::decode` works in the caller's buffer: it may allocate the protocol
/// id and, for a compressed frame, the inflated payload (at most `max_frame_size`).
fn decode_bound(max_frame_size: usize) -> usize {
    max_frame_size + MAX_PROTOCOL_LEN + SLACK
}

/// `FrameReader::next_frame` also owns its read buffer. It holds at most one frame
/// plus one header-sized read (4 KiB) past it, and growing a buffer may double its
/// capacity, so the buffer is bounded by twice that; the inflated payload comes on
/// top.
fn reader_bound(max_frame_size: usize) -> usize {
    2 * (max_frame_size + MAX_HEADER + 4 * 1024) + max_frame_size + MAX_PROTOCOL_LEN + SLACK
}

/// `read_protocol_list` holds at most `max_protocols` names of at most 256 bytes,
/// each in a `String`.
fn exchange_bound(max_protocols: usize) -> usize {
    max_protocols * (std::mem::size_of::<String>() + MAX_PROTOCOL_LEN) + SLACK
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

/// Decodes frames until the buffer needs more bytes or an error; returns the peak.
fn decoder_peak(bytes: &[u8], max_frame_size: usize) -> usize {
    let decoder = FrameDecoder::new(max_frame_size);
    let mut buf = BytesMut::from(bytes);
    let mut peak = 0;
    loop {
        let (res, p) = peak_during(|| decoder.decode(&mut buf));
        peak = peak.max(p);
        match res {
            Ok(Some(frame)) => drop(frame),
            Ok(None) | Err(_) => return peak,
        }
    }
}

/// Reads frames from `bytes` until the end or an error; returns the peak of the
/// whole read loop, reader buffer included. `&[u8]` is always ready, so the loop runs
/// within one poll and nothing else runs on this thread meanwhile.
fn reader_peak(rt: &tokio::runtime::Runtime, bytes: &[u8], max_frame_size: usize) -> usize {
    rt.block_on(async {
        let start = start_measuring();
        let mut reader = FrameReader::new(bytes, max_frame_size, Duration::from_secs(5));
        while let Ok(Some(frame)) = reader.next_frame().await {
            drop(frame);
        }
        drop(reader);
        peak_since(start)
    })
}

/// Reads one protocol list from `bytes`; returns the peak, the list included.
fn exchange_peak(rt: &tokio::runtime::Runtime, bytes: &[u8], max_protocols: usize) -> usize {
    rt.block_on(async {
        let start = start_measuring();
        let list = read_protocol_list(&mut &bytes[..], max_protocols).await;
        drop(list);
        peak_since(start)
    })
}

fn varint(v: u64) -> Vec<u8> {
    let mut tmp = unsigned_varint::encode::u64_buffer();
    unsigned_varint::encode::u64(v, &mut tmp).to_vec()
}

/// Length prefixes from tiny to absurd, weighted towards the huge ones.
fn length_prefix() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..64,
        (1u64 << 10)..(1u64 << 24),
        (1u64 << 24)..(1u64 << 40),
        Just(1u64 << 32),
        Just(u32::MAX as u64),
        Just(u64::MAX >> 1),
        any::<u64>(),
    ]
}

/// A frame header with an arbitrary (often huge) payload length and protocol
/// length, followed by arbitrary bytes.
fn hostile_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        0u64..3,
        prop_oneof![0u64..=MAX_PROTOCOL_LEN as u64, length_prefix()],
        length_prefix(),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(flags, proto_len, payload_len, tail)| {
            let mut out = varint(flags);
            out.extend(varint(proto_len));
            // A protocol id of the announced length when it is plausible, so the
            // payload length is reached.
            if proto_len <= MAX_PROTOCOL_LEN as u64 {
                out.extend(std::iter::repeat_n(b'p', proto_len as usize));
            }
            out.extend(varint(payload_len));
            out.extend(tail);
            out
        })
}

/// A protocol list with an arbitrary (often huge) count and name lengths.
fn hostile_list() -> impl Strategy<Value = Vec<u8>> {
    (
        length_prefix(),
        proptest::collection::vec(
            (
                prop_oneof![1u64..=MAX_PROTOCOL_LEN as u64, length_prefix()],
                any::<u8>(),
            ),
            0..8,
        ),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(count, names, tail)| {
            let mut out = varint(count);
            for (len, byte) in names {
                out.extend(varint(len));
                if len <= MAX_PROTOCOL_LEN as u64 {
                    out.extend(std::iter::repeat_n(byte & 0x7f, len as usize));
                }
            }
            out.extend(tail);
            out
        })
}

#[test]
fn the_counter_sees_an_allocation_of_the_announced_length() {
    // A decoder that trusted the prefix would be caught: this is what the bounds
    // below would measure for it.
    let announced = 16 << 20;
    let (v, peak) = peak_during(|| Vec::<u8>::with_capacity(announced));
    drop(v);
    assert!(peak >= announced, "counted {peak} of {announced} bytes");
    assert!(peak > decode_bound(1 << 20));
}

#[test]
fn four_gib_length_prefix_allocates_almost_nothing() {
    let four_gib = 1usize << 32;
    let mut header = Vec::new();
    encode_header(0, "/a", four_gib, &mut header);
    let mut compressed = Vec::new();
    encode_header(FLAG_COMPRESSED, "/a", four_gib, &mut compressed);

    for bytes in [&header, &compressed] {
        let peak = decoder_peak(bytes, 16 << 20);
        assert_eq!(peak, 0, "FrameDecoder::decode allocated {peak} bytes");
    }

    // A small compressed frame whose snappy preamble claims 4 GiB - 1 inflated
    // bytes: the claim is checked against the limit before inflating.
    let mut claim = varint(u32::MAX as u64);
    claim.extend_from_slice(&[0, 1, 2, 3]);
    let mut bomb = Vec::new();
    encode_header(FLAG_COMPRESSED, "/a", claim.len(), &mut bomb);
    bomb.extend_from_slice(&claim);
    let peak = decoder_peak(&bomb, 16 << 20);
    assert!(peak <= 1024, "FrameDecoder::decode allocated {peak} bytes");

    // The reader reads one header-sized chunk (4 KiB) before it knows the length.
    let rt = runtime();
    for bytes in [&header, &compressed, &bomb] {
        let peak = reader_peak(&rt, bytes, 16 << 20);
        assert!(peak <= 8 * 1024, "FrameReader allocated {peak} bytes");
    }

    // A list announcing 4 Gi protocols, and a list whose one name is 4 GiB long.
    let count = varint(four_gib as u64);
    let mut name = varint(1);
    name.extend(varint(four_gib as u64));
    for bytes in [&count, &name] {
        let peak = exchange_peak(&rt, bytes, 1024);
        assert!(
            peak <= 1024,
            "read_protocol_list allocated {peak} bytes for {bytes:?}"
        );
    }
}

#[test]
fn a_frame_at_the_limit_is_measured_within_the_bound() {
    // The bound is not vacuous: a maximal frame does allocate, and stays under it.
    let max = 64 * 1024;
    let payload = vec![3u8; max];
    let compressed = snap::raw::Encoder::new()
        .compress_vec(&payload)
        .expect("compress");
    let mut bytes = Vec::new();
    encode_header(FLAG_COMPRESSED, "/z", compressed.len(), &mut bytes);
    bytes.extend_from_slice(&compressed);
    let peak = decoder_peak(&bytes, max);
    assert!(peak >= max, "inflating {max} bytes counted only {peak}");
    assert!(peak <= decode_bound(max), "{peak} > {}", decode_bound(max));

    let rt = runtime();
    let plain = encode_frame("/z", &payload);
    let peak = reader_peak(&rt, &plain, max);
    assert!(peak >= max, "reading {max} bytes counted only {peak}");
    assert!(peak <= reader_bound(max), "{peak} > {}", reader_bound(max));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn decoding_any_bytes_stays_within_the_frame_limit(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        max in 0usize..4096,
    ) {
        let peak = decoder_peak(&bytes, max);
        prop_assert!(peak <= decode_bound(max), "{} > {}", peak, decode_bound(max));
    }

    #[test]
    fn decoding_a_hostile_header_stays_within_the_frame_limit(
        bytes in hostile_frame(),
        max in prop_oneof![0usize..4096, Just(1usize << 20)],
    ) {
        let peak = decoder_peak(&bytes, max);
        prop_assert!(peak <= decode_bound(max), "{} > {}", peak, decode_bound(max));
    }

    #[test]
    fn reading_a_hostile_stream_stays_within_the_frame_limit(
        frames in proptest::collection::vec(
            prop_oneof![
                hostile_frame(),
                ("[a-z/]{0,16}", proptest::collection::vec(any::<u8>(), 0..512))
                    .prop_map(|(p, b)| encode_frame(&p, &b)),
            ],
            1..4,
        ),
        max in prop_oneof![0usize..4096, Just(1usize << 20)],
    ) {
        let rt = runtime();
        let bytes = frames.concat();
        let peak = reader_peak(&rt, &bytes, max);
        prop_assert!(peak <= reader_bound(max), "{} > {}", peak, reader_bound(max));
    }

    #[test]
    fn reading_a_hostile_protocol_list_stays_within_the_list_limit(
        bytes in prop_oneof![hostile_list(), proptest::collection::vec(any::<u8>(), 0..600)],
        max_protocols in prop_oneof![0usize..64, Just(1024usize)],
    ) {
        let rt = runtime();
        let peak = exchange_peak(&rt, &bytes, max_protocols);
        let bound = exchange_bound(max_protocols);
        prop_assert!(peak <= bound, "{} > {}", peak, bound);
    }

    #[test]
    fn valid_protocol_lists_stay_within_the_list_limit(
        list in proptest::collection::vec("[a-z/0-9]{1,256}", 0..32),
    ) {
        let rt = runtime();
        let bytes = encode_protocol_list(&list);
        let peak = exchange_peak(&rt, &bytes, 32);
        let bound = exchange_bound(32);
        prop_assert!(peak <= bound, "{} > {}", peak, bound);
    }
}
