//! Hostile networks: one address that opens connections by the thousand (silent
//! sockets, garbage before the handshake) cannot keep others out, the refusals are
//! reported without flooding the application, and a peer pushing protocol lists
//! without pause costs a bounded number of events. Attacks come through real
//! sockets from a second loopback address (127.0.0.2), newcomers from 127.0.0.1.

mod common;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use common::*;
use futures::AsyncWriteExt;
use liquid_p2p::{
    AddressScope, AdmissionConfig, AdmissionStage, Config, EXCHANGE_PROTOCOL, Event, Host,
    RefusalReason,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt as _},
    net::TcpSocket,
    sync::Semaphore,
    time::Instant,
};

/// The attacker's address; Linux routes all of 127/8 to loopback.
const ATTACKER: &str = "127.0.0.2";

fn socket_of(host: &Host) -> SocketAddr {
    let text = host.listen_addrs()[0].to_string();
    let mut parts = text.split('/');
    let ip = parts.nth(2).expect("ip");
    let port = parts.nth(1).expect("port");
    format!("{ip}:{port}").parse().expect("socket address")
}

async fn attacker_socket(target: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{ATTACKER}:0").parse().expect("attacker address"))?;
    socket.connect(target).await
}

/// What one attacking connection does once connected.
#[derive(Clone, Copy)]
enum Attack {
    /// Sends nothing and waits to be dropped.
    Silent,
    /// Sends multistream-select proposals without end.
    Proposals,
}

/// Opens `total` connections from the attacker's address, at most `at_once` open,
/// each reopened as soon as the victim drops it. Returns the number opened.
fn attack(
    target: SocketAddr,
    attack: Attack,
    total: usize,
    at_once: usize,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(at_once));
        let opened = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..total {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                break;
            };
            let opened = Arc::clone(&opened);
            tasks.push(tokio::spawn(async move {
                let _permit = permit;
                let Ok(mut stream) = attacker_socket(target).await else {
                    return;
                };
                opened.fetch_add(1, Ordering::Relaxed);
                let hold = Duration::from_secs(15);
                match attack {
                    Attack::Silent => {
                        let mut buf = [0u8; 64];
                        let _ = tokio::time::timeout(hold, async {
                            while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
                        })
                        .await;
                    }
                    Attack::Proposals => {
                        let mut bytes = Vec::new();
                        push_message(&mut bytes, b"/multistream/1.0.0\n");
                        let _ = stream.write_all(&bytes).await;
                        let _ = tokio::time::timeout(hold, async {
                            for n in 0u64.. {
                                let mut proposal = Vec::new();
                                push_message(
                                    &mut proposal,
                                    format!("/garbage/{n:08}\n").as_bytes(),
                                );
                                if stream.write_all(&proposal).await.is_err() {
                                    return;
                                }
                            }
                        })
                        .await;
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        opened.load(Ordering::Relaxed)
    })
}

/// One length-prefixed multistream-select message.
fn push_message(out: &mut Vec<u8>, message: &[u8]) {
    let mut buf = unsigned_varint::encode::usize_buffer();
    out.extend_from_slice(unsigned_varint::encode::usize(message.len(), &mut buf));
    out.extend_from_slice(message);
}

/// Fresh hosts from 127.0.0.1 dial `victim` one after another; returns how long
/// each took to be connected with its exchange done.
async fn newcomers(victim: &Host, count: usize) -> Vec<Duration> {
    let mut times = Vec::new();
    for _ in 0..count {
        let newcomer = host(Config::default()).await;
        let start = Instant::now();
        connect(&newcomer, victim).await;
        times.push(start.elapsed());
        newcomer.shutdown().await;
    }
    times
}

/// Sums the `count` of `Refused` events matching `pred` received so far; also
/// returns how many events carried them.
fn refused(
    events: &mut liquid_p2p::Events,
    pred: impl Fn(&RefusalReason, AdmissionStage) -> bool,
) -> (u64, usize) {
    let (mut total, mut lines) = (0, 0);
    while let Some(e) = events.try_recv() {
        if let Event::Refused {
            reason,
            stage,
            count,
            ..
        } = e
            && pred(&reason, stage)
        {
            total += count;
            lines += 1;
        }
    }
    (total, lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_silent_sockets_from_one_address_do_not_keep_a_newcomer_waiting() {
    let victim = host(Config::default()).await;
    let mut events = victim.control().events();
    let attacker = attack(socket_of(&victim), Attack::Silent, 1000, 200);
    // Let the attack fill what it can.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let times = newcomers(&victim, 5).await;
    println!("newcomers connected in {times:?} during the attack");
    for t in &times {
        assert!(
            *t < Duration::from_secs(1),
            "a newcomer waited {t:?}: {times:?}"
        );
    }
    let opened = attacker.await.expect("attacker");
    assert!(opened >= 1000, "the attack ran ({opened} connections)");
    // Every attacking connection beyond the address's share was turned away before
    // any handshake, and reported in a handful of aggregated events.
    let limit = AdmissionConfig::default().max_pending_per_ip;
    tokio::time::sleep(victim_report_window()).await;
    let (count, lines) = refused(&mut events, |reason, stage| {
        stage == AdmissionStage::Pending
            && *reason
                == RefusalReason::PendingLimit {
                    scope: AddressScope::Ip,
                    limit,
                }
    });
    println!("{count} refusals at the pending stage in {lines} events");
    assert!(count >= 500, "{count} refusals reported");
    assert!(
        lines <= 2 * 20,
        "{lines} events for {count} refusals: not aggregated"
    );
    victim.shutdown().await;
}

fn victim_report_window() -> Duration {
    AdmissionConfig::default().report_window + Duration::from_millis(200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_socket_is_dropped_at_the_handshake_deadline_and_reported() {
    let deadline = Duration::from_millis(800);
    let victim = host(
        Config::default()
            .with_admission(AdmissionConfig::default().with_handshake_timeout(deadline)),
    )
    .await;
    let mut events = victim.control().events();
    // Taken before connecting: the victim's deadline runs from its accept, which
    // may come before this task sees its connect return (seen under CPU stress).
    let start = Instant::now();
    let mut stream = attacker_socket(socket_of(&victim)).await.expect("connect");
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    })
    .await;
    assert!(closed.is_ok(), "the silent socket was never dropped");
    let held = start.elapsed();
    assert!(
        held >= deadline && held < deadline + Duration::from_secs(2),
        "dropped after {held:?}, deadline {deadline:?}"
    );
    let e = wait_for(&mut events, Duration::from_secs(3), |e| {
        matches!(e, Event::Refused { .. })
    })
    .await;
    assert!(
        matches!(
            e,
            Event::Refused {
                stage: AdmissionStage::Handshake,
                reason: RefusalReason::HandshakeTimeout { after },
                ..
            } if after == deadline
        ),
        "{e:?}"
    );
    victim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_protocol_proposals_are_cut_off_at_the_byte_budget() {
    let victim = host(Config::default()).await;
    let mut events = victim.control().events();
    let attackers = attack(socket_of(&victim), Attack::Proposals, 200, 50);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let times = newcomers(&victim, 3).await;
    println!("newcomers connected in {times:?} during the proposal flood");
    for t in &times {
        assert!(*t < Duration::from_secs(1), "a newcomer waited {t:?}");
    }
    let start = Instant::now();
    attackers.await.expect("attackers");
    // Each connection is dropped once it has sent its 64 KiB: long before the
    // 15 s each would go on for.
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "proposal floods were read for {:?}",
        start.elapsed()
    );
    tokio::time::sleep(victim_report_window()).await;
    let limit = AdmissionConfig::default().handshake_max_bytes;
    let (count, lines) = refused(&mut events, |reason, stage| {
        stage == AdmissionStage::Handshake && *reason == RefusalReason::HandshakeTooLarge { limit }
    });
    println!("{count} handshakes cut off at {limit} bytes, in {lines} events");
    assert!(count >= 10, "{count} cut off");
    victim.shutdown().await;
}

/// A peer that pushes 1,024-entry protocol lists as fast as it can: the victim
/// applies at most one list per `protocol_push_delay`, and a list that changes
/// more than 16 protocols is one `PeerProtocols` event, not one per protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_pushing_protocol_lists_without_pause_costs_a_bounded_number_of_events() {
    let victim = host(Config::default()).await;
    let mut events = victim.control().events();
    let (plain, mut control) = plain_swarm(victim.listen_addrs()[0].clone()).await;
    let started = Instant::now();
    let mut pushes = 0u32;
    // Every step is bounded: libp2p-stream's `open_stream` waits forever once its
    // connection is gone (it queues the request for a dial it may never make),
    // and this loop once hung a whole suite run that way under CPU stress.
    let step = Duration::from_secs(2);
    while started.elapsed() < Duration::from_secs(2) {
        let list: Vec<String> = (0..1024).map(|i| format!("/p/{pushes}/{i}")).collect();
        let opened = tokio::time::timeout(
            step,
            control.open_stream(victim.local_peer_id(), EXCHANGE_PROTOCOL),
        )
        .await;
        let mut stream = match opened {
            Ok(Ok(stream)) => stream,
            Ok(Err(_)) => continue,
            Err(_) => panic!(
                "no stream opened within {step:?} after {pushes} pushes: connected peers \
                 of the victim: {:?}",
                victim.control().connected_peers()
            ),
        };
        let frame = liquid_p2p::low_level::exchange::encode_protocol_list(&list);
        let _ = tokio::time::timeout(step, stream.write_all(&frame)).await;
        let _ = tokio::time::timeout(step, stream.close()).await;
        pushes += 1;
    }
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut lists, mut per_protocol) = (0u32, 0u32);
    while let Some(e) = events.try_recv() {
        match e {
            Event::PeerProtocols { peer, added, .. } if peer == plain => {
                lists += 1;
                assert!(added.len() <= 1024);
            }
            Event::ProtocolSupported { peer, .. } | Event::ProtocolUnsupported { peer, .. }
                if peer == plain =>
            {
                per_protocol += 1;
            }
            _ => {}
        }
    }
    let delay = Config::default().protocol_push_delay;
    let allowed = (elapsed.as_millis() / delay.as_millis()) as u32 + 2;
    println!(
        "{pushes} pushes in {elapsed:?}: {lists} lists applied, {per_protocol} per-protocol events"
    );
    assert!(
        pushes > allowed,
        "the peer pushed faster than the delay ({pushes})"
    );
    assert!(
        lists <= allowed,
        "{lists} lists applied in {elapsed:?}, at most {allowed} allowed"
    );
    assert_eq!(
        per_protocol, 0,
        "1,024 changes per list are one event each list"
    );
    assert!(lists >= 1);
    victim.shutdown().await;
}
