//! The connections whose bytes the watchdog and liveness check watch: one meter
//! per liquid connection, and why a remote refuses a connection of ours if it
//! said so. Pools and inbound streams are per connection too, but live in their
//! own managers ([`Shared`](super::Shared) keeps them in step).

use std::{collections::HashMap, sync::Arc};

use libp2p::{Multiaddr, PeerId, swarm::ConnectionId};
use liquid_p2p_core::RemoteRefusal;
use parking_lot::Mutex;

use crate::watchdog::ConnectionMeter;

/// One lock over both maps: an entry in `refusals` exists only for a connection
/// with a meter, which `close` removes together.
#[derive(Default)]
pub(crate) struct ConnectionTable {
    inner: Mutex<Tables>,
}

#[derive(Default)]
struct Tables {
    meters: HashMap<ConnectionId, Arc<ConnectionMeter>>,
    /// Why remotes refused live connections of ours (see refusal.rs).
    refusals: HashMap<ConnectionId, RemoteRefusal>,
}

impl ConnectionTable {
    /// A liquid connection starts: its meter, and its span.
    pub(crate) fn open(
        &self,
        peer: PeerId,
        connection: ConnectionId,
        remote: &Multiaddr,
    ) -> Arc<ConnectionMeter> {
        let span = tracing::debug_span!("connection", %peer, %connection, %remote);
        let meter = ConnectionMeter::with_span(peer, connection, span);
        self.inner
            .lock()
            .meters
            .insert(connection, Arc::clone(&meter));
        meter
    }

    /// Whether `peer` has a liquid connection, admitted or not yet.
    pub(crate) fn has_peer(&self, peer: &PeerId) -> bool {
        self.inner
            .lock()
            .meters
            .values()
            .any(|meter| meter.peer() == *peer)
    }

    pub(crate) fn meter(&self, connection: ConnectionId) -> Option<Arc<ConnectionMeter>> {
        self.inner.lock().meters.get(&connection).cloned()
    }

    /// The span of `connection`, the parent of its tasks' spans: the one made
    /// when it became a liquid connection, or, for one that is not (or no
    /// longer), a span naming the peer and connection.
    pub(crate) fn span(&self, peer: PeerId, connection: ConnectionId) -> tracing::Span {
        let span = self
            .inner
            .lock()
            .meters
            .get(&connection)
            .map(|meter| meter.span().clone());
        span.unwrap_or_else(|| tracing::debug_span!("connection", %peer, %connection))
    }

    /// The connection is gone: its meter is marked closed and forgotten, and so is
    /// any refusal it carried.
    pub(crate) fn close(&self, connection: ConnectionId) {
        let meter = {
            let mut tables = self.inner.lock();
            tables.refusals.remove(&connection);
            tables.meters.remove(&connection)
        };
        if let Some(meter) = meter {
            meter.mark_closed();
        }
    }

    /// Records why the remote refuses `connection`, if it is still open; whether
    /// it was.
    pub(crate) fn record_refusal(&self, connection: ConnectionId, refusal: RemoteRefusal) -> bool {
        let mut tables = self.inner.lock();
        if !tables.meters.contains_key(&connection) {
            return false;
        }
        tables.refusals.insert(connection, refusal);
        true
    }

    /// The refusal the remote told for `connection`, taken out.
    pub(crate) fn take_refusal(&self, connection: ConnectionId) -> Option<RemoteRefusal> {
        self.inner.lock().refusals.remove(&connection)
    }

    /// Connections whose message streams moved bytes since the last call. The
    /// behaviour's liveness check counts this like an answered ping (see
    /// `liveness.rs`).
    pub(crate) fn with_traffic(&self) -> Vec<ConnectionId> {
        self.inner
            .lock()
            .meters
            .iter()
            .filter(|(_, meter)| meter.take_traffic())
            .map(|(connection, _)| *connection)
            .collect()
    }

    /// When our muxer last read bytes from each connection's peer, for those
    /// whose streams reported it (see `watchdog.rs`).
    pub(crate) fn socket_reads(&self) -> Vec<(ConnectionId, tokio::time::Instant)> {
        self.inner
            .lock()
            .meters
            .iter()
            .filter_map(|(connection, meter)| Some((*connection, meter.last_socket_read()?)))
            .collect()
    }
}
