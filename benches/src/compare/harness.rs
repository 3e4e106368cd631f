//! What every mode provides ([`Pair`]) and the timed loops that measure it: the
//! senders stamp and book every message, the window is timed, then the senders
//! stop and the receiver drains, so that the [`Ledger`] accounts for every send.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::future::{BoxFuture, join_all};
use tokio::task::JoinHandle;

use super::{
    BenchError, Context,
    ledger::{Delivery, Ledger, header, random_payload},
};

/// Pause after a failed send before the worker tries again, so that a broken mode
/// does not spin.
const ERROR_PAUSE: Duration = Duration::from_millis(10);
/// While draining, how often the receiver's count is read.
const DRAIN_POLL: Duration = Duration::from_millis(10);
/// Draining ends once every confirmed send is in and nothing more came for this
/// long (late duplicates would arrive in it)...
const DRAIN_QUIET: Duration = Duration::from_millis(100);
/// ...or when nothing came for this long although sends are missing (a lossy mode,
/// or a loss to report).
pub const DRAIN_STALL: Duration = Duration::from_secs(1);

/// Tasks aborted when this is dropped, so that no measurement outlives its run.
#[derive(Debug, Default)]
pub struct Tasks(Vec<JoinHandle<()>>);

impl Tasks {
    /// Adds a task.
    pub fn push(&mut self, task: JoinHandle<()>) {
        self.0.push(task);
    }

    /// Waits up to `limit` for every task to end; those still running then are
    /// aborted. Returns how many had to be aborted.
    pub async fn join(mut self, limit: Duration) -> usize {
        let mut handles = std::mem::take(&mut self.0);
        let _ = tokio::time::timeout(limit, join_all(handles.iter_mut())).await;
        handles
            .iter()
            .filter(|h| !h.is_finished())
            .inspect(|h| h.abort())
            .count()
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Two connected peers of one mode. The receiver books every message it gets in
/// the [`Ledger`] it was set up with (and, set up for round trips, sends it back).
pub trait Pair: Send + Sync {
    /// Sends one message from the sender to the receiver. `worker` is the sending
    /// task's index (modes with a stream per sender use it).
    fn send<'a>(
        &'a self,
        worker: usize,
        payload: &'a [u8],
    ) -> BoxFuture<'a, Result<(), BenchError>>;

    /// Sends `payload` and puts the receiver's reply into `reply`.
    fn round_trip<'a>(
        &'a self,
        payload: &'a [u8],
        reply: &'a mut Vec<u8>,
    ) -> BoxFuture<'a, Result<(), BenchError>>;

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
    /// Longest the receiver is given, once the senders stopped, to take in what
    /// was sent.
    pub drain: Duration,
    /// Longest a teardown may take.
    pub teardown: Duration,
}

impl Timing {
    /// Upper bound of one whole run: setup, warm-up, measurement, one late
    /// operation, drain, teardown.
    pub fn run_deadline(&self) -> Duration {
        self.setup + self.warmup + self.measure + self.op_timeout * 2 + self.drain + self.teardown
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
    /// What became of every message sent, warm-up included.
    pub delivery: Delivery,
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
    /// What became of every request sent, warm-up included.
    pub delivery: Delivery,
}

/// `concurrency` tasks send random `payload_len`-byte payloads (each stamped by
/// `ledger`) in a loop; after the warm-up the receiver's count is taken over the
/// measurement window. Then the senders stop, the receiver drains, and the
/// ledger's books are compared.
pub async fn one_way(
    pair: Arc<dyn Pair>,
    ledger: Arc<Ledger>,
    payload_len: usize,
    concurrency: usize,
    timing: &Timing,
    seed: u64,
) -> Result<Rate, BenchError> {
    let failures = Arc::new(Failures::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Tasks::default();
    for worker in 0..concurrency {
        let (pair, ledger, failures, stop) =
            (pair.clone(), ledger.clone(), failures.clone(), stop.clone());
        let mut payload = random_payload(payload_len, seed.wrapping_add(worker as u64));
        let op_timeout = timing.op_timeout;
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let seq = ledger.stamp(worker, &mut payload);
                match tokio::time::timeout(op_timeout, pair.send(worker, &payload)).await {
                    Ok(Ok(())) => ledger.confirm(worker, seq),
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
    let (m0, b0) = ledger.received();
    let start = Instant::now();
    tokio::time::sleep(timing.measure).await;
    let (m1, b1) = ledger.received();
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    // A send in progress finishes (and is booked) unless it is stuck.
    let cut_off = workers.join(timing.op_timeout + ERROR_PAUSE).await;
    if cut_off > 0 {
        failures.record(format!("{cut_off} senders cut off at the end of the run"));
    }
    drain(&ledger, timing.drain).await;
    if m1 == m0 {
        return Err(BenchError::new(failures.first().unwrap_or_else(|| {
            "no message received in the measurement window".into()
        })));
    }
    Ok(Rate {
        messages_per_s: (m1 - m0) as f64 / elapsed,
        mib_per_s: (b1 - b0) as f64 / elapsed / (1024.0 * 1024.0),
        note: failures.note(),
        delivery: ledger.delivery(),
    })
}

/// Waits until the receiver has every confirmed send (then a little longer, for
/// late copies), until it has received nothing for [`DRAIN_STALL`], or `limit`.
pub async fn drain(ledger: &Ledger, limit: Duration) {
    let confirmed = ledger.confirmed();
    let deadline = Instant::now() + limit;
    let (mut last, mut since) = (ledger.received().0, Instant::now());
    while Instant::now() < deadline {
        tokio::time::sleep(DRAIN_POLL).await;
        let now = ledger.received().0;
        if now != last {
            (last, since) = (now, Instant::now());
        }
        let quiet = since.elapsed();
        if (now >= confirmed && quiet >= DRAIN_QUIET) || quiet >= DRAIN_STALL {
            return;
        }
    }
}

/// One task does round trips back to back with random `payload_len`-byte payloads;
/// those completed in the measurement window are timed. A reply must be the
/// request itself.
pub async fn round_trip(
    pair: Arc<dyn Pair>,
    ledger: Arc<Ledger>,
    payload_len: usize,
    timing: &Timing,
    seed: u64,
) -> Result<Latency, BenchError> {
    let failures = Failures::default();
    let mut payload = random_payload(payload_len, seed);
    let mut reply = Vec::with_capacity(payload.len());
    let mut samples: Vec<Duration> = Vec::new();
    let warm_until = Instant::now() + timing.warmup;
    let until = warm_until + timing.measure;
    loop {
        let start = Instant::now();
        if start >= until {
            break;
        }
        let seq = ledger.stamp(0, &mut payload);
        match timed(pair.as_ref(), &payload, &mut reply, timing.op_timeout).await {
            Ok(()) if reply == payload => {
                ledger.confirm(0, seq);
                if start >= warm_until {
                    samples.push(start.elapsed());
                }
            }
            Ok(()) => {
                ledger.wrong_reply();
                failures.record(match header(&reply) {
                    Some((sender, seq)) => {
                        format!("reply of {} B for sender {sender} seq {seq}", reply.len())
                    }
                    None => format!("reply of {} B", reply.len()),
                });
            }
            Err(e) => {
                failures.record(e.to_string());
                tokio::time::sleep(ERROR_PAUSE).await;
            }
        }
    }
    drain(&ledger, timing.drain).await;
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
        delivery: ledger.delivery(),
    })
}

async fn timed(
    pair: &dyn Pair,
    payload: &[u8],
    reply: &mut Vec<u8>,
    limit: Duration,
) -> Result<(), BenchError> {
    tokio::time::timeout(limit, pair.round_trip(payload, reply))
        .await
        .ctx("round trip timed out")?
}

/// Nearest-rank percentile of sorted samples, in µs.
pub fn percentile(sorted: &[Duration], q: f64) -> f64 {
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
