//! The liquid `NetworkBehaviour`: the whole product in one behaviour a node can put
//! in its own `Swarm`.
//!
//! It owns, per connection, one record ([`Conn`]): whether the connection is a
//! liquid peer yet, whether the admission policy counted it, its remote address.
//! A liquid connection gets its send pools (a reserve and a lane per protocol),
//! the protocol exchange, liveness checks and, when our muxer reports it stalled,
//! `ConnectionStalled`; the others get nothing (see
//! [`PeerScope`]). Around the connections it runs:
//!
//! - admission (admission.rs): limits, eviction, blacklist, typed refusals;
//! - required peers: the supervisor's redial schedule, dialled with
//!   `ToSwarm::Dial` from timers polled here;
//! - dead-peer detection: libp2p ping, composed into this behaviour's handler,
//!   and the liveness table (liveness.rs);
//! - the address book, fed by dials, required addresses and
//!   `FromSwarm::NewExternalAddrOfPeer` (which identify emits);
//! - events: each is broadcast to [`Control::events`] subscriptions and returned
//!   as `ToSwarm::GenerateEvent` (events.rs).
//!
//! Streams leave the swarm once negotiated: pools live in [`Shared`], behind `Arc`
//! and short `parking_lot` locks, and senders write from their own tasks. The swarm
//! is involved only to open a stream on one specific connection: a pool's opener
//! sends a request to this behaviour, which forwards it to that connection's handler
//! with `NotifyHandler::One`.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    future::Future,
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll, Waker},
    time::Duration,
};

use either::Either;
use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, transport::PortUse},
    multiaddr::Protocol,
    ping,
    swarm::{
        ConnectionDenied, ConnectionHandler, ConnectionHandlerSelect, ConnectionId, DialError,
        FromSwarm, NetworkBehaviour, NotifyHandler, THandler, THandlerInEvent, THandlerOutEvent,
        ToSwarm,
        dial_opts::{DialOpts, PeerCondition},
    },
};
use liquid_p2p_core::{
    AdmissionStage, Blacklist, Config, ConnSupervisor, DialFailure, Error, Event, PeerScope,
    PolicyScope, Refusal, RefusalReason, RefusalReport, RefusalReporter, RemoteRefusal,
    SupervisorAction,
};
use parking_lot::RwLock;
use tokio::{sync::mpsc, time::Instant};

use crate::{
    admission::{self, Close, Gate},
    control::Control,
    exchange,
    handler::{Activation, Handler, HandlerEvent, HandlerIn},
    liveness::Liveness,
    muxer::TransportStalled,
    shared::{Request, Shared},
    transport::HandshakeError,
    watchdog::MeteredStream,
};

/// Addresses remembered per peer, for extra connections and dials by peer id.
const MAX_ADDRESSES_PER_PEER: usize = 8;
/// Peers whose addresses are remembered.
const MAX_ADDRESS_BOOK_PEERS: usize = 4096;
/// Requests from pools and senders queued for the swarm task.
const REQUEST_QUEUE_LEN: usize = 1024;

/// `address` without a trailing `/p2p/<peer id>`.
fn without_peer_suffix(mut address: Multiaddr) -> Multiaddr {
    if address_peer(&address).is_some() {
        address.pop();
    }
    address
}

/// `address` ending in `/p2p/<peer>`.
fn with_peer_suffix(address: &Multiaddr, peer: PeerId) -> Multiaddr {
    without_peer_suffix(address.clone()).with(Protocol::P2p(peer))
}

/// The peer id an address ends with, if any.
pub(crate) fn address_peer(address: &Multiaddr) -> Option<PeerId> {
    match address.iter().last() {
        Some(Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}

/// The peer id at the end of a required peer's address.
pub(crate) fn required_peer_id(address: &Multiaddr) -> Result<PeerId, Error> {
    address_peer(address).ok_or_else(|| Error::MissingPeerId {
        address: address.clone(),
    })
}

/// What kind of failure a libp2p dial error is.
pub(crate) fn dial_failure(error: &DialError) -> DialFailure {
    match error {
        DialError::WrongPeerId { .. } => DialFailure::WrongPeer,
        DialError::Denied { cause } => cause
            .downcast_ref::<Error>()
            .and_then(|e| match e {
                Error::ConnectionRefused { reason } => Some(*reason),
                _ => None,
            })
            .map_or(DialFailure::Denied, DialFailure::RefusedLocally),
        DialError::NoAddresses => DialFailure::NoAddresses,
        DialError::LocalPeerId { .. } => DialFailure::SelfDial,
        DialError::Aborted => DialFailure::Aborted,
        DialError::Transport(_) => DialFailure::Transport,
        // Another dial to the peer was under way, so this one was not made.
        DialError::DialPeerConditionFalse(_) => DialFailure::Aborted,
    }
}

/// What one connection is to this behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    /// Not (yet) known to speak `/liquid/msg/1.0.0`: no pool, nothing opened.
    Dormant,
    /// A liquid peer's connection: pools, exchange, liveness.
    Liquid,
    /// Refused after its handshake: kept only to tell the remote why.
    Refusing,
}

/// The record of one connection.
#[derive(Debug)]
struct Conn {
    peer: PeerId,
    dialer_is_local: bool,
    remote: Multiaddr,
    state: ConnState,
    /// Counted by the admission gate (admitted and tracked there).
    admitted: bool,
}

/// The liquid network behaviour. Create it with [`Behaviour::new`], put it in a
/// tokio `Swarm` (alone or in the node's `#[derive(NetworkBehaviour)]`), and use
/// the returned [`Control`] from any task.
///
/// Its events ([`Event`]) reach the swarm as `ToSwarm::GenerateEvent`. It runs
/// libp2p ping on every connection for dead-peer detection: the node needs no ping
/// behaviour of its own. For addresses learnt from identify, the node adds
/// `libp2p::identify` (its `NewExternalAddrOfPeer` reports reach this behaviour).
///
/// Stream opens, dials, redials and events go through the swarm: keep polling
/// it (`select_next_some` in the node's loop) while [`Control`] is used, or a
/// send that needs a new stream waits for one that is never opened.
///
/// ```
/// use futures::StreamExt;
/// use libp2p::{
///     Swarm, SwarmBuilder, identify,
///     identity::Keypair,
///     swarm::{NetworkBehaviour, SwarmEvent, dial_opts::DialOpts},
/// };
/// use liquid_p2p::{Behaviour, Config, Control, Event, transport};
///
/// #[derive(NetworkBehaviour)]
/// #[behaviour(prelude = "libp2p::swarm::derive_prelude")]
/// struct Node {
///     liquid: Behaviour,
///     identify: identify::Behaviour,
/// }
///
/// fn node() -> Result<(Swarm<Node>, Control), Box<dyn std::error::Error>> {
///     let key = Keypair::generate_ed25519();
///     // Other protocols share this swarm: only peers that speak ours are
///     // liquid peers, and only they count against our limits.
///     let config = Config::default().scoped_to_liquid_peers();
///     // The host's transport, with its handshake guards.
///     let transport = transport::build(&key, &config)?;
///     let (liquid, control) = Behaviour::new(key.public().to_peer_id(), config)?;
///     let identify =
///         identify::Behaviour::new(identify::Config::new("/my-chain/1".into(), key.public()));
///     let swarm = SwarmBuilder::with_existing_identity(key)
///         .with_tokio()
///         .with_other_transport(|_| transport)?
///         .with_behaviour(|_| Node { liquid, identify })?
///         .build();
///     Ok((swarm, control))
/// }
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (mut a, a_control) = node()?;
/// let (mut b, b_control) = node()?;
/// let mut blocks = a_control.register_protocol("/my-chain/blocks/1")?;
/// let a_id = *a.local_peer_id();
/// a.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
/// let address = loop {
///     if let SwarmEvent::NewListenAddr { address, .. } = a.select_next_some().await {
///         break address;
///     }
/// };
///
/// // A dial for liquid: its peer is a liquid peer at once, whatever the scope.
/// let dial = DialOpts::unknown_peer_id().address(address).build();
/// b.behaviour_mut().liquid.dial_is_liquid(dial.connection_id());
/// b.dial(dial)?;
/// // The behaviour's events come out of the swarm, as the derive's variant.
/// loop {
///     tokio::select! {
///         _ = a.select_next_some() => {}
///         event = b.select_next_some() => {
///             if let SwarmEvent::Behaviour(NodeEvent::Liquid(Event::PeerConnected { peer })) = event {
///                 assert_eq!(peer, a_id);
///                 break;
///             }
///         }
///     }
/// }
///
/// // Senders use the Control from any task while the swarms run.
/// let swarms = tokio::spawn(async move {
///     loop {
///         tokio::select! {
///             _ = a.select_next_some() => {}
///             _ = b.select_next_some() => {}
///         }
///     }
/// });
/// b_control.send(a_id, "/my-chain/blocks/1", b"block 1").await?;
/// let block = blocks.recv().await.expect("delivered");
/// assert_eq!(&block.payload[..], b"block 1");
///
/// swarms.abort(); // dropping the swarms closes their connections
/// # let _ = swarms.await;
/// # Ok(())
/// # }
/// ```
pub struct Behaviour {
    local_peer: PeerId,
    shared: Arc<Shared>,
    requests: mpsc::Receiver<Request>,
    actions: VecDeque<ToSwarm<Event, THandlerInEvent<Self>>>,
    /// Woken when a method called outside `poll` queued work.
    waker: Option<Waker>,
    ping: ping::Behaviour,
    /// Periodic check that lets pools give back streams after a burst.
    shrink_check: Option<tokio::time::Interval>,
    /// One record per connection this behaviour gave a handler.
    connections: HashMap<ConnectionId, Conn>,
    /// Dials made for liquid (required peers, pools, `Host::dial`): their
    /// connections are liquid peers from the start.
    liquid_dials: HashSet<ConnectionId>,
    addresses: HashMap<PeerId, Vec<Multiaddr>>,
    adding_connection: HashSet<PeerId>,
    gate: Gate,
    refusals: RefusalReporter,
    refusal_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// When a refusal was last logged at `warn` (at most once per report window).
    last_refusal_warning: Option<Instant>,
    supervisor: ConnSupervisor,
    /// Addresses given for required peers; they never age out of the address book.
    required_addrs: HashMap<PeerId, Vec<Multiaddr>>,
    supervisor_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    next_sweep: Instant,
    liveness: Liveness,
    liveness_check: Option<tokio::time::Interval>,
}

impl Behaviour {
    /// A behaviour for the node `local_peer`, with `config` (validated), and the
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
        let ping = ping::Behaviour::new(
            ping::Config::new()
                .with_interval(config.ping_interval)
                .with_timeout(config.ping_timeout),
        );
        let supervisor = ConnSupervisor::new(config.supervisor.clone());
        let liveness = Liveness::new(config.ping_interval, config.ping_timeout);
        let next_sweep = Instant::now() + config.supervisor.check_interval;
        let report_window = config.admission.report_window;
        let shared = Shared::new(config, tx, blacklist, gate.allow_list());
        let behaviour = Self {
            local_peer,
            shared: Arc::clone(&shared),
            requests: rx,
            actions: VecDeque::new(),
            waker: None,
            ping,
            shrink_check: None,
            connections: HashMap::new(),
            liquid_dials: HashSet::new(),
            addresses: HashMap::new(),
            adding_connection: HashSet::new(),
            gate,
            refusals: RefusalReporter::new(report_window),
            refusal_timer: None,
            last_refusal_warning: None,
            supervisor,
            required_addrs: HashMap::new(),
            supervisor_timer: None,
            next_sweep,
            liveness,
            liveness_check: None,
        };
        shared.lifecycle.spawn(
            tracing::debug_span!("protocol_push_loop"),
            exchange::push_loop(
                Arc::downgrade(&shared),
                Arc::clone(&shared.protocols_changed),
            ),
        );
        Ok((behaviour, Control::new(shared)))
    }

    /// Registers this behaviour's metrics in `registry`, under the prefix
    /// `liquid_` (feature `metrics`; see the README's metrics table): pool
    /// gauges per peer, sends and their latency, receives and inbox depths per
    /// protocol, refusals, evictions, dial failures, stalls and the other
    /// events, gossip topics. Returns false, adding nothing, if they were
    /// registered already.
    ///
    /// A node that builds its own swarm records the swarm's events and bandwidth
    /// with `libp2p::metrics` next to these; [`HostBuilder::metrics`] does both.
    ///
    /// [`HostBuilder::metrics`]: crate::HostBuilder::metrics
    #[cfg(feature = "metrics")]
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) -> bool {
        if self.shared.metrics().is_some() {
            return false;
        }
        let metrics = crate::metrics::register(registry, &self.shared);
        self.shared.events.set_metrics(metrics)
    }

    /// Records the events of the libp2p behaviours inside this one, which never
    /// reach the node's swarm, in the node's `libp2p::metrics::Metrics` (feature
    /// `metrics`): the liveness check's pings (`libp2p_ping_*`), and, when the
    /// node has them, discovery's Kademlia queries (`libp2p_kad_*`) and the
    /// gossip messages of [`Broadcast`](crate::Broadcast)
    /// (`libp2p_gossipsub_messages`). Returns false, changing nothing, if they
    /// were given already. [`HostBuilder::metrics`] calls it.
    ///
    /// [`HostBuilder::metrics`]: crate::HostBuilder::metrics
    #[cfg(feature = "metrics")]
    pub fn record_libp2p_metrics(&self, metrics: Arc<libp2p::metrics::Metrics>) -> bool {
        self.shared.events.set_libp2p_metrics(metrics)
    }

    /// The handle for sending, registering and observing, to pass to other tasks.
    pub fn control(&self) -> Control {
        Control::new(Arc::clone(&self.shared))
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

    /// Makes the peer at `address` (ending in `/p2p/<peer id>`) required: it is
    /// dialled now if not connected, redialled on the supervisor's schedule
    /// whenever it disconnects or a dial fails, and never evicted for others.
    /// Adding more addresses of the same peer is allowed. Returns the peer id.
    pub fn add_required_peer(&mut self, address: Multiaddr) -> Result<PeerId, Error> {
        let peer = required_peer_id(&address)?;
        let (closes, events) = self.gate.set_required(peer, true);
        self.carry_out(closes, events);
        for known in self.addresses.get(&peer).into_iter().flatten() {
            self.gate.address_known(peer, known);
        }
        // Also its IP's claim on the reserved handshake slots.
        self.add_address(peer, address.clone());
        let address = without_peer_suffix(address);
        let list = self.required_addrs.entry(peer).or_default();
        if !list.contains(&address) && list.len() < MAX_ADDRESSES_PER_PEER {
            list.push(address);
        }
        // Connected means confirmed: the exchange with it is done.
        let connected = self.shared.is_announced(&peer);
        let actions = self.supervisor.add(peer, connected, Instant::now());
        self.apply(actions);
        self.wake();
        Ok(peer)
    }

    /// Stops keeping `peer` connected; a pending redial is cancelled at once. The
    /// current connection, if any, stays (and may now be evicted for others).
    /// Returns whether it was required.
    pub fn remove_required_peer(&mut self, peer: &PeerId) -> bool {
        self.required_addrs.remove(peer);
        let (closes, events) = self.gate.set_required(*peer, false);
        self.carry_out(closes, events);
        self.wake();
        self.supervisor.remove(peer)
    }

    /// The required peers.
    pub fn required_peers(&self) -> Vec<PeerId> {
        self.supervisor.required_peers()
    }

    /// Closes every connection to `peer`. They stop counting for the limits and
    /// leave the pools at once, so a reconnect (a required peer's redial) is not
    /// refused while they finish closing.
    pub fn disconnect(&mut self, peer: PeerId) {
        self.closing_peer(peer);
        self.actions.push_back(ToSwarm::CloseConnection {
            peer_id: peer,
            connection: libp2p::swarm::CloseConnection::All,
        });
        self.wake();
    }

    /// The node is closing every connection to `peer` itself (for example with
    /// `Swarm::disconnect_peer_id`): they stop counting for the limits and leave
    /// the pools now. [`disconnect`](Self::disconnect) does this and the close.
    pub fn closing_peer(&mut self, peer: PeerId) {
        for connection in self.gate.closing(peer) {
            self.shared.connection_gone(Some(peer), connection);
        }
    }

    /// The dial options to reach `peer` at every address this behaviour knows
    /// for it (required addresses and the address book).
    pub fn dial_opts(&self, peer: PeerId, condition: PeerCondition) -> DialOpts {
        let required = self.required_addrs.get(&peer).into_iter().flatten();
        DialOpts::peer_id(peer)
            .addresses(required.map(|a| with_peer_suffix(a, peer)).collect())
            .extend_addresses_through_behaviour()
            .condition(condition)
            .build()
    }

    /// The connection of this dial is for liquid: its peer is a liquid peer from
    /// the moment it connects, whatever [`PeerScope`] says. The node calls this
    /// before `Swarm::dial(opts)` with `opts.connection_id()`.
    pub fn dial_is_liquid(&mut self, connection: ConnectionId) {
        self.liquid_dials.insert(connection);
    }

    /// Refusals recorded since the behaviour was made (each connection once).
    pub fn refusal_count(&self) -> u64 {
        self.refusals.total()
    }

    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    fn dial(&mut self, opts: DialOpts) {
        self.liquid_dials.insert(opts.connection_id());
        self.actions.push_back(ToSwarm::Dial { opts });
    }

    /// Reports a refusal (aggregated; see `RefusalReporter`).
    fn report(&mut self, refusal: Refusal) {
        let now = Instant::now();
        if let Some(report) = self.refusals.record(refusal, now) {
            self.emit_refusals(vec![report], now);
        }
    }

    fn emit_refusals(&mut self, reports: Vec<RefusalReport>, now: Instant) {
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
                address = ?first.address,
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

    /// Whether the policy counts this connection now (see [`PolicyScope`]).
    fn admits_at_once(&self, liquid: bool) -> bool {
        liquid || self.shared.config.policy_scope == PolicyScope::AllConnections
    }

    /// Whether a new connection is a liquid peer's from the start.
    fn is_liquid_from_start(&mut self, peer: &PeerId, connection: ConnectionId) -> bool {
        let dialled_for_liquid = self.liquid_dials.remove(&connection);
        self.shared.config.peer_scope == PeerScope::EveryConnection
            || dialled_for_liquid
            || self.supervisor.is_required(peer)
            || self
                .connections
                .values()
                .any(|c| c.peer == *peer && c.state == ConnState::Liquid)
    }

    fn handler(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        dialer_is_local: bool,
        remote: &Multiaddr,
    ) -> Result<Handler, ConnectionDenied> {
        if self.shared.lifecycle.check_open().is_err() {
            self.gate.closed(Some(peer), connection);
            return Err(ConnectionDenied::new(Error::ShutDown));
        }
        let liquid = self.is_liquid_from_start(&peer, connection);
        let admitted = self.admits_at_once(liquid);
        let mut record = Conn {
            peer,
            dialer_is_local,
            remote: remote.clone(),
            state: if liquid {
                ConnState::Liquid
            } else {
                ConnState::Dormant
            },
            admitted,
        };
        if !admitted {
            if !dialer_is_local {
                self.gate.pending_done(connection);
            }
        } else {
            match self.gate.admit(peer, connection, dialer_is_local, remote) {
                Ok((closes, events)) => self.carry_out(closes, events),
                Err(refusal) => {
                    let error = admission::refusal_error(&refusal);
                    let told = RemoteRefusal::for_reason(refusal.reason);
                    self.report(*refusal);
                    // A peer that dialled us is told why before the connection closes.
                    if let (Some(told), false) = (told, dialer_is_local) {
                        record.state = ConnState::Refusing;
                        record.admitted = false;
                        self.connections.insert(connection, record);
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
        }
        let remote = record.remote.clone();
        self.connections.insert(connection, record);
        if liquid {
            let meter = self.shared.connection_opened(peer, connection, &remote);
            Ok(Handler::new(
                peer,
                connection,
                Arc::clone(&self.shared),
                meter,
            ))
        } else {
            Ok(Handler::dormant(peer, connection, Arc::clone(&self.shared)))
        }
    }

    /// Liquid connections of `peer` other than `except`.
    fn liquid_connections(&self, peer: &PeerId, except: ConnectionId) -> usize {
        self.connections
            .iter()
            .filter(|(id, c)| **id != except && c.peer == *peer && c.state == ConnState::Liquid)
            .count()
    }

    /// A liquid connection is up: pool, events, exchange, liveness.
    fn liquid_established(&mut self, peer: PeerId, connection: ConnectionId) {
        let Some(remote) = self.connections.get(&connection).map(|c| c.remote.clone()) else {
            return;
        };
        self.adding_connection.remove(&peer);
        let others = self.liquid_connections(&peer, connection);
        self.shared
            .connection_established(peer, connection, others, &remote);
        self.liveness.established(peer, connection, Instant::now());
    }

    /// A dormant connection's peer showed it speaks our protocol.
    fn speaks_liquid(&mut self, peer: PeerId, connection: ConnectionId) {
        let Some(conn) = self.connections.get(&connection) else {
            return;
        };
        if conn.state != ConnState::Dormant || self.shared.lifecycle.check_open().is_err() {
            return;
        }
        let (dialer_is_local, remote, admitted) =
            (conn.dialer_is_local, conn.remote.clone(), conn.admitted);
        if !admitted {
            match self.gate.admit(peer, connection, dialer_is_local, &remote) {
                Ok((closes, events)) => {
                    self.carry_out(closes, events);
                    self.gate.established(peer, connection);
                }
                Err(refusal) => {
                    let told =
                        RemoteRefusal::for_reason(refusal.reason).filter(|_| !dialer_is_local);
                    self.report(*refusal);
                    if let Some(conn) = self.connections.get_mut(&connection) {
                        conn.state = ConnState::Refusing;
                    }
                    if told.is_none() {
                        self.actions.push_back(ToSwarm::CloseConnection {
                            peer_id: peer,
                            connection: libp2p::swarm::CloseConnection::One(connection),
                        });
                    }
                    self.actions.push_back(ToSwarm::NotifyHandler {
                        peer_id: peer,
                        handler: NotifyHandler::One(connection),
                        event: Either::Left(HandlerIn::Refuse { told }),
                    });
                    return;
                }
            }
        }
        if let Some(conn) = self.connections.get_mut(&connection) {
            conn.state = ConnState::Liquid;
            conn.admitted = true;
        }
        tracing::debug!(%peer, %connection, "peer speaks liquid; pooling its connection");
        let meter = self.shared.connection_opened(peer, connection, &remote);
        // Before the pool's first open request, which goes to the same handler.
        self.actions.push_back(ToSwarm::NotifyHandler {
            peer_id: peer,
            handler: NotifyHandler::One(connection),
            event: Either::Left(HandlerIn::Activate(Activation::new(meter))),
        });
        self.liquid_established(peer, connection);
    }

    fn on_connection_closed(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        dialer_is_local: bool,
        remaining_established: usize,
        stalled: Option<TransportStalled>,
    ) {
        self.liveness.closed(connection);
        let record = self.connections.remove(&connection);
        let refused_by_remote = self.shared.connections.take_refusal(connection);
        match record.map(|c| (c.state, c.admitted)) {
            Some((ConnState::Liquid, _)) => {
                if let Some(TransportStalled { after }) = stalled {
                    self.shared.connection_stalled(peer, connection, after);
                }
                self.gate.closed(Some(peer), connection);
                self.shared.connection_gone(Some(peer), connection);
                let remaining = self.liquid_connections(&peer, connection);
                self.shared.events.emit(Event::ConnectionClosed {
                    peer,
                    connection,
                    remaining,
                });
                if remaining == 0 {
                    // A connection of ours that ended before its exchange: the
                    // remote refused it, or it was lost at once. Reported as a
                    // failed dial, never as a peer that came and went.
                    if dialer_is_local && !self.shared.is_announced(&peer) {
                        let cause = refused_by_remote.map_or(
                            DialFailure::ClosedBeforeExchange,
                            DialFailure::RefusedByRemote,
                        );
                        self.shared.events.emit(Event::DialFailed {
                            peer: Some(peer),
                            reason: cause.to_string(),
                            cause,
                        });
                    }
                    self.shared.peer_gone(peer);
                }
            }
            Some((ConnState::Dormant, true)) => self.gate.closed(Some(peer), connection),
            _ => {}
        }
        if remaining_established == 0 {
            let now = Instant::now();
            let actions = if self.supervisor.is_connected(&peer) {
                self.supervisor.disconnected(&peer, now)
            } else {
                // Closed before it was confirmed (refused by the remote, or
                // lost at once): a failed attempt, so the backoff applies.
                self.supervisor.dial_failed(&peer, now)
            };
            self.apply(actions);
        }
    }

    fn on_dial_failure(
        &mut self,
        peer: Option<PeerId>,
        connection: ConnectionId,
        error: &DialError,
    ) {
        // With other protocols in the swarm, their failed dials are theirs.
        let ours = self.liquid_dials.remove(&connection)
            || self.shared.config.peer_scope == PeerScope::EveryConnection
            || peer.is_some_and(|p| self.supervisor.is_required(&p));
        if let Some(peer) = peer {
            self.adding_connection.remove(&peer);
        }
        // A connection another behaviour denied after ours made its handler.
        self.connections.remove(&connection);
        self.liveness.closed(connection);
        self.gate.closed(peer, connection);
        self.shared.connection_gone(peer, connection);
        if matches!(error, DialError::DialPeerConditionFalse(_)) {
            // Another dial to it is under way; its outcome moves the schedule.
            return;
        }
        if ours {
            self.shared.events.emit(Event::DialFailed {
                peer,
                reason: error.to_string(),
                cause: dial_failure(error),
            });
        }
        // Any failed dial to a required peer we are waiting on counts,
        // including one that reached a different peer id.
        if let Some(peer) = peer
            && self.supervisor.is_dialing(&peer)
            && !self.connections.values().any(|c| c.peer == peer)
        {
            let actions = self.supervisor.dial_failed(&peer, Instant::now());
            self.apply(actions);
        }
    }

    /// Carries out the supervisor's decisions.
    fn apply(&mut self, actions: Vec<SupervisorAction>) {
        let events = self.shared.events.clone();
        for action in actions {
            match action {
                SupervisorAction::Dial(peer) => {
                    tracing::debug!(%peer, "dialling required peer");
                    let opts = self.dial_opts(peer, PeerCondition::DisconnectedAndNotDialing);
                    self.dial(opts);
                }
                SupervisorAction::RedialScheduled {
                    peer,
                    attempt,
                    delay,
                } => events.emit(Event::RedialScheduled {
                    peer,
                    attempt,
                    delay,
                }),
                SupervisorAction::Connected(peer) => {
                    events.emit(Event::RequiredPeerConnected { peer });
                }
                SupervisorAction::ClosedEarly { peer, lived } => {
                    let cause = DialFailure::ClosedEarly { lived };
                    events.emit(Event::DialFailed {
                        peer: Some(peer),
                        reason: cause.to_string(),
                        cause,
                    });
                }
                SupervisorAction::GaveUp { peer, attempts } => {
                    events.emit(Event::RequiredPeerGaveUp { peer, attempts });
                }
            }
        }
    }

    /// Peers were announced (their exchange is done): required ones among them
    /// now count as connected, whoever dialled (a peer that dialled us while we
    /// waited to redial it included).
    fn on_announced(&mut self) {
        let now = Instant::now();
        for peer in self.supervisor.required_peers() {
            if !self.supervisor.is_connected(&peer) && self.shared.is_announced(&peer) {
                let actions = self.supervisor.connected(&peer, now);
                self.apply(actions);
            }
        }
    }

    /// Runs the supervisor's timer: redials that are due and the periodic sweep.
    fn poll_supervisor(&mut self, cx: &mut Context<'_>) {
        let check_interval = self.supervisor.config().check_interval;
        // A few rounds at most: each round either fires or waits.
        for _ in 0..4 {
            let wake = self
                .supervisor
                .next_wakeup()
                .map_or(self.next_sweep, |w| w.min(self.next_sweep));
            let timer = self
                .supervisor_timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(wake)));
            if timer.deadline() != wake {
                timer.as_mut().reset(wake);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return;
            }
            let now = Instant::now();
            if now >= self.next_sweep {
                self.next_sweep = now + check_interval;
            }
            let actions = self.supervisor.poll(now);
            self.apply(actions);
        }
    }

    /// Closes liquid connections with neither an answered ping nor bytes read
    /// for `ping_interval + ping_timeout`.
    fn close_silent_connections(&mut self) {
        let now = Instant::now();
        // Connections quiet for a while: an idle send stream looks at whether our
        // muxer read anything from the peer (window updates for data still
        // draining from a slow link), which no write reported since.
        for (peer, connection) in self.liveness.quiet(now, self.liveness.check_period()) {
            self.shared
                .pools
                .any_idle(&peer, connection, |stream: &mut Box<MeteredStream>| {
                    stream.look_for_peer_reads()
                });
        }
        for connection in self.shared.connections.with_traffic() {
            self.liveness.answered(connection, now);
        }
        for (connection, at) in self.shared.connections.socket_reads() {
            self.liveness.answered(connection, at);
        }
        for (peer, connection, silent_for) in self.liveness.expired(now) {
            tracing::warn!(%peer, %connection, ?silent_for, "no ping answered; closing connection");
            // What was queued for the peer on it goes with it: said, not silent.
            self.shared.events.emit(Event::ConnectionSilent {
                peer,
                connection,
                silent_for,
            });
            self.actions.push_back(ToSwarm::CloseConnection {
                peer_id: peer,
                connection: libp2p::swarm::CloseConnection::One(connection),
            });
        }
    }

    fn on_ping(&mut self, event: ping::Event) {
        #[cfg(feature = "metrics")]
        self.shared.events.record_libp2p(&event);
        match event.result {
            Ok(_) => self.liveness.answered(event.connection, Instant::now()),
            // A peer without ping (a plain libp2p node) is not judged by it.
            Err(ping::Failure::Unsupported) => self.liveness.closed(event.connection),
            // Not a reason to close by itself: on a slow link a ping waits
            // behind the data queued before it and times out while the peer
            // keeps delivering. The liveness table closes the connection if
            // neither pongs nor bytes come back (`close_silent_connections`).
            Err(error) => {
                let (peer, connection) = (event.peer, event.connection);
                tracing::debug!(%peer, %connection, %error, "ping failed");
            }
        }
    }

    fn on_request(&mut self, request: Request) {
        match request {
            Request::Open {
                peer,
                connection,
                protocol,
                reply,
            } => self.actions.push_back(ToSwarm::NotifyHandler {
                peer_id: peer,
                handler: NotifyHandler::One(connection),
                event: Either::Left(HandlerIn::Open { protocol, reply }),
            }),
            Request::AddConnection { peer } => {
                let addresses = self.addresses_of(&peer).to_vec();
                if addresses.is_empty() || !self.adding_connection.insert(peer) {
                    return;
                }
                tracing::debug!(%peer, "pool busy; dialling one more connection");
                self.dial(
                    DialOpts::peer_id(peer)
                        .condition(PeerCondition::Always)
                        .addresses(addresses)
                        .build(),
                );
            }
            Request::AddAddress { peer, address } => self.add_address(peer, address),
            Request::EnforcePolicy => {
                let (closes, events) = self.gate.forbidden_connections();
                self.carry_out(closes, events);
            }
            Request::CloseConnection { peer, connection } => {
                self.actions.push_back(ToSwarm::CloseConnection {
                    peer_id: peer,
                    connection: libp2p::swarm::CloseConnection::One(connection),
                })
            }
        }
    }

    /// The periodic checks: pool shrinking, refusal reports, liveness.
    fn poll_timers(&mut self, cx: &mut Context<'_>) {
        let pool = &self.shared.config.pool;
        // Often enough for both: a burst's extra streams, and connections gone idle.
        let window = pool
            .idle_after
            .map_or(pool.shrink_after, |idle| idle.min(pool.shrink_after));
        let shrink_check = self.shrink_check.get_or_insert_with(|| {
            interval((window / 4).clamp(Duration::from_millis(50), Duration::from_secs(15)))
        });
        while shrink_check.poll_tick(cx).is_ready() {
            self.shared.pools.shrink_idle(Instant::now());
        }
        let period = self.liveness.check_period();
        self.liveness_check.get_or_insert_with(|| interval(period));
        while self
            .liveness_check
            .as_mut()
            .is_some_and(|check| check.poll_tick(cx).is_ready())
        {
            self.close_silent_connections();
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
            let now = Instant::now();
            let reports = self.refusals.poll(now);
            self.emit_refusals(reports, now);
        }
    }
}

fn interval(period: Duration) -> tokio::time::Interval {
    let mut i = tokio::time::interval(period);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    i
}

type PingHandler = THandler<ping::Behaviour>;

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = ConnectionHandlerSelect<Handler, PingHandler>;
    type ToSwarm = Event;

    fn handle_pending_inbound_connection(
        &mut self,
        connection: ConnectionId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        // The handshake limits protect the node's sockets whatever the scope; the
        // blacklist applies here only when the policy covers every connection.
        let blacklist = self.shared.config.policy_scope == PolicyScope::AllConnections;
        self.gate
            .check_inbound(connection, remote_addr, blacklist)
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
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let ours = self.handler(peer, connection, false, remote_addr)?;
        let ping = self.ping.handle_established_inbound_connection(
            connection,
            peer,
            local_addr,
            remote_addr,
        )?;
        Ok(ours.select(ping))
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let ours = self.handler(peer, connection, true, addr)?;
        self.add_address(peer, addr.clone());
        let ping = self.ping.handle_established_outbound_connection(
            connection,
            peer,
            addr,
            role_override,
            port_use,
        )?;
        Ok(ours.select(ping))
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: Option<PeerId>,
        addresses: &[Multiaddr],
        _effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        let policy_applies = self.shared.config.policy_scope == PolicyScope::AllConnections
            || self.liquid_dials.contains(&connection)
            || peer.is_some_and(|p| self.supervisor.is_required(&p));
        if policy_applies {
            self.gate.check_dial(peer, addresses).map_err(|refusal| {
                let error = admission::refusal_error(&refusal);
                self.report(*refusal);
                ConnectionDenied::new(error)
            })?;
        }
        let Some(peer) = peer else {
            return Ok(Vec::new());
        };
        // All with the `/p2p/<peer>` suffix, as the swarm and identify give
        // theirs: the swarm drops exact duplicates only, and the same socket
        // twice would be dialled twice at once.
        let given: Vec<Multiaddr> = addresses
            .iter()
            .map(|a| with_peer_suffix(a, peer))
            .collect();
        let mut extra: Vec<Multiaddr> = Vec::new();
        let known = self.required_addrs.get(&peer).into_iter().flatten();
        for address in known.chain(self.addresses_of(&peer)) {
            let address = with_peer_suffix(address, peer);
            if !given.contains(&address) && !extra.contains(&address) {
                extra.push(address);
            }
        }
        Ok(extra)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.ping.on_swarm_event(event);
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                let Some(conn) = self.connections.get(&e.connection_id) else {
                    return;
                };
                let (state, admitted) = (conn.state, conn.admitted);
                if admitted {
                    self.gate.established(e.peer_id, e.connection_id);
                }
                if state == ConnState::Liquid {
                    self.liquid_established(e.peer_id, e.connection_id);
                }
            }
            FromSwarm::ConnectionClosed(e) => {
                let stalled = e.cause.and_then(|cause| {
                    TransportStalled::find(cause as &(dyn std::error::Error + 'static))
                });
                self.on_connection_closed(
                    e.peer_id,
                    e.connection_id,
                    e.endpoint.is_dialer(),
                    e.remaining_established,
                    stalled,
                )
            }
            FromSwarm::DialFailure(e) => self.on_dial_failure(e.peer_id, e.connection_id, e.error),
            FromSwarm::ListenFailure(e) => {
                // A handler of ours whose connection another behaviour denied.
                self.connections.remove(&e.connection_id);
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
                        address: Some(e.send_back_addr.clone()),
                    });
                }
            }
            FromSwarm::NewExternalAddrOfPeer(e) => self.add_address(e.peer_id, e.addr.clone()),
            FromSwarm::NewListenAddr(e) => {
                let full = e
                    .addr
                    .clone()
                    .with_p2p(self.local_peer)
                    .unwrap_or_else(|a| a);
                self.shared.events.emit(Event::Listening { address: full });
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {
            Either::Left(HandlerEvent::SpeaksLiquid) => self.speaks_liquid(peer, connection),
            Either::Right(ping) => self
                .ping
                .on_connection_handler_event(peer, connection, ping),
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        self.waker = Some(cx.waker().clone());
        self.poll_timers(cx);
        // The ping behaviour only reports results; its handlers do the pinging.
        while let Poll::Ready(action) = self.ping.poll(cx) {
            if let ToSwarm::GenerateEvent(event) = action {
                self.on_ping(event);
            }
        }
        if self.shared.announced_changed.swap(false, Ordering::AcqRel) {
            self.on_announced();
        }
        self.poll_supervisor(cx);
        while let Poll::Ready(Some(request)) = self.requests.poll_recv(cx) {
            self.on_request(request);
        }
        if let Some(action) = self.actions.pop_front() {
            return Poll::Ready(action);
        }
        if let Poll::Ready(event) = self.shared.events.poll_for_swarm(cx) {
            return Poll::Ready(ToSwarm::GenerateEvent(event));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    #[test]
    fn a_stall_is_found_inside_the_error_a_connection_closes_with() {
        // As the swarm reports it: the muxer's error boxed in an `io::Error` by
        // `StreamMuxerBox`, inside the connection error.
        let muxer = yamux::ConnectionError::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            TransportStalled {
                after: Duration::from_secs(3),
            },
        ));
        let closed = libp2p::swarm::ConnectionError::IO(io::Error::other(muxer));
        assert_eq!(
            TransportStalled::find(&closed),
            Some(TransportStalled {
                after: Duration::from_secs(3)
            })
        );
        let other = libp2p::swarm::ConnectionError::IO(io::ErrorKind::TimedOut.into());
        assert_eq!(TransportStalled::find(&other), None);
    }
}
