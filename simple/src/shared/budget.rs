//! The send streams one connection may hold, all its pools together
//! (`pool.max_size`), handed out highest priority first.
//!
//! Hand-written rather than a `tokio::sync::Semaphore`: tokio's semaphore serves
//! its waiters strictly in arrival order, and a connection's budget must go to a
//! waiting `High` lane before a `Low` one that asked earlier. [`Permits`] is a
//! count and one queue of waiters per [`ProtocolPriority`]; a permit given back
//! goes straight to the first live waiter of the highest non-empty queue.

use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use libp2p::{PeerId, swarm::ConnectionId};
use liquid_p2p_core::{Error, ProtocolPriority, StreamOpenFailure};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::Shared;

/// A count of permits and the waiters for them, one queue per priority.
#[derive(Debug)]
pub(crate) struct Permits {
    state: Mutex<PermitState>,
}

#[derive(Debug)]
struct PermitState {
    available: usize,
    /// By [`ProtocolPriority::index`]; a waiter whose future was dropped has a
    /// closed sender and is skipped.
    waiters: [VecDeque<oneshot::Sender<Permit>>; 3],
}

/// One permit of [`Permits`], given back when dropped.
#[derive(Debug)]
pub(crate) struct Permit {
    permits: Arc<Permits>,
    /// False once handed back by hand (a send to a waiter that had gone).
    armed: bool,
}

/// A waiter queue pruned of dropped waiters once it is this long.
const PRUNE_AT: usize = 64;

impl Permits {
    pub(crate) fn new(count: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(PermitState {
                available: count,
                waiters: Default::default(),
            }),
        })
    }

    /// A permit if one is free now.
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        let mut st = self.state.lock();
        if st.available == 0 {
            return None;
        }
        st.available -= 1;
        Some(self.permit())
    }

    /// A permit: at once if one is free, else the first one given back that no
    /// waiter of a higher priority, or an older one of the same, is owed.
    /// Cancel safe: a permit sent to a dropped waiter passes to the next.
    /// `None` only if the waiter's place was lost, which `release` never does
    /// (it drops a waiter's sender only after sending on it).
    pub(crate) async fn acquire(self: &Arc<Self>, priority: ProtocolPriority) -> Option<Permit> {
        let rx = {
            let mut st = self.state.lock();
            if st.available > 0 {
                st.available -= 1;
                return Some(self.permit());
            }
            let queue = &mut st.waiters[priority.index()];
            if queue.len() >= PRUNE_AT {
                queue.retain(|tx| !tx.is_closed());
            }
            let (tx, rx) = oneshot::channel();
            queue.push_back(tx);
            rx
        };
        rx.await.ok()
    }

    fn permit(self: &Arc<Self>) -> Permit {
        Permit {
            permits: Arc::clone(self),
            armed: true,
        }
    }

    fn release(self: &Arc<Self>) {
        let mut st = self.state.lock();
        for level in (0..st.waiters.len()).rev() {
            while let Some(tx) = st.waiters[level].pop_front() {
                match tx.send(self.permit()) {
                    Ok(()) => return,
                    // The waiter gave up: not a release, it is ours again.
                    Err(mut permit) => permit.armed = false,
                }
            }
        }
        st.available += 1;
    }

    /// Permits free now.
    #[cfg(test)]
    fn available(&self) -> usize {
        self.state.lock().available
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.armed {
            self.permits.release();
        }
    }
}

/// The send streams one connection may hold, all its pools together
/// (`pool.max_size`): each open stream holds a permit until it is dropped.
pub(super) struct StreamBudget {
    permits: Arc<Permits>,
    /// Opens waiting for a permit. While there are any, a stream coming back to
    /// a pool that no borrower of its own waits for is closed
    /// ([`StreamOpener::budget_wanted`](liquid_p2p_core::StreamOpener::budget_wanted)).
    pub(super) waiting: AtomicUsize,
    /// How long an open waits for a permit: the borrow timeout, after which its
    /// borrower has given up anyway.
    wait: Duration,
    /// Cancelled when the connection's pools close: waiting opens give up.
    pub(super) closed: CancellationToken,
}

impl StreamBudget {
    pub(super) fn new(max_streams: usize, wait: Duration) -> Self {
        Self {
            permits: Permits::new(max_streams),
            waiting: AtomicUsize::new(0),
            wait,
            closed: CancellationToken::new(),
        }
    }

    /// A permit for one more stream of `connection`: at once if the budget has
    /// room, else by closing an idle stream of another pool of the connection,
    /// else the first one a returning stream gives back, higher priorities
    /// first.
    pub(super) async fn acquire(
        &self,
        shared: &Shared,
        peer: PeerId,
        connection: ConnectionId,
        priority: ProtocolPriority,
    ) -> Result<Permit, Error> {
        let exhausted = || Error::StreamOpen {
            peer,
            reason: StreamOpenFailure::Exhausted,
        };
        if let Some(permit) = self.permits.try_acquire() {
            return Ok(permit);
        }
        if shared.pools.reclaim_idle(&peer, connection)
            && let Some(permit) = self.permits.try_acquire()
        {
            return Ok(permit);
        }
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let acquired = tokio::select! {
            acquired = tokio::time::timeout(self.wait, self.permits.acquire(priority)) => {
                acquired.ok().flatten().ok_or_else(exhausted)
            }
            _ = self.closed.cancelled() => Err(Error::PoolClosed { peer, connection }),
        };
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        acquired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn permits_given_back_go_to_the_highest_waiter_then_the_oldest() {
        use ProtocolPriority::{High, Low, Normal};
        let permits = Permits::new(1);
        let held = permits.try_acquire().expect("one free");
        assert!(permits.try_acquire().is_none());
        let served = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for (name, priority) in [
            ("low 1", Low),
            ("normal", Normal),
            ("high 1", High),
            ("low 2", Low),
            ("high 2", High),
        ] {
            let (mine, served) = (Arc::clone(&permits), Arc::clone(&served));
            waiters.push(tokio::spawn(async move {
                let permit = mine.acquire(priority).await.expect("served");
                served.lock().push(name);
                drop(permit);
            }));
            // In line before the next one comes.
            while permits.state.lock().waiters[priority.index()].is_empty() {
                tokio::task::yield_now().await;
            }
        }
        drop(held);
        for waiter in waiters {
            waiter.await.expect("waiter");
        }
        assert_eq!(
            *served.lock(),
            ["high 1", "high 2", "normal", "low 1", "low 2"]
        );
        assert_eq!(permits.available(), 1, "every permit came back");
    }

    #[tokio::test]
    async fn a_waiter_that_gave_up_passes_its_permit_on() {
        let permits = Permits::new(1);
        let held = permits.try_acquire().expect("one free");
        let gone = tokio::time::timeout(
            Duration::from_millis(10),
            permits.acquire(ProtocolPriority::High),
        )
        .await;
        assert!(gone.is_err(), "no permit was free");
        let next = tokio::spawn({
            let permits = Arc::clone(&permits);
            async move {
                permits
                    .acquire(ProtocolPriority::Low)
                    .await
                    .expect("served")
            }
        });
        while permits.state.lock().waiters[0].is_empty() {
            tokio::task::yield_now().await;
        }
        drop(held);
        let permit = next.await.expect("the low waiter is served");
        assert_eq!(permits.available(), 0);
        drop(permit);
        assert_eq!(permits.available(), 1, "nothing leaked");
    }
}
