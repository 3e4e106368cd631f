//! A behaviour wrapper whose connection handlers live on the heap.
//!
//! libp2p runs each connection in a task whose future holds the connection's
//! handler by value, and holds the `Connection` twice (the async fn's argument and
//! the state it polls). The handlers of the host's composed behaviour (identify's
//! alone is 3.4 KiB) made that future about 13 KiB per connection end. Boxing the
//! handler leaves a pointer in its place, so the handler's bytes exist once.

use std::{
    ops::{Deref, DerefMut},
    task::{Context, Poll},
};

use libp2p::swarm::{
    ConnectionHandler, ConnectionHandlerEvent, FromSwarm, NetworkBehaviour, SubstreamProtocol,
    THandlerInEvent, ToSwarm, handler::ConnectionEvent,
};

use crate::delegate::delegate_connections;

/// `B` with each of its connection handlers boxed; otherwise `B` unchanged.
pub(crate) struct BoxedHandlers<B>(pub(crate) B);

impl<B> Deref for BoxedHandlers<B> {
    type Target = B;

    fn deref(&self) -> &B {
        &self.0
    }
}

impl<B> DerefMut for BoxedHandlers<B> {
    fn deref_mut(&mut self) -> &mut B {
        &mut self.0
    }
}

/// A connection handler on the heap.
pub(crate) struct BoxedHandler<H>(Box<H>);

impl<B: NetworkBehaviour> NetworkBehaviour for BoxedHandlers<B> {
    type ConnectionHandler = BoxedHandler<B::ConnectionHandler>;
    type ToSwarm = B::ToSwarm;

    delegate_connections!(0, |handler| BoxedHandler(Box::new(handler)));

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.0.on_swarm_event(event)
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<B::ToSwarm, THandlerInEvent<Self>>> {
        self.0.poll(cx)
    }
}

impl<H: ConnectionHandler> ConnectionHandler for BoxedHandler<H> {
    type FromBehaviour = H::FromBehaviour;
    type ToBehaviour = H::ToBehaviour;
    type InboundProtocol = H::InboundProtocol;
    type OutboundProtocol = H::OutboundProtocol;
    type InboundOpenInfo = H::InboundOpenInfo;
    type OutboundOpenInfo = H::OutboundOpenInfo;

    fn listen_protocol(&self) -> SubstreamProtocol<H::InboundProtocol, H::InboundOpenInfo> {
        self.0.listen_protocol()
    }

    fn connection_keep_alive(&self) -> bool {
        self.0.connection_keep_alive()
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<H::OutboundProtocol, H::OutboundOpenInfo, H::ToBehaviour>>
    {
        self.0.poll(cx)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Option<H::ToBehaviour>> {
        self.0.poll_close(cx)
    }

    fn on_behaviour_event(&mut self, event: H::FromBehaviour) {
        self.0.on_behaviour_event(event)
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<
            H::InboundProtocol,
            H::OutboundProtocol,
            H::InboundOpenInfo,
            H::OutboundOpenInfo,
        >,
    ) {
        self.0.on_connection_event(event)
    }
}
