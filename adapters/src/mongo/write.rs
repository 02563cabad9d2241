//! The write side of the MongoDB store: tenants and their settings, ingest, and the updates of
//! dispatch.
//!
//! Ingest and dispatch write many documents per call with one command per collection
//! (unordered `insert`, or the `update` command with many statements), so a batch costs a few
//! round trips whatever its size. Without transactions the documents of one call land one
//! collection after the other, in an order chosen so that a stop in between loses nothing:
//! see [`MongoStore::write_enrolments`] and [`MongoStore::write_update`].

use std::collections::{BTreeMap, BTreeSet};

use followup_core::domain::{Attempt, FollowUp, Tenant};
use followup_core::ids::TenantId;
use followup_core::store::{Enrolment, InsertReport, StoreError};
use mongodb::bson::{Bson, Document, doc};
use serde::Serialize;

use super::collections::{ATTEMPTS, CONTACTS, DELETIONS, FOLLOW_UPS, SCHEDULES, SENDS, TENANTS};
use super::leases::{fence_filter, with_fence};
use super::{MongoStore, documents, errors};
use crate::embedded::write::{check_enrolment, is_maybe_sent, same_attempt};

/// Statements per `update` command.
///
/// NOTE: FerretDB 1.24's SQLite backend keeps the cursor of each statement of an `update`
/// command open until the whole command ends, each on a connection of a pool of 100, so a
/// command of about 100 statements waits forever for a connection. With the driver's pool of
/// 10 connections, 10 concurrent commands of 8 statements stay under that. MongoDB has no
/// such limit and would take far larger commands; the small size costs it round trips.
pub(super) const UPDATES_PER_COMMAND: usize = 8;

/// How long a send instant is kept in `sends`: longer than any daily window.
const SENDS_KEPT_FOR: chrono::Duration = chrono::Duration::days(2);

impl MongoStore {
    /// Rejects a write for a tenant that has a deletion marker, so that a request or round
    /// that was under way when the deletion began cannot write records behind the purge.
    ///
    /// NOTE: the check and the write that follows are two operations, so a write whose check
    /// passed just before the marker was stored still lands; the purge, which starts after
    /// the marker, removes it. Only a write that lands after the purge finished would stay,
    /// which needs a request to outlive the whole purge.
    pub(super) async fn check_not_deleted(&self, tenant: TenantId) -> Result<(), StoreError> {
        let filter = doc! { "_id": documents::tenant(tenant) };
        let target = self.collection(DELETIONS);
        let found = target.find_one(filter).projection(doc! { "_id": 1 });
        let found = found.await.map_err(|e| errors::unavailable(DELETIONS, "find_one", &e))?;
        if found.is_some() {
            return Err(StoreError::Conflict(format!(
                "tenant {tenant} is being deleted; its records accept no more writes"
            )));
        }
        Ok(())
    }

    /// Inserts or replaces a document by its `_id`.
    pub(super) async fn replace(
        &self,
        collection: &'static str,
        document: Document,
    ) -> Result<(), StoreError> {
        let filter = doc! { "_id": document.get("_id").cloned().unwrap_or(Bson::Null) };
        let target = self.collection(collection);
        let replaced = target.replace_one(filter, document).upsert(true);
        replaced.await.map_err(|error| errors::unavailable(collection, "replace_one", &error))?;
        Ok(())
    }

    /// Inserts or replaces a record of `tenant`, unless the tenant is being deleted.
    pub(super) async fn put_owned<T: Serialize>(
        &self,
        collection: &'static str,
        tenant: TenantId,
        id: String,
        fields: Document,
        record: &T,
    ) -> Result<(), StoreError> {
        self.check_not_deleted(tenant).await?;
        let document = documents::with_record(collection, id, fields, record)?;
        self.replace(collection, document).await
    }

    /// Writes a tenant with its API key hash in an indexed field. A hash that belongs to
    /// another tenant is a conflict; the unique index enforces that when two writes race.
    pub(super) async fn write_tenant(&self, tenant: Tenant) -> Result<(), StoreError> {
        self.check_not_deleted(tenant.id).await?;
        let id = documents::tenant(tenant.id);
        let taken = doc! { "api_key": &tenant.api_key_sha256, "_id": { "$ne": &id } };
        let owner = self.collection(TENANTS).find_one(taken).projection(doc! { "_id": 1 }).await;
        let owner = owner.map_err(|error| errors::unavailable(TENANTS, "find_one", &error))?;
        if let Some(owner) = owner {
            let owner = owner.get_str("_id").unwrap_or("another tenant").to_owned();
            return Err(StoreError::Conflict(format!(
                "tenant {}: its API key hash already belongs to tenant {owner}; issue a new key",
                tenant.id
            )));
        }
        let fields = doc! { "api_key": &tenant.api_key_sha256 };
        let document = documents::with_record(TENANTS, id.clone(), fields, &tenant)?;
        let filter = doc! { "_id": &id };
        let replaced = self.collection(TENANTS).replace_one(filter, document).upsert(true).await;
        match replaced {
            Ok(_) => {}
            Err(error) if errors::is_duplicate_key(&error) => {
                return Err(StoreError::Conflict(format!(
                    "tenant {}: its API key hash already belongs to another tenant",
                    tenant.id
                )));
            }
            Err(error) => return Err(errors::unavailable(TENANTS, "replace_one", &error)),
        }

        // A deletion that began between the check above and this write removed the tenant
        // before the write put it back; take it out again, so it cannot authenticate.
        if let Err(conflict) = self.check_not_deleted(tenant.id).await {
            let removed = self.collection(TENANTS).delete_one(doc! { "_id": &id }).await;
            removed.map_err(|error| errors::unavailable(TENANTS, "delete_one", &error))?;
            return Err(conflict);
        }
        Ok(())
    }

    /// Inserts the enrolments whose schedule is new.
    ///
    /// The schedule is what marks an enrolment as stored, so it is written last: contacts,
    /// then follow-ups, then schedules, each with one unordered `insert` in which a duplicate
    /// key means "already there". A stop part-way leaves some contacts or follow-ups without
    /// their schedule; the upload was not acknowledged, and uploading it again finds the
    /// schedule missing and writes the rest (the follow-ups already there stay as they are).
    /// Two concurrent uploads of one schedule both write its follow-ups' same `_id`s, and only
    /// one of them counts the schedule as inserted.
    pub(super) async fn write_enrolments(
        &self,
        tenant: TenantId,
        enrolments: Vec<Enrolment>,
    ) -> Result<InsertReport, StoreError> {
        for enrolment in &enrolments {
            check_enrolment(tenant, enrolment)?;
        }
        self.check_not_deleted(tenant).await?;

        // Schedules stored before this call are duplicates; nothing of them is written.
        let ids: Vec<String> = enrolments
            .iter()
            .map(|enrolment| documents::tenant_record(tenant, &enrolment.schedule.id.0))
            .collect();
        let existing = self.existing_ids(SCHEDULES, ids).await?;
        let mut seen = BTreeSet::new();
        let (new, repeated): (Vec<Enrolment>, Vec<Enrolment>) =
            enrolments.into_iter().partition(|enrolment| {
                let id = documents::tenant_record(tenant, &enrolment.schedule.id.0);
                !existing.contains(&id) && seen.insert(id)
            });

        let contacts = new.iter().map(|e| documents::contact_document(&e.contact));
        self.insert_unordered(CONTACTS, contacts.collect::<Result<_, _>>()?).await?;
        let follow_ups = new.iter().flat_map(|e| &e.follow_ups).map(documents::follow_up_document);
        self.insert_unordered(FOLLOW_UPS, follow_ups.collect::<Result<_, _>>()?).await?;
        let schedules = new.iter().map(|enrolment| {
            let schedule = &enrolment.schedule;
            let id = documents::tenant_record(tenant, &schedule.id.0);
            documents::with_record(SCHEDULES, id, Document::new(), schedule)
        });
        let schedules: Vec<Document> = schedules.collect::<Result<_, _>>()?;
        let written = schedules.len() as u64;
        let raced = self.insert_unordered(SCHEDULES, schedules).await?;

        Ok(InsertReport { inserted: written - raced, duplicates: repeated.len() as u64 + raced })
    }

    /// Returns which of `ids` exist in `collection`.
    async fn existing_ids(
        &self,
        collection: &'static str,
        ids: Vec<String>,
    ) -> Result<BTreeSet<String>, StoreError> {
        if ids.is_empty() {
            return Ok(BTreeSet::new());
        }
        let filter = doc! { "_id": { "$in": ids } };
        let target = self.collection(collection);
        let find = target.find(filter).projection(doc! { "_id": 1 });
        let fail = |error| errors::unavailable(collection, "find ids", &error);
        let mut cursor = find.await.map_err(fail)?;
        let mut found = BTreeSet::new();
        while cursor.advance().await.map_err(fail)? {
            let document = cursor.deserialize_current().map_err(fail)?;
            if let Ok(id) = document.get_str("_id") {
                found.insert(id.to_owned());
            }
        }
        Ok(found)
    }

    /// Inserts documents with one unordered `insert_many`; a document whose `_id` is already
    /// there is left as it is. Returns how many were already there.
    pub(super) async fn insert_unordered(
        &self,
        collection: &'static str,
        documents: Vec<Document>,
    ) -> Result<u64, StoreError> {
        if documents.is_empty() {
            return Ok(0);
        }
        let inserted = self.collection(collection).insert_many(documents).ordered(false).await;
        match inserted {
            Ok(_) => Ok(0),
            Err(error) => Ok(errors::duplicates_of_insert(collection, error)?.len() as u64),
        }
    }

    /// Replaces follow-ups and appends attempts.
    ///
    /// Everything that can reject the call is checked first, so a rejected call writes
    /// nothing. Then the follow-ups are replaced with one `update` command, the send instants
    /// recorded, and the attempts inserted. The engine writes an attempt together with the
    /// follow-up state it led to, and a stop between the two leaves the follow-up settled
    /// without its attempt, never an attempt whose outcome the follow-up does not show.
    pub(super) async fn write_update(
        &self,
        tenant: TenantId,
        fence: u64,
        follow_ups: Vec<FollowUp>,
        attempts: Vec<Attempt>,
    ) -> Result<(), StoreError> {
        self.check_not_deleted(tenant).await?;
        self.check_fence(tenant, fence).await?;
        let follow_ups = last_of_each(follow_ups);
        self.check_update(tenant, &follow_ups, &attempts).await?;
        self.replace_follow_ups(tenant, fence, &follow_ups).await?;
        self.record_sends(&follow_ups).await?;
        let attempts = attempts.iter().map(|attempt| attempt_document(tenant, attempt));
        self.insert_unordered(ATTEMPTS, attempts.collect::<Result<_, _>>()?).await?;
        Ok(())
    }

    async fn check_update(
        &self,
        tenant: TenantId,
        follow_ups: &[FollowUp],
        attempts: &[Attempt],
    ) -> Result<(), StoreError> {
        if let Some(foreign) = follow_ups.iter().find(|follow_up| follow_up.tenant != tenant) {
            return Err(StoreError::Conflict(format!(
                "follow-up {} names tenant {}, but the update is for tenant {tenant}",
                foreign.id, foreign.tenant
            )));
        }
        let named = follow_ups.iter().map(|f| f.id).chain(attempts.iter().map(|a| a.follow_up));
        let named: BTreeMap<String, _> =
            named.map(|id| (documents::follow_up(tenant, id), id)).collect();
        let existing = self.existing_ids(FOLLOW_UPS, named.keys().cloned().collect()).await?;
        if let Some((_, missing)) = named.iter().find(|(key, _)| !existing.contains(*key)) {
            return Err(StoreError::Conflict(format!(
                "follow-up {missing} not found for tenant {tenant}"
            )));
        }

        // Appending never rewrites history: the same attempt again is a harmless repeat, but
        // a different one under the same number is a bug in the caller.
        let ids: Vec<String> =
            attempts.iter().map(|a| documents::attempt(tenant, a.follow_up, a.number)).collect();
        if ids.is_empty() {
            return Ok(());
        }
        let stored: Vec<Attempt> =
            self.find_records(ATTEMPTS, doc! { "_id": { "$in": ids } }, None).await?;
        for attempt in attempts {
            let same_number =
                |s: &&Attempt| (s.follow_up, s.number) == (attempt.follow_up, attempt.number);
            if stored.iter().find(same_number).is_some_and(|s| !same_attempt(s, attempt)) {
                return Err(StoreError::Conflict(format!(
                    "attempt {} of follow-up {} is already stored with different content",
                    attempt.number, attempt.follow_up
                )));
            }
        }
        Ok(())
    }

    /// Replaces existing follow-ups under epoch `fence`, many per `update` command. A
    /// follow-up written under a newer epoch since the check is left alone and the call is
    /// fenced; one that disappeared (a purge) is reported as a conflict.
    async fn replace_follow_ups(
        &self,
        tenant: TenantId,
        fence: u64,
        follow_ups: &[FollowUp],
    ) -> Result<(), StoreError> {
        for chunk in follow_ups.chunks(UPDATES_PER_COMMAND) {
            let mut statements = Vec::with_capacity(chunk.len());
            for follow_up in chunk {
                let document = with_fence(documents::follow_up_document(follow_up)?, fence);
                let mut filter = fence_filter(fence);
                filter.insert("_id", document.get("_id").cloned().unwrap_or(Bson::Null));
                statements.push(doc! { "q": filter, "u": document, "upsert": false });
            }
            let matched = self.run_update(FOLLOW_UPS, statements).await?;
            if matched < chunk.len() as i64 {
                self.check_fence(tenant, fence).await?;
                return Err(StoreError::Conflict(format!(
                    "{} of {} follow-ups disappeared before their update",
                    chunk.len() as i64 - matched,
                    chunk.len()
                )));
            }
        }
        Ok(())
    }

    /// Runs the `update` command with many statements and returns how many documents matched.
    ///
    /// The driver's `bulk_write` would need MongoDB 8's cross-collection command, which
    /// FerretDB does not have; this command exists on every version.
    pub(super) async fn run_update(
        &self,
        collection: &'static str,
        statements: Vec<Document>,
    ) -> Result<i64, StoreError> {
        let command = doc! { "update": collection, "updates": statements, "ordered": false };
        let reply = self.db.run_command(command).await;
        let reply = reply.map_err(|error| errors::unavailable(collection, "update", &error))?;
        if let Ok(write_errors) = reply.get_array("writeErrors")
            && let Some(first) = write_errors.first()
        {
            return Err(StoreError::Unavailable(format!(
                "mongodb: update on {collection}: {} statements failed, first: {first}",
                write_errors.len()
            )));
        }
        Ok(match reply.get("n") {
            Some(Bson::Int32(n)) => i64::from(*n),
            Some(Bson::Int64(n)) => *n,
            _ => 0,
        })
    }

    /// Records the instant of each follow-up that was sent or left in doubt. The entry's
    /// `_id` is the follow-up's, so writing a sent follow-up again keeps the first instant, as
    /// the rate limiters expect. Entries older than two days of the same tenant and channel
    /// are dropped on the way, so the collection holds about two days of sends.
    pub(super) async fn record_sends(&self, follow_ups: &[FollowUp]) -> Result<(), StoreError> {
        let sent: Vec<&FollowUp> = follow_ups.iter().filter(|f| is_maybe_sent(f.state)).collect();
        let Some(latest) = sent.iter().map(|f| f.sent_at.unwrap_or(f.updated_at)).max() else {
            return Ok(());
        };
        let entries = sent.iter().map(|follow_up| {
            let at = follow_up.sent_at.unwrap_or(follow_up.updated_at);
            doc! {
                "_id": documents::follow_up(follow_up.tenant, follow_up.id),
                "tenant": documents::tenant(follow_up.tenant),
                "channel": documents::channel_name(follow_up.channel),
                "at": documents::date(at),
                "sub_ms": documents::sub_millis(at),
            }
        });
        self.insert_unordered(SENDS, entries.collect()).await?;

        let tenant = documents::tenant(sent[0].tenant);
        let stale =
            doc! { "tenant": tenant, "at": { "$lt": documents::date(latest - SENDS_KEPT_FOR) } };
        let dropped = self.collection(SENDS).delete_many(stale).await;
        dropped.map_err(|error| errors::unavailable(SENDS, "delete_many", &error))?;
        Ok(())
    }
}

/// Keeps the last of the follow-ups named more than once, in their first position: the
/// statements of an unordered `update` may apply in any order.
fn last_of_each(follow_ups: Vec<FollowUp>) -> Vec<FollowUp> {
    let mut position = BTreeMap::new();
    let mut unique: Vec<FollowUp> = Vec::with_capacity(follow_ups.len());
    for follow_up in follow_ups {
        match position.get(&follow_up.id) {
            Some(&index) => unique[index] = follow_up,
            None => {
                position.insert(follow_up.id, unique.len());
                unique.push(follow_up);
            }
        }
    }
    unique
}

/// The document of an attempt: its record, its finish date and whether it keeps a message, by
/// which the retention sweep finds expired messages.
pub(super) fn attempt_document(
    tenant: TenantId,
    attempt: &Attempt,
) -> Result<Document, StoreError> {
    let id = documents::attempt(tenant, attempt.follow_up, attempt.number);
    let fields = doc! {
        "finished": documents::date(attempt.finished_at),
        "has_message": attempt.message.is_some(),
    };
    documents::with_record(ATTEMPTS, id, fields, attempt)
}
