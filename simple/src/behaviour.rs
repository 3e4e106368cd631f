//! The liquid `NetworkBehaviour`: pools per connection, stream opening on a chosen
//! connection, inbound accounting and the stall watchdog.
//!
//! Streams leave the swarm once negotiated: pools live in [`Shared`], behind `Arc`
//! and short `parking_lot` locks, and senders write from their own tasks. The swarm
//! is involved only to open a stream on one specific connection: a pool's opener
//! sends a request to this behaviour, which forwards it to that connection's handler
//! with `NotifyHandler::One`.
//!
//! The behaviour can sit in any tokio-driven `Swarm` next to other behaviours; its
//! [`Control`] handle does the sending, registering and querying.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    convert::Infallible,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::future::BoxFuture;
use libp2p::{
    Multiaddr, PeerId, StreamProtocol,
    core::{Endpoint, transport::PortUse},
    swarm::{
        ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, NotifyHandler, THandler,
        THandlerInEvent, THandlerOutEvent, ToSwarm,
        dial_opts::{DialOpts, PeerCondition},
    },
};
use liquid_p2p_core::{
    AdmissionStage, Blacklist, Config, DialFailure, Error, Event, ProtocolBook, ProtocolChange,
    ReceiveStreamManager, Refusal, RefusalReason, RefusalReport, RefusalReporter, RemoteRefusal,
    SendStreamPool, SendStreamPoolManager, StreamOpenFailure, StreamOpener,
};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::{
    admission::{self, Close, Gate},
    control::Control,
    events::EventBus,
    exchange,
    handler::{Handler, HandlerIn, OpenReply},
    protocol::PROTOCOL,
    receiver::{self, ProtocolRegistry},
    transport::HandshakeError,
    watchdog::{ConnectionMeter, MeteredStream},
};

/// Addresses remembered per peer, for extra connections and dials by peer id.
const MAX_ADDRESSES_PER_PEER: usize = 8;
/// Peers whose addresses are remembered.
const MAX_ADDRESS_BOOK_PEERS: usize = 4096;
/// Requests from pools and senders queued for the swarm task.
const REQUEST_QUEUE_LEN: usize = 1024;
/// A received protocol list that changes more protocols than this is reported by
/// `PeerProtocols` alone (its `added` / `removed`), without one event per protocol.
pub const MAX_PROTOCOL_CHANGE_EVENTS: usize = 16;

/// `address` without a trailing `/p2p/<peer id>`.
fn without_peer_suffix(mut address: Multiaddr) -> Multiaddr {
    if matches!(
        address.iter().last(),
        Some(libp2p::multiaddr::Protocol::P2p(_))
    ) {
        address.pop();
    }
    address
}

/// Requests from pools and senders to the behaviour.
#[derive(Debug)]
pub(crate) enum Request {
    Open {
        peer: PeerId,
        connection: ConnectionId,
        protocol: StreamProtocol,
        reply: OpenReply,
    },
    AddConnection {
        peer: PeerId,
    },
    AddAddress {
        peer: PeerId,
        address: Multiaddr,
    },
    /// The blacklist grew: close live connections that match it.
    EnforceBlacklist,
    /// Close one connection (a refused one, once its reason is told).
    CloseConnection {
        peer: PeerId,
        connection: ConnectionId,
    },
}

/// State shared by the behaviour, its handlers, reader tasks and [`Control`].
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) pools: SendStreamPoolManager<SwarmOpener>,
    pub(crate) receive: Arc<ReceiveStreamManager>,
    pub(crate) registry: ProtocolRegistry,
    pub(crate) events: EventBus,
    pub(crate) requests: mpsc::Sender<Request>,
    pub(crate) blacklist: Arc<RwLock<Blacklist>>,
    // Read on every send (fail-fast check), written only when lists arrive.
    pub(crate) book: RwLock<ProtocolBook>,
    /// Peers announced with `PeerConnected` (after their exchange).
    announced: Mutex<HashSet<PeerId>>,
    /// Wakes the host's supervisor when a peer is announced.
    pub(crate) announced_changed: Notify,
    /// Why remotes refused live connections of ours (see refusal.rs).
    remote_refusals: Mutex<HashMap<ConnectionId, RemoteRefusal>>,
    /// Lists received from each peer, applied at most once per
    /// `protocol_push_delay` (the latest waiting one wins).
    inbound_lists: Mutex<HashMap<PeerId, ListThrottle>>,
    /// Inbound exchange streams being served, per peer.
    exchanges_in: Mutex<HashMap<PeerId, usize>>,
    /// Wakes the push task when local protocols change.
    pub(crate) protocols_changed: Arc<Notify>,
    meters: Mutex<HashMap<ConnectionId, Arc<ConnectionMeter>>>,
    shut_down: AtomicBool,
    unknown_protocol_frames: AtomicU64,
    /// Frames being written right now, across all connections.
    writes_in_flight: AtomicUsize,
    writes_done: Notify,
}

/// The protocol lists of one peer waiting to be applied.
struct ListThrottle {
    last_applied: tokio::time::Instant,
    waiting: Option<Vec<String>>,
}

/// A frame being written; shutdown waits for these.
pub(crate) struct WriteInFlight<'a>(&'a Shared);

impl Drop for WriteInFlight<'_> {
    fn drop(&mut self) {
        if self.0.writes_in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.writes_done.notify_waiters();
        }
    }
}

impl Shared {
    pub(crate) fn check_open(&self) -> Result<(), Error> {
        if self.shut_down.load(Ordering::Acquire) {
            return Err(Error::ShutDown);
        }
        Ok(())
    }

    pub(crate) fn write_started(&self) -> WriteInFlight<'_> {
        self.writes_in_flight.fetch_add(1, Ordering::AcqRel);
        WriteInFlight(self)
    }

    /// Waits until no frame is being written, or `grace` has passed.
    pub(crate) async fn writes_finished(&self, grace: Duration) {
        let wait = async {
            loop {
                let done = self.writes_done.notified();
                if self.writes_in_flight.load(Ordering::Acquire) == 0 {
                    return;
                }
                done.await;
            }
        };
        let _ = tokio::time::timeout(grace, wait).await;
    }

    pub(crate) fn count_unknown_protocol(&self) -> u64 {
        self.unknown_protocol_frames.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Stops the send and receive paths: later calls fail with `ShutDown`, pools close
    /// (their waiters fail), handlers' queues close once drained.
    pub(crate) fn shut_down(&self) {
        self.shut_down.store(true, Ordering::Release);
        self.pools.close_all();
        self.registry.clear();
        // Lets the push task see the shutdown and end.
        self.protocols_changed.notify_one();
    }

    /// Opens and negotiates one stream for `protocol` on `connection`.
    pub(crate) async fn open_stream(
        &self,
        peer: PeerId,
        connection: ConnectionId,
        protocol: StreamProtocol,
    ) -> Result<libp2p::Stream, Error> {
        let failed = |reason| Error::StreamOpen { peer, reason };
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request::Open {
                peer,
                connection,
                protocol,
                reply,
            })
            .await
            .map_err(|_| Error::ShutDown)?;
        // The handler bounds negotiation by the same timeout; this one also covers
        // the time the request waits in the queues.
        match tokio::time::timeout(self.config.stream_open_timeout * 2, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(failed(StreamOpenFailure::ConnectionClosed)),
            Err(_) => Err(failed(StreamOpenFailure::Timeout)),
        }
    }

    /// Records a peer's full protocol list and reports what changed: one
    /// `PeerProtocols` with the differences, and one event per changed protocol
    /// when at most [`MAX_PROTOCOL_CHANGE_EVENTS`] changed.
    pub(crate) fn protocols_received(&self, peer: PeerId, protocols: Vec<String>) {
        let changes = {
            // Checked under the book's lock: `peer_gone` removes the pools first and
            // then the entry under this lock, so no entry outlives its peer.
            let mut book = self.book.write();
            if self.pools.best_pool(&peer).is_none() {
                return; // gone meanwhile
            }
            book.update(peer, protocols.iter().cloned())
        };
        let mut sorted = protocols;
        sorted.sort();
        sorted.dedup();
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        for change in &changes {
            match change {
                ProtocolChange::Supported(p) => added.push(p.clone()),
                ProtocolChange::Unsupported(p) => removed.push(p.clone()),
            }
        }
        self.events.emit(Event::PeerProtocols {
            peer,
            protocols: sorted,
            added,
            removed,
        });
        if changes.len() > MAX_PROTOCOL_CHANGE_EVENTS {
            return;
        }
        for change in changes {
            self.events.emit(match change {
                ProtocolChange::Supported(protocol) => Event::ProtocolSupported { peer, protocol },
                ProtocolChange::Unsupported(protocol) => {
                    Event::ProtocolUnsupported { peer, protocol }
                }
            });
        }
    }

    /// A list the peer sent on its own (its first exchange or a push): applied at
    /// once, or, within `protocol_push_delay` of the last one applied, when that
    /// delay is up, replaced by any newer list meanwhile. A peer pushing without
    /// pause thus costs one list's events per delay.
    pub(crate) fn list_pushed(self: &Arc<Self>, peer: PeerId, list: Vec<String>) {
        let delay = self.config.protocol_push_delay;
        let now = tokio::time::Instant::now();
        let due = {
            let mut lists = self.inbound_lists.lock();
            let entry = lists.entry(peer).or_insert(ListThrottle {
                last_applied: now.checked_sub(delay).unwrap_or(now),
                waiting: None,
            });
            let due = entry.last_applied + delay;
            if entry.waiting.is_none() && due <= now {
                entry.last_applied = now;
                None
            } else {
                let scheduled = entry.waiting.is_some();
                entry.waiting = Some(list.clone());
                Some((due, scheduled))
            }
        };
        match due {
            None => self.protocols_received(peer, list),
            Some((_, true)) => {} // the waiting task applies the newest list
            Some((due, false)) => {
                let shared = Arc::clone(self);
                tokio::spawn(async move {
                    tokio::time::sleep_until(due).await;
                    let list = {
                        let mut lists = shared.inbound_lists.lock();
                        lists.get_mut(&peer).and_then(|entry| {
                            entry.last_applied = tokio::time::Instant::now();
                            entry.waiting.take()
                        })
                    };
                    if let Some(list) = list {
                        shared.protocols_received(peer, list);
                    }
                });
            }
        }
    }

    /// Emits `PeerConnected` once per peer, if it is still connected.
    pub(crate) fn announce(&self, peer: PeerId) {
        let mut announced = self.announced.lock();
        if self.pools.best_pool(&peer).is_some() && announced.insert(peer) {
            self.events.emit(Event::PeerConnected { peer });
            self.announced_changed.notify_one();
        }
    }

    /// Whether `peer` was announced (its exchange is done) and is still here.
    pub(crate) fn is_announced(&self, peer: &PeerId) -> bool {
        self.announced.lock().contains(peer)
    }

    /// A remote told why it refuses one of our live connections.
    pub(crate) fn refused_by_remote(
        &self,
        peer: PeerId,
        connection: ConnectionId,
        refusal: RemoteRefusal,
    ) {
        if !self.meters.lock().contains_key(&connection) {
            return; // closed already
        }
        tracing::info!(%peer, %connection, %refusal, "remote refuses the connection");
        self.remote_refusals.lock().insert(connection, refusal);
    }

    /// Asks the behaviour to close one connection.
    pub(crate) async fn close_connection(&self, peer: PeerId, connection: ConnectionId) {
        let _ = self
            .requests
            .send(Request::CloseConnection { peer, connection })
            .await;
    }

    pub(crate) fn announced_peers(&self) -> Vec<PeerId> {
        self.announced.lock().iter().copied().collect()
    }

    /// The peer's last connection closed: forget its protocols; `PeerDisconnected`
    /// if it had been announced.
    fn peer_gone(&self, peer: PeerId) {
        self.book.write().remove(&peer);
        self.inbound_lists.lock().remove(&peer);
        if self.announced.lock().remove(&peer) {
            self.events.emit(Event::PeerDisconnected { peer });
        }
    }

    pub(crate) fn accept_exchange(
        self: &Arc<Self>,
        peer: PeerId,
        connection: ConnectionId,
        stream: libp2p::Stream,
    ) {
        const MAX_EXCHANGES_PER_PEER: usize = 4;
        {
            let mut serving = self.exchanges_in.lock();
            let n = serving.entry(peer).or_insert(0);
            if *n >= MAX_EXCHANGES_PER_PEER {
                drop(serving);
                drop(stream); // reset
                self.events.emit(Event::StreamRefused {
                    peer,
                    connection,
                    limit: MAX_EXCHANGES_PER_PEER,
                    scope: "exchange",
                    refused_total: self.receive.counts(&peer).refused,
                });
                return;
            }
            *n += 1;
        }
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            exchange::respond(&shared, peer, stream).await;
            let mut serving = shared.exchanges_in.lock();
            if let Some(n) = serving.get_mut(&peer) {
                *n -= 1;
                if *n == 0 {
                    serving.remove(&peer);
                }
            }
        });
    }

    pub(crate) fn accept_inbound(
        self: &Arc<Self>,
        peer: PeerId,
        connection: ConnectionId,
        stream: libp2p::Stream,
        meter: Arc<ConnectionMeter>,
    ) {
        match self.receive.accept(peer, connection) {
            Ok(ticket) => {
                let stream = MeteredStream::new(stream, meter);
                tokio::spawn(receiver::read_stream(Arc::clone(self), stream, ticket));
            }
            Err(Error::InboundStreamLimit { scope, limit, .. }) => {
                drop(stream); // reset
                let refused_total = self.receive.counts(&peer).refused;
                tracing::debug!(%peer, %connection, scope, limit, "inbound stream refused");
                self.events.emit(Event::StreamRefused {
                    peer,
                    connection,
                    limit,
                    scope,
                    refused_total,
                });
            }
            Err(other) => tracing::warn!(%peer, error = %other, "inbound stream dropped"),
        }
    }

    fn connection_opened(&self, peer: PeerId, connection: ConnectionId) -> Arc<ConnectionMeter> {
        let meter = ConnectionMeter::new(peer, connection, self.config.stall_timeout);
        self.meters.lock().insert(connection, Arc::clone(&meter));
        self.receive.open_connection(peer, connection);
        meter
    }

    fn connection_established(
        self: &Arc<Self>,
        peer: PeerId,
        connection: ConnectionId,
        others: usize,
        address: &Multiaddr,
    ) {
        let Some(meter) = self.meters.lock().get(&connection).cloned() else {
            return;
        };
        let opener = SwarmOpener {
            peer,
            connection,
            shared: Arc::downgrade(self),
            meter,
        };
        let pool = SendStreamPool::new(peer, connection, opener, self.config.pool.clone());
        if !self.shut_down.load(Ordering::Acquire) {
            pool.init();
            self.pools.add(pool);
        }
        self.events.emit(Event::ConnectionEstablished {
            peer,
            connection,
            connections: others + 1,
            address: address.to_string(),
        });
        if others == 0 {
            // `PeerConnected` follows the exchange, so the peer's protocols are known.
            tokio::spawn(exchange::exchange_with(Arc::clone(self), peer));
        }
    }

    fn connection_gone(&self, peer: Option<PeerId>, connection: ConnectionId) {
        if let Some(meter) = self.meters.lock().remove(&connection) {
            meter.mark_closed();
        }
        self.remote_refusals.lock().remove(&connection);
        if let Some(peer) = peer {
            self.pools.remove(&peer, connection);
            self.receive.close_connection(&peer, connection);
        }
    }

    /// Connections whose message streams moved bytes since the last call. The
    /// host's liveness check counts this like an answered ping (see `liveness.rs`).
    pub(crate) fn connections_with_traffic(&self) -> Vec<ConnectionId> {
        self.meters
            .lock()
            .iter()
            .filter(|(_, meter)| meter.take_traffic())
            .map(|(connection, _)| *connection)
            .collect()
    }

    /// Declares stalled every connection with writes pending and no progress for
    /// `stall_timeout`; returns them so the swarm closes them.
    fn check_stalls(&self) -> Vec<(PeerId, ConnectionId)> {
        let stalled: Vec<_> = self
            .meters
            .lock()
            .values()
            .filter(|m| !m.is_stalled())
            .filter_map(|m| m.stalled_for().map(|idle| (Arc::clone(m), idle)))
            .collect();
        stalled
            .into_iter()
            .map(|(meter, idle_for)| {
                let (peer, connection) = (meter.peer(), meter.connection());
                tracing::warn!(%peer, %connection, ?idle_for, "connection stalled; closing it");
                meter.mark_stalled();
                if let Some(pool) = self.pools.remove(&peer, connection) {
                    pool.close_with(|| meter.close_error());
                }
                // Gone for the receive path now, not when the swarm finishes closing
                // it: a connection that moves no bytes may take long to close, and
                // its inbound streams must not stay counted meanwhile.
                self.connection_gone(Some(peer), connection);
                self.events.emit(Event::ConnectionStalled {
                    peer,
                    connection,
                    idle_for,
                });
                (peer, connection)
            })
            .collect()
    }
}

/// Opens streams of one connection by asking the behaviour (see the module docs).
pub(crate) struct SwarmOpener {
    peer: PeerId,
    connection: ConnectionId,
    // Weak: pools live inside `Shared`; a strong reference would be a cycle.
    shared: std::sync::Weak<Shared>,
    meter: Arc<ConnectionMeter>,
}

impl StreamOpener for SwarmOpener {
    type Stream = MeteredStream;

    fn open(&self) -> BoxFuture<'static, Result<MeteredStream, Error>> {
        let (peer, connection) = (self.peer, self.connection);
        let meter = Arc::clone(&self.meter);
        let shared = self.shared.clone();
        Box::pin(async move {
            let shared = shared.upgrade().ok_or(Error::ShutDown)?;
            let stream = shared.open_stream(peer, connection, PROTOCOL).await?;
            Ok(MeteredStream::new(stream, meter))
        })
    }

    fn is_usable(&self, stream: &mut MeteredStream) -> bool {
        stream.is_open()
    }
}

/// The liquid network behaviour. Create it with [`Behaviour::new`], put it in a
/// tokio `Swarm`, and use the returned [`Control`].
pub struct Behaviour {
    shared: Arc<Shared>,
    requests: mpsc::Receiver<Request>,
    actions: VecDeque<ToSwarm<Infallible, HandlerIn>>,
    watchdog: Option<tokio::time::Interval>,
    /// Periodic check that lets pools give back streams after a burst.
    shrink_check: Option<tokio::time::Interval>,
    addresses: HashMap<PeerId, Vec<Multiaddr>>,
    adding_connection: HashSet<PeerId>,
    gate: Gate,
    /// Inbound connections refused after their handshake, kept only to tell the
    /// remote why (refusal.rs); no pool, no events.
    refusing: HashSet<ConnectionId>,
    refusals: RefusalReporter,
    refusal_timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// When a refusal was last logged at `warn` (at most once per report window).
    last_refusal_warning: Option<tokio::time::Instant>,
}

impl Behaviour {
    /// A behaviour for the host `local_peer`, with `config` (validated), and the
    /// handle that drives it.
    ///
    /// Must be called inside a tokio runtime: the behaviour spawns its tasks there.
    pub fn new(local_peer: PeerId, config: Config) -> Result<(Self, Control), Error> {
        config.validate()?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::InvalidConfig {
                reason: "the behaviour must be created inside a tokio runtime".into(),
            });
        }
        let (tx, rx) = mpsc::channel(REQUEST_QUEUE_LEN);
        let blacklist = Arc::new(RwLock::new(Blacklist::new(config.max_blacklist_entries)));
        let mut gate = Gate::new(&config, Arc::clone(&blacklist));
        gate.set_local_peer(local_peer);
        let shared = Arc::new(Shared {
            pools: SendStreamPoolManager::new(config.max_connections_per_peer),
            receive: ReceiveStreamManager::new(
                config.inbound_streams_per_peer(),
                config.inbound_streams_per_connection(),
            ),
            registry: ProtocolRegistry::new(config.handler_queue_len),
            events: EventBus::new(config.event_queue_len),
            requests: tx,
            blacklist,
            book: RwLock::new(ProtocolBook::new()),
            announced: Mutex::new(HashSet::new()),
            announced_changed: Notify::new(),
            remote_refusals: Mutex::new(HashMap::new()),
            inbound_lists: Mutex::new(HashMap::new()),
            exchanges_in: Mutex::new(HashMap::new()),
            protocols_changed: Arc::new(Notify::new()),
            meters: Mutex::new(HashMap::new()),
            shut_down: AtomicBool::new(false),
            unknown_protocol_frames: AtomicU64::new(0),
            writes_in_flight: AtomicUsize::new(0),
            writes_done: Notify::new(),
            config,
        });
        let report_window = shared.config.admission.report_window;
        let behaviour = Self {
            refusing: HashSet::new(),
            refusals: RefusalReporter::new(report_window),
            refusal_timer: None,
            last_refusal_warning: None,
            shared: Arc::clone(&shared),
            requests: rx,
            actions: VecDeque::new(),
            watchdog: None,
            shrink_check: None,
            addresses: HashMap::new(),
            adding_connection: HashSet::new(),
            gate,
        };
        tokio::spawn(exchange::push_loop(
            Arc::downgrade(&shared),
            Arc::clone(&shared.protocols_changed),
        ));
        Ok((behaviour, Control::new(shared)))
    }

    /// Remembers an address of `peer` for dials by peer id and extra connections.
    pub fn add_address(&mut self, peer: PeerId, address: Multiaddr) {
        if !self.addresses.contains_key(&peer) && self.addresses.len() >= MAX_ADDRESS_BOOK_PEERS {
            return;
        }
        // Stored without the `/p2p/<peer>` suffix: the same socket with and without
        // it would otherwise be dialled twice at once.
        let address = without_peer_suffix(address);
        self.gate.address_known(peer, &address);
        let list = self.addresses.entry(peer).or_default();
        if list.contains(&address) {
            return;
        }
        if list.len() >= MAX_ADDRESSES_PER_PEER {
            list.remove(0);
        }
        list.push(address);
    }

    /// Known addresses of `peer`.
    pub fn addresses_of(&self, peer: &PeerId) -> &[Multiaddr] {
        self.addresses
            .get(peer)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Makes `peer` required (high priority: never evicted for others) or not.
    pub fn set_required(&mut self, peer: PeerId, required: bool) {
        let (closes, events) = self.gate.set_required(peer, required);
        if required {
            for address in self.addresses.get(&peer).into_iter().flatten() {
                self.gate.address_known(peer, address);
            }
        }
        self.carry_out(closes, events);
    }

    /// The node is closing every connection to `peer`: they stop counting for
    /// the limits and leave the pools now, so a reconnect (a required peer's
    /// redial) is not refused while they finish closing.
    pub fn closing_peer(&mut self, peer: PeerId) {
        for connection in self.gate.closing(peer) {
            self.shared.connection_gone(Some(peer), connection);
        }
    }

    /// Reports a refusal (aggregated; see `RefusalReporter`).
    fn report(&mut self, refusal: Refusal) {
        let now = tokio::time::Instant::now();
        if let Some(report) = self.refusals.record(refusal, now) {
            self.emit_refusals(vec![report], now);
        }
    }

    fn emit_refusals(&mut self, reports: Vec<RefusalReport>, now: tokio::time::Instant) {
        let Some(first) = reports.first() else {
            return;
        };
        let window = self.shared.config.admission.report_window;
        let total: u64 = reports.iter().map(|r| r.count).sum();
        // One failed handshake alone is routine (seen at every start of a
        // cluster whose nodes dial each other: a dial the remote gave up midway);
        // it is worth a warning when it repeats within the window.
        let routine = total == 1 && first.reason == RefusalReason::HandshakeFailed;
        if !routine
            && self
                .last_refusal_warning
                .is_none_or(|at| now.duration_since(at) >= window)
        {
            self.last_refusal_warning = Some(now);
            tracing::warn!(
                refused = total,
                kinds = reports.len(),
                stage = %first.stage,
                reason = %first.reason,
                address = first.address.as_deref().unwrap_or("-"),
                "connections refused"
            );
        } else {
            tracing::debug!(
                refused = total,
                kinds = reports.len(),
                "connections refused"
            );
        }
        for r in reports {
            self.shared.events.emit(Event::Refused {
                peer: r.peer,
                address: r.address,
                reason: r.reason,
                stage: r.stage,
                count: r.count,
            });
        }
    }

    /// Refusals recorded since the behaviour was made (each connection once).
    pub fn refusal_count(&self) -> u64 {
        self.refusals.total()
    }

    fn carry_out(&mut self, closes: Vec<Close>, events: Vec<Event>) {
        for event in events {
            self.shared.events.emit(event);
        }
        for Close { peer, connection } in closes {
            // Gone for senders now, not when the swarm finishes closing it, so the
            // peer count never shows the victim and the newcomer together.
            self.shared.connection_gone(Some(peer), connection);
            self.actions.push_back(ToSwarm::CloseConnection {
                peer_id: peer,
                connection: libp2p::swarm::CloseConnection::One(connection),
            });
        }
    }

    fn handler(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        dialer_is_local: bool,
        remote: &Multiaddr,
    ) -> Result<Handler, ConnectionDenied> {
        if self.shared.check_open().is_err() {
            self.gate.closed(Some(peer), connection);
            return Err(ConnectionDenied::new(Error::ShutDown));
        }
        match self.gate.admit(peer, connection, dialer_is_local, remote) {
            Ok((closes, events)) => self.carry_out(closes, events),
            Err(refusal) => {
                let error = admission::refusal_error(&refusal);
                let told = RemoteRefusal::for_reason(refusal.reason);
                self.report(*refusal);
                // A peer that dialled us is told why before the connection closes.
                if let (Some(told), false) = (told, dialer_is_local) {
                    self.refusing.insert(connection);
                    return Ok(Handler::refusing(
                        peer,
                        connection,
                        Arc::clone(&self.shared),
                        told,
                    ));
                }
                return Err(ConnectionDenied::new(error));
            }
        }
        let meter = self.shared.connection_opened(peer, connection);
        Ok(Handler::new(
            peer,
            connection,
            Arc::clone(&self.shared),
            meter,
        ))
    }

    fn on_request(&mut self, request: Request) -> Option<ToSwarm<Infallible, HandlerIn>> {
        match request {
            Request::Open {
                peer,
                connection,
                protocol,
                reply,
            } => Some(ToSwarm::NotifyHandler {
                peer_id: peer,
                handler: NotifyHandler::One(connection),
                event: HandlerIn::Open { protocol, reply },
            }),
            Request::AddConnection { peer } => {
                let addresses = self.addresses_of(&peer).to_vec();
                if addresses.is_empty() || !self.adding_connection.insert(peer) {
                    return None;
                }
                tracing::debug!(%peer, "pool busy; dialling one more connection");
                Some(ToSwarm::Dial {
                    opts: DialOpts::peer_id(peer)
                        .condition(PeerCondition::Always)
                        .addresses(addresses)
                        .build(),
                })
            }
            Request::AddAddress { peer, address } => {
                self.add_address(peer, address);
                None
            }
            Request::EnforceBlacklist => {
                let (closes, events) = self.gate.blacklisted_connections();
                self.carry_out(closes, events);
                self.actions.pop_front()
            }
            Request::CloseConnection { peer, connection } => Some(ToSwarm::CloseConnection {
                peer_id: peer,
                connection: libp2p::swarm::CloseConnection::One(connection),
            }),
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection: ConnectionId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.gate
            .check_inbound(connection, remote_addr)
            .map_err(|refusal| {
                let error = admission::refusal_error(&refusal);
                self.report(*refusal);
                ConnectionDenied::new(error)
            })
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.handler(peer, connection, false, remote_addr)
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let handler = self.handler(peer, connection, true, addr)?;
        self.add_address(peer, addr.clone());
        Ok(handler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _connection: ConnectionId,
        peer: Option<PeerId>,
        addresses: &[Multiaddr],
        _effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.gate.check_dial(peer, addresses).map_err(|refusal| {
            let error = admission::refusal_error(&refusal);
            self.report(*refusal);
            ConnectionDenied::new(error)
        })?;
        let Some(peer) = peer else {
            return Ok(Vec::new());
        };
        let given: Vec<Multiaddr> = addresses.iter().cloned().map(without_peer_suffix).collect();
        Ok(self
            .addresses_of(&peer)
            .iter()
            .filter(|a| !given.contains(a))
            .cloned()
            .collect())
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) if self.refusing.contains(&e.connection_id) => {}
            FromSwarm::ConnectionClosed(e) if self.refusing.remove(&e.connection_id) => {}
            FromSwarm::ConnectionEstablished(e) => {
                self.adding_connection.remove(&e.peer_id);
                self.gate.established(e.peer_id, e.connection_id);
                self.shared.connection_established(
                    e.peer_id,
                    e.connection_id,
                    e.other_established,
                    e.endpoint.get_remote_address(),
                );
            }
            FromSwarm::ConnectionClosed(e) => {
                let refused_by_remote = self.shared.remote_refusals.lock().remove(&e.connection_id);
                self.gate.closed(Some(e.peer_id), e.connection_id);
                self.shared
                    .connection_gone(Some(e.peer_id), e.connection_id);
                self.shared.events.emit(Event::ConnectionClosed {
                    peer: e.peer_id,
                    connection: e.connection_id,
                    remaining: e.remaining_established,
                });
                if e.remaining_established == 0 {
                    // A connection of ours that ended before its exchange: the
                    // remote refused it, or it was lost at once. Reported as a
                    // failed dial, never as a peer that came and went.
                    if e.endpoint.is_dialer() && !self.shared.is_announced(&e.peer_id) {
                        let cause = refused_by_remote.map_or(
                            DialFailure::ClosedBeforeExchange,
                            DialFailure::RefusedByRemote,
                        );
                        self.shared.events.emit(Event::DialFailed {
                            peer: Some(e.peer_id),
                            reason: cause.to_string(),
                            cause,
                        });
                    }
                    self.shared.peer_gone(e.peer_id);
                }
            }
            FromSwarm::DialFailure(e) => {
                if let Some(peer) = e.peer_id {
                    self.adding_connection.remove(&peer);
                }
                self.gate.closed(e.peer_id, e.connection_id);
                self.shared.connection_gone(e.peer_id, e.connection_id);
            }
            FromSwarm::ListenFailure(e) => {
                // A refusing handler whose connection another behaviour denied.
                self.refusing.remove(&e.connection_id);
                self.gate.closed(e.peer_id, e.connection_id);
                self.shared.connection_gone(e.peer_id, e.connection_id);
                if let libp2p::swarm::ListenError::Transport(error) = e.error {
                    tracing::debug!(?error, "inbound handshake failed");
                    let reason = match HandshakeError::find(error) {
                        Some(HandshakeError::Timeout { after }) => {
                            RefusalReason::HandshakeTimeout { after }
                        }
                        Some(HandshakeError::TooLarge { limit }) => {
                            RefusalReason::HandshakeTooLarge { limit }
                        }
                        _ => RefusalReason::HandshakeFailed,
                    };
                    self.report(Refusal {
                        stage: AdmissionStage::Handshake,
                        reason,
                        peer: None,
                        ip: admission::ip_of(e.send_back_addr),
                        address: Some(e.send_back_addr.to_string()),
                    });
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        // Progress is sampled by this check, so a stall is declared between
        // `stall_timeout` and `stall_timeout` + two periods after the last byte.
        let period = (self.shared.config.stall_timeout / 8)
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
        let watchdog = self.watchdog.get_or_insert_with(|| {
            let mut i = tokio::time::interval(period);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        while watchdog.poll_tick(cx).is_ready() {
            for (peer, connection) in self.shared.check_stalls() {
                self.actions.push_back(ToSwarm::CloseConnection {
                    peer_id: peer,
                    connection: libp2p::swarm::CloseConnection::One(connection),
                });
            }
        }
        let shrink_after = self.shared.config.pool.shrink_after;
        let shrink_check = self.shrink_check.get_or_insert_with(|| {
            let period =
                (shrink_after / 4).clamp(Duration::from_millis(50), Duration::from_secs(15));
            let mut i = tokio::time::interval(period);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        while shrink_check.poll_tick(cx).is_ready() {
            self.shared.pools.shrink_idle(tokio::time::Instant::now());
        }
        // Closing reports of refusal windows.
        loop {
            if self.refusal_timer.is_none() {
                match self.refusals.next_wakeup() {
                    Some(at) => self.refusal_timer = Some(Box::pin(tokio::time::sleep_until(at))),
                    None => break,
                }
            }
            let Some(timer) = self.refusal_timer.as_mut() else {
                break;
            };
            if timer.as_mut().poll(cx).is_pending() {
                break;
            }
            self.refusal_timer = None;
            let now = tokio::time::Instant::now();
            let reports = self.refusals.poll(now);
            self.emit_refusals(reports, now);
        }
        if let Some(action) = self.actions.pop_front() {
            return Poll::Ready(action);
        }
        while let Poll::Ready(Some(request)) = self.requests.poll_recv(cx) {
            if let Some(action) = self.on_request(request) {
                return Poll::Ready(action);
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_stalled_connection_releases_its_inbound_streams_at_once() {
        let (behaviour, _control) =
            Behaviour::new(PeerId::random(), Config::default()).expect("behaviour");
        let shared = &behaviour.shared;
        let (peer, connection) = (PeerId::random(), ConnectionId::new_unchecked(1));
        let meter = shared.connection_opened(peer, connection);
        let ticket = shared
            .receive
            .accept(peer, connection)
            .expect("inbound stream accepted");
        let _write = meter.write_started();
        assert!(shared.check_stalls().is_empty());
        tokio::time::advance(shared.config.stall_timeout).await;
        assert_eq!(shared.check_stalls(), vec![(peer, connection)]);
        // The swarm has not reported the connection closed (and, if it moves no
        // bytes, may take long to): its streams are released already.
        assert_eq!(shared.receive.total(), 0);
        assert!(ticket.cancelled().is_cancelled());
        assert!(shared.check_stalls().is_empty(), "declared once");
    }
}
