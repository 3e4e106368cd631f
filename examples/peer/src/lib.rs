//! The `peer` binary: a scriptable liquid-p2p node driven by lines on stdin,
//! reporting JSON lines (or human-readable lines) on stdout. Its command line and
//! JSON lines are a stable interface (README, "The `peer` example").
//!
//! This library holds the pure parts of the `peer` binary, so they can be unit
//! tested without a network: [`parse_command`] turns one line of stdin into a
//! [`Command`], and [`Output`] is every line the peer prints, rendered as one JSON
//! object ([`Output::to_json`]) or as a human-readable line
//! ([`Output::to_human`]).

use std::{fmt, str::FromStr};

mod config_file;

pub use config_file::{ConfigFileError, PeerFile};

use liquid_p2p::{
    ConnectionId, Event, GossipMessage, InboxStats, PeerId, PoolStats, ProtocolPriority,
    ReceiveCounts, TopicStats, libp2p::Multiaddr,
};
use serde::Serialize;

/// The protocol a `peer` registers when no `--protocol` is given.
pub const DEFAULT_PROTOCOL: &str = "/liquid/chat/1";

/// Whom a `send` goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every connected peer (`*`).
    All,
    /// One peer.
    Peer(PeerId),
    /// Several peers (`id1,id2,...`), in that order.
    Peers(Vec<PeerId>),
}

impl Target {
    /// The peers it names, with `connected` standing for `*`.
    pub fn peers(self, connected: impl FnOnce() -> Vec<PeerId>) -> Vec<PeerId> {
        match self {
            Target::All => connected(),
            Target::Peer(peer) => vec![peer],
            Target::Peers(peers) => peers,
        }
    }
}

/// One command read from the peer's stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `send <peer-id[,peer-id...]|*> <protocol> <text...>`: the text is the rest
    /// of the line (it may be empty or contain spaces); sent to every peer named
    /// at once, encoded once.
    Send {
        /// The recipient(s).
        target: Target,
        /// The application protocol.
        protocol: String,
        /// The payload, sent as UTF-8.
        text: String,
    },
    /// `register <protocol>`.
    Register(String),
    /// `unregister <protocol>`.
    Unregister(String),
    /// `pause <protocol>`: stop taking messages from that protocol's inbox (they
    /// queue, then its senders get backpressure), to play a slow consumer.
    Pause(String),
    /// `resume <protocol>`: take its messages again.
    Resume(String),
    /// `priority <protocol> <high|normal|low>`: the send priority of a
    /// registered protocol.
    Priority {
        /// The protocol.
        protocol: String,
        /// Its new priority.
        priority: ProtocolPriority,
    },
    /// `dial <multiaddr>`.
    Dial(Multiaddr),
    /// `peers`.
    Peers,
    /// `stats`: pool, inbound-stream, task and received-message counts.
    Stats,
    /// `flood <peer-id|*> <protocol> <count> <size>`: sends `count` numbered
    /// messages of `size` bytes to each recipient, in the background, and reports
    /// which sends returned `Ok` (see [`flood_payload`]).
    Flood {
        /// The recipient(s).
        target: Target,
        /// The application protocol.
        protocol: String,
        /// Messages per recipient.
        count: u64,
        /// Bytes per message (at least the numbered header, see [`flood_payload`]).
        size: usize,
    },
    /// `subscribe <topic>`: receive the topic's gossip (each message is printed
    /// as a `gossip` line and accepted, so it is forwarded).
    Subscribe(String),
    /// `unsubscribe <topic>`.
    Unsubscribe(String),
    /// `publish <topic> <text...>`: the text is the rest of the line.
    Publish {
        /// The topic.
        topic: String,
        /// The payload, sent as UTF-8.
        text: String,
    },
    /// `score <peer-id>`: this node's gossipsub score of the peer.
    Score(PeerId),
    /// `quit`.
    Quit,
}

/// Why a command line was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError(String);

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CommandError {}

/// The commands and their arguments, for error messages and `--help`.
pub const COMMAND_USAGE: &str = "send <peer-id[,peer-id...]|*> <protocol> <text...> | register <protocol> | \
     unregister <protocol> | pause <protocol> | resume <protocol> | \
     priority <protocol> <high|normal|low> | dial <multiaddr> | peers | stats | \
     flood <peer-id|*> <protocol> <count> <size> | subscribe <topic> | \
     unsubscribe <topic> | publish <topic> <text...> | score <peer-id> | quit";

/// Most messages one `flood` may send to each recipient.
pub const MAX_FLOOD_COUNT: u64 = 10_000_000;

/// Largest `flood` message: the default `max_frame_size` (16 MiB); a larger one
/// could never be sent.
pub const MAX_FLOOD_SIZE: usize = 16 * 1024 * 1024;

/// The payload of message `seq` of flood number `flood`: the ASCII header
/// `flood:<flood>:<seq>:` followed by `.` up to `size` bytes (never shorter than the
/// header). A receiver recovers both numbers with [`parse_flood_payload`].
pub fn flood_payload(flood: u64, seq: u64, size: usize) -> Vec<u8> {
    let mut payload = format!("flood:{flood}:{seq}:").into_bytes();
    if payload.len() < size {
        payload.resize(size, b'.');
    }
    payload
}

/// The flood and sequence numbers of a payload made by [`flood_payload`].
pub fn parse_flood_payload(payload: &[u8]) -> Option<(u64, u64)> {
    let rest = payload.strip_prefix(b"flood:")?;
    let mut fields = rest.splitn(3, |b| *b == b':');
    let number = |field: Option<&[u8]>| std::str::from_utf8(field?).ok()?.parse().ok();
    let flood = number(fields.next())?;
    let seq = number(fields.next())?;
    fields.next()?;
    Some((flood, seq))
}

/// Turns sorted, distinct numbers into inclusive `[first, last]` ranges.
pub fn to_ranges(sorted: &[u64]) -> Vec<[u64; 2]> {
    let mut ranges: Vec<[u64; 2]> = Vec::new();
    for &n in sorted {
        match ranges.last_mut() {
            Some(last) if last[1].checked_add(1) == Some(n) => last[1] = n,
            _ => ranges.push([n, n]),
        }
    }
    ranges
}

/// Splits off the first whitespace-separated token; the rest keeps everything
/// after the whitespace that follows the token.
fn next_token(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    if s.is_empty() {
        return None;
    }
    match s.find(char::is_whitespace) {
        Some(end) => {
            let rest = &s[end..];
            // Drop exactly one separator so the text may start with spaces.
            let sep = rest.chars().next().map_or(0, char::len_utf8);
            Some((&s[..end], &rest[sep..]))
        }
        None => Some((s, "")),
    }
}

/// Takes exactly one argument and nothing else.
fn single_argument<'a>(command: &str, what: &str, rest: &'a str) -> Result<&'a str, CommandError> {
    let usage = || CommandError(format!("usage: {command} <{what}>"));
    let (arg, extra) = next_token(rest).ok_or_else(usage)?;
    if !extra.trim().is_empty() {
        return Err(usage());
    }
    Ok(arg)
}

/// Parses one line of stdin. Blank lines give `Ok(None)`; the trailing newline (and
/// `\r`) is ignored.
pub fn parse_command(line: &str) -> Result<Option<Command>, CommandError> {
    let line = line.trim_end_matches(['\n', '\r']);
    let Some((name, rest)) = next_token(line) else {
        return Ok(None);
    };
    let no_arguments = |command: Command| {
        if rest.trim().is_empty() {
            Ok(Some(command))
        } else {
            Err(CommandError(format!("`{name}` takes no arguments")))
        }
    };
    match name {
        "send" => {
            let usage = || CommandError("usage: send <peer-id|*> <protocol> <text...>".into());
            let (to, rest) = next_token(rest).ok_or_else(usage)?;
            let (protocol, text) = next_token(rest).ok_or_else(usage)?;
            let target = parse_target(to)?;
            Ok(Some(Command::Send {
                target,
                protocol: protocol.to_owned(),
                text: text.to_owned(),
            }))
        }
        "register" => Ok(Some(Command::Register(
            single_argument(name, "protocol", rest)?.to_owned(),
        ))),
        "unregister" => Ok(Some(Command::Unregister(
            single_argument(name, "protocol", rest)?.to_owned(),
        ))),
        "pause" => Ok(Some(Command::Pause(
            single_argument(name, "protocol", rest)?.to_owned(),
        ))),
        "resume" => Ok(Some(Command::Resume(
            single_argument(name, "protocol", rest)?.to_owned(),
        ))),
        "priority" => {
            let usage = || CommandError("usage: priority <protocol> <high|normal|low>".into());
            let mut tokens = rest.split_whitespace();
            let (Some(protocol), Some(level), None) = (tokens.next(), tokens.next(), tokens.next())
            else {
                return Err(usage());
            };
            let priority = level
                .parse()
                .map_err(|e: liquid_p2p::UnknownPriority| CommandError(e.to_string()))?;
            Ok(Some(Command::Priority {
                protocol: protocol.to_owned(),
                priority,
            }))
        }
        "dial" => {
            let address = single_argument(name, "multiaddr", rest)?;
            let address = Multiaddr::from_str(address)
                .map_err(|e| CommandError(format!("invalid multiaddr `{address}`: {e}")))?;
            Ok(Some(Command::Dial(address)))
        }
        "peers" => no_arguments(Command::Peers),
        "stats" => no_arguments(Command::Stats),
        "flood" => {
            let usage =
                || CommandError("usage: flood <peer-id|*> <protocol> <count> <size>".into());
            let mut tokens = rest.split_whitespace();
            let (Some(to), Some(protocol), Some(count), Some(size), None) = (
                tokens.next(),
                tokens.next(),
                tokens.next(),
                tokens.next(),
                tokens.next(),
            ) else {
                return Err(usage());
            };
            let target = parse_target(to)?;
            let count: u64 = count
                .parse()
                .map_err(|e| CommandError(format!("invalid count `{count}`: {e}")))?;
            if count > MAX_FLOOD_COUNT {
                return Err(CommandError(format!(
                    "count {count} exceeds the limit of {MAX_FLOOD_COUNT}"
                )));
            }
            let size: usize = size
                .parse()
                .map_err(|e| CommandError(format!("invalid size `{size}`: {e}")))?;
            if size > MAX_FLOOD_SIZE {
                return Err(CommandError(format!(
                    "size {size} exceeds the limit of {MAX_FLOOD_SIZE}"
                )));
            }
            Ok(Some(Command::Flood {
                target,
                protocol: protocol.to_owned(),
                count,
                size,
            }))
        }
        "subscribe" => Ok(Some(Command::Subscribe(
            single_argument(name, "topic", rest)?.to_owned(),
        ))),
        "unsubscribe" => Ok(Some(Command::Unsubscribe(
            single_argument(name, "topic", rest)?.to_owned(),
        ))),
        "publish" => {
            let (topic, text) = next_token(rest)
                .ok_or_else(|| CommandError("usage: publish <topic> <text...>".into()))?;
            Ok(Some(Command::Publish {
                topic: topic.to_owned(),
                text: text.to_owned(),
            }))
        }
        "score" => {
            let id = single_argument(name, "peer-id", rest)?;
            let peer = PeerId::from_str(id)
                .map_err(|e| CommandError(format!("invalid peer id `{id}`: {e}")))?;
            Ok(Some(Command::Score(peer)))
        }
        "quit" => no_arguments(Command::Quit),
        other => Err(CommandError(format!(
            "unknown command `{other}`; expected {COMMAND_USAGE}"
        ))),
    }
}

/// Peer ids, one a line; blank lines and lines starting with `#` are skipped,
/// as are spaces around an id (an `--allow-file`).
pub fn parse_peer_list(text: &str) -> Result<Vec<PeerId>, CommandError> {
    text.lines()
        .enumerate()
        .map(|(n, line)| (n + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(n, line)| {
            PeerId::from_str(line)
                .map_err(|e| CommandError(format!("line {n}: invalid peer id `{line:.64}`: {e}")))
        })
        .collect()
}

/// `*` or a peer id.
fn parse_target(to: &str) -> Result<Target, CommandError> {
    if to == "*" {
        return Ok(Target::All);
    }
    let parse = |id: &str| {
        PeerId::from_str(id).map_err(|e| CommandError(format!("invalid peer id `{id}`: {e}")))
    };
    if !to.contains(',') {
        return parse(to).map(Target::Peer);
    }
    to.split(',')
        .map(parse)
        .collect::<Result<_, _>>()
        .map(Target::Peers)
}

/// A gossipsub score, as a JSON number. Compared by its bits, so `Output`
/// stays `Eq`.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(transparent)]
pub struct Score(pub f64);

impl PartialEq for Score {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for Score {}

/// A connection id as JSON: a number (its `Display` form), or a string should that
/// form ever stop being numeric.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ConnectionNumber {
    /// The usual case.
    Number(u64),
    /// Fallback.
    Text(String),
}

impl From<ConnectionId> for ConnectionNumber {
    fn from(connection: ConnectionId) -> Self {
        let text = connection.to_string();
        match text.parse() {
            Ok(n) => Self::Number(n),
            Err(_) => Self::Text(text),
        }
    }
}

impl fmt::Display for ConnectionNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Text(t) => f.write_str(t),
        }
    }
}

/// Every line the `peer` prints. With `--json` each is one JSON object whose
/// `event` field is the variant name in snake_case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Output {
    /// The host listens on `address` (ending in `/p2p/<id>`).
    Listening {
        /// The address.
        address: String,
    },
    /// The metrics endpoint (`--metrics`) serves at `url`.
    Metrics {
        /// `http://<address>/metrics`.
        url: String,
    },
    /// A peer's first connection is up.
    Connected {
        /// The peer.
        peer: String,
    },
    /// A peer's last connection closed.
    Disconnected {
        /// The peer.
        peer: String,
    },
    /// A message arrived for a registered protocol.
    Message {
        /// The sender.
        peer: String,
        /// The protocol.
        protocol: String,
        /// The payload, as UTF-8 (invalid bytes replaced).
        data: String,
    },
    /// Something failed: a bad command, a failed send or dial.
    Error {
        /// What went wrong.
        message: String,
    },
    /// Reply to `peers`.
    Peers {
        /// Connected peers, sorted.
        peers: Vec<String>,
    },
    /// Reply to a successful `send` (one per recipient).
    Sent {
        /// The recipient.
        peer: String,
        /// The protocol.
        protocol: String,
    },
    /// Reply to `register`.
    Registered {
        /// The protocol.
        protocol: String,
    },
    /// Reply to `unregister`.
    Unregistered {
        /// The protocol.
        protocol: String,
    },
    /// Reply to `pause`.
    Paused {
        /// The protocol.
        protocol: String,
    },
    /// Reply to `resume`.
    Resumed {
        /// The protocol.
        protocol: String,
    },
    /// Reply to `priority`.
    Priority {
        /// The protocol.
        protocol: String,
        /// Its send priority now: `high`, `normal` or `low`.
        priority: String,
    },
    /// A send (of `send` or `flood`) failed for lack of room at the receiver:
    /// the peer took no byte of it for `after_ms` (it is not reading that
    /// protocol). Printed after the send's `error` line, or once per flood.
    Backpressure {
        /// The recipient.
        peer: String,
        /// The protocol.
        protocol: String,
        /// How long the write waited without progress, in milliseconds.
        after_ms: u64,
    },
    /// Reply to a successful dial (`dial`, `--dial`, `--required`).
    Dialed {
        /// The remote's peer id.
        peer: String,
    },
    /// Reply to `stats`: this host's counts at one instant.
    Stats(Stats),
    /// End of a `flood` to one recipient.
    FloodDone {
        /// The flood's number in this process (1, 2, …), as in its payloads.
        flood: u64,
        /// The recipient.
        peer: String,
        /// The protocol.
        protocol: String,
        /// Messages attempted.
        count: u64,
        /// Bytes per message.
        size: usize,
        /// `send` calls that returned `Ok`.
        sent_ok: u64,
        /// `send` calls that returned an error.
        failed: u64,
        /// Sequence numbers whose `send` failed, as inclusive `[first, last]` ranges.
        failed_ranges: Vec<[u64; 2]>,
        /// The first error, if any.
        first_error: Option<String>,
        /// From the first send to the last result, in milliseconds.
        elapsed_ms: u64,
    },
    /// A connection (first or further) is up.
    ConnectionEstablished {
        /// The peer.
        peer: String,
        /// The connection.
        connection: ConnectionNumber,
        /// Connections now open to the peer.
        connections: usize,
        /// The remote address.
        address: String,
    },
    /// A connection closed.
    ConnectionClosed {
        /// The peer.
        peer: String,
        /// The connection.
        connection: ConnectionNumber,
        /// Connections still open to the peer.
        remaining: usize,
    },
    /// An outgoing dial failed.
    DialFailed {
        /// The peer, if known.
        peer: Option<String>,
        /// What went wrong.
        reason: String,
        /// Its kind: `transport`, `wrong_peer`, `refused_locally`,
        /// `refused_by_remote`, `closed_before_exchange` or `closed_early`.
        cause: &'static str,
    },
    /// An inbound stream was refused because a cap was reached.
    StreamRefused {
        /// The peer.
        peer: String,
        /// The connection.
        connection: ConnectionNumber,
        /// The cap that was hit.
        limit: usize,
        /// `peer`, `connection` or `closed connection`.
        scope: String,
        /// Streams refused from this peer so far.
        refused_total: u64,
    },
    /// An inbound frame broke the wire format; that stream was reset.
    ProtocolError {
        /// The peer.
        peer: String,
        /// The connection.
        connection: ConnectionNumber,
        /// What was wrong.
        error: String,
    },
    /// A frame arrived for a protocol with no handler.
    UnknownProtocol {
        /// The peer.
        peer: String,
        /// The protocol.
        protocol: String,
        /// Frames skipped for unknown protocols so far.
        count: u64,
    },
    /// The watchdog closed a connection that made no progress.
    ConnectionStalled {
        /// The peer.
        peer: String,
        /// The connection.
        connection: ConnectionNumber,
        /// How long it made no progress, in milliseconds.
        idle_ms: u64,
    },
    /// The liveness check closed a connection with no sign of life.
    ConnectionSilent {
        /// The peer.
        peer: String,
        /// The connection.
        connection: ConnectionNumber,
        /// How long it had been silent, in milliseconds.
        silent_ms: u64,
    },
    /// A dial to a required peer failed; the next waits `delay_ms`.
    RedialScheduled {
        /// The required peer.
        peer: String,
        /// Failed dials in a row.
        attempt: u32,
        /// Time until the next dial, in milliseconds.
        delay_ms: u64,
    },
    /// A required peer is connected (again).
    RequiredConnected {
        /// The required peer.
        peer: String,
    },
    /// A required peer was given up.
    RequiredGaveUp {
        /// The required peer.
        peer: String,
        /// Failed dials in a row.
        attempts: u32,
    },
    /// A connection was refused by the limits or the blacklist.
    Refused {
        /// The peer, if known.
        peer: Option<String>,
        /// The remote address, if known.
        address: Option<String>,
        /// Why.
        reason: String,
        /// Where: `dial`, `pending`, `handshake` or `established`.
        stage: &'static str,
        /// Refusals this line stands for (the same kind from the same address
        /// within one report window).
        count: u64,
    },
    /// A peer was disconnected to make room or because it was blacklisted.
    Evicted {
        /// The peer.
        peer: String,
        /// Why.
        reason: String,
    },
    /// A peer's full protocol list arrived.
    PeerProtocols {
        /// The peer.
        peer: String,
        /// Its protocols, sorted.
        protocols: Vec<String>,
        /// Protocols it did not support before.
        added: Vec<String>,
        /// Protocols it no longer supports.
        removed: Vec<String>,
    },
    /// A peer now supports a protocol.
    ProtocolSupported {
        /// The peer.
        peer: String,
        /// The protocol.
        protocol: String,
    },
    /// A peer no longer supports a protocol.
    ProtocolUnsupported {
        /// The peer.
        peer: String,
        /// The protocol.
        protocol: String,
    },
    /// The protocol exchange with a peer failed; its list is unknown.
    ProtocolExchangeFailed {
        /// The peer.
        peer: String,
        /// Why, in words.
        reason: String,
        /// Why: `not_spoken`, `timed_out`, `open` or `list`.
        cause: &'static str,
    },
    /// The event subscriber fell behind and missed events.
    EventsDropped {
        /// Events missed.
        count: u64,
    },
    /// Reply to `subscribe`.
    Subscribed {
        /// The topic.
        topic: String,
    },
    /// Reply to `unsubscribe`.
    Unsubscribed {
        /// The topic.
        topic: String,
    },
    /// Reply to `score`: gossipsub's score of the peer here (`null` if the
    /// peer is unknown to gossipsub or broadcast is off).
    GossipScore {
        /// The peer.
        peer: String,
        /// Its score.
        score: Option<Score>,
    },
    /// Reply to a successful `publish`.
    Published {
        /// The topic.
        topic: String,
        /// The message id (hex of the hash of topic and payload).
        id: String,
    },
    /// A gossip message arrived on a subscribed topic (and was accepted, so it
    /// is forwarded).
    Gossip {
        /// The topic.
        topic: String,
        /// The peer that published it.
        from: Option<String>,
        /// The peer that forwarded it to this one.
        via: String,
        /// The payload, as UTF-8 (invalid bytes replaced).
        data: String,
    },
    /// Gossip for a peer was dropped: its send queue was full.
    GossipPeerSlow {
        /// The peer.
        peer: String,
        /// Messages dropped for it since the last such line.
        dropped: u64,
    },
    /// Gossip from a peer is ignored: its gossipsub score fell below the
    /// graylist threshold.
    GossipPeerGraylisted {
        /// The peer.
        peer: String,
    },
    /// Discovery found a node of a chain this peer serves.
    Discovered {
        /// The peer.
        peer: String,
        /// The chain.
        chain: String,
    },
    /// A frame of a registered protocol came from a peer that is not one of its
    /// members: dropped.
    NotMember {
        /// The sender.
        peer: String,
        /// The protocol.
        protocol: String,
        /// Frames of this protocol dropped so far for this reason.
        count: u64,
    },
    /// A connected peer subscribed to a topic.
    TopicSubscribed {
        /// The peer.
        peer: String,
        /// The topic.
        topic: String,
    },
    /// A connected peer unsubscribed from a topic (or disconnected).
    TopicUnsubscribed {
        /// The peer.
        peer: String,
        /// The topic.
        topic: String,
    },
    /// A gossip message was not delivered.
    GossipDropped {
        /// The topic.
        topic: String,
        /// The peer that forwarded it.
        via: String,
        /// The peer that published it.
        from: Option<String>,
        /// `not_member`, `inbox_full` or `too_many_pending`.
        reason: &'static str,
    },
    /// A host event this version of the peer does not know (the library's `Event`
    /// is non-exhaustive).
    OtherEvent {
        /// The event's `Debug` form.
        debug: String,
    },
}

/// The counts in a `stats` line. Pool and inbound figures come from
/// `Host::pool_stats`, `Host::receive_counts` and `Host::inbound_stream_count`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Peers with at least one connection.
    pub connected_peers: usize,
    /// Connections (one send pool each) across those peers.
    pub connections: usize,
    /// Open pooled send streams (idle + borrowed), all pools.
    pub pool_streams: usize,
    /// Idle pooled send streams.
    pub pool_idle: usize,
    /// Borrowed pooled send streams.
    pub pool_borrowed: usize,
    /// Borrowers waiting for a stream.
    pub pool_waiters: usize,
    /// Streams being opened.
    pub pool_opening: usize,
    /// Inbound message streams tracked across all peers, connected or not.
    pub inbound_streams: usize,
    /// Tasks alive in this process's tokio runtime.
    pub tasks: usize,
    /// Messages received on registered protocols since start.
    pub received_messages: u64,
    /// Their payload bytes.
    pub received_bytes: u64,
    /// One entry per connected peer, sorted by peer id.
    pub per_peer: Vec<PeerStats>,
    /// One entry per registered protocol, sorted by protocol.
    pub per_protocol: Vec<ProtocolLine>,
    /// One entry per subscribed topic, sorted by topic.
    pub topics: Vec<TopicLine>,
}

/// One subscribed topic in a `stats` line (the fields of `TopicStats`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicLine {
    /// The topic.
    pub topic: String,
    /// Connected peers subscribed to it.
    pub peers: usize,
    /// Messages received since subscribing.
    pub received_messages: u64,
    /// Their payload bytes.
    pub received_bytes: u64,
    /// Messages not delivered (inbox full, too many awaiting a verdict).
    pub dropped_messages: u64,
    /// Messages rejected because their author or forwarder is not a member.
    pub rejected_messages: u64,
}

impl From<TopicStats> for TopicLine {
    fn from(stats: TopicStats) -> Self {
        Self {
            topic: stats.topic,
            peers: stats.peers,
            received_messages: stats.received_messages,
            received_bytes: stats.received_bytes,
            dropped_messages: stats.dropped_messages,
            rejected_messages: stats.rejected_messages,
        }
    }
}

/// One connected peer in a `stats` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerStats {
    /// The peer.
    pub peer: String,
    /// Inbound message streams tracked for it.
    pub inbound_streams: usize,
    /// Inbound streams refused since its first connection.
    pub inbound_refused: u64,
    /// One pool per connection.
    pub pools: Vec<PoolLine>,
}

/// One registered protocol in a `stats` line (the fields of `InboxStats`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProtocolLine {
    /// The protocol.
    pub protocol: String,
    /// Messages that arrived for it since it was registered.
    pub received_messages: u64,
    /// Their payload bytes.
    pub received_bytes: u64,
    /// Messages waiting to be taken (queued, or held by a stream reader).
    pub queued_messages: usize,
    /// Their payload bytes.
    pub queued_bytes: usize,
    /// Whether `pause` stopped taking its messages.
    pub paused: bool,
    /// Its send priority: `high`, `normal` or `low`.
    pub priority: String,
    /// Frames dropped because their sender is not one of the protocol's members.
    pub refused_messages: u64,
}

impl ProtocolLine {
    /// The line of one protocol's counters.
    pub fn new(stats: InboxStats, paused: bool) -> Self {
        Self {
            protocol: stats.protocol,
            received_messages: stats.received_messages,
            received_bytes: stats.received_bytes,
            queued_messages: stats.queued_messages,
            queued_bytes: stats.queued_bytes,
            paused,
            priority: stats.priority.to_string(),
            refused_messages: stats.refused_messages,
        }
    }
}

/// One connection's send pool in a `stats` line (the fields of `PoolStats`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolLine {
    /// The connection.
    pub connection: ConnectionNumber,
    /// Open streams (idle + borrowed).
    pub current: usize,
    /// Streams ready to borrow.
    pub idle: usize,
    /// Streams lent out.
    pub borrowed: usize,
    /// Borrowers waiting.
    pub waiters: usize,
    /// Streams being opened.
    pub opening: usize,
    /// The pool's cap.
    pub max: usize,
    /// Opens that failed since the pool was created.
    pub open_failures: u64,
    /// Frames written by another sender's write, batched with its own.
    pub batched_frames: u64,
}

impl Stats {
    /// Sums the per-peer figures; `peers` need not be sorted.
    pub fn new(
        peers: Vec<(PeerId, Vec<PoolStats>, ReceiveCounts)>,
        inbound_streams: usize,
        tasks: usize,
        received_messages: u64,
        received_bytes: u64,
    ) -> Self {
        let mut per_peer: Vec<PeerStats> = peers
            .into_iter()
            .map(|(peer, pools, counts)| PeerStats {
                peer: peer.to_string(),
                inbound_streams: counts.streams,
                inbound_refused: counts.refused,
                pools: pools
                    .into_iter()
                    .map(|p| PoolLine {
                        connection: p.connection.into(),
                        current: p.current,
                        idle: p.idle,
                        borrowed: p.borrowed,
                        waiters: p.waiters,
                        opening: p.opening,
                        max: p.max,
                        open_failures: p.open_failures,
                        batched_frames: p.batched_frames,
                    })
                    .collect(),
            })
            .collect();
        per_peer.sort_by(|a, b| a.peer.cmp(&b.peer));
        let pools = || per_peer.iter().flat_map(|p| p.pools.iter());
        Self {
            connected_peers: per_peer.len(),
            connections: pools().count(),
            pool_streams: pools().map(|p| p.current).sum(),
            pool_idle: pools().map(|p| p.idle).sum(),
            pool_borrowed: pools().map(|p| p.borrowed).sum(),
            pool_waiters: pools().map(|p| p.waiters).sum(),
            pool_opening: pools().map(|p| p.opening).sum(),
            inbound_streams,
            tasks,
            received_messages,
            received_bytes,
            per_peer,
            per_protocol: Vec::new(),
            topics: Vec::new(),
        }
    }

    /// Adds the registered protocols' counters.
    pub fn with_protocols(mut self, per_protocol: Vec<ProtocolLine>) -> Self {
        self.per_protocol = per_protocol;
        self
    }

    /// Adds the subscribed topics' counters.
    pub fn with_topics(mut self, topics: Vec<TopicStats>) -> Self {
        self.topics = topics.into_iter().map(TopicLine::from).collect();
        self
    }
}

impl Output {
    /// The line for a host event.
    pub fn from_event(event: &Event) -> Self {
        match event {
            Event::Listening { address } => Self::Listening {
                address: address.to_string(),
            },
            Event::PeerConnected { peer } => Self::Connected {
                peer: peer.to_string(),
            },
            Event::PeerDisconnected { peer } => Self::Disconnected {
                peer: peer.to_string(),
            },
            Event::ConnectionEstablished {
                peer,
                connection,
                connections,
                address,
            } => Self::ConnectionEstablished {
                peer: peer.to_string(),
                connection: (*connection).into(),
                connections: *connections,
                address: address.to_string(),
            },
            Event::ConnectionClosed {
                peer,
                connection,
                remaining,
            } => Self::ConnectionClosed {
                peer: peer.to_string(),
                connection: (*connection).into(),
                remaining: *remaining,
            },
            Event::DialFailed {
                peer,
                reason,
                cause,
            } => Self::DialFailed {
                peer: peer.map(|p| p.to_string()),
                reason: reason.clone(),
                cause: cause.kind(),
            },
            Event::StreamRefused {
                peer,
                connection,
                limit,
                scope,
                refused_total,
            } => Self::StreamRefused {
                peer: peer.to_string(),
                connection: (*connection).into(),
                limit: *limit,
                scope: scope.to_string(),
                refused_total: *refused_total,
            },
            Event::ProtocolError {
                peer,
                connection,
                error,
            } => Self::ProtocolError {
                peer: peer.to_string(),
                connection: (*connection).into(),
                error: error.to_string(),
            },
            Event::UnknownProtocol {
                peer,
                protocol,
                count,
            } => Self::UnknownProtocol {
                peer: peer.to_string(),
                protocol: protocol.clone(),
                count: *count,
            },
            Event::ConnectionStalled {
                peer,
                connection,
                idle_for,
            } => Self::ConnectionStalled {
                peer: peer.to_string(),
                connection: (*connection).into(),
                idle_ms: u64::try_from(idle_for.as_millis()).unwrap_or(u64::MAX),
            },
            Event::ConnectionSilent {
                peer,
                connection,
                silent_for,
            } => Self::ConnectionSilent {
                peer: peer.to_string(),
                connection: (*connection).into(),
                silent_ms: u64::try_from(silent_for.as_millis()).unwrap_or(u64::MAX),
            },
            Event::EventsDropped { count } => Self::EventsDropped { count: *count },
            Event::RedialScheduled {
                peer,
                attempt,
                delay,
            } => Self::RedialScheduled {
                peer: peer.to_string(),
                attempt: *attempt,
                delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            },
            Event::RequiredPeerConnected { peer } => Self::RequiredConnected {
                peer: peer.to_string(),
            },
            Event::RequiredPeerGaveUp { peer, attempts } => Self::RequiredGaveUp {
                peer: peer.to_string(),
                attempts: *attempts,
            },
            Event::Refused {
                peer,
                address,
                reason,
                stage,
                count,
            } => Self::Refused {
                peer: peer.map(|p| p.to_string()),
                address: address.as_ref().map(ToString::to_string),
                reason: reason.to_string(),
                stage: stage.as_str(),
                count: *count,
            },
            Event::Evicted { peer, reason } => Self::Evicted {
                peer: peer.to_string(),
                reason: reason.to_string(),
            },
            Event::GossipPeerSlow { peer, dropped } => Self::GossipPeerSlow {
                peer: peer.to_string(),
                dropped: *dropped,
            },
            Event::GossipPeerGraylisted { peer } => Self::GossipPeerGraylisted {
                peer: peer.to_string(),
            },
            Event::PeerDiscovered { peer, chain } => Self::Discovered {
                peer: peer.to_string(),
                chain: chain.clone(),
            },
            Event::NotMember {
                peer,
                protocol,
                count,
            } => Self::NotMember {
                peer: peer.to_string(),
                protocol: protocol.clone(),
                count: *count,
            },
            Event::TopicSubscribed { peer, topic } => Self::TopicSubscribed {
                peer: peer.to_string(),
                topic: topic.clone(),
            },
            Event::TopicUnsubscribed { peer, topic } => Self::TopicUnsubscribed {
                peer: peer.to_string(),
                topic: topic.clone(),
            },
            Event::GossipDropped {
                topic,
                from,
                origin,
                reason,
            } => Self::GossipDropped {
                topic: topic.clone(),
                via: from.to_string(),
                from: origin.map(|p| p.to_string()),
                reason: reason.as_str(),
            },
            Event::PeerProtocols {
                peer,
                protocols,
                added,
                removed,
            } => Self::PeerProtocols {
                peer: peer.to_string(),
                protocols: protocols.clone(),
                added: added.clone(),
                removed: removed.clone(),
            },
            Event::ProtocolSupported { peer, protocol } => Self::ProtocolSupported {
                peer: peer.to_string(),
                protocol: protocol.clone(),
            },
            Event::ProtocolUnsupported { peer, protocol } => Self::ProtocolUnsupported {
                peer: peer.to_string(),
                protocol: protocol.clone(),
            },
            Event::ProtocolExchangeFailed { peer, reason } => Self::ProtocolExchangeFailed {
                peer: peer.to_string(),
                reason: reason.to_string(),
                cause: reason.kind(),
            },
            other => Self::OtherEvent {
                debug: format!("{other:?}"),
            },
        }
    }

    /// The line for a received message; the payload is decoded as lossy UTF-8.
    pub fn message(peer: PeerId, protocol: &str, payload: &[u8]) -> Self {
        Self::Message {
            peer: peer.to_string(),
            protocol: protocol.to_owned(),
            data: String::from_utf8_lossy(payload).into_owned(),
        }
    }

    /// The line for a gossip message; the payload is decoded as lossy UTF-8.
    pub fn gossip(message: &GossipMessage) -> Self {
        Self::Gossip {
            topic: message.topic().to_owned(),
            from: message.origin().map(|p| p.to_string()),
            via: message.from().to_string(),
            data: String::from_utf8_lossy(message.data()).into_owned(),
        }
    }

    /// An error line.
    pub fn error(message: impl fmt::Display) -> Self {
        Self::Error {
            message: message.to_string(),
        }
    }

    /// One JSON object, without a newline.
    pub fn to_json(&self) -> String {
        // Serialising plain strings and numbers cannot fail; keep a valid line anyway.
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!(
                "{{\"event\":\"error\",\"message\":{}}}",
                serde_json::Value::String(format!("cannot render output: {e}"))
            )
        })
    }

    /// A human-readable line, without a newline.
    pub fn to_human(&self) -> String {
        match self {
            Self::Listening { address } => format!("listening on {address}"),
            Self::Metrics { url } => format!("metrics at {url}"),
            Self::Connected { peer } => format!("connected to {peer}"),
            Self::Disconnected { peer } => format!("disconnected from {peer}"),
            Self::Message {
                peer,
                protocol,
                data,
            } => format!("[{peer} {protocol}] {data}"),
            Self::Error { message } => format!("error: {message}"),
            Self::Peers { peers } if peers.is_empty() => "no connected peers".into(),
            Self::Peers { peers } => format!("peers: {}", peers.join(" ")),
            Self::Sent { peer, protocol } => format!("sent to {peer} on {protocol}"),
            Self::Registered { protocol } => format!("registered {protocol}"),
            Self::Unregistered { protocol } => format!("unregistered {protocol}"),
            Self::Paused { protocol } => format!("paused {protocol}"),
            Self::Resumed { protocol } => format!("resumed {protocol}"),
            Self::Priority { protocol, priority } => format!("priority of {protocol}: {priority}"),
            Self::Backpressure {
                peer,
                protocol,
                after_ms,
            } => format!("backpressure: {peer} took nothing on {protocol} for {after_ms} ms"),
            Self::Dialed { peer } => format!("dialed {peer}"),
            Self::Stats(s) => format!(
                "stats: {} peers, {} connections, pool streams {} ({} idle, {} borrowed, {} \
                 waiters, {} opening), {} inbound streams, {} tasks, {} messages ({} bytes) \
                 received",
                s.connected_peers,
                s.connections,
                s.pool_streams,
                s.pool_idle,
                s.pool_borrowed,
                s.pool_waiters,
                s.pool_opening,
                s.inbound_streams,
                s.tasks,
                s.received_messages,
                s.received_bytes
            ),
            Self::FloodDone {
                flood,
                peer,
                protocol,
                count,
                sent_ok,
                failed,
                first_error,
                elapsed_ms,
                ..
            } => format!(
                "flood {flood} to {peer} on {protocol}: {sent_ok} of {count} sent, {failed} \
                 failed in {elapsed_ms} ms{}",
                first_error
                    .as_deref()
                    .map(|e| format!(" (first error: {e})"))
                    .unwrap_or_default()
            ),
            Self::ConnectionEstablished {
                peer,
                connection,
                connections,
                address,
            } => format!(
                "connection {connection} to {peer} at {address} established ({connections} open)"
            ),
            Self::ConnectionClosed {
                peer,
                connection,
                remaining,
            } => format!("connection {connection} to {peer} closed ({remaining} remaining)"),
            Self::DialFailed { peer, reason, .. } => match peer {
                Some(peer) => format!("dial to {peer} failed: {reason}"),
                None => format!("dial failed: {reason}"),
            },
            Self::StreamRefused {
                peer,
                connection,
                limit,
                scope,
                refused_total,
            } => format!(
                "refused a stream from {peer} on connection {connection}: {scope} limit {limit} \
                 reached ({refused_total} refused so far)"
            ),
            Self::ProtocolError {
                peer,
                connection,
                error,
            } => format!("protocol error from {peer} on connection {connection}: {error}"),
            Self::UnknownProtocol {
                peer,
                protocol,
                count,
            } => format!(
                "{peer} sent a frame for unregistered protocol {protocol} ({count} skipped so far)"
            ),
            Self::ConnectionStalled {
                peer,
                connection,
                idle_ms,
            } => format!("connection {connection} to {peer} stalled for {idle_ms} ms; closed"),
            Self::ConnectionSilent {
                peer,
                connection,
                silent_ms,
            } => format!("connection {connection} to {peer} silent for {silent_ms} ms; closed"),
            Self::EventsDropped { count } => format!("{count} events dropped (output too slow)"),
            Self::RedialScheduled {
                peer,
                attempt,
                delay_ms,
            } => format!("required peer {peer}: dial {attempt} failed, next in {delay_ms} ms"),
            Self::RequiredConnected { peer } => format!("required peer {peer} connected"),
            Self::RequiredGaveUp { peer, attempts } => {
                format!("required peer {peer} given up after {attempts} failed dials")
            }
            Self::Refused {
                peer,
                address,
                reason,
                stage,
                count,
            } => format!(
                "refused {} {} at {stage}: {reason}{}",
                peer.as_deref().unwrap_or("unknown peer"),
                address.as_deref().unwrap_or(""),
                if *count > 1 {
                    format!(" ({count} times)")
                } else {
                    String::new()
                }
            ),
            Self::Evicted { peer, reason } => format!("evicted {peer}: {reason}"),
            Self::PeerProtocols {
                peer, protocols, ..
            } => {
                format!("{peer} supports: {}", protocols.join(" "))
            }
            Self::ProtocolSupported { peer, protocol } => {
                format!("{peer} now supports {protocol}")
            }
            Self::ProtocolUnsupported { peer, protocol } => {
                format!("{peer} no longer supports {protocol}")
            }
            Self::ProtocolExchangeFailed { peer, reason, .. } => {
                format!("protocol exchange with {peer} failed: {reason}")
            }
            Self::Subscribed { topic } => format!("subscribed to {topic}"),
            Self::Unsubscribed { topic } => format!("unsubscribed from {topic}"),
            Self::Published { topic, id } => format!("published {id} on {topic}"),
            Self::GossipScore { peer, score } => match score {
                Some(Score(score)) => format!("gossip score of {peer}: {score:.2}"),
                None => format!("gossip score of {peer}: unknown"),
            },
            Self::Gossip {
                topic,
                from,
                via,
                data,
            } => format!(
                "[{topic}] {} (via {via}): {data}",
                from.as_deref().unwrap_or("unknown author")
            ),
            Self::Discovered { peer, chain } => format!("discovered {peer} serving {chain}"),
            Self::GossipPeerSlow { peer, dropped } => {
                format!("gossip to {peer} too slow: {dropped} messages dropped")
            }
            Self::GossipPeerGraylisted { peer } => {
                format!("gossip from {peer} ignored: its score is below the graylist threshold")
            }
            Self::NotMember {
                peer,
                protocol,
                count,
            } => format!(
                "dropped a {protocol} frame from non-member {peer} ({count} dropped so far)"
            ),
            Self::TopicSubscribed { peer, topic } => format!("{peer} subscribed to {topic}"),
            Self::TopicUnsubscribed { peer, topic } => {
                format!("{peer} unsubscribed from {topic}")
            }
            Self::GossipDropped {
                topic,
                via,
                from,
                reason,
            } => format!(
                "dropped gossip on {topic} from {} via {via}: {reason}",
                from.as_deref().unwrap_or("unknown author")
            ),
            Self::OtherEvent { debug } => format!("event: {debug}"),
        }
    }

    /// The line in the chosen format.
    pub fn render(&self, json: bool) -> String {
        if json {
            self.to_json()
        } else {
            self.to_human()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use liquid_p2p::{
        AdmissionStage, BlacklistMatch, DialFailure, ExchangeFailure, FrameError, RefusalReason,
        RemoteRefusal,
    };
    use serde_json::{Value, json};

    use super::*;

    fn parse(line: &str) -> Command {
        parse_command(line)
            .expect("valid command")
            .expect("not blank")
    }

    fn json_of(output: &Output) -> Value {
        serde_json::from_str(&output.to_json()).expect("valid JSON")
    }

    #[test]
    fn parses_send_to_one_peer_keeping_the_rest_of_the_line() {
        let peer = PeerId::random();
        let command = parse(&format!("send {peer} /liquid/chat/1 hello  big world \n"));
        assert_eq!(
            command,
            Command::Send {
                target: Target::Peer(peer),
                protocol: "/liquid/chat/1".into(),
                text: "hello  big world ".into(),
            }
        );
    }

    #[test]
    fn parses_send_to_a_list_of_peers() {
        let (a, b) = (PeerId::random(), PeerId::random());
        assert_eq!(
            parse(&format!("send {a},{b} /p hi")),
            Command::Send {
                target: Target::Peers(vec![a, b]),
                protocol: "/p".into(),
                text: "hi".into(),
            }
        );
        assert!(parse_command(&format!("send {a},nonsense /p hi")).is_err());
        assert!(parse_command(&format!("send {a}, /p hi")).is_err());
    }

    #[test]
    fn parses_send_to_everyone_and_empty_text() {
        assert_eq!(
            parse("send * /p hi\r\n"),
            Command::Send {
                target: Target::All,
                protocol: "/p".into(),
                text: "hi".into(),
            }
        );
        assert_eq!(
            parse("send * /p"),
            Command::Send {
                target: Target::All,
                protocol: "/p".into(),
                text: String::new(),
            }
        );
    }

    #[test]
    fn parses_the_other_commands() {
        assert_eq!(parse("register /a/1"), Command::Register("/a/1".into()));
        assert_eq!(
            parse("  unregister   /a/1  "),
            Command::Unregister("/a/1".into())
        );
        assert_eq!(
            parse("dial /ip4/127.0.0.1/tcp/4001"),
            Command::Dial("/ip4/127.0.0.1/tcp/4001".parse().expect("multiaddr"))
        );
        assert_eq!(parse("peers"), Command::Peers);
        assert_eq!(parse("pause /a/1"), Command::Pause("/a/1".into()));
        assert_eq!(parse("resume /a/1\n"), Command::Resume("/a/1".into()));
        assert!(parse_command("pause").is_err());
        assert_eq!(
            parse("priority /a/1 high"),
            Command::Priority {
                protocol: "/a/1".into(),
                priority: ProtocolPriority::High,
            }
        );
        assert_eq!(
            parse("priority /a/1 Low"),
            Command::Priority {
                protocol: "/a/1".into(),
                priority: ProtocolPriority::Low,
            }
        );
        assert!(parse_command("priority /a/1").is_err());
        assert!(parse_command("priority /a/1 urgent").is_err());
        assert!(parse_command("priority /a/1 high extra").is_err());
        assert!(parse_command("resume /a /b").is_err());
        assert_eq!(parse("stats"), Command::Stats);
        let peer = PeerId::random();
        assert_eq!(parse(&format!("score {peer}")), Command::Score(peer));
        assert!(parse_command("score").is_err());
        assert!(parse_command("score not-a-peer").is_err());
        assert_eq!(parse("quit\n"), Command::Quit);
        assert_eq!(
            parse("subscribe /chain/a/blocks"),
            Command::Subscribe("/chain/a/blocks".into())
        );
        assert_eq!(
            parse("unsubscribe /chain/a/blocks\n"),
            Command::Unsubscribe("/chain/a/blocks".into())
        );
        assert_eq!(
            parse("publish /chain/a/blocks block  7 "),
            Command::Publish {
                topic: "/chain/a/blocks".into(),
                text: "block  7 ".into(),
            }
        );
        assert!(parse_command("subscribe").is_err());
        assert!(parse_command("subscribe /a /b").is_err());
        assert!(parse_command("publish").is_err());
    }

    #[test]
    fn peer_lists_skip_blanks_and_comments_and_name_the_bad_line() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let text = format!("# validators\n{a}\n\n  {b}  \n");
        assert_eq!(parse_peer_list(&text), Ok(vec![a, b]));
        let bad = parse_peer_list(&format!("{a}\nnot-a-peer\n")).expect_err("bad line");
        assert!(bad.to_string().starts_with("line 2:"), "{bad}");
    }

    #[test]
    fn parses_flood_to_everyone_and_to_one_peer() {
        assert_eq!(
            parse("flood * /p 1000 256\n"),
            Command::Flood {
                target: Target::All,
                protocol: "/p".into(),
                count: 1000,
                size: 256,
            }
        );
        let peer = PeerId::random();
        assert_eq!(
            parse(&format!("flood  {peer} /p 0 0")),
            Command::Flood {
                target: Target::Peer(peer),
                protocol: "/p".into(),
                count: 0,
                size: 0,
            }
        );
    }

    #[test]
    fn flood_payloads_carry_their_numbers_and_size() {
        let payload = flood_payload(3, 1234, 100);
        assert_eq!(payload.len(), 100);
        assert!(payload.starts_with(b"flood:3:1234:...."));
        assert_eq!(parse_flood_payload(&payload), Some((3, 1234)));
        // Never shorter than the header.
        let short = flood_payload(1, 99, 0);
        assert_eq!(short, b"flood:1:99:");
        assert_eq!(parse_flood_payload(&short), Some((1, 99)));
        for bad in [
            &b"flood:1:2"[..],
            b"flood:x:2:",
            b"hello",
            b"flood::2:",
            b"",
        ] {
            assert_eq!(parse_flood_payload(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn numbers_become_inclusive_ranges() {
        assert_eq!(to_ranges(&[]), Vec::<[u64; 2]>::new());
        assert_eq!(to_ranges(&[5]), vec![[5, 5]]);
        assert_eq!(
            to_ranges(&[0, 1, 2, 4, 7, 8, u64::MAX]),
            vec![[0, 2], [4, 4], [7, 8], [u64::MAX, u64::MAX]]
        );
    }

    #[test]
    fn blank_lines_are_ignored() {
        assert_eq!(parse_command(""), Ok(None));
        assert_eq!(parse_command("   \r\n"), Ok(None));
    }

    #[test]
    fn bad_commands_are_errors() {
        for line in [
            "frobnicate",
            "send",
            "send *",
            "send not-a-peer-id /p hi",
            "register",
            "register /a /b",
            "unregister",
            "dial",
            "dial not-a-multiaddr",
            "dial /ip4/127.0.0.1/tcp/1 extra",
            "peers now",
            "stats now",
            "flood",
            "flood * /p 10",
            "flood * /p 10 20 30",
            "flood * /p ten 20",
            "flood * /p 10 -1",
            "flood * /p 10000001 1",
            "flood * /p 1 16777217",
            "flood * /p 1 99999999999999999999",
            "flood nobody /p 10 20",
            "quit please",
            "SEND * /p hi",
        ] {
            assert!(parse_command(line).is_err(), "`{line}` should be rejected");
        }
        let error = parse_command("frobnicate").expect_err("unknown");
        assert!(error.to_string().contains("frobnicate"));
    }

    #[test]
    fn renders_the_documented_lines() {
        let peer = PeerId::random();
        let p = peer.to_string();
        assert_eq!(
            json_of(&Output::Metrics {
                url: "http://127.0.0.1:9100/metrics".into()
            }),
            json!({"event": "metrics", "url": "http://127.0.0.1:9100/metrics"})
        );
        assert_eq!(
            json_of(&Output::Paused {
                protocol: "/a/1".into()
            }),
            json!({"event": "paused", "protocol": "/a/1"})
        );
        assert_eq!(
            json_of(&Output::Resumed {
                protocol: "/a/1".into()
            }),
            json!({"event": "resumed", "protocol": "/a/1"})
        );
        assert_eq!(
            json_of(&Output::Priority {
                protocol: "/a/1".into(),
                priority: ProtocolPriority::High.to_string(),
            }),
            json!({"event": "priority", "protocol": "/a/1", "priority": "high"})
        );
        assert_eq!(
            json_of(&Output::GossipScore {
                peer: p.clone(),
                score: Some(Score(-12.5)),
            }),
            json!({"event": "gossip_score", "peer": p, "score": -12.5})
        );
        assert_eq!(
            json_of(&Output::GossipScore {
                peer: p.clone(),
                score: None,
            }),
            json!({"event": "gossip_score", "peer": p, "score": null})
        );
        assert_eq!(
            json_of(&Output::Backpressure {
                peer: p.clone(),
                protocol: "/a/1".into(),
                after_ms: 5000
            }),
            json!({"event": "backpressure", "peer": p, "protocol": "/a/1", "after_ms": 5000})
        );
        assert_eq!(
            json_of(&Output::from_event(&Event::Listening {
                address: "/ip4/127.0.0.1/tcp/1".parse().expect("address")
            })),
            json!({"event": "listening", "address": "/ip4/127.0.0.1/tcp/1"})
        );
        assert_eq!(
            json_of(&Output::from_event(&Event::PeerConnected { peer })),
            json!({"event": "connected", "peer": p})
        );
        assert_eq!(
            json_of(&Output::from_event(&Event::PeerDisconnected { peer })),
            json!({"event": "disconnected", "peer": p})
        );
        assert_eq!(
            json_of(&Output::message(peer, "/liquid/chat/1", b"hi \xff")),
            json!({"event": "message", "peer": p, "protocol": "/liquid/chat/1", "data": "hi \u{fffd}"})
        );
        assert_eq!(
            json_of(&Output::error("boom")),
            json!({"event": "error", "message": "boom"})
        );
        assert_eq!(
            json_of(&Output::Peers {
                peers: vec![p.clone()]
            }),
            json!({"event": "peers", "peers": [p]})
        );
        assert_eq!(
            json_of(&Output::Sent {
                peer: p.clone(),
                protocol: "/x".into()
            }),
            json!({"event": "sent", "peer": p, "protocol": "/x"})
        );
        assert_eq!(
            json_of(&Output::Registered {
                protocol: "/x".into()
            }),
            json!({"event": "registered", "protocol": "/x"})
        );
        assert_eq!(
            json_of(&Output::Unregistered {
                protocol: "/x".into()
            }),
            json!({"event": "unregistered", "protocol": "/x"})
        );
        assert_eq!(
            json_of(&Output::Dialed { peer: p.clone() }),
            json!({"event": "dialed", "peer": p})
        );
    }

    #[test]
    fn renders_every_other_host_event() {
        let peer = PeerId::random();
        let p = peer.to_string();
        let connection = ConnectionId::new_unchecked(7);
        let origin = PeerId::random();
        let o = origin.to_string();
        let cases = [
            (
                Event::GossipPeerSlow { peer, dropped: 3 },
                json!({"event": "gossip_peer_slow", "peer": p, "dropped": 3}),
            ),
            (
                Event::GossipPeerGraylisted { peer },
                json!({"event": "gossip_peer_graylisted", "peer": p}),
            ),
            (
                Event::PeerDiscovered {
                    peer,
                    chain: "main".into(),
                },
                json!({"event": "discovered", "peer": p, "chain": "main"}),
            ),
            (
                Event::NotMember {
                    peer,
                    protocol: "/p".into(),
                    count: 2,
                },
                json!({"event": "not_member", "peer": p, "protocol": "/p", "count": 2}),
            ),
            (
                Event::TopicSubscribed {
                    peer,
                    topic: "/chain/a/blocks".into(),
                },
                json!({"event": "topic_subscribed", "peer": p, "topic": "/chain/a/blocks"}),
            ),
            (
                Event::TopicUnsubscribed {
                    peer,
                    topic: "/chain/a/blocks".into(),
                },
                json!({"event": "topic_unsubscribed", "peer": p, "topic": "/chain/a/blocks"}),
            ),
            (
                Event::GossipDropped {
                    topic: "/chain/a/blocks".into(),
                    from: peer,
                    origin: Some(origin),
                    reason: liquid_p2p::GossipDrop::NotMember,
                },
                json!({"event": "gossip_dropped", "topic": "/chain/a/blocks", "via": p,
                       "from": o, "reason": "not_member"}),
            ),
            (
                Event::ConnectionEstablished {
                    peer,
                    connection,
                    connections: 2,
                    address: "/ip4/127.0.0.1/tcp/4001".parse().expect("address"),
                },
                json!({"event": "connection_established", "peer": p, "connection": 7, "connections": 2,
                       "address": "/ip4/127.0.0.1/tcp/4001"}),
            ),
            (
                Event::RedialScheduled {
                    peer,
                    attempt: 3,
                    delay: Duration::from_millis(2100),
                },
                json!({"event": "redial_scheduled", "peer": p, "attempt": 3, "delay_ms": 2100}),
            ),
            (
                Event::RequiredPeerConnected { peer },
                json!({"event": "required_connected", "peer": p}),
            ),
            (
                Event::RequiredPeerGaveUp { peer, attempts: 50 },
                json!({"event": "required_gave_up", "peer": p, "attempts": 50}),
            ),
            (
                Event::Refused {
                    peer: None,
                    address: Some("/ip4/10.0.0.1/tcp/9".parse().expect("address")),
                    reason: RefusalReason::Blacklisted(BlacklistMatch::Address),
                    stage: AdmissionStage::Pending,
                    count: 3,
                },
                json!({"event": "refused", "peer": null, "address": "/ip4/10.0.0.1/tcp/9",
                       "reason": "blacklisted address", "stage": "pending", "count": 3}),
            ),
            (
                Event::Evicted {
                    peer,
                    reason: liquid_p2p::EvictionReason::Blacklisted,
                },
                json!({"event": "evicted", "peer": p, "reason": "blacklisted"}),
            ),
            (
                Event::ProtocolSupported {
                    peer,
                    protocol: "/x/1".into(),
                },
                json!({"event": "protocol_supported", "peer": p, "protocol": "/x/1"}),
            ),
            (
                Event::ProtocolUnsupported {
                    peer,
                    protocol: "/x/1".into(),
                },
                json!({"event": "protocol_unsupported", "peer": p, "protocol": "/x/1"}),
            ),
            (
                Event::PeerProtocols {
                    peer,
                    protocols: vec!["/x/1".into()],
                    added: vec!["/x/1".into()],
                    removed: vec!["/y/1".into()],
                },
                json!({"event": "peer_protocols", "peer": p, "protocols": ["/x/1"],
                       "added": ["/x/1"], "removed": ["/y/1"]}),
            ),
            (
                Event::ProtocolExchangeFailed {
                    peer,
                    reason: ExchangeFailure::TimedOut {
                        after: Duration::from_secs(10),
                    },
                },
                json!({"event": "protocol_exchange_failed", "peer": p,
                       "reason": "no complete exchange within 10s", "cause": "timed_out"}),
            ),
            (
                Event::ConnectionClosed {
                    peer,
                    connection,
                    remaining: 0,
                },
                json!({"event": "connection_closed", "peer": p, "connection": 7, "remaining": 0}),
            ),
            (
                Event::DialFailed {
                    peer: Some(peer),
                    reason: "refused by the remote: peer limit reached".into(),
                    cause: DialFailure::RefusedByRemote(RemoteRefusal::PeerLimit),
                },
                json!({"event": "dial_failed", "peer": p,
                       "reason": "refused by the remote: peer limit reached",
                       "cause": "refused_by_remote"}),
            ),
            (
                Event::DialFailed {
                    peer: None,
                    reason: "connection refused".into(),
                    cause: DialFailure::Transport,
                },
                json!({"event": "dial_failed", "peer": null, "reason": "connection refused",
                       "cause": "transport"}),
            ),
            (
                Event::StreamRefused {
                    peer,
                    connection,
                    limit: 100,
                    scope: liquid_p2p::StreamScope::Peer,
                    refused_total: 3,
                },
                json!({"event": "stream_refused", "peer": p, "connection": 7, "limit": 100,
                       "scope": "peer", "refused_total": 3}),
            ),
            (
                Event::ProtocolError {
                    peer,
                    connection,
                    error: FrameError::BadVarint,
                },
                json!({"event": "protocol_error", "peer": p, "connection": 7,
                       "error": FrameError::BadVarint.to_string()}),
            ),
            (
                Event::UnknownProtocol {
                    peer,
                    protocol: "/nope".into(),
                    count: 4,
                },
                json!({"event": "unknown_protocol", "peer": p, "protocol": "/nope", "count": 4}),
            ),
            (
                Event::ConnectionStalled {
                    peer,
                    connection,
                    idle_for: Duration::from_millis(10_500),
                },
                json!({"event": "connection_stalled", "peer": p, "connection": 7, "idle_ms": 10_500}),
            ),
            (
                Event::ConnectionSilent {
                    peer,
                    connection,
                    silent_for: Duration::from_millis(7_250),
                },
                json!({"event": "connection_silent", "peer": p, "connection": 7, "silent_ms": 7_250}),
            ),
            (
                Event::EventsDropped { count: 9 },
                json!({"event": "events_dropped", "count": 9}),
            ),
        ];
        for (event, expected) in cases {
            let output = Output::from_event(&event);
            assert_eq!(json_of(&output), expected, "{event:?}");
            let line = output.to_json();
            assert!(!line.contains('\n'), "one line: {line}");
            assert!(!output.to_human().is_empty());
        }
    }

    #[test]
    fn renders_stats_and_flood_results() {
        let a = PeerId::random();
        let b = PeerId::random();
        let pool = |n: usize, current| {
            let mut stats = PoolStats::empty(a, ConnectionId::new_unchecked(n), 100);
            stats.current = current;
            stats.idle = current - 1;
            stats.borrowed = 1;
            stats.waiters = 2;
            stats
        };
        let mut counts = ReceiveCounts::default();
        counts.streams = 4;
        counts.refused = 1;
        let stats = Stats::new(
            vec![
                (a, vec![pool(1, 10), pool(2, 12)], counts.clone()),
                (b, vec![], ReceiveCounts::default()),
            ],
            9,
            42,
            7,
            700,
        );
        let value = json_of(&Output::Stats(stats));
        assert_eq!(value["event"], "stats");
        assert_eq!(value["connected_peers"], 2);
        assert_eq!(value["connections"], 2);
        assert_eq!(value["pool_streams"], 22);
        assert_eq!(value["pool_idle"], 20);
        assert_eq!(value["pool_borrowed"], 2);
        assert_eq!(value["pool_waiters"], 4);
        assert_eq!(value["inbound_streams"], 9);
        assert_eq!(value["tasks"], 42);
        assert_eq!(value["received_messages"], 7);
        assert_eq!(value["received_bytes"], 700);
        let per_peer = value["per_peer"].as_array().expect("per_peer");
        assert_eq!(per_peer.len(), 2);
        let entry_a = per_peer
            .iter()
            .find(|p| p["peer"] == a.to_string().as_str())
            .expect("peer a");
        assert_eq!(entry_a["inbound_streams"], 4);
        assert_eq!(entry_a["inbound_refused"], 1);
        assert_eq!(
            entry_a["pools"][1],
            json!({"connection": 2, "current": 12, "idle": 11, "borrowed": 1, "waiters": 2,
                   "opening": 0, "max": 100, "open_failures": 0, "batched_frames": 0})
        );

        let done = Output::FloodDone {
            flood: 1,
            peer: a.to_string(),
            protocol: "/p".into(),
            count: 10,
            size: 64,
            sent_ok: 8,
            failed: 2,
            failed_ranges: vec![[3, 4]],
            first_error: Some("boom".into()),
            elapsed_ms: 5,
        };
        assert_eq!(
            json_of(&done),
            json!({"event": "flood_done", "flood": 1, "peer": a.to_string(), "protocol": "/p",
                   "count": 10, "size": 64, "sent_ok": 8, "failed": 2, "failed_ranges": [[3, 4]],
                   "first_error": "boom", "elapsed_ms": 5})
        );
        assert!(done.to_human().contains("8 of 10 sent"));
    }

    #[test]
    fn json_stays_on_one_line_whatever_the_text() {
        let output = Output::message(PeerId::random(), "/p", b"two\nlines\r\n\"quoted\"");
        let line = output.to_json();
        assert!(!line.contains('\n') && !line.contains('\r'), "{line}");
        assert_eq!(json_of(&output)["data"], "two\nlines\r\n\"quoted\"");
    }

    #[test]
    fn human_lines_are_readable() {
        let peer = PeerId::random();
        assert_eq!(
            Output::message(peer, "/p", b"hi").to_human(),
            format!("[{peer} /p] hi")
        );
        assert_eq!(
            Output::Peers { peers: vec![] }.render(false),
            "no connected peers"
        );
        assert_eq!(Output::error("x").render(false), "error: x");
    }
}
