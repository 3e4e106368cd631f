//! The frame format of `/liquid/msg/1.0.0` streams.
//!
//! ```text
//! uvarint flags        bit 0: payload compressed (raw snappy); other bits must be 0
//! uvarint proto_len    <= 256
//! bytes   proto        UTF-8 application protocol id
//! uvarint payload_len  <= max_frame_size
//! bytes   payload
//! ```
//!
//! Varints are unsigned LEB128 as in multiformats (minimal encoding, at most 9
//! bytes). Limits are checked as soon as each length is known, before any of the
//! bytes it announces are buffered, so a 4 GiB length prefix allocates nothing.

use std::{io, pin::Pin, task::Poll, time::Duration};

use bytes::{Buf, Bytes, BytesMut};
use futures::{AsyncRead, AsyncWrite, AsyncWriteExt, FutureExt};
use tokio::time::Instant;

use crate::config::MAX_PROTOCOL_LEN;

/// Flag bit 0: the payload is compressed with raw snappy.
pub const FLAG_COMPRESSED: u64 = 1;

/// The scratch buffer of a reading stream: enough for many small frames per read
/// and for any frame header (at most 9 + 9 + 256 + 9 bytes).
const HEADER_CHUNK: usize = 4 * 1024;

/// Largest read once a frame's length is known.
const PAYLOAD_CHUNK: usize = 1024 * 1024;

/// Frames with payloads up to this size are written with their header in one write.
const COALESCE_LIMIT: usize = 16 * 1024;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The application protocol the payload is for.
    pub protocol: String,
    /// The payload, decompressed if it was sent compressed.
    pub payload: Bytes,
}

/// Ways in which a frame can break the wire format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Flag bits other than bit 0 were set.
    #[error("unknown flag bits {0:#x}")]
    UnknownFlags(u64),
    /// A varint was longer than 9 bytes or not minimally encoded.
    #[error("malformed varint")]
    BadVarint,
    /// The protocol id is longer than 256 bytes.
    #[error("protocol id of {len} bytes exceeds {MAX_PROTOCOL_LEN}")]
    ProtocolTooLong {
        /// Announced length.
        len: u64,
    },
    /// The protocol id is not UTF-8.
    #[error("protocol id is not UTF-8")]
    ProtocolNotUtf8,
    /// The payload (or its decompressed size) exceeds `max_frame_size`.
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Announced length.
        len: u64,
        /// The configured limit.
        max: usize,
    },
    /// A compressed payload could not be decompressed.
    #[error("compressed payload is corrupt")]
    BadCompression,
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// No byte of a started frame arrived for `frame_read_timeout`.
    #[error("frame incomplete after {0:?}")]
    ReadTimeout(Duration),
}

/// Why reading the next frame stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The peer broke the wire format.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The stream failed (reset, connection closed).
    #[error(transparent)]
    Io(#[from] io::Error),
}

struct Header {
    flags: u64,
    proto_start: usize,
    proto_len: usize,
    payload_len: usize,
    header_len: usize,
}

/// Longest varint accepted: multiformats caps unsigned varints at 9 bytes (63 bits).
pub(crate) const MAX_VARINT_LEN: usize = 9;

fn varint(buf: &[u8]) -> Result<Option<(u64, usize)>, FrameError> {
    // `unsigned_varint` takes a 10th byte and drops the bits past 64, so a long
    // varint could pose as a small one (found by fuzzing): the cap is checked here.
    match unsigned_varint::decode::u64(buf) {
        Ok((v, rest)) if buf.len() - rest.len() <= MAX_VARINT_LEN => {
            Ok(Some((v, buf.len() - rest.len())))
        }
        Err(unsigned_varint::decode::Error::Insufficient) if buf.len() < MAX_VARINT_LEN => Ok(None),
        _ => Err(FrameError::BadVarint),
    }
}

/// Decodes frames from a byte buffer, enforcing the limits.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max_frame_size: usize,
}

impl FrameDecoder {
    /// A decoder accepting payloads up to `max_frame_size` bytes.
    pub fn new(max_frame_size: usize) -> Self {
        Self { max_frame_size }
    }

    fn header(&self, buf: &[u8]) -> Result<Option<Header>, FrameError> {
        let Some((flags, a)) = varint(buf)? else {
            return Ok(None);
        };
        if flags & !FLAG_COMPRESSED != 0 {
            return Err(FrameError::UnknownFlags(flags));
        }
        let Some((proto_len, b)) = varint(&buf[a..])? else {
            return Ok(None);
        };
        if proto_len > MAX_PROTOCOL_LEN as u64 {
            return Err(FrameError::ProtocolTooLong { len: proto_len });
        }
        let proto_start = a + b;
        let proto_end = proto_start + proto_len as usize;
        if buf.len() < proto_end {
            return Ok(None);
        }
        let Some((payload_len, c)) = varint(&buf[proto_end..])? else {
            return Ok(None);
        };
        if payload_len > self.max_frame_size as u64 {
            return Err(FrameError::TooLarge {
                len: payload_len,
                max: self.max_frame_size,
            });
        }
        Ok(Some(Header {
            flags,
            proto_start,
            proto_len: proto_len as usize,
            payload_len: payload_len as usize,
            header_len: proto_end + c,
        }))
    }

    /// Total length of the frame at the start of `buf`, once its header is complete.
    pub fn frame_len(&self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        Ok(self.header(buf)?.map(|h| h.header_len + h.payload_len))
    }

    /// Takes one complete frame off the front of `buf`. `Ok(None)` means more bytes
    /// are needed; an error means the stream must be reset.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(h) = self.header(buf)? else {
            return Ok(None);
        };
        if buf.len() < h.header_len + h.payload_len {
            return Ok(None);
        }
        let protocol = std::str::from_utf8(&buf[h.proto_start..h.proto_start + h.proto_len])
            .map_err(|_| FrameError::ProtocolNotUtf8)?
            .to_owned();
        buf.advance(h.header_len);
        let raw = buf.split_to(h.payload_len).freeze();
        let payload = self.payload(h.flags, raw)?;
        Ok(Some(Frame { protocol, payload }))
    }

    /// The payload as the application sees it: decompressed if the flags say so.
    fn payload(&self, flags: u64, raw: Bytes) -> Result<Bytes, FrameError> {
        if flags & FLAG_COMPRESSED != 0 {
            self.decompress(&raw)
        } else {
            Ok(raw)
        }
    }

    fn decompress(&self, raw: &[u8]) -> Result<Bytes, FrameError> {
        let len = snap::raw::decompress_len(raw).map_err(|_| FrameError::BadCompression)?;
        if len > self.max_frame_size {
            return Err(FrameError::TooLarge {
                len: len as u64,
                max: self.max_frame_size,
            });
        }
        snap::raw::Decoder::new()
            .decompress_vec(raw)
            .map(Bytes::from)
            .map_err(|_| FrameError::BadCompression)
    }
}

/// Writes the header of a frame into `out`.
pub fn encode_header(flags: u64, protocol: &str, payload_len: usize, out: &mut Vec<u8>) {
    let mut tmp = unsigned_varint::encode::u64_buffer();
    out.extend_from_slice(unsigned_varint::encode::u64(flags, &mut tmp));
    out.extend_from_slice(unsigned_varint::encode::u64(
        protocol.len() as u64,
        &mut tmp,
    ));
    out.extend_from_slice(protocol.as_bytes());
    out.extend_from_slice(unsigned_varint::encode::u64(payload_len as u64, &mut tmp));
}

/// Encodes a whole frame (uncompressed) into one buffer.
pub fn encode_frame(protocol: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(protocol.len() + payload.len() + 24);
    encode_header(0, protocol, payload.len(), &mut out);
    out.extend_from_slice(payload);
    out
}

/// A frame encoded once, to be written to any number of streams: the payload is
/// compressed (if asked and worth it) and the header built here, not per write.
#[derive(Debug, Clone)]
pub struct EncodedFrame<'a> {
    /// The header, followed by the payload when it is small enough to go in the
    /// same write.
    head: Vec<u8>,
    /// The payload when it goes in a write of its own (else empty).
    body: std::borrow::Cow<'a, [u8]>,
}

impl<'a> EncodedFrame<'a> {
    /// Encodes a frame of `payload` for `protocol`. With `compress_min_size` set,
    /// payloads at least that large are compressed when that makes them smaller.
    pub fn new(protocol: &str, payload: &'a [u8], compress_min_size: Option<usize>) -> Self {
        let compressed = match compress_min_size {
            Some(min) if payload.len() >= min => snap::raw::Encoder::new()
                .compress_vec(payload)
                .ok()
                .filter(|c| c.len() < payload.len()),
            _ => None,
        };
        let (flags, body) = match compressed {
            Some(c) => (FLAG_COMPRESSED, std::borrow::Cow::Owned(c)),
            None => (0, std::borrow::Cow::Borrowed(payload)),
        };
        let mut head = Vec::with_capacity(protocol.len() + 24 + body.len().min(COALESCE_LIMIT));
        encode_header(flags, protocol, body.len(), &mut head);
        if body.len() <= COALESCE_LIMIT {
            head.extend_from_slice(&body);
            Self {
                head,
                body: std::borrow::Cow::Borrowed(&[]),
            }
        } else {
            Self { head, body }
        }
    }

    /// Bytes on the wire.
    pub fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }

    /// The whole frame as one slice, when it is held as one: payloads up to
    /// 16 KiB (after compression) are copied in behind the header.
    pub fn contiguous(&self) -> Option<&[u8]> {
        self.body.is_empty().then_some(&self.head[..])
    }

    /// Never: a frame has at least its header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the frame and flushes it.
    pub async fn write_to<W: AsyncWrite + Unpin>(&self, io: &mut W) -> io::Result<()> {
        io.write_all(&self.head).await?;
        if !self.body.is_empty() {
            io.write_all(&self.body).await?;
        }
        io.flush().await
    }
}

/// Writes one frame and flushes it. With `compress_min_size` set, payloads at least
/// that large are compressed when that makes them smaller.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    io: &mut W,
    protocol: &str,
    payload: &[u8],
    compress_min_size: Option<usize>,
) -> io::Result<()> {
    EncodedFrame::new(protocol, payload, compress_min_size)
        .write_to(io)
        .await
}

thread_local! {
    /// One scratch buffer kept per thread for the next reader that wakes up: a
    /// stream that goes idle after each message (request-reply, low rates) would
    /// otherwise allocate and zero 4 KiB per message.
    static SPARE_SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A `HEADER_CHUNK` buffer: this thread's spare if it has one, else a new one. Its
/// bytes may be stale; readers only use the part they read into.
fn take_scratch() -> Vec<u8> {
    let spare = SPARE_SCRATCH.with(|s| s.take());
    if spare.len() == HEADER_CHUNK {
        spare
    } else {
        vec![0; HEADER_CHUNK]
    }
}

/// Keeps `scratch` as this thread's spare if it has none; else frees it.
fn give_back_scratch(scratch: Vec<u8>) {
    SPARE_SCRATCH.with(|s| {
        let spare = s.take();
        s.set(if spare.is_empty() { scratch } else { spare });
    });
}

/// Reads frames from a stream, enforcing the limits and the per-frame read timeout.
///
/// Memory follows the traffic: an idle stream holds no read buffer at all (it is
/// released whenever a read finds nothing to read), small frames are decoded from a
/// 4 KiB scratch buffer and their payload copied out (so a queued message pins only
/// its own bytes), and a large frame's payload is read straight into a buffer of its
/// own that grows with the bytes received, never with the length announced.
///
/// Poll it inside a tokio runtime with the time driver enabled: the read timeout
/// of a started frame runs on tokio's clock.
pub struct FrameReader<R> {
    io: R,
    /// Bytes read but not decoded yet are `scratch[start..end]`. Empty, with no
    /// allocation, while the stream is idle.
    scratch: Vec<u8>,
    start: usize,
    end: usize,
    /// A frame too large for `scratch` whose payload is being read (boxed: rare,
    /// and an idle reader should stay small).
    large: Option<Box<LargeFrame>>,
    decoder: FrameDecoder,
    frame_read_timeout: Duration,
}

/// What [`FrameReader::next_step`] read.
#[derive(Debug)]
pub enum FrameStep<T> {
    /// A whole frame: its routed protocol and its payload.
    Frame(T, Bytes),
    /// The header of a frame too large for the reader's buffer, before its payload
    /// (`len` bytes on the wire) is read: the following calls read it. A receiver
    /// that bounds its memory makes room for it before calling again; until then
    /// the payload stays with the sender, held back by the stream's flow control.
    Large {
        /// The routed protocol.
        route: T,
        /// The payload's length on the wire.
        len: usize,
    },
}

/// The part of a large frame read so far.
struct LargeFrame {
    flags: u64,
    /// Whether `next_step` has reported it (`FrameStep::Large`).
    announced: bool,
    protocol: String,
    /// `payload[..filled]` has been read.
    payload: BytesMut,
    filled: usize,
    /// The payload length announced by the header.
    len: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader over `io`.
    pub fn new(io: R, max_frame_size: usize, frame_read_timeout: Duration) -> Self {
        Self {
            io,
            scratch: Vec::new(),
            start: 0,
            end: 0,
            large: None,
            decoder: FrameDecoder::new(max_frame_size),
            frame_read_timeout,
        }
    }

    /// The next frame; `Ok(None)` when the stream ended cleanly between frames.
    pub async fn next_frame(&mut self) -> Result<Option<Frame>, ReadError> {
        Ok(self
            .next_routed(|protocol: &str| protocol.to_owned())
            .await?
            .map(|(protocol, payload)| Frame { protocol, payload }))
    }

    /// The next frame, with its protocol id mapped by `route` before it is copied
    /// anywhere: a receiver that knows its protocols gets its own handle for the id
    /// and no allocation per frame beyond the payload. Cancel-safe: bytes already
    /// read stay buffered for the next call.
    pub async fn next_routed<T>(
        &mut self,
        mut route: impl FnMut(&str) -> T,
    ) -> Result<Option<(T, Bytes)>, ReadError> {
        loop {
            match self.next_step(&mut route).await? {
                Some(FrameStep::Frame(routed, payload)) => return Ok(Some((routed, payload))),
                Some(FrameStep::Large { .. }) => {}
                None => return Ok(None),
            }
        }
    }

    /// [`next_routed`](Self::next_routed) that also stops, once, after the header
    /// of a large frame ([`FrameStep::Large`]), before reading its payload.
    /// Cancel-safe like `next_routed`.
    pub async fn next_step<T>(
        &mut self,
        mut route: impl FnMut(&str) -> T,
    ) -> Result<Option<FrameStep<T>>, ReadError> {
        // The timeout bounds each wait for more bytes of a started frame: an idle
        // stream may wait forever for its next frame, and a started frame may take
        // as long as its bytes keep arriving (10 frames of 256 KiB sharing a
        // 60 KB/s link take 40 s each), but one whose bytes stop for
        // `frame_read_timeout` is abandoned. A frame that arrives whole reads no
        // clock and sets no timer.
        loop {
            if let Some((routed, payload)) = self.take_frame(&mut route)? {
                return Ok(Some(FrameStep::Frame(routed, payload)));
            }
            if let Some(large) = &mut self.large
                && !large.announced
            {
                large.announced = true;
                return Ok(Some(FrameStep::Large {
                    route: route(&large.protocol),
                    len: large.len,
                }));
            }
            let n = if !self.frame_started() {
                self.read_more().await?
            } else if let Some(read) = self.read_more().now_or_never() {
                // The rest of the frame was already there (the buffer was full, not
                // the stream slow), as for most split frames of a busy stream: no
                // timer. `read_more` is cancel-safe, so the probe loses nothing.
                read?
            } else {
                // Each wait gets the whole timeout: bytes arriving restart it.
                let at = Instant::now() + self.frame_read_timeout;
                // Boxed: the timer is needed only for frames split across reads,
                // and keeping it out of line keeps every reader's future small.
                match Box::pin(tokio::time::timeout_at(at, self.read_more())).await {
                    Ok(r) => r?,
                    Err(_) => return Err(FrameError::ReadTimeout(self.frame_read_timeout).into()),
                }
            };
            if n == 0 {
                return if self.frame_started() {
                    Err(FrameError::Truncated.into())
                } else {
                    Ok(None)
                };
            }
        }
    }

    fn frame_started(&self) -> bool {
        self.large.is_some() || self.start < self.end
    }

    /// Decodes the next frame from what has been read, if it is all there.
    fn take_frame<T>(
        &mut self,
        route: &mut impl FnMut(&str) -> T,
    ) -> Result<Option<(T, Bytes)>, FrameError> {
        if let Some(large) = &self.large {
            if large.filled < large.len {
                return Ok(None);
            }
            let Some(mut large) = self.large.take() else {
                return Ok(None);
            };
            large.payload.truncate(large.filled);
            let payload = self.decoder.payload(large.flags, large.payload.freeze())?;
            return Ok(Some((route(&large.protocol), payload)));
        }
        let buffered = &self.scratch[self.start..self.end];
        let Some(h) = self.decoder.header(buffered)? else {
            return Ok(None);
        };
        let protocol = std::str::from_utf8(&buffered[h.proto_start..h.proto_start + h.proto_len])
            .map_err(|_| FrameError::ProtocolNotUtf8)?;
        let total = h.header_len + h.payload_len;
        if total <= buffered.len() {
            let raw = Bytes::copy_from_slice(&buffered[h.header_len..total]);
            let routed = route(protocol);
            self.consume(total);
            return Ok(Some((routed, self.decoder.payload(h.flags, raw)?)));
        }
        if total > HEADER_CHUNK {
            // Too large for the scratch buffer: move the payload bytes already read
            // into a buffer of the payload's own.
            let got = &buffered[h.header_len..];
            let mut payload = BytesMut::with_capacity(h.payload_len.min(PAYLOAD_CHUNK));
            payload.extend_from_slice(got);
            self.large = Some(Box::new(LargeFrame {
                flags: h.flags,
                announced: false,
                protocol: protocol.to_owned(),
                filled: payload.len(),
                payload,
                len: h.payload_len,
            }));
            self.consume(self.end - self.start);
        }
        Ok(None)
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads more bytes into the large frame's payload or the scratch buffer;
    /// `Ok(0)` is the end of the stream. Each poll leaves the reader consistent, so
    /// dropping the future loses nothing.
    async fn read_more(&mut self) -> io::Result<usize> {
        if self.large.is_none() && self.start > 0 {
            self.scratch.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        futures::future::poll_fn(|cx| {
            let io = Pin::new(&mut self.io);
            if let Some(large) = &mut self.large {
                // `payload[..filled]` holds the bytes read; the rest is zeroed room,
                // added a chunk at a time as bytes arrive.
                if large.filled == large.payload.len() {
                    let next_chunk = (large.filled / PAYLOAD_CHUNK + 1) * PAYLOAD_CHUNK;
                    large.payload.resize(next_chunk.min(large.len), 0);
                }
                let poll = io.poll_read(cx, &mut large.payload[large.filled..]);
                if let Poll::Ready(Ok(n)) = &poll {
                    large.filled += n;
                }
                return poll;
            }
            if self.scratch.is_empty() {
                self.scratch = take_scratch();
            }
            let poll = io.poll_read(cx, &mut self.scratch[self.end..]);
            match &poll {
                Poll::Ready(Ok(n)) => self.end += n,
                // Nothing to read and nothing kept: an idle stream holds no buffer.
                Poll::Pending if self.end == 0 => {
                    give_back_scratch(std::mem::take(&mut self.scratch))
                }
                _ => {}
            }
            poll
        })
        .await
    }

    /// Gives back the stream, for example to reset or close it.
    pub fn into_inner(self) -> R {
        self.io
    }

    /// The stream being read.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.io
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(bytes: &[u8], max: usize) -> Result<Vec<Frame>, FrameError> {
        let d = FrameDecoder::new(max);
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(f) = d.decode(&mut buf)? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn frame_round_trips_through_encoder_and_decoder() {
        let bytes = [encode_frame("/a/1", b"hello"), encode_frame("/b", b"")].concat();
        let frames = decode_all(&bytes, 1024).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].protocol, "/a/1");
        assert_eq!(&frames[0].payload[..], b"hello");
        assert!(frames[1].payload.is_empty());
    }

    #[test]
    fn unknown_flag_bits_are_rejected() {
        let mut bytes = Vec::new();
        encode_header(2, "/a", 0, &mut bytes);
        assert_eq!(decode_all(&bytes, 16), Err(FrameError::UnknownFlags(2)));
    }

    #[test]
    fn protocol_longer_than_256_bytes_is_rejected_before_it_arrives() {
        // Only the two varints are present: the limit is checked on the length alone.
        assert_eq!(
            decode_all(&[0, 0x81, 0x02], 16),
            Err(FrameError::ProtocolTooLong { len: 257 })
        );
    }

    #[test]
    fn non_utf8_protocol_is_rejected() {
        let bytes = [0, 2, 0xff, 0xfe, 0];
        assert_eq!(decode_all(&bytes, 16), Err(FrameError::ProtocolNotUtf8));
    }

    #[test]
    fn varints_longer_than_nine_bytes_are_rejected() {
        // Found by fuzzing: ten bytes whose bits past 64 were dropped, so the flags
        // read as 0 and the frame was accepted.
        let mut bytes = vec![0x80; 9];
        bytes.extend_from_slice(&[0x02, 0, 0]);
        assert_eq!(decode_all(&bytes, 16), Err(FrameError::BadVarint));
        // Nine bytes that all announce more are rejected without waiting for more.
        assert_eq!(decode_all(&[0x80; 9], 16), Err(FrameError::BadVarint));
        assert_eq!(decode_all(&[0x80; 8], 16), Ok(vec![]));
    }

    #[test]
    fn four_gib_length_prefix_is_rejected_without_allocating() {
        let mut bytes = Vec::new();
        encode_header(0, "/a", u32::MAX as usize, &mut bytes);
        let d = FrameDecoder::new(16 << 20);
        let mut buf = BytesMut::from(&bytes[..]);
        assert!(matches!(
            d.decode(&mut buf),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(buf.capacity() < 64);
    }

    #[test]
    fn compressed_payload_is_inflated_and_its_size_checked() {
        let payload = vec![7u8; 10_000];
        let c = snap::raw::Encoder::new().compress_vec(&payload).unwrap();
        let mut bytes = Vec::new();
        encode_header(FLAG_COMPRESSED, "/z", c.len(), &mut bytes);
        bytes.extend_from_slice(&c);
        assert_eq!(decode_all(&bytes, 20_000).unwrap()[0].payload.len(), 10_000);
        assert!(matches!(
            decode_all(&bytes, 5_000),
            Err(FrameError::TooLarge { len: 10_000, .. })
        ));
    }

    #[tokio::test]
    async fn reader_reports_truncation_and_clean_end() {
        let mut bytes = encode_frame("/a", b"xyz");
        let mut r = FrameReader::new(&bytes[..], 64, Duration::from_secs(1));
        assert_eq!(r.next_frame().await.unwrap().unwrap().protocol, "/a");
        assert!(r.next_frame().await.unwrap().is_none());
        bytes.pop();
        let mut r = FrameReader::new(&bytes[..], 64, Duration::from_secs(1));
        assert!(matches!(
            r.next_frame().await,
            Err(ReadError::Frame(FrameError::Truncated))
        ));
    }

    #[tokio::test]
    async fn writer_compresses_when_asked_and_reader_restores_the_payload() {
        let payload = vec![1u8; 50_000];
        let mut out = Vec::new();
        write_frame(
            &mut futures::io::Cursor::new(&mut out),
            "/c",
            &payload,
            Some(1024),
        )
        .await
        .unwrap();
        assert!(out.len() < 10_000);
        let mut r = FrameReader::new(&out[..], 1 << 20, Duration::from_secs(1));
        assert_eq!(r.next_frame().await.unwrap().unwrap().payload.len(), 50_000);
    }

    #[tokio::test]
    async fn a_frame_encoded_once_writes_the_same_bytes_to_every_stream() {
        for (payload, compress) in [
            (vec![7u8; 100], None),
            (vec![7u8; 100_000], None),
            (vec![7u8; 100_000], Some(1024)),
        ] {
            let frame = EncodedFrame::new("/a/1", &payload, compress);
            let mut first = futures::io::Cursor::new(Vec::new());
            let mut second = futures::io::Cursor::new(Vec::new());
            frame.write_to(&mut first).await.unwrap();
            frame.write_to(&mut second).await.unwrap();
            assert_eq!(first.get_ref(), second.get_ref());
            assert_eq!(first.get_ref().len(), frame.len());
            let mut r = FrameReader::new(&first.get_ref()[..], 1 << 20, Duration::from_secs(1));
            let read = r.next_frame().await.unwrap().unwrap();
            assert_eq!(
                (read.protocol.as_str(), &read.payload[..]),
                ("/a/1", &payload[..])
            );
        }
    }

    #[tokio::test]
    async fn next_step_stops_once_before_a_large_payload_and_never_for_a_small_one() {
        let large = vec![3u8; 100_000];
        let bytes = [
            encode_frame("/small", b"tiny"),
            encode_frame("/large", &large),
            encode_frame("/small", b"again"),
        ]
        .concat();
        let mut r = FrameReader::new(&bytes[..], 1 << 20, Duration::from_secs(1));
        let mut steps = Vec::new();
        while let Some(step) = r.next_step(|p: &str| p.to_owned()).await.unwrap() {
            steps.push(match step {
                FrameStep::Frame(p, payload) => format!("frame {p} {}", payload.len()),
                FrameStep::Large { route, len } => format!("large {route} {len}"),
            });
        }
        assert_eq!(
            steps,
            [
                "frame /small 4",
                "large /large 100000",
                "frame /large 100000",
                "frame /small 5"
            ]
        );
    }

    /// A stream that yields the given pieces one read at a time, then waits
    /// (`Pending`) until more are sent, or ends when the sender is dropped.
    fn piecewise() -> (
        futures::channel::mpsc::UnboundedSender<io::Result<Vec<u8>>>,
        impl AsyncRead + Unpin,
    ) {
        use futures::TryStreamExt;
        let (tx, rx) = futures::channel::mpsc::unbounded();
        (tx, rx.into_async_read())
    }

    fn sample_frames() -> Vec<(String, Vec<u8>)> {
        [0usize, 1, 255, 4000, 4096, 5000, 70_000, 1 << 20]
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                let payload = (0..len).map(|b| (b * 7 + i) as u8).collect();
                (format!("/p/{i}"), payload)
            })
            .collect()
    }

    #[tokio::test]
    async fn reader_decodes_frames_split_into_reads_of_any_size() {
        let frames = sample_frames();
        let bytes: Vec<u8> = frames
            .iter()
            .flat_map(|(p, b)| encode_frame(p, b))
            .collect();
        for piece in [1usize, 3, 100, 4095, 4097, 65_536, bytes.len()] {
            let (tx, rx) = piecewise();
            for chunk in bytes.chunks(piece) {
                tx.unbounded_send(Ok(chunk.to_vec())).unwrap();
            }
            drop(tx);
            let mut r = FrameReader::new(rx, 2 << 20, Duration::from_secs(5));
            for (protocol, payload) in &frames {
                let f = r.next_frame().await.unwrap().unwrap();
                assert_eq!(&f.protocol, protocol, "pieces of {piece}");
                assert_eq!(&f.payload[..], &payload[..], "pieces of {piece}");
            }
            assert!(r.next_frame().await.unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn an_idle_reader_holds_no_buffer() {
        let (tx, rx) = piecewise();
        let mut r = FrameReader::new(rx, 1 << 20, Duration::from_secs(5));
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        {
            let next = std::pin::pin!(r.next_frame());
            assert!(next.poll(&mut cx).is_pending());
        }
        assert_eq!(r.scratch.capacity(), 0);
        tx.unbounded_send(Ok(encode_frame("/a", b"hi"))).unwrap();
        assert_eq!(&r.next_frame().await.unwrap().unwrap().payload[..], b"hi");
        {
            let next = std::pin::pin!(r.next_frame());
            assert!(next.poll(&mut cx).is_pending());
        }
        assert_eq!(r.scratch.capacity(), 0, "released again once drained");
    }

    #[tokio::test]
    async fn a_cancelled_read_loses_no_bytes_of_a_large_frame() {
        let payload: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let bytes = encode_frame("/big", &payload);
        let (tx, rx) = piecewise();
        let mut r = FrameReader::new(rx, 1 << 20, Duration::from_secs(5));
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        let mut done = None;
        for chunk in bytes.chunks(50_000) {
            tx.unbounded_send(Ok(chunk.to_vec())).unwrap();
            // Poll until the reader waits for more, then drop the future.
            let next = std::pin::pin!(r.next_frame());
            if let Poll::Ready(f) = next.poll(&mut cx) {
                done = Some(f);
            }
        }
        tx.unbounded_send(Ok(encode_frame("/small", b"after")))
            .unwrap();
        let f = done.unwrap().unwrap().unwrap();
        assert_eq!(f.protocol, "/big");
        assert_eq!(&f.payload[..], &payload[..]);
        assert_eq!(
            &r.next_frame().await.unwrap().unwrap().payload[..],
            b"after"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_started_frame_may_take_longer_than_the_timeout_while_its_bytes_keep_coming() {
        let timeout = Duration::from_secs(30);
        let payload: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let bytes = encode_frame("/big", &payload);
        let (tx, rx) = piecewise();
        // Four pieces, each 0.8 × the timeout after the one before: 2.4 × the
        // timeout in all, as over a slow link shared with other streams.
        let writer = tokio::spawn(async move {
            for (i, chunk) in bytes.chunks(bytes.len().div_ceil(4)).enumerate() {
                if i > 0 {
                    tokio::time::sleep(timeout * 4 / 5).await;
                }
                tx.unbounded_send(Ok(chunk.to_vec())).unwrap();
            }
            tx
        });
        let started = Instant::now();
        let mut r = FrameReader::new(rx, 1 << 20, timeout);
        let f = r.next_frame().await.unwrap().unwrap();
        assert_eq!(&f.payload[..], &payload[..]);
        assert_eq!(started.elapsed(), timeout * 12 / 5);
        drop(writer.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_started_frame_whose_bytes_stop_times_out_after_the_last_one() {
        let timeout = Duration::from_secs(30);
        let bytes = encode_frame("/big", &[7u8; 100_000]);
        let (tx, rx) = piecewise();
        let sender = tx.clone();
        let first = bytes[..40_000].to_vec();
        let second = bytes[40_000..60_000].to_vec();
        let writer = tokio::spawn(async move {
            sender.unbounded_send(Ok(first)).unwrap();
            tokio::time::sleep(timeout / 2).await;
            sender.unbounded_send(Ok(second)).unwrap();
            // Then nothing, with the stream still open.
        });
        let started = Instant::now();
        let mut r = FrameReader::new(rx, 1 << 20, timeout);
        assert!(matches!(
            r.next_frame().await,
            Err(ReadError::Frame(FrameError::ReadTimeout(t))) if t == timeout
        ));
        assert_eq!(started.elapsed(), timeout / 2 + timeout);
        writer.await.unwrap();
        drop(tx);
    }

    #[tokio::test]
    async fn a_large_frame_buffer_grows_with_the_bytes_received() {
        // 16 MiB announced, 10 bytes sent: the reader holds a buffer of at most one
        // chunk, not the announced length.
        let mut header = Vec::new();
        encode_header(0, "/big", 16 << 20, &mut header);
        header.extend_from_slice(&[1; 10]);
        let (tx, rx) = piecewise();
        tx.unbounded_send(Ok(header)).unwrap();
        let mut r = FrameReader::new(rx, 16 << 20, Duration::from_secs(5));
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        {
            let next = std::pin::pin!(r.next_frame());
            assert!(next.poll(&mut cx).is_pending());
        }
        let large = r.large.as_ref().unwrap();
        assert_eq!(large.filled, 10);
        assert!(large.payload.capacity() <= PAYLOAD_CHUNK);
        drop(tx);
        assert!(matches!(
            r.next_frame().await,
            Err(ReadError::Frame(FrameError::Truncated))
        ));
    }

    proptest! {
        #[test]
        fn any_bytes_decode_to_frames_or_a_typed_error(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_all(&bytes, 128);
        }

        #[test]
        fn frames_round_trip(proto in "[a-z/0-9]{0,256}", payload in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let bytes = encode_frame(&proto, &payload);
            let frames = decode_all(&bytes, 4096).unwrap();
            prop_assert_eq!(frames.len(), 1);
            prop_assert_eq!(&frames[0].protocol, &proto);
            prop_assert_eq!(&frames[0].payload[..], &payload[..]);
        }
    }
}
