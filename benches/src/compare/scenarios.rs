//! What is measured, in which order, with which durations and deadlines.

use std::{sync::Arc, time::Duration};

use super::{
    BenchError, Context, Mode, Transport,
    harness::{self, Latency, Pair, Rate, Timing},
    liquid::LiquidPair,
    memory,
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

/// Sizes and durations of a run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Short durations and fewer connections and hosts.
    pub quick: bool,
    /// Durations and deadlines of each measurement.
    pub timing: Timing,
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
    /// Whether to run the scenarios that read the process's RSS. Only a fresh
    /// process measures them right (later runs reuse memory freed by earlier
    /// scenarios), so repeated runs skip them.
    pub rss_scenarios: bool,
}

impl Plan {
    /// The plan for `--quick` (under 2 minutes) or the full run (under 15).
    pub fn new(quick: bool, only: Vec<String>, modes: Vec<String>) -> Self {
        let timing = if quick {
            Timing {
                warmup: Duration::from_millis(500),
                measure: Duration::from_millis(1500),
                op_timeout: Duration::from_secs(5),
                setup: Duration::from_secs(20),
                teardown: Duration::from_secs(8),
            }
        } else {
            Timing {
                warmup: Duration::from_secs(2),
                measure: Duration::from_secs(8),
                op_timeout: Duration::from_secs(10),
                setup: Duration::from_secs(30),
                teardown: Duration::from_secs(10),
            }
        };
        Self {
            quick,
            timing,
            memory_connections: if quick { 50 } else { 200 },
            scale_hosts: if quick { 16 } else { 64 },
            scale_connect_limit: Duration::from_secs(if quick { 30 } else { 90 }),
            only,
            modes,
            rss_scenarios: true,
        }
    }

    /// The same plan without the RSS scenarios, for runs after the first.
    pub fn repeat(&self) -> Self {
        Self {
            rss_scenarios: false,
            ..self.clone()
        }
    }

    /// Whether scenario `id` is to run.
    pub fn wants(&self, id: &str) -> bool {
        if !self.rss_scenarios && (id == "memory-idle" || id == "pool-shrink") {
            return false;
        }
        self.only.is_empty() || self.only.iter().any(|p| id.starts_with(p.as_str()))
    }

    /// The per-mode scenarios' modes to run.
    fn modes(&self) -> impl Iterator<Item = Mode> + '_ {
        Mode::ALL
            .into_iter()
            .filter(|m| self.modes.is_empty() || self.modes.iter().any(|n| n == m.name()))
    }

    /// One line describing the sizes, for the report.
    pub fn summary(&self) -> String {
        format!(
            "{} run: {:?} warm-up + {:?} measured per mode; memory over {} connections; \
             scale with {} hosts ({} senders each)",
            if self.quick { "quick" } else { "full" },
            self.timing.warmup,
            self.timing.measure,
            self.memory_connections,
            self.scale_hosts,
            scale::WORKERS_PER_HOST,
        )
    }
}

/// What one run measures.
#[derive(Debug, Clone, Copy)]
enum Measure {
    OneWay { payload: usize, concurrency: usize },
    RoundTrip { payload: usize },
}

enum Outcome {
    Rate(Rate),
    Latency(Latency),
}

/// Runs every wanted scenario; `progress` sees each figure as it is made.
pub async fn run_all(plan: &Plan, mut progress: impl FnMut(&Figure)) -> Vec<Figure> {
    let mut figures = Vec::new();
    let mut push = |figure: Figure| {
        progress(&figure);
        figures.push(figure);
    };
    // First, while the heap holds nothing freed by the throughput runs.
    if plan.wants("memory-idle") {
        for figure in run_memory(plan).await {
            push(figure);
        }
    }
    for (id, concurrency) in [("msg256-c1", 1), ("msg256-c8", 8), ("msg256-c64", 64)] {
        if !plan.wants(id) {
            continue;
        }
        for mode in plan.modes() {
            let measure = Measure::OneWay {
                payload: SMALL,
                concurrency,
            };
            for figure in run_mode(id, mode, measure, 1, plan).await {
                push(figure);
            }
        }
    }
    let bulk = Measure::OneWay {
        payload: LARGE,
        concurrency: LARGE_CONCURRENCY,
    };
    if plan.wants("mib1-1conn") {
        for mode in plan.modes() {
            for figure in run_mode("mib1-1conn", mode, bulk, 1, plan).await {
                push(figure);
            }
        }
    }
    if plan.wants("mib1-2conn") && plan.modes().any(|m| m == Mode::Liquid) {
        for figure in run_mode("mib1-2conn", Mode::Liquid, bulk, 2, plan).await {
            push(figure);
        }
    }
    if plan.wants("rtt256") {
        for mode in plan.modes() {
            let measure = Measure::RoundTrip { payload: SMALL };
            for figure in run_mode("rtt256", mode, measure, 1, plan).await {
                push(figure);
            }
        }
    }
    if plan.wants("pool-shrink") {
        for figure in run_shrink(plan).await {
            push(figure);
        }
    }
    if plan.wants("scale") {
        for figure in run_scale(plan).await {
            push(figure);
        }
    }
    figures
}

/// Sets up `mode`, measures, tears down; every step bounded.
async fn run_mode(
    scenario: &str,
    mode: Mode,
    measure: Measure,
    connections: usize,
    plan: &Plan,
) -> Vec<Figure> {
    let timing = plan.timing;
    let body = async {
        let (workers, echo, payload) = match measure {
            Measure::OneWay {
                payload,
                concurrency,
            } => (concurrency, false, payload),
            Measure::RoundTrip { payload } => (1, true, payload),
        };
        let pair = tokio::time::timeout(
            timing.setup,
            setup(mode, workers, connections, echo, &timing),
        )
        .await
        .ctx("setup timed out")??;
        let payload = Arc::new(vec![0x5a; payload]);
        let outcome = match measure {
            Measure::OneWay { concurrency, .. } => {
                harness::one_way(pair.clone(), payload, concurrency, &timing)
                    .await
                    .map(Outcome::Rate)
            }
            Measure::RoundTrip { .. } => harness::round_trip(pair.clone(), payload, &timing)
                .await
                .map(Outcome::Latency),
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
            let (value, note) = match outcome.and_then(rate) {
                Ok(r) => (
                    Ok(if large { r.mib_per_s } else { r.messages_per_s }),
                    r.note,
                ),
                Err(e) => (Err(e), None),
            };
            let mut f = figure(scenario, concurrency, unit, value);
            f.note = join_notes(f.note, note);
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

fn join_notes(a: Option<String>, b: Option<String>) -> Option<String> {
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
    timing: &Timing,
) -> Result<Arc<dyn Pair>, BenchError> {
    let limit = timing.setup;
    Ok(match mode {
        Mode::Liquid => {
            Arc::new(LiquidPair::setup(Transport::Tcp, connections, echo, limit).await?)
        }
        Mode::LiquidQuic => {
            Arc::new(LiquidPair::setup(Transport::Quic, connections, echo, limit).await?)
        }
        Mode::OpenPerMessage => Arc::new(
            StreamPair::setup(Kind::OpenPerMessage, Transport::Tcp, workers, echo, limit).await?,
        ),
        Mode::SingleStream => {
            Arc::new(StreamPair::setup(Kind::Single, Transport::Tcp, workers, echo, limit).await?)
        }
        Mode::PreOpened => Arc::new(
            StreamPair::setup(Kind::PreOpened, Transport::Tcp, workers, echo, limit).await?,
        ),
        Mode::PreOpenedQuic => Arc::new(
            StreamPair::setup(Kind::PreOpened, Transport::Quic, workers, echo, limit).await?,
        ),
        Mode::RequestResponse => {
            Arc::new(ReqRespPair::setup(Transport::Tcp, echo, timing.op_timeout, limit).await?)
        }
        Mode::RawTcp => Arc::new(RawTcpPair::setup(workers, echo, limit).await?),
    })
}

async fn run_shrink(plan: &Plan) -> Vec<Figure> {
    let shrink_after = Duration::from_secs(if plan.quick { 2 } else { 5 });
    let burst = plan.timing.measure;
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
    // Three measurements, each well within `limit` unless something is stuck.
    let deadline = limit * 3 + Duration::from_secs(5);
    let measured = tokio::time::timeout(deadline, memory::idle_memory(n, limit)).await;
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
                plain_streams: Err(e),
            }
        }
    };
    let streams = liquid_p2p::PoolConfig::default().init_size;
    [
        ("liquid", measured.liquid, true),
        ("plain-libp2p-streams", measured.plain_streams, true),
        ("plain-libp2p", measured.plain, false),
    ]
    .into_iter()
    .map(|(mode, result, with_streams)| {
        let mut f = Figure::new("memory-idle", mode, Transport::Tcp.name(), n, "KiB");
        match result {
            Ok(idle) => {
                f.value = Some(idle.kib_per_end);
                let mut note = format!(
                    "RSS growth over {} idle connections / {} ends",
                    idle.connections,
                    2 * idle.connections
                );
                if with_streams {
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

async fn run_scale(plan: &Plan) -> Vec<Figure> {
    let n = plan.scale_hosts;
    let timing = plan.timing;
    let deadline = plan.scale_connect_limit
        + timing.setup
        + timing.warmup
        + timing.measure
        + timing.op_timeout
        + timing.teardown;
    let result = tokio::time::timeout(
        deadline,
        scale::run(n, SMALL, &timing, plan.scale_connect_limit),
    )
    .await
    .unwrap_or_else(|_| {
        let e = BenchError::new(format!("scale scenario exceeded {deadline:?}"));
        scale::Scale {
            hosts: n,
            connect_s: Err(e.clone()),
            messages_per_s: Err(e),
            note: None,
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
    vec![connect, rate]
}
