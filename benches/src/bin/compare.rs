//! Side-by-side comparison of liquid-p2p with plain rust-libp2p ways of sending the
//! same messages (and plain TCP), in one process over loopback.
//!
//! ```sh
//! cargo run --release -p liquid-p2p-benches --bin compare             # full, under 15 min
//! cargo run --release -p liquid-p2p-benches --bin compare -- --quick  # under 2 min
//! ```
//!
//! Prints a markdown table and writes `benches/RESULTS.md`, `benches/results.json`
//! and `benches/charts/*.svg`.

use std::{error::Error, path::PathBuf, time::Duration};

use clap::Parser;
use liquid_p2p_benches::compare::{
    Mode,
    report::{Figure, Report, format_value, median_of},
    scenarios::{Plan, SCENARIOS, run_all},
};

#[derive(Debug, Parser)]
#[command(about = "Compare liquid-p2p with plain rust-libp2p and TCP on loopback")]
struct Args {
    /// Short durations, 50 idle connections, 16 hosts (under 2 minutes).
    #[arg(long)]
    quick: bool,
    /// Directory for RESULTS.md, results.json and charts/ (default: the benches crate).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only scenarios whose id starts with one of these (comma-separated), e.g.
    /// `msg256-c1,rtt256`.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Only these modes in the per-mode scenarios (comma-separated), e.g.
    /// `liquid,single-stream`.
    #[arg(long, value_delimiter = ',')]
    modes: Vec<String>,
    /// Run everything this many times and report each figure's median (the
    /// figures are noisy on a shared machine). Default 1.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=9))]
    runs: u32,
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    if let Some(bad) = args
        .modes
        .iter()
        .find(|n| !Mode::ALL.iter().any(|m| m.name() == n.as_str()))
    {
        return Err(format!("unknown mode `{bad}`").into());
    }
    if let Some(bad) = args
        .only
        .iter()
        .find(|p| !SCENARIOS.iter().any(|s| s.id.starts_with(p.as_str())))
    {
        return Err(format!("no scenario id starts with `{bad}`").into());
    }
    let plan = Plan::new(args.quick, args.only, args.modes);
    eprintln!("{}", plan.summary());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut runs = Vec::new();
    for run in 1..=args.runs {
        if args.runs > 1 {
            eprintln!("run {run} of {}", args.runs);
        }
        let this_run = if run == 1 {
            plan.clone()
        } else {
            plan.repeat()
        };
        runs.push(runtime.block_on(run_all(&this_run, print_figure)));
    }
    // Whatever a failed mode left running must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(2));
    let report = Report::new(&plan, median_of(runs), args.runs);
    println!("{}", report.markdown());
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    for problem in report.write(&out)? {
        eprintln!("warning: {problem}");
    }
    eprintln!("wrote {}", out.join("RESULTS.md").display());
    Ok(())
}

fn print_figure(f: &Figure) {
    let value = match (&f.value, &f.error) {
        (Some(v), _) => format!("{} {}", format_value(*v, &f.unit), f.unit),
        (None, Some(e)) => format!("error: {e}"),
        (None, None) => "-".into(),
    };
    eprintln!(
        "{:<12} {:<17} c={:<4} {}{}",
        f.scenario,
        f.mode,
        f.concurrency,
        value,
        f.note
            .as_ref()
            .map_or(String::new(), |n| format!("  ({n})"))
    );
}
