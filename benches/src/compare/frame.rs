//! Length-prefixed frames (u32 big-endian length, then the payload) for the plain
//! libp2p and TCP modes. Like liquid-p2p's codec, a frame up to 16 KiB is written
//! with one call (header and payload together), a larger one with two.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Largest payload accepted.
pub const MAX_FRAME: usize = 16 << 20;
/// Payloads up to this size are copied behind the header and written at once.
const COALESCE_LIMIT: usize = 16 * 1024;

/// The bytes to write first and the payload still to write after them, if any.
fn encode(payload: &[u8]) -> (Vec<u8>, Option<&[u8]>) {
    let len = (payload.len() as u32).to_be_bytes();
    if payload.len() <= COALESCE_LIMIT {
        let mut head = Vec::with_capacity(4 + payload.len());
        head.extend_from_slice(&len);
        head.extend_from_slice(payload);
        (head, None)
    } else {
        (len.to_vec(), Some(payload))
    }
}

fn check_len(header: [u8; 4]) -> io::Result<usize> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds {MAX_FRAME}"),
        ));
    }
    Ok(len)
}

/// Writes one frame and flushes (futures I/O: libp2p streams).
pub async fn write_frame<W: AsyncWrite + Unpin>(io: &mut W, payload: &[u8]) -> io::Result<()> {
    let (head, rest) = encode(payload);
    io.write_all(&head).await?;
    if let Some(rest) = rest {
        io.write_all(rest).await?;
    }
    io.flush().await
}

/// Reads one frame into `buf` (futures I/O). End of stream is `UnexpectedEof`.
pub async fn read_frame<R: AsyncRead + Unpin>(io: &mut R, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut header = [0u8; 4];
    io.read_exact(&mut header).await?;
    buf.resize(check_len(header)?, 0);
    io.read_exact(buf).await
}

/// Writes one frame and flushes (tokio I/O: plain TCP).
pub async fn write_frame_tokio<W: tokio::io::AsyncWrite + Unpin>(
    io: &mut W,
    payload: &[u8],
) -> io::Result<()> {
    let (head, rest) = encode(payload);
    io.write_all(&head).await?;
    if let Some(rest) = rest {
        io.write_all(rest).await?;
    }
    io.flush().await
}

/// Reads one frame into `buf` (tokio I/O).
pub async fn read_frame_tokio<R: tokio::io::AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    let mut header = [0u8; 4];
    io.read_exact(&mut header).await?;
    buf.resize(check_len(header)?, 0);
    io.read_exact(buf).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_small_and_large() {
        for size in [0, 256, COALESCE_LIMIT + 1, 1 << 20] {
            let payload = vec![7u8; size];
            let mut wire = futures::io::Cursor::new(Vec::new());
            write_frame(&mut wire, &payload).await.expect("write");
            let mut reader = futures::io::Cursor::new(wire.into_inner());
            let mut buf = Vec::new();
            read_frame(&mut reader, &mut buf).await.expect("read");
            assert_eq!(buf, payload);
        }
    }

    #[tokio::test]
    async fn oversized_length_is_rejected() {
        let mut reader = futures::io::Cursor::new(u32::MAX.to_be_bytes().to_vec());
        let err = read_frame(&mut reader, &mut Vec::new()).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
