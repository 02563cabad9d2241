use chrono::{TimeDelta, TimeZone};

use super::*;
use crate::scenario::{Delay, StartSpec, StepSpec};

fn at(seconds: i64, millis: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + seconds, 0).single().expect("valid instant")
        + TimeDelta::milliseconds(millis)
}

/// Two steps, the second 60 s after the first; 10% of rows invalid (rows 9 and 19 of 20).
fn scenario() -> Scenario {
    let mut scenario = Scenario { seed: 7, invalid_fraction: 0.1, ..Scenario::default() };
    scenario.sequence.steps[1].delay = Delay::Text("1m".to_owned());
    scenario
}

fn upload(
    tenant: u32,
    rows: std::ops::Range<u64>,
    acknowledged_at: DateTime<Utc>,
) -> CompletedUpload {
    CompletedUpload { tenant, rows, acknowledged_at }
}

fn receipt(body: &str, received_at: DateTime<Utc>) -> Receipt {
    Receipt { received_at, body: body.to_owned() }
}

#[test]
fn expected_count_leaves_out_invalid_rows() {
    let uploads =
        [upload(0, 0..10, at(0, 0)), upload(0, 10..20, at(1, 0)), upload(1, 0..10, at(1, 0))];
    let expected = ExpectedFollowUps::new(&scenario(), None, &uploads);
    // 30 rows, 3 invalid (one per 10), two steps each.
    assert_eq!(expected.count(), 54);
}

#[test]
fn due_is_acknowledgement_plus_delay() {
    let expected = ExpectedFollowUps::new(&scenario(), None, &[upload(0, 0..10, at(5, 0))]);
    let first = FollowUpRef { tenant: 0, row: 3, step: 0 };
    let second = FollowUpRef { tenant: 0, row: 3, step: 1 };
    assert_eq!(expected.due(first), Some(at(5, 0)));
    assert_eq!(expected.due(second), Some(at(65, 0)));
    assert_eq!(expected.due(FollowUpRef { tenant: 0, row: 9, step: 0 }), None, "invalid row");
    assert_eq!(expected.due(FollowUpRef { tenant: 0, row: 10, step: 0 }), None, "not uploaded");
    assert_eq!(expected.due(FollowUpRef { tenant: 1, row: 0, step: 0 }), None, "other tenant");
    assert_eq!(expected.due(FollowUpRef { tenant: 0, row: 0, step: 2 }), None, "no such step");
}

#[test]
fn due_follows_a_later_start_instant() {
    let mut scenario = scenario();
    scenario.start = Some(StartSpec { after_seconds: 30, spread_seconds: 0 });
    let starts = scenario.start_instants(at(0, 0));
    let expected = ExpectedFollowUps::new(&scenario, starts, &[upload(0, 0..10, at(2, 0))]);
    assert_eq!(expected.due(FollowUpRef { tenant: 0, row: 4, step: 0 }), Some(at(30, 0)));
    assert_eq!(expected.due(FollowUpRef { tenant: 0, row: 4, step: 1 }), Some(at(90, 0)));
}

#[test]
fn references_of_other_runs_do_not_match() {
    let expected = ExpectedFollowUps::new(&scenario(), None, &[upload(0, 0..10, at(0, 0))]);
    assert_eq!(
        expected.reference("Hi Ada.\nref lt-7-0-3-s1\n"),
        Some(FollowUpRef { tenant: 0, row: 3, step: 1 })
    );
    assert_eq!(expected.reference("Hi Ada.\nref lt-8-0-3-s1"), None, "another seed");
    assert_eq!(expected.reference("Hi Ada."), None);
    assert_eq!(expected.reference("ref lt-7-0-x-s1"), None);
}

#[test]
fn references_of_other_run_tags_ignored() {
    let expected =
        ExpectedFollowUps::new(&scenario(), None, &[upload(0, 0..10, at(0, 0))]).of_run("17a3");
    let ours = Some(FollowUpRef { tenant: 0, row: 3, step: 1 });
    assert_eq!(expected.reference("Hi Ada.\nref 17a3/lt-7-0-3-s1"), ours);
    assert_eq!(expected.reference("Hi Ada.\nref 17a4/lt-7-0-3-s1"), None, "another run");
    assert_eq!(expected.reference("Hi Ada.\nref lt-7-0-3-s1"), None, "no run tag");
}

#[test]
fn counts_lost_duplicates_and_lateness() {
    let expected = ExpectedFollowUps::new(&scenario(), None, &[upload(0, 0..3, at(10, 0))]);
    assert_eq!(expected.count(), 6);
    let receipts = [
        receipt("a\nref lt-7-0-0-s0", at(10, 100)),
        receipt("a\nref lt-7-0-0-s0", at(10, 900)),
        receipt("b\nref lt-7-0-1-s0", at(11, 0)),
        // Arrived before its upload was acknowledged: lateness 0.
        receipt("c\nref lt-7-0-2-s0", at(9, 500)),
        receipt("d\nref lt-7-0-0-s1", at(70, 0)),
        receipt("stranger", at(12, 0)),
    ];
    let delivery =
        analyse(&expected, &receipts, 1, at(0, 0), &[(at(11, 0), 4_096)], TimeMode::Real);
    assert_eq!(delivery.expected, 6);
    assert_eq!(delivery.received, 4);
    assert_eq!(delivery.duplicates, 1);
    assert_eq!(delivery.unmatched, 1);
    // Two never arrived, one of which the engine reports as ended unsent.
    assert_eq!(delivery.lost, 1);
    let lateness = delivery.lateness_ms.expect("lateness measured");
    assert_eq!(lateness, Percentiles { p50: 0, p90: 1_000, p99: 1_000, max: 1_000 });
    // Four first receipts from 9.5 s to 70 s.
    assert!((delivery.sends_per_second - 4.0 / 60.5).abs() < 1e-9);
    assert_eq!(delivery.timeline.len(), 71);
    assert_eq!(delivery.timeline[10].sends, 2);
    assert_eq!(delivery.timeline[11].rss_bytes, Some(4_096));
    assert_eq!(delivery.timeline[70].lateness_p99_ms, Some(0));
}

#[test]
fn no_lateness_under_a_send_window() {
    let mut scenario = scenario();
    scenario.sequence.window = Some(crate::scenario::WindowSpec {
        weekdays: vec!["mon".to_owned()],
        start: "09:00".to_owned(),
        end: "17:00".to_owned(),
    });
    let expected = ExpectedFollowUps::new(&scenario, None, &[upload(0, 0..2, at(0, 0))]);
    let receipts = [receipt("a\nref lt-7-0-0-s0", at(3, 0))];
    let delivery = analyse(&expected, &receipts, 0, at(0, 0), &[], TimeMode::Real);
    assert_eq!(delivery.received, 1);
    assert_eq!(delivery.lateness_ms, None);
}

#[test]
fn virtual_time_days_apart_without_timeline() {
    let mut scenario = scenario();
    scenario.sequence.steps[1].delay = Delay::Text("3d".to_owned());
    let expected = ExpectedFollowUps::new(&scenario, None, &[upload(0, 0..2, at(0, 0))]);
    let three_days = 3 * 86_400;
    let receipts = [
        receipt("a\nref lt-7-0-0-s0", at(0, 0)),
        receipt("b\nref lt-7-0-1-s0", at(0, 5)),
        receipt("c\nref lt-7-0-0-s1", at(three_days, 20)),
        receipt("d\nref lt-7-0-1-s1", at(three_days, 40)),
    ];
    let delivery =
        analyse(&expected, &receipts, 0, at(0, 0), &[(at(1, 0), 4_096)], TimeMode::Virtual);
    assert_eq!(delivery.received, 4);
    assert_eq!(delivery.lost, 0);
    let lateness = delivery.lateness_ms.expect("lateness measured");
    assert_eq!(lateness.max, 40, "measured from each step's due instant, days after the first");
    assert!(delivery.timeline.is_empty(), "{} points", delivery.timeline.len());
}

#[test]
fn later_steps_add_up_delays() {
    let mut scenario = scenario();
    scenario.sequence.steps.push(StepSpec {
        channel: followup_core::domain::Channel::Sms,
        delay: Delay::Text("2m".to_owned()),
        subject: None,
        body: "third".to_owned(),
    });
    let expected = ExpectedFollowUps::new(&scenario, None, &[upload(0, 0..2, at(0, 0))]);
    let reference = |step| FollowUpRef { tenant: 0, row: 0, step };
    assert_eq!(expected.due(reference(0)), Some(at(0, 0)));
    assert_eq!(expected.due(reference(1)), Some(at(60, 0)));
    assert_eq!(expected.due(reference(2)), Some(at(180, 0)), "1 min, then 2 min after that");
}

#[test]
fn day_delays_follow_the_contact_calendar() {
    // 2026-03-08 05:00 UTC is midnight in New York, two hours before its clocks go forward on
    // that Sunday, so one day later on New York's calendar is 23 hours later.
    let mut scenario = scenario();
    scenario.sequence.steps[1].delay = Delay::Text("1d".to_owned());
    let start = Utc.with_ymd_and_hms(2026, 3, 8, 5, 0, 0).single().expect("valid instant");
    let expected = ExpectedFollowUps::new(&scenario, None, &[upload(0, 0..20, start)]);
    let generator = scenario.contacts_of(0, None);
    let row = (0..20)
        .find(|&row| {
            !generator.is_invalid(row) && generator.row(row).timezone == "America/New_York"
        })
        .expect("a valid New York row among the first 20");
    let due = expected.due(FollowUpRef { tenant: 0, row, step: 1 }).expect("a due instant");
    assert_eq!(due - start, TimeDelta::hours(23));
}
