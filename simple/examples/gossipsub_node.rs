//! A chain node that runs gossipsub and liquid-p2p in one libp2p `Swarm`.
//!
//! Gossipsub spreads transactions to everyone; liquid-p2p carries blocks to the
//! validators the node must stay connected to (a required peer, redialled if it
//! goes away). Both share the node's connections.
//!
//! ```text
//! cargo run -p liquid-p2p --example gossipsub_node
//! ```
//!
//! The example starts two such nodes in one process: `validator` listens, `node`
//! requires it. It ends when the validator got a block over liquid-p2p and a
//! transaction over gossipsub.

use std::time::Duration;

use futures::StreamExt;
use libp2p::{
    Multiaddr, Swarm, gossipsub, identify, identity::Keypair, noise, swarm::NetworkBehaviour,
    swarm::SwarmEvent, tcp, yamux,
};
use liquid_p2p::{Behaviour, Config, Control, Event};

const BLOCKS: &str = "/example-chain/blocks/1";
const TRANSACTIONS: &str = "transactions";

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct ChainNode {
    liquid: Behaviour,
    gossipsub: gossipsub::Behaviour,
    identify: identify::Behaviour,
}

fn build(key: Keypair) -> Result<(Swarm<ChainNode>, Control), Box<dyn std::error::Error>> {
    // Other protocols share this swarm: only peers that speak ours are liquid
    // peers, and only they count against our limits.
    let config = Config::default().scoped_to_liquid_peers();
    let (liquid, control) = Behaviour::new(key.public().to_peer_id(), config)?;
    let gossip_config = gossipsub::ConfigBuilder::default()
        .heartbeat_interval(Duration::from_millis(500))
        .build()?;
    let mut gossipsub = gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Signed(key.clone()),
        gossip_config,
    )?;
    gossipsub.subscribe(&gossipsub::IdentTopic::new(TRANSACTIONS))?;
    let identify = identify::Behaviour::new(identify::Config::new(
        "/example-chain/1".into(),
        key.public(),
    ));
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|_| ChainNode {
            liquid,
            gossipsub,
            identify,
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build();
    Ok((swarm, control))
}

/// Drives a swarm until it listens; returns the address with `/p2p/<id>`.
async fn listen(swarm: &mut Swarm<ChainNode>) -> Result<Multiaddr, Box<dyn std::error::Error>> {
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            return Ok(address
                .with_p2p(*swarm.local_peer_id())
                .unwrap_or_else(|a| a));
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut validator, validator_control) = build(Keypair::generate_ed25519())?;
    let mut blocks = validator_control.register_protocol(BLOCKS)?;
    let validator_addr = listen(&mut validator).await?;
    let validator_id = *validator.local_peer_id();

    let (mut node, node_control) = build(Keypair::generate_ed25519())?;
    // Dialled now and redialled on a capped Fibonacci schedule whenever it goes.
    node.behaviour_mut()
        .liquid
        .add_required_peer(validator_addr)?;

    // The validator's own loop: its swarm, its blocks inbox, gossipsub messages.
    let validator_task = tokio::spawn(async move {
        let (mut got_block, mut got_transaction) = (false, false);
        while !(got_block && got_transaction) {
            tokio::select! {
                Some(block) = blocks.recv() => {
                    println!("validator: block from {}: {:?}", block.peer, String::from_utf8_lossy(&block.payload));
                    got_block = true;
                }
                event = validator.select_next_some() => {
                    if let SwarmEvent::Behaviour(ChainNodeEvent::Gossipsub(gossipsub::Event::Message { message, .. })) = event {
                        println!("validator: transaction {:?}", String::from_utf8_lossy(&message.data));
                        got_transaction = true;
                    }
                }
            }
        }
    });

    // The node's loop: its events arrive through its own swarm.
    let (mut block_sent, mut transaction_sent) = (false, false);
    let mut validator_subscribed = false;
    while !(block_sent && transaction_sent) {
        match node.select_next_some().await {
            SwarmEvent::Behaviour(ChainNodeEvent::Liquid(Event::RequiredPeerConnected {
                peer,
            })) => {
                println!("node: required peer {peer} connected");
                let control = node_control.clone();
                tokio::spawn(async move { control.send(peer, BLOCKS, b"block 1").await });
                block_sent = true;
            }
            SwarmEvent::Behaviour(ChainNodeEvent::Gossipsub(gossipsub::Event::Subscribed {
                peer_id,
                ..
            })) if peer_id == validator_id => {
                validator_subscribed = true;
            }
            _ => {}
        }
        if validator_subscribed && !transaction_sent {
            let topic = gossipsub::IdentTopic::new(TRANSACTIONS);
            node.behaviour_mut()
                .gossipsub
                .publish(topic, b"tx 1".to_vec())?;
            transaction_sent = true;
        }
    }
    // Keep the node's swarm running until the validator has both.
    tokio::select! {
        done = validator_task => done?,
        _ = async { loop { node.select_next_some().await; } } => {}
    }
    println!("done");
    Ok(())
}
