//! Connection limits with priorities and eviction, and the blacklist, between real
//! hosts over TCP on loopback.

mod common;

use std::time::Duration;

use common::*;
use liquid_p2p::{
    AdmissionStage, BlacklistEntry, BlacklistMatch, Config, DialFailure, Error, Event,
    EvictionStrategy, Host, PeerId, PeerLimit, RefusalReason,
};

fn limited(max_peers: usize, eviction: EvictionStrategy) -> Config {
    Config::default()
        .with_max_peers(max_peers)
        .with_eviction(eviction)
}

/// Connects `from` to `to` and waits until `to` counts it.
async fn join(from: &Host, to: &Host) {
    connect(from, to).await;
}

/// `from` dials `to`, which refuses after the handshake: the dialer may see the
/// connection come up for a moment, then it is closed.
async fn dial_refused(from: &Host, to: &Host) {
    // A connection still closing would make `dial` return at once.
    wait_until(Duration::from_secs(5), || {
        !from
            .control()
            .connected_peers()
            .contains(&to.local_peer_id())
    })
    .await;
    let _ = from.dial(to.listen_addrs()[0].clone()).await;
    wait_until(Duration::from_secs(5), || {
        !from
            .control()
            .connected_peers()
            .contains(&to.local_peer_id())
            && !to
                .control()
                .connected_peers()
                .contains(&from.local_peer_id())
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
    let mut events = a.control().events();
    dial_refused(&d, &a).await;
    let e = wait_for(&mut events, Duration::from_secs(5), |e| {
        matches!(e, Event::Refused { .. })
    })
    .await;
    assert!(
        matches!(e, Event::Refused { peer: Some(p), .. } if p == d.local_peer_id()),
        "{e:?}"
    );
    let mut peers = a.control().connected_peers();
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
        let mut events = a.control().events();
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
            let peers = a.control().connected_peers();
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
        a.control().connected_peers().contains(&b.local_peer_id())
    })
    .await;
    join(&c, &a).await;
    let mut events = a.control().events();
    d.dial(a.listen_addrs()[0].clone())
        .await
        .expect("d admitted");
    assert_eq!(evicted(&mut events).await, c.local_peer_id());
    wait_until(Duration::from_secs(5), || {
        !a.control().connected_peers().contains(&c.local_peer_id())
    })
    .await;
    assert!(a.control().connected_peers().contains(&b.local_peer_id()));

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
    let mut events = b.control().events();
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
        matches!(
            e,
            Event::Refused {
                reason: RefusalReason::PeerLimit(PeerLimit::TooManyConnections { .. }),
                ..
            }
        ),
        "{e:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(a.control().pool_stats(&b.local_peer_id()).len(), 1);
    assert_eq!(b.control().pool_stats(&a.local_peer_id()).len(), 1);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blacklisting_a_peer_disconnects_it_and_keeps_it_out() {
    let a = host(Config::default()).await;
    let b = host(Config::default()).await;
    join(&b, &a).await;
    let mut events = a.control().events();
    let entry: BlacklistEntry = b.local_peer_id().to_string().parse().expect("entry");
    assert!(a.control().blacklist_add(entry).await.expect("add"));
    assert_eq!(evicted(&mut events).await, b.local_peer_id());
    wait_until(Duration::from_secs(5), || {
        a.control().connected_peers().is_empty() && b.control().connected_peers().is_empty()
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
        Err(Error::Dial {
            cause: DialFailure::RefusedLocally(RefusalReason::Blacklisted(_)),
            ..
        })
    ));
    assert!(a.control().connected_peers().is_empty());
    // Removing the entry lets it back in.
    assert!(a.control().blacklist_remove(&entry));
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
    let mut events = a.control().events();
    a.control()
        .blacklist_add("127.0.0.1".parse().expect("entry"))
        .await
        .expect("add");
    assert_eq!(
        evicted(&mut events).await,
        b.local_peer_id(),
        "live connection closed"
    );
    wait_until(Duration::from_secs(5), || {
        a.control().connected_peers().is_empty() && b.control().connected_peers().is_empty()
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
        matches!(
            e,
            Event::Refused {
                peer: None,
                reason: RefusalReason::Blacklisted(BlacklistMatch::Address),
                stage: AdmissionStage::Pending,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        a.control()
            .blacklist_remove(&"127.0.0.1".parse().expect("entry"))
    );
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

fn socket_of(multiaddr: &str) -> String {
    let parts: Vec<&str> = multiaddr.split('/').collect();
    match (parts.get(1), parts.get(2), parts.get(4)) {
        (Some(&"ip4"), Some(ip), Some(port)) => format!("{ip}:{port}"),
        (Some(&"ip6"), Some(ip), Some(port)) => format!("[{ip}]:{port}"),
        _ => panic!("not an ip/tcp address: {multiaddr}"),
    }
}

/// `a` is connected (by its own dials) to `victim` and `bystander`. Adding `entry`
/// must cut off the victim only, and keep `a` from dialling it again; after the
/// entry is removed the victim is reachable again.
async fn check_entry(a: &Host, entry: &str, victim: &Host, bystander: &Host) {
    let entry: BlacklistEntry = entry.parse().expect("valid entry");
    let mut events = a.control().events();
    assert!(a.control().blacklist_add(entry).await.expect("add"));
    assert_eq!(
        evicted(&mut events).await,
        victim.local_peer_id(),
        "{entry}"
    );
    wait_until(Duration::from_secs(5), || {
        !a.control()
            .connected_peers()
            .contains(&victim.local_peer_id())
    })
    .await;
    assert!(
        a.control()
            .connected_peers()
            .contains(&bystander.local_peer_id()),
        "{entry} must not touch the bystander"
    );
    assert!(
        a.dial(victim.listen_addrs()[0].clone()).await.is_err(),
        "{entry}: a blacklisted target is not dialled"
    );
    assert!(a.control().blacklist_remove(&entry));
    // The victim must have seen the close, or it would refuse a second connection.
    wait_until(Duration::from_secs(5), || {
        !victim
            .control()
            .connected_peers()
            .contains(&a.local_peer_id())
    })
    .await;
    a.dial(victim.listen_addrs()[0].clone())
        .await
        .expect("allowed again");
}

/// Entries that match neither peer leave both connected.
async fn check_harmless(a: &Host, entries: &[&str]) {
    let before = a.control().connected_peers().len();
    let mut events = a.control().events();
    for entry in entries {
        a.control()
            .blacklist_add(entry.parse().expect("valid entry"))
            .await
            .expect("add");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Some(e) = events.try_recv() {
        assert!(
            !matches!(e, Event::Evicted { .. }),
            "{entries:?} evicted someone: {e:?}"
        );
    }
    assert_eq!(a.control().connected_peers().len(), before);
    for entry in entries {
        assert!(
            a.control()
                .blacklist_remove(&entry.parse().expect("valid entry"))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_ipv4_blacklist_form_refuses_what_it_should_and_nothing_else() {
    let a = host_on("/ip4/127.0.0.1/tcp/0", Config::default()).await;
    let b = host_on("/ip4/127.0.0.2/tcp/0", Config::default()).await;
    let c = host_on("/ip4/127.0.0.1/tcp/0", Config::default()).await;
    a.dial(b.listen_addrs()[0].clone()).await.expect("dial b");
    a.dial(c.listen_addrs()[0].clone()).await.expect("dial c");
    let b_socket = socket_of(&b.listen_addrs()[0].to_string());
    let (ip, port) = b_socket.rsplit_once(':').expect("ip:port");
    let next_port = port.parse::<u16>().expect("port").wrapping_add(1).max(1);
    check_harmless(&a, &["127.0.0.3", &format!("{ip}:{next_port}")]).await;
    check_entry(&a, "127.0.0.2", &b, &c).await;
    check_entry(&a, &b_socket, &b, &c).await;
    check_entry(&a, &b.local_peer_id().to_string(), &b, &c).await;
    for h in [a, b, c] {
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_ipv6_blacklist_form_refuses_what_it_should_and_nothing_else() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback on this machine");
        return;
    }
    let a = host_on("/ip4/127.0.0.1/tcp/0", Config::default()).await;
    let b = host_on("/ip6/::1/tcp/0", Config::default()).await;
    let c = host_on("/ip4/127.0.0.1/tcp/0", Config::default()).await;
    a.dial(b.listen_addrs()[0].clone())
        .await
        .expect("dial b over IPv6");
    a.dial(c.listen_addrs()[0].clone()).await.expect("dial c");
    let b_socket = socket_of(&b.listen_addrs()[0].to_string());
    check_harmless(&a, &["[::2]", "::3", "[::1]:1"]).await;
    check_entry(&a, &b_socket, &b, &c).await;
    check_entry(&a, "[::1]", &b, &c).await;
    check_entry(&a, "::1", &b, &c).await;
    for h in [a, b, c] {
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_five_peers_against_max_twenty_with_two_required_under_every_strategy() {
    for strategy in [
        EvictionStrategy::Lifo,
        EvictionStrategy::Fifo,
        EvictionStrategy::Random,
    ] {
        let a = host(limited(20, strategy)).await;
        let mut required = Vec::new();
        for _ in 0..2 {
            let r = host(Config::default()).await;
            a.add_required_peer(r.listen_addrs()[0].clone())
                .await
                .expect("required");
            required.push(r);
        }
        let required_ids: Vec<PeerId> = required.iter().map(|r| r.local_peer_id()).collect();
        wait_until(Duration::from_secs(5), || {
            required_ids
                .iter()
                .all(|r| a.control().connected_peers().contains(r))
        })
        .await;
        let mut events = a.control().events();
        let (mut lows, mut refused, mut evicted) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..25 {
            let low = host(Config::default()).await;
            let id = low.local_peer_id();
            // A refusal comes after the handshake: the dial itself succeeds. (A dial
            // that failed for a local reason would leave this newcomer out of
            // every list below.)
            low.dial(a.listen_addrs()[0].clone())
                .await
                .unwrap_or_else(|e| panic!("{strategy:?}: newcomer {i} dial: {e}"));
            // Settled when `a` reports this newcomer: refused, or in (then, under
            // FIFO and Random, someone was evicted for it once the table was full).
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                match tokio::time::timeout_at(deadline, events.recv()).await {
                    Ok(Some(Event::Refused { peer: Some(p), .. })) if p == id => {
                        refused.push(p);
                        break;
                    }
                    Ok(Some(Event::Evicted { peer, .. })) => evicted.push(peer),
                    Ok(Some(Event::PeerConnected { peer })) if peer == id => break,
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("event stream ended"),
                    Err(_) => panic!("{strategy:?}: no verdict on newcomer {i} within 5 s"),
                }
            }
            let peers = a.control().connected_peers();
            assert!(
                peers.len() <= 20,
                "{strategy:?}: {} peers after newcomer {i}",
                peers.len()
            );
            assert!(
                required_ids.iter().all(|r| peers.contains(r)),
                "{strategy:?}: a required peer left"
            );
            lows.push(low);
        }
        // An eviction is reported before the newcomer's exchange ends, so every
        // one is in already.
        let low_ids: Vec<PeerId> = lows.iter().map(|l| l.local_peer_id()).collect();
        let peers = a.control().connected_peers();
        assert_eq!(peers.len(), 20, "{strategy:?}");
        assert!(
            evicted.iter().all(|p| !required_ids.contains(p)),
            "{strategy:?}: required evicted"
        );
        match strategy {
            EvictionStrategy::Lifo => {
                assert_eq!(
                    refused,
                    low_ids[18..].to_vec(),
                    "the last seven are refused"
                );
                assert!(evicted.is_empty());
            }
            EvictionStrategy::Fifo => {
                assert!(refused.is_empty());
                assert_eq!(
                    evicted,
                    low_ids[..7].to_vec(),
                    "the oldest seven are evicted, in order"
                );
            }
            EvictionStrategy::Random => {
                assert!(refused.is_empty());
                assert_eq!(evicted.len(), 7);
                // Any low-priority peer may go, newcomers included; the last one is in.
                assert!(peers.contains(&low_ids[24]), "the last newcomer got in");
            }
            other => panic!("no expectation written for {other:?}"),
        }
        a.shutdown().await;
        for h in required.into_iter().chain(lows) {
            h.shutdown().await;
        }
    }
}
