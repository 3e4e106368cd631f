//! The event bus: bounded, never blocking the swarm.
//!
//! Every event goes two ways. It is broadcast to every [`Events`] subscription
//! through a bounded ring: a subscriber that falls behind does not slow the network
//! down; it is told how many events it missed ([`Event::EventsDropped`]) and
//! carries on. And it is queued for the swarm, which the behaviour returns as
//! `ToSwarm::GenerateEvent`, so a node's own `#[derive(NetworkBehaviour)]` sees
//! it; that queue is bounded by the same length and, when the swarm falls behind,
//! drops its oldest events and reports how many with `EventsDropped`.
//!
//! Events come from the behaviour and from tasks outside the swarm (exchanges,
//! readers, senders), hence a queue with a waker rather than a plain `VecDeque`
//! in the behaviour.

use std::{
    collections::VecDeque,
    sync::Arc,
    task::{Context, Poll},
};

use futures::task::AtomicWaker;
use liquid_p2p_core::Event;
use parking_lot::Mutex;
use tokio::sync::broadcast;

/// Sends events to all subscribers and to the swarm.
#[derive(Debug, Clone)]
pub(crate) struct EventBus {
    tx: broadcast::Sender<Event>,
    to_swarm: Arc<SwarmQueue>,
    /// Counts every event as it is emitted, once metrics are registered.
    #[cfg(feature = "metrics")]
    metrics: MetricsSlot,
    /// The node's libp2p-metrics, for the events of the libp2p behaviours inside
    /// ours (ping, kad, gossipsub), which never reach the node's swarm.
    #[cfg(feature = "metrics")]
    libp2p_metrics: Arc<std::sync::OnceLock<Libp2pMetrics>>,
}

/// libp2p's `Metrics`, which has no `Debug`.
#[cfg(feature = "metrics")]
struct Libp2pMetrics(Arc<libp2p::metrics::Metrics>);

#[cfg(feature = "metrics")]
impl std::fmt::Debug for Libp2pMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Libp2pMetrics")
    }
}

#[cfg(feature = "metrics")]
type MetricsSlot = Arc<std::sync::OnceLock<Arc<crate::metrics::Metrics>>>;

#[derive(Debug)]
struct SwarmQueue {
    capacity: usize,
    queue: Mutex<Queued>,
    waker: AtomicWaker,
}

#[derive(Debug, Default)]
struct Queued {
    events: VecDeque<Event>,
    dropped: u64,
}

impl EventBus {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            tx: broadcast::channel(capacity).0,
            to_swarm: Arc::new(SwarmQueue {
                capacity,
                queue: Mutex::new(Queued::default()),
                waker: AtomicWaker::new(),
            }),
            #[cfg(feature = "metrics")]
            metrics: Arc::default(),
            #[cfg(feature = "metrics")]
            libp2p_metrics: Arc::default(),
        }
    }

    /// Records events in `metrics` from now on; false if metrics were set
    /// already.
    #[cfg(feature = "metrics")]
    pub(crate) fn set_metrics(&self, metrics: Arc<crate::metrics::Metrics>) -> bool {
        self.metrics.set(metrics).is_ok()
    }

    #[cfg(feature = "metrics")]
    pub(crate) fn metrics(&self) -> Option<&crate::metrics::Metrics> {
        self.metrics.get().map(|m| &**m)
    }

    /// Records the events of the libp2p behaviours inside ours in `metrics`
    /// from now on; false if they were set already.
    #[cfg(feature = "metrics")]
    pub(crate) fn set_libp2p_metrics(&self, metrics: Arc<libp2p::metrics::Metrics>) -> bool {
        self.libp2p_metrics.set(Libp2pMetrics(metrics)).is_ok()
    }

    /// Records `event` of an inner libp2p behaviour, if the node gave its
    /// libp2p-metrics.
    #[cfg(feature = "metrics")]
    pub(crate) fn record_libp2p<E>(&self, event: &E)
    where
        libp2p::metrics::Metrics: libp2p::metrics::Recorder<E>,
    {
        use libp2p::metrics::Recorder;
        if let Some(Libp2pMetrics(metrics)) = self.libp2p_metrics.get() {
            metrics.record(event);
        }
    }

    pub(crate) fn emit(&self, event: Event) {
        // Decisions are logged once here, with their fields; events a peer can
        // cause once per message only at trace.
        match event {
            Event::NotMember { .. }
            | Event::UnknownProtocol { .. }
            | Event::GossipDropped { .. }
            | Event::ProtocolError { .. } => tracing::trace!(?event, "event"),
            _ => tracing::debug!(?event, "event"),
        }
        #[cfg(feature = "metrics")]
        if let Some(metrics) = self.metrics.get() {
            metrics.record(&event);
        }
        {
            let mut queued = self.to_swarm.queue.lock();
            if queued.events.len() >= self.to_swarm.capacity {
                queued.events.pop_front();
                queued.dropped += 1;
                #[cfg(feature = "metrics")]
                if let Some(metrics) = self.metrics.get() {
                    metrics.events_dropped(crate::metrics::EventQueue::Swarm, 1);
                }
            }
            queued.events.push_back(event.clone());
        }
        self.to_swarm.waker.wake();
        // No subscriber is not an error: events are informational.
        let _ = self.tx.send(event);
    }

    pub(crate) fn subscribe(&self) -> Events {
        Events {
            rx: self.tx.subscribe(),
            #[cfg(feature = "metrics")]
            metrics: Arc::clone(&self.metrics),
        }
    }

    /// The next event for the swarm; wakes `cx` when one is emitted.
    pub(crate) fn poll_for_swarm(&self, cx: &mut Context<'_>) -> Poll<Event> {
        self.to_swarm.waker.register(cx.waker());
        let mut queued = self.to_swarm.queue.lock();
        if queued.dropped > 0 {
            let count = std::mem::take(&mut queued.dropped);
            return Poll::Ready(Event::EventsDropped { count });
        }
        match queued.events.pop_front() {
            Some(event) => Poll::Ready(event),
            None => Poll::Pending,
        }
    }
}

/// A subscription to events, from the moment it was taken; made by
/// [`Control::events`](crate::Control::events) (see there for an example).
///
/// It holds up to `event_queue_len` events; when the subscriber falls further
/// behind, the oldest are dropped and the next [`recv`](Self::recv) or
/// [`try_recv`](Self::try_recv) returns [`Event::EventsDropped`] with their
/// count.
#[derive(Debug)]
pub struct Events {
    rx: broadcast::Receiver<Event>,
    #[cfg(feature = "metrics")]
    metrics: MetricsSlot,
}

impl Events {
    /// The next event; `None` once the behaviour is gone.
    ///
    /// The behaviour is gone when it and every [`Control`](crate::Control) of
    /// it are dropped: [`Host::shutdown`](crate::Host::shutdown) alone does not
    /// end a subscription while the host (or a clone of its control) exists,
    /// so a task waiting on `recv` should also watch for the node's own
    /// shutdown.
    ///
    /// # Errors
    ///
    /// None: missed events are reported in band, as
    /// [`Event::EventsDropped`], and the end as `None`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped before it completes, it took no event, and the
    /// next call returns the event it would have returned. It can be used as a
    /// branch of `tokio::select!` in a loop.
    pub async fn recv(&mut self) -> Option<Event> {
        match self.rx.recv().await {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Lagged(count)) => Some(self.dropped(count)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// The next event if one is already queued.
    pub fn try_recv(&mut self) -> Option<Event> {
        match self.rx.try_recv() {
            Ok(event) => Some(event),
            Err(broadcast::error::TryRecvError::Lagged(count)) => Some(self.dropped(count)),
            Err(_) => None,
        }
    }

    /// The report of `count` missed events, counted in the metrics.
    fn dropped(&self, count: u64) -> Event {
        #[cfg(feature = "metrics")]
        if let Some(metrics) = self.metrics.get() {
            metrics.events_dropped(crate::metrics::EventQueue::Subscriber, count);
        }
        Event::EventsDropped { count }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_swarm_queue_keeps_the_newest_and_reports_what_it_dropped() {
        let bus = EventBus::new(2);
        for count in 1..=3 {
            bus.emit(Event::EventsDropped { count });
        }
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        while let Poll::Ready(e) = bus.poll_for_swarm(&mut cx) {
            out.push(e);
        }
        assert!(matches!(
            out.as_slice(),
            [
                Event::EventsDropped { count: 1 },
                Event::EventsDropped { count: 2 },
                Event::EventsDropped { count: 3 }
            ]
        ));
    }
}
