//! `ReceiveStreamManager`: the account of every inbound message stream.
//!
//! Each inbound stream must hold a [`ReceiveTicket`] while it is read. Tickets are
//! granted only for a known (open) connection and only below the per-peer and
//! per-connection caps; a refused stream is counted and never tracked, so counts stay
//! exact. Closing a connection cancels the tickets of its streams, which stops their
//! readers, and forgets them.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use libp2p_identity::PeerId;
use libp2p_swarm::ConnectionId;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::StreamScope;
use crate::error::Error;

#[derive(Default)]
struct PeerEntry {
    streams: usize,
    refused: u64,
    connections: HashMap<ConnectionId, ConnEntry>,
}

struct ConnEntry {
    streams: HashSet<u64>,
    cancel: CancellationToken,
}

#[derive(Default)]
struct Inner {
    peers: HashMap<PeerId, PeerEntry>,
    next_id: u64,
}

/// Inbound stream counts of one peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReceiveCounts {
    /// Streams tracked across all the peer's connections.
    pub streams: usize,
    /// Streams refused since the peer's first connection.
    pub refused: u64,
    /// Streams tracked per connection.
    pub per_connection: Vec<(ConnectionId, usize)>,
}

/// Tracks and caps inbound streams. See the module documentation.
#[derive(Debug)]
pub struct ReceiveStreamManager {
    inner: Mutex<Inner>,
    per_peer: usize,
    per_connection: usize,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("peers", &self.peers.len())
            .finish()
    }
}

/// Proof that an inbound stream is tracked. Dropping it releases the slot; its
/// token is cancelled when the stream's connection closes.
#[derive(Debug)]
pub struct ReceiveTicket {
    manager: Arc<ReceiveStreamManager>,
    peer: PeerId,
    connection: ConnectionId,
    id: u64,
    cancel: CancellationToken,
}

impl ReceiveTicket {
    /// Cancelled when the stream's connection closes.
    pub fn cancelled(&self) -> &CancellationToken {
        &self.cancel
    }

    /// The peer the stream comes from.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// The connection carrying the stream.
    pub fn connection(&self) -> ConnectionId {
        self.connection
    }
}

impl Drop for ReceiveTicket {
    fn drop(&mut self) {
        self.manager.release(self.peer, self.connection, self.id);
    }
}

impl ReceiveStreamManager {
    /// A manager with the given caps.
    pub fn new(per_peer: usize, per_connection: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner::default()),
            per_peer,
            per_connection,
        })
    }

    /// Starts tracking a newly established connection.
    pub fn open_connection(&self, peer: PeerId, connection: ConnectionId) {
        self.inner
            .lock()
            .peers
            .entry(peer)
            .or_default()
            .connections
            .entry(connection)
            .or_insert_with(|| ConnEntry {
                streams: HashSet::new(),
                cancel: CancellationToken::new(),
            });
    }

    /// Grants a ticket for a new inbound stream, or refuses it (and counts the
    /// refusal) when the connection is unknown or a cap is reached.
    pub fn accept(
        self: &Arc<Self>,
        peer: PeerId,
        connection: ConnectionId,
    ) -> Result<ReceiveTicket, Error> {
        let mut inner = self.inner.lock();
        let id = inner.next_id;
        let Some(entry) = inner.peers.get_mut(&peer) else {
            return Err(Error::InboundStreamLimit {
                peer,
                scope: StreamScope::ClosedConnection,
                limit: 0,
            });
        };
        let refuse = |entry: &mut PeerEntry, scope, limit| {
            entry.refused += 1;
            Err(Error::InboundStreamLimit { peer, scope, limit })
        };
        if entry.streams >= self.per_peer {
            return refuse(entry, StreamScope::Peer, self.per_peer);
        }
        let Some(conn) = entry.connections.get_mut(&connection) else {
            return refuse(entry, StreamScope::ClosedConnection, 0);
        };
        if conn.streams.len() >= self.per_connection {
            return refuse(entry, StreamScope::Connection, self.per_connection);
        }
        conn.streams.insert(id);
        // The connection's own token: its streams end with it, and a clone
        // allocates nothing (a child token would, per stream).
        let cancel = conn.cancel.clone();
        entry.streams += 1;
        inner.next_id += 1;
        Ok(ReceiveTicket {
            manager: Arc::clone(self),
            peer,
            connection,
            id,
            cancel,
        })
    }

    /// Forgets a closed connection and cancels its streams' tickets. Returns how
    /// many streams it had. The peer's entry goes when its last connection does.
    pub fn close_connection(&self, peer: &PeerId, connection: ConnectionId) -> usize {
        let mut inner = self.inner.lock();
        let Some(entry) = inner.peers.get_mut(peer) else {
            return 0;
        };
        let Some(conn) = entry.connections.remove(&connection) else {
            return 0;
        };
        conn.cancel.cancel();
        entry.streams -= conn.streams.len();
        if entry.connections.is_empty() {
            inner.peers.remove(peer);
        }
        conn.streams.len()
    }

    /// Counts for one peer (all zero if unknown).
    pub fn counts(&self, peer: &PeerId) -> ReceiveCounts {
        let inner = self.inner.lock();
        inner
            .peers
            .get(peer)
            .map(|e| ReceiveCounts {
                streams: e.streams,
                refused: e.refused,
                per_connection: e
                    .connections
                    .iter()
                    .map(|(c, ce)| (*c, ce.streams.len()))
                    .collect(),
            })
            .unwrap_or_default()
    }

    /// Streams tracked across all peers.
    pub fn total(&self) -> usize {
        self.inner.lock().peers.values().map(|e| e.streams).sum()
    }

    fn release(&self, peer: PeerId, connection: ConnectionId, id: u64) {
        let mut inner = self.inner.lock();
        let Some(entry) = inner.peers.get_mut(&peer) else {
            return;
        };
        // A ticket outliving its connection was already subtracted on close.
        if let Some(conn) = entry.connections.get_mut(&connection)
            && conn.streams.remove(&id)
        {
            entry.streams -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(n: usize) -> ConnectionId {
        ConnectionId::new_unchecked(n)
    }

    #[test]
    fn streams_over_the_peer_cap_are_refused_and_counted_not_tracked() {
        let mgr = ReceiveStreamManager::new(3, 10);
        let peer = PeerId::random();
        mgr.open_connection(peer, conn(1));
        mgr.open_connection(peer, conn(2));
        let a: Vec<_> = (0..2)
            .map(|_| mgr.accept(peer, conn(1)).expect("ok"))
            .collect();
        let b = mgr.accept(peer, conn(2)).expect("ok");
        let err = mgr.accept(peer, conn(2)).expect_err("over the cap");
        assert!(matches!(
            err,
            Error::InboundStreamLimit {
                scope: StreamScope::Peer,
                limit: 3,
                ..
            }
        ));
        let c = mgr.counts(&peer);
        assert_eq!((c.streams, c.refused), (3, 1));
        drop(b);
        assert_eq!(mgr.counts(&peer).streams, 2);
        mgr.accept(peer, conn(2)).expect("room again");
        drop(a);
    }

    #[test]
    fn the_connection_cap_applies_per_connection() {
        let mgr = ReceiveStreamManager::new(10, 1);
        let peer = PeerId::random();
        mgr.open_connection(peer, conn(1));
        mgr.open_connection(peer, conn(2));
        let _a = mgr.accept(peer, conn(1)).expect("ok");
        assert!(mgr.accept(peer, conn(1)).is_err());
        let _b = mgr
            .accept(peer, conn(2))
            .expect("other connection has room");
    }

    #[test]
    fn closing_a_connection_cancels_and_forgets_only_its_streams() {
        let mgr = ReceiveStreamManager::new(10, 10);
        let peer = PeerId::random();
        mgr.open_connection(peer, conn(1));
        mgr.open_connection(peer, conn(2));
        let a = mgr.accept(peer, conn(1)).expect("ok");
        let b = mgr.accept(peer, conn(2)).expect("ok");
        assert_eq!(mgr.close_connection(&peer, conn(1)), 1);
        assert!(a.cancelled().is_cancelled());
        assert!(!b.cancelled().is_cancelled());
        drop(a); // its count was already removed: no double subtraction
        let c = mgr.counts(&peer);
        assert_eq!((c.streams, c.per_connection), (1, vec![(conn(2), 1)]));
        assert!(mgr.accept(peer, conn(1)).is_err(), "closed connection");
        mgr.close_connection(&peer, conn(2));
        drop(b);
        assert_eq!(mgr.total(), 0);
        assert_eq!(mgr.counts(&peer), ReceiveCounts::default());
    }
}
