//! Quota usage counters in the MongoDB store: one document per (tenant, period, channel) in
//! `usage_counters`, its `_id` made of the three, with the counts `taken` and `committed` as
//! plain 64-bit integers so that updates can compare and `$inc` them.
//!
//! A reservation is one `update_one` whose filter matches only while `taken` leaves room for
//! the whole request, with `$inc` on `taken`. When it matches nothing, the counter is read:
//! a missing counter is inserted (exactly one of racing inserts wins on `_id`), and a partial
//! grant is an update conditional on the exact `taken` that was read, tried again while other
//! writers move it. On MongoDB a single-document update applies its filter and `$inc`
//! atomically, so concurrent reservations never pass the limit together.
//!
//! NOTE: FerretDB 1.24 on SQLite runs an update as a read and then a write without a
//! transaction, so there two nodes reserving for the same counter at the same instant can
//! together pass the limit: without the lock below, 16 concurrent reservations of 3 against a
//! limit of 20 were granted 25 in the conformance check. Within one process the store
//! therefore serialises its reservations, which closes the race for a single node; across
//! nodes only MongoDB's atomic update closes it. Tenant leases make such a race rare: one node
//! dispatches a tenant at a time, and two reserve for it only around a takeover.

use followup_core::domain::Channel;
use followup_core::ids::TenantId;
use followup_core::store::StoreError;
use followup_core::store::usage::{UsageCounter, UsageKey};
use mongodb::bson::{Document, doc};

use super::collections::USAGE;
use super::{MongoStore, documents, errors};

/// Conditional updates tried before a reservation gives up under contention.
const MAX_RESERVE_ATTEMPTS: usize = 32;

fn counter_id(key: &UsageKey) -> String {
    format!(
        "{}:{}:{}",
        documents::tenant(key.tenant),
        key.period,
        documents::channel_name(key.channel)
    )
}

fn as_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn counter_document(key: &UsageKey, taken: u64) -> Document {
    doc! {
        "_id": counter_id(key),
        "tenant": documents::tenant(key.tenant),
        "period": key.period.to_string(),
        "channel": documents::channel_name(key.channel),
        "taken": as_i64(taken),
        "committed": 0_i64,
    }
}

fn counter_from(document: &Document) -> Result<UsageCounter, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { table: USAGE, reason };
    let text = |field: &str| {
        document.get_str(field).map_err(|error| corrupt(format!("field {field}: {error}")))
    };
    let count = |field: &str| {
        let value = document.get_i64(field).map_err(|e| corrupt(format!("field {field}: {e}")))?;
        u64::try_from(value).map_err(|_| corrupt(format!("field {field} is negative: {value}")))
    };
    let tenant = text("tenant")?
        .parse::<uuid::Uuid>()
        .map(TenantId)
        .map_err(|error| corrupt(format!("field tenant: {error}")))?;
    let channel = match text("channel")? {
        "email" => Channel::Email,
        "sms" => Channel::Sms,
        "call" => Channel::Call,
        other => return Err(corrupt(format!("unknown channel {other:?}"))),
    };
    Ok(UsageCounter {
        tenant,
        period: text("period")?.to_owned(),
        channel,
        taken: count("taken")?,
        committed: count("committed")?,
    })
}

impl MongoStore {
    pub(super) async fn reserve_counter(
        &self,
        key: UsageKey,
        wanted: u64,
        limit: u64,
    ) -> Result<u64, StoreError> {
        self.check_not_deleted(key.tenant).await?;
        if wanted == 0 {
            return Ok(0);
        }
        // Serialised within this process for FerretDB's sake (see the module note).
        let _serial = self.usage_lock.lock().await;
        let target = self.collection(USAGE);
        let id = counter_id(&key);
        let update = |filter: Document, amount: u64| {
            let target = target.clone();
            async move {
                let changed = target
                    .update_one(filter, doc! { "$inc": { "taken": as_i64(amount) } })
                    .await
                    .map_err(|error| errors::unavailable(USAGE, "update_one", &error))?;
                Ok::<bool, StoreError>(changed.matched_count == 1)
            }
        };
        for _ in 0..MAX_RESERVE_ATTEMPTS {
            // The common case: room for all of it, in one conditional update.
            if wanted <= limit {
                let room = doc! { "_id": &id, "taken": { "$lte": as_i64(limit - wanted) } };
                if update(room, wanted).await? {
                    return Ok(wanted);
                }
            }
            let found = target.find_one(doc! { "_id": &id }).await;
            let found = found.map_err(|error| errors::unavailable(USAGE, "find_one", &error))?;
            let Some(found) = found else {
                let granted = wanted.min(limit);
                match target.insert_one(counter_document(&key, granted)).await {
                    Ok(_) => return Ok(granted),
                    Err(error) if errors::is_duplicate_key(&error) => continue,
                    Err(error) => return Err(errors::unavailable(USAGE, "insert_one", &error)),
                }
            };
            let taken = counter_from(&found)?.taken;
            let granted = wanted.min(limit.saturating_sub(taken));
            if granted == 0 {
                return Ok(0);
            }
            if update(doc! { "_id": &id, "taken": as_i64(taken) }, granted).await? {
                return Ok(granted);
            }
        }
        Err(StoreError::Unavailable(format!(
            "mongodb: reserving quota of tenant {} in {} on {}: the counter changed under each \
             of {MAX_RESERVE_ATTEMPTS} attempts",
            key.tenant, key.period, key.channel
        )))
    }

    pub(super) async fn settle_counter(
        &self,
        key: UsageKey,
        committed: u64,
        released: u64,
    ) -> Result<(), StoreError> {
        if committed == 0 && released == 0 {
            return Ok(());
        }
        let filter = doc! { "_id": counter_id(&key), "taken": { "$gte": as_i64(released) } };
        let update = doc! {
            "$inc": { "taken": -as_i64(released), "committed": as_i64(committed) },
        };
        let changed = self.collection(USAGE).update_one(filter, update).await;
        let changed = changed.map_err(|error| errors::unavailable(USAGE, "update_one", &error))?;
        if changed.matched_count == 0 {
            return Err(StoreError::Conflict(format!(
                "usage of tenant {} in {} on {}: releasing {released} sends, but the counter is \
                 missing or has fewer taken",
                key.tenant, key.period, key.channel
            )));
        }
        Ok(())
    }

    pub(super) async fn read_usage(
        &self,
        tenant: Option<TenantId>,
        period: String,
    ) -> Result<Vec<UsageCounter>, StoreError> {
        let mut filter = doc! { "period": period };
        if let Some(tenant) = tenant {
            filter.insert("tenant", documents::tenant(tenant));
        }
        let found = self.find_documents(USAGE, filter, None).await?;
        let mut counters = found.iter().map(counter_from).collect::<Result<Vec<_>, _>>()?;
        counters.sort_by_key(|counter| (counter.tenant.0, counter.channel));
        Ok(counters)
    }
}
