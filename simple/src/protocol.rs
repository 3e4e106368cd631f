//! The protocols of the liquid behaviour and their negotiation.
//!
//! Message streams are ordinary libp2p substreams negotiated with multistream-select
//! under [`PROTOCOL`]; what flows on them is the frame format of
//! [`liquid_p2p_core::codec`]. Protocol lists are exchanged on substreams negotiated
//! under [`EXCHANGE_PROTOCOL`], in the format of [`liquid_p2p_core::exchange`]. A stock
//! libp2p peer speaks either by opening a stream for the protocol and writing.

use std::{convert::Infallible, future::Ready};

use libp2p::{
    StreamProtocol,
    core::upgrade::{InboundUpgrade, ReadyUpgrade, UpgradeInfo},
    swarm::Stream,
};

/// The protocol of message streams.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/liquid/msg/1.0.0");

/// The protocol of the protocol-list exchange.
pub const EXCHANGE_PROTOCOL: StreamProtocol =
    StreamProtocol::new("/liquid/protocol-exchange/1.0.0");

/// The protocol on which a refusing host says why (see
/// [`RemoteRefusal`](liquid_p2p_core::RemoteRefusal)): one uvarint code, then the
/// stream ends.
pub const REFUSAL_PROTOCOL: StreamProtocol = StreamProtocol::new("/liquid/refusal/1.0.0");

/// The upgrade that negotiates one protocol for an outbound stream.
pub(crate) fn upgrade(protocol: StreamProtocol) -> ReadyUpgrade<StreamProtocol> {
    ReadyUpgrade::new(protocol)
}

/// Accepts inbound streams of any of the behaviour's protocols and says which one
/// was chosen.
#[derive(Debug, Clone, Copy)]
pub struct InboundProtocols;

impl UpgradeInfo for InboundProtocols {
    type Info = StreamProtocol;
    type InfoIter = std::array::IntoIter<StreamProtocol, 3>;

    fn protocol_info(&self) -> Self::InfoIter {
        [PROTOCOL, EXCHANGE_PROTOCOL, REFUSAL_PROTOCOL].into_iter()
    }
}

impl InboundUpgrade<Stream> for InboundProtocols {
    type Output = (Stream, StreamProtocol);
    type Error = Infallible;
    type Future = Ready<Result<Self::Output, Infallible>>;

    fn upgrade_inbound(self, stream: Stream, protocol: StreamProtocol) -> Self::Future {
        std::future::ready(Ok((stream, protocol)))
    }
}
