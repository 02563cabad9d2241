//! The sealed store: a [`Store`] around any other store that seals the sensitive fields of
//! records on the way in and opens them on the way out.
//!
//! Encryption lives here, once, and not in each store, so the embedded store and the MongoDB
//! store keep the same guarantees and their conformance suite stays about storage. The inner
//! store receives ids, states, instants and channels in the clear, because it indexes them,
//! and sealed text in every field that could identify a contact or carry a secret:
//!
//! - connections: OAuth access and refresh tokens, Twilio auth tokens, the pause reason;
//! - sequences: each step's subject, body and HTML body;
//! - contacts: external id, names, email, phone and the values of custom fields;
//! - follow-ups and attempts: the reason and the detail, which may quote a provider's error
//!   about an address, and the subject and text of the message an attempt sent;
//! - suppression entries: the address, domain, number or contact id, and the entry's key,
//!   which the inner store receives as an HMAC under the tenant's record id key.
//!
//! Tenant records, sequence names and connection sender addresses (the tenant's own mailbox or
//! number) stay in the clear.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use chrono::{DateTime, Utc};

use super::lease::{Lease, NodeHeartbeat};
use super::metering::MeterBatch;
use super::subscription::StripeAccount;
use super::usage::{UsageCounter, UsageKey};
use super::{
    AttemptCursor, AuditEntry, ConnectionStatus, Enrolment, FollowUpCounts, FollowUpTally,
    InsertReport, PurgeProgress, RecoveryReport, Store, StoreError, StoreFuture, WrappedDataKey,
};
use crate::api::KeyRotationReport;
use crate::crypto::{CryptoError, DataKey, Keyring, is_sealed};
use crate::domain::{
    Attempt, BillingRecord, Channel, Connection, Contact, Credentials, FollowUp, Schedule,
    Sequence, Tenant, TenantDeletion,
};
use crate::ids::{ContactId, FollowUpId, ScheduleId, SequenceId, TenantId};
use crate::sensitive::Sensitive;
use crate::suppression::{Suppression, key_of};

/// Version of every data key created so far; data keys are not rotated yet, only re-wrapped.
const DATA_KEY_VERSION: u32 = 1;

/// A store whose sensitive fields are sealed under per-tenant data keys.
#[derive(Debug)]
pub struct SealedStore {
    inner: Arc<dyn Store>,
    keyring: RwLock<Arc<Keyring>>,
    cache: Mutex<KeyCache>,
}

/// Unwrapped data keys of this process.
#[derive(Debug, Default)]
struct KeyCache {
    keys: HashMap<TenantId, Arc<DataKey>>,
    /// Tenants whose key was destroyed, so that a load that raced with the destruction cannot
    /// put the key back.
    destroyed: HashSet<TenantId>,
}

impl SealedStore {
    pub fn new(inner: Arc<dyn Store>, keyring: Keyring) -> Self {
        Self { inner, keyring: RwLock::new(Arc::new(keyring)), cache: Mutex::default() }
    }

    /// Returns the store underneath, whose records hold sealed text.
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    fn keyring(&self) -> Arc<Keyring> {
        self.keyring.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, KeyCache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Returns the tenant's data key, unwrapping it on first use. Fails when the tenant has
    /// none (destroyed) or its master key is not loaded.
    pub async fn tenant_key(&self, tenant: TenantId) -> Result<Arc<DataKey>, StoreError> {
        if let Some(key) = self.cache().keys.get(&tenant) {
            return Ok(key.clone());
        }
        let wrapped = self.inner.data_key(tenant).await?.ok_or(CryptoError::NoDataKey(tenant))?;
        let key = Arc::new(self.keyring().unwrap_data_key(
            tenant,
            wrapped.version,
            &wrapped.master_key_id,
            &wrapped.wrapped,
        )?);
        let mut cache = self.cache();
        if cache.destroyed.contains(&tenant) {
            return Err(CryptoError::NoDataKey(tenant).into());
        }
        Ok(cache.keys.entry(tenant).or_insert(key).clone())
    }

    /// Creates the tenant's data key unless it has one, and stores it wrapped by the newest
    /// master key.
    ///
    /// NOTE: two processes creating the same tenant at once could each store a key, and the
    /// sealed values of the one overwritten would not open. Within one process the cache
    /// serialises creation. Several nodes on one store will need a conditional insert here.
    async fn ensure_tenant_key(
        &self,
        tenant: TenantId,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        match self.tenant_key(tenant).await {
            Ok(_) => return Ok(()),
            Err(StoreError::Crypto(CryptoError::NoDataKey(_))) => {}
            Err(error) => return Err(error),
        }
        let keyring = self.keyring();
        let wrapped = {
            let mut cache = self.cache();
            if cache.keys.contains_key(&tenant) {
                return Ok(());
            }
            cache.destroyed.remove(&tenant);
            let (key, wrapped) = keyring.create_data_key(tenant, DATA_KEY_VERSION)?;
            cache.keys.insert(tenant, Arc::new(key));
            wrapped
        };
        let stored = self
            .inner
            .put_data_key(WrappedDataKey {
                tenant,
                version: DATA_KEY_VERSION,
                master_key_id: keyring.newest().id().to_owned(),
                wrapped,
                created_at: now,
            })
            .await;

        // A key that is not stored must not seal anything, or a restart would lose that data.
        if stored.is_err() {
            self.cache().keys.remove(&tenant);
        }
        stored
    }

    /// Destroys the tenant's data key (crypto-shredding): removes the wrapped key from the
    /// store, durably, and the unwrapped one from this process. Every sealed value of the tenant
    /// becomes unreadable for good; reading one afterwards fails with
    /// [`CryptoError::NoDataKey`]. Returns whether a key was stored.
    pub async fn destroy_tenant_key(&self, tenant: TenantId) -> Result<bool, StoreError> {
        {
            let mut cache = self.cache();
            cache.keys.remove(&tenant);
            cache.destroyed.insert(tenant);
        }
        self.inner.delete_data_key(tenant).await
    }

    /// Opens every wrapped data key with the loaded master keys, so that a missing or wrong
    /// master key is reported at start-up instead of at the first read.
    pub async fn verify_keys(&self) -> Result<usize, StoreError> {
        let keyring = self.keyring();
        let wrapped = self.inner.data_keys().await?;
        for key in &wrapped {
            keyring.unwrap_data_key(key.tenant, key.version, &key.master_key_id, &key.wrapped)?;
        }
        Ok(wrapped.len())
    }

    /// Replaces the master keys with `keyring` and re-wraps under its newest key every data key
    /// wrapped by another. Data keys do not change, so no sealed value is rewritten.
    ///
    /// NOTE: a tenant created while this runs may keep a key wrapped by the previous newest
    /// master key. The report then lists that master key as still in use, and a second
    /// rotation moves it.
    pub async fn rotate(&self, keyring: Keyring) -> Result<KeyRotationReport, StoreError> {
        let keyring = Arc::new(keyring);
        let newest = keyring.newest().id().to_owned();

        // Every stored key must open with the new ring before it replaces the old one, so that
        // a key file missing an old key changes nothing.
        let wrapped = self.inner.data_keys().await?;
        for key in &wrapped {
            keyring.unwrap_data_key(key.tenant, key.version, &key.master_key_id, &key.wrapped)?;
        }
        *self.keyring.write().unwrap_or_else(PoisonError::into_inner) = keyring.clone();

        let mut rewrapped = 0;
        for key in wrapped.into_iter().filter(|key| key.master_key_id != newest) {
            let sealed =
                keyring.rewrap(key.tenant, key.version, &key.master_key_id, &key.wrapped)?;
            let replacement =
                WrappedDataKey { master_key_id: newest.clone(), wrapped: sealed, ..key };
            self.inner.put_data_key(replacement).await?;
            rewrapped += 1;
        }

        let mut in_use: Vec<String> =
            self.inner.data_keys().await?.into_iter().map(|key| key.master_key_id).collect();
        in_use.sort();
        in_use.dedup();
        Ok(KeyRotationReport {
            rewrapped,
            newest_master_key_id: newest,
            master_keys_loaded: keyring.ids(),
            master_keys_in_use: in_use,
        })
    }
}

/// Seals and opens the fields of one tenant's records with its data key.
struct TenantCipher {
    tenant: TenantId,
    key: Arc<DataKey>,
}

/// Direction of a pass over a record's sensitive fields.
#[derive(Clone, Copy)]
enum Pass {
    Seal,
    Open,
}

impl TenantCipher {
    /// Seals or opens one field in place. Opening leaves text the store wrote itself (not
    /// sealed) as it is.
    fn text(&self, pass: Pass, field: &str, value: &mut String) -> Result<(), CryptoError> {
        match pass {
            Pass::Seal => *value = self.key.seal(self.tenant, field, value)?,
            Pass::Open if is_sealed(value) => *value = self.key.open(self.tenant, field, value)?,
            Pass::Open => {}
        }
        Ok(())
    }

    fn optional(
        &self,
        pass: Pass,
        field: &str,
        value: &mut Option<String>,
    ) -> Result<(), CryptoError> {
        match value {
            Some(value) => self.text(pass, field, value),
            None => Ok(()),
        }
    }

    fn secret(
        &self,
        pass: Pass,
        field: &str,
        value: &mut Sensitive<String>,
    ) -> Result<(), CryptoError> {
        let mut text = value.expose().clone();
        self.text(pass, field, &mut text)?;
        *value = Sensitive::new(text);
        Ok(())
    }

    fn connection(&self, pass: Pass, connection: &mut Connection) -> Result<(), CryptoError> {
        match &mut connection.credentials {
            Credentials::OAuth { access_token, refresh_token, .. } => {
                self.secret(pass, "connection.access_token", access_token)?;
                if let Some(refresh_token) = refresh_token {
                    self.secret(pass, "connection.refresh_token", refresh_token)?;
                }
            }
            Credentials::Twilio { auth_token, .. } => {
                self.secret(pass, "connection.auth_token", auth_token)?;
            }
        }
        self.optional(pass, "connection.paused_reason", &mut connection.paused_reason)
    }

    fn sequence(&self, pass: Pass, sequence: &mut Sequence) -> Result<(), CryptoError> {
        for step in &mut sequence.steps {
            self.optional(pass, "step.subject", &mut step.subject)?;
            self.text(pass, "step.body", &mut step.body)?;
            self.optional(pass, "step.html_body", &mut step.html_body)?;
        }
        Ok(())
    }

    fn contact(&self, pass: Pass, contact: &mut Contact) -> Result<(), CryptoError> {
        self.optional(pass, "contact.external_id", &mut contact.external_id)?;
        self.optional(pass, "contact.first_name", &mut contact.first_name)?;
        self.optional(pass, "contact.last_name", &mut contact.last_name)?;
        self.optional(pass, "contact.full_name", &mut contact.full_name)?;
        self.optional(pass, "contact.email", &mut contact.email)?;
        self.optional(pass, "contact.phone", &mut contact.phone)?;
        for value in contact.custom.values_mut() {
            self.text(pass, "contact.custom", value)?;
        }
        Ok(())
    }

    /// Seals the value of a suppression entry and keys it by a keyed hash; opening restores
    /// the value and the key made from it.
    fn suppression(&self, pass: Pass, entry: &mut Suppression) -> Result<(), CryptoError> {
        self.text(pass, "suppression.value", &mut entry.value)?;
        entry.key = match pass {
            Pass::Seal => self.key.record_ids().suppression_key(&entry.key),
            Pass::Open => key_of(entry.kind, &entry.value),
        };
        Ok(())
    }

    fn follow_up(&self, pass: Pass, follow_up: &mut FollowUp) -> Result<(), CryptoError> {
        self.optional(pass, "follow_up.reason", &mut follow_up.reason)
    }

    fn attempt(&self, pass: Pass, attempt: &mut Attempt) -> Result<(), CryptoError> {
        self.optional(pass, "attempt.detail", &mut attempt.detail)?;
        if let Some(message) = &mut attempt.message {
            self.optional(pass, "attempt.message.subject", &mut message.subject)?;
            self.text(pass, "attempt.message.body", &mut message.body)?;
        }
        Ok(())
    }
}

impl SealedStore {
    async fn cipher(&self, tenant: TenantId) -> Result<TenantCipher, StoreError> {
        Ok(TenantCipher { tenant, key: self.tenant_key(tenant).await? })
    }

    /// Applies `pass` with `apply` to every record of `records`, fetching the tenant's key only
    /// when there is a record.
    async fn each<T>(
        &self,
        tenant: TenantId,
        pass: Pass,
        mut records: Vec<T>,
        apply: fn(&TenantCipher, Pass, &mut T) -> Result<(), CryptoError>,
    ) -> Result<Vec<T>, StoreError> {
        if records.is_empty() {
            return Ok(records);
        }
        let cipher = self.cipher(tenant).await?;
        for record in &mut records {
            apply(&cipher, pass, record)?;
        }
        Ok(records)
    }

    async fn one<T>(
        &self,
        tenant: TenantId,
        pass: Pass,
        record: Option<T>,
        apply: fn(&TenantCipher, Pass, &mut T) -> Result<(), CryptoError>,
    ) -> Result<Option<T>, StoreError> {
        let records = self.each(tenant, pass, record.into_iter().collect(), apply).await?;
        Ok(records.into_iter().next())
    }
}

impl Store for SealedStore {
    fn put_tenant(&self, tenant: Tenant) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.ensure_tenant_key(tenant.id, tenant.created_at).await?;
            self.inner.put_tenant(tenant).await
        })
    }

    fn tenant(&self, id: TenantId) -> StoreFuture<'_, Option<Tenant>> {
        self.inner.tenant(id)
    }

    fn tenant_by_api_key(&self, api_key_sha256: String) -> StoreFuture<'_, Option<Tenant>> {
        self.inner.tenant_by_api_key(api_key_sha256)
    }

    fn tenants(&self) -> StoreFuture<'_, Vec<Tenant>> {
        self.inner.tenants()
    }

    fn put_connection(&self, connection: Connection) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let tenant = connection.tenant;
            let sealed = self.each(tenant, Pass::Seal, vec![connection], TenantCipher::connection);
            for connection in sealed.await? {
                self.inner.put_connection(connection).await?;
            }
            Ok(())
        })
    }

    fn connections(&self, tenant: TenantId) -> StoreFuture<'_, Vec<Connection>> {
        Box::pin(async move {
            let stored = self.inner.connections(tenant).await?;
            self.each(tenant, Pass::Open, stored, TenantCipher::connection).await
        })
    }

    fn put_sequence(&self, sequence: Sequence) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let tenant = sequence.tenant;
            let sealed = self.each(tenant, Pass::Seal, vec![sequence], TenantCipher::sequence);
            for sequence in sealed.await? {
                self.inner.put_sequence(sequence).await?;
            }
            Ok(())
        })
    }

    fn sequence(&self, tenant: TenantId, id: SequenceId) -> StoreFuture<'_, Option<Sequence>> {
        Box::pin(async move {
            let stored = self.inner.sequence(tenant, id).await?;
            self.one(tenant, Pass::Open, stored, TenantCipher::sequence).await
        })
    }

    fn sequences(&self, tenant: TenantId) -> StoreFuture<'_, Vec<Sequence>> {
        Box::pin(async move {
            let stored = self.inner.sequences(tenant).await?;
            self.each(tenant, Pass::Open, stored, TenantCipher::sequence).await
        })
    }

    fn insert_enrolments(
        &self,
        tenant: TenantId,
        mut enrolments: Vec<Enrolment>,
    ) -> StoreFuture<'_, InsertReport> {
        Box::pin(async move {
            if !enrolments.is_empty() {
                let cipher = self.cipher(tenant).await?;
                for enrolment in &mut enrolments {
                    cipher.contact(Pass::Seal, &mut enrolment.contact)?;
                    for follow_up in &mut enrolment.follow_ups {
                        cipher.follow_up(Pass::Seal, follow_up)?;
                    }
                }
            }
            self.inner.insert_enrolments(tenant, enrolments).await
        })
    }

    fn contacts(&self, tenant: TenantId, ids: Vec<ContactId>) -> StoreFuture<'_, Vec<Contact>> {
        Box::pin(async move {
            let stored = self.inner.contacts(tenant, ids).await?;
            self.each(tenant, Pass::Open, stored, TenantCipher::contact).await
        })
    }

    fn schedule(&self, tenant: TenantId, id: ScheduleId) -> StoreFuture<'_, Option<Schedule>> {
        self.inner.schedule(tenant, id)
    }

    fn follow_ups_of_schedule(
        &self,
        tenant: TenantId,
        id: ScheduleId,
    ) -> StoreFuture<'_, Vec<FollowUp>> {
        Box::pin(async move {
            let stored = self.inner.follow_ups_of_schedule(tenant, id).await?;
            self.each(tenant, Pass::Open, stored, TenantCipher::follow_up).await
        })
    }

    fn follow_up(&self, tenant: TenantId, id: FollowUpId) -> StoreFuture<'_, Option<FollowUp>> {
        Box::pin(async move {
            let stored = self.inner.follow_up(tenant, id).await?;
            self.one(tenant, Pass::Open, stored, TenantCipher::follow_up).await
        })
    }

    fn follow_ups_page(
        &self,
        tenant: TenantId,
        after: Option<FollowUpId>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<FollowUp>> {
        Box::pin(async move {
            let stored = self.inner.follow_ups_page(tenant, after, limit).await?;
            self.each(tenant, Pass::Open, stored, TenantCipher::follow_up).await
        })
    }

    fn due_follow_ups(
        &self,
        tenant: TenantId,
        channel: Channel,
        until: DateTime<Utc>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<FollowUp>> {
        Box::pin(async move {
            let stored = self.inner.due_follow_ups(tenant, channel, until, limit).await?;
            self.each(tenant, Pass::Open, stored, TenantCipher::follow_up).await
        })
    }

    fn next_due_at(
        &self,
        tenant: TenantId,
        channel: Channel,
    ) -> StoreFuture<'_, Option<DateTime<Utc>>> {
        self.inner.next_due_at(tenant, channel)
    }

    fn sends_since(
        &self,
        tenant: TenantId,
        channel: Channel,
        since: DateTime<Utc>,
    ) -> StoreFuture<'_, Vec<DateTime<Utc>>> {
        self.inner.sends_since(tenant, channel, since)
    }

    /// An attempt stored again under the same number is sealed again with a new nonce, so a
    /// store that recognises repeats compares only the fields that are not sealed.
    fn update_follow_ups(
        &self,
        tenant: TenantId,
        fence: u64,
        follow_ups: Vec<FollowUp>,
        attempts: Vec<Attempt>,
    ) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let follow_ups = self.each(tenant, Pass::Seal, follow_ups, TenantCipher::follow_up);
            let follow_ups = follow_ups.await?;
            let attempts = self.each(tenant, Pass::Seal, attempts, TenantCipher::attempt).await?;
            self.inner.update_follow_ups(tenant, fence, follow_ups, attempts).await
        })
    }

    fn attempts(&self, tenant: TenantId, id: FollowUpId) -> StoreFuture<'_, Vec<Attempt>> {
        Box::pin(async move {
            let stored = self.inner.attempts(tenant, id).await?;
            self.each(tenant, Pass::Open, stored, TenantCipher::attempt).await
        })
    }

    fn recover_interrupted(&self, tenant: TenantId, fence: u64) -> StoreFuture<'_, RecoveryReport> {
        self.inner.recover_interrupted(tenant, fence)
    }

    // Leases and heartbeats hold nothing sensitive, so they pass through unsealed.
    fn take_lease(
        &self,
        tenant: TenantId,
        node: String,
        now: DateTime<Utc>,
        ttl: chrono::Duration,
    ) -> StoreFuture<'_, Option<Lease>> {
        self.inner.take_lease(tenant, node, now, ttl)
    }

    fn renew_lease(
        &self,
        lease: Lease,
        now: DateTime<Utc>,
        ttl: chrono::Duration,
    ) -> StoreFuture<'_, Option<Lease>> {
        self.inner.renew_lease(lease, now, ttl)
    }

    fn release_lease(&self, lease: Lease) -> StoreFuture<'_, ()> {
        self.inner.release_lease(lease)
    }

    fn leases(&self) -> StoreFuture<'_, Vec<Lease>> {
        self.inner.leases()
    }

    fn put_heartbeat(&self, heartbeat: NodeHeartbeat) -> StoreFuture<'_, ()> {
        self.inner.put_heartbeat(heartbeat)
    }

    fn reserve_usage(&self, key: UsageKey, wanted: u64, limit: u64) -> StoreFuture<'_, u64> {
        self.inner.reserve_usage(key, wanted, limit)
    }

    fn settle_usage(&self, key: UsageKey, committed: u64, released: u64) -> StoreFuture<'_, ()> {
        self.inner.settle_usage(key, committed, released)
    }

    fn usage(
        &self,
        tenant: Option<TenantId>,
        period: String,
    ) -> StoreFuture<'_, Vec<UsageCounter>> {
        self.inner.usage(tenant, period)
    }

    fn heartbeats(&self) -> StoreFuture<'_, Vec<NodeHeartbeat>> {
        self.inner.heartbeats()
    }

    fn count_follow_ups(&self, tenant: Option<TenantId>) -> StoreFuture<'_, FollowUpCounts> {
        self.inner.count_follow_ups(tenant)
    }

    /// Passes through: audit entries are operator data, stored as they are.
    fn append_audit(&self, entry: AuditEntry) -> StoreFuture<'_, ()> {
        self.inner.append_audit(entry)
    }

    fn audit_page(&self, offset: u64, limit: usize) -> StoreFuture<'_, (u64, Vec<AuditEntry>)> {
        self.inner.audit_page(offset, limit)
    }

    fn tally_follow_ups(&self, now: DateTime<Utc>) -> StoreFuture<'_, Vec<FollowUpTally>> {
        self.inner.tally_follow_ups(now)
    }

    /// Opens the pause reasons, the one sealed field of a status. Only paused connections
    /// need their tenant's key, so this stays cheap with many tenants.
    fn connection_statuses(&self) -> StoreFuture<'_, Vec<ConnectionStatus>> {
        Box::pin(async move {
            let mut statuses = self.inner.connection_statuses().await?;
            for status in &mut statuses {
                let Some(reason) = &mut status.paused_reason else { continue };
                let cipher = self.cipher(status.tenant).await?;
                cipher.text(Pass::Open, "connection.paused_reason", reason)?;
            }
            Ok(statuses)
        })
    }

    fn contacts_page(
        &self,
        tenant: TenantId,
        after: Option<ContactId>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<Contact>> {
        Box::pin(async move {
            let stored = self.inner.contacts_page(tenant, after, limit).await?;
            self.each(tenant, Pass::Open, stored, TenantCipher::contact).await
        })
    }

    fn schedules_page(
        &self,
        tenant: TenantId,
        after: Option<ScheduleId>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<Schedule>> {
        self.inner.schedules_page(tenant, after, limit)
    }

    fn attempts_page(
        &self,
        tenant: TenantId,
        after: Option<AttemptCursor>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<Attempt>> {
        Box::pin(async move {
            let stored = self.inner.attempts_page(tenant, after, limit).await?;
            self.each(tenant, Pass::Open, stored, TenantCipher::attempt).await
        })
    }

    fn begin_tenant_deletion(&self, deletion: TenantDeletion) -> StoreFuture<'_, ()> {
        self.inner.begin_tenant_deletion(deletion)
    }

    fn tenant_deletions(&self) -> StoreFuture<'_, Vec<TenantDeletion>> {
        self.inner.tenant_deletions()
    }

    fn purge_tenant_chunk(
        &self,
        tenant: TenantId,
        limit: usize,
        now: DateTime<Utc>,
    ) -> StoreFuture<'_, PurgeProgress> {
        self.inner.purge_tenant_chunk(tenant, limit, now)
    }

    fn put_billing_record(&self, record: BillingRecord) -> StoreFuture<'_, ()> {
        self.inner.put_billing_record(record)
    }

    fn billing_record(&self, tenant: TenantId) -> StoreFuture<'_, Option<BillingRecord>> {
        self.inner.billing_record(tenant)
    }

    fn purge_sent_messages(&self, before: DateTime<Utc>, limit: usize) -> StoreFuture<'_, u64> {
        self.inner.purge_sent_messages(before, limit)
    }

    fn put_data_key(&self, key: WrappedDataKey) -> StoreFuture<'_, ()> {
        self.inner.put_data_key(key)
    }

    fn data_key(&self, tenant: TenantId) -> StoreFuture<'_, Option<WrappedDataKey>> {
        self.inner.data_key(tenant)
    }

    fn data_keys(&self) -> StoreFuture<'_, Vec<WrappedDataKey>> {
        self.inner.data_keys()
    }

    fn delete_data_key(&self, tenant: TenantId) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let removed = self.destroy_tenant_key(tenant).await?;
            Ok(removed)
        })
    }

    // A Stripe account holds Stripe's ids and statuses, no personal data, so it is not sealed.
    fn put_stripe_account(&self, account: StripeAccount) -> StoreFuture<'_, ()> {
        self.inner.put_stripe_account(account)
    }

    fn stripe_account(&self, tenant: TenantId) -> StoreFuture<'_, Option<StripeAccount>> {
        self.inner.stripe_account(tenant)
    }

    fn stripe_account_by_customer(
        &self,
        customer_id: String,
    ) -> StoreFuture<'_, Option<StripeAccount>> {
        self.inner.stripe_account_by_customer(customer_id)
    }

    // Meter batches hold Stripe ids and counts only, so they pass through unsealed.
    fn insert_meter_batch(&self, batch: MeterBatch) -> StoreFuture<'_, bool> {
        self.inner.insert_meter_batch(batch)
    }

    fn last_meter_batch(&self, key: UsageKey) -> StoreFuture<'_, Option<MeterBatch>> {
        self.inner.last_meter_batch(key)
    }

    fn unsent_meter_batches(&self, limit: usize) -> StoreFuture<'_, Vec<MeterBatch>> {
        self.inner.unsent_meter_batches(limit)
    }

    fn mark_meter_batch_sent(&self, key: UsageKey, sequence: u64) -> StoreFuture<'_, ()> {
        self.inner.mark_meter_batch_sent(key, sequence)
    }

    fn put_suppressions(&self, tenant: TenantId, entries: Vec<Suppression>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let sealed = self.each(tenant, Pass::Seal, entries, TenantCipher::suppression).await?;
            self.inner.put_suppressions(tenant, sealed).await
        })
    }

    fn suppressions(
        &self,
        tenant: TenantId,
        keys: Vec<String>,
    ) -> StoreFuture<'_, Vec<Suppression>> {
        Box::pin(async move {
            let keys = self.stored_keys(tenant, keys).await?;
            let stored = self.inner.suppressions(tenant, keys).await?;
            self.each(tenant, Pass::Open, stored, TenantCipher::suppression).await
        })
    }

    fn suppressions_page(
        &self,
        tenant: TenantId,
        after: Option<String>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<Suppression>> {
        Box::pin(async move {
            let after = self.stored_keys(tenant, after.into_iter().collect()).await?.pop();
            let stored = self.inner.suppressions_page(tenant, after, limit).await?;
            self.each(tenant, Pass::Open, stored, TenantCipher::suppression).await
        })
    }

    fn remove_suppressions(&self, tenant: TenantId, keys: Vec<String>) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let keys = self.stored_keys(tenant, keys).await?;
            self.inner.remove_suppressions(tenant, keys).await
        })
    }
}

impl SealedStore {
    /// Returns the keys under which the inner store keeps the suppression entries `keys`.
    async fn stored_keys(
        &self,
        tenant: TenantId,
        keys: Vec<String>,
    ) -> Result<Vec<String>, StoreError> {
        if keys.is_empty() {
            return Ok(keys);
        }
        let key = self.tenant_key(tenant).await?;
        Ok(keys.iter().map(|plain| key.record_ids().suppression_key(plain)).collect())
    }
}
