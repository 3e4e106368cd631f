//! What the `quic` and `dns` Cargo features bring, over real sockets on
//! loopback: with `dns`, a `/dns4/localhost/...` address dials and connects;
//! without a feature, an address that needs it fails at once with
//! `Error::TransportNotBuilt` naming the feature, and nothing is dialled.

mod common;

use common::*;
use liquid_p2p::{Config, libp2p::Multiaddr};
#[cfg(not(all(feature = "quic", feature = "dns")))]
use liquid_p2p::{Error, PeerId, TransportFeature};

#[cfg(feature = "dns")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns4_localhost_address_dials_and_connects() {
    use std::time::Duration;

    let a = host(Config::default()).await;
    let b = host(Config::default()).await;
    let mut inbox = a
        .control()
        .register_protocol("/test/dns/1")
        .expect("register");
    let address: Multiaddr = format!(
        "/dns4/localhost/tcp/{}/p2p/{}",
        tcp_port(&a),
        a.local_peer_id()
    )
    .parse()
    .expect("address");
    let peer = b
        .dial(address)
        .await
        .expect("the name resolves and the dial connects");
    assert_eq!(peer, a.local_peer_id());
    wait_until(Duration::from_secs(5), || {
        b.control().peer_protocols(&peer).is_some()
    })
    .await;
    b.control()
        .send(peer, "/test/dns/1", b"over a resolved name".to_vec())
        .await
        .expect("send");
    let message = next_message(&mut inbox, Duration::from_secs(5)).await;
    assert_eq!(message.peer, b.local_peer_id());
    assert_eq!(&message.payload[..], b"over a resolved name");
    b.shutdown().await;
    a.shutdown().await;
}

#[cfg(not(feature = "dns"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_dns_feature_a_name_is_a_typed_error() {
    let b = host(Config::default()).await;
    let address: Multiaddr = format!("/dns4/localhost/tcp/4001/p2p/{}", PeerId::random())
        .parse()
        .expect("address");
    match b.dial(address.clone()).await {
        Err(Error::TransportNotBuilt {
            address: named,
            feature: TransportFeature::Dns,
        }) => assert_eq!(named, address),
        other => panic!("expected TransportNotBuilt, got {other:?}"),
    }
    assert!(matches!(
        b.add_required_peer(address).await,
        Err(Error::TransportNotBuilt {
            feature: TransportFeature::Dns,
            ..
        })
    ));
    b.shutdown().await;
}

#[cfg(not(feature = "quic"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_quic_feature_a_quic_address_is_a_typed_error() {
    let quic: Multiaddr = QUIC.parse().expect("address");
    match liquid_p2p::Host::builder()
        .listen_on(quic.clone())
        .build()
        .await
    {
        Err(Error::TransportNotBuilt {
            address,
            feature: TransportFeature::Quic,
        }) => assert_eq!(address, quic),
        Err(other) => panic!("expected TransportNotBuilt, got {other:?}"),
        Ok(_) => panic!("a host without QUIC listened on a QUIC address"),
    }
    let b = host(Config::default()).await;
    let remote: Multiaddr = format!("/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{}", PeerId::random())
        .parse()
        .expect("address");
    for result in [
        b.listen_on(quic.clone()).await.map(|_| ()),
        b.dial(remote.clone()).await.map(|_| ()),
        b.add_required_peer(remote.clone()).await.map(|_| ()),
    ] {
        assert!(
            matches!(
                result,
                Err(Error::TransportNotBuilt {
                    feature: TransportFeature::Quic,
                    ..
                })
            ),
            "{result:?}"
        );
    }
    let message = Error::TransportNotBuilt {
        address: remote,
        feature: TransportFeature::Quic,
    }
    .to_string();
    assert!(message.contains("`quic` feature"), "{message}");
    b.shutdown().await;
}

#[cfg(feature = "quic")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_quic_feature_a_quic_address_connects() {
    let a = host_on(QUIC, Config::default()).await;
    let b = host_on(QUIC, Config::default()).await;
    let peer = b
        .dial(a.listen_addrs()[0].clone())
        .await
        .expect("dial over QUIC");
    assert_eq!(peer, a.local_peer_id());
    b.shutdown().await;
    a.shutdown().await;
}

#[cfg(feature = "quic")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_small_sends_over_quic_share_writes_and_each_message_arrives_once() {
    // QUIC lanes batch as yamux lanes do: 32 senders at once hand frames to
    // each other's writes, and every message arrives exactly once.
    use std::time::Duration;

    const PROTO: &str = "/test/quic/1";
    const TASKS: usize = 32;
    const PER_TASK: u32 = 100;
    let a = host_on(QUIC, Config::default()).await;
    let b = host_on(QUIC, Config::default()).await;
    let mut inbox = a.control().register_protocol(PROTO).expect("register");
    let a_id = b
        .dial(a.listen_addrs()[0].clone())
        .await
        .expect("dial over QUIC");
    let senders = spawn_tagged_senders(b.control(), a_id, PROTO, TASKS, PER_TASK);
    // All of them within 10 s: no more than each one alone was given before.
    tokio::time::timeout(
        Duration::from_secs(10),
        receive_each_tagged_once(&mut inbox, TASKS, PER_TASK),
    )
    .await
    .expect("every message arrives");
    for s in senders {
        s.await.expect("sender");
    }
    let batched = batched_frames(&b.control().pool_stats(&a_id));
    assert!(batched > 0, "32 senders never shared a write");
    eprintln!("{batched} of {} frames batched", TASKS * PER_TASK as usize);
    b.shutdown().await;
    a.shutdown().await;
}
