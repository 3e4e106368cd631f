//! The liquid behaviour in a node's own swarm, next to gossipsub, Kademlia and
//! identify, over TCP on loopback; and the same through `Host` with the node's
//! behaviour added in the builder.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm, gossipsub, identify,
    identity::Keypair,
    kad,
    swarm::{NetworkBehaviour, SwarmEvent},
};
use liquid_p2p::{Behaviour, Config, Control, Event, Host, SupervisorConfig};
use tokio::{sync::mpsc, task::JoinHandle};

const PROTO: &str = "/chain/composed/1";
const TOPIC: &str = "blocks";
const WAIT: Duration = Duration::from_secs(10);

/// A chain node's swarm: ours, identify, gossipsub and Kademlia.
#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct Node {
    liquid: Behaviour,
    identify: identify::Behaviour,
    gossipsub: gossipsub::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
}

/// The protocols of a node that does not run liquid-p2p.
#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct KadOnly {
    identify: identify::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
}

/// What the node adds to a `Host` (which runs identify and ours itself).
#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct Extra {
    gossipsub: gossipsub::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
}

/// Fast redials and dead-peer detection, policy scoped to liquid peers.
fn scoped_config() -> Config {
    Config::default()
        .with_ping_interval(Duration::from_millis(200))
        .with_ping_timeout(Duration::from_millis(300))
        .with_supervisor(
            SupervisorConfig::default()
                .with_check_interval(Duration::from_millis(100))
                .with_backoff_unit(Duration::from_millis(100))
                .with_max_backoff(Duration::from_millis(400))
                .with_min_connection_lifetime(Duration::from_millis(100)),
        )
        .scoped_to_liquid_peers()
}

fn gossipsub_for(key: &Keypair) -> gossipsub::Behaviour {
    let config = gossipsub::ConfigBuilder::default()
        .heartbeat_interval(Duration::from_millis(200))
        .build()
        .expect("gossipsub config");
    let mut gossipsub =
        gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), config)
            .expect("gossipsub");
    gossipsub
        .subscribe(&gossipsub::IdentTopic::new(TOPIC))
        .expect("subscribe");
    gossipsub
}

fn kad_for(key: &Keypair) -> kad::Behaviour<kad::store::MemoryStore> {
    let id = key.public().to_peer_id();
    let mut kad = kad::Behaviour::new(id, kad::store::MemoryStore::new(id));
    kad.set_mode(Some(kad::Mode::Server));
    kad
}

fn identify_for(key: &Keypair) -> identify::Behaviour {
    identify::Behaviour::new(identify::Config::new("/chain/1".into(), key.public()))
}

/// Listens on `address` and returns the address bound, with `/p2p/<id>`.
async fn listen<B: NetworkBehaviour>(swarm: &mut Swarm<B>, address: &str) -> Multiaddr {
    swarm
        .listen_on(address.parse().expect("address"))
        .expect("listen");
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            return address.with_p2p(*swarm.local_peer_id()).expect("suffix");
        }
    }
}

type SwarmCall<B> = Box<dyn FnOnce(&mut Swarm<B>) + Send>;

enum Call<B: NetworkBehaviour> {
    Run(SwarmCall<B>),
    /// Stop polling the swarm but keep it: its connections stay open and silent.
    Freeze,
}

/// A swarm driven by its own task, as a node drives it.
struct Driven<B: NetworkBehaviour> {
    peer: PeerId,
    address: Multiaddr,
    calls: mpsc::UnboundedSender<Call<B>>,
    events: mpsc::UnboundedReceiver<SwarmEvent<B::ToSwarm>>,
    /// Events no wait has taken yet.
    passed: Vec<SwarmEvent<B::ToSwarm>>,
    task: JoinHandle<()>,
}

impl<B> Driven<B>
where
    B: NetworkBehaviour + Send + 'static,
    B::ToSwarm: Send + std::fmt::Debug,
{
    async fn spawn(mut swarm: Swarm<B>, listen_on: &str) -> Self {
        let address = listen(&mut swarm, listen_on).await;
        let (calls, mut call_rx) = mpsc::unbounded_channel::<Call<B>>();
        let (event_tx, events) = mpsc::unbounded_channel();
        let peer = *swarm.local_peer_id();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    call = call_rx.recv() => match call {
                        Some(Call::Run(f)) => f(&mut swarm),
                        Some(Call::Freeze) => {
                            futures::future::pending::<()>().await;
                        }
                        None => return,
                    },
                    event = swarm.select_next_some() => {
                        let _ = event_tx.send(event);
                    }
                }
            }
        });
        Self {
            peer,
            address,
            calls,
            events,
            passed: Vec::new(),
            task,
        }
    }

    async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Swarm<B>) -> R + Send + 'static,
    ) -> R {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let run = Box::new(move |swarm: &mut Swarm<B>| {
            let _ = tx.send(f(swarm));
        });
        assert!(self.calls.send(Call::Run(run)).is_ok(), "driver runs");
        rx.await.expect("driver answers")
    }

    /// Waits (at most `limit`) for an event `pick` accepts, the earliest first
    /// (events passed over by earlier waits included).
    async fn wait<T>(
        &mut self,
        limit: Duration,
        mut pick: impl FnMut(&SwarmEvent<B::ToSwarm>) -> Option<T>,
    ) -> T {
        for i in 0..self.passed.len() {
            if let Some(found) = pick(&self.passed[i]) {
                self.passed.remove(i);
                return found;
            }
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => {
                    if let Some(found) = pick(&event) {
                        return found;
                    }
                    self.passed.push(event);
                }
                Ok(None) => panic!("driver of {} ended", self.peer),
                Err(_) => panic!("{}: no such event within {limit:?}", self.peer),
            }
        }
    }
}

/// A full node; its identify reports feed Kademlia's routing table, as nodes do.
async fn node(key: Keypair, config: Config, listen_on: &str) -> (Driven<Node>, Control) {
    let (liquid, control) =
        Behaviour::new(key.public().to_peer_id(), config).expect("liquid behaviour");
    let swarm = stock_swarm(key, |key| Node {
        liquid,
        identify: identify_for(key),
        gossipsub: gossipsub_for(key),
        kad: kad_for(key),
    });
    (Driven::spawn(swarm, listen_on).await, control)
}

fn liquid_event(event: &SwarmEvent<NodeEvent>) -> Option<&Event> {
    match event {
        SwarmEvent::Behaviour(NodeEvent::Liquid(e)) => Some(e),
        _ => None,
    }
}

/// Feeds identify's listen addresses to Kademlia (the usual wiring).
fn learn_from_identify(event: &SwarmEvent<NodeEvent>) -> Option<(PeerId, Vec<Multiaddr>)> {
    match event {
        SwarmEvent::Behaviour(NodeEvent::Identify(identify::Event::Received {
            peer_id,
            info,
            ..
        })) => Some((*peer_id, info.listen_addrs.clone())),
        _ => None,
    }
}

async fn dial<B>(from: &Driven<B>, to: Multiaddr)
where
    B: NetworkBehaviour + Send + 'static,
    B::ToSwarm: Send + std::fmt::Debug,
{
    from.call(move |swarm| swarm.dial(to))
        .await
        .expect("dial started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liquid_gossipsub_and_kademlia_share_one_user_swarm() {
    init_tracing();
    let (mut a, a_control) = node(Keypair::generate_ed25519(), scoped_config(), TCP).await;
    let (b, b_control) = node(Keypair::generate_ed25519(), scoped_config(), TCP).await;
    let (mut c, _c_control) = node(Keypair::generate_ed25519(), scoped_config(), TCP).await;
    let mut inbox = a_control.register_protocol(PROTO).expect("register");
    // The node's own dials (not ours): b and c become liquid peers of a once
    // identify shows they speak our protocol, and a of them.
    dial(&b, a.address.clone()).await;
    dial(&c, a.address.clone()).await;
    let (b_id, c_id) = (b.peer, c.peer);
    let mut connected = Vec::new();
    while connected.len() < 2 {
        let peer = a
            .wait(WAIT, |e| match liquid_event(e) {
                Some(Event::PeerConnected { peer }) => Some(*peer),
                _ => None,
            })
            .await;
        connected.push(peer);
    }
    connected.sort();
    let mut expected = vec![b_id, c_id];
    expected.sort();
    assert_eq!(
        connected, expected,
        "a's liquid peers, reported through its swarm"
    );

    // Liquid messages flow.
    b_control
        .send(a.peer, PROTO, b"block 1")
        .await
        .expect("sent");
    let message = tokio::time::timeout(WAIT, inbox.recv())
        .await
        .expect("delivered in time")
        .expect("inbox open");
    assert_eq!(
        (message.peer, &message.payload[..]),
        (b_id, &b"block 1"[..])
    );

    // Gossipsub: once a knows both subscriptions, b's message reaches a and c.
    let mut subscribed = 0;
    while subscribed < 2 {
        a.wait(WAIT, |e| match e {
            SwarmEvent::Behaviour(NodeEvent::Gossipsub(gossipsub::Event::Subscribed {
                ..
            })) => Some(()),
            _ => None,
        })
        .await;
        subscribed += 1;
    }
    // c's subscription of a reaches c too.
    c.wait(WAIT, |e| match e {
        SwarmEvent::Behaviour(NodeEvent::Gossipsub(gossipsub::Event::Subscribed {
            peer_id,
            ..
        })) if *peer_id == a.peer => Some(()),
        _ => None,
    })
    .await;
    b.call(|swarm| {
        swarm
            .behaviour_mut()
            .gossipsub
            .publish(gossipsub::IdentTopic::new(TOPIC), b"gossip 1".to_vec())
    })
    .await
    .expect("published");
    for receiver in [&mut a, &mut c] {
        let data = receiver
            .wait(WAIT, |e| match e {
                SwarmEvent::Behaviour(NodeEvent::Gossipsub(gossipsub::Event::Message {
                    message,
                    ..
                })) => Some(message.data.clone()),
                _ => None,
            })
            .await;
        assert_eq!(data, b"gossip 1");
    }

    // Kademlia: a learnt b and c from identify; c finds b through a.
    let a_addr = a.address.clone();
    let a_id = a.peer;
    c.call(move |swarm| swarm.behaviour_mut().kad.add_address(&a_id, a_addr))
        .await;
    let mut learnt = 0;
    while learnt < 2 {
        let (peer, addresses) = a.wait(WAIT, learn_from_identify).await;
        a.call(move |swarm| {
            for address in addresses {
                swarm.behaviour_mut().kad.add_address(&peer, address);
            }
        })
        .await;
        learnt += 1;
    }
    c.call(move |swarm| swarm.behaviour_mut().kad.get_closest_peers(b_id))
        .await;
    let found = c
        .wait(WAIT, |e| match e {
            SwarmEvent::Behaviour(NodeEvent::Kad(kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::GetClosestPeers(Ok(ok)),
                ..
            })) => Some(ok.peers.iter().map(|p| p.peer_id).collect::<Vec<_>>()),
            _ => None,
        })
        .await;
    assert!(
        found.contains(&b_id),
        "c's lookup through a found {found:?}"
    );
    for driven in [a, b, c] {
        driven.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_user_swarm_a_killed_required_peer_is_redialled_and_a_silent_one_is_closed() {
    init_tracing();
    let (mut a, _a_control) = node(Keypair::generate_ed25519(), scoped_config(), TCP).await;
    let b_key = Keypair::generate_ed25519();
    let (b, _b_control) = node(b_key.clone(), scoped_config(), TCP).await;
    let b_addr = b.address.clone();
    let b_id = b.peer;
    let required = b_addr.clone();
    a.call(move |swarm| swarm.behaviour_mut().liquid.add_required_peer(required))
        .await
        .expect("required");
    a.wait(WAIT, |e| match liquid_event(e) {
        Some(Event::RequiredPeerConnected { peer }) if *peer == b_id => Some(()),
        _ => None,
    })
    .await;

    // b's process dies (its swarm dropped) and comes back on the same address
    // and key: a redials it on its schedule and reports it.
    b.task.abort();
    let _ = b.task.await;
    a.wait(WAIT, |e| match liquid_event(e) {
        Some(Event::PeerDisconnected { peer }) if *peer == b_id => Some(()),
        _ => None,
    })
    .await;
    a.wait(WAIT, |e| match liquid_event(e) {
        Some(Event::RedialScheduled { peer, .. }) if *peer == b_id => Some(()),
        _ => None,
    })
    .await;
    let listen_on = b_addr.iter().take(2).collect::<Multiaddr>().to_string();
    let (b, _b_control) = node(b_key, scoped_config(), &listen_on).await;
    assert_eq!(b.address, b_addr, "restarted on the same address");
    a.wait(WAIT, |e| match liquid_event(e) {
        Some(Event::RequiredPeerConnected { peer }) if *peer == b_id => Some(()),
        _ => None,
    })
    .await;

    // d goes silent: its swarm is no longer polled, its socket stays open.
    let (d, _d_control) = node(Keypair::generate_ed25519(), scoped_config(), TCP).await;
    let d_id = d.peer;
    dial(&d, a.address.clone()).await;
    a.wait(WAIT, |e| match liquid_event(e) {
        Some(Event::PeerConnected { peer }) if *peer == d_id => Some(()),
        _ => None,
    })
    .await;
    assert!(d.calls.send(Call::Freeze).is_ok(), "d's driver runs");
    let frozen_at = tokio::time::Instant::now();
    a.wait(WAIT, |e| match liquid_event(e) {
        Some(Event::PeerDisconnected { peer }) if *peer == d_id => Some(()),
        _ => None,
    })
    .await;
    // The limit is ping_interval + ping_timeout = 500 ms; checked every 50 ms.
    assert!(
        frozen_at.elapsed() < Duration::from_secs(5),
        "silent peer closed after {:?}",
        frozen_at.elapsed()
    );
    for driven in [b, d] {
        driven.task.abort();
    }
    a.task.abort();
}

async fn kad_only_peer(target: Multiaddr) -> Driven<KadOnly> {
    let key = Keypair::generate_ed25519();
    let swarm = stock_swarm(key, |key| KadOnly {
        identify: identify_for(key),
        kad: kad_for(key),
    });
    let driven = Driven::spawn(swarm, TCP).await;
    dial(&driven, target).await;
    driven
}

/// Thirty Kademlia-only peers, each connected to `target` before the next dials:
/// thirty handshakes at once from one address would meet the node-wide limit on
/// handshakes per IP (16), which applies whatever the policy scope.
async fn kad_only_crowd(target: Multiaddr) -> Vec<Driven<KadOnly>> {
    let mut crowd = Vec::new();
    for _ in 0..30 {
        let member = kad_only_peer(target.clone()).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        while connected_peers(&member).await == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "crowd member {} never connected",
                crowd.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        crowd.push(member);
    }
    crowd
}

/// Connected peers of a driven swarm.
async fn connected_peers<B>(driven: &Driven<B>) -> usize
where
    B: NetworkBehaviour + Send + 'static,
    B::ToSwarm: Send + std::fmt::Debug,
{
    driven.call(|swarm| swarm.connected_peers().count()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kademlia_only_peers_are_not_counted_pooled_or_exchanged_with_when_scoped() {
    init_tracing();
    let config = scoped_config().with_max_peers(3);
    let (mut a, a_control) = node(Keypair::generate_ed25519(), config, TCP).await;
    let (b, _b_control) = node(Keypair::generate_ed25519(), scoped_config(), TCP).await;
    dial(&b, a.address.clone()).await;
    a.wait(WAIT, |e| match liquid_event(e) {
        Some(Event::PeerConnected { peer }) if *peer == b.peer => Some(()),
        _ => None,
    })
    .await;
    let crowd = kad_only_crowd(a.address.clone()).await;
    // A dial of the node's own (not ours) that fails is not our event either.
    let nobody = PeerId::random();
    let nowhere = address(free_port(), nobody);
    a.call(move |swarm| swarm.dial(nowhere))
        .await
        .expect("dial started");
    a.wait(WAIT, |e| match e {
        SwarmEvent::OutgoingConnectionError {
            peer_id: Some(p), ..
        } if *p == nobody => Some(()),
        _ => None,
    })
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while connected_peers(&a).await < 31 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of 31 peers connected",
            connected_peers(&a).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Past identify (the proof a peer would give) and the exchange timeout's
    // first seconds: nothing of ours happened with the crowd.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(connected_peers(&a).await, 31, "nobody refused or evicted");
    while let Ok(event) = a.events.try_recv() {
        a.passed.push(event);
    }
    let in_crowd = |peer: &PeerId| crowd.iter().any(|m| m.peer == *peer);
    for event in &a.passed {
        if let Some(e) = liquid_event(event) {
            let ours = match e {
                Event::Refused { .. } | Event::Evicted { .. } => true,
                Event::DialFailed { peer, .. } => *peer == Some(nobody),
                Event::ConnectionEstablished { peer, .. }
                | Event::ProtocolExchangeFailed { peer, .. }
                | Event::PeerConnected { peer } => in_crowd(peer),
                _ => false,
            };
            assert!(!ours, "{e:?}");
        }
    }
    for member in &crowd {
        assert!(
            a_control.pool_stats(&member.peer).is_empty(),
            "no pool for a peer that does not speak ours"
        );
        assert_eq!(a_control.peer_protocols(&member.peer), None, "no exchange");
    }
    assert_eq!(a_control.connected_peers(), vec![b.peer]);
    assert!(
        !a_control.pool_stats(&b.peer).is_empty(),
        "b keeps its pool"
    );
    for member in crowd {
        member.task.abort();
    }
    a.task.abort();
    b.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unscoped_limits_refuse_kademlia_only_peers() {
    // The default scope (one policy for the whole node) is what a swarm of
    // liquid peers alone wants; with other protocols it refuses their peers.
    let config = Config::default().with_max_peers(3);
    let (mut a, _a_control) = node(Keypair::generate_ed25519(), config, TCP).await;
    let mut crowd = Vec::new();
    for _ in 0..6 {
        crowd.push(kad_only_peer(a.address.clone()).await);
    }
    a.wait(WAIT, |e| match liquid_event(e) {
        Some(Event::Refused { .. }) => Some(()),
        _ => None,
    })
    .await;
    // Refused connections close once the remote was told why (or could not be).
    let deadline = tokio::time::Instant::now() + WAIT;
    while connected_peers(&a).await > 3 {
        assert!(tokio::time::Instant::now() < deadline, "refused peers stay");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for member in crowd {
        member.task.abort();
    }
    a.task.abort();
}

/// Waits for an event on a host's subscription.
async fn host_event<T>(
    events: &mut liquid_p2p::Events,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) => {
                if let Some(found) = pick(&event) {
                    return found;
                }
            }
            Ok(None) => panic!("host gone"),
            Err(_) => panic!("no such event within {WAIT:?}"),
        }
    }
}

async fn host_with_extra(key: Keypair, config: Config, listen_on: &str) -> Host<Extra> {
    Host::builder()
        .keypair(key)
        .config(config)
        .listen_on(listen_on.parse().expect("address"))
        .behaviour(|key| Extra {
            gossipsub: gossipsub_for(key),
            kad: kad_for(key),
        })
        .build()
        .await
        .expect("host")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_runs_the_nodes_gossipsub_and_kademlia_next_to_liquid() {
    init_tracing();
    let a = host_with_extra(Keypair::generate_ed25519(), scoped_config(), TCP).await;
    let b_key = Keypair::generate_ed25519();
    let b = host_with_extra(b_key.clone(), scoped_config(), TCP).await;
    let c = host_with_extra(Keypair::generate_ed25519(), scoped_config(), TCP).await;
    let mut a_gossip = a.take_behaviour_events().expect("a's events");
    let mut c_gossip = c.take_behaviour_events().expect("c's events");
    let mut inbox = a.control().register_protocol(PROTO).expect("register");
    let mut a_events = a.control().events();
    let (b_id, c_id) = (b.local_peer_id(), c.local_peer_id());
    let b_addr = b.listen_addrs()[0].clone();
    a.add_required_peer(b_addr.clone()).await.expect("required");
    c.dial(a.listen_addrs()[0].clone())
        .await
        .expect("c dials a");
    host_event(&mut a_events, |e| match e {
        Event::RequiredPeerConnected { peer } if *peer == b_id => Some(()),
        _ => None,
    })
    .await;

    // Liquid messages flow.
    b.control()
        .send(a.local_peer_id(), PROTO, b"block 1")
        .await
        .expect("sent");
    let message = tokio::time::timeout(WAIT, inbox.recv())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(message.peer, b_id);

    // Gossipsub through the host's swarm: b publishes, a and c (via a) receive.
    let mut subscribed = Vec::new();
    while subscribed.len() < 2 {
        match tokio::time::timeout(WAIT, a_gossip.recv()).await {
            Ok(Some(ExtraEvent::Gossipsub(gossipsub::Event::Subscribed { peer_id, .. }))) => {
                subscribed.push(peer_id);
            }
            Ok(Some(_)) => {}
            other => panic!("a's gossipsub events: {other:?}"),
        }
    }
    loop {
        match tokio::time::timeout(WAIT, c_gossip.recv()).await {
            Ok(Some(ExtraEvent::Gossipsub(gossipsub::Event::Subscribed { .. }))) => break,
            Ok(Some(_)) => {}
            other => panic!("c's gossipsub events: {other:?}"),
        }
    }
    b.with_behaviour(|extra| {
        extra
            .gossipsub
            .publish(gossipsub::IdentTopic::new(TOPIC), b"gossip 1".to_vec())
    })
    .await
    .expect("b runs")
    .expect("published");
    for events in [&mut a_gossip, &mut c_gossip] {
        loop {
            match tokio::time::timeout(WAIT, events.recv()).await {
                Ok(Some(ExtraEvent::Gossipsub(gossipsub::Event::Message { message, .. }))) => {
                    assert_eq!(message.data, b"gossip 1");
                    break;
                }
                Ok(Some(_)) => {}
                other => panic!("gossipsub message: {other:?}"),
            }
        }
    }

    // Kademlia: c knows a; a knows b; c finds b through a.
    let (a_id, a_addr) = (a.local_peer_id(), a.listen_addrs()[0].clone());
    c.with_behaviour(move |extra| extra.kad.add_address(&a_id, a_addr))
        .await
        .expect("c runs");
    let b_for_a = b_addr.clone();
    a.with_behaviour(move |extra| extra.kad.add_address(&b_id, b_for_a))
        .await
        .expect("a runs");
    c.with_behaviour(move |extra| extra.kad.get_closest_peers(b_id))
        .await
        .expect("c runs");
    loop {
        match tokio::time::timeout(WAIT, c_gossip.recv()).await {
            Ok(Some(ExtraEvent::Kad(kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::GetClosestPeers(Ok(ok)),
                ..
            }))) => {
                assert!(ok.peers.iter().any(|p| p.peer_id == b_id), "{ok:?}");
                break;
            }
            Ok(Some(_)) => {}
            other => panic!("kademlia lookup: {other:?}"),
        }
    }

    // b dies and comes back on the same address and key: a redials it.
    b.shutdown().await;
    drop(b);
    host_event(&mut a_events, |e| match e {
        Event::RedialScheduled { peer, .. } if *peer == b_id => Some(()),
        _ => None,
    })
    .await;
    let listen_on = b_addr.iter().take(2).collect::<Multiaddr>().to_string();
    let b = host_with_extra(b_key, scoped_config(), &listen_on).await;
    host_event(&mut a_events, |e| match e {
        Event::RequiredPeerConnected { peer } if *peer == b_id => Some(()),
        _ => None,
    })
    .await;
    assert!(a.control().connected_peers().contains(&c_id));
    for h in [a, b, c] {
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_host_lets_kademlia_only_peers_in_beyond_max_peers() {
    // The default ping timings: the host closes connections no behaviour keeps
    // alive after 4 × ping_timeout, which with scoped_config's 300 ms could end a
    // quiet Kademlia connection before the crowd is counted.
    let config = scoped_config()
        .with_ping_interval(Config::default().ping_interval)
        .with_ping_timeout(Config::default().ping_timeout)
        .with_max_peers(2);
    let node = host_with_extra(Keypair::generate_ed25519(), config, TCP).await;
    let mut events = node.control().events();
    // Each of them reaches the host: its own swarm counts the connection.
    let crowd = kad_only_crowd(node.listen_addrs()[0].clone()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for member in &crowd {
        assert_eq!(connected_peers(member).await, 1, "not refused, not evicted");
        assert!(node.control().pool_stats(&member.peer).is_empty());
    }
    while let Some(e) = events.try_recv() {
        assert!(
            !matches!(e, Event::Refused { .. } | Event::Evicted { .. }),
            "{e:?}"
        );
    }
    // A liquid peer still gets in and is served.
    let liquid = host(Config::default()).await;
    let mut inbox = node.control().register_protocol(PROTO).expect("register");
    liquid
        .dial(node.listen_addrs()[0].clone())
        .await
        .expect("dial");
    liquid
        .control()
        .send(node.local_peer_id(), PROTO, b"hello")
        .await
        .expect("sent");
    tokio::time::timeout(WAIT, inbox.recv())
        .await
        .expect("in time")
        .expect("open");
    for member in crowd {
        member.task.abort();
    }
    liquid.shutdown().await;
    node.shutdown().await;
}
