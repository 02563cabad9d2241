//! The Store trait: everything the engine keeps, behind one interface with two
//! implementations (the embedded store and MongoDB) that pass one conformance suite.
//!
//! Every method is scoped by tenant where the record belongs to one, so that a request on
//! behalf of one tenant cannot read or change another tenant's records, whatever id it names.
//! Every write is durable when its future completes.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{
    Attempt, BillingRecord, Channel, Connection, Contact, FollowUp, FollowUpState, Provider,
    Schedule, Sequence, Tenant, TenantDeletion,
};
use crate::ids::{ContactId, FollowUpId, ScheduleId, SequenceId, TenantId};
use crate::suppression::Suppression;

pub mod conformance;
pub mod lease;
pub mod metering;
pub mod sealed;
pub mod subscription;
pub mod usage;

use self::lease::{Lease, NodeHeartbeat};
use self::metering::MeterBatch;
use self::subscription::StripeAccount;
use self::usage::{UsageCounter, UsageKey};

/// The future every store method returns. Boxed so that `dyn Store` works.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Errors of a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be read or written; the message names the operation and cause.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A record in the store could not be decoded.
    #[error("corrupt record in {table}: {reason}")]
    Corrupt { table: &'static str, reason: String },
    /// A write conflicts with an existing record, other than an idempotent duplicate.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A write names a lease epoch (its fencing token) older than the tenant's newest lease:
    /// another node has taken the tenant over, and the writer must stop dispatching it.
    #[error(
        "tenant {tenant} is leased under epoch {current}; a write under epoch {fence} is fenced off"
    )]
    Fenced { tenant: TenantId, fence: u64, current: u64 },
    /// A sealed field could not be sealed or opened, or the tenant's data key is missing.
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
}

/// A contact enrolled in a sequence, with the follow-ups planned for it. The unit of ingest.
#[derive(Clone, Debug, PartialEq)]
pub struct Enrolment {
    pub contact: Contact,
    pub schedule: Schedule,
    pub follow_ups: Vec<FollowUp>,
}

/// Outcome of an ingest batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InsertReport {
    /// Schedules written for the first time.
    pub inserted: u64,
    /// Schedules that were already there, left unchanged.
    pub duplicates: u64,
}

/// Changes made by the recovery of a tenant's interrupted follow-ups.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Claimed follow-ups whose request had not left, returned to pending.
    pub released_claims: u64,
    /// Follow-ups whose request may have left, moved to in-doubt.
    pub in_doubt: u64,
}

/// Reason recorded on a follow-up that recovery moves to in-doubt.
pub const IN_DOUBT_AFTER_STOP: &str = "the engine stopped while the request was in flight; it \
     may have been delivered, so it is not sent again";

/// Result of one chunk of a tenant's purge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PurgeProgress {
    /// Records removed by this chunk.
    pub removed: u64,
    /// Whether the tenant has no record left, in which case its deletion marker is completed.
    pub done: bool,
}

/// Position of an attempt in paging order: its follow-up, then its number.
pub type AttemptCursor = (FollowUpId, u32);

/// A tenant's data key as the store keeps it: sealed by a master key, which is not stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedDataKey {
    pub tenant: TenantId,
    /// Version of the data key, named in every value sealed under it.
    pub version: u32,
    /// Id of the master key that wrapped it (see `crypto::MasterKey::id`).
    pub master_key_id: String,
    /// The data key sealed by the master key, base64url.
    pub wrapped: String,
    pub created_at: DateTime<Utc>,
}

/// Number of follow-ups per channel and state.
pub type FollowUpCounts = BTreeMap<(Channel, FollowUpState), u64>;

/// Follow-ups of one tenant on one channel in one state, from [`Store::tally_follow_ups`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowUpTally {
    pub tenant: TenantId,
    pub channel: Channel,
    pub state: FollowUpState,
    pub count: u64,
    /// Of `count`, those due at or before the instant of the tally. Counted for pending and
    /// retry follow-ups only; 0 in every other state.
    pub due: u64,
}

/// A connection as the operator overview needs it: no sender address, no credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionStatus {
    pub tenant: TenantId,
    pub provider: Provider,
    /// Why sending through it is paused, if it is.
    pub paused_reason: Option<String>,
}

/// One operator action in the audit log. Tenants are named by id only, never by name; the
/// note is the operator's free text, and is removed when the tenant it concerns is deleted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// A UUID v7, so that ids sort by time.
    pub id: String,
    pub at: DateTime<Utc>,
    pub operator: String,
    pub action: String,
    pub target: String,
    /// The tenant acted on, if any.
    pub tenant: Option<TenantId>,
    pub note: Option<String>,
    pub affected: u64,
}

/// Durable storage of the engine.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Inserts or replaces a tenant.
    fn put_tenant(&self, tenant: Tenant) -> StoreFuture<'_, ()>;

    fn tenant(&self, id: TenantId) -> StoreFuture<'_, Option<Tenant>>;

    /// Finds the tenant whose API key hashes to `api_key_sha256` (lowercase hex).
    fn tenant_by_api_key(&self, api_key_sha256: String) -> StoreFuture<'_, Option<Tenant>>;

    fn tenants(&self) -> StoreFuture<'_, Vec<Tenant>>;

    /// Inserts or replaces the tenant's connection for `connection.provider`: a tenant has at
    /// most one connection per provider.
    fn put_connection(&self, connection: Connection) -> StoreFuture<'_, ()>;

    fn connections(&self, tenant: TenantId) -> StoreFuture<'_, Vec<Connection>>;

    fn put_sequence(&self, sequence: Sequence) -> StoreFuture<'_, ()>;

    fn sequence(&self, tenant: TenantId, id: SequenceId) -> StoreFuture<'_, Option<Sequence>>;

    fn sequences(&self, tenant: TenantId) -> StoreFuture<'_, Vec<Sequence>>;

    /// Writes enrolments in one durable batch. An enrolment whose schedule id already exists is
    /// a duplicate: nothing of it is written and it counts in `duplicates`. A contact that
    /// already exists keeps its stored fields.
    fn insert_enrolments(
        &self,
        tenant: TenantId,
        enrolments: Vec<Enrolment>,
    ) -> StoreFuture<'_, InsertReport>;

    /// Returns the contacts with the given ids that belong to `tenant`, in any order.
    fn contacts(&self, tenant: TenantId, ids: Vec<ContactId>) -> StoreFuture<'_, Vec<Contact>>;

    fn schedule(&self, tenant: TenantId, id: ScheduleId) -> StoreFuture<'_, Option<Schedule>>;

    /// Returns the follow-ups of a schedule ordered by step.
    fn follow_ups_of_schedule(
        &self,
        tenant: TenantId,
        id: ScheduleId,
    ) -> StoreFuture<'_, Vec<FollowUp>>;

    fn follow_up(&self, tenant: TenantId, id: FollowUpId) -> StoreFuture<'_, Option<FollowUp>>;

    /// Returns up to `limit` follow-ups of `tenant` in id order, starting after `after`
    /// (from the first when `None`), for paging through all of them.
    fn follow_ups_page(
        &self,
        tenant: TenantId,
        after: Option<FollowUpId>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<FollowUp>>;

    /// Returns up to `limit` follow-ups of `tenant` on `channel` in state pending or retry whose
    /// due instant is at or before `until`, earliest first.
    fn due_follow_ups(
        &self,
        tenant: TenantId,
        channel: Channel,
        until: DateTime<Utc>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<FollowUp>>;

    /// Returns the earliest due instant of the tenant's pending or retry follow-ups on
    /// `channel`.
    fn next_due_at(
        &self,
        tenant: TenantId,
        channel: Channel,
    ) -> StoreFuture<'_, Option<DateTime<Utc>>>;

    /// Returns the instants at which follow-ups of `tenant` on `channel` were sent, or left in
    /// doubt, at or after `since`, oldest first. Rate limiters rebuild their daily windows
    /// from it after a restart. A store may forget instants older than two days.
    fn sends_since(
        &self,
        tenant: TenantId,
        channel: Channel,
        since: DateTime<Utc>,
    ) -> StoreFuture<'_, Vec<DateTime<Utc>>>;

    /// Replaces follow-ups (matched by id within `tenant`; unknown ids are an error) and
    /// appends attempts, in one durable batch.
    ///
    /// `fence` is the epoch of the writer's lease on the tenant (0 for a writer without a
    /// lease, which only a single node may be). The write is rejected with
    /// [`StoreError::Fenced`] when the tenant has a lease of a higher epoch, and a follow-up
    /// last written under a higher epoch is never overwritten.
    fn update_follow_ups(
        &self,
        tenant: TenantId,
        fence: u64,
        follow_ups: Vec<FollowUp>,
        attempts: Vec<Attempt>,
    ) -> StoreFuture<'_, ()>;

    /// Returns the attempts made for a follow-up, oldest first.
    fn attempts(&self, tenant: TenantId, id: FollowUpId) -> StoreFuture<'_, Vec<Attempt>>;

    /// Settles what a stop of the tenant's previous owner interrupted: claimed follow-ups
    /// return to pending and sending ones become in-doubt with the reason
    /// [`IN_DOUBT_AFTER_STOP`]. Run by a node when it takes the tenant's lease, under the new
    /// epoch `fence`, before it dispatches; fenced like [`Store::update_follow_ups`].
    fn recover_interrupted(&self, tenant: TenantId, fence: u64) -> StoreFuture<'_, RecoveryReport>;

    /// Takes the next epoch of the tenant's lease for `node`, expiring at `now + ttl`, when the
    /// tenant has no lease yet or its newest one may be taken by `node` at `now`
    /// ([`Lease::may_be_taken_by`]). Of several nodes taking the same epoch at once, exactly
    /// one gets it. Returns the new lease, or `None` when the tenant stays with another node.
    fn take_lease(
        &self,
        tenant: TenantId,
        node: String,
        now: DateTime<Utc>,
        ttl: chrono::Duration,
    ) -> StoreFuture<'_, Option<Lease>>;

    /// Extends `lease` to `now + ttl` when it is still the tenant's newest lease and its owner
    /// may renew it at `now` ([`Lease::may_be_renewed_by`]). Returns the renewed lease, or
    /// `None` when it is lost: the owner must then stop dispatching the tenant.
    fn renew_lease(
        &self,
        lease: Lease,
        now: DateTime<Utc>,
        ttl: chrono::Duration,
    ) -> StoreFuture<'_, Option<Lease>>;

    /// Ends `lease` at once, if it is still the tenant's newest, so that another node may take
    /// the tenant without waiting for it to expire. The epoch stays taken.
    fn release_lease(&self, lease: Lease) -> StoreFuture<'_, ()>;

    /// Returns the newest lease of every tenant that has one, live or not.
    fn leases(&self) -> StoreFuture<'_, Vec<Lease>>;

    /// Inserts or replaces the heartbeat of `heartbeat.node`.
    fn put_heartbeat(&self, heartbeat: NodeHeartbeat) -> StoreFuture<'_, ()>;

    /// Returns every node's latest heartbeat, expired or not. A store may forget heartbeats
    /// that expired long ago.
    fn heartbeats(&self) -> StoreFuture<'_, Vec<NodeHeartbeat>>;

    /// Counts follow-ups by channel and state, for one tenant or for all.
    fn count_follow_ups(&self, tenant: Option<TenantId>) -> StoreFuture<'_, FollowUpCounts>;

    /// Counts every tenant's follow-ups by channel and state in one pass over the store, with
    /// how many pending and retry ones are due at `now`. Groups with no follow-up are left out;
    /// the order is unspecified. It reads every follow-up, so callers run it in the
    /// background at a bounded rate, never per request.
    fn tally_follow_ups(&self, now: DateTime<Utc>) -> StoreFuture<'_, Vec<FollowUpTally>>;

    /// Returns every tenant's connections without their addresses and credentials, in any
    /// order.
    fn connection_statuses(&self) -> StoreFuture<'_, Vec<ConnectionStatus>>;

    /// Appends an entry to the audit log, durably. An id already stored is a conflict.
    fn append_audit(&self, entry: AuditEntry) -> StoreFuture<'_, ()>;

    /// Returns the number of audit entries and up to `limit` of them, newest first (by id),
    /// skipping the `offset` newest.
    fn audit_page(&self, offset: u64, limit: usize) -> StoreFuture<'_, (u64, Vec<AuditEntry>)>;

    /// Returns up to `limit` contacts of `tenant` in id order, starting after `after`.
    fn contacts_page(
        &self,
        tenant: TenantId,
        after: Option<ContactId>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<Contact>>;

    /// Returns up to `limit` schedules of `tenant` in id order, starting after `after`.
    fn schedules_page(
        &self,
        tenant: TenantId,
        after: Option<ScheduleId>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<Schedule>>;

    /// Returns up to `limit` attempts of `tenant` ordered by follow-up id and number, starting
    /// after `after`.
    fn attempts_page(
        &self,
        tenant: TenantId,
        after: Option<AttemptCursor>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<Attempt>>;

    /// Starts the deletion of `deletion.tenant` in one durable write: removes the tenant record
    /// and its API key, so that no request authenticates as the tenant any more, and stores the
    /// deletion marker. From then on every write for the tenant is rejected except the purge.
    /// The same write removes the notes of the audit entries about the tenant, which may name
    /// it. A tenant that does not exist, or is already being deleted, is a conflict.
    fn begin_tenant_deletion(&self, deletion: TenantDeletion) -> StoreFuture<'_, ()>;

    /// Returns every deletion marker, finished or not.
    fn tenant_deletions(&self) -> StoreFuture<'_, Vec<TenantDeletion>>;

    /// Removes up to `limit` records of a tenant that has a deletion marker (anything else is a
    /// conflict) and adds them to the marker's count, in one durable write. When nothing of the
    /// tenant is left, the marker is completed at `now`. Billing records and the marker stay.
    fn purge_tenant_chunk(
        &self,
        tenant: TenantId,
        limit: usize,
        now: DateTime<Utc>,
    ) -> StoreFuture<'_, PurgeProgress>;

    /// Inserts or replaces the billing record of a deleted tenant. The purge never removes it.
    fn put_billing_record(&self, record: BillingRecord) -> StoreFuture<'_, ()>;

    fn billing_record(&self, tenant: TenantId) -> StoreFuture<'_, Option<BillingRecord>>;

    /// Removes the message of up to `limit` attempts that finished before `before`, across
    /// every tenant; the attempts themselves stay. Returns how many messages were removed.
    fn purge_sent_messages(&self, before: DateTime<Utc>, limit: usize) -> StoreFuture<'_, u64>;
    /// Inserts or replaces the wrapped data key of `key.tenant`.
    fn put_data_key(&self, key: WrappedDataKey) -> StoreFuture<'_, ()>;

    fn data_key(&self, tenant: TenantId) -> StoreFuture<'_, Option<WrappedDataKey>>;

    /// Adds up to `wanted` sends to the `taken` count of the counter at `key` (created empty
    /// when missing) without passing `limit`, in one atomic conditional update, and returns
    /// how many were added: `min(wanted, limit - taken)`, or 0 when the quota is used up.
    /// Of several callers at once, together they never take more than `limit`. A tenant being
    /// deleted is rejected with a conflict.
    fn reserve_usage(&self, key: UsageKey, wanted: u64, limit: u64) -> StoreFuture<'_, u64>;

    /// Settles sends reserved at `key`: adds `committed` to its committed count and gives
    /// `released` back to the quota (taken minus `released`). Callers settle only what they
    /// reserved, so `committed + released` is at most the counter's uncommitted sends; a
    /// release beyond what is taken is a conflict.
    fn settle_usage(&self, key: UsageKey, committed: u64, released: u64) -> StoreFuture<'_, ()>;

    /// Returns the usage counters of `period` (`YYYY-MM`), of one tenant or of all, ordered by
    /// tenant and channel.
    fn usage(&self, tenant: Option<TenantId>, period: String)
    -> StoreFuture<'_, Vec<UsageCounter>>;

    /// Inserts a meter batch unless the counter already has a batch with its sequence, durably.
    /// Returns whether it was inserted; of several callers inserting one sequence, one wins.
    fn insert_meter_batch(&self, batch: MeterBatch) -> StoreFuture<'_, bool>;

    /// Returns the batch with the highest sequence of the counter at `key`.
    fn last_meter_batch(&self, key: UsageKey) -> StoreFuture<'_, Option<MeterBatch>>;

    /// Returns up to `limit` batches not marked sent, ordered by tenant, period, channel and
    /// sequence.
    fn unsent_meter_batches(&self, limit: usize) -> StoreFuture<'_, Vec<MeterBatch>>;

    /// Marks the batch `sequence` of the counter at `key` sent. Marking it again changes
    /// nothing; a batch that does not exist is a conflict.
    fn mark_meter_batch_sent(&self, key: UsageKey, sequence: u64) -> StoreFuture<'_, ()>;

    /// Returns every tenant's wrapped data key.
    fn data_keys(&self) -> StoreFuture<'_, Vec<WrappedDataKey>>;

    /// Removes the tenant's wrapped data key, durably; returns whether there was one. Without
    /// it the tenant's sealed values can never be opened again.
    fn delete_data_key(&self, tenant: TenantId) -> StoreFuture<'_, bool>;

    /// Inserts or replaces the Stripe account of `account.tenant`. A customer id that belongs
    /// to another tenant's account is a conflict, and so is a tenant being deleted.
    fn put_stripe_account(&self, account: StripeAccount) -> StoreFuture<'_, ()>;

    fn stripe_account(&self, tenant: TenantId) -> StoreFuture<'_, Option<StripeAccount>>;

    /// Finds the account whose Stripe customer id is `customer_id`.
    fn stripe_account_by_customer(
        &self,
        customer_id: String,
    ) -> StoreFuture<'_, Option<StripeAccount>>;

    /// Inserts or replaces entries of the tenant's suppression list, matched by `key`, in one
    /// durable write. Every entry must belong to `tenant`; a tenant being deleted takes none.
    fn put_suppressions(&self, tenant: TenantId, entries: Vec<Suppression>) -> StoreFuture<'_, ()>;

    /// Returns the tenant's suppression entries whose key is one of `keys`, in any order.
    fn suppressions(
        &self,
        tenant: TenantId,
        keys: Vec<String>,
    ) -> StoreFuture<'_, Vec<Suppression>>;

    /// Returns up to `limit` suppression entries of `tenant` in the order of their stored keys,
    /// starting after the entry whose key is `after`, for paging through all of them.
    fn suppressions_page(
        &self,
        tenant: TenantId,
        after: Option<String>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<Suppression>>;

    /// Removes the tenant's suppression entries whose key is one of `keys`, durably; returns
    /// how many there were.
    fn remove_suppressions(&self, tenant: TenantId, keys: Vec<String>) -> StoreFuture<'_, u64>;
}
