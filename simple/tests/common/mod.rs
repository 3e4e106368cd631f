//! Shared set-up of the end-to-end tests: hosts on loopback and event waits.

#![allow(dead_code)]

use std::{collections::HashSet, time::Duration};

use futures::StreamExt;
use liquid_p2p::{
    Config, Control, Event, Events, Host, Inbox, PeerId, PoolStats,
    libp2p::{
        self, Multiaddr, Swarm,
        identity::Keypair,
        noise,
        swarm::{NetworkBehaviour, SwarmEvent},
        tcp, yamux,
    },
};

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

/// Dials `to` from `from` and waits until both pools exist and both hosts know
/// each other's protocols (the exchange is done).
pub async fn connect(from: &Host, to: &Host) -> PeerId {
    let peer = from.dial(to.listen_addrs()[0].clone()).await.expect("dial");
    assert_eq!(peer, to.local_peer_id());
    let back = from.local_peer_id();
    wait_until(Duration::from_secs(5), || {
        !from.control().pool_stats(&peer).is_empty()
            && !to.control().pool_stats(&back).is_empty()
            && from.control().peer_protocols(&peer).is_some()
            && to.control().peer_protocols(&back).is_some()
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

/// The next message of `inbox`, failing the test after `limit`.
pub async fn next_message(inbox: &mut liquid_p2p::Inbox, limit: Duration) -> liquid_p2p::Message {
    tokio::time::timeout(limit, inbox.recv())
        .await
        .expect("a message in time")
        .expect("inbox open")
}

/// A loopback port nobody listens on (yet).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `/ip4/127.0.0.1/tcp/<port>`.
pub fn tcp_address(port: u16) -> Multiaddr {
    format!("/ip4/127.0.0.1/tcp/{port}")
        .parse()
        .expect("address")
}

/// The TCP port `host` listens on (its first address).
pub fn tcp_port(host: &Host) -> u16 {
    host.listen_addrs()[0]
        .iter()
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .expect("tcp port")
}

/// `/ip4/127.0.0.1/tcp/<port>/p2p/<peer>`.
pub fn address(port: u16, peer: PeerId) -> Multiaddr {
    tcp_address(port).with_p2p(peer).expect("no peer id yet")
}

/// A stock rust-libp2p swarm with identity `key` and the given behaviour: TCP +
/// noise + libp2p's yamux, idle connections kept for 60 s.
pub fn stock_swarm<B: NetworkBehaviour>(
    key: Keypair,
    behaviour: impl FnOnce(&Keypair) -> B,
) -> Swarm<B> {
    libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("tcp")
        .with_behaviour(|key| behaviour(key))
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// A plain rust-libp2p swarm (TCP + noise + yamux, libp2p-stream only, nothing of
/// ours) that dials `target`; returns its peer id and stream control.
pub async fn plain_swarm(target: Multiaddr) -> (PeerId, libp2p_stream::Control) {
    let (id, control, _) = plain_swarm_accepting(target, &[]).await;
    (id, control)
}

/// [`plain_swarm`] that accepts inbound streams of `protocols` from the start
/// (registered before it dials, so the remote never finds them unsupported).
pub async fn plain_swarm_accepting(
    target: Multiaddr,
    protocols: &[libp2p::StreamProtocol],
) -> (
    PeerId,
    libp2p_stream::Control,
    Vec<libp2p_stream::IncomingStreams>,
) {
    let mut swarm = stock_swarm(Keypair::generate_ed25519(), |_| {
        libp2p_stream::Behaviour::new()
    });
    let mut control = swarm.behaviour().new_control();
    let incoming = protocols
        .iter()
        .map(|p| control.accept(p.clone()).expect("protocol accepted once"))
        .collect();
    let id = *swarm.local_peer_id();
    swarm.dial(target).expect("dial");
    // Returns once the dial has an outcome. libp2p-stream's `open_stream` called
    // while the connection is being established can wait forever: the handler
    // took its request channel before the behaviour heard of the connection, so
    // the request goes to a channel for a dial that the swarm then skips
    // (the peer is connected). Seen as a hung suite run, then as a test failure.
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { .. }
                | SwarmEvent::OutgoingConnectionError { .. } => return,
                _ => {}
            }
        }
    })
    .await;
    assert!(
        outcome.is_ok(),
        "the plain swarm's dial has no outcome in 10 s"
    );
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    (id, control, incoming)
}

/// A TCP relay between a dialer and `target` that can be frozen: it then stops
/// reading both sockets (and writing), as a peer whose process is stopped would.
pub async fn freezable_relay(
    target: std::net::SocketAddr,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A small receive buffer, so that what the frozen relay holds is small
    // (accepted sockets inherit it).
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(64 * 1024).expect("buffer size");
    socket
        .bind(([127, 0, 0, 1], 0).into())
        .expect("relay binds");
    let listener = socket.listen(16).expect("relay listens");
    relay_connections(listener, target, move |mut from, mut to| {
        let frozen = std::sync::Arc::clone(&frozen);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                while frozen.load(std::sync::atomic::Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                match from.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    })
}

/// Connects `from` to `to` through a [`freezable_relay`] and waits for the
/// exchange; returns `to`'s peer id and the relay's switch.
pub async fn connect_through_relay(
    from: &Host,
    to: &Host,
) -> (PeerId, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let frozen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let relay = freezable_relay(
        ([127, 0, 0, 1], tcp_port(to)).into(),
        std::sync::Arc::clone(&frozen),
    )
    .await;
    let to_id = connect_via(from, to, relay, Duration::from_secs(5)).await;
    (to_id, frozen)
}

/// Dials `to` through the relay listening on `relay_port` and waits up to
/// `limit` for the exchange; returns `to`'s peer id.
pub async fn connect_via(from: &Host, to: &Host, relay_port: u16, limit: Duration) -> PeerId {
    let to_id = to.local_peer_id();
    from.dial(address(relay_port, to_id))
        .await
        .expect("dial through the relay");
    wait_until(limit, || from.control().peer_protocols(&to_id).is_some()).await;
    to_id
}

/// A TCP relay to `target` that forwards at most `rate` bytes a second each way,
/// `delay` late: a slow link whose queue holds `queue` bytes (the relay's receive
/// buffers; the kernel may round them).
pub async fn slow_relay(
    target: std::net::SocketAddr,
    rate: u64,
    delay: Duration,
    queue: u32,
) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(queue).expect("buffer size");
    socket
        .bind(([127, 0, 0, 1], 0).into())
        .expect("relay binds");
    let listener = socket.listen(16).expect("relay listens");
    relay_connections(listener, target, move |mut from, mut to| {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(4);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 1500];
            loop {
                let n = match from.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
                let due = tokio::time::Instant::now() + delay;
                if tx.send((due, buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        });
        tokio::spawn(async move {
            while let Some((due, bytes)) = rx.recv().await {
                tokio::time::sleep_until(due).await;
                if to.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        });
    })
}

/// Accepts connections on `listener`, connects each to `target`, and has
/// `forward` carry each direction (from one socket's read half to the other's
/// write half); returns the listening port.
fn relay_connections(
    listener: tokio::net::TcpListener,
    target: std::net::SocketAddr,
    forward: impl Fn(tokio::net::tcp::OwnedReadHalf, tokio::net::tcp::OwnedWriteHalf) + Send + 'static,
) -> u16 {
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                continue;
            };
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            forward(ri, wo);
            forward(ro, wi);
        }
    });
    port
}

/// Frames written in another sender's batch, summed over `stats`.
pub fn batched_frames(stats: &[PoolStats]) -> u64 {
    stats.iter().map(|s| s.batched_frames).sum()
}

/// A 256 B payload naming its sender `task` and its sequence number `seq`.
pub fn tagged(task: usize, seq: u32) -> Vec<u8> {
    let mut payload = vec![task as u8; 256];
    payload[1..5].copy_from_slice(&seq.to_le_bytes());
    payload
}

/// The sender and sequence number a [`tagged`] payload names.
pub fn tag_of(payload: &[u8]) -> (usize, u32) {
    let seq = u32::from_le_bytes(payload[1..5].try_into().expect("4 bytes"));
    (payload[0] as usize, seq)
}

/// `tasks` senders at once, each sending `per_task` [`tagged`] messages of
/// `protocol` to `to` through `control`, one after another.
pub fn spawn_tagged_senders(
    control: &Control,
    to: PeerId,
    protocol: &'static str,
    tasks: usize,
    per_task: u32,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..tasks)
        .map(|task| {
            let control = control.clone();
            tokio::spawn(async move {
                for seq in 0..per_task {
                    control
                        .send(to, protocol, tagged(task, seq))
                        .await
                        .expect("send");
                }
            })
        })
        .collect()
}

/// Receives what [`spawn_tagged_senders`] sent: each message exactly once (in
/// any order: separate sends may travel on different streams), and nothing
/// more within 200 ms.
pub async fn receive_each_tagged_once(inbox: &mut Inbox, tasks: usize, per_task: u32) {
    let mut seen = HashSet::new();
    for _ in 0..tasks * per_task as usize {
        let message = inbox.recv().await.expect("inbox open");
        assert_eq!(message.payload.len(), 256);
        let (task, seq) = tag_of(&message.payload);
        assert!(task < tasks && seq < per_task, "never sent");
        assert!(seen.insert((task, seq)), "{task}/{seq} arrived twice");
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(200), inbox.recv())
            .await
            .is_err(),
        "nothing beyond what was sent"
    );
}
