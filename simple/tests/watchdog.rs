//! Heavy two-way load (both hosts, 32 sender tasks each, 64 KiB messages, readers
//! that sleep 1 ms per message) must never leave a connection frozen: either
//! traffic flows, or the stall watchdog closes the connection within
//! `stall_timeout` and traffic resumes after a redial.
//!
//! The short runs are part of the test suite on TCP and QUIC; the long run
//! (10 × 60 s per transport) is `#[ignore]`d:
//! `cargo test -p liquid-p2p --test watchdog -- --ignored --nocapture`.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use common::*;
use liquid_p2p::{Config, Control, Error, Event, Host, PeerId, PoolConfig};
use tokio::time::Instant;

const PROTO: &str = "/test/load/1";
const SENDERS: usize = 32;
const MESSAGE: usize = 64 * 1024;
const STALL: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct LoadReport {
    delivered: [usize; 2],
    longest_gap: [Duration; 2],
    stalls: u64,
    reconnects: usize,
}

fn load_config() -> Config {
    Config::default().with_stall_timeout(STALL)
}

/// Counts deliveries, sleeping 1 ms per message like a slow application.
fn slow_reader(host: &Host, delivered: Arc<AtomicUsize>) {
    let mut inbox = host.control().register_protocol(PROTO).expect("register");
    tokio::spawn(async move {
        while inbox.recv().await.is_some() {
            delivered.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
}

fn senders(control: Control, to: PeerId, until: Instant) -> Vec<tokio::task::JoinHandle<()>> {
    (0..SENDERS)
        .map(|_| {
            let control = control.clone();
            tokio::spawn(async move {
                let payload = vec![0x5a; MESSAGE];
                while Instant::now() < until {
                    match control.send(to, PROTO, &payload).await {
                        Ok(()) => {}
                        Err(Error::ShutDown) => return,
                        // Closed, stalled or not (yet) reconnected: try again shortly.
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            })
        })
        .collect()
}

async fn two_way_load(transport: &str, run_for: Duration) -> LoadReport {
    let a = host_on(transport, load_config()).await;
    let b = host_on(transport, load_config()).await;
    let delivered = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
    slow_reader(&a, Arc::clone(&delivered[0]));
    slow_reader(&b, Arc::clone(&delivered[1]));
    let a_id = connect(&b, &a).await;
    let b_id = b.local_peer_id();

    let stalls = Arc::new(AtomicU64::new(0));
    for host in [&a, &b] {
        let mut events = host.control().events();
        let stalls = Arc::clone(&stalls);
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                if let Event::ConnectionStalled { .. } = e {
                    stalls.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }

    let until = Instant::now() + run_for;
    let mut tasks = senders(a.control().clone(), b_id, until);
    tasks.extend(senders(b.control().clone(), a_id, until));

    // Watch progress; B redials whenever the connection is gone.
    let mut last = [0usize; 2];
    let mut last_change = [Instant::now(); 2];
    let mut longest_gap = [Duration::ZERO; 2];
    let mut reconnects = 0;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = Instant::now();
        for side in 0..2 {
            let n = delivered[side].load(Ordering::Relaxed);
            if n != last[side] {
                last[side] = n;
                last_change[side] = now;
            }
            longest_gap[side] = longest_gap[side].max(now - last_change[side]);
        }
        if b.control().pool_stats(&a_id).is_empty()
            && b.dial(a.listen_addrs()[0].clone()).await.is_ok()
        {
            reconnects += 1;
        }
    }
    for t in tasks {
        t.await.expect("sender");
    }
    a.shutdown().await;
    b.shutdown().await;
    LoadReport {
        delivered: [
            delivered[0].load(Ordering::Relaxed),
            delivered[1].load(Ordering::Relaxed),
        ],
        longest_gap,
        stalls: stalls.load(Ordering::Relaxed),
        reconnects,
    }
}

fn check(report: &LoadReport, transport: &str) {
    println!(
        "{transport}: delivered {:?}, longest gap {:?}, stalls {}, reconnects {}",
        report.delivered, report.longest_gap, report.stalls, report.reconnects
    );
    // Detection takes at most STALL plus one watchdog period; the redial and pool
    // refill follow within a second or two.
    let bound = STALL + Duration::from_secs(4);
    for side in 0..2 {
        assert!(
            report.delivered[side] > 0,
            "{transport}: no traffic: {report:?}"
        );
        assert!(
            report.longest_gap[side] <= bound,
            "{transport}: traffic frozen for {:?}: {report:?}",
            report.longest_gap[side]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_two_way_load_over_tcp_never_stays_frozen() {
    let report = two_way_load(TCP, Duration::from_secs(8)).await;
    check(&report, "tcp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_two_way_load_over_quic_never_stays_frozen() {
    let report = two_way_load(QUIC, Duration::from_secs(8)).await;
    check(&report, "quic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long run: 10 × 60 s per transport"]
async fn heavy_two_way_load_long_runs() {
    for transport in [TCP, QUIC] {
        for run in 0..10 {
            let report = two_way_load(transport, Duration::from_secs(60)).await;
            println!("run {run}");
            check(&report, transport);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbox_nobody_reads_is_backpressure_not_a_stall() {
    // The receiver does not read its inbox: its queue fills, its streams stop
    // being read and flow control blocks the sender's writes. The transport
    // still moves (the receiver's yamux reads its socket), so this is a slow
    // application: its sender gets `Backpressure`, the connection stays.
    let config = load_config()
        .with_handler_queue_len(1)
        .with_pool(PoolConfig::default().with_send_timeout(STALL / 2));
    let a = host(config.clone()).await;
    let b = host(config).await;
    let mut inbox = a.control().register_protocol(PROTO).expect("register");
    let a_id = connect(&b, &a).await;
    let mut events = b.control().events();
    let mut a_events = a.control().events();
    let stuck = {
        let control = b.control().clone();
        tokio::spawn(async move {
            let payload = vec![1u8; 1 << 20];
            let mut sent = 0;
            loop {
                match control.send(a_id, PROTO, &payload).await {
                    Ok(()) => sent += 1,
                    Err(e) => return (sent, e),
                }
            }
        })
    };
    let (sent, err) = tokio::time::timeout(STALL * 3, stuck)
        .await
        .expect("the sender hears of it")
        .expect("task");
    assert!(
        matches!(&err, Error::Backpressure { protocol, .. } if protocol == PROTO),
        "{err}"
    );
    // Three stall timeouts without a close.
    tokio::time::sleep(STALL * 3).await;
    for events in [&mut events, &mut a_events] {
        while let Some(e) = events.try_recv() {
            assert!(
                !matches!(
                    e,
                    Event::ConnectionStalled { .. } | Event::ConnectionClosed { .. }
                ),
                "{e:?}"
            );
        }
    }
    assert_eq!(b.control().connected_peers(), vec![a_id]);
    // Every acknowledged message is there once the application reads.
    for _ in 0..sent {
        tokio::time::timeout(Duration::from_secs(5), inbox.recv())
            .await
            .expect("acknowledged message delivered")
            .expect("inbox open");
    }
    b.control()
        .send(a_id, PROTO, b"after")
        .await
        .expect("the connection still carries messages");
    a.shutdown().await;
    b.shutdown().await;
}

/// A TCP relay between a dialer and `target` that can be frozen: it then stops
/// reading both sockets (and writing), as a peer whose process is stopped would.
async fn freezable_relay(target: std::net::SocketAddr, frozen: Arc<AtomicBool>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A small receive buffer, so that what the frozen relay holds is small
    // (accepted sockets inherit it).
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(64 * 1024).expect("buffer size");
    socket
        .bind(([127, 0, 0, 1], 0).into())
        .expect("relay binds");
    let listener = socket.listen(16).expect("relay listens");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                continue;
            };
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            for (mut from, mut to) in [(ri, wo), (ro, wi)] {
                let frozen = Arc::clone(&frozen);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        while frozen.load(Ordering::Relaxed) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        match from.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if to.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transport_that_stops_moving_bytes_is_closed_as_stalled() {
    // Long pings and send timeout: the stall, not a dead-peer check or a
    // backpressure error, is what this test waits for.
    let config = load_config()
        .with_ping_interval(Duration::from_secs(60))
        .with_pool(PoolConfig::default().with_send_timeout(Duration::from_secs(60)));
    let a = host(config.clone()).await;
    let b = host(config).await;
    let _inbox = a.control().register_protocol(PROTO).expect("register");
    let a_port = a.listen_addrs()[0]
        .iter()
        .find_map(|p| match p {
            liquid_p2p::libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .expect("tcp port");
    let frozen = Arc::new(AtomicBool::new(false));
    let relay = freezable_relay(([127, 0, 0, 1], a_port).into(), Arc::clone(&frozen)).await;
    let a_id = a.local_peer_id();
    b.dial(address(relay, a_id))
        .await
        .expect("dial through the relay");
    wait_until(Duration::from_secs(5), || {
        b.control().peer_protocols(&a_id).is_some()
    })
    .await;
    let mut events = b.control().events();
    // Enough senders that what they may write when the relay freezes (a stream
    // window, 256 KiB, each) is more than the kernel buffers take: bytes then
    // wait for the socket. The streams are opened while the relay still works.
    let stuck: Vec<_> = (0..SENDERS)
        .map(|_| {
            let control = b.control().clone();
            tokio::spawn(async move {
                let payload = vec![1u8; 1 << 20];
                loop {
                    if let Err(e) = control.send(a_id, PROTO, &payload).await {
                        return e;
                    }
                }
            })
        })
        .collect();
    wait_until(Duration::from_secs(10), || {
        b.control()
            .pool_stats(&a_id)
            .iter()
            .any(|s| s.borrowed >= SENDERS)
    })
    .await;
    frozen.store(true, Ordering::Relaxed);
    let frozen_at = Instant::now();
    let e = wait_for(&mut events, STALL * 5, |e| {
        matches!(e, Event::ConnectionStalled { .. })
    })
    .await;
    assert!(matches!(e, Event::ConnectionStalled { peer, .. } if peer == a_id));
    assert!(frozen_at.elapsed() >= STALL);
    for sender in stuck {
        let err = tokio::time::timeout(Duration::from_secs(5), sender)
            .await
            .expect("blocked sender released")
            .expect("task");
        assert!(
            matches!(
                err,
                Error::ConnectionStalled { .. } | Error::NotConnected { .. }
            ),
            "{err}"
        );
    }
    assert_eq!(b.inbound_stream_count(), 0);
    a.shutdown().await;
    b.shutdown().await;
}
