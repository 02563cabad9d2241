//! The write side of the embedded store: the operations the writer thread applies inside its
//! shared write transaction.
//!
//! Each operation first checks everything that can reject it, without writing, and only then
//! writes. A rejected operation therefore leaves the transaction as it found it, and the other
//! operations of the same commit go ahead. An error while writing is a storage failure, which
//! the writer handles by aborting and retrying the commit without that operation.

use chrono::{DateTime, Utc};
use followup_core::domain::{
    Attempt, BillingRecord, Connection, FollowUp, FollowUpState, Sequence, Tenant, TenantDeletion,
};
use followup_core::ids::{FollowUpId, TenantId};
use followup_core::store::lease::{Lease, NodeHeartbeat};
use followup_core::store::metering::MeterBatch;
use followup_core::store::subscription::StripeAccount;
use followup_core::store::usage::UsageKey;
use followup_core::store::{
    AuditEntry, Enrolment, IN_DOUBT_AFTER_STOP, InsertReport, PurgeProgress, RecoveryReport,
    StoreError, WrappedDataKey,
};
use followup_core::suppression::Suppression;
use redb::{ReadableTable, WriteTransaction};

use super::keys;
use super::tables::{
    self, API_KEYS, ATTEMPTS, AUDIT, BILLING, Bytes, CONNECTIONS, CONTACTS, DATA_KEYS, DELETIONS,
    DUE, FOLLOW_UPS, HEARTBEATS, IN_FLIGHT, LEASES, MAINTENANCE, METER_BATCHES, SCHEDULES, SENT,
    SENT_MESSAGES, SEQUENCES, STRIPE_ACCOUNTS, STRIPE_CUSTOMERS, SUPPRESSIONS, TENANTS, Table,
    USAGE,
};

mod leases;
mod lifecycle;
mod usage;

/// A write request from one caller.
#[derive(Debug)]
pub(super) enum WriteOp {
    PutTenant(Tenant),
    PutConnection(Connection),
    PutSequence(Sequence),
    InsertEnrolments {
        tenant: TenantId,
        enrolments: Vec<Enrolment>,
    },
    UpdateFollowUps {
        tenant: TenantId,
        fence: u64,
        follow_ups: Vec<FollowUp>,
        attempts: Vec<Attempt>,
    },
    RecoverInterrupted {
        tenant: TenantId,
        fence: u64,
    },
    TakeLease {
        tenant: TenantId,
        node: String,
        now: DateTime<Utc>,
        ttl: chrono::Duration,
    },
    RenewLease {
        lease: Lease,
        now: DateTime<Utc>,
        ttl: chrono::Duration,
    },
    ReleaseLease(Lease),
    PutHeartbeat(NodeHeartbeat),
    BeginTenantDeletion(TenantDeletion),
    PurgeTenantChunk {
        tenant: TenantId,
        limit: usize,
        now: DateTime<Utc>,
    },
    PutBillingRecord(BillingRecord),
    PutStripeAccount(StripeAccount),
    InsertMeterBatch(MeterBatch),
    MarkMeterBatchSent {
        key: UsageKey,
        sequence: u64,
    },
    PurgeSentMessages {
        before: DateTime<Utc>,
        limit: usize,
    },
    PutDataKey(WrappedDataKey),
    DeleteDataKey(TenantId),
    ReserveUsage {
        key: UsageKey,
        wanted: u64,
        limit: u64,
    },
    SettleUsage {
        key: UsageKey,
        committed: u64,
        released: u64,
    },
    PutSuppressions {
        tenant: TenantId,
        entries: Vec<Suppression>,
    },
    AppendAudit(AuditEntry),
    RemoveSuppressions {
        tenant: TenantId,
        keys: Vec<String>,
    },
}

impl WriteOp {
    /// The tenant whose records the operation writes, for the check that refuses writes for a
    /// tenant being deleted. `None` for operations allowed on such a tenant, or on none.
    fn tenant(&self) -> Option<TenantId> {
        match self {
            WriteOp::PutTenant(tenant) => Some(tenant.id),
            WriteOp::PutConnection(connection) => Some(connection.tenant),
            WriteOp::PutDataKey(key) => Some(key.tenant),
            WriteOp::PutStripeAccount(account) => Some(account.tenant),
            WriteOp::PutSequence(sequence) => Some(sequence.tenant),
            WriteOp::InsertEnrolments { tenant, .. }
            | WriteOp::UpdateFollowUps { tenant, .. }
            | WriteOp::RecoverInterrupted { tenant, .. }
            | WriteOp::PutSuppressions { tenant, .. }
            | WriteOp::RemoveSuppressions { tenant, .. } => Some(*tenant),
            WriteOp::ReserveUsage { key, .. } => Some(key.tenant),
            // Sends that left while the deletion began are still recorded, and billed.
            WriteOp::SettleUsage { .. }
            | WriteOp::InsertMeterBatch(_)
            | WriteOp::MarkMeterBatchSent { .. } => None,
            WriteOp::TakeLease { .. }
            | WriteOp::RenewLease { .. }
            | WriteOp::ReleaseLease(_)
            | WriteOp::PutHeartbeat(_)
            | WriteOp::BeginTenantDeletion(_)
            | WriteOp::PurgeTenantChunk { .. }
            | WriteOp::PutBillingRecord(_)
            | WriteOp::PurgeSentMessages { .. }
            | WriteOp::DeleteDataKey(_)
            | WriteOp::AppendAudit(_) => None,
        }
    }
}

/// Result of an applied operation, sent back to its caller.
#[derive(Debug)]
pub(super) enum Applied {
    Done,
    Inserted(InsertReport),
    Recovered(RecoveryReport),
    /// The lease taken or renewed, or `None` when the tenant stays with another node.
    Leased(Option<Lease>),
    Purged(PurgeProgress),
    Counted(u64),
    /// Whether a delete found something to remove.
    Deleted(bool),
    /// Whether an insert-if-absent stored its record.
    Stored(bool),
}

/// Reason an operation did not apply.
#[derive(Debug)]
pub(super) enum ApplyError {
    /// Rejected by a check before anything was written: the transaction is unchanged.
    Rejected(StoreError),
    /// Failed while writing: the transaction may hold part of the operation and must be
    /// aborted.
    Failed(StoreError),
}

type RawTable<'txn> = redb::Table<'txn, Bytes, Bytes>;

/// The tables of one write transaction, opened once and shared by every operation in it.
pub(super) struct WriteTables<'txn> {
    tenants: RawTable<'txn>,
    api_keys: RawTable<'txn>,
    connections: RawTable<'txn>,
    sequences: RawTable<'txn>,
    contacts: RawTable<'txn>,
    schedules: RawTable<'txn>,
    follow_ups: RawTable<'txn>,
    due: RawTable<'txn>,
    in_flight: RawTable<'txn>,
    sent: RawTable<'txn>,
    attempts: RawTable<'txn>,
    sent_messages: RawTable<'txn>,
    deletions: RawTable<'txn>,
    billing: RawTable<'txn>,
    maintenance: RawTable<'txn>,
    data_keys: RawTable<'txn>,
    leases: RawTable<'txn>,
    heartbeats: RawTable<'txn>,
    usage: RawTable<'txn>,
    meter_batches: RawTable<'txn>,
    stripe_accounts: RawTable<'txn>,
    stripe_customers: RawTable<'txn>,
    suppressions: RawTable<'txn>,
    audit: RawTable<'txn>,
}

impl<'txn> WriteTables<'txn> {
    /// Opens every table, creating the ones a new file does not have yet.
    pub(super) fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        let open = |table: Table| {
            txn.open_table(table.definition())
                .map_err(|error| tables::unavailable(format_args!("opening {}", table.name), error))
        };
        Ok(Self {
            tenants: open(TENANTS)?,
            api_keys: open(API_KEYS)?,
            connections: open(CONNECTIONS)?,
            sequences: open(SEQUENCES)?,
            contacts: open(CONTACTS)?,
            schedules: open(SCHEDULES)?,
            follow_ups: open(FOLLOW_UPS)?,
            due: open(DUE)?,
            in_flight: open(IN_FLIGHT)?,
            sent: open(SENT)?,
            attempts: open(ATTEMPTS)?,
            sent_messages: open(SENT_MESSAGES)?,
            deletions: open(DELETIONS)?,
            billing: open(BILLING)?,
            maintenance: open(MAINTENANCE)?,
            data_keys: open(DATA_KEYS)?,
            leases: open(LEASES)?,
            heartbeats: open(HEARTBEATS)?,
            usage: open(USAGE)?,
            meter_batches: open(METER_BATCHES)?,
            stripe_accounts: open(STRIPE_ACCOUNTS)?,
            stripe_customers: open(STRIPE_CUSTOMERS)?,
            suppressions: open(SUPPRESSIONS)?,
            audit: open(AUDIT)?,
        })
    }

    pub(super) fn apply(&mut self, op: &WriteOp) -> Result<Applied, ApplyError> {
        if let Some(tenant) = op.tenant() {
            self.check_not_deleted(tenant).map_err(ApplyError::Rejected)?;
        }
        match op {
            WriteOp::PutTenant(tenant) => self.put_tenant(tenant).map(|()| Applied::Done),
            WriteOp::PutConnection(connection) => {
                let key = keys::connection(connection.tenant, connection.provider);
                put(&mut self.connections, CONNECTIONS, &key, connection)
                    .map_err(ApplyError::Failed)?;
                Ok(Applied::Done)
            }
            WriteOp::PutSequence(sequence) => {
                let key = keys::tenant_record(sequence.tenant, &sequence.id.0);
                put(&mut self.sequences, SEQUENCES, &key, sequence).map_err(ApplyError::Failed)?;
                Ok(Applied::Done)
            }
            WriteOp::InsertEnrolments { tenant, enrolments } => {
                self.insert_enrolments(*tenant, enrolments).map(Applied::Inserted)
            }
            WriteOp::UpdateFollowUps { tenant, fence, follow_ups, attempts } => {
                self.check_fence(*tenant, *fence).map_err(ApplyError::Rejected)?;
                self.update_follow_ups(*tenant, follow_ups, attempts).map(|()| Applied::Done)
            }
            WriteOp::RecoverInterrupted { tenant, fence } => {
                self.check_fence(*tenant, *fence).map_err(ApplyError::Rejected)?;
                let recovered = self.recover_interrupted(*tenant);
                recovered.map(Applied::Recovered).map_err(ApplyError::Failed)
            }
            WriteOp::TakeLease { tenant, node, now, ttl } => {
                self.take_lease(*tenant, node, *now, *ttl).map(Applied::Leased)
            }
            WriteOp::RenewLease { lease, now, ttl } => {
                self.renew_lease(lease, *now, *ttl).map(Applied::Leased)
            }
            WriteOp::ReleaseLease(lease) => self.release_lease(lease).map(|()| Applied::Done),
            WriteOp::PutHeartbeat(heartbeat) => {
                self.put_heartbeat(heartbeat).map(|()| Applied::Done)
            }
            WriteOp::BeginTenantDeletion(deletion) => {
                self.begin_tenant_deletion(deletion).map(|()| Applied::Done)
            }
            WriteOp::PurgeTenantChunk { tenant, limit, now } => {
                self.purge_tenant_chunk(*tenant, *limit, *now).map(Applied::Purged)
            }
            WriteOp::PutBillingRecord(record) => {
                let key = keys::tenant(record.tenant);
                put(&mut self.billing, BILLING, &key, record).map_err(ApplyError::Failed)?;
                Ok(Applied::Done)
            }
            WriteOp::PutStripeAccount(account) => {
                self.put_stripe_account(account).map(|()| Applied::Done)
            }
            WriteOp::InsertMeterBatch(batch) => {
                self.insert_meter_batch(batch).map(Applied::Stored).map_err(ApplyError::Failed)
            }
            WriteOp::MarkMeterBatchSent { key, sequence } => {
                self.mark_meter_batch_sent(key, *sequence).map(|()| Applied::Done)
            }
            WriteOp::PurgeSentMessages { before, limit } => self
                .purge_sent_messages(*before, *limit)
                .map(Applied::Counted)
                .map_err(ApplyError::Failed),
            WriteOp::PutDataKey(key) => {
                put(&mut self.data_keys, DATA_KEYS, &keys::tenant(key.tenant), key)
                    .map_err(ApplyError::Failed)?;
                Ok(Applied::Done)
            }
            WriteOp::ReserveUsage { key, wanted, limit } => {
                self.reserve_usage(key, *wanted, *limit).map(Applied::Counted)
            }
            WriteOp::SettleUsage { key, committed, released } => {
                self.settle_usage(key, *committed, *released).map(|()| Applied::Done)
            }
            WriteOp::DeleteDataKey(tenant) => {
                let removed = self.data_keys.remove(keys::tenant(*tenant).as_slice());
                let removed = removed.map_err(|e| tables::write_error(DATA_KEYS, e));
                Ok(Applied::Deleted(removed.map_err(ApplyError::Failed)?.is_some()))
            }
            WriteOp::PutSuppressions { tenant, entries } => {
                self.put_suppressions(*tenant, entries).map(|()| Applied::Done)
            }
            WriteOp::RemoveSuppressions { tenant, keys } => {
                self.remove_suppressions(*tenant, keys).map(Applied::Counted)
            }
            WriteOp::AppendAudit(entry) => self.append_audit(entry).map(|()| Applied::Done),
        }
    }

    fn append_audit(&mut self, entry: &AuditEntry) -> Result<(), ApplyError> {
        let key = entry.id.as_bytes();
        let existing = self.audit.get(key).map_err(|e| tables::read_error(AUDIT, e));
        if existing.map_err(ApplyError::Rejected)?.is_some() {
            return Err(ApplyError::Rejected(StoreError::Conflict(format!(
                "audit entry {} already exists",
                entry.id
            ))));
        }
        put(&mut self.audit, AUDIT, key, entry).map_err(ApplyError::Failed)
    }

    /// Removes the notes of the audit entries about `tenant`. Reads the whole log, which
    /// grows by operator actions only.
    pub(super) fn forget_audit_notes(&mut self, tenant: TenantId) -> Result<(), StoreError> {
        let mut noted = Vec::new();
        tables::visit(&self.audit, AUDIT, &[], |key, value| {
            let entry: AuditEntry = tables::decode(AUDIT, value)?;
            if entry.tenant == Some(tenant) && entry.note.is_some() {
                noted.push((key.to_vec(), entry));
            }
            Ok(())
        })?;
        for (key, entry) in noted {
            put(&mut self.audit, AUDIT, &key, &AuditEntry { note: None, ..entry })?;
        }
        Ok(())
    }

    fn put_suppressions(
        &mut self,
        tenant: TenantId,
        entries: &[Suppression],
    ) -> Result<(), ApplyError> {
        if let Some(foreign) = entries.iter().find(|entry| entry.tenant != tenant) {
            return Err(ApplyError::Rejected(StoreError::Conflict(format!(
                "suppression entry of tenant {} written as tenant {tenant}",
                foreign.tenant
            ))));
        }
        for entry in entries {
            let key = keys::suppression(tenant, &entry.key);
            put(&mut self.suppressions, SUPPRESSIONS, &key, entry).map_err(ApplyError::Failed)?;
        }
        Ok(())
    }

    fn remove_suppressions(
        &mut self,
        tenant: TenantId,
        entry_keys: &[String],
    ) -> Result<u64, ApplyError> {
        let mut removed = 0;
        for entry_key in entry_keys {
            let key = keys::suppression(tenant, entry_key);
            let found = self.suppressions.remove(key.as_slice());
            let found =
                found.map_err(|e| ApplyError::Failed(tables::write_error(SUPPRESSIONS, e)))?;
            removed += u64::from(found.is_some());
        }
        Ok(removed)
    }

    /// Writes the tenant and moves its API key hash in the index when the key was rotated.
    fn put_tenant(&mut self, tenant: &Tenant) -> Result<(), ApplyError> {
        self.check_api_key_owner(tenant).map_err(ApplyError::Rejected)?;
        self.write_tenant(tenant).map_err(ApplyError::Failed)
    }

    /// Inserts a meter batch unless its sequence exists; returns whether it did.
    fn insert_meter_batch(&mut self, batch: &MeterBatch) -> Result<bool, StoreError> {
        let key = keys::meter_batch(batch.tenant, &batch.period, batch.channel, batch.sequence);
        let existing: Option<MeterBatch> = tables::get(&self.meter_batches, METER_BATCHES, &key)?;
        if existing.is_some() {
            return Ok(false);
        }
        put(&mut self.meter_batches, METER_BATCHES, &key, batch)?;
        Ok(true)
    }

    fn mark_meter_batch_sent(&mut self, key: &UsageKey, sequence: u64) -> Result<(), ApplyError> {
        let period = key.period.to_string();
        let record_key = keys::meter_batch(key.tenant, &period, key.channel, sequence);
        let found: Option<MeterBatch> =
            tables::get(&self.meter_batches, METER_BATCHES, &record_key)
                .map_err(ApplyError::Failed)?;
        let Some(mut batch) = found else {
            return Err(ApplyError::Rejected(StoreError::Conflict(format!(
                "no meter batch {sequence} for tenant {} {period} {}",
                key.tenant,
                key.channel.as_str()
            ))));
        };
        if batch.sent {
            return Ok(());
        }
        batch.sent = true;
        put(&mut self.meter_batches, METER_BATCHES, &record_key, &batch).map_err(ApplyError::Failed)
    }

    /// Writes a Stripe account and moves its customer id in the index, unless the customer id
    /// belongs to another tenant.
    fn put_stripe_account(&mut self, account: &StripeAccount) -> Result<(), ApplyError> {
        let customer = account.customer_id.as_bytes();
        let owner = self.stripe_customers.get(customer);
        let owner = owner.map_err(|error| tables::read_error(STRIPE_CUSTOMERS, error));
        let owner = owner.map_err(ApplyError::Failed)?.map(|owner| owner.value().to_vec());
        if let Some(owner) = owner {
            let owner = tables::tenant_id(STRIPE_CUSTOMERS, &owner).map_err(ApplyError::Failed)?;
            if owner != account.tenant {
                return Err(ApplyError::Rejected(StoreError::Conflict(format!(
                    "tenant {}: Stripe customer {} is already linked to tenant {owner}",
                    account.tenant, account.customer_id
                ))));
            }
        }
        let key = keys::tenant(account.tenant);
        let previous: Option<StripeAccount> =
            tables::get(&self.stripe_accounts, STRIPE_ACCOUNTS, &key)
                .map_err(ApplyError::Failed)?;
        let write = |tables: &mut Self| -> Result<(), StoreError> {
            if let Some(previous) = previous.filter(|p| p.customer_id != account.customer_id) {
                let removed = tables.stripe_customers.remove(previous.customer_id.as_bytes());
                removed.map_err(|error| tables::write_error(STRIPE_CUSTOMERS, error))?;
            }
            let indexed = tables.stripe_customers.insert(customer, key.as_slice());
            indexed.map_err(|error| tables::write_error(STRIPE_CUSTOMERS, error))?;
            put(&mut tables.stripe_accounts, STRIPE_ACCOUNTS, &key, account)
        };
        write(self).map_err(ApplyError::Failed)
    }

    /// Rejects a tenant whose API key hash is already indexed for another tenant, because the
    /// index maps each hash to one tenant.
    fn check_api_key_owner(&self, tenant: &Tenant) -> Result<(), StoreError> {
        let hash = tenant.api_key_sha256.as_bytes();
        let owner = self.api_keys.get(hash).map_err(|error| tables::read_error(API_KEYS, error))?;
        let Some(owner) = owner else {
            return Ok(());
        };
        let owner = tables::tenant_id(API_KEYS, owner.value())?;
        if owner == tenant.id {
            return Ok(());
        }
        Err(StoreError::Conflict(format!(
            "tenant {}: its API key hash already belongs to tenant {owner}; issue a new key",
            tenant.id
        )))
    }

    fn write_tenant(&mut self, tenant: &Tenant) -> Result<(), StoreError> {
        let key = keys::tenant(tenant.id);
        let previous: Option<Tenant> = tables::get(&self.tenants, TENANTS, &key)?;
        let hash = tenant.api_key_sha256.as_bytes();
        if let Some(previous) = previous.filter(|p| p.api_key_sha256 != tenant.api_key_sha256) {
            let old_hash = previous.api_key_sha256.as_bytes();
            let removed = self.api_keys.remove(old_hash);
            removed.map_err(|error| tables::write_error(API_KEYS, error))?;
        }
        put(&mut self.tenants, TENANTS, &key, tenant)?;
        let owner: &[u8] = tenant.id.as_bytes();
        let inserted = self.api_keys.insert(hash, owner);
        inserted.map_err(|error| tables::write_error(API_KEYS, error))?;
        Ok(())
    }

    /// Inserts the enrolments whose schedule is new, all within this transaction, so that the
    /// caller's batch lands whole or not at all.
    fn insert_enrolments(
        &mut self,
        tenant: TenantId,
        enrolments: &[Enrolment],
    ) -> Result<InsertReport, ApplyError> {
        for enrolment in enrolments {
            check_enrolment(tenant, enrolment).map_err(ApplyError::Rejected)?;
        }

        let mut report = InsertReport::default();
        for enrolment in enrolments {
            if self.insert_enrolment(tenant, enrolment).map_err(ApplyError::Failed)? {
                report.inserted += 1;
            } else {
                report.duplicates += 1;
            }
        }
        Ok(report)
    }

    /// Writes one enrolment unless its schedule exists; returns whether it was written.
    fn insert_enrolment(
        &mut self,
        tenant: TenantId,
        enrolment: &Enrolment,
    ) -> Result<bool, StoreError> {
        let schedule_key = keys::tenant_record(tenant, &enrolment.schedule.id.0);
        if tables::contains(&self.schedules, SCHEDULES, &schedule_key)? {
            return Ok(false);
        }
        put(&mut self.schedules, SCHEDULES, &schedule_key, &enrolment.schedule)?;

        // An existing contact keeps its stored fields: the first upload that named it wins.
        let contact_key = keys::tenant_record(tenant, &enrolment.contact.id.0);
        if !tables::contains(&self.contacts, CONTACTS, &contact_key)? {
            put(&mut self.contacts, CONTACTS, &contact_key, &enrolment.contact)?;
        }

        for follow_up in &enrolment.follow_ups {
            self.put_follow_up(tenant, None, follow_up)?;
        }
        Ok(true)
    }

    /// Replaces follow-ups and appends attempts after checking that every follow-up named
    /// exists for `tenant`, so an unknown or foreign id rejects the whole call.
    fn update_follow_ups(
        &mut self,
        tenant: TenantId,
        follow_ups: &[FollowUp],
        attempts: &[Attempt],
    ) -> Result<(), ApplyError> {
        self.check_update(tenant, follow_ups, attempts).map_err(ApplyError::Rejected)?;
        self.write_update(tenant, follow_ups, attempts).map_err(ApplyError::Failed)
    }

    fn write_update(
        &mut self,
        tenant: TenantId,
        follow_ups: &[FollowUp],
        attempts: &[Attempt],
    ) -> Result<(), StoreError> {
        // Each previous record is read just before its replacement, so a follow-up named twice
        // in one call moves its index entries from the first replacement to the second.
        for follow_up in follow_ups {
            let key = keys::follow_up(tenant, follow_up.id);
            let previous: Option<FollowUp> = tables::get(&self.follow_ups, FOLLOW_UPS, &key)?;
            self.put_follow_up(tenant, previous.as_ref(), follow_up)?;
        }
        for attempt in attempts {
            let key = keys::attempt(tenant, attempt.follow_up, attempt.number);
            put(&mut self.attempts, ATTEMPTS, &key, attempt)?;
            if attempt.message.is_some() {
                self.index_sent_message(tenant, attempt)?;
            }
        }
        Ok(())
    }

    fn check_update(
        &self,
        tenant: TenantId,
        follow_ups: &[FollowUp],
        attempts: &[Attempt],
    ) -> Result<(), StoreError> {
        for follow_up in follow_ups {
            if follow_up.tenant != tenant {
                return Err(StoreError::Conflict(format!(
                    "follow-up {} names tenant {}, but the update is for tenant {tenant}",
                    follow_up.id, follow_up.tenant
                )));
            }
            self.check_follow_up_exists(tenant, follow_up.id)?;
        }
        for attempt in attempts {
            self.check_follow_up_exists(tenant, attempt.follow_up)?;

            // Appending never rewrites history: the same attempt again is a harmless repeat,
            // but a different one under the same number is a bug in the caller. The detail
            // and message are left out of the comparison because a sealed store seals them
            // with a new nonce on each write, so a true repeat differs there.
            let key = keys::attempt(tenant, attempt.follow_up, attempt.number);
            let stored: Option<Attempt> = tables::get(&self.attempts, ATTEMPTS, &key)?;
            if stored.is_some_and(|stored| !same_attempt(&stored, attempt)) {
                return Err(StoreError::Conflict(format!(
                    "attempt {} of follow-up {} is already stored with different content",
                    attempt.number, attempt.follow_up
                )));
            }
        }
        Ok(())
    }

    fn check_follow_up_exists(&self, tenant: TenantId, id: FollowUpId) -> Result<(), StoreError> {
        let key = keys::follow_up(tenant, id);
        if tables::contains(&self.follow_ups, FOLLOW_UPS, &key)? {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!("follow-up {id} not found for tenant {tenant}")))
        }
    }

    /// Returns the tenant's claimed follow-ups to pending and turns its sending ones in-doubt,
    /// visiting only the tenant's part of the in-flight index.
    fn recover_interrupted(&mut self, tenant: TenantId) -> Result<RecoveryReport, StoreError> {
        let mut interrupted = Vec::new();
        tables::visit(&self.in_flight, IN_FLIGHT, &keys::tenant(tenant), |key, _| {
            interrupted.push(key.to_vec());
            Ok(())
        })?;

        let mut report = RecoveryReport::default();
        for key in interrupted {
            let corrupt = |reason: String| StoreError::Corrupt { table: IN_FLIGHT.name, reason };
            let (_, id) = keys::parse_follow_up(&key)
                .ok_or_else(|| corrupt(format!("malformed key of {} bytes", key.len())))?;
            let previous: FollowUp = tables::get(&self.follow_ups, FOLLOW_UPS, &key)?
                .ok_or_else(|| corrupt(format!("key names missing follow-up {id}")))?;
            let (state, reason) = match previous.state {
                FollowUpState::Claimed => {
                    report.released_claims += 1;
                    (FollowUpState::Pending, previous.reason.clone())
                }
                FollowUpState::Sending => {
                    report.in_doubt += 1;
                    (FollowUpState::InDoubt, Some(IN_DOUBT_AFTER_STOP.to_owned()))
                }
                // Not in flight after all: only the stale index entry needs to go.
                other => (other, previous.reason.clone()),
            };
            let recovered = FollowUp { state, reason, ..previous.clone() };
            self.put_follow_up(tenant, Some(&previous), &recovered)?;
        }
        Ok(report)
    }

    /// Writes a follow-up and keeps the due and in-flight indexes in step with its state.
    fn put_follow_up(
        &mut self,
        tenant: TenantId,
        previous: Option<&FollowUp>,
        follow_up: &FollowUp,
    ) -> Result<(), StoreError> {
        let key = keys::follow_up(tenant, follow_up.id);
        if let Some(previous) = previous {
            if previous.state.is_due_kind() {
                let due_key = keys::due(tenant, previous.channel, previous.due_at, previous.id);
                self.due.remove(due_key.as_slice()).map_err(|e| tables::write_error(DUE, e))?;
            }
            if is_in_flight(previous.state) {
                self.in_flight
                    .remove(key.as_slice())
                    .map_err(|e| tables::write_error(IN_FLIGHT, e))?;
            }
        }

        put(&mut self.follow_ups, FOLLOW_UPS, &key, follow_up)?;
        let empty: &[u8] = &[];
        if follow_up.state.is_due_kind() {
            let due_key = keys::due(tenant, follow_up.channel, follow_up.due_at, follow_up.id);
            self.due.insert(due_key.as_slice(), empty).map_err(|e| tables::write_error(DUE, e))?;
        }
        if is_in_flight(follow_up.state) {
            let inserted = self.in_flight.insert(key.as_slice(), empty);
            inserted.map_err(|e| tables::write_error(IN_FLIGHT, e))?;
        }
        let newly_sent = is_maybe_sent(follow_up.state)
            && !previous.is_some_and(|previous| is_maybe_sent(previous.state));
        if newly_sent {
            self.record_send(tenant, follow_up)?;
        }
        Ok(())
    }

    /// Adds a follow-up to the sent index, and drops a few of its channel's entries that are
    /// older than `SENT_KEPT_FOR`, so that the index contains about two days of sends without a
    /// separate sweep.
    fn record_send(&mut self, tenant: TenantId, follow_up: &FollowUp) -> Result<(), StoreError> {
        const DROPPED_PER_SEND: usize = 4;
        let at = follow_up.sent_at.unwrap_or(follow_up.updated_at);
        let sent_key = keys::due(tenant, follow_up.channel, at, follow_up.id);
        let empty: &[u8] = &[];
        self.sent.insert(sent_key.as_slice(), empty).map_err(|e| tables::write_error(SENT, e))?;

        let start = keys::due_prefix(tenant, follow_up.channel);
        let end = keys::due_end(tenant, follow_up.channel, at - tables::SENT_KEPT_FOR);
        let mut stale = Vec::new();
        let range = self.sent.range(start.as_slice()..end.as_slice());
        for entry in range.map_err(|e| tables::read_error(SENT, e))?.take(DROPPED_PER_SEND) {
            let (key, _) = entry.map_err(|e| tables::read_error(SENT, e))?;
            stale.push(key.value().to_vec());
        }
        for key in stale {
            self.sent.remove(key.as_slice()).map_err(|e| tables::write_error(SENT, e))?;
        }
        Ok(())
    }
}

/// Tells whether a follow-up in this state may have reached its provider, and so counts
/// against the connection's limits.
pub(crate) fn is_maybe_sent(state: FollowUpState) -> bool {
    matches!(state, FollowUpState::Sent | FollowUpState::InDoubt)
}

/// Tells whether a stop in this state leaves something for start-up recovery to settle.
fn is_in_flight(state: FollowUpState) -> bool {
    matches!(state, FollowUpState::Claimed | FollowUpState::Sending)
}

/// Rejects an enrolment whose records name another tenant or another schedule, because the
/// keys come from `tenant` and the schedule id and would file the records under the wrong owner.
pub(crate) fn check_enrolment(tenant: TenantId, enrolment: &Enrolment) -> Result<(), StoreError> {
    let schedule = &enrolment.schedule;
    let reject = |problem: String| {
        StoreError::Conflict(format!(
            "enrolment of schedule {} (upload line {}): {problem}",
            schedule.id, schedule.source_line
        ))
    };
    let owners = std::iter::once(("the schedule", schedule.tenant))
        .chain(std::iter::once(("the contact", enrolment.contact.tenant)))
        .chain(enrolment.follow_ups.iter().map(|follow_up| ("a follow-up", follow_up.tenant)));
    for (record, owner) in owners {
        if owner != tenant {
            let problem = format!("{record} names tenant {owner}, but the batch is for {tenant}");
            return Err(reject(problem));
        }
    }
    for follow_up in &enrolment.follow_ups {
        if follow_up.id.schedule != schedule.id {
            return Err(reject(format!("follow-up {} belongs to another schedule", follow_up.id)));
        }
    }
    Ok(())
}

fn put<T: serde::Serialize>(
    target: &mut RawTable<'_>,
    table: Table,
    key: &[u8],
    record: &T,
) -> Result<(), StoreError> {
    let value = tables::encode(table, record)?;
    target.insert(key, value.as_slice()).map_err(|error| tables::write_error(table, error))?;
    Ok(())
}

/// Returns whether `a` and `b` record the same attempt: the same follow-up, number, provider,
/// instants and result.
pub(crate) fn same_attempt(a: &Attempt, b: &Attempt) -> bool {
    (a.follow_up, a.number, a.provider, a.started_at, a.finished_at, a.result)
        == (b.follow_up, b.number, b.provider, b.started_at, b.finished_at, b.result)
}
