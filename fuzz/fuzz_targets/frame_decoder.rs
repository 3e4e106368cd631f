//! Fuzzes the frame decoder two ways over the same bytes and checks they agree.
//!
//! 1. `FrameDecoder::decode` in a loop over the whole input, as a receive buffer
//!    holding everything the peer sent.
//! 2. `FrameReader::next_frame` over a stream that returns the bytes in small reads.
//!
//! Checked, besides "no panic" (and, under ASan, no memory error):
//! - every decoded frame round-trips: an uncompressed frame re-encodes to exactly the
//!   bytes it was decoded from (varints are minimal, so the encoding is canonical);
//!   any frame re-encoded plain and compressed decodes back to itself;
//! - the reader yields the same frames as the decoder and ends the same way: a clean
//!   end where the decoder consumed everything, `Truncated` where bytes were left
//!   over, the same `FrameError` where the decoder failed (the reader may reject a
//!   non-UTF-8 protocol id before the rest of its frame arrives).

#![no_main]

use std::{sync::OnceLock, time::Duration};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use liquid_p2p_core::{
    Frame, FrameDecoder, FrameError, FrameReader, ReadError,
    codec::{FLAG_COMPRESSED, encode_frame, encode_header},
};
use liquid_p2p_fuzz::{ChunkedReader, Input};

fn runtime() -> &'static tokio::runtime::Runtime {
    // The reader arms a tokio timer for the frame-read timeout; the in-memory stream
    // never waits, so the timer never fires.
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
    })
}

/// How the decoder loop ended.
#[derive(Debug, PartialEq)]
enum End {
    /// Every byte was consumed.
    Clean,
    /// Bytes of an incomplete frame were left.
    Truncated,
    /// The decoder failed.
    Error(FrameError),
}

/// The reader must end as the decoder did, with one allowance: it may reject a
/// protocol id that is not UTF-8 as soon as the header is in, where the decoder,
/// which only looks at complete frames, reports the truncated frame instead.
fn ends_agree(decoder: &End, reader: &End) -> bool {
    decoder == reader
        || (*decoder == End::Truncated && *reader == End::Error(FrameError::ProtocolNotUtf8))
}

fn decode_one(decoder: &FrameDecoder, bytes: &[u8]) -> Result<Option<Frame>, FrameError> {
    decoder.decode(&mut BytesMut::from(bytes))
}

fn check_round_trip(decoder: &FrameDecoder, max: usize, frame: &Frame, wire: &[u8]) {
    let plain = encode_frame(&frame.protocol, &frame.payload);
    if wire[0] & FLAG_COMPRESSED as u8 == 0 {
        assert_eq!(
            plain, wire,
            "uncompressed frame is not re-encoded byte for byte"
        );
    }
    assert_eq!(
        decode_one(decoder, &plain).as_ref(),
        Ok(&Some(frame.clone()))
    );

    let compressed = snap::raw::Encoder::new()
        .compress_vec(&frame.payload)
        .expect("compress");
    if compressed.len() <= max {
        let mut bytes = Vec::new();
        encode_header(
            FLAG_COMPRESSED,
            &frame.protocol,
            compressed.len(),
            &mut bytes,
        );
        bytes.extend_from_slice(&compressed);
        assert_eq!(
            decode_one(decoder, &bytes).as_ref(),
            Ok(&Some(frame.clone()))
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::split(data) else {
        return;
    };
    let max = 4 * input.limit as usize;
    let decoder = FrameDecoder::new(max);

    // 1. The decoder over the whole buffer.
    let mut buf = BytesMut::from(input.wire);
    let mut frames = Vec::new();
    let end = loop {
        let offset = input.wire.len() - buf.len();
        match decoder.decode(&mut buf) {
            Ok(Some(frame)) => {
                let used = input.wire.len() - buf.len() - offset;
                assert!(used > 0, "a frame was decoded from no bytes");
                check_round_trip(&decoder, max, &frame, &input.wire[offset..offset + used]);
                frames.push(frame);
            }
            Ok(None) if buf.is_empty() => break End::Clean,
            Ok(None) => break End::Truncated,
            Err(e) => break End::Error(e),
        }
    };

    // 2. The reader over a stream of small reads must agree.
    let stream = ChunkedReader::new(input.wire, input.read_size);
    let mut reader = FrameReader::new(stream, max, Duration::from_secs(60));
    let (read, reader_end) = runtime().block_on(async {
        let mut read = Vec::new();
        let end = loop {
            match reader.next_frame().await {
                Ok(Some(frame)) => read.push(frame),
                Ok(None) => break End::Clean,
                Err(ReadError::Frame(FrameError::Truncated)) => break End::Truncated,
                Err(ReadError::Frame(e)) => break End::Error(e),
                Err(ReadError::Io(e)) => panic!("in-memory stream failed: {e}"),
            }
        };
        (read, end)
    });
    assert_eq!(read, frames, "reader and decoder disagree on the frames");
    assert!(
        ends_agree(&end, &reader_end),
        "reader ended with {reader_end:?}, decoder with {end:?}"
    );
});
