//! The first message after a quiet period: how long a message waits when the
//! sender's connection has gone idle and its pool is back to `idle_floor`
//! streams, against messages sent while the connection is in use.
//!
//! Two liquid hosts in this process. Each cycle sends 256 B messages paced at
//! 1,000/s (the steady state; the first [`STEADY_WARMUP`] of each cycle are not
//! counted), then sends nothing until the sender's pools are at rest (every
//! connection idle for `idle_after` and back to `idle_floor` streams, and the
//! receiver's side of the closed streams gone), then sends one message: the
//! first after idle. A message's latency is from the call to `send` until the
//! receiving application has it (one clock, one process); the time `send`
//! itself took is kept beside it. Every cycle pairs a first message with the
//! steady messages just before it, on the same hosts.
//!
//! A real quiet period is a minute (`idle_after`'s default); the scenario
//! shortens `idle_after` so that a run stays short. What the first message
//! meets does not depend on how long the quiet lasted, only on the pool being
//! at rest.

use std::time::Duration;

use liquid_p2p::{Config, Host, PeerId, PoolConfig};
use tokio::{sync::mpsc, time::Instant};

use super::{BenchError, Context, Transport, harness::percentile, liquid};

/// Paced messages of each cycle's steady phase.
pub const STEADY_MESSAGES: usize = 200;
/// Steady messages at the start of each cycle that are not counted: the
/// connection warms up again after the previous cycle's quiet period.
pub const STEADY_WARMUP: usize = 20;
/// Pace of the steady phase.
const PACE: Duration = Duration::from_millis(1);
/// Payload size.
const PAYLOAD: usize = 256;

/// What one run of the scenario measured, in µs.
#[derive(Debug, Clone)]
pub struct FirstAfterIdle {
    /// Delivery latency of the first message after each quiet period.
    pub first: Vec<Duration>,
    /// How long `send` took for each of them.
    pub first_send: Vec<Duration>,
    /// Median delivery latency of the steady messages.
    pub steady_p50_us: f64,
    /// Median time `send` took for the steady messages.
    pub steady_send_p50_us: f64,
    /// Steady messages counted.
    pub steady_count: usize,
    /// The sender's send streams to the receiver at rest.
    pub streams_at_rest: usize,
}

impl FirstAfterIdle {
    /// Median delivery latency of the first messages, µs.
    pub fn first_p50_us(&self) -> f64 {
        median_us(&self.first)
    }

    /// Median time `send` took for the first messages, µs.
    pub fn first_send_p50_us(&self) -> f64 {
        median_us(&self.first_send)
    }
}

fn median_us(samples: &[Duration]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    if sorted.is_empty() {
        return f64::NAN;
    }
    percentile(&sorted, 0.5)
}

/// Streams of every pool from `host` to `peer`, being opened included.
fn send_streams(host: &Host, peer: &PeerId) -> usize {
    host.control()
        .pool_stats(peer)
        .iter()
        .map(|s| s.current + s.opening)
        .sum()
}

/// Runs `cycles` cycles with pools that go idle after `idle_after` and keep
/// `idle_floor` streams then; each wait is bounded by `limit`. With
/// `idle_floor` `None` (the control) the pools never rest: the quiet periods
/// last as long, and the first message after each finds every stream open.
pub async fn run(
    idle_floor: Option<usize>,
    idle_after: Duration,
    cycles: usize,
    limit: Duration,
) -> Result<FirstAfterIdle, BenchError> {
    let pool = match idle_floor {
        Some(floor) => PoolConfig::default()
            .with_idle_after(Some(idle_after))
            .with_idle_floor(floor),
        None => PoolConfig::default().with_idle_after(None),
    };
    let config = Config::default().with_pool(pool);
    let receiver = Host::builder()
        .config(config.clone())
        .listen_on(Transport::Tcp.listen_addr()?)
        .build()
        .await
        .ctx("receiver host")?;
    let inbox = receiver
        .control()
        .register_protocol(liquid::PROTOCOL)
        .ctx("register")?;
    let sender = Host::builder()
        .config(config)
        .build()
        .await
        .ctx("sender host")?;
    let result = measure(
        &sender, &receiver, inbox, idle_floor, idle_after, cycles, limit,
    )
    .await;
    tokio::join!(sender.shutdown(), receiver.shutdown());
    result
}

async fn measure(
    sender: &Host,
    receiver: &Host,
    mut inbox: liquid_p2p::Inbox,
    idle_floor: Option<usize>,
    idle_after: Duration,
    cycles: usize,
    limit: Duration,
) -> Result<FirstAfterIdle, BenchError> {
    let target = liquid::connect(sender, receiver, 1, limit).await?;
    let sender_id = sender.local_peer_id();
    // The receiving application: stamps each message as it gets it.
    let (arrivals, mut arrived) = mpsc::channel::<(u32, Instant)>(64);
    let mut inbox_task = tokio::spawn(async move {
        while let Some(message) = inbox.recv().await {
            let at = Instant::now();
            let Some(&[a, b, c, d]) = message.payload.get(..4) else {
                continue;
            };
            if arrivals
                .send((u32::from_le_bytes([a, b, c, d]), at))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut seq = 0u32;
    let mut steady = Vec::new();
    let mut steady_send = Vec::new();
    let mut first = Vec::new();
    let mut first_send = Vec::new();
    let mut streams_at_rest = 0;
    for _ in 0..cycles {
        let mut next = Instant::now();
        for i in 0..STEADY_MESSAGES {
            seq += 1;
            let (latency, sent) = send_one(sender, target, seq, &mut arrived, limit).await?;
            if i >= STEADY_WARMUP {
                steady.push(latency);
                steady_send.push(sent);
            }
            next += PACE;
            tokio::time::sleep_until(next).await;
        }
        // Quiet until both ends are at rest.
        let quiet = Instant::now();
        let deadline = quiet + idle_after * 2 + limit;
        loop {
            let at_rest = quiet.elapsed() >= idle_after
                && idle_floor.is_none_or(|floor| {
                    send_streams(sender, &target) <= floor
                        && receiver.control().receive_counts(&sender_id).streams <= floor
                })
                && sender
                    .control()
                    .lane_stats(&target)
                    .iter()
                    .all(|s| s.borrowed == 0 && s.opening == 0);
            if at_rest {
                break;
            }
            if Instant::now() > deadline {
                return Err(BenchError::new(format!(
                    "the pool was not at rest {:?} after the last send ({} send streams)",
                    quiet.elapsed(),
                    send_streams(sender, &target)
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // One more check period, so that the connection is surely rested
        // (`rest` runs on the check after `idle_after`; the pool may have had
        // no more than the floor before it).
        tokio::time::sleep(check_period(idle_after)).await;
        streams_at_rest = send_streams(sender, &target);
        seq += 1;
        let (latency, sent) = send_one(sender, target, seq, &mut arrived, limit).await?;
        first.push(latency);
        first_send.push(sent);
    }
    inbox_task.abort();
    let _ = (&mut inbox_task).await;
    steady.sort_unstable();
    steady_send.sort_unstable();
    if steady.is_empty() {
        return Err(BenchError::new("no steady message"));
    }
    Ok(FirstAfterIdle {
        steady_p50_us: percentile(&steady, 0.5),
        steady_send_p50_us: percentile(&steady_send, 0.5),
        steady_count: steady.len(),
        first,
        first_send,
        streams_at_rest,
    })
}

/// Sends message `seq`; returns its delivery latency and how long `send` took.
async fn send_one(
    sender: &Host,
    target: PeerId,
    seq: u32,
    arrived: &mut mpsc::Receiver<(u32, Instant)>,
    limit: Duration,
) -> Result<(Duration, Duration), BenchError> {
    let mut payload = vec![0x5a; PAYLOAD];
    payload[..4].copy_from_slice(&seq.to_le_bytes());
    let start = Instant::now();
    sender
        .control()
        .send(target, liquid::PROTOCOL, payload)
        .await
        .ctx("send")?;
    let sent = start.elapsed();
    loop {
        let (got, at) = tokio::time::timeout(limit, arrived.recv())
            .await
            .ctx("message not delivered in time")?
            .ctx("receiver stopped")?;
        if got == seq {
            return Ok((at.saturating_duration_since(start), sent));
        }
    }
}

/// How often the host checks its pools with this `idle_after` (and the
/// default `shrink_after`): a quarter of the shorter, 50 ms to 15 s.
fn check_period(idle_after: Duration) -> Duration {
    (idle_after.min(PoolConfig::default().shrink_after) / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(15))
}
