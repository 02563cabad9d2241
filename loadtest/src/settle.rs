//! The settle phase: polls the engine's snapshot until every follow-up of the run has reached
//! an end state, or the deadline passes.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use followup_core::api::AdminSnapshot;
use followup_core::domain::FollowUpState;
use followup_core::ids::TenantId;
use serde::Serialize;
use tokio::time::{Instant, sleep};

use crate::client::EngineClient;
use crate::progress::{PROGRESS_INTERVAL, Progress};

/// Snapshot failures in a row after which the phase gives up; an engine under load may miss
/// a poll or two.
const MAX_FAILED_POLLS: u32 = 5;

/// Method used to count the run's follow-ups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Accounting {
    /// Every tenant of the engine belongs to the run, so the engine-wide count per state is
    /// the run's own.
    Exact,
    /// The engine also serves other tenants. Only the run's pending, retry, sent and failed
    /// follow-ups are visible per tenant, and follow-ups claimed or sending are counted
    /// engine-wide, so `settled` misses skipped, cancelled and in-doubt ones.
    RunTenants,
}

/// Follow-up counts read from one snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct SettleCount {
    pub accounting: Accounting,
    /// Follow-ups in an end state.
    pub settled: u64,
    /// Follow-ups that may still change state.
    pub unsettled: u64,
    /// Engine-wide follow-ups per state.
    pub by_state: BTreeMap<String, u64>,
}

/// Result of the settle phase.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct SettleOutcome {
    /// The last count read, or `None` when no snapshot could be read.
    pub last: Option<SettleCount>,
    /// Whether the last count had no unsettled follow-up.
    pub settled: bool,
    /// Time from the end of ingest until the count read settled, or until the phase gave up.
    pub seconds: f64,
    pub polls: u32,
    /// The last snapshot error, when the phase gave up on failures.
    pub error: Option<String>,
}

/// Counts the run's follow-ups in `snapshot`; `run_tenants` are the tenants the run created.
pub(crate) fn count(snapshot: &AdminSnapshot, run_tenants: &HashSet<TenantId>) -> SettleCount {
    let exact = snapshot.tenants.iter().all(|tenant| run_tenants.contains(&tenant.id));
    if exact {
        let (settled, unsettled) = split_totals(&snapshot.totals);
        return SettleCount {
            accounting: Accounting::Exact,
            settled,
            unsettled,
            by_state: snapshot.totals.clone(),
        };
    }

    let ours = snapshot.tenants.iter().filter(|tenant| run_tenants.contains(&tenant.id));
    let (mut settled, mut unsettled) = (0, 0);
    for tenant in ours {
        settled += tenant.sent + tenant.failed;
        unsettled += tenant.backlog;
    }
    // Claimed and sending follow-ups are counted only engine-wide, so they may be another
    // tenant's; counting them all can only delay the end of the phase.
    for state in [FollowUpState::Claimed, FollowUpState::Sending] {
        unsettled += snapshot.totals.get(state.as_str()).copied().unwrap_or(0);
    }
    SettleCount {
        accounting: Accounting::RunTenants,
        settled,
        unsettled,
        by_state: snapshot.totals.clone(),
    }
}

/// Splits per-state totals into settled and unsettled. A state name this build does not know
/// counts as unsettled, so that an engine with new states cannot end the phase early.
fn split_totals(totals: &BTreeMap<String, u64>) -> (u64, u64) {
    let (mut settled, mut unsettled) = (0, 0);
    for (name, count) in totals {
        let known = FollowUpState::ALL.iter().find(|state| state.as_str() == name);
        match known {
            Some(state) if state.is_settled() => settled += count,
            _ => unsettled += count,
        }
    }
    (settled, unsettled)
}

/// Polls every `poll_interval` until the run's follow-ups are settled, `deadline` passes or
/// [`MAX_FAILED_POLLS`] snapshots in a row fail. `expected` only feeds the progress line.
pub(crate) async fn wait_until_settled(
    client: &EngineClient,
    run_tenants: &HashSet<TenantId>,
    expected: u64,
    poll_interval: Duration,
    deadline: Instant,
    show_progress: bool,
) -> SettleOutcome {
    let started = Instant::now();
    let progress = Progress::start("settle", "follow-ups", expected, show_progress);
    let mut outcome =
        SettleOutcome { last: None, settled: false, seconds: 0.0, polls: 0, error: None };
    let mut failures = 0;
    let mut last_print: Option<Instant> = None;

    // The count of polls is bounded by the time left divided by the interval, plus one.
    let left = deadline.saturating_duration_since(started);
    let max_polls = left.as_millis() / poll_interval.as_millis().max(1) + 1;
    for _ in 0..max_polls {
        outcome.polls += 1;
        match client.snapshot().await {
            Ok(snapshot) => {
                failures = 0;
                let count = count(&snapshot, run_tenants);
                outcome.settled = count.unsettled == 0;
                if last_print.is_none_or(|at| at.elapsed() >= PROGRESS_INTERVAL) || outcome.settled
                {
                    progress.print(count.settled);
                    last_print = Some(Instant::now());
                }
                outcome.last = Some(count);
            }
            Err(error) => {
                failures += 1;
                eprintln!("settle: snapshot failed ({failures} in a row): {error:#}");
                outcome.error = Some(format!("{error:#}"));
                if failures >= MAX_FAILED_POLLS {
                    break;
                }
            }
        }
        if outcome.settled || Instant::now() + poll_interval > deadline {
            break;
        }
        sleep(poll_interval).await;
    }
    if outcome.settled {
        outcome.error = None;
    }
    outcome.seconds = started.elapsed().as_secs_f64();
    outcome
}

#[cfg(test)]
mod tests;
