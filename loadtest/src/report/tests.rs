use std::collections::BTreeMap;

use super::*;
use crate::settle::SettleCount;

fn ingest(rows: u64, rejected: u64, expected_rejected: u64) -> IngestTotals {
    IngestTotals {
        uploads: 4,
        rows_sent: rows,
        rows,
        accepted: rows - rejected,
        created: rows - rejected,
        rejected,
        expected_rejected,
        ..IngestTotals::default()
    }
}

fn settled(accounting: Accounting, settled: u64, unsettled: u64) -> SettleOutcome {
    SettleOutcome {
        last: Some(SettleCount { accounting, settled, unsettled, by_state: BTreeMap::new() }),
        settled: unsettled == 0,
        seconds: 2.0,
        polls: 3,
        error: None,
    }
}

fn facts(ingest: IngestTotals, settle: SettleOutcome) -> RunFacts<'static> {
    let expected_follow_ups = ingest.created * 2;
    RunFacts {
        scenario: "test",
        tenants: 2,
        contacts_per_tenant: 500,
        time: TimeMode::Real,
        ingest,
        ingest_seconds: 2.0,
        expected_follow_ups,
        settle,
        clock: None,
        clock_problem: None,
        delivery: None,
        rate_limit_violations: None,
        engine_process: None,
        background: None,
    }
}

#[test]
fn clean_run_passes() {
    let report = build(facts(ingest(1_000, 50, 50), settled(Accounting::Exact, 1_900, 0)));
    assert!(report.checks.rows_balance);
    assert!(report.checks.all_rows_read);
    assert!(report.checks.rejects_match);
    assert!(report.checks.all_settled);
    assert_eq!(report.checks.follow_ups_accounted, Some(true));
    assert!(report.passed);
    assert!((report.ingest.rows_per_second - 500.0).abs() < 1e-9);
    assert!((report.settle.follow_ups_per_second - 475.0).abs() < 1e-9);
}

#[test]
fn missing_follow_ups_fail() {
    let report = build(facts(ingest(1_000, 50, 50), settled(Accounting::Exact, 1_899, 0)));
    assert_eq!(report.checks.follow_ups_accounted, Some(false));
    assert!(!report.passed);
}

#[test]
fn unsettled_run_fails() {
    let report = build(facts(ingest(1_000, 50, 50), settled(Accounting::Exact, 1_000, 900)));
    assert!(!report.checks.all_settled);
    assert!(report.settle.timed_out);
    assert!(!report.passed);
}

#[test]
fn unexpected_rejects_fail() {
    let report = build(facts(ingest(1_000, 60, 50), settled(Accounting::Exact, 1_880, 0)));
    assert!(!report.checks.rejects_match);
    assert!(!report.passed);
}

#[test]
fn short_ingest_fails() {
    let report = build(facts(ingest(900, 45, 45), settled(Accounting::Exact, 1_710, 0)));
    assert!(report.checks.rows_balance);
    assert!(!report.checks.all_rows_read);
    assert!(!report.passed);
}

#[test]
fn unbalanced_counts_fail() {
    let mut totals = ingest(1_000, 50, 50);
    totals.accepted -= 1;
    let report = build(facts(totals, settled(Accounting::Exact, 1_900, 0)));
    assert!(!report.checks.rows_balance);
    assert!(!report.passed);
}

#[test]
fn shared_engine_skips_accounting_check() {
    let report = build(facts(ingest(1_000, 50, 50), settled(Accounting::RunTenants, 1_850, 0)));
    assert_eq!(report.checks.follow_ups_accounted, None);
    assert!(report.passed);
}

#[test]
fn no_snapshot_fails() {
    let outcome = SettleOutcome {
        last: None,
        settled: false,
        seconds: 1.0,
        polls: 5,
        error: Some("snapshot request failed".to_owned()),
    };
    let report = build(facts(ingest(1_000, 50, 50), outcome));
    assert!(!report.passed);
    assert!(report.problems.iter().any(|problem| problem.contains("snapshot")));
}

#[test]
fn json_has_flat_ingest_fields() {
    let report = build(facts(ingest(1_000, 50, 50), settled(Accounting::Exact, 1_900, 0)));
    let json = serde_json::to_value(&report).expect("serializable");
    assert_eq!(json["ingest"]["rows"], 1_000);
    assert_eq!(json["ingest"]["rejected"], 50);
    assert_eq!(json["settle"]["accounting"], "exact");
    assert_eq!(json["checks"]["follow_ups_accounted"], true);
    assert_eq!(json["passed"], true);
}

#[test]
fn text_report_lists_checks() {
    let report = build(facts(ingest(1_000, 50, 50), settled(Accounting::Exact, 1_900, 0)));
    let text = report.to_string();
    assert!(text.contains("ingest: 1000 rows"), "{text}");
    assert!(text.contains("check every follow-up settled: ok"), "{text}");
    assert!(text.ends_with("PASSED\n"), "{text}");
}

fn clock(settled: bool) -> ClockSummary {
    let started_at = chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("valid instant");
    ClockSummary {
        started_at,
        ended_at: started_at + chrono::TimeDelta::days(3),
        virtual_seconds: 3.0 * 86_400.0,
        wall_seconds: 1.5,
        rounds: 40,
        requests: 2,
        settled,
    }
}

#[test]
fn virtual_time_named_in_text_and_json() {
    let mut facts = facts(ingest(1_000, 50, 50), settled(Accounting::Exact, 1_900, 0));
    facts.time = TimeMode::Virtual;
    facts.clock = Some(clock(true));
    let report = build(facts);
    assert!(report.passed, "{report}");
    let text = report.to_string();
    assert!(text.contains("time: virtual; the clock moved 3.00 days (259200 s)"), "{text}");
    let json = serde_json::to_value(&report).expect("serializable");
    assert_eq!(json["time"], "virtual");
    assert_eq!(json["clock"]["virtual_seconds"], 259_200.0);
    assert_eq!(json["clock"]["wall_seconds"], 1.5);
}

#[test]
fn real_time_named_in_json() {
    let report = build(facts(ingest(1_000, 50, 50), settled(Accounting::Exact, 1_900, 0)));
    let json = serde_json::to_value(&report).expect("serializable");
    assert_eq!(json["time"], "real");
    assert!(json["clock"].is_null(), "{json}");
    assert!(!report.to_string().contains("time: virtual"));
}

#[test]
fn clock_stopped_early_is_a_problem() {
    let mut facts = facts(ingest(1_000, 50, 50), settled(Accounting::Exact, 1_000, 900));
    facts.time = TimeMode::Virtual;
    facts.clock = Some(clock(false));
    facts.clock_problem = Some("clock run failed with status 409".to_owned());
    let report = build(facts);
    assert!(!report.passed);
    let problems = report.problems.join("\n");
    assert!(problems.contains("virtual clock: clock run failed with status 409"), "{problems}");
    assert!(problems.contains("follow-ups still waiting"), "{problems}");
}
