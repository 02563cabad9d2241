//! Runs under virtual time: the engine's virtual clock does not move while the harness uploads,
//! then the harness moves it with `POST /admin/v1/clock/run`, request after request, until
//! every follow-up has been dispatched.

use std::time::Duration;

use anyhow::{bail, ensure};
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use tokio::time::Instant;

use crate::client::{ClockRunOutcome, EngineClient};
use crate::progress::PROGRESS_INTERVAL;
use crate::scenario::{Scenario, TimeMode};

/// Wall time each clock run request may dispatch for. Short enough for a progress line between
/// two requests, long enough that the requests cost little beside the dispatch.
const CLOCK_RUN_WALL_BUDGET: Duration = Duration::from_millis(1_000);

/// Virtual time the clock may run past the scenario's last planned due instant: room for rate
/// limits and send windows, which can push follow-ups later. A send window is at most a week
/// away.
/// NOTE: follow-ups pushed further than this (a per-day limit far below the run's size) stay
/// unsettled, and the run fails its settle check.
pub(crate) const CLOCK_MARGIN: TimeDelta = TimeDelta::days(8);

/// Summary of the clock phase, for the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClockSummary {
    /// The virtual instant the run started at: the clock stood there through ingest.
    pub started_at: DateTime<Utc>,
    /// The virtual instant the clock ended at.
    pub ended_at: DateTime<Utc>,
    /// Virtual seconds from `started_at` to `ended_at`.
    pub virtual_seconds: f64,
    /// Wall time the harness spent moving the clock, in seconds.
    pub wall_seconds: f64,
    /// Dispatch rounds the engine ran.
    pub rounds: u64,
    /// Clock run requests made.
    pub requests: u64,
    /// Whether the engine reported that nothing was waiting any more.
    pub settled: bool,
}

/// Checks that the engine's clock is the one the scenario requests, and returns the virtual
/// clock's instant under virtual time.
pub(crate) async fn check_engine_clock(
    client: &EngineClient,
    scenario: &Scenario,
    url: &str,
) -> anyhow::Result<Option<DateTime<Utc>>> {
    let clock = client.clock().await?;
    if let Some(clock) = clock.filter(|clock| clock.is_virtual && !clock.operator_driven) {
        bail!(
            "the engine at {url} runs on a virtual clock that its own process moves (followup \
             demo or a test), at {}: load an engine started with `followup serve` instead",
            clock.now
        );
    }
    let virtual_now = clock.filter(|clock| clock.is_virtual).map(|clock| clock.now);
    match (scenario.time, virtual_now) {
        (TimeMode::Real, None) => Ok(None),
        (TimeMode::Virtual, Some(now)) => Ok(Some(now)),
        (TimeMode::Virtual, None) => bail!(
            "the scenario sets time: virtual, but the engine at {url} runs on the system clock: \
             start it with `followup serve --virtual-clock --providers fake`, or pass --engine \
             so that the harness starts one"
        ),
        (TimeMode::Real, Some(_)) => bail!(
            "the engine at {url} runs on a virtual clock, which does not move unless driven: set \
             time: virtual in the scenario, or load an engine on the system clock"
        ),
    }
}

/// Reads the virtual clock and fails if it is not at `expected`: another client moved it, so
/// the due instants the harness computes from `expected` would be wrong.
pub(crate) async fn check_clock_still(
    client: &EngineClient,
    expected: DateTime<Utc>,
    phase: &str,
) -> anyhow::Result<()> {
    let now = virtual_now(client).await?;
    ensure!(
        now == expected,
        "the virtual clock moved from {expected} to {now} during {phase}: another client drives \
         the engine's clock, so the run's due instants are unknown"
    );
    Ok(())
}

/// Reads the engine's virtual clock.
pub(crate) async fn virtual_now(client: &EngineClient) -> anyhow::Result<DateTime<Utc>> {
    match client.clock().await? {
        Some(clock) if clock.is_virtual && clock.operator_driven => Ok(clock.now),
        _ => bail!("the engine no longer reports a virtual clock that its operator API moves"),
    }
}

/// Returns the scenario's last planned due instant of a run started at `started_at`.
pub(crate) fn planned_end(
    scenario: &Scenario,
    started_at: DateTime<Utc>,
) -> anyhow::Result<DateTime<Utc>> {
    let span = i64::try_from(scenario.virtual_span_seconds()?).unwrap_or(i64::MAX);
    Ok(started_at + TimeDelta::seconds(span))
}

/// Moves the engine's virtual clock from `started_at` up to `limit`, one bounded request after
/// another, until the engine reports nothing waiting, the clock reaches `limit`, a request
/// fails or `deadline` passes. Returns the summary and the reason of a failure. The progress
/// line counts virtual seconds up to `planned_end`, the scenario's last planned due instant.
pub(crate) async fn drive_clock(
    client: &EngineClient,
    started_at: DateTime<Utc>,
    planned_end: DateTime<Utc>,
    limit: DateTime<Utc>,
    deadline: Instant,
    show_progress: bool,
) -> (ClockSummary, Option<String>) {
    let wall_started = Instant::now();
    let planned_seconds = (planned_end - started_at).num_seconds().max(0) as u64;
    let mut summary = ClockSummary {
        started_at,
        ended_at: started_at,
        virtual_seconds: 0.0,
        wall_seconds: 0.0,
        rounds: 0,
        requests: 0,
        settled: false,
    };
    let mut error = None;
    let mut last_print = Instant::now();
    loop {
        if Instant::now() >= deadline {
            error = Some(format!(
                "timed out moving the virtual clock at {}: raise timeout_seconds",
                summary.ended_at
            ));
            break;
        }
        summary.requests += 1;
        let run = match client.run_clock(limit, CLOCK_RUN_WALL_BUDGET).await {
            Ok(run) => run,
            Err(failure) => {
                error = Some(format!("{failure:#}"));
                break;
            }
        };
        summary.rounds += run.rounds;
        summary.ended_at = run.now;
        let advanced = (run.now - started_at).num_seconds().max(0) as u64;
        let done = run.outcome != ClockRunOutcome::BudgetSpent;
        if show_progress && (done || last_print.elapsed() >= PROGRESS_INTERVAL) {
            let elapsed = wall_started.elapsed();
            eprintln!("{}", clock_line(advanced, planned_seconds, summary.rounds, elapsed));
            last_print = Instant::now();
        }
        if done {
            summary.settled = run.outcome == ClockRunOutcome::Settled;
            break;
        }
    }
    summary.wall_seconds = wall_started.elapsed().as_secs_f64();
    summary.virtual_seconds =
        (summary.ended_at - started_at).num_milliseconds().max(0) as f64 / 1_000.0;
    (summary, error)
}

/// Formats a progress line of the clock phase: virtual seconds moved out of those planned, and
/// the rate in virtual seconds per wall second. It gives no estimate of the time left, because
/// the clock jumps over idle days but crawls while rate limits pace the sends.
pub(crate) fn clock_line(advanced: u64, planned: u64, rounds: u64, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 { advanced as f64 / seconds } else { 0.0 };
    let percent = if planned == 0 { 100.0 } else { advanced as f64 * 100.0 / planned as f64 };
    format!(
        "clock: {advanced}/{planned} virtual seconds ({percent:.1}%), {rate:.0} virtual \
         seconds/s, {rounds} dispatch rounds, {seconds:.1}s elapsed"
    )
}

#[cfg(test)]
mod tests;
