//! The report: figures, ratios of liquid to the other modes, targets with
//! PASS/MISS, as markdown (`RESULTS.md`), JSON (`results.json`) and SVG charts.

use std::{
    fmt::Write as _,
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

use super::{
    BenchError, Context, chart,
    scenarios::{Plan, SCENARIOS, ScenarioInfo, info},
};

/// One measured figure (or the error that prevented it).
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// Scenario id.
    pub scenario: String,
    /// Mode name.
    pub mode: String,
    /// Transport name.
    pub transport: String,
    /// Sending tasks (connections for `memory-idle`, hosts for `scale-connect`).
    pub concurrency: usize,
    /// The figure; `null` when the mode failed.
    pub value: Option<f64>,
    /// Unit of `value`.
    pub unit: String,
    /// Why there is no figure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Anything worth knowing about the figure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Figure {
    /// A figure with no value yet.
    pub fn new(
        scenario: &str,
        mode: &str,
        transport: &str,
        concurrency: usize,
        unit: &str,
    ) -> Self {
        Self {
            scenario: scenario.into(),
            mode: mode.into(),
            transport: transport.into(),
            concurrency,
            value: None,
            unit: unit.into(),
            error: None,
            note: None,
        }
    }
}

/// One figure per measurement, each the median of its values over `runs` (in
/// the order of the first run). Ratios and targets are then taken between
/// medians; the note lists every run's value.
pub fn median_of(runs: Vec<Vec<Figure>>) -> Vec<Figure> {
    let count = runs.len();
    let mut runs = runs.into_iter();
    let Some(first) = runs.next() else {
        return Vec::new();
    };
    let rest: Vec<Vec<Figure>> = runs.collect();
    first
        .into_iter()
        .map(|mut figure| {
            if count < 2 {
                return figure;
            }
            let same = |f: &&Figure| {
                f.scenario == figure.scenario
                    && f.mode == figure.mode
                    && f.transport == figure.transport
                    && f.concurrency == figure.concurrency
            };
            let mut values: Vec<f64> = std::iter::once(&figure)
                .chain(rest.iter().filter_map(|run| run.iter().find(same)))
                .filter_map(|f| f.value)
                .collect();
            if values.is_empty() {
                return figure;
            }
            let shown: Vec<String> = values
                .iter()
                .map(|v| format_value(*v, &figure.unit))
                .collect();
            values.sort_by(f64::total_cmp);
            let mid = values.len() / 2;
            let median = if values.len() % 2 == 1 {
                values[mid]
            } else {
                (values[mid - 1] + values[mid]) / 2.0
            };
            let runs_note = if values.len() == 1 {
                "first run only".to_owned()
            } else {
                format!(
                    "median of {} of {count} runs: {}",
                    values.len(),
                    shown.join(" / ")
                )
            };
            figure.value = Some(median);
            figure.error = None;
            figure.note = Some(match figure.note.take() {
                Some(note) => format!("{note}; {runs_note}"),
                None => runs_note,
            });
            figure
        })
        .collect()
}

/// `mode` (liquid or liquid-quic) ÷ `versus` in one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// Scenario of the liquid figure.
    pub scenario: String,
    /// The liquid mode.
    pub mode: String,
    /// The mode divided by.
    pub versus: String,
    /// Scenario of the `versus` figure (differs for `mib1-2conn`).
    pub versus_scenario: String,
    /// Transport of the liquid figure.
    pub transport: String,
    /// Concurrency of the liquid figure.
    pub concurrency: usize,
    /// liquid ÷ versus.
    pub value: f64,
    /// Always `"ratio"`.
    pub unit: &'static str,
}

/// A target the comparison is judged against.
#[derive(Debug, Clone, Copy)]
struct TargetSpec {
    label: &'static str,
    scenario: &'static str,
    mode: &'static str,
    /// (scenario, mode) divided by, or `None` for an absolute figure.
    versus: Option<(&'static str, &'static str)>,
    at_least: bool,
    threshold: f64,
}

const TARGETS: &[TargetSpec] = &[
    TargetSpec {
        label: "256 B c1: liquid ≥ 15× open-per-message",
        scenario: "msg256-c1",
        mode: "liquid",
        versus: Some(("msg256-c1", "open-per-message")),
        at_least: true,
        threshold: 15.0,
    },
    TargetSpec {
        label: "256 B c1: liquid ≥ 20× request-response",
        scenario: "msg256-c1",
        mode: "liquid",
        versus: Some(("msg256-c1", "request-response")),
        at_least: true,
        threshold: 20.0,
    },
    TargetSpec {
        label: "256 B c1: liquid ≥ 0.85× single-stream",
        scenario: "msg256-c1",
        mode: "liquid",
        versus: Some(("msg256-c1", "single-stream")),
        at_least: true,
        threshold: 0.85,
    },
    TargetSpec {
        label: "256 B c64: liquid ≥ 3× single-stream",
        scenario: "msg256-c64",
        mode: "liquid",
        versus: Some(("msg256-c64", "single-stream")),
        at_least: true,
        threshold: 3.0,
    },
    TargetSpec {
        label: "256 B c64: liquid ≥ 0.8× pre-opened",
        scenario: "msg256-c64",
        mode: "liquid",
        versus: Some(("msg256-c64", "pre-opened")),
        at_least: true,
        threshold: 0.8,
    },
    TargetSpec {
        label: "256 B c64 QUIC: liquid-quic ≥ 0.8× pre-opened-quic",
        scenario: "msg256-c64",
        mode: "liquid-quic",
        versus: Some(("msg256-c64", "pre-opened-quic")),
        at_least: true,
        threshold: 0.8,
    },
    TargetSpec {
        label: "1 MiB, one connection: liquid ≥ 0.9× single-stream",
        scenario: "mib1-1conn",
        mode: "liquid",
        versus: Some(("mib1-1conn", "single-stream")),
        at_least: true,
        threshold: 0.9,
    },
    TargetSpec {
        label: "1 MiB, two connections: liquid ≥ 1.5× single-stream (one connection)",
        scenario: "mib1-2conn",
        mode: "liquid",
        versus: Some(("mib1-1conn", "single-stream")),
        at_least: true,
        threshold: 1.5,
    },
    TargetSpec {
        label: "Round trip p50: liquid ≤ 1.2× single-stream",
        scenario: "rtt256-p50",
        mode: "liquid",
        versus: Some(("rtt256-p50", "single-stream")),
        at_least: false,
        threshold: 1.2,
    },
    TargetSpec {
        label: "Round trip p99: liquid ≤ 1.2× single-stream",
        scenario: "rtt256-p99",
        mode: "liquid",
        versus: Some(("rtt256-p99", "single-stream")),
        at_least: false,
        threshold: 1.2,
    },
    TargetSpec {
        label: "Memory: liquid ≤ 48 KiB per idle connection end",
        scenario: "memory-idle",
        mode: "liquid",
        versus: None,
        at_least: false,
        threshold: 48.0,
    },
];

/// A target and how the run did against it.
#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    /// What is required.
    pub target: String,
    /// The ratio (or absolute figure) measured; `null` if a figure is missing.
    pub measured: Option<f64>,
    /// The figures behind it.
    pub detail: String,
    /// `"PASS"`, `"MISS"` (also when a mode failed), or `"NOT RUN"` when a scenario
    /// was left out with `--only`.
    pub result: &'static str,
}

/// Metadata of the run.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// UTC date and time of the run.
    pub date: String,
    /// Available parallelism (`nproc`).
    pub nproc: usize,
    /// Whether it was a `--quick` run.
    pub quick: bool,
    /// Sizes and durations.
    pub plan: String,
    /// How many times everything ran; each figure is the median of its runs.
    pub runs: u32,
}

/// Everything the run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Metadata.
    pub run: RunInfo,
    /// Every figure.
    pub figures: Vec<Figure>,
    /// liquid ÷ every other mode, per scenario.
    pub ratios: Vec<Ratio>,
    /// The targets.
    pub targets: Vec<TargetResult>,
}

impl Report {
    /// Computes ratios and targets of `figures`.
    pub fn new(plan: &Plan, figures: Vec<Figure>, runs: u32) -> Self {
        let ratios = ratios(&figures);
        let targets = TARGETS.iter().map(|t| judge(t, &figures)).collect();
        Self {
            run: RunInfo {
                date: utc_now(),
                nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
                quick: plan.quick,
                plan: plan.summary(),
                runs,
            },
            figures,
            ratios,
            targets,
        }
    }

    /// The markdown report (also what is printed).
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let run = &self.run;
        let _ = writeln!(md, "# liquid-p2p comparison\n");
        let _ = writeln!(
            md,
            "- Date: {} · nproc: {} · **{}**",
            run.date,
            run.nproc,
            if run.quick {
                "quick run (`--quick`)"
            } else {
                "full run"
            }
        );
        let _ = writeln!(md, "- {}", run.plan);
        if run.runs > 1 {
            let _ = writeln!(
                md,
                "- Every figure is the median of {} runs (`--runs {}`); ratios and targets are taken between medians, and each figure's note lists its runs. The RSS scenarios (`memory-idle`, `pool-shrink`) run in the first run only: later runs would reuse memory freed by earlier scenarios.",
                run.runs, run.runs
            );
        }
        let _ = writeln!(
            md,
            "- Produced by `cargo run --release -p liquid-p2p-benches --bin compare{}`: \
             both peers in one process over loopback, rates counted by the receiver.\n",
            if run.quick { " -- --quick" } else { "" }
        );
        md.push_str(MODES);
        let _ = writeln!(md, "\n## Figures\n");
        let _ = writeln!(
            md,
            "Ratio column: `liquid` ÷ the row's mode (`liquid-quic` ÷ it for QUIC rows); \
             above 1 means liquid is faster for rates, slower for latencies and memory.\n"
        );
        let _ = writeln!(
            md,
            "| Scenario | Mode | Transport | Concurrency | Value | Unit | liquid ÷ mode | Notes |"
        );
        let _ = writeln!(md, "|---|---|---|---:|---:|---|---:|---|");
        for scenario in SCENARIOS {
            for f in self.figures.iter().filter(|f| f.scenario == scenario.id) {
                let value = match (&f.value, &f.error) {
                    (Some(v), _) => format_value(*v, &f.unit),
                    (None, Some(e)) => format!("**error**: {}", cell(e)),
                    (None, None) => "—".into(),
                };
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    scenario.id,
                    f.mode,
                    f.transport,
                    f.concurrency,
                    value,
                    f.unit,
                    self.ratio_cell(f),
                    cell(f.note.as_deref().unwrap_or("")),
                );
            }
        }
        let _ = writeln!(md, "\n## Targets\n");
        let _ = writeln!(md, "| Target | Measured | Figures | Result |");
        let _ = writeln!(md, "|---|---:|---|---|");
        for t in &self.targets {
            let measured = t.measured.map_or("—".into(), |v| format!("{v:.2}"));
            let _ = writeln!(
                md,
                "| {} | {} | {} | **{}** |",
                t.target,
                measured,
                cell(&t.detail),
                t.result
            );
        }
        let passed = self.targets.iter().filter(|t| t.result == "PASS").count();
        let not_run = self
            .targets
            .iter()
            .filter(|t| t.result == "NOT RUN")
            .count();
        let _ = write!(md, "\n{passed} of {} targets pass", self.targets.len());
        let _ = if not_run > 0 {
            writeln!(
                md,
                " ({not_run} not run: scenarios left out with `--only`)."
            )
        } else {
            writeln!(md, ".")
        };
        let _ = writeln!(md, "\n## Charts\n");
        for scenario in SCENARIOS {
            if self.figures.iter().any(|f| f.scenario == scenario.id) {
                let _ = writeln!(md, "- [{}](charts/{}.svg)", scenario.title, scenario.id);
            }
        }
        md
    }

    fn ratio_cell(&self, f: &Figure) -> String {
        let baseline = info(&f.scenario).and_then(|s| s.baseline);
        if is_liquid(&f.mode) {
            // Only a liquid figure compared with another scenario has its own cell
            // (the main baselines; results.json has every ratio).
            let Some(base) = baseline else {
                return String::new();
            };
            return self
                .ratios
                .iter()
                .filter(|r| r.scenario == f.scenario && r.mode == f.mode)
                .filter(|r| ["liquid", "single-stream", "pre-opened"].contains(&r.versus.as_str()))
                .map(|r| format!("÷ {} ({base}): {:.2}×", r.versus, r.value))
                .collect::<Vec<_>>()
                .join("; ");
        }
        self.ratios
            .iter()
            .find(|r| {
                r.scenario == f.scenario && r.versus_scenario == f.scenario && r.versus == f.mode
            })
            .map_or(String::new(), |r| format!("{:.2}×", r.value))
    }

    /// Writes `RESULTS.md`, `results.json` and `charts/*.svg` under `dir`.
    pub fn write(&self, dir: &Path) -> Result<Vec<String>, BenchError> {
        let charts = dir.join("charts");
        std::fs::create_dir_all(&charts).ctx("create charts directory")?;
        let mut problems = Vec::new();
        for scenario in SCENARIOS {
            let bars = self.bars(scenario);
            if bars.is_empty() {
                continue;
            }
            let path = charts.join(format!("{}.svg", scenario.id));
            let title = format!("{} ({})", scenario.title, scenario.unit);
            if let Err(e) = chart::bar_chart(&path, &title, scenario.unit, &bars) {
                problems.push(format!("chart {}: {e}", scenario.id));
            }
        }
        // The hand-written analysis of the figures, kept beside them.
        let mut md = self.markdown();
        if let Ok(analysis) = std::fs::read_to_string(dir.join("ANALYSIS.md")) {
            md.push('\n');
            md.push_str(&analysis);
        }
        std::fs::write(dir.join("RESULTS.md"), md).ctx("write RESULTS.md")?;
        let json = serde_json::to_string_pretty(self).ctx("serialize results")?;
        std::fs::write(dir.join("results.json"), json + "\n").ctx("write results.json")?;
        Ok(problems)
    }

    /// Bars of one scenario's chart: its figures, plus for a scenario compared with
    /// another the main baselines of that one.
    fn bars(&self, scenario: &ScenarioInfo) -> Vec<(String, Option<f64>)> {
        let mut bars: Vec<(String, Option<f64>)> = self
            .figures
            .iter()
            .filter(|f| f.scenario == scenario.id)
            .map(|f| match &f.note {
                Some(n) if n.contains("connections per peer") => (
                    format!("{} ({})", f.mode, n.replace(" per peer", "")),
                    f.value,
                ),
                Some(n) if f.scenario.starts_with("scale") => {
                    let hosts = n.split(',').next().unwrap_or_default();
                    (format!("{} ({hosts})", f.mode), f.value)
                }
                _ => (f.mode.clone(), f.value),
            })
            .collect();
        if let Some(base) = scenario.baseline
            && !bars.is_empty()
        {
            for mode in ["liquid", "single-stream", "pre-opened"] {
                if let Some(f) = self.figure(base, mode) {
                    bars.push((format!("{mode} (1 connection)"), f.value));
                }
            }
        }
        bars
    }

    fn figure(&self, scenario: &str, mode: &str) -> Option<&Figure> {
        find(&self.figures, scenario, mode)
    }
}

/// Short description of the modes, at the top of the report.
const MODES: &str = "\
Modes (TCP = TCP + noise + yamux with `nodelay`, libp2p defaults otherwise):

- `liquid`: `Host::send` of liquid-p2p over its pooled `/liquid/msg/1.0.0` streams; \
the receiver counts messages from its `Inbox`.
- `open-per-message`: libp2p-stream, a new substream per message, 1-byte acknowledgement \
(libp2p-stream drops inbound streams when its accept channel is full).
- `request-response`: libp2p request-response, one request per message, empty response \
(length-prefixed codec).
- `single-stream`: one libp2p-stream stream shared by all senders behind a tokio mutex, \
length-prefixed frames.
- `pre-opened`: one libp2p-stream stream per sender, opened up front (the transport's ceiling).
- `raw-tcp`: plain tokio TCP, one connection per sender, length-prefixed, no encryption.
- `liquid-quic`, `pre-opened-quic`: the same over QUIC (`/ip4/127.0.0.1/udp/0/quic-v1`; \
liquid's host sizes QUIC windows itself, the plain swarm uses libp2p's QUIC defaults).
- Round trips: the receiver sends the 256 B payload back (liquid: with `send` on a protocol \
registered on the sender).
- Memory: RSS growth (`/proc/self/statm`) while N more connections are opened between two \
peers and left idle, divided by the 2 N connection ends; liquid hosts with default pools \
(10 streams opened by each end, each read by a task on the other) against two plain \
libp2p swarms whose behaviour opens the same 10 streams on each connection from each end \
and holds both ends idle (`plain-libp2p-streams`, the fair baseline), and two with no \
behaviour and no streams (`plain-libp2p`).
- Scale: liquid hosts in one process, host i dials every host after it; time from the first \
dial until every host has `PeerConnected` for every other (protocol exchange done), then \
every host sends 256 B messages to all its peers in turn from 4 tasks.
";

fn is_liquid(mode: &str) -> bool {
    mode == "liquid" || mode == "liquid-quic"
}

fn is_quic(f: &Figure) -> bool {
    f.transport == "quic"
}

fn find<'a>(figures: &'a [Figure], scenario: &str, mode: &str) -> Option<&'a Figure> {
    figures
        .iter()
        .find(|f| f.scenario == scenario && f.mode == mode)
}

/// `liquid` ÷ every TCP (and plain) mode, `liquid-quic` ÷ every other QUIC mode.
fn ratios(figures: &[Figure]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for scenario in SCENARIOS {
        let base = scenario.baseline.unwrap_or(scenario.id);
        for liquid in figures
            .iter()
            .filter(|f| f.scenario == scenario.id && is_liquid(&f.mode))
        {
            let Some(lv) = liquid.value else { continue };
            for other in figures.iter().filter(|o| o.scenario == base) {
                let same = other.scenario == liquid.scenario && other.mode == liquid.mode;
                let comparable = if is_quic(liquid) {
                    is_quic(other)
                } else {
                    !is_quic(other)
                };
                let Some(ov) = other.value.filter(|v| *v > 0.0) else {
                    continue;
                };
                if same || !comparable || (is_liquid(&other.mode) && base == scenario.id) {
                    continue;
                }
                out.push(Ratio {
                    scenario: liquid.scenario.clone(),
                    mode: liquid.mode.clone(),
                    versus: other.mode.clone(),
                    versus_scenario: other.scenario.clone(),
                    transport: liquid.transport.clone(),
                    concurrency: liquid.concurrency,
                    value: lv / ov,
                    unit: "ratio",
                });
            }
        }
    }
    out
}

fn judge(t: &TargetSpec, figures: &[Figure]) -> TargetResult {
    let describe = |f: Option<&Figure>, scenario: &str, mode: &str| match f {
        Some(Figure {
            value: Some(v),
            unit,
            ..
        }) => format!("{mode} {}", format_value(*v, unit) + " " + unit),
        Some(Figure { error: Some(e), .. }) => format!("{mode} failed ({e})"),
        _ => format!("{mode} not measured in {scenario}"),
    };
    let liquid = find(figures, t.scenario, t.mode);
    let (measured, detail) = match t.versus {
        None => (
            liquid.and_then(|f| f.value),
            describe(liquid, t.scenario, t.mode),
        ),
        Some((scenario, mode)) => {
            let other = find(figures, scenario, mode);
            let ratio = match (liquid.and_then(|f| f.value), other.and_then(|f| f.value)) {
                (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                _ => None,
            };
            (
                ratio,
                format!(
                    "{} vs {}",
                    describe(liquid, t.scenario, t.mode),
                    describe(other, scenario, mode)
                ),
            )
        }
    };
    // A failed mode counts as a miss; a scenario left out with `--only` does not.
    let ran = find(figures, t.scenario, t.mode).is_some()
        && t.versus
            .is_none_or(|(scenario, mode)| find(figures, scenario, mode).is_some());
    let pass = measured.is_some_and(|m| {
        if t.at_least {
            m >= t.threshold
        } else {
            m <= t.threshold
        }
    });
    TargetResult {
        target: t.label.into(),
        measured,
        detail,
        result: if pass {
            "PASS"
        } else if !ran {
            "NOT RUN"
        } else {
            "MISS"
        },
    }
}

/// A figure formatted for its unit.
pub fn format_value(v: f64, unit: &str) -> String {
    match unit {
        "msg/s" => thousands(v.round() as u64),
        "s" => format!("{v:.2}"),
        _ => format!("{v:.1}"),
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Text safe inside a markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The current UTC date and time, `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fig(scenario: &str, mode: &str, transport: &str, value: Option<f64>) -> Figure {
        let mut f = Figure::new(scenario, mode, transport, 1, "msg/s");
        f.value = value;
        if value.is_none() {
            f.error = Some("boom".into());
        }
        f
    }

    #[test]
    fn ratios_pair_liquid_with_its_transport() {
        let figures = vec![
            fig("msg256-c64", "liquid", "tcp+noise+yamux", Some(300.0)),
            fig(
                "msg256-c64",
                "single-stream",
                "tcp+noise+yamux",
                Some(100.0),
            ),
            fig("msg256-c64", "liquid-quic", "quic", Some(80.0)),
            fig("msg256-c64", "pre-opened-quic", "quic", Some(100.0)),
            fig("msg256-c64", "request-response", "tcp+noise+yamux", None),
        ];
        let r = ratios(&figures);
        assert_eq!(r.len(), 2);
        assert!(
            r.iter()
                .any(|r| r.mode == "liquid" && r.versus == "single-stream" && r.value == 3.0)
        );
        assert!(r.iter().any(|r| r.mode == "liquid-quic" && r.value == 0.8));
        let target = judge(&TARGETS[3], &figures);
        assert_eq!(target.result, "PASS");
        assert_eq!(judge(&TARGETS[0], &figures).result, "NOT RUN");
        let failed = vec![
            fig("msg256-c1", "liquid", "tcp+noise+yamux", Some(300.0)),
            fig("msg256-c1", "open-per-message", "tcp+noise+yamux", None),
        ];
        let judged = judge(&TARGETS[0], &failed);
        assert_eq!(judged.result, "MISS");
        assert!(judged.detail.contains("failed (boom)"));
    }

    #[test]
    fn two_connection_liquid_is_compared_with_one_connection_modes() {
        let figures = vec![
            fig("mib1-1conn", "liquid", "tcp+noise+yamux", Some(100.0)),
            fig(
                "mib1-1conn",
                "single-stream",
                "tcp+noise+yamux",
                Some(100.0),
            ),
            fig("mib1-2conn", "liquid", "tcp+noise+yamux", Some(160.0)),
        ];
        let r = ratios(&figures);
        assert!(
            r.iter()
                .any(|r| r.scenario == "mib1-2conn" && r.versus == "liquid" && r.value == 1.6)
        );
        assert_eq!(judge(&TARGETS[7], &figures).result, "PASS");
    }

    #[test]
    fn medians_of_runs_take_the_middle_value_and_list_every_run() {
        let run = |v: Option<f64>| vec![fig("msg256-c1", "liquid", "tcp+noise+yamux", v)];
        let merged = median_of(vec![
            run(Some(3.0)),
            run(None),
            run(Some(1.0)),
            run(Some(2.0)),
        ]);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].value, Some(2.0));
        assert!(
            merged[0]
                .note
                .as_deref()
                .unwrap_or("")
                .contains("median of 3 of 4 runs")
        );
        let single = median_of(vec![run(Some(5.0))]);
        assert_eq!(
            (single[0].value, single[0].note.is_none()),
            (Some(5.0), true)
        );
    }

    #[test]
    fn formatting() {
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(12), "12");
        assert_eq!(cell("a|b"), "a\\|b");
        assert!(utc_now().ends_with("UTC"));
    }
}
