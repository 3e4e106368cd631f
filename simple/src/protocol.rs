//! The message-stream protocol name and its negotiation.
//!
//! Message streams are ordinary libp2p substreams negotiated with multistream-select
//! under [`PROTOCOL`]. What flows on them is the frame format of
//! [`liquid_p2p_core::codec`]; a stock libp2p peer speaks it by opening a stream for
//! this protocol and writing frames.

use libp2p::{StreamProtocol, core::upgrade::ReadyUpgrade};

/// The protocol of message streams.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/liquid/msg/1.0.0");

/// The upgrade that negotiates [`PROTOCOL`] and yields the raw stream.
pub(crate) fn upgrade() -> ReadyUpgrade<StreamProtocol> {
    ReadyUpgrade::new(PROTOCOL)
}
