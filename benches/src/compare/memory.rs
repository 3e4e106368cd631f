//! Memory per idle connection: RSS growth (`/proc/self/statm`) while `n` more
//! connections are opened between two peers of this process and left idle, divided
//! by the `2 n` connection ends. Three kinds, and two more with `eager`, measured
//! in this order:
//!
//! - `plain-libp2p`: two plain libp2p swarms with no behaviour (no streams at all);
//! - `plain-libp2p-streams`: two plain libp2p swarms whose behaviour
//!   ([`fixed_streams`](super::fixed_streams)) opens as many streams on each
//!   connection as a default liquid connection holds at rest (`idle_floor`, 1, by
//!   each end) and holds both ends idle: the same stream ends as liquid, and
//!   nothing else;
//! - `liquid`: liquid-p2p hosts with default pools (`idle_floor` streams opened by
//!   each end, read by the other);
//! - `plain-libp2p-streams init_size`: the same as `plain-libp2p-streams` with
//!   `init_size` (10) streams opened by each end;
//! - `liquid open_at_connect`: liquid-p2p hosts that open `init_size` streams
//!   when a connection comes up (the default before pools became lazy).
//!
//! Every set is kept alive until all are measured, so none reuses memory freed by
//! another.

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, stream};
use libp2p::{
    Swarm,
    swarm::{NetworkBehaviour, dummy},
};
use liquid_p2p::{Config, Host, PeerId, PoolConfig};

use super::{
    BenchError, Context, Transport,
    fixed_streams::{self, StreamCounts},
    harness::rss_bytes,
    swarm::{Driven, build_swarm, dial_always, listen},
};

/// Connections opened before the first reading, so that one-time allocations
/// (first connection, tables, thread caches) are not counted.
const WARM_CONNECTIONS: usize = 2;
/// Dials in flight at once.
const DIAL_CONCURRENCY: usize = 8;
/// Wait after the connections are up, before reading RSS.
pub const SETTLE: Duration = Duration::from_millis(1000);

/// Idle memory of one kind of connection.
#[derive(Debug, Clone)]
pub struct Idle {
    /// RSS growth per connection end, KiB.
    pub kib_per_end: f64,
    /// Connections measured.
    pub connections: usize,
}

/// What stays alive until every measurement is done.
pub struct Held {
    _plain: Option<PlainSwarms<dummy::Behaviour>>,
    _plain_streams: Option<PlainSwarms<fixed_streams::Behaviour>>,
    _plain_streams_eager: Option<PlainSwarms<fixed_streams::Behaviour>>,
    liquid: Option<(Host, Host)>,
    liquid_eager: Option<(Host, Host)>,
}

impl Held {
    /// Shuts the liquid hosts down; the plain swarms stop when this is dropped.
    pub async fn shutdown(self) {
        for (a, b) in self.liquid.iter().chain(&self.liquid_eager) {
            tokio::join!(a.shutdown(), b.shutdown());
        }
    }
}

/// The measurements.
pub struct Measured {
    /// liquid-p2p hosts with default pools.
    pub liquid: Result<Idle, BenchError>,
    /// Plain swarms, no streams.
    pub plain: Result<Idle, BenchError>,
    /// Plain swarms holding as many idle streams per connection as liquid's
    /// default pools at rest.
    pub plain_streams: Result<Idle, BenchError>,
    /// liquid-p2p hosts whose pools open `init_size` streams at connect (if
    /// measured).
    pub liquid_eager: Option<Result<Idle, BenchError>>,
    /// Plain swarms holding `init_size` idle streams per connection each way
    /// (if measured).
    pub plain_streams_eager: Option<Result<Idle, BenchError>>,
}

fn per_end(before: u64, after: u64, connections: usize) -> Idle {
    Idle {
        kib_per_end: after.saturating_sub(before) as f64 / 1024.0 / (2 * connections) as f64,
        connections,
    }
}

/// Keeps what a measurement returns alive in `slot`; returns its figure.
fn keep<T>(
    result: Result<(Idle, T), BenchError>,
    slot: &mut Option<T>,
) -> Result<Idle, BenchError> {
    result.map(|(idle, kept)| {
        *slot = Some(kept);
        idle
    })
}

/// Measures the three kinds, and with `eager` the two with `init_size`
/// streams; returns them and what to shut down afterwards.
pub async fn idle_memory(connections: usize, limit: Duration, eager: bool) -> (Measured, Held) {
    let mut held = Held {
        _plain: None,
        _plain_streams: None,
        _plain_streams_eager: None,
        liquid: None,
        liquid_eager: None,
    };
    let pool = PoolConfig::default();
    let plain = keep(plain_empty_idle(connections, limit).await, &mut held._plain);
    let plain_streams = keep(
        plain_streams_idle(connections, limit, pool.effective_idle_floor()).await,
        &mut held._plain_streams,
    );
    let liquid = keep(
        liquid_idle(connections, limit, pool.clone()).await,
        &mut held.liquid,
    );
    let (mut plain_streams_eager, mut liquid_eager) = (None, None);
    if eager {
        plain_streams_eager = Some(keep(
            plain_streams_idle(connections, limit, pool.init_size).await,
            &mut held._plain_streams_eager,
        ));
        liquid_eager = Some(keep(
            liquid_idle(connections, limit, pool.with_open_at_connect(true)).await,
            &mut held.liquid_eager,
        ));
    }
    (
        Measured {
            liquid,
            plain,
            plain_streams,
            liquid_eager,
            plain_streams_eager,
        },
        held,
    )
}

type PlainSwarms<B> = (Driven<B>, Driven<B>);

/// Plain swarms with no behaviour: connections and nothing else.
async fn plain_empty_idle(
    n: usize,
    limit: Duration,
) -> Result<(Idle, PlainSwarms<dummy::Behaviour>), BenchError> {
    let listener = build_swarm(|_| dummy::Behaviour)?;
    let dialer = build_swarm(|_| dummy::Behaviour)?;
    plain_idle(n, limit, listener, dialer, &[]).await
}

/// Plain swarms whose connections hold `per_connection` idle streams each way.
async fn plain_streams_idle(
    n: usize,
    limit: Duration,
    per_connection: usize,
) -> Result<(Idle, PlainSwarms<fixed_streams::Behaviour>), BenchError> {
    let listener = fixed_streams::Behaviour::new(per_connection);
    let dialer = fixed_streams::Behaviour::new(per_connection);
    let counts = [listener.counts(), dialer.counts()];
    plain_idle(
        n,
        limit,
        build_swarm(|_| listener)?,
        build_swarm(|_| dialer)?,
        &counts.map(|c| (c, per_connection)),
    )
    .await
}

/// Opens `n` connections from `dialer` to `listener` after the warm ones; before
/// each RSS reading, waits until every counter in `streams` shows its number of
/// streams each way on every connection.
async fn plain_idle<B>(
    n: usize,
    limit: Duration,
    mut listener: Swarm<B>,
    dialer: Swarm<B>,
    streams: &[(Arc<StreamCounts>, usize)],
) -> Result<(Idle, PlainSwarms<B>), BenchError>
where
    B: NetworkBehaviour<ToSwarm = std::convert::Infallible> + Send + 'static,
{
    let address = listen(&mut listener, Transport::Tcp, limit).await?;
    let listener = super::swarm::drive(listener, |_, e| match e {});
    let dialer = super::swarm::drive(dialer, |_, e| match e {});
    let dial = |count: usize| {
        let (address, peer) = (address.clone(), listener.peer());
        dialer.command(Box::new(move |swarm: &mut Swarm<B>| {
            for _ in 0..count {
                let _ = swarm.dial(dial_always(peer, address.clone()));
            }
        }))
    };
    let idle = |total: usize| {
        let (listener, dialer) = (&listener, &dialer);
        async move {
            dialer.wait_connections(total, limit).await?;
            listener.wait_connections(total, limit).await?;
            for (counts, per_connection) in streams {
                counts.wait(total, *per_connection, limit).await?;
            }
            Ok::<_, BenchError>(())
        }
    };
    dial(WARM_CONNECTIONS)?;
    idle(WARM_CONNECTIONS).await?;
    tokio::time::sleep(SETTLE).await;
    let before = rss_bytes()?;
    dial(n)?;
    idle(WARM_CONNECTIONS + n).await?;
    tokio::time::sleep(SETTLE).await;
    let after = rss_bytes()?;
    Ok((per_end(before, after, n), (listener, dialer)))
}

/// Liquid hosts with `pool`; waits until every connection holds the streams
/// `pool` opens at connect.
async fn liquid_idle(
    n: usize,
    limit: Duration,
    pool: PoolConfig,
) -> Result<(Idle, (Host, Host)), BenchError> {
    let init = if pool.open_at_connect {
        pool.init_size
    } else {
        pool.effective_idle_floor()
    };
    let config = Config::default()
        .with_max_connections_per_peer(WARM_CONNECTIONS + n)
        .with_pool(pool);
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
                    let pools = host.control().pool_stats(peer);
                    pools.len() >= total
                        && pools.iter().all(|p| p.current >= init)
                        && host.control().receive_counts(peer).streams >= total * init
                };
                if ready(a, &b_id) && ready(b, &a_id) {
                    return Ok(());
                }
                if tokio::time::Instant::now() > deadline {
                    let pools = b.control().pool_stats(&a_id);
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
