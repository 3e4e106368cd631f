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
use liquid_p2p_core::{Error, StreamOpenFailure};
use tokio::sync::oneshot;

use crate::{
    behaviour::Shared,
    protocol::{self, InboundProtocols},
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
        }
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
                if negotiated == protocol::EXCHANGE_PROTOCOL {
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
