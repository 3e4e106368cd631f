//! The yamux freeze (rust-yamux issue 227), reproduced, and its absence with our
//! muxer, `liquid_p2p::YamuxConfig`.
//!
//! Both ends of one yamux connection write on several streams into a transport with
//! little buffering (an in-memory duplex of 4 KiB each way, or loopback TCP with
//! 8 KiB socket buffers) and read everything. Stock libp2p-yamux stops moving bytes
//! for good: each end has read the other's ping, parked the reply and stopped
//! reading until the data frame it is writing has gone out, which needs the other
//! end to read. With our muxer on either end every byte arrives.
//!
//! The CI tests make the freeze deterministic: the writes are queued before the
//! connections first run, so each end's first ping reaches a peer that is already
//! stuck in the middle of a 16 KiB data frame. The long runs (`#[ignore]`) start
//! traffic only after the first ping exchange, so every freeze they count comes from
//! yamux's periodic pings under load:
//! `cargo test -p liquid-p2p --test yamux_freeze -- --ignored --nocapture`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::Poll,
    time::Duration,
};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, future::poll_fn};
use liquid_p2p::{
    YamuxConfig,
    libp2p::{
        self,
        core::{
            muxing::{StreamMuxerBox, StreamMuxerExt, SubstreamBox},
            upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade},
        },
    },
};
use tokio::{net::TcpSocket, task::JoinHandle, time::Instant};
use tokio_util::compat::TokioAsyncReadCompatExt;

const MESSAGE: usize = 64 * 1024;
/// Capacity of each direction of the in-memory duplex: less than one yamux data
/// frame (16 KiB), like a full socket.
const DUPLEX_CAPACITY: usize = 4 * 1024;
/// Capacity of each direction of the roomy duplex: more than the whole load of
/// `FREEZE_LOAD` each way (4 MiB and its frame headers), so no write can ever wait
/// for room and the freeze cannot happen whatever the scheduling. 1 MiB was not
/// enough: it is exactly the 4 × 256 KiB of stream windows yamux may send before
/// the reader acknowledges, so when the readers were starved (the suite under CPU
/// stress, scripts/flaky.sh) both directions filled and the stock control froze.
const ROOMY_CAPACITY: usize = 8 << 20;
/// SO_SNDBUF and SO_RCVBUF of both loopback sockets (Linux doubles them).
const TCP_BUFFER: u32 = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Muxer {
    /// `libp2p::yamux::Config::default()`, as in every stock libp2p swarm.
    Stock,
    /// `liquid_p2p::YamuxConfig::default()`.
    Ours,
}

#[derive(Debug, Clone, Copy)]
enum Transport {
    /// In-memory, `DUPLEX_CAPACITY` each way.
    Duplex,
    /// In-memory, `ROOMY_CAPACITY` each way: room for every byte of the load.
    RoomyDuplex,
    SmallTcp,
    /// Loopback TCP with the kernel's default buffers.
    Tcp,
}

#[derive(Debug, Clone, Copy)]
struct Load {
    /// Streams opened by each end, each with its own writer.
    streams: usize,
    /// Messages per stream; `None`: write until the run ends.
    messages: Option<usize>,
    /// Readers sleep this long after each `MESSAGE` bytes read.
    reader_pause: Duration,
    /// Queue the writes before the connections first run (deterministic freeze).
    queue_before_start: bool,
}

#[derive(Debug, Default)]
struct Report {
    /// Bytes read by the dialer and by the listener.
    delivered: [u64; 2],
    longest_gap: Duration,
    stalled: bool,
    /// After a stall: whether any byte moved in a further 5 s (a freeze: never).
    recovered: bool,
    finished: bool,
}

fn muxer_over<C>(muxer: Muxer, socket: C, dialer: bool) -> StreamMuxerBox
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    const NAME: &str = "/yamux/1.0.0";
    match muxer {
        Muxer::Stock => {
            let config = libp2p::yamux::Config::default();
            let muxer = if dialer {
                config.upgrade_outbound(socket, NAME).into_inner()
            } else {
                config.upgrade_inbound(socket, NAME).into_inner()
            };
            StreamMuxerBox::new(muxer.expect("stock yamux upgrade"))
        }
        Muxer::Ours => {
            let config = YamuxConfig::default();
            let muxer = if dialer {
                config.upgrade_outbound(socket, NAME).into_inner()
            } else {
                config.upgrade_inbound(socket, NAME).into_inner()
            };
            StreamMuxerBox::new(muxer.expect("our yamux upgrade"))
        }
    }
}

/// A connection: the dialer's and the listener's muxer over `transport`.
async fn connection(transport: Transport, muxers: [Muxer; 2]) -> [StreamMuxerBox; 2] {
    match transport {
        Transport::Duplex | Transport::RoomyDuplex => {
            let capacity = match transport {
                Transport::Duplex => DUPLEX_CAPACITY,
                _ => ROOMY_CAPACITY,
            };
            let (a, b) = tokio::io::duplex(capacity);
            [
                muxer_over(muxers[0], a.compat(), true),
                muxer_over(muxers[1], b.compat(), false),
            ]
        }
        Transport::SmallTcp | Transport::Tcp => {
            let small_socket = || {
                let socket = TcpSocket::new_v4().expect("socket");
                if let Transport::SmallTcp = transport {
                    socket.set_send_buffer_size(TCP_BUFFER).expect("SO_SNDBUF");
                    socket.set_recv_buffer_size(TCP_BUFFER).expect("SO_RCVBUF");
                }
                socket
            };
            let listener_socket = small_socket();
            listener_socket
                .bind("127.0.0.1:0".parse().expect("address"))
                .expect("bind");
            let listener = listener_socket.listen(1).expect("listen");
            let address = listener.local_addr().expect("local address");
            let (dialed, accepted) =
                tokio::join!(small_socket().connect(address), listener.accept());
            let (dialed, (accepted, _)) = (dialed.expect("connect"), accepted.expect("accept"));
            for s in [&dialed, &accepted] {
                s.set_nodelay(true).expect("nodelay");
            }
            [
                muxer_over(muxers[0], dialed.compat(), true),
                muxer_over(muxers[1], accepted.compat(), false),
            ]
        }
    }
}

/// Runs a muxer: accepts inbound streams (each read by a task adding to `delivered`)
/// and drives the connection until it closes or fails.
fn drive(
    mut muxer: StreamMuxerBox,
    load: Load,
    delivered: Arc<AtomicU64>,
) -> JoinHandle<Vec<JoinHandle<()>>> {
    tokio::spawn(async move {
        let mut readers = Vec::new();
        poll_fn(|cx| {
            loop {
                match muxer.poll_inbound_unpin(cx) {
                    Poll::Ready(Ok(stream)) => {
                        readers.push(tokio::spawn(read_all(
                            stream,
                            load.reader_pause,
                            Arc::clone(&delivered),
                        )));
                        continue;
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Pending => {}
                }
                match muxer.poll_unpin(cx) {
                    Poll::Ready(Ok(_)) => continue,
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Pending => return Poll::Pending,
                }
            }
        })
        .await;
        readers
    })
}

async fn read_all(mut stream: SubstreamBox, pause: Duration, delivered: Arc<AtomicU64>) {
    let mut buf = vec![0u8; MESSAGE];
    let mut since_pause = 0;
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                delivered.fetch_add(n as u64, Ordering::Relaxed);
                since_pause += n;
                if since_pause >= MESSAGE {
                    since_pause -= MESSAGE;
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

async fn write_messages(mut stream: SubstreamBox, messages: Option<usize>, done: Arc<AtomicUsize>) {
    let payload = vec![0x5a; MESSAGE];
    let mut written = 0;
    while messages.is_none_or(|m| written < m) {
        if stream.write_all(&payload).await.is_err() {
            return;
        }
        written += 1;
    }
    let _ = stream.close().await;
    done.fetch_add(1, Ordering::Relaxed);
}

/// One connection under two-way load until every message has arrived, `run_for`
/// has passed, or no byte has moved for `stall_after` (a stall).
async fn two_way_load(
    transport: Transport,
    muxers: [Muxer; 2],
    load: Load,
    run_for: Duration,
    stall_after: Duration,
) -> Report {
    let mut ends = connection(transport, muxers).await;
    let mut streams = [Vec::new(), Vec::new()];
    for (end, streams) in ends.iter_mut().zip(&mut streams) {
        for _ in 0..load.streams {
            // Opening a yamux stream does no I/O; the SYN goes with its first frame.
            let stream = poll_fn(|cx| end.poll_outbound_unpin(cx))
                .await
                .expect("open stream");
            streams.push(stream);
        }
    }
    let delivered = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    let writers_done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    let start_writers = |streams: &mut [Vec<SubstreamBox>; 2], tasks: &mut Vec<JoinHandle<()>>| {
        for stream in streams.iter_mut().flat_map(|s| s.drain(..)) {
            tasks.push(tokio::spawn(write_messages(
                stream,
                load.messages,
                Arc::clone(&writers_done),
            )));
        }
    };
    if load.queue_before_start {
        start_writers(&mut streams, &mut tasks);
        // Let every writer fill its stream's queue inside yamux.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The dialer's bytes are read by the listener and the other way round.
    let [dialer, listener] = ends;
    let drivers = [
        drive(dialer, load, Arc::clone(&delivered[1])),
        drive(listener, load, Arc::clone(&delivered[0])),
    ];
    if !load.queue_before_start {
        // The first ping exchange happens on an idle connection.
        tokio::time::sleep(Duration::from_millis(100)).await;
        start_writers(&mut streams, &mut tasks);
    }

    let expected = load.messages.map(|m| (m * load.streams * MESSAGE) as u64);
    let until = Instant::now() + run_for;
    let mut report = Report::default();
    let mut last_total = 0;
    let mut last_change = Instant::now();
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = Instant::now();
        report.delivered = [
            delivered[0].load(Ordering::Relaxed),
            delivered[1].load(Ordering::Relaxed),
        ];
        if let Some(expected) = expected
            && report.delivered == [expected; 2]
        {
            report.finished = true;
            break;
        }
        let total = report.delivered[0] + report.delivered[1];
        if total != last_total {
            last_total = total;
            last_change = now;
        }
        report.longest_gap = report.longest_gap.max(now - last_change);
        if now - last_change >= stall_after {
            report.stalled = true;
            tokio::time::sleep(Duration::from_secs(5)).await;
            let after = delivered[0].load(Ordering::Relaxed) + delivered[1].load(Ordering::Relaxed);
            report.recovered = after != total;
            break;
        }
    }
    for task in tasks {
        task.abort();
    }
    for driver in drivers {
        driver.abort();
        if let Ok(readers) = driver.await {
            readers.iter().for_each(JoinHandle::abort);
        }
    }
    report
}

/// 4 streams each way, 16 messages of 64 KiB each (4 MiB each way), queued before
/// the connection runs.
const FREEZE_LOAD: Load = Load {
    streams: 4,
    messages: Some(16),
    reader_pause: Duration::from_millis(1),
    queue_before_start: true,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_yamux_freezes_when_both_ends_write_into_full_buffers() {
    let report = two_way_load(
        Transport::Duplex,
        [Muxer::Stock, Muxer::Stock],
        FREEZE_LOAD,
        Duration::from_secs(10),
        Duration::from_secs(2),
    )
    .await;
    println!("stock: {report:?}");
    assert!(report.stalled && !report.finished, "no freeze: {report:?}");
    assert!(!report.recovered, "bytes moved again: {report:?}");
    // Only what fitted before both ends parked their ping replies got through.
    assert!(
        report.delivered.iter().all(|&d| d < MESSAGE as u64),
        "{report:?}"
    );

    // Control: the same load with room in the transport goes through.
    let report = two_way_load(
        Transport::RoomyDuplex,
        [Muxer::Stock, Muxer::Stock],
        FREEZE_LOAD,
        Duration::from_secs(20),
        Duration::from_secs(2),
    )
    .await;
    println!("stock, roomy transport: {report:?}");
    assert!(report.finished && !report.stalled, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_yamux_delivers_everything_under_the_same_load() {
    let report = two_way_load(
        Transport::Duplex,
        [Muxer::Ours, Muxer::Ours],
        FREEZE_LOAD,
        Duration::from_secs(20),
        Duration::from_secs(2),
    )
    .await;
    println!("ours: {report:?}");
    assert!(report.finished && !report.stalled, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_end_with_our_yamux_is_enough_against_a_stock_peer() {
    for muxers in [[Muxer::Stock, Muxer::Ours], [Muxer::Ours, Muxer::Stock]] {
        let report = two_way_load(
            Transport::Duplex,
            muxers,
            FREEZE_LOAD,
            Duration::from_secs(20),
            Duration::from_secs(2),
        )
        .await;
        println!("{muxers:?}: {report:?}");
        assert!(report.finished && !report.stalled, "{muxers:?}: {report:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_yamux_keeps_moving_over_tcp_with_small_socket_buffers() {
    let load = Load {
        streams: 32,
        messages: None,
        reader_pause: Duration::from_millis(1),
        queue_before_start: false,
    };
    let report = two_way_load(
        Transport::SmallTcp,
        [Muxer::Ours, Muxer::Ours],
        load,
        Duration::from_secs(4),
        Duration::from_secs(2),
    )
    .await;
    println!("ours over small TCP buffers: {report:?}");
    assert!(!report.stalled, "{report:?}");
    assert!(report.delivered.iter().all(|&d| d > 0), "{report:?}");
}

/// The two-way load pattern of `watchdog.rs` (32 writers each way, 64 KiB messages,
/// readers pausing 1 ms per message) for `run_for`; a connection that moves no byte
/// for 3 s is counted as a stall and replaced by a new one.
async fn long_run(transport: Transport, muxer: Muxer, run_for: Duration) -> (Report, u32, u32) {
    let load = Load {
        streams: 32,
        messages: None,
        reader_pause: Duration::from_millis(1),
        queue_before_start: false,
    };
    let until = Instant::now() + run_for;
    let mut total = Report::default();
    let mut stalls = 0;
    let mut recovered = 0;
    while Instant::now() < until {
        let report = two_way_load(
            transport,
            [muxer, muxer],
            load,
            until - Instant::now(),
            Duration::from_secs(3),
        )
        .await;
        total.delivered[0] += report.delivered[0];
        total.delivered[1] += report.delivered[1];
        if report.stalled {
            stalls += 1;
            recovered += u32::from(report.recovered);
        } else {
            total.longest_gap = total.longest_gap.max(report.longest_gap);
        }
    }
    (total, stalls, recovered)
}

fn long_runs_from_env() -> usize {
    std::env::var("YAMUX_FREEZE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

async fn long_runs(transport: Transport, muxer: Muxer) -> u32 {
    let mut stalls = 0;
    for run in 0..long_runs_from_env() {
        let (report, run_stalls, recovered) =
            long_run(transport, muxer, Duration::from_secs(60)).await;
        println!(
            "{transport:?} {muxer:?} run {run}: {run_stalls} stalls ({recovered} moved again \
             within 5 s), MiB delivered {:?}, longest gap outside stalls {:?}",
            report.delivered.map(|d| d >> 20),
            report.longest_gap
        );
        stalls += run_stalls;
    }
    stalls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long run: 10 × 60 s (YAMUX_FREEZE_RUNS to change)"]
async fn our_yamux_long_runs_over_tcp_with_small_socket_buffers() {
    let stalls = long_runs(Transport::SmallTcp, Muxer::Ours).await;
    assert_eq!(stalls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long run: 10 × 60 s (YAMUX_FREEZE_RUNS to change)"]
async fn stock_yamux_long_runs_over_tcp_with_small_socket_buffers() {
    let stalls = long_runs(Transport::SmallTcp, Muxer::Stock).await;
    println!("stock yamux: {stalls} stalls in total");
    assert!(stalls > 0, "stock yamux never stalled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long run: 10 × 60 s (YAMUX_FREEZE_RUNS to change)"]
async fn our_yamux_long_runs_over_a_small_duplex() {
    let stalls = long_runs(Transport::Duplex, Muxer::Ours).await;
    assert_eq!(stalls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long run: 10 × 60 s (YAMUX_FREEZE_RUNS to change)"]
async fn stock_yamux_long_runs_over_a_small_duplex() {
    let stalls = long_runs(Transport::Duplex, Muxer::Stock).await;
    println!("stock yamux: {stalls} stalls in total");
    assert!(stalls > 0, "stock yamux never stalled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: 5 × 10 s per muxer, alternating"]
async fn throughput_of_stock_and_our_yamux_alternating() {
    let load = Load {
        streams: 32,
        messages: None,
        reader_pause: Duration::from_millis(1),
        queue_before_start: false,
    };
    for transport in [Transport::Tcp, Transport::SmallTcp] {
        let mut mib = [0u64; 2];
        for _ in 0..5 {
            for (i, muxer) in [Muxer::Stock, Muxer::Ours].into_iter().enumerate() {
                let report = two_way_load(
                    transport,
                    [muxer, muxer],
                    load,
                    Duration::from_secs(10),
                    Duration::from_secs(3),
                )
                .await;
                assert!(!report.stalled || muxer == Muxer::Stock, "{report:?}");
                mib[i] += (report.delivered[0] + report.delivered[1]) >> 20;
            }
        }
        println!(
            "{transport:?}: stock {} MiB/s, ours {} MiB/s (both directions together)",
            mib[0] / 50,
            mib[1] / 50
        );
    }
}
