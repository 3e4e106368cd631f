//! The per-connection handler: opens message streams on request, accepts inbound ones.
//!
//! A handler starts dormant when the connection is not known to be a liquid
//! peer's (`PeerScope::SpeakersOnly`): it opens nothing and keeps the connection
//! alive for nothing. It watches for the proof: the remote's protocols as
//! identify reports them (`RemoteProtocolsChange`, whichever behaviour runs
//! identify), or an inbound stream of ours, which it holds (a few, bounded)
//! until the behaviour has admitted the connection ([`HandlerIn::Activate`]) or
//! refused it ([`HandlerIn::Refuse`]).
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
            ProtocolsChange,
        },
    },
};
use liquid_p2p_core::{Error, RemoteRefusal, StreamOpenFailure};
use tokio::sync::oneshot;

use crate::{
    protocol::{self, InboundProtocols, REFUSAL_PROTOCOL},
    refusal,
    shared::Shared,
    watchdog::ConnectionMeter,
};

/// Answer to an open request.
pub(crate) type OpenReply = oneshot::Sender<Result<Stream, Error>>;

/// Inbound streams a dormant handler holds while the behaviour decides. More than
/// a liquid peer opens at connect with the default pool (its reserve of 10, then
/// the first streams of its lanes): a stream reset here may already carry a
/// message its sender was told was sent.
const MAX_HELD_STREAMS: usize = 32;

/// Commands from the behaviour.
#[derive(Debug)]
#[non_exhaustive]
pub enum HandlerIn {
    /// Open one stream for `protocol` and send it back.
    Open {
        /// [`PROTOCOL`](crate::PROTOCOL) or [`EXCHANGE_PROTOCOL`](crate::EXCHANGE_PROTOCOL).
        protocol: StreamProtocol,
        /// Where the negotiated stream goes.
        reply: OpenReply,
    },
    /// The dormant connection is a liquid peer's, admitted: serve it.
    Activate(Activation),
    /// The dormant connection was refused: tell the remote why (if `told`),
    /// then have it closed; serve nothing.
    Refuse {
        /// The reason the remote is told, if any.
        told: Option<RemoteRefusal>,
    },
}

/// What a dormant handler needs to serve its connection.
#[derive(Debug)]
pub struct Activation {
    /// The connection's meter (watchdog and liveness).
    meter: Arc<ConnectionMeter>,
}

impl Activation {
    pub(crate) fn new(meter: Arc<ConnectionMeter>) -> Self {
        Self { meter }
    }
}

/// What a handler tells the behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandlerEvent {
    /// The dormant connection's peer speaks `/liquid/msg/1.0.0`.
    SpeaksLiquid,
}

/// What the handler does for its connection.
#[derive(Debug)]
enum Mode {
    /// Not known to be a liquid peer: holds early inbound streams of ours.
    Dormant {
        held: VecDeque<(Stream, StreamProtocol)>,
        /// `SpeaksLiquid` to send (once).
        report: bool,
        reported: bool,
    },
    /// A liquid peer's connection.
    Liquid { meter: Arc<ConnectionMeter> },
    /// Refused: serves nothing.
    Refusing,
}

/// The [`ConnectionHandler`] of the liquid behaviour.
pub struct Handler {
    peer: PeerId,
    connection: ConnectionId,
    shared: Arc<Shared>,
    mode: Mode,
    open_timeout: Duration,
    /// Open requests not yet passed to the swarm; bounded by the pool's cap.
    pending: VecDeque<(StreamProtocol, OpenReply)>,
    /// A refused connection: the reason still to be told (see refusal.rs).
    refusal: Option<RemoteRefusal>,
}

impl Handler {
    pub(crate) fn new(
        peer: PeerId,
        connection: ConnectionId,
        shared: Arc<Shared>,
        meter: Arc<ConnectionMeter>,
    ) -> Self {
        Self::with_mode(peer, connection, shared, Mode::Liquid { meter })
    }

    /// The handler of a connection not yet known to be a liquid peer's.
    pub(crate) fn dormant(peer: PeerId, connection: ConnectionId, shared: Arc<Shared>) -> Self {
        let mode = Mode::Dormant {
            held: VecDeque::new(),
            report: false,
            reported: false,
        };
        Self::with_mode(peer, connection, shared, mode)
    }

    fn with_mode(peer: PeerId, connection: ConnectionId, shared: Arc<Shared>, mode: Mode) -> Self {
        let open_timeout = shared.config.stream_open_timeout;
        Self {
            peer,
            connection,
            shared,
            mode,
            open_timeout,
            pending: VecDeque::new(),
            refusal: None,
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
        let mut handler = Self::with_mode(peer, connection, shared, Mode::Refusing);
        handler.refusal = Some(refusal);
        handler
    }

    /// An inbound stream of ours (message or exchange) on a liquid connection.
    fn serve(&self, stream: Stream, negotiated: StreamProtocol, meter: &Arc<ConnectionMeter>) {
        if negotiated == protocol::EXCHANGE_PROTOCOL {
            self.shared
                .accept_exchange(self.peer, self.connection, stream);
        } else {
            self.shared
                .accept_inbound(self.peer, self.connection, stream, Arc::clone(meter));
        }
    }

    /// Sends the reason once the stream is open (or not), then has the
    /// connection closed. Bounded by `REFUSAL_TIMEOUT` twice.
    fn tell_refusal(&self, refusal: RemoteRefusal) -> OpenReply {
        let (reply, stream) = oneshot::channel();
        let (peer, connection) = (self.peer, self.connection);
        let shared = Arc::clone(&self.shared);
        let parent = self.shared.connections.span(peer, connection);
        let span = tracing::debug_span!(parent: &parent, "refusal_out");
        self.shared.lifecycle.spawn(span, async move {
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
    type ToBehaviour = HandlerEvent;
    type InboundProtocol = InboundProtocols;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = OpenReply;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(InboundProtocols, ())
    }

    fn connection_keep_alive(&self) -> bool {
        match &self.mode {
            // A liquid peer's connection stays up even when idle; dead peers are
            // found by ping, not by idleness.
            Mode::Liquid { .. } => true,
            // Until the reason is told and the behaviour closes it.
            Mode::Refusing => true,
            // Others follow libp2p's idle rules, unless a verdict is awaited.
            Mode::Dormant { held, report, .. } => *report || !held.is_empty(),
        }
    }

    fn poll(
        &mut self,
        _cx: &mut Context<'_>,
    ) -> Poll<
        ConnectionHandlerEvent<Self::OutboundProtocol, Self::OutboundOpenInfo, Self::ToBehaviour>,
    > {
        if let Mode::Dormant {
            report, reported, ..
        } = &mut self.mode
            && *report
            && !*reported
        {
            *reported = true;
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(
                HandlerEvent::SpeaksLiquid,
            ));
        }
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
            HandlerIn::Open { protocol, reply } => match self.mode {
                Mode::Liquid { .. } => self.pending.push_back((protocol, reply)),
                Mode::Dormant { .. } | Mode::Refusing => {
                    let _ = reply.send(Err(Error::StreamOpen {
                        peer: self.peer,
                        reason: StreamOpenFailure::ConnectionClosed,
                    }));
                }
            },
            HandlerIn::Activate(Activation { meter }) => {
                let previous = std::mem::replace(
                    &mut self.mode,
                    Mode::Liquid {
                        meter: Arc::clone(&meter),
                    },
                );
                if let Mode::Dormant { held, .. } = previous {
                    for (stream, negotiated) in held {
                        self.serve(stream, negotiated, &meter);
                    }
                }
            }
            HandlerIn::Refuse { told } => {
                // Held streams are dropped (reset) with the old mode.
                self.mode = Mode::Refusing;
                self.refusal = told;
            }
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
                if negotiated == REFUSAL_PROTOCOL {
                    if matches!(self.mode, Mode::Refusing) {
                        return; // reset: a refused connection serves nothing
                    }
                    let (peer, connection) = (self.peer, self.connection);
                    let shared = Arc::clone(&self.shared);
                    let parent = self.shared.connections.span(peer, connection);
                    let span = tracing::debug_span!(parent: &parent, "refusal_in");
                    self.shared.lifecycle.spawn(span, async move {
                        if let Some(refusal) = refusal::read(stream).await {
                            shared.refused_by_remote(peer, connection, refusal);
                        }
                    });
                    return;
                }
                match &mut self.mode {
                    Mode::Liquid { meter } => {
                        let meter = Arc::clone(meter);
                        self.serve(stream, negotiated, &meter);
                    }
                    // A stream of ours: the peer speaks liquid. Held (a few;
                    // beyond that reset) until the behaviour's verdict.
                    Mode::Dormant { held, report, .. } => {
                        *report = true;
                        if held.len() < MAX_HELD_STREAMS {
                            held.push_back((stream, negotiated));
                        }
                    }
                    Mode::Refusing => {} // reset: a refused connection serves nothing
                }
            }
            ConnectionEvent::RemoteProtocolsChange(ProtocolsChange::Added(protocols)) => {
                if let Mode::Dormant { report, .. } = &mut self.mode
                    && protocols.into_iter().any(|p| *p == protocol::PROTOCOL)
                {
                    *report = true;
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
