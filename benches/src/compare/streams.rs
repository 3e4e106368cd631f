//! Plain libp2p-stream modes: `open-per-message`, `open-per-message-lossy`,
//! `single-stream`, `pre-opened` (TCP) and `pre-opened-quic`.
//!
//! libp2p-stream hands inbound streams to the application through a channel and
//! drops a stream when that channel is full, so `open-per-message` waits for a
//! 1-byte acknowledgement per message: without it messages would be lost.
//! `open-per-message-lossy` does without it, as the upper bound of that way of
//! sending: its ledger reports what it lost.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::{
    AsyncReadExt, AsyncWriteExt, FutureExt, StreamExt, future::BoxFuture, io::BufReader,
};
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::{Behaviour, IncomingStreams};
use tokio::{sync::Mutex, task::JoinSet};

use super::{
    BenchError, Context, Transport,
    frame::{read_frame, write_frame},
    harness::{Pair, Tasks},
    ledger::Ledger,
    swarm::{Driven, build_swarm, connect},
};

/// Protocol of the measured streams.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/bench/stream/1");
/// Read buffer of the receiving streams (as for `raw-tcp`).
const READ_BUFFER: usize = 64 * 1024;
/// Attempts to open one pre-opened stream that the receiver did not take.
const OPEN_ATTEMPTS: usize = 3;

/// How streams are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A new stream per message, acknowledged with one byte.
    OpenPerMessage,
    /// A new stream per message, closed after the frame, no acknowledgement.
    OpenPerMessageLossy,
    /// One stream for all senders, behind a mutex.
    Single,
    /// One stream per sender, opened up front.
    PreOpened,
}

/// Two plain swarms with libp2p-stream; the sender dialled the receiver.
pub struct StreamPair {
    kind: Kind,
    control: libp2p_stream::Control,
    target: PeerId,
    streams: Vec<Mutex<Stream>>,
    _tasks: Tasks,
    _sender: Driven<Behaviour>,
    _receiver: Driven<Behaviour>,
}

impl StreamPair {
    /// Connects two swarms over `transport`; opens the streams `kind` needs for
    /// `workers` senders. The receiver books every frame in `ledger`; with `echo`,
    /// it answers every frame with it.
    pub async fn setup(
        kind: Kind,
        transport: Transport,
        workers: usize,
        echo: bool,
        ledger: Arc<Ledger>,
        limit: Duration,
    ) -> Result<Self, BenchError> {
        let receiver = build_swarm(|_| Behaviour::new())?;
        let incoming = receiver
            .behaviour()
            .new_control()
            .accept(PROTOCOL)
            .ctx("accept")?;
        let sender = build_swarm(|_| Behaviour::new())?;
        let control = sender.behaviour().new_control();
        let (receiver, sender) =
            connect(receiver, sender, transport, |_, ()| {}, |_, ()| {}, limit).await?;
        let target = receiver.peer();
        let accepted = Arc::new(AtomicUsize::new(0));
        let mut tasks = Tasks::default();
        tasks.push(tokio::spawn(accept_loop(
            incoming,
            kind,
            echo,
            ledger,
            accepted.clone(),
        )));
        let wanted = match kind {
            Kind::OpenPerMessage | Kind::OpenPerMessageLossy => 0,
            Kind::Single => 1,
            Kind::PreOpened => workers.max(1),
        };
        let mut streams = Vec::with_capacity(wanted);
        for _ in 0..wanted {
            let stream = open_accepted(&control, target, &accepted, streams.len() + 1).await?;
            streams.push(Mutex::new(stream));
        }
        Ok(Self {
            kind,
            control,
            target,
            streams,
            _tasks: tasks,
            _sender: sender,
            _receiver: receiver,
        })
    }
}

/// Opens a stream and waits until the receiver has taken it (the `n`th), trying
/// again if libp2p-stream dropped it.
async fn open_accepted(
    control: &libp2p_stream::Control,
    target: PeerId,
    accepted: &AtomicUsize,
    n: usize,
) -> Result<Stream, BenchError> {
    for _ in 0..OPEN_ATTEMPTS {
        let stream = control
            .clone()
            .open_stream(target, PROTOCOL)
            .await
            .ctx("open stream")?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while accepted.load(Ordering::Relaxed) < n && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if accepted.load(Ordering::Relaxed) >= n {
            return Ok(stream);
        }
    }
    Err(BenchError::new(format!(
        "receiver did not accept stream {n} after {OPEN_ATTEMPTS} attempts"
    )))
}

/// Takes every inbound stream and serves it on its own task.
async fn accept_loop(
    mut incoming: IncomingStreams,
    kind: Kind,
    echo: bool,
    ledger: Arc<Ledger>,
    accepted: Arc<AtomicUsize>,
) {
    // Dropped (aborting every reader) when this task is aborted.
    let mut readers = JoinSet::new();
    while let Some((_, stream)) = incoming.next().await {
        accepted.fetch_add(1, Ordering::Relaxed);
        let ledger = ledger.clone();
        match kind {
            Kind::OpenPerMessage => readers.spawn(serve_one(stream, echo, true, ledger)),
            Kind::OpenPerMessageLossy => readers.spawn(serve_one(stream, echo, false, ledger)),
            Kind::Single | Kind::PreOpened => readers.spawn(serve_all(stream, echo, ledger)),
        };
        while readers.try_join_next().is_some() {}
    }
}

/// One frame, then the frame back (`echo`) or a 1-byte acknowledgement (`ack`),
/// then close.
async fn serve_one(mut stream: Stream, echo: bool, ack: bool, ledger: Arc<Ledger>) {
    let mut buf = Vec::new();
    if read_frame(&mut stream, &mut buf).await.is_err() {
        return;
    }
    ledger.record(&buf);
    let answered = if echo {
        write_frame(&mut stream, &buf).await
    } else if !ack {
        return;
    } else {
        async {
            stream.write_all(&[1]).await?;
            stream.flush().await
        }
        .await
    };
    if answered.is_ok() {
        let _ = stream.close().await;
    }
}

/// Frames until the stream ends; with `echo`, each one is sent back. Reads go
/// through a buffer, so that many small frames take one read of the stream (as
/// liquid-p2p's reader does).
pub async fn serve_all(stream: Stream, echo: bool, ledger: Arc<Ledger>) {
    let mut stream = BufReader::with_capacity(READ_BUFFER, stream);
    let mut buf = Vec::new();
    while read_frame(&mut stream, &mut buf).await.is_ok() {
        ledger.record(&buf);
        if echo && write_frame(&mut stream, &buf).await.is_err() {
            return;
        }
    }
}

impl StreamPair {
    fn stream_of(&self, worker: usize) -> Result<&Mutex<Stream>, BenchError> {
        match self.kind {
            Kind::Single => self.streams.first(),
            _ => self.streams.get(worker % self.streams.len().max(1)),
        }
        .ctx("no stream opened for this sender")
    }

    /// Sends `payload`; with `reply`, reads the receiver's answer into it.
    async fn exchange(
        &self,
        worker: usize,
        payload: &[u8],
        reply: Option<&mut Vec<u8>>,
    ) -> Result<(), BenchError> {
        if matches!(self.kind, Kind::OpenPerMessage | Kind::OpenPerMessageLossy) {
            let mut stream = self
                .control
                .clone()
                .open_stream(self.target, PROTOCOL)
                .await
                .ctx("open stream")?;
            write_frame(&mut stream, payload).await.ctx("write")?;
            if let Some(reply) = reply {
                read_frame(&mut stream, reply).await.ctx("read reply")?;
            } else if self.kind == Kind::OpenPerMessageLossy {
                // The frame is flushed; whether the receiver takes the stream is
                // not known: that is what makes this mode lossy.
                return stream.close().await.ctx("close");
            } else {
                let mut ack = [0u8; 1];
                stream.read_exact(&mut ack).await.ctx("read ack")?;
            }
            let _ = stream.close().await;
            return Ok(());
        }
        let mut stream = self.stream_of(worker)?.lock().await;
        write_frame(&mut *stream, payload).await.ctx("write")?;
        if let Some(reply) = reply {
            read_frame(&mut *stream, reply).await.ctx("read reply")?;
        }
        Ok(())
    }
}

impl Pair for StreamPair {
    fn send<'a>(
        &'a self,
        worker: usize,
        payload: &'a [u8],
    ) -> BoxFuture<'a, Result<(), BenchError>> {
        self.exchange(worker, payload, None).boxed()
    }

    fn round_trip<'a>(
        &'a self,
        payload: &'a [u8],
        reply: &'a mut Vec<u8>,
    ) -> BoxFuture<'a, Result<(), BenchError>> {
        self.exchange(0, payload, Some(reply)).boxed()
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        // Dropping the pair stops both swarms.
        async {}.boxed()
    }
}
