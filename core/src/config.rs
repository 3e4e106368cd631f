//! Configuration of every limit the library enforces.
//!
//! Each field has a documented default; [`Config::validate`] rejects combinations that
//! would break the transport (for example more streams per connection than yamux
//! allows), so a mistake shows up when the host is built, not under load.
//!
//! Every field has a setter named after it (`with_<field>`), so a config is one
//! expression that starts from the defaults and names only what changes; the
//! structs are `#[non_exhaustive]`, so a setting added in a later release does
//! not break it:
//!
//! ```
//! use std::time::Duration;
//!
//! use liquid_p2p_core::{
//!     AdmissionConfig, Config, EvictionStrategy, PoolConfig, SupervisorConfig,
//! };
//!
//! let config = Config::default()
//!     .with_max_peers(50)
//!     .with_max_connections_per_peer(2)
//!     .with_eviction(EvictionStrategy::Fifo)
//!     .with_max_frame_size(4 * 1024 * 1024)
//!     .with_pool(
//!         PoolConfig::default()
//!             .with_init_size(4)
//!             .with_max_size(64)
//!             .with_borrow_timeout(Duration::from_secs(2)),
//!     )
//!     .with_admission(AdmissionConfig::default().with_handshake_timeout(Duration::from_secs(3)))
//!     .with_supervisor(SupervisorConfig::default().with_max_backoff(Duration::from_secs(10)));
//! config.validate()?;
//!
//! // Derived limits follow the settings they depend on.
//! assert_eq!(config.inbound_streams_per_peer(), 64 * 2);
//! assert_eq!(config.connections_per_ip(), (50 / 4) * 2);
//!
//! // A `mut` binding works as well.
//! let mut config = config;
//! config.ping_interval = Duration::from_secs(1);
//! config.validate()?;
//! # Ok::<(), liquid_p2p_core::Error>(())
//! ```

use std::{collections::HashSet, fmt, time::Duration};

use libp2p_identity::PeerId;
use multiaddr::{Multiaddr, Protocol};

use crate::{conn_manager::EvictionStrategy, error::Error, supervisor::SupervisorConfig};

/// yamux closes the whole connection when a peer opens more than this many streams.
pub const YAMUX_MAX_STREAMS: usize = 512;

/// Streams kept free under [`YAMUX_MAX_STREAMS`] for identify, ping and other
/// protocols that share the connection.
pub const RESERVED_STREAMS: usize = 16;

/// Longest application protocol id a frame may carry, in bytes.
pub const MAX_PROTOCOL_LEN: usize = 256;

/// Builder-style setters for a config's public fields: `with_<field>(value)` for
/// each listed field, so a config can be written as one expression
/// (`Config::default().with_max_peers(50)`) while the structs stay
/// `#[non_exhaustive]` and may gain fields in any release. (Setting a field of a
/// `mut` binding works as well.)
macro_rules! setters {
    ($config:ident { $($setter:ident => $field:ident: $ty:ty),* $(,)? }) => {
        impl $config {
            $(
                #[doc = concat!("Sets [`", stringify!($field), "`](Self::", stringify!($field), ").")]
                #[must_use]
                pub fn $setter(mut self, $field: $ty) -> Self {
                    self.$field = $field;
                    self
                }
            )*
        }
    };
}
pub(crate) use setters;

/// Settings of one [`SendStreamPool`](crate::SendStreamPool).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct PoolConfig {
    /// Streams a connection keeps ready while it is in use (the connection's
    /// reserve, which its lanes take first): opened when the connection is first
    /// used, or as soon as it is established with
    /// [`open_at_connect`](Self::open_at_connect). Default: 10.
    pub init_size: usize,
    /// Streams of one connection in all: its reserve and all its lanes together
    /// (see the pool manager). Default: 100.
    pub max_size: usize,
    /// The pool grows in the background when its idle streams are at most this
    /// percentage of its current streams. Default: 20.
    pub grow_threshold_percent: u8,
    /// How many streams one growth step opens. Default: `None`, meaning
    /// `max(init_size / 2, 1)`.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub grow_batch: Option<usize>,
    /// How long `borrow` waits for a stream when none is idle. Default: 5 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub borrow_timeout: Duration,
    /// How many borrowers may wait at once; the next gets `PoolExhausted`. Default: 1024.
    pub max_waiters: usize,
    /// A pool that grew past `init_size` gives streams back after this long of low
    /// use (no moment with more than `init_size` streams in use): it closes idle
    /// streams down to `init_size`, or to the streams in use if more. Checked
    /// every quarter of this. Default: 60 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub shrink_after: Duration,
    /// A write to a pooled stream that moves no byte for this long, while no
    /// other stream of its lane moves one either, fails with
    /// [`Error::Backpressure`](crate::Error::Backpressure) and resets its stream:
    /// the receiver is not reading that protocol. The connection and other
    /// protocols are not affected. Long by default because a slow link looks the
    /// same for a while: flow-control credit comes back only once the receiver
    /// has read half a stream window, which a congested link may take tens of
    /// seconds to deliver. Default: 60 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub send_timeout: Duration,
    /// Streams the lane of one protocol may hold (see the pool manager): a protocol
    /// whose receiver stops reading ties up at most this many, and the rest of
    /// `max_size` stays for the others. Default: `None`, meaning three quarters of
    /// `max_size` (at least 1): 75.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub max_streams_per_protocol: Option<usize>,
    /// Open `init_size` streams as soon as a connection is established, as
    /// every connection did before pools became lazy, instead of
    /// [`idle_floor`](Self::idle_floor) streams then and the rest on first use.
    /// Costs about 3 KiB per stream across both ends of every connection, used
    /// or not, until the connection goes idle. Default: false.
    pub open_at_connect: bool,
    /// A connection none of whose pools was used for this long is *idle*: its
    /// lanes close their streams, and the connection keeps
    /// [`idle_floor`](Self::idle_floor) of them ready in its reserve; it warms
    /// up again (the reserve refills to `init_size`) at its next send. Checked
    /// every quarter of this (at most every 15 s), so a connection goes idle
    /// between this and this + 15 s after its last send. Only idle streams are
    /// closed, each after its last frame was written and flushed: the remote
    /// reads every frame before it sees the stream reset. `None`: connections
    /// never go idle (`"never"` in a serialized config). Default: 60 s.
    #[cfg_attr(feature = "serde", serde(with = "idle_after_serde"))]
    pub idle_after: Option<Duration>,
    /// Streams an idle connection keeps ready, and the streams a new connection
    /// opens unless [`open_at_connect`](Self::open_at_connect) is set. One keeps
    /// the first message after a quiet period on an already negotiated stream
    /// (no stream open, no multistream-select round trip); 0 makes an idle
    /// connection cost nothing beyond libp2p's own connection state, and the
    /// first message after a quiet period waits for a stream to be opened.
    /// Capped at `init_size` (see
    /// [`effective_idle_floor`](Self::effective_idle_floor)). Default: 1.
    pub idle_floor: usize,
    /// Most bytes of small frames from concurrent senders that one write
    /// carries on a lane: a sender whose lane is being written to hands its
    /// frame (up to a quarter of this) to the writing sender, which writes
    /// everything queued at that moment in one write and one flush (see
    /// [`FrameBatcher`](crate::FrameBatcher)). A lone sender is never held
    /// back for others. 0: every message takes a stream of its own. Default:
    /// 64 KiB.
    pub batch_bytes: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            init_size: 10,
            max_size: 100,
            grow_threshold_percent: 20,
            grow_batch: None,
            borrow_timeout: Duration::from_secs(5),
            max_waiters: 1024,
            shrink_after: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            max_streams_per_protocol: None,
            open_at_connect: false,
            idle_after: Some(Duration::from_secs(60)),
            idle_floor: 1,
            batch_bytes: crate::batch::DEFAULT_BATCH_BYTES,
        }
    }
}

impl PoolConfig {
    /// Streams added by one growth step.
    pub fn effective_grow_batch(&self) -> usize {
        self.grow_batch.unwrap_or(self.init_size / 2).max(1)
    }

    /// Streams a new or idle connection keeps ready: `idle_floor`, at most
    /// `init_size`.
    pub fn effective_idle_floor(&self) -> usize {
        self.idle_floor.min(self.init_size)
    }

    /// Streams one protocol's lane may hold.
    pub fn effective_max_per_protocol(&self) -> usize {
        self.max_streams_per_protocol
            .unwrap_or(self.max_size * 3 / 4)
            .clamp(1, self.max_size.max(1))
    }

    /// The settings of one lane (a protocol's, or the connection's shared one):
    /// one stream when the lane is made (taken from the connection's reserve if it
    /// has one), grown on demand by `grow_batch` up to
    /// [`effective_max_per_protocol`](Self::effective_max_per_protocol), shrunk
    /// back to one after low use.
    pub fn lane(&self) -> PoolConfig {
        let max_size = self.effective_max_per_protocol();
        PoolConfig {
            init_size: 1,
            max_size,
            grow_batch: Some(self.effective_grow_batch()),
            ..self.clone()
        }
    }
}

/// Who may connect, and how much of the host one address may take.
///
/// ```
/// use std::time::Duration;
///
/// use liquid_p2p_core::{AdmissionConfig, Config};
///
/// // A public node: shorter handshakes, fewer connections per address.
/// let admission = AdmissionConfig::default()
///     .with_handshake_timeout(Duration::from_secs(2))
///     .with_max_pending_per_ip(4)
///     .with_max_connections_per_ip(Some(2));
/// let config = Config::default().with_admission(admission);
/// config.validate()?;
/// assert_eq!(config.connections_per_ip(), 2);
///
/// // Slots reserved for required peers must leave room for everyone else.
/// let bad = Config::default()
///     .with_admission(AdmissionConfig::default().with_max_pending(16).with_reserved_pending(16));
/// assert!(bad.validate().is_err());
/// # Ok::<(), liquid_p2p_core::Error>(())
/// ```
///
/// An address that opens many connections (silent ones that never finish their
/// handshake, or many peer ids from one machine) must not lock others out. Inbound
/// handshakes in progress are capped in all, per IP and per subnet (/24 for IPv4,
/// /64 for IPv6), with a share of the total kept for required peers' addresses;
/// established inbound connections are capped per IP and per subnet. Refusals are
/// reported as `Event::Refused`, aggregated per address and reason over
/// `report_window`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct AdmissionConfig {
    /// Inbound connections in their handshake at once, in all. Default: 128.
    pub max_pending: usize,
    /// Of `max_pending`, slots that only connections from a required peer's known
    /// addresses may take, so an attack cannot keep required peers out. Default: 16.
    pub reserved_pending: usize,
    /// Inbound handshakes in progress from one IP address. Default: 16.
    pub max_pending_per_ip: usize,
    /// Inbound handshakes in progress from one /24 (IPv4) or /64 (IPv6). Default: 32.
    pub max_pending_per_subnet: usize,
    /// Established inbound connections from one IP address (required peers
    /// excepted). Default: `None`, meaning a quarter of `max_peers` (at least 1)
    /// times `max_connections_per_peer`: 5.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub max_connections_per_ip: Option<usize>,
    /// Established inbound connections from one /24 (IPv4) or /64 (IPv6) (required
    /// peers excepted). Default: `None`, meaning half of `max_peers` (at least 1)
    /// times `max_connections_per_peer`: 10.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub max_connections_per_subnet: Option<usize>,
    /// Whether the per-address limits of established connections apply to loopback
    /// addresses too. Default: false: nodes of a test network or a single machine
    /// share 127.0.0.1. Handshake limits apply to every address.
    pub limit_loopback: bool,
    /// An inbound connection must finish its security handshake and muxer
    /// negotiation within this. Default: 5 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub handshake_timeout: Duration,
    /// Bytes a connection may read before its handshake completes; also bounds the
    /// protocol proposals one negotiation may take. Default: 64 KiB.
    pub handshake_max_bytes: usize,
    /// Refusals of the same kind from the same address within this window are
    /// reported as one event with a count. Default: 1 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub report_window: Duration,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            max_pending: 128,
            reserved_pending: 16,
            max_pending_per_ip: 16,
            max_pending_per_subnet: 32,
            max_connections_per_ip: None,
            max_connections_per_subnet: None,
            limit_loopback: false,
            handshake_timeout: Duration::from_secs(5),
            handshake_max_bytes: 64 * 1024,
            report_window: Duration::from_secs(1),
        }
    }
}

/// Broadcast: gossip over libp2p-gossipsub (v1.1, peer scoring on, message ids
/// by content hash, every message validated by the application before it is
/// forwarded).
///
/// ```
/// use std::time::Duration;
///
/// use liquid_p2p_core::{BroadcastConfig, Config};
///
/// // A small network: a denser heartbeat and smaller meshes.
/// let broadcast = BroadcastConfig::default()
///     .with_heartbeat_interval(Duration::from_millis(200))
///     .with_mesh_n_low(2)
///     .with_mesh_n(3)
///     .with_mesh_n_high(6);
/// Config::default().with_broadcast(broadcast).validate()?;
///
/// // Mesh degrees must be ordered: 1 <= mesh_n_low <= mesh_n <= mesh_n_high.
/// let bad = BroadcastConfig::default().with_mesh_n(20);
/// assert!(Config::default().with_broadcast(bad).validate().is_err());
///
/// // A node that does not gossip.
/// let off = Config::default().with_broadcast(BroadcastConfig::default().with_enabled(false));
/// assert!(!off.broadcast.enabled);
/// # Ok::<(), liquid_p2p_core::Error>(())
/// ```
///
/// A topic's inbox holds at most `handler_queue_len` messages and
/// `inbox_byte_budget` bytes, counted in `host_inbox_byte_budget` with the
/// protocols' inboxes; a message that does not fit is ignored (not forwarded).
/// The largest message is `max_frame_size`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct BroadcastConfig {
    /// Whether a `Host` runs broadcast. A node composing its own swarm adds the
    /// `Broadcast` behaviour instead. Default: true.
    pub enabled: bool,
    /// Mesh upkeep and gossip (IHAVE) emission. Default: 1 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub heartbeat_interval: Duration,
    /// Peers a topic's mesh aims for (gossipsub's `D`). Default: 6.
    pub mesh_n: usize,
    /// Fewer mesh peers than this and more are grafted (`D_lo`). Default: 4.
    pub mesh_n_low: usize,
    /// More mesh peers than this and some are pruned (`D_hi`). Default: 12.
    pub mesh_n_high: usize,
    /// Whether this node's own messages go to every connected peer of the
    /// topic (gossipsub's flood publishing), rather than to its mesh (`mesh_n`
    /// to `mesh_n_high` peers). Flooding saves a hop, but a publisher sends
    /// each message `max_peers` times: at 100 messages a second to 50 peers on
    /// a loaded machine its queues fell seconds behind, and what was queued was
    /// lost with the connections the liveness check then closed
    /// (docs/SCALE.md, finding 2). Default: false.
    pub flood_publish: bool,
    /// A received message not accepted or rejected by the application within
    /// this is ignored: not forwarded, no penalty. Default: 5 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub validation_timeout: Duration,
    /// Received messages waiting for the application's verdict, over all
    /// topics; beyond it new messages are ignored. Default: 4096.
    pub max_pending_validations: usize,
    /// Topics this node subscribes to at once. Default: 256.
    pub max_topics: usize,
}

impl Default for BroadcastConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            heartbeat_interval: Duration::from_secs(1),
            mesh_n: 6,
            mesh_n_low: 4,
            mesh_n_high: 12,
            flood_publish: false,
            validation_timeout: Duration::from_secs(5),
            max_pending_validations: 4096,
            max_topics: 256,
        }
    }
}

/// Discovery: finding the other nodes of the chains this node serves, over a
/// Kademlia DHT of the network's own (`/liquid/kad/1.0.0`), from a few seeds.
///
/// ```
/// use liquid_p2p_core::{Config, DiscoveryConfig};
///
/// let seed = "/ip4/10.0.0.1/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
/// let discovery = DiscoveryConfig::default()
///     .with_enabled(true)
///     .with_seeds(vec![seed.parse().expect("multiaddr")])
///     .with_chains(vec!["chain1".to_owned()])
///     .with_min_peers(8);
/// Config::default().with_discovery(discovery).validate()?;
///
/// // A seed must name its peer.
/// let no_id = "/ip4/10.0.0.1/tcp/4001".parse().expect("multiaddr");
/// let bad = DiscoveryConfig::default().with_seeds(vec![no_id]);
/// assert!(Config::default().with_discovery(bad).validate().is_err());
/// # Ok::<(), liquid_p2p_core::Error>(())
/// ```
///
/// Each node announces itself as a provider of every chain it serves and, while
/// fewer than `min_peers` of those chains' nodes are connected (peers found as
/// providers, or running a `/chain/<chain>/` protocol or gossip topic), looks up
/// the providers of those chains and dials them (blacklist, allow-list and limits apply as to any dial;
/// a peer whose dial failed waits on the supervisor's Fibonacci schedule). Found
/// addresses go to the address book.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct DiscoveryConfig {
    /// Whether a `Host` runs discovery (a node with its own swarm adds the
    /// `Discovery` behaviour instead). Default: false.
    pub enabled: bool,
    /// Nodes to start from, each address ending in `/p2p/<peer id>`: dialled at
    /// start and put in the routing table. Default: none.
    pub seeds: Vec<Multiaddr>,
    /// The chains this node serves (and looks for peers of). Default: none.
    pub chains: Vec<String>,
    /// Below this many connected nodes of its chains, discovery announces and
    /// looks for more, 1 s after its first lookup and then after twice the
    /// pause each time, up to every `interval / 6`; at or above it, it checks
    /// every `interval`. Default: 4.
    pub min_peers: usize,
    /// How often kad republishes the node's chains (records live three
    /// intervals) and the node checks `min_peers`. Default: 60 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub interval: Duration,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            seeds: Vec::new(),
            chains: Vec::new(),
            min_peers: 4,
            interval: Duration::from_secs(60),
        }
    }
}

/// A private network key: 32 bytes every node of the network shares (libp2p-pnet).
/// Its `Debug` form does not show the key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NetworkKey([u8; 32]);

impl NetworkKey {
    /// The key of these bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Reads a key file: libp2p's `swarm.key` format
    /// (`/key/swarm/psk/1.0.0/`, `/base16/`, then 64 hex digits, one a line) or
    /// the 64 hex digits alone. Surrounding whitespace is ignored.
    ///
    /// ```
    /// use liquid_p2p_core::NetworkKey;
    ///
    /// let hex = "00".repeat(31) + "ff";
    /// let key = NetworkKey::from_key_file(&format!("/key/swarm/psk/1.0.0/\n/base16/\n{hex}\n"))?;
    /// assert_eq!(key.as_bytes()[31], 0xff);
    /// assert_eq!(NetworkKey::from_key_file(&hex)?, key);
    /// assert!(NetworkKey::from_key_file("/key/swarm/psk/1.0.0/\n/base64/\nAAAA").is_err());
    /// assert!(NetworkKey::from_key_file(&"+f".repeat(32)).is_err());
    /// # Ok::<(), liquid_p2p_core::Error>(())
    /// ```
    pub fn from_key_file(text: &str) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidConfig {
            reason: format!("network key: {reason}"),
        };
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let hex = match lines.as_slice() {
            [hex] => *hex,
            ["/key/swarm/psk/1.0.0/", "/base16/", hex] => *hex,
            ["/key/swarm/psk/1.0.0/", encoding, _] => {
                return Err(invalid(&format!(
                    "encoding {encoding:.16} is not supported (only /base16/)"
                )));
            }
            _ => {
                return Err(invalid(
                    "expected /key/swarm/psk/1.0.0/, /base16/ and 64 hex digits, or the digits alone",
                ));
            }
        };
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid("expected 64 hex digits"));
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = hex
                .get(2 * i..2 * i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| invalid("expected 64 hex digits"))?;
        }
        Ok(Self(bytes))
    }
}

impl fmt::Debug for NetworkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NetworkKey(..)")
    }
}

/// Settings of a host: pools, inbound caps, frame limits and timeouts.
///
/// With the `serde` feature, `Config` and all its parts read from and write to
/// any serde format. Durations are written the human way, as `"5s"`, `"250ms"`
/// or `"1m 30s"` (humantime); a field left out keeps its default; a field this
/// version does not know is an error naming it; enums are snake_case
/// (`eviction = "fifo"`, `peer_scope = "speakers_only"`); peer ids and
/// addresses are strings. [`network_key`](Self::network_key) is never written
/// or read. In TOML:
///
/// ```toml
/// max_peers = 50
/// max_connections_per_peer = 2
/// eviction = "fifo"
/// dial_timeout = "5s"
/// allow_list = ["12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"]
///
/// [pool]
/// max_size = 64
/// borrow_timeout = "250ms"
///
/// [supervisor]
/// max_backoff = "10s"
///
/// [discovery]
/// enabled = true
/// seeds = ["/dns4/seed.example.org/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"]
/// chains = ["chain1"]
/// ```
///
/// A config read this way is checked like any other, by [`Config::validate`]
/// (which `Host::build` and `Behaviour::new` call).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct Config {
    /// Send-stream pool of each connection.
    pub pool: PoolConfig,
    /// Connections allowed to one peer. Default: 1 (raise it to spread load over
    /// several connections; each encrypts in its own task).
    pub max_connections_per_peer: usize,
    /// Peers connected at once. Default: 20.
    pub max_peers: usize,
    /// Inbound message streams accepted from one peer. Default: `None`, meaning
    /// `pool.max_size × max_connections_per_peer`.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub max_inbound_streams_per_peer: Option<usize>,
    /// Inbound message streams accepted on one connection. Default: `None`, meaning
    /// `pool.max_size`.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub max_inbound_streams_per_connection: Option<usize>,
    /// Largest payload of one frame, in bytes. Default: 16 MiB.
    pub max_frame_size: usize,
    /// Messages queued for one registered protocol before the readers of that
    /// protocol's streams stop reading (backpressure). Default: 256. A deeper
    /// queue absorbs longer stalls of the application but keeps more messages out
    /// of cache: with 64 senders to one inbox, 1024 delivered about a fifth fewer
    /// messages per second than 256 (benches/RESULTS.md).
    pub handler_queue_len: usize,
    /// Payload bytes held for one registered protocol (in its inbox, or decoded
    /// and waiting for room there) before the readers of that protocol's streams
    /// stop reading: backpressure by bytes, next to `handler_queue_len` by
    /// messages. Never below `max_frame_size`, so one frame always fits.
    /// Default: 64 MiB.
    pub inbox_byte_budget: usize,
    /// The same for all registered protocols together. Never below
    /// `inbox_byte_budget`. Default: 512 MiB.
    pub host_inbox_byte_budget: usize,
    /// Host events buffered for each subscriber; a subscriber that falls further
    /// behind is told how many it missed. Default: 1024.
    pub event_queue_len: usize,
    /// Time allowed to open and negotiate one outbound stream. Default: 10 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub stream_open_timeout: Duration,
    /// Time allowed for a dial to produce a connection. Default: 10 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub dial_timeout: Duration,
    /// A TCP connection whose socket takes no byte of what waits for it for this
    /// long is closed and reported as stalled (by the host's muxer: see
    /// `YamuxConfig::with_stall_timeout`); also how long a close that moves no
    /// byte may take. An application that does not read its inbox never stalls a
    /// connection. Default: 10 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub stall_timeout: Duration,
    /// Once the first byte of a frame has arrived, the stream is reset if no further
    /// byte of it arrives for this long (the frame as a whole may take longer while
    /// its bytes keep coming, as large frames over a slow link do). Default: 30 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub frame_read_timeout: Duration,
    /// Payloads at least this large are sent compressed (snappy). Default: `None`
    /// (never compress; compressed frames are always accepted).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub compress_min_size: Option<usize>,
    /// Interval of libp2p ping on every connection. Default: 2 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub ping_interval: Duration,
    /// A ping unanswered for this long closes the connection. Default: 5 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub ping_timeout: Duration,
    /// Redial schedule of required peers.
    pub supervisor: SupervisorConfig,
    /// Time allowed for the protocol exchange with a newly connected peer. A peer
    /// that does not answer is kept, with its protocol list unknown. Default: 10 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub exchange_timeout: Duration,
    /// Local protocol changes within this window are pushed to peers together.
    /// Default: 100 ms.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub protocol_push_delay: Duration,
    /// Longest protocol list accepted from a peer. Default: 1024.
    pub max_protocols_per_peer: usize,
    /// Whom to refuse or evict when `max_peers` peers are connected. Default:
    /// [`EvictionStrategy::Lifo`] (a new low-priority peer is refused).
    pub eviction: EvictionStrategy,
    /// Entries the [`Blacklist`](crate::Blacklist) holds at most; adding one more
    /// fails with `BlacklistFull`. Default: 4096.
    pub max_blacklist_entries: usize,
    /// Limits per remote address and on handshakes.
    pub admission: AdmissionConfig,
    /// Which connections are liquid peers (pooled, exchanged with, reported).
    /// Default: [`PeerScope::EveryConnection`].
    pub peer_scope: PeerScope,
    /// Which connections the admission policy (`max_peers`, eviction, the
    /// per-address limits and the blacklist) applies to. Default:
    /// [`PolicyScope::AllConnections`].
    pub policy_scope: PolicyScope,
    /// Gossip topics.
    pub broadcast: BroadcastConfig,
    /// With `Some`, only these peers may connect: any other is refused right
    /// after the handshake (told `NotAllowed`) and never dialled (see
    /// [`AllowList`](crate::AllowList); changed at run time through `Control`).
    /// Holds at most `max_blacklist_entries` peers. Default: `None`, everyone.
    #[cfg_attr(
        feature = "serde",
        serde(
            serialize_with = "sorted_peers",
            skip_serializing_if = "Option::is_none"
        )
    )]
    pub allow_list: Option<HashSet<PeerId>>,
    /// A private network key (libp2p-pnet, the 32 bytes of a `swarm.key`): TCP
    /// connections are encrypted with it before the security handshake, so a
    /// node without the key cannot even complete one. QUIC cannot carry it: with
    /// a key, the host's transport is TCP only. Default: `None`.
    ///
    /// A secret, so never part of a serialized config (with the `serde`
    /// feature): it is skipped when a config is written, and a config file
    /// that names it is rejected as having an unknown field. Keep the key in a
    /// file of its own and read it with [`NetworkKey::from_key_file`].
    #[cfg_attr(feature = "serde", serde(skip))]
    pub network_key: Option<NetworkKey>,
    /// Finding the nodes of this node's chains.
    pub discovery: DiscoveryConfig,
}

/// Writes an allow-list sorted, so the same list always gives the same text.
/// `PoolConfig::idle_after` as a human duration (`"60s"`), or `"never"` for
/// `None`: a format like TOML has no null, and leaving the key out means the
/// default, 60 s.
#[cfg(feature = "serde")]
mod idle_after_serde {
    use std::time::Duration;

    use humantime_serde::re::humantime;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    const NEVER: &str = "never";

    pub(super) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => serializer.serialize_str(&humantime::format_duration(*d).to_string()),
            None => serializer.serialize_str(NEVER),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text == NEVER {
            return Ok(None);
        }
        humantime::parse_duration(&text)
            .map(Some)
            .map_err(|e| D::Error::custom(format!("idle_after: {e} (or \"{NEVER}\")")))
    }
}

#[cfg(feature = "serde")]
fn sorted_peers<S: serde::Serializer>(
    list: &Option<HashSet<PeerId>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut peers: Vec<String> = list.iter().flatten().map(|p| p.to_base58()).collect();
    peers.sort_unstable();
    serde::Serialize::serialize(&peers, serializer)
}

setters!(PoolConfig {
    with_init_size => init_size: usize,
    with_max_size => max_size: usize,
    with_grow_threshold_percent => grow_threshold_percent: u8,
    with_grow_batch => grow_batch: Option<usize>,
    with_borrow_timeout => borrow_timeout: Duration,
    with_max_waiters => max_waiters: usize,
    with_shrink_after => shrink_after: Duration,
    with_send_timeout => send_timeout: Duration,
    with_max_streams_per_protocol => max_streams_per_protocol: Option<usize>,
    with_open_at_connect => open_at_connect: bool,
    with_idle_after => idle_after: Option<Duration>,
    with_idle_floor => idle_floor: usize,
    with_batch_bytes => batch_bytes: usize,
});

setters!(AdmissionConfig {
    with_max_pending => max_pending: usize,
    with_reserved_pending => reserved_pending: usize,
    with_max_pending_per_ip => max_pending_per_ip: usize,
    with_max_pending_per_subnet => max_pending_per_subnet: usize,
    with_max_connections_per_ip => max_connections_per_ip: Option<usize>,
    with_max_connections_per_subnet => max_connections_per_subnet: Option<usize>,
    with_limit_loopback => limit_loopback: bool,
    with_handshake_timeout => handshake_timeout: Duration,
    with_handshake_max_bytes => handshake_max_bytes: usize,
    with_report_window => report_window: Duration,
});

setters!(Config {
    with_pool => pool: PoolConfig,
    with_max_connections_per_peer => max_connections_per_peer: usize,
    with_max_peers => max_peers: usize,
    with_max_inbound_streams_per_peer => max_inbound_streams_per_peer: Option<usize>,
    with_max_inbound_streams_per_connection => max_inbound_streams_per_connection: Option<usize>,
    with_max_frame_size => max_frame_size: usize,
    with_handler_queue_len => handler_queue_len: usize,
    with_inbox_byte_budget => inbox_byte_budget: usize,
    with_host_inbox_byte_budget => host_inbox_byte_budget: usize,
    with_event_queue_len => event_queue_len: usize,
    with_stream_open_timeout => stream_open_timeout: Duration,
    with_dial_timeout => dial_timeout: Duration,
    with_stall_timeout => stall_timeout: Duration,
    with_frame_read_timeout => frame_read_timeout: Duration,
    with_compress_min_size => compress_min_size: Option<usize>,
    with_ping_interval => ping_interval: Duration,
    with_ping_timeout => ping_timeout: Duration,
    with_supervisor => supervisor: SupervisorConfig,
    with_exchange_timeout => exchange_timeout: Duration,
    with_protocol_push_delay => protocol_push_delay: Duration,
    with_max_protocols_per_peer => max_protocols_per_peer: usize,
    with_eviction => eviction: EvictionStrategy,
    with_max_blacklist_entries => max_blacklist_entries: usize,
    with_admission => admission: AdmissionConfig,
    with_peer_scope => peer_scope: PeerScope,
    with_policy_scope => policy_scope: PolicyScope,
    with_broadcast => broadcast: BroadcastConfig,
    with_allow_list => allow_list: Option<HashSet<PeerId>>,
    with_network_key => network_key: Option<NetworkKey>,
    with_discovery => discovery: DiscoveryConfig,
});

setters!(DiscoveryConfig {
    with_enabled => enabled: bool,
    with_seeds => seeds: Vec<Multiaddr>,
    with_chains => chains: Vec<String>,
    with_min_peers => min_peers: usize,
    with_interval => interval: Duration,
});

setters!(BroadcastConfig {
    with_enabled => enabled: bool,
    with_heartbeat_interval => heartbeat_interval: Duration,
    with_mesh_n => mesh_n: usize,
    with_mesh_n_low => mesh_n_low: usize,
    with_mesh_n_high => mesh_n_high: usize,
    with_flood_publish => flood_publish: bool,
    with_validation_timeout => validation_timeout: Duration,
    with_max_pending_validations => max_pending_validations: usize,
    with_max_topics => max_topics: usize,
});

/// Which connections of the swarm are liquid peers: get a pool of send streams,
/// the protocol exchange, liveness checks and connection events.
///
/// A swarm that runs liquid-p2p alone (a [`Host`] without behaviours of the
/// node's own) keeps the default. A node that composes gossipsub, Kademlia or
/// request-response in the same swarm picks `SpeakersOnly`, so the peers those
/// protocols meet cost nothing here (see [`Config::scoped_to_liquid_peers`]).
///
/// [`Host`]: https://docs.rs/liquid-p2p/latest/liquid_p2p/struct.Host.html
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum PeerScope {
    /// Every connection is a liquid peer from the moment it is established, as
    /// in a swarm where every peer runs liquid-p2p.
    #[default]
    EveryConnection,
    /// Only peers that show they speak `/liquid/msg/1.0.0`: identify lists it
    /// (from any identify behaviour of the swarm), the peer opens a stream of
    /// ours, or this node dialled the connection for liquid (a required peer,
    /// `Host::dial`, a pool asking for one more connection). Until then the
    /// connection gets nothing of ours, and libp2p's idle-connection rules decide
    /// how long it stays.
    SpeakersOnly,
}

/// Which connections the admission policy applies to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum PolicyScope {
    /// Every connection of the node counts against `max_peers` and the
    /// per-address limits and is checked against the blacklist: one peer
    /// policy for the whole node.
    #[default]
    AllConnections,
    /// Only liquid peers (see [`PeerScope`]) count and are checked; they are
    /// admitted at the moment they prove to be liquid peers. Other connections
    /// (Kademlia's, gossipsub's) are never refused or evicted by these limits.
    /// With [`PeerScope::EveryConnection`] every connection is a liquid peer, so
    /// this is the same as `AllConnections`.
    LiquidPeers,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            pool: PoolConfig::default(),
            max_connections_per_peer: 1,
            max_peers: 20,
            max_inbound_streams_per_peer: None,
            max_inbound_streams_per_connection: None,
            max_frame_size: 16 * 1024 * 1024,
            handler_queue_len: 256,
            inbox_byte_budget: 64 * 1024 * 1024,
            host_inbox_byte_budget: 512 * 1024 * 1024,
            event_queue_len: 1024,
            stream_open_timeout: Duration::from_secs(10),
            dial_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(10),
            frame_read_timeout: Duration::from_secs(30),
            compress_min_size: None,
            ping_interval: Duration::from_secs(2),
            ping_timeout: Duration::from_secs(5),
            supervisor: SupervisorConfig::default(),
            exchange_timeout: Duration::from_secs(10),
            protocol_push_delay: Duration::from_millis(100),
            max_protocols_per_peer: 1024,
            eviction: EvictionStrategy::Lifo,
            max_blacklist_entries: 4096,
            admission: AdmissionConfig::default(),
            peer_scope: PeerScope::EveryConnection,
            policy_scope: PolicyScope::AllConnections,
            broadcast: BroadcastConfig::default(),
            allow_list: None,
            network_key: None,
            discovery: DiscoveryConfig::default(),
        }
    }
}

impl Config {
    /// This configuration for a behaviour that shares its swarm with other
    /// protocols: only peers that speak `/liquid/msg/1.0.0` are liquid peers
    /// ([`PeerScope::SpeakersOnly`]) and only they count for the admission policy
    /// ([`PolicyScope::LiquidPeers`]).
    pub fn scoped_to_liquid_peers(mut self) -> Self {
        self.peer_scope = PeerScope::SpeakersOnly;
        self.policy_scope = PolicyScope::LiquidPeers;
        self
    }

    /// Inbound streams accepted from one peer.
    pub fn inbound_streams_per_peer(&self) -> usize {
        self.max_inbound_streams_per_peer.unwrap_or(
            self.pool
                .max_size
                .saturating_mul(self.max_connections_per_peer),
        )
    }

    /// The byte budget of one protocol's inbox: `inbox_byte_budget`, at least
    /// `max_frame_size`.
    pub fn effective_inbox_byte_budget(&self) -> usize {
        self.inbox_byte_budget.max(self.max_frame_size)
    }

    /// The byte budget of all inboxes together: `host_inbox_byte_budget`, at
    /// least one protocol's.
    pub fn effective_host_inbox_byte_budget(&self) -> usize {
        self.host_inbox_byte_budget
            .max(self.effective_inbox_byte_budget())
    }

    /// Inbound streams accepted on one connection.
    pub fn inbound_streams_per_connection(&self) -> usize {
        self.max_inbound_streams_per_connection
            .unwrap_or(self.pool.max_size)
    }

    /// Established inbound connections accepted from one IP address.
    pub fn connections_per_ip(&self) -> usize {
        self.admission.max_connections_per_ip.unwrap_or(
            (self.max_peers / 4)
                .max(1)
                .saturating_mul(self.max_connections_per_peer),
        )
    }

    /// Established inbound connections accepted from one subnet.
    pub fn connections_per_subnet(&self) -> usize {
        self.admission.max_connections_per_subnet.unwrap_or(
            (self.max_peers / 2)
                .max(1)
                .saturating_mul(self.max_connections_per_peer),
        )
    }

    /// Checks that the settings are consistent and keep every connection below the
    /// transport's own stream limit.
    ///
    /// `Host::build` and `Behaviour::new` call it, so an invalid config never
    /// runs; call it yourself to check a config read from a file early.
    ///
    /// ```
    /// use liquid_p2p_core::{Config, Error, PoolConfig};
    ///
    /// assert!(Config::default().validate().is_ok());
    ///
    /// // 300 send streams + 300 inbound streams per connection do not fit in
    /// // yamux's 512.
    /// let config = Config::default()
    ///     .with_pool(PoolConfig::default().with_max_size(300))
    ///     .with_max_inbound_streams_per_connection(Some(300));
    /// match config.validate() {
    ///     Err(Error::InvalidConfig { reason }) => assert!(reason.contains("yamux"), "{reason}"),
    ///     other => panic!("{other:?}"),
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`], whose `reason` names the first setting at
    /// fault: a zero size, limit or timeout; `pool.init_size` above
    /// `pool.max_size`; a percentage above 100; `pool.max_size` plus the
    /// inbound streams per connection plus [`RESERVED_STREAMS`] beyond
    /// [`YAMUX_MAX_STREAMS`]; `max_frame_size` of 4 GiB or more; an
    /// `allow_list` longer than `max_blacklist_entries`; `reserved_pending`
    /// not below `max_pending`; `handshake_max_bytes` under 4096;
    /// `supervisor.max_backoff` under `backoff_unit`; a discovery seed without
    /// `/p2p/<peer id>` or a chain name that is empty or over 256 bytes;
    /// unordered gossip mesh degrees.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |reason: String| Err(Error::InvalidConfig { reason });
        let p = &self.pool;
        if p.max_size == 0 {
            return invalid("pool.max_size must be at least 1".into());
        }
        if p.init_size > p.max_size {
            return invalid(format!(
                "pool.init_size ({}) exceeds pool.max_size ({})",
                p.init_size, p.max_size
            ));
        }
        if p.idle_after.is_some_and(|d| d.is_zero()) {
            return invalid("pool.idle_after must be greater than zero (or None)".into());
        }
        if p.grow_threshold_percent > 100 {
            return invalid("pool.grow_threshold_percent must be at most 100".into());
        }
        if p.max_waiters == 0 {
            return invalid("pool.max_waiters must be at least 1".into());
        }
        let per_connection = p.max_size + self.inbound_streams_per_connection();
        if per_connection + RESERVED_STREAMS > YAMUX_MAX_STREAMS {
            return invalid(format!(
                "pool.max_size + inbound streams per connection = {per_connection}; \
                 with {RESERVED_STREAMS} reserved it must stay within yamux's {YAMUX_MAX_STREAMS}"
            ));
        }
        if self.max_connections_per_peer == 0 || self.max_peers == 0 {
            return invalid("max_connections_per_peer and max_peers must be at least 1".into());
        }
        if self.max_frame_size == 0 || self.max_frame_size > u32::MAX as usize {
            return invalid("max_frame_size must be between 1 and 4 GiB - 1".into());
        }
        if self.handler_queue_len == 0 || self.event_queue_len == 0 {
            return invalid("handler_queue_len and event_queue_len must be at least 1".into());
        }
        if self.max_protocols_per_peer == 0 {
            return invalid("max_protocols_per_peer must be at least 1".into());
        }
        if self
            .allow_list
            .as_ref()
            .is_some_and(|list| list.len() > self.max_blacklist_entries)
        {
            return invalid(format!(
                "allow_list holds more than max_blacklist_entries ({}) peers",
                self.max_blacklist_entries
            ));
        }
        if self.max_blacklist_entries == 0 {
            // A blacklist that can hold nothing fails every `add`: surely a mistake.
            return invalid("max_blacklist_entries must be at least 1".into());
        }
        let a = &self.admission;
        if a.max_pending == 0 || a.max_pending_per_ip == 0 || a.max_pending_per_subnet == 0 {
            return invalid("admission: handshake limits must be at least 1".into());
        }
        if a.reserved_pending >= a.max_pending {
            return invalid(format!(
                "admission.reserved_pending ({}) must leave room in max_pending ({})",
                a.reserved_pending, a.max_pending
            ));
        }
        if self.connections_per_ip() == 0 || self.connections_per_subnet() == 0 {
            return invalid("admission: connection limits per address must be at least 1".into());
        }
        if a.handshake_max_bytes < 4096 {
            // A noise handshake with its identity payload alone takes about 1 KiB.
            return invalid("admission.handshake_max_bytes must be at least 4096".into());
        }
        let timeouts = [
            ("pool.borrow_timeout", p.borrow_timeout),
            ("pool.send_timeout", p.send_timeout),
            ("pool.shrink_after", p.shrink_after),
            ("stream_open_timeout", self.stream_open_timeout),
            ("dial_timeout", self.dial_timeout),
            ("stall_timeout", self.stall_timeout),
            ("frame_read_timeout", self.frame_read_timeout),
            ("ping_interval", self.ping_interval),
            ("ping_timeout", self.ping_timeout),
            ("supervisor.check_interval", self.supervisor.check_interval),
            ("supervisor.backoff_unit", self.supervisor.backoff_unit),
            ("exchange_timeout", self.exchange_timeout),
            ("admission.handshake_timeout", a.handshake_timeout),
            ("admission.report_window", a.report_window),
            (
                "broadcast.heartbeat_interval",
                self.broadcast.heartbeat_interval,
            ),
            (
                "broadcast.validation_timeout",
                self.broadcast.validation_timeout,
            ),
        ];
        if let Some((name, _)) = timeouts.iter().find(|(_, d)| d.is_zero()) {
            return invalid(format!("{name} must be greater than zero"));
        }
        if self.supervisor.max_backoff < self.supervisor.backoff_unit {
            return invalid("supervisor.max_backoff must be at least backoff_unit".into());
        }
        if self.supervisor.jitter_percent > 100 {
            return invalid("supervisor.jitter_percent must be at most 100".into());
        }
        if let Some(seed) = self
            .discovery
            .seeds
            .iter()
            .find(|a| !matches!(a.iter().last(), Some(Protocol::P2p(_))))
        {
            return invalid(format!(
                "discovery seed {seed} does not end in /p2p/<peer id>"
            ));
        }
        if let Some(chain) = self
            .discovery
            .chains
            .iter()
            .find(|c| c.is_empty() || c.len() > MAX_PROTOCOL_LEN)
        {
            return invalid(format!(
                "discovery chain {chain:?} must be 1 to {MAX_PROTOCOL_LEN} bytes"
            ));
        }
        let b = &self.broadcast;
        if !(1 <= b.mesh_n_low && b.mesh_n_low <= b.mesh_n && b.mesh_n <= b.mesh_n_high) {
            return invalid(format!(
                "broadcast mesh degrees must satisfy 1 <= mesh_n_low ({}) <= mesh_n ({}) <= \
                 mesh_n_high ({})",
                b.mesh_n_low, b.mesh_n, b.mesh_n_high
            ));
        }
        if b.max_pending_validations == 0 || b.max_topics == 0 {
            return invalid(
                "broadcast.max_pending_validations and broadcast.max_topics must be at least 1"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_design() {
        let c = Config::default();
        assert_eq!((c.pool.init_size, c.pool.max_size), (10, 100));
        assert_eq!(c.pool.effective_grow_batch(), 5);
        assert_eq!(c.inbound_streams_per_peer(), 100);
        assert_eq!(c.max_frame_size, 16 << 20);
        assert_eq!((c.max_peers, c.max_connections_per_peer), (20, 1));
        assert_eq!(c.eviction, EvictionStrategy::Lifo);
        assert_eq!(c.max_blacklist_entries, 4096);
        c.validate().expect("defaults are valid");
    }

    #[test]
    fn validate_rejects_pools_that_would_break_yamux() {
        let mut c = Config::default();
        c.pool.max_size = 300;
        c.max_inbound_streams_per_connection = Some(300);
        assert!(matches!(c.validate(), Err(Error::InvalidConfig { .. })));
    }

    #[test]
    fn validate_rejects_init_above_max_and_zero_timeouts() {
        let mut c = Config::default();
        c.pool.init_size = 101;
        assert!(c.validate().is_err());
        let c = Config {
            stall_timeout: Duration::ZERO,
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let pool = |p: PoolConfig| Config::default().with_pool(p).validate();
        assert!(pool(PoolConfig::default().with_idle_after(Some(Duration::ZERO))).is_err());
        assert!(pool(PoolConfig::default().with_idle_after(None)).is_ok());
        // A floor above init_size is capped, not an error: configs with a
        // small init_size stay valid.
        assert!(pool(PoolConfig::default().with_init_size(0)).is_ok());
        assert_eq!(
            PoolConfig::default()
                .with_init_size(0)
                .effective_idle_floor(),
            0
        );
    }

    #[test]
    fn validate_rejects_a_blacklist_that_can_hold_nothing() {
        let c = Config {
            max_blacklist_entries: 0,
            ..Config::default()
        };
        assert!(matches!(c.validate(), Err(Error::InvalidConfig { .. })));
    }

    #[cfg(feature = "serde")]
    mod serde_form {
        use super::*;

        const PEER: &str = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";

        /// A config with every part away from its default.
        fn changed() -> Config {
            let peer: PeerId = PEER.parse().expect("peer id");
            Config::default()
                .with_pool(
                    PoolConfig::default()
                        .with_init_size(4)
                        .with_max_size(64)
                        .with_grow_batch(Some(3))
                        .with_borrow_timeout(Duration::from_millis(250))
                        .with_max_streams_per_protocol(Some(40)),
                )
                .with_max_peers(50)
                .with_max_inbound_streams_per_peer(Some(200))
                .with_compress_min_size(Some(4096))
                .with_dial_timeout(Duration::from_secs(5))
                .with_supervisor(
                    SupervisorConfig::default()
                        .with_max_backoff(Duration::from_secs(90))
                        .with_max_attempts(Some(7)),
                )
                .with_eviction(EvictionStrategy::Fifo)
                .with_admission(
                    AdmissionConfig::default()
                        .with_max_connections_per_ip(Some(3))
                        .with_limit_loopback(true),
                )
                .with_peer_scope(PeerScope::SpeakersOnly)
                .with_policy_scope(PolicyScope::LiquidPeers)
                .with_broadcast(
                    BroadcastConfig::default()
                        .with_enabled(false)
                        .with_mesh_n(5),
                )
                .with_allow_list(Some([peer].into_iter().collect()))
                .with_discovery(
                    DiscoveryConfig::default()
                        .with_enabled(true)
                        .with_seeds(vec![
                            format!("/dns4/seed.example.org/tcp/4001/p2p/{PEER}")
                                .parse()
                                .expect("address"),
                        ])
                        .with_chains(vec!["chain1".into()])
                        .with_interval(Duration::from_secs(90)),
                )
        }

        #[test]
        fn a_config_round_trips_through_toml() {
            for config in [Config::default(), changed()] {
                let text = toml::to_string(&config).expect("serialize");
                let back: Config = toml::from_str(&text).expect("parse what was written");
                assert_eq!(back, config, "{text}");
            }
        }

        #[test]
        fn durations_are_written_and_read_the_human_way() {
            let text = toml::to_string(&changed()).expect("serialize");
            assert!(text.contains("dial_timeout = \"5s\""), "{text}");
            assert!(text.contains("borrow_timeout = \"250ms\""), "{text}");
            assert!(text.contains("eviction = \"fifo\""), "{text}");
            let config: Config =
                toml::from_str("ping_interval = \"1m 30s\"\n[pool]\nsend_timeout = \"1500ms\"\n")
                    .expect("parse");
            assert_eq!(config.ping_interval, Duration::from_secs(90));
            assert_eq!(config.pool.send_timeout, Duration::from_millis(1500));
        }

        #[test]
        fn idle_after_is_a_human_duration_or_never() {
            let never = Config::default().with_pool(PoolConfig::default().with_idle_after(None));
            let text = toml::to_string(&never).expect("serialize");
            assert!(text.contains("idle_after = \"never\""), "{text}");
            let back: Config = toml::from_str(&text).expect("parse what was written");
            assert_eq!(back, never);
            let config: Config =
                toml::from_str("[pool]\nidle_after = \"5m\"\nidle_floor = 0\n").expect("parse");
            assert_eq!(config.pool.idle_after, Some(Duration::from_secs(300)));
            assert_eq!(config.pool.idle_floor, 0);
            let bad = toml::from_str::<Config>("[pool]\nidle_after = \"soon\"\n")
                .expect_err("not a duration")
                .to_string();
            assert!(bad.contains("never"), "{bad}");
        }

        #[test]
        fn fields_left_out_keep_their_defaults() {
            let config: Config =
                toml::from_str("max_peers = 7\n[pool]\nmax_size = 30\n").expect("parse");
            let expected = Config::default()
                .with_max_peers(7)
                .with_pool(PoolConfig::default().with_max_size(30));
            assert_eq!(config, expected);
            assert_eq!(
                toml::from_str::<Config>("").expect("empty"),
                Config::default()
            );
        }

        #[test]
        fn a_bad_field_is_an_error_that_names_it() {
            let unknown = toml::from_str::<Config>("[pool]\nmax_sise = 30\n")
                .expect_err("unknown field")
                .to_string();
            assert!(unknown.contains("max_sise"), "{unknown}");
            let wrong_type = toml::from_str::<Config>("max_peers = \"many\"\n")
                .expect_err("wrong type")
                .to_string();
            assert!(wrong_type.contains("max_peers"), "{wrong_type}");
            let bad_duration = toml::from_str::<Config>("[supervisor]\nmax_backoff = \"soon\"\n")
                .expect_err("bad duration")
                .to_string();
            assert!(bad_duration.contains("max_backoff"), "{bad_duration}");
            let bad_enum = toml::from_str::<Config>("eviction = \"oldest\"\n")
                .expect_err("bad strategy")
                .to_string();
            assert!(bad_enum.contains("eviction"), "{bad_enum}");
        }

        #[test]
        fn the_network_key_is_never_written_nor_read() {
            let config = changed().with_network_key(Some(NetworkKey::new([7; 32])));
            let text = toml::to_string(&config).expect("serialize");
            assert!(!text.contains("network_key"), "{text}");
            assert!(!text.contains("0707"), "{text}");
            let refused =
                toml::from_str::<Config>(&format!("network_key = \"{}\"\n", "07".repeat(32)))
                    .expect_err("a key in the config file")
                    .to_string();
            assert!(refused.contains("network_key"), "{refused}");
        }

        #[test]
        fn the_documented_example_parses_and_is_valid() {
            let text = "max_peers = 50\nmax_connections_per_peer = 2\neviction = \"fifo\"\n\
                dial_timeout = \"5s\"\nallow_list = [\"PEER\"]\n\n[pool]\nmax_size = 64\n\
                borrow_timeout = \"250ms\"\n\n[supervisor]\nmax_backoff = \"10s\"\n\n\
                [discovery]\nenabled = true\n\
                seeds = [\"/dns4/seed.example.org/tcp/4001/p2p/PEER\"]\nchains = [\"chain1\"]\n"
                .replace("PEER", PEER);
            let config: Config = toml::from_str(&text).expect("parse");
            assert_eq!(config.max_connections_per_peer, 2);
            assert_eq!(config.supervisor.max_backoff, Duration::from_secs(10));
            assert!(config.discovery.enabled);
            config.validate().expect("valid");
        }
    }
}
