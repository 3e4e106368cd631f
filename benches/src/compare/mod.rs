//! Side-by-side comparison of liquid-p2p with plain rust-libp2p (and plain TCP).
//!
//! Every mode runs in this process between two peers on loopback, with the same
//! random payloads, warmed up and then measured for a fixed time; rates are counted
//! by the receiver, and every message is accounted for. Everything runs several
//! times, the modes of a scenario in a new shuffled order each run, and every ratio
//! is taken within a run. Modules:
//!
//! - [`harness`]: the [`Pair`](harness::Pair) every mode implements, the timed
//!   one-way and round-trip loops, RSS;
//! - [`ledger`]: sender ids and sequence numbers in the payloads, and the books
//!   that find lost and duplicated messages;
//! - [`liquid`]: `Host::send` over pooled streams (TCP or QUIC);
//! - [`priority`]: small `High` messages paced beside a `Low` bulk load: their
//!   latency and the bulk's throughput, against each alone and against both
//!   `Normal`;
//! - [`streams`]: libp2p-stream modes: a substream per message (acknowledged or
//!   not), one shared stream, pre-opened streams (TCP or QUIC);
//! - [`multi_conn`]: pre-opened streams over two connections;
//! - [`reqresp`]: libp2p request-response with a length-prefixed codec;
//! - [`raw_tcp`]: plain tokio TCP, no encryption, batched writes;
//! - [`memory`], [`scale`], [`shrink`]: idle memory per connection, a full mesh of
//!   hosts, pools giving memory back;
//! - [`first_after_idle`]: the first message after the sender's pool went idle,
//!   against the steady state;
//! - [`fixed_streams`]: a plain libp2p behaviour opening a fixed number of streams
//!   on each connection (the memory baseline, and `pre-opened` over two
//!   connections);
//! - [`scenarios`]: what is measured, in which order, with which deadlines;
//! - [`pairing`]: per-run ratios, their median and range, and the labels;
//! - [`report`], [`chart`]: the markdown tables, targets, JSON and SVG charts;
//! - [`progress`]: where a run is and how long it has left, on stderr.

pub mod chart;
pub mod error;
pub mod first_after_idle;
pub mod fixed_streams;
pub mod frame;
pub mod harness;
pub mod ledger;
pub mod liquid;
pub mod memory;
pub mod multi_conn;
pub mod pairing;
pub mod priority;
pub mod progress;
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
    /// A new libp2p-stream substream per message, no acknowledgement: lossy.
    OpenPerMessageLossy,
    /// libp2p request-response, one request per message, empty response.
    RequestResponse,
    /// One libp2p stream shared by all senders behind a mutex.
    SingleStream,
    /// One libp2p stream per sender, opened up front.
    PreOpened,
    /// Plain tokio TCP, batched writes, as many connections as the scenario.
    RawTcp,
    /// `Host::send` over QUIC.
    LiquidQuic,
    /// Pre-opened libp2p streams over QUIC.
    PreOpenedQuic,
}

impl Mode {
    /// Every mode, in report order.
    pub const ALL: [Mode; 9] = [
        Mode::Liquid,
        Mode::OpenPerMessage,
        Mode::OpenPerMessageLossy,
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
            Mode::OpenPerMessageLossy => "open-per-message-lossy",
            Mode::RequestResponse => "request-response",
            Mode::SingleStream => "single-stream",
            Mode::PreOpened => "pre-opened",
            Mode::RawTcp => "raw-tcp",
            Mode::LiquidQuic => "liquid-quic",
            Mode::PreOpenedQuic => "pre-opened-quic",
        }
    }

    /// Whether it may lose messages by design (its losses are reported, not
    /// failures).
    pub fn lossy(self) -> bool {
        self == Mode::OpenPerMessageLossy
    }

    /// Whether it can measure round trips (a reply is an acknowledgement, so the
    /// lossy mode has none).
    pub fn round_trips(self) -> bool {
        !self.lossy()
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
