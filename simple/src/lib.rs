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
//! Order: messages sent with [`Control::send`] may overtake each other, since they
//! travel on different streams. Messages written through one
//! [`Control::borrow_stream`] arrive in the order written.

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
