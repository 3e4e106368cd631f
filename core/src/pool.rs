//! `SendStreamPool`: the ready, negotiated send streams of one connection.
//!
//! Opening a substream costs a protocol negotiation; writing every message to one
//! stream serialises all senders. A pool sits between: a sender borrows an idle
//! stream, writes one frame and returns it. The pool opens `init_size` streams
//! ([`init`](SendStreamPool::init)), grows in batches when few are idle, never
//! exceeds `max_size`, and queues borrowers (bounded, in order, for at most
//! `borrow_timeout`) when every stream is out. After a burst it gives the extra
//! streams back: [`shrink`](SendStreamPool::shrink), called periodically, closes
//! idle streams down to `init_size` once the pool has seen `shrink_after` of low
//! use.
//!
//! A connection's *reserve* (the pool its lanes take streams from, see the pool
//! manager) is lazy: it opens only `idle_floor` streams when the connection comes
//! up ([`start`](SendStreamPool::start)) and refills to `init_size` at the first
//! periodic check that finds the connection in use
//! ([`warm_up`](SendStreamPool::warm_up)). A connection none of whose pools was used
//! for `idle_after` goes back to that state
//! ([`rest`](SendStreamPool::rest)): an idle connection costs the floor's
//! streams and nothing more.
//!
//! The pool knows nothing of the network: it opens streams through a
//! [`StreamOpener`], so its logic is tested with a fake opener and a paused clock.

use std::{
    collections::VecDeque,
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use futures::future::BoxFuture;
use libp2p_identity::PeerId;
use libp2p_swarm::ConnectionId;
use parking_lot::Mutex;
use tokio::{sync::oneshot, time::Instant};

use crate::{batch::FrameBatcher, config::PoolConfig, error::Error, priority::ProtocolPriority};

/// Opens new outbound streams on one connection.
pub trait StreamOpener: Send + Sync + 'static {
    /// The stream type handed out by the pool.
    type Stream: Send + 'static;

    /// Opens and negotiates one stream. The future must finish on its own (the
    /// implementation bounds it with a timeout).
    fn open(&self) -> BoxFuture<'static, Result<Self::Stream, Error>>;

    /// [`open`](Self::open) for a borrower waiting with `priority`: an
    /// implementation that shares a limit between pools serves the higher
    /// priorities first. Default: `open`.
    fn open_with(
        &self,
        priority: ProtocolPriority,
    ) -> BoxFuture<'static, Result<Self::Stream, Error>> {
        let _ = priority;
        self.open()
    }

    /// Whether an idle stream can still be lent out, checked without waiting just
    /// before it is. A stream the remote reset or refused while it sat idle is
    /// discarded instead of failing the borrower's write. Streams that came back
    /// from a healthy write since the pool's last periodic check
    /// ([`SendStreamPool::shrink`]) are lent without it. Default: always usable.
    fn is_usable(&self, _stream: &mut Self::Stream) -> bool {
        true
    }

    /// Runs one background open of the pool (growth and waiters' opens).
    /// Default: `tokio::spawn`; an implementation may track the task and give
    /// it its connection's span.
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        tokio::spawn(task);
    }

    /// Whether another pool of the same connection waits for a place in the
    /// connection's stream budget. A stream coming back from a write that no
    /// borrower of its own pool waits for is then closed, making room. Default:
    /// never.
    fn budget_wanted(&self) -> bool {
        false
    }

    /// The pool closed (its connection is gone, or the host shuts down): opens
    /// still waiting may give up. Default: nothing.
    fn pool_closed(&self) {}
}

/// Progress of the writes on one pool's streams, shared by their writers: a
/// writer that found no room counts itself `waiting`, and while any does, every
/// write that moves bytes on the pool ticks. A writer can so tell a pool whose
/// receiver reads nothing (no tick) from a slow link, where the flow-control
/// credit of one stream may take long to come back while the pool's other
/// streams keep moving.
#[derive(Debug, Default)]
pub struct WriteProgress {
    ticks: std::sync::atomic::AtomicU64,
    waiting: std::sync::atomic::AtomicUsize,
}

impl WriteProgress {
    /// Bytes moved on one of the pool's streams.
    pub fn moved(&self) {
        if self.waiting.load(Ordering::Relaxed) > 0 {
            self.ticks.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The tick count now.
    pub fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    /// A writer starts waiting for room.
    pub fn wait_started(&self) {
        self.waiting.fetch_add(1, Ordering::Relaxed);
    }

    /// A writer stopped waiting.
    pub fn wait_ended(&self) {
        self.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Which of a connection's send pools a [`PoolStats`] describes (see the pool
/// manager: each connection has a reserve, a shared lane and one lane per protocol
/// sent).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Lane {
    /// All pools of the connection together.
    #[default]
    All,
    /// Streams opened in advance and not yet taken by a lane.
    Reserve,
    /// The lane of ordered bursts and of protocols beyond the lane limit.
    Shared,
    /// The lane of one protocol: its streams carry only that protocol's frames.
    Protocol(Arc<str>),
}

/// A snapshot of one pool's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// The peer.
    pub peer: PeerId,
    /// The connection the pool belongs to.
    pub connection: ConnectionId,
    /// Open streams (idle + borrowed).
    pub current: usize,
    /// Streams ready to borrow.
    pub idle: usize,
    /// Streams lent out.
    pub borrowed: usize,
    /// Borrowers waiting for a stream.
    pub waiters: usize,
    /// Streams being opened.
    pub opening: usize,
    /// The cap on `current + opening`.
    pub max: usize,
    /// Opens that failed since the pool was created.
    pub open_failures: u64,
    /// Frames written by another sender's write, batched with its own (see
    /// [`FrameBatcher`]), since the pool was created.
    pub batched_frames: u64,
    /// Which of the connection's pools these counters are of.
    pub lane: Lane,
}

impl PoolStats {
    /// Adds the counters of `other` (another pool of the same connection) to
    /// these; `max` and `lane` stay.
    pub fn add(&mut self, other: &PoolStats) {
        self.current += other.current;
        self.idle += other.idle;
        self.borrowed += other.borrowed;
        self.waiters += other.waiters;
        self.opening += other.opening;
        self.open_failures += other.open_failures;
        self.batched_frames += other.batched_frames;
    }

    /// The counters of an empty pool with a cap of `max` streams; for code that
    /// renders or aggregates stats and is tested without a network.
    pub fn empty(peer: PeerId, connection: ConnectionId, max: usize) -> Self {
        Self {
            peer,
            connection,
            current: 0,
            idle: 0,
            borrowed: 0,
            waiters: 0,
            opening: 0,
            max,
            open_failures: 0,
            batched_frames: 0,
            lane: Lane::All,
        }
    }
}

/// How busy a pool is, for choosing among the connections of a peer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    /// Streams borrowed plus borrowers waiting.
    pub(crate) in_use: usize,
    /// Streams ready to borrow.
    pub(crate) idle: usize,
    /// Whether the pool is past half its cap with under half of its streams idle.
    pub(crate) busy: bool,
}

struct Waiter<S> {
    id: u64,
    priority: ProtocolPriority,
    tx: oneshot::Sender<Result<S, Error>>,
}

struct State<S> {
    idle: Vec<S>,
    /// Open streams: idle + borrowed.
    current: usize,
    opening: usize,
    borrowed: usize,
    waiters: VecDeque<Waiter<S>>,
    open_failures: u64,
    /// Most streams in use (borrowed + waiting) since the current shrink window
    /// began.
    high_water: usize,
    /// When the current shrink window began.
    window_start: Instant,
    /// How many streams at the top of `idle` came back from a healthy write since
    /// the last periodic check: they are lent without the usability probe. A new
    /// stream pushed on top, and every check, reset it to 0.
    trusted: usize,
    /// Borrowed from since the last idle check ([`SendStreamPool::take_activity`]).
    used: bool,
    /// On a reserve: when one of its connection's pools was last seen in use by
    /// the idle check.
    last_active: Instant,
}

impl<S> State<S> {
    /// Streams in use: borrowed, plus borrowers waiting for one.
    fn in_use(&self) -> usize {
        self.borrowed + self.waiters.len()
    }

    /// Records the streams in use for the current shrink window.
    fn note_in_use(&mut self) {
        self.high_water = self.high_water.max(self.in_use());
    }
}

/// A queued borrower: its ticket, the channel its stream comes on, and how many
/// streams to open for the waiters.
type InLine<S> = (u64, oneshot::Receiver<Result<S, Error>>, usize);

/// The send streams of one connection. See the module documentation.
pub struct SendStreamPool<O: StreamOpener> {
    peer: PeerId,
    connection: ConnectionId,
    opener: O,
    config: PoolConfig,
    state: Mutex<State<O::Stream>>,
    next_waiter: AtomicU64,
    /// Where this pool takes idle streams from before opening new ones (see
    /// [`lane`](Self::lane)).
    reservoir: Option<Arc<SendStreamPool<O>>>,
    /// On a reserve: it holds (or is opening) `init_size` streams because its
    /// connection is in use; cleared when the connection goes idle, set again
    /// by the first check that finds it in use (see [`warm_up`](Self::warm_up)).
    warm: AtomicBool,
    /// Set once, by [`close`](Self::close), under the state's lock: read there
    /// and, where only that is wanted, without it.
    closed: AtomicBool,
    progress: Arc<WriteProgress>,
    /// Combines concurrent senders' small frames into shared writes on this
    /// pool's streams (used by lanes; see [`batcher`](Self::batcher)).
    batcher: FrameBatcher<PooledStream<O>>,
}

impl<O: StreamOpener> fmt::Debug for SendStreamPool<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendStreamPool")
            .field("stats", &self.stats())
            .finish()
    }
}

impl<O: StreamOpener> SendStreamPool<O> {
    /// A pool for `connection` to `peer`. Nothing is opened until [`init`](Self::init).
    pub fn new(peer: PeerId, connection: ConnectionId, opener: O, config: PoolConfig) -> Arc<Self> {
        Self::build(peer, connection, opener, config, None)
    }

    fn build(
        peer: PeerId,
        connection: ConnectionId,
        opener: O,
        config: PoolConfig,
        reservoir: Option<Arc<Self>>,
    ) -> Arc<Self> {
        // Sized for the streams the pool holds at rest (the floor, for a lazy
        // reserve): growing by doubling would leave most pools with room for 16,
        // and every slot costs the size of a stream.
        let capacity = if reservoir.is_none() && !config.open_at_connect {
            config.effective_idle_floor()
        } else {
            config.init_size
        };
        let batch_bytes = config.batch_bytes;
        Arc::new(Self {
            peer,
            connection,
            opener,
            config,
            state: Mutex::new(State {
                idle: Vec::with_capacity(capacity),
                current: 0,
                opening: 0,
                borrowed: 0,
                waiters: VecDeque::new(),
                open_failures: 0,
                high_water: 0,
                window_start: Instant::now(),
                trusted: 0,
                used: false,
                last_active: Instant::now(),
            }),
            next_waiter: AtomicU64::new(0),
            reservoir,
            warm: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            progress: Arc::default(),
            batcher: FrameBatcher::new(peer, batch_bytes),
        })
    }

    /// A pool of the same connection that, whenever it needs a stream, first takes
    /// an idle one from `reservoir` (a pool nobody borrows from, holding streams
    /// opened in advance and never written) and opens a new one only when the
    /// reservoir is empty. The lane batches small frames as its connection's
    /// reservoir says (its `batch_bytes`), whatever `config` says: whether
    /// batching pays depends on the connection's transport.
    pub fn lane(reservoir: &Arc<Self>, config: PoolConfig) -> Arc<Self>
    where
        O: Clone,
    {
        let config = PoolConfig {
            batch_bytes: reservoir.config.batch_bytes,
            ..config
        };
        Self::build(
            reservoir.peer,
            reservoir.connection,
            reservoir.opener.clone(),
            config,
            Some(Arc::clone(reservoir)),
        )
    }

    /// The progress of the writes on this pool's streams (see [`WriteProgress`]).
    pub fn progress(&self) -> &Arc<WriteProgress> {
        &self.progress
    }

    /// Where the small frames of concurrent senders to this pool's lane meet,
    /// to be written together (see [`FrameBatcher`]).
    pub fn batcher(&self) -> &FrameBatcher<PooledStream<O>> {
        &self.batcher
    }

    /// The peer this pool sends to.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// The connection this pool belongs to.
    pub fn connection(&self) -> ConnectionId {
        self.connection
    }

    /// Starts opening `init_size` streams in the background.
    pub fn init(self: &Arc<Self>) {
        self.warm.store(true, Ordering::Relaxed);
        self.open_up_to(self.config.init_size);
    }

    /// Starts a new connection's reserve: opens `idle_floor` streams in the
    /// background, or `init_size` with `open_at_connect` (then it is
    /// [`init`](Self::init)). The rest are opened once the connection is in use
    /// (see [`warm_up`](Self::warm_up)).
    pub fn start(self: &Arc<Self>) {
        if self.config.open_at_connect {
            self.init();
        } else {
            self.open_up_to(self.config.effective_idle_floor());
        }
    }

    /// Opens streams in the background until the pool holds or opens `n`.
    fn open_up_to(self: &Arc<Self>, n: usize) {
        let n = {
            let mut st = self.state.lock();
            if self.is_closed() {
                return;
            }
            let n = n.saturating_sub(st.current + st.opening);
            st.opening += n;
            n
        };
        self.spawn_opens(n);
    }

    /// The idle check saw the connection in use while its reserve is not warm:
    /// the reserve refills to `init_size` in the background. Not done by the
    /// borrow that ends a quiet period: its opens (a negotiation each, through
    /// both ends' connection tasks) would compete with the one message being
    /// sent, which the floor's stream already serves.
    pub fn warm_up(self: &Arc<Self>) {
        if !self.warm.load(Ordering::Relaxed) && !self.warm.swap(true, Ordering::Relaxed) {
            self.open_up_to(self.config.init_size);
        }
    }

    /// Borrows a stream: an idle one at once, else the next one returned or opened,
    /// waiting at most `borrow_timeout`. Waits in line with `Normal` priority.
    pub async fn borrow(self: &Arc<Self>) -> Result<PooledStream<O>, Error> {
        self.borrow_with(ProtocolPriority::Normal).await
    }

    /// [`borrow`](Self::borrow), waiting in line with `priority`: a stream that
    /// comes back goes to the highest-priority waiter, the oldest among equals.
    pub async fn borrow_with(
        self: &Arc<Self>,
        priority: ProtocolPriority,
    ) -> Result<PooledStream<O>, Error> {
        let (id, rx, opens) = loop {
            let taken = {
                let mut st = self.state.lock();
                if self.is_closed() {
                    return Err(self.closed_error());
                }
                st.used = true;
                match st.idle.pop() {
                    Some(stream) => {
                        let trusted = st.trusted > 0;
                        st.trusted = st.trusted.saturating_sub(1);
                        st.borrowed += 1;
                        st.note_in_use();
                        Ok((stream, trusted, self.growth(&mut st)))
                    }
                    None => Err(self.wait_in_line(&mut st, priority)?),
                }
            };
            match taken {
                Ok((mut stream, trusted, grow)) => {
                    self.spawn_opens(grow);
                    // A stream that just came back from a healthy write is lent as
                    // it is (should the remote have reset it since, the write fails
                    // and the sender retries on another stream). Others are probed,
                    // outside the lock: the probe may take the transport's own lock
                    // (QUIC's connection state), and every other sender of this
                    // connection would wait behind it.
                    if trusted || self.opener.is_usable(&mut stream) {
                        return Ok(self.lend(stream));
                    }
                    tracing::debug!(peer = %self.peer, connection = %self.connection, "discarded an idle stream the remote closed");
                    self.discard(stream);
                }
                Err(waiting) => break waiting,
            }
        };
        self.spawn_opens(opens);

        // Dropped while waiting (a caller's timeout or select): a stream handed
        // over meanwhile goes back to the pool, not down with the channel.
        let mut line = InLineGuard {
            pool: self,
            rx,
            waiting: true,
        };
        let waited = tokio::time::timeout(self.config.borrow_timeout, &mut line.rx).await;
        // From here every outcome takes what the channel holds.
        line.waiting = false;
        let rx = &mut line.rx;
        match waited {
            Ok(Ok(Ok(stream))) => Ok(self.lend(stream)),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(self.closed_error()),
            Err(_) => {
                let mut st = self.state.lock();
                if let Some(pos) = st.waiters.iter().position(|w| w.id == id) {
                    st.waiters.remove(pos);
                    return Err(Error::Timeout {
                        peer: self.peer,
                        after: self.config.borrow_timeout,
                    });
                }
                drop(st);
                // Served between the timer firing and taking the lock: the stream
                // is already in the channel, so use it rather than leak it.
                match rx.try_recv() {
                    Ok(Ok(stream)) => Ok(self.lend(stream)),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(self.closed_error()),
                }
            }
        }
    }

    /// Closes the pool: waiters fail with `PoolClosed`, idle streams are dropped and
    /// borrowed ones are dropped when they come back.
    pub fn close(&self) {
        self.close_with(|| self.closed_error());
    }

    /// Closes the pool, failing waiters with the error `reason` makes.
    pub fn close_with(&self, reason: impl Fn() -> Error) {
        let (idle, waiters) = {
            let mut st = self.state.lock();
            if self.is_closed() {
                return;
            }
            self.closed.store(true, Ordering::Release);
            st.trusted = 0;
            let idle = std::mem::take(&mut st.idle);
            st.current -= idle.len();
            (idle, std::mem::take(&mut st.waiters))
        };
        self.opener.pool_closed();
        drop(idle);
        for w in waiters {
            let _ = w.tx.send(Err(reason()));
        }
    }

    /// Gives back streams a burst left behind. Once per `shrink_after` window,
    /// closes idle streams (least recently used first) down to the most streams
    /// that were in use at once during the window, and never below `init_size`.
    /// A burst's extra streams are therefore closed between `shrink_after` and
    /// twice that after it ends. Returns how many were closed. Call it
    /// periodically (every quarter of `shrink_after` or more often); the remote
    /// sees the closed streams reset. Each call also ends the trust in streams
    /// that came back from a healthy write: they are probed again when lent.
    pub fn shrink(&self, now: Instant) -> usize {
        let closed = {
            let mut st = self.state.lock();
            // Streams idle since before this check are probed again when lent.
            st.trusted = 0;
            if self.is_closed()
                || now.saturating_duration_since(st.window_start) < self.config.shrink_after
            {
                return 0;
            }
            let init = self.config.init_size;
            let keep = init.max(st.high_water).max(st.borrowed);
            st.window_start = now;
            st.high_water = st.in_use();
            let excess = st.current.saturating_sub(keep).min(st.idle.len());
            if excess == 0 {
                return 0;
            }
            // Borrowing pops from the end, so the front holds the streams idle longest.
            let closed: Vec<_> = st.idle.drain(..excess).collect();
            st.current -= excess;
            st.idle.shrink_to(init);
            closed
        };
        let n = closed.len();
        tracing::debug!(peer = %self.peer, connection = %self.connection, closed = n, "pool shrank after low use");
        n
    }

    /// Takes the idle stream idle longest out of the pool, if any: for a lane to
    /// use, or to drop, which closes it and gives its place in the connection's
    /// stream budget back.
    pub fn take_idle(&self) -> Option<O::Stream> {
        let mut st = self.state.lock();
        if st.idle.is_empty() {
            return None;
        }
        st.current -= 1;
        st.trusted = st.trusted.min(st.idle.len() - 1);
        Some(st.idle.remove(0))
    }

    /// Whether the pool was in use since the last call: borrowed from, or with
    /// streams lent out, borrowers waiting or streams being opened now. Clears
    /// the record of borrows. For the connection's idle check.
    pub fn take_activity(&self) -> bool {
        let mut st = self.state.lock();
        let active = st.used || st.borrowed > 0 || !st.waiters.is_empty() || st.opening > 0;
        st.used = false;
        active
    }

    /// The idle check of a connection, on its reserve: `used` says whether any
    /// pool of the connection was in use since the last check (see
    /// [`take_activity`](Self::take_activity)). Returns whether none was for
    /// `idle_after`: the connection is idle and should
    /// [`rest`](Self::rest).
    pub fn idle_for(&self, now: Instant, used: bool) -> bool {
        let Some(after) = self.config.idle_after else {
            return false;
        };
        let mut st = self.state.lock();
        if self.is_closed() {
            return false;
        }
        if used {
            st.last_active = now;
            return false;
        }
        now.saturating_duration_since(st.last_active) >= after
    }

    /// Puts an idle connection at rest, on its reserve: of `streams` (the idle
    /// streams its lanes gave up, taken with [`take_idle`](Self::take_idle)) and
    /// the reserve's own, keeps `idle_floor` and closes the rest, least recently
    /// idle first. The first check that finds the connection in use again refills
    /// the reserve. Returns how
    /// many streams were closed. Every stream here is idle, so its last frame
    /// was written and flushed before it came back: the remote reads it before
    /// it sees the stream reset.
    pub fn rest(&self, streams: Vec<O::Stream>) -> usize {
        let floor = self.config.effective_idle_floor();
        let closed = {
            let mut st = self.state.lock();
            self.warm.store(false, Ordering::Relaxed);
            if self.is_closed() {
                streams
            } else {
                // Streams that were written last are kept first: borrowing pops
                // from the end.
                st.current += streams.len();
                st.idle.extend(streams);
                st.trusted = 0;
                let excess = st.idle.len().saturating_sub(floor);
                let closed: Vec<_> = st.idle.drain(..excess).collect();
                st.current -= excess;
                st.idle.shrink_to(floor);
                closed
            }
        };
        let n = closed.len();
        if n > 0 {
            tracing::debug!(peer = %self.peer, connection = %self.connection, closed = n, "idle connection: pool at rest");
        }
        n
    }

    /// Whether `check` says yes for one of the idle streams, asked in turn
    /// (under the pool's lock: `check` must not wait).
    pub fn any_idle(&self, check: impl FnMut(&mut O::Stream) -> bool) -> bool {
        self.state.lock().idle.iter_mut().any(check)
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The pool's counters.
    pub fn stats(&self) -> PoolStats {
        let st = self.state.lock();
        PoolStats {
            peer: self.peer,
            connection: self.connection,
            current: st.current,
            idle: st.idle.len(),
            borrowed: st.borrowed,
            waiters: st.waiters.iter().filter(|w| !w.tx.is_closed()).count(),
            opening: st.opening,
            max: self.config.max_size,
            open_failures: st.open_failures,
            batched_frames: self.batcher.batched_frames(),
            lane: Lane::All,
        }
    }

    /// How busy an open pool is, read under one lock: `None` if closed.
    pub(crate) fn load(&self) -> Option<Load> {
        let st = self.state.lock();
        (!self.is_closed()).then(|| Load {
            in_use: st.in_use(),
            idle: st.idle.len(),
            // Past half its cap with under half of its streams idle.
            busy: st.current + st.opening > self.config.max_size / 2
                && st.idle.len() * 2 < st.current,
        })
    }

    fn closed_error(&self) -> Error {
        Error::PoolClosed {
            peer: self.peer,
            connection: self.connection,
        }
    }

    /// Queues a borrower when no stream is idle: its ticket, the channel its
    /// stream will come on, and how many streams to open for the waiters; or
    /// `PoolExhausted` when `max_waiters` live borrowers already wait. The queue
    /// is kept in priority order, first come first served within a level.
    fn wait_in_line(
        &self,
        st: &mut State<O::Stream>,
        priority: ProtocolPriority,
    ) -> Result<InLine<O::Stream>, Error> {
        if st.waiters.len() >= self.config.max_waiters {
            // Borrowers that gave up (their future was dropped) still sit in the
            // queue until served; clear them before refusing a live one.
            st.waiters.retain(|w| !w.tx.is_closed());
            if st.waiters.len() >= self.config.max_waiters {
                return Err(Error::PoolExhausted {
                    peer: self.peer,
                    connection: self.connection,
                    waiters: self.config.max_waiters,
                });
            }
        }
        let id = self.next_waiter.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let place = st
            .waiters
            .iter()
            .position(|w| w.priority < priority)
            .unwrap_or(st.waiters.len());
        st.waiters.insert(place, Waiter { id, priority, tx });
        st.note_in_use();
        Ok((id, rx, self.opens_for_waiters(st)))
    }

    fn lend(self: &Arc<Self>, stream: O::Stream) -> PooledStream<O> {
        PooledStream {
            pool: Arc::clone(self),
            stream: Some(stream),
            healthy: true,
        }
    }

    /// Streams to open in the background after a borrow: when idle streams are at
    /// most `grow_threshold_percent` of the current ones, add one batch (once at a
    /// time, never past the cap).
    fn growth(&self, st: &mut State<O::Stream>) -> usize {
        let total = st.current + st.opening;
        if self.is_closed() || st.opening > 0 || total >= self.config.max_size {
            return 0;
        }
        let threshold = st.current * usize::from(self.config.grow_threshold_percent);
        if st.idle.len() * 100 > threshold {
            return 0;
        }
        let n = self
            .config
            .effective_grow_batch()
            .min(self.config.max_size - total);
        st.opening += n;
        n
    }

    /// A usable stream from the reservoir, if it has one: they may have sat idle
    /// for long, and one may go straight to a waiter, so each is probed here.
    fn take_reserved(&self) -> Option<O::Stream> {
        let reservoir = self.reservoir.as_ref()?;
        while let Some(mut stream) = reservoir.take_idle() {
            if self.opener.is_usable(&mut stream) {
                return Some(stream);
            }
            tracing::debug!(peer = %self.peer, connection = %self.connection, "discarded a reserved stream the remote closed");
        }
        None
    }

    /// Streams to open so that every waiter has an open on its way, within the cap.
    fn opens_for_waiters(&self, st: &mut State<O::Stream>) -> usize {
        if self.is_closed() {
            return 0;
        }
        let room = self.config.max_size.saturating_sub(st.current + st.opening);
        let n = st.waiters.len().saturating_sub(st.opening).min(room);
        st.opening += n;
        n
    }

    fn spawn_opens(self: &Arc<Self>, n: usize) {
        if n == 0 {
            return;
        }
        // Opens are for the waiters (or growth, `Normal`): the first waiter's
        // priority is the highest.
        let priority = self
            .state
            .lock()
            .waiters
            .front()
            .map_or(ProtocolPriority::Normal, |w| w.priority);
        for _ in 0..n {
            if let Some(stream) = self.take_reserved() {
                self.opened(Ok(stream));
                continue;
            }
            let pool = Arc::clone(self);
            let open = self.opener.open_with(priority);
            self.opener.spawn(Box::pin(async move {
                let result = open.await;
                pool.opened(result);
            }));
        }
    }

    fn opened(self: &Arc<Self>, result: Result<O::Stream, Error>) {
        let mut st = self.state.lock();
        st.opening -= 1;
        match result {
            Ok(stream) if self.is_closed() => {
                drop(st);
                drop(stream);
            }
            Ok(stream) => {
                st.current += 1;
                Self::hand_over(&mut st, stream, false);
            }
            Err(e) => {
                st.open_failures += 1;
                tracing::debug!(peer = %self.peer, connection = %self.connection, error = %e, "stream open failed");
                // A waiter with no open left on its way would only time out; tell the
                // first one now so the caller can try another connection.
                if st.waiters.len() > st.opening + st.idle.len() {
                    while let Some(w) = st.waiters.pop_front() {
                        if w.tx.send(Err(e.clone())).is_ok() {
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Gives `stream` to the first live waiter (highest priority, then oldest),
    /// else makes it idle, `trusted` if
    /// it comes back from a healthy write (see `State::trusted`).
    fn hand_over(st: &mut State<O::Stream>, mut stream: O::Stream, trusted: bool) {
        while let Some(w) = st.waiters.pop_front() {
            match w.tx.send(Ok(stream)) {
                Ok(()) => {
                    st.borrowed += 1;
                    st.note_in_use();
                    return;
                }
                Err(Ok(back)) => stream = back,
                Err(Err(_)) => return,
            }
        }
        st.idle.push(stream);
        st.trusted = if trusted { st.trusted + 1 } else { 0 };
    }

    fn give_back(self: &Arc<Self>, stream: O::Stream) {
        let mut st = self.state.lock();
        st.borrowed -= 1;
        if self.is_closed() || (st.waiters.is_empty() && self.opener.budget_wanted()) {
            st.current -= 1;
            drop(st);
            drop(stream);
        } else {
            Self::hand_over(&mut st, stream, true);
        }
    }

    fn discard(self: &Arc<Self>, stream: O::Stream) {
        let opens = {
            let mut st = self.state.lock();
            st.borrowed -= 1;
            st.current -= 1;
            self.opens_for_waiters(&mut st)
        };
        drop(stream);
        self.spawn_opens(opens);
    }
}

/// A borrower's place in line while its future waits: if the future is dropped,
/// the place is given up, and a stream already handed to it is given back.
struct InLineGuard<'a, O: StreamOpener> {
    pool: &'a Arc<SendStreamPool<O>>,
    rx: oneshot::Receiver<Result<O::Stream, Error>>,
    /// Still waiting: the future may be dropped with a stream in `rx`.
    waiting: bool,
}

impl<O: StreamOpener> Drop for InLineGuard<'_, O> {
    fn drop(&mut self) {
        if self.waiting {
            // Closed first: no stream can arrive after the check below.
            self.rx.close();
            if let Ok(Ok(stream)) = self.rx.try_recv() {
                self.pool.give_back(stream);
            }
        }
    }
}

/// A borrowed stream. Dropping it returns the stream to its pool if it is healthy,
/// and discards it (lowering the pool's count) if a write on it failed or was cut
/// short.
pub struct PooledStream<O: StreamOpener> {
    pool: Arc<SendStreamPool<O>>,
    stream: Option<O::Stream>,
    healthy: bool,
}

impl<O: StreamOpener> fmt::Debug for PooledStream<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledStream")
            .field("peer", &self.pool.peer)
            .field("connection", &self.pool.connection)
            .field("healthy", &self.healthy)
            .finish()
    }
}

impl<O: StreamOpener> PooledStream<O> {
    /// Starts a write on the stream. The stream goes back to its pool only if the
    /// returned guard is [finished](WriteGuard::finish) once the write completed;
    /// a guard dropped before that (the write failed, or was cancelled midway)
    /// leaves the stream to be discarded, so a half-written stream never returns.
    pub fn begin_write(&mut self) -> WriteGuard<'_, O> {
        self.healthy = false;
        WriteGuard { pooled: self }
    }

    /// The stream, to look at (writing goes through [`begin_write`](Self::begin_write)).
    pub fn get(&self) -> &O::Stream {
        match self.stream.as_ref() {
            Some(s) => s,
            None => unreachable!("the stream is only taken in drop"),
        }
    }

    /// The pool this stream came from.
    pub fn pool(&self) -> &Arc<SendStreamPool<O>> {
        &self.pool
    }

    fn stream_mut(&mut self) -> &mut O::Stream {
        match self.stream.as_mut() {
            Some(s) => s,
            None => unreachable!("the stream is only taken in drop"),
        }
    }
}

/// A write in progress on a [`PooledStream`]; see [`PooledStream::begin_write`].
pub struct WriteGuard<'a, O: StreamOpener> {
    pooled: &'a mut PooledStream<O>,
}

impl<O: StreamOpener> WriteGuard<'_, O> {
    /// The stream to write to.
    pub fn stream(&mut self) -> &mut O::Stream {
        self.pooled.stream_mut()
    }

    /// The stream to write to, and the pool it is lent from.
    pub fn stream_and_pool(&mut self) -> (&mut O::Stream, &Arc<SendStreamPool<O>>) {
        let pooled = &mut *self.pooled;
        match pooled.stream.as_mut() {
            Some(stream) => (stream, &pooled.pool),
            None => unreachable!("the stream is only taken in drop"),
        }
    }

    /// The write completed: the stream may go back to its pool.
    pub fn finish(self) {
        self.pooled.healthy = true;
    }
}

impl<O: StreamOpener> Drop for PooledStream<O> {
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take() {
            if self.healthy {
                self.pool.give_back(stream);
            } else {
                self.pool.discard(stream);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::{
        sync::atomic::{AtomicBool, AtomicUsize},
        time::Duration,
    };

    use super::*;

    /// Opens counted fake streams after `delay`; can be told to fail.
    #[derive(Clone, Default)]
    pub(crate) struct FakeOpener {
        pub opened: Arc<AtomicUsize>,
        pub live: Arc<AtomicUsize>,
        pub max_live: Arc<AtomicUsize>,
        pub fail: Arc<AtomicBool>,
        /// Streams opened while this is set are closed by the "remote" at once.
        pub open_dead: Arc<AtomicBool>,
        /// The "remote" has reset every stream opened before this many were.
        pub reset_before: Arc<AtomicUsize>,
        /// Usability probes made.
        pub probes: Arc<AtomicUsize>,
        /// Another pool of the connection waits for a place in its budget.
        pub budget_wanted: Arc<AtomicBool>,
        pub delay: Duration,
    }

    pub(crate) struct FakeStream {
        live: Arc<AtomicUsize>,
        usable: bool,
        pub(crate) serial: usize,
    }

    impl Drop for FakeStream {
        fn drop(&mut self) {
            self.live.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl StreamOpener for FakeOpener {
        type Stream = FakeStream;
        fn open(&self) -> BoxFuture<'static, Result<FakeStream, Error>> {
            let this = self.clone();
            Box::pin(async move {
                if !this.delay.is_zero() {
                    tokio::time::sleep(this.delay).await;
                }
                if this.fail.load(Ordering::SeqCst) {
                    return Err(Error::StreamOpen {
                        peer: PeerId::random(),
                        reason: crate::StreamOpenFailure::Unsupported,
                    });
                }
                let serial = this.opened.fetch_add(1, Ordering::SeqCst);
                let live = this.live.fetch_add(1, Ordering::SeqCst) + 1;
                this.max_live.fetch_max(live, Ordering::SeqCst);
                Ok(FakeStream {
                    live: this.live,
                    usable: !this.open_dead.load(Ordering::SeqCst),
                    serial,
                })
            })
        }

        fn is_usable(&self, stream: &mut FakeStream) -> bool {
            self.probes.fetch_add(1, Ordering::SeqCst);
            stream.usable && stream.serial >= self.reset_before.load(Ordering::SeqCst)
        }

        fn budget_wanted(&self) -> bool {
            self.budget_wanted.load(Ordering::SeqCst)
        }
    }

    pub(crate) fn pool_with(
        opener: FakeOpener,
        init: usize,
        max: usize,
    ) -> Arc<SendStreamPool<FakeOpener>> {
        let config = PoolConfig {
            init_size: init,
            max_size: max,
            borrow_timeout: Duration::from_secs(5),
            ..PoolConfig::default()
        };
        SendStreamPool::new(
            PeerId::random(),
            ConnectionId::new_unchecked(1),
            opener,
            config,
        )
    }

    /// Lets spawned open tasks run (time is paused, so sleeps resolve at once).
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    /// Checks the pool every quarter of `shrink_after` (60 s) for `duration`.
    async fn check_shrink_for(pool: &SendStreamPool<FakeOpener>, duration: Duration) {
        let period = Duration::from_secs(15);
        let mut waited = Duration::ZERO;
        while waited < duration {
            tokio::time::sleep(period).await;
            waited += period;
            pool.shrink(tokio::time::Instant::now());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_pool_that_grew_shrinks_back_to_init_size_after_low_use() {
        let opener = FakeOpener::default();
        let pool = pool_with(opener.clone(), 10, 100);
        pool.init();
        settle().await;
        // A burst: 60 streams in use at once.
        let mut held = Vec::new();
        for _ in 0..60 {
            held.push(pool.borrow().await.expect("borrow"));
        }
        settle().await;
        drop(held);
        let grown = pool.stats();
        assert!(
            grown.current >= 60 && grown.idle == grown.current,
            "{grown:?}"
        );
        // Low use from now on: one stream at a time.
        for _ in 0..3 {
            drop(pool.borrow().await.expect("borrow"));
        }
        check_shrink_for(&pool, Duration::from_secs(60)).await;
        assert!(
            pool.stats().current >= 60,
            "the window of the burst keeps its peak"
        );
        check_shrink_for(&pool, Duration::from_secs(60)).await;
        let s = pool.stats();
        assert_eq!((s.current, s.idle), (10, 10), "{s:?}");
        assert_eq!(
            opener.live.load(Ordering::SeqCst),
            10,
            "the streams were closed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pool_keeps_the_streams_it_uses_and_gives_back_the_rest() {
        let pool = pool_with(FakeOpener::default(), 10, 100);
        pool.init();
        settle().await;
        let mut held = Vec::new();
        for _ in 0..30 {
            held.push(pool.borrow().await.expect("borrow"));
        }
        settle().await;
        // 30 stay borrowed for 5 minutes: the pool keeps at least those.
        check_shrink_for(&pool, Duration::from_secs(300)).await;
        let s = pool.stats();
        assert!(s.current >= 30 && s.borrowed == 30, "{s:?}");
        // Then only 12 are in use: two windows later the pool holds just those.
        held.truncate(12);
        check_shrink_for(&pool, Duration::from_secs(120)).await;
        let s = pool.stats();
        assert_eq!((s.current, s.borrowed, s.idle), (12, 12, 0), "{s:?}");
        // And once they are returned too, it goes back to init_size.
        held.clear();
        check_shrink_for(&pool, Duration::from_secs(120)).await;
        assert_eq!(pool.stats().current, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_borrow_dropped_after_its_stream_was_handed_over_gives_the_stream_back() {
        let pool = pool_with(FakeOpener::default(), 1, 1);
        pool.init();
        settle().await;
        let first = pool.borrow().await.expect("borrow");
        // A second borrower waits in line; the first stream comes back and is
        // handed to it; then its future is dropped before it ever runs again
        // (a `tokio::time::timeout` around a send, a `select!` branch lost).
        let mut second = Box::pin(pool.borrow());
        assert!(futures::poll!(&mut second).is_pending());
        drop(first);
        drop(second);
        let s = pool.stats();
        assert_eq!(
            (s.current, s.idle, s.borrowed, s.waiters),
            (1, 1, 0, 0),
            "{s:?}"
        );
        // The lane is not starved: the next borrow gets the stream at once.
        let start = tokio::time::Instant::now();
        let third = pool.borrow().await.expect("the stream is back");
        assert_eq!(start.elapsed(), Duration::ZERO);
        drop(third);
    }

    #[tokio::test(start_paused = true)]
    async fn init_opens_init_size_streams() {
        let pool = pool_with(FakeOpener::default(), 10, 100);
        pool.init();
        settle().await;
        let s = pool.stats();
        assert_eq!((s.current, s.idle, s.borrowed, s.opening), (10, 10, 0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn pool_of_10_and_20_grows_to_serve_11_borrows_without_returns() {
        let pool = pool_with(FakeOpener::default(), 10, 20);
        pool.init();
        settle().await;
        let mut held = Vec::new();
        for _ in 0..11 {
            held.push(pool.borrow().await.expect("borrow"));
        }
        settle().await;
        let s = pool.stats();
        assert_eq!(s.borrowed, 11);
        assert!(s.current > 10 && s.current <= 20, "{s:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn borrowing_20_succeeds_and_the_21st_times_out_with_a_typed_error() {
        let opener = FakeOpener::default();
        let pool = pool_with(opener.clone(), 10, 20);
        pool.init();
        let mut held = Vec::new();
        for _ in 0..20 {
            held.push(pool.borrow().await.expect("borrow within cap"));
        }
        let start = tokio::time::Instant::now();
        let err = pool.borrow().await.expect_err("21st borrow must fail");
        assert!(matches!(err, Error::Timeout { after, .. } if after == Duration::from_secs(5)));
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(opener.max_live.load(Ordering::SeqCst), 20);
        assert_eq!(
            pool.stats().waiters,
            0,
            "a timed-out waiter leaves the queue"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn returned_streams_go_to_the_highest_priority_waiter_then_the_oldest() {
        use ProtocolPriority::{High, Low, Normal};
        let pool = pool_with(FakeOpener::default(), 2, 2);
        pool.init();
        settle().await;
        let mut held = vec![
            pool.borrow().await.expect("borrow"),
            pool.borrow().await.expect("borrow"),
        ];
        let served = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        // They queue in this order; each waits until it is surely in line.
        for (name, priority) in [
            ("low 1", Low),
            ("normal", Normal),
            ("high 1", High),
            ("low 2", Low),
            ("high 2", High),
        ] {
            let (pool, served) = (Arc::clone(&pool), Arc::clone(&served));
            waiters.push(tokio::spawn(async move {
                let stream = pool.borrow_with(priority).await.expect("served");
                served.lock().push(name);
                // Hand it on to the next waiter.
                drop(stream);
            }));
            settle().await;
        }
        assert_eq!(pool.stats().waiters, 5);
        held.pop();
        for waiter in waiters {
            waiter.await.expect("waiter");
        }
        assert_eq!(
            *served.lock(),
            ["high 1", "high 2", "normal", "low 1", "low 2"]
        );
        drop(held);
    }

    #[tokio::test(start_paused = true)]
    async fn borrow_and_return_restores_idle_to_10() {
        let pool = pool_with(FakeOpener::default(), 10, 20);
        pool.init();
        settle().await;
        let s = pool.borrow().await.expect("borrow");
        assert_eq!(pool.stats().idle, 9);
        drop(s);
        assert_eq!(pool.stats().idle, 10);
        assert_eq!(pool.stats().current, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_back_while_another_pool_wants_the_budget_is_closed_unless_a_waiter_takes_it()
    {
        let opener = FakeOpener::default();
        let pool = pool_with(opener.clone(), 2, 2);
        pool.init();
        settle().await;
        let first = pool.borrow().await.expect("borrow");
        let second = pool.borrow().await.expect("borrow");
        let waiter = tokio::spawn({
            let pool = Arc::clone(&pool);
            async move { pool.borrow().await }
        });
        settle().await;
        opener.budget_wanted.store(true, Ordering::SeqCst);
        // This pool's own waiter comes first.
        drop(first);
        let third = waiter
            .await
            .expect("task")
            .expect("the waiter got the stream");
        // With no waiter left, the stream is closed to make room elsewhere.
        drop(second);
        let stats = pool.stats();
        assert_eq!((stats.current, stats.borrowed, stats.idle), (1, 1, 0));
        assert_eq!(opener.live.load(Ordering::SeqCst), 1);
        drop(third);
    }

    #[tokio::test(start_paused = true)]
    async fn closing_before_init_makes_borrow_fail_with_pool_closed() {
        let opener = FakeOpener::default();
        let pool = pool_with(opener.clone(), 10, 20);
        pool.close();
        pool.init();
        let err = pool.borrow().await.expect_err("closed pool");
        assert!(matches!(err, Error::PoolClosed { .. }));
        assert!(err.to_string().contains("pool closed"));
        settle().await;
        assert_eq!(opener.opened.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_hundred_tasks_borrowing_a_thousand_times_fill_the_pool_to_its_cap() {
        let opener = FakeOpener::default();
        let pool = pool_with(opener.clone(), 10, 100);
        pool.init();
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let pool = Arc::clone(&pool);
                tokio::spawn(async move {
                    for _ in 0..1000 {
                        let s = pool.borrow().await?;
                        tokio::task::yield_now().await;
                        drop(s);
                    }
                    Ok::<_, Error>(())
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task").expect("no borrow error");
        }
        let s = pool.stats();
        assert_eq!(
            (s.current, s.idle, s.max, s.borrowed),
            (100, 100, 100, 0),
            "{s:?}"
        );
        assert_eq!(opener.max_live.load(Ordering::SeqCst), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn growth_adds_half_of_init_when_idle_falls_to_a_fifth() {
        let pool = pool_with(FakeOpener::default(), 10, 100);
        pool.init();
        settle().await;
        let mut held = Vec::new();
        for _ in 0..7 {
            held.push(pool.borrow().await.expect("borrow"));
        }
        settle().await;
        assert_eq!(pool.stats().current, 10, "idle 3 of 10 is above 20 %");
        held.push(pool.borrow().await.expect("borrow"));
        settle().await;
        let s = pool.stats();
        assert_eq!((s.current, s.idle), (15, 7), "idle 2 of 10 triggers +5");
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_order_when_streams_return() {
        let pool = pool_with(FakeOpener::default(), 2, 2);
        pool.init();
        settle().await;
        let a = pool.borrow().await.expect("a");
        let b = pool.borrow().await.expect("b");
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for i in 0..3 {
            let pool = Arc::clone(&pool);
            let order = Arc::clone(&order);
            waiters.push(tokio::spawn(async move {
                let s = pool.borrow().await.expect("waiter served");
                order.lock().push(i);
                tokio::time::sleep(Duration::from_millis(10)).await;
                drop(s);
            }));
            settle().await; // enqueue in a known order
        }
        assert_eq!(pool.stats().waiters, 3);
        drop(a);
        drop(b);
        for w in waiters {
            w.await.expect("waiter");
        }
        assert_eq!(*order.lock(), vec![0, 1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_dropped_after_a_failed_write_lowers_the_count() {
        let opener = FakeOpener::default();
        let pool = pool_with(opener.clone(), 3, 3);
        pool.init();
        settle().await;
        let mut s = pool.borrow().await.expect("borrow");
        // The write is cut short: its guard goes away unfinished.
        let _ = s.begin_write();
        drop(s);
        let st = pool.stats();
        assert_eq!((st.current, st.idle, st.borrowed), (2, 2, 0));
        assert_eq!(opener.live.load(Ordering::SeqCst), 2);
        // A finished write returns its stream.
        let mut s = pool.borrow().await.expect("borrow");
        s.begin_write().finish();
        drop(s);
        let st = pool.stats();
        assert_eq!((st.current, st.idle, st.borrowed), (2, 2, 0));
        assert_eq!(opener.live.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn closing_a_pool_fails_its_waiters_with_a_typed_error() {
        let pool = pool_with(FakeOpener::default(), 1, 1);
        pool.init();
        settle().await;
        let held = pool.borrow().await.expect("borrow");
        let waiter = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.borrow().await })
        };
        settle().await;
        pool.close();
        let err = waiter.await.expect("task").expect_err("waiter fails");
        assert!(matches!(err, Error::PoolClosed { .. }));
        drop(held);
        assert_eq!(
            pool.stats().current,
            0,
            "a stream returned to a closed pool is dropped"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_waiter_queue_refuses_with_pool_exhausted() {
        let config = PoolConfig {
            init_size: 1,
            max_size: 1,
            max_waiters: 2,
            ..PoolConfig::default()
        };
        let pool = SendStreamPool::new(
            PeerId::random(),
            ConnectionId::new_unchecked(1),
            FakeOpener::default(),
            config,
        );
        pool.init();
        settle().await;
        let _held = pool.borrow().await.expect("borrow");
        let _w: Vec<_> = (0..2)
            .map(|_| {
                let p = Arc::clone(&pool);
                tokio::spawn(async move { p.borrow().await.map(drop) })
            })
            .collect();
        settle().await;
        let err = pool.borrow().await.expect_err("third waiter refused");
        assert!(matches!(err, Error::PoolExhausted { waiters: 2, .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_failure_fails_the_waiter_at_once() {
        let opener = FakeOpener::default();
        opener.fail.store(true, Ordering::SeqCst);
        let pool = pool_with(opener, 0, 4);
        let start = tokio::time::Instant::now();
        let err = pool.borrow().await.expect_err("open fails");
        assert!(matches!(err, Error::StreamOpen { .. }));
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(pool.stats().open_failures, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_streams_the_remote_closed_are_discarded_instead_of_lent() {
        let opener = FakeOpener::default();
        opener.open_dead.store(true, Ordering::SeqCst);
        let pool = pool_with(opener.clone(), 3, 5);
        pool.init();
        settle().await;
        assert_eq!(pool.stats().idle, 3);
        opener.open_dead.store(false, Ordering::SeqCst);
        let mut s = pool
            .borrow()
            .await
            .expect("a fresh stream replaces the dead ones");
        assert!(opener.is_usable(s.stream_mut()));
        let st = pool.stats();
        assert_eq!((st.current, st.idle, st.borrowed), (1, 0, 1), "{st:?}");
        assert_eq!(
            opener.live.load(Ordering::SeqCst),
            1,
            "dead streams were dropped"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn streams_back_from_a_healthy_write_skip_the_probe_until_the_next_check() {
        let opener = FakeOpener::default();
        let pool = pool_with(opener.clone(), 2, 5);
        pool.init();
        settle().await;
        drop(pool.borrow().await.expect("idle stream"));
        assert_eq!(
            opener.probes.load(Ordering::SeqCst),
            1,
            "a new stream is probed"
        );
        drop(pool.borrow().await.expect("the stream just returned"));
        assert_eq!(
            opener.probes.load(Ordering::SeqCst),
            1,
            "a stream back from a healthy write is lent as it is"
        );
        // The remote resets both streams; after the periodic check none is
        // trusted, so both are probed, discarded, and a new one is opened.
        opener
            .reset_before
            .store(opener.opened.load(Ordering::SeqCst), Ordering::SeqCst);
        pool.shrink(tokio::time::Instant::now());
        let mut s = pool.borrow().await.expect("a new stream");
        assert!(opener.is_usable(s.stream_mut()));
        assert_eq!(opener.probes.load(Ordering::SeqCst), 1 + 2 + 1);
        assert_eq!(
            opener.live.load(Ordering::SeqCst),
            1,
            "reset streams dropped"
        );
        let st = pool.stats();
        assert_eq!((st.current, st.idle, st.borrowed), (1, 0, 1), "{st:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_is_served_by_a_stream_opened_on_demand() {
        let opener = FakeOpener {
            delay: Duration::from_millis(50),
            ..FakeOpener::default()
        };
        let pool = pool_with(opener, 0, 4);
        let s = pool.borrow().await.expect("opened on demand");
        drop(s);
        let st = pool.stats();
        assert_eq!((st.current, st.idle), (1, 1));
    }
}
