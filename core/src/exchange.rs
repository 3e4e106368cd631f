//! Wire format of the protocol exchange (`/liquid/protocol-exchange/1.0.0`).
//!
//! Request and response are the same message, the sender's full list of application
//! protocols:
//!
//! ```text
//! uvarint count          <= max_protocols (default 1024)
//! count × {
//!   uvarint len          1..=256
//!   bytes   protocol     UTF-8
//! }
//! ```
//!
//! One request and one response per stream; the stream is closed after the
//! response. Limits are checked before anything they announce is read, so a list
//! never costs more than `max_protocols × 256` bytes.
//!
//! The response may go on after the list with the responder's limits, up to the
//! end of the stream:
//!
//! ```text
//! n × {                  n <= 16
//!   uvarint key          1 = max_frame_size (the largest payload it accepts)
//!   uvarint value
//! }
//! ```
//!
//! Unknown keys are skipped. A requester reads them until the responder closes
//! the stream; an older responder sends none ([`PeerLimits`] then knows nothing),
//! and an older requester stops reading after the list and never sees them. The
//! request carries no limits: each host learns the other's from the response to
//! its own request.

use std::{io, time::Duration};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{codec::MAX_VARINT_LEN, config::MAX_PROTOCOL_LEN};

/// Ways a protocol list can break the format or its limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExchangeError {
    /// More protocols than allowed.
    #[error("list of {count} protocols exceeds the limit of {max}")]
    TooManyProtocols {
        /// Announced count.
        count: u64,
        /// The limit.
        max: usize,
    },
    /// A protocol name is empty or longer than 256 bytes.
    #[error("protocol name of {len} bytes: must be 1..=256")]
    BadProtocolLength {
        /// Announced length.
        len: u64,
    },
    /// A protocol name is not UTF-8.
    #[error("protocol name is not UTF-8")]
    NotUtf8,
    /// A varint was malformed.
    #[error("malformed varint")]
    BadVarint,
    /// More limit entries than [`MAX_LIMITS`] after the list.
    #[error("more than {MAX_LIMITS} limits after the list")]
    TooManyLimits,
    /// The stream failed or ended early (`UnexpectedEof`, `ConnectionReset`, ...).
    #[error("i/o: {0}")]
    Io(io::ErrorKind),
}

/// Why a protocol exchange with a peer gave no list (reported with
/// `ProtocolExchangeFailed`; the peer is kept with its list unknown).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExchangeFailure {
    /// The peer does not speak the exchange protocol (a stock libp2p node).
    #[error("the peer does not speak the exchange protocol")]
    NotSpoken,
    /// The exchange did not complete within `exchange_timeout`.
    #[error("no complete exchange within {after:?}")]
    TimedOut {
        /// The timeout that elapsed.
        after: Duration,
    },
    /// The exchange stream could not be opened.
    #[error("opening the exchange stream failed: {0}")]
    Open(crate::StreamOpenFailure),
    /// The peer's list broke the format or its limits, or the stream failed.
    #[error("{0}")]
    List(ExchangeError),
}

impl ExchangeFailure {
    /// A short snake_case name of the kind (`not_spoken`, `timed_out`, `open`,
    /// `list`).
    pub fn kind(&self) -> &'static str {
        match self {
            ExchangeFailure::NotSpoken => "not_spoken",
            ExchangeFailure::TimedOut { .. } => "timed_out",
            ExchangeFailure::Open(_) => "open",
            ExchangeFailure::List(_) => "list",
        }
    }
}

impl From<io::Error> for ExchangeError {
    fn from(e: io::Error) -> Self {
        ExchangeError::Io(e.kind())
    }
}

/// Most limit entries a response may carry after its list.
pub const MAX_LIMITS: usize = 16;

/// Key of the limit `max_frame_size` in a response.
const KEY_MAX_FRAME_SIZE: u64 = 1;

/// What a peer said about the frames it accepts, after its protocol list (see
/// the module docs). Empty for a peer that said nothing (an older version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PeerLimits {
    /// The largest payload it accepts (its `max_frame_size`).
    pub max_frame_size: Option<usize>,
}

impl PeerLimits {
    /// Limits stating `max_frame_size`.
    pub fn with_max_frame_size(max_frame_size: usize) -> Self {
        Self {
            max_frame_size: Some(max_frame_size),
        }
    }
}

/// Encodes the limits that follow a response's list.
pub fn encode_limits(limits: &PeerLimits) -> Vec<u8> {
    let mut out = Vec::new();
    let mut tmp = unsigned_varint::encode::u64_buffer();
    if let Some(max) = limits.max_frame_size {
        out.extend_from_slice(unsigned_varint::encode::u64(KEY_MAX_FRAME_SIZE, &mut tmp));
        out.extend_from_slice(unsigned_varint::encode::u64(max as u64, &mut tmp));
    }
    out
}

/// Reads the limits after a response's list, up to the end of the stream.
pub async fn read_limits<R: AsyncRead + Unpin>(io: &mut R) -> Result<PeerLimits, ExchangeError> {
    let mut limits = PeerLimits::default();
    for _ in 0..MAX_LIMITS {
        let mut first = [0u8; 1];
        if io.read(&mut first).await? == 0 {
            return Ok(limits);
        }
        let key = read_varint_after(io, first[0]).await?;
        let value = read_varint(io).await?;
        if key == KEY_MAX_FRAME_SIZE {
            limits.max_frame_size = Some(usize::try_from(value).unwrap_or(usize::MAX));
        }
    }
    let mut more = [0u8; 1];
    if io.read(&mut more).await? == 0 {
        Ok(limits)
    } else {
        Err(ExchangeError::TooManyLimits)
    }
}

/// Encodes a protocol list.
pub fn encode_protocol_list(protocols: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + protocols.iter().map(|p| p.len() + 2).sum::<usize>());
    let mut tmp = unsigned_varint::encode::u64_buffer();
    out.extend_from_slice(unsigned_varint::encode::u64(
        protocols.len() as u64,
        &mut tmp,
    ));
    for p in protocols {
        out.extend_from_slice(unsigned_varint::encode::u64(p.len() as u64, &mut tmp));
        out.extend_from_slice(p.as_bytes());
    }
    out
}

/// Reads one varint a byte at a time, so nothing past it is consumed. Not
/// `unsigned_varint::aio::read_u64`: it takes a 10th byte and drops the bits past
/// 64, so a long varint could pose as a small one (found by fuzzing).
async fn read_varint<R: AsyncRead + Unpin>(io: &mut R) -> Result<u64, ExchangeError> {
    let mut first = [0u8; 1];
    io.read_exact(&mut first).await?;
    read_varint_after(io, first[0]).await
}

/// [`read_varint`] whose first byte has been read already.
async fn read_varint_after<R: AsyncRead + Unpin>(
    io: &mut R,
    first: u8,
) -> Result<u64, ExchangeError> {
    let mut buf = [0u8; MAX_VARINT_LEN];
    buf[0] = first;
    for i in 0..MAX_VARINT_LEN {
        if i > 0 {
            io.read_exact(&mut buf[i..=i]).await?;
        }
        if unsigned_varint::decode::is_last(buf[i]) {
            return unsigned_varint::decode::u64(&buf[..=i])
                .map(|(v, _)| v)
                .map_err(|_| ExchangeError::BadVarint);
        }
    }
    Err(ExchangeError::BadVarint)
}

/// Reads one protocol list, enforcing the limits.
pub async fn read_protocol_list<R: AsyncRead + Unpin>(
    io: &mut R,
    max_protocols: usize,
) -> Result<Vec<String>, ExchangeError> {
    let count = read_varint(io).await?;
    if count > max_protocols as u64 {
        return Err(ExchangeError::TooManyProtocols {
            count,
            max: max_protocols,
        });
    }
    let mut list = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let len = read_varint(io).await?;
        if len == 0 || len > MAX_PROTOCOL_LEN as u64 {
            return Err(ExchangeError::BadProtocolLength { len });
        }
        let mut buf = vec![0u8; len as usize];
        io.read_exact(&mut buf).await?;
        list.push(String::from_utf8(buf).map_err(|_| ExchangeError::NotUtf8)?);
    }
    Ok(list)
}

/// Writes one protocol list and flushes it.
pub async fn write_protocol_list<W: AsyncWrite + Unpin>(
    io: &mut W,
    protocols: &[String],
) -> io::Result<()> {
    io.write_all(&encode_protocol_list(protocols)).await?;
    io.flush().await
}

/// Writes a response: the protocol list, then the limits, and flushes it.
pub async fn write_response<W: AsyncWrite + Unpin>(
    io: &mut W,
    protocols: &[String],
    limits: &PeerLimits,
) -> io::Result<()> {
    let mut bytes = encode_protocol_list(protocols);
    bytes.extend_from_slice(&encode_limits(limits));
    io.write_all(&bytes).await?;
    io.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    async fn decode(bytes: &[u8], max: usize) -> Result<Vec<String>, ExchangeError> {
        read_protocol_list(&mut &bytes[..], max).await
    }

    #[tokio::test]
    async fn lists_round_trip() {
        let list = vec![
            "/chain/1/consensus/1".to_owned(),
            "/chain/1/sync/1".to_owned(),
        ];
        assert_eq!(decode(&encode_protocol_list(&list), 8).await, Ok(list));
        assert_eq!(decode(&encode_protocol_list(&[]), 8).await, Ok(vec![]));
    }

    #[tokio::test]
    async fn limits_are_checked_before_reading_what_they_announce() {
        // 100,000 protocols announced, nothing else sent.
        let mut bytes = Vec::new();
        let mut tmp = unsigned_varint::encode::u64_buffer();
        bytes.extend_from_slice(unsigned_varint::encode::u64(100_000, &mut tmp));
        assert_eq!(
            decode(&bytes, 1024).await,
            Err(ExchangeError::TooManyProtocols {
                count: 100_000,
                max: 1024
            })
        );
        // A 1 MiB name announced.
        let bytes = [1u8, 0x80, 0x80, 0x40];
        assert_eq!(
            decode(&bytes, 1024).await,
            Err(ExchangeError::BadProtocolLength { len: 1 << 20 })
        );
        assert_eq!(
            decode(&[1, 0], 4).await,
            Err(ExchangeError::BadProtocolLength { len: 0 })
        );
        assert_eq!(
            decode(&[1, 2, 0xff, 0xfe], 4).await,
            Err(ExchangeError::NotUtf8)
        );
        assert!(matches!(
            decode(&[2, 1, b'a'], 4).await,
            Err(ExchangeError::Io(std::io::ErrorKind::UnexpectedEof))
        ));
    }

    #[tokio::test]
    async fn limits_follow_the_list_and_an_older_response_has_none() {
        let list = vec!["/a/1".to_owned()];
        let mut bytes = encode_protocol_list(&list);
        let limits = PeerLimits::with_max_frame_size(1 << 20);
        bytes.extend_from_slice(&encode_limits(&limits));
        let mut io = &bytes[..];
        assert_eq!(read_protocol_list(&mut io, 8).await, Ok(list.clone()));
        assert_eq!(read_limits(&mut io).await, Ok(limits));
        // An older responder: the list, then the end of the stream.
        let older = encode_protocol_list(&list);
        let mut io = &older[..];
        assert_eq!(read_protocol_list(&mut io, 8).await, Ok(list));
        assert_eq!(read_limits(&mut io).await, Ok(PeerLimits::default()));
        // Unknown keys are skipped; a cut entry and too many entries are errors.
        assert_eq!(
            read_limits(&mut &[9u8, 5, 1, 100][..]).await,
            Ok(PeerLimits::with_max_frame_size(100))
        );
        assert!(matches!(
            read_limits(&mut &[1u8][..]).await,
            Err(ExchangeError::Io(std::io::ErrorKind::UnexpectedEof))
        ));
        let many = [9u8, 0].repeat(MAX_LIMITS + 1);
        assert_eq!(
            read_limits(&mut &many[..]).await,
            Err(ExchangeError::TooManyLimits)
        );
    }

    #[tokio::test]
    async fn varints_longer_than_nine_bytes_are_rejected() {
        // Found by fuzzing: a 10-byte count whose bits past 64 were dropped read as
        // 0, and the list was accepted as empty.
        let mut count = vec![0x80; 9];
        count.push(0x08);
        assert_eq!(decode(&count, 4).await, Err(ExchangeError::BadVarint));
        let mut name = vec![1];
        name.extend_from_slice(&[0x81; 9]);
        name.push(0x02);
        assert_eq!(decode(&name, 4).await, Err(ExchangeError::BadVarint));
        assert_eq!(
            decode(&[0x81, 0x00], 4).await,
            Err(ExchangeError::BadVarint)
        );
    }

    proptest! {
        #[test]
        fn any_bytes_decode_to_a_list_or_a_typed_error(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let _ = rt.block_on(decode(&bytes, 16));
        }

        #[test]
        fn lists_of_any_names_round_trip(list in proptest::collection::vec("\\PC{1,64}", 0..16)) {
            // Up to 64 characters of up to 4 bytes: always within the 256-byte limit.
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let bytes = encode_protocol_list(&list);
            prop_assert_eq!(rt.block_on(decode(&bytes, 16)), Ok(list));
        }
    }
}
