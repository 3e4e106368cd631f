//! Where the comparison is while it runs: the full run takes up to 20 minutes, and
//! whoever waits for it should see the run, scenario and mode being measured, each
//! figure as it is made, and the time left. A progress bar on stderr (indicatif)
//! when stderr is a terminal; plain lines otherwise, so that a log stays readable.
//!
//! Progress is counted in planned milliseconds: each step adds what the plan
//! expects it to take, so the time left follows the steps' real pace.

use std::{
    io::IsTerminal,
    time::{Duration, Instant},
};

use indicatif::{HumanDuration, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::report::{Figure, format_value};

/// How progress is shown.
pub struct Progress {
    bar: ProgressBar,
    /// Plain lines on stderr instead of a bar.
    plain: bool,
    /// Nothing at all (tests).
    silent: bool,
    started: Instant,
}

/// Where a step is.
#[derive(Debug, Clone, Copy)]
pub struct Position<'a> {
    /// Run, from 1.
    pub run: u32,
    /// Runs in all.
    pub runs: u32,
    /// Scenario id.
    pub scenario: &'a str,
    /// Mode, or what the step measures.
    pub mode: &'a str,
}

impl Progress {
    /// Progress of `planned` work on stderr: a bar on a terminal, lines otherwise.
    pub fn stderr(planned: Duration) -> Self {
        let plain = !std::io::stderr().is_terminal();
        let target = if plain {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(Some(millis(planned)), target);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {elapsed:>4} [{wide_bar}] {percent:>3}% · ~{eta} left · {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        if !plain {
            bar.enable_steady_tick(Duration::from_millis(200));
        }
        Self {
            bar,
            plain,
            silent: false,
            started: Instant::now(),
        }
    }

    /// No output at all.
    pub fn silent() -> Self {
        Self {
            bar: ProgressBar::hidden(),
            plain: false,
            silent: true,
            started: Instant::now(),
        }
    }

    /// A step starts.
    pub fn begin(&self, at: Position<'_>) {
        let what = format!("run {}/{} · {} · {}", at.run, at.runs, at.scenario, at.mode);
        if self.plain {
            eprintln!("[{what}] {}", self.left());
        }
        self.bar.set_message(what);
    }

    /// A step planned to take `planned` ended with `figures`.
    pub fn end(&self, planned: Duration, figures: &[Figure]) {
        self.bar.inc(millis(planned));
        for f in figures {
            self.line(&describe(f));
        }
    }

    /// Work not in the plan (a repeated round-trip run).
    pub fn add(&self, planned: Duration) {
        self.bar.inc_length(millis(planned));
    }

    /// A line of text above the bar.
    pub fn line(&self, text: &str) {
        if self.silent {
            return;
        }
        if self.plain {
            eprintln!("{text}");
        } else {
            self.bar.println(text);
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
        if !self.silent {
            eprintln!("measured in {}", HumanDuration(self.started.elapsed()));
        }
    }

    fn left(&self) -> String {
        if self.bar.position() == 0 {
            let planned = Duration::from_millis(self.bar.length().unwrap_or(0));
            format!("about {} planned", HumanDuration(planned))
        } else {
            format!("about {} left", HumanDuration(self.bar.eta()))
        }
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

/// One figure as a line: scenario, mode, concurrency, value or error, delivery.
pub fn describe(f: &Figure) -> String {
    let value = match (&f.value, &f.error) {
        (Some(v), _) => format!("{} {}", format_value(*v, &f.unit), f.unit),
        (None, Some(e)) => format!("error: {e}"),
        (None, None) => "-".into(),
    };
    let delivery = f.delivery.map_or(String::new(), |d| {
        format!(
            "  [{} sent, {} received: {}]",
            d.sent,
            d.received,
            d.verdict()
        )
    });
    format!(
        "  {:<12} {:<22} c={:<4} {}{}{}",
        f.scenario,
        f.mode,
        f.concurrency,
        value,
        delivery,
        f.note
            .as_ref()
            .map_or(String::new(), |n| format!("  ({n})"))
    )
}
