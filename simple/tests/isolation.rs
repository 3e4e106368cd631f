//! Protocol isolation end to end: a protocol whose consumer stops reading holds up
//! neither another protocol nor the connection, and loses nothing it acknowledged.

mod common;

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use common::*;
use liquid_p2p::{Config, Error, Event, Host, Inbox, PeerId};
use tokio::time::{Instant, MissedTickBehavior};

const A: &str = "/test/isolation/a";
const B: &str = "/test/isolation/b";
const SENDERS: u64 = 8;
/// Each B sender sends one message every this long: 1,600 messages/s in all.
const B_PERIOD: Duration = Duration::from_millis(5);
/// How long A's consumer is paused.
const PAUSE: Duration = Duration::from_secs(30);
const BASELINE: Duration = Duration::from_secs(5);

fn message(task: u64, seq: u64) -> Vec<u8> {
    let mut m = vec![0u8; 256];
    m[..8].copy_from_slice(&task.to_le_bytes());
    m[8..16].copy_from_slice(&seq.to_le_bytes());
    m
}

fn id_of(payload: &[u8]) -> (u64, u64) {
    let word = |range: std::ops::Range<usize>| {
        u64::from_le_bytes(payload[range].try_into().expect("8 bytes"))
    };
    (word(0..8), word(8..16))
}

/// B messages received during `window`, counted by a consumer that keeps up.
async fn count_for(counter: &AtomicU64, window: Duration) -> u64 {
    let before = counter.load(Ordering::Relaxed);
    tokio::time::sleep(window).await;
    counter.load(Ordering::Relaxed) - before
}

/// Senders of B at a steady rate until `stop`; every send must succeed.
fn spawn_b_senders(
    sender: &Host,
    to: PeerId,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..SENDERS)
        .map(|task| {
            let control = sender.control().clone();
            let stop = Arc::clone(stop);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(B_PERIOD);
                tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                let mut seq = 0;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    control
                        .send(to, B, message(task, seq))
                        .await
                        .expect("B is never held up");
                    seq += 1;
                }
            })
        })
        .collect()
}

/// What one A sender saw: the sequence numbers whose send returned `Ok`, and the
/// errors of the others.
type Outcome = (Vec<u64>, Vec<Error>);

/// Senders of A as fast as they can until `stop`.
fn spawn_a_senders(
    sender: &Host,
    to: PeerId,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Outcome>> {
    (0..SENDERS)
        .map(|task| {
            let control = sender.control().clone();
            let stop = Arc::clone(stop);
            tokio::spawn(async move {
                let (mut ok, mut failed) = (Vec::new(), Vec::new());
                let mut seq = 0;
                while !stop.load(Ordering::Relaxed) {
                    match control.send(to, A, message(task, seq)).await {
                        Ok(()) => ok.push(seq),
                        Err(e) => failed.push(e),
                    }
                    seq += 1;
                }
                (ok, failed)
            })
        })
        .collect()
}

async fn a_stalled_consumer_holds_up_nothing_else(listen_on: &str) {
    // A send timeout well inside the pause, so that A's senders hear of it.
    let config = Config::default()
        .with_pool(liquid_p2p::PoolConfig::default().with_send_timeout(Duration::from_secs(5)));
    let receiver = host_on(listen_on, config.clone()).await;
    let sender = host_on(listen_on, config).await;
    let mut inbox_a: Inbox = receiver.control().register_protocol(A).expect("register A");
    let mut inbox_b = receiver.control().register_protocol(B).expect("register B");
    let mut receiver_events = receiver.control().events();
    let mut sender_events = sender.control().events();
    let to = connect(&sender, &receiver).await;

    let b_received = Arc::new(AtomicU64::new(0));
    let b_reader = tokio::spawn({
        let b_received = Arc::clone(&b_received);
        async move {
            while inbox_b.recv().await.is_some() {
                b_received.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let stop_b = Arc::new(AtomicBool::new(false));
    let b_senders = spawn_b_senders(&sender, to, &stop_b);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = count_for(&b_received, BASELINE).await as f64 / BASELINE.as_secs_f64();

    // A's consumer is paused (nothing takes from its inbox) while A is flooded.
    let stop_a = Arc::new(AtomicBool::new(false));
    let a_senders = spawn_a_senders(&sender, to, &stop_a);
    let paused_at = Instant::now();
    let during = count_for(&b_received, PAUSE).await as f64 / PAUSE.as_secs_f64();
    stop_a.store(true, Ordering::Relaxed);
    let ratio = during / baseline;
    assert!(
        ratio >= 0.8,
        "B kept {ratio:.2} of its rate while A was stuck ({during:.0}/s vs {baseline:.0}/s)"
    );

    let mut sent_ok = HashSet::new();
    let mut failures = Vec::new();
    for (task, handle) in a_senders.into_iter().enumerate() {
        let (ok, failed) = handle.await.expect("A sender");
        sent_ok.extend(ok.into_iter().map(|seq| (task as u64, seq)));
        failures.extend(failed);
    }
    assert!(
        !failures.is_empty(),
        "A's senders were held back: its receiver had room for everything"
    );
    for e in &failures {
        assert!(
            matches!(
                e,
                Error::Backpressure { .. } | Error::Timeout { .. } | Error::StreamOpen { .. }
            ),
            "A's failed sends get a typed error: {e}"
        );
        if let Error::Backpressure { protocol, .. } = e {
            assert_eq!(protocol, A, "the error names the protocol");
        }
    }

    // Resumed: every acknowledged A message arrives, once.
    let mut seen = HashSet::new();
    while !sent_ok.is_subset(&seen) {
        let message = tokio::time::timeout(Duration::from_secs(10), inbox_a.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{} of {} acknowledged A messages missing after resume",
                    sent_ok.difference(&seen).count(),
                    sent_ok.len()
                )
            })
            .expect("inbox open");
        let id = id_of(&message.payload);
        assert!(seen.insert(id), "A message {id:?} delivered twice");
    }
    stop_b.store(true, Ordering::Relaxed);
    for handle in b_senders {
        handle.await.expect("B sender");
    }

    for events in [&mut receiver_events, &mut sender_events] {
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(1), events.recv()).await
        {
            assert!(
                !matches!(
                    event,
                    Event::ConnectionClosed { .. } | Event::ConnectionStalled { .. }
                ),
                "no connection is closed for a slow consumer: {event:?}"
            );
        }
    }
    eprintln!(
        "{listen_on}: B at {ratio:.2} of its rate for {:?}; A: {} acknowledged and delivered, {} failed",
        paused_at.elapsed(),
        sent_ok.len(),
        failures.len()
    );
    b_reader.abort();
    receiver.shutdown().await;
    sender.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tcp_a_paused_protocol_holds_up_neither_another_protocol_nor_the_connection() {
    a_stalled_consumer_holds_up_nothing_else(TCP).await;
}

#[cfg(feature = "quic")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_quic_a_paused_protocol_holds_up_neither_another_protocol_nor_the_connection() {
    a_stalled_consumer_holds_up_nothing_else(QUIC).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_protocol_holds_at_most_its_byte_budget_and_the_others_flow() {
    const FRAME: usize = 60 * 1024;
    const BUDGET: usize = 256 * 1024;
    let receiver_config = Config::default()
        .with_max_frame_size(64 * 1024)
        .with_inbox_byte_budget(BUDGET);
    let receiver = host(receiver_config).await;
    let sender = host(
        Config::default().with_pool(
            liquid_p2p::PoolConfig::default()
                .with_send_timeout(Duration::from_millis(500))
                .with_max_streams_per_protocol(Some(8)),
        ),
    )
    .await;
    let mut inbox_a = receiver.control().register_protocol(A).expect("register A");
    let mut inbox_b = receiver.control().register_protocol(B).expect("register B");
    let to = connect(&sender, &receiver).await;

    // 8 tasks send A (nobody reads it) until each has had a send refused.
    let senders: Vec<_> = (0..SENDERS)
        .map(|task| {
            let control = sender.control().clone();
            tokio::spawn(async move {
                let mut ok = Vec::new();
                for seq in 0.. {
                    let mut payload = message(task, seq);
                    payload.resize(FRAME, 0);
                    match control.send(to, A, payload).await {
                        Ok(()) => ok.push(seq),
                        Err(e) => return (ok, e),
                    }
                }
                unreachable!()
            })
        })
        .collect();
    let mut sent_ok = HashSet::new();
    for (task, handle) in senders.into_iter().enumerate() {
        let (ok, e) = handle.await.expect("sender");
        assert!(
            matches!(&e, Error::Backpressure { protocol, .. } if protocol == A)
                || matches!(e, Error::Timeout { .. }),
            "{e}"
        );
        sent_ok.extend(ok.into_iter().map(|seq| (task as u64, seq)));
    }
    let held = receiver
        .control()
        .inbox_stats()
        .into_iter()
        .find(|s| s.protocol == A)
        .expect("A");
    // At most the budget plus one frame per stream of A's lane (8).
    assert!(
        held.queued_bytes <= BUDGET + 8 * FRAME,
        "{} bytes held for A: {held:?}",
        held.queued_bytes
    );
    assert!(
        held.queued_bytes >= BUDGET / 2,
        "A's budget filled: {held:?}"
    );
    // B is not held up by A's budget.
    sender.control().send(to, B, b"b").await.expect("B flows");
    tokio::time::timeout(Duration::from_secs(5), inbox_b.recv())
        .await
        .expect("B delivered")
        .expect("open");
    // Every acknowledged A message arrives once A is read.
    let mut seen = HashSet::new();
    while !sent_ok.is_subset(&seen) {
        let message = tokio::time::timeout(Duration::from_secs(10), inbox_a.recv())
            .await
            .expect("acknowledged A message delivered")
            .expect("open");
        assert!(seen.insert(id_of(&message.payload)), "delivered twice");
    }
    receiver.shutdown().await;
    sender.shutdown().await;
}
