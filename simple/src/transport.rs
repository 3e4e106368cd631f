//! The transport a host runs on: TCP + noise + liquid's yamux, and QUIC.
//!
//! Two Cargo features, both on by default, decide what else is built in: `quic`
//! (the QUIC transport, `/udp/../quic-v1`) and `dns` (`/dns`, `/dns4`, `/dns6`
//! and `/dnsaddr` addresses resolved through the system's resolver when dialled).
//! A `Host` asked to listen on or dial an address that needs a feature this
//! build leaves out fails with [`Error::TransportNotBuilt`] naming the feature.
//!
//! libp2p's `SwarmBuilder::with_tcp` chains the same steps (multistream-select,
//! noise, multistream-select, yamux), but it cannot give three guards a host
//! exposed to the open network needs, so the TCP upgrade is spelled out here:
//!
//! - **A handshake deadline of its own.** An inbound connection must finish the
//!   security handshake and the muxer negotiation within
//!   `admission.handshake_timeout` (default 5 s). libp2p's builder bounds both
//!   directions with one connection timeout (10 s), so a silent socket held a
//!   handshake slot for 10 s; dials stay bounded by `dial_timeout`.
//! - **A byte budget for the handshake.** multistream-select answers every
//!   protocol proposal with `na` and reads the next, for as long as the peer sends
//!   them. A connection may read at most `admission.handshake_max_bytes` (default
//!   64 KiB) before its upgrade completes, which also bounds the proposals (each is
//!   at least 3 bytes); more and it is dropped. The budget is lifted once the muxer
//!   runs, so traffic is never counted.
//! - **Port reuse that cannot fail a dial.** A host dials from its listening port
//!   (so a peer sees, and can blacklist, the address it listens on). When that
//!   port cannot be bound for the dial (`EADDRINUSE`: a socket on the port that
//!   does not allow sharing it), the dial is retried once from a fresh port, as
//!   libp2p-tcp itself already does for `EADDRNOTAVAIL`.
//!
//! With `Config::network_key`, every TCP connection first runs libp2p-pnet's
//! private-network handshake (an XSalsa20 stream keyed by the shared key) inside
//! the same deadline and byte budget, so a node without the key fails before
//! noise; QUIC has no place for that layer, so the transport is then TCP alone.
//!
//! Failures of the first two are [`HandshakeError`]s inside the transport's
//! `io::Error`, which the behaviour reports as refusals at the handshake stage.
//!
//! Your own swarm gets the same guards with [`build`]:
//!
//! ```
//! use liquid_p2p::{Behaviour, Config, libp2p::{SwarmBuilder, identity::Keypair}, transport};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keypair = Keypair::generate_ed25519();
//! let config = Config::default();
//! let transport = transport::build(&keypair, &config)?;
//! let (behaviour, _control) = Behaviour::new(keypair.public().to_peer_id(), config)?;
//! let mut swarm = SwarmBuilder::with_existing_identity(keypair)
//!     .with_tokio()
//!     .with_other_transport(|_| transport)?
//!     .with_behaviour(|_| behaviour)?
//!     .build();
//! swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
//! # Ok(())
//! # }
//! ```

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::{
    AsyncRead, AsyncWrite, FutureExt,
    future::{BoxFuture, Either},
};
#[cfg(feature = "quic")]
use libp2p::quic;
use libp2p::{
    Multiaddr, PeerId, Transport,
    core::{
        ConnectedPoint, Endpoint,
        muxing::StreamMuxerBox,
        transport::{self, Boxed, ListenerId, PortUse, TransportError, TransportEvent},
        upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo, Version},
    },
    identity::Keypair,
    multiaddr::Protocol,
    noise,
    pnet::{PnetConfig, PreSharedKey},
    tcp,
};
use liquid_p2p_core::{Config, Error, NetworkKey, TransportFeature};
use parking_lot::Mutex;

use crate::muxer::YamuxConfig;

/// QUIC flow-control window of one stream.
#[cfg(feature = "quic")]
const QUIC_STREAM_WINDOW: u32 = 256 * 1024;

/// Why a connection's handshake was cut short by this transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The security handshake and muxer negotiation took longer than allowed.
    #[error("handshake not finished within {after:?}")]
    Timeout {
        /// The handshake deadline.
        after: Duration,
    },
    /// The remote sent more bytes than a handshake needs.
    #[error("handshake read more than {limit} bytes")]
    TooLarge {
        /// The byte budget.
        limit: usize,
    },
}

impl HandshakeError {
    /// The `HandshakeError` somewhere in `error`'s chain of causes, if any.
    pub fn find(error: &(dyn std::error::Error + 'static)) -> Option<HandshakeError> {
        causes(error).find_map(|e| {
            e.downcast_ref::<HandshakeError>()
                .copied()
                .or_else(|| e.downcast_ref::<Carrier>().map(|Carrier(h)| *h))
        })
    }

    fn into_io(self) -> io::Error {
        let kind = match self {
            HandshakeError::Timeout { .. } => io::ErrorKind::TimedOut,
            HandshakeError::TooLarge { .. } => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, Carrier(self))
    }
}

/// `error` and its causes, looking inside `io::Error`s too: `io::Error::source`
/// skips the error it wraps.
pub(crate) fn causes<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| {
        match e.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        }
    })
}

/// Carries a [`HandshakeError`] in an `io::Error` so that plain `source()` chains
/// reach it: `io::Error::source` skips the error it wraps, and libp2p's `Either`
/// errors only pass `source()` on.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Carrier(#[source] HandshakeError);

/// The transport of a [`Host`](crate::Host): TCP + noise + [`YamuxConfig`] with
/// the guards of the module docs, and QUIC (with the `quic` feature); both within
/// `config`'s limits, and both behind the system's name resolver for `/dns`,
/// `/dns4` and `/dns6` addresses (with the `dns` feature). Give it to
/// `SwarmBuilder::with_other_transport` to run [`Behaviour`](crate::Behaviour) in
/// your own swarm with the same protection.
pub fn build(keypair: &Keypair, config: &Config) -> Result<Boxed<(PeerId, StreamMuxerBox)>, Error> {
    let noise = noise::Config::new(keypair).map_err(|e| Error::InvalidConfig {
        reason: format!("noise: {e}"),
    })?;
    // A close that moves no byte is given up after the same time as a stalled
    // connection (see muxer.rs).
    let yamux = YamuxConfig::default()
        .with_close_timeout(config.stall_timeout)
        .with_stall_timeout(config.stall_timeout);
    let guards = Guards {
        handshake_timeout: config.admission.handshake_timeout,
        max_bytes: config.admission.handshake_max_bytes,
        network_key: config.network_key,
    };
    let tcp = ReuseFallback::new(tcp::tokio::Transport::new(
        tcp::Config::default().nodelay(true),
    ))
    .and_then(move |socket, endpoint| {
        limit_unsent(&socket);
        upgrade(socket, endpoint, noise.clone(), yamux.clone(), guards)
    })
    .map_err(|e| e.into_inner());
    Ok(with_dns(with_quic(tcp, keypair, config)))
}

/// The address's transport that this build leaves out, if any: QUIC without the
/// `quic` feature, a name to resolve without the `dns` feature.
pub(crate) fn missing_feature(address: &Multiaddr) -> Option<TransportFeature> {
    address.iter().find_map(|p| match p {
        Protocol::QuicV1 | Protocol::Quic if !cfg!(feature = "quic") => {
            Some(TransportFeature::Quic)
        }
        Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_) | Protocol::Dnsaddr(_)
            if !cfg!(feature = "dns") =>
        {
            Some(TransportFeature::Dns)
        }
        _ => None,
    })
}

/// `Err(TransportNotBuilt)` for an address this build cannot dial or listen on
/// (see [`missing_feature`]).
pub(crate) fn check_built(address: &Multiaddr) -> Result<(), Error> {
    match missing_feature(address) {
        Some(feature) => Err(Error::TransportNotBuilt {
            address: address.clone(),
            feature,
        }),
        None => Ok(()),
    }
}

/// The TCP transport or, with the `quic` feature and no network key, TCP and
/// QUIC.
#[cfg(feature = "quic")]
fn with_quic<T>(tcp: T, keypair: &Keypair, config: &Config) -> Boxed<(PeerId, StreamMuxerBox)>
where
    T: Transport<Output = (PeerId, StreamMuxerBox), Error = io::Error> + Send + Unpin + 'static,
    T::Dial: Send + 'static,
    T::ListenerUpgrade: Send + 'static,
{
    if config.network_key.is_some() {
        return tcp.boxed();
    }
    tcp.or_transport(quic_transport(keypair, config))
        .map(|either, _| either.into_inner())
        // Unwrapped, not wrapped again: `HandshakeError::find` looks through
        // `io::Error`s, not through `Either`.
        .map_err(|e| e.into_inner())
        .boxed()
}

/// The TCP transport: QUIC is left out of this build.
#[cfg(not(feature = "quic"))]
fn with_quic<T>(tcp: T, _: &Keypair, _: &Config) -> Boxed<(PeerId, StreamMuxerBox)>
where
    T: Transport<Output = (PeerId, StreamMuxerBox), Error = io::Error> + Send + Unpin + 'static,
    T::Dial: Send + 'static,
    T::ListenerUpgrade: Send + 'static,
{
    tcp.boxed()
}

/// `inner` behind the system's resolver (`/etc/resolv.conf` and the hosts file
/// on Unix): a `/dns`, `/dns4`, `/dns6` or `/dnsaddr` address is resolved when
/// dialled, and the addresses found are dialled in turn. Where the system's
/// resolver settings cannot be read (a container without `/etc/resolv.conf`),
/// names resolve through the hosts file only, with one `warn` line; libp2p's
/// own builder fails instead, which would stop a host that never dials a name.
#[cfg(feature = "dns")]
fn with_dns(inner: Boxed<(PeerId, StreamMuxerBox)>) -> Boxed<(PeerId, StreamMuxerBox)> {
    use libp2p::dns::{self, ResolverConfig, ResolverOpts};
    let (resolvers, options) = hickory_resolver::system_conf::read_system_conf()
        .unwrap_or_else(|error| {
            tracing::warn!(%error, "system resolver settings unreadable: names resolve through the hosts file only");
            (ResolverConfig::from_parts(None, Vec::new(), Vec::new()), ResolverOpts::default())
        });
    dns::tokio::Transport::custom(inner, resolvers, options)
        // The inner transport's error as it is, so the layers above (and
        // `HandshakeError::find`) see what they would without the resolver.
        .map_err(|e| match e {
            dns::Error::Transport(e) => e,
            other => io::Error::other(other),
        })
        .boxed()
}

/// `inner` as it is: name resolution is left out of this build.
#[cfg(not(feature = "dns"))]
fn with_dns(inner: Boxed<(PeerId, StreamMuxerBox)>) -> Boxed<(PeerId, StreamMuxerBox)> {
    inner
}

#[cfg(feature = "quic")]
fn quic_transport(keypair: &Keypair, config: &Config) -> Boxed<(PeerId, StreamMuxerBox)> {
    // Pools and inbound caps stay far below QUIC's stream limit; the connection
    // window is sized so every inbound stream can hold a full stream window: an
    // unread stream (backpressure) then never starves the others.
    let inbound = config.inbound_streams_per_connection() as u32;
    let stream_limit = (config.pool.max_size + config.inbound_streams_per_connection()) as u32
        + liquid_p2p_core::RESERVED_STREAMS as u32;
    let mut q = quic::Config::new(keypair);
    q.max_stream_data = QUIC_STREAM_WINDOW;
    q.max_connection_data = QUIC_STREAM_WINDOW.saturating_mul(inbound.max(1) + 1);
    q.max_concurrent_stream_limit = stream_limit;
    q.handshake_timeout = config.admission.handshake_timeout;
    quic::tokio::Transport::new(q)
        .map(|(peer, connection), _| (peer, StreamMuxerBox::new(connection)))
        .boxed()
}

/// Bytes of a TCP connection the kernel may hold unsent (`TCP_NOTSENT_LOWAT`).
///
/// Without a limit the kernel takes megabytes from the muxer when the receiver
/// is slower than the sender, and a frame of a high-priority protocol then
/// waits behind all of them, whatever order the muxer wrote in. With it, the
/// socket reports room only when fewer bytes than this wait, so bytes queue in
/// the muxer, where priorities and per-stream fairness apply, and the kernel
/// keeps just enough to fill the link until the next write.
const NOTSENT_LOWAT: u32 = 128 * 1024;

/// Sets [`NOTSENT_LOWAT`] on `socket` where the platform has it; a failure
/// only costs priority on the wire, so it is logged, not returned.
fn limit_unsent(socket: &libp2p::tcp::tokio::TcpStream) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(error) = socket2::SockRef::from(&socket.0).set_tcp_notsent_lowat(NOTSENT_LOWAT) {
        tracing::debug!(%error, "TCP_NOTSENT_LOWAT not set");
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = socket;
}

#[derive(Clone, Copy)]
struct Guards {
    handshake_timeout: Duration,
    max_bytes: usize,
    network_key: Option<NetworkKey>,
}

/// Security and muxer upgrade of one TCP connection, within the guards.
async fn upgrade<S>(
    socket: S,
    endpoint: ConnectedPoint,
    noise: noise::Config,
    yamux: YamuxConfig,
    guards: Guards,
) -> io::Result<(PeerId, StreamMuxerBox)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (socket, budget) = Budgeted::new(socket, guards.max_bytes);
    let inbound = endpoint.is_listener()
        || matches!(
            endpoint,
            ConnectedPoint::Dialer {
                role_override: Endpoint::Listener,
                ..
            }
        );
    let handshake = async {
        let socket = match guards.network_key {
            Some(key) => Either::Left(
                PnetConfig::new(PreSharedKey::new(*key.as_bytes()))
                    .handshake(socket)
                    .await
                    .map_err(io::Error::other)?,
            ),
            None => Either::Right(socket),
        };
        if inbound {
            let (proto, io) =
                multistream_select::listener_select_proto(socket, noise.protocol_info())
                    .await
                    .map_err(negotiation)?;
            let (peer, secured) = noise
                .upgrade_inbound(io, proto)
                .await
                .map_err(io::Error::other)?;
            let (proto, io) =
                multistream_select::listener_select_proto(secured, yamux.protocol_info())
                    .await
                    .map_err(negotiation)?;
            let muxer = yamux
                .upgrade_inbound(io, proto)
                .await
                .map_err(io::Error::other)?;
            Ok((peer, StreamMuxerBox::new(muxer)))
        } else {
            let (proto, io) = multistream_select::dialer_select_proto(
                socket,
                noise.protocol_info(),
                Version::V1Lazy,
            )
            .await
            .map_err(negotiation)?;
            let (peer, secured) = noise
                .upgrade_outbound(io, proto)
                .await
                .map_err(io::Error::other)?;
            let (proto, io) = multistream_select::dialer_select_proto(
                secured,
                yamux.protocol_info(),
                Version::V1Lazy,
            )
            .await
            .map_err(negotiation)?;
            let muxer = yamux
                .upgrade_outbound(io, proto)
                .await
                .map_err(io::Error::other)?;
            Ok((peer, StreamMuxerBox::new(muxer)))
        }
    };
    let result = if inbound {
        match tokio::time::timeout(guards.handshake_timeout, handshake).await {
            Ok(result) => result,
            Err(_) => Err(HandshakeError::Timeout {
                after: guards.handshake_timeout,
            }
            .into_io()),
        }
    } else {
        // The dial as a whole is bounded by the swarm's connection timeout.
        handshake.await
    };
    budget.lift();
    result
}

fn negotiation(e: multistream_select::NegotiationError) -> io::Error {
    match e {
        multistream_select::NegotiationError::ProtocolError(p) => io::Error::from(p),
        failed => io::Error::other(failed),
    }
}

/// Lifts the byte budget of a [`Budgeted`] stream.
struct BudgetHandle(Arc<AtomicBool>);

impl BudgetHandle {
    fn lift(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A socket that fails reads once more than `limit` bytes were read, until its
/// budget is lifted. After that it costs one branch per read.
struct Budgeted<S> {
    inner: S,
    budget: Option<Budget>,
}

struct Budget {
    remaining: usize,
    limit: usize,
    lifted: Arc<AtomicBool>,
}

impl<S> Budgeted<S> {
    fn new(inner: S, limit: usize) -> (Self, BudgetHandle) {
        let lifted = Arc::new(AtomicBool::new(false));
        let budget = Budget {
            remaining: limit,
            limit,
            lifted: Arc::clone(&lifted),
        };
        (
            Self {
                inner,
                budget: Some(budget),
            },
            BudgetHandle(lifted),
        )
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Budgeted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this
            .budget
            .as_ref()
            .is_some_and(|b| b.lifted.load(Ordering::Acquire))
        {
            this.budget = None;
        }
        let Some(budget) = &mut this.budget else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        if budget.remaining == 0 {
            return Poll::Ready(Err(HandshakeError::TooLarge {
                limit: budget.limit,
            }
            .into_io()));
        }
        // Never read past the budget: what the handshake needs fits in it.
        let room = buf.len().min(budget.remaining);
        let n = futures::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut buf[..room]))?;
        budget.remaining -= n;
        Poll::Ready(Ok(n))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Budgeted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// Retries a dial from a fresh port when the listening port cannot be bound for
/// it (see the module docs). The inner transport is shared with the dial future,
/// which asks it for the second dial only when the first failed that way.
struct ReuseFallback<T> {
    inner: Arc<Mutex<T>>,
}

impl<T> ReuseFallback<T> {
    fn new(inner: T) -> Self {
        Self {
            inner: Arc::new(Mutex::new(inner)),
        }
    }
}

impl<T> Transport for ReuseFallback<T>
where
    T: Transport<Error = io::Error> + Send + Unpin + 'static,
    T::Dial: Send + 'static,
    T::Output: Send + 'static,
{
    type Output = T::Output;
    type Error = io::Error;
    type ListenerUpgrade = T::ListenerUpgrade;
    type Dial = BoxFuture<'static, io::Result<T::Output>>;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<io::Error>> {
        self.inner.lock().listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.lock().remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: transport::DialOpts,
    ) -> Result<Self::Dial, TransportError<io::Error>> {
        let first = self.inner.lock().dial(addr.clone(), opts)?;
        if opts.port_use != PortUse::Reuse {
            return Ok(first.boxed());
        }
        let inner = Arc::clone(&self.inner);
        Ok(async move {
            match first.await {
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                    tracing::debug!(%addr, error = %e, "listening port busy for this dial; dialling from a fresh port");
                    let retry = transport::DialOpts {
                        port_use: PortUse::New,
                        ..opts
                    };
                    let second = inner.lock().dial(addr, retry).map_err(|_| e)?;
                    second.await
                }
                other => other,
            }
        }
        .boxed())
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        let mut inner = self.inner.lock();
        Pin::new(&mut *inner).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{AsyncReadExt, future::Ready};

    /// A transport whose dials fail with `EADDRINUSE` when they reuse the port.
    #[derive(Default)]
    struct BusyPort {
        dials: Vec<PortUse>,
    }

    impl Transport for BusyPort {
        type Output = PortUse;
        type Error = io::Error;
        type ListenerUpgrade = Ready<io::Result<PortUse>>;
        type Dial = Ready<io::Result<PortUse>>;

        fn listen_on(
            &mut self,
            _: ListenerId,
            a: Multiaddr,
        ) -> Result<(), TransportError<io::Error>> {
            Err(TransportError::MultiaddrNotSupported(a))
        }
        fn remove_listener(&mut self, _: ListenerId) -> bool {
            false
        }
        fn dial(
            &mut self,
            _: Multiaddr,
            opts: transport::DialOpts,
        ) -> Result<Self::Dial, TransportError<io::Error>> {
            self.dials.push(opts.port_use);
            Ok(futures::future::ready(match opts.port_use {
                PortUse::Reuse => Err(io::Error::from(io::ErrorKind::AddrInUse)),
                PortUse::New => Ok(PortUse::New),
            }))
        }
        fn poll(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<TransportEvent<Self::ListenerUpgrade, io::Error>> {
            Poll::Pending
        }
    }

    fn opts(port_use: PortUse) -> transport::DialOpts {
        transport::DialOpts {
            role: Endpoint::Dialer,
            port_use,
        }
    }

    #[tokio::test]
    async fn a_dial_whose_listening_port_is_busy_is_retried_from_a_fresh_port() {
        let mut t = ReuseFallback::new(BusyPort::default());
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().expect("addr");
        let used = t
            .dial(addr.clone(), opts(PortUse::Reuse))
            .expect("dial")
            .await;
        assert_eq!(used.expect("second dial succeeds"), PortUse::New);
        assert_eq!(t.inner.lock().dials, vec![PortUse::Reuse, PortUse::New]);
        // A dial that asked for a fresh port is not retried.
        let used = t.dial(addr, opts(PortUse::New)).expect("dial").await;
        assert_eq!(used.expect("fresh port"), PortUse::New);
        assert_eq!(t.inner.lock().dials.len(), 3);
    }

    #[tokio::test]
    async fn a_handshake_that_reads_past_its_budget_fails_and_a_lifted_budget_counts_nothing() {
        let data = vec![7u8; 100];
        let (mut s, _handle) = Budgeted::new(futures::io::Cursor::new(data.clone()), 64);
        let mut buf = [0u8; 100];
        let n = s.read(&mut buf).await.expect("within budget");
        assert_eq!(n, 64, "never reads past the budget");
        let err = s.read(&mut buf).await.expect_err("over budget");
        assert_eq!(
            HandshakeError::find(&err),
            Some(HandshakeError::TooLarge { limit: 64 })
        );
        let (mut s, handle) = Budgeted::new(futures::io::Cursor::new(data), 64);
        handle.lift();
        let mut all = Vec::new();
        s.read_to_end(&mut all).await.expect("no budget");
        assert_eq!(all.len(), 100);
    }

    #[test]
    fn a_handshake_error_is_found_inside_wrapped_io_errors() {
        let inner = HandshakeError::Timeout {
            after: Duration::from_secs(5),
        }
        .into_io();
        let wrapped = io::Error::other(io::Error::other(inner));
        assert_eq!(
            HandshakeError::find(&wrapped),
            Some(HandshakeError::Timeout {
                after: Duration::from_secs(5)
            })
        );
        assert_eq!(HandshakeError::find(&io::Error::other("plain")), None);
    }
}
