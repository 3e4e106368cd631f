//! Per-connection meters and the metered message streams.
//!
//! A frozen transport is detected by the muxer, which alone sees whether the
//! socket takes bytes (see `muxer.rs`; on QUIC, by the transport's own idle
//! timeout). What remains here is per connection: whether its streams moved
//! bytes since the last liveness check, a token cancelled when it closes, and
//! whether it closed because it stalled, so that writes cut short say so.
//!
//! Bytes read from the peer tell the host's liveness check that it is alive, as
//! well as an answered ping does: bytes read from a message stream, and, over our
//! muxer, bytes its socket read (window updates), the time of which a send stream
//! learns at each write ([`crate::muxer::peer_reads`]) and the liveness check
//! asks an idle one for. On a slow link that a host floods one
//! way, the pings wait behind the data in the network's queues and those window
//! updates are the only proof (see `liveness.rs`). Bytes we write prove nothing:
//! the kernel and the flow-control windows take them from a peer that has
//! stopped.
//!
//! Send streams also bound a write that moves no byte (`pool.send_timeout`): the
//! receiver is not reading that protocol, and the write fails with
//! [`NoProgress`] instead of waiting for ever.
//!
//! And they put the bytes of higher-priority protocols on the wire first
//! ([`WriteGate`]): a frame is handed to the muxer in slices of at most
//! [`SLICE`] bytes, and before each slice a writer whose protocol has a lower
//! priority than one being written on the same connection pauses until that
//! write is done. A writer waiting for room (its stream's window is shut: its
//! receiver is not reading) does not count as writing, so a stalled `High`
//! protocol never holds the others back. Order within a stream is untouched: a
//! paused writer resumes where it stopped.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use futures::{AsyncRead, AsyncWrite, Future};
use liquid_p2p_core::{ConnectionId, Error, PeerId, ProtocolPriority, WriteProgress};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::shared::Permit;

/// Liveness and state of one connection.
///
/// The hot path only sets a flag when bytes move (no clock read, and no write at
/// all while the flag is already set); the liveness check reads and clears it.
#[derive(Debug)]
pub(crate) struct ConnectionMeter {
    peer: PeerId,
    connection: ConnectionId,
    /// Set whenever bytes are read; cleared by each liveness check (`take_traffic`).
    traffic: AtomicBool,
    /// When our muxer last read bytes from the peer, as far as its streams
    /// reported ([`crate::muxer::clock_ms`]; 0: not reported).
    socket_read: AtomicU64,
    /// Set when the muxer found the connection stalled: after how long.
    stalled_after: std::sync::OnceLock<Duration>,
    /// Cancelled when the connection closes or stalls.
    closed: CancellationToken,
    /// Which priorities are writing on the connection.
    gate: WriteGate,
    /// The connection's span (peer, connection id, remote address): the parent
    /// of the spans of every task spawned for the connection.
    span: tracing::Span,
}

/// Most bytes a send stream hands its muxer in one write: between two slices, a
/// lower-priority writer checks the [`WriteGate`]. yamux cuts data frames at 16 KiB
/// anyway; QUIC would take a whole frame at once.
pub(crate) const SLICE: usize = 64 * 1024;

/// Which priorities are writing on one connection, so that lower ones pause
/// between slices (see the module docs).
///
/// `Low` writers are not counted: nothing waits for them. The hot path is one
/// atomic add when a `Normal` or `High` writer starts and one when it stops,
/// and a load or two before each slice of a lower one.
#[derive(Debug, Default)]
pub(crate) struct WriteGate {
    /// Writers of each priority (by index) writing now: polled, and not waiting
    /// for room.
    writing: [AtomicUsize; 3],
    /// Writers paused for a higher priority, woken when a level stops writing.
    paused: Mutex<Vec<Waker>>,
    any_paused: AtomicBool,
}

impl WriteGate {
    fn start(&self, priority: ProtocolPriority) {
        if priority > ProtocolPriority::Low {
            self.writing[priority.index()].fetch_add(1, Ordering::SeqCst);
        }
    }

    fn stop(&self, priority: ProtocolPriority) {
        if priority > ProtocolPriority::Low
            && self.writing[priority.index()].fetch_sub(1, Ordering::SeqCst) == 1
            && self.any_paused.load(Ordering::SeqCst)
        {
            let paused = {
                let mut paused = self.paused.lock();
                self.any_paused.store(false, Ordering::SeqCst);
                std::mem::take(&mut *paused)
            };
            // Each checks again; one still behind a writing level pauses again.
            paused.into_iter().for_each(Waker::wake);
        }
    }

    /// Whether a writer of `priority` must let a higher one go first.
    fn must_wait(&self, priority: ProtocolPriority) -> bool {
        self.writing[priority.index() + 1..]
            .iter()
            .any(|n| n.load(Ordering::SeqCst) > 0)
    }

    /// Pauses a writer of `priority` until a level stops writing; false if it
    /// need not wait after all (the higher writer stopped meanwhile).
    fn pause(&self, priority: ProtocolPriority, waker: &Waker) -> bool {
        {
            let mut paused = self.paused.lock();
            if !paused.iter().any(|w| w.will_wake(waker)) {
                paused.push(waker.clone());
            }
            self.any_paused.store(true, Ordering::SeqCst);
        }
        self.must_wait(priority)
    }
}

impl ConnectionMeter {
    #[cfg(test)]
    pub(crate) fn new(peer: PeerId, connection: ConnectionId) -> Arc<Self> {
        Self::with_span(peer, connection, tracing::Span::none())
    }

    /// A meter whose connection's tasks log under `span`.
    pub(crate) fn with_span(
        peer: PeerId,
        connection: ConnectionId,
        span: tracing::Span,
    ) -> Arc<Self> {
        Arc::new(Self {
            peer,
            connection,
            traffic: AtomicBool::new(false),
            socket_read: AtomicU64::new(0),
            stalled_after: std::sync::OnceLock::new(),
            closed: CancellationToken::new(),
            gate: WriteGate::default(),
            span,
        })
    }

    /// The peer at the other end.
    pub(crate) fn peer(&self) -> PeerId {
        self.peer
    }

    /// The connection's span.
    pub(crate) fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Bytes read from one of the connection's streams: a sign of life of the
    /// peer for the liveness check.
    fn bytes_read(&self) {
        // A load first: while the flag is set, streams on other cores do not keep
        // taking the cache line from each other.
        if !self.traffic.load(Ordering::Relaxed) {
            self.traffic.store(true, Ordering::Relaxed);
        }
    }

    /// Our muxer's socket read bytes from the peer at `ms` (`clock_ms`).
    fn socket_read_at(&self, ms: u64) {
        if ms > self.socket_read.load(Ordering::Relaxed) {
            self.socket_read.fetch_max(ms, Ordering::Relaxed);
        }
    }

    /// When our muxer last read bytes from the peer, as far as the connection's
    /// streams have reported.
    pub(crate) fn last_socket_read(&self) -> Option<tokio::time::Instant> {
        match self.socket_read.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(crate::muxer::from_clock_ms(ms)),
        }
    }

    /// Whether bytes were read since the last call. Called by the host's liveness
    /// check, which counts it like an answered ping.
    pub(crate) fn take_traffic(&self) -> bool {
        self.traffic.swap(false, Ordering::Relaxed)
    }

    /// The muxer found the connection stalled after `after` without progress.
    pub(crate) fn mark_stalled(&self, after: Duration) {
        let _ = self.stalled_after.set(after);
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
        if let Some(after) = self.stalled_after.get() {
            Error::ConnectionStalled {
                peer: self.peer,
                connection: self.connection,
                after: *after,
            }
        } else {
            Error::PoolClosed {
                peer: self.peer,
                connection: self.connection,
            }
        }
    }
}

/// A libp2p stream that reports bytes read to its connection's meter.
#[derive(Debug)]
pub(crate) struct MeteredStream {
    inner: libp2p::Stream,
    meter: Arc<ConnectionMeter>,
    /// A send stream's place in its connection's stream budget, given back when
    /// the stream is dropped; `None` for inbound streams.
    _budget: Option<Permit>,
    /// A send stream's limit on a write that moves no byte (`send_timeout`).
    send_timeout: Option<Duration>,
    /// Made when a write or flush first finds no room; set anew at each wait,
    /// and moved on while other streams of the pool move.
    no_progress: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The writes of the pool this stream is lent from, and their tick count
    /// when the timer was last set.
    pool: Option<(Arc<WriteProgress>, u64)>,
    /// A write or flush is waiting for room (counted in the pool's waiters).
    waiting: bool,
    /// The priority of the frame being written (a send stream's).
    priority: ProtocolPriority,
    /// Counted as writing in the connection's [`WriteGate`].
    writing: bool,
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
            pool: None,
            waiting: false,
            priority: ProtocolPriority::Normal,
            writing: false,
        }
    }

    /// A send stream holding one place of its connection's stream budget, whose
    /// writes fail with [`NoProgress`] once they move no byte for `send_timeout`.
    pub(crate) fn budgeted(
        inner: libp2p::Stream,
        meter: Arc<ConnectionMeter>,
        budget: Permit,
        send_timeout: Duration,
    ) -> Self {
        Self {
            inner,
            meter,
            _budget: Some(budget),
            send_timeout: Some(send_timeout),
            no_progress: None,
            pool: None,
            waiting: false,
            priority: ProtocolPriority::Normal,
            writing: false,
        }
    }

    /// Sets the pool whose writes count as progress for this stream's writes
    /// (the pool it is lent from: its lane).
    pub(crate) fn follow(&mut self, pool: &Arc<WriteProgress>) {
        if self
            .pool
            .as_ref()
            .is_none_or(|(current, _)| !Arc::ptr_eq(current, pool))
        {
            self.stop_waiting();
            self.pool = Some((Arc::clone(pool), pool.ticks()));
        }
    }

    /// The frame written next has `priority` on the wire (see [`WriteGate`]).
    pub(crate) fn set_priority(&mut self, priority: ProtocolPriority) {
        if self.priority != priority {
            self.frame_written();
            self.priority = priority;
        }
    }

    /// The frame is written (or given up): the stream no longer counts as
    /// writing.
    pub(crate) fn frame_written(&mut self) {
        if std::mem::take(&mut self.writing) {
            self.meter.gate.stop(self.priority);
        }
    }

    /// Before a slice: pauses while a higher priority writes on the connection,
    /// else counts the stream as writing.
    fn wait_turn(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let gate = &self.meter.gate;
        if self.priority < ProtocolPriority::High && gate.must_wait(self.priority) {
            if std::mem::take(&mut self.writing) {
                gate.stop(self.priority);
            }
            if gate.pause(self.priority, cx.waker()) {
                return Poll::Pending;
            }
        }
        if !self.writing {
            self.writing = true;
            gate.start(self.priority);
        }
        Poll::Ready(())
    }

    fn stop_waiting(&mut self) {
        if std::mem::take(&mut self.waiting)
            && let Some((pool, _)) = &self.pool
        {
            pool.wait_ended();
        }
    }

    /// Follows a write or flush: a write that finds no room starts a wait, with
    /// the no-progress timer (made once per stream, then only moved on) set to
    /// `send_timeout` from now; bytes moving on another stream of its pool move it
    /// on; once it runs out with no byte moved anywhere in the pool, the write
    /// fails. Bytes moving on this stream end the wait.
    fn deadline<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            if let Some((pool, _)) = &self.pool {
                pool.moved();
            }
            self.stop_waiting();
            return poll;
        }
        let Some(limit) = self.send_timeout else {
            return poll;
        };
        if !self.waiting {
            self.waiting = true;
            if let Some((pool, seen)) = &mut self.pool {
                pool.wait_started();
                *seen = pool.ticks();
            }
            self.restart_timer(limit);
        }
        while self
            .no_progress
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready())
        {
            // Out of time: still in time if the pool's other streams moved.
            match &mut self.pool {
                Some((pool, seen)) if pool.ticks() != *seen => {
                    *seen = pool.ticks();
                    self.restart_timer(limit);
                }
                _ => {
                    self.stop_waiting();
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        NoProgress { after: limit },
                    )));
                }
            }
        }
        poll
    }

    /// Sets the no-progress timer to `limit` from now.
    fn restart_timer(&mut self, limit: Duration) {
        match &mut self.no_progress {
            Some(timer) => timer.as_mut().reset(tokio::time::Instant::now() + limit),
            None => self.no_progress = Some(Box::pin(tokio::time::sleep(limit))),
        }
    }

    /// Over our muxer, hands the time of the connection's last socket read to its
    /// meter without writing anything: an idle send stream's look for the
    /// liveness check. Whether the connection is over our muxer (a time came).
    pub(crate) fn look_for_peer_reads(&mut self) -> bool {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let _ = crate::muxer::peer_reads();
        let _ = Pin::new(&mut self.inner).poll_write(&mut cx, &[]);
        match crate::muxer::peer_reads() {
            Some(ms) => {
                self.meter.socket_read_at(ms);
                true
            }
            None => false,
        }
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
        meter.bytes_read();
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

impl Drop for MeteredStream {
    fn drop(&mut self) {
        self.stop_waiting();
        self.frame_written();
    }
}

impl AsyncWrite for MeteredStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.send_timeout.is_none() {
            // Not a send stream: no priority, no deadline.
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        if this.wait_turn(cx).is_pending() {
            return this.deadline(cx, Poll::Pending);
        }
        let slice = &buf[..buf.len().min(SLICE)];
        // Cleared first: a mark left by a write that no metered stream followed
        // (another protocol's stream, another connection) is not this one's.
        let _ = crate::muxer::peer_reads();
        let poll = Pin::new(&mut this.inner).poll_write(cx, slice);
        if let Some(ms) = crate::muxer::peer_reads() {
            this.meter.socket_read_at(ms);
        }
        if poll.is_pending() {
            // Waiting for room is not writing: lower priorities may go.
            this.frame_written();
        }
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
        ConnectionMeter::new(PeerId::random(), ConnectionId::new_unchecked(1))
    }

    /// Counts its wakes.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn lower_priorities_wait_while_a_higher_one_writes_and_are_woken_when_it_stops() {
        use ProtocolPriority::{High, Low, Normal};
        let gate = WriteGate::default();
        assert!(!gate.must_wait(Low) && !gate.must_wait(Normal) && !gate.must_wait(High));

        gate.start(Low);
        assert!(!gate.must_wait(Normal), "nothing waits for a low writer");
        gate.start(Normal);
        assert!(gate.must_wait(Low) && !gate.must_wait(Normal));
        gate.start(High);
        assert!(gate.must_wait(Low) && gate.must_wait(Normal) && !gate.must_wait(High));

        let (low, normal) = (Arc::new(Wakes::default()), Arc::new(Wakes::default()));
        assert!(gate.pause(Low, &Waker::from(Arc::clone(&low))));
        assert!(gate.pause(Normal, &Waker::from(Arc::clone(&normal))));
        assert!(
            gate.pause(Low, &Waker::from(Arc::clone(&low))),
            "pausing twice keeps one waker"
        );
        assert_eq!(gate.paused.lock().len(), 2);

        // The high writer stops: both are woken; the low one finds the normal
        // writer still going and pauses again.
        gate.stop(High);
        assert_eq!(low.0.load(Ordering::SeqCst), 1);
        assert_eq!(normal.0.load(Ordering::SeqCst), 1);
        assert!(!gate.must_wait(Normal));
        assert!(gate.pause(Low, &Waker::from(Arc::clone(&low))));
        gate.stop(Normal);
        assert_eq!(low.0.load(Ordering::SeqCst), 2);
        assert!(!gate.must_wait(Low));
        assert!(
            !gate.pause(Low, &Waker::from(Arc::clone(&low))),
            "nothing higher writes: no pause"
        );
        gate.stop(Low);
    }

    #[test]
    fn traffic_is_reported_once_and_only_when_bytes_move() {
        let meter = meter();
        assert!(!meter.take_traffic(), "a new connection has had no traffic");
        let _ = track(&meter, Poll::Ready(Ok(0)));
        let _ = track(&meter, Poll::Pending);
        let _ = track(&meter, Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())));
        assert!(!meter.take_traffic(), "no byte moved");
        let _ = track(&meter, Poll::Ready(Ok(5)));
        assert!(meter.take_traffic());
        assert!(!meter.take_traffic(), "reported once");
    }
}
