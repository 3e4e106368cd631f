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
//! A sign of life is an answered ping or bytes read from the peer: from one of
//! the connection's message streams, or, over our muxer, any byte its socket
//! read (window updates, pongs), whose count the send streams hand to the
//! connection meter at each write, and an idle one when asked here (see
//! `muxer.rs` and `watchdog.rs`; the meters are read at every check). Bytes we
//! write are not one: the kernel and the flow-control windows take them from a
//! peer whose process has stopped, so a host that keeps sending to a dead peer
//! would otherwise keep it "alive" until its windows fill, which at a consensus
//! node's few messages a second is never.
//!
//! Pings alone are not enough: on a slow link with a deep queue (5 % loss, 100 ms
//! round trip and TCP reno give 50–70 KB/s, and the link's buffers hold seconds
//! of data) a ping waits behind the data and times out while the peer is alive.
//! The peer then shows life by the window updates it sends as it reads our data,
//! or by the data it sends us.

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

    /// A ping on `connection` was answered, or bytes were read from it.
    pub(crate) fn answered(&mut self, connection: ConnectionId, now: Instant) {
        if let Some((_, at)) = self.last_seen.get_mut(&connection) {
            *at = (*at).max(now);
        }
    }

    /// Connections with no sign of life for longer than `for_at_least`.
    pub(crate) fn quiet(
        &self,
        now: Instant,
        for_at_least: Duration,
    ) -> Vec<(PeerId, ConnectionId)> {
        self.last_seen
            .iter()
            .filter(|(_, (_, at))| now.duration_since(*at) > for_at_least)
            .map(|(c, (p, _))| (*p, *c))
            .collect()
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
