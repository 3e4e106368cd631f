//! A chain's network in one process: sixteen hosts found from one seed, gossip
//! reaching every one of them once, and a node that rejects a message keeping
//! it from the peer behind it.

mod common;

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::*;
use liquid_p2p::{BroadcastConfig, Config, DiscoveryConfig, GossipMessage, Host, TopicInbox};

const HOSTS: usize = 16;
const MIN_PEERS: usize = 6;
const TOPIC: &str = "/chain/main/blocks";

/// The host that rejects the first block, with a host behind it.
const GATE: usize = 3;

fn config(seed: Option<&Host>) -> Config {
    Config::default()
        .with_discovery(
            DiscoveryConfig::default()
                .with_enabled(true)
                .with_chains(vec!["main".into()])
                .with_seeds(
                    seed.map(|s| s.listen_addrs()[0].clone())
                        .into_iter()
                        .collect(),
                )
                .with_min_peers(MIN_PEERS)
                .with_interval(Duration::from_secs(3)),
        )
        .with_broadcast(
            BroadcastConfig::default().with_heartbeat_interval(Duration::from_millis(300)),
        )
}

/// The next message of every inbox but the publisher's, each judged by `judge`
/// the moment it arrives, all inboxes at once: a message is forwarded only once
/// judged, so a host waiting its turn would keep it from the hosts behind it.
async fn receive_all(
    inboxes: Vec<TopicInbox>,
    publisher: usize,
    judge: impl Fn(usize, GossipMessage) + Clone + Send + 'static,
) -> Vec<TopicInbox> {
    let tasks: Vec<_> = inboxes
        .into_iter()
        .enumerate()
        .map(|(i, mut inbox)| {
            let judge = judge.clone();
            tokio::spawn(async move {
                if i != publisher {
                    let message = tokio::time::timeout(Duration::from_secs(10), inbox.recv())
                        .await
                        .unwrap_or_else(|_| panic!("host {i} got nothing"))
                        .expect("open");
                    judge(i, message);
                }
                inbox
            })
        })
        .collect();
    let mut back = Vec::new();
    for task in tasks {
        back.push(task.await.expect("a host's receiver failed"));
    }
    back
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_hosts_from_one_seed_reach_min_peers_and_gossip_reaches_each_once() {
    let mut hosts = vec![host(config(None)).await];
    for i in 1..HOSTS {
        let mut config = config(Some(&hosts[0]));
        if i == GATE {
            // The gate keeps every peer that grafts in its mesh: pruned when its
            // mesh overflows, the host behind it would hear of block 2 only by
            // gossip, advertised for three heartbeats to a random few peers.
            config.broadcast.mesh_n_high = 2 * HOSTS;
        }
        hosts.push(host(config).await);
    }
    let started = tokio::time::Instant::now();
    wait_until(Duration::from_secs(30), || {
        hosts
            .iter()
            .all(|h| h.control().connected_peers().len() >= MIN_PEERS)
    })
    .await;
    eprintln!(
        "{HOSTS} hosts reached {MIN_PEERS} peers in {:?}",
        started.elapsed()
    );

    // A host outside discovery, connected to one chain node only: the only
    // way gossip reaches it is through that node.
    let behind = host(Config::default()).await;
    let gate = &hosts[GATE];
    connect(&behind, gate).await;

    let mut inboxes: Vec<TopicInbox> = Vec::new();
    for h in hosts.iter().chain([&behind]) {
        inboxes.push(h.control().subscribe(TOPIC).await.expect("subscribe"));
    }
    wait_until(Duration::from_secs(10), || {
        hosts.iter().chain([&behind]).all(|h| {
            h.control()
                .topic_stats()
                .first()
                .is_some_and(|t| t.peers >= 1)
        })
    })
    .await;
    // Meshes form on the next heartbeats.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (mut behind_inbox, chain_inboxes) = {
        let behind_inbox = inboxes.pop().expect("behind's inbox");
        (behind_inbox, inboxes)
    };

    // Host 9 publishes; the gate rejects, everyone else accepts.
    let publisher = 9;
    hosts[publisher]
        .control()
        .publish(TOPIC, b"block 1")
        .await
        .expect("publish");
    let reached = Arc::new(Mutex::new(HashSet::new()));
    let publisher_id = hosts[publisher].local_peer_id();
    let record = Arc::clone(&reached);
    let mut chain_inboxes = receive_all(chain_inboxes, publisher, move |i, message| {
        assert_eq!(&message.data()[..], b"block 1");
        assert_eq!(message.origin(), Some(publisher_id));
        if i == GATE {
            message.reject();
        } else {
            message.accept();
        }
        record.lock().expect("lock").insert(i);
    })
    .await;
    assert_eq!(
        reached.lock().expect("lock").len(),
        HOSTS - 1,
        "every host but the publisher"
    );
    // Exactly once: nothing more arrives anywhere, and nothing behind the gate.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (i, inbox) in chain_inboxes.iter_mut().enumerate() {
        assert!(inbox.try_recv().is_none(), "host {i} got the message twice");
    }
    assert!(
        behind_inbox.try_recv().is_none(),
        "a rejected message was forwarded"
    );

    // What the gate accepts does reach the host behind it.
    hosts[publisher]
        .control()
        .publish(TOPIC, b"block 2")
        .await
        .expect("publish");
    receive_all(chain_inboxes, publisher, |_, message| message.accept()).await;
    let message = tokio::time::timeout(Duration::from_secs(10), behind_inbox.recv())
        .await
        .expect("through the gate")
        .expect("open");
    assert_eq!(&message.data()[..], b"block 2");
    assert_eq!(message.from(), gate.local_peer_id());

    behind.shutdown().await;
    for h in hosts.into_iter().rev() {
        h.shutdown().await;
    }
}
