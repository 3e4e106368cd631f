//! Saying why a connection is refused, on `/liquid/refusal/1.0.0`.
//!
//! A host that refuses a connection right after the handshake (peer limits,
//! blacklist, too many connections from one address) knows why; the dialler only
//! sees a connection that opened and closed. So, instead of dropping it at once, the
//! refusing host keeps the connection for at most [`REFUSAL_TIMEOUT`], opens one
//! stream of this protocol, writes a [`RemoteRefusal`] code (one uvarint) and
//! closes the connection. It serves nothing on it meanwhile. A dialler that speaks
//! the protocol reports the reason (`DialFailed` with `RefusedByRemote`) and backs
//! off; a stock libp2p peer answers `na` and just sees the connection close.

use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::Stream;
use liquid_p2p_core::RemoteRefusal;

/// How long a refused connection is kept for its reason to get through.
pub(crate) const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest code: a u64 as a uvarint.
const MAX_CODE_LEN: u64 = 10;

/// Writes `refusal` on `stream`, closes it, and waits (bounded) until the remote
/// has read it and closed its side: closing the connection any sooner could
/// overtake the reason.
pub(crate) async fn tell(mut stream: Stream, refusal: RemoteRefusal) {
    let mut buf = unsigned_varint::encode::u64_buffer();
    let code = unsigned_varint::encode::u64(refusal.code(), &mut buf);
    let send = async {
        stream.write_all(code).await?;
        stream.close().await?;
        // The remote closes (or resets) the stream once it has the code.
        let _ = stream.read(&mut [0u8; 1]).await;
        Ok::<_, std::io::Error>(())
    };
    if let Err(e) = tokio::time::timeout(REFUSAL_TIMEOUT, send)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
    {
        tracing::debug!(error = %e, "refusal reason not delivered");
    }
}

/// Reads the refusal a remote sent; `None` if it sent nothing readable in time.
/// The stream is dropped after, which tells the remote it may close.
pub(crate) async fn read(stream: Stream) -> Option<RemoteRefusal> {
    let mut bytes = Vec::new();
    let mut limited = stream.take(MAX_CODE_LEN);
    tokio::time::timeout(REFUSAL_TIMEOUT, limited.read_to_end(&mut bytes))
        .await
        .ok()?
        .ok()?;
    let (code, _) = unsigned_varint::decode::u64(&bytes).ok()?;
    Some(RemoteRefusal::from_code(code))
}
