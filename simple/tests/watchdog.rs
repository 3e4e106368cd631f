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
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use common::*;
use liquid_p2p::{Config, Control, Error, Event, Host, PeerId};
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

#[cfg(feature = "quic")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_two_way_load_over_quic_never_stays_frozen() {
    let report = two_way_load(QUIC, Duration::from_secs(8)).await;
    check(&report, "quic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long run: 10 × 60 s per transport"]
async fn heavy_two_way_load_long_runs() {
    let mut transports = vec![TCP];
    if cfg!(feature = "quic") {
        transports.push(QUIC);
    }
    for transport in transports {
        for run in 0..10 {
            let report = two_way_load(transport, Duration::from_secs(60)).await;
            println!("run {run}");
            check(&report, transport);
        }
    }
}
