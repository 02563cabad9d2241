//! The operators' audit log: one document per entry, `_id` the entry's time-ordered id, with
//! the tenant acted on beside the record so that a tenant's deletion finds its entries.

use followup_core::ids::TenantId;
use followup_core::store::{AuditEntry, StoreError};
use futures_util::TryStreamExt as _;
use mongodb::bson::{Bson, Document, doc};

use super::collections::AUDIT;
use super::{MongoStore, documents, errors};

impl MongoStore {
    pub(super) async fn insert_audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        let tenant = entry.tenant.map_or(Bson::Null, |t| Bson::String(documents::tenant(t)));
        let document =
            documents::with_record(AUDIT, entry.id.clone(), doc! { "tenant": tenant }, &entry)?;
        match self.collection(AUDIT).insert_one(document).await {
            Ok(_) => Ok(()),
            Err(error) if errors::is_duplicate_key(&error) => {
                Err(StoreError::Conflict(format!("audit entry {} already exists", entry.id)))
            }
            Err(error) => Err(errors::unavailable(AUDIT, "insert_one", &error)),
        }
    }

    pub(super) async fn read_audit_page(
        &self,
        offset: u64,
        limit: usize,
    ) -> Result<(u64, Vec<AuditEntry>), StoreError> {
        let target = self.collection(AUDIT);
        let total = target.count_documents(Document::new()).await;
        let total = total.map_err(|error| errors::unavailable(AUDIT, "count_documents", &error))?;
        let find = target
            .find(Document::new())
            .sort(doc! { "_id": -1 })
            .skip(offset)
            .limit(i64::try_from(limit).unwrap_or(i64::MAX));
        let fail = |error| errors::unavailable(AUDIT, "find", &error);
        let found: Vec<Document> = find.await.map_err(fail)?.try_collect().await.map_err(fail)?;
        let entries = found
            .into_iter()
            .map(|document| documents::record(AUDIT, document))
            .collect::<Result<_, _>>()?;
        Ok((total, entries))
    }

    /// Removes the notes of the audit entries about `tenant`, which may name it.
    pub(super) async fn forget_audit_notes(&self, tenant: TenantId) -> Result<(), StoreError> {
        let filter = doc! { "tenant": documents::tenant(tenant) };
        let update = doc! { "$set": { "record.note": Bson::Null } };
        let updated = self.collection(AUDIT).update_many(filter, update).await;
        updated.map_err(|error| errors::unavailable(AUDIT, "update_many", &error))?;
        Ok(())
    }
}
