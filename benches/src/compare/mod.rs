//! Side-by-side comparison of liquid-p2p with plain rust-libp2p (and plain TCP).
//!
//! Every mode runs in this process between two peers on loopback, with the same
//! payloads, warmed up and then measured for a fixed time; rates are counted by the
//! receiver. Modules:
//!
//! - [`harness`]: the [`Pair`](harness::Pair) every mode implements, the timed
//!   one-way and round-trip loops, RSS;
//! - [`liquid`]: `Host::send` over pooled streams (TCP or QUIC);
//! - [`streams`]: libp2p-stream modes: a substream per message, one shared stream,
//!   pre-opened streams (TCP or QUIC);
//! - [`reqresp`]: libp2p request-response with a length-prefixed codec;
//! - [`raw_tcp`]: plain tokio TCP, no encryption;
//! - [`memory`], [`scale`]: idle memory per connection, a full mesh of hosts;
//! - [`idle_streams`]: a plain libp2p behaviour holding idle streams on each
//!   connection, the baseline of the memory scenario;
//! - [`ledger`]: sender ids and sequence numbers in the payloads, and the books
//!   that find lost and duplicated messages;
//! - [`pairing`]: per-run ratios, their median and range, and the labels;
//! - [`scenarios`]: what is measured, in which order, with which deadlines;
//! - [`report`], [`chart`]: the markdown table, targets, JSON and SVG charts.

pub mod chart;
pub mod error;
pub mod frame;
pub mod harness;
pub mod idle_streams;
pub mod ledger;
pub mod liquid;
pub mod memory;
pub mod pairing;
pub mod raw_tcp;
pub mod report;
pub mod reqresp;
pub mod scale;
pub mod scenarios;
pub mod shrink;
pub mod streams;
pub mod swarm;

pub use error::{BenchError, Context};

use libp2p::Multiaddr;

/// Which transport a mode runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP + noise + yamux.
    Tcp,
    /// QUIC v1.
    Quic,
    /// Plain TCP, no encryption, no multiplexing.
    RawTcp,
}

impl Transport {
    /// Name used in the report.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp+noise+yamux",
            Transport::Quic => "quic",
            Transport::RawTcp => "tcp",
        }
    }

    /// Loopback listen address with a free port.
    pub fn listen_addr(self) -> Result<Multiaddr, BenchError> {
        let text = match self {
            Transport::Tcp | Transport::RawTcp => "/ip4/127.0.0.1/tcp/0",
            Transport::Quic => "/ip4/127.0.0.1/udp/0/quic-v1",
        };
        text.parse().ctx("listen address")
    }
}

/// The ways of sending that are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `Host::send` over liquid-p2p's pooled streams, TCP.
    Liquid,
    /// A new libp2p-stream substream per message, 1-byte acknowledgement.
    OpenPerMessage,
    /// libp2p request-response, one request per message, empty response.
    RequestResponse,
    /// One libp2p stream shared by all senders behind a mutex.
    SingleStream,
    /// One libp2p stream per sender, opened up front.
    PreOpened,
    /// Plain tokio TCP, one connection per sender.
    RawTcp,
    /// `Host::send` over QUIC.
    LiquidQuic,
    /// Pre-opened libp2p streams over QUIC.
    PreOpenedQuic,
}

impl Mode {
    /// Every mode, in report order.
    pub const ALL: [Mode; 8] = [
        Mode::Liquid,
        Mode::OpenPerMessage,
        Mode::RequestResponse,
        Mode::SingleStream,
        Mode::PreOpened,
        Mode::RawTcp,
        Mode::LiquidQuic,
        Mode::PreOpenedQuic,
    ];

    /// Name used in the report.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Liquid => "liquid",
            Mode::OpenPerMessage => "open-per-message",
            Mode::RequestResponse => "request-response",
            Mode::SingleStream => "single-stream",
            Mode::PreOpened => "pre-opened",
            Mode::RawTcp => "raw-tcp",
            Mode::LiquidQuic => "liquid-quic",
            Mode::PreOpenedQuic => "pre-opened-quic",
        }
    }

    /// The transport it runs over.
    pub fn transport(self) -> Transport {
        match self {
            Mode::LiquidQuic | Mode::PreOpenedQuic => Transport::Quic,
            Mode::RawTcp => Transport::RawTcp,
            _ => Transport::Tcp,
        }
    }
}
