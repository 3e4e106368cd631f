//! Core of liquid-p2p: the stream management logic, free of any network.
//!
//! This crate holds what does not need sockets: [`Config`] with every limit and its
//! default, the [`Error`] type, [`Event`]s, the frame [`codec`], and the three
//! stream managers:
//!
//! - [`SendStreamPool`]: the pooled send streams of one connection;
//! - [`SendStreamPoolManager`]: all pools, and the choice of the least-loaded one;
//! - [`ReceiveStreamManager`]: exact, capped accounting of inbound streams.
//!
//! Each pool's lane has a [`FrameBatcher`], where the small frames of
//! concurrent senders meet to be written together.
//!
//! They open streams through the [`StreamOpener`] trait, so they are tested with a
//! fake opener and a paused clock. The `liquid-p2p` crate plugs them into libp2p.
//!
//! Two gatekeepers decide which connections exist at all: [`ConnManager`] (peer
//! limits, required peers and eviction) and [`Blacklist`] (banned peer ids, IPs and
//! IP:ports).
//!
//! ```
//! use futures::future::BoxFuture;
//! use liquid_p2p_core::{Error, PoolConfig, SendStreamPool, StreamOpener};
//!
//! struct Opener;
//! impl StreamOpener for Opener {
//!     type Stream = Vec<u8>;
//!     fn open(&self) -> BoxFuture<'static, Result<Vec<u8>, Error>> {
//!         Box::pin(async { Ok(Vec::new()) })
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Error> {
//! let peer = libp2p_identity::PeerId::random();
//! let conn = libp2p_swarm::ConnectionId::new_unchecked(1);
//! let pool = SendStreamPool::new(peer, conn, Opener, PoolConfig::default());
//! pool.init();
//! let mut stream = pool.borrow().await?;
//! let mut write = stream.begin_write();
//! write.stream().extend_from_slice(b"one frame");
//! write.finish(); // the frame is whole: the stream may be reused
//! drop(stream); // back to the pool
//! assert_eq!(pool.stats().borrowed, 0);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod allow_list;
mod batch;
mod blacklist;
pub mod codec;
mod config;
mod conn_manager;
mod error;
mod event;
pub mod exchange;
mod pool;
mod pool_manager;
mod priority;
mod protocol_book;
mod receive;
mod refusal;
mod supervisor;

pub use allow_list::AllowList;
pub use batch::{Batch, BatchFailure, DEFAULT_BATCH_BYTES, FrameBatcher, Ticket, Turn};
pub use blacklist::{Blacklist, BlacklistEntry};
pub use codec::{EncodedFrame, Frame, FrameDecoder, FrameError, FrameReader, FrameStep, ReadError};
pub use config::{
    AdmissionConfig, BroadcastConfig, Config, DiscoveryConfig, MAX_PROTOCOL_LEN, NetworkKey,
    PeerScope, PolicyScope, PoolConfig, RESERVED_STREAMS, YAMUX_MAX_STREAMS,
};
pub use conn_manager::{Admission, ConnManager, EvictionStrategy, PeerLimit, Priority};
pub use error::{BroadcastFailure, Error, StreamOpenFailure, TransportFeature};
pub use event::{Event, EvictionReason, GossipDrop, Message, StreamScope};
pub use exchange::{ExchangeError, ExchangeFailure, PeerLimits};
pub use pool::{
    Lane, PoolStats, PooledStream, SendStreamPool, StreamOpener, WriteGuard, WriteProgress,
};
pub use pool_manager::{BestPool, MAX_LANES, SendStreamPoolManager};
pub use priority::{ProtocolPriority, UnknownPriority};
pub use protocol_book::{ProtocolBook, ProtocolChange};
pub use receive::{ReceiveCounts, ReceiveStreamManager, ReceiveTicket};
pub use refusal::{
    AddressScope, AdmissionStage, BlacklistMatch, DialFailure, MAX_REFUSAL_WINDOWS, Refusal,
    RefusalReason, RefusalReport, RefusalReporter, RemoteRefusal,
};
pub use supervisor::{ConnSupervisor, SupervisorAction, SupervisorConfig, fibonacci_backoff};

/// Re-exported so users name peers and connections without extra dependencies.
pub use libp2p_identity::PeerId;
pub use libp2p_swarm::ConnectionId;
