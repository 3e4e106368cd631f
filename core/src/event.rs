//! Events a host reports to the application.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use libp2p_identity::PeerId;
use libp2p_swarm::ConnectionId;
use multiaddr::Multiaddr;

use crate::{
    codec::FrameError,
    exchange::ExchangeFailure,
    refusal::{AdmissionStage, DialFailure, RefusalReason},
};

/// A message received for a registered protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Message {
    /// The sender, as authenticated by the connection.
    pub peer: PeerId,
    /// The connection it arrived on.
    pub connection: ConnectionId,
    /// The application protocol (shared with every message of that protocol, so
    /// receiving allocates nothing for it).
    pub protocol: Arc<str>,
    /// The payload.
    pub payload: Bytes,
}

impl Message {
    /// A message as the receiver delivers it; also for testing code that handles
    /// messages without a network.
    pub fn new(peer: PeerId, connection: ConnectionId, protocol: Arc<str>, payload: Bytes) -> Self {
        Self {
            peer,
            connection,
            protocol,
            payload,
        }
    }
}

/// Something that happened on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The host listens on a new address.
    Listening {
        /// The address, ending in `/p2p/<local peer id>`.
        address: Multiaddr,
    },
    /// A peer is connected and its protocol list is known: emitted after the
    /// protocol exchange on its first connection (or after the exchange
    /// failed, [`ProtocolExchangeFailed`](Self::ProtocolExchangeFailed) first,
    /// with the list unknown), once until it disconnects.
    /// [`ConnectionEstablished`](Self::ConnectionEstablished) comes before it.
    PeerConnected {
        /// The peer.
        peer: PeerId,
    },
    /// A peer's last connection closed.
    PeerDisconnected {
        /// The peer.
        peer: PeerId,
    },
    /// A connection (first or further) to a peer is up.
    ConnectionEstablished {
        /// The peer.
        peer: PeerId,
        /// The connection.
        connection: ConnectionId,
        /// Connections now open to the peer.
        connections: usize,
        /// The remote address of the connection.
        address: Multiaddr,
    },
    /// A connection closed; its pool and receive streams are gone.
    ConnectionClosed {
        /// The peer.
        peer: PeerId,
        /// The connection.
        connection: ConnectionId,
        /// Connections still open to the peer.
        remaining: usize,
    },
    /// An outgoing dial failed, or the connection it made did not last (for a
    /// required peer; each counts as a failed attempt of its redial schedule).
    DialFailed {
        /// The peer, if known.
        peer: Option<PeerId>,
        /// What went wrong, in words.
        reason: String,
        /// What went wrong.
        cause: DialFailure,
    },
    /// An inbound stream was refused because a cap was reached.
    StreamRefused {
        /// The peer.
        peer: PeerId,
        /// The connection.
        connection: ConnectionId,
        /// The cap that was hit.
        limit: usize,
        /// Which cap: the peer's, the connection's, or none (the connection was
        /// closing; `limit` is 0), or the inbound exchanges of the peer.
        scope: StreamScope,
        /// Streams refused from this peer so far.
        refused_total: u64,
    },
    /// An inbound frame broke the wire format; only that stream was reset.
    ProtocolError {
        /// The peer.
        peer: PeerId,
        /// The connection.
        connection: ConnectionId,
        /// What was wrong.
        error: FrameError,
    },
    /// A frame arrived for a protocol with no handler; it was skipped.
    UnknownProtocol {
        /// The peer.
        peer: PeerId,
        /// The protocol.
        protocol: String,
        /// Frames skipped for unknown protocols so far on this host.
        count: u64,
    },
    /// The watchdog closed a connection that had writes pending and moved no bytes.
    ConnectionStalled {
        /// The peer.
        peer: PeerId,
        /// The connection.
        connection: ConnectionId,
        /// How long it made no progress.
        idle_for: Duration,
    },
    /// The liveness check closed a connection: no answered ping and no byte
    /// read from the peer for `ping_interval + ping_timeout`. Whatever was
    /// queued for the peer on it is lost with it, gossip included (gossipsub
    /// sends nothing again, and advertises a message for a few heartbeats
    /// only). Under heavy CPU load a live peer can be this slow: see
    /// `ping_timeout`.
    ConnectionSilent {
        /// The peer.
        peer: PeerId,
        /// The connection.
        connection: ConnectionId,
        /// How long it had shown no sign of life.
        silent_for: Duration,
    },
    /// A dial to a required peer failed; the next one waits `delay`.
    RedialScheduled {
        /// The required peer.
        peer: PeerId,
        /// Failed dials in a row.
        attempt: u32,
        /// Time until the next dial.
        delay: Duration,
    },
    /// A required peer is connected (again); its redial schedule is reset.
    RequiredPeerConnected {
        /// The required peer.
        peer: PeerId,
    },
    /// A required peer was given up after `max_attempts` failed dials in a row.
    RequiredPeerGaveUp {
        /// The required peer.
        peer: PeerId,
        /// Failed dials in a row.
        attempts: u32,
    },
    /// Connections were refused (limits, blacklist, handshake guards). The first
    /// refusal of a kind from an address is reported at once with `count` 1; further
    /// ones within `admission.report_window` come as one more event with their count.
    Refused {
        /// The peer, if known when it was refused.
        peer: Option<PeerId>,
        /// The remote address (of the latest refusal reported), if known.
        address: Option<Multiaddr>,
        /// Why.
        reason: RefusalReason,
        /// Where in the connection's life.
        stage: AdmissionStage,
        /// How many refusals this event stands for.
        count: u64,
    },
    /// A frame of a registered protocol came from a peer that is not one of the
    /// protocol's members: dropped.
    NotMember {
        /// The sender.
        peer: PeerId,
        /// The protocol.
        protocol: String,
        /// Frames of this protocol dropped so far for this reason.
        count: u64,
    },
    /// Discovery found a node of a chain this node serves (reported once per
    /// peer).
    PeerDiscovered {
        /// The peer.
        peer: PeerId,
        /// The chain it serves.
        chain: String,
    },
    /// A connected peer subscribed to a gossip topic.
    TopicSubscribed {
        /// The peer.
        peer: PeerId,
        /// The topic.
        topic: String,
    },
    /// A connected peer unsubscribed from a gossip topic (or disconnected).
    TopicUnsubscribed {
        /// The peer.
        peer: PeerId,
        /// The topic.
        topic: String,
    },
    /// A gossip message on a subscribed topic was not delivered. Reported for
    /// every message from a non-member; for a full topic inbox, once when it
    /// fills (until a message fits again).
    GossipDropped {
        /// The topic.
        topic: String,
        /// The peer that forwarded it to us.
        from: PeerId,
        /// Its author, if signed.
        origin: Option<PeerId>,
        /// Why.
        reason: GossipDrop,
    },
    /// Gossip for a peer was dropped since the last report because its send
    /// queue was full: it (or the link to it) does not keep up. Reported at most
    /// once per gossip heartbeat and peer.
    GossipPeerSlow {
        /// The peer.
        peer: PeerId,
        /// Messages dropped for it in that heartbeat.
        dropped: u64,
    },
    /// Gossipsub's score of a connected peer fell below its graylist threshold
    /// (-80): everything the peer sends on gossip, messages included, is
    /// ignored until its score recovers. Rejected messages put a peer there.
    /// Reported once each time it falls below.
    GossipPeerGraylisted {
        /// The peer.
        peer: PeerId,
    },
    /// A connected peer was disconnected to make room or because it was blacklisted.
    Evicted {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: EvictionReason,
    },
    /// A peer's full protocol list arrived (exchange or push). Per-protocol
    /// `ProtocolSupported` / `ProtocolUnsupported` events follow only when at most
    /// 16 protocols changed; `added` and `removed` always carry every change.
    PeerProtocols {
        /// The peer.
        peer: PeerId,
        /// Its protocols, sorted.
        protocols: Vec<String>,
        /// Protocols it did not support before, sorted.
        added: Vec<String>,
        /// Protocols it no longer supports, sorted.
        removed: Vec<String>,
    },
    /// A peer now supports `protocol`.
    ProtocolSupported {
        /// The peer.
        peer: PeerId,
        /// The protocol.
        protocol: String,
    },
    /// A peer no longer supports `protocol` (or stopped announcing it).
    ProtocolUnsupported {
        /// The peer.
        peer: PeerId,
        /// The protocol.
        protocol: String,
    },
    /// The protocol exchange with a new peer failed; the peer is kept with its list
    /// unknown (sends to it are not failed early).
    ProtocolExchangeFailed {
        /// The peer.
        peer: PeerId,
        /// What went wrong.
        reason: ExchangeFailure,
    },
    /// The event subscriber fell behind and missed this many events.
    EventsDropped {
        /// Events missed.
        count: u64,
    },
}

/// Which cap refused an inbound stream ([`Event::StreamRefused`],
/// [`Error::InboundStreamLimit`](crate::Error::InboundStreamLimit)). Displayed as
/// `peer`, `connection`, `closed connection`, `exchange`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StreamScope {
    /// The peer's cap on inbound message streams.
    Peer,
    /// The connection's cap on inbound message streams.
    Connection,
    /// The connection was closing: nothing is accepted on it.
    ClosedConnection,
    /// The cap on a peer's inbound protocol exchanges served at once.
    Exchange,
}

impl StreamScope {
    /// A short snake_case name (`peer`, `connection`, `closed_connection`,
    /// `exchange`).
    pub fn as_str(self) -> &'static str {
        match self {
            StreamScope::Peer => "peer",
            StreamScope::Connection => "connection",
            StreamScope::ClosedConnection => "closed_connection",
            StreamScope::Exchange => "exchange",
        }
    }
}

impl std::fmt::Display for StreamScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StreamScope::Peer => "peer",
            StreamScope::Connection => "connection",
            StreamScope::ClosedConnection => "closed connection",
            StreamScope::Exchange => "exchange",
        })
    }
}

/// Why a gossip message was not delivered ([`Event::GossipDropped`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GossipDrop {
    /// Its author or the peer that forwarded it is not a member of the topic:
    /// rejected, which lowers the forwarder's score.
    NotMember,
    /// The topic's inbox was full (in messages or bytes): ignored, not
    /// forwarded, no penalty.
    InboxFull,
    /// `broadcast.max_pending_validations` messages were waiting for a verdict:
    /// ignored.
    TooManyPending,
}

impl GossipDrop {
    /// The reason as one word, for logs and JSON: `not_member`, `inbox_full`,
    /// `too_many_pending`.
    pub fn as_str(&self) -> &'static str {
        match self {
            GossipDrop::NotMember => "not_member",
            GossipDrop::InboxFull => "inbox_full",
            GossipDrop::TooManyPending => "too_many_pending",
        }
    }
}

impl std::fmt::Display for GossipDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a connected peer was evicted ([`Event::Evicted`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EvictionReason {
    /// `max_peers` was reached and the eviction strategy chose it for a newcomer.
    MadeRoomFor {
        /// The newcomer.
        peer: PeerId,
    },
    /// It stopped being required while more than `max_peers` were connected.
    NoLongerRequired,
    /// The blacklist now matches it.
    Blacklisted,
    /// The allow-list is active and no longer lists it.
    NotAllowed,
}

impl EvictionReason {
    /// A short snake_case name of the kind (`made_room`, `no_longer_required`,
    /// `blacklisted`, `not_allowed`).
    pub fn kind(&self) -> &'static str {
        match self {
            EvictionReason::MadeRoomFor { .. } => "made_room",
            EvictionReason::NoLongerRequired => "no_longer_required",
            EvictionReason::Blacklisted => "blacklisted",
            EvictionReason::NotAllowed => "not_allowed",
        }
    }
}

impl std::fmt::Display for EvictionReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EvictionReason::MadeRoomFor { peer } => write!(f, "evicted to make room for {peer}"),
            EvictionReason::NoLongerRequired => {
                f.write_str("no longer required and max peers exceeded")
            }
            EvictionReason::Blacklisted => f.write_str("blacklisted"),
            EvictionReason::NotAllowed => f.write_str("not_allowed"),
        }
    }
}
