//! What the fuzz targets share: how a fuzz input is split into a configuration and
//! the bytes a peer sent, and a reader that hands those bytes over in small pieces.
//!
//! Every input is laid out as
//!
//! ```text
//! byte 0     the limit: max_frame_size = 4 × byte (0..=1020), or max_protocols = byte % 64
//! byte 1     read size: the stream returns at most 1 + byte bytes per read (1..=256)
//! bytes 2..  the bytes the peer sent
//! ```
//!
//! Small limits keep the interesting edges (exactly at the limit, one past it)
//! within reach of a mutating fuzzer; small reads make the readers resume a frame
//! from any split point, as they must on a real stream.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use futures::AsyncRead;

/// One fuzz input, split.
pub struct Input<'a> {
    /// The configuration byte (byte 0).
    pub limit: u8,
    /// Most bytes one read returns (from byte 1).
    pub read_size: usize,
    /// What the peer sent.
    pub wire: &'a [u8],
}

impl<'a> Input<'a> {
    /// Splits `data`; `None` when it is too short to hold the two leading bytes.
    pub fn split(data: &'a [u8]) -> Option<Self> {
        match data {
            [limit, read, wire @ ..] => Some(Self {
                limit: *limit,
                read_size: 1 + *read as usize,
                wire,
            }),
            _ => None,
        }
    }
}

/// An in-memory stream that returns at most `read_size` bytes per read and counts
/// what was consumed.
pub struct ChunkedReader<'a> {
    data: &'a [u8],
    read_size: usize,
    /// Bytes handed out so far.
    pub consumed: usize,
}

impl<'a> ChunkedReader<'a> {
    /// A stream over `data`.
    pub fn new(data: &'a [u8], read_size: usize) -> Self {
        Self {
            data,
            read_size: read_size.max(1),
            consumed: 0,
        }
    }
}

impl AsyncRead for ChunkedReader<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let n = buf
            .len()
            .min(self.read_size)
            .min(self.data.len() - self.consumed);
        let start = self.consumed;
        buf[..n].copy_from_slice(&self.data[start..start + n]);
        self.consumed += n;
        Poll::Ready(Ok(n))
    }
}
