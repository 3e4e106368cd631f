//! Why a connection is turned away, and the [`RefusalReporter`] that keeps every
//! refusal visible without letting an attack turn into an event flood.
//!
//! A host refuses connections at four stages: before dialling (the blacklist),
//! when an inbound connection is announced (blacklisted address, handshake slots
//! per address), during the handshake (deadline, byte budget, garbage) and right
//! after it (blacklisted peer, peer limits, connections per address). Each
//! refusal is a [`Refusal`]; the reporter turns them into `Event::Refused`: the
//! first refusal of a kind from an address in a window is reported at once, the
//! rest of that window as one more event with their count. One address opening
//! thousands of connections a second thus costs the application two events a
//! window, not thousands. A state machine fed with time, like the supervisor.

use std::{collections::HashMap, fmt, net::IpAddr, time::Duration};

use libp2p_identity::PeerId;
use multiaddr::Multiaddr;
use tokio::time::Instant;

use crate::conn_manager::PeerLimit;

/// Where in a connection's life it was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AdmissionStage {
    /// Before dialling: the host will not dial that peer or address.
    Dial,
    /// An inbound connection was announced, before any handshake byte.
    Pending,
    /// During the security handshake and muxer negotiation.
    Handshake,
    /// Right after the handshake, when the peer id is known.
    Established,
}

impl AdmissionStage {
    /// A short lowercase name (`dial`, `pending`, `handshake`, `established`).
    pub fn as_str(self) -> &'static str {
        match self {
            AdmissionStage::Dial => "dial",
            AdmissionStage::Pending => "pending",
            AdmissionStage::Handshake => "handshake",
            AdmissionStage::Established => "established",
        }
    }
}

impl fmt::Display for AdmissionStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which addresses a per-address limit counts together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressScope {
    /// Every address: a limit of the whole host.
    All,
    /// One IP address.
    Ip,
    /// One /24 (IPv4) or /64 (IPv6).
    Subnet,
}

impl fmt::Display for AddressScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressScope::All => "in all",
            AddressScope::Ip => "per IP address",
            AddressScope::Subnet => "per subnet",
        })
    }
}

/// What a blacklist entry matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlacklistMatch {
    /// The peer id.
    Peer,
    /// The IP address or IP:port.
    Address,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum RefusalReason {
    /// Peer limits of the connection manager.
    #[error("{0}")]
    PeerLimit(#[from] PeerLimit),
    /// Too many inbound handshakes in progress.
    #[error("{limit} handshakes in progress {scope}")]
    PendingLimit {
        /// Which addresses were counted together.
        scope: AddressScope,
        /// The limit that was hit.
        limit: usize,
    },
    /// Too many established inbound connections from one address.
    #[error("{limit} connections {scope}")]
    AddressLimit {
        /// Which addresses were counted together.
        scope: AddressScope,
        /// The limit that was hit.
        limit: usize,
    },
    /// A blacklist entry matched.
    #[error("blacklisted {}", match .0 { BlacklistMatch::Peer => "peer", BlacklistMatch::Address => "address" })]
    Blacklisted(BlacklistMatch),
    /// The handshake did not finish within the deadline.
    #[error("handshake not finished within {after:?}")]
    HandshakeTimeout {
        /// The deadline.
        after: Duration,
    },
    /// The handshake read more than its byte budget.
    #[error("handshake read more than {limit} bytes")]
    HandshakeTooLarge {
        /// The byte budget.
        limit: usize,
    },
    /// The handshake failed otherwise (garbage, unsupported protocols, bad keys).
    #[error("handshake failed")]
    HandshakeFailed,
    /// The host is shutting down.
    #[error("the host is shutting down")]
    ShuttingDown,
    /// The allow-list is active and does not list the peer.
    #[error("not_allowed")]
    NotAllowed,
}

impl RefusalReason {
    /// A short snake_case name of the kind (`max_peers`, `max_connections_per_peer`,
    /// `no_peer_to_evict`, `pending_limit`, `address_limit`, `blacklisted`,
    /// `handshake_timeout`, `handshake_too_large`, `handshake_failed`,
    /// `shutting_down`, `not_allowed`).
    pub fn kind(&self) -> &'static str {
        match self {
            RefusalReason::PeerLimit(PeerLimit::MaxPeers { .. }) => "max_peers",
            RefusalReason::PeerLimit(PeerLimit::TooManyConnections { .. }) => {
                "max_connections_per_peer"
            }
            RefusalReason::PeerLimit(PeerLimit::NoPeerToEvict { .. }) => "no_peer_to_evict",
            RefusalReason::PendingLimit { .. } => "pending_limit",
            RefusalReason::AddressLimit { .. } => "address_limit",
            RefusalReason::Blacklisted(_) => "blacklisted",
            RefusalReason::HandshakeTimeout { .. } => "handshake_timeout",
            RefusalReason::HandshakeTooLarge { .. } => "handshake_too_large",
            RefusalReason::HandshakeFailed => "handshake_failed",
            RefusalReason::ShuttingDown => "shutting_down",
            RefusalReason::NotAllowed => "not_allowed",
        }
    }
}

/// What a refusing host tells the dialler before it closes the connection, on a
/// stream of protocol `/liquid/refusal/1.0.0`: one uvarint code, then the stream
/// ends. A peer that does not speak the protocol just sees the connection close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteRefusal {
    /// The remote is full (max peers, or max connections to us). Code 1.
    #[error("peer limit reached")]
    PeerLimit,
    /// The remote blacklisted us (our peer id or address). Code 2.
    #[error("blacklisted")]
    Blacklisted,
    /// We are not a member the remote accepts. Code 3.
    #[error("not allowed")]
    NotAllowed,
    /// Too many connections from our address. Code 4.
    #[error("too many connections from this address")]
    AddressLimit,
    /// A code this version does not know.
    #[error("refusal code {0}")]
    Other(u64),
}

impl RemoteRefusal {
    /// The code on the wire.
    pub fn code(self) -> u64 {
        match self {
            RemoteRefusal::PeerLimit => 1,
            RemoteRefusal::Blacklisted => 2,
            RemoteRefusal::NotAllowed => 3,
            RemoteRefusal::AddressLimit => 4,
            RemoteRefusal::Other(code) => code,
        }
    }

    /// The refusal a code stands for.
    pub fn from_code(code: u64) -> Self {
        match code {
            1 => RemoteRefusal::PeerLimit,
            2 => RemoteRefusal::Blacklisted,
            3 => RemoteRefusal::NotAllowed,
            4 => RemoteRefusal::AddressLimit,
            other => RemoteRefusal::Other(other),
        }
    }

    /// What a host tells the dialler for a refusal after the handshake, if anything.
    pub fn for_reason(reason: RefusalReason) -> Option<Self> {
        match reason {
            RefusalReason::PeerLimit(_) => Some(RemoteRefusal::PeerLimit),
            RefusalReason::Blacklisted(_) => Some(RemoteRefusal::Blacklisted),
            RefusalReason::AddressLimit { .. } => Some(RemoteRefusal::AddressLimit),
            RefusalReason::NotAllowed => Some(RemoteRefusal::NotAllowed),
            _ => None,
        }
    }
}

/// Why a dial, or a connection it made, did not give a lasting connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialFailure {
    /// The transport could not connect, or the handshake failed.
    #[error("transport")]
    Transport,
    /// The remote proved a different peer id than the address named.
    #[error("wrong peer id")]
    WrongPeer,
    /// This host's own rules forbid the dial.
    #[error("refused locally: {0}")]
    RefusedLocally(RefusalReason),
    /// The remote refused the connection after the handshake, and said why.
    #[error("refused by the remote: {0}")]
    RefusedByRemote(RemoteRefusal),
    /// The connection closed before the protocol exchange completed (a remote that
    /// refuses without saying why, or a connection lost at once).
    #[error("closed before the protocol exchange completed")]
    ClosedBeforeExchange,
    /// The connection closed sooner than `supervisor.min_connection_lifetime`.
    #[error("closed after {lived:?}, sooner than the minimum lifetime")]
    ClosedEarly {
        /// How long it lasted after it was confirmed.
        lived: Duration,
    },
    /// Another behaviour of the swarm (a connection limit of the node's, for
    /// example) denied the connection.
    #[error("denied by another behaviour")]
    Denied,
    /// No address is known for the peer.
    #[error("no address known")]
    NoAddresses,
    /// The address named this host's own peer id.
    #[error("dialled itself")]
    SelfDial,
    /// The dial was cancelled (its connection closed by the node before it was
    /// established, or the swarm shut down).
    #[error("aborted")]
    Aborted,
    /// No connection within `dial_timeout`.
    #[error("no connection within {after:?}")]
    TimedOut {
        /// The timeout that elapsed.
        after: Duration,
    },
    /// Too many dials of the host's were waiting for their outcome.
    #[error("{limit} dials already in flight")]
    TooManyDials {
        /// The limit.
        limit: usize,
    },
}

impl DialFailure {
    /// A short snake_case name of the kind (`transport`, `wrong_peer`,
    /// `refused_locally`, `refused_by_remote`, `closed_before_exchange`,
    /// `closed_early`, `denied`, `no_addresses`, `self_dial`, `aborted`,
    /// `timed_out`, `too_many_dials`).
    pub fn kind(&self) -> &'static str {
        match self {
            DialFailure::Transport => "transport",
            DialFailure::WrongPeer => "wrong_peer",
            DialFailure::RefusedLocally(_) => "refused_locally",
            DialFailure::RefusedByRemote(_) => "refused_by_remote",
            DialFailure::ClosedBeforeExchange => "closed_before_exchange",
            DialFailure::ClosedEarly { .. } => "closed_early",
            DialFailure::Denied => "denied",
            DialFailure::NoAddresses => "no_addresses",
            DialFailure::SelfDial => "self_dial",
            DialFailure::Aborted => "aborted",
            DialFailure::TimedOut { .. } => "timed_out",
            DialFailure::TooManyDials { .. } => "too_many_dials",
        }
    }
}

/// One refused connection, as the admission code sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Where it was refused.
    pub stage: AdmissionStage,
    /// Why.
    pub reason: RefusalReason,
    /// The remote peer, if known at that stage.
    pub peer: Option<PeerId>,
    /// The remote IP address, if known.
    pub ip: Option<IpAddr>,
    /// The remote address as a multiaddr, if known.
    pub address: Option<Multiaddr>,
}

/// What the application is told: a refusal, or several of one kind from one
/// address within one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalReport {
    /// Where they were refused.
    pub stage: AdmissionStage,
    /// Why.
    pub reason: RefusalReason,
    /// The remote peer, if known (and the same for all).
    pub peer: Option<PeerId>,
    /// The remote address of the latest one, if known.
    pub address: Option<Multiaddr>,
    /// How many refusals this report stands for (at least 1).
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    stage: AdmissionStage,
    reason: RefusalReason,
    peer: Option<PeerId>,
    ip: Option<IpAddr>,
}

#[derive(Debug)]
struct Window {
    ends: Instant,
    /// Refusals after the first, not reported yet.
    more: u64,
    address: Option<Multiaddr>,
}

/// Windows open at once; beyond this, refusals are counted without their peer and
/// address (so a flood of distinct peer ids cannot grow the table).
pub const MAX_REFUSAL_WINDOWS: usize = 256;

/// Aggregates refusals per stage, reason, peer and IP over a window. See the
/// module documentation.
#[derive(Debug)]
pub struct RefusalReporter {
    window: Duration,
    open: HashMap<Key, Window>,
    total: u64,
}

impl RefusalReporter {
    /// A reporter with `window` (`admission.report_window`).
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            open: HashMap::new(),
            total: 0,
        }
    }

    /// Records a refusal at `now`. Returns the report to emit at once (the first
    /// of its kind in a window), or `None` when it is counted for the window's
    /// closing report.
    pub fn record(&mut self, refusal: Refusal, now: Instant) -> Option<RefusalReport> {
        self.total = self.total.saturating_add(1);
        let mut key = Key {
            stage: refusal.stage,
            reason: refusal.reason,
            peer: refusal.peer,
            ip: refusal.ip,
        };
        let mut address = refusal.address;
        if !self.open.contains_key(&key) && self.open.len() >= MAX_REFUSAL_WINDOWS {
            key.peer = None;
            key.ip = None;
            address = None;
        }
        if let Some(window) = self.open.get_mut(&key) {
            window.more = window.more.saturating_add(1);
            window.address = address;
            return None;
        }
        self.open.insert(
            key.clone(),
            Window {
                ends: now + self.window,
                more: 0,
                address: address.clone(),
            },
        );
        Some(RefusalReport {
            stage: key.stage,
            reason: key.reason,
            peer: key.peer,
            address,
            count: 1,
        })
    }

    /// Closes the windows that ended by `now`; returns a report for each that
    /// counted refusals after its first.
    pub fn poll(&mut self, now: Instant) -> Vec<RefusalReport> {
        let mut reports = Vec::new();
        self.open.retain(|key, window| {
            if window.ends > now {
                return true;
            }
            if window.more > 0 {
                reports.push(RefusalReport {
                    stage: key.stage,
                    reason: key.reason,
                    peer: key.peer,
                    address: window.address.take(),
                    count: window.more,
                });
            }
            false
        });
        reports
    }

    /// When [`poll`](Self::poll) has work next, if ever.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.open.values().map(|w| w.ends).min()
    }

    /// Refusals recorded since the reporter was made.
    pub fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(ip: &str) -> Refusal {
        Refusal {
            stage: AdmissionStage::Pending,
            reason: RefusalReason::PendingLimit {
                scope: AddressScope::Ip,
                limit: 16,
            },
            peer: None,
            ip: Some(ip.parse().expect("ip")),
            address: Some(format!("/ip4/{ip}/tcp/1").parse().expect("address")),
        }
    }

    #[test]
    fn a_thousand_refusals_from_one_address_make_two_reports_per_window() {
        let start = Instant::now();
        let mut r = RefusalReporter::new(Duration::from_secs(1));
        let first = r
            .record(pending("10.0.0.1"), start)
            .expect("first reported at once");
        assert_eq!(first.count, 1);
        for i in 1..1000u64 {
            let at = start + Duration::from_micros(i * 500);
            assert_eq!(r.record(pending("10.0.0.1"), at), None);
        }
        assert!(
            r.poll(start + Duration::from_millis(999)).is_empty(),
            "window still open"
        );
        assert_eq!(r.next_wakeup(), Some(start + Duration::from_secs(1)));
        let closing = r.poll(start + Duration::from_secs(1));
        assert_eq!(closing.len(), 1);
        assert_eq!(closing[0].count, 999);
        assert_eq!(r.total(), 1000);
        // The next refusal opens a new window and is reported at once again.
        let again = r.record(pending("10.0.0.1"), start + Duration::from_secs(2));
        assert_eq!(again.map(|r| r.count), Some(1));
    }

    #[test]
    fn different_addresses_and_reasons_are_reported_separately() {
        let now = Instant::now();
        let mut r = RefusalReporter::new(Duration::from_secs(1));
        assert!(r.record(pending("10.0.0.1"), now).is_some());
        assert!(r.record(pending("10.0.0.2"), now).is_some());
        let mut other = pending("10.0.0.1");
        other.reason = RefusalReason::Blacklisted(BlacklistMatch::Address);
        assert!(r.record(other, now).is_some());
        assert!(
            r.poll(now + Duration::from_secs(1)).is_empty(),
            "nothing after the first"
        );
    }

    #[test]
    fn a_flood_of_distinct_peers_stays_within_the_window_table() {
        let now = Instant::now();
        let mut r = RefusalReporter::new(Duration::from_secs(1));
        let mut immediate = 0;
        for _ in 0..10_000 {
            let refusal = Refusal {
                stage: AdmissionStage::Established,
                reason: RefusalReason::PeerLimit(PeerLimit::MaxPeers { limit: 20 }),
                peer: Some(PeerId::random()),
                ip: Some("10.0.0.9".parse().expect("ip")),
                address: None,
            };
            immediate += usize::from(r.record(refusal, now).is_some());
        }
        assert_eq!(
            immediate,
            MAX_REFUSAL_WINDOWS + 1,
            "one overflow window without peer"
        );
        let closing = r.poll(now + Duration::from_secs(1));
        assert_eq!(closing.len(), 1);
        assert_eq!(closing[0].peer, None);
        assert_eq!(closing[0].count, 10_000 - MAX_REFUSAL_WINDOWS as u64 - 1);
    }

    #[test]
    fn refusal_codes_round_trip_and_unknown_codes_are_kept() {
        for r in [
            RemoteRefusal::PeerLimit,
            RemoteRefusal::Blacklisted,
            RemoteRefusal::NotAllowed,
            RemoteRefusal::AddressLimit,
            RemoteRefusal::Other(99),
        ] {
            assert_eq!(RemoteRefusal::from_code(r.code()), r);
        }
        assert_eq!(RemoteRefusal::from_code(0), RemoteRefusal::Other(0));
        assert_eq!(
            RemoteRefusal::for_reason(RefusalReason::HandshakeFailed),
            None,
            "nothing is said before the handshake"
        );
    }

    #[test]
    fn reasons_read_as_before_for_existing_scripts() {
        assert_eq!(
            RefusalReason::Blacklisted(BlacklistMatch::Peer).to_string(),
            "blacklisted peer"
        );
        assert_eq!(
            RefusalReason::PeerLimit(PeerLimit::MaxPeers { limit: 20 }).to_string(),
            "max peers (20) reached"
        );
        assert_eq!(
            RefusalReason::PendingLimit {
                scope: AddressScope::Ip,
                limit: 16
            }
            .to_string(),
            "16 handshakes in progress per IP address"
        );
    }
}
