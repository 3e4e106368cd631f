//! `pre-opened` over several connections: the stock reference for liquid on two
//! connections per peer. Two plain swarms, the sender dials the receiver that many
//! times, and every connection carries an equal share of the senders' streams,
//! opened up front ([`fixed_streams`](super::fixed_streams), since libp2p-stream
//! cannot choose the connection a stream goes on). Frames and the receiver's
//! reading are those of the one-connection `pre-opened` mode.

use std::{sync::Arc, time::Duration};

use futures::{FutureExt, future::BoxFuture};
use libp2p::{Stream, Swarm};
use tokio::sync::{Mutex, mpsc};

use super::{
    BenchError, Context, Transport,
    fixed_streams::Behaviour,
    frame::{read_frame, write_frame},
    harness::{Pair, Tasks},
    ledger::Ledger,
    streams::serve_all,
    swarm::{Driven, build_swarm, dial_always, drive, listen},
};

/// Two plain swarms joined by several connections, one stream per sender.
pub struct MultiConnPair {
    streams: Vec<Mutex<Stream>>,
    _tasks: Tasks,
    _sender: Driven<Behaviour>,
    _receiver: Driven<Behaviour>,
}

impl MultiConnPair {
    /// `connections` connections over `transport`, `workers` streams split evenly
    /// between them (rounded up). The receiver books every frame in `ledger`; with
    /// `echo`, it answers every frame with it.
    pub async fn setup(
        transport: Transport,
        connections: usize,
        workers: usize,
        echo: bool,
        ledger: Arc<Ledger>,
        limit: Duration,
    ) -> Result<Self, BenchError> {
        let connections = connections.max(1);
        let per_connection = workers.max(1).div_ceil(connections);
        let (inbound_tx, mut inbound) = mpsc::unbounded_channel();
        let (outbound_tx, mut outbound) = mpsc::unbounded_channel();
        let mut receiver = build_swarm(|_| Behaviour::handing_over(0, inbound_tx))?;
        let sender = build_swarm(|_| Behaviour::handing_over(per_connection, outbound_tx))?;
        let address = listen(&mut receiver, transport, limit).await?;
        let receiver = drive(receiver, |_, e| match e {});
        let sender = drive(sender, |_, e| match e {});
        let peer = receiver.peer();
        sender.command(Box::new(move |swarm: &mut Swarm<Behaviour>| {
            for _ in 0..connections {
                let _ = swarm.dial(dial_always(peer, address.clone()));
            }
        }))?;
        let mut tasks = Tasks::default();
        tasks.push(tokio::spawn(async move {
            let mut readers = Tasks::default();
            while let Some(stream) = inbound.recv().await {
                readers.push(tokio::spawn(serve_all(stream, echo, ledger.clone())));
            }
        }));
        sender.wait_connections(connections, limit).await?;
        receiver.wait_connections(connections, limit).await?;
        let wanted = per_connection * connections;
        let mut streams = Vec::with_capacity(wanted);
        while streams.len() < wanted {
            let stream = tokio::time::timeout(limit, outbound.recv())
                .await
                .map_err(|_| {
                    BenchError::new(format!(
                        "{} of {wanted} streams opened within {limit:?}",
                        streams.len()
                    ))
                })?
                .ctx("sender swarm stopped")?;
            streams.push(Mutex::new(stream));
        }
        Ok(Self {
            streams,
            _tasks: tasks,
            _sender: sender,
            _receiver: receiver,
        })
    }

    fn stream_of(&self, worker: usize) -> Result<&Mutex<Stream>, BenchError> {
        self.streams
            .get(worker % self.streams.len().max(1))
            .ctx("no stream opened")
    }
}

impl Pair for MultiConnPair {
    fn send<'a>(
        &'a self,
        worker: usize,
        payload: &'a [u8],
    ) -> BoxFuture<'a, Result<(), BenchError>> {
        async move {
            let mut stream = self.stream_of(worker)?.lock().await;
            write_frame(&mut *stream, payload).await.ctx("write")
        }
        .boxed()
    }

    fn round_trip<'a>(
        &'a self,
        payload: &'a [u8],
        reply: &'a mut Vec<u8>,
    ) -> BoxFuture<'a, Result<(), BenchError>> {
        async move {
            let mut stream = self.stream_of(0)?.lock().await;
            write_frame(&mut *stream, payload).await.ctx("write")?;
            read_frame(&mut *stream, reply).await.ctx("read reply")
        }
        .boxed()
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        // Dropping the pair stops both swarms.
        async {}.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::ledger::random_payload;

    #[tokio::test]
    async fn streams_are_split_between_two_connections_and_deliver() {
        let ledger = Arc::new(Ledger::new(4, false));
        let pair = MultiConnPair::setup(
            Transport::Tcp,
            2,
            4,
            false,
            ledger.clone(),
            Duration::from_secs(20),
        )
        .await
        .expect("setup");
        assert_eq!(pair.streams.len(), 4);
        assert_eq!(pair._sender.connections(), 2);
        for worker in 0..4 {
            let mut payload = random_payload(256, worker as u64);
            for _ in 0..50 {
                let seq = ledger.stamp(worker, &mut payload);
                pair.send(worker, &payload).await.expect("send");
                ledger.confirm(worker, seq);
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while ledger.received().0 < 200 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let d = ledger.delivery();
        assert_eq!((d.sent, d.received, d.lost, d.duplicated), (200, 200, 0, 0));
    }
}
