//! The embedded store: the default [`Store`], a single crash-safe redb file in the data
//! directory, so the engine needs no database server.
//!
//! Every key starts with the tenant id (see `keys`), so tenant scoping is part of the layout.
//! Reads run in redb read transactions on the blocking thread pool and never wait for writes.
//! Writes go to one writer thread that group-commits them (see `writer`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use followup_core::domain::{
    Attempt, BillingRecord, Channel, Connection, Contact, FollowUp, Schedule, Sequence, Tenant,
    TenantDeletion,
};
use followup_core::ids::{ContactId, FollowUpId, ScheduleId, SequenceId, TenantId};
use followup_core::store::lease::{Lease, NodeHeartbeat};
use followup_core::store::metering::MeterBatch;
use followup_core::store::subscription::StripeAccount;
use followup_core::store::usage::{UsageCounter, UsageKey};
use followup_core::store::{
    AttemptCursor, AuditEntry, ConnectionStatus, Enrolment, FollowUpCounts, FollowUpTally,
    InsertReport, PurgeProgress, RecoveryReport, Store, StoreError, StoreFuture, WrappedDataKey,
};
use followup_core::suppression::Suppression;
use redb::{Database, ReadableDatabase as _};

use self::write::{Applied, WriteOp, WriteTables};
use self::writer::Writer;

mod keys;
mod read;
mod tables;
pub(crate) mod write;
mod writer;

#[cfg(test)]
mod tests;

/// Name of the database file inside the data directory.
pub const FILE_NAME: &str = "followup.redb";

/// The embedded store. Cheap to share behind an `Arc`; dropping it waits for queued writes to
/// commit and then closes the file.
pub struct EmbeddedStore {
    path: PathBuf,
    db: Arc<Database>,
    writer: Writer,
}

/// Memory redb may use to cache pages by default, in MiB (`embedded_cache_mib`). redb's own
/// default is 1 GiB. With 1,000,000 follow-ups pending, 64 MiB instead of 256 MiB took the
/// engine's peak RSS from 336 MiB to 141 MiB with the same lateness (BENCHMARKS.md).
pub const DEFAULT_CACHE_MIB: u64 = 64;

/// Makes the database file, and the data directory when the store created it, readable by
/// their owner only, because the file contains contact data and provider credentials. A
/// directory that existed before keeps its permissions: it may be shared, like `/tmp`.
#[cfg(unix)]
fn restrict_to_owner(dir: Option<&Path>, file: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(dir) = dir {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn restrict_to_owner(_dir: Option<&Path>, _file: &Path) -> std::io::Result<()> {
    Ok(())
}

/// Opens the store in `dir`, creating the directory and the database file if they are missing.
///
/// Blocks while redb opens the file, which includes a repair pass after an unclean shutdown, so
/// call it at start-up or on a blocking thread.
pub fn open(dir: &Path) -> Result<EmbeddedStore, StoreError> {
    open_with_cache(dir, usize::try_from(DEFAULT_CACHE_MIB << 20).unwrap_or(usize::MAX))
}

/// Opens the store in `dir` like [`open`], with a page cache of `cache_bytes`.
pub fn open_with_cache(dir: &Path, cache_bytes: usize) -> Result<EmbeddedStore, StoreError> {
    let fail = |action: &str, error: &dyn fmt::Display| {
        tables::unavailable(format_args!("{action} {}", dir.display()), error)
    };
    let created = !dir.exists();
    std::fs::create_dir_all(dir).map_err(|error| fail("creating data directory", &error))?;
    let path = dir.join(FILE_NAME);
    let db = redb::Builder::new()
        .set_cache_size(cache_bytes)
        .create(&path)
        .map_err(|error| fail("opening database in", &error))?;
    restrict_to_owner(created.then_some(dir), &path)
        .map_err(|error| fail("restricting permissions of", &error))?;
    create_tables(&db)?;
    expire_leases_of_previous_process(&db)?;
    let mut db = db;
    compact_after_purge(&mut db)?;
    let db = Arc::new(db);
    let writer = Writer::start(Arc::clone(&db))?;
    Ok(EmbeddedStore { path, db, writer })
}

/// Creates every table up front, so that read transactions never meet a missing one.
fn create_tables(db: &Database) -> Result<(), StoreError> {
    let txn = db
        .begin_write()
        .map_err(|error| tables::unavailable("starting a write transaction", error))?;
    drop(WriteTables::open(&txn)?);
    txn.commit().map_err(|error| tables::unavailable("creating tables", error))
}

/// Ends every lease on file. redb locks the file, so only one process uses the store at a time,
/// and every lease on file belongs to a process that has stopped: the new process may take
/// its tenants at once instead of waiting for the leases to expire.
fn expire_leases_of_previous_process(db: &Database) -> Result<(), StoreError> {
    let txn = db
        .begin_write()
        .map_err(|error| tables::unavailable("starting a write transaction", error))?;
    let expired = WriteTables::open(&txn)?.expire_all_leases()?;
    txn.commit().map_err(|error| tables::unavailable("expiring old leases", error))?;
    if expired > 0 {
        tracing::info!(expired, "ended the leases of the previous process");
    }
    Ok(())
}

/// Compacts the file when a purge finished since the last opening, so that the purged records'
/// bytes, which redb leaves in freed pages, are overwritten or cut off.
///
/// NOTE: compaction needs the database to itself, so it runs here, at start-up, and purged
/// bytes stay in the file's free pages until the engine restarts. Encryption at rest with a
/// destroyed tenant key is what makes them unreadable before that.
fn compact_after_purge(db: &mut Database) -> Result<(), StoreError> {
    let pending = {
        let txn = db.begin_read().map_err(|e| tables::unavailable("starting a read", e))?;
        let table = txn
            .open_table(tables::MAINTENANCE.definition())
            .map_err(|e| tables::unavailable("opening maintenance", e))?;
        tables::contains(&table, tables::MAINTENANCE, tables::COMPACT_AFTER_PURGE)?
    };
    if !pending {
        return Ok(());
    }
    tracing::info!("compacting the store file after a tenant purge");
    while db
        .compact(redb::CompactionMode::Maximum)
        .map_err(|e| tables::unavailable("compacting the file after a purge", e))?
    {}
    let txn = db.begin_write().map_err(|e| tables::unavailable("starting a write", e))?;
    {
        let mut table = txn
            .open_table(tables::MAINTENANCE.definition())
            .map_err(|e| tables::unavailable("opening maintenance", e))?;
        let removed = table.remove(tables::COMPACT_AFTER_PURGE);
        removed.map_err(|e| tables::write_error(tables::MAINTENANCE, e))?;
    }
    txn.commit().map_err(|e| tables::unavailable("committing after compaction", e))
}

impl EmbeddedStore {
    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of write transactions committed since the store was opened. With group commit,
    /// concurrent writes share commits, so this grows slower than the number of write calls.
    pub fn commits(&self) -> u64 {
        self.writer.commits()
    }

    /// Runs a read on the blocking thread pool, because redb reads block on file I/O.
    fn read<T, F>(&self, read: F) -> StoreFuture<'_, T>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        Box::pin(async move {
            let task = tokio::task::spawn_blocking(move || read(&db));
            task.await.map_err(|error| tables::unavailable("running a read task", error))?
        })
    }

    /// Submits a lease write, whose result is the lease taken or renewed.
    fn write_lease(&self, op: WriteOp) -> StoreFuture<'_, Option<Lease>> {
        Box::pin(async move {
            match self.writer.submit(op).await? {
                Applied::Leased(lease) => Ok(lease),
                other => Err(unexpected_outcome("a lease write", &other)),
            }
        })
    }

    /// Submits a write whose caller expects no result.
    fn write(&self, op: WriteOp) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            match self.writer.submit(op).await? {
                Applied::Done => Ok(()),
                other => Err(unexpected_outcome("a write", &other)),
            }
        })
    }
}

/// Builds the error for an outcome that does not match its request, which would be a bug in
/// the writer.
fn unexpected_outcome(request: &str, outcome: &Applied) -> StoreError {
    StoreError::Unavailable(format!("embedded store: {request} returned {outcome:?}"))
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .field("commits", &self.commits())
            .finish_non_exhaustive()
    }
}

impl Store for EmbeddedStore {
    fn put_tenant(&self, tenant: Tenant) -> StoreFuture<'_, ()> {
        self.write(WriteOp::PutTenant(tenant))
    }

    fn tenant(&self, id: TenantId) -> StoreFuture<'_, Option<Tenant>> {
        self.read(move |db| read::tenant(db, id))
    }

    fn tenant_by_api_key(&self, api_key_sha256: String) -> StoreFuture<'_, Option<Tenant>> {
        self.read(move |db| read::tenant_by_api_key(db, &api_key_sha256))
    }

    fn tenants(&self) -> StoreFuture<'_, Vec<Tenant>> {
        self.read(read::tenants)
    }

    fn put_connection(&self, connection: Connection) -> StoreFuture<'_, ()> {
        self.write(WriteOp::PutConnection(connection))
    }

    fn connections(&self, tenant: TenantId) -> StoreFuture<'_, Vec<Connection>> {
        self.read(move |db| read::connections(db, tenant))
    }

    fn put_sequence(&self, sequence: Sequence) -> StoreFuture<'_, ()> {
        self.write(WriteOp::PutSequence(sequence))
    }

    fn sequence(&self, tenant: TenantId, id: SequenceId) -> StoreFuture<'_, Option<Sequence>> {
        self.read(move |db| read::sequence(db, tenant, id))
    }

    fn sequences(&self, tenant: TenantId) -> StoreFuture<'_, Vec<Sequence>> {
        self.read(move |db| read::sequences(db, tenant))
    }

    fn insert_enrolments(
        &self,
        tenant: TenantId,
        enrolments: Vec<Enrolment>,
    ) -> StoreFuture<'_, InsertReport> {
        Box::pin(async move {
            let op = WriteOp::InsertEnrolments { tenant, enrolments };
            match self.writer.submit(op).await? {
                Applied::Inserted(report) => Ok(report),
                other => Err(unexpected_outcome("insert_enrolments", &other)),
            }
        })
    }

    fn contacts(&self, tenant: TenantId, ids: Vec<ContactId>) -> StoreFuture<'_, Vec<Contact>> {
        self.read(move |db| read::contacts(db, tenant, &ids))
    }

    fn schedule(&self, tenant: TenantId, id: ScheduleId) -> StoreFuture<'_, Option<Schedule>> {
        self.read(move |db| read::schedule(db, tenant, id))
    }

    fn follow_ups_of_schedule(
        &self,
        tenant: TenantId,
        id: ScheduleId,
    ) -> StoreFuture<'_, Vec<FollowUp>> {
        self.read(move |db| read::follow_ups_of_schedule(db, tenant, id))
    }

    fn follow_up(&self, tenant: TenantId, id: FollowUpId) -> StoreFuture<'_, Option<FollowUp>> {
        self.read(move |db| read::follow_up(db, tenant, id))
    }

    fn follow_ups_page(
        &self,
        tenant: TenantId,
        after: Option<FollowUpId>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<FollowUp>> {
        self.read(move |db| read::follow_ups_page(db, tenant, after, limit))
    }

    fn due_follow_ups(
        &self,
        tenant: TenantId,
        channel: Channel,
        until: DateTime<Utc>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<FollowUp>> {
        self.read(move |db| read::due_follow_ups(db, tenant, channel, until, limit))
    }

    fn next_due_at(
        &self,
        tenant: TenantId,
        channel: Channel,
    ) -> StoreFuture<'_, Option<DateTime<Utc>>> {
        self.read(move |db| read::next_due_at(db, tenant, channel))
    }

    fn sends_since(
        &self,
        tenant: TenantId,
        channel: Channel,
        since: DateTime<Utc>,
    ) -> StoreFuture<'_, Vec<DateTime<Utc>>> {
        self.read(move |db| read::sends_since(db, tenant, channel, since))
    }

    fn update_follow_ups(
        &self,
        tenant: TenantId,
        fence: u64,
        follow_ups: Vec<FollowUp>,
        attempts: Vec<Attempt>,
    ) -> StoreFuture<'_, ()> {
        self.write(WriteOp::UpdateFollowUps { tenant, fence, follow_ups, attempts })
    }

    fn attempts(&self, tenant: TenantId, id: FollowUpId) -> StoreFuture<'_, Vec<Attempt>> {
        self.read(move |db| read::attempts(db, tenant, id))
    }

    fn recover_interrupted(&self, tenant: TenantId, fence: u64) -> StoreFuture<'_, RecoveryReport> {
        Box::pin(async move {
            match self.writer.submit(WriteOp::RecoverInterrupted { tenant, fence }).await? {
                Applied::Recovered(report) => Ok(report),
                other => Err(unexpected_outcome("recover_interrupted", &other)),
            }
        })
    }

    fn take_lease(
        &self,
        tenant: TenantId,
        node: String,
        now: DateTime<Utc>,
        ttl: chrono::Duration,
    ) -> StoreFuture<'_, Option<Lease>> {
        self.write_lease(WriteOp::TakeLease { tenant, node, now, ttl })
    }

    fn renew_lease(
        &self,
        lease: Lease,
        now: DateTime<Utc>,
        ttl: chrono::Duration,
    ) -> StoreFuture<'_, Option<Lease>> {
        self.write_lease(WriteOp::RenewLease { lease, now, ttl })
    }

    fn release_lease(&self, lease: Lease) -> StoreFuture<'_, ()> {
        self.write(WriteOp::ReleaseLease(lease))
    }

    fn leases(&self) -> StoreFuture<'_, Vec<Lease>> {
        self.read(read::leases)
    }

    fn put_heartbeat(&self, heartbeat: NodeHeartbeat) -> StoreFuture<'_, ()> {
        self.write(WriteOp::PutHeartbeat(heartbeat))
    }

    fn heartbeats(&self) -> StoreFuture<'_, Vec<NodeHeartbeat>> {
        self.read(read::heartbeats)
    }

    fn reserve_usage(&self, key: UsageKey, wanted: u64, limit: u64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            match self.writer.submit(WriteOp::ReserveUsage { key, wanted, limit }).await? {
                Applied::Counted(granted) => Ok(granted),
                other => Err(unexpected_outcome("reserve_usage", &other)),
            }
        })
    }

    fn settle_usage(&self, key: UsageKey, committed: u64, released: u64) -> StoreFuture<'_, ()> {
        self.write(WriteOp::SettleUsage { key, committed, released })
    }

    fn usage(
        &self,
        tenant: Option<TenantId>,
        period: String,
    ) -> StoreFuture<'_, Vec<UsageCounter>> {
        self.read(move |db| read::usage(db, tenant, &period))
    }

    fn count_follow_ups(&self, tenant: Option<TenantId>) -> StoreFuture<'_, FollowUpCounts> {
        self.read(move |db| read::count_follow_ups(db, tenant))
    }

    fn append_audit(&self, entry: AuditEntry) -> StoreFuture<'_, ()> {
        self.write(WriteOp::AppendAudit(entry))
    }

    fn audit_page(&self, offset: u64, limit: usize) -> StoreFuture<'_, (u64, Vec<AuditEntry>)> {
        self.read(move |db| read::audit_page(db, offset, limit))
    }

    fn tally_follow_ups(&self, now: DateTime<Utc>) -> StoreFuture<'_, Vec<FollowUpTally>> {
        self.read(move |db| read::tally_follow_ups(db, now))
    }

    fn connection_statuses(&self) -> StoreFuture<'_, Vec<ConnectionStatus>> {
        self.read(read::connection_statuses)
    }

    fn contacts_page(
        &self,
        tenant: TenantId,
        after: Option<ContactId>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<Contact>> {
        self.read(move |db| read::contacts_page(db, tenant, after, limit))
    }

    fn schedules_page(
        &self,
        tenant: TenantId,
        after: Option<ScheduleId>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<Schedule>> {
        self.read(move |db| read::schedules_page(db, tenant, after, limit))
    }

    fn attempts_page(
        &self,
        tenant: TenantId,
        after: Option<AttemptCursor>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<Attempt>> {
        self.read(move |db| read::attempts_page(db, tenant, after, limit))
    }

    fn begin_tenant_deletion(&self, deletion: TenantDeletion) -> StoreFuture<'_, ()> {
        self.write(WriteOp::BeginTenantDeletion(deletion))
    }

    fn tenant_deletions(&self) -> StoreFuture<'_, Vec<TenantDeletion>> {
        self.read(read::tenant_deletions)
    }

    fn purge_tenant_chunk(
        &self,
        tenant: TenantId,
        limit: usize,
        now: DateTime<Utc>,
    ) -> StoreFuture<'_, PurgeProgress> {
        Box::pin(async move {
            match self.writer.submit(WriteOp::PurgeTenantChunk { tenant, limit, now }).await? {
                Applied::Purged(progress) => Ok(progress),
                other => Err(unexpected_outcome("purge_tenant_chunk", &other)),
            }
        })
    }

    fn put_billing_record(&self, record: BillingRecord) -> StoreFuture<'_, ()> {
        self.write(WriteOp::PutBillingRecord(record))
    }

    fn billing_record(&self, tenant: TenantId) -> StoreFuture<'_, Option<BillingRecord>> {
        self.read(move |db| read::billing_record(db, tenant))
    }

    fn insert_meter_batch(&self, batch: MeterBatch) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            match self.writer.submit(WriteOp::InsertMeterBatch(batch)).await? {
                Applied::Stored(inserted) => Ok(inserted),
                other => Err(unexpected_outcome("insert_meter_batch", &other)),
            }
        })
    }

    fn last_meter_batch(&self, key: UsageKey) -> StoreFuture<'_, Option<MeterBatch>> {
        self.read(move |db| read::last_meter_batch(db, &key))
    }

    fn unsent_meter_batches(&self, limit: usize) -> StoreFuture<'_, Vec<MeterBatch>> {
        self.read(move |db| read::unsent_meter_batches(db, limit))
    }

    fn mark_meter_batch_sent(&self, key: UsageKey, sequence: u64) -> StoreFuture<'_, ()> {
        self.write(WriteOp::MarkMeterBatchSent { key, sequence })
    }

    fn put_stripe_account(&self, account: StripeAccount) -> StoreFuture<'_, ()> {
        self.write(WriteOp::PutStripeAccount(account))
    }

    fn stripe_account(&self, tenant: TenantId) -> StoreFuture<'_, Option<StripeAccount>> {
        self.read(move |db| read::stripe_account(db, tenant))
    }

    fn stripe_account_by_customer(
        &self,
        customer_id: String,
    ) -> StoreFuture<'_, Option<StripeAccount>> {
        self.read(move |db| read::stripe_account_by_customer(db, &customer_id))
    }

    fn purge_sent_messages(&self, before: DateTime<Utc>, limit: usize) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            match self.writer.submit(WriteOp::PurgeSentMessages { before, limit }).await? {
                Applied::Counted(count) => Ok(count),
                other => Err(unexpected_outcome("purge_sent_messages", &other)),
            }
        })
    }

    fn put_data_key(&self, key: WrappedDataKey) -> StoreFuture<'_, ()> {
        self.write(WriteOp::PutDataKey(key))
    }

    fn data_key(&self, tenant: TenantId) -> StoreFuture<'_, Option<WrappedDataKey>> {
        self.read(move |db| read::data_key(db, tenant))
    }

    fn data_keys(&self) -> StoreFuture<'_, Vec<WrappedDataKey>> {
        self.read(read::data_keys)
    }

    fn delete_data_key(&self, tenant: TenantId) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            match self.writer.submit(WriteOp::DeleteDataKey(tenant)).await? {
                Applied::Deleted(found) => Ok(found),
                other => Err(unexpected_outcome("delete_data_key", &other)),
            }
        })
    }

    fn put_suppressions(&self, tenant: TenantId, entries: Vec<Suppression>) -> StoreFuture<'_, ()> {
        self.write(WriteOp::PutSuppressions { tenant, entries })
    }

    fn suppressions(
        &self,
        tenant: TenantId,
        keys: Vec<String>,
    ) -> StoreFuture<'_, Vec<Suppression>> {
        self.read(move |db| read::suppressions(db, tenant, &keys))
    }

    fn suppressions_page(
        &self,
        tenant: TenantId,
        after: Option<String>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<Suppression>> {
        self.read(move |db| read::suppressions_page(db, tenant, after, limit))
    }

    fn remove_suppressions(&self, tenant: TenantId, keys: Vec<String>) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            match self.writer.submit(WriteOp::RemoveSuppressions { tenant, keys }).await? {
                Applied::Counted(count) => Ok(count),
                other => Err(unexpected_outcome("remove_suppressions", &other)),
            }
        })
    }
}
