//! The receive path: the protocol registry and the reader of each inbound stream.
//!
//! Every registered application protocol has a bounded queue ([`Inbox`]). A reader
//! task per inbound stream decodes frames and pushes each into the queue of its
//! protocol; when the queue is full the reader waits, so the stream stops being read
//! and flow control slows the sender down: messages are never dropped for lack of
//! room. A frame for an unregistered protocol is counted, reported and skipped. A
//! frame that breaks the wire format resets its stream only.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::AsyncWriteExt;
use liquid_p2p_core::{
    Error, Event, FrameReader, MAX_PROTOCOL_LEN, Message, ReadError, ReceiveTicket,
};
use parking_lot::RwLock;
use tokio::sync::mpsc;

use crate::{behaviour::Shared, watchdog::MeteredStream};

/// How long a reader may go on delivering frames that arrived before its
/// connection closed.
const DRAIN_AFTER_CLOSE: Duration = Duration::from_secs(2);

/// Checks an application protocol id: 1 to 256 bytes.
pub(crate) fn validate_protocol(protocol: &str) -> Result<(), Error> {
    if protocol.is_empty() || protocol.len() > MAX_PROTOCOL_LEN {
        return Err(Error::InvalidProtocol {
            len: protocol.len(),
        });
    }
    Ok(())
}

/// Local application protocols and the queues their messages go to.
#[derive(Debug)]
pub(crate) struct ProtocolRegistry {
    handlers: RwLock<HashMap<String, Route>>,
    queue_len: usize,
}

/// Where the messages of one protocol go: its shared name and its queue.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    name: Arc<str>,
    queue: mpsc::Sender<Message>,
}

impl ProtocolRegistry {
    pub(crate) fn new(queue_len: usize) -> Self {
        Self {
            handlers: RwLock::new(HashMap::new()),
            queue_len,
        }
    }

    pub(crate) fn register(&self, protocol: String) -> Result<Inbox, Error> {
        validate_protocol(&protocol)?;
        let mut handlers = self.handlers.write();
        if handlers.contains_key(&protocol) {
            return Err(Error::ProtocolAlreadyRegistered { protocol });
        }
        let (tx, rx) = mpsc::channel(self.queue_len);
        let route = Route {
            name: Arc::from(protocol.as_str()),
            queue: tx,
        };
        handlers.insert(protocol.clone(), route);
        Ok(Inbox { protocol, rx })
    }

    pub(crate) fn unregister(&self, protocol: &str) -> Result<(), Error> {
        self.handlers
            .write()
            .remove(protocol)
            .map(drop)
            .ok_or_else(|| Error::ProtocolNotRegistered {
                protocol: protocol.to_owned(),
            })
    }

    pub(crate) fn route(&self, protocol: &str) -> Option<Route> {
        self.handlers.read().get(protocol).cloned()
    }

    pub(crate) fn protocols(&self) -> Vec<String> {
        let mut list: Vec<_> = self.handlers.read().keys().cloned().collect();
        list.sort();
        list
    }

    pub(crate) fn clear(&self) {
        self.handlers.write().clear();
    }
}

/// The messages of one registered protocol, in arrival order per stream.
///
/// The queue holds at most `handler_queue_len` messages; while it is full the
/// streams carrying this protocol are not read (backpressure). Dropping the inbox
/// does not unregister the protocol: frames for it then wait, so call
/// `unregister_protocol` when done.
#[derive(Debug)]
pub struct Inbox {
    protocol: String,
    rx: mpsc::Receiver<Message>,
}

impl Inbox {
    /// The next message; `None` after the protocol is unregistered and the queue drained.
    pub async fn recv(&mut self) -> Option<Message> {
        self.rx.recv().await
    }

    /// A message if one is queued.
    pub fn try_recv(&mut self) -> Option<Message> {
        self.rx.try_recv().ok()
    }

    /// The protocol this inbox receives.
    pub fn protocol(&self) -> &str {
        &self.protocol
    }
}

/// Reads one inbound stream until it ends, breaks the wire format, or its
/// connection closes.
pub(crate) async fn read_stream(shared: Arc<Shared>, stream: MeteredStream, ticket: ReceiveTicket) {
    let (peer, connection) = (ticket.peer(), ticket.connection());
    let cancelled = ticket.cancelled().clone();
    // When the connection closes, frames that already arrived (the stream yields
    // them, then its end) are still delivered; the grace period only bounds a reader
    // stuck on a full inbox.
    let stop = async {
        cancelled.cancelled().await;
        tokio::time::sleep(DRAIN_AFTER_CLOSE).await;
    };
    tokio::pin!(stop);
    let mut reader = FrameReader::new(
        stream,
        shared.config.max_frame_size,
        shared.config.frame_read_timeout,
    );
    let mut routes = RouteCache::default();
    let mut route = |protocol: &str| routes.route(&shared.registry, protocol);
    loop {
        let frame = tokio::select! {
            r = reader.next_routed(&mut route) => r,
            _ = &mut stop => break,
        };
        let (route, payload) = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                let _ = reader.get_mut().close().await;
                break;
            }
            Err(ReadError::Frame(error)) => {
                tracing::debug!(%peer, %connection, %error, "malformed frame; resetting stream");
                shared.events.emit(Event::ProtocolError {
                    peer,
                    connection,
                    error,
                });
                // Dropping the stream without closing it resets it.
                break;
            }
            Err(ReadError::Io(error)) => {
                tracing::trace!(%peer, %error, "inbound stream ended");
                break;
            }
        };
        let route = match route {
            Ok(route) => route,
            Err(unknown) => {
                report_unknown(&shared, peer, unknown);
                continue;
            }
        };
        let message = Message {
            peer,
            connection,
            protocol: route.name,
            payload,
        };
        tokio::select! {
            sent = route.queue.send(message) => {
                // Unregistered while we waited for room: nobody will read it.
                if let Err(mpsc::error::SendError(message)) = sent {
                    report_unknown(&shared, peer, message.protocol.to_string());
                }
            }
            _ = &mut stop => break,
        }
    }
    drop(ticket);
}

/// The route of the last protocol a stream carried, kept by its reader: a stream
/// usually carries one protocol after another of the same kind, and this spares
/// the registry's lock and hash for each of them. The queue is held weakly, so an
/// unregistered protocol's inbox still ends when its queue drains.
#[derive(Default)]
struct RouteCache {
    last: Option<(Arc<str>, mpsc::WeakSender<Message>)>,
}

impl RouteCache {
    /// The route for `protocol`, or the protocol's name if it is not registered.
    fn route(&mut self, registry: &ProtocolRegistry, protocol: &str) -> Result<Route, String> {
        if let Some((name, queue)) = &self.last
            && **name == *protocol
            && let Some(queue) = queue.upgrade()
        {
            return Ok(Route {
                name: Arc::clone(name),
                queue,
            });
        }
        match registry.route(protocol) {
            Some(route) => {
                self.last = Some((Arc::clone(&route.name), route.queue.downgrade()));
                Ok(route)
            }
            None => Err(protocol.to_owned()),
        }
    }
}

fn report_unknown(shared: &Shared, peer: libp2p::PeerId, protocol: String) {
    let count = shared.count_unknown_protocol();
    tracing::debug!(%peer, %protocol, count, "frame for an unregistered protocol skipped");
    shared.events.emit(Event::UnknownProtocol {
        peer,
        protocol,
        count,
    });
}
