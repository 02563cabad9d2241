//! Byte keys of the embedded store's tables.
//!
//! Every key that belongs to a tenant starts with the tenant's 16 id bytes, so a read for one
//! tenant is a range over that tenant's prefix and cannot reach another tenant's records.
//! Integers are big-endian so that byte order is numeric order, which makes follow-ups of a
//! schedule come out by step, attempts by number and the due index by instant.

use chrono::{DateTime, Utc};
use followup_core::domain::{Channel, Provider};
use followup_core::ids::{FollowUpId, ScheduleId, TenantId};
use followup_core::store::usage::UsageKey;
use uuid::Uuid;

/// Length of a follow-up key: tenant, schedule, step.
const FOLLOW_UP_LEN: usize = 16 + 16 + 2;

/// Flipping the sign bit maps `i64` onto `u64` in the same order, so instants before 1970
/// still sort before later ones.
const SIGN_BIT: u64 = 1 << 63;

fn join(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Key of a record owned by a tenant and named by a UUID: sequences, contacts, schedules.
pub(super) fn tenant_record(tenant: TenantId, id: &Uuid) -> Vec<u8> {
    join(&[tenant.as_bytes(), id.as_bytes()])
}

pub(super) fn tenant(tenant: TenantId) -> Vec<u8> {
    tenant.as_bytes().to_vec()
}

/// Key of a suppression entry: the tenant, then the entry's key.
pub(super) fn suppression(tenant: TenantId, key: &str) -> Vec<u8> {
    join(&[tenant.as_bytes(), key.as_bytes()])
}

pub(super) fn connection(tenant: TenantId, provider: Provider) -> Vec<u8> {
    join(&[tenant.as_bytes(), &[provider_code(provider)]])
}

/// Key of a quota usage counter: tenant, period (`YYYY-MM`), channel.
pub(super) fn usage(key: &UsageKey) -> Vec<u8> {
    join(&[&usage_prefix(key.tenant, &key.period.to_string()), &[channel_code(key.channel)]])
}

/// Key of a meter batch: its counter's key, then the sequence.
pub(super) fn meter_batch(
    tenant: TenantId,
    period: &str,
    channel: Channel,
    sequence: u64,
) -> Vec<u8> {
    join(&[&usage_prefix(tenant, period), &[channel_code(channel)], &sequence.to_be_bytes()])
}

/// Prefix of one tenant's usage counters of one period.
pub(super) fn usage_prefix(tenant: TenantId, period: &str) -> Vec<u8> {
    join(&[tenant.as_bytes(), period.as_bytes()])
}

/// Key of a follow-up, also used by the in-flight index and as the prefix of its attempts.
pub(super) fn follow_up(tenant: TenantId, id: FollowUpId) -> Vec<u8> {
    join(&[tenant.as_bytes(), id.schedule.as_bytes(), &id.step.to_be_bytes()])
}

/// Prefix of the follow-ups of one schedule.
pub(super) fn schedule_prefix(tenant: TenantId, schedule: ScheduleId) -> Vec<u8> {
    tenant_record(tenant, &schedule.0)
}

pub(super) fn attempt(tenant: TenantId, id: FollowUpId, number: u32) -> Vec<u8> {
    join(&[&follow_up(tenant, id), &number.to_be_bytes()])
}

/// Key of an attempt in the sent-messages index: tenant, finish instant, schedule, step,
/// number.
pub(super) fn sent_message(
    tenant: TenantId,
    finished_at: DateTime<Utc>,
    id: FollowUpId,
    number: u32,
) -> Vec<u8> {
    join(&[
        tenant.as_bytes(),
        &instant_bytes(finished_at.timestamp_micros()),
        id.schedule.as_bytes(),
        &id.step.to_be_bytes(),
        &number.to_be_bytes(),
    ])
}

/// Exclusive upper bound of the sent-messages keys of `tenant` that finished before `before`.
pub(super) fn sent_message_end(tenant: TenantId, before: DateTime<Utc>) -> Vec<u8> {
    join(&[tenant.as_bytes(), &instant_bytes(before.timestamp_micros())])
}

/// Turns a sent-messages key into the key of its attempt, by dropping the instant.
pub(super) fn attempt_of_sent_message(key: &[u8]) -> Option<Vec<u8>> {
    if key.len() != 16 + 8 + 16 + 2 + 4 {
        return None;
    }
    Some(join(&[&key[..16], &key[16 + 8..]]))
}

/// Returns the first possible key of the tenant after the one `key` starts with, or `None`
/// after the last tenant id.
pub(super) fn next_tenant_prefix(key: &[u8]) -> Option<Vec<u8>> {
    let tenant: [u8; 16] = key.get(..16)?.try_into().ok()?;
    let next = u128::from_be_bytes(tenant).checked_add(1)?;
    Some(next.to_be_bytes().to_vec())
}

/// Key of a follow-up in the due index: tenant, channel, due instant, schedule, step.
pub(super) fn due(
    tenant: TenantId,
    channel: Channel,
    due_at: DateTime<Utc>,
    id: FollowUpId,
) -> Vec<u8> {
    join(&[
        &due_prefix(tenant, channel),
        &instant_bytes(due_at.timestamp_micros()),
        id.schedule.as_bytes(),
        &id.step.to_be_bytes(),
    ])
}

/// Prefix of the due index for one tenant and channel.
pub(super) fn due_prefix(tenant: TenantId, channel: Channel) -> Vec<u8> {
    join(&[tenant.as_bytes(), &[channel_code(channel)]])
}

/// Exclusive upper bound of the due keys whose instant is at or before `until`, to the
/// microsecond.
pub(super) fn due_end(tenant: TenantId, channel: Channel, until: DateTime<Utc>) -> Vec<u8> {
    let micros = until.timestamp_micros().saturating_add(1);
    join(&[&due_prefix(tenant, channel), &instant_bytes(micros)])
}

/// Reads the instant back out of a due key, to the microsecond.
pub(super) fn instant_of_due(key: &[u8]) -> Option<DateTime<Utc>> {
    let bytes: [u8; 8] = key.get(16 + 1..16 + 1 + 8)?.try_into().ok()?;
    let micros = (u64::from_be_bytes(bytes) ^ SIGN_BIT).cast_signed();
    DateTime::from_timestamp_micros(micros)
}

/// Reads the follow-up id back out of a due key.
pub(super) fn follow_up_of_due(key: &[u8]) -> Option<FollowUpId> {
    let id_bytes = key.get(16 + 1 + 8..)?;
    let (schedule, step) = id_bytes.split_first_chunk::<16>()?;
    let step: [u8; 2] = step.try_into().ok()?;
    Some(FollowUpId {
        schedule: ScheduleId(Uuid::from_bytes(*schedule)),
        step: u16::from_be_bytes(step),
    })
}

/// Reads the tenant and follow-up id back out of a follow-up key.
pub(super) fn parse_follow_up(key: &[u8]) -> Option<(TenantId, FollowUpId)> {
    if key.len() != FOLLOW_UP_LEN {
        return None;
    }
    let (tenant, rest) = key.split_first_chunk::<16>()?;
    let (schedule, step) = rest.split_first_chunk::<16>()?;
    let step: [u8; 2] = step.try_into().ok()?;
    let id = FollowUpId {
        schedule: ScheduleId(Uuid::from_bytes(*schedule)),
        step: u16::from_be_bytes(step),
    };
    Some((TenantId(Uuid::from_bytes(*tenant)), id))
}

fn instant_bytes(micros: i64) -> [u8; 8] {
    (micros.cast_unsigned() ^ SIGN_BIT).to_be_bytes()
}

/// Stable one-byte codes: they are part of the file format, so never renumber them.
fn channel_code(channel: Channel) -> u8 {
    match channel {
        Channel::Email => 1,
        Channel::Sms => 2,
        Channel::Call => 3,
    }
}

fn provider_code(provider: Provider) -> u8 {
    match provider {
        Provider::Gmail => 1,
        Provider::Outlook => 2,
        Provider::Twilio => 3,
    }
}
