//! Pools give memory back: two liquid hosts in this process, sampled before a
//! burst, right after it, and once the pools have shrunk back to `init_size`
//! (`shrink_after` shortened so the run stays short). Each sample is the process's
//! RSS with the sender's pooled streams and the receiver's inbound streams.

use std::{sync::Arc, time::Duration};

use liquid_p2p::{Config, Host, PoolConfig};

use super::{BenchError, Context, Transport, harness::rss_bytes, liquid};

/// Concurrent senders of the burst: more than the pool's cap, so it grows to it.
const BURST_SENDERS: usize = 128;
/// Payload of the burst's messages.
const BURST_PAYLOAD: usize = 64 * 1024;

/// One sample.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Resident set size of the process, bytes.
    pub rss: u64,
    /// Streams in the sender's pool to the receiver.
    pub pool_streams: usize,
    /// Inbound streams the receiver tracks.
    pub inbound_streams: usize,
}

/// The three samples.
#[derive(Debug, Clone, Copy)]
pub struct Shrink {
    /// Before the burst.
    pub before: Sample,
    /// Right after it.
    pub after_burst: Sample,
    /// Once the pool is back to `init_size`.
    pub after_shrink: Sample,
    /// From the end of the burst to the shrink.
    pub shrink_took: Duration,
    /// The `shrink_after` used.
    pub shrink_after: Duration,
}

/// Runs the burst and waits for the shrink.
pub async fn burst_and_shrink(
    shrink_after: Duration,
    burst: Duration,
    limit: Duration,
) -> Result<Shrink, BenchError> {
    // Pools that start with `init_size` streams and never rest: this scenario
    // measures a burst's extra streams going away, not idle connections (see
    // first_after_idle.rs and memory.rs for those).
    let config = Config::default().with_pool(
        PoolConfig::default()
            .with_shrink_after(shrink_after)
            .with_open_at_connect(true)
            .with_idle_after(None),
    );
    let receiver = Host::builder()
        .config(config.clone())
        .listen_on(Transport::Tcp.listen_addr()?)
        .build()
        .await
        .ctx("receiver host")?;
    let mut inbox = receiver
        .control()
        .register_protocol(liquid::PROTOCOL)
        .ctx("register")?;
    let drain = tokio::spawn(async move { while inbox.recv().await.is_some() {} });
    let sender = Host::builder()
        .config(config)
        .build()
        .await
        .ctx("sender host")?;
    let mut events = sender.control().events();
    let address = receiver
        .listen_addrs()
        .into_iter()
        .next()
        .ctx("receiver has no listen address")?;
    let target = sender.dial(address).await.ctx("dial")?;
    liquid::peer_connected(&mut events, target, limit).await?;
    let sample = |sender: &Host, receiver: &Host| -> Result<Sample, BenchError> {
        Ok(Sample {
            rss: rss_bytes()?,
            pool_streams: pool_streams(sender, target),
            inbound_streams: receiver.inbound_stream_count(),
        })
    };
    let init = PoolConfig::default().init_size;
    wait_for_pool(&sender, target, |n| n >= init, limit).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = sample(&sender, &receiver)?;

    let sender = Arc::new(sender);
    let payload = Arc::new(vec![0x5a; BURST_PAYLOAD]);
    let stop = tokio::time::Instant::now() + burst;
    let tasks: Vec<_> = (0..BURST_SENDERS)
        .map(|_| {
            let (sender, payload) = (Arc::clone(&sender), Arc::clone(&payload));
            tokio::spawn(async move {
                while tokio::time::Instant::now() < stop {
                    // Errors (a borrow timing out under the burst) only end the burst
                    // early for this task; the samples say what the pool did.
                    if sender
                        .control()
                        .send(target, liquid::PROTOCOL, &payload[..])
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    let after_burst = sample(&sender, &receiver)?;
    let burst_end = tokio::time::Instant::now();
    wait_for_pool(&sender, target, |n| n <= init, shrink_after * 3 + limit).await?;
    let shrink_took = burst_end.elapsed();
    // Let the receiver see the resets.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_shrink = sample(&sender, &receiver)?;
    drain.abort();
    tokio::join!(sender.shutdown(), receiver.shutdown());
    Ok(Shrink {
        before,
        after_burst,
        after_shrink,
        shrink_took,
        shrink_after,
    })
}

/// Streams in the sender's pools to `target`.
fn pool_streams(sender: &Host, target: liquid_p2p::PeerId) -> usize {
    sender
        .control()
        .pool_stats(&target)
        .iter()
        .map(|p| p.current)
        .sum()
}

async fn wait_for_pool(
    sender: &Host,
    target: liquid_p2p::PeerId,
    done: impl Fn(usize) -> bool,
    limit: Duration,
) -> Result<(), BenchError> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let streams = pool_streams(sender, target);
        if done(streams) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(BenchError::new(format!(
                "pool still at {streams} streams after {limit:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
