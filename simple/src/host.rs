//! [`Host`]: the facade a node embeds.
//!
//! A host owns a libp2p `Swarm` (TCP + noise + yamux, and QUIC) with the liquid
//! behaviour, `identify` and `ping`, driven by one tokio task; admission limits
//! are the liquid behaviour's and the transport's (transport.rs).
//! The application talks to that task through a bounded command queue for what
//! needs the swarm (listen, dial, disconnect, shutdown) and through [`Control`] for
//! everything else, which never waits on the swarm task.

use std::{
    collections::HashMap,
    ops::Deref,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm, identify,
    identity::Keypair,
    multiaddr::Protocol,
    ping,
    swarm::{
        ConnectionId, NetworkBehaviour, SwarmEvent,
        dial_opts::{DialOpts, PeerCondition},
    },
};
use liquid_p2p_core::{Config, ConnSupervisor, DialFailure, Error, Event, SupervisorAction};
use parking_lot::{Mutex, RwLock};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
    time::Instant,
};

use crate::{
    behaviour::Behaviour, boxed::BoxedHandlers, control::Control, liveness::Liveness,
    receiver::Inbox, transport,
};

/// Commands queued for the swarm task.
const COMMAND_QUEUE_LEN: usize = 256;
/// Dials awaiting their outcome; more are refused until some finish.
const MAX_PENDING_DIALS: usize = 1024;
/// How long shutdown waits for connections to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Identify protocol version announced by hosts.
pub const IDENTIFY_PROTOCOL_VERSION: &str = "/liquid/1.0.0";

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct HostBehaviour {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    liquid: Behaviour,
}

enum Command {
    Listen {
        address: Multiaddr,
        reply: oneshot::Sender<Result<Multiaddr, Error>>,
    },
    Dial {
        address: Multiaddr,
        reply: oneshot::Sender<Result<PeerId, Error>>,
    },
    Disconnect {
        peer: PeerId,
    },
    CloseConnection {
        connection: ConnectionId,
    },
    DialPeer {
        peer: PeerId,
        reply: oneshot::Sender<Result<PeerId, Error>>,
    },
    AddRequired {
        peer: PeerId,
        address: Multiaddr,
    },
    RemoveRequired {
        peer: PeerId,
        reply: oneshot::Sender<bool>,
    },
    RequiredPeers {
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// Builds a [`Host`].
#[derive(Debug, Default)]
pub struct HostBuilder {
    keypair: Option<Keypair>,
    key_file: Option<PathBuf>,
    listen: Vec<Multiaddr>,
    required: Vec<Multiaddr>,
    protocols: Vec<String>,
    config: Config,
}

impl HostBuilder {
    /// Registers a protocol before the host starts, so that it is in the list sent to
    /// the very first peer and no early frame for it is skipped as unknown
    /// (repeatable). Take its inbox with [`Host::take_inbox`].
    pub fn register_protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocols.push(protocol.into());
        self
    }

    /// Keeps the peer at `address` (which must end in `/p2p/<peer id>`) connected,
    /// redialling on the supervisor's schedule (repeatable).
    pub fn required_peer(mut self, address: Multiaddr) -> Self {
        self.required.push(address);
        self
    }

    /// Uses this identity. Default: a fresh ed25519 key.
    pub fn keypair(mut self, keypair: Keypair) -> Self {
        self.keypair = Some(keypair);
        self
    }

    /// Loads the identity from `path`, creating the file (mode 0600) with a new
    /// ed25519 key if it does not exist, so the peer id survives restarts.
    pub fn key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.key_file = Some(path.into());
        self
    }

    /// Listens on `address` once built (repeatable). `/tcp/..` uses TCP + noise +
    /// yamux; `/udp/../quic-v1` uses QUIC.
    pub fn listen_on(mut self, address: Multiaddr) -> Self {
        self.listen.push(address);
        self
    }

    /// Uses `config` instead of the defaults.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Builds the host, starts its swarm task and waits until it listens on every
    /// requested address. Must be called inside a tokio runtime.
    pub async fn build(self) -> Result<Host, Error> {
        let keypair = match (self.keypair, &self.key_file) {
            (Some(k), _) => k,
            (None, Some(path)) => load_or_create_key(path)?,
            (None, None) => Keypair::generate_ed25519(),
        };
        let config = self.config;
        let (liquid, control) = Behaviour::new(keypair.public().to_peer_id(), config.clone())?;
        let mut inboxes = HashMap::new();
        for protocol in self.protocols {
            let inbox = control.register_protocol(protocol.clone())?;
            inboxes.insert(protocol, inbox);
        }
        let mut swarm = build_swarm(keypair, &config, liquid)?;
        let local_peer_id = *swarm.local_peer_id();
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE_LEN);
        let listen_addrs = Arc::new(RwLock::new(Vec::new()));
        // Listen before the task starts so errors surface from `build`.
        let mut listeners = Vec::new();
        for address in &self.listen {
            let id = swarm
                .listen_on(address.clone())
                .map_err(|e| listen_error(address, e))?;
            listeners.push(id);
        }
        let required = self
            .required
            .iter()
            .map(|a| Ok((required_peer_id(a)?, a.clone())))
            .collect::<Result<Vec<_>, Error>>()?;
        let mut task = SwarmTask {
            swarm,
            control: control.clone(),
            commands: rx,
            listen_addrs: Arc::clone(&listen_addrs),
            pending_listens: HashMap::new(),
            pending_dials: HashMap::new(),
            supervisor: ConnSupervisor::new(config.supervisor.clone()),
            liveness: Liveness::new(config.ping_interval, config.ping_timeout),
            required_addrs: HashMap::new(),
            next_sweep: Instant::now() + config.supervisor.check_interval,
        };
        for (peer, address) in required {
            task.add_required(peer, address);
        }
        let mut waiting = Vec::new();
        for id in listeners {
            let (reply, rx) = oneshot::channel();
            task.pending_listens.insert(id, reply);
            waiting.push(rx);
        }
        let handle = tokio::spawn(task.run());
        for rx in waiting {
            match tokio::time::timeout(config.dial_timeout, rx).await {
                Ok(Ok(result)) => {
                    result?;
                }
                _ => {
                    return Err(Error::Listen {
                        address: "requested address".into(),
                        reason: "no listen address reported in time".into(),
                    });
                }
            }
        }
        Ok(Host {
            local_peer_id,
            control,
            commands: tx,
            listen_addrs,
            task: Mutex::new(Some(handle)),
            inboxes: Mutex::new(inboxes),
            config,
        })
    }
}

fn build_swarm(
    keypair: Keypair,
    config: &Config,
    liquid: Behaviour,
) -> Result<Swarm<BoxedHandlers<HostBehaviour>>, Error> {
    let behaviour_error = |e: &dyn std::fmt::Display| Error::InvalidConfig {
        reason: format!("behaviour: {e}"),
    };
    let ping_config = ping::Config::new()
        .with_interval(config.ping_interval)
        .with_timeout(config.ping_timeout);
    let idle_timeout = config.ping_timeout * 4;
    let transport = transport::build(&keypair, config)?;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_other_transport(|_| transport)
        .map_err(|e| behaviour_error(&e))?
        .with_behaviour(|key| {
            BoxedHandlers(HostBehaviour {
                identify: identify::Behaviour::new(
                    identify::Config::new(IDENTIFY_PROTOCOL_VERSION.into(), key.public())
                        .with_agent_version(format!("liquid-p2p/{}", env!("CARGO_PKG_VERSION"))),
                ),
                ping: ping::Behaviour::new(ping_config),
                liquid,
            })
        })
        .map_err(|e| behaviour_error(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle_timeout))
        // Dials as a whole; inbound handshakes have their own, shorter deadline
        // (transport.rs).
        .with_connection_timeout(config.dial_timeout)
        .build();
    Ok(swarm)
}

/// What kind of failure a libp2p dial error is.
fn dial_failure(error: &libp2p::swarm::DialError) -> DialFailure {
    match error {
        libp2p::swarm::DialError::WrongPeerId { .. } => DialFailure::WrongPeer,
        libp2p::swarm::DialError::Denied { cause } => cause
            .downcast_ref::<Error>()
            .and_then(|e| match e {
                Error::ConnectionRefused { reason } => Some(*reason),
                _ => None,
            })
            .map_or(DialFailure::Transport, DialFailure::RefusedLocally),
        _ => DialFailure::Transport,
    }
}

/// The peer id at the end of a required peer's address.
fn required_peer_id(address: &Multiaddr) -> Result<PeerId, Error> {
    match address.iter().last() {
        Some(Protocol::P2p(peer)) => Ok(peer),
        _ => Err(Error::InvalidAddress {
            address: address.to_string(),
            reason: "a required peer's address must end in /p2p/<peer id>".into(),
        }),
    }
}

fn listen_error(address: &Multiaddr, e: libp2p::TransportError<std::io::Error>) -> Error {
    // Some transport errors display as an empty string; their debug form names the cause.
    let shown = e.to_string();
    Error::Listen {
        address: address.to_string(),
        reason: if shown.trim().is_empty() {
            format!("{e:?}")
        } else {
            shown
        },
    }
}

fn load_or_create_key(path: &Path) -> Result<Keypair, Error> {
    let err = |reason: String| Error::KeyFile {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::read(path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| err(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().map_err(|e| err(e.to_string()))?;
            write_private(path, &bytes).map_err(|e| err(e.to_string()))?;
            Ok(key)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}

/// A liquid-p2p node: listens, dials, and sends over pooled streams.
///
/// `Host` dereferences to [`Control`] for sending, protocol registration, stats and
/// events.
#[derive(Debug)]
pub struct Host {
    local_peer_id: PeerId,
    control: Control,
    commands: mpsc::Sender<Command>,
    listen_addrs: Arc<RwLock<Vec<Multiaddr>>>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Inboxes of protocols registered through the builder, until taken.
    inboxes: Mutex<HashMap<String, Inbox>>,
    config: Config,
}

impl Deref for Host {
    type Target = Control;
    fn deref(&self) -> &Control {
        &self.control
    }
}

impl Host {
    /// A builder with default settings.
    pub fn builder() -> HostBuilder {
        HostBuilder::default()
    }

    /// The inbox of a protocol registered with [`HostBuilder::register_protocol`];
    /// `None` if it was not registered that way or was already taken.
    pub fn take_inbox(&self, protocol: &str) -> Option<Inbox> {
        self.inboxes.lock().remove(protocol)
    }

    /// This host's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// The handle for sending and registering, to pass to other tasks.
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// Inbound message streams tracked across all peers, connected or not (the
    /// receive-stream manager's total). Read-only, for monitoring: after a peer's
    /// connections close it must fall back, so a figure that only grows is a leak.
    pub fn inbound_stream_count(&self) -> usize {
        self.control.shared().receive.total()
    }

    /// Addresses the host listens on, each ending in `/p2p/<peer id>`.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.listen_addrs.read().clone()
    }

    /// Starts listening on one more address and returns the first address bound.
    pub async fn listen_on(&self, address: Multiaddr) -> Result<Multiaddr, Error> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Listen { address, reply }).await?;
        match tokio::time::timeout(self.config.dial_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::ShutDown),
            Err(_) => Err(Error::Listen {
                address: "requested address".into(),
                reason: "no listen address reported in time".into(),
            }),
        }
    }

    /// Dials `address` and waits for the connection (at most `dial_timeout`).
    /// With a `/p2p/<id>` suffix the remote must prove that identity. Returns the
    /// remote's peer id; if the peer already has the maximum number of
    /// connections, returns at once.
    pub async fn dial(&self, address: Multiaddr) -> Result<PeerId, Error> {
        self.control.shared().check_open()?;
        if let Some(Protocol::P2p(peer)) = address.iter().last()
            && self.pool_stats(&peer).len() >= self.config.max_connections_per_peer
        {
            return Ok(peer);
        }
        let (reply, rx) = oneshot::channel();
        self.command(Command::Dial { address, reply }).await?;
        self.await_dial(rx).await
    }

    async fn await_dial(
        &self,
        rx: oneshot::Receiver<Result<PeerId, Error>>,
    ) -> Result<PeerId, Error> {
        match tokio::time::timeout(self.config.dial_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::ShutDown),
            Err(_) => Err(Error::Dial {
                reason: format!("no connection within {:?}", self.config.dial_timeout),
            }),
        }
    }

    /// Dials `peer` at the addresses the host knows for it (from earlier dials,
    /// identify and required-peer addresses).
    pub async fn dial_peer(&self, peer: PeerId) -> Result<PeerId, Error> {
        self.control.shared().check_open()?;
        if self.pool_stats(&peer).len() >= self.config.max_connections_per_peer {
            return Ok(peer);
        }
        let (reply, rx) = oneshot::channel();
        self.command(Command::DialPeer { peer, reply }).await?;
        self.await_dial(rx).await
    }

    /// Makes the peer at `address` (ending in `/p2p/<peer id>`) required: it is
    /// dialled now if not connected, and redialled whenever it disconnects or a
    /// dial fails, until removed. Adding more addresses of the same peer is allowed.
    pub async fn add_required_peer(&self, address: Multiaddr) -> Result<PeerId, Error> {
        let peer = required_peer_id(&address)?;
        self.command(Command::AddRequired { peer, address }).await?;
        Ok(peer)
    }

    /// Stops keeping `peer` connected; a pending redial is cancelled at once. The
    /// current connection, if any, stays. Returns whether it was required.
    pub async fn remove_required_peer(&self, peer: PeerId) -> Result<bool, Error> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::RemoveRequired { peer, reply })
            .await?;
        rx.await.map_err(|_| Error::ShutDown)
    }

    /// The required peers.
    pub async fn required_peers(&self) -> Result<Vec<PeerId>, Error> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::RequiredPeers { reply }).await?;
        rx.await.map_err(|_| Error::ShutDown)
    }

    /// Closes every connection to `peer`.
    pub async fn disconnect(&self, peer: PeerId) -> Result<(), Error> {
        self.command(Command::Disconnect { peer }).await
    }

    /// Closes one connection; the peer's other connections go on.
    pub async fn close_connection(&self, connection: ConnectionId) -> Result<(), Error> {
        self.command(Command::CloseConnection { connection }).await
    }

    /// Shuts the host down: later calls fail with `ShutDown`, pools close (waiting
    /// borrowers fail), frames being written finish (for up to 3 s), then connections
    /// close (disconnect events are emitted) and the swarm task ends. Calling it again
    /// does nothing.
    pub async fn shutdown(&self) {
        let shared = self.control.shared();
        shared.shut_down();
        // Frames already being written finish (they were accepted before the
        // shutdown); new sends fail with `ShutDown`.
        shared.writes_finished(SHUTDOWN_GRACE).await;
        let (reply, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Shutdown { reply })
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
        let task = self.task.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    async fn command(&self, command: Command) -> Result<(), Error> {
        self.control.shared().check_open()?;
        self.commands
            .send(command)
            .await
            .map_err(|_| Error::ShutDown)
    }
}

struct SwarmTask {
    swarm: Swarm<BoxedHandlers<HostBehaviour>>,
    control: Control,
    commands: mpsc::Receiver<Command>,
    listen_addrs: Arc<RwLock<Vec<Multiaddr>>>,
    pending_listens:
        HashMap<libp2p::core::transport::ListenerId, oneshot::Sender<Result<Multiaddr, Error>>>,
    pending_dials: HashMap<ConnectionId, oneshot::Sender<Result<PeerId, Error>>>,
    supervisor: ConnSupervisor,
    /// Addresses given for required peers; they never age out of the address book.
    required_addrs: HashMap<PeerId, Vec<Multiaddr>>,
    next_sweep: Instant,
    liveness: Liveness,
}

impl SwarmTask {
    async fn run(mut self) {
        let shared = Arc::clone(self.control.shared());
        let announced = &shared.announced_changed;
        let mut liveness_check = tokio::time::interval(self.liveness.check_period());
        liveness_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake = self
                .supervisor
                .next_wakeup()
                .map_or(self.next_sweep, |w| w.min(self.next_sweep));
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => self.on_supervisor_tick(),
                _ = liveness_check.tick() => self.close_silent_connections(),
                _ = announced.notified() => self.on_announced(),
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown { reply }) => {
                        self.close_all().await;
                        let _ = reply.send(());
                        return;
                    }
                    Some(command) => self.on_command(command),
                    // Every handle is gone: nobody can use the host any more.
                    None => {
                        self.control.shared().shut_down();
                        self.close_all().await;
                        return;
                    }
                },
                event = self.swarm.select_next_some() => self.on_event(event),
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Listen { address, reply } => match self.swarm.listen_on(address.clone()) {
                Ok(id) => {
                    self.pending_listens.insert(id, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(listen_error(&address, e)));
                }
            },
            Command::Dial { reply, .. } if self.pending_dials.len() >= MAX_PENDING_DIALS => {
                let _ = reply.send(Err(Error::Dial {
                    reason: format!("{MAX_PENDING_DIALS} dials already in flight"),
                }));
            }
            Command::Dial { address, reply } => {
                let opts = match address.iter().last() {
                    Some(Protocol::P2p(peer)) => DialOpts::peer_id(peer)
                        .addresses(vec![address])
                        .condition(PeerCondition::Always)
                        .build(),
                    _ => DialOpts::unknown_peer_id().address(address).build(),
                };
                self.start_dial(opts, reply);
            }
            Command::Disconnect { peer } => {
                self.swarm.behaviour_mut().liquid.closing_peer(peer);
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::CloseConnection { connection } => {
                self.swarm.close_connection(connection);
            }
            Command::DialPeer { peer, reply } => {
                let opts = DialOpts::peer_id(peer)
                    .addresses(self.required_addrs.get(&peer).cloned().unwrap_or_default())
                    .extend_addresses_through_behaviour()
                    .condition(PeerCondition::Always)
                    .build();
                self.start_dial(opts, reply);
            }
            Command::AddRequired { peer, address } => self.add_required(peer, address),
            Command::RemoveRequired { peer, reply } => {
                self.required_addrs.remove(&peer);
                self.swarm.behaviour_mut().liquid.set_required(peer, false);
                let _ = reply.send(self.supervisor.remove(&peer));
            }
            Command::RequiredPeers { reply } => {
                let _ = reply.send(self.supervisor.required_peers());
            }
            Command::Shutdown { .. } => {}
        }
    }

    fn start_dial(&mut self, opts: DialOpts, reply: oneshot::Sender<Result<PeerId, Error>>) {
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.pending_dials.insert(id, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(Error::Dial {
                    reason: e.to_string(),
                }));
            }
        }
    }

    fn add_required(&mut self, peer: PeerId, address: Multiaddr) {
        let liquid = &mut self.swarm.behaviour_mut().liquid;
        liquid.set_required(peer, true);
        // Also its IP's claim on the reserved handshake slots.
        liquid.add_address(peer, address.clone());
        let list = self.required_addrs.entry(peer).or_default();
        if !list.contains(&address) {
            list.push(address);
        }
        // Connected means confirmed: the exchange with it is done.
        let connected = self.control.shared().is_announced(&peer);
        let actions = self.supervisor.add(peer, connected, Instant::now());
        self.apply(actions);
    }

    /// Peers were announced (their exchange is done): required ones among them
    /// now count as connected, whoever dialled (a peer that dialled us while we
    /// waited to redial it included).
    fn on_announced(&mut self) {
        let now = Instant::now();
        let shared = Arc::clone(self.control.shared());
        for peer in self.supervisor.required_peers() {
            if !self.supervisor.is_connected(&peer) && shared.is_announced(&peer) {
                let actions = self.supervisor.connected(&peer, now);
                self.apply(actions);
            }
        }
    }

    fn close_silent_connections(&mut self) {
        let now = Instant::now();
        for connection in self.control.shared().connections_with_traffic() {
            self.liveness.answered(connection, now);
        }
        for (peer, connection, silent_for) in self.liveness.expired(now) {
            tracing::info!(%peer, %connection, ?silent_for, "no ping answered; closing connection");
            self.swarm.close_connection(connection);
        }
    }

    fn on_supervisor_tick(&mut self) {
        let now = Instant::now();
        if now >= self.next_sweep {
            self.next_sweep = now + self.supervisor.config().check_interval;
        }
        let actions = self.supervisor.poll(now);
        self.apply(actions);
    }

    /// Carries out the supervisor's decisions.
    fn apply(&mut self, actions: Vec<SupervisorAction>) {
        let events = self.control.shared().events.clone();
        for action in actions {
            match action {
                SupervisorAction::Dial(peer) => self.dial_required(peer),
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

    fn dial_required(&mut self, peer: PeerId) {
        let opts = DialOpts::peer_id(peer)
            .addresses(self.required_addrs.get(&peer).cloned().unwrap_or_default())
            .extend_addresses_through_behaviour()
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        match self.swarm.dial(opts) {
            Ok(()) => tracing::debug!(%peer, "dialling required peer"),
            // Another dial to it is under way; its outcome moves the schedule.
            Err(libp2p::swarm::DialError::DialPeerConditionFalse(_)) => {}
            Err(e) => {
                self.control.shared().events.emit(Event::DialFailed {
                    peer: Some(peer),
                    reason: e.to_string(),
                    cause: dial_failure(&e),
                });
                let actions = self.supervisor.dial_failed(&peer, Instant::now());
                self.apply(actions);
            }
        }
    }

    fn on_event(&mut self, event: SwarmEvent<HostBehaviourEvent>) {
        let events = &self.control.shared().events;
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                let full = address
                    .with_p2p(*self.swarm.local_peer_id())
                    .unwrap_or_else(|a| a);
                self.listen_addrs.write().push(full.clone());
                events.emit(Event::Listening {
                    address: full.to_string(),
                });
                if let Some(reply) = self.pending_listens.remove(&listener_id) {
                    let _ = reply.send(Ok(full));
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.write().retain(|a| {
                    let mut bare = a.clone();
                    bare.pop();
                    bare != address
                });
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Some(reply) = self.pending_listens.remove(&listener_id) {
                    let _ = reply.send(Err(Error::Listen {
                        address: String::new(),
                        reason: format!("{reason:?}"),
                    }));
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                ..
            } => {
                if let Some(reply) = self.pending_dials.remove(&connection_id) {
                    let _ = reply.send(Ok(peer_id));
                }
                self.liveness
                    .established(peer_id, connection_id, Instant::now());
                // A required peer counts as connected once confirmed (its exchange
                // done): see `on_announced`.
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.liveness.closed(connection_id);
                if num_established == 0 {
                    let now = Instant::now();
                    let actions = if self.supervisor.is_connected(&peer_id) {
                        self.supervisor.disconnected(&peer_id, now)
                    } else {
                        // Closed before it was confirmed (refused by the remote, or
                        // lost at once): a failed attempt, so the backoff applies.
                        self.supervisor.dial_failed(&peer_id, now)
                    };
                    self.apply(actions);
                }
            }
            SwarmEvent::Behaviour(HostBehaviourEvent::Ping(ping::Event {
                connection,
                result: Ok(_),
                ..
            })) => self.liveness.answered(connection, Instant::now()),
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                let reason = error.to_string();
                events.emit(Event::DialFailed {
                    peer: peer_id,
                    reason: reason.clone(),
                    cause: dial_failure(&error),
                });
                if let Some(reply) = self.pending_dials.remove(&connection_id) {
                    let _ = reply.send(Err(Error::Dial { reason }));
                }
                // Any failed dial to a required peer we are waiting on counts,
                // including one that reached a different peer id.
                if let Some(peer) = peer_id
                    && self.supervisor.is_dialing(&peer)
                    && !self.swarm.is_connected(&peer)
                {
                    let actions = self.supervisor.dial_failed(&peer, Instant::now());
                    self.apply(actions);
                }
            }
            SwarmEvent::Behaviour(HostBehaviourEvent::Ping(ping::Event {
                connection,
                result: Err(ping::Failure::Unsupported),
                ..
            })) => {
                // A peer without ping (a plain libp2p node) is not judged by it.
                self.liveness.closed(connection);
            }
            SwarmEvent::Behaviour(HostBehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Err(error),
            })) => {
                // Not a reason to close by itself: on a slow link a ping waits
                // behind the data queued before it and times out while the peer
                // keeps delivering. The liveness table closes the connection if
                // neither pings nor bytes come back (`close_silent_connections`).
                tracing::debug!(%peer, %connection, %error, "ping failed");
            }
            SwarmEvent::Behaviour(HostBehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                let liquid = &mut self.swarm.behaviour_mut().liquid;
                for address in info.listen_addrs.into_iter().take(8) {
                    liquid.add_address(peer_id, address);
                }
            }
            _ => {}
        }
    }

    /// Closes every connection and waits (bounded) for the swarm to report them closed.
    async fn close_all(&mut self) {
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        while self.swarm.connected_peers().next().is_some() {
            match tokio::time::timeout_at(deadline, self.swarm.select_next_some()).await {
                Ok(event) => self.on_event(event),
                Err(_) => break,
            }
        }
    }
}
