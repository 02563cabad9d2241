//! The report of a run: throughput figures and the correctness checks that decide whether it
//! passed.

use std::fmt;

use serde::Serialize;

use crate::delivery::{Delivery, Percentiles};
use crate::engine::ProcessFigures;
use crate::ingest::IngestTotals;
use crate::scenario::TimeMode;
use crate::settle::{Accounting, SettleOutcome};
use crate::virtual_time::ClockSummary;

/// Everything a run measured, printed as text or as one JSON object.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LoadReport {
    pub scenario: String,
    pub tenants: u32,
    pub contacts_per_tenant: u64,
    /// The clock the engine dispatched under, `real` or `virtual`.
    pub time: TimeMode,
    /// Summary of the harness's moves of the virtual clock, `None` under real time.
    pub clock: Option<ClockSummary>,
    /// The figures a comparison reads, at the top level of the JSON object.
    #[serde(flatten)]
    pub headline: Headline,
    pub ingest: IngestSummary,
    pub settle: SettleSummary,
    /// Sends matched with the fakes' receipts; `None` when the fakes could not be read.
    pub delivery: Option<Delivery>,
    /// The engine process's memory and CPU; `None` unless the harness started the engine.
    pub engine_process: Option<ProcessFigures>,
    /// The backlog uploaded before the measured load, if the scenario has one.
    pub background: Option<BackgroundSummary>,
    pub checks: Checks,
    /// Whether every check that could be made passed.
    pub passed: bool,
    /// Failed uploads and snapshot errors, the first few of each.
    pub problems: Vec<String>,
}

/// The headline figures, named as the BullMQ baseline names them. `None` (JSON null) means
/// the run could not measure it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Headline {
    /// Rows the engine read per second of ingest.
    pub ingest_rows_per_s: f64,
    /// Follow-ups the fakes received per second of wall time: first receipt to last under
    /// real time, over the clock phase under virtual time.
    pub sends_per_s: Option<f64>,
    /// From due to receipt at the fakes, on the virtual clock under virtual time.
    pub lateness_ms: Option<Percentiles>,
    pub peak_rss_bytes: Option<u64>,
    /// The engine's CPU time under the measured load (from its first upload to the end of the
    /// run) per 10,000 follow-ups received.
    pub cpu_seconds_per_10k_sends: Option<f64>,
    pub lost: Option<u64>,
    pub duplicates: Option<u64>,
    pub rate_limit_violations: Option<u64>,
}

/// The backlog kept pending through the run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BackgroundSummary {
    pub tenants: u32,
    /// Follow-ups the backlog's uploads created.
    pub pending: u64,
    pub failed_uploads: u64,
    /// Time to create the backlog's uploads, tenant creation left out.
    pub seconds: f64,
    pub rows_per_second: f64,
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
    /// Every follow-up was received by the fakes or ended unsent in the engine.
    pub none_lost: Option<bool>,
    /// No follow-up was received twice.
    pub no_duplicates: Option<bool>,
    /// The fakes saw no account sending beyond its limits.
    pub no_rate_limit_violations: Option<bool>,
}

/// Inputs of [`build`], gathered by the run.
#[derive(Debug)]
pub(crate) struct RunFacts<'a> {
    pub scenario: &'a str,
    pub tenants: u32,
    pub contacts_per_tenant: u64,
    pub time: TimeMode,
    pub ingest: IngestTotals,
    pub ingest_seconds: f64,
    pub expected_follow_ups: u64,
    pub settle: SettleOutcome,
    pub clock: Option<ClockSummary>,
    /// Reason the clock phase ended early, if it did.
    pub clock_problem: Option<String>,
    pub delivery: Option<Delivery>,
    pub rate_limit_violations: Option<u64>,
    pub engine_process: Option<ProcessFigures>,
    pub background: Option<BackgroundSummary>,
}

/// Computes the summaries and checks of a finished run.
pub(crate) fn build(facts: RunFacts<'_>) -> LoadReport {
    let ingest = facts.ingest;
    let generated = u64::from(facts.tenants) * facts.contacts_per_tenant;
    let last = facts.settle.last.clone();
    let settled = last.as_ref().map_or(0, |count| count.settled);
    let seconds_total = facts.ingest_seconds + facts.settle.seconds;
    let exact = last
        .as_ref()
        .is_some_and(|count| matches!(count.accounting, Accounting::Exact | Accounting::PerTenant));

    let checks = Checks {
        rows_balance: ingest.rows == ingest.accepted + ingest.rejected,
        all_rows_read: ingest.rows == generated && ingest.failed_uploads == 0 && !ingest.timed_out,
        rejects_match: ingest.rejected == ingest.expected_rejected,
        all_settled: facts.settle.settled,
        follow_ups_accounted: exact.then_some(settled == facts.expected_follow_ups),
        none_lost: facts.delivery.as_ref().map(|delivery| delivery.lost == 0),
        no_duplicates: facts.delivery.as_ref().map(|delivery| delivery.duplicates == 0),
        no_rate_limit_violations: facts.rate_limit_violations.map(|count| count == 0),
    };
    let passed = checks.rows_balance
        && checks.all_rows_read
        && checks.rejects_match
        && checks.all_settled
        && checks.follow_ups_accounted != Some(false)
        && checks.none_lost != Some(false)
        && checks.no_duplicates != Some(false)
        && checks.no_rate_limit_violations != Some(false);
    let delivery = facts.delivery.as_ref();
    let headline = Headline {
        ingest_rows_per_s: per_second(ingest.rows, facts.ingest_seconds),
        sends_per_s: delivery.map(|delivery| delivery.sends_per_second),
        lateness_ms: delivery.and_then(|delivery| delivery.lateness_ms),
        peak_rss_bytes: facts.engine_process.map(|process| process.peak_rss_bytes),
        cpu_seconds_per_10k_sends: facts.engine_process.zip(delivery).and_then(
            |(process, delivery)| {
                (delivery.received > 0)
                    .then(|| process.load_cpu_seconds * 10_000.0 / delivery.received as f64)
            },
        ),
        lost: delivery.map(|delivery| delivery.lost),
        duplicates: delivery.map(|delivery| delivery.duplicates),
        rate_limit_violations: facts.rate_limit_violations,
    };

    let mut problems = ingest.problems.clone();
    problems.extend(facts.settle.error.clone());
    problems.extend(facts.clock_problem.map(|problem| format!("virtual clock: {problem}")));
    if let Some(clock) = facts.clock.as_ref().filter(|clock| !clock.settled) {
        problems.push(format!(
            "the virtual clock stopped at {} with follow-ups still waiting in the engine",
            clock.ended_at
        ));
    }
    if let Some(background) = facts.background.as_ref().filter(|b| b.failed_uploads > 0) {
        problems.push(format!(
            "{} uploads of the backlog failed: it holds {} follow-ups, not the scenario's",
            background.failed_uploads, background.pending
        ));
    }
    LoadReport {
        scenario: facts.scenario.to_owned(),
        tenants: facts.tenants,
        contacts_per_tenant: facts.contacts_per_tenant,
        time: facts.time,
        clock: facts.clock,
        headline,
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
        delivery: facts.delivery,
        engine_process: facts.engine_process,
        background: facts.background,
        checks,
        passed,
        problems,
    }
}

pub(crate) fn per_second(count: u64, seconds: f64) -> f64 {
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
        if let Some(clock) = &self.clock {
            writeln!(
                f,
                "time: virtual; the clock moved {:.2} days ({:.0} s) in {:.1}s of wall time \
                 (dispatch rounds {}, clock run requests {}); lateness is in virtual time, \
                 sends/s in wall time",
                clock.virtual_seconds / 86_400.0,
                clock.virtual_seconds,
                clock.wall_seconds,
                clock.rounds,
                clock.requests,
            )?;
        }
        if let Some(background) = &self.background {
            writeln!(
                f,
                "backlog: {} follow-ups pending in {} tenants, uploaded in {:.1}s ({:.0} rows/s)",
                background.pending,
                background.tenants,
                background.seconds,
                background.rows_per_second
            )?;
        }
        self.fmt_delivery(f)?;
        self.fmt_checks(f)?;
        for problem in &self.problems {
            writeln!(f, "problem: {problem}")?;
        }
        writeln!(f, "{}", if self.passed { "PASSED" } else { "FAILED" })
    }
}

impl LoadReport {
    fn fmt_delivery(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(delivery) = &self.delivery else {
            return writeln!(f, "delivery: not measured (the fakes' receipts were not read)");
        };
        let (rate_clock, lateness_clock) = match self.time {
            TimeMode::Real => ("", ""),
            TimeMode::Virtual => (" (wall clock)", " (virtual time)"),
        };
        write!(
            f,
            "delivery: {} of {} follow-ups received, {:.0} sends/s{rate_clock}, {} lost, {} \
             duplicates",
            delivery.received,
            delivery.expected,
            delivery.sends_per_second,
            delivery.lost,
            delivery.duplicates
        )?;
        match delivery.lateness_ms {
            Some(late) => writeln!(
                f,
                ", lateness{lateness_clock} p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
                late.p50, late.p90, late.p99, late.max
            )?,
            None => writeln!(f, ", lateness not measured")?,
        }
        if let Some(process) = &self.engine_process {
            writeln!(
                f,
                "engine: peak RSS {:.1} MiB, {:.2} CPU s, {:.2} of them under the measured load{}",
                process.peak_rss_bytes as f64 / 1_048_576.0,
                process.cpu_seconds,
                process.load_cpu_seconds,
                self.headline
                    .cpu_seconds_per_10k_sends
                    .map(|cpu| format!(" ({cpu:.2} s per 10,000 sends)"))
                    .unwrap_or_default()
            )?;
        }
        Ok(())
    }

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
        writeln!(f, "check settled == created x steps: {accounted}")?;
        let optional = |check: Option<bool>| match check {
            Some(ok) => mark(ok),
            None => "not checked (the fakes' receipts were not read)",
        };
        writeln!(f, "check none lost: {}", optional(checks.none_lost))?;
        writeln!(f, "check none received twice: {}", optional(checks.no_duplicates))?;
        writeln!(f, "check no rate-limit violation: {}", optional(checks.no_rate_limit_violations))
    }
}

#[cfg(test)]
mod tests;
