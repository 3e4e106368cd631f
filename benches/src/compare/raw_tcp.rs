//! `raw-tcp`: plain tokio TCP (`nodelay`), length-prefixed frames, no encryption,
//! one connection per sender.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::{FutureExt, future::BoxFuture};
use tokio::{
    io::BufReader,
    net::{TcpListener, TcpStream},
    sync::Mutex,
    task::JoinSet,
};

use super::{
    BenchError, Context,
    frame::{read_frame_tokio, write_frame_tokio},
    harness::{Counter, Pair, Tasks},
};

/// Read buffer of the receiver (the libp2p modes read through buffers too).
const READ_BUFFER: usize = 64 * 1024;

/// A listener and one connection per sender.
pub struct RawTcpPair {
    connections: Vec<Mutex<TcpStream>>,
    counter: Arc<Counter>,
    _tasks: Tasks,
}

impl RawTcpPair {
    /// `workers` connections to a listener on loopback; with `echo` the receiver
    /// sends every frame back.
    pub async fn setup(workers: usize, echo: bool, limit: Duration) -> Result<Self, BenchError> {
        let listener = TcpListener::bind("127.0.0.1:0").await.ctx("bind")?;
        let address = listener.local_addr().ctx("local address")?;
        let counter = Arc::new(Counter::default());
        let accepted = Arc::new(AtomicUsize::new(0));
        let mut tasks = Tasks::default();
        tasks.push(tokio::spawn(accept_loop(
            listener,
            echo,
            counter.clone(),
            accepted.clone(),
        )));
        let wanted = workers.max(1);
        let connections = tokio::time::timeout(limit, connect_all(address, wanted))
            .await
            .ctx("connect timed out")??;
        let deadline = tokio::time::Instant::now() + limit;
        while accepted.load(Ordering::Relaxed) < wanted {
            if tokio::time::Instant::now() > deadline {
                return Err(BenchError::new("listener did not accept every connection"));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(Self {
            connections,
            counter,
            _tasks: tasks,
        })
    }
}

async fn connect_all(address: SocketAddr, n: usize) -> Result<Vec<Mutex<TcpStream>>, BenchError> {
    let mut connections = Vec::with_capacity(n);
    for _ in 0..n {
        let stream = TcpStream::connect(address).await.ctx("connect")?;
        stream.set_nodelay(true).ctx("nodelay")?;
        connections.push(Mutex::new(stream));
    }
    Ok(connections)
}

async fn accept_loop(
    listener: TcpListener,
    echo: bool,
    counter: Arc<Counter>,
    accepted: Arc<AtomicUsize>,
) {
    let mut readers = JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        accepted.fetch_add(1, Ordering::Relaxed);
        readers.spawn(serve(stream, echo, counter.clone()));
        while readers.try_join_next().is_some() {}
    }
}

async fn serve(stream: TcpStream, echo: bool, counter: Arc<Counter>) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::with_capacity(READ_BUFFER, read);
    let mut buf = Vec::new();
    while read_frame_tokio(&mut read, &mut buf).await.is_ok() {
        counter.add(buf.len());
        if echo && write_frame_tokio(&mut write, &buf).await.is_err() {
            return;
        }
    }
}

impl RawTcpPair {
    async fn exchange(&self, worker: usize, payload: &[u8], echo: bool) -> Result<(), BenchError> {
        let connection = self
            .connections
            .get(worker % self.connections.len().max(1))
            .ctx("no connection")?;
        let mut stream = connection.lock().await;
        write_frame_tokio(&mut *stream, payload)
            .await
            .ctx("write")?;
        if echo {
            read_frame_tokio(&mut *stream, &mut Vec::new())
                .await
                .ctx("read reply")?;
        }
        Ok(())
    }
}

impl Pair for RawTcpPair {
    fn send<'a>(
        &'a self,
        worker: usize,
        payload: &'a [u8],
    ) -> BoxFuture<'a, Result<(), BenchError>> {
        self.exchange(worker, payload, false).boxed()
    }

    fn round_trip<'a>(&'a self, payload: &'a [u8]) -> BoxFuture<'a, Result<(), BenchError>> {
        self.exchange(0, payload, true).boxed()
    }

    fn received(&self) -> &Counter {
        &self.counter
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        async {}.boxed()
    }
}
