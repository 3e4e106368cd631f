//! Dead-peer detection from ping results.
//!
//! A killed peer is noticed at once: its socket closes. A peer that goes silent
//! (process stopped, link down) keeps its socket open, so the only sign is that
//! pings stop coming back. libp2p's ping handler stays silent about the first
//! failure and reports the second one only after a further negotiation timeout,
//! which takes about three times longer than the configured interval + timeout.
//! This table tracks the last sign of life of each connection instead, and names
//! the connections without one for `ping_interval + ping_timeout`.
//!
//! A sign of life is an answered ping or bytes moved on one of the connection's
//! message streams (the connection meters of `watchdog.rs`, read at every check).
//! Pings alone are not enough: they share the connection's queues with the data, so
//! on a slow link with a deep send queue (5 % loss, 100 ms round trip and TCP reno
//! give 50–70 KB/s, and a few hundred KB wait in the socket buffer and yamux) a
//! ping takes longer than its timeout while the peer's data keeps arriving, and
//! closing that connection lost the messages queued on it. Bytes moving are not
//! proof that the peer's process runs (its kernel acknowledges what fits its buffers
//! and flow-control windows), so a peer that stops mid-transfer is found once those
//! are full and the limit has passed, rather than the limit after its last ping.

use std::{collections::HashMap, time::Duration};

use libp2p::{PeerId, swarm::ConnectionId};
use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct Liveness {
    limit: Duration,
    /// Per connection: the peer and when it last proved to be alive.
    last_seen: HashMap<ConnectionId, (PeerId, Instant)>,
}

impl Liveness {
    pub(crate) fn new(ping_interval: Duration, ping_timeout: Duration) -> Self {
        Self {
            limit: ping_interval + ping_timeout,
            last_seen: HashMap::new(),
        }
    }

    /// A connection came up: it counts as alive now.
    pub(crate) fn established(&mut self, peer: PeerId, connection: ConnectionId, now: Instant) {
        self.last_seen.insert(connection, (peer, now));
    }

    /// A ping on `connection` was answered, or bytes moved on it.
    pub(crate) fn answered(&mut self, connection: ConnectionId, now: Instant) {
        if let Some((_, at)) = self.last_seen.get_mut(&connection) {
            *at = now;
        }
    }

    pub(crate) fn closed(&mut self, connection: ConnectionId) {
        self.last_seen.remove(&connection);
    }

    /// Connections silent for longer than the limit; they are forgotten, so each is
    /// reported once.
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<(PeerId, ConnectionId, Duration)> {
        let limit = self.limit;
        let dead: Vec<_> = self
            .last_seen
            .iter()
            .filter(|(_, (_, at))| now.duration_since(*at) > limit)
            .map(|(c, (p, at))| (*p, *c, now.duration_since(*at)))
            .collect();
        for (_, c, _) in &dead {
            self.last_seen.remove(c);
        }
        dead
    }

    /// How often `expired` should be asked: a tenth of the limit, at least 50 ms.
    pub(crate) fn check_period(&self) -> Duration {
        (self.limit / 10).max(Duration::from_millis(50))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_without_an_answered_ping_for_interval_plus_timeout_expires_once() {
        let mut l = Liveness::new(Duration::from_secs(2), Duration::from_secs(5));
        let (peer, conn) = (PeerId::random(), ConnectionId::new_unchecked(1));
        let t0 = Instant::now();
        l.established(peer, conn, t0);
        l.answered(conn, t0 + Duration::from_secs(2));
        assert!(l.expired(t0 + Duration::from_secs(9)).is_empty());
        let dead = l.expired(t0 + Duration::from_millis(9_001));
        assert_eq!(dead.len(), 1);
        assert_eq!((dead[0].0, dead[0].1), (peer, conn));
        assert!(
            l.expired(t0 + Duration::from_secs(60)).is_empty(),
            "reported once"
        );
    }

    #[test]
    fn closed_connections_are_forgotten() {
        let mut l = Liveness::new(Duration::from_secs(1), Duration::from_secs(1));
        let conn = ConnectionId::new_unchecked(7);
        let t0 = Instant::now();
        l.established(PeerId::random(), conn, t0);
        l.closed(conn);
        assert!(l.expired(t0 + Duration::from_secs(10)).is_empty());
    }
}
