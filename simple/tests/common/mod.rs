//! Shared set-up of the end-to-end tests: hosts on loopback and event waits.

#![allow(dead_code)]

use std::time::Duration;

use liquid_p2p::{Config, Event, Events, Host, PeerId, libp2p::Multiaddr};

pub const TCP: &str = "/ip4/127.0.0.1/tcp/0";
pub const QUIC: &str = "/ip4/127.0.0.1/udp/0/quic-v1";

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub async fn host_on(address: &str, config: Config) -> Host {
    init_tracing();
    let address: Multiaddr = address.parse().expect("address");
    Host::builder()
        .listen_on(address)
        .config(config)
        .build()
        .await
        .expect("host builds")
}

pub async fn host(config: Config) -> Host {
    host_on(TCP, config).await
}

/// Dials `to` from `from` and waits until both pools exist.
pub async fn connect(from: &Host, to: &Host) -> PeerId {
    let peer = from.dial(to.listen_addrs()[0].clone()).await.expect("dial");
    assert_eq!(peer, to.local_peer_id());
    wait_until(Duration::from_secs(5), || {
        !from.pool_stats(&peer).is_empty() && !to.pool_stats(&from.local_peer_id()).is_empty()
    })
    .await;
    peer
}

pub async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The first event matching `pred`, failing the test after `limit`.
pub async fn wait_for(
    events: &mut Events,
    limit: Duration,
    mut pred: impl FnMut(&Event) -> bool,
) -> Event {
    tokio::time::timeout(limit, async {
        loop {
            match events.recv().await {
                Some(e) if pred(&e) => return e,
                Some(_) => {}
                None => panic!("event stream ended"),
            }
        }
    })
    .await
    .expect("expected event did not arrive in time")
}
