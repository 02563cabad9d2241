//! The MongoDB store: the production [`Store`], on the `mongodb` driver, for one or several
//! engine nodes sharing a database. Its tests run against FerretDB (see `tests/ferretdb`).
//!
//! It uses only what FerretDB 1.x supports as well as MongoDB: no multi-document
//! transactions, no change streams, no TTL or partial indexes, no `findAndModify` projection.
//! Without transactions, every operation that writes several documents orders its writes so
//! that a stop between two of them leaves nothing accepted lost and a retry completes it; each
//! method says how. The documents and indexes are described in `documents` and in
//! docs/ARCHITECTURE.md.

use std::fmt;
use std::time::Duration;

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
use mongodb::bson::{Document, doc};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection, Database, IndexModel};

mod audit;
mod connect;
mod documents;
mod errors;
mod leases;
mod lifecycle;
mod metering;
mod read;
mod stripe;
mod suppressions;
mod usage;
mod write;

#[cfg(test)]
mod tests;

pub use connect::{DEFAULT_DATABASE, StoreUri, is_mongodb_uri};

/// Collection names, each used by exactly one kind of record.
mod collections {
    pub(super) const TENANTS: &str = "tenants";
    pub(super) const CONNECTIONS: &str = "connections";
    pub(super) const SEQUENCES: &str = "sequences";
    pub(super) const CONTACTS: &str = "contacts";
    pub(super) const SCHEDULES: &str = "schedules";
    pub(super) const FOLLOW_UPS: &str = "follow_ups";
    /// One document per follow-up that was sent or left in doubt, with the instant, from which
    /// rate limiters rebuild their daily windows.
    pub(super) const SENDS: &str = "sends";
    pub(super) const ATTEMPTS: &str = "attempts";
    pub(super) const DELETIONS: &str = "tenant_deletions";
    pub(super) const BILLING: &str = "billing_records";
    pub(super) const DATA_KEYS: &str = "data_keys";
    /// One document per (tenant, epoch) of the tenants' leases.
    pub(super) const LEASES: &str = "leases";
    /// One document per engine node, its latest heartbeat.
    pub(super) const HEARTBEATS: &str = "node_heartbeats";
    /// One document per (tenant, billing period, channel): the quota usage counters.
    pub(super) const USAGE: &str = "usage_counters";
    /// One document per Billing Meter batch, by counter and sequence. Kept after the tenant is
    /// deleted, like billing records.
    pub(super) const METER_BATCHES: &str = "meter_batches";
    /// One document per tenant linked to a Stripe customer. Kept after the tenant is deleted,
    /// like billing records.
    pub(super) const STRIPE_ACCOUNTS: &str = "stripe_accounts";
    /// One document per entry of a tenant's suppression list.
    pub(super) const SUPPRESSIONS: &str = "suppressions";
    /// One document per operator action.
    pub(super) const AUDIT: &str = "audit_log";
}

/// The MongoDB store. Cheap to share behind an `Arc`: the driver's client pools connections.
#[derive(Clone)]
pub struct MongoStore {
    db: Database,
    /// Where the store connects, without credentials, for messages.
    address: String,
    /// Serialises this process's quota reservations, which FerretDB does not apply atomically
    /// (see `usage`).
    usage_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl fmt::Debug for MongoStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoStore")
            .field("address", &self.address)
            .field("database", &self.db.name())
            .finish()
    }
}

impl MongoStore {
    /// Connects to the server `uri` names, checks that it answers within `timeout`, and creates
    /// the indexes the store needs (which does nothing when they exist).
    ///
    /// `timeout` also bounds how long any later operation waits for a reachable server, so
    /// that while the database is down calls fail after it instead of hanging.
    pub async fn connect(uri: &StoreUri, timeout: Duration) -> Result<MongoStore, StoreError> {
        let mut options = ClientOptions::parse(uri.as_str())
            .await
            .map_err(|error| StoreError::Unavailable(uri.parse_error(&error)))?;
        options.server_selection_timeout = Some(timeout);
        options.connect_timeout = Some(timeout);
        options.app_name = Some("followup".to_owned());
        let database = options.default_database.clone().unwrap_or(DEFAULT_DATABASE.to_owned());
        let client = Client::with_options(options)
            .map_err(|error| StoreError::Unavailable(uri.parse_error(&error)))?;
        let store = MongoStore {
            db: client.database(&database),
            address: uri.address(),
            usage_lock: std::sync::Arc::default(),
        };
        store.ping(timeout).await?;
        store.create_indexes().await?;
        Ok(store)
    }

    /// Name of the database the store uses.
    pub fn database(&self) -> &str {
        self.db.name()
    }

    async fn ping(&self, timeout: Duration) -> Result<(), StoreError> {
        let pinged = self.db.run_command(doc! { "ping": 1 }).await;
        pinged.map(drop).map_err(|error| {
            let cause = error.to_string().replace('\n', " ");
            StoreError::Unavailable(format!(
                "no MongoDB server answered at {} within {} s ({cause}); check that the \
                 server runs and that the store URI names its host and port",
                self.address,
                timeout.as_secs_f64()
            ))
        })
    }

    /// Creates the secondary indexes. Everything else is found by `_id`, whose ranges group a
    /// tenant's records (see `documents`).
    async fn create_indexes(&self) -> Result<(), StoreError> {
        let unique = || mongodb::options::IndexOptions::builder().unique(true);
        let indexes = [
            (
                collections::TENANTS,
                IndexModel::builder()
                    .keys(doc! { "api_key": 1 })
                    .options(unique().name("api_key_unique".to_owned()).build())
                    .build(),
            ),
            (
                collections::STRIPE_ACCOUNTS,
                IndexModel::builder()
                    .keys(doc! { "customer": 1 })
                    .options(unique().name("customer_unique".to_owned()).build())
                    .build(),
            ),
            (
                collections::FOLLOW_UPS,
                named(doc! { "tenant": 1, "channel": 1, "state": 1, "due": 1 }, "due"),
            ),
            (collections::FOLLOW_UPS, named(doc! { "state": 1 }, "state")),
            (collections::LEASES, named(doc! { "tenant": 1, "epoch": 1 }, "by_tenant")),
            (collections::USAGE, named(doc! { "period": 1, "tenant": 1 }, "by_period")),
            (collections::METER_BATCHES, named(doc! { "sent": 1, "_id": 1 }, "unsent")),
            (collections::SENDS, named(doc! { "tenant": 1, "channel": 1, "at": 1 }, "by_instant")),
            (
                collections::ATTEMPTS,
                named(doc! { "has_message": 1, "finished": 1 }, "sent_messages"),
            ),
        ];
        for (collection, index) in indexes {
            let created = self.collection(collection).create_index(index).await;
            created.map_err(|error| errors::unavailable(collection, "create_index", &error))?;
        }
        Ok(())
    }

    fn collection(&self, name: &str) -> Collection<Document> {
        self.db.collection(name)
    }
}

fn named(keys: Document, name: &str) -> IndexModel {
    let options = mongodb::options::IndexOptions::builder().name(name.to_owned()).build();
    IndexModel::builder().keys(keys).options(options).build()
}

impl Store for MongoStore {
    fn put_tenant(&self, tenant: Tenant) -> StoreFuture<'_, ()> {
        Box::pin(self.write_tenant(tenant))
    }

    fn tenant(&self, id: TenantId) -> StoreFuture<'_, Option<Tenant>> {
        Box::pin(self.find_record(collections::TENANTS, doc! { "_id": documents::tenant(id) }))
    }

    fn tenant_by_api_key(&self, api_key_sha256: String) -> StoreFuture<'_, Option<Tenant>> {
        Box::pin(self.find_record(collections::TENANTS, doc! { "api_key": api_key_sha256 }))
    }

    fn tenants(&self) -> StoreFuture<'_, Vec<Tenant>> {
        Box::pin(self.find_records(collections::TENANTS, Document::new(), None))
    }

    fn put_connection(&self, connection: Connection) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let id = documents::connection(connection.tenant, connection.provider);
            let fields = Document::new();
            self.put_owned(collections::CONNECTIONS, connection.tenant, id, fields, &connection)
                .await
        })
    }

    fn connections(&self, tenant: TenantId) -> StoreFuture<'_, Vec<Connection>> {
        Box::pin(self.tenant_records(collections::CONNECTIONS, tenant))
    }

    fn put_sequence(&self, sequence: Sequence) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let id = documents::tenant_record(sequence.tenant, &sequence.id.0);
            self.put_owned(collections::SEQUENCES, sequence.tenant, id, Document::new(), &sequence)
                .await
        })
    }

    fn sequence(&self, tenant: TenantId, id: SequenceId) -> StoreFuture<'_, Option<Sequence>> {
        let id = documents::tenant_record(tenant, &id.0);
        Box::pin(self.find_record(collections::SEQUENCES, doc! { "_id": id }))
    }

    fn sequences(&self, tenant: TenantId) -> StoreFuture<'_, Vec<Sequence>> {
        Box::pin(self.tenant_records(collections::SEQUENCES, tenant))
    }

    fn insert_enrolments(
        &self,
        tenant: TenantId,
        enrolments: Vec<Enrolment>,
    ) -> StoreFuture<'_, InsertReport> {
        Box::pin(self.write_enrolments(tenant, enrolments))
    }

    fn contacts(&self, tenant: TenantId, ids: Vec<ContactId>) -> StoreFuture<'_, Vec<Contact>> {
        Box::pin(self.read_contacts(tenant, ids))
    }

    fn schedule(&self, tenant: TenantId, id: ScheduleId) -> StoreFuture<'_, Option<Schedule>> {
        let id = documents::tenant_record(tenant, &id.0);
        Box::pin(self.find_record(collections::SCHEDULES, doc! { "_id": id }))
    }

    fn follow_ups_of_schedule(
        &self,
        tenant: TenantId,
        id: ScheduleId,
    ) -> StoreFuture<'_, Vec<FollowUp>> {
        let prefix = documents::tenant_record(tenant, &id.0);
        let filter = doc! { "_id": documents::under(&prefix) };
        Box::pin(self.find_records(collections::FOLLOW_UPS, filter, None))
    }

    fn follow_up(&self, tenant: TenantId, id: FollowUpId) -> StoreFuture<'_, Option<FollowUp>> {
        let id = documents::follow_up(tenant, id);
        Box::pin(self.find_record(collections::FOLLOW_UPS, doc! { "_id": id }))
    }

    fn follow_ups_page(
        &self,
        tenant: TenantId,
        after: Option<FollowUpId>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<FollowUp>> {
        let after = after.map(|id| documents::follow_up(tenant, id));
        Box::pin(self.page(collections::FOLLOW_UPS, tenant, after, limit))
    }

    fn due_follow_ups(
        &self,
        tenant: TenantId,
        channel: Channel,
        until: DateTime<Utc>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<FollowUp>> {
        Box::pin(self.read_due(tenant, channel, until, limit))
    }

    fn next_due_at(
        &self,
        tenant: TenantId,
        channel: Channel,
    ) -> StoreFuture<'_, Option<DateTime<Utc>>> {
        Box::pin(self.read_next_due_at(tenant, channel))
    }

    fn sends_since(
        &self,
        tenant: TenantId,
        channel: Channel,
        since: DateTime<Utc>,
    ) -> StoreFuture<'_, Vec<DateTime<Utc>>> {
        Box::pin(self.read_sends_since(tenant, channel, since))
    }

    fn update_follow_ups(
        &self,
        tenant: TenantId,
        fence: u64,
        follow_ups: Vec<FollowUp>,
        attempts: Vec<Attempt>,
    ) -> StoreFuture<'_, ()> {
        Box::pin(self.write_update(tenant, fence, follow_ups, attempts))
    }

    fn attempts(&self, tenant: TenantId, id: FollowUpId) -> StoreFuture<'_, Vec<Attempt>> {
        let prefix = documents::follow_up(tenant, id);
        let filter = doc! { "_id": documents::under(&prefix) };
        Box::pin(self.find_records(collections::ATTEMPTS, filter, None))
    }

    fn recover_interrupted(&self, tenant: TenantId, fence: u64) -> StoreFuture<'_, RecoveryReport> {
        Box::pin(self.write_recovery(tenant, fence))
    }

    fn take_lease(
        &self,
        tenant: TenantId,
        node: String,
        now: DateTime<Utc>,
        ttl: chrono::Duration,
    ) -> StoreFuture<'_, Option<Lease>> {
        Box::pin(self.insert_lease(tenant, node, now, ttl))
    }

    fn renew_lease(
        &self,
        lease: Lease,
        now: DateTime<Utc>,
        ttl: chrono::Duration,
    ) -> StoreFuture<'_, Option<Lease>> {
        Box::pin(self.extend_lease(lease, now, ttl))
    }

    fn release_lease(&self, lease: Lease) -> StoreFuture<'_, ()> {
        Box::pin(self.end_lease(lease))
    }

    fn leases(&self) -> StoreFuture<'_, Vec<Lease>> {
        Box::pin(self.read_leases())
    }

    fn put_heartbeat(&self, heartbeat: NodeHeartbeat) -> StoreFuture<'_, ()> {
        Box::pin(self.write_heartbeat(heartbeat))
    }

    fn heartbeats(&self) -> StoreFuture<'_, Vec<NodeHeartbeat>> {
        Box::pin(self.find_records(collections::HEARTBEATS, Document::new(), None))
    }

    fn reserve_usage(&self, key: UsageKey, wanted: u64, limit: u64) -> StoreFuture<'_, u64> {
        Box::pin(self.reserve_counter(key, wanted, limit))
    }

    fn settle_usage(&self, key: UsageKey, committed: u64, released: u64) -> StoreFuture<'_, ()> {
        Box::pin(self.settle_counter(key, committed, released))
    }

    fn usage(
        &self,
        tenant: Option<TenantId>,
        period: String,
    ) -> StoreFuture<'_, Vec<UsageCounter>> {
        Box::pin(self.read_usage(tenant, period))
    }

    fn count_follow_ups(&self, tenant: Option<TenantId>) -> StoreFuture<'_, FollowUpCounts> {
        Box::pin(self.read_counts(tenant))
    }

    fn append_audit(&self, entry: AuditEntry) -> StoreFuture<'_, ()> {
        Box::pin(self.insert_audit(entry))
    }

    fn audit_page(&self, offset: u64, limit: usize) -> StoreFuture<'_, (u64, Vec<AuditEntry>)> {
        Box::pin(self.read_audit_page(offset, limit))
    }

    fn tally_follow_ups(&self, now: DateTime<Utc>) -> StoreFuture<'_, Vec<FollowUpTally>> {
        Box::pin(self.read_tally(now))
    }

    fn connection_statuses(&self) -> StoreFuture<'_, Vec<ConnectionStatus>> {
        Box::pin(self.read_connection_statuses())
    }

    fn contacts_page(
        &self,
        tenant: TenantId,
        after: Option<ContactId>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<Contact>> {
        Box::pin(self.read_contacts_page(tenant, after, limit))
    }

    fn schedules_page(
        &self,
        tenant: TenantId,
        after: Option<ScheduleId>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<Schedule>> {
        let after = after.map(|id| documents::tenant_record(tenant, &id.0));
        Box::pin(self.page(collections::SCHEDULES, tenant, after, limit))
    }

    fn attempts_page(
        &self,
        tenant: TenantId,
        after: Option<AttemptCursor>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<Attempt>> {
        let after = after.map(|(id, number)| documents::attempt(tenant, id, number));
        Box::pin(self.page(collections::ATTEMPTS, tenant, after, limit))
    }

    fn begin_tenant_deletion(&self, deletion: TenantDeletion) -> StoreFuture<'_, ()> {
        Box::pin(self.write_deletion(deletion))
    }

    fn tenant_deletions(&self) -> StoreFuture<'_, Vec<TenantDeletion>> {
        Box::pin(self.find_records(collections::DELETIONS, Document::new(), None))
    }

    fn purge_tenant_chunk(
        &self,
        tenant: TenantId,
        limit: usize,
        now: DateTime<Utc>,
    ) -> StoreFuture<'_, PurgeProgress> {
        Box::pin(self.purge_chunk(tenant, limit, now))
    }

    fn put_billing_record(&self, record: BillingRecord) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let id = documents::tenant(record.tenant);
            let document =
                documents::with_record(collections::BILLING, id, Document::new(), &record)?;
            self.replace(collections::BILLING, document).await
        })
    }

    fn billing_record(&self, tenant: TenantId) -> StoreFuture<'_, Option<BillingRecord>> {
        let id = documents::tenant(tenant);
        Box::pin(self.find_record(collections::BILLING, doc! { "_id": id }))
    }

    fn insert_meter_batch(&self, batch: MeterBatch) -> StoreFuture<'_, bool> {
        Box::pin(self.insert_batch(batch))
    }

    fn last_meter_batch(&self, key: UsageKey) -> StoreFuture<'_, Option<MeterBatch>> {
        Box::pin(self.last_batch(key))
    }

    fn unsent_meter_batches(&self, limit: usize) -> StoreFuture<'_, Vec<MeterBatch>> {
        Box::pin(self.unsent_batches(limit))
    }

    fn mark_meter_batch_sent(&self, key: UsageKey, sequence: u64) -> StoreFuture<'_, ()> {
        Box::pin(self.mark_batch_sent(key, sequence))
    }

    fn put_stripe_account(&self, account: StripeAccount) -> StoreFuture<'_, ()> {
        Box::pin(self.write_stripe_account(account))
    }

    fn stripe_account(&self, tenant: TenantId) -> StoreFuture<'_, Option<StripeAccount>> {
        let id = documents::tenant(tenant);
        Box::pin(self.find_record(collections::STRIPE_ACCOUNTS, doc! { "_id": id }))
    }

    fn stripe_account_by_customer(
        &self,
        customer_id: String,
    ) -> StoreFuture<'_, Option<StripeAccount>> {
        let filter = doc! { "customer": customer_id };
        Box::pin(self.find_record(collections::STRIPE_ACCOUNTS, filter))
    }

    fn purge_sent_messages(&self, before: DateTime<Utc>, limit: usize) -> StoreFuture<'_, u64> {
        Box::pin(self.purge_messages(before, limit))
    }

    fn put_data_key(&self, key: WrappedDataKey) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let id = documents::tenant(key.tenant);
            self.put_owned(collections::DATA_KEYS, key.tenant, id, Document::new(), &key).await
        })
    }

    fn data_key(&self, tenant: TenantId) -> StoreFuture<'_, Option<WrappedDataKey>> {
        let id = documents::tenant(tenant);
        Box::pin(self.find_record(collections::DATA_KEYS, doc! { "_id": id }))
    }

    fn data_keys(&self) -> StoreFuture<'_, Vec<WrappedDataKey>> {
        Box::pin(self.find_records(collections::DATA_KEYS, Document::new(), None))
    }

    fn delete_data_key(&self, tenant: TenantId) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let filter = doc! { "_id": documents::tenant(tenant) };
            let deleted = self.collection(collections::DATA_KEYS).delete_one(filter).await;
            let deleted = deleted.map_err(|error| {
                errors::unavailable(collections::DATA_KEYS, "delete_one", &error)
            })?;
            Ok(deleted.deleted_count > 0)
        })
    }

    fn put_suppressions(&self, tenant: TenantId, entries: Vec<Suppression>) -> StoreFuture<'_, ()> {
        Box::pin(self.write_suppressions(tenant, entries))
    }

    fn suppressions(
        &self,
        tenant: TenantId,
        keys: Vec<String>,
    ) -> StoreFuture<'_, Vec<Suppression>> {
        Box::pin(self.read_suppressions(tenant, keys))
    }

    fn suppressions_page(
        &self,
        tenant: TenantId,
        after: Option<String>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<Suppression>> {
        Box::pin(self.read_suppressions_page(tenant, after, limit))
    }

    fn remove_suppressions(&self, tenant: TenantId, keys: Vec<String>) -> StoreFuture<'_, u64> {
        Box::pin(self.delete_suppressions(tenant, keys))
    }
}
