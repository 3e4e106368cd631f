//! State shared by the behaviour, its connection handlers, the reader and
//! exchange tasks and [`Control`](crate::Control), by responsibility:
//! - sending: the pools of every connection (`pools`);
//! - receiving: the inbound-stream caps (`receive`) and the registered
//!   protocols' inboxes (`registry`);
//! - peers' protocols: the protocol book, who was announced, the lists waiting
//!   to be applied and the exchanges being served (this module);
//! - the connections' meters and remote refusals ([`connections`]);
//! - the behaviour's life: shutdown, spawned tasks, writes in flight
//!   ([`lifecycle`]);
//! - reporting: the event bus (`events`), and requests to the behaviour
//!   (`requests`).
//!
//! Which connections exist, and in what state, is the behaviour's own record
//! (behaviour.rs, `Conn`); these tables follow it through `connection_opened`,
//! `connection_established` and `connection_gone`.
//!
//! Locks: short `parking_lot` locks, never held across an `.await`. Two are held
//! while another is taken: `book` (write) then the pool manager's, in
//! `protocols_received`; `announced` then the pool manager's and the event
//! queue's, in `announce`. The pool manager, the event queue and the connection
//! table call nothing while locked, so nothing takes these the other way round.

mod budget;
mod connections;
mod lifecycle;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::future::BoxFuture;
use libp2p::{Multiaddr, PeerId, StreamProtocol, swarm::ConnectionId};
use liquid_p2p_core::{
    AllowList, Blacklist, Config, Error, Event, PeerLimits, ProtocolBook, ProtocolChange,
    ProtocolPriority, ReceiveStreamManager, RemoteRefusal, SendStreamPool, SendStreamPoolManager,
    StreamOpenFailure, StreamOpener, StreamScope,
};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::{
    broadcast::BroadcastHandle,
    discovery::DiscoveryHandle,
    events::EventBus,
    exchange,
    handler::OpenReply,
    protocol::PROTOCOL,
    receiver::{self, ProtocolRegistry},
    watchdog::{ConnectionMeter, MeteredStream},
};

pub(crate) use budget::Permit;
use budget::StreamBudget;
pub(crate) use connections::ConnectionTable;
pub(crate) use lifecycle::Lifecycle;

/// A received protocol list that changes more protocols than this is reported by
/// `PeerProtocols` alone (its `added` / `removed`), without one event per protocol.
pub const MAX_PROTOCOL_CHANGE_EVENTS: usize = 16;

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
    /// The blacklist grew or the allow-list shrank: close live connections
    /// they now forbid.
    EnforcePolicy,
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
    pub(crate) allow_list: Arc<RwLock<AllowList>>,
    // Read on every send (fail-fast check), written only when lists arrive.
    pub(crate) book: RwLock<ProtocolBook>,
    /// Peers announced with `PeerConnected` (after their exchange).
    announced: Mutex<HashSet<PeerId>>,
    /// Set when a peer is announced; the behaviour's supervisor takes it.
    pub(crate) announced_changed: AtomicBool,
    /// Lists received from each peer, applied at most once per
    /// `protocol_push_delay` (the latest waiting one wins).
    inbound_lists: Mutex<HashMap<PeerId, ListThrottle>>,
    /// Inbound exchange streams being served, per peer.
    exchanges_in: Mutex<HashMap<PeerId, usize>>,
    /// Wakes the push task when local protocols change.
    pub(crate) protocols_changed: Arc<Notify>,
    /// Meters and remote refusals of the liquid connections.
    pub(crate) connections: ConnectionTable,
    /// Shutdown, spawned tasks, writes in flight.
    pub(crate) lifecycle: Lifecycle,
    unknown_protocol_frames: AtomicU64,
    /// The broadcast behaviour of the swarm, if it has one.
    pub(crate) broadcast: OnceLock<BroadcastHandle>,
    /// The discovery behaviour of the swarm, if it has one.
    pub(crate) discovery: OnceLock<DiscoveryHandle>,
}

/// The protocol lists of one peer waiting to be applied.
struct ListThrottle {
    last_applied: tokio::time::Instant,
    waiting: Option<Vec<String>>,
}

impl Shared {
    pub(crate) fn new(
        config: Config,
        requests: mpsc::Sender<Request>,
        blacklist: Arc<RwLock<Blacklist>>,
        allow_list: Arc<RwLock<AllowList>>,
    ) -> Arc<Self> {
        Arc::new(Shared {
            pools: SendStreamPoolManager::new(config.max_connections_per_peer, &config.pool),
            receive: ReceiveStreamManager::new(
                config.inbound_streams_per_peer(),
                config.inbound_streams_per_connection(),
            ),
            registry: ProtocolRegistry::new(
                config.handler_queue_len,
                config.effective_inbox_byte_budget(),
                config.effective_host_inbox_byte_budget(),
            ),
            events: EventBus::new(config.event_queue_len),
            requests,
            blacklist,
            allow_list,
            book: RwLock::new(ProtocolBook::new()),
            announced: Mutex::new(HashSet::new()),
            announced_changed: AtomicBool::new(false),
            inbound_lists: Mutex::new(HashMap::new()),
            exchanges_in: Mutex::new(HashMap::new()),
            protocols_changed: Arc::new(Notify::new()),
            connections: ConnectionTable::default(),
            lifecycle: Lifecycle::new(),
            unknown_protocol_frames: AtomicU64::new(0),
            broadcast: OnceLock::new(),
            discovery: OnceLock::new(),
            config,
        })
    }

    /// Frames skipped for unknown protocols so far.
    #[cfg(feature = "metrics")]
    pub(crate) fn unknown_protocol_frames(&self) -> u64 {
        self.unknown_protocol_frames.load(Ordering::Relaxed)
    }

    /// The metrics recorder, once the node registered metrics.
    #[cfg(feature = "metrics")]
    pub(crate) fn metrics(&self) -> Option<&crate::metrics::Metrics> {
        self.events.metrics()
    }

    pub(crate) fn count_unknown_protocol(&self) -> u64 {
        self.unknown_protocol_frames.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Stops the send and receive paths: later calls fail with `ShutDown`, pools close
    /// (their waiters fail), handlers' queues close once drained.
    pub(crate) fn shut_down(&self) {
        self.lifecycle.begin_shutdown();
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

    /// Records a peer's full protocol list (and the limits it stated, when the
    /// list is a response to ours) and reports what changed: one
    /// `PeerProtocols` with the differences, and one event per changed protocol
    /// when at most [`MAX_PROTOCOL_CHANGE_EVENTS`] changed.
    pub(crate) fn protocols_received(
        &self,
        peer: PeerId,
        protocols: Vec<String>,
        limits: Option<PeerLimits>,
    ) {
        let changes = {
            // Checked under the book's lock: `peer_gone` removes the pools first and
            // then the entry under this lock, so no entry outlives its peer.
            let mut book = self.book.write();
            if self.pools.best_pool(&peer).is_none() {
                return; // gone meanwhile
            }
            if let Some(limits) = limits {
                book.set_limits(peer, limits);
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
            None => self.protocols_received(peer, list, None),
            Some((_, true)) => {} // the waiting task applies the newest list
            Some((due, false)) => {
                let shared = Arc::clone(self);
                let span = tracing::debug_span!("protocol_list", %peer);
                self.lifecycle.spawn(span, async move {
                    tokio::time::sleep_until(due).await;
                    let list = {
                        let mut lists = shared.inbound_lists.lock();
                        lists.get_mut(&peer).and_then(|entry| {
                            entry.last_applied = tokio::time::Instant::now();
                            entry.waiting.take()
                        })
                    };
                    if let Some(list) = list {
                        shared.protocols_received(peer, list, None);
                    }
                });
            }
        }
    }

    /// Emits `PeerConnected` once per peer, if it is still connected (has a
    /// pool); returns whether it is announced now (by this call or before).
    pub(crate) fn announce(&self, peer: PeerId) -> bool {
        let mut announced = self.announced.lock();
        if self.pools.best_pool(&peer).is_none() {
            return false;
        }
        if announced.insert(peer) {
            self.announced_changed.store(true, Ordering::Release);
            self.events.emit(Event::PeerConnected { peer });
        }
        true
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
        if self.connections.record_refusal(connection, refusal) {
            tracing::info!(%peer, %connection, %refusal, "remote refuses the connection");
        }
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
    pub(crate) fn peer_gone(&self, peer: PeerId) {
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
                    scope: StreamScope::Exchange,
                    refused_total: self.receive.counts(&peer).refused,
                });
                return;
            }
            *n += 1;
        }
        let shared = Arc::clone(self);
        let span =
            tracing::debug_span!(parent: &self.connections.span(peer, connection), "exchange_in");
        self.lifecycle.spawn(span, async move {
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
                let span = tracing::debug_span!(parent: meter.span(), "inbound_stream");
                let stream = MeteredStream::new(stream, meter);
                self.lifecycle.spawn(
                    span,
                    receiver::read_stream(Arc::clone(self), stream, ticket),
                );
            }
            Err(Error::InboundStreamLimit { scope, limit, .. }) => {
                drop(stream); // reset
                let refused_total = self.receive.counts(&peer).refused;
                tracing::debug!(%peer, %connection, %scope, limit, "inbound stream refused");
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

    pub(crate) fn connection_opened(
        &self,
        peer: PeerId,
        connection: ConnectionId,
        remote: &Multiaddr,
    ) -> Arc<ConnectionMeter> {
        let meter = self.connections.open(peer, connection, remote);
        self.receive.open_connection(peer, connection);
        meter
    }

    pub(crate) fn connection_established(
        self: &Arc<Self>,
        peer: PeerId,
        connection: ConnectionId,
        others: usize,
        address: &Multiaddr,
    ) {
        let Some(meter) = self.connections.meter(connection) else {
            return;
        };
        let opener = SwarmOpener {
            peer,
            connection,
            shared: Arc::downgrade(self),
            meter,
            budget: Arc::new(StreamBudget::new(
                self.config.pool.max_size,
                self.config.pool.borrow_timeout,
            )),
        };
        let pool = SendStreamPool::new(peer, connection, opener, self.config.pool.clone());
        if !self.lifecycle.is_shut_down() {
            // `idle_floor` streams now (`init_size` with `open_at_connect`), the
            // rest when the connection is first used.
            pool.start();
            self.pools.add(pool);
        }
        self.events.emit(Event::ConnectionEstablished {
            peer,
            connection,
            connections: others + 1,
            address: address.clone(),
        });
        if others == 0 {
            // `PeerConnected` follows the exchange, so the peer's protocols are known.
            let span = tracing::debug_span!("exchange", %peer);
            self.lifecycle
                .spawn(span, exchange::exchange_with(Arc::clone(self), peer));
        }
    }

    pub(crate) fn connection_gone(&self, peer: Option<PeerId>, connection: ConnectionId) {
        self.connections.close(connection);
        if let Some(peer) = peer {
            self.pools.remove(&peer, connection);
            self.receive.close_connection(&peer, connection);
        }
    }

    /// The muxer failed `connection` because its transport stopped taking bytes
    /// (see `muxer.rs`): writes cut short and waiting borrowers fail with
    /// `ConnectionStalled`, and it is reported. Called before `connection_gone`.
    pub(crate) fn connection_stalled(
        &self,
        peer: PeerId,
        connection: ConnectionId,
        idle_for: Duration,
    ) {
        let Some(meter) = self.connections.meter(connection) else {
            return;
        };
        tracing::warn!(%peer, %connection, ?idle_for, "connection stalled; closed");
        meter.mark_stalled(idle_for);
        self.pools
            .remove_with(&peer, connection, |_| meter.close_error());
        self.events.emit(Event::ConnectionStalled {
            peer,
            connection,
            idle_for,
        });
    }
}

/// Opens streams of one connection by asking the behaviour (see the module docs).
/// The connection's reserve and lanes hold clones; together they open at most
/// `pool.max_size` streams (`budget`).
#[derive(Clone)]
pub(crate) struct SwarmOpener {
    peer: PeerId,
    connection: ConnectionId,
    // Weak: pools live inside `Shared`; a strong reference would be a cycle.
    shared: std::sync::Weak<Shared>,
    meter: Arc<ConnectionMeter>,
    budget: Arc<StreamBudget>,
}

impl StreamOpener for SwarmOpener {
    /// Boxed: a pooled stream is moved through every send's future, which
    /// stays small (and cheap to allocate) when the stream is a pointer.
    type Stream = Box<MeteredStream>;

    fn open(&self) -> BoxFuture<'static, Result<Box<MeteredStream>, Error>> {
        self.open_with(ProtocolPriority::Normal)
    }

    fn open_with(
        &self,
        priority: ProtocolPriority,
    ) -> BoxFuture<'static, Result<Box<MeteredStream>, Error>> {
        let (peer, connection) = (self.peer, self.connection);
        let meter = Arc::clone(&self.meter);
        let shared = self.shared.clone();
        let budget = Arc::clone(&self.budget);
        Box::pin(async move {
            let shared = shared.upgrade().ok_or(Error::ShutDown)?;
            let permit = budget.acquire(&shared, peer, connection, priority).await?;
            let stream = shared.open_stream(peer, connection, PROTOCOL).await?;
            let send_timeout = shared.config.pool.send_timeout;
            Ok(Box::new(MeteredStream::budgeted(
                stream,
                meter,
                permit,
                send_timeout,
            )))
        })
    }

    fn budget_wanted(&self) -> bool {
        self.budget.waiting.load(Ordering::Acquire) > 0
    }

    fn pool_closed(&self) {
        self.budget.closed.cancel();
    }

    fn is_usable(&self, stream: &mut Box<MeteredStream>) -> bool {
        stream.is_open()
    }

    fn spawn(&self, task: BoxFuture<'static, ()>) {
        let (peer, connection) = (self.peer, self.connection);
        match self.shared.upgrade() {
            Some(shared) => {
                let parent = shared.connections.span(peer, connection);
                let span = tracing::debug_span!(parent: &parent, "stream_open");
                shared.lifecycle.spawn(span, task);
            }
            // The behaviour is gone: the open fails at once (ShutDown).
            None => {
                tokio::spawn(task);
            }
        }
    }
}
