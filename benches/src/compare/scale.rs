//! Many liquid hosts in one process, full mesh: the time until every host has
//! `PeerConnected` (protocol exchange done) for every other, then the aggregate
//! rate of 256 B messages, each host sending to all its peers, every message
//! accounted for in one ledger.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::future::join_all;
use liquid_p2p::{AdmissionConfig, Config, Event, Host, Inbox, PeerId};

use super::{
    BenchError, Context, Transport,
    harness::{Failures, Tasks, Timing, drain},
    ledger::{Delivery, Ledger, random_payload},
    liquid::PROTOCOL,
};

/// Sending tasks per host.
pub const WORKERS_PER_HOST: usize = 4;

/// Outcome of the scale run.
#[derive(Debug, Clone)]
pub struct Scale {
    /// Hosts in the mesh.
    pub hosts: usize,
    /// Seconds from the first dial until every pair was connected.
    pub connect_s: Result<f64, BenchError>,
    /// Aggregate messages per second received by all hosts.
    pub messages_per_s: Result<f64, BenchError>,
    /// Failures while sending, if any.
    pub note: Option<String>,
    /// What became of the messages, if traffic ran.
    pub delivery: Option<Delivery>,
}

/// Runs the mesh of `n` hosts (each bounded by `timing`, the whole by the caller).
pub async fn run(
    n: usize,
    payload_len: usize,
    timing: &Timing,
    connect_limit: Duration,
    seed: u64,
) -> Scale {
    let mut hosts = Vec::new();
    let outcome = mesh(n, payload_len, timing, connect_limit, seed, &mut hosts).await;
    let _ = tokio::time::timeout(
        timing.teardown,
        join_all(hosts.iter().map(|h: &Host| h.shutdown())),
    )
    .await;
    match outcome {
        Ok(scale) => scale,
        Err(e) => Scale {
            hosts: n,
            connect_s: Err(e.clone()),
            messages_per_s: Err(e),
            note: None,
            delivery: None,
        },
    }
}

async fn mesh(
    n: usize,
    payload_len: usize,
    timing: &Timing,
    connect_limit: Duration,
    seed: u64,
    hosts: &mut Vec<Host>,
) -> Result<Scale, BenchError> {
    if n < 2 {
        return Err(BenchError::new("a mesh needs at least two hosts"));
    }
    // Every host dials from 127.0.0.1, so one host takes up to n - 1 handshakes
    // from a single IP at once: the per-IP and per-subnet handshake limits, meant
    // for peers on many machines (16 and 32), are raised to the mesh's size.
    let config = Config::default().with_max_peers(n).with_admission(
        AdmissionConfig::default()
            .with_max_pending_per_ip(n)
            .with_max_pending_per_subnet(n),
    );
    let mut inboxes: Vec<Inbox> = Vec::new();
    for _ in 0..n {
        let host = Host::builder()
            .config(config.clone())
            .listen_on(Transport::Tcp.listen_addr()?)
            .build()
            .await
            .ctx("host")?;
        inboxes.push(host.control().register_protocol(PROTOCOL).ctx("register")?);
        hosts.push(host);
    }
    let addresses = hosts
        .iter()
        .map(|h| h.listen_addrs().into_iter().next().ctx("no listen address"))
        .collect::<Result<Vec<_>, _>>()?;
    // Every host counts its distinct connected peers.
    let mut waiters = Vec::new();
    for host in hosts.iter() {
        let mut events = host.control().events();
        waiters.push(tokio::spawn(async move {
            let mut peers = std::collections::HashSet::new();
            while peers.len() < n - 1 {
                match events.recv().await {
                    Some(Event::PeerConnected { peer }) => {
                        peers.insert(peer);
                    }
                    Some(_) => {}
                    None => break,
                }
            }
            peers.len()
        }));
    }
    let start = Instant::now();
    // Host i dials every host after it: one connection per pair.
    let dials = hosts.iter().enumerate().map(|(i, host)| {
        let targets = addresses[i + 1..].to_vec();
        async move {
            join_all(targets.into_iter().map(|a| host.dial(a)))
                .await
                .into_iter()
                .filter(Result::is_err)
                .count()
        }
    });
    let connected = tokio::time::timeout(connect_limit, async {
        let failed: usize = join_all(dials).await.into_iter().sum();
        let counts = join_all(waiters).await;
        (failed, counts)
    })
    .await;
    let connect_s = match connected {
        Ok((0, counts)) if counts.iter().all(|c| matches!(c, Ok(c) if *c == n - 1)) => {
            Ok(start.elapsed().as_secs_f64())
        }
        Ok((failed, _)) => Err(BenchError::new(format!(
            "{failed} dials failed or a host missed a peer"
        ))),
        Err(_) => Err(BenchError::new(format!(
            "mesh not complete within {connect_limit:?}"
        ))),
    };
    let connect_s = connect_s?;
    let (messages_per_s, note, delivery) = traffic(hosts, inboxes, payload_len, timing, seed).await;
    Ok(Scale {
        hosts: n,
        connect_s: Ok(connect_s),
        messages_per_s,
        note,
        delivery: Some(delivery),
    })
}

/// Every host sends to all its peers round-robin from `WORKERS_PER_HOST` tasks;
/// sender `i × WORKERS_PER_HOST + w` is task `w` of host `i`.
async fn traffic(
    hosts: &[Host],
    inboxes: Vec<Inbox>,
    payload_len: usize,
    timing: &Timing,
    seed: u64,
) -> (Result<f64, BenchError>, Option<String>, Delivery) {
    let ledger = Arc::new(Ledger::new(hosts.len() * WORKERS_PER_HOST, false));
    let failures = Arc::new(Failures::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Tasks::default();
    for mut inbox in inboxes {
        let ledger = ledger.clone();
        readers.push(tokio::spawn(async move {
            while let Some(m) = inbox.recv().await {
                ledger.record(&m.payload);
            }
        }));
    }
    let ids: Vec<PeerId> = hosts.iter().map(|h| h.local_peer_id()).collect();
    let mut senders = Tasks::default();
    for (i, host) in hosts.iter().enumerate() {
        let peers: Vec<PeerId> = ids.iter().copied().filter(|p| *p != ids[i]).collect();
        for w in 0..WORKERS_PER_HOST {
            let sender = i * WORKERS_PER_HOST + w;
            let (control, peers, ledger, failures, stop) = (
                host.control().clone(),
                peers.clone(),
                ledger.clone(),
                failures.clone(),
                stop.clone(),
            );
            let mut payload = random_payload(payload_len, seed.wrapping_add(sender as u64));
            let op_timeout = timing.op_timeout;
            senders.push(tokio::spawn(async move {
                let mut next = w;
                while !stop.load(Ordering::Relaxed) {
                    let peer = peers[next % peers.len()];
                    next += 1;
                    let seq = ledger.stamp(sender, &mut payload);
                    let sent = tokio::time::timeout(
                        op_timeout,
                        control.send(peer, PROTOCOL, &payload[..]),
                    )
                    .await;
                    match sent {
                        Ok(Ok(())) => ledger.confirm(sender, seq),
                        Ok(Err(e)) => {
                            failures.record(e.to_string());
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        Err(_) => failures.record("a send timed out"),
                    }
                }
            }));
        }
    }
    tokio::time::sleep(timing.warmup).await;
    let (m0, _) = ledger.received();
    let start = Instant::now();
    tokio::time::sleep(timing.measure).await;
    let (m1, _) = ledger.received();
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let cut_off = senders.join(timing.op_timeout).await;
    if cut_off > 0 {
        failures.record(format!("{cut_off} senders cut off at the end of the run"));
    }
    drain(&ledger, timing.drain).await;
    let rate = if m1 > m0 {
        Ok((m1 - m0) as f64 / elapsed)
    } else {
        Err(BenchError::new(
            failures
                .first()
                .unwrap_or_else(|| "no message received".into()),
        ))
    };
    (rate, failures.note(), ledger.delivery())
}
