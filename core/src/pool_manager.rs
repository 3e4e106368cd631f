//! `SendStreamPoolManager`: every pool of every connection, and the choice of the
//! connection a message goes out on.
//!
//! A peer may have several connections. Each has a *reserve* (streams opened in
//! advance for its lanes: `idle_floor` when the connection comes up, refilled to
//! `init_size` at the first periodic check that finds it in use, back to
//! `idle_floor` once it was not used for `idle_after`), a *shared lane* for
//! ordered bursts, and one *lane* per protocol sent on it: a pool whose streams
//! carry only that protocol's frames. A receiver that stops reading one protocol
//! (its inbox full) stops reading that protocol's streams; flow control then holds
//! up the writers of that lane alone, never a frame of another protocol queued
//! behind one it will not read. A lane is made with one stream when its protocol
//! is first sent and grows on demand up to `max_streams_per_protocol`, so a stuck
//! protocol ties up a bounded share of the connection. Lanes take the reserve's
//! streams before opening new ones, so the first message of a connection, or
//! the first after a quiet period, finds a stream ready. The wire format does
//! not change: every frame still names its protocol, and a stream is bound to
//! one by the sender alone.
//!
//! The shared lane serves ordered bursts (a borrowed stream may carry several
//! protocols) and protocols beyond [`MAX_LANES`] per connection. All pools of a
//! connection together hold at most `max_size` streams; that budget is kept by
//! the opener (see [`StreamOpener::budget_wanted`]).
//!
//! A sender takes the least-loaded connection's lane (fewest borrowed streams plus
//! waiters; ties go to the most idle), and when even that is busy (past half its
//! cap, under half idle) the manager says so, so the host can dial one more
//! connection, up to the per-peer maximum. With one connection per peer
//! allowed (the default) there is nothing to compare: the first open lane is
//! taken, without locking any pool.
//!
//! [`StreamOpener::budget_wanted`]: crate::StreamOpener::budget_wanted

use std::{collections::HashMap, sync::Arc};

use libp2p_identity::PeerId;
use libp2p_swarm::ConnectionId;
use parking_lot::RwLock;

use tokio::time::Instant;

use crate::{
    config::PoolConfig,
    pool::{Lane, Load, PoolStats, SendStreamPool, StreamOpener},
};

/// Protocol lanes one connection holds at most; further protocols share the
/// connection's shared lane (and lose their isolation from each other).
pub const MAX_LANES: usize = 64;

/// The pool chosen for a send.
#[derive(Debug)]
pub struct BestPool<O: StreamOpener> {
    /// The least-loaded pool of the peer.
    pub pool: Arc<SendStreamPool<O>>,
    /// The peer would benefit from one more connection: the best pool is busy and
    /// the peer has fewer connections than allowed.
    pub wants_connection: bool,
}

/// The pools of one connection.
#[derive(Debug)]
struct Connection<O: StreamOpener> {
    reserve: Arc<SendStreamPool<O>>,
    shared: Arc<SendStreamPool<O>>,
    lanes: HashMap<Arc<str>, Arc<SendStreamPool<O>>>,
}

impl<O: StreamOpener> Connection<O> {
    fn id(&self) -> ConnectionId {
        self.reserve.connection()
    }

    /// Every pool, each with its role.
    fn pools(&self) -> impl Iterator<Item = (Lane, &Arc<SendStreamPool<O>>)> {
        [(Lane::Reserve, &self.reserve), (Lane::Shared, &self.shared)]
            .into_iter()
            .chain(
                self.lanes
                    .iter()
                    .map(|(p, pool)| (Lane::Protocol(Arc::clone(p)), pool)),
            )
    }

    /// The lane `protocol` uses: its own, else the shared one.
    fn lane_of(&self, protocol: &str) -> &Arc<SendStreamPool<O>> {
        self.lanes.get(protocol).unwrap_or(&self.shared)
    }
}

/// All send pools, keyed by peer then connection. See the module documentation.
#[derive(Debug)]
pub struct SendStreamPoolManager<O: StreamOpener> {
    pools: RwLock<HashMap<PeerId, Vec<Connection<O>>>>,
    max_connections_per_peer: usize,
    lane_config: PoolConfig,
}

impl<O: StreamOpener> SendStreamPoolManager<O> {
    /// An empty manager; lanes are made with `pool.lane()`.
    pub fn new(max_connections_per_peer: usize, pool: &PoolConfig) -> Self {
        Self {
            pools: RwLock::new(HashMap::new()),
            max_connections_per_peer,
            lane_config: pool.lane(),
        }
    }

    /// Removes and closes the pools of a closed connection. Returns its reserve,
    /// if it existed.
    pub fn remove(
        &self,
        peer: &PeerId,
        connection: ConnectionId,
    ) -> Option<Arc<SendStreamPool<O>>> {
        self.remove_with(peer, connection, |pool| crate::Error::PoolClosed {
            peer: pool.peer(),
            connection: pool.connection(),
        })
    }

    /// [`remove`](Self::remove), failing the pools' waiters with the error
    /// `reason` makes.
    pub fn remove_with(
        &self,
        peer: &PeerId,
        connection: ConnectionId,
        reason: impl Fn(&SendStreamPool<O>) -> crate::Error,
    ) -> Option<Arc<SendStreamPool<O>>> {
        let removed = {
            let mut pools = self.pools.write();
            let list = pools.get_mut(peer)?;
            let pos = list.iter().position(|c| c.id() == connection)?;
            let removed = list.swap_remove(pos);
            if list.is_empty() {
                pools.remove(peer);
            }
            removed
        };
        for (_, pool) in removed.pools() {
            pool.close_with(|| reason(pool));
        }
        Some(removed.reserve)
    }

    /// The least-loaded shared lane of `peer`, or `None` if it has no open
    /// connection: for ordered bursts, and to name a connection of the peer.
    pub fn best_pool(&self, peer: &PeerId) -> Option<BestPool<O>> {
        let pools = self.pools.read();
        let list = pools.get(peer)?;
        self.least_loaded(list.iter().map(|c| &c.shared))
    }

    /// One lock per pool, none when one connection per peer is allowed.
    fn least_loaded<'a>(
        &self,
        mut candidates: impl Iterator<Item = &'a Arc<SendStreamPool<O>>>,
    ) -> Option<BestPool<O>> {
        if self.max_connections_per_peer <= 1 {
            // One connection allowed (the default): nothing to compare and no
            // other to ask for; only whether its pool is open.
            let pool = candidates.find(|pool| !pool.is_closed())?;
            return Some(BestPool {
                pool: Arc::clone(pool),
                wants_connection: false,
            });
        }
        let mut open = 0;
        let mut best: Option<(&Arc<SendStreamPool<O>>, Load)> = None;
        for pool in candidates {
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
    /// [`SendStreamPool::shrink`]), and puts every connection none of whose
    /// pools was used for `idle_after` at rest (see [`SendStreamPool::rest`]);
    /// returns how many streams were closed. Call it every quarter of the
    /// shorter of `shrink_after` and `idle_after`, or more often.
    pub fn shrink_idle(&self, now: Instant) -> usize {
        let connections: Vec<Vec<Arc<SendStreamPool<O>>>> = {
            let pools = self.pools.read();
            pools
                .values()
                .flatten()
                .map(|c| c.pools().map(|(_, pool)| Arc::clone(pool)).collect())
                .collect()
        };
        connections
            .iter()
            .map(|pools| {
                let shrunk: usize = pools.iter().map(|pool| pool.shrink(now)).sum();
                shrunk + Self::rest_if_idle(pools, now)
            })
            .sum()
    }

    /// The idle check of one connection, given its pools, reserve first.
    fn rest_if_idle(pools: &[Arc<SendStreamPool<O>>], now: Instant) -> usize {
        let Some((reserve, lanes)) = pools.split_first() else {
            return 0;
        };
        // Every pool is asked (no short circuit), so that every record of use
        // is cleared.
        let used = pools
            .iter()
            .map(|pool| pool.take_activity())
            .filter(|&active| active)
            .count()
            > 0;
        if used {
            // In use: keep `init_size` ready (once per active period).
            reserve.warm_up();
        }
        if !reserve.idle_for(now, used) {
            return 0;
        }
        // A borrow racing with this takes a stream before it is taken here, or
        // finds its lane empty and takes the reserve's (or opens one).
        let streams = lanes
            .iter()
            .flat_map(|lane| std::iter::from_fn(|| lane.take_idle()))
            .collect();
        reserve.rest(streams)
    }

    /// Counters of every pool of `peer`: for each connection its reserve, its
    /// shared lane, then the lane of each protocol sent on it.
    pub fn stats(&self, peer: &PeerId) -> Vec<PoolStats> {
        let pools = self.pools.read();
        let Some(list) = pools.get(peer) else {
            return Vec::new();
        };
        list.iter()
            .flat_map(|c| c.pools())
            .map(|(lane, pool)| {
                let mut stats = pool.stats();
                stats.lane = lane;
                stats
            })
            .collect()
    }

    /// Counters of each connection of `peer`, all its pools summed; `max` is the
    /// connection's stream budget (the reserve's cap, `max_size`).
    pub fn connection_stats(&self, peer: &PeerId) -> Vec<PoolStats> {
        let pools = self.pools.read();
        let Some(list) = pools.get(peer) else {
            return Vec::new();
        };
        list.iter()
            .map(|connection| {
                let mut total = connection.reserve.stats();
                for (_, pool) in connection.pools().skip(1) {
                    total.add(&pool.stats());
                }
                total
            })
            .collect()
    }

    /// Closes one idle stream of `connection` (from whichever of its pools holds
    /// the most idle ones), giving its place in the connection's stream budget
    /// back; whether there was one.
    pub fn reclaim_idle(&self, peer: &PeerId, connection: ConnectionId) -> bool {
        let pools = self.pools_of(peer, connection);
        let fullest = pools.iter().max_by_key(|pool| pool.stats().idle);
        // Dropped at once: closed.
        fullest.is_some_and(|pool| pool.take_idle().is_some())
    }

    /// Whether `check` says yes for an idle stream of one of `connection`'s pools
    /// (see [`SendStreamPool::any_idle`]).
    pub fn any_idle(
        &self,
        peer: &PeerId,
        connection: ConnectionId,
        mut check: impl FnMut(&mut O::Stream) -> bool,
    ) -> bool {
        self.pools_of(peer, connection)
            .iter()
            .any(|pool| pool.any_idle(&mut check))
    }

    /// Every pool of `connection` (its reserve and lanes), taken out of the lock.
    fn pools_of(&self, peer: &PeerId, connection: ConnectionId) -> Vec<Arc<SendStreamPool<O>>> {
        let all = self.pools.read();
        all.get(peer)
            .and_then(|list| list.iter().find(|c| c.id() == connection))
            .map(|found| found.pools().map(|(_, pool)| Arc::clone(pool)).collect())
            .unwrap_or_default()
    }

    /// Connections of `peer` with open pools.
    pub fn connection_count(&self, peer: &PeerId) -> usize {
        self.pools.read().get(peer).map_or(0, |list| {
            list.iter().filter(|c| !c.reserve.is_closed()).count()
        })
    }

    /// Peers with at least one pool.
    pub fn peers(&self) -> Vec<PeerId> {
        self.pools.read().keys().copied().collect()
    }

    /// Removes and closes every pool (host shutdown).
    pub fn close_all(&self) {
        let all: Vec<_> = self.pools.write().drain().flat_map(|(_, l)| l).collect();
        for connection in all {
            for (_, pool) in connection.pools() {
                pool.close();
            }
        }
    }
}

impl<O: StreamOpener + Clone> SendStreamPoolManager<O> {
    /// Adds a newly established connection, given its reserve (a pool nobody
    /// borrows from directly, [started](SendStreamPool::start) by the caller).
    pub fn add(&self, reserve: Arc<SendStreamPool<O>>) {
        let shared = SendStreamPool::lane(&reserve, self.shared_config());
        self.pools
            .write()
            .entry(reserve.peer())
            .or_default()
            .push(Connection {
                reserve,
                shared,
                lanes: HashMap::new(),
            });
    }

    /// The shared lane opens nothing until used.
    fn shared_config(&self) -> PoolConfig {
        PoolConfig {
            init_size: 0,
            ..self.lane_config.clone()
        }
    }

    /// The pool a message of `protocol` goes out on: that protocol's lane on the
    /// least-loaded connection of `peer` (made, with its first stream, when the
    /// protocol is first sent there), or the shared lane once the connection has
    /// [`MAX_LANES`] lanes. `None` if the peer has no open connection.
    pub fn lane(&self, peer: &PeerId, protocol: &str) -> Option<BestPool<O>> {
        {
            // The usual case, under the read lock: every connection has the lane
            // (or no room for it). One lookup per connection.
            let pools = self.pools.read();
            let list = pools.get(peer)?;
            let mut missing = false;
            let lanes = list.iter().map_while(|c| match c.lanes.get(protocol) {
                Some(lane) => Some(lane),
                None if c.lanes.len() >= MAX_LANES => Some(&c.shared),
                None => {
                    missing = true;
                    None
                }
            });
            let best = self.least_loaded(lanes);
            if !missing {
                return best;
            }
        }
        let made = {
            let mut pools = self.pools.write();
            let list = pools.get_mut(peer)?;
            let mut made = Vec::new();
            for connection in list.iter_mut() {
                if connection.reserve.is_closed()
                    || connection.lanes.len() >= MAX_LANES
                    || connection.lanes.contains_key(protocol)
                {
                    continue;
                }
                let lane = SendStreamPool::lane(&connection.reserve, self.lane_config.clone());
                connection
                    .lanes
                    .insert(Arc::from(protocol), Arc::clone(&lane));
                made.push(lane);
            }
            made
        };
        for lane in made {
            lane.init();
        }
        let pools = self.pools.read();
        let list = pools.get(peer)?;
        self.least_loaded(list.iter().map(|c| c.lane_of(protocol)))
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

    fn small_pools() -> PoolConfig {
        PoolConfig {
            init_size: 4,
            max_size: 8,
            ..PoolConfig::default()
        }
    }

    /// A manager allowing `max_connections` per peer, holding two connections
    /// (1 and 2) to one peer, their reserves filled.
    async fn two_connections(
        max_connections: usize,
    ) -> (PeerId, SendStreamPoolManager<FakeOpener>) {
        let peer = PeerId::random();
        let config = small_pools();
        let mgr = SendStreamPoolManager::new(max_connections, &config);
        for id in [1, 2] {
            let reserve = SendStreamPool::new(
                peer,
                ConnectionId::new_unchecked(id),
                FakeOpener::default(),
                config.clone(),
            );
            reserve.init();
            mgr.add(reserve);
        }
        settle().await;
        (peer, mgr)
    }

    #[tokio::test(start_paused = true)]
    async fn best_pool_is_the_least_loaded_connection() {
        let (peer, mgr) = two_connections(2).await;
        let mut held = Vec::new();
        for _ in 0..6 {
            let best = mgr.best_pool(&peer).expect("connected");
            held.push(best.pool.borrow().await.expect("borrow"));
        }
        let stats = mgr.stats(&peer);
        assert_eq!(stats.len(), 4, "a reserve and a shared lane per connection");
        let shared: Vec<_> = stats.iter().filter(|s| s.lane == Lane::Shared).collect();
        assert_eq!(shared.len(), 2);
        assert!(shared.iter().all(|s| s.borrowed == 3), "{stats:?}");
        assert!(mgr.best_pool(&PeerId::random()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_pool_asks_for_one_more_connection_up_to_the_maximum() {
        let reserve = pool_with(FakeOpener::default(), 4, 8);
        let peer = reserve.peer();
        reserve.init();
        let mgr = SendStreamPoolManager::new(2, &small_pools());
        mgr.add(Arc::clone(&reserve));
        settle().await;
        let best = mgr.best_pool(&peer).expect("pool");
        assert!(!best.wants_connection);
        let mut held = Vec::new();
        for _ in 0..6 {
            held.push(best.pool.borrow().await.expect("borrow"));
        }
        settle().await;
        // 6 of 6 borrowed, past half of the lane's cap of 6: one more connection helps.
        assert!(mgr.best_pool(&peer).expect("pool").wants_connection);
        let one_conn = SendStreamPoolManager::new(1, &small_pools());
        one_conn.add(Arc::clone(&reserve));
        let lane = one_conn.best_pool(&peer).expect("pool");
        for _ in 0..6 {
            held.push(lane.pool.borrow().await.expect("borrow"));
        }
        assert!(!one_conn.best_pool(&peer).expect("pool").wants_connection);
    }

    #[tokio::test(start_paused = true)]
    async fn with_one_connection_allowed_the_first_open_lane_is_taken_and_no_other_asked_for() {
        // Two connections at once, as while a replaced one is still closing.
        let (peer, mgr) = two_connections(1).await;
        let first = mgr.best_pool(&peer).expect("connected");
        assert_eq!(first.pool.connection(), ConnectionId::new_unchecked(1));
        first.pool.close();
        let lane = mgr.lane(&peer, "/a/1").expect("connected");
        assert_eq!(lane.pool.connection(), ConnectionId::new_unchecked(1));
        lane.pool.close();
        let mut held = Vec::new();
        for _ in 0..6 {
            let best = mgr.best_pool(&peer).expect("the second connection");
            assert_eq!(best.pool.connection(), ConnectionId::new_unchecked(2));
            assert!(!best.wants_connection, "one connection allowed");
            held.push(best.pool.borrow().await.expect("borrow"));
        }
        let lane = mgr.lane(&peer, "/a/1").expect("the second connection");
        assert_eq!(lane.pool.connection(), ConnectionId::new_unchecked(2));
        lane.pool.close();
        assert!(mgr.lane(&peer, "/a/1").is_none(), "no open lane left");
    }

    #[tokio::test(start_paused = true)]
    async fn removing_a_connection_closes_its_pools_and_forgets_the_peer() {
        let reserve = pool_with(FakeOpener::default(), 1, 1);
        let (peer, conn) = (reserve.peer(), reserve.connection());
        let mgr = SendStreamPoolManager::new(1, &PoolConfig::default());
        mgr.add(Arc::clone(&reserve));
        let shared = mgr.best_pool(&peer).expect("connected").pool;
        assert!(mgr.remove(&peer, conn).is_some());
        assert!(reserve.is_closed() && shared.is_closed());
        assert!(mgr.best_pool(&peer).is_none());
        assert!(mgr.peers().is_empty());
    }

    /// A manager with one connection whose reserve holds 2 streams, lanes of at
    /// most `per_protocol` streams and a borrow timeout of 1 s.
    async fn one_connection(
        opener: FakeOpener,
        per_protocol: usize,
    ) -> (PeerId, SendStreamPoolManager<FakeOpener>) {
        let config = PoolConfig {
            init_size: 2,
            max_size: 16,
            max_streams_per_protocol: Some(per_protocol),
            borrow_timeout: Duration::from_secs(1),
            ..PoolConfig::default()
        };
        let peer = PeerId::random();
        let reserve =
            SendStreamPool::new(peer, ConnectionId::new_unchecked(1), opener, config.clone());
        reserve.init();
        let mgr = SendStreamPoolManager::new(1, &config);
        mgr.add(reserve);
        settle().await;
        (peer, mgr)
    }

    fn stats_of(mgr: &SendStreamPoolManager<FakeOpener>, peer: &PeerId, lane: Lane) -> PoolStats {
        mgr.stats(peer)
            .into_iter()
            .find(|s| s.lane == lane)
            .expect("stats of the lane")
    }

    #[tokio::test(start_paused = true)]
    async fn each_protocol_gets_its_own_lane_and_a_stuck_one_holds_only_its_own() {
        let opener = FakeOpener::default();
        let (peer, mgr) = one_connection(opener.clone(), 3).await;
        let a = mgr.lane(&peer, "/a").expect("connected").pool;
        let b = mgr.lane(&peer, "/b").expect("connected").pool;
        assert!(!Arc::ptr_eq(&a, &b), "one lane per protocol");
        assert!(Arc::ptr_eq(&a, &mgr.lane(&peer, "/a").expect("lane").pool));
        // Protocol /a is stuck: every stream of its lane is out (its writes do
        // not finish), and one more sender of /a waits and then times out.
        let mut stuck = Vec::new();
        for _ in 0..3 {
            stuck.push(a.borrow().await.expect("a stream of /a"));
        }
        let waiting = tokio::spawn({
            let a = Arc::clone(&a);
            async move { a.borrow().await.map(|_| ()) }
        });
        // /b is not held up by it: its lane lends at once.
        let b_stream = tokio::time::timeout(Duration::from_millis(10), b.borrow())
            .await
            .expect("/b does not wait for /a")
            .expect("a stream of /b");
        assert!(matches!(
            waiting.await.expect("task"),
            Err(crate::Error::Timeout { .. })
        ));
        let lane_a = stats_of(&mgr, &peer, Lane::Protocol("/a".into()));
        assert_eq!((lane_a.borrowed, lane_a.max), (3, 3));
        assert_eq!(
            mgr.stats(&peer).len(),
            4,
            "reserve, shared lane and two lanes"
        );
        let total = &mgr.connection_stats(&peer)[0];
        assert_eq!((total.borrowed, total.max), (4, 16), "{total:?}");
        drop(b_stream);
        drop(stuck);
    }

    #[tokio::test(start_paused = true)]
    async fn protocols_beyond_the_lane_limit_share_the_shared_lane() {
        let (peer, mgr) = one_connection(FakeOpener::default(), 1).await;
        for n in 0..MAX_LANES {
            mgr.lane(&peer, &format!("/p/{n}")).expect("lane");
        }
        let shared = mgr.best_pool(&peer).expect("shared").pool;
        let overflow = mgr.lane(&peer, "/one-too-many").expect("pool").pool;
        assert!(Arc::ptr_eq(&shared, &overflow));
        assert_eq!(mgr.stats(&peer).len(), MAX_LANES + 2);
    }

    #[tokio::test(start_paused = true)]
    async fn lanes_take_the_reserved_streams_before_opening_new_ones() {
        let opener = FakeOpener::default();
        let (peer, mgr) = one_connection(opener.clone(), 4).await;
        let opened = || opener.opened.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(opened(), 2, "the reserve opened init_size streams");
        mgr.lane(&peer, "/a").expect("lane");
        mgr.lane(&peer, "/b").expect("lane");
        settle().await;
        assert_eq!(
            opened(),
            2,
            "each lane's first stream came from the reserve"
        );
        assert_eq!(stats_of(&mgr, &peer, Lane::Reserve).current, 0);
        assert_eq!(
            stats_of(&mgr, &peer, Lane::Protocol("/a".into())).current,
            1
        );
        mgr.lane(&peer, "/c").expect("lane");
        settle().await;
        assert_eq!(
            opened(),
            3,
            "an empty reserve: the third lane opens its stream"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn reserved_streams_the_remote_closed_are_discarded_not_given_to_a_lane() {
        let opener = FakeOpener::default();
        let (peer, mgr) = one_connection(opener.clone(), 4).await;
        // The remote reset both reserved streams while they sat idle.
        opener
            .reset_before
            .store(2, std::sync::atomic::Ordering::SeqCst);
        let lane = mgr.lane(&peer, "/a").expect("lane").pool;
        let stream = lane.borrow().await.expect("a stream");
        assert!(stream.get().serial >= 2, "a fresh stream, not a reset one");
        assert_eq!(stats_of(&mgr, &peer, Lane::Reserve).current, 0);
        assert_eq!(opener.opened.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn removing_a_connection_closes_its_lanes() {
        let opener = FakeOpener::default();
        let (peer, mgr) = one_connection(opener.clone(), 2).await;
        let lane = mgr.lane(&peer, "/a").expect("lane").pool;
        settle().await;
        assert_eq!(lane.stats().current, 1, "a lane starts with one stream");
        mgr.remove(&peer, ConnectionId::new_unchecked(1))
            .expect("removed");
        assert!(lane.is_closed());
        assert!(mgr.lane(&peer, "/a").is_none());
        assert_eq!(opener.live.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    /// A lazy connection (reserve of 4, floor 1, idle after 60 s), started as
    /// the host starts it.
    async fn lazy_connection(
        opener: FakeOpener,
        config: PoolConfig,
    ) -> (PeerId, SendStreamPoolManager<FakeOpener>) {
        let peer = PeerId::random();
        let reserve =
            SendStreamPool::new(peer, ConnectionId::new_unchecked(1), opener, config.clone());
        reserve.start();
        let mgr = SendStreamPoolManager::new(1, &config);
        mgr.add(reserve);
        settle().await;
        (peer, mgr)
    }

    fn lazy_pools() -> PoolConfig {
        PoolConfig {
            init_size: 4,
            max_size: 16,
            idle_after: Some(Duration::from_secs(60)),
            idle_floor: 1,
            ..PoolConfig::default()
        }
    }

    /// Runs the periodic check every 15 s for `duration`.
    async fn check_for(mgr: &SendStreamPoolManager<FakeOpener>, duration: Duration) {
        let period = Duration::from_secs(15);
        let mut waited = Duration::ZERO;
        while waited < duration {
            tokio::time::sleep(period).await;
            waited += period;
            mgr.shrink_idle(Instant::now());
        }
    }

    fn live(opener: &FakeOpener) -> usize {
        opener.live.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn opened(opener: &FakeOpener) -> usize {
        opener.opened.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_opens_only_the_floor_and_the_rest_on_first_use() {
        let opener = FakeOpener::default();
        let (peer, mgr) = lazy_connection(opener.clone(), lazy_pools()).await;
        assert_eq!(live(&opener), 1, "only idle_floor streams at connect");
        assert_eq!(stats_of(&mgr, &peer, Lane::Reserve).idle, 1);
        let lane = mgr.lane(&peer, "/a").expect("connected").pool;
        let stream = lane.borrow().await.expect("the first send finds a stream");
        assert_eq!(stream.get().serial, 0, "the floor's stream, not a new one");
        drop(stream);
        settle().await;
        // The next check finds the connection in use: the reserve refills to
        // init_size.
        mgr.shrink_idle(Instant::now());
        settle().await;
        assert_eq!(stats_of(&mgr, &peer, Lane::Reserve).current, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn open_at_connect_opens_init_size_at_once() {
        let opener = FakeOpener::default();
        let config = lazy_pools().with_open_at_connect(true);
        let (peer, mgr) = lazy_connection(opener.clone(), config).await;
        assert_eq!(live(&opener), 4);
        assert_eq!(stats_of(&mgr, &peer, Lane::Reserve).idle, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_rests_at_the_floor_and_the_next_send_finds_a_stream() {
        let opener = FakeOpener::default();
        let (peer, mgr) = lazy_connection(opener.clone(), lazy_pools()).await;
        // Traffic on two protocols, 3 streams of /a out at once.
        let a = mgr.lane(&peer, "/a").expect("lane").pool;
        let b = mgr.lane(&peer, "/b").expect("lane").pool;
        let held: Vec<_> = futures::future::join_all((0..3).map(|_| a.borrow())).await;
        drop(b.borrow().await.expect("borrow /b"));
        drop(held);
        settle().await;
        assert!(live(&opener) >= 5, "in use: {} streams", live(&opener));
        // Used within the last minute: not idle yet.
        check_for(&mgr, Duration::from_secs(45)).await;
        assert!(live(&opener) > 1);
        check_for(&mgr, Duration::from_secs(30)).await;
        assert_eq!(live(&opener), 1, "at rest: the floor only");
        let reserve = stats_of(&mgr, &peer, Lane::Reserve);
        assert_eq!((reserve.current, reserve.idle), (1, 1), "{reserve:?}");
        for lane in ["/a", "/b"] {
            assert_eq!(
                stats_of(&mgr, &peer, Lane::Protocol(lane.into())).current,
                0
            );
        }
        // The next send takes the floor's stream without opening one.
        let before = opened(&opener);
        let b = mgr.lane(&peer, "/b").expect("lane").pool;
        let stream = tokio::time::timeout(Duration::from_millis(1), b.borrow())
            .await
            .expect("no open waited for")
            .expect("borrow");
        assert!(stream.get().serial < before, "an already open stream");
        drop(stream);
        settle().await;
        assert_eq!(
            opened(&opener),
            before,
            "the send after rest opened nothing"
        );
        check_for(&mgr, Duration::from_secs(15)).await;
        settle().await;
        assert!(live(&opener) >= 4, "warm again: {} streams", live(&opener));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_with_a_floor_of_zero_keeps_nothing_and_opens_on_the_next_send() {
        let opener = FakeOpener::default();
        let config = lazy_pools().with_idle_floor(0);
        let (peer, mgr) = lazy_connection(opener.clone(), config).await;
        assert_eq!(live(&opener), 0, "nothing at connect");
        let a = mgr.lane(&peer, "/a").expect("lane").pool;
        drop(a.borrow().await.expect("opened on first use"));
        settle().await;
        check_for(&mgr, Duration::from_secs(75)).await;
        assert_eq!(live(&opener), 0, "nothing at rest");
        drop(a.borrow().await.expect("opened again"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_with_a_stream_out_is_not_idle() {
        let opener = FakeOpener::default();
        // Bursts are not given back within the test: only resting closes streams.
        let config = lazy_pools().with_shrink_after(Duration::from_secs(3600));
        let (peer, mgr) = lazy_connection(opener.clone(), config).await;
        let a = mgr.lane(&peer, "/a").expect("lane").pool;
        let long_write = a.borrow().await.expect("borrow");
        // The first check warms the reserve up.
        check_for(&mgr, Duration::from_secs(15)).await;
        settle().await;
        let in_use = live(&opener);
        check_for(&mgr, Duration::from_secs(150)).await;
        assert_eq!(live(&opener), in_use, "nothing closed while a write is out");
        drop(long_write);
        check_for(&mgr, Duration::from_secs(90)).await;
        assert_eq!(live(&opener), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn without_idle_after_a_connection_never_rests() {
        let opener = FakeOpener::default();
        let config = lazy_pools()
            .with_idle_after(None)
            .with_shrink_after(Duration::from_secs(3600));
        let (peer, mgr) = lazy_connection(opener.clone(), config).await;
        drop(mgr.lane(&peer, "/a").expect("lane").pool.borrow().await);
        check_for(&mgr, Duration::from_secs(15)).await;
        settle().await;
        let in_use = live(&opener);
        check_for(&mgr, Duration::from_secs(300)).await;
        assert_eq!(live(&opener), in_use);
    }
}
