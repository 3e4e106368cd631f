//! The receive path: the protocol registry and the reader of each inbound stream.
//!
//! Every registered application protocol has a bounded queue ([`Inbox`]). A reader
//! task per inbound stream decodes frames and pushes each into the queue of its
//! protocol; when the queue is full the reader waits, so the stream stops being read
//! and flow control slows the sender down: messages are never dropped for lack of
//! room. A frame for an unregistered protocol is counted, reported and skipped. A
//! frame that breaks the wire format resets its stream only.
//!
//! Room is counted in bytes too: a message goes into its inbox only while the
//! inbox's payloads stay within `inbox_byte_budget` and those of all inboxes within
//! `host_inbox_byte_budget` (an empty inbox takes any message, which is never
//! larger than `max_frame_size`, itself within the budget); a reader whose message
//! does not fit waits like one facing a full queue. A large frame (more than the
//! reader's 4 KiB buffer) claims its room before its payload is read
//! ([`InboxMeter::reserve`]): until the budgets have room for it, its bytes stay
//! with the sender, held back by the stream's flow control. So beyond its budget a
//! protocol holds at most one small frame per stream carrying it (checked when
//! decoded, so two readers may both take the last room), and frames waiting for a
//! place in a queue full by count (`handler_queue_len`). Only messages in an inbox,
//! and room claimed for one, count against the host-wide budget, so readers
//! waiting on one protocol cannot use up the room of the others.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicIsize, AtomicU8, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use futures::AsyncWriteExt;
use libp2p::PeerId;
use liquid_p2p_core::{
    Error, Event, FrameError, FrameReader, FrameStep, MAX_PROTOCOL_LEN, Message, ProtocolPriority,
    ReadError, ReceiveTicket,
};
use parking_lot::RwLock;
use tokio::{
    sync::{Notify, mpsc},
    time::Instant,
};

use crate::{shared::Shared, watchdog::MeteredStream};

/// How long a reader may go on delivering frames that arrived before its
/// connection closed.
const DRAIN_AFTER_CLOSE: Duration = Duration::from_secs(2);

/// Checks an application protocol id: 1 to 256 bytes.
pub(crate) fn validate_protocol(protocol: &str) -> Result<(), Error> {
    if protocol.is_empty() || protocol.len() > MAX_PROTOCOL_LEN {
        return Err(Error::InvalidProtocol {
            len: protocol.len(),
        });
    }
    Ok(())
}

/// Local application protocols and the queues their messages go to.
#[derive(Debug)]
pub(crate) struct ProtocolRegistry {
    handlers: RwLock<HashMap<String, Route>>,
    queue_len: usize,
    /// Bytes one protocol may hold.
    byte_budget: usize,
    /// Bytes in all inboxes, and their limit.
    host: Arc<Room>,
}

/// A byte count with a limit, and the readers waiting for it to fall.
#[derive(Debug)]
pub(crate) struct Room {
    limit: usize,
    /// May be negative for a moment: a message can be taken before its reader
    /// has counted it in.
    bytes: AtomicIsize,
    waiting: AtomicUsize,
    freed: Notify,
}

impl Room {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            bytes: AtomicIsize::new(0),
            waiting: AtomicUsize::new(0),
            freed: Notify::new(),
        }
    }

    fn add(&self, bytes: usize) {
        self.bytes.fetch_add(as_isize(bytes), Ordering::SeqCst);
    }

    /// Sequentially consistent with `room_for`'s count of waiters and check, so
    /// a waiter either sees the room or is woken.
    pub(crate) fn remove(&self, bytes: usize) {
        self.bytes.fetch_sub(as_isize(bytes), Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.freed.notify_waiters();
        }
    }

    /// Whether `more` bytes fit beside what is counted now (anything fits an
    /// empty room).
    fn fits(&self, more: usize) -> bool {
        self.fits_beside(self.bytes.load(Ordering::SeqCst), more)
    }

    fn fits_beside(&self, now: isize, more: usize) -> bool {
        now <= 0 || now.saturating_add(as_isize(more)) <= as_isize(self.limit)
    }

    /// Counts `more` bytes in if they fit, in one step: two readers cannot both
    /// take the last room.
    pub(crate) fn try_claim(&self, more: usize) -> bool {
        let mut now = self.bytes.load(Ordering::SeqCst);
        loop {
            if !self.fits_beside(now, more) {
                return false;
            }
            let claimed = now.saturating_add(as_isize(more));
            match self
                .bytes
                .compare_exchange_weak(now, claimed, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return true,
                Err(actual) => now = actual,
            }
        }
    }
}

/// One reader counted among a room's waiters while this lives.
struct Waiting<'a>(&'a Room);

impl<'a> Waiting<'a> {
    fn on(room: &'a Room) -> Self {
        room.waiting.fetch_add(1, Ordering::SeqCst);
        Self(room)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

fn as_isize(n: usize) -> isize {
    isize::try_from(n).unwrap_or(isize::MAX)
}

/// Where the messages of one protocol go: its shared name, its queue and the
/// queue's counters.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    name: Arc<str>,
    queue: mpsc::Sender<Message>,
    meter: Arc<InboxMeter>,
}

/// Counters and byte budget of one registered protocol's inbox (see
/// [`InboxStats`] and the module docs), and the protocol's send priority.
#[derive(Debug)]
pub(crate) struct InboxMeter {
    /// [`ProtocolPriority::index`] of the protocol's send priority.
    priority: AtomicU8,
    received_messages: AtomicU64,
    received_bytes: AtomicU64,
    /// Messages held for the protocol: in the inbox, or decoded and waiting.
    queued_messages: AtomicUsize,
    /// Their bytes.
    held_bytes: AtomicUsize,
    /// Bytes in the inbox, within the protocol's budget.
    inbox: Room,
    /// Bytes in all inboxes.
    host: Arc<Room>,
    /// Whether `members` is set: checked first, so an open protocol takes no
    /// lock per frame.
    restricted: AtomicBool,
    /// With `Some`, the only peers whose frames are taken.
    members: RwLock<Option<Arc<HashSet<PeerId>>>>,
    /// Frames dropped because their sender is not a member.
    refused_messages: AtomicU64,
}

impl InboxMeter {
    fn new(byte_budget: usize, host: Arc<Room>, priority: ProtocolPriority) -> Self {
        Self {
            restricted: AtomicBool::new(false),
            members: RwLock::new(None),
            refused_messages: AtomicU64::new(0),
            priority: AtomicU8::new(priority.index() as u8),
            received_messages: AtomicU64::new(0),
            received_bytes: AtomicU64::new(0),
            queued_messages: AtomicUsize::new(0),
            held_bytes: AtomicUsize::new(0),
            inbox: Room::new(byte_budget),
            host,
        }
    }

    /// A decoded message is on its way into the inbox: held from now on.
    fn arrived(&self, bytes: usize) {
        self.received_messages.fetch_add(1, Ordering::Relaxed);
        self.received_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        self.queued_messages.fetch_add(1, Ordering::Relaxed);
        self.held_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Whether a message of `bytes` may go into the inbox now: with it, the
    /// inbox stays within the protocol's budget and all inboxes within the
    /// host's (an empty inbox takes any message, so waiting readers can never
    /// hold each other up).
    fn fits(&self, bytes: usize) -> bool {
        self.inbox.fits(bytes) && self.host.fits(bytes)
    }

    /// The message went into the inbox.
    fn queued(&self, bytes: usize) {
        self.inbox.add(bytes);
        self.host.add(bytes);
    }

    /// The application took a message from the inbox.
    fn taken(&self, bytes: usize) {
        self.uncount(bytes);
        self.dropped(bytes);
    }

    /// Bytes counted in the budgets (queued or reserved) are no longer.
    fn uncount(&self, bytes: usize) {
        self.inbox.remove(bytes);
        self.host.remove(bytes);
    }

    /// A held message is no longer held: taken (see `taken`), or dropped before
    /// it reached the inbox.
    fn dropped(&self, bytes: usize) {
        self.queued_messages.fetch_sub(1, Ordering::Relaxed);
        self.held_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Claims room for a large frame of `bytes` before its payload is read: at
    /// once if both budgets have room for it (an empty inbox has room for any),
    /// else once they have. The bytes count in both budgets until the
    /// [`Reservation`] is committed (the message then stays counted in its inbox)
    /// or dropped.
    async fn reserve(self: &Arc<Self>, bytes: usize) -> Reservation {
        self.wait_until(|| {
            // Claimed only when both look like they have room: a claim given
            // back wakes the budget's waiters, this one among them, and a
            // reader whose inbox has room but the host none would wake itself
            // for as long as the host stays full.
            if !(self.inbox.fits(bytes) && self.host.fits(bytes)) {
                return false;
            }
            if !self.inbox.try_claim(bytes) {
                return false;
            }
            if !self.host.try_claim(bytes) {
                // Taken meanwhile: wakes this reader once, to look again.
                self.inbox.remove(bytes);
                return false;
            }
            true
        })
        .await;
        Reservation {
            meter: Arc::clone(self),
            bytes,
        }
    }

    /// Waits until a message of `bytes` that has arrived fits (see `fits`).
    async fn room_for(&self, bytes: usize) {
        self.wait_until(|| self.fits(bytes)).await;
    }

    /// Waits until `room` says there is room, asking again whenever either
    /// budget frees some.
    async fn wait_until(&self, mut room: impl FnMut() -> bool) {
        // Usually there is room (a queue full by count, not by bytes): no
        // waiter is registered, and takers then wake nobody.
        if room() {
            return;
        }
        loop {
            let (mine, all) = (self.inbox.freed.notified(), self.host.freed.notified());
            tokio::pin!(mine, all);
            mine.as_mut().enable();
            all.as_mut().enable();
            // Counted as waiting until this wait ends, or is dropped (the reader's
            // grace period ran out).
            let _waiting = (Waiting::on(&self.inbox), Waiting::on(&self.host));
            if room() {
                return;
            }
            tokio::select! {
                _ = &mut mine => {}
                _ = &mut all => {}
            }
        }
    }

    /// Whether frames from `peer` are taken.
    fn admits(&self, peer: &PeerId) -> bool {
        !self.restricted.load(Ordering::Acquire)
            || self
                .members
                .read()
                .as_ref()
                .is_none_or(|members| members.contains(peer))
    }

    fn set_members(&self, members: Option<HashSet<PeerId>>) {
        let mut current = self.members.write();
        self.restricted.store(members.is_some(), Ordering::Release);
        *current = members.map(Arc::new);
    }

    fn members(&self) -> Option<Vec<PeerId>> {
        self.members.read().as_ref().map(|members| {
            let mut list: Vec<_> = members.iter().copied().collect();
            list.sort();
            list
        })
    }

    fn priority(&self) -> ProtocolPriority {
        ProtocolPriority::from_index(usize::from(self.priority.load(Ordering::Relaxed)))
            .unwrap_or_default()
    }

    fn set_priority(&self, priority: ProtocolPriority) {
        self.priority
            .store(priority.index() as u8, Ordering::Relaxed);
    }

    fn stats(&self, protocol: &str) -> InboxStats {
        InboxStats {
            protocol: protocol.to_owned(),
            priority: self.priority(),
            received_messages: self.received_messages.load(Ordering::Relaxed),
            received_bytes: self.received_bytes.load(Ordering::Relaxed),
            queued_messages: self.queued_messages.load(Ordering::Relaxed),
            queued_bytes: self.held_bytes.load(Ordering::Relaxed),
            refused_messages: self.refused_messages.load(Ordering::Relaxed),
        }
    }
}

/// Counters of one registered protocol's [`Inbox`], from
/// [`Control::inbox_stats`](crate::Control::inbox_stats).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InboxStats {
    /// The protocol.
    pub protocol: String,
    /// Messages that arrived for it since it was registered.
    pub received_messages: u64,
    /// Their payload bytes.
    pub received_bytes: u64,
    /// Messages waiting for the application: in the inbox, or decoded and held by
    /// a stream reader until the inbox has room.
    pub queued_messages: usize,
    /// Their payload bytes.
    pub queued_bytes: usize,
    /// The protocol's send priority.
    pub priority: ProtocolPriority,
    /// Frames dropped because their sender is not one of the protocol's
    /// members (see `Control::set_protocol_members`).
    pub refused_messages: u64,
}

impl ProtocolRegistry {
    pub(crate) fn new(queue_len: usize, byte_budget: usize, host_byte_budget: usize) -> Self {
        Self {
            handlers: RwLock::new(HashMap::new()),
            queue_len,
            byte_budget,
            host: Arc::new(Room::new(host_byte_budget)),
        }
    }

    pub(crate) fn register(
        &self,
        protocol: String,
        priority: ProtocolPriority,
    ) -> Result<Inbox, Error> {
        validate_protocol(&protocol)?;
        let mut handlers = self.handlers.write();
        if handlers.contains_key(&protocol) {
            return Err(Error::ProtocolAlreadyRegistered { protocol });
        }
        let (tx, rx) = mpsc::channel(self.queue_len);
        let meter = Arc::new(InboxMeter::new(
            self.byte_budget,
            Arc::clone(&self.host),
            priority,
        ));
        let route = Route {
            name: Arc::from(protocol.as_str()),
            queue: tx,
            meter: Arc::clone(&meter),
        };
        handlers.insert(protocol.clone(), route);
        Ok(Inbox {
            protocol,
            rx,
            taken: Vec::new(),
            meter,
        })
    }

    pub(crate) fn unregister(&self, protocol: &str) -> Result<(), Error> {
        self.handlers
            .write()
            .remove(protocol)
            .map(drop)
            .ok_or_else(|| Error::ProtocolNotRegistered {
                protocol: protocol.to_owned(),
            })
    }

    /// Runs `f` on the meter of a registered `protocol`.
    fn with_meter<R>(&self, protocol: &str, f: impl FnOnce(&InboxMeter) -> R) -> Result<R, Error> {
        let handlers = self.handlers.read();
        let route = handlers
            .get(protocol)
            .ok_or_else(|| Error::ProtocolNotRegistered {
                protocol: protocol.to_owned(),
            })?;
        Ok(f(&route.meter))
    }

    /// Changes a registered protocol's send priority.
    pub(crate) fn set_priority(
        &self,
        protocol: &str,
        priority: ProtocolPriority,
    ) -> Result<(), Error> {
        self.with_meter(protocol, |meter| meter.set_priority(priority))
    }

    /// Makes `members` the only peers whose frames of `protocol` are taken
    /// (`None`: everyone's).
    pub(crate) fn set_members(
        &self,
        protocol: &str,
        members: Option<HashSet<PeerId>>,
    ) -> Result<(), Error> {
        self.with_meter(protocol, |meter| meter.set_members(members))
    }

    /// The members of `protocol`, if it is registered and has any.
    pub(crate) fn members(&self, protocol: &str) -> Option<Vec<PeerId>> {
        self.handlers.read().get(protocol)?.meter.members()
    }

    /// The send priority of `protocol`: `Normal` unless it is registered with
    /// another.
    pub(crate) fn priority(&self, protocol: &str) -> ProtocolPriority {
        self.handlers
            .read()
            .get(protocol)
            .map_or(ProtocolPriority::Normal, |route| route.meter.priority())
    }

    pub(crate) fn route(&self, protocol: &str) -> Option<Route> {
        self.handlers.read().get(protocol).cloned()
    }

    /// The counters of every registered protocol, sorted by protocol.
    pub(crate) fn stats(&self) -> Vec<InboxStats> {
        let mut list: Vec<_> = self
            .handlers
            .read()
            .iter()
            .map(|(protocol, route)| route.meter.stats(protocol))
            .collect();
        list.sort_by(|a, b| a.protocol.cmp(&b.protocol));
        list
    }

    pub(crate) fn protocols(&self) -> Vec<String> {
        let mut list: Vec<_> = self.handlers.read().keys().cloned().collect();
        list.sort();
        list
    }

    pub(crate) fn clear(&self) {
        self.handlers.write().clear();
    }

    /// The bytes in all inboxes, and their limit (topic inboxes count there too).
    pub(crate) fn host_room(&self) -> Arc<Room> {
        Arc::clone(&self.host)
    }
}

/// The messages of one registered protocol, in arrival order per stream.
///
/// Made by [`Control::register_protocol`](crate::Control::register_protocol)
/// or taken with [`Host::take_inbox`](crate::Host::take_inbox).
///
/// ```
/// use liquid_p2p::{Error, Host};
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Error> {
/// let a = Host::builder().listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap()).build().await?;
/// let b = Host::builder().build().await?;
/// let mut inbox = a.control().register_protocol("/chain1/tx/1")?;
/// assert!(inbox.try_recv().is_none(), "nothing queued yet");
///
/// let a_id = b.dial(a.listen_addrs()[0].clone()).await?;
/// b.control().send(a_id, "/chain1/tx/1", b"tx 1").await?;
/// b.control().send(a_id, "/chain1/tx/1", b"tx 2").await?;
///
/// // Wait for one, then take whatever else is already queued.
/// let mut got = vec![inbox.recv().await.expect("registered")];
/// while got.len() < 2 {
///     match inbox.try_recv() {
///         Some(message) => got.push(message),
///         None => got.push(inbox.recv().await.expect("registered")),
///     }
/// }
/// // Separate sends may overtake each other.
/// got.sort_by(|x, y| x.payload.cmp(&y.payload));
/// assert_eq!(&got[0].payload[..], b"tx 1");
/// assert_eq!(got[1].protocol.as_ref(), "/chain1/tx/1");
/// # b.shutdown().await;
/// # a.shutdown().await;
/// # Ok(())
/// # }
/// ```
///
/// The queue holds at most `handler_queue_len` messages; while it is full the
/// streams carrying this protocol are not read (backpressure). `recv` takes up
/// to 32 queued messages at once and hands them out one by one, so up to 32
/// more may wait in the inbox itself; every message counts in the protocol's
/// byte budgets until it is handed out.
///
/// Dropping the inbox does not unregister the protocol: peers still see it as
/// supported, and its messages are dropped, their room in the byte budgets
/// given back: those queued at once, those arriving later reported as
/// [`Event::UnknownProtocol`]. Call `unregister_protocol` when done.
#[derive(Debug)]
pub struct Inbox {
    protocol: String,
    rx: mpsc::Receiver<Message>,
    /// Messages taken from the queue together and not yet handed out, last
    /// first (see [`TAKE_AT_ONCE`]). Still counted as queued.
    taken: Vec<Message>,
    meter: Arc<InboxMeter>,
}

/// How many queued messages [`Inbox::recv`] takes from its queue at once.
///
/// One take frees their places in the queue together: readers held up by a
/// full queue are woken in one go, not one per message, and the queue's lock
/// and counters are touched once per take (with 64 concurrent senders over
/// QUIC, liquid-quic ÷ pre-opened-quic 0.68 → 0.89 in quick runs, see
/// benches/ANALYSIS.md). The messages wait in the inbox, still counted in the
/// byte budgets until handed out.
const TAKE_AT_ONCE: usize = 32;

impl Inbox {
    /// The next message; `None` after the protocol is unregistered (or the host
    /// shut down) and the queue drained.
    ///
    /// Taking a message makes room in the protocol's queue and byte budgets,
    /// so the readers held up by a full inbox go on.
    ///
    /// # Errors
    ///
    /// None: the end of the inbox is `None`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped before it completes, it took no message, and no
    /// message is lost; the next call returns it. It can be used as a branch
    /// of `tokio::select!` in a loop.
    pub async fn recv(&mut self) -> Option<Message> {
        if self.taken.is_empty() {
            // Cancel safe: nothing is taken unless it completes.
            if self.rx.recv_many(&mut self.taken, TAKE_AT_ONCE).await == 0 {
                return None;
            }
            self.taken.reverse();
        }
        self.hand_out()
    }

    /// A message if one is queued.
    pub fn try_recv(&mut self) -> Option<Message> {
        if self.taken.is_empty() {
            self.taken.push(self.rx.try_recv().ok()?);
        }
        self.hand_out()
    }

    /// The next message taken from the queue, no longer counted.
    fn hand_out(&mut self) -> Option<Message> {
        let message = self.taken.pop()?;
        self.meter.taken(message.payload.len());
        Some(message)
    }

    /// The protocol this inbox receives.
    pub fn protocol(&self) -> &str {
        &self.protocol
    }
}

impl Drop for Inbox {
    /// Messages nobody will read give their room back, those taken and those
    /// still queued; readers that then find the queue closed report theirs as
    /// for an unregistered protocol.
    fn drop(&mut self) {
        self.rx.close();
        while self.hand_out().is_some() || self.try_recv().is_some() {}
    }
}

/// Reads one inbound stream until it ends, breaks the wire format, or its
/// connection closes.
///
/// One of these runs per inbound stream, most of them idle, so its state is kept
/// small: the reader's state lives once, boxed, in a [`StreamReader`] (an async
/// fn keeps its arguments beside the locals moved out of them, so the state is
/// built before the future and moved in as a pointer), and the rare paths (a full
/// inbox, draining after the connection closed) are boxed, allocated only when
/// taken.
pub(crate) fn read_stream(
    shared: Arc<Shared>,
    stream: MeteredStream,
    ticket: ReceiveTicket,
) -> impl Future<Output = ()> + Send + 'static {
    let reader = FrameReader::new(
        stream,
        shared.config.max_frame_size,
        shared.config.frame_read_timeout,
    );
    let mut state = Box::new(StreamReader {
        shared,
        ticket,
        reader,
        routes: RouteCache::default(),
    });
    async move { state.run().await }
}

/// The state of one inbound stream's reader.
struct StreamReader {
    shared: Arc<Shared>,
    ticket: ReceiveTicket,
    reader: FrameReader<MeteredStream>,
    routes: RouteCache,
}

/// What to do after one read.
enum Step {
    /// The frame is in its inbox, or was skipped as unknown: read the next.
    Next,
    /// Its inbox is full: wait for room (backpressure). Boxed: rare, and it
    /// would make every reader's state larger.
    Full(Box<(Route, Message)>),
    /// The stream is done; close it first if it ended cleanly.
    End { close: bool },
}

type Next = Result<Option<(Result<Route, String>, Bytes)>, ReadError>;

impl StreamReader {
    async fn run(&mut self) {
        // Registered once for the stream's life: a wait made anew for each frame
        // would take the connection token's lock twice per message, a lock every
        // reader of the connection shares.
        let closed = self.ticket.cancelled().clone().cancelled_owned();
        tokio::pin!(closed);
        // Room claimed for the large frame being read.
        let mut reserved = None;
        loop {
            let next = tokio::select! {
                biased;
                next = self
                    .reader
                    .next_step(|p| self.routes.route(&self.shared.registry, p)) => next,
                _ = &mut closed => {
                    // Frames that already arrived (the stream yields them, then
                    // its end) are still delivered; the grace period only bounds a
                    // reader stuck on a full inbox.
                    drop(reserved.take());
                    Box::pin(self.drain()).await;
                    return;
                }
            };
            let next = match next {
                // A large frame's payload is read only once its protocol's
                // budgets have room for it: until then it stays with the sender
                // (flow control), and the bytes held per protocol stay within
                // its budget.
                Ok(Some(FrameStep::Large {
                    route: Ok(route),
                    len,
                })) => {
                    tokio::select! {
                        biased;
                        claimed = route.meter.reserve(len) => reserved = Some(claimed),
                        _ = &mut closed => {
                            Box::pin(self.drain()).await;
                            return;
                        }
                    }
                    continue;
                }
                // Unregistered: read, then skipped and reported.
                Ok(Some(FrameStep::Large { route: Err(_), .. })) => continue,
                Ok(Some(FrameStep::Frame(route, payload))) => Ok(Some((route, payload))),
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            };
            match self.step(next, reserved.take()) {
                Step::Next => {}
                Step::Full(full) => {
                    let (route, message) = *full;
                    if !Box::pin(self.wait_for_room(route, message)).await {
                        return;
                    }
                }
                Step::End { close } => {
                    if close {
                        let _ = self.reader.get_mut().close().await;
                    }
                    return;
                }
            }
        }
    }

    /// Waits for room in a full inbox (messages and bytes); `false` if the
    /// connection closed meanwhile (what was left has then been drained).
    async fn wait_for_room(&mut self, route: Route, message: Message) -> bool {
        // Counted as held while waiting; uncounted if the wait is cut short (the
        // grace period ends, or the reader is dropped).
        let len = message.payload.len();
        let held = Held {
            meter: &route.meter,
            len,
        };
        let queue = queue_when_room(&route, message);
        tokio::pin!(queue);
        tokio::select! {
            sent = &mut queue => {
                std::mem::forget(held);
                delivered(&self.shared, &route, len, sent);
                return true;
            }
            _ = self.ticket.cancelled().cancelled() => {}
        }
        // The message arrived before the close: it still goes in, within the same
        // grace period as the rest of the stream.
        let deadline = Instant::now() + DRAIN_AFTER_CLOSE;
        if let Ok(sent) = tokio::time::timeout_at(deadline, queue).await {
            std::mem::forget(held);
            delivered(&self.shared, &route, len, sent);
            self.drain_until(deadline).await;
        }
        false
    }

    /// Delivers what is left on a stream whose connection closed, for at most
    /// `DRAIN_AFTER_CLOSE`.
    async fn drain(&mut self) {
        self.drain_until(Instant::now() + DRAIN_AFTER_CLOSE).await;
    }

    async fn drain_until(&mut self, deadline: Instant) {
        let drained = async {
            loop {
                let next = self
                    .reader
                    .next_routed(|p| self.routes.route(&self.shared.registry, p))
                    .await;
                match self.step(next, None) {
                    Step::Next => {}
                    Step::Full(full) => {
                        let (route, message) = *full;
                        let len = message.payload.len();
                        let held = Held {
                            meter: &route.meter,
                            len,
                        };
                        let sent = queue_when_room(&route, message).await;
                        std::mem::forget(held);
                        delivered(&self.shared, &route, len, sent);
                    }
                    Step::End { close } => {
                        if close {
                            let _ = self.reader.get_mut().close().await;
                        }
                        return;
                    }
                }
            }
        };
        let _ = tokio::time::timeout_at(deadline, drained).await;
    }

    /// Queues the message of one read if its inbox has room (or `reserved` holds
    /// it); reports errors.
    fn step(&self, next: Next, reserved: Option<Reservation>) -> Step {
        let (peer, connection) = (self.ticket.peer(), self.ticket.connection());
        let (route, payload) = match next {
            Ok(Some(frame)) => frame,
            Ok(None) => return Step::End { close: true },
            // The sender ended or reset the stream inside a frame: it gave that
            // message up (a write that found no room for `send_timeout`, or a
            // cancelled one). Not a breach of the wire format.
            Err(ReadError::Frame(FrameError::Truncated)) => {
                tracing::debug!(%peer, %connection, "stream ended inside a frame; the frame is dropped");
                return Step::End { close: false };
            }
            Err(ReadError::Frame(error)) => {
                tracing::debug!(%peer, %connection, %error, "malformed frame; resetting stream");
                self.shared.events.emit(Event::ProtocolError {
                    peer,
                    connection,
                    error,
                });
                // Dropping the stream without closing it resets it.
                return Step::End { close: false };
            }
            Err(ReadError::Io(error)) => {
                tracing::trace!(%peer, %error, "inbound stream ended");
                return Step::End { close: false };
            }
        };
        let route = match route {
            Ok(route) => route,
            Err(unknown) => {
                report_unknown(&self.shared, peer, unknown);
                return Step::Next;
            }
        };
        if !route.meter.admits(&peer) {
            // Any room claimed for it is given back as `reserved` drops.
            report_not_member(&self.shared, &route, peer);
            return Step::Next;
        }
        let message = Message::new(peer, connection, Arc::clone(&route.name), payload);
        let len = message.payload.len();
        route.meter.arrived(len);
        // Counted already if the room was claimed before the payload was read.
        let counted = reserved.is_some_and(|r| r.commit(&route.meter, len));
        if !counted && !route.meter.fits(len) {
            return Step::Full(Box::new((route, message)));
        }
        match route.queue.try_send(message) {
            Ok(()) => {
                if !counted {
                    route.meter.queued(len);
                }
                Step::Next
            }
            // No place in the queue (it holds `handler_queue_len` messages): wait
            // like any full inbox, counted afresh when it goes in.
            Err(mpsc::error::TrySendError::Full(message)) => {
                if counted {
                    route.meter.uncount(len);
                }
                Step::Full(Box::new((route, message)))
            }
            Err(mpsc::error::TrySendError::Closed(message)) => {
                if counted {
                    route.meter.uncount(len);
                }
                delivered(
                    &self.shared,
                    &route,
                    len,
                    Err(mpsc::error::SendError(message)),
                );
                Step::Next
            }
        }
    }
}

/// Waits until `message` fits its inbox's byte budgets, then for a place in the
/// queue.
async fn queue_when_room(
    route: &Route,
    message: Message,
) -> Result<(), mpsc::error::SendError<Message>> {
    route.meter.room_for(message.payload.len()).await;
    route.queue.send(message).await
}

/// Counts a held message of `len` bytes into its inbox, or, when its protocol was
/// unregistered while it waited (nobody will read it), out of the counters, and
/// reports it.
fn delivered(
    shared: &Shared,
    route: &Route,
    len: usize,
    sent: Result<(), mpsc::error::SendError<Message>>,
) {
    match sent {
        Ok(()) => route.meter.queued(len),
        Err(mpsc::error::SendError(message)) => {
            route.meter.dropped(len);
            report_unknown(shared, message.peer, message.protocol.to_string());
        }
    }
}

/// Takes a held message out of its inbox's counters if the wait to queue it is
/// cut short (the grace period ends, or the reader is dropped): forgotten once
/// the wait has finished.
struct Held<'a> {
    meter: &'a InboxMeter,
    len: usize,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.meter.dropped(self.len);
    }
}

/// Room claimed in a protocol's budgets for a large frame whose payload is being
/// read ([`InboxMeter::reserve`]); given back when dropped.
struct Reservation {
    meter: Arc<InboxMeter>,
    bytes: usize,
}

impl Reservation {
    /// The frame arrived with a payload of `len` bytes for the inbox of `meter`:
    /// its room becomes the message's (`true`, nothing more to count), unless
    /// the payload outgrew it (decompressed) or the protocol was registered anew
    /// meanwhile (`false`, the room is given back).
    fn commit(mut self, meter: &Arc<InboxMeter>, len: usize) -> bool {
        if len > self.bytes || !Arc::ptr_eq(&self.meter, meter) {
            return false;
        }
        // The message's `len` bytes stay counted; dropping gives back the rest.
        self.bytes -= len;
        true
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.meter.uncount(self.bytes);
    }
}

/// The route of the last protocol a stream carried, kept by its reader: a stream
/// usually carries one protocol after another of the same kind, and this spares
/// the registry's lock and hash for each of them. The queue is held weakly, so an
/// unregistered protocol's inbox still ends when its queue drains.
#[derive(Default)]
struct RouteCache {
    last: Option<(Arc<str>, mpsc::WeakSender<Message>, Arc<InboxMeter>)>,
}

impl RouteCache {
    /// The route for `protocol`, or the protocol's name if it is not registered.
    fn route(&mut self, registry: &ProtocolRegistry, protocol: &str) -> Result<Route, String> {
        if let Some((name, queue, meter)) = &self.last
            && **name == *protocol
            && let Some(queue) = queue.upgrade()
        {
            return Ok(Route {
                name: Arc::clone(name),
                queue,
                meter: Arc::clone(meter),
            });
        }
        match registry.route(protocol) {
            Some(route) => {
                self.last = Some((
                    Arc::clone(&route.name),
                    route.queue.downgrade(),
                    Arc::clone(&route.meter),
                ));
                Ok(route)
            }
            None => Err(protocol.to_owned()),
        }
    }
}

fn report_not_member(shared: &Shared, route: &Route, peer: PeerId) {
    let count = route.meter.refused_messages.fetch_add(1, Ordering::Relaxed) + 1;
    tracing::trace!(%peer, protocol = %route.name, count, "frame from a non-member dropped");
    shared.events.emit(Event::NotMember {
        peer,
        protocol: route.name.to_string(),
        count,
    });
}

fn report_unknown(shared: &Shared, peer: libp2p::PeerId, protocol: String) {
    let count = shared.count_unknown_protocol();
    tracing::trace!(%peer, %protocol, count, "frame for an unregistered protocol skipped");
    shared.events.emit(Event::UnknownProtocol {
        peer,
        protocol,
        count,
    });
}
