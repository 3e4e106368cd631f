//! The lazy pool end to end, over TCP on loopback: a new connection opens only
//! `idle_floor` streams, the rest once it is in use, an idle connection goes
//! back to the floor without losing a frame, and the next send delivers.

mod common;

use std::{collections::HashSet, time::Duration};

use common::*;
use liquid_p2p::{Config, Host, PeerId, PoolConfig};

const PROTO: &str = "/test/idle/1";
const OTHER: &str = "/test/idle-other/1";

/// A config whose connections go idle after 300 ms.
fn quick_idle(floor: usize) -> Config {
    Config::default().with_pool(
        PoolConfig::default()
            .with_idle_after(Some(Duration::from_millis(300)))
            .with_idle_floor(floor),
    )
}

/// Streams of all pools of all connections from `host` to `peer`.
fn send_streams(host: &Host, peer: &PeerId) -> usize {
    host.control()
        .pool_stats(peer)
        .iter()
        .map(|s| s.current + s.opening)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_connection_holds_at_most_the_floor_and_the_first_send_delivers() {
    // Default pools, checked every 500 ms instead of 15 s.
    let config = Config::default()
        .with_pool(PoolConfig::default().with_idle_after(Some(Duration::from_secs(2))));
    let a = host(config.clone()).await;
    let b = host(config).await;
    let mut inbox = a.control().register_protocol(PROTO).expect("register");
    let a_id = connect(&b, &a).await;
    let b_id = b.local_peer_id();
    let floor = PoolConfig::default().idle_floor;
    wait_until(Duration::from_secs(5), || {
        a.control().receive_counts(&b_id).streams == floor
    })
    .await;
    // Settled: nothing more opens on a connection nobody sends on.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(send_streams(&b, &a_id), floor);
    assert_eq!(send_streams(&a, &b_id), floor);
    assert_eq!(a.control().receive_counts(&b_id).streams, floor);

    b.control().send(a_id, PROTO, b"first").await.expect("send");
    assert_eq!(
        &next_message(&mut inbox, Duration::from_secs(5))
            .await
            .payload[..],
        b"first"
    );
    // In use: the next check refills the reserve to init_size.
    let init = PoolConfig::default().init_size;
    wait_until(Duration::from_secs(5), || send_streams(&b, &a_id) >= init).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_at_connect_opens_init_size_streams_with_the_connection() {
    let config = Config::default().with_pool(PoolConfig::default().with_open_at_connect(true));
    let a = host(config.clone()).await;
    let b = host(config).await;
    let a_id = connect(&b, &a).await;
    let init = PoolConfig::default().init_size;
    wait_until(Duration::from_secs(5), || {
        send_streams(&b, &a_id) == init
            && a.control().receive_counts(&b.local_peer_id()).streams == init
    })
    .await;
}

/// Sends `count` numbered messages from 16 tasks over two protocols; returns
/// once every send returned `Ok`.
async fn burst(from: &Host, to: PeerId, round: u32, count: u32) {
    let tasks: Vec<_> = (0..16u32)
        .map(|task| {
            let control = from.control().clone();
            tokio::spawn(async move {
                for i in (task..count).step_by(16) {
                    let protocol = if i % 2 == 0 { PROTO } else { OTHER };
                    let mut payload = vec![0u8; 256];
                    payload[..4].copy_from_slice(&round.to_le_bytes());
                    payload[4..8].copy_from_slice(&i.to_le_bytes());
                    control.send(to, protocol, payload).await.expect("send");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("sender");
    }
}

/// Every message of `round`, each once, from two inboxes.
async fn receive_round(inboxes: &mut [liquid_p2p::Inbox; 2], round: u32, count: u32) {
    let mut seen = HashSet::new();
    let [even, odd] = inboxes;
    for i in 0..count {
        let inbox = if i % 2 == 0 { &mut *even } else { &mut *odd };
        let m = next_message(inbox, Duration::from_secs(10)).await;
        let r = u32::from_le_bytes(m.payload[..4].try_into().expect("4 bytes"));
        let n = u32::from_le_bytes(m.payload[4..8].try_into().expect("4 bytes"));
        assert_eq!(r, round, "a message of another round");
        assert!(seen.insert(n), "message {n} delivered twice");
    }
    assert_eq!(seen.len(), count as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_shrinks_to_the_floor_without_losing_a_frame_and_the_next_send_delivers()
{
    // The receiver takes at most 4 messages per protocol ahead of the
    // application, which reads nothing until the sender's pool is at rest:
    // most frames are still in the receiver's stream buffers when the
    // sender closes the idle streams.
    let receiver = quick_idle(1).with_handler_queue_len(4);
    let a = host(receiver).await;
    let b = host(quick_idle(1)).await;
    let mut inboxes = [
        a.control().register_protocol(PROTO).expect("register"),
        a.control().register_protocol(OTHER).expect("register"),
    ];
    let a_id = connect(&b, &a).await;
    let b_id = b.local_peer_id();
    const COUNT: u32 = 400;
    for round in 0..3 {
        burst(&b, a_id, round, COUNT).await;
        assert!(send_streams(&b, &a_id) > 1, "the burst used more streams");
        wait_until(Duration::from_secs(10), || send_streams(&b, &a_id) <= 1).await;
        receive_round(&mut inboxes, round, COUNT).await;
        // The receiver's side of the closed streams goes too.
        wait_until(Duration::from_secs(10), || {
            a.control().receive_counts(&b_id).streams <= 1
        })
        .await;
    }
    // After the quiet period, the next send delivers on the floor's stream.
    b.control().send(a_id, OTHER, b"after").await.expect("send");
    assert_eq!(
        &next_message(&mut inboxes[1], Duration::from_secs(5))
            .await
            .payload[..],
        b"after"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_floor_of_zero_an_idle_connection_holds_no_stream_and_the_next_send_opens_one() {
    let a = host(quick_idle(0)).await;
    let b = host(quick_idle(0)).await;
    let mut inbox = a.control().register_protocol(PROTO).expect("register");
    let a_id = connect(&b, &a).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(send_streams(&b, &a_id), 0, "nothing at connect");
    for round in 0..2u8 {
        b.control().send(a_id, PROTO, [round]).await.expect("send");
        assert_eq!(
            next_message(&mut inbox, Duration::from_secs(5))
                .await
                .payload[..],
            [round]
        );
        wait_until(Duration::from_secs(10), || {
            send_streams(&b, &a_id) == 0
                && a.control().receive_counts(&b.local_peer_id()).streams == 0
        })
        .await;
    }
}
