//! A plain libp2p behaviour that opens a fixed number of streams on every
//! connection: on every established connection its handler opens that many
//! outbound substreams on that connection ([`PROTOCOL`]) and accepts every inbound
//! one. Then either it keeps them all open and unread (the `plain-libp2p-streams`
//! memory mode), or it hands each one to the application (`pre-opened` over two
//! connections, in [`multi_conn`](super::multi_conn)). Shared counters tell the
//! measurement how many stream ends were opened.
//!
//! Written by hand rather than with libp2p-stream: its `open_stream` cannot choose
//! the connection (it picks one at random). For memory, one connection would hit
//! yamux's stream limit long before every connection had its streams; for
//! throughput over two connections, the streams must be split evenly between them.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use libp2p::{
    Multiaddr, PeerId, Stream, StreamProtocol,
    core::{Endpoint, transport::PortUse, upgrade::ReadyUpgrade},
    swarm::{
        ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
        NetworkBehaviour, SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
        handler::{ConnectionEvent, FullyNegotiatedInbound, FullyNegotiatedOutbound},
    },
};

use tokio::sync::mpsc;

use super::BenchError;

/// The protocol the idle streams are negotiated with.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/liquid-bench/idle/1.0.0");

/// Stream ends opened by all the connections of one swarm (and still held, when
/// they are not handed over).
#[derive(Debug, Default)]
pub struct StreamCounts {
    outbound: AtomicUsize,
    inbound: AtomicUsize,
    failed: AtomicUsize,
}

impl StreamCounts {
    /// Waits until `connections` connections hold `per_connection` outbound and
    /// `per_connection` inbound streams each, at most `limit`.
    ///
    /// The totals are enough: a connection opens at most `per_connection` streams,
    /// and the remote end of each connection opens at most as many, so full totals
    /// mean every connection is full.
    pub async fn wait(
        &self,
        connections: usize,
        per_connection: usize,
        limit: Duration,
    ) -> Result<(), BenchError> {
        let want = connections * per_connection;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let outbound = self.outbound.load(Ordering::Relaxed);
            let inbound = self.inbound.load(Ordering::Relaxed);
            if outbound >= want && inbound >= want {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(BenchError::new(format!(
                    "{outbound} outbound and {inbound} inbound of {want} idle streams each \
                     held within {limit:?} ({} failed)",
                    self.failed.load(Ordering::Relaxed)
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Gives every connection a [`Handler`] opening `per_connection` streams.
pub struct Behaviour {
    per_connection: usize,
    counts: Arc<StreamCounts>,
    handover: Option<mpsc::UnboundedSender<Stream>>,
}

impl Behaviour {
    /// A behaviour opening `per_connection` streams on each connection and holding
    /// them, and those the remote opens, idle.
    pub fn new(per_connection: usize) -> Self {
        Self {
            per_connection,
            counts: Arc::default(),
            handover: None,
        }
    }

    /// A behaviour opening `per_connection` streams on each connection and handing
    /// them, and those the remote opens, to `streams`.
    pub fn handing_over(per_connection: usize, streams: mpsc::UnboundedSender<Stream>) -> Self {
        Self {
            handover: Some(streams),
            ..Self::new(per_connection)
        }
    }

    /// The counters of the streams held by this behaviour's connections.
    pub fn counts(&self) -> Arc<StreamCounts> {
        self.counts.clone()
    }

    fn handler(&self) -> Handler {
        Handler {
            to_open: self.per_connection,
            outbound: Vec::with_capacity(self.per_connection),
            inbound: Vec::with_capacity(self.per_connection),
            counts: self.counts.clone(),
            handover: self.handover.clone(),
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler())
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

/// One connection's streams; the counters of those it holds are given back when
/// it is dropped.
pub struct Handler {
    /// Outbound streams still to request.
    to_open: usize,
    outbound: Vec<Stream>,
    inbound: Vec<Stream>,
    counts: Arc<StreamCounts>,
    handover: Option<mpsc::UnboundedSender<Stream>>,
}

impl Handler {
    /// Hands `stream` over, or keeps it in `held` (a stream the application no
    /// longer takes is dropped).
    fn keep(
        handover: &Option<mpsc::UnboundedSender<Stream>>,
        held: &mut Vec<Stream>,
        stream: Stream,
    ) {
        match handover {
            Some(to) => {
                let _ = to.send(stream);
            }
            None => held.push(stream),
        }
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Infallible;
    type ToBehaviour = Infallible;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(ReadyUpgrade::new(PROTOCOL), ())
    }

    fn connection_keep_alive(&self) -> bool {
        true
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Infallible>> {
        if self.to_open == 0 {
            return Poll::Pending;
        }
        self.to_open -= 1;
        Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
            protocol: SubstreamProtocol::new(ReadyUpgrade::new(PROTOCOL), ()),
        })
    }

    fn on_behaviour_event(&mut self, event: Infallible) {
        match event {}
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: stream,
                ..
            }) => {
                Self::keep(&self.handover, &mut self.outbound, stream);
                self.counts.outbound.fetch_add(1, Ordering::Relaxed);
            }
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: stream,
                ..
            }) => {
                Self::keep(&self.handover, &mut self.inbound, stream);
                self.counts.inbound.fetch_add(1, Ordering::Relaxed);
            }
            ConnectionEvent::DialUpgradeError(_) | ConnectionEvent::ListenUpgradeError(_) => {
                self.counts.failed.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        self.counts
            .outbound
            .fetch_sub(self.outbound.len(), Ordering::Relaxed);
        self.counts
            .inbound
            .fetch_sub(self.inbound.len(), Ordering::Relaxed);
    }
}
