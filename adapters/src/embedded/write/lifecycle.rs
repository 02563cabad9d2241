//! Write operations of a record's end of life: a tenant's deletion and purge, and the removal
//! of sent messages past their retention.

use chrono::{DateTime, Utc};
use followup_core::domain::{Attempt, Tenant, TenantDeletion};
use followup_core::ids::TenantId;
use followup_core::store::{PurgeProgress, StoreError};
use redb::ReadableTable;

use super::{ApplyError, RawTable, WriteTables, put};
use crate::embedded::keys;
use crate::embedded::tables::{
    self, API_KEYS, ATTEMPTS, COMPACT_AFTER_PURGE, CONNECTIONS, CONTACTS, DELETIONS, DUE,
    FOLLOW_UPS, IN_FLIGHT, MAINTENANCE, SCHEDULES, SENT, SENT_MESSAGES, SEQUENCES, SUPPRESSIONS,
    TENANTS, Table,
};

impl<'txn> WriteTables<'txn> {
    /// Rejects a write for a tenant that has a deletion marker, so that a request or round
    /// that was under way when the deletion began cannot write records behind the purge.
    pub(super) fn check_not_deleted(&self, tenant: TenantId) -> Result<(), StoreError> {
        if tables::contains(&self.deletions, DELETIONS, &keys::tenant(tenant))? {
            return Err(StoreError::Conflict(format!(
                "tenant {tenant} is being deleted; its records accept no more writes"
            )));
        }
        Ok(())
    }

    /// Stores the deletion marker and removes the tenant record and its API key.
    pub(super) fn begin_tenant_deletion(
        &mut self,
        deletion: &TenantDeletion,
    ) -> Result<(), ApplyError> {
        let key = keys::tenant(deletion.tenant);
        let rejected = |reason: String| ApplyError::Rejected(StoreError::Conflict(reason));
        self.check_not_deleted(deletion.tenant).map_err(ApplyError::Rejected)?;
        let tenant: Option<Tenant> =
            tables::get(&self.tenants, TENANTS, &key).map_err(ApplyError::Rejected)?;
        let Some(tenant) = tenant else {
            return Err(rejected(format!("tenant {} not found", deletion.tenant)));
        };

        let write = |tables: &mut Self| -> Result<(), StoreError> {
            let hash = tenant.api_key_sha256.as_bytes();
            tables.api_keys.remove(hash).map_err(|e| tables::write_error(API_KEYS, e))?;
            tables.tenants.remove(key.as_slice()).map_err(|e| tables::write_error(TENANTS, e))?;
            tables.forget_audit_notes(deletion.tenant)?;
            put(&mut tables.deletions, DELETIONS, &key, deletion)
        };
        write(self).map_err(ApplyError::Failed)
    }

    /// Removes up to `limit` records of a tenant being deleted, table by table, and records the
    /// progress on its marker.
    pub(super) fn purge_tenant_chunk(
        &mut self,
        tenant: TenantId,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<PurgeProgress, ApplyError> {
        let marker_key = keys::tenant(tenant);
        let marker: Option<TenantDeletion> =
            tables::get(&self.deletions, DELETIONS, &marker_key).map_err(ApplyError::Rejected)?;
        let Some(mut marker) = marker else {
            return Err(ApplyError::Rejected(StoreError::Conflict(format!(
                "tenant {tenant} has no deletion marker; its records are not purged"
            ))));
        };

        let mut purge = |tables: &mut Self| -> Result<PurgeProgress, StoreError> {
            let limit = limit.max(1);
            let mut removed = 0;
            for (table, target) in tables.purged_tables() {
                removed += remove_prefix(target, table, &marker_key, limit - removed)?;
                if removed == limit {
                    break;
                }
            }
            // A chunk that stopped short of its limit found every table empty.
            let done = removed < limit;
            marker.records_purged += removed as u64;
            if done && marker.completed_at.is_none() {
                marker.completed_at = Some(now);
                let empty: &[u8] = &[];
                let flagged = tables.maintenance.insert(COMPACT_AFTER_PURGE, empty);
                flagged.map_err(|e| tables::write_error(MAINTENANCE, e))?;
            }
            put(&mut tables.deletions, DELETIONS, &marker_key, &marker)?;
            Ok(PurgeProgress { removed: removed as u64, done })
        };
        purge(self).map_err(ApplyError::Failed)
    }

    /// Adds an attempt that keeps its message to the sent-messages index.
    pub(super) fn index_sent_message(
        &mut self,
        tenant: TenantId,
        attempt: &Attempt,
    ) -> Result<(), StoreError> {
        let key =
            keys::sent_message(tenant, attempt.finished_at, attempt.follow_up, attempt.number);
        let empty: &[u8] = &[];
        let inserted = self.sent_messages.insert(key.as_slice(), empty);
        inserted.map_err(|e| tables::write_error(SENT_MESSAGES, e))?;
        Ok(())
    }

    /// Removes the message of up to `limit` attempts that finished before `before`. The index
    /// is ordered by tenant first, so it is walked one tenant at a time: the expired entries of
    /// a tenant, then a jump to the next tenant's first key.
    pub(super) fn purge_sent_messages(
        &mut self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<u64, StoreError> {
        let expired = self.expired_sent_messages(before, limit)?;
        for index_key in &expired {
            let corrupt = || StoreError::Corrupt {
                table: SENT_MESSAGES.name,
                reason: format!("malformed key of {} bytes", index_key.len()),
            };
            let attempt_key = keys::attempt_of_sent_message(index_key).ok_or_else(corrupt)?;
            let stored: Option<Attempt> = tables::get(&self.attempts, ATTEMPTS, &attempt_key)?;
            if let Some(mut attempt) = stored {
                attempt.message = None;
                put(&mut self.attempts, ATTEMPTS, &attempt_key, &attempt)?;
            }
            let removed = self.sent_messages.remove(index_key.as_slice());
            removed.map_err(|e| tables::write_error(SENT_MESSAGES, e))?;
        }
        Ok(expired.len() as u64)
    }

    fn expired_sent_messages(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let read_error = |e| tables::read_error(SENT_MESSAGES, e);
        let mut expired = Vec::new();
        let mut start = Vec::new();
        while expired.len() < limit {
            let first = self.sent_messages.range(start.as_slice()..).map_err(read_error)?.next();
            let Some(first) = first else { break };
            let first = first.map_err(read_error)?.0.value().to_vec();
            let tenant = tables::tenant_id(SENT_MESSAGES, first.get(..16).unwrap_or_default())?;
            let end = keys::sent_message_end(tenant, before);
            let range = self.sent_messages.range(first.as_slice()..end.as_slice());
            for entry in range.map_err(read_error)?.take(limit - expired.len()) {
                expired.push(entry.map_err(read_error)?.0.value().to_vec());
            }
            match keys::next_tenant_prefix(&first) {
                Some(next) => start = next,
                None => break,
            }
        }
        Ok(expired)
    }

    /// Returns the tables a tenant's purge empties: every table keyed by tenant except the
    /// deletion markers and billing records. The tenant record and its API key go when the
    /// deletion begins.
    fn purged_tables(&mut self) -> [(Table, &mut RawTable<'txn>); 11] {
        [
            (SUPPRESSIONS, &mut self.suppressions),
            (DUE, &mut self.due),
            (IN_FLIGHT, &mut self.in_flight),
            (SENT, &mut self.sent),
            (SENT_MESSAGES, &mut self.sent_messages),
            (ATTEMPTS, &mut self.attempts),
            (FOLLOW_UPS, &mut self.follow_ups),
            (SCHEDULES, &mut self.schedules),
            (CONTACTS, &mut self.contacts),
            (SEQUENCES, &mut self.sequences),
            (CONNECTIONS, &mut self.connections),
        ]
    }
}

/// Removes up to `limit` entries whose key starts with `prefix`; returns how many.
fn remove_prefix(
    target: &mut RawTable<'_>,
    table: Table,
    prefix: &[u8],
    limit: usize,
) -> Result<usize, StoreError> {
    let mut doomed = Vec::new();
    let range = target.range(prefix..).map_err(|e| tables::read_error(table, e))?;
    for entry in range.take(limit) {
        let (key, _) = entry.map_err(|e| tables::read_error(table, e))?;
        if !key.value().starts_with(prefix) {
            break;
        }
        doomed.push(key.value().to_vec());
    }
    for key in &doomed {
        target.remove(key.as_slice()).map_err(|e| tables::write_error(table, e))?;
    }
    Ok(doomed.len())
}
