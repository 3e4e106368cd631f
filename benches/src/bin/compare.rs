//! Side-by-side comparison of liquid-p2p with plain rust-libp2p ways of sending the
//! same messages (and plain TCP), in one process over loopback.
//!
//! ```sh
//! cargo run --release -p liquid-p2p-benches --bin compare             # 5 runs, under 20 min
//! cargo run --release -p liquid-p2p-benches --bin compare -- --quick  # 1 run, under 2 min
//! ```
//!
//! Shows its progress on stderr, prints a markdown table and writes
//! `benches/RESULTS.md`, `benches/results.json` and `benches/charts/*.svg`.

use std::{error::Error, path::PathBuf, time::Duration};

use clap::Parser;
use liquid_p2p_benches::compare::{
    Mode,
    progress::Progress,
    report::Report,
    scenarios::{Plan, SCENARIOS, run_all},
};

#[derive(Debug, Parser)]
#[command(about = "Compare liquid-p2p with plain rust-libp2p and TCP on loopback")]
struct Args {
    /// Short durations, 50 idle connections, 16 hosts, one run (under 2 minutes).
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
    /// `liquid,single-stream`. The priority scenario measures `liquid`, and
    /// `liquid-quic` only when named here.
    #[arg(long, value_delimiter = ',')]
    modes: Vec<String>,
    /// Run everything this many times; ratios are taken within each run and
    /// reported as median and range. Default 5, or 1 with `--quick`.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=20))]
    runs: Option<u32>,
    /// Seed of the modes' order in each run (and of the payloads); a random one
    /// is drawn and printed when not given.
    #[arg(long)]
    seed: Option<u64>,
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
    let seed = args.seed.unwrap_or_else(rand::random);
    let plan = Plan::new(args.quick, args.only, args.modes, args.runs, seed);
    eprintln!("{}", plan.summary());
    eprintln!("seed {seed} (`--seed {seed}` repeats this order of modes)");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let progress = Progress::stderr(plan.planned_total());
    let figures = runtime.block_on(run_all(&plan, &progress));
    progress.finish();
    // Whatever a failed mode left running must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(2));
    let report = Report::new(&plan, figures);
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
