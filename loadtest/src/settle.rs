//! The settle phase: polls the engine's snapshot until every follow-up of the run has reached
//! an end state, or the deadline passes.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use followup_core::api::{AdminSnapshot, TenantFollowUpCounts, TenantSummary};
use followup_core::domain::FollowUpState;
use followup_core::ids::TenantId;
use futures_util::{StreamExt as _, TryStreamExt as _, stream};
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
    /// Each of the run's tenants was counted in the store at the poll
    /// (`GET /admin/v1/tenants/{id}/follow-up-counts`): exact whatever else the engine serves,
    /// and it starts no pass over the whole store.
    PerTenant,
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

/// Returns whether the engine serves only the run's tenants, so that its totals are the run's.
pub(crate) fn is_exact(snapshot: &AdminSnapshot, run_tenants: &HashSet<TenantId>) -> bool {
    // An engine older than `tenant_count` lists every tenant in the snapshot.
    let tenant_count = match snapshot.tenant_count {
        0 => snapshot.tenants.len() as u64,
        count => count,
    };
    tenant_count == run_tenants.len() as u64
        && snapshot.tenants.iter().all(|tenant| run_tenants.contains(&tenant.id))
}

/// Counts the run's follow-ups: from the engine-wide totals when the engine serves only the
/// run's tenants, else from `ours`, the run's tenant summaries (read through
/// `tenant-summaries`, since a snapshot lists only the first tenants by backlog).
pub(crate) fn count(
    snapshot: &AdminSnapshot,
    run_tenants: &HashSet<TenantId>,
    ours: &[TenantSummary],
) -> SettleCount {
    if is_exact(snapshot, run_tenants) {
        let (settled, unsettled) = split_totals(&snapshot.totals);
        return SettleCount {
            accounting: Accounting::Exact,
            settled,
            unsettled,
            by_state: snapshot.totals.clone(),
        };
    }

    let (mut settled, mut unsettled) = (0, 0);
    for tenant in ours.iter().filter(|tenant| run_tenants.contains(&tenant.id)) {
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

/// Largest number of run tenants the phase counts one by one. Beyond it, a poll would cost a
/// request per tenant, so the phase reads the operator view's counts instead.
pub(crate) const MAX_TENANTS_COUNTED_APART: usize = 200;

/// Requests in flight at once while counting tenants one by one.
const TENANT_COUNT_CONCURRENCY: usize = 8;

/// Adds up the run's tenants' per-state counts.
pub(crate) fn count_per_tenant(counts: &[TenantFollowUpCounts]) -> SettleCount {
    let mut by_state = BTreeMap::new();
    for tenant in counts {
        for (state, count) in &tenant.states {
            *by_state.entry(state.clone()).or_insert(0) += count;
        }
    }
    let (settled, unsettled) = split_totals(&by_state);
    SettleCount { accounting: Accounting::PerTenant, settled, unsettled, by_state }
}

/// Largest page of tenant summaries the engine gives.
const SUMMARY_PAGE: u64 = 500;

/// Reads the summaries of every tenant whose name or id contains `filter`, page by page.
async fn run_summaries(client: &EngineClient, filter: &str) -> anyhow::Result<Vec<TenantSummary>> {
    let mut summaries = Vec::new();
    loop {
        let offset = summaries.len() as u64;
        let page = client.tenant_summaries(filter, offset, SUMMARY_PAGE).await?;
        let got = page.tenants.len();
        summaries.extend(page.tenants);
        if got == 0 || summaries.len() as u64 >= page.total {
            return Ok(summaries);
        }
    }
}

/// Reads one count, with the instant of the engine's count when it may predate the poll:
/// each tenant's own count for a small run, else the snapshot, and the run's tenant pages
/// when the engine has others.
async fn poll(
    client: &EngineClient,
    run_tenants: &HashSet<TenantId>,
    tenant_filter: &str,
) -> anyhow::Result<(Option<String>, SettleCount)> {
    if run_tenants.len() <= MAX_TENANTS_COUNTED_APART {
        let counts: Vec<TenantFollowUpCounts> = stream::iter(run_tenants.iter().copied())
            .map(|tenant| client.tenant_follow_up_counts(tenant))
            .buffer_unordered(TENANT_COUNT_CONCURRENCY)
            .try_collect()
            .await?;
        return Ok((None, count_per_tenant(&counts)));
    }
    let snapshot = client.snapshot().await?;
    let ours = if is_exact(&snapshot, run_tenants) {
        Vec::new()
    } else {
        run_summaries(client, tenant_filter).await?
    };
    Ok((Some(snapshot.now.clone()), count(&snapshot, run_tenants, &ours)))
}

/// Returns whether a count the engine made at `counted_at` may end the settle phase: one made
/// after `first_count_at`, or under a virtual clock one made at or after `counted_since`.
pub(crate) fn count_may_end_phase(
    counted_at: &str,
    first_count_at: &str,
    counted_since: Option<DateTime<Utc>>,
) -> bool {
    match counted_since {
        Some(since) => DateTime::parse_from_rfc3339(counted_at).is_ok_and(|at| at >= since),
        None => counted_at != first_count_at,
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

/// Polling settings of the settle phase.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Polling {
    pub interval: Duration,
    pub deadline: Instant,
    /// Under a virtual clock, the instant the clock stopped at; see [`wait_until_settled`].
    pub counted_since: Option<DateTime<Utc>>,
    pub show_progress: bool,
}

/// Polls every `polling.interval` until the run's follow-ups are settled, the deadline passes
/// or [`MAX_FAILED_POLLS`] snapshots in a row fail. `expected` only feeds the progress line.
///
/// The snapshot's counts come from a pass in the background every few seconds, and `now` in
/// its response records when. A count whose `now` equals the first poll's may predate the end of
/// ingest, so only counts made after the first poll may end the phase. A virtual clock stops
/// moving once dispatch is over, so that rule would never end the phase: with
/// `counted_since`, any count the engine made at or after that instant on its clock may end it
/// instead. Counts read per tenant are made at the request and may end it at once.
pub(crate) async fn wait_until_settled(
    client: &EngineClient,
    run_tenants: &HashSet<TenantId>,
    tenant_filter: &str,
    expected: u64,
    polling: Polling,
) -> SettleOutcome {
    let Polling { interval: poll_interval, deadline, counted_since, show_progress } = polling;
    let started = Instant::now();
    let progress = Progress::start("settle", "follow-ups", expected, show_progress);
    let mut outcome =
        SettleOutcome { last: None, settled: false, seconds: 0.0, polls: 0, error: None };
    let mut failures = 0;
    let mut last_print: Option<Instant> = None;
    let mut first_count_at: Option<String> = None;

    // The count of polls is bounded by the time left divided by the interval, plus one.
    let left = deadline.saturating_duration_since(started);
    let max_polls = left.as_millis() / poll_interval.as_millis().max(1) + 1;
    for _ in 0..max_polls {
        outcome.polls += 1;
        match poll(client, run_tenants, tenant_filter).await {
            Ok((counted_at, count)) => {
                failures = 0;
                let current = match counted_at {
                    None => true,
                    Some(counted_at) => {
                        let first = first_count_at.get_or_insert_with(|| counted_at.clone());
                        count_may_end_phase(&counted_at, first, counted_since)
                    }
                };
                outcome.settled = count.unsettled == 0 && current;
                if last_print.is_none_or(|at| at.elapsed() >= PROGRESS_INTERVAL) || outcome.settled
                {
                    progress.print(count.settled);
                    last_print = Some(Instant::now());
                }
                outcome.last = Some(count);
            }
            Err(error) => {
                failures += 1;
                eprintln!("settle: count failed ({failures} in a row): {error:#}");
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
