//! What a crash run checks: after each restart, that every acknowledged schedule is there;
//! at the end, that every follow-up settled once and the fakes saw each at most once.
//!
//! The records come from `GET /v1/export` of each tenant; what was sent comes from the fakes.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use anyhow::Context;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use followup_core::domain::{Attempt, Channel, Contact, FollowUp, FollowUpState, Schedule};
use followup_core::ids::{ContactId, FollowUpId};
use followup_core::store::IN_DOUBT_AFTER_STOP;
use serde::Deserialize;

use super::processes::FakeReceipt;
use super::workload::{ContactIdentity, Upload};

/// The moment of the engine's work that a kill is aimed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// While the engine was reading an upload's body.
    Ingest,
    /// While the fakes had a request of the engine in flight.
    Dispatch,
    /// Just after the fakes answered a request, before the engine could store the outcome.
    Outcome,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Ingest, Phase::Dispatch, Phase::Outcome];
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Ingest => "ingest",
            Phase::Dispatch => "dispatch",
            Phase::Outcome => "outcome",
        })
    }
}

/// One SIGKILL of the engine.
#[derive(Clone, Debug)]
pub struct KillRecord {
    /// 1 for the first kill.
    pub number: u32,
    pub phase: Phase,
    /// Whether the kill is known to have landed in its phase: an upload was still being read
    /// (ingest), the fakes had a request in flight (dispatch), or a send the fakes had
    /// answered was left in doubt by it (outcome, known only after the restart).
    pub landed: bool,
    /// When the engine that was killed had been started.
    pub engine_started_at: DateTime<Utc>,
    pub killed_at: DateTime<Utc>,
    /// When the next engine was started, after the fakes had answered every request of the
    /// killed one; the kill instant until then.
    pub restarted_at: DateTime<Utc>,
}

impl fmt::Display for KillRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kill #{} ({}, engine started {}, killed {})",
            self.number,
            self.phase,
            self.engine_started_at.format("%H:%M:%S%.3f"),
            self.killed_at.format("%H:%M:%S%.3f")
        )
    }
}

/// The records of one tenant's export that the checks read.
#[derive(Debug, Default)]
pub(crate) struct TenantRecords {
    pub contacts: HashMap<ContactId, Contact>,
    pub schedules: Vec<Schedule>,
    pub follow_ups: Vec<FollowUp>,
    /// Attempts that sent their follow-up or may have (result sent or in doubt), per
    /// follow-up; read only by [`TenantRecords::parse_with_attempts`].
    pub maybe_sent_attempts: HashMap<FollowUpId, u32>,
}

#[derive(Deserialize)]
struct ExportType {
    #[serde(rename = "type")]
    kind: String,
}

impl TenantRecords {
    /// Reads an export without its attempts, the most numerous lines, which only the final
    /// checks read. Unknown record types are skipped.
    pub(crate) fn parse(export: &str) -> anyhow::Result<Self> {
        Self::parse_lines(export, false)
    }

    /// Reads an export with its attempts.
    pub(crate) fn parse_with_attempts(export: &str) -> anyhow::Result<Self> {
        Self::parse_lines(export, true)
    }

    fn parse_lines(export: &str, with_attempts: bool) -> anyhow::Result<Self> {
        let mut records = Self::default();
        let mut ended = false;
        for (number, line) in export.lines().enumerate() {
            if !with_attempts && line.starts_with(r#"{"type":"attempt""#) {
                continue;
            }
            let context = || format!("export line {}", number + 1);
            let kind: ExportType = serde_json::from_str(line).with_context(context)?;
            match kind.kind.as_str() {
                "contact" => {
                    let contact: Contact = serde_json::from_str(line).with_context(context)?;
                    records.contacts.insert(contact.id, contact);
                }
                "schedule" => {
                    records.schedules.push(serde_json::from_str(line).with_context(context)?)
                }
                "follow_up" => {
                    records.follow_ups.push(serde_json::from_str(line).with_context(context)?)
                }
                "attempt" => {
                    let attempt: Attempt = serde_json::from_str(line).with_context(context)?;
                    if matches!(attempt.result, FollowUpState::Sent | FollowUpState::InDoubt) {
                        *records.maybe_sent_attempts.entry(attempt.follow_up).or_default() += 1;
                    }
                }
                "end" => ended = true,
                _ => {}
            }
        }
        anyhow::ensure!(ended, "the export has no closing end line: it was cut short");
        Ok(records)
    }

    /// Contacts with a schedule, by external id.
    fn scheduled_external_ids(&self) -> HashMap<&str, &Contact> {
        self.schedules
            .iter()
            .filter_map(|schedule| self.contacts.get(&schedule.contact))
            .filter_map(|contact| Some((contact.external_id.as_deref()?, contact)))
            .collect()
    }
}

/// Checks that every contact of every acknowledged upload of `tenant` has a schedule.
pub(crate) fn acknowledged_present(
    tenant: usize,
    uploads: &[Upload],
    records: &TenantRecords,
    after: Option<&KillRecord>,
) -> Vec<String> {
    let scheduled = records.scheduled_external_ids();
    let mut failures = Vec::new();
    for upload in uploads.iter().filter(|upload| upload.tenant == tenant && upload.acknowledged) {
        let missing: Vec<String> = upload
            .contacts()
            .map(|contact| ContactIdentity::new(tenant, contact).external_id)
            .filter(|id| !scheduled.contains_key(id.as_str()))
            .collect();
        if let Some(first) = missing.first() {
            let when =
                after.map_or_else(|| "at the end".to_owned(), |kill| format!("after {kill}"));
            failures.push(format!(
                "upload {} of tenant {tenant} was acknowledged, but {} of its contacts have no \
                 schedule {when}, first {first}",
                upload.number,
                missing.len()
            ));
        }
    }
    failures
}

/// Follow-ups seen in doubt so far, each with the kill it is put down to: the last kill before
/// the first export that showed it in doubt, since only start-up recovery makes a follow-up
/// in doubt without a timeout.
#[derive(Debug, Default)]
pub(crate) struct InDoubtLedger {
    pub by_follow_up: HashMap<FollowUpId, usize>,
}

impl InDoubtLedger {
    /// Puts every follow-up newly in doubt in `records` down to kill `kill` (an index into the
    /// run's kills).
    pub(crate) fn note(&mut self, records: &TenantRecords, kill: usize) {
        for follow_up in &records.follow_ups {
            if follow_up.state == FollowUpState::InDoubt {
                self.by_follow_up.entry(follow_up.id).or_insert(kill);
            }
        }
    }
}

/// What the final checks need besides the records.
#[derive(Debug)]
pub(crate) struct FinalFacts<'a> {
    pub channels: &'a [Channel],
    pub uploads: &'a [Upload],
    pub kills: &'a [KillRecord],
    pub in_doubt: &'a InDoubtLedger,
    pub receipts: &'a [FakeReceipt],
    pub per_day: u32,
    /// Calls each tenant may make a month; the other channels are not limited.
    pub monthly_calls: u64,
    /// The fakes' latency per request.
    pub latency: Duration,
    /// The longest the store may take to acknowledge a write.
    pub store_write_slack: Duration,
}

/// Counts the final checks report besides their failures.
#[derive(Debug, Default)]
pub(crate) struct FinalCounts {
    pub follow_ups: u64,
    pub by_state: BTreeMap<String, u64>,
    /// In-doubt follow-ups the fakes had received before the kill that left them in doubt:
    /// the kill landed between the answer and the write of the outcome.
    pub answered_before_kill: BTreeMap<usize, u64>,
    /// Follow-ups the fakes received more than once.
    pub received_twice: u64,
}

/// The longest a request of the engine stays at the fakes, in latencies: a Graph batch of 20
/// calls runs 4 at a time, each taking one latency.
const LONGEST_IN_FLIGHT_LATENCIES: u32 = 5;

/// The fakes' receipts by channel and recipient: every contact of a run has an address and a
/// number of its own. The sender is left out because the Graph fake records the mailbox its
/// token names, not the connection's sender.
type ReceiptKey = (Channel, String);

/// Runs the checks of a settled run over every tenant's records. Returns the failures.
pub(crate) fn final_checks(
    tenants: &[TenantRecords],
    facts: &FinalFacts<'_>,
    counts: &mut FinalCounts,
) -> Vec<String> {
    let mut failures = Vec::new();
    let mut receipts: HashMap<ReceiptKey, Vec<&FakeReceipt>> = HashMap::new();
    for receipt in facts.receipts {
        let key = (receipt.channel, receipt.to.to_lowercase());
        receipts.entry(key).or_default().push(receipt);
    }
    let mut per_sender: HashMap<(Channel, String), u64> = HashMap::new();
    for receipt in facts.receipts {
        *per_sender.entry((receipt.channel, receipt.from.to_lowercase())).or_default() += 1;
    }
    for ((channel, sender), count) in per_sender {
        if count > u64::from(facts.per_day) {
            failures.push(format!(
                "{sender} sent {count} {channel:?} messages, over its daily cap of {}",
                facts.per_day
            ));
        }
    }

    for (tenant, records) in tenants.iter().enumerate() {
        failures.extend(acknowledged_present(tenant, facts.uploads, records, None));
        failures.extend(one_follow_up_per_step(tenant, records, facts.channels));
        failures.extend(quota_kept(tenant, records, facts.monthly_calls));
        for follow_up in &records.follow_ups {
            counts.follow_ups += 1;
            *counts.by_state.entry(state_name(follow_up.state)).or_default() += 1;
            let Some(contact) = records.contacts.get(&follow_up.contact) else {
                failures.push(format!("follow-up {} names a missing contact", follow_up.id));
                continue;
            };
            let key = receipt_key(follow_up.channel, contact);
            let received = key.as_ref().and_then(|key| receipts.remove(key)).unwrap_or_default();
            failures.extend(check_follow_up(follow_up, contact, &received, facts, counts));
            let maybe_sent = records.maybe_sent_attempts.get(&follow_up.id).copied().unwrap_or(0);
            if maybe_sent > 1 {
                failures.push(format!(
                    "follow-up {} has {maybe_sent} attempts that sent it or may have",
                    follow_up.id
                ));
            }
        }
    }
    for ((channel, to), left) in receipts {
        failures.push(format!(
            "the fakes received {} {channel:?} message(s) to {to} that match no follow-up",
            left.len()
        ));
    }
    failures
}

/// Checks that the follow-ups that went out, or may have (sent and in doubt), stay within the
/// tenant's monthly call quota: billing counts both against it while the engine runs, and a
/// restart must not forget either.
fn quota_kept(tenant: usize, records: &TenantRecords, monthly_calls: u64) -> Vec<String> {
    let maybe_sent = records
        .follow_ups
        .iter()
        .filter(|follow_up| follow_up.channel == Channel::Call)
        .filter(|follow_up| matches!(follow_up.state, FollowUpState::Sent | FollowUpState::InDoubt))
        .count() as u64;
    if maybe_sent > monthly_calls {
        let message = format!(
            "tenant {tenant}: {maybe_sent} calls were sent or left in doubt, over the plan's \
             monthly quota of {monthly_calls}"
        );
        return vec![message];
    }
    Vec::new()
}

/// Checks that each scheduled contact has exactly one follow-up per step's channel.
fn one_follow_up_per_step(
    tenant: usize,
    records: &TenantRecords,
    channels: &[Channel],
) -> Vec<String> {
    let mut per_contact: HashMap<(ContactId, Channel), u32> = HashMap::new();
    for follow_up in &records.follow_ups {
        *per_contact.entry((follow_up.contact, follow_up.channel)).or_default() += 1;
    }
    let mut failures = Vec::new();
    for schedule in &records.schedules {
        for channel in channels {
            let count = per_contact.get(&(schedule.contact, *channel)).copied().unwrap_or(0);
            if count != 1 {
                failures.push(format!(
                    "tenant {tenant}: contact {} has {count} {channel:?} follow-ups, expected 1",
                    schedule.contact
                ));
            }
        }
    }
    failures
}

/// The receipt key a follow-up would be received under.
fn receipt_key(channel: Channel, contact: &Contact) -> Option<ReceiptKey> {
    let recipient = match channel {
        Channel::Email => contact.email.clone()?,
        _ => contact.phone.clone()?,
    };
    Some((channel, recipient.to_lowercase()))
}

/// Checks one settled follow-up against what the fakes received of it.
fn check_follow_up(
    follow_up: &FollowUp,
    contact: &Contact,
    received: &[&FakeReceipt],
    facts: &FinalFacts<'_>,
    counts: &mut FinalCounts,
) -> Vec<String> {
    let name = format!(
        "follow-up {} ({:?} to {})",
        follow_up.id,
        follow_up.channel,
        contact.external_id.as_deref().unwrap_or("?")
    );
    let times: Vec<String> = received
        .iter()
        .map(|receipt| receipt.received_at.format("%H:%M:%S%.3f").to_string())
        .collect();
    let mut failures = Vec::new();
    if received.len() > 1 {
        counts.received_twice += 1;
        failures.push(format!(
            "{name} was received {} times, at {}; kills in between: {}",
            received.len(),
            times.join(", "),
            kills_between(facts.kills, received).join("; ")
        ));
    }
    match follow_up.state {
        FollowUpState::Pending
        | FollowUpState::Claimed
        | FollowUpState::Sending
        | FollowUpState::Retry => {
            failures.push(format!("{name} is still {:?}: the run did not settle", follow_up.state));
        }
        FollowUpState::Sent if received.is_empty() => {
            failures.push(format!("{name} is sent, but the fakes never received it"));
        }
        FollowUpState::InDoubt => {
            failures.extend(check_in_doubt(follow_up, &name, received, facts, counts));
        }
        FollowUpState::Sent => {}
        other if !received.is_empty() => {
            failures.push(format!(
                "{name} is {other:?}, but the fakes received it at {}",
                times.join(", ")
            ));
        }
        _ => {}
    }
    failures
}

/// An in-doubt follow-up is allowed only when a request for it was in flight at a kill: it
/// was written `sending` by the engine that the kill stopped (its last write falls between
/// that engine's start and the kill), start-up recovery wrote it in doubt (its reason), and
/// the fakes received it at most once, before the next engine started.
fn check_in_doubt(
    follow_up: &FollowUp,
    name: &str,
    received: &[&FakeReceipt],
    facts: &FinalFacts<'_>,
    counts: &mut FinalCounts,
) -> Vec<String> {
    let Some(&kill_index) = facts.in_doubt.by_follow_up.get(&follow_up.id) else {
        return vec![format!("{name} is in doubt, but no export after a kill showed it so")];
    };
    let kill = &facts.kills[kill_index];
    let mut failures = Vec::new();
    if follow_up.reason.as_deref() != Some(IN_DOUBT_AFTER_STOP) {
        failures.push(format!(
            "{name} is in doubt for another reason than a stop ({:?}), first seen after {kill}",
            follow_up.reason
        ));
    }
    let written = follow_up.updated_at;
    if written < kill.engine_started_at || written > kill.killed_at {
        failures.push(format!(
            "{name} is put in doubt by {kill}, but was written sending at {}, outside that \
             engine's life",
            written.format("%H:%M:%S%.3f")
        ));
    }
    // A request that was in flight when the engine died is often never recorded: the fakes
    // drop a request whose client went away during their latency. Such a follow-up must have
    // been written sending shortly before the kill: within the store's time to acknowledge
    // the write (`updated_at` is taken before it), plus the longest a request of the engine
    // stays in flight. One written earlier waited in the engine without leaving.
    let longest_in_flight = TimeDelta::from_std(facts.latency * LONGEST_IN_FLIGHT_LATENCIES)
        .unwrap_or_default()
        + TimeDelta::from_std(facts.store_write_slack).unwrap_or_default();
    if received.is_empty() && written < kill.killed_at - longest_in_flight {
        failures.push(format!(
            "{name} is in doubt and the fakes never received it, but it was written sending at \
             {}, more than {} ms before {kill}: it had not left",
            written.format("%H:%M:%S%.3f"),
            longest_in_flight.num_milliseconds()
        ));
    }
    // The next engine starts only once the fakes have answered every request of the killed
    // one, so a request in flight at the kill was answered before that start.
    for receipt in received {
        if receipt.received_at < written || receipt.received_at > kill.restarted_at {
            failures.push(format!(
                "{name} was received at {}, which no request in flight at {kill} explains",
                receipt.received_at.format("%H:%M:%S%.3f")
            ));
        }
        if receipt.received_at <= kill.killed_at {
            *counts.answered_before_kill.entry(kill_index).or_default() += 1;
        }
    }
    failures
}

/// The kills that fell between the first and the last receipt.
fn kills_between(kills: &[KillRecord], received: &[&FakeReceipt]) -> Vec<String> {
    let first = received.iter().map(|receipt| receipt.received_at).min();
    let last = received.iter().map(|receipt| receipt.received_at).max();
    kills
        .iter()
        .filter(|kill| first.is_some_and(|first| kill.killed_at >= first))
        .filter(|kill| last.is_some_and(|last| kill.killed_at <= last))
        .map(ToString::to_string)
        .collect()
}

pub(crate) fn state_name(state: FollowUpState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{state:?}"))
}

#[cfg(test)]
mod tests;
