//! `demo`: shows liquid-p2p's stream pools under load, in one process.
//!
//! It starts a few hosts on 127.0.0.1 (TCP), connects them in a full mesh, and for
//! a few seconds has every host send messages of mixed sizes (64 B to 64 KiB) from
//! 8 concurrent tasks to every other host. Then it prints, per host, the messages
//! sent and received and the throughput, and for every connection how its send
//! pool grew from its initial streams, and shuts every host down.
//!
//! ```text
//! cargo run -p liquid-p2p-examples --bin demo -- [--seconds N] [--hosts N]
//! ```

use std::{
    collections::HashMap,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Parser;
use futures::future::join_all;
use liquid_p2p::{Config, Control, Host, PeerId, PoolStats, libp2p::Multiaddr};

/// The protocol every host registers and sends on.
const PROTOCOL: &str = "/demo/blocks/1";
/// Concurrent sending tasks per host.
const SENDERS_PER_HOST: usize = 8;
/// Message sizes, cycled through by each sender (64 B .. 64 KiB).
const SIZES: [usize; 7] = [64, 256, 1024, 4096, 16 * 1024, 32 * 1024, 64 * 1024];
/// How often pool counters are sampled during the run.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// Longest wait for the mesh to form and for the last messages to arrive.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs several liquid-p2p hosts in one process and reports how their pools behave.
#[derive(Debug, Parser)]
#[command(name = "demo", version)]
struct Args {
    /// How long every host sends, in seconds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    seconds: u64,

    /// How many hosts to start.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(2..=16))]
    hosts: u64,
}

/// Counters of one host.
#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    sent_bytes: AtomicU64,
    send_errors: AtomicU64,
    received: AtomicU64,
    received_bytes: AtomicU64,
}

/// Highest values seen in one pool during the run.
#[derive(Debug, Default, Clone, Copy)]
struct Peak {
    current: usize,
    borrowed: usize,
    waiters: usize,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    liquid_p2p_examples::init_stderr_tracing("warn");
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let host_count = usize::try_from(args.hosts).map_err(|e| e.to_string())?;
    let duration = Duration::from_secs(args.seconds);
    let config = Config::default();

    // 1. Hosts, each receiving PROTOCOL into its own counters.
    let mut hosts = Vec::with_capacity(host_count);
    let mut counters = Vec::with_capacity(host_count);
    let mut receivers = Vec::with_capacity(host_count);
    let listen: Multiaddr = "/ip4/127.0.0.1/tcp/0"
        .parse()
        .map_err(|e| format!("listen address: {e}"))?;
    for _ in 0..host_count {
        let host = Host::builder()
            .listen_on(listen.clone())
            .config(config.clone())
            .build()
            .await
            .map_err(|e| format!("starting a host: {e}"))?;
        let mut inbox = host
            .control()
            .register_protocol(PROTOCOL)
            .map_err(|e| format!("registering {PROTOCOL}: {e}"))?;
        let count = Arc::new(Counters::default());
        let c = Arc::clone(&count);
        receivers.push(tokio::spawn(async move {
            while let Some(message) = inbox.recv().await {
                c.received.fetch_add(1, Ordering::Relaxed);
                c.received_bytes
                    .fetch_add(message.payload.len() as u64, Ordering::Relaxed);
            }
        }));
        hosts.push(host);
        counters.push(count);
    }
    let ids: Vec<PeerId> = hosts.iter().map(|h| h.local_peer_id()).collect();
    let index: HashMap<PeerId, usize> = ids.iter().enumerate().map(|(i, p)| (*p, i)).collect();
    println!(
        "liquid-p2p demo: {host_count} hosts on 127.0.0.1 (TCP + noise + yamux), {SENDERS_PER_HOST} \
         senders per host, {}s of traffic",
        args.seconds
    );
    for (i, host) in hosts.iter().enumerate() {
        let address = host
            .listen_addrs()
            .first()
            .map_or_else(|| "(no address)".to_owned(), |a| a.to_string());
        println!("  host {i}: {address}");
    }

    let result = async {
        // 2. Full mesh: host i dials every host j > i, so each pair has one connection.
        connect_mesh(&hosts).await?;
        // Let the pools open what they open at connect (`idle_floor` streams; the
        // rest of `init_size` once the connection is in use).
        let floor = config.pool.effective_idle_floor();
        wait_until(|| all_pools(&hosts).all(|s| s.current >= floor)).await;

        // 3. Traffic.
        let (elapsed, peaks) = send_traffic(&hosts, &counters, duration, &ids).await;

        // 4. Wait for the last messages, then report.
        let total_sent = || {
            counters
                .iter()
                .map(|c| c.sent.load(Ordering::Relaxed))
                .sum::<u64>()
        };
        let total_received = || {
            counters
                .iter()
                .map(|c| c.received.load(Ordering::Relaxed))
                .sum::<u64>()
        };
        wait_until(|| total_received() >= total_sent()).await;
        report(&hosts, &counters, &index, &peaks, elapsed, &config);
        Ok::<(), String>(())
    }
    .await;

    // 5. Clean shutdown, whatever happened above.
    for host in &hosts {
        host.shutdown().await;
    }
    for receiver in receivers {
        receiver.abort();
    }
    println!("\nAll {host_count} hosts shut down.");
    result
}

async fn connect_mesh(hosts: &[Host]) -> Result<(), String> {
    let mut dials = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        for (j, other) in hosts.iter().enumerate().skip(i + 1) {
            let address = other
                .listen_addrs()
                .first()
                .cloned()
                .ok_or_else(|| format!("host {j} has no listen address"))?;
            dials.push(async move {
                host.dial(address)
                    .await
                    .map_err(|e| format!("host {i} dialling host {j}: {e}"))
            });
        }
    }
    for result in join_all(dials).await {
        result?;
    }
    let everyone = hosts.len() - 1;
    if !wait_until(|| {
        hosts
            .iter()
            .all(|h| h.control().connected_peers().len() == everyone)
    })
    .await
    {
        return Err("the mesh did not form in time".into());
    }
    Ok(())
}

/// Polls `done` until it holds or [`SETTLE_TIMEOUT`] passes; returns whether it held.
async fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

fn all_pools(hosts: &[Host]) -> impl Iterator<Item = PoolStats> + '_ {
    hosts.iter().flat_map(|h| {
        h.control()
            .connected_peers()
            .into_iter()
            .flat_map(move |p| h.control().pool_stats(&p))
    })
}

/// Every host sends from [`SENDERS_PER_HOST`] tasks to every other host for
/// `duration`. Returns the time taken and the peaks of every pool.
async fn send_traffic(
    hosts: &[Host],
    counters: &[Arc<Counters>],
    duration: Duration,
    ids: &[PeerId],
) -> (Duration, HashMap<(usize, PeerId), Peak>) {
    let payload: Arc<Vec<u8>> = Arc::new((0..SIZES[SIZES.len() - 1]).map(|i| i as u8).collect());
    let start = Instant::now();
    let deadline = start + duration;
    let mut senders = Vec::new();
    for (h, host) in hosts.iter().enumerate() {
        let targets: Vec<PeerId> = ids.iter().copied().filter(|p| *p != ids[h]).collect();
        for task in 0..SENDERS_PER_HOST {
            senders.push(tokio::spawn(sender(
                host.control().clone(),
                targets.clone(),
                Arc::clone(&counters[h]),
                Arc::clone(&payload),
                task,
                deadline,
            )));
        }
    }
    // Sample the pools while the senders run: the final counters alone do not show
    // how many streams were busy at once.
    let mut peaks: HashMap<(usize, PeerId), Peak> = HashMap::new();
    while Instant::now() < deadline {
        for (h, host) in hosts.iter().enumerate() {
            for peer in host.control().connected_peers() {
                let peak = peaks.entry((h, peer)).or_default();
                for s in host.control().pool_stats(&peer) {
                    peak.current = peak.current.max(s.current);
                    peak.borrowed = peak.borrowed.max(s.borrowed);
                    peak.waiters = peak.waiters.max(s.waiters);
                }
            }
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    for sender in senders {
        if let Err(e) = sender.await {
            eprintln!("a sender task failed: {e}");
        }
    }
    (start.elapsed(), peaks)
}

/// One sending task: each round sends one message to every target at once, cycling
/// through [`SIZES`].
async fn sender(
    control: Control,
    targets: Vec<PeerId>,
    counters: Arc<Counters>,
    payload: Arc<Vec<u8>>,
    task: usize,
    deadline: Instant,
) {
    let mut round = task;
    while Instant::now() < deadline {
        let size = SIZES[round % SIZES.len()];
        round += 1;
        let message = &payload[..size];
        let sends = targets
            .iter()
            .map(|peer| control.send(*peer, PROTOCOL, message));
        for result in join_all(sends).await {
            match result {
                Ok(()) => {
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                    counters
                        .sent_bytes
                        .fetch_add(size as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    if counters.send_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                        eprintln!("send failed: {e}");
                    }
                }
            }
        }
    }
}

fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64().max(1e-9)
}

fn report(
    hosts: &[Host],
    counters: &[Arc<Counters>],
    index: &HashMap<PeerId, usize>,
    peaks: &HashMap<(usize, PeerId), Peak>,
    elapsed: Duration,
    config: &Config,
) {
    let init_size = config.pool.init_size;
    println!("\nTraffic over {:.1} s:", elapsed.as_secs_f64());
    println!(
        "  {:<6} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "host", "sent", "sent MB/s", "received", "recv MB/s", "errors"
    );
    let (mut sent, mut received, mut bytes) = (0, 0, 0);
    for (i, c) in counters.iter().enumerate() {
        let s = c.sent.load(Ordering::Relaxed);
        let r = c.received.load(Ordering::Relaxed);
        sent += s;
        received += r;
        bytes += c.received_bytes.load(Ordering::Relaxed);
        println!(
            "  {:<6} {:>10} {:>10.1} {:>10} {:>10.1} {:>8}",
            i,
            s,
            mb_per_s(c.sent_bytes.load(Ordering::Relaxed), elapsed),
            r,
            mb_per_s(c.received_bytes.load(Ordering::Relaxed), elapsed),
            c.send_errors.load(Ordering::Relaxed),
        );
    }
    println!(
        "  delivered {received} of {sent} messages sent ({:.1} MB, {:.1} MB/s across the mesh)",
        bytes as f64 / 1e6,
        mb_per_s(bytes, elapsed)
    );

    println!(
        "\nSend pools, one per connection (started with {} stream(s), {init_size} once in \
         use, max {}):",
        config.pool.effective_idle_floor(),
        config.pool.max_size
    );
    println!(
        "  {:<10} {:>4} {:>7} {:>6} {:>4} {:>8} {:>4} {:>8} | {:>13} {:>12} {:>11}",
        "from -> to",
        "conn",
        "current",
        "grown",
        "idle",
        "borrowed",
        "max",
        "open err",
        "peak borrowed",
        "peak waiters",
        "peak streams"
    );
    let (mut pools, mut grown_pools, mut most, mut peak_borrowed, mut peak_waiters) =
        (0, 0, 0, 0, 0);
    for (i, host) in hosts.iter().enumerate() {
        let mut peers = host.control().connected_peers();
        peers.sort_by_key(|p| index.get(p).copied().unwrap_or(usize::MAX));
        for peer in peers {
            let to = index
                .get(&peer)
                .map_or_else(|| peer.to_string(), |j| j.to_string());
            let peak = peaks.get(&(i, peer)).copied().unwrap_or_default();
            for s in host.control().pool_stats(&peer) {
                pools += 1;
                let grown = s.current as i64 - init_size as i64;
                if s.current > init_size {
                    grown_pools += 1;
                }
                most = most.max(s.current);
                peak_borrowed = peak_borrowed.max(peak.borrowed);
                peak_waiters = peak_waiters.max(peak.waiters);
                println!(
                    "  {:<10} {:>4} {:>7} {:>+6} {:>4} {:>8} {:>4} {:>8} | {:>13} {:>12} {:>11}",
                    format!("{i} -> {to}"),
                    s.connection.to_string(),
                    s.current,
                    grown,
                    s.idle,
                    s.borrowed,
                    s.max,
                    s.open_failures,
                    peak.borrowed,
                    peak.waiters,
                    peak.current,
                );
            }
        }
    }

    let p = &config.pool;
    println!("\nWhat the pools did:");
    println!(
        "  - Each connection opened {} send stream(s) as soon as it was up and the rest of \
         its {init_size} once in use, so no message waited for a stream negotiation.",
        p.effective_idle_floor()
    );
    println!(
        "  - A send borrows an idle stream of the peer's pool, writes one frame and returns \
         it. {SENDERS_PER_HOST} senders per host, each sending to all {} peers at once, kept up \
         to {peak_borrowed} streams of a pool busy at the same time (sampled every {} ms).",
        hosts.len() - 1,
        SAMPLE_EVERY.as_millis()
    );
    if grown_pools > 0 {
        println!(
            "  - When a pool's idle streams fell to {}% of its streams or fewer, it opened {} \
             more in the background: {grown_pools} of {pools} pools grew, the largest to \
             {most} streams (cap {}).",
            p.grow_threshold_percent,
            p.effective_grow_batch(),
            p.max_size
        );
    } else {
        println!(
            "  - No pool needed to grow: its idle streams never fell to {}% of its streams, so \
             {init_size} were enough for this load.",
            p.grow_threshold_percent
        );
    }
    if peak_waiters > 0 {
        println!(
            "  - At the busiest moment {peak_waiters} senders waited for a stream to come back \
             (a borrow waits up to {:?} before failing).",
            p.borrow_timeout
        );
    } else {
        println!("  - No sender was seen waiting: an idle stream was always at hand.");
    }
    println!(
        "  - After the burst the streams stay open, idle, ready for the next one; a pool \
         that grew gives its extra streams back after {:?} of low use (shrink_after), \
         down to {} per connection, and a connection not sent on for {:?} (idle_after) \
         keeps {} (idle_floor). On the receiving side each inbound stream is read by its \
         own task.",
        p.shrink_after,
        p.init_size,
        p.idle_after.unwrap_or_default(),
        p.effective_idle_floor()
    );
}
