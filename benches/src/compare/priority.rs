//! `priority`: what a protocol's send priority buys. Small messages of a `High`
//! protocol, paced at [`HIGH_RATE`] a second, go to a peer that
//! [`LARGE_CONCURRENCY`] senders load with 1 MiB messages of a `Low` protocol, on
//! the same connection. The target (from the issue): the High messages' p99
//! latency stays within 3× of their p99 on an idle connection, and the bulk
//! throughput stays at 0.9× or more of what it is without the High traffic.
//!
//! A run measures four [`Phase`]s of `liquid` (and `liquid-quic`), each on a
//! fresh pair of hosts, in an order shuffled from the step's seed. Both hosts
//! register both protocols with the phase's priorities (a send goes with the
//! priority of the sender's registration):
//!
//! - `idle`: the High traffic alone;
//! - `alone`: the bulk alone;
//! - `low/high`: both at once, the bulk `Low`, the small messages `High`;
//! - `normal/normal`: both at once with both protocols `Normal`: the control,
//!   what the latency is without priorities.
//!
//! One task sends the High messages on a tokio interval that delays its ticks
//! after a slow send (`MissedTickBehavior::Delay`), so a send that blocks lowers
//! the rate: the rate reached is in each figure's note. Each High message
//! carries the time just before its `send` was called, relative to an epoch the
//! two hosts share (both run in this process); its latency ends when the
//! receiver takes it out of its `Inbox`. Messages whose send started in the
//! measured window count. The bulk is [`harness::one_way`], counted by the
//! receiver over the same window. Each protocol has its own [`Ledger`]; a phase
//! whose High or bulk messages were lost or duplicated is FAILED, and its other
//! figure does not count either.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use futures::{FutureExt, future::BoxFuture};
use liquid_p2p::{Control, Host, Inbox, PeerId, ProtocolPriority};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};
use tokio::time::MissedTickBehavior;

use super::{
    BenchError, Context, Mode,
    harness::{self, Failures, Latency, Pair, Rate, Tasks, Timing, percentile},
    ledger::{HEADER, Ledger, random_payload},
    liquid,
    report::Figure,
    scenarios::{LARGE, LARGE_CONCURRENCY, SMALL, join_notes},
};

/// Scenario of the High messages' median latency.
pub const P50: &str = "priority-high-p50";
/// Scenario of the High messages' 99th-percentile latency.
pub const P99: &str = "priority-high-p99";
/// Scenario of the bulk throughput.
pub const BULK: &str = "priority-bulk";
/// Every scenario this module measures.
pub const SCENARIOS: [&str; 3] = [P50, P99, BULK];

/// Protocol of the small, urgent messages.
pub const HIGH_PROTOCOL: &str = "/bench/high/1";
/// Protocol of the bulk messages.
pub const BULK_PROTOCOL: &str = "/bench/bulk/1";
/// High messages a second.
pub const HIGH_RATE: u32 = 1000;

/// Bytes of a High payload after the ledger's header: when its send started,
/// in nanoseconds since the measurement's epoch (u64, little-endian).
const SENT_AT: std::ops::Range<usize> = HEADER..HEADER + 8;

/// One measurement of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The High messages alone.
    Idle,
    /// The bulk alone.
    BulkAlone,
    /// Both, the bulk `Low` and the small messages `High`.
    Prioritised,
    /// Both, both protocols `Normal`.
    Control,
}

impl Phase {
    /// Every phase, in report order.
    pub const ALL: [Phase; 4] = [
        Phase::Idle,
        Phase::BulkAlone,
        Phase::Prioritised,
        Phase::Control,
    ];

    /// The phase's part of a figure's mode name.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::BulkAlone => "alone",
            Phase::Prioritised => "low/high",
            Phase::Control => "normal/normal",
        }
    }

    /// The priorities of the High protocol and of the bulk protocol.
    fn priorities(self) -> (ProtocolPriority, ProtocolPriority) {
        match self {
            Phase::Control => (ProtocolPriority::Normal, ProtocolPriority::Normal),
            _ => (ProtocolPriority::High, ProtocolPriority::Low),
        }
    }

    fn sends_high(self) -> bool {
        self != Phase::BulkAlone
    }

    fn sends_bulk(self) -> bool {
        self != Phase::Idle
    }
}

/// The mode name of `mode`'s figures of `phase`, e.g. `liquid low/high`.
pub fn mode_name(mode: Mode, phase: Phase) -> String {
    format!("{} {}", mode.name(), phase.label())
}

/// Whether `scenario` is one of this module's.
pub fn is_scenario(scenario: &str) -> bool {
    SCENARIOS.contains(&scenario)
}

/// For a figure with both kinds of traffic, the mode of the same transport's
/// figure without the other traffic (its ratio's denominator): `liquid low/high`
/// in `priority-high-p99` → `liquid idle`, in `priority-bulk` → `liquid alone`.
pub fn baseline_of(scenario: &str, mode: &str) -> Option<String> {
    if !is_scenario(scenario) {
        return None;
    }
    let base = if scenario == BULK {
        Phase::BulkAlone
    } else {
        Phase::Idle
    };
    [Phase::Prioritised, Phase::Control]
        .iter()
        .find_map(|p| mode.strip_suffix(p.label())?.strip_suffix(' '))
        .map(|transport_mode| format!("{transport_mode} {}", base.label()))
}

/// Measures every phase of `mode` (liquid or liquid-quic) once, in an order
/// drawn from `seed`; the figures come in report order.
pub async fn run(mode: Mode, timing: &Timing, seed: u64) -> Vec<Figure> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order = Phase::ALL;
    order.shuffle(&mut rng);
    let mut phases = Vec::new();
    for (position, phase) in order.into_iter().enumerate() {
        let deadline = timing.run_deadline();
        let outcome = tokio::time::timeout(deadline, measure(mode, phase, timing, rng.next_u64()))
            .await
            .unwrap_or_else(|_| {
                Err(BenchError::new(format!(
                    "phase exceeded its deadline of {deadline:?}"
                )))
            });
        phases.push((phase, figures_of(mode, phase, position, timing, outcome)));
    }
    // Report order, so that a scenario's rows list the phases the same way
    // whatever order they ran in.
    phases.sort_by_key(|(phase, _)| Phase::ALL.iter().position(|p| p == phase));
    let mut figures: Vec<Figure> = phases.into_iter().flat_map(|(_, f)| f).collect();
    figures.sort_by_key(|f| SCENARIOS.iter().position(|s| *s == f.scenario));
    figures
}

/// What one phase measured.
struct Measured {
    high: Option<Result<Latency, BenchError>>,
    bulk: Option<Result<Rate, BenchError>>,
}

/// Sets up a pair of hosts for `phase`, runs its traffic, tears down.
async fn measure(
    mode: Mode,
    phase: Phase,
    timing: &Timing,
    seed: u64,
) -> Result<Measured, BenchError> {
    let high = Arc::new(HighBook::new());
    let bulk_ledger = Arc::new(Ledger::new(LARGE_CONCURRENCY, false));
    let hosts = tokio::time::timeout(
        timing.setup,
        Hosts::setup(mode, phase, high.clone(), bulk_ledger.clone(), timing.setup),
    )
    .await
    .ctx("setup timed out")??;
    let sender = hosts.sender.control().clone();
    let bulk_pair: Arc<dyn Pair> = Arc::new(BulkSender {
        control: sender.clone(),
        target: hosts.target,
    });
    // Both start now: the bulk's window (after its warm-up) is the High
    // messages' window.
    let window_start = Instant::now() + timing.warmup;
    let high_traffic = async {
        if phase.sends_high() {
            Some(paced_high(&sender, hosts.target, &high, timing, window_start, seed).await)
        } else {
            None
        }
    };
    let bulk_traffic = async {
        if phase.sends_bulk() {
            Some(
                harness::one_way(
                    bulk_pair,
                    bulk_ledger,
                    LARGE,
                    LARGE_CONCURRENCY,
                    timing,
                    seed.wrapping_add(1),
                )
                .await,
            )
        } else {
            None
        }
    };
    let (high, bulk) = tokio::join!(high_traffic, bulk_traffic);
    if tokio::time::timeout(timing.teardown, hosts.shutdown())
        .await
        .is_err()
    {
        eprintln!(
            "  ({} {} teardown exceeded {:?})",
            mode.name(),
            phase.label(),
            timing.teardown
        );
    }
    Ok(Measured { high, bulk })
}

/// The figures of one phase: High p50 and p99, bulk MiB/s, as the phase has
/// them. `position` is the phase's place in the run's order, from 0.
fn figures_of(
    mode: Mode,
    phase: Phase,
    position: usize,
    timing: &Timing,
    outcome: Result<Measured, BenchError>,
) -> Vec<Figure> {
    let name = mode_name(mode, phase);
    let figure = |scenario: &str, concurrency: usize, unit: &str| {
        let mut f = Figure::new(scenario, &name, mode.transport().name(), concurrency, unit);
        f.note = Some(format!("phase {} of {}", position + 1, Phase::ALL.len()));
        f
    };
    let (high, bulk) = match outcome {
        Ok(m) => (m.high, m.bulk),
        Err(e) => (
            phase.sends_high().then(|| Err(e.clone())),
            phase.sends_bulk().then_some(Err(e)),
        ),
    };
    let mut latencies = Vec::new();
    if let Some(high) = high {
        let (mut p50, mut p99) = (figure(P50, 1, "µs"), figure(P99, 1, "µs"));
        match high {
            Ok(l) => {
                let paced = f64::from(HIGH_RATE) * timing.measure.as_secs_f64();
                for (f, v) in [(&mut p50, l.p50_us), (&mut p99, l.p99_us)] {
                    f.value = Some(v);
                    f.delivery = Some(l.delivery);
                    f.note = join_notes(
                        f.note.take(),
                        Some(format!(
                            "{} High messages of the window received ({:.0} % of {HIGH_RATE}/s)",
                            l.samples,
                            100.0 * l.samples as f64 / paced
                        )),
                    );
                    f.note = join_notes(f.note.take(), l.note.clone());
                }
            }
            Err(e) => {
                p50.error = Some(e.to_string());
                p99.error = Some(e.to_string());
            }
        }
        latencies = vec![p50, p99];
    }
    let mut rates = Vec::new();
    if let Some(bulk) = bulk {
        let mut f = figure(BULK, LARGE_CONCURRENCY, "MiB/s");
        match bulk {
            Ok(r) => {
                f.value = Some(r.mib_per_s);
                f.delivery = Some(r.delivery);
                f.note = join_notes(f.note.take(), r.note);
            }
            Err(e) => f.error = Some(e.to_string()),
        }
        rates.push(f);
    }
    // One phase, one verdict: messages of either protocol lost or duplicated
    // leave nothing of the phase to trust.
    let verdicts = |figures: &[Figure]| {
        figures
            .iter()
            .find(|f| f.failed())
            .and_then(|f| f.delivery)
            .map(|d| d.verdict())
    };
    if let Some(v) = verdicts(&rates) {
        for f in &mut latencies {
            f.excluded = Some(format!("the phase's bulk messages {v}"));
        }
    }
    if let Some(v) = verdicts(&latencies) {
        for f in &mut rates {
            f.excluded = Some(format!("the phase's High messages {v}"));
        }
    }
    latencies.extend(rates);
    latencies
}

/// The receiver's books of the High messages: the ledger, and the send time and
/// latency of every message taken out of the inbox.
struct HighBook {
    ledger: Ledger,
    epoch: Instant,
    /// (sent at, latency), both since `epoch`.
    samples: Mutex<Vec<(Duration, Duration)>>,
}

impl HighBook {
    fn new() -> Self {
        Self {
            ledger: Ledger::new(1, false),
            epoch: Instant::now(),
            samples: Mutex::new(Vec::new()),
        }
    }

    /// Writes the time into `payload` (its header already stamped).
    fn stamp_time(&self, payload: &mut [u8]) {
        let now = self.epoch.elapsed().as_nanos() as u64;
        payload[SENT_AT].copy_from_slice(&now.to_le_bytes());
    }

    /// A High message was taken out of the inbox.
    fn arrived(&self, payload: &[u8]) {
        let now = self.epoch.elapsed();
        if let Some(sent) = payload
            .get(SENT_AT)
            .and_then(|b| b.try_into().ok())
            .map(|b| Duration::from_nanos(u64::from_le_bytes(b)))
        {
            self.samples
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((sent, now.saturating_sub(sent)));
        }
        self.ledger.record(payload);
    }

    /// Latencies of the messages sent from `from` (for `length`), sorted.
    fn window(&self, from: Instant, length: Duration) -> Vec<Duration> {
        let start = from.saturating_duration_since(self.epoch);
        let end = start + length;
        let mut out: Vec<Duration> = self
            .samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(sent, _)| *sent >= start && *sent < end)
            .map(|(_, latency)| *latency)
            .collect();
        out.sort_unstable();
        out
    }
}

/// Sends High messages paced at [`HIGH_RATE`] until the end of the window that
/// starts at `window_start`; then lets the receiver drain, and takes the
/// latencies of the messages sent in the window.
async fn paced_high(
    control: &Control,
    target: PeerId,
    book: &HighBook,
    timing: &Timing,
    window_start: Instant,
    seed: u64,
) -> Result<Latency, BenchError> {
    let failures = Failures::default();
    let until = window_start + timing.measure;
    let mut payload = random_payload(SMALL, seed);
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / HIGH_RATE);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if Instant::now() >= until {
            break;
        }
        let seq = book.ledger.stamp(0, &mut payload);
        book.stamp_time(&mut payload);
        let sent = tokio::time::timeout(
            timing.op_timeout,
            control.send(target, HIGH_PROTOCOL, &payload),
        )
        .await;
        match sent {
            Ok(Ok(())) => book.ledger.confirm(0, seq),
            Ok(Err(e)) => failures.record(format!("High send: {e}")),
            Err(_) => failures.record(format!("a High send took over {:?}", timing.op_timeout)),
        }
    }
    harness::drain(&book.ledger, timing.drain).await;
    let samples = book.window(window_start, timing.measure);
    if samples.is_empty() {
        return Err(BenchError::new(failures.first().unwrap_or_else(|| {
            "no High message sent in the window was received".into()
        })));
    }
    Ok(Latency {
        p50_us: percentile(&samples, 0.50),
        p99_us: percentile(&samples, 0.99),
        samples: samples.len(),
        note: failures.note(),
        delivery: book.ledger.delivery(),
    })
}

/// The bulk load as a [`Pair`] for [`harness::one_way`]: `send` on the bulk
/// protocol (the hosts are shut down by the phase).
struct BulkSender {
    control: Control,
    target: PeerId,
}

impl Pair for BulkSender {
    fn send<'a>(&'a self, _: usize, payload: &'a [u8]) -> BoxFuture<'a, Result<(), BenchError>> {
        async move {
            self.control
                .send(self.target, BULK_PROTOCOL, payload)
                .await
                .ctx("bulk send")
        }
        .boxed()
    }

    fn round_trip<'a>(
        &'a self,
        _: &'a [u8],
        _: &'a mut Vec<u8>,
    ) -> BoxFuture<'a, Result<(), BenchError>> {
        async { Err(BenchError::new("the bulk load is one-way")) }.boxed()
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        async {}.boxed()
    }
}

/// The two hosts of a phase, one connection between them, and the receiver's
/// tasks.
struct Hosts {
    sender: Host,
    receiver: Host,
    target: PeerId,
    /// The sender's registrations (it receives nothing; they set its priorities).
    _own: [Inbox; 2],
    _tasks: Tasks,
}

impl Hosts {
    async fn setup(
        mode: Mode,
        phase: Phase,
        high: Arc<HighBook>,
        bulk: Arc<Ledger>,
        limit: Duration,
    ) -> Result<Self, BenchError> {
        let (sender, receiver) = liquid::hosts(mode.transport(), 1).await?;
        let (high_priority, bulk_priority) = phase.priorities();
        let register = |host: &Host, protocol: &str, priority| {
            host.control()
                .register_protocol_with_priority(protocol, priority)
                .ctx("register")
        };
        let high_inbox = register(&receiver, HIGH_PROTOCOL, high_priority)?;
        let bulk_inbox = register(&receiver, BULK_PROTOCOL, bulk_priority)?;
        let own = [
            register(&sender, HIGH_PROTOCOL, high_priority)?,
            register(&sender, BULK_PROTOCOL, bulk_priority)?,
        ];
        let target = liquid::connect(&sender, &receiver, 1, limit).await?;
        let mut tasks = Tasks::default();
        tasks.push(tokio::spawn(async move {
            let mut inbox = high_inbox;
            while let Some(message) = inbox.recv().await {
                high.arrived(&message.payload);
            }
        }));
        tasks.push(tokio::spawn(async move {
            let mut inbox = bulk_inbox;
            while let Some(message) = inbox.recv().await {
                bulk.record(&message.payload);
            }
        }));
        Ok(Self {
            sender,
            receiver,
            target,
            _own: own,
            _tasks: tasks,
        })
    }

    async fn shutdown(&self) {
        tokio::join!(self.sender.shutdown(), self.receiver.shutdown());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_phases_are_divided_by_the_same_transport_without_the_other_traffic() {
        assert_eq!(
            baseline_of(P99, "liquid low/high").as_deref(),
            Some("liquid idle")
        );
        assert_eq!(
            baseline_of(P50, "liquid-quic normal/normal").as_deref(),
            Some("liquid-quic idle")
        );
        assert_eq!(
            baseline_of(BULK, "liquid low/high").as_deref(),
            Some("liquid alone")
        );
        assert_eq!(baseline_of(BULK, "liquid alone"), None);
        assert_eq!(baseline_of(P99, "liquid idle"), None);
        assert_eq!(baseline_of("msg256-c1", "liquid low/high"), None);
    }

    #[test]
    fn a_phase_that_lost_bulk_messages_counts_none_of_its_figures() {
        use crate::compare::ledger::Delivery;
        let fine = Delivery {
            sent: 2000,
            received: 2000,
            ..Delivery::default()
        };
        let lost = Delivery {
            sent: 100,
            received: 99,
            lost: 1,
            ..Delivery::default()
        };
        let measured = Measured {
            high: Some(Ok(Latency {
                p50_us: 80.0,
                p99_us: 300.0,
                samples: 2000,
                note: None,
                delivery: fine,
            })),
            bulk: Some(Ok(Rate {
                messages_per_s: 400.0,
                mib_per_s: 400.0,
                note: None,
                delivery: lost,
            })),
        };
        let timing = Timing {
            warmup: Duration::from_millis(500),
            measure: Duration::from_secs(2),
            op_timeout: Duration::from_secs(5),
            setup: Duration::from_secs(5),
            drain: Duration::from_secs(1),
            teardown: Duration::from_secs(1),
        };
        let figures = figures_of(Mode::Liquid, Phase::Prioritised, 2, &timing, Ok(measured));
        let scenarios: Vec<&str> = figures.iter().map(|f| f.scenario.as_str()).collect();
        assert_eq!(scenarios, [P50, P99, BULK]);
        assert!(figures.iter().all(|f| f.mode == "liquid low/high"));
        assert!(figures[2].failed() && figures[2].counted().is_none());
        for f in &figures[..2] {
            assert!(!f.failed());
            assert_eq!(f.counted(), None);
            assert_eq!(
                f.excluded.as_deref(),
                Some("the phase's bulk messages FAILED (1 lost)")
            );
            assert!(
                f.note
                    .as_deref()
                    .is_some_and(|n| n.contains("phase 3 of 4") && n.contains("(100 % of 1000/s)")),
                "{:?}",
                f.note
            );
        }
        let failed = figures_of(
            Mode::Liquid,
            Phase::Idle,
            0,
            &timing,
            Err(BenchError::new("setup timed out")),
        );
        assert_eq!(failed.len(), 2);
        assert!(
            failed
                .iter()
                .all(|f| f.error.as_deref() == Some("setup timed out"))
        );
    }

    #[test]
    fn the_high_book_times_messages_sent_in_the_window_only() {
        let book = HighBook::new();
        let mut payload = random_payload(SMALL, 1);
        book.ledger.stamp(0, &mut payload);
        book.stamp_time(&mut payload);
        std::thread::sleep(Duration::from_millis(2));
        book.arrived(&payload);
        let all = book.window(book.epoch, Duration::from_secs(10));
        assert_eq!(all.len(), 1);
        assert!(all[0] >= Duration::from_millis(2), "{all:?}");
        let later = book.window(Instant::now(), Duration::from_secs(10));
        assert!(later.is_empty());
        assert_eq!(book.ledger.delivery().received, 1);
    }
}
