//! The report of a run: throughput figures and the correctness checks that decide whether it
//! passed.

use std::fmt;

use serde::Serialize;

use crate::ingest::IngestTotals;
use crate::settle::{Accounting, SettleOutcome};

/// Everything a run measured, printed as text or as one JSON object.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LoadReport {
    pub scenario: String,
    pub tenants: u32,
    pub contacts_per_tenant: u64,
    pub ingest: IngestSummary,
    pub settle: SettleSummary,
    pub checks: Checks,
    /// Whether every check that could be made passed.
    pub passed: bool,
    /// Failed uploads and snapshot errors, the first few of each.
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IngestSummary {
    #[serde(flatten)]
    pub totals: IngestTotals,
    /// Wall time from the first upload starting to the last one ending.
    pub seconds: f64,
    /// Rows the engine read per second of `seconds`.
    pub rows_per_second: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SettleSummary {
    /// Follow-ups the uploads created: created schedules times steps per sequence.
    pub expected_follow_ups: u64,
    /// Follow-ups in an end state at the last poll.
    pub settled: u64,
    /// Follow-ups that could still change state at the last poll.
    pub unsettled: u64,
    pub accounting: Option<Accounting>,
    /// Engine-wide follow-ups per state at the last poll.
    pub by_state: std::collections::BTreeMap<String, u64>,
    /// Time from the end of ingest until the follow-ups settled or the phase gave up.
    pub seconds_after_ingest: f64,
    /// Time from the start of ingest until then; dispatch overlaps ingest, so throughput is
    /// measured over this span.
    pub seconds_total: f64,
    /// Settled follow-ups per second of `seconds_total`.
    pub follow_ups_per_second: f64,
    pub polls: u32,
    /// Whether the phase ended with follow-ups still unsettled.
    pub timed_out: bool,
}

/// The correctness checks. `None` means the check could not be made.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Checks {
    /// The engine's counts balance: rows read equals accepted plus rejected.
    pub rows_balance: bool,
    /// Every generated row was read, by uploads that all completed in time.
    pub all_rows_read: bool,
    /// The engine rejected exactly the rows generated invalid.
    pub rejects_match: bool,
    /// No follow-up of the run is left pending, claimed, sending or in retry.
    pub all_settled: bool,
    /// Settled follow-ups equal those the uploads created; only checkable with exact
    /// accounting.
    pub follow_ups_accounted: Option<bool>,
}

/// Inputs of [`build`], gathered by the run.
#[derive(Debug)]
pub(crate) struct RunFacts<'a> {
    pub scenario: &'a str,
    pub tenants: u32,
    pub contacts_per_tenant: u64,
    pub ingest: IngestTotals,
    pub ingest_seconds: f64,
    pub expected_follow_ups: u64,
    pub settle: SettleOutcome,
}

/// Computes the summaries and checks of a finished run.
pub(crate) fn build(facts: RunFacts<'_>) -> LoadReport {
    let ingest = facts.ingest;
    let generated = u64::from(facts.tenants) * facts.contacts_per_tenant;
    let last = facts.settle.last.clone();
    let settled = last.as_ref().map_or(0, |count| count.settled);
    let seconds_total = facts.ingest_seconds + facts.settle.seconds;
    let exact = last.as_ref().is_some_and(|count| count.accounting == Accounting::Exact);

    let checks = Checks {
        rows_balance: ingest.rows == ingest.accepted + ingest.rejected,
        all_rows_read: ingest.rows == generated && ingest.failed_uploads == 0 && !ingest.timed_out,
        rejects_match: ingest.rejected == ingest.expected_rejected,
        all_settled: facts.settle.settled,
        follow_ups_accounted: exact.then_some(settled == facts.expected_follow_ups),
    };
    let passed = checks.rows_balance
        && checks.all_rows_read
        && checks.rejects_match
        && checks.all_settled
        && checks.follow_ups_accounted != Some(false);

    let mut problems = ingest.problems.clone();
    problems.extend(facts.settle.error.clone());
    LoadReport {
        scenario: facts.scenario.to_owned(),
        tenants: facts.tenants,
        contacts_per_tenant: facts.contacts_per_tenant,
        ingest: IngestSummary {
            rows_per_second: per_second(ingest.rows, facts.ingest_seconds),
            totals: ingest,
            seconds: facts.ingest_seconds,
        },
        settle: SettleSummary {
            expected_follow_ups: facts.expected_follow_ups,
            settled,
            unsettled: last.as_ref().map_or(0, |count| count.unsettled),
            accounting: last.as_ref().map(|count| count.accounting),
            by_state: last.map(|count| count.by_state).unwrap_or_default(),
            seconds_after_ingest: facts.settle.seconds,
            seconds_total,
            follow_ups_per_second: per_second(settled, seconds_total),
            polls: facts.settle.polls,
            timed_out: !facts.settle.settled,
        },
        checks,
        passed,
        problems,
    }
}

fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 { count as f64 / seconds } else { 0.0 }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ingest = &self.ingest;
        let totals = &ingest.totals;
        let settle = &self.settle;
        writeln!(
            f,
            "scenario {}: {} tenants x {} contacts",
            self.scenario, self.tenants, self.contacts_per_tenant
        )?;
        writeln!(
            f,
            "ingest: {} rows in {:.1}s ({:.0} rows/s), {} accepted ({} created, {} duplicates), \
             {} rejected of {} generated invalid, {} of {} uploads failed",
            totals.rows,
            ingest.seconds,
            ingest.rows_per_second,
            totals.accepted,
            totals.created,
            totals.duplicates,
            totals.rejected,
            totals.expected_rejected,
            totals.failed_uploads,
            totals.uploads,
        )?;
        writeln!(
            f,
            "settle: {} of {} follow-ups settled, {} unsettled, {:.1}s after ingest, \
             {:.0} follow-ups/s over {:.1}s",
            settle.settled,
            settle.expected_follow_ups,
            settle.unsettled,
            settle.seconds_after_ingest,
            settle.follow_ups_per_second,
            settle.seconds_total,
        )?;
        self.fmt_checks(f)?;
        for problem in &self.problems {
            writeln!(f, "problem: {problem}")?;
        }
        writeln!(f, "{}", if self.passed { "PASSED" } else { "FAILED" })
    }
}

impl LoadReport {
    fn fmt_checks(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = |ok: bool| if ok { "ok" } else { "FAILED" };
        let checks = &self.checks;
        writeln!(f, "check rows == accepted + rejected: {}", mark(checks.rows_balance))?;
        writeln!(f, "check every generated row read: {}", mark(checks.all_rows_read))?;
        writeln!(f, "check rejects match generated invalid rows: {}", mark(checks.rejects_match))?;
        writeln!(f, "check every follow-up settled: {}", mark(checks.all_settled))?;
        let accounted = match checks.follow_ups_accounted {
            Some(ok) => mark(ok),
            None => "not checked (the engine serves other tenants, or no snapshot was read)",
        };
        writeln!(f, "check settled == created x steps: {accounted}")
    }
}

#[cfg(test)]
mod tests;
