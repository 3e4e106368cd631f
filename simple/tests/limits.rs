//! Connection limits with priorities and eviction, and the blacklist, between real
//! hosts over TCP on loopback.

mod common;

use std::time::Duration;

use common::*;
use liquid_p2p::{BlacklistEntry, Config, Error, Event, EvictionStrategy, Host, PeerId};

fn limited(max_peers: usize, eviction: EvictionStrategy) -> Config {
    Config {
        max_peers,
        eviction,
        ..Config::default()
    }
}

/// Connects `from` to `to` and waits until `to` counts it.
async fn join(from: &Host, to: &Host) {
    connect(from, to).await;
}

/// `from` dials `to`, which refuses after the handshake: the dialer may see the
/// connection come up for a moment, then it is closed.
async fn dial_refused(from: &Host, to: &Host) {
    let _ = from.dial(to.listen_addrs()[0].clone()).await;
    wait_until(Duration::from_secs(5), || {
        !from.connected_peers().contains(&to.local_peer_id())
            && !to.connected_peers().contains(&from.local_peer_id())
    })
    .await;
}

async fn evicted(events: &mut liquid_p2p::Events) -> PeerId {
    match wait_for(events, Duration::from_secs(5), |e| {
        matches!(e, Event::Evicted { .. })
    })
    .await
    {
        Event::Evicted { peer, .. } => peer,
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifo_refuses_a_new_peer_when_full() {
    let a = host(limited(2, EvictionStrategy::Lifo)).await;
    let (b, c, d) = (
        host(Config::default()).await,
        host(Config::default()).await,
        host(Config::default()).await,
    );
    join(&b, &a).await;
    join(&c, &a).await;
    let mut events = a.events();
    dial_refused(&d, &a).await;
    let e = wait_for(&mut events, Duration::from_secs(5), |e| {
        matches!(e, Event::Refused { .. })
    })
    .await;
    assert!(
        matches!(e, Event::Refused { peer: Some(p), .. } if p == d.local_peer_id()),
        "{e:?}"
    );
    let mut peers = a.connected_peers();
    peers.sort();
    let mut expected = vec![b.local_peer_id(), c.local_peer_id()];
    expected.sort();
    assert_eq!(peers, expected);
    for h in [a, b, c, d] {
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_evicts_the_oldest_low_priority_peer_and_random_evicts_one_of_them() {
    for strategy in [EvictionStrategy::Fifo, EvictionStrategy::Random] {
        let a = host(limited(2, strategy)).await;
        let (b, c, d) = (
            host(Config::default()).await,
            host(Config::default()).await,
            host(Config::default()).await,
        );
        join(&b, &a).await;
        join(&c, &a).await;
        let mut events = a.events();
        d.dial(a.listen_addrs()[0].clone())
            .await
            .expect("d admitted");
        let victim = evicted(&mut events).await;
        if strategy == EvictionStrategy::Fifo {
            assert_eq!(victim, b.local_peer_id(), "the oldest goes");
        } else {
            assert!([b.local_peer_id(), c.local_peer_id()].contains(&victim));
        }
        wait_until(Duration::from_secs(5), || {
            let peers = a.connected_peers();
            peers.len() == 2 && peers.contains(&d.local_peer_id()) && !peers.contains(&victim)
        })
        .await;
        for h in [a, b, c, d] {
            h.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_peer_is_never_evicted_and_a_full_table_of_required_peers_refuses_others() {
    let a = host(limited(2, EvictionStrategy::Fifo)).await;
    let (b, c, d) = (
        host(Config::default()).await,
        host(Config::default()).await,
        host(Config::default()).await,
    );
    // b is required and the oldest: FIFO would pick it if it were not required.
    a.add_required_peer(b.listen_addrs()[0].clone())
        .await
        .expect("required");
    wait_until(Duration::from_secs(5), || {
        a.connected_peers().contains(&b.local_peer_id())
    })
    .await;
    join(&c, &a).await;
    let mut events = a.events();
    d.dial(a.listen_addrs()[0].clone())
        .await
        .expect("d admitted");
    assert_eq!(evicted(&mut events).await, c.local_peer_id());
    wait_until(Duration::from_secs(5), || {
        !a.connected_peers().contains(&c.local_peer_id())
    })
    .await;
    assert!(a.connected_peers().contains(&b.local_peer_id()));

    // Only required peers left: a low-priority newcomer is refused.
    a.add_required_peer(d.listen_addrs()[0].clone())
        .await
        .expect("required");
    dial_refused(&c, &a).await;
    let e = wait_for(&mut events, Duration::from_secs(5), |e| {
        matches!(e, Event::Refused { .. })
    })
    .await;
    assert!(matches!(e, Event::Refused { peer: Some(p), .. } if p == c.local_peer_id()));
    for h in [a, b, c, d] {
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_per_peer_maximum_are_refused() {
    let a = host(Config::default()).await; // one connection per peer
    let b = host(Config::default()).await;
    join(&b, &a).await;
    let mut events = b.events();
    // Dial again without the /p2p/ suffix, so the host cannot short-cut the dial:
    // the dialer's own limit refuses the second connection.
    let mut bare = a.listen_addrs()[0].clone();
    bare.pop();
    assert!(b.dial(bare).await.is_err());
    let e = wait_for(&mut events, Duration::from_secs(5), |e| {
        matches!(e, Event::Refused { .. })
    })
    .await;
    assert!(
        matches!(e, Event::Refused { ref reason, .. } if reason.contains("per peer")),
        "{e:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(a.pool_stats(&b.local_peer_id()).len(), 1);
    assert_eq!(b.pool_stats(&a.local_peer_id()).len(), 1);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blacklisting_a_peer_disconnects_it_and_keeps_it_out() {
    let a = host(Config::default()).await;
    let b = host(Config::default()).await;
    join(&b, &a).await;
    let mut events = a.events();
    let entry: BlacklistEntry = b.local_peer_id().to_string().parse().expect("entry");
    assert!(a.blacklist_add(entry).await.expect("add"));
    assert_eq!(evicted(&mut events).await, b.local_peer_id());
    wait_until(Duration::from_secs(5), || {
        a.connected_peers().is_empty() && b.connected_peers().is_empty()
    })
    .await;
    // Its dials are refused right after the handshake, and we never dial it.
    dial_refused(&b, &a).await;
    let e = wait_for(&mut events, Duration::from_secs(5), |e| {
        matches!(e, Event::Refused { .. })
    })
    .await;
    assert!(
        matches!(e, Event::Refused { peer: Some(p), .. } if p == b.local_peer_id()),
        "{e:?}"
    );
    assert!(matches!(
        a.dial(b.listen_addrs()[0].clone()).await,
        Err(Error::Dial { .. })
    ));
    assert!(a.connected_peers().is_empty());
    // Removing the entry lets it back in.
    assert!(a.blacklist_remove(&entry));
    b.dial(a.listen_addrs()[0].clone())
        .await
        .expect("allowed again");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blacklisted_ip_is_refused_before_the_handshake() {
    let a = host(Config::default()).await;
    let b = host(Config::default()).await;
    join(&b, &a).await;
    let mut events = a.events();
    a.blacklist_add("127.0.0.1".parse().expect("entry"))
        .await
        .expect("add");
    assert_eq!(
        evicted(&mut events).await,
        b.local_peer_id(),
        "live connection closed"
    );
    wait_until(Duration::from_secs(5), || {
        a.connected_peers().is_empty() && b.connected_peers().is_empty()
    })
    .await;
    assert!(
        b.dial(a.listen_addrs()[0].clone()).await.is_err(),
        "no handshake, no connection"
    );
    // Refused before any handshake: the peer id is not known yet.
    let e = wait_for(&mut events, Duration::from_secs(5), |e| {
        matches!(e, Event::Refused { .. })
    })
    .await;
    assert!(
        matches!(e, Event::Refused { peer: None, ref reason, .. } if reason.contains("blacklisted address")),
        "{e:?}"
    );
    assert!(a.blacklist_remove(&"127.0.0.1".parse().expect("entry")));
    a.shutdown().await;
    b.shutdown().await;
}

#[test]
fn invalid_blacklist_entries_are_rejected_with_a_typed_error() {
    for bad in ["192.168.1.256", "1.2.3.4:99999", "[::1", "", "hello"] {
        let err = bad.parse::<BlacklistEntry>().expect_err(bad);
        assert!(
            matches!(err, Error::InvalidBlacklistEntry { .. }),
            "{bad}: {err}"
        );
    }
    for good in [
        "192.168.1.2",
        "192.168.1.2:8080",
        "[::1]:8081",
        "[::2]",
        "::3",
    ] {
        good.parse::<BlacklistEntry>().expect(good);
    }
}
