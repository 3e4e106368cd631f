//! The per-connection stall watchdog.
//!
//! Under heavy two-way traffic yamux can stop reading its socket while a control
//! frame waits for room in a full send buffer; the connection then moves no bytes
//! and reports no error, forever. Every message stream of a connection is wrapped in
//! a [`MeteredStream`] that stamps the connection's [`ConnectionMeter`] whenever bytes
//! move. The behaviour checks the meters periodically: a connection with writes
//! pending and no progress for `stall_timeout` is declared stalled, which fails its
//! pending writes and waiters with `ConnectionStalled` and closes it.
//!
//! The same meter tells the host's liveness check that the peer is alive: bytes
//! moving on a message stream prove it as well as an answered ping does, and on a
//! slow, busy link they are the only proof, because the pings wait in the same
//! queues as the data (see `liveness.rs`).

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::{AsyncRead, AsyncWrite, Future};
use liquid_p2p_core::{ConnectionId, Error, PeerId};
use tokio::{sync::OwnedSemaphorePermit, time::Instant};
use tokio_util::sync::CancellationToken;

/// Progress and liveness of one connection.
///
/// The hot path only sets a flag when bytes move (no clock read, and no write at
/// all while the flag is already set); the watchdog's periodic check turns the
/// flag into a time, so a stall is measured to within one check period.
#[derive(Debug)]
pub(crate) struct ConnectionMeter {
    peer: PeerId,
    connection: ConnectionId,
    base: Instant,
    /// Set whenever bytes move; cleared by each check.
    moved: AtomicBool,
    /// Set whenever bytes move; cleared by each liveness check (`take_traffic`).
    traffic: AtomicBool,
    /// Milliseconds since `base` when a check last saw progress (or no pending
    /// writes).
    last_progress: AtomicU64,
    pending_writes: AtomicUsize,
    stalled: AtomicBool,
    stall_timeout: Duration,
    /// Cancelled when the connection closes or stalls.
    closed: CancellationToken,
}

impl ConnectionMeter {
    pub(crate) fn new(
        peer: PeerId,
        connection: ConnectionId,
        stall_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            peer,
            connection,
            base: Instant::now(),
            moved: AtomicBool::new(false),
            traffic: AtomicBool::new(false),
            last_progress: AtomicU64::new(0),
            pending_writes: AtomicUsize::new(0),
            stalled: AtomicBool::new(false),
            stall_timeout,
            closed: CancellationToken::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    /// Bytes moved.
    pub(crate) fn progress(&self) {
        // A load first: while the flag is set, streams on other cores do not keep
        // taking the cache line from each other.
        if !self.moved.load(Ordering::Relaxed) {
            self.moved.store(true, Ordering::Relaxed);
        }
    }

    /// Bytes moved on one of the connection's streams: progress for the watchdog
    /// and a sign of life of the peer for the liveness check.
    fn bytes_moved(&self) {
        self.progress();
        if !self.traffic.load(Ordering::Relaxed) {
            self.traffic.store(true, Ordering::Relaxed);
        }
    }

    /// Whether bytes moved since the last call. Called by the host's liveness
    /// check, which counts it like an answered ping.
    pub(crate) fn take_traffic(&self) -> bool {
        self.traffic.swap(false, Ordering::Relaxed)
    }

    /// Counts a write as pending until the guard is dropped.
    pub(crate) fn write_started(self: &Arc<Self>) -> PendingWrite {
        if self.pending_writes.fetch_add(1, Ordering::AcqRel) == 0 {
            // Idle time before the first pending write is not a stall.
            self.progress();
        }
        PendingWrite(Arc::clone(self))
    }

    /// Called by the periodic check: how long the connection has had writes
    /// pending without progress, if that is `stall_timeout` or more.
    pub(crate) fn stalled_for(&self) -> Option<Duration> {
        let now = self.now_ms();
        let moved = self.moved.swap(false, Ordering::Relaxed);
        if moved || self.pending_writes.load(Ordering::Acquire) == 0 {
            self.last_progress.store(now, Ordering::Relaxed);
            return None;
        }
        let idle = now.saturating_sub(self.last_progress.load(Ordering::Relaxed));
        let idle = Duration::from_millis(idle);
        (idle >= self.stall_timeout).then_some(idle)
    }

    pub(crate) fn peer(&self) -> PeerId {
        self.peer
    }

    pub(crate) fn connection(&self) -> ConnectionId {
        self.connection
    }

    pub(crate) fn is_stalled(&self) -> bool {
        self.stalled.load(Ordering::Acquire)
    }

    pub(crate) fn mark_stalled(&self) {
        self.stalled.store(true, Ordering::Release);
        self.closed.cancel();
    }

    pub(crate) fn mark_closed(&self) {
        self.closed.cancel();
    }

    pub(crate) fn closed(&self) -> &CancellationToken {
        &self.closed
    }

    /// The error for a write cut short because the connection went away.
    pub(crate) fn close_error(&self) -> Error {
        if self.stalled.load(Ordering::Acquire) {
            Error::ConnectionStalled {
                peer: self.peer,
                connection: self.connection,
                after: self.stall_timeout,
            }
        } else {
            Error::PoolClosed {
                peer: self.peer,
                connection: self.connection,
            }
        }
    }
}

/// A write in progress on a connection.
pub(crate) struct PendingWrite(Arc<ConnectionMeter>);

impl Drop for PendingWrite {
    fn drop(&mut self) {
        self.0.pending_writes.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A libp2p stream that reports moved bytes to its connection's meter.
#[derive(Debug)]
pub(crate) struct MeteredStream {
    inner: libp2p::Stream,
    meter: Arc<ConnectionMeter>,
    /// A send stream's place in its connection's stream budget, given back when
    /// the stream is dropped; `None` for inbound streams.
    _budget: Option<OwnedSemaphorePermit>,
    /// A send stream's limit on a write that moves no byte (`send_timeout`).
    send_timeout: Option<Duration>,
    /// Armed when a write or flush finds no room, disarmed when bytes move.
    no_progress: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// The error of a write that moved no byte for `after` (see `send_timeout`):
/// carried inside the `io::Error` a write returns, and recognised with
/// [`NoProgress::of`].
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("no byte taken for {after:?}")]
pub(crate) struct NoProgress {
    pub(crate) after: Duration,
}

impl NoProgress {
    /// The `NoProgress` inside `error`, if that is what it is.
    pub(crate) fn of(error: &io::Error) -> Option<NoProgress> {
        error.get_ref()?.downcast_ref::<NoProgress>().copied()
    }
}

impl MeteredStream {
    pub(crate) fn new(inner: libp2p::Stream, meter: Arc<ConnectionMeter>) -> Self {
        Self {
            inner,
            meter,
            _budget: None,
            send_timeout: None,
            no_progress: None,
        }
    }

    /// A send stream holding one place of its connection's stream budget, whose
    /// writes fail with [`NoProgress`] once they move no byte for `send_timeout`.
    pub(crate) fn budgeted(
        inner: libp2p::Stream,
        meter: Arc<ConnectionMeter>,
        budget: OwnedSemaphorePermit,
        send_timeout: Duration,
    ) -> Self {
        Self {
            inner,
            meter,
            _budget: Some(budget),
            send_timeout: Some(send_timeout),
            no_progress: None,
        }
    }

    /// Follows a write or flush: bytes moved disarm the no-progress timer; no room
    /// arms it, and once it has run out the write fails.
    fn deadline<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.no_progress = None;
            return poll;
        }
        let Some(limit) = self.send_timeout else {
            return poll;
        };
        let timer = self
            .no_progress
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if timer.as_mut().poll(cx).is_pending() {
            return poll;
        }
        self.no_progress = None;
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            NoProgress { after: limit },
        )))
    }

    pub(crate) fn meter(&self) -> &Arc<ConnectionMeter> {
        &self.meter
    }

    /// Whether the remote has neither closed nor reset this send stream, checked
    /// without waiting. Nothing is ever sent to us on a send stream, so anything
    /// readable (end of stream, an error, or stray bytes) means it is unusable.
    pub(crate) fn is_open(&mut self) -> bool {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut probe = [0u8; 1];
        Pin::new(&mut self.inner)
            .poll_read(&mut cx, &mut probe)
            .is_pending()
    }
}

fn track(meter: &ConnectionMeter, poll: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
    if let Poll::Ready(Ok(n)) = &poll
        && *n > 0
    {
        meter.bytes_moved();
    }
    poll
}

impl AsyncRead for MeteredStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        track(&this.meter, poll)
    }
}

impl AsyncWrite for MeteredStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        let poll = track(&this.meter, poll);
        this.deadline(cx, poll)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.deadline(cx, poll)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter() -> Arc<ConnectionMeter> {
        ConnectionMeter::new(
            PeerId::random(),
            ConnectionId::new_unchecked(1),
            Duration::from_secs(10),
        )
    }

    #[test]
    fn traffic_is_reported_once_and_only_when_bytes_move() {
        let meter = meter();
        assert!(!meter.take_traffic(), "a new connection has had no traffic");
        // Starting a write is progress for the watchdog, but the peer has proved
        // nothing yet.
        let write = meter.write_started();
        assert!(!meter.take_traffic());
        let _ = track(&meter, Poll::Ready(Ok(0)));
        let _ = track(&meter, Poll::Pending);
        let _ = track(&meter, Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())));
        assert!(!meter.take_traffic(), "no byte moved");
        let _ = track(&meter, Poll::Ready(Ok(5)));
        assert!(meter.take_traffic());
        assert!(!meter.take_traffic(), "reported once");
        drop(write);
    }
}
