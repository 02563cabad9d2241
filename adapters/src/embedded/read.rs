//! The read side of the embedded store: each function runs in its own read transaction, which
//! reads the last committed state and never waits for the writer.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use followup_core::domain::{
    Attempt, BillingRecord, Channel, Connection, Contact, FollowUp, FollowUpState, Provider,
    Schedule, Sequence, Tenant, TenantDeletion,
};
use followup_core::ids::{ContactId, FollowUpId, ScheduleId, SequenceId, TenantId};
use followup_core::store::lease::{Lease, NodeHeartbeat};
use followup_core::store::metering::MeterBatch;
use followup_core::store::subscription::StripeAccount;
use followup_core::store::usage::{UsageCounter, UsageKey};
use followup_core::store::{
    AttemptCursor, AuditEntry, ConnectionStatus, FollowUpCounts, FollowUpTally, StoreError,
    WrappedDataKey,
};
use redb::{
    Database, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata,
};
use serde::Deserialize;

use super::keys;
use super::tables::{
    self, API_KEYS, ATTEMPTS, AUDIT, BILLING, Bytes, CONNECTIONS, CONTACTS, DATA_KEYS, DELETIONS,
    DUE, FOLLOW_UPS, HEARTBEATS, LEASES, METER_BATCHES, SCHEDULES, SENT, SEQUENCES,
    STRIPE_ACCOUNTS, STRIPE_CUSTOMERS, SUPPRESSIONS, TENANTS, Table, USAGE,
};
use followup_core::suppression::Suppression;

fn begin(db: &Database) -> Result<ReadTransaction, StoreError> {
    db.begin_read().map_err(|error| tables::unavailable("starting a read transaction", error))
}

fn open(txn: &ReadTransaction, table: Table) -> Result<ReadOnlyTable<Bytes, Bytes>, StoreError> {
    txn.open_table(table.definition())
        .map_err(|error| tables::unavailable(format_args!("opening {}", table.name), error))
}

/// Reads one record in a transaction of its own.
fn get_one<T: serde::de::DeserializeOwned>(
    db: &Database,
    table: Table,
    key: &[u8],
) -> Result<Option<T>, StoreError> {
    let txn = begin(db)?;
    tables::get(&open(&txn, table)?, table, key)
}

/// Reads every record under one key prefix in a transaction of its own.
fn scan_one<T: serde::de::DeserializeOwned>(
    db: &Database,
    table: Table,
    prefix: &[u8],
) -> Result<Vec<T>, StoreError> {
    let txn = begin(db)?;
    tables::scan(&open(&txn, table)?, table, prefix)
}

pub(super) fn tenant(db: &Database, id: TenantId) -> Result<Option<Tenant>, StoreError> {
    get_one(db, TENANTS, &keys::tenant(id))
}

pub(super) fn tenant_by_api_key(
    db: &Database,
    api_key_sha256: &str,
) -> Result<Option<Tenant>, StoreError> {
    let txn = begin(db)?;
    let api_keys = open(&txn, API_KEYS)?;
    let guard = api_keys.get(api_key_sha256.as_bytes());
    let Some(owner) = guard.map_err(|error| tables::read_error(API_KEYS, error))? else {
        return Ok(None);
    };
    tables::get(&open(&txn, TENANTS)?, TENANTS, owner.value())
}

pub(super) fn tenants(db: &Database) -> Result<Vec<Tenant>, StoreError> {
    scan_one(db, TENANTS, &[])
}

pub(super) fn connections(db: &Database, tenant: TenantId) -> Result<Vec<Connection>, StoreError> {
    scan_one(db, CONNECTIONS, &keys::tenant(tenant))
}

pub(super) fn sequence(
    db: &Database,
    tenant: TenantId,
    id: SequenceId,
) -> Result<Option<Sequence>, StoreError> {
    get_one(db, SEQUENCES, &keys::tenant_record(tenant, &id.0))
}

pub(super) fn sequences(db: &Database, tenant: TenantId) -> Result<Vec<Sequence>, StoreError> {
    scan_one(db, SEQUENCES, &keys::tenant(tenant))
}

pub(super) fn contacts(
    db: &Database,
    tenant: TenantId,
    ids: &[ContactId],
) -> Result<Vec<Contact>, StoreError> {
    let txn = begin(db)?;
    let contacts = open(&txn, CONTACTS)?;
    let mut found = Vec::with_capacity(ids.len());
    for id in ids {
        let key = keys::tenant_record(tenant, &id.0);
        found.extend(tables::get(&contacts, CONTACTS, &key)?);
    }
    Ok(found)
}

pub(super) fn schedule(
    db: &Database,
    tenant: TenantId,
    id: ScheduleId,
) -> Result<Option<Schedule>, StoreError> {
    get_one(db, SCHEDULES, &keys::tenant_record(tenant, &id.0))
}

pub(super) fn follow_ups_of_schedule(
    db: &Database,
    tenant: TenantId,
    id: ScheduleId,
) -> Result<Vec<FollowUp>, StoreError> {
    scan_one(db, FOLLOW_UPS, &keys::schedule_prefix(tenant, id))
}

pub(super) fn follow_up(
    db: &Database,
    tenant: TenantId,
    id: FollowUpId,
) -> Result<Option<FollowUp>, StoreError> {
    get_one(db, FOLLOW_UPS, &keys::follow_up(tenant, id))
}

pub(super) fn follow_ups_page(
    db: &Database,
    tenant: TenantId,
    after: Option<FollowUpId>,
    limit: usize,
) -> Result<Vec<FollowUp>, StoreError> {
    let after = after.map(|id| keys::follow_up(tenant, id));
    page(db, FOLLOW_UPS, tenant, after, limit)
}

pub(super) fn contacts_page(
    db: &Database,
    tenant: TenantId,
    after: Option<ContactId>,
    limit: usize,
) -> Result<Vec<Contact>, StoreError> {
    let after = after.map(|id| keys::tenant_record(tenant, &id.0));
    page(db, CONTACTS, tenant, after, limit)
}

pub(super) fn schedules_page(
    db: &Database,
    tenant: TenantId,
    after: Option<ScheduleId>,
    limit: usize,
) -> Result<Vec<Schedule>, StoreError> {
    let after = after.map(|id| keys::tenant_record(tenant, &id.0));
    page(db, SCHEDULES, tenant, after, limit)
}

pub(super) fn attempts_page(
    db: &Database,
    tenant: TenantId,
    after: Option<AttemptCursor>,
    limit: usize,
) -> Result<Vec<Attempt>, StoreError> {
    let after = after.map(|(id, number)| keys::attempt(tenant, id, number));
    page(db, ATTEMPTS, tenant, after, limit)
}

pub(super) fn suppressions(
    db: &Database,
    tenant: TenantId,
    entry_keys: &[String],
) -> Result<Vec<Suppression>, StoreError> {
    let txn = begin(db)?;
    let source = open(&txn, SUPPRESSIONS)?;
    let mut found = Vec::new();
    for entry_key in entry_keys {
        let key = keys::suppression(tenant, entry_key);
        if let Some(entry) = tables::get(&source, SUPPRESSIONS, &key)? {
            found.push(entry);
        }
    }
    Ok(found)
}

pub(super) fn suppressions_page(
    db: &Database,
    tenant: TenantId,
    after: Option<String>,
    limit: usize,
) -> Result<Vec<Suppression>, StoreError> {
    let after = after.map(|entry_key| keys::suppression(tenant, &entry_key));
    page(db, SUPPRESSIONS, tenant, after, limit)
}

/// Reads up to `limit` records of `tenant` in key order, from just after the key `after` (or
/// the tenant's first key) while keys stay inside the tenant's prefix.
fn page<T: serde::de::DeserializeOwned>(
    db: &Database,
    table: Table,
    tenant: TenantId,
    after: Option<Vec<u8>>,
    limit: usize,
) -> Result<Vec<T>, StoreError> {
    let txn = begin(db)?;
    let source = open(&txn, table)?;
    let prefix = keys::tenant(tenant);
    let start = match after {
        // A key one byte longer than `after` sorts right after it and before any other.
        Some(after) => [after.as_slice(), &[0]].concat(),
        None => prefix.clone(),
    };
    let range = source.range(start.as_slice()..).map_err(|e| tables::read_error(table, e))?;
    let mut page = Vec::new();
    for entry in range {
        if page.len() == limit {
            break;
        }
        let (key, value) = entry.map_err(|e| tables::read_error(table, e))?;
        if !key.value().starts_with(&prefix) {
            break;
        }
        page.push(tables::decode(table, value.value())?);
    }
    Ok(page)
}

pub(super) fn tenant_deletions(db: &Database) -> Result<Vec<TenantDeletion>, StoreError> {
    scan_one(db, DELETIONS, &[])
}

pub(super) fn billing_record(
    db: &Database,
    tenant: TenantId,
) -> Result<Option<BillingRecord>, StoreError> {
    get_one(db, BILLING, &keys::tenant(tenant))
}

pub(super) fn stripe_account(
    db: &Database,
    tenant: TenantId,
) -> Result<Option<StripeAccount>, StoreError> {
    get_one(db, STRIPE_ACCOUNTS, &keys::tenant(tenant))
}

pub(super) fn stripe_account_by_customer(
    db: &Database,
    customer_id: &str,
) -> Result<Option<StripeAccount>, StoreError> {
    let txn = begin(db)?;
    let customers = open(&txn, STRIPE_CUSTOMERS)?;
    let guard = customers.get(customer_id.as_bytes());
    let Some(owner) = guard.map_err(|error| tables::read_error(STRIPE_CUSTOMERS, error))? else {
        return Ok(None);
    };
    tables::get(&open(&txn, STRIPE_ACCOUNTS)?, STRIPE_ACCOUNTS, owner.value())
}

/// Walks the due index from the tenant's earliest instant on `channel` and loads each
/// follow-up it names.
pub(super) fn due_follow_ups(
    db: &Database,
    tenant: TenantId,
    channel: Channel,
    until: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<FollowUp>, StoreError> {
    let txn = begin(db)?;
    let due = open(&txn, DUE)?;
    let follow_ups = open(&txn, FOLLOW_UPS)?;
    let start = keys::due_prefix(tenant, channel);
    let end = keys::due_end(tenant, channel, until);
    let range = due.range(start.as_slice()..end.as_slice());
    let mut found = Vec::new();
    for entry in range.map_err(|error| tables::read_error(DUE, error))? {
        if found.len() == limit {
            break;
        }
        let (key, _) = entry.map_err(|error| tables::read_error(DUE, error))?;
        let follow_up = load_indexed(&follow_ups, tenant, key.value())?;

        // The key keeps microseconds, so one due within the last microsecond of `until` but
        // after it still falls inside the range.
        if follow_up.due_at <= until {
            found.push(follow_up);
        }
    }
    Ok(found)
}

pub(super) fn next_due_at(
    db: &Database,
    tenant: TenantId,
    channel: Channel,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let txn = begin(db)?;
    let due = open(&txn, DUE)?;
    let prefix = keys::due_prefix(tenant, channel);
    let mut range =
        due.range(prefix.as_slice()..).map_err(|error| tables::read_error(DUE, error))?;
    let Some(entry) = range.next() else {
        return Ok(None);
    };
    let (key, _) = entry.map_err(|error| tables::read_error(DUE, error))?;
    if !key.value().starts_with(&prefix) {
        return Ok(None);
    }

    // The record stores the instant at full precision, the key only to the microsecond.
    let follow_up = load_indexed(&open(&txn, FOLLOW_UPS)?, tenant, key.value())?;
    Ok(Some(follow_up.due_at))
}

pub(super) fn sends_since(
    db: &Database,
    tenant: TenantId,
    channel: Channel,
    since: DateTime<Utc>,
) -> Result<Vec<DateTime<Utc>>, StoreError> {
    let txn = begin(db)?;
    let sent = open(&txn, SENT)?;
    let prefix = keys::due_prefix(tenant, channel);
    // The key keeps microseconds, so an instant within the microsecond before `since` counts.
    let start = keys::due_end(tenant, channel, since - chrono::Duration::microseconds(1));
    let mut instants = Vec::new();
    let range = sent.range(start.as_slice()..).map_err(|error| tables::read_error(SENT, error))?;
    for entry in range {
        let (key, _) = entry.map_err(|error| tables::read_error(SENT, error))?;
        if !key.value().starts_with(&prefix) {
            break;
        }
        let instant = keys::instant_of_due(key.value()).ok_or_else(|| StoreError::Corrupt {
            table: SENT.name,
            reason: format!("malformed key of {} bytes", key.value().len()),
        })?;
        instants.push(instant);
    }
    Ok(instants)
}

/// Loads the follow-up a due key names. A key without its record means the index is damaged.
fn load_indexed(
    follow_ups: &impl ReadableTable<Bytes, Bytes>,
    tenant: TenantId,
    due_key: &[u8],
) -> Result<FollowUp, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { table: DUE.name, reason };
    let id = keys::follow_up_of_due(due_key)
        .ok_or_else(|| corrupt(format!("malformed due key of {} bytes", due_key.len())))?;
    tables::get(follow_ups, FOLLOW_UPS, &keys::follow_up(tenant, id))?
        .ok_or_else(|| corrupt(format!("due key names missing follow-up {id}")))
}

pub(super) fn attempts(
    db: &Database,
    tenant: TenantId,
    id: FollowUpId,
) -> Result<Vec<Attempt>, StoreError> {
    scan_one(db, ATTEMPTS, &keys::follow_up(tenant, id))
}

/// The two fields of a follow-up record that counting needs, so serde skips decoding the rest.
#[derive(Deserialize)]
struct CountedFields {
    channel: Channel,
    state: FollowUpState,
}

/// Counts follow-ups by channel and state.
///
/// NOTE: this scans every follow-up of the tenant, or of the whole store, because no index is
/// kept by state. It serves the demo summary and periodic metrics, not dispatch.
pub(super) fn count_follow_ups(
    db: &Database,
    tenant: Option<TenantId>,
) -> Result<FollowUpCounts, StoreError> {
    let txn = begin(db)?;
    let follow_ups = open(&txn, FOLLOW_UPS)?;
    let prefix = tenant.map(keys::tenant).unwrap_or_default();
    let mut counts = FollowUpCounts::new();
    tables::visit(&follow_ups, FOLLOW_UPS, &prefix, |_, value| {
        let fields: CountedFields = tables::decode(FOLLOW_UPS, value)?;
        *counts.entry((fields.channel, fields.state)).or_default() += 1;
        Ok(())
    })?;
    Ok(counts)
}

/// The fields of a follow-up record that the tally needs.
#[derive(Deserialize)]
struct TalliedFields {
    tenant: TenantId,
    channel: Channel,
    state: FollowUpState,
    due_at: DateTime<Utc>,
}

/// Tallies every follow-up of the store by tenant, channel and state in one read transaction.
///
/// NOTE: one scan of the whole follow-up table (no index by state); the operator view runs it
/// in the background every few seconds at most.
pub(super) fn tally_follow_ups(
    db: &Database,
    now: DateTime<Utc>,
) -> Result<Vec<FollowUpTally>, StoreError> {
    let txn = begin(db)?;
    let follow_ups = open(&txn, FOLLOW_UPS)?;
    let mut groups: HashMap<(TenantId, Channel, FollowUpState), (u64, u64)> = HashMap::new();
    tables::visit(&follow_ups, FOLLOW_UPS, &[], |_, value| {
        let fields: TalliedFields = tables::decode(FOLLOW_UPS, value)?;
        let group = groups.entry((fields.tenant, fields.channel, fields.state)).or_default();
        group.0 += 1;
        if fields.state.is_due_kind() && fields.due_at <= now {
            group.1 += 1;
        }
        Ok(())
    })?;
    Ok(groups
        .into_iter()
        .map(|((tenant, channel, state), (count, due))| FollowUpTally {
            tenant,
            channel,
            state,
            count,
            due,
        })
        .collect())
}

/// The fields of a connection record the operator overview shows; the credentials and the
/// sender are not decoded.
#[derive(Deserialize)]
struct StatusFields {
    tenant: TenantId,
    provider: Provider,
    #[serde(default)]
    paused_reason: Option<String>,
}

pub(super) fn connection_statuses(db: &Database) -> Result<Vec<ConnectionStatus>, StoreError> {
    let txn = begin(db)?;
    let connections = open(&txn, CONNECTIONS)?;
    let mut statuses = Vec::new();
    tables::visit(&connections, CONNECTIONS, &[], |_, value| {
        let fields: StatusFields = tables::decode(CONNECTIONS, value)?;
        statuses.push(ConnectionStatus {
            tenant: fields.tenant,
            provider: fields.provider,
            paused_reason: fields.paused_reason,
        });
        Ok(())
    })?;
    Ok(statuses)
}

/// Returns the number of audit entries and a page of them, newest first.
pub(super) fn audit_page(
    db: &Database,
    offset: u64,
    limit: usize,
) -> Result<(u64, Vec<AuditEntry>), StoreError> {
    let txn = begin(db)?;
    let audit = open(&txn, AUDIT)?;
    let total = audit.len().map_err(|error| tables::read_error(AUDIT, error))?;
    let skip = usize::try_from(offset).unwrap_or(usize::MAX);
    let mut entries = Vec::with_capacity(limit.min(1_000));
    let range = audit.iter().map_err(|error| tables::read_error(AUDIT, error))?;
    for entry in range.rev().skip(skip).take(limit) {
        let (_, value) = entry.map_err(|error| tables::read_error(AUDIT, error))?;
        entries.push(tables::decode(AUDIT, value.value())?);
    }
    Ok((total, entries))
}

pub(super) fn data_key(
    db: &Database,
    tenant: TenantId,
) -> Result<Option<WrappedDataKey>, StoreError> {
    get_one(db, DATA_KEYS, &keys::tenant(tenant))
}

pub(super) fn data_keys(db: &Database) -> Result<Vec<WrappedDataKey>, StoreError> {
    scan_one(db, DATA_KEYS, &[])
}

pub(super) fn leases(db: &Database) -> Result<Vec<Lease>, StoreError> {
    scan_one(db, LEASES, &[])
}

pub(super) fn heartbeats(db: &Database) -> Result<Vec<NodeHeartbeat>, StoreError> {
    scan_one(db, HEARTBEATS, &[])
}

/// Returns the usage counters of `period`, of one tenant (a range over its prefix) or of all
/// (a scan of the whole table, which holds three counters per tenant and month).
pub(super) fn usage(
    db: &Database,
    tenant: Option<TenantId>,
    period: &str,
) -> Result<Vec<UsageCounter>, StoreError> {
    let counters: Vec<UsageCounter> = match tenant {
        Some(tenant) => scan_one(db, USAGE, &keys::usage_prefix(tenant, period))?,
        None => scan_one(db, USAGE, &[])?,
    };
    Ok(counters.into_iter().filter(|counter| counter.period == period).collect())
}

/// Returns the highest sequence of the counter's meter batches: the last of its key range.
pub(super) fn last_meter_batch(
    db: &Database,
    key: &UsageKey,
) -> Result<Option<MeterBatch>, StoreError> {
    let period = key.period.to_string();
    let prefix = keys::meter_batch(key.tenant, &period, key.channel, 0);
    let prefix = &prefix[..prefix.len() - 8];
    let batches: Vec<MeterBatch> = scan_one(db, METER_BATCHES, prefix)?;
    Ok(batches.into_iter().last())
}

/// Returns up to `limit` unsent meter batches in key order.
///
/// NOTE: this reads the whole table, sent batches included, which grows by one row per
/// counter and flush; the billing actor calls it only when it starts.
pub(super) fn unsent_meter_batches(
    db: &Database,
    limit: usize,
) -> Result<Vec<MeterBatch>, StoreError> {
    let batches: Vec<MeterBatch> = scan_one(db, METER_BATCHES, &[])?;
    Ok(batches.into_iter().filter(|batch| !batch.sent).take(limit).collect())
}
