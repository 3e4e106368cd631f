//! `SendStreamPoolManager`: every pool of every connection, and the choice of the
//! connection a message goes out on.
//!
//! A peer may have several connections; each has its own pool. A sender takes the
//! least-loaded pool (fewest borrowed streams plus waiters; ties go to the most idle),
//! and when even that pool is busy (past half its cap, under half idle) the manager
//! says so, so the host can dial one more connection, up to the per-peer maximum.

use std::{collections::HashMap, sync::Arc};

use libp2p_identity::PeerId;
use libp2p_swarm::ConnectionId;
use parking_lot::RwLock;

use tokio::time::Instant;

use crate::pool::{Load, PoolStats, SendStreamPool, StreamOpener};

/// The pool chosen for a send.
#[derive(Debug)]
pub struct BestPool<O: StreamOpener> {
    /// The least-loaded pool of the peer.
    pub pool: Arc<SendStreamPool<O>>,
    /// The peer would benefit from one more connection: the best pool is busy and
    /// the peer has fewer connections than allowed.
    pub wants_connection: bool,
}

/// All send pools, keyed by peer then connection. See the module documentation.
#[derive(Debug)]
pub struct SendStreamPoolManager<O: StreamOpener> {
    pools: RwLock<HashMap<PeerId, Vec<Arc<SendStreamPool<O>>>>>,
    max_connections_per_peer: usize,
}

impl<O: StreamOpener> SendStreamPoolManager<O> {
    /// An empty manager.
    pub fn new(max_connections_per_peer: usize) -> Self {
        Self {
            pools: RwLock::new(HashMap::new()),
            max_connections_per_peer,
        }
    }

    /// Adds the pool of a newly established connection.
    pub fn add(&self, pool: Arc<SendStreamPool<O>>) {
        self.pools
            .write()
            .entry(pool.peer())
            .or_default()
            .push(pool);
    }

    /// Removes and closes the pool of a closed connection. Returns it, if it existed.
    pub fn remove(
        &self,
        peer: &PeerId,
        connection: ConnectionId,
    ) -> Option<Arc<SendStreamPool<O>>> {
        let removed = {
            let mut pools = self.pools.write();
            let list = pools.get_mut(peer)?;
            let pos = list.iter().position(|p| p.connection() == connection)?;
            let pool = list.swap_remove(pos);
            if list.is_empty() {
                pools.remove(peer);
            }
            pool
        };
        removed.close();
        Some(removed)
    }

    /// The pool of one connection.
    pub fn get(&self, peer: &PeerId, connection: ConnectionId) -> Option<Arc<SendStreamPool<O>>> {
        self.pools
            .read()
            .get(peer)?
            .iter()
            .find(|p| p.connection() == connection)
            .cloned()
    }

    /// The least-loaded open pool of `peer`, or `None` if it has none.
    pub fn best_pool(&self, peer: &PeerId) -> Option<BestPool<O>> {
        let pools = self.pools.read();
        let list = pools.get(peer)?;
        // One lock per pool: with a single connection, one lock in all.
        let mut open = 0;
        let mut best: Option<(&Arc<SendStreamPool<O>>, Load)> = None;
        for pool in list {
            let Some(load) = pool.load() else { continue };
            open += 1;
            let better = best.is_none_or(|(_, b)| {
                (load.in_use, std::cmp::Reverse(load.idle)) < (b.in_use, std::cmp::Reverse(b.idle))
            });
            if better {
                best = Some((pool, load));
            }
        }
        let (pool, load) = best?;
        Some(BestPool {
            pool: Arc::clone(pool),
            wants_connection: open < self.max_connections_per_peer && load.busy,
        })
    }

    /// Lets every pool give back streams after low use (see
    /// [`SendStreamPool::shrink`]); returns how many streams were closed.
    pub fn shrink_idle(&self, now: Instant) -> usize {
        let all: Vec<_> = self.pools.read().values().flatten().cloned().collect();
        all.iter().map(|pool| pool.shrink(now)).sum()
    }

    /// Counters of every pool of `peer`.
    pub fn stats(&self, peer: &PeerId) -> Vec<PoolStats> {
        self.pools
            .read()
            .get(peer)
            .map(|list| list.iter().map(|p| p.stats()).collect())
            .unwrap_or_default()
    }

    /// Peers with at least one pool.
    pub fn peers(&self) -> Vec<PeerId> {
        self.pools.read().keys().copied().collect()
    }

    /// Removes and closes every pool (host shutdown).
    pub fn close_all(&self) {
        let all: Vec<_> = self.pools.write().drain().flat_map(|(_, l)| l).collect();
        for pool in all {
            pool.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        PoolConfig,
        pool::tests::{FakeOpener, pool_with},
    };

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn best_pool_is_the_least_loaded_connection() {
        let peer = PeerId::random();
        let mgr = SendStreamPoolManager::new(2);
        let config = PoolConfig {
            init_size: 4,
            max_size: 8,
            ..PoolConfig::default()
        };
        for id in [1, 2] {
            let pool = SendStreamPool::new(
                peer,
                ConnectionId::new_unchecked(id),
                FakeOpener::default(),
                config.clone(),
            );
            pool.init();
            mgr.add(pool);
        }
        settle().await;
        let mut held = Vec::new();
        for _ in 0..6 {
            let best = mgr.best_pool(&peer).expect("connected");
            held.push(best.pool.borrow().await.expect("borrow"));
        }
        let stats = mgr.stats(&peer);
        assert_eq!(stats.len(), 2);
        assert!(stats.iter().all(|s| s.borrowed == 3), "{stats:?}");
        assert!(mgr.best_pool(&PeerId::random()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_pool_asks_for_one_more_connection_up_to_the_maximum() {
        let pool = pool_with(FakeOpener::default(), 4, 8);
        let peer = pool.peer();
        pool.init();
        let mgr = SendStreamPoolManager::new(2);
        mgr.add(Arc::clone(&pool));
        settle().await;
        assert!(!mgr.best_pool(&peer).expect("pool").wants_connection);
        let mut held = Vec::new();
        for _ in 0..6 {
            held.push(pool.borrow().await.expect("borrow"));
        }
        settle().await;
        // 6 of 6+ borrowed, past half of the cap of 8: one more connection helps.
        assert!(mgr.best_pool(&peer).expect("pool").wants_connection);
        let one_conn = SendStreamPoolManager::new(1);
        one_conn.add(Arc::clone(&pool));
        assert!(!one_conn.best_pool(&peer).expect("pool").wants_connection);
    }

    #[tokio::test(start_paused = true)]
    async fn removing_a_connection_closes_its_pool_and_forgets_the_peer() {
        let pool = pool_with(FakeOpener::default(), 1, 1);
        let (peer, conn) = (pool.peer(), pool.connection());
        let mgr = SendStreamPoolManager::new(1);
        mgr.add(Arc::clone(&pool));
        assert!(mgr.remove(&peer, conn).is_some());
        assert!(pool.is_closed());
        assert!(mgr.best_pool(&peer).is_none());
        assert!(mgr.peers().is_empty());
    }
}
