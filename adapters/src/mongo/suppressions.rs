//! The suppression list in the MongoDB store: one document per entry in `suppressions`, its
//! `_id` the tenant id, a colon and the entry's key, so a tenant's entries form one `_id`
//! range in key order.

use followup_core::ids::TenantId;
use followup_core::store::StoreError;
use followup_core::suppression::Suppression;
use mongodb::bson::{Document, doc};

use super::collections::SUPPRESSIONS;
use super::write::UPDATES_PER_COMMAND;
use super::{MongoStore, documents, errors};

fn entry_id(tenant: TenantId, key: &str) -> String {
    format!("{}:{key}", documents::tenant(tenant))
}

impl MongoStore {
    /// Upserts the entries, several per `update` command. Each entry is one document, so a
    /// stop part-way leaves some entries written and a retry writes the rest.
    pub(super) async fn write_suppressions(
        &self,
        tenant: TenantId,
        entries: Vec<Suppression>,
    ) -> Result<(), StoreError> {
        if let Some(foreign) = entries.iter().find(|entry| entry.tenant != tenant) {
            return Err(StoreError::Conflict(format!(
                "suppression entry of tenant {} written as tenant {tenant}",
                foreign.tenant
            )));
        }
        self.check_not_deleted(tenant).await?;
        for chunk in entries.chunks(UPDATES_PER_COMMAND) {
            let mut statements = Vec::with_capacity(chunk.len());
            for entry in chunk {
                let id = entry_id(tenant, &entry.key);
                let document =
                    documents::with_record(SUPPRESSIONS, id.clone(), Document::new(), entry)?;
                statements.push(doc! { "q": { "_id": id }, "u": document, "upsert": true });
            }
            self.run_update(SUPPRESSIONS, statements).await?;
        }
        Ok(())
    }

    pub(super) async fn read_suppressions(
        &self,
        tenant: TenantId,
        keys: Vec<String>,
    ) -> Result<Vec<Suppression>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = keys.iter().map(|key| entry_id(tenant, key)).collect();
        self.find_records(SUPPRESSIONS, doc! { "_id": { "$in": ids } }, None).await
    }

    pub(super) async fn read_suppressions_page(
        &self,
        tenant: TenantId,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<Suppression>, StoreError> {
        let after = after.map(|key| entry_id(tenant, &key));
        self.page(SUPPRESSIONS, tenant, after, limit).await
    }

    pub(super) async fn delete_suppressions(
        &self,
        tenant: TenantId,
        keys: Vec<String>,
    ) -> Result<u64, StoreError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let ids: Vec<String> = keys.iter().map(|key| entry_id(tenant, key)).collect();
        let target = self.collection(SUPPRESSIONS);
        let deleted = target.delete_many(doc! { "_id": { "$in": ids } }).await;
        let deleted = deleted.map_err(|e| errors::unavailable(SUPPRESSIONS, "delete_many", &e))?;
        Ok(deleted.deleted_count)
    }
}
