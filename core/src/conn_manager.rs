//! `ConnManager`: which connections a host admits, and whom it drops to make room.
//!
//! A host keeps at most `max_peers` peers and `max_connections_per_peer` connections
//! to each. Some peers are *required* (consensus or seed nodes, [`Priority::High`]):
//! the host must stay connected to them whatever else happens, so they are never
//! evicted for an ordinary peer and never refused for lack of room. Everyone else is
//! [`Priority::Low`]; when the table is full, the [`EvictionStrategy`] says whether a
//! newcomer is refused (LIFO, the default: first come, first kept) or takes the place
//! of the oldest (FIFO) or of a random (Random) low-priority peer.
//!
//! The manager decides and records; it touches no socket. [`ConnManager::admit`] only
//! answers, so a connection later denied elsewhere leaves no trace. The caller then
//! records what really happened with [`connected`](ConnManager::connected) and
//! [`disconnected`](ConnManager::disconnected). An eviction is committed with
//! [`evict`](ConnManager::evict) *before the next admission*: closing a connection
//! takes time, and a victim still counted while it closes would be chosen again for
//! the next newcomer, letting two peers in for one place.
//!
//! The table holds the peers the caller records. Admission keeps it within
//! `max_peers`, except for required peers, which are bounded by configuration: the
//! table exceeds `max_peers` only when every peer in it is required.

use std::{cmp::Reverse, collections::HashMap, fmt};

use libp2p_identity::PeerId;
use libp2p_swarm::ConnectionId;
use rand::{RngExt, rngs::StdRng};

use crate::config::Config;

/// How much a peer matters to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Priority {
    /// A required peer (consensus or seed node): never evicted for a low-priority
    /// peer, never refused for lack of room.
    High,
    /// Any other peer. Default.
    #[default]
    Low,
}

/// What happens when a new low-priority peer arrives and `max_peers` peers are
/// already connected. The same strategy picks the low-priority peer that makes room
/// for a new high-priority one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum EvictionStrategy {
    /// Last in, first refused: the newcomer is refused and established peers keep
    /// their place. A required newcomer evicts the *newest* low-priority peer, which
    /// has had the least time to become useful. Default.
    #[default]
    Lifo,
    /// First in, first out: the low-priority peer connected the longest is evicted.
    Fifo,
    /// A low-priority peer chosen uniformly at random is evicted, so that no arrival
    /// order lets a patient peer hold its place (or push others out) predictably.
    Random,
}

/// Which peer limit refuses a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum PeerLimit {
    /// The peer already has `limit` connections.
    #[error("max connections per peer ({limit}) reached")]
    TooManyConnections {
        /// The per-peer connection limit.
        limit: usize,
    },
    /// `limit` peers are connected and the LIFO strategy keeps them.
    #[error("max peers ({limit}) reached")]
    MaxPeers {
        /// The peer limit.
        limit: usize,
    },
    /// `limit` peers (or more) are connected and all are high-priority.
    #[error("max peers ({limit}) reached, no low-priority peer to evict")]
    NoPeerToEvict {
        /// The peer limit.
        limit: usize,
    },
}

/// The answer of [`ConnManager::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// There is room: accept the connection.
    Accept,
    /// Accept the connection, and make room by evicting this low-priority peer: call
    /// [`ConnManager::evict`] with it, then close the connections that returns.
    AcceptEvicting(PeerId),
    /// Deny the connection.
    Refuse(PeerLimit),
}

/// What the manager knows of one connected peer.
#[derive(Debug)]
struct PeerRecord {
    priority: Priority,
    /// Order of the peer's first (current) connection; smaller is older. FIFO and
    /// LIFO compare this, not a clock, so two arrivals in the same instant still
    /// have an order.
    since: u64,
    /// The peer's open connections; at most `max_connections_per_peer` unless the
    /// caller records connections that were not admitted.
    connections: Vec<ConnectionId>,
}

/// Decides which connections are admitted, and whom to evict to make room.
///
/// At most `max_peers` peers, except that required ([`Priority::High`]) peers are
/// never refused for lack of room nor evicted for a low-priority one; so the table
/// exceeds `max_peers` only when all its peers are required. At most
/// `max_connections_per_peer` connections to each peer.
///
/// Use: ask [`admit`](Self::admit) (which changes nothing); on
/// [`Admission::AcceptEvicting`] call [`evict`](Self::evict) at once and close the
/// connections it returns; record established and closed connections with
/// [`connected`](Self::connected) and [`disconnected`](Self::disconnected).
///
/// ```
/// use liquid_p2p_core::{Admission, ConnManager, ConnectionId, EvictionStrategy, PeerId, Priority};
///
/// let mut manager = ConnManager::new(1, 1, EvictionStrategy::Fifo);
/// let (old, new) = (PeerId::random(), PeerId::random());
/// manager.connected(old, ConnectionId::new_unchecked(1), Priority::Low);
/// assert_eq!(manager.admit(new, Priority::Low), Admission::AcceptEvicting(old));
/// let to_close = manager.evict(&old);
/// assert_eq!(to_close, vec![ConnectionId::new_unchecked(1)]);
/// manager.connected(new, ConnectionId::new_unchecked(2), Priority::Low);
/// assert_eq!(manager.peer_count(), 1);
/// ```
pub struct ConnManager {
    peers: HashMap<PeerId, PeerRecord>,
    max_peers: usize,
    max_connections_per_peer: usize,
    strategy: EvictionStrategy,
    next_since: u64,
    /// Used only by [`EvictionStrategy::Random`]; injectable for reproducible tests.
    rng: StdRng,
}

impl fmt::Debug for ConnManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The generator's state is noise in a log line and should not leak.
        f.debug_struct("ConnManager")
            .field("peers", &self.peers)
            .field("max_peers", &self.max_peers)
            .field("max_connections_per_peer", &self.max_connections_per_peer)
            .field("strategy", &self.strategy)
            .finish_non_exhaustive()
    }
}

impl ConnManager {
    /// A manager with the given limits, seeding [`EvictionStrategy::Random`] from the
    /// operating system.
    ///
    /// A `max_connections_per_peer` of 0 is taken as 1: a peer without a connection
    /// is not connected, so 0 could only mean "refuse everyone", which `max_peers`
    /// does not express either. A `max_peers` of 0 admits required peers only.
    pub fn new(
        max_peers: usize,
        max_connections_per_peer: usize,
        strategy: EvictionStrategy,
    ) -> Self {
        Self::with_rng(
            max_peers,
            max_connections_per_peer,
            strategy,
            rand::make_rng(),
        )
    }

    /// Like [`new`](Self::new), with the random generator of
    /// [`EvictionStrategy::Random`] given, so tests replay the same evictions.
    pub fn with_rng(
        max_peers: usize,
        max_connections_per_peer: usize,
        strategy: EvictionStrategy,
        rng: StdRng,
    ) -> Self {
        Self {
            peers: HashMap::new(),
            max_peers,
            max_connections_per_peer: max_connections_per_peer.max(1),
            strategy,
            next_since: 0,
            rng,
        }
    }

    /// A manager with the limits and strategy of `config`.
    pub fn from_config(config: &Config) -> Self {
        Self::new(
            config.max_peers,
            config.max_connections_per_peer,
            config.eviction,
        )
    }

    /// Whether a new connection to `peer`, which has `priority`, is admitted.
    ///
    /// The table of connections is not changed (only the random generator advances):
    /// record the connection with [`connected`](Self::connected) once established,
    /// and commit an eviction with [`evict`](Self::evict) before the next admission.
    /// `priority` matters only when the peer is not connected yet; a connected peer
    /// keeps the priority it was recorded with.
    pub fn admit(&mut self, peer: PeerId, priority: Priority) -> Admission {
        if let Some(record) = self.peers.get(&peer) {
            return if record.connections.len() < self.max_connections_per_peer {
                Admission::Accept
            } else {
                Admission::Refuse(PeerLimit::TooManyConnections {
                    limit: self.max_connections_per_peer,
                })
            };
        }
        if self.peers.len() < self.max_peers {
            return Admission::Accept;
        }
        let limit = self.max_peers;
        match (priority, self.strategy) {
            // LIFO keeps established peers: a low newcomer waits for a free place.
            (Priority::Low, EvictionStrategy::Lifo) => {
                Admission::Refuse(PeerLimit::MaxPeers { limit })
            }
            (Priority::Low, _) => match self.choose_victim() {
                Some(victim) => Admission::AcceptEvicting(victim),
                None => Admission::Refuse(PeerLimit::NoPeerToEvict { limit }),
            },
            // A required peer gets in whatever the room: refusing it would cut the
            // host off from consensus. Required peers come from configuration, so
            // the excess they cause is bounded by it.
            (Priority::High, _) => match self.choose_victim() {
                Some(victim) => Admission::AcceptEvicting(victim),
                None => Admission::Accept,
            },
        }
    }

    /// Records an established connection. A connection already recorded is ignored.
    ///
    /// The connection is recorded even if [`admit`](Self::admit) would refuse it:
    /// the table mirrors the connections that exist. For a new peer, `priority` is
    /// its priority; for a connected one it replaces the recorded priority, as the
    /// latest word of the caller.
    pub fn connected(&mut self, peer: PeerId, connection: ConnectionId, priority: Priority) {
        let next_since = &mut self.next_since;
        let record = self.peers.entry(peer).or_insert_with(|| {
            let since = *next_since;
            *next_since += 1;
            PeerRecord {
                priority,
                since,
                connections: Vec::new(),
            }
        });
        record.priority = priority;
        if !record.connections.contains(&connection) {
            if record.connections.len() >= self.max_connections_per_peer {
                tracing::warn!(%peer, ?connection, "recording a connection beyond the per-peer limit");
            }
            record.connections.push(connection);
        }
    }

    /// Records a closed connection. Returns `true` when it was the peer's last one,
    /// so the peer left the table. Unknown connections (for example those of a peer
    /// already [evicted](Self::evict)) are ignored.
    pub fn disconnected(&mut self, peer: &PeerId, connection: ConnectionId) -> bool {
        let Some(record) = self.peers.get_mut(peer) else {
            return false;
        };
        let Some(index) = record.connections.iter().position(|c| *c == connection) else {
            return false;
        };
        record.connections.swap_remove(index);
        if record.connections.is_empty() {
            self.peers.remove(peer);
            return true;
        }
        false
    }

    /// Forgets `peer` at once and returns its connections, for the caller to close.
    ///
    /// Called on [`Admission::AcceptEvicting`] (or when [`set_priority`](Self::set_priority)
    /// says so): the peer stops counting now, not when its connections finish
    /// closing, so it is neither counted nor chosen again meanwhile. The
    /// [`disconnected`](Self::disconnected) calls that follow are ignored.
    pub fn evict(&mut self, peer: &PeerId) -> Vec<ConnectionId> {
        self.peers
            .remove(peer)
            .map(|record| record.connections)
            .unwrap_or_default()
    }

    /// Changes the priority of a connected peer (a required peer added or removed
    /// at run time); unknown peers are ignored.
    ///
    /// Returns `true` when the peer, now low-priority, holds a place beyond
    /// `max_peers`: the table was over the limit, which only required peers may
    /// cause, so this peer must go to restore the limit; call [`evict`](Self::evict).
    /// Raising a peer to high priority never displaces anyone.
    #[must_use = "a demoted peer beyond max_peers must be evicted"]
    pub fn set_priority(&mut self, peer: &PeerId, priority: Priority) -> bool {
        let over_limit = self.peers.len() > self.max_peers;
        match self.peers.get_mut(peer) {
            Some(record) => {
                record.priority = priority;
                priority == Priority::Low && over_limit
            }
            None => false,
        }
    }

    /// Peers with at least one recorded connection.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Recorded connections to `peer` (0 if unknown).
    pub fn connections(&self, peer: &PeerId) -> usize {
        self.peers.get(peer).map_or(0, |r| r.connections.len())
    }

    /// The recorded priority of a connected peer.
    pub fn priority(&self, peer: &PeerId) -> Option<Priority> {
        self.peers.get(peer).map(|r| r.priority)
    }

    /// The connected peers, in no particular order.
    pub fn peers(&self) -> impl Iterator<Item = &PeerId> + '_ {
        self.peers.keys()
    }

    /// The strategy applied when the table is full.
    pub fn strategy(&self) -> EvictionStrategy {
        self.strategy
    }

    /// The low-priority peer the strategy evicts, if any is connected.
    fn choose_victim(&mut self) -> Option<PeerId> {
        let low = self
            .peers
            .iter()
            .filter(|(_, r)| r.priority == Priority::Low);
        match self.strategy {
            EvictionStrategy::Fifo => low.min_by_key(|(_, r)| r.since).map(|(p, _)| *p),
            EvictionStrategy::Lifo => low.max_by_key(|(_, r)| r.since).map(|(p, _)| *p),
            EvictionStrategy::Random => {
                // Sorted by age first: the map's iteration order differs from run to
                // run, and a seeded generator must pick the same peer every time.
                let mut candidates: Vec<_> = low.map(|(p, r)| (r.since, *p)).collect();
                if candidates.is_empty() {
                    return None;
                }
                candidates.sort_unstable_by_key(|(since, _)| Reverse(*since));
                let index = self.rng.random_range(0..candidates.len());
                candidates.get(index).map(|(_, p)| *p)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use rand::SeedableRng;

    use proptest::prelude::*;

    use super::*;

    fn conn(n: usize) -> ConnectionId {
        ConnectionId::new_unchecked(n)
    }

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    fn manager(max_peers: usize, per_peer: usize, strategy: EvictionStrategy) -> ConnManager {
        ConnManager::with_rng(max_peers, per_peer, strategy, StdRng::seed_from_u64(7))
    }

    /// Admits and records each peer in turn, asserting it was accepted outright.
    fn fill(m: &mut ConnManager, peers: &[PeerId], priority: Priority) {
        for (i, p) in peers.iter().enumerate() {
            assert_eq!(m.admit(*p, priority), Admission::Accept);
            m.connected(*p, conn(1000 + i), priority);
        }
    }

    #[test]
    fn peers_are_accepted_until_max_peers() {
        let mut m = manager(3, 1, EvictionStrategy::Lifo);
        fill(&mut m, &peers(3), Priority::Low);
        assert_eq!(m.peer_count(), 3);
        assert_eq!(
            m.admit(PeerId::random(), Priority::Low),
            Admission::Refuse(PeerLimit::MaxPeers { limit: 3 })
        );
    }

    #[test]
    fn admit_does_not_change_the_table() {
        let mut m = manager(1, 1, EvictionStrategy::Fifo);
        let p = PeerId::random();
        assert_eq!(m.admit(p, Priority::Low), Admission::Accept);
        assert_eq!(m.admit(p, Priority::Low), Admission::Accept);
        assert_eq!(m.peer_count(), 0);
    }

    #[test]
    fn a_second_connection_is_refused_at_the_per_peer_limit() {
        let mut m = manager(5, 1, EvictionStrategy::Lifo);
        let p = PeerId::random();
        m.connected(p, conn(1), Priority::Low);
        let refused = Admission::Refuse(PeerLimit::TooManyConnections { limit: 1 });
        assert_eq!(m.admit(p, Priority::Low), refused);
        // The limit holds for required peers too: it is not about room.
        assert_eq!(m.admit(p, Priority::High), refused);
    }

    #[test]
    fn extra_connections_are_accepted_below_the_per_peer_limit_even_when_full() {
        let mut m = manager(1, 3, EvictionStrategy::Lifo);
        let p = PeerId::random();
        m.connected(p, conn(1), Priority::Low);
        assert_eq!(m.admit(p, Priority::Low), Admission::Accept);
        m.connected(p, conn(2), Priority::Low);
        assert_eq!(m.admit(p, Priority::Low), Admission::Accept);
        m.connected(p, conn(3), Priority::Low);
        assert_eq!(
            m.admit(p, Priority::Low),
            Admission::Refuse(PeerLimit::TooManyConnections { limit: 3 })
        );
        assert_eq!((m.peer_count(), m.connections(&p)), (1, 3));
    }

    #[test]
    fn recording_the_same_connection_twice_counts_it_once() {
        let mut m = manager(5, 2, EvictionStrategy::Lifo);
        let p = PeerId::random();
        m.connected(p, conn(1), Priority::Low);
        m.connected(p, conn(1), Priority::Low);
        assert_eq!(m.connections(&p), 1);
    }

    #[test]
    fn lifo_refuses_a_low_newcomer_when_full() {
        let mut m = manager(2, 1, EvictionStrategy::Lifo);
        let ps = peers(2);
        fill(&mut m, &ps, Priority::Low);
        let newcomer = PeerId::random();
        assert!(matches!(
            m.admit(newcomer, Priority::Low),
            Admission::Refuse(PeerLimit::MaxPeers { limit: 2 })
        ));
        assert!(ps.iter().all(|p| m.connections(p) == 1));
    }

    #[test]
    fn fifo_evicts_the_oldest_low_priority_peer() {
        let mut m = manager(3, 1, EvictionStrategy::Fifo);
        let ps = peers(3);
        // The oldest peer is required, so the oldest *low* one is the second.
        m.connected(ps[0], conn(0), Priority::High);
        m.connected(ps[1], conn(1), Priority::Low);
        m.connected(ps[2], conn(2), Priority::Low);
        let newcomer = PeerId::random();
        assert_eq!(
            m.admit(newcomer, Priority::Low),
            Admission::AcceptEvicting(ps[1])
        );
        assert_eq!(m.evict(&ps[1]), vec![conn(1)]);
        m.connected(newcomer, conn(3), Priority::Low);
        // Now ps[2] is the oldest low-priority peer.
        assert_eq!(
            m.admit(PeerId::random(), Priority::Low),
            Admission::AcceptEvicting(ps[2])
        );
    }

    #[test]
    fn order_is_by_first_connection_not_by_latest() {
        let mut m = manager(2, 2, EvictionStrategy::Fifo);
        let ps = peers(2);
        m.connected(ps[0], conn(0), Priority::Low);
        m.connected(ps[1], conn(1), Priority::Low);
        // A second connection does not make ps[0] younger.
        m.connected(ps[0], conn(2), Priority::Low);
        assert_eq!(
            m.admit(PeerId::random(), Priority::Low),
            Admission::AcceptEvicting(ps[0])
        );
        // A peer that left and came back is young again.
        m.disconnected(&ps[0], conn(0));
        m.disconnected(&ps[0], conn(2));
        m.connected(ps[0], conn(3), Priority::Low);
        assert_eq!(
            m.admit(PeerId::random(), Priority::Low),
            Admission::AcceptEvicting(ps[1])
        );
    }

    #[test]
    fn random_evicts_only_low_priority_peers_and_spreads_its_choice() {
        let mut m = manager(4, 1, EvictionStrategy::Random);
        let ps = peers(4);
        m.connected(ps[0], conn(0), Priority::High);
        for (i, p) in ps.iter().enumerate().skip(1) {
            m.connected(*p, conn(i), Priority::Low);
        }
        let mut chosen = HashSet::new();
        for _ in 0..200 {
            match m.admit(PeerId::random(), Priority::Low) {
                Admission::AcceptEvicting(victim) => {
                    assert_ne!(victim, ps[0], "a required peer was chosen");
                    chosen.insert(victim);
                }
                other => panic!("expected an eviction, got {other:?}"),
            }
        }
        assert_eq!(chosen, ps[1..].iter().copied().collect());
    }

    #[test]
    fn random_replays_the_same_evictions_with_the_same_seed() {
        let ps = peers(5);
        let newcomers = peers(20);
        let run = || {
            let mut m = manager(5, 1, EvictionStrategy::Random);
            for (i, p) in ps.iter().enumerate() {
                m.connected(*p, conn(i), Priority::Low);
            }
            newcomers
                .iter()
                .map(|n| m.admit(*n, Priority::Low))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn a_high_priority_peer_is_never_evicted_for_a_low_priority_one() {
        for strategy in [
            EvictionStrategy::Lifo,
            EvictionStrategy::Fifo,
            EvictionStrategy::Random,
        ] {
            let mut m = manager(3, 1, strategy);
            let ps = peers(3);
            fill(&mut m, &ps[..2], Priority::High);
            fill(&mut m, &ps[2..], Priority::Low);
            for _ in 0..20 {
                match m.admit(PeerId::random(), Priority::Low) {
                    Admission::AcceptEvicting(victim) => assert_eq!(victim, ps[2]),
                    Admission::Refuse(_) => assert_eq!(strategy, EvictionStrategy::Lifo),
                    Admission::Accept => panic!("{strategy:?} accepted beyond max_peers"),
                }
            }
        }
    }

    #[test]
    fn a_low_newcomer_is_refused_when_only_high_priority_peers_remain() {
        for strategy in [EvictionStrategy::Fifo, EvictionStrategy::Random] {
            let mut m = manager(2, 1, strategy);
            fill(&mut m, &peers(2), Priority::High);
            let refusal = m.admit(PeerId::random(), Priority::Low);
            assert_eq!(
                refusal,
                Admission::Refuse(PeerLimit::NoPeerToEvict { limit: 2 })
            );
        }
        let mut m = manager(2, 1, EvictionStrategy::Lifo);
        fill(&mut m, &peers(2), Priority::High);
        assert!(matches!(
            m.admit(PeerId::random(), Priority::Low),
            Admission::Refuse(_)
        ));
    }

    #[test]
    fn a_high_newcomer_evicts_a_low_peer_chosen_by_the_strategy() {
        let ps = peers(3);
        let setup = |strategy| {
            let mut m = manager(3, 1, strategy);
            fill(&mut m, &ps, Priority::Low);
            m
        };
        let required = PeerId::random();
        assert_eq!(
            setup(EvictionStrategy::Lifo).admit(required, Priority::High),
            Admission::AcceptEvicting(ps[2]),
            "LIFO gives up the newest low-priority peer"
        );
        assert_eq!(
            setup(EvictionStrategy::Fifo).admit(required, Priority::High),
            Admission::AcceptEvicting(ps[0])
        );
        assert!(matches!(
            setup(EvictionStrategy::Random).admit(required, Priority::High),
            Admission::AcceptEvicting(victim) if ps.contains(&victim)
        ));
    }

    #[test]
    fn a_high_newcomer_is_admitted_beyond_max_peers_when_all_are_high() {
        let mut m = manager(2, 1, EvictionStrategy::Lifo);
        fill(&mut m, &peers(2), Priority::High);
        let required = PeerId::random();
        assert_eq!(m.admit(required, Priority::High), Admission::Accept);
        m.connected(required, conn(9), Priority::High);
        assert_eq!(m.peer_count(), 3);
        assert!(matches!(
            m.admit(PeerId::random(), Priority::Low),
            Admission::Refuse(_)
        ));
    }

    #[test]
    fn a_disconnect_frees_room() {
        let mut m = manager(2, 1, EvictionStrategy::Lifo);
        let ps = peers(2);
        fill(&mut m, &ps, Priority::Low);
        let newcomer = PeerId::random();
        assert!(matches!(
            m.admit(newcomer, Priority::Low),
            Admission::Refuse(_)
        ));
        assert!(m.disconnected(&ps[0], conn(1000)));
        assert_eq!(m.peer_count(), 1);
        assert_eq!(m.admit(newcomer, Priority::Low), Admission::Accept);
    }

    #[test]
    fn a_peer_leaves_the_table_with_its_last_connection() {
        let mut m = manager(2, 2, EvictionStrategy::Lifo);
        let p = PeerId::random();
        m.connected(p, conn(1), Priority::Low);
        m.connected(p, conn(2), Priority::Low);
        assert!(!m.disconnected(&p, conn(1)));
        assert_eq!((m.peer_count(), m.connections(&p)), (1, 1));
        assert!(!m.disconnected(&p, conn(1)), "already gone");
        assert!(m.disconnected(&p, conn(2)));
        assert_eq!((m.peer_count(), m.priority(&p)), (0, None));
    }

    #[test]
    fn an_evicted_peer_is_not_chosen_twice_while_it_closes() {
        let mut m = manager(2, 1, EvictionStrategy::Fifo);
        let ps = peers(2);
        fill(&mut m, &ps, Priority::Low);
        let (a, b) = (PeerId::random(), PeerId::random());
        assert_eq!(m.admit(a, Priority::Low), Admission::AcceptEvicting(ps[0]));
        assert_eq!(m.evict(&ps[0]), vec![conn(1000)]);
        m.connected(a, conn(1), Priority::Low);
        // ps[0]'s connection has not closed yet; the next newcomer takes ps[1]'s place.
        assert_eq!(m.admit(b, Priority::Low), Admission::AcceptEvicting(ps[1]));
        assert!(!m.disconnected(&ps[0], conn(1000)), "late close is ignored");
        assert_eq!(m.peer_count(), 2);
        assert!(m.evict(&PeerId::random()).is_empty());
    }

    #[test]
    fn a_demoted_peer_beyond_max_peers_must_go() {
        let mut m = manager(2, 1, EvictionStrategy::Lifo);
        let ps = peers(3);
        for (i, p) in ps.iter().enumerate() {
            m.connected(*p, conn(i), Priority::High);
        }
        assert!(m.set_priority(&ps[1], Priority::Low));
        assert_eq!(m.priority(&ps[1]), Some(Priority::Low));
        assert_eq!(m.evict(&ps[1]), vec![conn(1)]);
        // Back within the limit: a second demotion displaces nobody.
        assert!(!m.set_priority(&ps[2], Priority::Low));
        assert!(!m.set_priority(&ps[2], Priority::High));
        assert!(!m.set_priority(&PeerId::random(), Priority::Low));
    }

    #[test]
    fn a_promoted_peer_is_no_longer_evictable() {
        let mut m = manager(2, 1, EvictionStrategy::Fifo);
        let ps = peers(2);
        fill(&mut m, &ps, Priority::Low);
        assert!(!m.set_priority(&ps[0], Priority::High));
        assert_eq!(
            m.admit(PeerId::random(), Priority::Low),
            Admission::AcceptEvicting(ps[1])
        );
    }

    #[test]
    fn zero_connections_per_peer_is_taken_as_one() {
        let mut m = manager(2, 0, EvictionStrategy::Lifo);
        let p = PeerId::random();
        assert_eq!(m.admit(p, Priority::Low), Admission::Accept);
        m.connected(p, conn(1), Priority::Low);
        assert_eq!(
            m.admit(p, Priority::Low),
            Admission::Refuse(PeerLimit::TooManyConnections { limit: 1 })
        );
    }

    #[test]
    fn refusal_reasons_read_as_sentences() {
        assert_eq!(
            PeerLimit::NoPeerToEvict { limit: 20 }.to_string(),
            "max peers (20) reached, no low-priority peer to evict"
        );
        assert_eq!(
            PeerLimit::MaxPeers { limit: 20 }.to_string(),
            "max peers (20) reached"
        );
        assert_eq!(
            PeerLimit::TooManyConnections { limit: 1 }.to_string(),
            "max connections per peer (1) reached"
        );
    }

    #[test]
    fn from_config_takes_the_limits_and_the_strategy() {
        let config = Config {
            max_peers: 3,
            max_connections_per_peer: 2,
            eviction: EvictionStrategy::Fifo,
            ..Config::default()
        };
        let mut m = ConnManager::from_config(&config);
        assert_eq!(m.strategy(), EvictionStrategy::Fifo);
        let ps = peers(3);
        fill(&mut m, &ps, Priority::Low);
        assert_eq!(
            m.admit(PeerId::random(), Priority::Low),
            Admission::AcceptEvicting(ps[0])
        );
        assert_eq!(m.admit(ps[0], Priority::Low), Admission::Accept);
    }

    /// One step of a caller driving the manager.
    #[derive(Debug, Clone)]
    enum Step {
        /// Peer `n` dials or is dialled.
        Arrive(usize),
        /// One connection of peer `n` closes.
        Leave(usize),
        /// Peer `n` is added to or removed from the required set.
        Require(usize, bool),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0..12usize).prop_map(Step::Arrive),
            2 => (0..12usize).prop_map(Step::Leave),
            1 => (0..12usize, any::<bool>()).prop_map(|(n, high)| Step::Require(n, high)),
        ]
    }

    fn strategy() -> impl Strategy<Value = EvictionStrategy> {
        prop_oneof![
            Just(EvictionStrategy::Lifo),
            Just(EvictionStrategy::Fifo),
            Just(EvictionStrategy::Random),
        ]
    }

    proptest! {
        #[test]
        fn limits_hold_whatever_the_arrivals_and_departures(
            max_peers in 1..6usize,
            per_peer in 1..3usize,
            strategy in strategy(),
            seed in any::<u64>(),
            required in proptest::collection::vec(any::<bool>(), 12),
            steps in proptest::collection::vec(step(), 1..150),
        ) {
            let ids = peers(12);
            let mut required = required;
            let mut m = ConnManager::with_rng(
                max_peers, per_peer, strategy, StdRng::seed_from_u64(seed),
            );
            let priority = |high: bool| if high { Priority::High } else { Priority::Low };
            // The connections the "network" really has, to check the manager's view.
            let mut open: HashMap<PeerId, Vec<ConnectionId>> = HashMap::new();
            let mut next_conn = 0;
            for step in steps {
                match step {
                    Step::Arrive(n) => {
                        let (peer, prio) = (ids[n], priority(required[n]));
                        let admission = m.admit(peer, prio);
                        match admission {
                            Admission::Refuse(PeerLimit::TooManyConnections { .. }) => {
                                prop_assert_eq!(open.get(&peer).map_or(0, Vec::len), per_peer);
                                continue;
                            }
                            Admission::Refuse(_) => {
                                prop_assert_eq!(prio, Priority::Low, "a required peer was refused for room");
                                continue;
                            }
                            Admission::AcceptEvicting(victim) => {
                                prop_assert_eq!(m.priority(&victim), Some(Priority::Low));
                                prop_assert!(victim != peer);
                                let closed = m.evict(&victim);
                                prop_assert_eq!(Some(closed), open.remove(&victim));
                            }
                            Admission::Accept => {}
                        }
                        next_conn += 1;
                        m.connected(peer, conn(next_conn), prio);
                        open.entry(peer).or_default().push(conn(next_conn));
                    }
                    Step::Leave(n) => {
                        let peer = ids[n];
                        if let Some(conns) = open.get_mut(&peer) {
                            let c = conns.pop();
                            prop_assert!(c.is_some());
                            let last = conns.is_empty();
                            if last {
                                open.remove(&peer);
                            }
                            prop_assert_eq!(m.disconnected(&peer, c.unwrap_or(conn(0))), last);
                        }
                    }
                    Step::Require(n, high) => {
                        required[n] = high;
                        if m.set_priority(&ids[n], priority(high)) {
                            prop_assert!(!high);
                            prop_assert_eq!(Some(m.evict(&ids[n])), open.remove(&ids[n]));
                        }
                    }
                }
                let low = m.peers().filter(|p| m.priority(p) == Some(Priority::Low)).count();
                prop_assert!(
                    m.peer_count() <= max_peers || low == 0,
                    "{} peers over a limit of {} with {} low-priority", m.peer_count(), max_peers, low
                );
                prop_assert_eq!(m.peer_count(), open.len());
                for (peer, conns) in &open {
                    prop_assert_eq!(m.connections(peer), conns.len());
                    prop_assert!(conns.len() <= per_peer);
                    prop_assert_eq!(m.priority(peer), Some(priority(required[ids.iter().position(|p| p == peer).unwrap_or(0)])));
                }
            }
        }
    }
}
