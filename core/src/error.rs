//! The one error type of the library.
//!
//! Every variant says what happened and to whom: the peer, the connection, the
//! protocol or the limit that was hit, so a caller can act on it without parsing text.

use std::{io, path::PathBuf, sync::Arc, time::Duration};

use libp2p_identity::PeerId;
use libp2p_swarm::ConnectionId;
use multiaddr::Multiaddr;

use crate::{
    codec::FrameError,
    refusal::{DialFailure, RefusalReason},
};

/// Errors returned by liquid-p2p.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer has no open connection.
    #[error("peer {peer} is not connected")]
    NotConnected {
        /// The peer.
        peer: PeerId,
    },
    /// The pool of this connection was closed (connection closed or host shut down).
    #[error("pool closed: connection {connection} to {peer}")]
    PoolClosed {
        /// The peer.
        peer: PeerId,
        /// The connection whose pool closed.
        connection: ConnectionId,
    },
    /// No stream became free within `borrow_timeout`.
    #[error("no stream to {peer} became free within {after:?}")]
    Timeout {
        /// The peer.
        peer: PeerId,
        /// The borrow timeout that elapsed.
        after: Duration,
    },
    /// The peer took no byte of a message of `protocol` for `after` (the pool's
    /// `send_timeout`): its receiver is not reading that protocol, usually because
    /// the application does not take messages from its inbox. The message was not
    /// delivered; the stream it was written to is reset, and messages of other
    /// protocols are not held up.
    #[error(
        "{peer} took nothing of a {protocol} message for {after:?}: its receiver is not reading"
    )]
    Backpressure {
        /// The peer.
        peer: PeerId,
        /// The protocol of the message.
        protocol: String,
        /// How long the write waited without progress.
        after: Duration,
    },
    /// The pool is at its cap and its waiter queue is full.
    #[error(
        "stream pool of connection {connection} to {peer} exhausted: {waiters} borrowers already waiting"
    )]
    PoolExhausted {
        /// The peer.
        peer: PeerId,
        /// The connection.
        connection: ConnectionId,
        /// The waiter limit that was hit.
        waiters: usize,
    },
    /// Opening or negotiating a new outbound stream failed.
    #[error("opening a stream to {peer} failed: {reason}")]
    StreamOpen {
        /// The peer.
        peer: PeerId,
        /// What went wrong.
        reason: StreamOpenFailure,
    },
    /// Writing a frame failed; the stream was dropped.
    #[error("writing to {peer} failed: {source}")]
    Write {
        /// The peer.
        peer: PeerId,
        /// The I/O error.
        #[source]
        source: Arc<io::Error>,
    },
    /// The connection was closed by the stall watchdog.
    #[error("connection {connection} to {peer} stalled: no progress for {after:?}")]
    ConnectionStalled {
        /// The peer.
        peer: PeerId,
        /// The stalled connection.
        connection: ConnectionId,
        /// The stall timeout that elapsed.
        after: Duration,
    },
    /// A payload exceeds `max_frame_size`; nothing was sent.
    #[error("payload of {size} bytes exceeds the frame limit of {max} bytes")]
    FrameTooLarge {
        /// Payload size.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// A payload exceeds the largest the peer accepts (the `max_frame_size` it
    /// stated in the protocol exchange); nothing was sent. It would have reset
    /// the stream at the receiver.
    #[error("payload of {size} bytes exceeds the frame limit of {max} bytes {peer} accepts")]
    FrameTooLargeForPeer {
        /// The peer.
        peer: PeerId,
        /// Payload size.
        size: usize,
        /// The peer's limit.
        max: usize,
    },
    /// An application protocol id is empty or longer than 256 bytes.
    #[error("invalid protocol id ({len} bytes): must be 1..=256 bytes of UTF-8")]
    InvalidProtocol {
        /// Length of the rejected id.
        len: usize,
    },
    /// The protocol already has a handler on this host.
    #[error("protocol {protocol} is already registered")]
    ProtocolAlreadyRegistered {
        /// The protocol.
        protocol: String,
    },
    /// The protocol has no handler on this host.
    #[error("protocol {protocol} is not registered")]
    ProtocolNotRegistered {
        /// The protocol.
        protocol: String,
    },
    /// The peer is known not to support the protocol; nothing was sent.
    #[error("peer {peer} does not support protocol {protocol}")]
    ProtocolUnsupported {
        /// The peer.
        peer: PeerId,
        /// The protocol.
        protocol: String,
    },
    /// An inbound stream was refused because a cap was reached.
    #[error("inbound stream from {peer} refused: limit of {limit} streams per {scope} reached")]
    InboundStreamLimit {
        /// The peer.
        peer: PeerId,
        /// Which cap.
        scope: crate::StreamScope,
        /// The limit.
        limit: usize,
    },
    /// An inbound frame broke the wire format; the stream was reset.
    #[error("malformed frame from {peer}: {source}")]
    Frame {
        /// The peer.
        peer: PeerId,
        /// What was wrong with the frame.
        #[source]
        source: FrameError,
    },
    /// A dial failed.
    #[error("dial failed: {reason}")]
    Dial {
        /// What went wrong.
        cause: DialFailure,
        /// What went wrong, in words (the transport's own message where it gave one).
        reason: String,
    },
    /// Listening on an address failed.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: Multiaddr,
        /// What went wrong: `Unsupported` for an address no transport of the host
        /// takes, `TimedOut` when no address was bound within `dial_timeout`,
        /// otherwise the operating system's error (`AddrInUse`, ...).
        #[source]
        source: Arc<io::Error>,
    },
    /// A key file could not be read, parsed or written.
    #[error("key file {}: {source}", path.display())]
    KeyFile {
        /// The path.
        path: PathBuf,
        /// What went wrong: the file system's error, or `InvalidData` when the
        /// file is not a protobuf-encoded libp2p key.
        #[source]
        source: Arc<io::Error>,
    },
    /// A connection was refused by the admission rules (limits or blacklist).
    #[error("connection refused: {reason}")]
    ConnectionRefused {
        /// Why.
        reason: RefusalReason,
    },
    /// An address that must name its peer (a required peer's) does not end in
    /// `/p2p/<peer id>`.
    #[error("address {address} does not end in /p2p/<peer id>")]
    MissingPeerId {
        /// The address.
        address: Multiaddr,
    },
    /// The address needs a transport this build of liquid-p2p leaves out: the
    /// Cargo feature that brings it (`quic`, `dns`) is off. Nothing was dialled
    /// or bound.
    #[error("{address} needs liquid-p2p's `{feature}` feature, which this build leaves out")]
    TransportNotBuilt {
        /// The address.
        address: Multiaddr,
        /// The feature it needs.
        feature: TransportFeature,
    },
    /// The configuration is inconsistent.
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
    /// A blacklist entry is not a peer id, an IP address or an IP:port.
    #[error("invalid blacklist entry {entry:?}: {reason}")]
    InvalidBlacklistEntry {
        /// The rejected text, cut to its first 64 characters.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The blacklist already holds its maximum number of entries.
    #[error("blacklist full: limit of {limit} entries reached")]
    BlacklistFull {
        /// The entry limit.
        limit: usize,
    },
    /// The allow-list already holds its maximum number of peers.
    #[error("allow-list full: limit of {limit} peers reached")]
    AllowListFull {
        /// The limit (`max_blacklist_entries`).
        limit: usize,
    },
    /// The host was shut down; no further calls succeed.
    #[error("the host has been shut down")]
    ShutDown,
    /// Subscribing, unsubscribing or publishing on a gossip topic failed.
    #[error("topic {topic}: {reason}")]
    Broadcast {
        /// The topic.
        topic: String,
        /// Why.
        reason: BroadcastFailure,
    },
}

/// A transport that a Cargo feature of liquid-p2p brings
/// ([`Error::TransportNotBuilt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportFeature {
    /// QUIC (`/udp/../quic-v1`): the `quic` feature.
    Quic,
    /// Name resolution (`/dns`, `/dns4`, `/dns6`, `/dnsaddr`): the `dns` feature.
    Dns,
}

impl TransportFeature {
    /// The feature's name in `Cargo.toml`: `quic` or `dns`.
    pub fn name(self) -> &'static str {
        match self {
            TransportFeature::Quic => "quic",
            TransportFeature::Dns => "dns",
        }
    }
}

impl std::fmt::Display for TransportFeature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a broadcast call failed ([`Error::Broadcast`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BroadcastFailure {
    /// This node runs no broadcast: a `Host` built with
    /// `broadcast.enabled = false`, or a swarm without the `Broadcast` behaviour.
    #[error("broadcast is not enabled on this node")]
    Disabled,
    /// The topic name is empty or longer than 256 bytes.
    #[error("invalid topic name")]
    InvalidTopic,
    /// The node is already subscribed to the topic.
    #[error("already subscribed")]
    AlreadySubscribed,
    /// The node is not subscribed to the topic.
    #[error("not subscribed")]
    NotSubscribed,
    /// The node is subscribed to `broadcast.max_topics` topics already.
    #[error("subscribed to {limit} topics already")]
    TooManyTopics {
        /// The limit.
        limit: usize,
    },
    /// The same payload was published on this topic before (message ids are
    /// content hashes): the network has it already.
    #[error("published before")]
    Duplicate,
    /// No connected peer subscribes to the topic yet.
    #[error("no peer subscribes to the topic")]
    NoPeers,
    /// The payload is larger than `max_frame_size`.
    #[error("message of {size} bytes exceeds the {limit} byte limit")]
    TooLarge {
        /// The payload's size.
        size: usize,
        /// `max_frame_size`.
        limit: usize,
    },
    /// The send queue of every subscribed peer is full.
    #[error("the queues of all {peers} subscribed peers are full")]
    QueuesFull {
        /// Peers tried.
        peers: usize,
    },
    /// The message could not be signed.
    #[error("signing failed")]
    Signing,
}

/// Why a stream could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamOpenFailure {
    /// The peer does not speak the protocol (it answered `na` to the proposal).
    #[error("protocol not supported by the peer")]
    Unsupported,
    /// Opening and negotiating did not finish within `stream_open_timeout`.
    #[error("timed out")]
    Timeout,
    /// The connection closed first.
    #[error("connection closed")]
    ConnectionClosed,
    /// The connection cannot take more streams now.
    #[error("no stream available on the connection")]
    Exhausted,
    /// An I/O error during negotiation.
    #[error("I/O error: {0}")]
    Io(io::ErrorKind),
}

impl Error {
    /// Wraps an I/O error from writing to `peer`.
    pub fn write(peer: PeerId, source: io::Error) -> Self {
        Error::Write {
            peer,
            source: Arc::new(source),
        }
    }
}
