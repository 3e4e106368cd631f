//! Our yamux for TCP: the `yamux` crate over a socket that always has room for the
//! frames yamux must write before it reads again.
//!
//! yamux 0.14 (rust-yamux issue 227, rust-libp2p issue 5410) answers a ping it has
//! read by parking the reply, and reads nothing more until the frame it is writing
//! (often a 16 KiB data frame) and then the reply have gone into the socket. When both
//! ends of a connection are in that state with both directions of the TCP connection
//! full, neither end reads again: the connection moves no bytes, forever, and reports
//! no error. [`ReplyReserve`] sits between yamux and the (noise) socket. It follows
//! the frame headers in both directions: while a ping reply is owed, it takes
//! whatever yamux writes into a bounded reserve, so yamux gets the reply out of its
//! hands and goes back to reading; otherwise data frames get backpressure as before
//! once a small buffer is full. Nothing here depends on the peer reading, so one end
//! with this socket is enough to break the cycle, whatever the other end runs.
//!
//! [`YamuxConfig`] and [`YamuxMuxer`] are the connection upgrade and `StreamMuxer`
//! around it: same wire protocol (`/yamux/1.0.0`) and same settings as
//! `libp2p-yamux`'s defaults, so stock libp2p peers interoperate.
//!
//! The muxer is also the connection's stall watchdog, because it is the one place
//! that sees the transport itself move: when bytes wait for the socket and the
//! socket takes none of them for `stall_timeout` (default 10 s), the peer is not
//! reading its socket at all (its process or its yamux is stuck, or the path is
//! gone), and the connection fails with a [`TransportStalled`] error, which the
//! behaviour reports as `ConnectionStalled`. An application that does not read its
//! inbox is not a stall: the peer's yamux still reads the socket and only the
//! unread streams' windows close, so our socket drains and nothing waits for it.
//!
//! The muxer also tells the host's liveness check whether the peer sends
//! anything at all. Bytes read from the socket (window updates, pongs, data) are
//! the peer's sign of life; on a slow link that a host floods one way they are
//! mostly window updates, which only the muxer sees. libp2p boxes the substreams
//! it hands out, so nothing but `AsyncRead` / `AsyncWrite` reaches the handler;
//! our [`YamuxStream`] therefore leaves the time of the connection's last socket
//! read in a thread-local ([`peer_reads`]) during each synchronous write call,
//! and the metered stream above it (watchdog.rs) picks it up right after the call
//! returns: the peer was alive then.
//!
//! Closing is bounded too. yamux closes by writing what its streams queued, then
//! GoAway, and reads nothing meanwhile; libp2p reports the connection closed only
//! when that is done. When the peer reads nothing either (it is closing the same
//! connection at the same moment, or it is stuck), the close never ends, and the
//! connection never reaches the behaviour as closed. [`YamuxMuxer`] gives a close up
//! once it has moved no byte for `close_timeout` (default 10 s): the socket is
//! dropped and the connection reported closed with a `TimedOut` error. A close that
//! keeps moving bytes, however slowly, is left to finish, so what was queued for a
//! slow but live peer still arrives.

use std::{
    collections::VecDeque,
    convert::Infallible,
    fmt, io, iter,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::{Buf, BytesMut};
use futures::{AsyncRead, AsyncWrite, Future, future, ready};
use libp2p::core::{
    muxing::{StreamMuxer, StreamMuxerEvent},
    upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo},
};

/// The protocol name negotiated for the muxer, the one stock libp2p uses.
const PROTOCOL_NAME: &str = "/yamux/1.0.0";

/// Largest data frame body our yamux writes (`split_send_size`; also its default).
const MAX_DATA_BODY: usize = 16 * 1024;

/// yamux frame header: version, type, flags (2 bytes), stream id (4), length (4).
const HEADER_LEN: usize = 12;
const TYPE_DATA: u8 = 0;
const TYPE_PING: u8 = 2;
const FLAG_ACK: u16 = 2;

/// A data frame may start while buffer + frame stay within this. Keeps the
/// backpressure of a full socket reaching the streams after at most 64 KiB.
const DATA_LIMIT: usize = 64 * 1024;
/// Window updates, stream opens and closes, pings: a little more room, so that
/// flow-control credit still goes out while data waits.
const CONTROL_LIMIT: usize = DATA_LIMIT + 16 * 1024;
/// While a ping reply is owed, anything fits up to this. yamux writes at most the
/// frame it was stuck on, its own ping and the reply before it reads again, and an
/// honest peer pings again only after reading our reply (everything buffered before
/// it is gone by then), so the reserve above `CONTROL_LIMIT` is never exhausted.
const OWED_LIMIT: usize = CONTROL_LIMIT + 64 * 1024;

const _: () = assert!(OWED_LIMIT - CONTROL_LIMIT >= 2 * (HEADER_LEN + MAX_DATA_BODY) + HEADER_LEN);

/// Default of [`YamuxConfig::with_close_timeout`].
const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`YamuxConfig::with_stall_timeout`].
const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The error a connection fails with when its socket took no byte of what waited
/// for it for `after` (see the module docs), inside the connection's `io::Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the transport took no byte for {after:?} while data waited")]
pub struct TransportStalled {
    /// The stall timeout.
    pub after: Duration,
}

impl TransportStalled {
    /// The `TransportStalled` inside a connection's error, if that is why it
    /// closed.
    pub fn find(error: &(dyn std::error::Error + 'static)) -> Option<Self> {
        crate::transport::causes(error).find_map(|e| e.downcast_ref::<TransportStalled>().copied())
    }
}

/// How many inbound streams found while driving the connection wait for
/// `poll_inbound` before new ones are dropped (reset); yamux's own backlog of
/// unacknowledged streams per peer.
const MAX_QUEUED_INBOUND: usize = 256;

/// Connection upgrade to yamux over a `ReplyReserve` socket, protocol
/// `/yamux/1.0.0`. Use it in place of `libp2p::yamux::Config` when building a swarm
/// around [`Behaviour`](crate::Behaviour):
/// `.with_tcp(tcp::Config::default(), noise::Config::new, YamuxConfig::default)`.
#[derive(Debug, Clone)]
pub struct YamuxConfig {
    yamux: yamux::Config,
    close_timeout: Duration,
    stall_timeout: Duration,
}

impl YamuxConfig {
    /// A connection whose socket takes no byte of what waits for it for this long
    /// fails with [`TransportStalled`] (see the module docs). Default: 10 s.
    pub fn with_stall_timeout(mut self, timeout: Duration) -> Self {
        self.stall_timeout = timeout;
        self
    }

    /// A close that moves no byte for this long is given up (see the module docs).
    /// Default: 10 s. Closing needs a tokio runtime (its timer).
    pub fn with_close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }
}

impl Default for YamuxConfig {
    /// yamux's defaults, which are `libp2p-yamux`'s: 512 streams, 1 GiB connection
    /// receive window, read after close, 16 KiB data frames; close and stall
    /// timeouts 10 s.
    fn default() -> Self {
        let mut yamux = yamux::Config::default();
        // Pinned because the reserve of `ReplyReserve` is sized for it.
        yamux.set_split_send_size(MAX_DATA_BODY);
        Self {
            yamux,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
        }
    }
}

impl UpgradeInfo for YamuxConfig {
    type Info = &'static str;
    type InfoIter = iter::Once<Self::Info>;

    fn protocol_info(&self) -> Self::InfoIter {
        iter::once(PROTOCOL_NAME)
    }
}

impl<C> InboundConnectionUpgrade<C> for YamuxConfig
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = YamuxMuxer<C>;
    type Error = Infallible;
    type Future = future::Ready<Result<Self::Output, Self::Error>>;

    fn upgrade_inbound(self, socket: C, _: Self::Info) -> Self::Future {
        future::ready(Ok(YamuxMuxer::new(socket, self, yamux::Mode::Server)))
    }
}

impl<C> OutboundConnectionUpgrade<C> for YamuxConfig
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = YamuxMuxer<C>;
    type Error = Infallible;
    type Future = future::Ready<Result<Self::Output, Self::Error>>;

    fn upgrade_outbound(self, socket: C, _: Self::Info) -> Self::Future {
        future::ready(Ok(YamuxMuxer::new(socket, self, yamux::Mode::Client)))
    }
}

/// A yamux connection over a `ReplyReserve` socket, as a libp2p `StreamMuxer`.
pub struct YamuxMuxer<C> {
    connection: yamux::Connection<ReplyReserve<C>>,
    /// Inbound streams found by `poll` (the only way yamux reads) before the swarm
    /// asked for them with `poll_inbound`.
    inbound: VecDeque<yamux::Stream>,
    inbound_waker: Option<Waker>,
    /// Bytes the socket has taken from yamux so far, and bytes waiting for it
    /// (kept by `ReplyReserve`).
    socket: Arc<SocketProgress>,
    close_timeout: Duration,
    /// Set by the first `poll_close` that has to wait.
    closing: Option<CloseWatch>,
    stall_timeout: Duration,
    /// Armed while bytes wait for the socket.
    stall: Option<CloseWatch>,
}

/// What `ReplyReserve` tells the muxer about the socket.
#[derive(Debug, Default)]
struct SocketProgress {
    /// Bytes the socket has taken.
    sent: AtomicU64,
    /// When the socket last read bytes ([`clock_ms`]; 0: never).
    last_read: AtomicU64,
    /// Whether bytes wait in the reserve for the socket to take them.
    waiting: AtomicBool,
}

/// How far a close (or a wait for the socket) has got: the byte count last seen
/// and the time after which it is given up unless the count moves.
struct CloseWatch {
    sent: u64,
    give_up: Pin<Box<tokio::time::Sleep>>,
}

impl CloseWatch {
    /// Follows `watch` (armed at the first call) with the socket's byte count now;
    /// whether `timeout` has passed without the count moving.
    fn expired(
        watch: &mut Option<CloseWatch>,
        sent: u64,
        timeout: Duration,
        cx: &mut Context<'_>,
    ) -> bool {
        let watch = watch.get_or_insert_with(|| CloseWatch {
            sent,
            give_up: Box::pin(tokio::time::sleep(timeout)),
        });
        if watch.sent != sent {
            watch.sent = sent;
            watch
                .give_up
                .as_mut()
                .reset(tokio::time::Instant::now() + timeout);
        }
        watch.give_up.as_mut().poll(cx).is_ready()
    }
}

impl<C> fmt::Debug for YamuxMuxer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("YamuxMuxer")
            .field("queued_inbound", &self.inbound.len())
            .finish_non_exhaustive()
    }
}

impl<C> YamuxMuxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    fn new(socket: C, config: YamuxConfig, mode: yamux::Mode) -> Self {
        let progress = Arc::new(SocketProgress::default());
        let socket = ReplyReserve::new(socket, Arc::clone(&progress));
        Self {
            connection: yamux::Connection::new(socket, config.yamux, mode),
            inbound: VecDeque::new(),
            inbound_waker: None,
            socket: progress,
            close_timeout: config.close_timeout,
            closing: None,
            stall_timeout: config.stall_timeout,
            stall: None,
        }
    }

    /// Fails the connection once bytes have waited for the socket for
    /// `stall_timeout` without it taking any (see the module docs).
    fn check_stall(&mut self, cx: &mut Context<'_>) -> Result<(), yamux::ConnectionError> {
        if !self.socket.waiting.load(Ordering::Relaxed) {
            self.stall = None;
            return Ok(());
        }
        let sent = self.socket.sent.load(Ordering::Relaxed);
        let after = self.stall_timeout;
        if !CloseWatch::expired(&mut self.stall, sent, after, cx) {
            return Ok(());
        }
        tracing::debug!(?after, "the socket took no byte; the connection stalled");
        Err(yamux::ConnectionError::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            TransportStalled { after },
        )))
    }

    /// Drives the connection (reads, writes) until the peer opens a stream.
    fn poll_connection(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<yamux::Stream, yamux::ConnectionError>> {
        match ready!(self.connection.poll_next_inbound(cx)) {
            Some(result) => Poll::Ready(result),
            None => Poll::Ready(Err(yamux::ConnectionError::Closed)),
        }
    }
}

impl<C> StreamMuxer for YamuxMuxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    type Substream = YamuxStream;
    type Error = yamux::ConnectionError;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        if let Some(stream) = this.inbound.pop_front() {
            return Poll::Ready(Ok(YamuxStream::new(stream, &this.socket)));
        }
        if let Poll::Ready(result) = this.poll_connection(cx) {
            return Poll::Ready(result.map(|stream| YamuxStream::new(stream, &this.socket)));
        }
        this.inbound_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        let stream = ready!(this.connection.poll_new_outbound(cx))?;
        Poll::Ready(Ok(YamuxStream::new(stream, &this.socket)))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        if let Poll::Ready(result) = this.connection.poll_close(cx) {
            return Poll::Ready(result);
        }
        // Still writing: give up once no byte has left for `close_timeout`.
        let sent = this.socket.sent.load(Ordering::Relaxed);
        let timeout = this.close_timeout;
        if CloseWatch::expired(&mut this.closing, sent, timeout, cx) {
            tracing::debug!(?timeout, "close moved no byte; giving it up");
            return Poll::Ready(Err(yamux::ConnectionError::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("closing the connection moved no byte for {timeout:?}"),
            ))));
        }
        Poll::Pending
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        let this = self.get_mut();
        let stream = match this.poll_connection(cx) {
            Poll::Ready(result) => result?,
            Poll::Pending => {
                this.check_stall(cx)?;
                return Poll::Pending;
            }
        };
        if this.inbound.len() >= MAX_QUEUED_INBOUND {
            // Dropping an unanswered stream makes yamux reset it.
            tracing::debug!(stream = %stream.id(), "inbound stream queue full, stream reset");
            drop(stream);
        } else {
            this.inbound.push_back(stream);
            if let Some(waker) = this.inbound_waker.take() {
                waker.wake();
            }
        }
        // Let the rest of the connection task run before reading on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// The fields of a yamux frame header this socket acts on.
#[derive(Debug, Clone, Copy)]
struct FrameHeader {
    kind: u8,
    flags: u16,
    stream: u32,
    length: u32,
}

impl FrameHeader {
    fn parse(bytes: &[u8; HEADER_LEN]) -> Self {
        Self {
            kind: bytes[1],
            flags: u16::from_be_bytes([bytes[2], bytes[3]]),
            stream: u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            length: u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
        }
    }

    /// Only data frames carry a body; for the others `length` is a value
    /// (credit, ping id, error code).
    fn body_len(&self) -> usize {
        if self.kind == TYPE_DATA {
            self.length as usize
        } else {
            0
        }
    }

    fn is_data(&self) -> bool {
        self.kind == TYPE_DATA
    }

    /// A ping yamux answers whatever it is doing. Pings on a stream other than the
    /// session (which no implementation sends) are answered only for known
    /// streams; they are not counted, so they cannot hold the reserve open.
    fn is_ping_request(&self) -> bool {
        self.kind == TYPE_PING && self.flags & FLAG_ACK == 0 && self.stream == 0
    }

    fn is_ping_reply(&self) -> bool {
        self.kind == TYPE_PING && self.flags & FLAG_ACK != 0
    }
}

/// Where a byte stream of yamux frames is: inside a header (and how much of it has
/// been seen) or inside a data frame body.
#[derive(Debug, Default)]
struct FrameCursor {
    header: [u8; HEADER_LEN],
    filled: usize,
    body_left: usize,
}

impl FrameCursor {
    /// Follows `bytes`, calling `on_header` for every header completed in them.
    fn follow(&mut self, mut bytes: &[u8], mut on_header: impl FnMut(FrameHeader)) {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (HEADER_LEN - self.filled).min(bytes.len());
            self.header[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
            self.filled += n;
            bytes = &bytes[n..];
            if self.filled == HEADER_LEN {
                self.filled = 0;
                let header = FrameHeader::parse(&self.header);
                self.body_left = header.body_len();
                on_header(header);
            }
        }
    }
}

/// Milliseconds from a process-wide origin to `at`, at least 1 (0 means never).
pub(crate) fn clock_ms(at: tokio::time::Instant) -> u64 {
    let origin = *CLOCK_ORIGIN;
    u64::try_from(at.saturating_duration_since(origin).as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// The instant [`clock_ms`] gave `ms` for.
pub(crate) fn from_clock_ms(ms: u64) -> tokio::time::Instant {
    *CLOCK_ORIGIN + Duration::from_millis(ms)
}

static CLOCK_ORIGIN: std::sync::LazyLock<tokio::time::Instant> =
    std::sync::LazyLock::new(tokio::time::Instant::now);

thread_local! {
    /// Left by a [`YamuxStream`] write: when its connection's socket last read
    /// bytes ([`clock_ms`]). Taken by [`peer_reads`].
    static PEER_READS: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// When the connection's socket last read bytes ([`clock_ms`], 0 if never), if
/// the write call that just returned on this thread went through one of our
/// substreams (see the module docs); clears it. Call it before a write on a
/// stream that may be ours (to clear what other writes left) and right after.
pub(crate) fn peer_reads() -> Option<u64> {
    PEER_READS.with(std::cell::Cell::take)
}

/// A stream of a [`YamuxMuxer`]: the yamux stream itself, and when its
/// connection last read from the peer, handed up to the host's liveness check at
/// each write (see the module docs).
#[derive(Debug)]
pub struct YamuxStream {
    inner: yamux::Stream,
    socket: Arc<SocketProgress>,
}

impl YamuxStream {
    fn new(inner: yamux::Stream, socket: &Arc<SocketProgress>) -> Self {
        Self {
            inner,
            socket: Arc::clone(socket),
        }
    }
}

impl AsyncRead for YamuxStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for YamuxStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let last_read = self.socket.last_read.load(Ordering::Relaxed);
        PEER_READS.with(|mark| mark.set(Some(last_read)));
        if buf.is_empty() {
            // A look at the count alone (`MeteredStream::look_for_peer_reads`):
            // yamux would send an empty data frame.
            return Poll::Ready(Ok(0));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// The socket under yamux. What yamux writes goes straight to `inner` while nothing
/// is buffered, otherwise into a bounded buffer whose limit depends on whether a
/// ping reply is owed (see the module docs). Reads pass straight through and are
/// only watched for ping requests.
struct ReplyReserve<C> {
    inner: C,
    /// Bytes accepted from yamux, not yet taken by `inner`.
    out: BytesMut,
    /// Frame position of the bytes yamux writes; a header is held here until it
    /// is complete and admitted.
    written: FrameCursor,
    /// Frame position of the bytes yamux reads.
    read: FrameCursor,
    /// Ping requests read whose reply has not been written yet.
    owed_replies: usize,
    /// Bytes `inner` has taken and whether `out` holds any, shared with the muxer
    /// (progress of a close, stalls).
    progress: Arc<SocketProgress>,
}

impl<C: AsyncRead + AsyncWrite + Unpin> ReplyReserve<C> {
    fn new(inner: C, progress: Arc<SocketProgress>) -> Self {
        Self {
            inner,
            out: BytesMut::new(),
            written: FrameCursor::default(),
            read: FrameCursor::default(),
            owed_replies: 0,
            progress,
        }
    }

    fn count_sent(&self, n: usize) {
        self.progress.sent.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Tells the muxer whether bytes wait for `inner`.
    fn note_waiting(&self) {
        let waiting = !self.out.is_empty();
        if self.progress.waiting.load(Ordering::Relaxed) != waiting {
            self.progress.waiting.store(waiting, Ordering::Relaxed);
        }
    }

    /// Hands buffered bytes to `inner` until it is empty (`Ready`) or `inner` is
    /// full (`Pending`, with the task registered to be woken when it has room).
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            match ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out))? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                n => {
                    self.out.advance(n);
                    self.count_sent(n);
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Whether a frame with this header may go into the buffer now.
    fn admits(&self, header: &FrameHeader) -> bool {
        if self.out.is_empty() {
            // Every frame fits an empty buffer: our frames are at most
            // MAX_DATA_BODY + HEADER_LEN bytes.
            return true;
        }
        let limit = if self.owed_replies > 0 {
            OWED_LIMIT
        } else if header.is_data() {
            DATA_LIMIT
        } else {
            CONTROL_LIMIT
        };
        self.out.len() + HEADER_LEN + header.body_len() <= limit
    }

    /// Sends `bytes` after what is buffered: straight to `inner` when nothing is
    /// buffered (no copy while the socket has room), the rest into the buffer.
    fn push(&mut self, cx: &mut Context<'_>, bytes: &[u8]) -> io::Result<()> {
        let mut sent = 0;
        if self.out.is_empty() {
            match Pin::new(&mut self.inner).poll_write(cx, bytes) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    sent = n.min(bytes.len());
                    self.count_sent(sent);
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => {}
            }
        }
        self.out.extend_from_slice(&bytes[sent..]);
        Ok(())
    }

    /// Takes as much of `buf` as the limits allow: a frame is admitted or refused
    /// when its header is complete; once admitted, its body is always taken, so
    /// yamux is never stuck in the middle of a frame.
    fn accept(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> io::Result<usize> {
        let mut taken = 0;
        while taken < buf.len() {
            let rest = &buf[taken..];
            let cursor = &mut self.written;
            if cursor.body_left > 0 {
                let n = cursor.body_left.min(rest.len());
                cursor.body_left -= n;
                self.push(cx, &rest[..n])?;
                taken += n;
                continue;
            }
            let missing = HEADER_LEN - cursor.filled;
            if rest.len() < missing {
                cursor.header[cursor.filled..cursor.filled + rest.len()].copy_from_slice(rest);
                cursor.filled += rest.len();
                taken += rest.len();
                break;
            }
            let mut bytes = cursor.header;
            bytes[cursor.filled..].copy_from_slice(&rest[..missing]);
            let header = FrameHeader::parse(&bytes);
            if !self.admits(&header) {
                break;
            }
            let cursor = &mut self.written;
            cursor.filled = 0;
            cursor.body_left = header.body_len();
            taken += missing;
            if header.is_ping_reply() {
                self.owed_replies = self.owed_replies.saturating_sub(1);
            }
            self.push(cx, &bytes)?;
        }
        Ok(taken)
    }
}

impl<C: AsyncRead + AsyncWrite + Unpin> AsyncRead for ReplyReserve<C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if n > 0 {
            let now = clock_ms(tokio::time::Instant::now());
            if this.progress.last_read.load(Ordering::Relaxed) != now {
                this.progress.last_read.store(now, Ordering::Relaxed);
            }
        }
        let owed = &mut this.owed_replies;
        this.read.follow(&buf[..n], |header| {
            if header.is_ping_request() {
                *owed = owed.saturating_add(1);
            }
        });
        Poll::Ready(Ok(n))
    }
}

impl<C: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ReplyReserve<C> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // `Pending` here has registered the task with `inner`, which is what makes
        // returning `Pending` below correct: a frame is refused only when the
        // buffer is not empty, that is when `inner` is full.
        let _ = this.poll_drain(cx)?;
        let taken = this.accept(cx, buf);
        this.note_waiting();
        match taken? {
            0 => Poll::Pending,
            // What `inner` did not take waits for the next write or flush.
            taken => Poll::Ready(Ok(taken)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let drained = this.poll_drain(cx);
        this.note_waiting();
        ready!(drained)?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use futures::task::noop_waker_ref;

    use super::*;

    const TYPE_WINDOW_UPDATE: u8 = 1;
    const FLAG_SYN: u16 = 1;

    fn header(kind: u8, flags: u16, stream: u32, length: u32) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[1] = kind;
        h[2..4].copy_from_slice(&flags.to_be_bytes());
        h[4..8].copy_from_slice(&stream.to_be_bytes());
        h[8..].copy_from_slice(&length.to_be_bytes());
        h
    }

    /// A socket that takes `room` more bytes (then is full) and has `incoming` to read.
    #[derive(Default)]
    struct TestSocket {
        room: usize,
        written: Vec<u8>,
        incoming: Vec<u8>,
    }

    impl AsyncRead for TestSocket {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            if this.incoming.is_empty() {
                return Poll::Pending;
            }
            let n = buf.len().min(this.incoming.len());
            buf[..n].copy_from_slice(&this.incoming[..n]);
            this.incoming.drain(..n);
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for TestSocket {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            if this.room == 0 {
                return Poll::Pending;
            }
            let n = buf.len().min(this.room);
            this.room -= n;
            this.written.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn write(socket: &mut ReplyReserve<TestSocket>, bytes: &[u8]) -> Poll<usize> {
        let mut cx = Context::from_waker(noop_waker_ref());
        Pin::new(socket)
            .poll_write(&mut cx, bytes)
            .map(|r| r.expect("test socket never fails"))
    }

    /// Writes a whole frame the way yamux does (header, then body) and says whether
    /// it was taken.
    fn write_frame(
        socket: &mut ReplyReserve<TestSocket>,
        header: [u8; HEADER_LEN],
        body: &[u8],
    ) -> bool {
        match write(socket, &header) {
            Poll::Pending => false,
            Poll::Ready(n) => {
                assert_eq!(n, HEADER_LEN);
                let mut offset = 0;
                while offset < body.len() {
                    match write(socket, &body[offset..]) {
                        Poll::Ready(n) => offset += n,
                        Poll::Pending => panic!("body of an admitted frame refused"),
                    }
                }
                true
            }
        }
    }

    fn data_frame() -> ([u8; HEADER_LEN], Vec<u8>) {
        (
            header(TYPE_DATA, 0, 1, MAX_DATA_BODY as u32),
            vec![7; MAX_DATA_BODY],
        )
    }

    /// Fills a full socket with data frames until one is refused.
    fn fill_with_data(socket: &mut ReplyReserve<TestSocket>) -> usize {
        let (h, body) = data_frame();
        let mut frames = 0;
        while write_frame(socket, h, &body) {
            frames += 1;
            assert!(frames < 100, "data frames never refused");
        }
        frames
    }

    fn read_all(socket: &mut ReplyReserve<TestSocket>) {
        let mut cx = Context::from_waker(noop_waker_ref());
        let mut buf = [0u8; 5];
        while let Poll::Ready(r) = Pin::new(&mut *socket).poll_read(&mut cx, &mut buf) {
            r.expect("test socket never fails");
        }
    }

    /// A socket that takes only the bytes granted to it from outside.
    struct SlowSocket {
        room: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl AsyncRead for SlowSocket {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for SlowSocket {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let room = self.room.load(Ordering::Relaxed);
            if room == 0 {
                return Poll::Pending;
            }
            let n = buf.len().min(room);
            self.room.fetch_sub(n, Ordering::Relaxed);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    async fn close<C: AsyncRead + AsyncWrite + Unpin>(
        muxer: &mut YamuxMuxer<C>,
    ) -> Result<(), yamux::ConnectionError> {
        future::poll_fn(|cx| Pin::new(&mut *muxer).poll_close(cx)).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_close_that_moves_no_byte_is_given_up_after_the_close_timeout() {
        let timeout = Duration::from_secs(10);
        // A socket that never takes a byte: a peer that does not read.
        let config = YamuxConfig::default().with_close_timeout(timeout);
        let mut muxer = YamuxMuxer::new(TestSocket::default(), config, yamux::Mode::Client);
        let started = tokio::time::Instant::now();
        let closed = tokio::time::timeout(timeout * 6, close(&mut muxer))
            .await
            .expect("the close ends");
        match closed {
            Err(yamux::ConnectionError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::TimedOut),
            other => panic!("expected a timed-out close, got {other:?}"),
        }
        assert_eq!(started.elapsed(), timeout);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_the_socket_never_takes_fail_the_connection_after_the_stall_timeout() {
        use futures::AsyncWriteExt;
        let timeout = Duration::from_secs(10);
        let config = YamuxConfig::default().with_stall_timeout(timeout);
        // A socket that never takes a byte: a peer that does not read at all.
        let mut muxer = YamuxMuxer::new(TestSocket::default(), config, yamux::Mode::Client);
        let mut stream = future::poll_fn(|cx| Pin::new(&mut muxer).poll_outbound(cx))
            .await
            .expect("a stream");
        let writer = tokio::spawn(async move {
            let _ = stream.write_all(&[7u8; 64 * 1024]).await;
            stream
        });
        let started = tokio::time::Instant::now();
        let failed = tokio::time::timeout(
            timeout * 3,
            future::poll_fn(|cx| Pin::new(&mut muxer).poll(cx)),
        )
        .await
        .expect("the connection fails");
        match failed {
            Err(yamux::ConnectionError::Io(e)) => {
                assert_eq!(e.kind(), io::ErrorKind::TimedOut);
                assert_eq!(
                    TransportStalled::find(&e),
                    Some(TransportStalled { after: timeout })
                );
            }
            other => panic!("expected a stall, got {other:?}"),
        }
        let waited = started.elapsed();
        assert!(
            waited >= timeout && waited < timeout + Duration::from_secs(1),
            "{waited:?}"
        );
        writer.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_connection_is_not_a_stall() {
        let timeout = Duration::from_secs(10);
        let config = YamuxConfig::default().with_stall_timeout(timeout);
        // A socket that takes what is written (yamux's own first ping) and from
        // which nothing ever comes: a quiet peer, not a stuck one.
        let socket = TestSocket {
            room: usize::MAX,
            ..TestSocket::default()
        };
        let mut muxer = YamuxMuxer::new(socket, config, yamux::Mode::Client);
        // Nothing waits for the socket, however long.
        let polled = tokio::time::timeout(
            timeout * 3,
            future::poll_fn(|cx| Pin::new(&mut muxer).poll(cx)),
        )
        .await;
        assert!(polled.is_err(), "{polled:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_close_that_keeps_moving_bytes_may_take_longer_than_the_timeout() {
        let timeout = Duration::from_secs(10);
        let room = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let socket = SlowSocket {
            room: Arc::clone(&room),
        };
        let config = YamuxConfig::default().with_close_timeout(timeout);
        let mut muxer = YamuxMuxer::new(socket, config, yamux::Mode::Client);
        // The close writes one 12-byte GoAway; the peer takes 4 bytes every 6 s.
        let granter = tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(timeout * 3 / 5).await;
                room.fetch_add(4, Ordering::Relaxed);
            }
        });
        let started = tokio::time::Instant::now();
        let closed = tokio::time::timeout(timeout * 6, close(&mut muxer))
            .await
            .expect("the close ends");
        assert!(closed.is_ok(), "{closed:?}");
        assert!(started.elapsed() > timeout, "{:?}", started.elapsed());
        granter.await.expect("granter");
    }

    #[test]
    fn data_frames_are_refused_once_the_buffer_is_full() {
        let mut socket = ReplyReserve::new(TestSocket::default(), Arc::default());
        let frames = fill_with_data(&mut socket);
        assert_eq!(frames, DATA_LIMIT / (HEADER_LEN + MAX_DATA_BODY));
        assert!(socket.out.len() <= DATA_LIMIT);
        // Window updates still go in.
        assert!(write_frame(
            &mut socket,
            header(TYPE_WINDOW_UPDATE, 0, 1, 1 << 20),
            &[]
        ));
    }

    #[test]
    fn while_a_ping_reply_is_owed_the_waiting_frame_and_the_reply_are_taken() {
        let mut socket = ReplyReserve::new(TestSocket::default(), Arc::default());
        fill_with_data(&mut socket);
        // The peer's ping arrives, split over reads.
        socket.inner.incoming = header(TYPE_PING, FLAG_SYN, 0, 42).to_vec();
        read_all(&mut socket);
        assert_eq!(socket.owed_replies, 1);
        let (h, body) = data_frame();
        assert!(
            write_frame(&mut socket, h, &body),
            "waiting data frame refused"
        );
        assert!(write_frame(
            &mut socket,
            header(TYPE_PING, FLAG_SYN, 0, 1),
            &[]
        ));
        assert!(write_frame(
            &mut socket,
            header(TYPE_PING, FLAG_ACK, 0, 42),
            &[]
        ));
        assert_eq!(socket.owed_replies, 0);
        assert!(socket.out.len() <= OWED_LIMIT);
        // With the reply out, data waits again.
        assert!(!write_frame(&mut socket, h, &body));
    }

    #[test]
    fn pings_on_a_stream_and_replies_from_the_peer_open_no_reserve() {
        let mut socket = ReplyReserve::new(TestSocket::default(), Arc::default());
        fill_with_data(&mut socket);
        let mut incoming = header(TYPE_PING, FLAG_SYN, 3, 1).to_vec();
        incoming.extend_from_slice(&header(TYPE_PING, FLAG_ACK, 0, 2));
        // A data frame whose body looks like a ping request.
        incoming.extend_from_slice(&header(TYPE_DATA, 0, 2, HEADER_LEN as u32));
        incoming.extend_from_slice(&header(TYPE_PING, FLAG_SYN, 0, 3));
        socket.inner.incoming = incoming;
        read_all(&mut socket);
        assert_eq!(socket.owed_replies, 0);
    }

    #[test]
    fn a_header_written_in_pieces_is_judged_whole() {
        let mut socket = ReplyReserve::new(TestSocket::default(), Arc::default());
        fill_with_data(&mut socket);
        let (h, _) = data_frame();
        assert_eq!(write(&mut socket, &h[..5]), Poll::Ready(5));
        assert_eq!(write(&mut socket, &h[5..]), Poll::Pending);
        let update = header(TYPE_WINDOW_UPDATE, 0, 1, 1);
        let mut fresh = ReplyReserve::new(TestSocket::default(), Arc::default());
        fill_with_data(&mut fresh);
        assert_eq!(write(&mut fresh, &update[..1]), Poll::Ready(1));
        assert_eq!(write(&mut fresh, &update[1..]), Poll::Ready(HEADER_LEN - 1));
    }

    #[test]
    fn buffered_frames_reach_the_socket_in_order_once_it_has_room() {
        let mut socket = ReplyReserve::new(TestSocket::default(), Arc::default());
        fill_with_data(&mut socket);
        let update = header(TYPE_WINDOW_UPDATE, 0, 1, 1);
        assert!(write_frame(&mut socket, update, &[]));
        let expected = socket.out.to_vec();
        socket.inner.room = usize::MAX;
        let mut cx = Context::from_waker(noop_waker_ref());
        let flushed = Pin::new(&mut socket).poll_flush(&mut cx);
        assert!(matches!(flushed, Poll::Ready(Ok(()))));
        assert!(socket.out.is_empty());
        assert_eq!(socket.inner.written, expected);
        assert_eq!(&expected[expected.len() - HEADER_LEN..], &update);
        // Room again: data flows straight through.
        let (h, body) = data_frame();
        assert!(write_frame(&mut socket, h, &body));
        assert!(socket.out.is_empty());
    }
}
