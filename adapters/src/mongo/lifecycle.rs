//! Write operations of a record's end of life in the MongoDB store: a tenant's deletion and
//! purge, and the removal of sent messages past their retention.

use chrono::{DateTime, Utc};
use followup_core::domain::{Attempt, TenantDeletion};
use followup_core::ids::TenantId;
use followup_core::store::{PurgeProgress, StoreError};
use mongodb::bson::{self, Document, doc};

use super::collections::{
    ATTEMPTS, CONNECTIONS, CONTACTS, DELETIONS, FOLLOW_UPS, SCHEDULES, SENDS, SEQUENCES,
    SUPPRESSIONS, TENANTS,
};
use super::{MongoStore, documents, errors};

/// Collections a tenant's purge empties, in order: every collection keyed by tenant except
/// the deletion markers, billing records and data keys (which `delete_data_key` removes at
/// once). The tenant document goes when the deletion begins.
const PURGED: [&str; 8] =
    [SUPPRESSIONS, SENDS, ATTEMPTS, FOLLOW_UPS, SCHEDULES, CONTACTS, SEQUENCES, CONNECTIONS];

impl MongoStore {
    /// Stores the deletion marker, then removes the tenant document with its API key.
    ///
    /// Without a transaction the two writes are separate, and the marker goes first: from the
    /// moment it exists every write for the tenant is refused (see `check_not_deleted`), and a
    /// stop before the tenant's removal leaves a marker that a retry of the deletion or the
    /// purge completes. The marker's unique `_id` makes a second deletion a conflict.
    pub(super) async fn write_deletion(&self, deletion: TenantDeletion) -> Result<(), StoreError> {
        let id = documents::tenant(deletion.tenant);
        let tenant = self.collection(TENANTS).find_one(doc! { "_id": &id }).await;
        let tenant = tenant.map_err(|error| errors::unavailable(TENANTS, "find_one", &error))?;
        if tenant.is_none() {
            return Err(StoreError::Conflict(format!("tenant {} not found", deletion.tenant)));
        }
        let marker = documents::with_record(DELETIONS, id.clone(), Document::new(), &deletion)?;
        match self.collection(DELETIONS).insert_one(marker).await {
            Ok(_) => {}
            Err(error) if errors::is_duplicate_key(&error) => {
                return Err(StoreError::Conflict(format!(
                    "tenant {tenant} is being deleted; its records accept no more writes",
                    tenant = deletion.tenant
                )));
            }
            Err(error) => return Err(errors::unavailable(DELETIONS, "insert_one", &error)),
        }
        let removed = self.collection(TENANTS).delete_one(doc! { "_id": &id }).await;
        removed.map_err(|error| errors::unavailable(TENANTS, "delete_one", &error))?;
        // NOTE: a separate update after the marker, as every step here: a stop between the
        // two leaves the tenant's audit notes until an operator deletes them by hand.
        self.forget_audit_notes(deletion.tenant).await
    }

    /// Removes up to `limit` documents of a tenant being deleted, collection by collection,
    /// and adds the count to its marker with `$inc`.
    ///
    /// A stop between a removal and the marker's update leaves the count short by that chunk;
    /// the records are gone either way, and the next chunk goes on from what is left.
    pub(super) async fn purge_chunk(
        &self,
        tenant: TenantId,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<PurgeProgress, StoreError> {
        let marker_id = documents::tenant(tenant);
        let marker = self.collection(DELETIONS).find_one(doc! { "_id": &marker_id }).await;
        let marker = marker.map_err(|error| errors::unavailable(DELETIONS, "find_one", &error))?;
        if marker.is_none() {
            return Err(StoreError::Conflict(format!(
                "tenant {tenant} has no deletion marker; its records are not purged"
            )));
        }
        // The tenant document itself, if a stop came between the marker and its removal.
        let stray = self.collection(TENANTS).delete_one(doc! { "_id": &marker_id }).await;
        stray.map_err(|error| errors::unavailable(TENANTS, "delete_one", &error))?;

        let limit = limit.max(1);
        let mut removed = 0;
        for collection in PURGED {
            removed += self.remove_some(collection, &marker_id, limit - removed).await?;
            if removed == limit {
                break;
            }
        }
        // A chunk that stopped short of its limit found every collection empty.
        let done = removed < limit;
        let removed = removed as u64;
        let count = doc! { "$inc": { "record.records_purged": i64::try_from(removed).unwrap_or(i64::MAX) } };
        let counted =
            self.collection(DELETIONS).update_one(doc! { "_id": &marker_id }, count).await;
        counted.map_err(|error| errors::unavailable(DELETIONS, "update_one", &error))?;
        if done {
            let completed = bson::to_bson(&now).map_err(|error| {
                StoreError::Unavailable(format!("mongodb: encoding an instant: {error}"))
            })?;
            let open = doc! { "_id": &marker_id, "record.completed_at": null };
            let complete = doc! { "$set": { "record.completed_at": completed } };
            let set = self.collection(DELETIONS).update_one(open, complete).await;
            set.map_err(|error| errors::unavailable(DELETIONS, "update_one", &error))?;
        }
        Ok(PurgeProgress { removed, done })
    }

    /// Removes up to `limit` documents of the tenant from one collection; returns how many.
    async fn remove_some(
        &self,
        collection: &'static str,
        tenant: &str,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let filter = doc! { "_id": documents::under(tenant) };
        let target = self.collection(collection);
        let find = target.find(filter).projection(doc! { "_id": 1 });
        let fail = |error| errors::unavailable(collection, "find ids", &error);
        let mut cursor =
            find.limit(i64::try_from(limit).unwrap_or(i64::MAX)).await.map_err(fail)?;
        let mut ids = Vec::new();
        while cursor.advance().await.map_err(fail)? {
            let document = cursor.deserialize_current().map_err(fail)?;
            ids.extend(document.get("_id").cloned());
        }
        if ids.is_empty() {
            return Ok(0);
        }
        let deleted = self.collection(collection).delete_many(doc! { "_id": { "$in": ids } }).await;
        let deleted =
            deleted.map_err(|error| errors::unavailable(collection, "delete_many", &error))?;
        Ok(usize::try_from(deleted.deleted_count).unwrap_or(usize::MAX))
    }

    /// Removes the message of up to `limit` attempts that finished before `before`, found by
    /// the `sent_messages` index; the attempts stay.
    pub(super) async fn purge_messages(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<u64, StoreError> {
        // Dates keep milliseconds: take the millisecond of `before` too and let the exact
        // instant of the record decide.
        let bound = documents::date(before + chrono::Duration::milliseconds(1));
        let filter = doc! { "has_message": true, "finished": { "$lt": bound } };
        let found = self.find_documents(ATTEMPTS, filter, Some(limit)).await?;
        let mut expired = Vec::with_capacity(found.len());
        for document in found {
            let id = document.get("_id").cloned();
            let attempt: Attempt = documents::record(ATTEMPTS, document)?;
            if attempt.finished_at < before {
                expired.extend(id);
            }
        }
        if expired.is_empty() {
            return Ok(0);
        }
        let filter = doc! { "_id": { "$in": expired }, "has_message": true };
        let update = doc! { "$set": { "record.message": null, "has_message": false } };
        let updated = self.collection(ATTEMPTS).update_many(filter, update).await;
        let updated =
            updated.map_err(|error| errors::unavailable(ATTEMPTS, "update_many", &error))?;
        Ok(updated.modified_count)
    }
}
