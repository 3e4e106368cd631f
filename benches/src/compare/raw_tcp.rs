//! `raw-tcp`: plain tokio TCP (`nodelay`), length-prefixed frames, no encryption:
//! what the machine's loopback can do, as the reference the libp2p modes stand
//! against.
//!
//! To be a fair reference it writes the way yamux does: senders hand their frames
//! to the connection's writer task, which writes everything queued into one
//! buffer and flushes once per batch (one flush per message would cost a syscall
//! each, which yamux does not pay). And it uses as many connections as the
//! scenario gives the other modes: one, unless the scenario says otherwise.
//!
//! A round trip has one message in flight, a batch of one: the sender writes and
//! flushes it itself, with no task in between, so that raw TCP's round trip is the
//! machine's latency floor that the round-trip gate compares the others with.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use futures::{FutureExt, future::BoxFuture};
use tokio::{
    io::{AsyncWriteExt, BufReader, BufWriter},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::{Mutex, mpsc},
    task::JoinSet,
};

use super::{
    BenchError, Context,
    frame::{read_frame_tokio, write_frame_tokio},
    harness::{Pair, Tasks},
    ledger::Ledger,
};

/// Read buffer of either side (the libp2p modes read through buffers too).
const READ_BUFFER: usize = 64 * 1024;
/// Write buffer of the sender's writer task: one flush writes up to this much at
/// once (a noise frame carries up to 64 KiB too).
const WRITE_BUFFER: usize = 64 * 1024;
/// Frames queued for the writer task of one connection before senders wait.
const QUEUE: usize = 64;

/// One connection of the sender: how frames are written, and the read half (for
/// replies).
struct Connection {
    writer: Writer,
    replies: Mutex<BufReader<OwnedReadHalf>>,
}

/// How a connection's frames are written.
enum Writer {
    /// Queued to the connection's writer task, which flushes once per batch.
    Batched(mpsc::Sender<Vec<u8>>),
    /// Written and flushed by the sender (round trips: one frame in flight).
    Direct(Mutex<OwnedWriteHalf>),
}

/// A listener and `connections` connections to it.
pub struct RawTcpPair {
    connections: Vec<Connection>,
    _tasks: Tasks,
}

impl RawTcpPair {
    /// `connections` connections to a listener on loopback, shared by all senders;
    /// the listener books every frame in `ledger` and, with `echo`, sends it back.
    /// With `echo` the sender writes its frames itself, else through a writer task
    /// per connection.
    pub async fn setup(
        connections: usize,
        echo: bool,
        ledger: Arc<Ledger>,
        limit: Duration,
    ) -> Result<Self, BenchError> {
        let listener = TcpListener::bind("127.0.0.1:0").await.ctx("bind")?;
        let address = listener.local_addr().ctx("local address")?;
        let wanted = connections.max(1);
        let (accepted_tx, mut accepted) = mpsc::channel(wanted);
        let mut tasks = Tasks::default();
        tasks.push(tokio::spawn(accept_loop(
            listener,
            echo,
            ledger,
            accepted_tx,
        )));
        let streams = tokio::time::timeout(limit, connect_all(address, wanted))
            .await
            .ctx("connect timed out")??;
        for _ in 0..wanted {
            tokio::time::timeout(limit, accepted.recv())
                .await
                .ctx("listener did not accept every connection")?
                .ctx("listener stopped")?;
        }
        let connections = streams
            .into_iter()
            .map(|stream| {
                let (read, write) = stream.into_split();
                let writer = if echo {
                    Writer::Direct(Mutex::new(write))
                } else {
                    let (frames, queue) = mpsc::channel(QUEUE);
                    tasks.push(tokio::spawn(write_batches(write, queue)));
                    Writer::Batched(frames)
                };
                Connection {
                    writer,
                    replies: Mutex::new(BufReader::with_capacity(READ_BUFFER, read)),
                }
            })
            .collect();
        Ok(Self {
            connections,
            _tasks: tasks,
        })
    }
}

async fn connect_all(address: SocketAddr, n: usize) -> Result<Vec<TcpStream>, BenchError> {
    let mut connections = Vec::with_capacity(n);
    for _ in 0..n {
        let stream = TcpStream::connect(address).await.ctx("connect")?;
        stream.set_nodelay(true).ctx("nodelay")?;
        connections.push(stream);
    }
    Ok(connections)
}

/// Writes every frame queued, then flushes: one flush per batch of frames that
/// were waiting together.
async fn write_batches(write: OwnedWriteHalf, mut queue: mpsc::Receiver<Vec<u8>>) {
    let mut write = BufWriter::with_capacity(WRITE_BUFFER, write);
    while let Some(frame) = queue.recv().await {
        if write.write_all(&frame).await.is_err() {
            return;
        }
        while let Ok(frame) = queue.try_recv() {
            if write.write_all(&frame).await.is_err() {
                return;
            }
        }
        if write.flush().await.is_err() {
            return;
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    echo: bool,
    ledger: Arc<Ledger>,
    accepted: mpsc::Sender<()>,
) {
    let mut readers = JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        let _ = accepted.try_send(());
        readers.spawn(serve(stream, echo, ledger.clone()));
        while readers.try_join_next().is_some() {}
    }
}

async fn serve(stream: TcpStream, echo: bool, ledger: Arc<Ledger>) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::with_capacity(READ_BUFFER, read);
    let mut buf = Vec::new();
    while read_frame_tokio(&mut read, &mut buf).await.is_ok() {
        ledger.record(&buf);
        if echo && write_frame_tokio(&mut write, &buf).await.is_err() {
            return;
        }
    }
}

impl RawTcpPair {
    fn connection(&self, worker: usize) -> Result<&Connection, BenchError> {
        self.connections
            .get(worker % self.connections.len().max(1))
            .ctx("no connection")
    }

    /// Writes one frame: queued to the writer task (header and payload in one
    /// buffer, as yamux copies a write into its frame), or written directly.
    async fn write(&self, connection: &Connection, payload: &[u8]) -> Result<(), BenchError> {
        match &connection.writer {
            Writer::Batched(frames) => {
                let mut frame = Vec::with_capacity(4 + payload.len());
                frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
                frame.extend_from_slice(payload);
                frames
                    .send(frame)
                    .await
                    .map_err(|_| BenchError::new("writer task stopped"))
            }
            Writer::Direct(write) => write_frame_tokio(&mut *write.lock().await, payload)
                .await
                .ctx("write"),
        }
    }
}

impl Pair for RawTcpPair {
    fn send<'a>(
        &'a self,
        worker: usize,
        payload: &'a [u8],
    ) -> BoxFuture<'a, Result<(), BenchError>> {
        async move { self.write(self.connection(worker)?, payload).await }.boxed()
    }

    fn round_trip<'a>(
        &'a self,
        payload: &'a [u8],
        reply: &'a mut Vec<u8>,
    ) -> BoxFuture<'a, Result<(), BenchError>> {
        async move {
            let connection = self.connection(0)?;
            let mut replies = connection.replies.lock().await;
            self.write(connection, payload).await?;
            read_frame_tokio(&mut *replies, reply)
                .await
                .ctx("read reply")
        }
        .boxed()
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        async {}.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::ledger::{Ledger, random_payload};

    #[tokio::test]
    async fn frames_from_many_senders_arrive_once_each_over_one_connection() {
        let ledger = Arc::new(Ledger::new(8, false));
        let pair = Arc::new(
            RawTcpPair::setup(1, false, ledger.clone(), Duration::from_secs(5))
                .await
                .expect("setup"),
        );
        assert_eq!(pair.connections.len(), 1);
        let mut senders = JoinSet::new();
        for worker in 0..8 {
            let (pair, ledger) = (pair.clone(), ledger.clone());
            senders.spawn(async move {
                let mut payload = random_payload(256, worker as u64);
                for _ in 0..500 {
                    let seq = ledger.stamp(worker, &mut payload);
                    pair.send(worker, &payload).await.expect("send");
                    ledger.confirm(worker, seq);
                }
            });
        }
        while let Some(done) = senders.join_next().await {
            done.expect("sender");
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while ledger.received().0 < 4000 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let d = ledger.delivery();
        assert_eq!(
            (d.sent, d.received, d.lost, d.duplicated),
            (4000, 4000, 0, 0)
        );
    }

    #[tokio::test]
    async fn a_round_trip_returns_the_request() {
        let ledger = Arc::new(Ledger::new(1, false));
        let pair = RawTcpPair::setup(1, true, ledger.clone(), Duration::from_secs(5))
            .await
            .expect("setup");
        let mut payload = random_payload(256, 9);
        ledger.stamp(0, &mut payload);
        let mut reply = Vec::new();
        pair.round_trip(&payload, &mut reply).await.expect("rtt");
        assert_eq!(reply, payload);
    }
}
