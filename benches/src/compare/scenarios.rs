//! What is measured, in which order, with which durations and deadlines.
//!
//! Everything runs `runs` times. In every run the modes of each scenario go in a
//! new order, shuffled from a printed seed, so that no mode always runs first,
//! right after the previous scenario's teardown; a ratio is then taken between
//! two figures of the same run. A round-trip run counts only if raw TCP is clearly
//! faster than the libp2p stack ([`round_trip_gate`]): if it is not, every mode
//! sits on the machine's own latency floor.

use std::{sync::Arc, time::Duration};

use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};

use super::{
    BenchError, Context, Mode, Transport, first_after_idle,
    harness::{self, Latency, Pair, Rate, Timing},
    ledger::Ledger,
    liquid::LiquidPair,
    memory,
    multi_conn::MultiConnPair,
    priority,
    progress::{Position, Progress},
    raw_tcp::RawTcpPair,
    report::Figure,
    reqresp::ReqRespPair,
    scale, shrink,
    streams::{Kind, StreamPair},
};

/// Payload of the small-message scenarios.
pub const SMALL: usize = 256;
/// Payload of the bulk scenarios.
pub const LARGE: usize = 1 << 20;
/// Senders in the bulk scenarios.
pub const LARGE_CONCURRENCY: usize = 8;

/// One scenario of the report.
#[derive(Debug, Clone, Copy)]
pub struct ScenarioInfo {
    /// Identifier used in the JSON, the chart file names and `--only`.
    pub id: &'static str,
    /// Heading in the report.
    pub title: &'static str,
    /// Unit of its figures.
    pub unit: &'static str,
    /// Whether a larger figure is better.
    pub higher_is_better: bool,
    /// Scenario whose other modes this one's liquid figure is compared with (the
    /// scenario itself when `None`).
    pub baseline: Option<&'static str>,
}

/// Every scenario, in report order.
pub const SCENARIOS: &[ScenarioInfo] = &[
    ScenarioInfo {
        id: "msg256-c1",
        title: "256 B one-way, concurrency 1",
        unit: "msg/s",
        higher_is_better: true,
        baseline: None,
    },
    ScenarioInfo {
        id: "msg256-c8",
        title: "256 B one-way, concurrency 8",
        unit: "msg/s",
        higher_is_better: true,
        baseline: None,
    },
    ScenarioInfo {
        id: "msg256-c64",
        title: "256 B one-way, concurrency 64",
        unit: "msg/s",
        higher_is_better: true,
        baseline: None,
    },
    ScenarioInfo {
        id: "mib1-1conn",
        title: "1 MiB one-way, one connection, concurrency 8",
        unit: "MiB/s",
        higher_is_better: true,
        baseline: None,
    },
    ScenarioInfo {
        id: "mib1-2conn",
        title: "1 MiB one-way, liquid on two connections per peer, concurrency 8 (vs one-connection modes)",
        unit: "MiB/s",
        higher_is_better: true,
        baseline: Some("mib1-1conn"),
    },
    ScenarioInfo {
        id: "rtt256-p50",
        title: "256 B request-reply round trip, concurrency 1, p50",
        unit: "µs",
        higher_is_better: false,
        baseline: None,
    },
    ScenarioInfo {
        id: "rtt256-p99",
        title: "256 B request-reply round trip, concurrency 1, p99",
        unit: "µs",
        higher_is_better: false,
        baseline: None,
    },
    ScenarioInfo {
        id: priority::P50,
        title: "256 B High messages at 1,000/s: idle, beside 8 senders of 1 MiB Low, beside them both Normal; p50",
        unit: "µs",
        higher_is_better: false,
        baseline: None,
    },
    ScenarioInfo {
        id: priority::P99,
        title: "256 B High messages at 1,000/s: idle, beside 8 senders of 1 MiB Low, beside them both Normal; p99",
        unit: "µs",
        higher_is_better: false,
        baseline: None,
    },
    ScenarioInfo {
        id: priority::BULK,
        title: "8 senders of 1 MiB messages: alone, Low beside 256 B High at 1,000/s, both Normal",
        unit: "MiB/s",
        higher_is_better: true,
        baseline: None,
    },
    ScenarioInfo {
        id: "first-after-idle",
        title: "256 B message after the connection went idle (pool at rest) vs the steady state at 1,000/s: delivery latency, p50",
        unit: "µs",
        higher_is_better: false,
        baseline: None,
    },
    ScenarioInfo {
        id: "memory-idle",
        title: "Memory per idle connection end (RSS growth)",
        unit: "KiB",
        higher_is_better: false,
        baseline: None,
    },
    ScenarioInfo {
        id: "pool-shrink",
        title: "Pools give memory back: process RSS before a burst, after it, and after the pools shrank",
        unit: "MiB",
        higher_is_better: false,
        baseline: None,
    },
    ScenarioInfo {
        id: "scale-connect",
        title: "Liquid hosts in one process, full mesh: time until every pair is connected",
        unit: "s",
        higher_is_better: false,
        baseline: None,
    },
    ScenarioInfo {
        id: "scale-throughput",
        title: "Liquid hosts in one process, full mesh: aggregate 256 B messages",
        unit: "msg/s",
        higher_is_better: true,
        baseline: None,
    },
];

/// The scenario with this id.
pub fn info(id: &str) -> Option<&'static ScenarioInfo> {
    SCENARIOS.iter().find(|s| s.id == id)
}

/// Round-trip runs count only if raw TCP's p50 is at most this share of
/// single-stream's: otherwise the machine's own latency (scheduling, a busy
/// core) is the floor every mode sits on, and the modes cannot be told apart.
pub const GATE_SHARE: f64 = 0.7;
/// Attempts at a round-trip run that passes the gate, per run.
pub const GATE_ATTEMPTS: u32 = 3;
/// Setup, drain and teardown of one mode, as planned for the time left.
const SETUP_GUESS: Duration = Duration::from_millis(400);

/// Sizes and durations of a run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Short durations and fewer connections and hosts.
    pub quick: bool,
    /// How many times everything runs (the RSS scenarios: the first time only).
    pub runs: u32,
    /// Seed of the modes' order in each run and of the payloads.
    pub seed: u64,
    /// Durations and deadlines of each one-way measurement.
    pub timing: Timing,
    /// Durations and deadlines of each round-trip measurement.
    pub rtt_timing: Timing,
    /// Durations and deadlines of each phase of the priority scenario.
    pub priority_timing: Timing,
    /// Idle connections in the memory scenario.
    pub memory_connections: usize,
    /// Hosts in the scale scenario.
    pub scale_hosts: usize,
    /// Deadline for the mesh to form.
    pub scale_connect_limit: Duration,
    /// Scenario id prefixes to run (all when empty).
    pub only: Vec<String>,
    /// Mode names to run in the per-mode scenarios (all when empty).
    pub modes: Vec<String>,
}

/// One measurement of a run.
#[derive(Debug, Clone, Copy)]
enum Step {
    Memory,
    FirstAfterIdle,
    Shrink,
    Scale,
    /// Every phase of the priority scenario over one liquid mode.
    Priority(Mode),
    Mode {
        scenario: &'static str,
        mode: Mode,
        measure: Measure,
        connections: usize,
    },
}

/// What one mode's measurement measures.
#[derive(Debug, Clone, Copy)]
enum Measure {
    OneWay { payload: usize, concurrency: usize },
    RoundTrip { payload: usize },
}

/// The one-way scenarios: id, payload, senders, connections.
const ONE_WAY: [(&str, usize, usize, usize); 5] = [
    ("msg256-c1", SMALL, 1, 1),
    ("msg256-c8", SMALL, 8, 1),
    ("msg256-c64", SMALL, 64, 1),
    ("mib1-1conn", LARGE, LARGE_CONCURRENCY, 1),
    ("mib1-2conn", LARGE, LARGE_CONCURRENCY, 2),
];

/// The modes of the priority scenario: `liquid`, and `liquid-quic` when named in
/// `--modes` (the full run's 20 minutes have no room for its four phases in five
/// runs).
const PRIORITY_MODES: [Mode; 2] = [Mode::Liquid, Mode::LiquidQuic];

/// A phase of the priority scenario, quick or full: 2,000 High messages in the
/// window (the p99 is the 20th slowest); the full run's five runs give the
/// range.
fn priority_timing(base: Timing) -> Timing {
    Timing {
        warmup: Duration::from_millis(500),
        measure: Duration::from_secs(2),
        ..base
    }
}

/// The modes of `mib1-2conn`: liquid on two connections per peer, and the stock
/// reference on as many.
const TWO_CONNECTION_MODES: [Mode; 2] = [Mode::Liquid, Mode::PreOpened];

impl Plan {
    /// The plan for `--quick` (under 2 minutes, one run by default) or the full
    /// run (under 20 minutes, five runs by default).
    pub fn new(
        quick: bool,
        only: Vec<String>,
        modes: Vec<String>,
        runs: Option<u32>,
        seed: u64,
    ) -> Self {
        let (timing, rtt_timing, priority_timing) = if quick {
            let base = Timing {
                warmup: Duration::from_millis(300),
                measure: Duration::from_millis(1000),
                op_timeout: Duration::from_secs(5),
                setup: Duration::from_secs(20),
                drain: Duration::from_secs(3),
                teardown: Duration::from_secs(8),
            };
            let rtt = Timing {
                warmup: Duration::from_millis(200),
                measure: Duration::from_millis(700),
                ..base
            };
            (base, rtt, priority_timing(base))
        } else {
            let base = Timing {
                warmup: Duration::from_secs(1),
                measure: Duration::from_millis(2500),
                op_timeout: Duration::from_secs(10),
                setup: Duration::from_secs(30),
                drain: Duration::from_secs(5),
                teardown: Duration::from_secs(10),
            };
            let rtt = Timing {
                warmup: Duration::from_millis(500),
                measure: Duration::from_millis(1500),
                ..base
            };
            (base, rtt, priority_timing(base))
        };
        Self {
            quick,
            runs: runs.unwrap_or(if quick { 1 } else { 5 }).max(1),
            seed,
            timing,
            rtt_timing,
            priority_timing,
            memory_connections: if quick { 50 } else { 200 },
            scale_hosts: if quick { 16 } else { 64 },
            scale_connect_limit: Duration::from_secs(if quick { 30 } else { 90 }),
            only,
            modes,
        }
    }

    /// Whether scenario `id` is to run in run `run`. The RSS scenarios run in
    /// the first run only: later runs would reuse memory freed by earlier
    /// scenarios.
    pub fn wants(&self, id: &str, run: u32) -> bool {
        if run > 1 && (id == "memory-idle" || id == "pool-shrink") {
            return false;
        }
        // Its quiet periods are long for what it measures: once in the full
        // run, unless named.
        if run > 1 && id == "first-after-idle" && !self.named(id) {
            return false;
        }
        self.only.is_empty() || self.only.iter().any(|p| id.starts_with(p.as_str()))
    }

    /// Whether scenario `id` was named with `--only`: a narrowed run has time
    /// for the comparisons the default run leaves out (memory with eager
    /// pools, the first message after idle with no floor, more cycles).
    pub fn named(&self, id: &str) -> bool {
        self.only.iter().any(|p| id.starts_with(p.as_str()))
    }

    /// The modes to run of `candidates`.
    fn modes<'a>(&'a self, candidates: &'a [Mode]) -> impl Iterator<Item = Mode> + 'a {
        candidates
            .iter()
            .copied()
            .filter(|m| self.modes.is_empty() || self.modes.iter().any(|n| n == m.name()))
    }

    /// The modes of one-way scenario `id`.
    fn one_way_modes(&self, id: &str) -> Vec<Mode> {
        if id == "mib1-2conn" {
            self.modes(&TWO_CONNECTION_MODES).collect()
        } else {
            self.modes(&Mode::ALL).collect()
        }
    }

    /// The modes of the priority scenario (see [`PRIORITY_MODES`]).
    fn priority_modes(&self) -> Vec<Mode> {
        if self.modes.is_empty() {
            vec![Mode::Liquid]
        } else {
            self.modes(&PRIORITY_MODES).collect()
        }
    }

    /// The modes of the round-trip scenario.
    fn round_trip_modes(&self) -> Vec<Mode> {
        self.modes(&Mode::ALL).filter(|m| m.round_trips()).collect()
    }

    /// Every step of run `run`, in plan order (modes not yet shuffled).
    fn steps(&self, run: u32) -> Vec<Step> {
        let mut steps = Vec::new();
        // First, while the heap holds nothing freed by the throughput runs.
        if self.wants("memory-idle", run) {
            steps.push(Step::Memory);
        }
        for (scenario, payload, concurrency, connections) in ONE_WAY {
            if self.wants(scenario, run) {
                steps.extend(
                    self.one_way_modes(scenario)
                        .into_iter()
                        .map(|mode| Step::Mode {
                            scenario,
                            mode,
                            measure: Measure::OneWay {
                                payload,
                                concurrency,
                            },
                            connections,
                        }),
                );
            }
        }
        if self.wants("rtt256", run) {
            steps.extend(self.round_trip_modes().into_iter().map(|mode| Step::Mode {
                scenario: "rtt256",
                mode,
                measure: Measure::RoundTrip { payload: SMALL },
                connections: 1,
            }));
        }
        if priority::SCENARIOS.iter().any(|id| self.wants(id, run)) {
            steps.extend(self.priority_modes().into_iter().map(Step::Priority));
        }
        if self.wants("first-after-idle", run) {
            steps.push(Step::FirstAfterIdle);
        }
        if self.wants("pool-shrink", run) {
            steps.push(Step::Shrink);
        }
        if self.wants("scale", run) {
            steps.push(Step::Scale);
        }
        steps
    }

    /// What a step is expected to take, for the time left.
    fn planned(&self, step: &Step) -> Duration {
        match step {
            Step::Memory => {
                // Three kinds (five when named), each: two settles and the dials.
                let kinds = if self.named("memory-idle") { 5 } else { 3 };
                (memory::SETTLE * 2 + Duration::from_millis(15) * self.memory_connections as u32)
                    * kinds
            }
            Step::Shrink => self.shrink_burst() + self.shrink_after() * 2 + SETUP_GUESS,
            Step::FirstAfterIdle => {
                // Per pool kind, per cycle: the steady phase, the quiet period
                // and up to two check periods.
                let cycle = Duration::from_millis(first_after_idle::STEADY_MESSAGES as u64)
                    + self.idle_after()
                    + self.idle_after() / 2;
                (cycle * self.idle_cycles() as u32 + SETUP_GUESS) * self.idle_kinds().len() as u32
            }
            Step::Scale => {
                Duration::from_millis(80) * self.scale_hosts as u32
                    + self.timing.warmup
                    + self.timing.measure
                    + SETUP_GUESS * 2
            }
            Step::Priority(_) => {
                let t = &self.priority_timing;
                (t.warmup + t.measure + SETUP_GUESS) * priority::Phase::ALL.len() as u32
            }
            Step::Mode { measure, mode, .. } => {
                let t = match measure {
                    Measure::OneWay { .. } => &self.timing,
                    Measure::RoundTrip { .. } => &self.rtt_timing,
                };
                // A lossy mode's drain usually ends by waiting out a stall.
                let stall = if mode.lossy() {
                    harness::DRAIN_STALL
                } else {
                    Duration::ZERO
                };
                t.warmup + t.measure + SETUP_GUESS + stall
            }
        }
    }

    /// What the whole plan is expected to take (before any round-trip repeat).
    pub fn planned_total(&self) -> Duration {
        (1..=self.runs)
            .flat_map(|run| self.steps(run))
            .map(|step| self.planned(&step))
            .sum()
    }

    /// The pools' `shrink_after` in the pool-shrink scenario.
    fn shrink_after(&self) -> Duration {
        Duration::from_secs(if self.quick { 2 } else { 5 })
    }

    /// The pools' `idle_after` in the first-after-idle scenario: the default
    /// (60 s) shortened to 500 ms, or 1 s when the scenario is named with
    /// `--only`, so that the run stays short; what the first message after it
    /// meets depends on the pool being at rest, not on how long the quiet
    /// lasted (the `never-rests` control shows what the quiet costs).
    fn idle_after(&self) -> Duration {
        if self.named("first-after-idle") {
            Duration::from_secs(1)
        } else {
            Duration::from_millis(500)
        }
    }

    /// Quiet periods, each followed by one first message, per pool kind.
    fn idle_cycles(&self) -> usize {
        if self.named("first-after-idle") { 5 } else { 3 }
    }

    /// The pool kinds of the first-after-idle scenario: the default floor and
    /// the control, and no floor when the scenario is named with `--only`.
    fn idle_kinds(&self) -> Vec<(IdlePools, &'static str)> {
        let mut kinds = vec![
            (IdlePools::DefaultFloor, "liquid"),
            (IdlePools::NeverRest, "liquid never-rests"),
        ];
        if self.named("first-after-idle") {
            kinds.insert(1, (IdlePools::Floor(0), "liquid floor-0"));
        }
        kinds
    }

    /// How long the pool-shrink scenario's burst lasts.
    fn shrink_burst(&self) -> Duration {
        Duration::from_millis(if self.quick { 1500 } else { 8000 })
    }

    /// One line describing the sizes, for the report.
    pub fn summary(&self) -> String {
        format!(
            "{} run: {} run{} (seed {}); one-way {:?} warm-up + {:?} measured per mode, \
             round trips {:?} + {:?}, priority {:?} + {:?} per phase; memory over {} \
             connections; scale with {} hosts ({} senders each)",
            if self.quick { "quick" } else { "full" },
            self.runs,
            if self.runs == 1 { "" } else { "s" },
            self.seed,
            self.timing.warmup,
            self.timing.measure,
            self.rtt_timing.warmup,
            self.rtt_timing.measure,
            self.priority_timing.warmup,
            self.priority_timing.measure,
            self.memory_connections,
            self.scale_hosts,
            scale::WORKERS_PER_HOST,
        )
    }
}

enum Outcome {
    Rate(Rate),
    Latency(Latency),
}

/// Collects the figures of the runs, each tagged with its run and its place in it.
struct Recorder {
    figures: Vec<Figure>,
    run: u32,
    order: usize,
}

impl Recorder {
    fn add(&mut self, batch: Vec<Figure>) {
        for mut f in batch {
            f.run = self.run;
            f.order = self.order;
            self.figures.push(f);
        }
        self.order += 1;
    }
}

/// Runs every wanted scenario `plan.runs` times, the modes of each scenario in a
/// new order each run (drawn from `plan.seed`); `progress` shows each step.
pub async fn run_all(plan: &Plan, progress: &Progress) -> Vec<Figure> {
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let mut out = Recorder {
        figures: Vec::new(),
        run: 0,
        order: 0,
    };
    for run in 1..=plan.runs {
        (out.run, out.order) = (run, 0);
        let mut steps = plan.steps(run).into_iter().peekable();
        while let Some(step) = steps.next() {
            let Step::Mode { scenario, .. } = step else {
                out.add(run_step(plan, progress, run, step, rng.next_u64()).await);
                continue;
            };
            // This scenario's modes, shuffled.
            let mut group = vec![step];
            while let Some(next) =
                steps.next_if(|s| matches!(s, Step::Mode { scenario: id, .. } if *id == scenario))
            {
                group.push(next);
            }
            if scenario == "rtt256" {
                for batch in gated_round_trips(plan, progress, run, &group, &mut rng).await {
                    out.add(batch);
                }
                continue;
            }
            group.shuffle(&mut rng);
            for step in group {
                out.add(run_step(plan, progress, run, step, rng.next_u64()).await);
            }
        }
    }
    out.figures
}

/// The round-trip scenario of one run, repeated while raw TCP's p50 is not at
/// most [`GATE_SHARE`] of single-stream's (up to [`GATE_ATTEMPTS`] times); if it
/// never is, the figures are kept but marked as not counting.
async fn gated_round_trips(
    plan: &Plan,
    progress: &Progress,
    run: u32,
    group: &[Step],
    rng: &mut StdRng,
) -> Vec<Vec<Figure>> {
    let mut attempt = 1;
    loop {
        let mut order = group.to_vec();
        order.shuffle(rng);
        let mut batches = Vec::new();
        for step in order {
            batches.push(run_step(plan, progress, run, step, rng.next_u64()).await);
        }
        let verdict = round_trip_gate(batches.iter().flatten());
        let why = match verdict {
            Gate::Passed => return batches,
            Gate::NotEvaluated(why) => why,
            Gate::Failed(why) if attempt < GATE_ATTEMPTS => {
                attempt += 1;
                progress.line(&format!(
                    "  round trips of run {run} do not count ({why}): measuring them again \
                     (attempt {attempt} of {GATE_ATTEMPTS})"
                ));
                progress.add(group.iter().map(|s| plan.planned(s)).sum());
                continue;
            }
            Gate::Failed(why) => format!("{why}, in each of {GATE_ATTEMPTS} attempts"),
        };
        for f in batches.iter_mut().flatten() {
            f.excluded = Some(format!("inconclusive: {why}"));
        }
        return batches;
    }
}

/// Whether a round-trip run counts.
#[derive(Debug, Clone, PartialEq)]
pub enum Gate {
    /// raw TCP's p50 is at most [`GATE_SHARE`] of single-stream's.
    Passed,
    /// It is not (why).
    Failed(String),
    /// raw TCP or single-stream has no p50 (why).
    NotEvaluated(String),
}

/// Checks the round-trip gate on one attempt's figures.
pub fn round_trip_gate<'a>(figures: impl IntoIterator<Item = &'a Figure>) -> Gate {
    let (mut raw, mut single) = (None, None);
    for f in figures {
        if f.scenario == "rtt256-p50" {
            match f.mode.as_str() {
                "raw-tcp" => raw = f.value,
                "single-stream" => single = f.value,
                _ => {}
            }
        }
    }
    match (raw, single) {
        (Some(raw), Some(single)) if raw <= GATE_SHARE * single => Gate::Passed,
        (Some(raw), Some(single)) => Gate::Failed(format!(
            "raw-tcp p50 {raw:.1} µs is over {GATE_SHARE} × single-stream's {single:.1} µs"
        )),
        _ => Gate::NotEvaluated(
            "raw-tcp and single-stream p50 are both needed for the round-trip gate".into(),
        ),
    }
}

/// Runs one step, showing it in `progress`.
async fn run_step(
    plan: &Plan,
    progress: &Progress,
    run: u32,
    step: Step,
    seed: u64,
) -> Vec<Figure> {
    let (scenario, mode) = match step {
        Step::Memory => ("memory-idle", "all kinds"),
        Step::Shrink => ("pool-shrink", "liquid"),
        Step::FirstAfterIdle => ("first-after-idle", "liquid"),
        Step::Scale => ("scale", "liquid"),
        Step::Priority(mode) => ("priority", mode.name()),
        Step::Mode { scenario, mode, .. } => (scenario, mode.name()),
    };
    progress.begin(Position {
        run,
        runs: plan.runs,
        scenario,
        mode,
    });
    let figures = match step {
        Step::Memory => run_memory(plan).await,
        Step::Shrink => run_shrink(plan).await,
        Step::FirstAfterIdle => run_first_after_idle(plan).await,
        Step::Scale => run_scale(plan, seed).await,
        Step::Priority(mode) => priority::run(mode, &plan.priority_timing, seed).await,
        Step::Mode {
            scenario,
            mode,
            measure,
            connections,
        } => run_mode(scenario, mode, measure, connections, plan, seed).await,
    };
    progress.end(plan.planned(&step), &figures);
    figures
}

/// Sets up `mode`, measures, tears down; every step bounded.
async fn run_mode(
    scenario: &str,
    mode: Mode,
    measure: Measure,
    connections: usize,
    plan: &Plan,
    seed: u64,
) -> Vec<Figure> {
    let timing = match measure {
        Measure::OneWay { .. } => plan.timing,
        Measure::RoundTrip { .. } => plan.rtt_timing,
    };
    let body = async {
        let (workers, echo, payload) = match measure {
            Measure::OneWay {
                payload,
                concurrency,
            } => (concurrency, false, payload),
            Measure::RoundTrip { payload } => (1, true, payload),
        };
        let ledger = Arc::new(Ledger::new(workers, mode.lossy()));
        let pair = tokio::time::timeout(
            timing.setup,
            setup(mode, workers, connections, echo, ledger.clone(), &timing),
        )
        .await
        .ctx("setup timed out")??;
        let outcome = match measure {
            Measure::OneWay { concurrency, .. } => {
                harness::one_way(pair.clone(), ledger, payload, concurrency, &timing, seed)
                    .await
                    .map(Outcome::Rate)
            }
            Measure::RoundTrip { .. } => {
                harness::round_trip(pair.clone(), ledger, payload, &timing, seed)
                    .await
                    .map(Outcome::Latency)
            }
        };
        if tokio::time::timeout(timing.teardown, pair.shutdown())
            .await
            .is_err()
        {
            eprintln!(
                "  ({} teardown exceeded {:?})",
                mode.name(),
                timing.teardown
            );
        }
        outcome
    };
    let outcome = tokio::time::timeout(timing.run_deadline(), body)
        .await
        .unwrap_or_else(|_| {
            Err(BenchError::new(format!(
                "run exceeded its deadline of {:?}",
                timing.run_deadline()
            )))
        });
    figures_of(scenario, mode, measure, connections, outcome)
}

/// The figures of one mode's measurement.
fn figures_of(
    scenario: &str,
    mode: Mode,
    measure: Measure,
    connections: usize,
    outcome: Result<Outcome, BenchError>,
) -> Vec<Figure> {
    let figure = |id: &str, concurrency: usize, unit: &str, value: Result<f64, BenchError>| {
        let mut figure = Figure::new(id, mode.name(), mode.transport().name(), concurrency, unit);
        match value {
            Ok(v) => figure.value = Some(v),
            Err(e) => figure.error = Some(e.to_string()),
        }
        if connections > 1 {
            figure.note = Some(format!("{connections} connections per peer"));
        }
        figure
    };
    match measure {
        Measure::OneWay {
            payload,
            concurrency,
        } => {
            let large = payload >= LARGE;
            let unit = if large { "MiB/s" } else { "msg/s" };
            let (value, note, delivery) = match outcome.and_then(rate) {
                Ok(r) => (
                    Ok(if large { r.mib_per_s } else { r.messages_per_s }),
                    r.note,
                    Some(r.delivery),
                ),
                Err(e) => (Err(e), None, None),
            };
            let mut f = figure(scenario, concurrency, unit, value);
            f.note = join_notes(f.note, note);
            f.delivery = delivery;
            vec![f]
        }
        Measure::RoundTrip { .. } => match outcome.and_then(|o| match o {
            Outcome::Latency(l) => Ok(l),
            Outcome::Rate(_) => Err(BenchError::new("wrong outcome")),
        }) {
            Ok(l) => {
                let note = Some(format!("{} round trips", l.samples));
                let note = join_notes(note, l.note.clone());
                let mut p50 = figure("rtt256-p50", 1, "µs", Ok(l.p50_us));
                let mut p99 = figure("rtt256-p99", 1, "µs", Ok(l.p99_us));
                p50.note = join_notes(p50.note, note.clone());
                p99.note = join_notes(p99.note, note);
                p50.delivery = Some(l.delivery);
                p99.delivery = Some(l.delivery);
                vec![p50, p99]
            }
            Err(e) => vec![
                figure("rtt256-p50", 1, "µs", Err(e.clone())),
                figure("rtt256-p99", 1, "µs", Err(e)),
            ],
        },
    }
}

fn rate(outcome: Outcome) -> Result<Rate, BenchError> {
    match outcome {
        Outcome::Rate(r) => Ok(r),
        Outcome::Latency(_) => Err(BenchError::new("wrong outcome")),
    }
}

/// Both notes, `; `-separated, or the one there is.
pub fn join_notes(a: Option<String>, b: Option<String>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    }
}

async fn setup(
    mode: Mode,
    workers: usize,
    connections: usize,
    echo: bool,
    ledger: Arc<Ledger>,
    timing: &Timing,
) -> Result<Arc<dyn Pair>, BenchError> {
    let limit = timing.setup;
    let stream_pair = |kind, transport| {
        let ledger = ledger.clone();
        async move {
            if connections > 1 {
                return Err(BenchError::new(format!(
                    "{} runs on one connection only",
                    mode.name()
                )));
            }
            StreamPair::setup(kind, transport, workers, echo, ledger, limit).await
        }
    };
    Ok(match mode {
        Mode::Liquid => {
            Arc::new(LiquidPair::setup(Transport::Tcp, connections, echo, ledger, limit).await?)
        }
        Mode::LiquidQuic => {
            Arc::new(LiquidPair::setup(Transport::Quic, connections, echo, ledger, limit).await?)
        }
        Mode::PreOpened if connections > 1 => Arc::new(
            MultiConnPair::setup(Transport::Tcp, connections, workers, echo, ledger, limit).await?,
        ),
        Mode::OpenPerMessage => Arc::new(stream_pair(Kind::OpenPerMessage, Transport::Tcp).await?),
        Mode::OpenPerMessageLossy => {
            Arc::new(stream_pair(Kind::OpenPerMessageLossy, Transport::Tcp).await?)
        }
        Mode::SingleStream => Arc::new(stream_pair(Kind::Single, Transport::Tcp).await?),
        Mode::PreOpened => Arc::new(stream_pair(Kind::PreOpened, Transport::Tcp).await?),
        Mode::PreOpenedQuic => Arc::new(stream_pair(Kind::PreOpened, Transport::Quic).await?),
        Mode::RequestResponse => Arc::new(
            ReqRespPair::setup(Transport::Tcp, echo, ledger, timing.op_timeout, limit).await?,
        ),
        Mode::RawTcp => Arc::new(RawTcpPair::setup(connections, echo, ledger, limit).await?),
    })
}

/// The pools of the first-after-idle scenario: the default floor (mode
/// `liquid`), none (mode `liquid floor-0`, when the scenario is named), to
/// show what the floor buys, and pools that never rest (mode `liquid
/// never-rests`), the control: as long a quiet period with every stream open
/// shows what the quiet alone costs (cold caches, parked threads).
#[derive(Clone, Copy)]
enum IdlePools {
    DefaultFloor,
    Floor(usize),
    NeverRest,
}

async fn run_first_after_idle(plan: &Plan) -> Vec<Figure> {
    let idle_after = plan.idle_after();
    let cycles = plan.idle_cycles();
    let limit = plan.timing.setup;
    let mut figures = Vec::new();
    for (floor, mode) in plan.idle_kinds() {
        let floor = match floor {
            IdlePools::DefaultFloor => Some(liquid_p2p::PoolConfig::default().idle_floor),
            IdlePools::Floor(n) => Some(n),
            IdlePools::NeverRest => None,
        };
        let deadline = (Duration::from_millis(first_after_idle::STEADY_MESSAGES as u64 * 3)
            + idle_after * 3
            + limit)
            * cycles as u32;
        let measured = tokio::time::timeout(
            deadline,
            first_after_idle::run(floor, idle_after, cycles, limit),
        )
        .await
        .unwrap_or_else(|_| {
            Err(BenchError::new(format!(
                "first-after-idle scenario exceeded {deadline:?}"
            )))
        });
        let steady_mode = format!("{mode} steady");
        let mut first = Figure::new("first-after-idle", mode, Transport::Tcp.name(), 1, "µs");
        let mut steady = Figure::new(
            "first-after-idle",
            &steady_mode,
            Transport::Tcp.name(),
            1,
            "µs",
        );
        match measured {
            Ok(m) => {
                let list = |v: &[Duration]| {
                    v.iter()
                        .map(|d| format!("{:.0}", d.as_secs_f64() * 1e6))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                first.value = Some(m.first_p50_us());
                first.note = Some(format!(
                    "median of {} first messages after idle_after {:?} (default 60 s) with \
                     idle_floor {}, {} send streams at rest; each: {} µs; send() \
                     itself: median {:.1} µs, each {} µs",
                    m.first.len(),
                    idle_after,
                    floor.map_or("- (never rests)".into(), |f| f.to_string()),
                    m.streams_at_rest,
                    list(&m.first),
                    m.first_send_p50_us(),
                    list(&m.first_send),
                ));
                steady.value = Some(m.steady_p50_us);
                steady.note = Some(format!(
                    "p50 of {} messages paced at 1,000/s just before each quiet period; \
                     send() itself: p50 {:.1} µs",
                    m.steady_count, m.steady_send_p50_us
                ));
            }
            Err(e) => {
                first.error = Some(e.to_string());
                steady.error = Some(e.to_string());
            }
        }
        figures.push(first);
        figures.push(steady);
    }
    figures
}

async fn run_shrink(plan: &Plan) -> Vec<Figure> {
    let (shrink_after, burst) = (plan.shrink_after(), plan.shrink_burst());
    let limit = plan.timing.setup;
    let deadline = burst + shrink_after * 3 + limit * 3;
    let measured = tokio::time::timeout(
        deadline,
        shrink::burst_and_shrink(shrink_after, burst, limit),
    )
    .await
    .unwrap_or_else(|_| {
        Err(BenchError::new(format!(
            "pool-shrink scenario exceeded {deadline:?}"
        )))
    });
    let stages = ["before-burst", "after-burst", "after-shrink"];
    stages
        .iter()
        .enumerate()
        .map(|(i, stage)| {
            let mut f = Figure::new("pool-shrink", stage, Transport::Tcp.name(), 128, "MiB");
            match &measured {
                Ok(m) => {
                    let s = [m.before, m.after_burst, m.after_shrink][i];
                    f.value = Some(s.rss as f64 / (1024.0 * 1024.0));
                    let mut note = format!(
                        "sender pool {} streams, receiver {} inbound streams",
                        s.pool_streams, s.inbound_streams
                    );
                    if i == 2 {
                        note.push_str(&format!(
                            "; back to init_size {:.1} s after the burst (shrink_after {:?})",
                            m.shrink_took.as_secs_f64(),
                            m.shrink_after
                        ));
                    }
                    f.note = Some(note);
                }
                Err(e) => f.error = Some(e.to_string()),
            }
            f
        })
        .collect()
}

async fn run_memory(plan: &Plan) -> Vec<Figure> {
    let n = plan.memory_connections;
    let limit = plan.timing.setup + Duration::from_secs(n as u64 / 10);
    // Five measurements, each well within `limit` unless something is stuck.
    let deadline = limit * 5 + Duration::from_secs(5);
    let eager = plan.named("memory-idle");
    let measured = tokio::time::timeout(deadline, memory::idle_memory(n, limit, eager)).await;
    let measured = match measured {
        Ok((measured, held)) => {
            let _ = tokio::time::timeout(plan.timing.teardown, held.shutdown()).await;
            measured
        }
        Err(_) => {
            let e = BenchError::new(format!("memory scenario exceeded {deadline:?}"));
            memory::Measured {
                liquid: Err(e.clone()),
                plain: Err(e.clone()),
                plain_streams: Err(e.clone()),
                liquid_eager: eager.then(|| Err(e.clone())),
                plain_streams_eager: eager.then_some(Err(e)),
            }
        }
    };
    let pool = liquid_p2p::PoolConfig::default();
    let (floor, init) = (pool.effective_idle_floor(), pool.init_size);
    [
        ("liquid", Some(measured.liquid), Some(floor)),
        (
            "plain-libp2p-streams",
            Some(measured.plain_streams),
            Some(floor),
        ),
        ("plain-libp2p", Some(measured.plain), None),
        ("liquid open_at_connect", measured.liquid_eager, Some(init)),
        (
            "plain-libp2p-streams init_size",
            measured.plain_streams_eager,
            Some(init),
        ),
    ]
    .into_iter()
    .filter_map(|(mode, result, streams)| Some((mode, result?, streams)))
    .map(|(mode, result, streams)| {
        let mut f = Figure::new("memory-idle", mode, Transport::Tcp.name(), n, "KiB");
        match result {
            Ok(idle) => {
                f.value = Some(idle.kib_per_end);
                let mut note = format!(
                    "RSS growth over {} idle connections / {} ends",
                    idle.connections,
                    2 * idle.connections
                );
                if let Some(streams) = streams {
                    note += &format!(", {streams} idle streams opened by each end");
                }
                f.note = Some(note);
            }
            Err(e) => f.error = Some(e.to_string()),
        }
        f
    })
    .collect()
}

async fn run_scale(plan: &Plan, seed: u64) -> Vec<Figure> {
    let n = plan.scale_hosts;
    let timing = plan.timing;
    let deadline = plan.scale_connect_limit + timing.run_deadline();
    let result = tokio::time::timeout(
        deadline,
        scale::run(n, SMALL, &timing, plan.scale_connect_limit, seed),
    )
    .await
    .unwrap_or_else(|_| {
        let e = BenchError::new(format!("scale scenario exceeded {deadline:?}"));
        scale::Scale {
            hosts: n,
            connect_s: Err(e.clone()),
            messages_per_s: Err(e),
            note: None,
            delivery: None,
        }
    });
    let pairs = n * (n - 1) / 2;
    let mut connect = Figure::new("scale-connect", "liquid", Transport::Tcp.name(), n, "s");
    connect.note = Some(format!("{n} hosts, {pairs} connections"));
    match result.connect_s {
        Ok(v) => connect.value = Some(v),
        Err(e) => connect.error = Some(e.to_string()),
    }
    let senders = n * scale::WORKERS_PER_HOST;
    let mut rate = Figure::new(
        "scale-throughput",
        "liquid",
        Transport::Tcp.name(),
        senders,
        "msg/s",
    );
    rate.note = join_notes(Some(format!("{n} hosts, {senders} senders")), result.note);
    match result.messages_per_s {
        Ok(v) => rate.value = Some(v),
        Err(e) => rate.error = Some(e.to_string()),
    }
    rate.delivery = result.delivery;
    vec![connect, rate]
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use futures::{FutureExt, future::BoxFuture};

    use super::*;
    use crate::compare::report::Report;

    /// What the fake mode does wrong.
    #[derive(Debug, Clone, Copy)]
    enum Fault {
        None,
        /// Loses every `n`th message, and still returns `Ok`.
        DropOneIn(u64),
        /// Delivers the `n`th message twice.
        DuplicateNth(u64),
        /// Answers the `n`th round trip with another payload.
        WrongReplyNth(u64),
    }

    /// A mode that hands every message straight to the receiver's ledger, with a
    /// fault injected.
    struct FakePair {
        ledger: Arc<Ledger>,
        fault: Fault,
        sends: AtomicU64,
    }

    impl FakePair {
        fn new(ledger: Arc<Ledger>, fault: Fault) -> Arc<Self> {
            Arc::new(Self {
                ledger,
                fault,
                sends: AtomicU64::new(0),
            })
        }

        async fn deliver(&self, payload: &[u8]) -> u64 {
            // A real mode yields to the runtime too; without it, a sender would
            // never let the timer that ends the window run.
            tokio::task::yield_now().await;
            let n = self.sends.fetch_add(1, Ordering::Relaxed) + 1;
            match self.fault {
                Fault::DropOneIn(k) if n.is_multiple_of(k) => {}
                Fault::DuplicateNth(k) if n == k => {
                    self.ledger.record(payload);
                    self.ledger.record(payload);
                }
                _ => self.ledger.record(payload),
            }
            n
        }
    }

    impl Pair for FakePair {
        fn send<'a>(
            &'a self,
            _: usize,
            payload: &'a [u8],
        ) -> BoxFuture<'a, Result<(), BenchError>> {
            async move {
                self.deliver(payload).await;
                Ok(())
            }
            .boxed()
        }

        fn round_trip<'a>(
            &'a self,
            payload: &'a [u8],
            reply: &'a mut Vec<u8>,
        ) -> BoxFuture<'a, Result<(), BenchError>> {
            async move {
                let n = self.deliver(payload).await;
                reply.clear();
                reply.extend_from_slice(payload);
                if matches!(self.fault, Fault::WrongReplyNth(k) if k == n) {
                    reply[HEADER_BYTE] ^= 1;
                }
                Ok(())
            }
            .boxed()
        }

        fn shutdown(&self) -> BoxFuture<'_, ()> {
            async {}.boxed()
        }
    }

    /// A byte of the header (the sequence number's lowest).
    const HEADER_BYTE: usize = 4;

    fn timing() -> Timing {
        Timing {
            warmup: Duration::from_millis(20),
            measure: Duration::from_millis(400),
            op_timeout: Duration::from_secs(1),
            setup: Duration::from_secs(1),
            drain: Duration::from_secs(3),
            teardown: Duration::from_secs(1),
        }
    }

    /// Measures the fake mode as `mode` in msg256-c64 and puts it in a report next
    /// to a faultless pre-opened.
    async fn measured(mode: Mode, fault: Fault) -> (Vec<Figure>, Report) {
        let measure = Measure::OneWay {
            payload: SMALL,
            concurrency: 8,
        };
        let mut figures = Vec::new();
        for (mode, fault) in [(mode, fault), (Mode::PreOpened, Fault::None)] {
            let ledger = Arc::new(Ledger::new(8, mode.lossy()));
            let pair = FakePair::new(ledger.clone(), fault);
            let outcome = harness::one_way(pair, ledger, SMALL, 8, &timing(), 1).await;
            let mut batch = figures_of("msg256-c64", mode, measure, 1, outcome.map(Outcome::Rate));
            for f in &mut batch {
                f.run = 1;
            }
            figures.extend(batch);
        }
        let plan = Plan::new(true, Vec::new(), Vec::new(), Some(1), 1);
        let report = Report::new(&plan, figures.clone());
        (figures, report)
    }

    fn c64_target(report: &Report) -> &'static str {
        report
            .targets
            .iter()
            .find(|t| t.target.contains("c64: liquid ≥ 0.9× pre-opened"))
            .expect("target")
            .result
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mode_that_drops_one_message_in_10000_is_reported_failed() {
        let (figures, report) = measured(Mode::Liquid, Fault::DropOneIn(10_000)).await;
        let d = figures[0].delivery.expect("delivery");
        assert!(d.sent >= 10_000, "too few sends to drop one: {d:?}");
        assert_eq!(d.lost, d.sent / 10_000, "{d:?}");
        assert_eq!(d.duplicated, 0);
        assert!(figures[0].failed());
        assert!(!figures[1].failed());
        assert_eq!(c64_target(&report), "FAILED");
        let md = report.markdown();
        assert!(
            md.contains(&format!("**FAILED ({} lost) in run 1**", d.lost)),
            "{md}"
        );
        let json = serde_json::to_string(&report).expect("json");
        assert!(json.contains(r#""delivery_result":"FAILED ("#));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mode_that_duplicates_one_message_is_reported_failed() {
        let (figures, report) = measured(Mode::Liquid, Fault::DuplicateNth(500)).await;
        let d = figures[0].delivery.expect("delivery");
        assert_eq!((d.lost, d.duplicated), (0, 1), "{d:?}");
        assert_eq!(d.received, d.sent + 1);
        assert!(figures[0].failed());
        assert_eq!(c64_target(&report), "FAILED");
        assert!(
            report
                .markdown()
                .contains("**FAILED (1 duplicated) in run 1**")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_faultless_mode_is_reported_ok_and_a_lossy_one_lossy() {
        let (figures, report) = measured(Mode::Liquid, Fault::None).await;
        let d = figures[0].delivery.expect("delivery");
        assert_eq!((d.lost, d.duplicated, d.malformed), (0, 0, 0));
        assert_eq!(d.sent, d.received);
        assert_ne!(c64_target(&report), "FAILED");
        let (figures, _) = measured(Mode::OpenPerMessageLossy, Fault::DropOneIn(100)).await;
        let d = figures[0].delivery.expect("delivery");
        assert!(d.lost > 0 && !figures[0].failed(), "{d:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wrong_reply_fails_a_round_trip_measurement() {
        let ledger = Arc::new(Ledger::new(1, false));
        let pair = FakePair::new(ledger.clone(), Fault::WrongReplyNth(50));
        let latency = harness::round_trip(pair, ledger, SMALL, &timing(), 1)
            .await
            .expect("latency");
        assert_eq!(latency.delivery.malformed, 1);
        assert!(latency.delivery.failed());
        assert!(latency.note.expect("note").contains("1 failed sends"));
    }

    fn p50(mode: &str, value: f64) -> Figure {
        let mut f = Figure::new("rtt256-p50", mode, "tcp", 1, "µs");
        f.value = Some(value);
        f
    }

    #[test]
    fn the_round_trip_gate_wants_raw_tcp_well_below_single_stream() {
        let fast = [
            p50("raw-tcp", 35.0),
            p50("single-stream", 88.0),
            p50("liquid", 90.0),
        ];
        assert_eq!(round_trip_gate(&fast), Gate::Passed);
        let edge = [p50("raw-tcp", 70.0), p50("single-stream", 100.0)];
        assert_eq!(round_trip_gate(&edge), Gate::Passed);
        let floor = [p50("raw-tcp", 85.4), p50("single-stream", 87.8)];
        assert!(matches!(round_trip_gate(&floor), Gate::Failed(why) if why.contains("85.4 µs")));
        assert!(matches!(
            round_trip_gate(&[p50("single-stream", 87.8)]),
            Gate::NotEvaluated(_)
        ));
    }

    #[test]
    fn the_full_plan_fits_in_20_minutes_with_every_round_trip_repeated() {
        let plan = Plan::new(false, Vec::new(), Vec::new(), None, 1);
        assert!(plan.runs >= 5);
        let repeats: Duration = (1..=plan.runs)
            .flat_map(|run| plan.steps(run))
            .filter(|s| {
                matches!(
                    s,
                    Step::Mode {
                        scenario: "rtt256",
                        ..
                    }
                )
            })
            .map(|s| plan.planned(&s) * (GATE_ATTEMPTS - 1))
            .sum();
        let worst = plan.planned_total() + repeats;
        assert!(worst < Duration::from_secs(20 * 60), "{worst:?}");
        let quick = Plan::new(true, Vec::new(), Vec::new(), None, 1);
        assert_eq!(quick.runs, 1);
        // Planned durations are guesses, on the safe side (a quick run took 80 s
        // of the 97 s planned, before the priority scenario added 12 s to
        // both); the limit leaves room under the 2 minutes.
        assert!(
            quick.planned_total() < Duration::from_secs(115),
            "{:?}",
            quick.planned_total()
        );
    }

    #[test]
    fn the_priority_scenario_runs_liquid_quic_only_when_named() {
        let steps = |only: &str, modes: &[&str]| -> Vec<String> {
            let modes = modes.iter().map(|m| m.to_string()).collect();
            Plan::new(true, vec![only.into()], modes, None, 1)
                .steps(1)
                .iter()
                .map(|s| format!("{s:?}"))
                .collect()
        };
        assert_eq!(steps("priority", &[]), ["Priority(Liquid)"]);
        assert_eq!(steps("priority-bulk", &[]), ["Priority(Liquid)"]);
        assert_eq!(
            steps("priority", &["liquid", "liquid-quic"]),
            ["Priority(Liquid)", "Priority(LiquidQuic)"]
        );
        assert_eq!(
            steps("priority", &["liquid-quic", "pre-opened"]),
            ["Priority(LiquidQuic)"]
        );
        assert!(
            steps("msg256-c1", &[])
                .iter()
                .all(|s| !s.contains("Priority"))
        );
    }

    #[test]
    fn every_scenario_runs_each_mode_once_per_run_and_rss_scenarios_only_first() {
        let plan = Plan::new(false, Vec::new(), Vec::new(), None, 1);
        let names = |run| -> Vec<String> {
            plan.steps(run)
                .iter()
                .map(|s| match s {
                    Step::Mode { scenario, mode, .. } => format!("{scenario}/{}", mode.name()),
                    other => format!("{other:?}"),
                })
                .collect()
        };
        let first = names(1);
        assert!(first.contains(&"Memory".to_owned()) && first.contains(&"Shrink".to_owned()));
        assert!(!names(2).iter().any(|n| n == "Memory" || n == "Shrink"));
        assert!(first.contains(&"msg256-c64/open-per-message-lossy".to_owned()));
        assert!(!first.contains(&"rtt256/open-per-message-lossy".to_owned()));
        let two: Vec<&String> = first
            .iter()
            .filter(|n| n.starts_with("mib1-2conn/"))
            .collect();
        assert_eq!(two, ["mib1-2conn/liquid", "mib1-2conn/pre-opened"]);
        let mut unique = first.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), first.len());
    }
}
