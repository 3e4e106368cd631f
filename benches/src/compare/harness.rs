//! What every mode provides ([`Pair`]) and the timed loops that measure it.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use tokio::task::JoinHandle;

use super::{BenchError, Context};

/// Pause after a failed send before the worker tries again, so that a broken mode
/// does not spin.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Messages and bytes counted by a receiver.
#[derive(Debug, Default)]
pub struct Counter {
    messages: AtomicU64,
    bytes: AtomicU64,
}

impl Counter {
    /// Counts one received message of `bytes` bytes.
    pub fn add(&self, bytes: usize) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Messages and bytes so far.
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.messages.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// Tasks aborted when this is dropped, so that no measurement outlives its run.
#[derive(Debug, Default)]
pub struct Tasks(Vec<JoinHandle<()>>);

impl Tasks {
    /// Adds a task.
    pub fn push(&mut self, task: JoinHandle<()>) {
        self.0.push(task);
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Two connected peers of one mode: the sender side sends, the receiver side counts.
pub trait Pair: Send + Sync {
    /// Sends one message from the sender to the receiver. `worker` is the sending
    /// task's index (modes with a stream per sender use it).
    fn send<'a>(
        &'a self,
        worker: usize,
        payload: &'a [u8],
    ) -> BoxFuture<'a, Result<(), BenchError>>;

    /// Sends `payload` and waits for the receiver's reply of the same size.
    fn round_trip<'a>(&'a self, payload: &'a [u8]) -> BoxFuture<'a, Result<(), BenchError>>;

    /// What the receiver has counted.
    fn received(&self) -> &Counter;

    /// Closes both peers (bounded by the caller).
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}

/// Durations of one run.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Traffic before counting starts.
    pub warmup: Duration,
    /// Counting window.
    pub measure: Duration,
    /// Longest one send or round trip may take before it counts as failed.
    pub op_timeout: Duration,
    /// Longest a setup (hosts, connections, streams) may take.
    pub setup: Duration,
    /// Longest a teardown may take.
    pub teardown: Duration,
}

impl Timing {
    /// Upper bound of one whole run: setup, warm-up, measurement, one late
    /// operation, teardown.
    pub fn run_deadline(&self) -> Duration {
        self.setup + self.warmup + self.measure + self.op_timeout + self.teardown
    }
}

/// Failures seen by the senders during a run.
#[derive(Debug, Default)]
pub struct Failures {
    count: AtomicU64,
    first: Mutex<Option<String>>,
}

impl Failures {
    /// Records one failure.
    pub fn record(&self, error: impl Into<String>) {
        self.count.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first.lock()
            && first.is_none()
        {
            *first = Some(error.into());
        }
    }

    /// Failures so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The first failure, if any.
    pub fn first(&self) -> Option<String> {
        self.first.lock().ok().and_then(|f| f.clone())
    }

    /// A note for the report, if anything failed.
    pub fn note(&self) -> Option<String> {
        let count = self.count();
        (count > 0).then(|| {
            format!(
                "{count} failed sends (first: {})",
                self.first().unwrap_or_default()
            )
        })
    }
}

/// Result of a one-way run, counted by the receiver.
#[derive(Debug, Clone)]
pub struct Rate {
    /// Messages per second.
    pub messages_per_s: f64,
    /// MiB of payload per second.
    pub mib_per_s: f64,
    /// Failures during the run, if any.
    pub note: Option<String>,
}

/// Result of a round-trip run.
#[derive(Debug, Clone)]
pub struct Latency {
    /// Median, µs.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// Round trips measured.
    pub samples: usize,
    /// Failures during the run, if any.
    pub note: Option<String>,
}

/// `concurrency` tasks send `payload` in a loop; after the warm-up the receiver's
/// count is taken over the measurement window.
pub async fn one_way(
    pair: Arc<dyn Pair>,
    payload: Arc<Vec<u8>>,
    concurrency: usize,
    timing: &Timing,
) -> Result<Rate, BenchError> {
    let failures = Arc::new(Failures::default());
    let mut workers = Tasks::default();
    for worker in 0..concurrency {
        let (pair, payload, failures) = (pair.clone(), payload.clone(), failures.clone());
        let op_timeout = timing.op_timeout;
        workers.push(tokio::spawn(async move {
            loop {
                match tokio::time::timeout(op_timeout, pair.send(worker, &payload)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        failures.record(e.to_string());
                        tokio::time::sleep(ERROR_PAUSE).await;
                    }
                    Err(_) => failures.record(format!("a send took over {op_timeout:?}")),
                }
            }
        }));
    }
    tokio::time::sleep(timing.warmup).await;
    let (m0, b0) = pair.received().snapshot();
    let start = Instant::now();
    tokio::time::sleep(timing.measure).await;
    let (m1, b1) = pair.received().snapshot();
    let elapsed = start.elapsed().as_secs_f64();
    drop(workers);
    if m1 == m0 {
        return Err(BenchError::new(failures.first().unwrap_or_else(|| {
            "no message received in the measurement window".into()
        })));
    }
    Ok(Rate {
        messages_per_s: (m1 - m0) as f64 / elapsed,
        mib_per_s: (b1 - b0) as f64 / elapsed / (1024.0 * 1024.0),
        note: failures.note(),
    })
}

/// One task does round trips back to back; those completed in the measurement
/// window are timed.
pub async fn round_trip(
    pair: Arc<dyn Pair>,
    payload: Arc<Vec<u8>>,
    timing: &Timing,
) -> Result<Latency, BenchError> {
    let failures = Failures::default();
    let warm_until = Instant::now() + timing.warmup;
    while Instant::now() < warm_until {
        if let Err(e) = timed(pair.as_ref(), &payload, timing.op_timeout).await {
            failures.record(e.to_string());
            tokio::time::sleep(ERROR_PAUSE).await;
        }
    }
    let mut samples: Vec<Duration> = Vec::new();
    let until = Instant::now() + timing.measure;
    while Instant::now() < until {
        let start = Instant::now();
        match timed(pair.as_ref(), &payload, timing.op_timeout).await {
            Ok(()) => samples.push(start.elapsed()),
            Err(e) => {
                failures.record(e.to_string());
                tokio::time::sleep(ERROR_PAUSE).await;
            }
        }
    }
    if samples.is_empty() {
        return Err(BenchError::new(
            failures
                .first()
                .unwrap_or_else(|| "no round trip completed".into()),
        ));
    }
    samples.sort_unstable();
    Ok(Latency {
        p50_us: percentile(&samples, 0.50),
        p99_us: percentile(&samples, 0.99),
        samples: samples.len(),
        note: failures.note(),
    })
}

async fn timed(pair: &dyn Pair, payload: &[u8], limit: Duration) -> Result<(), BenchError> {
    tokio::time::timeout(limit, pair.round_trip(payload))
        .await
        .ctx("round trip timed out")?
}

/// Nearest-rank percentile of sorted samples, in µs.
fn percentile(sorted: &[Duration], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e6
}

/// Resident set size of this process, in bytes (`/proc/self/statm`).
pub fn rss_bytes() -> Result<u64, BenchError> {
    let statm = std::fs::read_to_string("/proc/self/statm").ctx("read /proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .ctx("statm has no resident field")?
        .parse()
        .ctx("statm resident field")?;
    Ok(pages * page_size())
}

/// The kernel page size, from `/proc/self/smaps` (4 KiB if it cannot be read).
fn page_size() -> u64 {
    std::fs::read_to_string("/proc/self/smaps")
        .ok()
        .and_then(|smaps| {
            smaps
                .lines()
                .find_map(|l| l.strip_prefix("KernelPageSize:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(4096, |kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<_> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile(&samples, 0.5), 50.0);
        assert_eq!(percentile(&samples, 0.99), 99.0);
        assert_eq!(percentile(&samples[..1], 0.99), 1.0);
    }

    #[test]
    fn rss_is_readable() {
        assert!(rss_bytes().expect("rss") > 0);
    }
}
