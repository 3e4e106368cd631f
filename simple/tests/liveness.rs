//! Dead-peer detection must not fire on a healthy connection under heavy load, and
//! the address book lets a host dial a peer by id alone.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use common::*;
use liquid_p2p::{Config, Event};
use tokio::time::Instant;

const PROTO: &str = "/test/saturate/1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_healthy_connection_is_never_taken_for_dead() {
    let a = host(Config::default()).await;
    let b = host(Config::default()).await;
    let mut inbox = a.register_protocol(PROTO).expect("register");
    let a_id = connect(&b, &a).await;
    let received = Arc::new(AtomicUsize::new(0));
    {
        let received = Arc::clone(&received);
        tokio::spawn(async move {
            while inbox.recv().await.is_some() {
                received.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let dropped = Arc::new(AtomicBool::new(false));
    for host in [&a, &b] {
        let mut events = host.events();
        let dropped = Arc::clone(&dropped);
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                if matches!(
                    e,
                    Event::PeerDisconnected { .. } | Event::ConnectionStalled { .. }
                ) {
                    dropped.store(true, Ordering::Relaxed);
                }
            }
        });
    }
    // 30 s of 1 MiB messages from 8 tasks while ping runs every 2 s (timeout 5 s).
    let until = Instant::now() + Duration::from_secs(30);
    let senders: Vec<_> = (0..8)
        .map(|_| {
            let control = b.control();
            tokio::spawn(async move {
                let payload = vec![9u8; 1 << 20];
                let mut sent = 0usize;
                while Instant::now() < until {
                    control
                        .send(a_id, PROTO, &payload)
                        .await
                        .expect("healthy connection");
                    sent += 1;
                }
                sent
            })
        })
        .collect();
    let mut sent = 0;
    for s in senders {
        sent += s.await.expect("sender");
    }
    wait_until(Duration::from_secs(10), || {
        received.load(Ordering::Relaxed) == sent
    })
    .await;
    assert!(
        !dropped.load(Ordering::Relaxed),
        "a healthy, saturated connection was dropped"
    );
    assert_eq!(a.connected_peers(), vec![b.local_peer_id()]);
    println!("saturation: {sent} MiB in 30 s");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_can_be_dialled_by_id_from_addresses_learned_earlier() {
    let a = host(Config::default()).await;
    let b = host(Config::default()).await;
    let c = host(Config::default()).await;
    // a learns b's address by dialling it, and c's through identify (c dials a).
    let b_id = connect(&a, &b).await;
    let c_id = c.local_peer_id();
    connect(&c, &a).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // identify exchange
    for peer in [b_id, c_id] {
        a.disconnect(peer).await.expect("disconnect");
    }
    wait_until(Duration::from_secs(5), || a.connected_peers().is_empty()).await;
    assert_eq!(
        a.dial_peer(b_id).await.expect("b from the dialled address"),
        b_id
    );
    assert_eq!(a.dial_peer(c_id).await.expect("c from identify"), c_id);
    assert!(
        a.dial_peer(liquid_p2p::PeerId::random()).await.is_err(),
        "unknown peer"
    );
    for h in [a, b, c] {
        h.shutdown().await;
    }
}
