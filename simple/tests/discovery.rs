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
    assert!(connected(&a, seed_id) && connected(&c, seed_id));

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
