//! Progress lines on stderr: count done, rate and estimated time left.

use std::time::Duration;

use tokio::time::Instant;

/// Interval between two progress lines of one phase.
pub(crate) const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);

/// Progress of one phase with a known total.
#[derive(Debug)]
pub(crate) struct Progress {
    /// Phase name at the start of each line, such as `ingest`.
    phase: &'static str,
    /// Name of the counted unit, plural, such as `rows`.
    unit: &'static str,
    total: u64,
    started: Instant,
    /// Whether lines are printed at all; off for quiet library callers.
    enabled: bool,
}

impl Progress {
    pub(crate) fn start(
        phase: &'static str,
        unit: &'static str,
        total: u64,
        enabled: bool,
    ) -> Self {
        Self { phase, unit, total, started: Instant::now(), enabled }
    }

    /// Prints one line for `done` units so far.
    pub(crate) fn print(&self, done: u64) {
        if self.enabled {
            let line = format_line(self.phase, self.unit, done, self.total, self.started.elapsed());
            eprintln!("{line}");
        }
    }
}

/// Formats a progress line. The rate is the average since the phase started, and the
/// estimate assumes it holds for the rest.
pub(crate) fn format_line(
    phase: &str,
    unit: &str,
    done: u64,
    total: u64,
    elapsed: Duration,
) -> String {
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 { done as f64 / seconds } else { 0.0 };
    let percent = if total == 0 { 100.0 } else { done as f64 * 100.0 / total as f64 };
    let left = total.saturating_sub(done);
    let eta = if left == 0 {
        "done".to_owned()
    } else if rate > 0.0 {
        format!("ETA {:.0}s", left as f64 / rate)
    } else {
        "ETA unknown".to_owned()
    };
    // A slow phase, such as kills of a crash run, would show "0 kills/s" without a decimal.
    let rate = if rate < 10.0 { format!("{rate:.2}") } else { format!("{rate:.0}") };
    format!(
        "{phase}: {done}/{total} {unit} ({percent:.1}%), {rate} {unit}/s, {eta}, \
         {seconds:.1}s elapsed"
    )
}

#[cfg(test)]
mod tests;
