//! liquid-p2p: pooled, negotiated libp2p streams between the peers of a replicated
//! service.
//!
//! Nodes that exchange many small and some large messages with a known set of peers
//! (blockchain consensus and sync, replicated services) pay for a substream
//! negotiation per message with libp2p request-response, or serialise every sender
//! behind one stream. liquid-p2p keeps, per connection, a pool of ready
//! `/liquid/msg/1.0.0` streams: a sender borrows one from the least-loaded
//! connection of the peer, writes one frame and returns it. Inbound streams are
//! tracked and capped; each is read by its own task into the bounded queue of the
//! frame's application protocol.
//!
//! [`Host`] is the ready-made node (TCP + noise + yamux, QUIC, identify, ping, and
//! gossip topics through [`Broadcast`], and finding a chain's nodes through
//! [`Discovery`]), and can carry the node's own behaviour
//! ([`HostBuilder::behaviour`]).
//! [`Behaviour`] + [`Control`] is the same thing as a `NetworkBehaviour` to put in
//! your own `Swarm` next to gossipsub or Kademlia: required peers, dead-peer
//! detection, the address book and the events all live in the behaviour (see
//! `examples/gossipsub_node.rs`, and [`Config::scoped_to_liquid_peers`] for a
//! swarm whose other protocols meet peers that do not run liquid).
//!
//! # Quick start
//!
//! Two hosts on loopback; `b` sends `a` one message:
//!
//! ```
//! use liquid_p2p::{Host, Error};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Error> {
//! let a = Host::builder().listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap()).build().await?;
//! let b = Host::builder().build().await?;
//! let mut inbox = a.control().register_protocol("/chain1/consensus/1")?;
//!
//! let a_id = b.dial(a.listen_addrs()[0].clone()).await?;
//! b.control().send(a_id, "/chain1/consensus/1", b"block 1").await?;
//!
//! let message = inbox.recv().await.expect("delivered");
//! assert_eq!(&message.payload[..], b"block 1");
//! assert_eq!(message.peer, b.local_peer_id());
//! # b.shutdown().await;
//! # a.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! A [`Host`] is built with [`Host::builder`] and runs its swarm on a tokio task
//! of its own; everything else goes through its [`Control`] ([`Host::control`]),
//! a cheap handle to clone into the node's tasks. End it with
//! [`Host::shutdown`]. Every `async fn` of the API documents its errors and what
//! happens when its future is dropped before it completes (`# Cancel safety`),
//! so calls can be raced in `tokio::select!` or bounded with
//! `tokio::time::timeout` knowingly.
//!
//! # Protocols and priorities
//!
//! Messages carry an application protocol id (1 to 256 bytes of UTF-8, such as
//! `/chain1/consensus/1`). A host takes the messages of the protocols it
//! registers, each into an [`Inbox`] of its own:
//! [`Control::register_protocol`] at any time, or
//! [`HostBuilder::register_protocol`] before the host starts (then the very
//! first peer learns it, and no early frame is skipped as unknown; take the
//! inbox with [`Host::take_inbox`]). Peers exchange their lists when they
//! connect and push changes ([`Control::peer_protocols`],
//! [`Control::is_supported`], [`Event::PeerProtocols`]); sending to a peer whose
//! list lacks the protocol fails at once with [`Error::ProtocolUnsupported`].
//! A frame for a protocol nobody registered is skipped and reported
//! ([`Event::UnknownProtocol`]); [`Control::unregister_protocol`] ends the
//! inbox.
//!
//! Each protocol has a [`ProtocolPriority`] (`Low`, `Normal` by default,
//! `High`), given at registration
//! ([`Control::register_protocol_with_priority`],
//! [`HostBuilder::register_protocol_with_priority`]) and changed with
//! [`Control::set_priority`]. Under saturation, higher priorities go first: a
//! stream coming back to a pool goes to the highest waiting sender, a
//! connection's stream budget to the highest waiting open, and on the wire a
//! large write of a lower priority pauses between slices while a higher one
//! writes on the same connection. Mark small urgent messages (votes) `High` and
//! bulk transfers (sync) `Low`.
//!
//! Every protocol a host sends on a connection gets a *lane*: a pool of its own
//! streams, grown on demand up to [`PoolConfig::max_streams_per_protocol`] (by
//! default ¾ of [`PoolConfig::max_size`]). A peer that stops reading one
//! protocol holds up that lane only, never the others (up to [`MAX_LANES`]
//! lanes a connection; further protocols share one). [`Control::lane_stats`]
//! and [`Control::pool_stats`] show the pools.
//!
//! # Ordered sends
//!
//! Messages sent with [`Control::send`] may overtake each other, even when
//! sent one after another: they may travel on different streams, and the
//! receiver reads each stream in a task of its own. Messages written through one
//! [`Control::borrow_stream`] arrive in the order written: it lends one stream
//! for exclusive use as an [`ExclusiveStream`] (an example is on
//! [`Control::borrow_stream`]). Dropping it returns the stream to its pool; hold
//! it for the burst only, as no other sender can use it meanwhile.
//! [`Control::borrow_stream_with_priority`] waits in line with a priority.
//!
//! # Group sends
//!
//! [`Control::send_to_many`] sends one message to several peers at once, the
//! frame encoded (and compressed) once; [`Control::send_to_all`] does so to every
//! connected peer known to support the protocol. Both return one result per
//! peer, so a slow or failing peer holds up and fails only its own send.
//!
//! # Required peers and the supervisor
//!
//! Validators and other peers a node cannot do without are *required*
//! ([`HostBuilder::required_peer`], [`Host::add_required_peer`], or
//! [`Behaviour::add_required_peer`] in your own swarm; the address must end in
//! `/p2p/<peer id>`). A required peer is dialled at once, redialled whenever it
//! disconnects or a dial fails, and never evicted for another peer; a share of
//! the handshake slots is kept for its addresses
//! ([`AdmissionConfig::reserved_pending`]). Redials follow a capped Fibonacci
//! schedule, [`SupervisorConfig`]: steps of
//! [`backoff_unit`](SupervisorConfig::backoff_unit) (1 s) up to
//! [`max_backoff`](SupervisorConfig::max_backoff) (60 s), moved by up to
//! [`jitter_percent`](SupervisorConfig::jitter_percent) (20 %); given up after
//! [`max_attempts`](SupervisorConfig::max_attempts) failures in a row (never by
//! default); a connection that lasts less than
//! [`min_connection_lifetime`](SupervisorConfig::min_connection_lifetime) (5 s)
//! counts as a failure. The schedule is reported as
//! [`Event::RedialScheduled`], [`Event::RequiredPeerConnected`] and
//! [`Event::RequiredPeerGaveUp`]. [`Host::remove_required_peer`] lets a peer go.
//!
//! # Limits
//!
//! Every limit is a field of [`Config`] with a documented default, and
//! [`Config::validate`] (run by [`HostBuilder::build`] and [`Behaviour::new`])
//! rejects combinations that would break the transport.
//!
//! - **Peers**: at most [`max_peers`](Config::max_peers) (20) peers at once.
//!   When full, the [`eviction`](Config::eviction) strategy
//!   ([`EvictionStrategy`]: `Lifo` by default refuses the newcomer; `Fifo` and
//!   `Random` evict a low-priority peer) decides; a required peer makes room by
//!   evicting one that is not required.
//!   Refusals are reported as [`Event::Refused`] and tell the remote why
//!   ([`RefusalReason`]); evictions as [`Event::Evicted`].
//! - **Connections**: [`max_connections_per_peer`](Config::max_connections_per_peer)
//!   (1). With more, a peer whose best connection is busy gets another one
//!   dialled, and sends spread over them.
//! - **Addresses and handshakes**: [`AdmissionConfig`] caps handshakes in
//!   progress (128 in all, 16 per IP, 32 per /24 or /64), established inbound
//!   connections per IP and subnet, the handshake's time (5 s) and bytes
//!   (64 KiB).
//! - **Inbound streams**: at most
//!   [`max_inbound_streams_per_connection`](Config::max_inbound_streams_per_connection)
//!   (default `pool.max_size`, 100) on one connection and
//!   [`max_inbound_streams_per_peer`](Config::max_inbound_streams_per_peer)
//!   (default `pool.max_size` × connections per peer) from one peer; more are
//!   refused ([`Event::StreamRefused`]). Send streams are capped by
//!   [`PoolConfig::max_size`] (100) per connection. Together with 16 streams
//!   for other protocols they must fit in yamux's 512.
//! - **Bytes held**: an inbox holds at most
//!   [`handler_queue_len`](Config::handler_queue_len) (256) messages (and up
//!   to 32 more it took together for the application) and
//!   [`inbox_byte_budget`](Config::inbox_byte_budget) (64 MiB) of payload, and
//!   all inboxes together
//!   [`host_inbox_byte_budget`](Config::host_inbox_byte_budget) (512 MiB).
//!   When an inbox is full its streams are not read (backpressure), so memory
//!   stays bounded whatever peers send.
//! - **Frames**: a payload is at most [`max_frame_size`](Config::max_frame_size)
//!   (16 MiB). A larger one is refused before it is sent
//!   ([`Error::FrameTooLarge`], or [`Error::FrameTooLargeForPeer`] beyond the
//!   limit the peer stated); a peer's larger frame resets its stream
//!   ([`Event::ProtocolError`]).
//! - **Other tables**: [`max_protocols_per_peer`](Config::max_protocols_per_peer)
//!   (1024), [`max_blacklist_entries`](Config::max_blacklist_entries) (4096),
//!   [`event_queue_len`](Config::event_queue_len) (1024 a subscriber).
//!
//! # Backpressure and timeouts
//!
//! Nothing is dropped to make room: a receiver that does not take messages
//! from an [`Inbox`] stops reading that protocol's streams, flow control holds
//! up their writers, and the sender feels it. Every wait is bounded:
//!
//! - a send waits for a stream of its lane at most
//!   [`pool.borrow_timeout`](PoolConfig::borrow_timeout) (5 s), then fails with
//!   [`Error::Timeout`]; beyond [`pool.max_waiters`](PoolConfig::max_waiters)
//!   (1024) waiting senders it fails at once with [`Error::PoolExhausted`];
//! - a write that moves no byte (nor does any other of its lane) for
//!   [`pool.send_timeout`](PoolConfig::send_timeout) (60 s) fails with
//!   [`Error::Backpressure`]: the peer is not reading that protocol. Other
//!   protocols are not held up;
//! - [`stream_open_timeout`](Config::stream_open_timeout) (10 s) to open a
//!   stream, [`dial_timeout`](Config::dial_timeout) (10 s) for a dial,
//!   [`exchange_timeout`](Config::exchange_timeout) (10 s) for the protocol
//!   exchange;
//! - a connection whose socket takes no byte for
//!   [`stall_timeout`](Config::stall_timeout) (10 s) is closed
//!   ([`Event::ConnectionStalled`], [`Error::ConnectionStalled`]); one from
//!   whose peer nothing is read for [`ping_interval`](Config::ping_interval) +
//!   [`ping_timeout`](Config::ping_timeout) (2 s + 5 s) is closed as dead;
//! - a frame whose bytes stop arriving for
//!   [`frame_read_timeout`](Config::frame_read_timeout) (30 s) resets its
//!   stream.
//!
//! A caller's own deadline (`tokio::time::timeout` around a send) is safe: see
//! each call's `# Cancel safety`.
//!
//! # Events
//!
//! [`Control::events`] subscribes to [`Event`]s from then on (an example is
//! there): peers connecting and leaving ([`Event::PeerConnected`], after the
//! protocol exchange, and [`Event::PeerDisconnected`]), connections, dial
//! failures with their [`DialFailure`], refusals and evictions, the
//! supervisor's schedule, protocol lists, stream refusals, malformed frames,
//! stalls, gossip subscriptions and drops, discovered peers. Each subscription
//! buffers [`event_queue_len`](Config::event_queue_len) events; one that falls
//! behind is told how many it missed ([`Event::EventsDropped`]) and never slows
//! the network. In your own swarm the same events come out of the swarm, as the
//! behaviour's `ToSwarm` events.
//!
//! # Gossip, discovery and membership
//!
//! **Gossip.** A [`Host`] runs [`Broadcast`], gossipsub topics (turn it off with
//! [`BroadcastConfig::enabled`]). [`Control::subscribe`] returns a
//! [`TopicInbox`]; every [`GossipMessage`] waits for the application's verdict
//! ([`accept`](GossipMessage::accept), [`reject`](GossipMessage::reject),
//! [`ignore`](GossipMessage::ignore), or ignored after
//! [`validation_timeout`](BroadcastConfig::validation_timeout), 5 s) and is
//! forwarded only once accepted. [`Control::publish`] sends to the topic's
//! peers; message ids are content hashes, so a payload is one message however
//! often it is published. Name topics with [`chain_topic`].
//!
//! **Discovery.** With [`DiscoveryConfig::enabled`], a host announces the
//! [`chains`](DiscoveryConfig::chains) it serves in a Kademlia DHT of the
//! network's own, joined through its [`seeds`](DiscoveryConfig::seeds), and
//! dials nodes of those chains while fewer than
//! [`min_peers`](DiscoveryConfig::min_peers) (4) are connected
//! ([`Event::PeerDiscovered`]). [`Control::serve_chain`] and
//! [`Control::add_seed`] change this at run time.
//!
//! **Membership.** [`Control::set_protocol_members`] takes a protocol's
//! messages from the listed peers only ([`Event::NotMember`] for the others),
//! [`Control::set_topic_members`] does the same for a gossip topic. Who may
//! connect at all: the allow-list ([`Config::allow_list`],
//! [`Control::set_allow_list`], [`Control::allow_peer`]), the blacklist of peer
//! ids, IPs and IP:ports ([`Control::blacklist_add`], [`BlacklistEntry`]), and a
//! private network key ([`Config::network_key`], [`NetworkKey`]) that keeps
//! nodes without it from completing a handshake.
//!
//! # In your own Swarm
//!
//! [`Behaviour::new`] returns the behaviour and its [`Control`]. Put the
//! behaviour in the node's `#[derive(NetworkBehaviour)]` next to gossipsub,
//! Kademlia or request-response, and keep polling the swarm; [`Control`] works
//! as with a host. The example on [`Behaviour`] builds two such swarms and sends
//! between them. Points to know:
//!
//! - [`transport::build`] gives the host's transport (handshake deadline and
//!   byte budget, port reuse that cannot fail a dial); a stock libp2p transport
//!   works too.
//! - [`Config::scoped_to_liquid_peers`] makes only peers that speak our protocol
//!   liquid peers ([`PeerScope`]) and counts only them against the limits
//!   ([`PolicyScope`]), so Kademlia's or gossipsub's peers cost nothing here;
//!   [`Behaviour::dial_is_liquid`] marks a dial of the node's own as one for
//!   liquid.
//! - The behaviour runs ping itself: add identify (for peers' addresses), not
//!   ping. [`Broadcast`] and [`Discovery`] are behaviours of their own, to add
//!   next to it.
//! - Or let a [`Host`] run the node's behaviour: [`HostBuilder::behaviour`],
//!   then [`Host::with_behaviour`] and [`Host::take_behaviour_events`].
//!
//! # Metrics
//!
//! With the Cargo feature `metrics`,
//! [`HostBuilder::metrics`](HostBuilder#method.metrics) registers the host's
//! metrics in the node's `prometheus_client` registry: the behaviour's
//! (prefix `liquid_`: pools per peer, sends and their latency, receives and
//! inbox depths per protocol, refusals, evictions, dial failures, stalls,
//! gossip), the swarm's events and bandwidth (libp2p-metrics, `libp2p_`) and
//! gossipsub's own (`gossipsub_`). In your own swarm,
//! [`Behaviour::register_metrics`](Behaviour#method.register_metrics) registers
//! the behaviour's. Labels are bounded: at most `MAX_PEER_LABELS` peers and
//! `MAX_PROTOCOL_LABELS` protocols get their own, the rest add up under
//! `other`. The README lists every metric.
//!
//! ```
//! # #[cfg(feature = "metrics")]
//! # #[tokio::main]
//! # async fn main() -> Result<(), liquid_p2p::Error> {
//! use liquid_p2p::{Host, prometheus_client::{encoding::text::encode, registry::Registry}};
//!
//! let mut registry = Registry::default();
//! let host = Host::builder().metrics(&mut registry).build().await?;
//! // Serve this text at /metrics, next to the node's own metrics.
//! let mut text = String::new();
//! encode(&mut text, &registry).expect("encodes");
//! assert!(text.contains("liquid_send_duration_seconds_count 0"), "no send yet");
//! # host.shutdown().await;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "metrics"))]
//! # fn main() {}
//! ```
//!
//! # Tuning
//!
//! The defaults suit a few dozen peers exchanging messages from bytes to
//! megabytes. The settings that matter for throughput and latency:
//!
//! - [`ProtocolPriority`]: `High` for small urgent messages keeps their latency
//!   low under a bulk load; often the first thing to set.
//! - [`pool.init_size`](PoolConfig::init_size) (10): streams a connection keeps
//!   ready while it is in use, opened soon after its first send. A new connection opens
//!   only [`pool.idle_floor`](PoolConfig::idle_floor) (1), and a connection not
//!   sent on for [`pool.idle_after`](PoolConfig::idle_after) (60 s) goes back to
//!   it, so an idle connection costs little and the first message after a quiet
//!   period still finds a negotiated stream;
//!   [`pool.open_at_connect`](PoolConfig::open_at_connect) (false) opens
//!   `init_size` at connect instead.
//! - [`pool.max_size`](PoolConfig::max_size) (100): concurrent sends per
//!   connection; raise it for many concurrent senders (within yamux's 512 with
//!   the inbound streams), lower it to save memory.
//!   [`pool.grow_threshold_percent`](PoolConfig::grow_threshold_percent) (20)
//!   and [`pool.grow_batch`](PoolConfig::grow_batch) (`init_size / 2`) set how
//!   eagerly a pool grows; [`pool.shrink_after`](PoolConfig::shrink_after) (60 s)
//!   when it gives streams back.
//! - [`max_connections_per_peer`](Config::max_connections_per_peer) (1): more
//!   spread the load to one peer over several connections, each encrypting in
//!   its own task, for more throughput on a machine with cores to spare.
//! - [`handler_queue_len`](Config::handler_queue_len) (256): a deeper queue
//!   absorbs longer pauses of the application but keeps more messages out of
//!   cache (1024 delivered about a fifth fewer messages per second in the
//!   benchmarks); [`inbox_byte_budget`](Config::inbox_byte_budget) (64 MiB)
//!   bounds the bytes.
//! - [`compress_min_size`](Config::compress_min_size) (off): snappy for payloads
//!   from that size, worth it on slow links with compressible data.
//! - [`pool.borrow_timeout`](PoolConfig::borrow_timeout) (5 s) and
//!   [`pool.send_timeout`](PoolConfig::send_timeout) (60 s): how long a send may
//!   wait before it fails; shorter fails sooner under overload, too short fails
//!   sends on a congested slow link.
//! - [`ping_interval`](Config::ping_interval) (2 s),
//!   [`ping_timeout`](Config::ping_timeout) (5 s) and
//!   [`stall_timeout`](Config::stall_timeout) (10 s): how soon a dead peer or
//!   link is noticed; [`SupervisorConfig::backoff_unit`] (1 s) and
//!   [`SupervisorConfig::max_backoff`] (60 s): how soon a required peer is back.
//! - [`protocol_push_delay`](Config::protocol_push_delay) (100 ms): how long
//!   protocol changes gather before they are pushed to peers.
//! - [`broadcast.heartbeat_interval`](BroadcastConfig::heartbeat_interval)
//!   (1 s) and [`broadcast.mesh_n`](BroadcastConfig::mesh_n) (6): gossip's mesh
//!   upkeep and fan-out.
//!
//! [`Control::pool_stats`], [`Control::inbox_stats`] and the metrics show
//! whether pools wait and inboxes fill.

#![warn(missing_docs)]

mod admission;
mod behaviour;
mod boxed;
mod broadcast;
mod control;
mod delegate;
mod discovery;
mod events;
mod exchange;
mod handler;
mod host;
mod liveness;
#[cfg(feature = "metrics")]
mod metrics;
mod muxer;
mod protocol;
mod receiver;
mod refusal;
mod shared;
pub mod transport;
mod watchdog;

pub use behaviour::Behaviour;
pub use broadcast::{
    Broadcast, GOSSIP_PROTOCOL_PREFIX, GossipMessage, MAX_TOPIC_LEN, MessageId, TopicInbox,
    TopicStats, chain_topic,
};
pub use control::{Control, ExclusiveStream};
pub use discovery::{DISCOVERY_PROTOCOL, Discovery, MAX_CHAINS};
pub use events::Events;
pub use host::{Host, HostBuilder, IDENTIFY_PROTOCOL_VERSION};
pub use libp2p;
#[cfg(feature = "metrics")]
pub use metrics::{MAX_PEER_LABELS, MAX_PROTOCOL_LABELS};
#[cfg(feature = "metrics")]
pub use prometheus_client;

/// The building blocks the host is made of: the frame codec, the send-stream pool
/// and its manager, the connection manager, the supervisor's schedule, the
/// protocol-list exchange format. For benchmarks, fuzzing and tools that speak the
/// wire format by hand; a node needs none of it to use [`Host`] or [`Behaviour`].
/// These items may change in any release, unlike the rest of this crate's API.
pub mod low_level {
    pub use liquid_p2p_core::*;
}
pub use liquid_p2p_core::{
    AddressScope, AdmissionConfig, AdmissionStage, BlacklistEntry, BlacklistMatch, BroadcastConfig,
    BroadcastFailure, Config, ConnectionId, DialFailure, DiscoveryConfig, Error, Event,
    EvictionReason, EvictionStrategy, ExchangeError, ExchangeFailure, FrameError, GossipDrop, Lane,
    MAX_LANES, Message, NetworkKey, PeerId, PeerLimit, PeerLimits, PeerScope, PolicyScope,
    PoolConfig, PoolStats, ProtocolPriority, ReceiveCounts, RefusalReason, RemoteRefusal,
    StreamOpenFailure, StreamScope, SupervisorConfig, TransportFeature, UnknownPriority,
};
pub use muxer::{TransportStalled, YamuxConfig, YamuxMuxer, YamuxStream};
pub use protocol::{EXCHANGE_PROTOCOL, InboundProtocols, PROTOCOL, REFUSAL_PROTOCOL};
pub use receiver::{Inbox, InboxStats};
pub use shared::MAX_PROTOCOL_CHANGE_EVENTS;
