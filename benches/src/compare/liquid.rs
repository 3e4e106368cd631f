//! `liquid` and `liquid-quic`: `Host::send` over liquid-p2p's pooled streams.
//!
//! The receiver registers a protocol and books the messages of its `Inbox` in the
//! measurement's ledger. For round trips both sides register a protocol and the
//! receiver answers each message with `send`.

use std::{sync::Arc, time::Duration};

use futures::{FutureExt, future::BoxFuture};
use liquid_p2p::{Config, Control, Event, Events, Host, Inbox, PeerId};
use tokio::sync::Mutex;

use super::{
    BenchError, Context, Transport,
    harness::{Pair, Tasks},
    ledger::Ledger,
};

/// Protocol of the measured messages.
pub const PROTOCOL: &str = "/bench/msg/1";
/// Protocol of the replies in round trips.
pub const REPLY_PROTOCOL: &str = "/bench/reply/1";

/// Two liquid hosts; the sender dials the receiver.
pub struct LiquidPair {
    sender: Host,
    receiver: Host,
    target: PeerId,
    replies: Option<Mutex<Inbox>>,
    _tasks: Tasks,
}

impl LiquidPair {
    /// Two hosts over `transport` with `connections` connections between them.
    /// The receiver books every message in `ledger`; with `echo`, it answers each.
    pub async fn setup(
        transport: Transport,
        connections: usize,
        echo: bool,
        ledger: Arc<Ledger>,
        limit: Duration,
    ) -> Result<Self, BenchError> {
        let (sender, receiver) = hosts(transport, connections).await?;
        let inbox = receiver
            .control()
            .register_protocol(PROTOCOL)
            .ctx("register")?;
        let replies = if echo {
            Some(Mutex::new(
                sender
                    .control()
                    .register_protocol(REPLY_PROTOCOL)
                    .ctx("register")?,
            ))
        } else {
            None
        };
        let target = connect(&sender, &receiver, connections, limit).await?;
        let mut tasks = Tasks::default();
        tasks.push(tokio::spawn(receive(
            inbox,
            ledger,
            echo.then(|| receiver.control().clone()),
        )));
        Ok(Self {
            sender,
            receiver,
            target,
            replies,
            _tasks: tasks,
        })
    }
}

/// A sender and a receiver host over `transport`, allowed `connections`
/// connections per peer; the receiver listens, they are not connected yet.
pub async fn hosts(transport: Transport, connections: usize) -> Result<(Host, Host), BenchError> {
    let config = Config::default().with_max_connections_per_peer(connections);
    let receiver = Host::builder()
        .config(config.clone())
        .listen_on(transport.listen_addr()?)
        .build()
        .await
        .ctx("receiver host")?;
    let sender = Host::builder()
        .config(config)
        .build()
        .await
        .ctx("sender host")?;
    Ok((sender, receiver))
}

/// Dials `receiver` from `sender` `connections` times; returns once both ends
/// have exchanged protocol lists (so register protocols before) and the sender
/// has a pool on every connection.
pub async fn connect(
    sender: &Host,
    receiver: &Host,
    connections: usize,
    limit: Duration,
) -> Result<PeerId, BenchError> {
    let mut sender_events = sender.control().events();
    let mut receiver_events = receiver.control().events();
    let address = receiver
        .listen_addrs()
        .into_iter()
        .next()
        .ctx("receiver has no listen address")?;
    let target = sender.dial(address.clone()).await.ctx("dial")?;
    // Both ends have exchanged protocol lists.
    peer_connected(&mut sender_events, target, limit).await?;
    peer_connected(&mut receiver_events, sender.local_peer_id(), limit).await?;
    for _ in 1..connections {
        sender.dial(address.clone()).await.ctx("extra dial")?;
    }
    let deadline = tokio::time::Instant::now() + limit;
    while sender.control().pool_stats(&target).len() < connections {
        if tokio::time::Instant::now() > deadline {
            return Err(BenchError::new(format!(
                "{} of {connections} connections up within {limit:?}",
                sender.control().pool_stats(&target).len()
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(target)
}

/// Waits for `PeerConnected` of `peer` (emitted once the protocol exchange is done).
pub async fn peer_connected(
    events: &mut Events,
    peer: PeerId,
    limit: Duration,
) -> Result<(), BenchError> {
    tokio::time::timeout(limit, async {
        while let Some(event) = events.recv().await {
            if matches!(event, Event::PeerConnected { peer: p } if p == peer) {
                return Ok(());
            }
        }
        Err(BenchError::new("host stopped before PeerConnected"))
    })
    .await
    .ctx("no PeerConnected in time")?
}

/// Books every message of `inbox`; with `echo`, sends each one back.
async fn receive(mut inbox: Inbox, ledger: Arc<Ledger>, echo: Option<Control>) {
    while let Some(message) = inbox.recv().await {
        ledger.record(&message.payload);
        if let Some(control) = &echo {
            let _ = control
                .send(message.peer, REPLY_PROTOCOL, message.payload)
                .await;
        }
    }
}

impl Pair for LiquidPair {
    fn send<'a>(&'a self, _: usize, payload: &'a [u8]) -> BoxFuture<'a, Result<(), BenchError>> {
        async move {
            self.sender
                .control()
                .send(self.target, PROTOCOL, payload)
                .await
                .ctx("send")
        }
        .boxed()
    }

    fn round_trip<'a>(
        &'a self,
        payload: &'a [u8],
        reply: &'a mut Vec<u8>,
    ) -> BoxFuture<'a, Result<(), BenchError>> {
        async move {
            let replies = self.replies.as_ref().ctx("pair set up without replies")?;
            let mut replies = replies.lock().await;
            self.sender
                .control()
                .send(self.target, PROTOCOL, payload)
                .await
                .ctx("send")?;
            let message = replies.recv().await.ctx("reply inbox closed")?;
            reply.clear();
            reply.extend_from_slice(&message.payload);
            Ok(())
        }
        .boxed()
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        async move {
            tokio::join!(self.sender.shutdown(), self.receiver.shutdown());
        }
        .boxed()
    }
}
