//! Meter batches in the MongoDB store: one document per batch in `meter_batches`, its `_id`
//! the counter's tenant, period and channel and the sequence in 20 digits, so that `_id` order
//! is sequence order within a counter and a second insert of one sequence fails on `_id`.

use followup_core::store::StoreError;
use followup_core::store::metering::MeterBatch;
use followup_core::store::usage::UsageKey;
use mongodb::bson::{Document, doc};

use super::collections::METER_BATCHES;
use super::{MongoStore, documents, errors};

fn counter(tenant: followup_core::ids::TenantId, period: &str, channel: &str) -> String {
    format!("{}:{period}:{channel}", documents::tenant(tenant))
}

fn counter_of(key: &UsageKey) -> String {
    counter(key.tenant, &key.period.to_string(), documents::channel_name(key.channel))
}

fn batch_id(counter: &str, sequence: u64) -> String {
    format!("{counter}:{sequence:020}")
}

impl MongoStore {
    pub(super) async fn insert_batch(&self, batch: MeterBatch) -> Result<bool, StoreError> {
        let channel = documents::channel_name(batch.channel);
        let counter = counter(batch.tenant, &batch.period, channel);
        let id = batch_id(&counter, batch.sequence);
        let fields = doc! { "counter": &counter, "sent": batch.sent };
        let document = documents::with_record(METER_BATCHES, id, fields, &batch)?;
        match self.collection(METER_BATCHES).insert_one(document).await {
            Ok(_) => Ok(true),
            Err(error) if errors::is_duplicate_key(&error) => Ok(false),
            Err(error) => Err(errors::unavailable(METER_BATCHES, "insert_one", &error)),
        }
    }

    pub(super) async fn last_batch(&self, key: UsageKey) -> Result<Option<MeterBatch>, StoreError> {
        let filter = doc! { "_id": documents::under(&counter_of(&key)) };
        let found = self.collection(METER_BATCHES).find_one(filter).sort(doc! { "_id": -1 }).await;
        let found =
            found.map_err(|error| errors::unavailable(METER_BATCHES, "find_one", &error))?;
        found.map(|document| documents::record(METER_BATCHES, document)).transpose()
    }

    pub(super) async fn unsent_batches(&self, limit: usize) -> Result<Vec<MeterBatch>, StoreError> {
        self.find_records(METER_BATCHES, doc! { "sent": false }, Some(limit)).await
    }

    pub(super) async fn mark_batch_sent(
        &self,
        key: UsageKey,
        sequence: u64,
    ) -> Result<(), StoreError> {
        let id = batch_id(&counter_of(&key), sequence);
        let record_sent = format!("{}.sent", documents::RECORD);
        let update: Document = doc! { "$set": { "sent": true, record_sent: true } };
        let target = self.collection(METER_BATCHES);
        let updated = target.update_one(doc! { "_id": &id }, update).await;
        let updated =
            updated.map_err(|error| errors::unavailable(METER_BATCHES, "update_one", &error))?;
        if updated.matched_count == 0 {
            return Err(StoreError::Conflict(format!("no meter batch {id}")));
        }
        Ok(())
    }
}
