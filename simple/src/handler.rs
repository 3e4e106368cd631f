//! The per-connection handler: opens message streams on request, accepts inbound ones.
//!
//! rust-libp2p has no released API to open a stream on a *chosen* connection, so the
//! behaviour forwards each open request of a pool to the handler of that pool's
//! connection ([`HandlerIn::Open`]), and the handler answers over the request's
//! oneshot with the negotiated stream. Inbound streams are handed straight to the
//! receive path from here, without a round trip through the swarm task.

use std::{
    collections::VecDeque,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use libp2p::{
    PeerId, StreamProtocol,
    core::upgrade::ReadyUpgrade,
    swarm::{
        ConnectionHandler, ConnectionHandlerEvent, ConnectionId, Stream, StreamUpgradeError,
        SubstreamProtocol,
        handler::{
            ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
        },
    },
};
use liquid_p2p_core::{Error, RemoteRefusal, StreamOpenFailure};
use tokio::sync::oneshot;

use crate::{
    behaviour::Shared,
    protocol::{self, InboundProtocols, REFUSAL_PROTOCOL},
    refusal,
    watchdog::ConnectionMeter,
};

/// Answer to an open request.
pub(crate) type OpenReply = oneshot::Sender<Result<Stream, Error>>;

/// Commands from the behaviour.
#[derive(Debug)]
pub enum HandlerIn {
    /// Open one stream for `protocol` and send it back.
    Open {
        /// [`PROTOCOL`](crate::PROTOCOL) or [`EXCHANGE_PROTOCOL`](crate::EXCHANGE_PROTOCOL).
        protocol: StreamProtocol,
        /// Where the negotiated stream goes.
        reply: OpenReply,
    },
}

/// The [`ConnectionHandler`] of the liquid behaviour.
pub struct Handler {
    peer: PeerId,
    connection: ConnectionId,
    shared: Arc<Shared>,
    meter: Arc<ConnectionMeter>,
    open_timeout: Duration,
    /// Open requests not yet passed to the swarm; bounded by the pool's cap.
    pending: VecDeque<(StreamProtocol, OpenReply)>,
    /// A refused connection: the reason still to be told (see refusal.rs). Such
    /// a handler serves nothing.
    refusal: Option<RemoteRefusal>,
    refusing: bool,
}

impl Handler {
    pub(crate) fn new(
        peer: PeerId,
        connection: ConnectionId,
        shared: Arc<Shared>,
        meter: Arc<ConnectionMeter>,
    ) -> Self {
        let open_timeout = shared.config.stream_open_timeout;
        Self {
            peer,
            connection,
            shared,
            meter,
            open_timeout,
            pending: VecDeque::new(),
            refusal: None,
            refusing: false,
        }
    }

    /// The handler of a connection refused after its handshake: it tells the
    /// remote why, then asks the behaviour to close the connection.
    pub(crate) fn refusing(
        peer: PeerId,
        connection: ConnectionId,
        shared: Arc<Shared>,
        refusal: RemoteRefusal,
    ) -> Self {
        // Not registered with the watchdog: nothing is written but the reason.
        let meter = ConnectionMeter::new(peer, connection, shared.config.stall_timeout);
        let mut handler = Self::new(peer, connection, shared, meter);
        handler.refusal = Some(refusal);
        handler.refusing = true;
        handler
    }

    /// Sends the reason once the stream is open (or not), then has the
    /// connection closed. Bounded by `REFUSAL_TIMEOUT` twice.
    fn tell_refusal(&self, refusal: RemoteRefusal) -> OpenReply {
        let (reply, stream) = oneshot::channel();
        let (peer, connection) = (self.peer, self.connection);
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            if let Ok(Ok(stream)) = stream.await {
                refusal::tell(stream, refusal).await;
            }
            shared.close_connection(peer, connection).await;
        });
        reply
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = HandlerIn;
    type ToBehaviour = std::convert::Infallible;
    type InboundProtocol = InboundProtocols;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = OpenReply;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(InboundProtocols, ())
    }

    fn connection_keep_alive(&self) -> bool {
        // A managed peer's connection stays up even when idle; dead peers are found
        // by ping, not by idleness.
        true
    }

    fn poll(
        &mut self,
        _cx: &mut Context<'_>,
    ) -> Poll<
        ConnectionHandlerEvent<Self::OutboundProtocol, Self::OutboundOpenInfo, Self::ToBehaviour>,
    > {
        if let Some(refusal) = self.refusal.take() {
            let reply = self.tell_refusal(refusal);
            return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                protocol: SubstreamProtocol::new(protocol::upgrade(REFUSAL_PROTOCOL), reply)
                    .with_timeout(refusal::REFUSAL_TIMEOUT),
            });
        }
        match self.pending.pop_front() {
            Some((protocol, reply)) => {
                Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                    protocol: SubstreamProtocol::new(protocol::upgrade(protocol), reply)
                        .with_timeout(self.open_timeout),
                })
            }
            None => Poll::Pending,
        }
    }

    fn on_behaviour_event(&mut self, event: HandlerIn) {
        match event {
            HandlerIn::Open { reply, .. } if self.refusing => {
                let _ = reply.send(Err(Error::StreamOpen {
                    peer: self.peer,
                    reason: StreamOpenFailure::ConnectionClosed,
                }));
            }
            HandlerIn::Open { protocol, reply } => self.pending.push_back((protocol, reply)),
        }
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol, (), OpenReply>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: (stream, negotiated),
                ..
            }) => {
                if self.refusing {
                    drop(stream); // reset: a refused connection serves nothing
                } else if negotiated == REFUSAL_PROTOCOL {
                    let (peer, connection) = (self.peer, self.connection);
                    let shared = Arc::clone(&self.shared);
                    tokio::spawn(async move {
                        if let Some(refusal) = refusal::read(stream).await {
                            shared.refused_by_remote(peer, connection, refusal);
                        }
                    });
                } else if negotiated == protocol::EXCHANGE_PROTOCOL {
                    self.shared
                        .accept_exchange(self.peer, self.connection, stream);
                } else {
                    self.shared.accept_inbound(
                        self.peer,
                        self.connection,
                        stream,
                        Arc::clone(&self.meter),
                    );
                }
            }
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: stream,
                info: reply,
            }) => {
                // The pool may have given up (timeout); the stream is then dropped.
                let _ = reply.send(Ok(stream));
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { info: reply, error }) => {
                let reason = match error {
                    StreamUpgradeError::NegotiationFailed => StreamOpenFailure::Unsupported,
                    StreamUpgradeError::Timeout => StreamOpenFailure::Timeout,
                    StreamUpgradeError::Io(e) => StreamOpenFailure::Io(e.kind()),
                    StreamUpgradeError::Apply(never) => match never {},
                };
                let _ = reply.send(Err(Error::StreamOpen {
                    peer: self.peer,
                    reason,
                }));
            }
            _ => {}
        }
    }
}
