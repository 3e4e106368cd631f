//! The report: every run's figures, their medians and ranges, the delivery
//! accounting of every measurement, ratios of liquid to the other modes taken
//! within each run, and the targets judged on the noise band ([`pairing`]), as
//! markdown (`RESULTS.md`), JSON (`results.json`) and SVG charts.

use std::{
    fmt::Write as _,
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

use super::{
    BenchError, Context, Mode,
    chart::{self, Bar},
    ledger::Delivery,
    pairing::{self, Spread, per_run_ratios},
    priority,
    scenarios::{GATE_ATTEMPTS, GATE_SHARE, Plan, SCENARIOS, ScenarioInfo, info},
};

/// One measured figure of one run (or the error that prevented it).
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
    /// The run it belongs to, from 1.
    pub run: u32,
    /// Its place in the run's order of measurements, from 0.
    pub order: usize,
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
    /// What became of the messages of the measurement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Delivery>,
    /// `ok`, `lossy (…)` or `FAILED (…)`: the delivery's verdict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_result: Option<String>,
    /// Why the figure counts in no ratio although it was measured (a round-trip
    /// run that failed the gate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excluded: Option<String>,
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
            run: 0,
            order: 0,
            value: None,
            unit: unit.into(),
            error: None,
            note: None,
            delivery: None,
            delivery_result: None,
            excluded: None,
        }
    }

    /// Whether its messages were lost (in a lossless mode), duplicated or garbled.
    pub fn failed(&self) -> bool {
        self.delivery.is_some_and(|d| d.failed())
    }

    /// The value, if it counts: measured, accounted for, not excluded.
    pub fn counted(&self) -> Option<f64> {
        self.value
            .filter(|_| !self.failed() && self.excluded.is_none())
    }

    /// The value as shown in a list of runs, with why it does not count.
    fn shown(&self) -> String {
        let mut text = match self.value {
            Some(v) => format_value(v, &self.unit),
            None => "error".into(),
        };
        if self.failed() {
            text.push_str(" FAILED");
        } else if self.excluded.is_some() {
            text.push_str(" (not counted)");
        }
        text
    }
}

/// One scenario and mode over all runs.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Scenario id.
    pub scenario: String,
    /// Mode name.
    pub mode: String,
    /// Transport name.
    pub transport: String,
    /// As in [`Figure::concurrency`].
    pub concurrency: usize,
    /// Unit of the values.
    pub unit: String,
    /// The value of each run (`null` where it failed or did not run).
    pub per_run: Vec<Option<f64>>,
    /// Median and range of the runs that count.
    pub spread: Option<Spread>,
    /// Delivery totals over all runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Delivery>,
    /// Runs whose delivery failed.
    pub failed_runs: Vec<u32>,
    /// `ok`, `lossy (…)` or `FAILED in run … (…)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_result: Option<String>,
}

/// `mode` (liquid or liquid-quic) ÷ `versus`, run by run.
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
    /// liquid ÷ versus in each run (`null` where either does not count).
    pub per_run: Vec<Option<f64>>,
    /// Median and range of the per-run ratios.
    pub spread: Option<Spread>,
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
        label: "256 B c1: liquid ≥ 0.95× single-stream",
        scenario: "msg256-c1",
        mode: "liquid",
        versus: Some(("msg256-c1", "single-stream")),
        at_least: true,
        threshold: 0.95,
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
        label: "256 B c64: liquid ≥ 0.9× pre-opened",
        scenario: "msg256-c64",
        mode: "liquid",
        versus: Some(("msg256-c64", "pre-opened")),
        at_least: true,
        threshold: 0.9,
    },
    TargetSpec {
        label: "256 B c64: liquid ≥ 1.2× pre-opened (small frames of concurrent senders batched)",
        scenario: "msg256-c64",
        mode: "liquid",
        versus: Some(("msg256-c64", "pre-opened")),
        at_least: true,
        threshold: 1.2,
    },
    TargetSpec {
        label: "256 B c64 QUIC: liquid-quic ≥ 0.9× pre-opened-quic",
        scenario: "msg256-c64",
        mode: "liquid-quic",
        versus: Some(("msg256-c64", "pre-opened-quic")),
        at_least: true,
        threshold: 0.9,
    },
    TargetSpec {
        label: "1 MiB, one connection: liquid ≥ 0.95× single-stream",
        scenario: "mib1-1conn",
        mode: "liquid",
        versus: Some(("mib1-1conn", "single-stream")),
        at_least: true,
        threshold: 0.95,
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
        label: "Round trip p50: liquid ≤ 1.1× single-stream",
        scenario: "rtt256-p50",
        mode: "liquid",
        versus: Some(("rtt256-p50", "single-stream")),
        at_least: false,
        threshold: 1.1,
    },
    TargetSpec {
        label: "Round trip p99: liquid ≤ 1.1× single-stream",
        scenario: "rtt256-p99",
        mode: "liquid",
        versus: Some(("rtt256-p99", "single-stream")),
        at_least: false,
        threshold: 1.1,
    },
    TargetSpec {
        label: "Priority: High p99 beside 8 × 1 MiB Low ≤ 3× its p99 on an idle connection",
        scenario: priority::P99,
        mode: "liquid low/high",
        versus: Some((priority::P99, "liquid idle")),
        at_least: false,
        threshold: 3.0,
    },
    TargetSpec {
        label: "Priority: 8 × 1 MiB Low beside High at 1,000/s ≥ 0.9× the bulk alone",
        scenario: priority::BULK,
        mode: "liquid low/high",
        versus: Some((priority::BULK, "liquid alone")),
        at_least: true,
        threshold: 0.9,
    },
    TargetSpec {
        label: "Priority QUIC: High p99 beside 8 × 1 MiB Low ≤ 3× its p99 on an idle connection",
        scenario: priority::P99,
        mode: "liquid-quic low/high",
        versus: Some((priority::P99, "liquid-quic idle")),
        at_least: false,
        threshold: 3.0,
    },
    TargetSpec {
        label: "Priority QUIC: 8 × 1 MiB Low beside High at 1,000/s ≥ 0.9× the bulk alone",
        scenario: priority::BULK,
        mode: "liquid-quic low/high",
        versus: Some((priority::BULK, "liquid-quic alone")),
        at_least: true,
        threshold: 0.9,
    },
    TargetSpec {
        label: "Memory: liquid ≤ 32 KiB per idle connection end (default pools)",
        scenario: "memory-idle",
        mode: "liquid",
        versus: None,
        at_least: false,
        threshold: 32.0,
    },
    TargetSpec {
        label: "Memory: liquid ≤ 1.1× plain-libp2p-streams (the same idle streams)",
        scenario: "memory-idle",
        mode: "liquid",
        versus: Some(("memory-idle", "plain-libp2p-streams")),
        at_least: false,
        threshold: 1.1,
    },
    TargetSpec {
        label: "First message after idle: liquid ≤ 2× the steady-state p50",
        scenario: "first-after-idle",
        mode: "liquid",
        versus: Some(("first-after-idle", "liquid steady")),
        at_least: false,
        threshold: 2.0,
    },
    TargetSpec {
        label: "First message after idle: liquid ≤ 1.2× the same quiet with pools that never rest (control)",
        scenario: "first-after-idle",
        mode: "liquid",
        versus: Some(("first-after-idle", "liquid never-rests")),
        at_least: false,
        threshold: 1.2,
    },
];

/// A target and how the runs did against it.
#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    /// What is required.
    pub target: String,
    /// The ratio (or absolute figure) of each run; `null` where a figure is
    /// missing or does not count.
    pub per_run: Vec<Option<f64>>,
    /// Median and range of the per-run values.
    pub spread: Option<Spread>,
    /// The noise band judged on.
    pub band: Option<(f64, f64)>,
    /// The figures behind it.
    pub detail: String,
    /// `PASS`, `MISS`, `WITHIN NOISE`; `FAILED` when liquid's messages were lost
    /// or duplicated in any run; `INCONCLUSIVE` when no run counts (round-trip
    /// gate, a failed baseline); `NOT RUN` when a scenario or mode was left out.
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
    /// How many times everything ran.
    pub runs: u32,
    /// Seed of the modes' order and of the payloads (`--seed` repeats it).
    pub seed: u64,
}

/// Everything the run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Metadata.
    pub run: RunInfo,
    /// Every figure of every run.
    pub figures: Vec<Figure>,
    /// Every scenario and mode over the runs.
    pub summaries: Vec<Summary>,
    /// liquid ÷ every other mode, per scenario, run by run.
    pub ratios: Vec<Ratio>,
    /// The targets.
    pub targets: Vec<TargetResult>,
}

impl Report {
    /// Summaries, ratios and targets of `figures` (of `plan.runs` runs).
    pub fn new(plan: &Plan, mut figures: Vec<Figure>) -> Self {
        for f in &mut figures {
            f.delivery_result = f.delivery.map(|d| d.verdict());
        }
        let runs = plan.runs;
        let summaries = summaries(&figures, runs);
        let ratios = ratios(&figures, runs);
        let targets = TARGETS.iter().map(|t| judge(t, &figures, runs)).collect();
        Self {
            run: RunInfo {
                date: utc_now(),
                nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
                quick: plan.quick,
                plan: plan.summary(),
                runs,
                seed: plan.seed,
            },
            figures,
            summaries,
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
        let _ = writeln!(
            md,
            "- Produced by `cargo run --release -p liquid-p2p-benches --bin compare{}`: \
             both peers in one process over loopback, rates counted by the receiver.",
            if run.quick { " -- --quick" } else { "" }
        );
        let _ = writeln!(
            md,
            "- Runs: everything ran {} time{}; in each run the modes of a scenario ran in a \
             new shuffled order (seed {}: `--seed {}` repeats it). The RSS scenarios \
             (`memory-idle`, `pool-shrink`) run in the first run only: later runs would reuse \
             memory freed by earlier scenarios.",
            run.runs,
            if run.runs == 1 { "" } else { "s" },
            run.seed,
            run.seed,
        );
        let _ = writeln!(
            md,
            "- Ratios are taken within each run (both figures from the same run) and shown as \
             the median of the runs with their range. A target is judged on a noise band: the \
             range of its per-run ratios (with fewer than {} runs, at least ±{:.0} % about the \
             median). **PASS**: the whole band is on the target's side; **MISS**: none of it \
             is; **WITHIN NOISE**: it straddles the target.",
            pairing::MIN_RUNS_FOR_RANGE,
            pairing::NOISE * 100.0,
        );
        let _ = writeln!(
            md,
            "- Accounting: every payload is random and carries its sender's id and a sequence \
             number; every send that returned `Ok` is booked, and after the measured window \
             the senders stop and the receiver drains. A measurement that lost a message (in a \
             lossless mode), received one twice, or received one never sent is **FAILED**: it \
             counts in no ratio, and a target whose liquid figure FAILED in any run is FAILED. \
             `open-per-message-lossy` may lose messages by design; its losses are reported."
        );
        let _ = writeln!(
            md,
            "- Round trips: a run's round trips count only if raw-tcp's p50 is at most {GATE_SHARE} \
             × single-stream's (otherwise every mode sits on the machine's latency floor); a \
             run that fails this is measured again, up to {GATE_ATTEMPTS} times, and then kept \
             but marked as not counting. A target with no counting run is INCONCLUSIVE.\n"
        );
        md.push_str(MODES);
        self.figures_table(&mut md);
        self.delivery_table(&mut md);
        self.targets_table(&mut md);
        let _ = writeln!(md, "\n## Charts\n");
        let _ = writeln!(
            md,
            "One per scenario: each bar is the median of the runs that count, its whisker \
             their range.\n"
        );
        for scenario in SCENARIOS {
            if self.summaries.iter().any(|s| s.scenario == scenario.id) {
                let _ = writeln!(md, "- [{}](charts/{}.svg)", scenario.title, scenario.id);
            }
        }
        md
    }

    fn figures_table(&self, md: &mut String) {
        let _ = writeln!(md, "\n## Figures\n");
        let _ = writeln!(
            md,
            "Median and range of the runs that count. Ratio column: `liquid` ÷ the row's mode \
             (`liquid-quic` ÷ it for QUIC rows), run by run, as median (range); above 1 means \
             liquid is faster for rates, slower for latencies and memory. Runs column: every \
             run's figure in run order.\n"
        );
        let _ = writeln!(
            md,
            "| Scenario | Mode | Transport | Concurrency | Median | Range | Unit | liquid ÷ mode | Runs | Notes |"
        );
        let _ = writeln!(md, "|---|---|---|---:|---:|---:|---|---:|---|---|");
        for s in &self.summaries {
            let figures: Vec<&Figure> = self.of(&s.scenario, &s.mode).collect();
            let (median, range) = match s.spread {
                Some(sp) => (
                    format_value(sp.median, &s.unit),
                    format!(
                        "{}–{}",
                        format_value(sp.lo, &s.unit),
                        format_value(sp.hi, &s.unit)
                    ),
                ),
                None => ("—".into(), "—".into()),
            };
            let runs = figures
                .iter()
                .map(|f| f.shown())
                .collect::<Vec<_>>()
                .join(" / ");
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                s.scenario,
                s.mode,
                s.transport,
                s.concurrency,
                median,
                range,
                s.unit,
                self.ratio_cell(s),
                runs,
                cell(&notes(&figures)),
            );
        }
    }

    fn delivery_table(&self, md: &mut String) {
        let _ = writeln!(md, "\n## Delivery\n");
        let _ = writeln!(
            md,
            "Totals over all runs, warm-up included. Sent: sends that returned `Ok`. Lost: of \
             those, never received. Duplicated: copies received beyond the first. Unconfirmed: \
             received although the send failed or was cut off (a failed send may have got \
             through). Malformed: received but never sent, or a round trip answered with \
             another message.\n"
        );
        let _ = writeln!(
            md,
            "| Scenario | Mode | Sent | Received | Lost | Duplicated | Unconfirmed | Malformed | Result |"
        );
        let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---|");
        for s in &self.summaries {
            // p99 shares p50's measurement.
            let (Some(d), Some(result)) = (s.delivery, &s.delivery_result) else {
                continue;
            };
            if s.scenario.ends_with("-p99") {
                continue;
            }
            let scenario = s.scenario.strip_suffix("-p50").unwrap_or(&s.scenario);
            let result = if result.starts_with("FAILED") {
                format!("**{result}**")
            } else {
                result.clone()
            };
            let _ = writeln!(
                md,
                "| {scenario} | {} | {} | {} | {} | {} | {} | {} | {result} |",
                s.mode,
                thousands(d.sent),
                thousands(d.received),
                thousands(d.lost),
                thousands(d.duplicated),
                thousands(d.unconfirmed),
                thousands(d.malformed),
            );
        }
    }

    fn targets_table(&self, md: &mut String) {
        let _ = writeln!(md, "\n## Targets\n");
        let _ = writeln!(
            md,
            "| Target | Per run | Median | Range | Result | Figures |"
        );
        let _ = writeln!(md, "|---|---|---:|---:|---|---|");
        for t in &self.targets {
            let per_run = t
                .per_run
                .iter()
                .map(|v| v.map_or("—".into(), |v| format!("{v:.2}")))
                .collect::<Vec<_>>()
                .join(" / ");
            let (median, range) = match t.spread {
                Some(s) => (
                    format!("{:.2}", s.median),
                    format!("{:.2}–{:.2}", s.lo, s.hi),
                ),
                None => ("—".into(), "—".into()),
            };
            let _ = writeln!(
                md,
                "| {} | {per_run} | {median} | {range} | **{}** | {} |",
                t.target,
                t.result,
                cell(&t.detail),
            );
        }
        let count = |label: &str| self.targets.iter().filter(|t| t.result == label).count();
        let _ = write!(
            md,
            "\n{} of {} targets pass",
            count("PASS"),
            self.targets.len()
        );
        let others: Vec<String> = ["WITHIN NOISE", "MISS", "FAILED", "INCONCLUSIVE", "NOT RUN"]
            .iter()
            .map(|l| (l, count(l)))
            .filter(|(_, n)| *n > 0)
            .map(|(l, n)| format!("{n} {}", l.to_lowercase()))
            .collect();
        let _ = if others.is_empty() {
            writeln!(md, ".")
        } else {
            writeln!(md, "; {}.", others.join(", "))
        };
    }

    fn of<'a>(&'a self, scenario: &'a str, mode: &'a str) -> impl Iterator<Item = &'a Figure> {
        self.figures
            .iter()
            .filter(move |f| f.scenario == scenario && f.mode == mode)
    }

    fn ratio_cell(&self, s: &Summary) -> String {
        let shown = |r: &Ratio| {
            r.spread.map_or("—".into(), |sp| {
                format!("{:.2}× ({:.2}–{:.2})", sp.median, sp.lo, sp.hi)
            })
        };
        if priority::is_scenario(&s.scenario) {
            // A phase with both kinds of traffic ÷ the same traffic alone.
            return self
                .ratios
                .iter()
                .filter(|r| r.scenario == s.scenario && r.mode == s.mode)
                .map(|r| format!("÷ {}: {}", r.versus, shown(r)))
                .collect::<Vec<_>>()
                .join("; ");
        }
        let baseline = info(&s.scenario).and_then(|i| i.baseline);
        if is_liquid(&s.mode) {
            // Only a liquid figure compared with another scenario has its own cell
            // (the main baselines; results.json has every ratio).
            let Some(base) = baseline else {
                return String::new();
            };
            return self
                .ratios
                .iter()
                .filter(|r| r.scenario == s.scenario && r.mode == s.mode)
                .filter(|r| r.versus_scenario == base)
                .filter(|r| ["liquid", "single-stream", "pre-opened"].contains(&r.versus.as_str()))
                .map(|r| format!("÷ {} ({base}): {}", r.versus, shown(r)))
                .collect::<Vec<_>>()
                .join("; ");
        }
        self.ratios
            .iter()
            .find(|r| {
                r.scenario == s.scenario && r.versus_scenario == s.scenario && r.versus == s.mode
            })
            .map_or(String::new(), shown)
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

    /// Bars of one scenario's chart: its summaries, plus for a scenario compared
    /// with another the main baselines of that one.
    fn bars(&self, scenario: &ScenarioInfo) -> Vec<Bar> {
        let bar = |s: &Summary, label: String| Bar {
            label,
            value: s.spread.map(|sp| sp.median),
            range: s.spread.filter(|sp| sp.runs > 1).map(|sp| (sp.lo, sp.hi)),
            failed: !s.failed_runs.is_empty(),
        };
        let mut bars: Vec<Bar> = self
            .summaries
            .iter()
            .filter(|s| s.scenario == scenario.id)
            .map(|s| {
                let figures: Vec<&Figure> = self.of(&s.scenario, &s.mode).collect();
                let note = figures.first().and_then(|f| f.note.clone());
                let label = match note {
                    Some(n) if n.contains("connections per peer") => {
                        let conns = n.split(';').next().unwrap_or_default();
                        format!("{} ({})", s.mode, conns.replace(" per peer", ""))
                    }
                    Some(n) if s.scenario.starts_with("scale") => {
                        let hosts = n.split(',').next().unwrap_or_default();
                        format!("{} ({hosts})", s.mode)
                    }
                    _ => s.mode.clone(),
                };
                bar(s, label)
            })
            .collect();
        if let Some(base) = scenario.baseline
            && !bars.is_empty()
        {
            for mode in ["liquid", "single-stream", "pre-opened"] {
                if let Some(s) = self
                    .summaries
                    .iter()
                    .find(|s| s.scenario == base && s.mode == mode)
                {
                    bars.push(bar(s, format!("{mode} (1 connection)")));
                }
            }
        }
        bars
    }
}

/// Short description of the modes, at the top of the report.
const MODES: &str = "\
Modes (TCP = TCP + noise + yamux with `nodelay`, libp2p defaults otherwise):

- `liquid`: `Host::send` of liquid-p2p over its pooled `/liquid/msg/1.0.0` streams; \
the receiver counts messages from its `Inbox`.
- `open-per-message`: libp2p-stream, a new substream per message, 1-byte acknowledgement \
(libp2p-stream drops inbound streams when its accept channel is full).
- `open-per-message-lossy`: the same without the acknowledgement: the frame is written and \
the stream closed. The upper bound of that way of sending; it loses what libp2p-stream drops, \
and says how much.
- `request-response`: libp2p request-response, one request per message, empty response \
(length-prefixed codec).
- `single-stream`: one libp2p-stream stream shared by all senders behind a tokio mutex, \
length-prefixed frames.
- `pre-opened`: one libp2p-stream stream per sender, opened up front (the transport's ceiling). \
In `mib1-2conn`, over two connections like liquid there, the streams split evenly between them \
(a plain libp2p behaviour opens them on each connection: libp2p-stream cannot choose one).
- `raw-tcp`: plain tokio TCP, length-prefixed, no encryption, on one connection like the other \
modes; senders queue their frames to the connection's writer task, which writes all that is \
queued and flushes once per batch, as yamux does.
- `liquid-quic`, `pre-opened-quic`: the same over QUIC (`/ip4/127.0.0.1/udp/0/quic-v1`; \
liquid's host sizes QUIC windows itself, the plain swarm uses libp2p's QUIC defaults).
- Round trips: the receiver sends the 256 B payload back (liquid: with `send` on a protocol \
registered on the sender), and the sender checks that the reply is its request.
- Priority: `liquid` (and `liquid-quic`) in four phases, each on a fresh pair of hosts with \
one connection, in a shuffled order: `idle`, 256 B messages of a protocol registered `High` \
sent at 1,000/s by one task (tokio interval; a slow send delays the next tick, the rate reached \
is in the notes); `alone`, 8 tasks sending 1 MiB messages of a protocol registered `Low` back \
to back; `low/high`, both at once; `normal/normal`, both at once with both protocols `Normal` \
(the control). Both hosts register both protocols (a send takes the priority of the sender's \
registration). A High message's latency runs from just before `send` to the receiver taking it \
out of its `Inbox` (the send time travels in the payload); those sent in the measured window \
count. Bulk MiB/s are counted by the receiver over the same window. The ratio column divides \
a phase with both kinds of traffic by the same traffic alone.
- Memory: RSS growth (`/proc/self/statm`) while N more connections are opened between two \
peers and left idle, divided by the 2 N connection ends; liquid hosts with default pools \
(`idle_floor`, 1 stream, opened by each end, each read by a task on the other) against two \
plain libp2p swarms whose behaviour opens the same streams on each connection from each end \
and holds both ends idle (`plain-libp2p-streams`, the fair baseline), and two with no \
behaviour and no streams (`plain-libp2p`); named with `--only`, also the same with \
`init_size` (10) streams: liquid with `open_at_connect` (the eager pool of before) and \
`plain-libp2p-streams init_size`.
- First message after idle: 256 B messages paced at 1,000/s, then a quiet period until the \
sender's pools are at rest (`idle_after` shortened from 60 s to 500 ms, 3 times, once per \
full run; 1 s, 5 times, when named with `--only`), then one message; \
latency from `send` to the receiving application, the \
first messages' median against the steady messages' p50 of the same hosts; with the default \
floor, with pools that never rest (`never-rests`, the control: what the quiet alone costs) \
and, when named, with none (`floor-0`).
- Scale: liquid hosts in one process, host i dials every host after it; time from the first \
dial until every host has `PeerConnected` for every other (protocol exchange done), then \
every host sends 256 B messages to all its peers in turn from 4 tasks.
";

fn is_liquid(mode: &str) -> bool {
    mode == "liquid" || mode == "liquid-quic"
}

fn is_quic(transport: &str) -> bool {
    transport == "quic"
}

fn find<'a>(figures: &'a [Figure], run: u32, scenario: &str, mode: &str) -> Option<&'a Figure> {
    figures
        .iter()
        .find(|f| f.run == run && f.scenario == scenario && f.mode == mode)
}

/// The counted value of (scenario, mode) in each run.
fn counted(figures: &[Figure], runs: u32, scenario: &str, mode: &str) -> Vec<Option<f64>> {
    (1..=runs)
        .map(|r| find(figures, r, scenario, mode).and_then(Figure::counted))
        .collect()
}

/// Notes of a scenario and mode over its runs: once when every run has the same,
/// else each run's.
fn notes(figures: &[&Figure]) -> String {
    let texts: Vec<String> = figures
        .iter()
        .map(|f| {
            let failed = f.delivery_result.as_deref().filter(|_| f.failed());
            [
                f.note.as_deref(),
                f.error.as_deref(),
                failed,
                f.excluded.as_deref(),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; ")
        })
        .collect();
    if texts.iter().all(|t| Some(t) == texts.first()) {
        return texts.first().cloned().unwrap_or_default();
    }
    figures
        .iter()
        .zip(&texts)
        .filter(|(_, t)| !t.is_empty())
        .map(|(f, t)| format!("run {}: {t}", f.run))
        .collect::<Vec<_>>()
        .join(" · ")
}

/// Sort key of a mode: report order for the compared modes (a priority
/// phase, `liquid low/high`, by its mode), then first seen.
fn mode_rank(mode: &str) -> usize {
    let mode = mode.split(' ').next().unwrap_or(mode);
    Mode::ALL
        .iter()
        .position(|m| m.name() == mode)
        .unwrap_or(Mode::ALL.len())
}

/// One summary per scenario and mode, in report order.
fn summaries(figures: &[Figure], runs: u32) -> Vec<Summary> {
    let mut out: Vec<Summary> = Vec::new();
    for scenario in SCENARIOS {
        let mut modes: Vec<&Figure> = Vec::new();
        for f in figures.iter().filter(|f| f.scenario == scenario.id) {
            if !modes.iter().any(|m| m.mode == f.mode) {
                modes.push(f);
            }
        }
        // Stable: modes that are not compared modes keep their first-seen order.
        modes.sort_by_key(|f| mode_rank(&f.mode));
        for first in modes {
            let of: Vec<&Figure> = figures
                .iter()
                .filter(|f| f.scenario == first.scenario && f.mode == first.mode)
                .collect();
            let mut delivery: Option<Delivery> = None;
            for d in of.iter().filter_map(|f| f.delivery) {
                delivery.get_or_insert_with(Delivery::default).add(&d);
            }
            let failed_runs: Vec<u32> = of.iter().filter(|f| f.failed()).map(|f| f.run).collect();
            let delivery_result = delivery.map(|d| {
                if failed_runs.is_empty() {
                    d.verdict()
                } else {
                    let runs: Vec<String> = failed_runs.iter().map(u32::to_string).collect();
                    format!("{} in run {}", d.verdict(), runs.join(", "))
                }
            });
            let per_run: Vec<Option<f64>> = (1..=runs)
                .map(|r| of.iter().find(|f| f.run == r).and_then(|f| f.value))
                .collect();
            out.push(Summary {
                scenario: first.scenario.clone(),
                mode: first.mode.clone(),
                transport: first.transport.clone(),
                concurrency: first.concurrency,
                unit: first.unit.clone(),
                per_run,
                spread: Spread::of(counted(figures, runs, &first.scenario, &first.mode)),
                delivery,
                failed_runs,
                delivery_result,
            });
        }
    }
    out
}

/// `liquid` ÷ every TCP (and plain) mode, `liquid-quic` ÷ every other QUIC mode,
/// run by run. A liquid figure of a scenario with a baseline scenario is also
/// divided by that scenario's modes (and by the other modes of its own).
fn ratios(figures: &[Figure], runs: u32) -> Vec<Ratio> {
    let mut out = Vec::new();
    let summaries = summaries(figures, runs);
    for scenario in SCENARIOS {
        let bases: Vec<&str> = match scenario.baseline {
            Some(base) => vec![base, scenario.id],
            None => vec![scenario.id],
        };
        for liquid in summaries
            .iter()
            .filter(|s| s.scenario == scenario.id && is_liquid(&s.mode))
        {
            for base in &bases {
                for other in summaries.iter().filter(|o| o.scenario == *base) {
                    let same_scenario = other.scenario == liquid.scenario;
                    let comparable = is_quic(&liquid.transport) == is_quic(&other.transport);
                    if !comparable || (same_scenario && is_liquid(&other.mode)) {
                        continue;
                    }
                    let per_run = per_run_ratios(
                        &counted(figures, runs, &liquid.scenario, &liquid.mode),
                        &counted(figures, runs, &other.scenario, &other.mode),
                    );
                    out.push(Ratio {
                        scenario: liquid.scenario.clone(),
                        mode: liquid.mode.clone(),
                        versus: other.mode.clone(),
                        versus_scenario: other.scenario.clone(),
                        transport: liquid.transport.clone(),
                        concurrency: liquid.concurrency,
                        spread: Spread::of(per_run.iter().copied()),
                        per_run,
                    });
                }
            }
        }
    }
    // The priority phases with both kinds of traffic ÷ the same traffic alone.
    for s in &summaries {
        let Some(base) = priority::baseline_of(&s.scenario, &s.mode) else {
            continue;
        };
        let per_run = per_run_ratios(
            &counted(figures, runs, &s.scenario, &s.mode),
            &counted(figures, runs, &s.scenario, &base),
        );
        out.push(Ratio {
            scenario: s.scenario.clone(),
            mode: s.mode.clone(),
            versus: base,
            versus_scenario: s.scenario.clone(),
            transport: s.transport.clone(),
            concurrency: s.concurrency,
            spread: Spread::of(per_run.iter().copied()),
            per_run,
        });
    }
    out
}

fn judge(t: &TargetSpec, figures: &[Figure], runs: u32) -> TargetResult {
    let of = |scenario: &str, mode: &str| -> Vec<Option<&Figure>> {
        (1..=runs)
            .map(|r| find(figures, r, scenario, mode))
            .collect()
    };
    let describe = |figs: &[Option<&Figure>], scenario: &str, mode: &str| {
        if figs.iter().all(Option::is_none) {
            return format!("{mode} not measured in {scenario}");
        }
        let unit = figs.iter().flatten().next().map_or("", |f| f.unit.as_str());
        let values: Vec<String> = figs
            .iter()
            .map(|f| f.map_or("—".into(), Figure::shown))
            .collect();
        format!("{mode} {} {unit}", values.join(" / "))
    };
    let liquid = of(t.scenario, t.mode);
    let versus = t
        .versus
        .map(|(scenario, mode)| (of(scenario, mode), scenario, mode));
    let mut detail = describe(&liquid, t.scenario, t.mode);
    if let Some((figs, scenario, mode)) = &versus {
        detail = format!("{detail} vs {}", describe(figs, scenario, mode));
    }
    let result = |result, per_run: Vec<Option<f64>>, detail: String| {
        let spread = Spread::of(per_run.iter().copied());
        TargetResult {
            target: t.label.into(),
            band: spread.map(|s| s.band()),
            spread,
            per_run,
            detail,
            result,
        }
    };
    let ran = |figs: &[Option<&Figure>]| figs.iter().any(Option::is_some);
    if !ran(&liquid) || versus.as_ref().is_some_and(|(figs, ..)| !ran(figs)) {
        return result("NOT RUN", Vec::new(), detail);
    }
    let per_run = match &versus {
        None => counted(figures, runs, t.scenario, t.mode),
        Some((_, scenario, mode)) => per_run_ratios(
            &counted(figures, runs, t.scenario, t.mode),
            &counted(figures, runs, scenario, mode),
        ),
    };
    let failed: Vec<String> = liquid
        .iter()
        .flatten()
        .filter(|f| f.failed())
        .map(|f| {
            format!(
                "run {}: {}",
                f.run,
                f.delivery_result.clone().unwrap_or_default()
            )
        })
        .collect();
    if !failed.is_empty() {
        return result(
            "FAILED",
            per_run,
            format!(
                "{detail}; {} lost or duplicated messages ({})",
                t.mode,
                failed.join(", ")
            ),
        );
    }
    let Some(spread) = Spread::of(per_run.iter().copied()) else {
        let excluded = liquid.iter().flatten().find_map(|f| f.excluded.clone());
        let all_errors = liquid.iter().flatten().all(|f| f.value.is_none());
        return match excluded {
            Some(why) => result("INCONCLUSIVE", per_run, format!("{detail}; {why}")),
            // A liquid mode that failed in every run misses its target.
            None if all_errors => result("MISS", per_run, detail),
            None => result(
                "INCONCLUSIVE",
                per_run,
                format!("{detail}; no run in which both figures count"),
            ),
        };
    };
    result(
        pairing::label(&spread, t.threshold, t.at_least).as_str(),
        per_run,
        detail,
    )
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

    fn plan(runs: u32) -> Plan {
        Plan::new(false, Vec::new(), Vec::new(), Some(runs), 7)
    }

    fn fig(run: u32, scenario: &str, mode: &str, transport: &str, value: Option<f64>) -> Figure {
        let mut f = Figure::new(scenario, mode, transport, 1, "msg/s");
        f.run = run;
        f.value = value;
        if value.is_none() {
            f.error = Some("boom".into());
        }
        f
    }

    const TCP: &str = "tcp+noise+yamux";

    fn target(label_start: &str) -> &'static TargetSpec {
        TARGETS
            .iter()
            .find(|t| t.label.starts_with(label_start))
            .expect("target")
    }

    #[test]
    fn ratios_pair_liquid_with_its_transport() {
        let figures = vec![
            fig(1, "msg256-c64", "liquid", TCP, Some(300.0)),
            fig(1, "msg256-c64", "single-stream", TCP, Some(100.0)),
            fig(1, "msg256-c64", "liquid-quic", "quic", Some(80.0)),
            fig(1, "msg256-c64", "pre-opened-quic", "quic", Some(100.0)),
            fig(1, "msg256-c64", "request-response", TCP, None),
        ];
        let r = ratios(&figures, 1);
        let value = |mode: &str, versus: &str| {
            r.iter()
                .find(|r| r.mode == mode && r.versus == versus)
                .and_then(|r| r.spread)
                .map(|s| s.median)
        };
        assert_eq!(value("liquid", "single-stream"), Some(3.0));
        assert_eq!(value("liquid-quic", "pre-opened-quic"), Some(0.8));
        assert_eq!(value("liquid", "request-response"), None);
        assert!(
            !r.iter()
                .any(|r| r.mode == "liquid" && r.versus == "pre-opened-quic")
        );
        // 3.0 with one run: the ±15 % band is clear of 3× only from above.
        let c64 = judge(target("256 B c64: liquid ≥ 3×"), &figures, 1);
        assert_eq!(c64.result, "WITHIN NOISE");
        assert_eq!(judge(&TARGETS[0], &figures, 1).result, "NOT RUN");
        let failed = vec![
            fig(1, "msg256-c1", "liquid", TCP, None),
            fig(1, "msg256-c1", "open-per-message", TCP, Some(10.0)),
        ];
        let judged = judge(&TARGETS[0], &failed, 1);
        assert_eq!(judged.result, "MISS");
        assert!(judged.detail.contains("liquid error"));
    }

    #[test]
    fn two_connection_liquid_is_compared_with_one_connection_modes_and_its_own_reference() {
        let mut figures = Vec::new();
        for (run, liquid2, single, pre2) in [(1, 160.0, 100.0, 150.0), (2, 170.0, 100.0, 120.0)] {
            figures.push(fig(run, "mib1-1conn", "liquid", TCP, Some(100.0)));
            figures.push(fig(run, "mib1-1conn", "single-stream", TCP, Some(single)));
            figures.push(fig(run, "mib1-2conn", "liquid", TCP, Some(liquid2)));
            figures.push(fig(run, "mib1-2conn", "pre-opened", TCP, Some(pre2)));
        }
        let r = ratios(&figures, 2);
        let find = |versus: &str, scenario: &str| {
            r.iter()
                .find(|r| {
                    r.scenario == "mib1-2conn"
                        && r.versus == versus
                        && r.versus_scenario == scenario
                })
                .expect("ratio")
        };
        assert_eq!(find("liquid", "mib1-1conn").per_run, [Some(1.6), Some(1.7)]);
        let own = find("pre-opened", "mib1-2conn");
        let spread = own.spread.expect("spread");
        assert!((spread.lo - 160.0 / 150.0).abs() < 1e-9);
        assert!((spread.hi - 170.0 / 120.0).abs() < 1e-9);
        let t = judge(target("1 MiB, two connections"), &figures, 2);
        assert_eq!(t.per_run, [Some(1.6), Some(1.7)]);
        // Median 1.65 with two runs: band 1.40–1.90 straddles 1.5.
        assert_eq!(t.result, "WITHIN NOISE");
    }

    #[test]
    fn targets_are_judged_on_per_run_ratios_not_on_medians() {
        let mut figures = Vec::new();
        let runs = [
            (418_778.0, 627_318.0),
            (506_263.0, 529_056.0),
            (370_587.0, 519_718.0),
        ];
        for (i, (liquid, pre)) in runs.into_iter().enumerate() {
            let run = i as u32 + 1;
            figures.push(fig(run, "msg256-c64", "liquid", TCP, Some(liquid)));
            figures.push(fig(run, "msg256-c64", "pre-opened", TCP, Some(pre)));
        }
        let t = judge(target("256 B c64: liquid ≥ 0.9× pre-opened"), &figures, 3);
        let s = t.spread.expect("spread");
        assert!((s.median - 370_587.0 / 519_718.0).abs() < 1e-9);
        assert_eq!(t.result, "WITHIN NOISE");
        let report = Report::new(&plan(3), figures);
        let md = report.markdown();
        assert!(
            md.contains("| 0.67 / 0.96 / 0.71 | 0.71 | 0.67–0.96 | **WITHIN NOISE** |"),
            "{md}"
        );
        // The pre-opened row's ratio cell is the paired one.
        assert!(md.contains("0.71× (0.67–0.96)"));
    }

    #[test]
    fn a_liquid_figure_that_lost_messages_fails_its_target_and_counts_in_no_ratio() {
        let lost = Delivery {
            sent: 10_000,
            received: 9_999,
            lost: 1,
            ..Delivery::default()
        };
        let fine = Delivery {
            sent: 10_000,
            received: 10_000,
            ..Delivery::default()
        };
        let mut figures = Vec::new();
        for run in 1..=3 {
            let mut liquid = fig(run, "msg256-c1", "liquid", TCP, Some(200.0));
            liquid.delivery = Some(if run == 2 { lost } else { fine });
            let mut single = fig(run, "msg256-c1", "single-stream", TCP, Some(100.0));
            single.delivery = Some(fine);
            figures.extend([liquid, single]);
        }
        let report = Report::new(&plan(3), figures);
        let t = report
            .targets
            .iter()
            .find(|t| {
                t.target
                    .starts_with("256 B c1: liquid ≥ 0.95× single-stream")
            })
            .expect("target");
        assert_eq!(t.result, "FAILED");
        assert_eq!(t.per_run, [Some(2.0), None, Some(2.0)]);
        let liquid = report
            .summaries
            .iter()
            .find(|s| s.scenario == "msg256-c1" && s.mode == "liquid")
            .expect("summary");
        assert_eq!(liquid.failed_runs, [2]);
        assert_eq!(
            liquid.delivery_result.as_deref(),
            Some("FAILED (1 lost) in run 2")
        );
        assert_eq!(liquid.delivery.map(|d| d.sent), Some(30_000));
        let md = report.markdown();
        assert!(md.contains("| msg256-c1 | liquid | 30,000 | 29,999 | 1 | 0 | 0 | 0 | **FAILED (1 lost) in run 2** |"), "{md}");
        assert!(md.contains("200 / 200 FAILED / 200"));
        let json = serde_json::to_string(&report).expect("json");
        assert!(json.contains(r#""delivery_result":"FAILED (1 lost)""#));
    }

    #[test]
    fn a_lossy_mode_reports_its_losses_without_failing() {
        let mut f = fig(1, "msg256-c1", "open-per-message-lossy", TCP, Some(50.0));
        f.delivery = Some(Delivery {
            sent: 1000,
            received: 900,
            lost: 100,
            lossy: true,
            ..Delivery::default()
        });
        let report = Report::new(&plan(1), vec![f]);
        assert!(!report.figures[0].failed());
        assert!(report.markdown().contains("| lossy (10.0 % lost) |"));
    }

    #[test]
    fn round_trips_that_failed_the_gate_make_their_targets_inconclusive() {
        let mut figures = Vec::new();
        for run in 1..=2 {
            for (mode, p50) in [
                ("liquid", 100.0),
                ("single-stream", 88.0),
                ("raw-tcp", 85.0),
            ] {
                let mut f = fig(run, "rtt256-p50", mode, TCP, Some(p50));
                f.unit = "µs".into();
                f.excluded = Some("inconclusive: raw-tcp p50 85.0 µs is over 0.7 × single-stream's 88.0 µs, in each of 3 attempts".into());
                figures.push(f);
            }
        }
        let t = judge(target("Round trip p50"), &figures, 2);
        assert_eq!(t.result, "INCONCLUSIVE");
        assert!(t.detail.contains("over 0.7 × single-stream's"));
        assert_eq!(t.per_run, [None, None]);
        // One run that passed the gate counts alone.
        for f in figures.iter_mut().filter(|f| f.run == 2) {
            f.excluded = None;
        }
        let t = judge(target("Round trip p50"), &figures, 2);
        assert_eq!(t.per_run, [None, Some(100.0 / 88.0)]);
        assert_eq!(t.result, "WITHIN NOISE");
    }

    #[test]
    fn priority_phases_are_divided_by_the_same_traffic_alone_run_by_run() {
        use priority::{BULK, P99};
        let mut figures = Vec::new();
        let runs = [
            (1, [100.0, 250.0, 5000.0], [400.0, 380.0, 390.0]),
            (2, [120.0, 480.0, 6000.0], [500.0, 400.0, 480.0]),
        ];
        for (run, p99, bulk) in runs {
            for (i, phase) in ["idle", "low/high", "normal/normal"].iter().enumerate() {
                let mut f = fig(run, P99, &format!("liquid {phase}"), TCP, Some(p99[i]));
                f.unit = "µs".into();
                figures.push(f);
            }
            for (i, phase) in ["alone", "low/high", "normal/normal"].iter().enumerate() {
                let mut f = fig(run, BULK, &format!("liquid {phase}"), TCP, Some(bulk[i]));
                f.unit = "MiB/s".into();
                figures.push(f);
            }
        }
        let report = Report::new(&plan(2), figures);
        let ratio = |scenario: &str, mode: &str| {
            report
                .ratios
                .iter()
                .find(|r| r.scenario == scenario && r.mode == mode)
                .expect("ratio")
        };
        let prioritised = ratio(P99, "liquid low/high");
        assert_eq!(prioritised.versus, "liquid idle");
        assert_eq!(prioritised.per_run, [Some(2.5), Some(4.0)]);
        assert_eq!(
            ratio(P99, "liquid normal/normal").per_run,
            [Some(50.0), Some(50.0)]
        );
        assert_eq!(ratio(BULK, "liquid low/high").versus, "liquid alone");
        assert_eq!(
            ratio(BULK, "liquid low/high").per_run,
            [Some(0.95), Some(0.8)]
        );
        assert_eq!(report.ratios.len(), 4, "{:?}", report.ratios);
        let target = |label: &str| {
            report
                .targets
                .iter()
                .find(|t| t.target.starts_with(label))
                .expect("target")
                .result
        };
        // Medians 3.25 and 0.875 over two runs: both bands straddle the target.
        assert_eq!(target("Priority: High p99"), "WITHIN NOISE");
        assert_eq!(target("Priority: 8 × 1 MiB"), "WITHIN NOISE");
        assert_eq!(target("Priority QUIC: High p99"), "NOT RUN");
        let md = report.markdown();
        assert!(md.contains("÷ liquid idle: 3.25× (2.50–4.00)"), "{md}");
        assert!(md.contains("÷ liquid alone: 0.88× (0.80–0.95)"), "{md}");
        let modes: Vec<&str> = report
            .summaries
            .iter()
            .filter(|s| s.scenario == P99)
            .map(|s| s.mode.as_str())
            .collect();
        assert_eq!(
            modes,
            ["liquid idle", "liquid low/high", "liquid normal/normal"]
        );
    }

    #[test]
    fn a_failed_baseline_makes_a_target_inconclusive_not_a_miss() {
        let figures = vec![
            fig(1, "msg256-c1", "liquid", TCP, Some(100.0)),
            fig(1, "msg256-c1", "request-response", TCP, None),
        ];
        let t = judge(target("256 B c1: liquid ≥ 20×"), &figures, 1);
        assert_eq!(t.result, "INCONCLUSIVE");
    }

    #[test]
    fn absolute_targets_use_the_same_band() {
        let mut f = fig(1, "memory-idle", "liquid", TCP, Some(59.5));
        f.unit = "KiB".into();
        assert_eq!(judge(target("Memory"), &[f.clone()], 1).result, "MISS");
        f.value = Some(34.0);
        assert_eq!(
            judge(target("Memory"), &[f.clone()], 1).result,
            "WITHIN NOISE"
        );
        f.value = Some(25.0);
        assert_eq!(judge(target("Memory"), &[f], 1).result, "PASS");
    }

    #[test]
    fn summaries_list_modes_in_report_order_whatever_the_run_order() {
        let figures = vec![
            fig(1, "msg256-c8", "raw-tcp", TCP, Some(3.0)),
            fig(1, "msg256-c8", "liquid", TCP, Some(1.0)),
            fig(1, "msg256-c8", "open-per-message-lossy", TCP, Some(2.0)),
        ];
        let modes: Vec<String> = summaries(&figures, 1).into_iter().map(|s| s.mode).collect();
        assert_eq!(modes, ["liquid", "open-per-message-lossy", "raw-tcp"]);
    }

    #[test]
    fn notes_are_given_once_when_every_run_agrees() {
        let mut a = fig(1, "msg256-c1", "liquid", TCP, Some(1.0));
        let mut b = fig(2, "msg256-c1", "liquid", TCP, Some(1.0));
        a.note = Some("same".into());
        b.note = Some("same".into());
        assert_eq!(notes(&[&a, &b]), "same");
        b.note = Some("other".into());
        assert_eq!(notes(&[&a, &b]), "run 1: same · run 2: other");
    }

    #[test]
    fn formatting() {
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(12), "12");
        assert_eq!(cell("a|b"), "a\\|b");
        assert!(utc_now().ends_with("UTC"));
    }
}
