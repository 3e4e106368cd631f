//! Discovery: the nodes of this node's chains, found from a few seeds over a
//! Kademlia DHT of the network's own.
//!
//! [`Discovery`] is a `NetworkBehaviour` around `libp2p::kad::Behaviour` (with
//! the protocol `/liquid/kad/1.0.0`, so it never joins a public DHT nor a kad
//! the node runs for itself, and in server mode: every node answers). Kademlia
//! does the routing table, the queries and the provider records; this module
//! adds the policy a chain node needs:
//!
//! - each served chain is a provider record under the key
//!   `/liquid/chain/<chain>`, announced at once and republished by kad every
//!   `discovery.interval`, living three intervals, so a node that stopped drops
//!   out of lookups after that;
//! - while fewer than `discovery.min_peers` of its chains' nodes are connected,
//!   it looks the providers of its chains up (1 s after the first lookup, then
//!   after twice the pause each time, up to `interval / 6`) and dials
//!   what it finds, only for the chains it serves, never beyond `min_peers`.
//!   Seeds and peers that kad's own lookups connect to (a DHT query talks to the
//!   peers closest to the key, whatever their chains) do not count;
//! - dials go through the swarm like any other, so the liquid behaviour's
//!   blacklist, allow-list and limits decide; a peer whose dial failed waits on
//!   the supervisor's Fibonacci schedule before it is tried again, and one
//!   whose connection closed within `supervisor.min_connection_lifetime`
//!   (refused right after the handshake: one side was full, most often) waits
//!   2 to 10 `interval`s, growing on the same schedule;
//! - kad's own dials are screened the same way: its queries (lookups,
//!   announcements, bootstraps, the republishing every `interval`) dial
//!   whichever peers are near a key, whatever this node's limits. None is made
//!   to a peer in backoff, nor, when every connection counts towards
//!   `max_peers` (`PolicyScope::AllConnections`), once the node has
//!   `max_peers` peers: its own admission would refuse that connection right
//!   after the handshake. Kad is told the dial failed, as the swarm would
//!   tell it, and its query goes on through other peers (the connected ones,
//!   for a full node). Unscreened, a cluster of full nodes set up and refused
//!   connections at every republishing (docs/SCALE.md, finding 1);
//! - seeds (addresses ending in `/p2p/<peer id>`) are dialled at start and go
//!   to the routing table; a peer that dialled us enters it once identify
//!   reports its listen addresses (kad cannot route to the port it dialled
//!   from); kad reports the addresses it learns, which the liquid behaviour
//!   keeps in its address book.
//!
//! Kademlia provider records, not rendezvous: every node serves lookups, so the
//! seeds matter only until a node knows a few peers; rendezvous would make them
//! servers every node depends on (docs/ARCHITECTURE.md, "Discovery").

use std::{
    collections::{HashMap, HashSet, VecDeque},
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use libp2p::{
    Multiaddr, PeerId, StreamProtocol,
    kad::{self, GetProvidersOk, Mode, QueryResult, RecordKey, store::MemoryStore},
    multiaddr::Protocol,
    swarm::{
        ConnectionDenied, ConnectionId, DialError, DialFailure, FromSwarm, NetworkBehaviour,
        THandlerInEvent, ToSwarm,
        dial_opts::{DialOpts, PeerCondition},
    },
};
use liquid_p2p_core::{Config, Error, Event, EvictionStrategy, PolicyScope, fibonacci_backoff};
use parking_lot::RwLock;
use tokio::{
    sync::mpsc,
    time::{Instant, Sleep},
};

use crate::{control::Control, delegate::delegate_connections, events::EventBus, shared::Shared};

/// The Kademlia protocol of liquid networks.
pub const DISCOVERY_PROTOCOL: &str = "/liquid/kad/1.0.0";
/// Calls from [`Control`] queued for the swarm task.
const COMMAND_QUEUE_LEN: usize = 64;
/// Peers remembered with a failed dial (their backoff); beyond it, the ones
/// due soonest are forgotten.
const MAX_BACKOFF_PEERS: usize = 4096;
/// Peers found serving this node's chains (reported once each, counted for
/// `min_peers`); beyond it, no more are recorded.
const MAX_KNOWN_PEERS: usize = 4096;
/// A peer whose connection closed right after the handshake (it refused us)
/// waits `interval` times the Fibonacci schedule, at least this many
/// intervals (kad's next republishing, an interval later, reaches the same
/// peers)...
const REFUSED_MIN_INTERVALS: u32 = 2;
/// ... and at most this many.
const REFUSED_MAX_INTERVALS: u32 = 10;
/// Kad's dials under way that are tracked (a failed one puts its peer in
/// backoff); kad itself keeps a few per query.
const MAX_KAD_DIALS: usize = 1024;
/// Listen addresses remembered per connected peer.
const MAX_ADDRESSES_PER_PEER: usize = 8;
/// Chains one node serves at most.
pub const MAX_CHAINS: usize = 64;
/// The shortest pause between two lookups while below `min_peers`.
const MIN_SEARCH_INTERVAL: Duration = Duration::from_millis(200);
/// The pause after the first lookup that left the node below `min_peers`; it
/// doubles at each lookup up to `interval / 6`. Nodes that start together
/// announce their chains at about the same moment: the first lookups find few
/// of them, one a second later most.
const FIRST_SEARCH_RETRY: Duration = Duration::from_secs(1);

/// The provider-record key of `chain`.
fn chain_key(chain: &str) -> RecordKey {
    RecordKey::new(&format!("/liquid/chain/{chain}"))
}

pub(crate) enum Command {
    Serve(String),
    StopServing(String),
    AddSeed(PeerId, Multiaddr),
}

/// [`Control`]'s way to the discovery behaviour.
#[derive(Debug, Clone)]
pub(crate) struct DiscoveryHandle {
    commands: mpsc::Sender<Command>,
    chains: Arc<RwLock<HashSet<String>>>,
}

impl DiscoveryHandle {
    /// Cancel safe: the command's place in the queue is taken before the list
    /// changes, so the list and the commands never disagree.
    pub(crate) async fn serve(&self, chain: String) -> Result<bool, Error> {
        validate_chain(&chain)?;
        let permit = self.permit().await?;
        {
            let mut chains = self.chains.write();
            if chains.contains(&chain) {
                return Ok(false);
            }
            if chains.len() >= MAX_CHAINS {
                return Err(Error::InvalidConfig {
                    reason: format!("a node serves at most {MAX_CHAINS} chains"),
                });
            }
            chains.insert(chain.clone());
        }
        permit.send(Command::Serve(chain));
        Ok(true)
    }

    /// Cancel safe, as [`serve`](Self::serve).
    pub(crate) async fn stop_serving(&self, chain: &str) -> Result<bool, Error> {
        let permit = self.permit().await?;
        if !self.chains.write().remove(chain) {
            return Ok(false);
        }
        permit.send(Command::StopServing(chain.to_owned()));
        Ok(true)
    }

    async fn permit(&self) -> Result<mpsc::Permit<'_, Command>, Error> {
        self.commands.reserve().await.map_err(|_| Error::ShutDown)
    }

    pub(crate) async fn add_seed(&self, address: Multiaddr) -> Result<PeerId, Error> {
        let peer = crate::behaviour::required_peer_id(&address)?;
        self.send(Command::AddSeed(peer, address)).await?;
        Ok(peer)
    }

    pub(crate) fn chains(&self) -> Vec<String> {
        let mut list: Vec<_> = self.chains.read().iter().cloned().collect();
        list.sort();
        list
    }

    async fn send(&self, command: Command) -> Result<(), Error> {
        self.commands
            .send(command)
            .await
            .map_err(|_| Error::ShutDown)
    }
}

fn validate_chain(chain: &str) -> Result<(), Error> {
    if chain.is_empty() || chain.len() > liquid_p2p_core::MAX_PROTOCOL_LEN {
        return Err(Error::InvalidConfig {
            reason: format!(
                "chain {chain:.64?} must be 1 to {} bytes",
                liquid_p2p_core::MAX_PROTOCOL_LEN
            ),
        });
    }
    Ok(())
}

/// Why discovery did not let one of kad's dials through (kad is told it
/// failed, as it would be by the swarm).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Screened {
    /// The peer refused us, did not last, or could not be dialled, recently.
    BackingOff,
    /// This node has `max_peers` peers: its own admission would refuse the
    /// connection right after the handshake.
    NoRoom,
}

impl std::fmt::Display for Screened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Screened::BackingOff => "peer backing off after a refusal or failed dial",
            Screened::NoRoom => "no room for another peer",
        })
    }
}

impl std::error::Error for Screened {}

/// What put a peer in backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setback {
    /// A dial failed: the supervisor's schedule (`backoff_unit`, up to
    /// `max_backoff`), as for required peers.
    DialFailed,
    /// A connection closed right after its handshake (before
    /// `min_connection_lifetime`): refused by one side, full most often.
    /// The peer is still there and will be full for a while: the schedule in
    /// `interval`s, from [`REFUSED_MIN_INTERVALS`] to [`REFUSED_MAX_INTERVALS`].
    Refused,
}

/// A peer whose dial failed, and when it may be tried again.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    failures: u32,
    until: Instant,
}

/// The discovery `NetworkBehaviour`. A [`Host`](crate::Host) runs one when
/// `discovery.enabled` is set; a node with its own swarm adds it next to the
/// liquid [`Behaviour`](crate::Behaviour):
///
/// ```
/// use libp2p::swarm::NetworkBehaviour;
/// use liquid_p2p::{Behaviour, Config, Discovery, Error};
///
/// #[derive(NetworkBehaviour)]
/// #[behaviour(prelude = "libp2p::swarm::derive_prelude")]
/// struct Node {
///     liquid: Behaviour,
///     discovery: Discovery,
/// }
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Error> {
/// let key = libp2p::identity::Keypair::generate_ed25519();
/// let (liquid, control) = Behaviour::new(key.public().to_peer_id(), Config::default())?;
/// let discovery = Discovery::new(key.public().to_peer_id(), &control)?;
/// let _node = Node { liquid, discovery };
/// // Once the swarm runs: control.serve_chain("main").await?
/// # Ok(())
/// # }
/// ```
pub struct Discovery {
    kad: kad::Behaviour<MemoryStore>,
    local: PeerId,
    commands: mpsc::Receiver<Command>,
    events: EventBus,
    /// The liquid behaviour's state: the peers' protocols and gossip topics.
    shared: Arc<Shared>,
    chains: HashSet<String>,
    /// The chain of each provider-record key looked up.
    keys: HashMap<RecordKey, String>,
    seeds: Vec<(PeerId, Multiaddr)>,
    min_peers: usize,
    interval: Duration,
    backoff_unit: Duration,
    max_backoff: Duration,
    min_lifetime: Duration,
    /// `max_peers`, when every connection counts towards it (see `has_room`).
    max_peers: Option<usize>,
    /// Whether a new peer is refused at `max_peers` (LIFO), rather than
    /// admitted in place of another.
    refuses_when_full: bool,
    tick: Pin<Box<Sleep>>,
    /// The pause before the next lookup while below `min_peers`.
    search_retry: Duration,
    /// Peers with a connection, and when the first one was established.
    connected: HashMap<PeerId, Instant>,
    /// Dials this behaviour made and that have not ended.
    dialing: HashMap<ConnectionId, PeerId>,
    /// Dials kad made (let through by `screen`) and that have not ended.
    kad_dialing: HashMap<ConnectionId, PeerId>,
    backoff: HashMap<PeerId, Backoff>,
    known: HashSet<PeerId>,
    /// Listen addresses of connected peers, as identify reports them.
    listen_addrs: HashMap<PeerId, Vec<Multiaddr>>,
    /// Connected kad peers waiting for a listen address to enter the routing
    /// table.
    unroutable: HashSet<PeerId>,
    actions: VecDeque<ToSwarm<Infallible, THandlerInEvent<Self>>>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("chains", &self.chains)
            .field("connected", &self.connected.len())
            .finish_non_exhaustive()
    }
}

impl Discovery {
    /// A discovery behaviour for the node `local`, driven through `control` (of
    /// the liquid behaviour in the same swarm) and set up by its configuration's
    /// `discovery` part. One per `control`.
    pub fn new(local: PeerId, control: &Control) -> Result<Self, Error> {
        let shared = control.shared();
        let config: &Config = &shared.config;
        let d = &config.discovery;
        let mut kad_config = kad::Config::new(StreamProtocol::new(DISCOVERY_PROTOCOL));
        kad_config.set_query_timeout(config.dial_timeout.max(Duration::from_secs(10)));
        // Kad republishes our records every interval; a node that stopped drops
        // out of lookups after three.
        kad_config.set_provider_publication_interval(Some(d.interval));
        kad_config.set_provider_record_ttl(Some(d.interval.saturating_mul(3)));
        let mut kad = kad::Behaviour::with_config(local, MemoryStore::new(local), kad_config);
        // Every node answers lookups: chain nodes are servers, and on a LAN or
        // loopback kad would otherwise wait for a confirmed external address.
        kad.set_mode(Some(Mode::Server));
        let (tx, commands) = mpsc::channel(COMMAND_QUEUE_LEN);
        let chains: HashSet<String> = d.chains.iter().cloned().collect();
        let handle = DiscoveryHandle {
            commands: tx,
            chains: Arc::new(RwLock::new(chains.clone())),
        };
        if shared.discovery.set(handle).is_err() {
            return Err(Error::InvalidConfig {
                reason: "this control drives a discovery behaviour already".into(),
            });
        }
        let mut discovery = Self {
            kad,
            local,
            commands,
            events: shared.events.clone(),
            shared: Arc::clone(shared),
            chains: HashSet::new(),
            keys: HashMap::new(),
            seeds: Vec::new(),
            min_peers: d.min_peers,
            interval: d.interval,
            backoff_unit: config.supervisor.backoff_unit,
            max_backoff: config.supervisor.max_backoff,
            min_lifetime: config.supervisor.min_connection_lifetime,
            max_peers: (config.policy_scope == PolicyScope::AllConnections)
                .then_some(config.max_peers),
            refuses_when_full: config.eviction == EvictionStrategy::Lifo,
            tick: Box::pin(tokio::time::sleep(Duration::ZERO)),
            search_retry: FIRST_SEARCH_RETRY,
            connected: HashMap::new(),
            dialing: HashMap::new(),
            kad_dialing: HashMap::new(),
            backoff: HashMap::new(),
            known: HashSet::new(),
            listen_addrs: HashMap::new(),
            unroutable: HashSet::new(),
            actions: VecDeque::new(),
        };
        // Seeds first: the first announcements go to them.
        for seed in &d.seeds {
            let peer = crate::behaviour::required_peer_id(seed)?;
            discovery.add_seed(peer, seed.clone());
        }
        for chain in chains {
            discovery.serve(chain);
        }
        Ok(discovery)
    }

    /// Kademlia itself, for what this wrapper does not offer (the routing
    /// table, records of the node's own).
    pub fn kademlia(&mut self) -> &mut kad::Behaviour<MemoryStore> {
        &mut self.kad
    }

    fn serve(&mut self, chain: String) {
        let key = chain_key(&chain);
        self.keys.insert(key.clone(), chain.clone());
        if let Err(e) = self.kad.start_providing(key) {
            tracing::warn!(%chain, error = %e, "cannot announce the chain");
        }
        tracing::debug!(%chain, "serving chain");
        self.chains.insert(chain);
        // Look for its peers now, not at the next tick.
        self.tick.as_mut().reset(Instant::now());
    }

    fn stop_serving(&mut self, chain: &str) {
        let key = chain_key(chain);
        self.kad.stop_providing(&key);
        self.keys.remove(&key);
        self.chains.remove(chain);
        // Found for any chain; those of the chains still served are found again.
        self.known.clear();
        tracing::debug!(%chain, "no longer serving chain");
    }

    fn add_seed(&mut self, peer: PeerId, address: Multiaddr) {
        let mut bare = address.clone();
        if matches!(bare.iter().last(), Some(Protocol::P2p(_))) {
            bare.pop();
        }
        self.kad.add_address(&peer, bare);
        if !self.seeds.iter().any(|(p, a)| *p == peer && *a == address) {
            self.seeds.push((peer, address));
        }
        self.dial(peer);
    }

    /// Dials `peer` unless it is connected, being dialled, or waiting out a
    /// backoff, or this node's admission would refuse the connection anyway
    /// (full, with LIFO eviction; with the other strategies a chain peer
    /// found while below `min_peers` takes the place of another peer).
    fn dial(&mut self, peer: PeerId) {
        if peer == self.local
            || self.connected.contains_key(&peer)
            || self.dialing.values().any(|p| *p == peer)
            || self.backing_off(&peer)
            || (self.refuses_when_full && !self.has_room(&peer))
        {
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        tracing::debug!(%peer, "discovery dials");
        self.dialing.insert(opts.connection_id(), peer);
        self.actions.push_back(ToSwarm::Dial { opts });
    }

    fn backing_off(&self, peer: &PeerId) -> bool {
        self.backoff
            .get(peer)
            .is_some_and(|b| b.until > Instant::now())
    }

    /// Whether a connection to `peer` would fit under `max_peers`: it is
    /// connected already, or the peers connected plus the dials under way are
    /// fewer. Always, when the policy counts only liquid peers (kad's
    /// connections then take no place).
    fn has_room(&self, peer: &PeerId) -> bool {
        let Some(max_peers) = self.max_peers else {
            return true;
        };
        self.connected.contains_key(peer)
            || self.connected.len() + self.dialing.len() + self.kad_dialing.len() < max_peers
    }

    /// Whether kad may dial `peer`. Kad dials whichever peers its queries
    /// (lookups, announcements, its periodic bootstrap, the republishing every
    /// `interval`) reach, and knows nothing of limits: a full node's own
    /// admission refused what it dialled right after the handshake, and a
    /// full remote refused it, and kad dialled the same peers again at its
    /// next query (docs/SCALE.md, finding 1). So a dial to a peer in backoff
    /// (it refused us, did not last, or could not be dialled), or one with no
    /// room for it here, is not made: kad is told it failed and asks the next
    /// peer, and the query goes on through the connected ones.
    fn screen(&self, peer: Option<PeerId>) -> Result<(), Screened> {
        let Some(peer) = peer else {
            return Ok(());
        };
        if self.backing_off(&peer) {
            return Err(Screened::BackingOff);
        }
        if !self.has_room(&peer) {
            return Err(Screened::NoRoom);
        }
        Ok(())
    }

    /// Tells kad that its dial `opts` failed, as the swarm would have.
    fn deny_kad_dial(&mut self, opts: &DialOpts, reason: Screened) {
        tracing::trace!(peer = ?opts.get_peer_id(), %reason, "kad dial not made");
        let error = DialError::Denied {
            cause: ConnectionDenied::new(reason),
        };
        self.kad.on_swarm_event(FromSwarm::DialFailure(DialFailure {
            peer_id: opts.get_peer_id(),
            error: &error,
            connection_id: opts.connection_id(),
        }));
    }

    /// `peer` could not be dialled, or refused us: it waits before it is
    /// dialled again (by this behaviour or by kad), longer with each failure
    /// in a row.
    fn failed(&mut self, peer: PeerId, setback: Setback) {
        if self.backoff.len() >= MAX_BACKOFF_PEERS && !self.backoff.contains_key(&peer) {
            let now = Instant::now();
            self.backoff.retain(|_, b| b.until > now);
            if self.backoff.len() >= MAX_BACKOFF_PEERS {
                return;
            }
        }
        let entry = self.backoff.entry(peer).or_insert(Backoff {
            failures: 0,
            until: Instant::now(),
        });
        entry.failures = entry.failures.saturating_add(1);
        let wait = match setback {
            Setback::DialFailed => {
                fibonacci_backoff(entry.failures, self.backoff_unit, self.max_backoff)
            }
            Setback::Refused => fibonacci_backoff(
                entry.failures,
                self.interval,
                self.interval.saturating_mul(REFUSED_MAX_INTERVALS),
            )
            .max(self.interval.saturating_mul(REFUSED_MIN_INTERVALS)),
        };
        entry.until = Instant::now() + wait;
        tracing::debug!(%peer, failures = entry.failures, ?wait, ?setback, "peer backing off");
    }

    /// Connected peers that serve one of this node's chains: found as its
    /// providers, or showing it by what they run: a protocol (in the protocol
    /// exchange) or a gossip subscription named `/chain/<chain>/...`, as
    /// `chain_topic` names them. Others (seeds, peers kad's own lookups
    /// connected to) do not count towards `min_peers`.
    fn chain_peers(&self) -> usize {
        let prefixes: Vec<String> = self.chains.iter().map(|c| format!("/chain/{c}/")).collect();
        let book = self.shared.book.read();
        let broadcast = self.shared.broadcast.get();
        self.connected
            .keys()
            .filter(|peer| {
                self.known.contains(*peer)
                    || prefixes.iter().any(|prefix| {
                        book.supports_prefix(peer, prefix)
                            || broadcast.is_some_and(|b| b.subscribes_under(peer, prefix))
                    })
            })
            .count()
    }

    fn below_min(&self) -> bool {
        self.chain_peers() < self.min_peers
    }

    /// Below `min_peers`, announces the chains again (the routing table may
    /// have grown since: the records go to the peers closest to their keys; kad
    /// republishes them every interval anyway) and looks for peers.
    fn on_tick(&mut self) {
        let below = self.below_min();
        if below {
            for chain in &self.chains {
                let key = chain_key(chain);
                if let Err(e) = self.kad.start_providing(key.clone()) {
                    tracing::warn!(%chain, error = %e, "cannot announce the chain");
                }
                self.kad.get_providers(key);
            }
            let seeds: Vec<PeerId> = self.seeds.iter().map(|(p, _)| *p).collect();
            for seed in seeds {
                self.dial(seed);
            }
        }
        let next = next_search(&mut self.search_retry, below, self.interval);
        self.tick.as_mut().reset(Instant::now() + next);
    }

    fn on_kad(&mut self, event: kad::Event) {
        #[cfg(feature = "metrics")]
        self.events.record_libp2p(&event);
        let result = match event {
            kad::Event::OutboundQueryProgressed {
                result,
                stats,
                step,
                ..
            } => {
                if step.last {
                    tracing::debug!(
                        query = query_kind(&result),
                        requests = stats.num_requests(),
                        failed = stats.num_failures(),
                        duration = ?stats.duration(),
                        "kad query finished"
                    );
                }
                result
            }
            // A connected peer that speaks our kad but whose listen address is not
            // known (it dialled us): added once identify reports one.
            kad::Event::UnroutablePeer { peer } => {
                match self.listen_addrs.get(&peer) {
                    Some(addresses) => {
                        for address in addresses.clone() {
                            self.kad.add_address(&peer, address);
                        }
                    }
                    None => {
                        self.unroutable.insert(peer);
                    }
                }
                return;
            }
            _ => return,
        };
        let QueryResult::GetProviders(Ok(GetProvidersOk::FoundProviders { key, providers })) =
            result
        else {
            return;
        };
        let Some(chain) = self.keys.get(&key).cloned() else {
            return;
        };
        for peer in providers {
            if peer == self.local {
                continue;
            }
            if self.known.len() < MAX_KNOWN_PEERS && self.known.insert(peer) {
                tracing::debug!(%peer, %chain, "discovered");
                self.events.emit(Event::PeerDiscovered {
                    peer,
                    chain: chain.clone(),
                });
            }
            if self.chain_peers() + self.dialing.len() < self.min_peers {
                self.dial(peer);
            }
        }
    }
}

/// The pause before the next lookup or check: below `min_peers`, `retry`
/// (doubled for the time after), at most `interval / 6` and at least
/// [`MIN_SEARCH_INTERVAL`]; otherwise `interval`, and `retry` starts again.
fn next_search(retry: &mut Duration, below: bool, interval: Duration) -> Duration {
    if below {
        let next = (*retry).min(interval / 6).max(MIN_SEARCH_INTERVAL);
        *retry = retry.saturating_mul(2);
        next
    } else {
        *retry = FIRST_SEARCH_RETRY;
        interval
    }
}

/// The name of a kad query, for logs.
fn query_kind(result: &QueryResult) -> &'static str {
    match result {
        QueryResult::Bootstrap(_) => "bootstrap",
        QueryResult::GetClosestPeers(_) => "get_closest_peers",
        QueryResult::GetProviders(_) => "get_providers",
        QueryResult::StartProviding(_) => "start_providing",
        QueryResult::RepublishProvider(_) => "republish_provider",
        QueryResult::GetRecord(_) => "get_record",
        QueryResult::PutRecord(_) => "put_record",
        QueryResult::RepublishRecord(_) => "republish_record",
    }
}

impl NetworkBehaviour for Discovery {
    type ConnectionHandler = <kad::Behaviour<MemoryStore> as NetworkBehaviour>::ConnectionHandler;
    /// Its events reach the swarm through the liquid behaviour's (and
    /// [`Control::events`]), with the rest.
    type ToSwarm = Infallible;

    delegate_connections!(kad);

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match &event {
            FromSwarm::ConnectionEstablished(established) => {
                self.dialing.remove(&established.connection_id);
                self.kad_dialing.remove(&established.connection_id);
                self.connected
                    .entry(established.peer_id)
                    .or_insert_with(Instant::now);
            }
            // Kept for connected peers only, a few each.
            FromSwarm::NewExternalAddrOfPeer(new) if self.connected.contains_key(&new.peer_id) => {
                let list = self.listen_addrs.entry(new.peer_id).or_default();
                if list.len() < MAX_ADDRESSES_PER_PEER && !list.contains(new.addr) {
                    list.push(new.addr.clone());
                }
                if self.unroutable.remove(&new.peer_id) {
                    self.kad.add_address(&new.peer_id, new.addr.clone());
                }
            }
            FromSwarm::ConnectionClosed(closed) if closed.remaining_established == 0 => {
                self.listen_addrs.remove(&closed.peer_id);
                self.unroutable.remove(&closed.peer_id);
                if let Some(since) = self.connected.remove(&closed.peer_id) {
                    if since.elapsed() < self.min_lifetime {
                        // Refused right after the handshake (one of the two
                        // is full, most often), or not lasting.
                        self.failed(closed.peer_id, Setback::Refused);
                    } else {
                        self.backoff.remove(&closed.peer_id);
                    }
                }
                if self.below_min() {
                    self.tick.as_mut().reset(Instant::now());
                }
            }
            FromSwarm::DialFailure(failure) => {
                let ours = self.dialing.remove(&failure.connection_id);
                let kads = self.kad_dialing.remove(&failure.connection_id);
                // A dial not made because one was under way, or the peer
                // connected meanwhile, says nothing of the peer.
                let said_nothing = matches!(failure.error, DialError::DialPeerConditionFalse(_));
                if let Some(peer) = ours.or(kads).filter(|_| !said_nothing) {
                    self.failed(peer, Setback::DialFailed);
                }
            }
            _ => {}
        }
        self.kad.on_swarm_event(event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        while let Poll::Ready(Some(command)) = self.commands.poll_recv(cx) {
            match command {
                Command::Serve(chain) => self.serve(chain),
                Command::StopServing(chain) => self.stop_serving(&chain),
                Command::AddSeed(peer, address) => self.add_seed(peer, address),
            }
        }
        if self.tick.as_mut().poll(cx).is_ready() {
            self.on_tick();
            // Registers the new deadline's waker.
            let _ = self.tick.as_mut().poll(cx);
        }
        loop {
            if let Some(action) = self.actions.pop_front() {
                return Poll::Ready(action);
            }
            match self.kad.poll(cx) {
                Poll::Ready(ToSwarm::GenerateEvent(event)) => self.on_kad(event),
                Poll::Ready(ToSwarm::Dial { opts }) => match self.screen(opts.get_peer_id()) {
                    Ok(()) => {
                        tracing::debug!(peer = ?opts.get_peer_id(), "kad dials");
                        if let Some(peer) = opts.get_peer_id()
                            && self.kad_dialing.len() < MAX_KAD_DIALS
                        {
                            self.kad_dialing.insert(opts.connection_id(), peer);
                        }
                        return Poll::Ready(ToSwarm::Dial { opts });
                    }
                    Err(reason) => self.deny_kad_dial(&opts, reason),
                },
                Poll::Ready(action) => {
                    return Poll::Ready(
                        action.map_out(|_| unreachable!("events are matched by the arm above")),
                    );
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_below_min_peers_start_a_second_apart_and_slow_down_to_a_sixth_of_the_interval() {
        let interval = Duration::from_secs(60);
        let mut retry = FIRST_SEARCH_RETRY;
        let pauses: Vec<u64> = (0..6)
            .map(|_| next_search(&mut retry, true, interval).as_secs())
            .collect();
        assert_eq!(pauses, [1, 2, 4, 8, 10, 10]);
        // At min_peers: checks every interval, and the next shortfall starts
        // again from a second.
        assert_eq!(next_search(&mut retry, false, interval), interval);
        assert_eq!(next_search(&mut retry, true, interval), FIRST_SEARCH_RETRY);
        // A short interval: never more often than MIN_SEARCH_INTERVAL.
        let mut retry = FIRST_SEARCH_RETRY;
        let short = Duration::from_millis(600);
        assert_eq!(next_search(&mut retry, true, short), MIN_SEARCH_INTERVAL);
    }
}
