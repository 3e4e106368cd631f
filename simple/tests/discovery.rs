//! Discovery: nodes of a chain find each other from one seed, and only their
//! own chain's nodes.

mod common;

use std::time::Duration;

use common::*;
use liquid_p2p::{Config, DiscoveryConfig, Event, Host, PeerId};

const WAIT: Duration = Duration::from_secs(20);

fn discovering(chains: &[&str], seed: Option<&Host>, min_peers: usize) -> Config {
    let seeds = seed
        .map(|s| vec![s.listen_addrs()[0].clone()])
        .unwrap_or_default();
    Config::default().with_discovery(
        DiscoveryConfig::default()
            .with_enabled(true)
            .with_chains(chains.iter().map(|c| c.to_string()).collect())
            .with_seeds(seeds)
            .with_min_peers(min_peers)
            .with_interval(Duration::from_secs(1)),
    )
}

fn connected(host: &Host, peer: PeerId) -> bool {
    host.control().connected_peers().contains(&peer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_of_a_chain_find_each_other_from_one_seed_and_only_their_chain() {
    let seed = host(discovering(&[], None, 0)).await;
    let a = host(discovering(&["x"], Some(&seed), 2)).await;
    let mut a_events = a.control().events();
    let b = host(discovering(&["x"], Some(&seed), 2)).await;
    let c = host(discovering(&["y"], Some(&seed), 2)).await;
    let mut c_events = c.control().events();
    let (a_id, b_id, seed_id) = (a.local_peer_id(), b.local_peer_id(), seed.local_peer_id());
    assert_eq!(a.control().served_chains(), ["x"]);

    let found = wait_for(
        &mut a_events,
        WAIT,
        |e| matches!(e, Event::PeerDiscovered { peer, .. } if *peer == b_id),
    )
    .await;
    assert_eq!(
        found,
        Event::PeerDiscovered {
            peer: b_id,
            chain: "x".into()
        }
    );
    wait_until(WAIT, || connected(&a, b_id) && connected(&b, a_id)).await;
    // Still (or again) connected to the seed. Checked at one instant, this
    // failed a CI run under load (2026-11-30): one of a's or c's connections
    // to the seed was down at that moment, for a reason not known; what a
    // node relies on is being connected to its seed, which this still checks.
    wait_until(WAIT, || connected(&a, seed_id) && connected(&c, seed_id)).await;

    // c serves another chain: it never finds a or b (kad's own lookups may
    // connect it to them, but it does not look for them, nor count them).
    tokio::time::sleep(Duration::from_secs(3)).await;
    while let Some(event) = c_events.try_recv() {
        assert!(
            !matches!(event, Event::PeerDiscovered { .. }),
            "c found a node of another chain: {event:?}"
        );
    }

    // A chain served at run time is looked for at once, up to min_peers.
    assert!(c.control().serve_chain("x").await.expect("serve"));
    wait_until(WAIT, || connected(&c, a_id) && connected(&c, b_id)).await;
    for h in [c, b, a, seed] {
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_discovery_says_so_and_bad_seeds_are_refused() {
    let plain = host(Config::default()).await;
    let off = plain.control().serve_chain("x").await;
    assert!(
        matches!(off, Err(liquid_p2p::Error::InvalidConfig { .. })),
        "{off:?}"
    );
    assert!(plain.control().served_chains().is_empty());
    let no_peer_id = Config::default().with_discovery(
        DiscoveryConfig::default()
            .with_enabled(true)
            .with_seeds(vec!["/ip4/127.0.0.1/tcp/1".parse().expect("address")]),
    );
    let refused = Host::builder().config(no_peer_id).build().await;
    assert!(
        matches!(refused, Err(liquid_p2p::Error::InvalidConfig { .. })),
        "{refused:?}"
    );
    plain.shutdown().await;
}

/// Connections set up in the window: established (both ends report one) or
/// refused right after their handshake (the refusing end reports it).
fn handshakes(event: &Event) -> u64 {
    match event {
        Event::ConnectionEstablished { .. } => 1,
        Event::Refused {
            stage: liquid_p2p::AdmissionStage::Established,
            count,
            ..
        } => *count,
        _ => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_full_nodes_settles_and_stops_connecting() {
    // Eight nodes of one chain with room for three peers each (the seed
    // among them), from a seed with room for all, kad republishing every
    // second. Kad's queries used to dial peers outside the three at every
    // republishing, to be refused right after the handshake by the full
    // dialler itself or by the full remote, and to dial them again at the
    // next one: 230 to 340 connections set up or refused in the window below
    // (docs/SCALE.md, finding 1).
    const NODES: usize = 8;
    let seed = host(discovering(&["x"], None, 0)).await;
    let mut nodes = Vec::new();
    for _ in 0..NODES {
        nodes.push(host(discovering(&["x"], Some(&seed), 2).with_max_peers(3)).await);
    }
    wait_until(WAIT, || {
        nodes
            .iter()
            .all(|n| n.control().connected_peers().len() >= 2)
    })
    .await;
    // The start: lookups, bootstraps, the first announcements, the first
    // refusals.
    tokio::time::sleep(Duration::from_secs(8)).await;

    let mut events: Vec<_> = std::iter::once(&seed)
        .chain(&nodes)
        .map(|h| h.control().events())
        .collect();
    let window = Duration::from_secs(6);
    tokio::time::sleep(window).await;
    let mut seen = 0;
    for stream in &mut events {
        while let Some(event) = stream.try_recv() {
            seen += handshakes(&event);
        }
    }
    // Now 0 to 14: a node with room retrying, on its backoff schedule, full
    // peers that refused it.
    assert!(
        seen <= 40,
        "{seen} connections set up or refused in {window:?} at rest"
    );
    // Every node still has min_peers. A peer lost at this moment (a CI run
    // beside other tests once caught one node at 1) is found again on the
    // backoff schedule, which is what a node relies on.
    wait_until(Duration::from_secs(10), || {
        nodes
            .iter()
            .all(|n| n.control().connected_peers().len() >= 2)
    })
    .await;
    for h in nodes.into_iter().chain([seed]) {
        h.shutdown().await;
    }
}
