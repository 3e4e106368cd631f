//! `delegate_connections!`: the connection-handling half of a `NetworkBehaviour`
//! that wraps another one and hands it every connection.
//!
//! `Broadcast` (around gossipsub), `Discovery` (around kad) and `BoxedHandlers`
//! (around the host's composed behaviour) all pass the four `handle_*`
//! connection calls and the handler events straight to the behaviour they hold;
//! only their swarm events and `poll` differ. The macro writes those five
//! methods once; `libp2p-swarm` has no such delegation of its own.

/// Expands, inside `impl NetworkBehaviour for ...`, to the methods that give
/// every connection to the behaviour in `self.$inner`, its handlers mapped with
/// `$wrap` (the identity if not given).
macro_rules! delegate_connections {
    ($inner:tt) => {
        $crate::delegate::delegate_connections!($inner, ::std::convert::identity);
    };
    ($inner:tt, $wrap:expr) => {
        fn handle_pending_inbound_connection(
            &mut self,
            connection_id: ::libp2p::swarm::ConnectionId,
            local_addr: &::libp2p::Multiaddr,
            remote_addr: &::libp2p::Multiaddr,
        ) -> Result<(), ::libp2p::swarm::ConnectionDenied> {
            self.$inner
                .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
        }

        fn handle_established_inbound_connection(
            &mut self,
            connection_id: ::libp2p::swarm::ConnectionId,
            peer: ::libp2p::PeerId,
            local_addr: &::libp2p::Multiaddr,
            remote_addr: &::libp2p::Multiaddr,
        ) -> Result<::libp2p::swarm::THandler<Self>, ::libp2p::swarm::ConnectionDenied> {
            self.$inner
                .handle_established_inbound_connection(connection_id, peer, local_addr, remote_addr)
                .map($wrap)
        }

        fn handle_pending_outbound_connection(
            &mut self,
            connection_id: ::libp2p::swarm::ConnectionId,
            maybe_peer: Option<::libp2p::PeerId>,
            addresses: &[::libp2p::Multiaddr],
            effective_role: ::libp2p::core::Endpoint,
        ) -> Result<Vec<::libp2p::Multiaddr>, ::libp2p::swarm::ConnectionDenied> {
            self.$inner.handle_pending_outbound_connection(
                connection_id,
                maybe_peer,
                addresses,
                effective_role,
            )
        }

        fn handle_established_outbound_connection(
            &mut self,
            connection_id: ::libp2p::swarm::ConnectionId,
            peer: ::libp2p::PeerId,
            addr: &::libp2p::Multiaddr,
            role_override: ::libp2p::core::Endpoint,
            port_use: ::libp2p::core::transport::PortUse,
        ) -> Result<::libp2p::swarm::THandler<Self>, ::libp2p::swarm::ConnectionDenied> {
            self.$inner
                .handle_established_outbound_connection(
                    connection_id,
                    peer,
                    addr,
                    role_override,
                    port_use,
                )
                .map($wrap)
        }

        fn on_connection_handler_event(
            &mut self,
            peer: ::libp2p::PeerId,
            connection: ::libp2p::swarm::ConnectionId,
            event: ::libp2p::swarm::THandlerOutEvent<Self>,
        ) {
            self.$inner
                .on_connection_handler_event(peer, connection, event)
        }
    };
}

pub(crate) use delegate_connections;
