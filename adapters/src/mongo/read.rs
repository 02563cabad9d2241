//! The read side of the MongoDB store. Each read is one query; lists come back in `_id` order,
//! which is the order the Store trait pages by (see `documents`).

use chrono::{DateTime, Utc};
use std::collections::HashMap;

use followup_core::domain::{Channel, Contact, FollowUp, FollowUpState, Provider};
use followup_core::ids::{ContactId, TenantId};
use followup_core::store::{ConnectionStatus, FollowUpCounts, FollowUpTally, StoreError};
use futures_util::TryStreamExt as _;
use mongodb::bson::{self, Bson, Document, doc};
use serde::de::DeserializeOwned;

use super::collections::{CONNECTIONS, CONTACTS, FOLLOW_UPS, SENDS};
use super::{MongoStore, documents, errors};

/// States in which a follow-up waits for its due instant, as stored.
pub(super) fn due_states() -> Bson {
    let states = [FollowUpState::Pending, FollowUpState::Retry];
    Bson::from(states.map(FollowUpState::as_str).to_vec())
}

impl MongoStore {
    /// Finds the documents matching `filter` in `_id` order, up to `limit`.
    pub(super) async fn find_documents(
        &self,
        collection: &'static str,
        filter: Document,
        limit: Option<usize>,
    ) -> Result<Vec<Document>, StoreError> {
        let target = self.collection(collection);
        let mut find = target.find(filter).sort(doc! { "_id": 1 });
        if let Some(limit) = limit {
            find = find.limit(i64::try_from(limit).unwrap_or(i64::MAX));
        }
        let fail = |error| errors::unavailable(collection, "find", &error);
        let cursor = find.await.map_err(fail)?;
        cursor.try_collect().await.map_err(fail)
    }

    pub(super) async fn find_records<T: DeserializeOwned>(
        &self,
        collection: &'static str,
        filter: Document,
        limit: Option<usize>,
    ) -> Result<Vec<T>, StoreError> {
        let documents = self.find_documents(collection, filter, limit).await?;
        documents.into_iter().map(|document| documents::record(collection, document)).collect()
    }

    pub(super) async fn find_record<T: DeserializeOwned>(
        &self,
        collection: &'static str,
        filter: Document,
    ) -> Result<Option<T>, StoreError> {
        let found = self.collection(collection).find_one(filter).await;
        let found = found.map_err(|error| errors::unavailable(collection, "find_one", &error))?;
        found.map(|document| documents::record(collection, document)).transpose()
    }

    /// Every record of `tenant` in a collection keyed by tenant and id.
    pub(super) async fn tenant_records<T: DeserializeOwned>(
        &self,
        collection: &'static str,
        tenant: TenantId,
    ) -> Result<Vec<T>, StoreError> {
        let filter = doc! { "_id": documents::under(&documents::tenant(tenant)) };
        self.find_records(collection, filter, None).await
    }

    /// Up to `limit` records of `tenant` whose `_id` sorts after `after`.
    pub(super) async fn page<T: DeserializeOwned>(
        &self,
        collection: &'static str,
        tenant: TenantId,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<T>, StoreError> {
        let range = documents::under_after(&documents::tenant(tenant), after);
        self.find_records(collection, doc! { "_id": range }, Some(limit)).await
    }

    pub(super) async fn read_contacts(
        &self,
        tenant: TenantId,
        ids: Vec<ContactId>,
    ) -> Result<Vec<Contact>, StoreError> {
        let ids: Vec<String> =
            ids.iter().map(|id| documents::tenant_record(tenant, &id.0)).collect();
        let found = self.find_documents(CONTACTS, doc! { "_id": { "$in": ids } }, None).await?;
        found.into_iter().map(documents::contact).collect()
    }

    pub(super) async fn read_contacts_page(
        &self,
        tenant: TenantId,
        after: Option<ContactId>,
        limit: usize,
    ) -> Result<Vec<Contact>, StoreError> {
        let after = after.map(|id| documents::tenant_record(tenant, &id.0));
        let range = documents::under_after(&documents::tenant(tenant), after);
        let found = self.find_documents(CONTACTS, doc! { "_id": range }, Some(limit)).await?;
        found.into_iter().map(documents::contact).collect()
    }

    /// Reads the due index: the tenant's pending and retry follow-ups on `channel` by due date.
    ///
    /// The date keeps milliseconds, so the query takes every follow-up due within the
    /// millisecond of `until` and the exact instant of the record decides.
    pub(super) async fn read_due(
        &self,
        tenant: TenantId,
        channel: Channel,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<FollowUp>, StoreError> {
        let filter = doc! {
            "tenant": documents::tenant(tenant),
            "channel": documents::channel_name(channel),
            "state": { "$in": due_states() },
            "due": { "$lte": documents::date(until) },
        };
        let target = self.collection(FOLLOW_UPS);
        let find = target.find(filter).sort(doc! { "due": 1, "_id": 1 });
        let fail = |error| errors::unavailable(FOLLOW_UPS, "find due", &error);
        let cursor = find.limit(i64::try_from(limit).unwrap_or(i64::MAX)).await.map_err(fail)?;
        let found: Vec<Document> = cursor.try_collect().await.map_err(fail)?;
        let mut due = Vec::with_capacity(found.len());
        for document in found {
            let follow_up: FollowUp = documents::record(FOLLOW_UPS, document)?;
            if follow_up.due_at <= until {
                due.push(follow_up);
            }
        }
        // Within one millisecond the dates tie; the exact instants order them.
        due.sort_by_key(|follow_up| (follow_up.due_at, follow_up.id));
        Ok(due)
    }

    pub(super) async fn read_next_due_at(
        &self,
        tenant: TenantId,
        channel: Channel,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let filter = doc! {
            "tenant": documents::tenant(tenant),
            "channel": documents::channel_name(channel),
            "state": { "$in": due_states() },
        };
        let target = self.collection(FOLLOW_UPS);
        let find = target.find_one(filter).sort(doc! { "due": 1, "_id": 1 });
        let found = find.await.map_err(|e| errors::unavailable(FOLLOW_UPS, "find next due", &e))?;
        let follow_up: Option<FollowUp> =
            found.map(|document| documents::record(FOLLOW_UPS, document)).transpose()?;
        Ok(follow_up.map(|follow_up| follow_up.due_at))
    }

    pub(super) async fn read_sends_since(
        &self,
        tenant: TenantId,
        channel: Channel,
        since: DateTime<Utc>,
    ) -> Result<Vec<DateTime<Utc>>, StoreError> {
        let filter = doc! {
            "tenant": documents::tenant(tenant),
            "channel": documents::channel_name(channel),
            "at": { "$gte": documents::date(since) },
        };
        let target = self.collection(SENDS);
        let find = target.find(filter).sort(doc! { "at": 1, "sub_ms": 1 });
        let fail = |error| errors::unavailable(SENDS, "find", &error);
        let found: Vec<Document> = find.await.map_err(fail)?.try_collect().await.map_err(fail)?;
        let corrupt = |reason: String| StoreError::Corrupt { table: SENDS, reason };
        let mut instants = Vec::with_capacity(found.len());
        for document in found {
            let at = document.get_datetime("at").map_err(|error| corrupt(error.to_string()))?;
            let sub_ms = document.get_i32("sub_ms").map_err(|error| corrupt(error.to_string()))?;
            let instant = documents::instant(*at, sub_ms)
                .ok_or_else(|| corrupt(format!("instant out of range: {at}")))?;
            if instant >= since {
                instants.push(instant);
            }
        }
        Ok(instants)
    }

    /// Counts follow-ups by channel and state with one `$group` over the tenant's documents
    /// (or all of them).
    ///
    /// NOTE: like the embedded store's count, this visits every follow-up it counts; it serves
    /// the demo summary and periodic metrics, not dispatch.
    pub(super) async fn read_counts(
        &self,
        tenant: Option<TenantId>,
    ) -> Result<FollowUpCounts, StoreError> {
        let filter = tenant.map_or_else(Document::new, |t| doc! { "tenant": documents::tenant(t) });
        let pipeline = [
            doc! { "$match": filter },
            doc! { "$group": {
                "_id": { "channel": "$channel", "state": "$state" },
                "count": { "$sum": 1 },
            } },
        ];
        let fail = |error| errors::unavailable(FOLLOW_UPS, "aggregate counts", &error);
        let cursor = self.collection(FOLLOW_UPS).aggregate(pipeline).await.map_err(fail)?;
        let groups: Vec<Document> = cursor.try_collect().await.map_err(fail)?;
        let corrupt = |reason: String| StoreError::Corrupt { table: FOLLOW_UPS, reason };
        let mut counts = FollowUpCounts::new();
        for group in groups {
            let key = group.get_document("_id").map_err(|error| corrupt(error.to_string()))?;
            let channel: Channel = decode_name(key.get("channel")).map_err(corrupt)?;
            let state: FollowUpState = decode_name(key.get("state")).map_err(corrupt)?;
            let count = match group.get("count") {
                Some(Bson::Int32(count)) => u64::try_from(*count).unwrap_or_default(),
                Some(Bson::Int64(count)) => u64::try_from(*count).unwrap_or_default(),
                other => return Err(corrupt(format!("count of a group: {other:?}"))),
            };
            counts.insert((channel, state), count);
        }
        Ok(counts)
    }
}

/// The fields of a connection record the operator overview shows. The record is fetched whole
/// (its credentials sealed), but only these are decoded.
#[derive(serde::Deserialize)]
struct StatusFields {
    tenant: TenantId,
    provider: Provider,
    #[serde(default)]
    paused_reason: Option<String>,
}

impl MongoStore {
    /// Tallies follow-ups by tenant, channel and state with two aggregations: one groups every
    /// follow-up, the other only the due pending and retry ones (through the due index).
    /// FerretDB 1.24 cannot sum a conditional expression inside `$group`, hence two.
    ///
    /// NOTE: the due count compares the millisecond `due` date, so a follow-up due less than
    /// a millisecond after `now` may count as due.
    pub(super) async fn read_tally(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<FollowUpTally>, StoreError> {
        let everything = self.grouped_counts(Document::new()).await?;
        let due_filter = doc! {
            "state": { "$in": [FollowUpState::Pending.as_str(), FollowUpState::Retry.as_str()] },
            "due": { "$lte": documents::date(now) },
        };
        let due = self.grouped_counts(due_filter).await?;
        Ok(everything
            .into_iter()
            .map(|(key, count)| {
                let (tenant, channel, state) = key;
                let due = due.get(&key).copied().unwrap_or(0);
                FollowUpTally { tenant, channel, state, count, due }
            })
            .collect())
    }

    /// Counts the follow-ups matching `filter` by tenant, channel and state.
    async fn grouped_counts(
        &self,
        filter: Document,
    ) -> Result<HashMap<(TenantId, Channel, FollowUpState), u64>, StoreError> {
        let pipeline = [
            doc! { "$match": filter },
            doc! { "$group": {
                "_id": { "tenant": "$tenant", "channel": "$channel", "state": "$state" },
                "count": { "$sum": 1 },
            } },
        ];
        let fail = |error| errors::unavailable(FOLLOW_UPS, "aggregate tally", &error);
        let cursor = self.collection(FOLLOW_UPS).aggregate(pipeline).await.map_err(fail)?;
        let groups: Vec<Document> = cursor.try_collect().await.map_err(fail)?;
        let corrupt = |reason: String| StoreError::Corrupt { table: FOLLOW_UPS, reason };
        let mut counts = HashMap::with_capacity(groups.len());
        for group in groups {
            let key = group.get_document("_id").map_err(|error| corrupt(error.to_string()))?;
            let tenant = key.get_str("tenant").map_err(|error| corrupt(error.to_string()))?;
            let tenant = tenant
                .parse::<uuid::Uuid>()
                .map(TenantId)
                .map_err(|error| corrupt(format!("tenant of a group: {error}")))?;
            let channel: Channel = decode_name(key.get("channel")).map_err(corrupt)?;
            let state: FollowUpState = decode_name(key.get("state")).map_err(corrupt)?;
            let count = match group.get("count") {
                Some(Bson::Int32(count)) => u64::try_from(*count).unwrap_or_default(),
                Some(Bson::Int64(count)) => u64::try_from(*count).unwrap_or_default(),
                other => return Err(corrupt(format!("count of a group: {other:?}"))),
            };
            counts.insert((tenant, channel, state), count);
        }
        Ok(counts)
    }

    pub(super) async fn read_connection_statuses(
        &self,
    ) -> Result<Vec<ConnectionStatus>, StoreError> {
        let fields: Vec<StatusFields> =
            self.find_records(CONNECTIONS, Document::new(), None).await?;
        Ok(fields
            .into_iter()
            .map(|fields| ConnectionStatus {
                tenant: fields.tenant,
                provider: fields.provider,
                paused_reason: fields.paused_reason,
            })
            .collect())
    }
}

/// Reads an enum back from the name its serde form gives it.
fn decode_name<T: DeserializeOwned>(value: Option<&Bson>) -> Result<T, String> {
    let value = value.cloned().unwrap_or(Bson::Null);
    bson::from_bson(value).map_err(|error| error.to_string())
}
