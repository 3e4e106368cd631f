//! Memory per idle connection: RSS growth (`/proc/self/statm`) while `n` more
//! connections are opened between two peers of this process and left idle, divided
//! by the `2 n` connection ends. liquid-p2p hosts with default pools (10 streams
//! opened by each end, read by the other) against two plain libp2p swarms with no
//! behaviour (no streams at all).
//!
//! The plain swarms are measured first and kept alive during the liquid
//! measurement, so neither reuses memory freed by the other.

use std::time::Duration;

use futures::{StreamExt, stream};
use libp2p::{
    Multiaddr, Swarm,
    swarm::{
        dial_opts::{DialOpts, PeerCondition},
        dummy,
    },
};
use liquid_p2p::{Config, Host, PeerId};

use super::{
    BenchError, Context, Transport,
    harness::rss_bytes,
    swarm::{Driven, build_swarm, listen},
};

/// Connections opened before the first reading, so that one-time allocations
/// (first connection, tables, thread caches) are not counted.
const WARM_CONNECTIONS: usize = 2;
/// Dials in flight at once.
const DIAL_CONCURRENCY: usize = 8;
/// Wait after the connections are up, before reading RSS.
const SETTLE: Duration = Duration::from_millis(1000);

/// Idle memory of one kind of connection.
#[derive(Debug, Clone)]
pub struct Idle {
    /// RSS growth per connection end, KiB.
    pub kib_per_end: f64,
    /// Connections measured.
    pub connections: usize,
}

/// What stays alive until both measurements are done.
pub struct Held {
    _plain: Option<(Driven<dummy::Behaviour>, Driven<dummy::Behaviour>)>,
    liquid: Option<(Host, Host)>,
}

impl Held {
    /// Shuts the liquid hosts down; the plain swarms stop when this is dropped.
    pub async fn shutdown(self) {
        if let Some((a, b)) = &self.liquid {
            tokio::join!(a.shutdown(), b.shutdown());
        }
    }
}

fn per_end(before: u64, after: u64, connections: usize) -> Idle {
    Idle {
        kib_per_end: after.saturating_sub(before) as f64 / 1024.0 / (2 * connections) as f64,
        connections,
    }
}

/// Measures both; returns (liquid, plain) and what to shut down afterwards.
pub async fn idle_memory(
    connections: usize,
    limit: Duration,
) -> (Result<Idle, BenchError>, Result<Idle, BenchError>, Held) {
    let mut held = Held {
        _plain: None,
        liquid: None,
    };
    let plain = match plain_idle(connections, limit).await {
        Ok((idle, swarms)) => {
            held._plain = Some(swarms);
            Ok(idle)
        }
        Err(e) => Err(e),
    };
    let liquid = match liquid_idle(connections, limit).await {
        Ok((idle, hosts)) => {
            held.liquid = Some(hosts);
            Ok(idle)
        }
        Err(e) => Err(e),
    };
    (liquid, plain, held)
}

type PlainSwarms = (Driven<dummy::Behaviour>, Driven<dummy::Behaviour>);

async fn plain_idle(n: usize, limit: Duration) -> Result<(Idle, PlainSwarms), BenchError> {
    let mut listener = build_swarm(|_| dummy::Behaviour)?;
    let address = listen(&mut listener, Transport::Tcp, limit).await?;
    let listener = super::swarm::drive(listener, |_, e| match e {});
    let dialer = super::swarm::drive(build_swarm(|_| dummy::Behaviour)?, |_, e| match e {});
    let dial = |count: usize| {
        let (address, peer) = (address.clone(), listener.peer());
        dialer.command(Box::new(move |swarm: &mut Swarm<dummy::Behaviour>| {
            for _ in 0..count {
                let _ = swarm.dial(plain_dial(peer, address.clone()));
            }
        }))
    };
    dial(WARM_CONNECTIONS)?;
    dialer.wait_connections(WARM_CONNECTIONS, limit).await?;
    listener.wait_connections(WARM_CONNECTIONS, limit).await?;
    tokio::time::sleep(SETTLE).await;
    let before = rss_bytes()?;
    dial(n)?;
    dialer.wait_connections(WARM_CONNECTIONS + n, limit).await?;
    listener
        .wait_connections(WARM_CONNECTIONS + n, limit)
        .await?;
    tokio::time::sleep(SETTLE).await;
    let after = rss_bytes()?;
    Ok((per_end(before, after, n), (listener, dialer)))
}

fn plain_dial(peer: libp2p::PeerId, address: Multiaddr) -> DialOpts {
    DialOpts::peer_id(peer)
        .addresses(vec![address])
        .condition(PeerCondition::Always)
        .build()
}

async fn liquid_idle(n: usize, limit: Duration) -> Result<(Idle, (Host, Host)), BenchError> {
    let config = Config {
        max_connections_per_peer: WARM_CONNECTIONS + n,
        ..Config::default()
    };
    let a = Host::builder()
        .config(config.clone())
        .listen_on(Transport::Tcp.listen_addr()?)
        .build()
        .await
        .ctx("host a")?;
    let b = Host::builder().config(config).build().await.ctx("host b")?;
    let address = a
        .listen_addrs()
        .into_iter()
        .next()
        .ctx("no listen address")?;
    let a_id = a.local_peer_id();
    let b_id = b.local_peer_id();
    let init = liquid_p2p::PoolConfig::default().init_size;
    let dial_many = |count: usize| {
        let (b, address) = (&b, address.clone());
        async move {
            let results: Vec<_> = stream::iter(0..count)
                .map(|_| b.dial(address.clone()))
                .buffer_unordered(DIAL_CONCURRENCY)
                .collect()
                .await;
            results
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
                .ctx("dial")
        }
    };
    let idle = |total: usize| {
        let (a, b) = (&a, &b);
        async move {
            let deadline = tokio::time::Instant::now() + limit;
            loop {
                let ready = |host: &Host, peer: &PeerId| {
                    let pools = host.pool_stats(peer);
                    pools.len() >= total
                        && pools.iter().all(|p| p.current >= init)
                        && host.receive_counts(peer).streams >= total * init
                };
                if ready(a, &b_id) && ready(b, &a_id) {
                    return Ok(());
                }
                if tokio::time::Instant::now() > deadline {
                    let pools = b.pool_stats(&a_id);
                    return Err(BenchError::new(format!(
                        "{} of {total} connections with full pools within {limit:?}",
                        pools.iter().filter(|p| p.current >= init).count()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    dial_many(WARM_CONNECTIONS).await?;
    idle(WARM_CONNECTIONS).await?;
    tokio::time::sleep(SETTLE).await;
    let before = rss_bytes()?;
    dial_many(n).await?;
    idle(WARM_CONNECTIONS + n).await?;
    tokio::time::sleep(SETTLE).await;
    let after = rss_bytes()?;
    Ok((per_end(before, after, n), (a, b)))
}
