//! Plain rust-libp2p swarms for the baseline modes: same transports as a liquid
//! `Host` (TCP with `nodelay` + noise + yamux defaults, QUIC defaults), driven by a
//! task that counts connections and takes commands.

use std::time::Duration;

use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm, SwarmBuilder,
    identity::Keypair,
    noise,
    swarm::{
        NetworkBehaviour, SwarmEvent,
        dial_opts::{DialOpts, PeerCondition},
    },
    tcp, yamux,
};
use tokio::sync::{mpsc, watch};

use super::{BenchError, Context, Transport, harness::Tasks};

/// Connections stay open however long they are idle: the measurements decide.
const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Something to do with the swarm, run on its task.
pub type SwarmCommand<B> = Box<dyn FnOnce(&mut Swarm<B>) + Send>;

/// A swarm running on its own task; dropping this stops it.
pub struct Driven<B: NetworkBehaviour> {
    commands: mpsc::UnboundedSender<SwarmCommand<B>>,
    connections: watch::Receiver<usize>,
    peer: PeerId,
    _task: Tasks,
}

impl<B: NetworkBehaviour> Driven<B> {
    /// Runs `command` on the swarm's task.
    pub fn command(&self, command: SwarmCommand<B>) -> Result<(), BenchError> {
        self.commands
            .send(command)
            .map_err(|_| BenchError::new("swarm task has stopped"))
    }

    /// The swarm's peer id.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// Connections established now.
    pub fn connections(&self) -> usize {
        *self.connections.borrow()
    }

    /// Waits until at least `n` connections are established.
    pub async fn wait_connections(&self, n: usize, limit: Duration) -> Result<(), BenchError> {
        let mut rx = self.connections.clone();
        tokio::time::timeout(limit, rx.wait_for(|c| *c >= n))
            .await
            .map_err(|_| {
                BenchError::new(format!(
                    "{} of {n} connections established within {limit:?}",
                    *self.connections.borrow()
                ))
            })?
            .map(drop)
            .ctx("swarm task stopped")
    }
}

/// A swarm with TCP + noise + yamux and QUIC and the given behaviour.
pub fn build_swarm<B, F>(behaviour: F) -> Result<Swarm<B>, BenchError>
where
    B: NetworkBehaviour,
    F: FnOnce(&Keypair) -> B,
{
    Ok(SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .ctx("tcp transport")?
        .with_quic()
        .with_behaviour(behaviour)
        .ctx("behaviour")?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_TIMEOUT))
        .build())
}

/// Starts listening on loopback and returns the address, with `/p2p/<id>`.
pub async fn listen<B: NetworkBehaviour>(
    swarm: &mut Swarm<B>,
    transport: Transport,
    limit: Duration,
) -> Result<Multiaddr, BenchError> {
    swarm.listen_on(transport.listen_addr()?).ctx("listen")?;
    let peer = *swarm.local_peer_id();
    let address = tokio::time::timeout(limit, async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                return address;
            }
        }
    })
    .await
    .ctx("no listen address in time")?;
    Ok(address.with_p2p(peer).unwrap_or_else(|a| a))
}

/// Drives `swarm` on a new task; behaviour events go to `on_event`.
pub fn drive<B, F>(mut swarm: Swarm<B>, mut on_event: F) -> Driven<B>
where
    B: NetworkBehaviour + Send + 'static,
    F: FnMut(&mut Swarm<B>, B::ToSwarm) + Send + 'static,
{
    let (commands, mut rx) = mpsc::unbounded_channel::<SwarmCommand<B>>();
    let (count_tx, connections) = watch::channel(0usize);
    let peer = *swarm.local_peer_id();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(command) = rx.recv() => command(&mut swarm),
                event = swarm.select_next_some() => match event {
                    SwarmEvent::ConnectionEstablished { .. } => count_tx.send_modify(|c| *c += 1),
                    SwarmEvent::ConnectionClosed { .. } => {
                        count_tx.send_modify(|c| *c = c.saturating_sub(1));
                    }
                    SwarmEvent::Behaviour(event) => on_event(&mut swarm, event),
                    _ => {}
                },
            }
        }
    });
    let mut tasks = Tasks::default();
    tasks.push(task);
    Driven {
        commands,
        connections,
        peer,
        _task: tasks,
    }
}

/// A listening and a dialling swarm, connected once; returns them driven
/// (listener, dialer).
pub async fn connect<B, FL, FD>(
    mut listener: Swarm<B>,
    mut dialer: Swarm<B>,
    transport: Transport,
    on_listener_event: FL,
    on_dialer_event: FD,
    limit: Duration,
) -> Result<(Driven<B>, Driven<B>), BenchError>
where
    B: NetworkBehaviour + Send + 'static,
    FL: FnMut(&mut Swarm<B>, B::ToSwarm) + Send + 'static,
    FD: FnMut(&mut Swarm<B>, B::ToSwarm) + Send + 'static,
{
    let address = listen(&mut listener, transport, limit).await?;
    dialer.dial(address).ctx("dial")?;
    let listener = drive(listener, on_listener_event);
    let dialer = drive(dialer, on_dialer_event);
    dialer.wait_connections(1, limit).await?;
    listener.wait_connections(1, limit).await?;
    Ok((listener, dialer))
}

/// A dial of `peer` at `address` that opens a new connection even when one is
/// already up (as liquid does for a second connection per peer).
pub fn dial_always(peer: PeerId, address: Multiaddr) -> DialOpts {
    DialOpts::peer_id(peer)
        .addresses(vec![address])
        .condition(PeerCondition::Always)
        .build()
}
