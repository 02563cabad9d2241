//! Table definitions of the embedded store and the helpers that encode, decode and scan their
//! records.
//!
//! Every table maps byte keys (see `keys`) to serde_json records, or to an empty value for the
//! two indexes. JSON keeps the file readable with generic tools and lets a record gain optional
//! fields without a migration.

use std::fmt::Display;

use followup_core::ids::TenantId;
use followup_core::store::StoreError;
use redb::{ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

pub(super) type Bytes = &'static [u8];

/// A table of the store: its name, used in error messages, and its redb definition.
#[derive(Clone, Copy, Debug)]
pub(super) struct Table {
    pub(super) name: &'static str,
}

impl Table {
    pub(super) const fn definition(self) -> TableDefinition<'static, Bytes, Bytes> {
        TableDefinition::new(self.name)
    }
}

/// Tenants by id.
pub(super) const TENANTS: Table = Table { name: "tenants" };
/// Tenant id by the SHA-256 hex of its API key.
pub(super) const API_KEYS: Table = Table { name: "api_keys" };
/// Connections by (tenant, provider).
pub(super) const CONNECTIONS: Table = Table { name: "connections" };
/// Sequences by (tenant, sequence).
pub(super) const SEQUENCES: Table = Table { name: "sequences" };
/// Contacts by (tenant, contact).
pub(super) const CONTACTS: Table = Table { name: "contacts" };
/// Schedules by (tenant, schedule).
pub(super) const SCHEDULES: Table = Table { name: "schedules" };
/// Follow-ups by (tenant, schedule, step).
pub(super) const FOLLOW_UPS: Table = Table { name: "follow_ups" };
/// Index of the pending and retry follow-ups by (tenant, channel, due instant, schedule, step),
/// with empty values.
pub(super) const DUE: Table = Table { name: "due" };
/// Index of the claimed and sending follow-ups by follow-up key, with empty values, so that
/// start-up recovery visits only those instead of every follow-up.
pub(super) const IN_FLIGHT: Table = Table { name: "in_flight" };
/// Index of the instants follow-ups were sent (or left in doubt) by (tenant, channel, instant,
/// schedule, step), with empty values, from which rate limiters rebuild their daily windows.
/// Entries older than `SENT_KEPT_FOR` are dropped as new ones arrive.
pub(super) const SENT: Table = Table { name: "sent" };
/// How long an entry of `SENT` is kept: longer than any daily window.
pub(super) const SENT_KEPT_FOR: chrono::Duration = chrono::Duration::days(2);
/// Suppression entries by (tenant, entry key as UTF-8).
pub(super) const SUPPRESSIONS: Table = Table { name: "suppressions" };
/// The operators' audit log by entry id (a UUID v7 as text, so keys sort by time).
pub(super) const AUDIT: Table = Table { name: "audit" };
/// Wrapped data keys by tenant.
pub(super) const DATA_KEYS: Table = Table { name: "data_keys" };
/// Attempts by (tenant, schedule, step, number).
pub(super) const ATTEMPTS: Table = Table { name: "attempts" };
/// Index of the attempts that keep a sent message, by (tenant, finish instant, schedule, step,
/// number), with empty values, so that the retention sweep visits only expired messages.
pub(super) const SENT_MESSAGES: Table = Table { name: "sent_messages" };
/// Deletion markers by tenant. Never purged.
pub(super) const DELETIONS: Table = Table { name: "tenant_deletions" };
/// Billing records of deleted tenants by tenant. Never purged.
pub(super) const BILLING: Table = Table { name: "billing_records" };
/// The newest lease of each tenant by tenant id. Kept after the tenant is deleted, so that
/// its epochs never repeat.
pub(super) const LEASES: Table = Table { name: "leases" };
/// Quota usage counters by (tenant, period, channel). Kept after a tenant is deleted, like
/// billing records: they hold counts only.
pub(super) const USAGE: Table = Table { name: "usage_counters" };
/// Meter batches by (tenant, period, channel, sequence as big-endian u64). Kept after a tenant
/// is deleted, like billing records: they hold Stripe ids and counts only.
pub(super) const METER_BATCHES: Table = Table { name: "meter_batches" };
/// Stripe accounts by tenant. Kept after a tenant is deleted, like billing records: they hold
/// Stripe's ids and statuses only.
pub(super) const STRIPE_ACCOUNTS: Table = Table { name: "stripe_accounts" };
/// Tenant id by Stripe customer id (UTF-8), the index of `STRIPE_ACCOUNTS`.
pub(super) const STRIPE_CUSTOMERS: Table = Table { name: "stripe_customers" };
/// Node heartbeats by node id (UTF-8).
pub(super) const HEARTBEATS: Table = Table { name: "node_heartbeats" };
/// Work left for the next opening of the file, by name, with empty values.
pub(super) const MAINTENANCE: Table = Table { name: "maintenance" };
/// Key in `MAINTENANCE` set when a purge finished: the file still contains the purged bytes in
/// freed pages, which redb does not zero, until it is compacted.
pub(super) const COMPACT_AFTER_PURGE: &[u8] = b"compact_after_purge";

/// Builds the error for a failed redb call, naming what was being done.
pub(super) fn unavailable(action: impl Display, error: impl Display) -> StoreError {
    StoreError::Unavailable(format!("embedded store: {action}: {error}"))
}

pub(super) fn encode<T: Serialize>(table: Table, record: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(record)
        .map_err(|error| unavailable(format_args!("encoding a {} record", table.name), error))
}

pub(super) fn decode<T: DeserializeOwned>(table: Table, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|error| StoreError::Corrupt { table: table.name, reason: error.to_string() })
}

/// Reads and decodes the record at `key`.
pub(super) fn get<T: DeserializeOwned>(
    source: &impl ReadableTable<Bytes, Bytes>,
    table: Table,
    key: &[u8],
) -> Result<Option<T>, StoreError> {
    let guard = source.get(key).map_err(|error| read_error(table, error))?;
    guard.map(|value| decode(table, value.value())).transpose()
}

/// Checks whether a record exists at `key`.
pub(super) fn contains(
    source: &impl ReadableTable<Bytes, Bytes>,
    table: Table,
    key: &[u8],
) -> Result<bool, StoreError> {
    let guard = source.get(key).map_err(|error| read_error(table, error))?;
    Ok(guard.is_some())
}

/// Reads and decodes every record whose key starts with `prefix`, in key order.
pub(super) fn scan<T: DeserializeOwned>(
    source: &impl ReadableTable<Bytes, Bytes>,
    table: Table,
    prefix: &[u8],
) -> Result<Vec<T>, StoreError> {
    let mut records = Vec::new();
    visit(source, table, prefix, |_, value| {
        records.push(decode(table, value)?);
        Ok(())
    })?;
    Ok(records)
}

/// Calls `visit` with the key and value of every entry whose key starts with `prefix`, in key
/// order.
pub(super) fn visit(
    source: &impl ReadableTable<Bytes, Bytes>,
    table: Table,
    prefix: &[u8],
    mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let range = source.range(prefix..).map_err(|error| read_error(table, error))?;
    for entry in range {
        let (key, value) = entry.map_err(|error| read_error(table, error))?;
        if !key.value().starts_with(prefix) {
            break;
        }
        visit(key.value(), value.value())?;
    }
    Ok(())
}

pub(super) fn read_error(table: Table, error: impl Display) -> StoreError {
    unavailable(format_args!("reading {}", table.name), error)
}

pub(super) fn write_error(table: Table, error: impl Display) -> StoreError {
    unavailable(format_args!("writing {}", table.name), error)
}

/// Reads a tenant id stored as 16 raw bytes.
pub(super) fn tenant_id(table: Table, bytes: &[u8]) -> Result<TenantId, StoreError> {
    let bytes: [u8; 16] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        table: table.name,
        reason: format!("tenant id of {} bytes, expected 16", bytes.len()),
    })?;
    Ok(TenantId(Uuid::from_bytes(bytes)))
}
