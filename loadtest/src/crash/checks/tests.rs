use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use followup_core::domain::{Channel, Contact, FollowUp, FollowUpState, Schedule};
use followup_core::ids::{ContactId, FollowUpId, ScheduleId, SequenceId, TenantId};
use followup_core::store::IN_DOUBT_AFTER_STOP;

use super::super::processes::FakeReceipt;
use super::super::workload::{ContactIdentity, Upload, UploadFormat};
use super::*;

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 4, 12, 0, 0).single().expect("valid instant")
        + TimeDelta::seconds(seconds)
}

/// Returns a kill of an engine that ran from 0 s to 10 s, restarted at 11 s.
fn kill() -> KillRecord {
    KillRecord {
        number: 1,
        phase: Phase::Dispatch,
        landed: true,
        engine_started_at: at(0),
        killed_at: at(10),
        restarted_at: at(11),
    }
}

fn upload() -> Upload {
    Upload {
        number: 1,
        tenant: 0,
        first: 0,
        count: 1,
        format: UploadFormat::Csv,
        acknowledged: true,
        cut_by_kill: false,
    }
}

/// Builds tenant 0 with contact 0 of the run and its one follow-up on `channel`.
fn records(channel: Channel, state: FollowUpState, updated_at: DateTime<Utc>) -> TenantRecords {
    let identity = ContactIdentity::new(0, 0);
    let tenant = TenantId::generate();
    let contact = Contact {
        id: ContactId::generate(),
        tenant,
        external_id: Some(identity.external_id),
        first_name: None,
        last_name: None,
        full_name: None,
        email: Some(identity.email),
        phone: Some(identity.phone),
        timezone: "UTC".to_owned(),
        custom: BTreeMap::new(),
    };
    let schedule = Schedule {
        id: ScheduleId::generate(),
        tenant,
        sequence: SequenceId::generate(),
        contact: contact.id,
        start_at: at(0),
        source_line: 2,
        created_at: at(0),
    };
    let reason = (state == FollowUpState::InDoubt).then(|| IN_DOUBT_AFTER_STOP.to_owned());
    let follow_up = FollowUp {
        id: FollowUpId { schedule: schedule.id, step: 0 },
        tenant,
        sequence: schedule.sequence,
        contact: contact.id,
        channel,
        state,
        due_at: at(0),
        planned_at: at(0),
        attempts: 1,
        attempts_before_retry: 0,
        reason,
        provider_message_id: None,
        sent_at: None,
        updated_at,
    };
    TenantRecords {
        contacts: HashMap::from([(contact.id, contact)]),
        schedules: vec![schedule],
        follow_ups: vec![follow_up],
        maybe_sent_attempts: HashMap::new(),
    }
}

fn receipt(channel: Channel, received_at: DateTime<Utc>) -> FakeReceipt {
    let identity = ContactIdentity::new(0, 0);
    let to = if channel == Channel::Email { identity.email } else { identity.phone };
    FakeReceipt { channel, from: "crash-sender0@example.com".to_owned(), to, received_at }
}

/// Runs the final checks of one tenant's `records`, with the follow-up put down to the kill
/// when `in_doubt_after_kill`.
fn check(
    records: &TenantRecords,
    receipts: &[FakeReceipt],
    in_doubt_after_kill: bool,
    monthly_calls: u64,
) -> Vec<String> {
    check_with_cap(records, receipts, in_doubt_after_kill, monthly_calls, 100)
}

fn check_with_cap(
    records: &TenantRecords,
    receipts: &[FakeReceipt],
    in_doubt_after_kill: bool,
    monthly_calls: u64,
    per_day: u32,
) -> Vec<String> {
    let mut in_doubt = InDoubtLedger::default();
    if in_doubt_after_kill {
        in_doubt.note(records, 0);
    }
    let kills = [kill()];
    let uploads = [upload()];
    let channels = [records.follow_ups[0].channel];
    let facts = FinalFacts {
        channels: &channels,
        uploads: &uploads,
        kills: &kills,
        in_doubt: &in_doubt,
        receipts,
        per_day,
        monthly_calls,
        latency: std::time::Duration::from_millis(40),
        store_write_slack: std::time::Duration::from_secs(1),
    };
    final_checks(std::slice::from_ref(records), &facts, &mut FinalCounts::default())
}

fn assert_one_failure(failures: &[String], expected: &str) {
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].contains(expected), "{failures:?}");
}

#[test]
fn sent_once_passes() {
    let records = records(Channel::Email, FollowUpState::Sent, at(5));
    let failures = check(&records, &[receipt(Channel::Email, at(5))], false, 10);
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn sent_twice_fails() {
    let records = records(Channel::Email, FollowUpState::Sent, at(5));
    let receipts = [receipt(Channel::Email, at(5)), receipt(Channel::Email, at(12))];
    assert_one_failure(&check(&records, &receipts, false, 10), "received 2 times");
}

#[test]
fn sent_never_received_fails() {
    let records = records(Channel::Email, FollowUpState::Sent, at(5));
    assert_one_failure(&check(&records, &[], false, 10), "never received");
}

#[test]
fn in_doubt_from_kill_passes() {
    let records = records(Channel::Sms, FollowUpState::InDoubt, at(9));
    let failures = check(&records, &[receipt(Channel::Sms, at(10))], true, 10);
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn in_doubt_written_before_engine_fails() {
    let records = records(Channel::Sms, FollowUpState::InDoubt, at(-1));
    let receipts = [receipt(Channel::Sms, at(10))];
    assert_one_failure(&check(&records, &receipts, true, 10), "outside that engine's life");
}

#[test]
fn unreceived_in_doubt_written_early_fails() {
    let records = records(Channel::Sms, FollowUpState::InDoubt, at(5));
    assert_one_failure(&check(&records, &[], true, 10), "it had not left");
}

#[test]
fn unreceived_in_doubt_written_late_passes() {
    let records =
        records(Channel::Sms, FollowUpState::InDoubt, at(10) - TimeDelta::milliseconds(150));
    let failures = check(&records, &[], true, 10);
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn in_doubt_received_after_restart_fails() {
    let records = records(Channel::Sms, FollowUpState::InDoubt, at(9));
    let failures = check(&records, &[receipt(Channel::Sms, at(12))], true, 10);
    assert_one_failure(&failures, "no request in flight");
}

#[test]
fn in_doubt_without_kill_fails() {
    let records = records(Channel::Sms, FollowUpState::InDoubt, at(9));
    assert_one_failure(&check(&records, &[], false, 10), "no export after a kill");
}

#[test]
fn pending_at_end_fails() {
    let records = records(Channel::Email, FollowUpState::Pending, at(5));
    assert_one_failure(&check(&records, &[], false, 10), "did not settle");
}

#[test]
fn receipt_without_follow_up_fails() {
    let records = records(Channel::Email, FollowUpState::Sent, at(5));
    let receipts = [receipt(Channel::Email, at(5)), receipt(Channel::Sms, at(6))];
    assert_one_failure(&check(&records, &receipts, false, 10), "match no follow-up");
}

#[test]
fn calls_over_quota_fail() {
    let records = records(Channel::Call, FollowUpState::Sent, at(5));
    let failures = check(&records, &[receipt(Channel::Call, at(5))], false, 0);
    assert_one_failure(&failures, "over the plan's monthly quota of 0");
}

#[test]
fn acknowledged_contact_missing_fails() {
    let mut records = records(Channel::Email, FollowUpState::Sent, at(5));
    records.schedules.clear();
    let failures = acknowledged_present(0, &[upload()], &records, Some(&kill()));
    assert_one_failure(&failures, "have no schedule after kill #1");
}

#[test]
fn sender_over_daily_cap_fails() {
    let records = records(Channel::Email, FollowUpState::Sent, at(5));
    let failures = check_with_cap(&records, &[receipt(Channel::Email, at(5))], false, 10, 0);
    assert_one_failure(&failures, "over its daily cap of 0");
}
