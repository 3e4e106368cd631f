//! The host's event bus: bounded, never blocking the swarm.
//!
//! Events are broadcast to every subscriber through a bounded ring. A subscriber
//! that falls behind does not slow the network down; it is told how many events it
//! missed ([`Event::EventsDropped`]) and carries on.

use liquid_p2p_core::Event;
use tokio::sync::broadcast;

/// Sends events to all subscribers.
#[derive(Debug, Clone)]
pub(crate) struct EventBus {
    tx: broadcast::Sender<Event>,
}

impl EventBus {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            tx: broadcast::channel(capacity).0,
        }
    }

    pub(crate) fn emit(&self, event: Event) {
        tracing::debug!(?event, "host event");
        // No subscriber is not an error: events are informational.
        let _ = self.tx.send(event);
    }

    pub(crate) fn subscribe(&self) -> Events {
        Events {
            rx: self.tx.subscribe(),
        }
    }
}

/// A subscription to host events, from the moment it was taken.
#[derive(Debug)]
pub struct Events {
    rx: broadcast::Receiver<Event>,
}

impl Events {
    /// The next event; `None` once the host is gone.
    pub async fn recv(&mut self) -> Option<Event> {
        match self.rx.recv().await {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Lagged(count)) => Some(Event::EventsDropped { count }),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// The next event if one is already queued.
    pub fn try_recv(&mut self) -> Option<Event> {
        match self.rx.try_recv() {
            Ok(event) => Some(event),
            Err(broadcast::error::TryRecvError::Lagged(count)) => {
                Some(Event::EventsDropped { count })
            }
            Err(_) => None,
        }
    }
}
