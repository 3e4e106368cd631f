//! [`Host`]: the ready-made node, a thin driver over the liquid [`Behaviour`].
//!
//! A host builds a libp2p `Swarm` (TCP + noise + yamux, QUIC with the `quic`
//! feature, names resolved with the `dns` feature) with identify,
//! the liquid behaviour (which carries ping, the supervisor, liveness, the address
//! book and the events), gossip ([`Broadcast`], unless `broadcast.enabled` is
//! false), discovery ([`Discovery`], when `discovery.enabled` is set) and, if the
//! node gives one, the node's own behaviour;
//! one tokio task drives it. The application talks to that task through a
//! bounded command queue for what needs the swarm (listen, dial, disconnect,
//! required peers, the node's behaviour, shutdown) and through [`Control`] for
//! everything else, which never waits on the swarm task.

use std::{
    collections::HashMap,
    io,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use either::Either;
use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm,
    core::transport::ListenerId,
    identify,
    identity::Keypair,
    swarm::{
        ConnectionId, DialError, NetworkBehaviour, SwarmEvent,
        behaviour::toggle::Toggle,
        dial_opts::{DialOpts, PeerCondition},
        dummy,
    },
};
use liquid_p2p_core::{Config, DialFailure, Error, ProtocolPriority, TransportFeature};
use parking_lot::{Mutex, RwLock};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use crate::{
    behaviour::{Behaviour, address_peer, dial_failure, required_peer_id},
    boxed::BoxedHandlers,
    broadcast::Broadcast,
    control::Control,
    discovery::Discovery,
    receiver::Inbox,
    transport,
};

/// Commands queued for the swarm task.
const COMMAND_QUEUE_LEN: usize = 256;
/// Dials awaiting their outcome; more are refused until some finish.
const MAX_PENDING_DIALS: usize = 1024;
/// How long shutdown waits for connections to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// How often a swarm waiting for the node to read its behaviour's events checks
/// whether the host is shutting down.
const FULL_RECHECK: Duration = Duration::from_millis(100);
/// Peers whose addresses identify remembers; it reports an address to the
/// behaviours (`NewExternalAddrOfPeer`) when it is new to this cache.
const IDENTIFY_CACHE_SIZE: usize = 100;

/// Identify protocol version announced by hosts.
pub const IDENTIFY_PROTOCOL_VERSION: &str = "/liquid/1.0.0";

/// The host's swarm: identify, the liquid behaviour, broadcast, discovery, and the
/// node's own.
#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct HostBehaviour<B: NetworkBehaviour> {
    identify: identify::Behaviour,
    liquid: Behaviour,
    broadcast: Toggle<Broadcast>,
    discovery: Toggle<Discovery>,
    node: B,
}

/// Runs on the swarm task with the node's behaviour.
type NodeCall<B> = Box<dyn FnOnce(&mut B) + Send>;

enum Command<B> {
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
        address: Multiaddr,
    },
    RemoveRequired {
        peer: PeerId,
        reply: oneshot::Sender<bool>,
    },
    RequiredPeers {
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    Node(NodeCall<B>),
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// Makes the node's behaviour once the host's identity is known.
type MakeBehaviour<B> = Box<dyn FnOnce(&Keypair) -> B + Send>;

/// Builds a [`Host`]; `B` is the node's own behaviour, if it adds one
/// ([`HostBuilder::behaviour`]); `'r` is the borrow of the metrics registry, if
/// one is given ([`HostBuilder::metrics`], feature `metrics`).
pub struct HostBuilder<'r, B = dummy::Behaviour> {
    settings: Settings,
    make_behaviour: MakeBehaviour<B>,
    registry: Registry<'r>,
}

/// What a [`HostBuilder`] collects that does not depend on its type parameters.
#[derive(Default)]
struct Settings {
    keypair: Option<Keypair>,
    key_file: Option<PathBuf>,
    listen: Vec<Multiaddr>,
    required: Vec<Multiaddr>,
    protocols: Vec<(String, ProtocolPriority)>,
    config: Config,
}

/// Where [`HostBuilder::build`] registers the host's metrics.
#[cfg(feature = "metrics")]
type Registry<'r> = Option<&'r mut prometheus_client::registry::Registry>;
#[cfg(not(feature = "metrics"))]
type Registry<'r> = std::marker::PhantomData<&'r mut ()>;

impl<B> std::fmt::Debug for HostBuilder<'_, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostBuilder")
            .field("listen", &self.settings.listen)
            .field("required", &self.settings.required)
            .field("protocols", &self.settings.protocols)
            .field("config", &self.settings.config)
            .finish_non_exhaustive()
    }
}

impl Default for HostBuilder<'_> {
    fn default() -> Self {
        Self {
            settings: Settings::default(),
            make_behaviour: Box::new(|_| dummy::Behaviour),
            registry: Default::default(),
        }
    }
}

impl<'r, B> HostBuilder<'r, B>
where
    B: NetworkBehaviour + Send + 'static,
    B::ToSwarm: Send + 'static,
{
    /// Registers a protocol before the host starts, so that it is in the list sent to
    /// the very first peer and no early frame for it is skipped as unknown
    /// (repeatable). Take its inbox with [`Host::take_inbox`].
    pub fn register_protocol(self, protocol: impl Into<String>) -> Self {
        self.register_protocol_with_priority(protocol, ProtocolPriority::Normal)
    }

    /// [`register_protocol`](Self::register_protocol) with a send priority (see
    /// [`ProtocolPriority`]); change it later with [`Control::set_priority`].
    pub fn register_protocol_with_priority(
        mut self,
        protocol: impl Into<String>,
        priority: ProtocolPriority,
    ) -> Self {
        self.settings.protocols.push((protocol.into(), priority));
        self
    }

    /// Keeps the peer at `address` (which must end in `/p2p/<peer id>`) connected,
    /// redialling on the supervisor's schedule (repeatable). It is dialled while
    /// the host starts, so its first connection's events may come before any
    /// [`Control::events`] subscription exists; to see them, subscribe first and
    /// then call [`Host::add_required_peer`].
    pub fn required_peer(mut self, address: Multiaddr) -> Self {
        self.settings.required.push(address);
        self
    }

    /// Uses this identity. Default: a fresh ed25519 key.
    pub fn keypair(mut self, keypair: Keypair) -> Self {
        self.settings.keypair = Some(keypair);
        self
    }

    /// Loads the identity from `path`, creating the file (mode 0600) with a new
    /// ed25519 key if it does not exist, so the peer id survives restarts.
    pub fn key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.settings.key_file = Some(path.into());
        self
    }

    /// Listens on `address` once built (repeatable). `/tcp/..` uses TCP + noise +
    /// yamux; `/udp/../quic-v1` uses QUIC (with the `quic` feature; without it
    /// `build` fails with [`Error::TransportNotBuilt`]).
    pub fn listen_on(mut self, address: Multiaddr) -> Self {
        self.settings.listen.push(address);
        self
    }

    /// Uses `config` instead of the defaults.
    pub fn config(mut self, config: Config) -> Self {
        self.settings.config = config;
        self
    }

    /// Runs the node's own behaviour (gossipsub, Kademlia, request-response, a
    /// `#[derive(NetworkBehaviour)]` of several) in the host's swarm, next to
    /// identify and the liquid behaviour. `make` gets the host's identity. Reach
    /// the behaviour with [`Host::with_behaviour`] and take its events with
    /// [`Host::take_behaviour_events`].
    ///
    /// The host runs identify and ping already: the node's behaviour should not
    /// add them again. When other protocols meet peers that do not run liquid,
    /// scope the policy with [`Config::scoped_to_liquid_peers`].
    pub fn behaviour<N>(
        self,
        make: impl FnOnce(&Keypair) -> N + Send + 'static,
    ) -> HostBuilder<'r, N>
    where
        N: NetworkBehaviour + Send + 'static,
        N::ToSwarm: Send + 'static,
    {
        HostBuilder {
            settings: self.settings,
            make_behaviour: Box::new(make),
            registry: self.registry,
        }
    }

    /// Registers the host's metrics in `registry` when it is built (feature
    /// `metrics`): the liquid behaviour's (prefix `liquid_`, see
    /// [`Behaviour::register_metrics`]), the swarm's own events and the bandwidth
    /// per transport (libp2p-metrics, prefix `libp2p_`, with the pings, Kademlia
    /// queries and gossip messages of the behaviours inside: see
    /// [`Behaviour::record_libp2p_metrics`]), and gossipsub's figures
    /// when broadcast is on, under the prefix `gossipsub_`
    /// (`gossipsub_heartbeat_duration`, `gossipsub_mesh_peer_counts`, ...). The
    /// registry is the node's: serve it next to its own metrics.
    #[cfg(feature = "metrics")]
    pub fn metrics<'s>(
        self,
        registry: &'s mut prometheus_client::registry::Registry,
    ) -> HostBuilder<'s, B> {
        HostBuilder {
            settings: self.settings,
            make_behaviour: self.make_behaviour,
            registry: Some(registry),
        }
    }

    /// Builds the host, starts its swarm task and waits until it listens on every
    /// requested address. Must be called inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidConfig`]: [`Config::validate`] rejects the config, no
    ///   tokio runtime is running, or a behaviour or the transport could not be
    ///   built from it.
    /// - [`Error::KeyFile`]: the [`key_file`](Self::key_file) could not be
    ///   read, parsed or created.
    /// - [`Error::InvalidProtocol`] or [`Error::ProtocolAlreadyRegistered`]: a
    ///   protocol given to [`register_protocol`](Self::register_protocol) is
    ///   invalid or was given twice.
    /// - [`Error::TransportNotBuilt`]: a listen address needs a Cargo feature this
    ///   build leaves out (`quic` for `/quic-v1`, `dns` for `/dns*`).
    /// - [`Error::MissingPeerId`]: a [`required_peer`](Self::required_peer)'s
    ///   address does not end in `/p2p/<peer id>`.
    /// - [`Error::Listen`]: a [`listen_on`](Self::listen_on) address could not
    ///   be bound (the operating system's error, `Unsupported` for an address
    ///   no transport takes, `TimedOut` when no address was reported within
    ///   `dial_timeout`).
    /// - [`Error::ShutDown`]: the swarm task ended before it listened.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes stops the half-built host: its
    /// swarm task sees its command queue close and ends, closing its listeners.
    /// A key file it created stays.
    pub async fn build(self) -> Result<Host<B>, Error> {
        let Settings {
            keypair,
            key_file,
            listen,
            required,
            protocols,
            config,
        } = self.settings;
        let keypair = match (keypair, &key_file) {
            (Some(k), _) => k,
            (None, Some(path)) => load_or_create_key(path)?,
            (None, None) => Keypair::generate_ed25519(),
        };
        #[cfg_attr(not(feature = "metrics"), allow(unused_mut))]
        let mut registry = self.registry;
        let (mut liquid, control) = Behaviour::new(keypair.public().to_peer_id(), config.clone())?;
        #[cfg(feature = "metrics")]
        let swarm_metrics = registry.as_deref_mut().map(|registry| {
            liquid.register_metrics(registry);
            let swarm_metrics = Arc::new(libp2p::metrics::Metrics::new(registry));
            liquid.record_libp2p_metrics(Arc::clone(&swarm_metrics));
            swarm_metrics
        });
        let mut inboxes = HashMap::new();
        for (protocol, priority) in protocols {
            let inbox = control.register_protocol_with_priority(protocol.clone(), priority)?;
            inboxes.insert(protocol, inbox);
        }
        for address in required {
            transport::check_built(&address)?;
            liquid.add_required_peer(address)?;
        }
        let broadcast = if config.broadcast.enabled {
            #[cfg(feature = "metrics")]
            let broadcast = Broadcast::build(&keypair, &control, registry.as_deref_mut())?;
            #[cfg(not(feature = "metrics"))]
            let broadcast = Broadcast::new(&keypair, &control)?;
            Some(broadcast)
        } else {
            None
        };
        let discovery = if config.discovery.enabled {
            Some(Discovery::new(keypair.public().to_peer_id(), &control)?)
        } else {
            None
        };
        let node = (self.make_behaviour)(&keypair);
        let mut swarm = build_swarm(
            keypair,
            &config,
            liquid,
            (broadcast, discovery),
            node,
            &mut registry,
        )?;
        let local_peer_id = *swarm.local_peer_id();
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE_LEN);
        let listen_addrs = Arc::new(RwLock::new(Vec::new()));
        // Listen before the task starts so errors surface from `build`.
        let mut listeners = Vec::new();
        for address in listen {
            let id = swarm
                .listen_on(address.clone())
                .map_err(|e| listen_error(&address, e))?;
            listeners.push((id, address));
        }
        let (events_tx, events_rx) = mpsc::channel(config.event_queue_len);
        let events_taken = Arc::new(AtomicBool::new(false));
        let mut task = SwarmTask {
            swarm,
            control: control.clone(),
            commands: rx,
            listen_addrs: Arc::clone(&listen_addrs),
            pending_listens: HashMap::new(),
            pending_dials: HashMap::new(),
            node_events: Some(events_tx),
            node_events_taken: Arc::clone(&events_taken),
            #[cfg(feature = "metrics")]
            metrics: swarm_metrics,
        };
        let mut waiting = Vec::new();
        for (id, address) in listeners {
            let (reply, rx) = oneshot::channel();
            task.pending_listens.insert(id, (address.clone(), reply));
            waiting.push((address, rx));
        }
        let span = tracing::info_span!("host", peer = %local_peer_id);
        let handle = tokio::spawn(tracing::Instrument::instrument(task.run(), span));
        for (address, rx) in waiting {
            match tokio::time::timeout(config.dial_timeout, rx).await {
                Ok(Ok(result)) => {
                    result?;
                }
                Ok(Err(_)) => return Err(Error::ShutDown),
                Err(_) => return Err(listen_timed_out(address)),
            }
        }
        Ok(Host {
            local_peer_id,
            control,
            commands: tx,
            listen_addrs,
            task: Mutex::new(Some(handle)),
            inboxes: Mutex::new(inboxes),
            node_events: Mutex::new(Some(events_rx)),
            node_events_taken: events_taken,
            config,
        })
    }
}

fn build_swarm<B: NetworkBehaviour>(
    keypair: Keypair,
    config: &Config,
    liquid: Behaviour,
    (broadcast, discovery): (Option<Broadcast>, Option<Discovery>),
    node: B,
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))] registry: &mut Registry<'_>,
) -> Result<Swarm<BoxedHandlers<HostBehaviour<B>>>, Error> {
    let behaviour_error = |e: &dyn std::fmt::Display| Error::InvalidConfig {
        reason: format!("behaviour: {e}"),
    };
    let idle_timeout = config.ping_timeout * 4;
    let transport = transport::build(&keypair, config)?;
    #[cfg(feature = "metrics")]
    let transport = match registry.as_deref_mut() {
        Some(registry) => {
            use libp2p::Transport as _;
            libp2p::metrics::BandwidthTransport::new(transport, registry)
                .map(|(peer, muxer), _| (peer, libp2p::core::muxing::StreamMuxerBox::new(muxer)))
                .boxed()
        }
        None => transport,
    };
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_other_transport(|_| transport)
        .map_err(|e| behaviour_error(&e))?
        .with_behaviour(|key| {
            BoxedHandlers(HostBehaviour {
                identify: identify::Behaviour::new(
                    identify::Config::new(IDENTIFY_PROTOCOL_VERSION.into(), key.public())
                        .with_agent_version(format!("liquid-p2p/{}", env!("CARGO_PKG_VERSION")))
                        .with_cache_size(IDENTIFY_CACHE_SIZE),
                ),
                liquid,
                broadcast: broadcast.into(),
                discovery: discovery.into(),
                node,
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

fn listen_error(address: &Multiaddr, e: libp2p::TransportError<io::Error>) -> Error {
    if let libp2p::TransportError::MultiaddrNotSupported(_) = e
        // Names are never listened on, with or without the `dns` feature.
        && let Some(feature @ TransportFeature::Quic) = transport::missing_feature(address)
    {
        return Error::TransportNotBuilt {
            address: address.clone(),
            feature,
        };
    }
    let source = match e {
        libp2p::TransportError::MultiaddrNotSupported(_) => io::Error::new(
            io::ErrorKind::Unsupported,
            "no transport of the host takes this address",
        ),
        libp2p::TransportError::Other(e) => os_error(e),
    };
    // Some transport errors display as an empty string; their debug form names
    // the cause.
    let source = if source.to_string().trim().is_empty() {
        io::Error::new(source.kind(), format!("{source:?}"))
    } else {
        source
    };
    Error::Listen {
        address: address.clone(),
        source: Arc::new(source),
    }
}

/// The operating system's error inside the layers libp2p wraps it in (boxed
/// transports wrap with `io::Error::other`, the swarm builder's transport adds an
/// `Either` and its dial timeout a `TransportTimeoutError`), so its kind
/// (`AddrInUse`, ...) can be matched; `e` itself if none is found. Tested in
/// tests/errors.rs, which notices if libp2p layers it differently.
fn os_error(e: io::Error) -> io::Error {
    type Layered =
        libp2p::core::transport::timeout::TransportTimeoutError<Either<io::Error, io::Error>>;
    let mut current: Option<&(dyn std::error::Error + 'static)> =
        e.get_ref().map(|inner| inner as _);
    while let Some(layer) = current {
        current = if let Some(io) = layer.downcast_ref::<io::Error>() {
            if let Some(code) = io.raw_os_error() {
                return io::Error::from_raw_os_error(code);
            }
            io.get_ref().map(|inner| inner as _)
        } else if let Some(Layered::Other(either)) = layer.downcast_ref::<Layered>() {
            Some(either.as_ref().into_inner() as _)
        } else {
            layer
                .downcast_ref::<Either<io::Error, io::Error>>()
                .map(|either| either.as_ref().into_inner() as _)
        };
    }
    e
}

fn listen_timed_out(address: Multiaddr) -> Error {
    Error::Listen {
        address,
        source: Arc::new(io::Error::new(
            io::ErrorKind::TimedOut,
            "no listen address reported in time",
        )),
    }
}

/// A dial that failed before or without a libp2p `DialError`.
fn dial_error(cause: DialFailure) -> Error {
    Error::Dial {
        cause,
        reason: cause.to_string(),
    }
}

fn swarm_dial_error(error: &DialError) -> Error {
    Error::Dial {
        cause: dial_failure(error),
        reason: error.to_string(),
    }
}

fn load_or_create_key(path: &Path) -> Result<Keypair, Error> {
    let err = |source: io::Error| Error::KeyFile {
        path: path.to_path_buf(),
        source: Arc::new(source),
    };
    let invalid =
        |e: libp2p::identity::DecodingError| io::Error::new(io::ErrorKind::InvalidData, e);
    match std::fs::read(path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| err(invalid(e))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().map_err(|e| err(invalid(e)))?;
            write_private(path, &bytes).map_err(err)?;
            Ok(key)
        }
        Err(e) => Err(err(e)),
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

/// A liquid-p2p node: listens, dials, and sends over pooled streams; `B` is the
/// node's own behaviour, if it added one with [`HostBuilder::behaviour`].
///
/// ```
/// use liquid_p2p::{Error, Host, ProtocolPriority};
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Error> {
/// // A validator that takes votes (urgent) and blocks.
/// let validator = Host::builder()
///     .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
///     .register_protocol_with_priority("/chain1/votes/1", ProtocolPriority::High)
///     .register_protocol("/chain1/blocks/1")
///     .build()
///     .await?;
/// let mut votes = validator.take_inbox("/chain1/votes/1").expect("registered");
///
/// // A node that sends it a vote.
/// let node = Host::builder().build().await?;
/// let validator_id = node.dial(validator.listen_addrs()[0].clone()).await?;
/// node.control().send(validator_id, "/chain1/votes/1", b"vote for block 9").await?;
///
/// let vote = votes.recv().await.expect("delivered");
/// assert_eq!(vote.peer, node.local_peer_id());
/// assert_eq!(&vote.payload[..], b"vote for block 9");
///
/// node.shutdown().await;
/// validator.shutdown().await;
/// # Ok(())
/// # }
/// ```
///
/// Sending, protocol registration, stats and events go through its [`Control`]
/// ([`Host::control`]), which other tasks can hold too.
///
/// Shut it down with [`shutdown`](Self::shutdown), which waits for the frames
/// being written and for its tasks. Dropping the host without it stops the
/// swarm task in the background, unwaited.
pub struct Host<B: NetworkBehaviour = dummy::Behaviour> {
    local_peer_id: PeerId,
    control: Control,
    commands: mpsc::Sender<Command<B>>,
    listen_addrs: Arc<RwLock<Vec<Multiaddr>>>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Inboxes of protocols registered through the builder, until taken.
    inboxes: Mutex<HashMap<String, Inbox>>,
    /// Events of the node's behaviour, until taken.
    node_events: Mutex<Option<mpsc::Receiver<B::ToSwarm>>>,
    node_events_taken: Arc<AtomicBool>,
    config: Config,
}

impl<B: NetworkBehaviour> std::fmt::Debug for Host<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("local_peer_id", &self.local_peer_id)
            .field("listen_addrs", &*self.listen_addrs.read())
            .finish_non_exhaustive()
    }
}

impl Host {
    /// A builder with default settings.
    pub fn builder() -> HostBuilder<'static> {
        HostBuilder::default()
    }
}

impl<B> Host<B>
where
    B: NetworkBehaviour + Send + 'static,
    B::ToSwarm: Send + 'static,
{
    /// The inbox of a protocol registered with [`HostBuilder::register_protocol`];
    /// `None` if it was not registered that way or was already taken.
    pub fn take_inbox(&self, protocol: &str) -> Option<Inbox> {
        self.inboxes.lock().remove(protocol)
    }

    /// The events of the node's behaviour ([`HostBuilder::behaviour`]); `None`
    /// once taken. Until they are taken, up to `event_queue_len` of them wait and
    /// later ones are dropped; once taken, none is dropped: the swarm waits for
    /// the receiver when it is full, so keep reading it.
    pub fn take_behaviour_events(&self) -> Option<mpsc::Receiver<B::ToSwarm>> {
        let events = self.node_events.lock().take();
        if events.is_some() {
            self.node_events_taken.store(true, Ordering::Release);
        }
        events
    }

    /// Runs `f` with the node's behaviour on the swarm task (to publish on
    /// gossipsub, start a Kademlia query, send a request) and returns its result.
    ///
    /// `f` runs between the swarm's events, so keep it short; a panic in it
    /// ends the swarm task.
    ///
    /// # Errors
    ///
    /// [`Error::ShutDown`]: the host has shut down (or its swarm task ended
    /// before `f` ran).
    ///
    /// # Cancel safety
    ///
    /// The call is queued for the swarm task. Dropped before that, `f` never
    /// runs; after, it runs anyway and its result is dropped.
    pub async fn with_behaviour<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut B) -> R + Send + 'static,
    ) -> Result<R, Error> {
        let (reply, rx) = oneshot::channel();
        let call: NodeCall<B> = Box::new(move |behaviour| {
            let _ = reply.send(f(behaviour));
        });
        self.command(Command::Node(call)).await?;
        rx.await.map_err(|_| Error::ShutDown)
    }

    /// This host's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// The handle for sending, registering protocols, stats and events; clone it
    /// to hand to other tasks.
    pub fn control(&self) -> &Control {
        &self.control
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
    ///
    /// # Errors
    ///
    /// - [`Error::Listen`]: the address could not be bound (the operating
    ///   system's error, such as `AddrInUse`; `Unsupported` for an address no
    ///   transport of the host takes; `TimedOut` when no address was reported
    ///   within `dial_timeout`).
    /// - [`Error::TransportNotBuilt`]: the address needs a Cargo feature this
    ///   build leaves out (`quic` for `/quic-v1`, `dns` for `/dns*`).
    /// - [`Error::ShutDown`]: the host has shut down.
    ///
    /// # Cancel safety
    ///
    /// The call is queued for the swarm task. Dropped before that, nothing
    /// happens; after, the host starts listening anyway, and the address shows
    /// up in [`listen_addrs`](Self::listen_addrs).
    pub async fn listen_on(&self, address: Multiaddr) -> Result<Multiaddr, Error> {
        let (reply, rx) = oneshot::channel();
        let requested = address.clone();
        self.command(Command::Listen { address, reply }).await?;
        match tokio::time::timeout(self.config.dial_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::ShutDown),
            Err(_) => Err(listen_timed_out(requested)),
        }
    }

    /// Dials `address` and waits for the connection (at most `dial_timeout`).
    /// With a `/p2p/<id>` suffix the remote must prove that identity. Returns the
    /// remote's peer id; if the peer already has the maximum number of
    /// connections, returns at once. The peer is a liquid peer whatever the
    /// [`PeerScope`](crate::PeerScope).
    ///
    /// `Ok` means the connection is established; the protocol exchange runs
    /// after it ([`Event::PeerConnected`](crate::Event::PeerConnected) says
    /// when it is done), and a remote that refuses the connection (its limits,
    /// its blacklist) closes it a moment later
    /// ([`Event::DialFailed`](crate::Event::DialFailed) with
    /// [`DialFailure::RefusedByRemote`]).
    ///
    /// # Errors
    ///
    /// - [`Error::Dial`] with its [`DialFailure`]: `Transport` (no connection,
    ///   or the handshake failed), `WrongPeer`, `RefusedLocally` (this host's
    ///   limits, blacklist or allow-list), `Denied` (another behaviour),
    ///   `SelfDial`, `Aborted`, `TimedOut` (no connection within
    ///   `dial_timeout`) or `TooManyDials` (1024 dials of the host already
    ///   wait for their outcome).
    /// - [`Error::TransportNotBuilt`]: the address needs a Cargo feature this
    ///   build leaves out (`quic` for `/quic-v1`, `dns` for `/dns*`).
    /// - [`Error::ShutDown`]: the host has shut down.
    ///
    /// # Cancel safety
    ///
    /// The dial is queued for the swarm task. Dropped before that, nothing is
    /// dialled; after, the dial goes on in the background, and the connection,
    /// if it comes up, stays (as a liquid peer).
    pub async fn dial(&self, address: Multiaddr) -> Result<PeerId, Error> {
        self.control.shared().lifecycle.check_open()?;
        transport::check_built(&address)?;
        if let Some(peer) = address_peer(&address)
            && self.control().pool_stats(&peer).len() >= self.config.max_connections_per_peer
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
            Err(_) => Err(dial_error(DialFailure::TimedOut {
                after: self.config.dial_timeout,
            })),
        }
    }

    /// Dials `peer` at the addresses the host knows for it (from earlier dials,
    /// identify and required-peer addresses).
    ///
    /// # Errors
    ///
    /// As [`dial`](Self::dial), and [`Error::Dial`] with
    /// [`DialFailure::NoAddresses`] when no address of `peer` is known.
    ///
    /// # Cancel safety
    ///
    /// As [`dial`](Self::dial): once queued, the dial goes on in the
    /// background.
    pub async fn dial_peer(&self, peer: PeerId) -> Result<PeerId, Error> {
        self.control.shared().lifecycle.check_open()?;
        if self.control().pool_stats(&peer).len() >= self.config.max_connections_per_peer {
            return Ok(peer);
        }
        let (reply, rx) = oneshot::channel();
        self.command(Command::DialPeer { peer, reply }).await?;
        self.await_dial(rx).await
    }

    /// Makes the peer at `address` (ending in `/p2p/<peer id>`) required: it is
    /// dialled now if not connected, and redialled whenever it disconnects or a
    /// dial fails, until removed. Adding more addresses of the same peer is allowed.
    ///
    /// Returns once the peer is handed to the swarm task, before any dial:
    /// watch [`Event::RequiredPeerConnected`](crate::Event::RequiredPeerConnected),
    /// [`Event::RedialScheduled`](crate::Event::RedialScheduled) and
    /// [`Event::RequiredPeerGaveUp`](crate::Event::RequiredPeerGaveUp) for what
    /// follows. A required peer is never evicted to make room for others.
    ///
    /// # Errors
    ///
    /// - [`Error::MissingPeerId`]: `address` does not end in `/p2p/<peer id>`.
    /// - [`Error::TransportNotBuilt`]: the address needs a Cargo feature this
    ///   build leaves out (`quic` for `/quic-v1`, `dns` for `/dns*`).
    /// - [`Error::ShutDown`]: the host has shut down.
    ///
    /// # Cancel safety
    ///
    /// Dropped before the call is queued for the swarm task, nothing happens;
    /// after, the peer becomes required anyway.
    pub async fn add_required_peer(&self, address: Multiaddr) -> Result<PeerId, Error> {
        let peer = required_peer_id(&address)?;
        transport::check_built(&address)?;
        self.command(Command::AddRequired { address }).await?;
        Ok(peer)
    }

    /// Stops keeping `peer` connected; a pending redial is cancelled at once. The
    /// current connection, if any, stays. Returns whether it was required.
    ///
    /// # Errors
    ///
    /// [`Error::ShutDown`]: the host has shut down.
    ///
    /// # Cancel safety
    ///
    /// Dropped before the call is queued for the swarm task, nothing happens;
    /// after, the peer stops being required anyway and only the answer is lost.
    pub async fn remove_required_peer(&self, peer: PeerId) -> Result<bool, Error> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::RemoveRequired { peer, reply })
            .await?;
        rx.await.map_err(|_| Error::ShutDown)
    }

    /// The required peers.
    ///
    /// # Errors
    ///
    /// [`Error::ShutDown`]: the host has shut down.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn required_peers(&self) -> Result<Vec<PeerId>, Error> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::RequiredPeers { reply }).await?;
        rx.await.map_err(|_| Error::ShutDown)
    }

    /// Closes every connection to `peer`.
    ///
    /// Returns once the swarm task has the command, not once the connections
    /// are closed: [`Event::PeerDisconnected`](crate::Event::PeerDisconnected)
    /// tells when. A required peer is redialled on its schedule; remove it
    /// first ([`remove_required_peer`](Self::remove_required_peer)) to keep it
    /// away.
    ///
    /// # Errors
    ///
    /// [`Error::ShutDown`]: the host has shut down.
    ///
    /// # Cancel safety
    ///
    /// Dropped while waiting for room in the swarm task's command queue,
    /// nothing is closed; once queued, the connections close anyway.
    pub async fn disconnect(&self, peer: PeerId) -> Result<(), Error> {
        self.command(Command::Disconnect { peer }).await
    }

    /// Closes one connection; the peer's other connections go on.
    ///
    /// Returns once the swarm task has the command, not once the connection
    /// is closed ([`Event::ConnectionClosed`](crate::Event::ConnectionClosed)
    /// tells when).
    ///
    /// # Errors
    ///
    /// [`Error::ShutDown`]: the host has shut down.
    ///
    /// # Cancel safety
    ///
    /// As [`disconnect`](Self::disconnect): once queued, the connection closes
    /// anyway.
    pub async fn close_connection(&self, connection: ConnectionId) -> Result<(), Error> {
        self.command(Command::CloseConnection { connection }).await
    }

    /// Shuts the host down: later calls fail with `ShutDown`, pools close (waiting
    /// borrowers fail), frames being written finish (for up to 3 s), then connections
    /// close (disconnect events are emitted), the swarm task ends, and every task
    /// the library spawned (readers, exchanges, stream opens) ends (waited for up
    /// to 3 s more; [`Control::running_tasks`] tells). Calling it again does
    /// nothing.
    ///
    /// # Errors
    ///
    /// None: it always completes. Its waits are bounded: 3 s each for the
    /// frames being written, the connections to close and the tasks to end.
    ///
    /// # Cancel safety
    ///
    /// The host is shut down for its users from the first poll: later calls
    /// fail with `ShutDown` and pools are closed. Dropped before it completes,
    /// the rest (closing connections, ending the swarm task, waiting for tasks)
    /// happens when `shutdown` is called again, which finishes the job, or in
    /// the background, unwaited, once the host is dropped.
    pub async fn shutdown(&self) {
        let shared = self.control.shared();
        shared.shut_down();
        // Frames already being written finish (they were accepted before the
        // shutdown); new sends fail with `ShutDown`.
        shared.lifecycle.writes_finished(SHUTDOWN_GRACE).await;
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
        // Readers, exchanges and stream opens end as their connections close.
        let running = shared.lifecycle.tasks_finished(SHUTDOWN_GRACE).await;
        if running > 0 {
            tracing::warn!(running, "tasks still running after the shutdown grace");
        }
    }

    async fn command(&self, command: Command<B>) -> Result<(), Error> {
        self.control.shared().lifecycle.check_open()?;
        self.commands
            .send(command)
            .await
            .map_err(|_| Error::ShutDown)
    }
}

struct SwarmTask<B: NetworkBehaviour> {
    swarm: Swarm<BoxedHandlers<HostBehaviour<B>>>,
    control: Control,
    commands: mpsc::Receiver<Command<B>>,
    listen_addrs: Arc<RwLock<Vec<Multiaddr>>>,
    /// Listeners waiting for their first address, with the address asked for.
    pending_listens: HashMap<ListenerId, (Multiaddr, oneshot::Sender<Result<Multiaddr, Error>>)>,
    pending_dials: HashMap<ConnectionId, oneshot::Sender<Result<PeerId, Error>>>,
    /// Where the node's behaviour's events go; `None` once the receiver is gone.
    node_events: Option<mpsc::Sender<B::ToSwarm>>,
    node_events_taken: Arc<AtomicBool>,
    /// Records the swarm's events, when the host has metrics.
    #[cfg(feature = "metrics")]
    metrics: Option<Arc<libp2p::metrics::Metrics>>,
}

impl<B> SwarmTask<B>
where
    B: NetworkBehaviour + Send + 'static,
    B::ToSwarm: Send + 'static,
{
    async fn run(mut self) {
        loop {
            tokio::select! {
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
                event = self.swarm.select_next_some() => self.on_event(event).await,
            }
        }
    }

    fn liquid(&mut self) -> &mut Behaviour {
        &mut self.swarm.behaviour_mut().liquid
    }

    fn on_command(&mut self, command: Command<B>) {
        match command {
            Command::Listen { address, reply } => match self.swarm.listen_on(address.clone()) {
                Ok(id) => {
                    self.pending_listens.insert(id, (address, reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(listen_error(&address, e)));
                }
            },
            Command::Dial { reply, .. } if self.pending_dials.len() >= MAX_PENDING_DIALS => {
                let _ = reply.send(Err(dial_error(DialFailure::TooManyDials {
                    limit: MAX_PENDING_DIALS,
                })));
            }
            Command::Dial { address, reply } => {
                let opts = match address_peer(&address) {
                    Some(peer) => DialOpts::peer_id(peer)
                        .addresses(vec![address])
                        .condition(PeerCondition::Always)
                        .build(),
                    None => DialOpts::unknown_peer_id().address(address).build(),
                };
                self.start_dial(opts, reply);
            }
            Command::Disconnect { peer } => {
                self.liquid().closing_peer(peer);
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::CloseConnection { connection } => {
                self.swarm.close_connection(connection);
            }
            Command::DialPeer { peer, reply } => {
                let opts = self.liquid().dial_opts(peer, PeerCondition::Always);
                self.start_dial(opts, reply);
            }
            Command::AddRequired { address } => {
                // The address was checked by `add_required_peer`.
                if let Err(e) = self.liquid().add_required_peer(address) {
                    tracing::warn!(error = %e, "required peer not added");
                }
            }
            Command::RemoveRequired { peer, reply } => {
                let _ = reply.send(self.liquid().remove_required_peer(&peer));
            }
            Command::RequiredPeers { reply } => {
                let _ = reply.send(self.swarm.behaviour().liquid.required_peers());
            }
            Command::Node(call) => call(&mut self.swarm.behaviour_mut().node),
            Command::Shutdown { .. } => {}
        }
    }

    fn start_dial(&mut self, opts: DialOpts, reply: oneshot::Sender<Result<PeerId, Error>>) {
        let id = opts.connection_id();
        self.liquid().dial_is_liquid(id);
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.pending_dials.insert(id, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(swarm_dial_error(&e)));
            }
        }
    }

    async fn on_event(&mut self, event: SwarmEvent<HostBehaviourEvent<B>>) {
        #[cfg(feature = "metrics")]
        if let Some(metrics) = &self.metrics {
            use libp2p::metrics::Recorder;
            metrics.record(&event);
            if let SwarmEvent::Behaviour(HostBehaviourEvent::Identify(e)) = &event {
                metrics.record(e);
            }
        }
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                let full = address
                    .with_p2p(*self.swarm.local_peer_id())
                    .unwrap_or_else(|a| a);
                self.listen_addrs.write().push(full.clone());
                if let Some((_, reply)) = self.pending_listens.remove(&listener_id) {
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
                if let Some((address, reply)) = self.pending_listens.remove(&listener_id) {
                    let source = reason
                        .err()
                        .map_or_else(|| io::Error::other("the listener closed"), os_error);
                    let _ = reply.send(Err(Error::Listen {
                        address,
                        source: Arc::new(source),
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
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                ..
            } => {
                // The behaviour reports the failure as an event (`DialFailed`).
                if let Some(reply) = self.pending_dials.remove(&connection_id) {
                    let _ = reply.send(Err(swarm_dial_error(&error)));
                }
            }
            SwarmEvent::Behaviour(HostBehaviourEvent::Node(event)) => self.node_event(event).await,
            _ => {}
        }
    }

    /// Hands an event of the node's behaviour to the node.
    async fn node_event(&mut self, event: B::ToSwarm) {
        let Some(tx) = &self.node_events else {
            return;
        };
        let sent = if self.node_events_taken.load(Ordering::Acquire) {
            // Backpressure while the host runs; once it shuts down nobody is
            // waited for (the shutdown command waits behind this send).
            let shared = Arc::clone(self.control.shared());
            loop {
                match tokio::time::timeout(FULL_RECHECK, tx.reserve()).await {
                    Ok(Ok(permit)) => {
                        permit.send(event);
                        break true;
                    }
                    Ok(Err(_)) => break false,
                    Err(_) if shared.lifecycle.check_open().is_err() => break true,
                    Err(_) => {}
                }
            }
        } else {
            // Nobody reads them yet: keep what fits, never stall the swarm.
            !matches!(
                tx.try_send(event),
                Err(mpsc::error::TrySendError::Closed(_))
            )
        };
        if !sent {
            self.node_events = None;
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
                Ok(event) => self.on_event(event).await,
                Err(_) => break,
            }
        }
    }
}
