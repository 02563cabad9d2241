//! Tenant leases, node heartbeats and fencing in the MongoDB store.
//!
//! A lease is one document per (tenant, epoch) in `leases`, its `_id` made of both, so taking
//! the next epoch is an insert that exactly one of several racing nodes wins: the others get
//! `E11000 duplicate key`. That holds on FerretDB's SQLite backend too, whose inserts against a
//! unique index are atomic while its updates are not. Renewal and release update only the
//! owner's own epoch document, and a renewal that finds a newer epoch after its update counts
//! as lost.
//!
//! Fencing has two parts. A follow-up write first checks that no newer epoch than its own
//! exists. Because that check and the write are separate operations, each follow-up document
//! also records the epoch it was last written under (`fence`), and every fenced write matches
//! only documents whose `fence` is at most its own: a stale owner whose check passed just
//! before a takeover still cannot overwrite what the new owner wrote. Taking a tenant raises
//! the `fence` of all its open follow-ups to the new epoch, so that this holds for the
//! follow-ups the new owner has not written yet as well.

use chrono::{DateTime, Duration, Utc};
use followup_core::domain::{FollowUp, FollowUpState};
use followup_core::ids::TenantId;
use followup_core::store::lease::{Lease, NodeHeartbeat};
use followup_core::store::{IN_DOUBT_AFTER_STOP, RecoveryReport, StoreError};
use mongodb::bson::{Bson, Document, doc};

use super::collections::{FOLLOW_UPS, HEARTBEATS, LEASES};
use super::{MongoStore, documents, errors};

/// Field of a follow-up document holding the epoch it was last written under.
pub(super) const FENCE: &str = "fence";

/// `_id` of a lease document: the tenant, then the epoch zero-padded so that string order is
/// epoch order.
fn lease_id(tenant: TenantId, epoch: u64) -> String {
    format!("{}:{epoch:020}", documents::tenant(tenant))
}

fn lease_document(lease: &Lease) -> Result<Document, StoreError> {
    let fields = doc! {
        "tenant": documents::tenant(lease.tenant),
        "epoch": i64::try_from(lease.epoch).unwrap_or(i64::MAX),
        "owner": &lease.owner,
        "expires": documents::date(lease.expires_at),
    };
    documents::with_record(LEASES, lease_id(lease.tenant, lease.epoch), fields, lease)
}

/// Filter matching the follow-up documents a write under epoch `fence` may change: those last
/// written under an epoch up to `fence`, or never written under a lease.
pub(super) fn fence_filter(fence: u64) -> Document {
    let fence = i64::try_from(fence).unwrap_or(i64::MAX);
    doc! { "$or": [ { FENCE: { "$lte": fence } }, { FENCE: { "$exists": false } } ] }
}

/// Adds the writer's epoch to a follow-up document.
pub(super) fn with_fence(mut document: Document, fence: u64) -> Document {
    document.insert(FENCE, i64::try_from(fence).unwrap_or(i64::MAX));
    document
}

impl MongoStore {
    /// Returns the newest lease of `tenant`.
    pub(super) async fn newest_lease(&self, tenant: TenantId) -> Result<Option<Lease>, StoreError> {
        let filter = doc! { "_id": documents::under(&documents::tenant(tenant)) };
        let target = self.collection(LEASES);
        let found = target.find_one(filter).sort(doc! { "_id": -1 }).await;
        let found = found.map_err(|error| errors::unavailable(LEASES, "find_one", &error))?;
        found.map(|document| documents::record(LEASES, document)).transpose()
    }

    /// Rejects a write under epoch `fence` when the tenant has a newer lease.
    pub(super) async fn check_fence(&self, tenant: TenantId, fence: u64) -> Result<(), StoreError> {
        match self.newest_lease(tenant).await? {
            Some(lease) if lease.epoch > fence => {
                Err(StoreError::Fenced { tenant, fence, current: lease.epoch })
            }
            _ => Ok(()),
        }
    }

    pub(super) async fn insert_lease(
        &self,
        tenant: TenantId,
        node: String,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let newest = self.newest_lease(tenant).await?;
        if newest.as_ref().is_some_and(|lease| !lease.may_be_taken_by(&node, now)) {
            return Ok(None);
        }
        let epoch = newest.as_ref().map_or(1, |lease| lease.epoch + 1);
        let lease = Lease { tenant, epoch, owner: node, expires_at: now + ttl };
        match self.collection(LEASES).insert_one(lease_document(&lease)?).await {
            Ok(_) => {}
            Err(error) if errors::is_duplicate_key(&error) => return Ok(None),
            Err(error) => return Err(errors::unavailable(LEASES, "insert_one", &error)),
        }

        // Epochs before the previous one are never read again: the newest decides.
        if let Some(previous) = newest {
            let old = doc! { "tenant": documents::tenant(tenant), "epoch": { "$lt": i64::try_from(previous.epoch).unwrap_or(i64::MAX) } };
            let removed = self.collection(LEASES).delete_many(old).await;
            removed.map_err(|error| errors::unavailable(LEASES, "delete_many", &error))?;
        }
        Ok(Some(lease))
    }

    /// Extends the owner's own epoch document, if it has not expired at `now`, then checks that
    /// no newer epoch appeared meanwhile.
    pub(super) async fn extend_lease(
        &self,
        lease: Lease,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let renewed = Lease { expires_at: now + ttl, ..lease };
        let filter = doc! {
            "_id": lease_id(renewed.tenant, renewed.epoch),
            "owner": &renewed.owner,
            "expires": { "$gt": documents::date(now) },
        };
        let replaced = self.collection(LEASES).replace_one(filter, lease_document(&renewed)?).await;
        let replaced =
            replaced.map_err(|error| errors::unavailable(LEASES, "replace_one", &error))?;
        if replaced.matched_count == 0 {
            return Ok(None);
        }
        match self.newest_lease(renewed.tenant).await? {
            Some(newest) if newest.epoch > renewed.epoch => Ok(None),
            _ => Ok(Some(renewed)),
        }
    }

    /// Moves the owner's own epoch document's expiry to the Unix epoch.
    pub(super) async fn end_lease(&self, lease: Lease) -> Result<(), StoreError> {
        let filter = doc! { "_id": lease_id(lease.tenant, lease.epoch), "owner": &lease.owner };
        let ended = Lease { expires_at: DateTime::<Utc>::UNIX_EPOCH, ..lease };
        let replaced = self.collection(LEASES).replace_one(filter, lease_document(&ended)?).await;
        replaced.map_err(|error| errors::unavailable(LEASES, "replace_one", &error))?;
        Ok(())
    }

    /// Returns the newest lease of every tenant, from the documents in `_id` order, where a
    /// tenant's epochs follow each other.
    pub(super) async fn read_leases(&self) -> Result<Vec<Lease>, StoreError> {
        let all: Vec<Lease> = self.find_records(LEASES, Document::new(), None).await?;
        let mut newest: Vec<Lease> = Vec::new();
        for lease in all {
            match newest.last_mut() {
                Some(last) if last.tenant == lease.tenant => *last = lease,
                _ => newest.push(lease),
            }
        }
        Ok(newest)
    }

    pub(super) async fn write_heartbeat(&self, heartbeat: NodeHeartbeat) -> Result<(), StoreError> {
        let fields = doc! { "expires": documents::date(heartbeat.expires_at) };
        let id = heartbeat.node.clone();
        let document = documents::with_record(HEARTBEATS, id, fields, &heartbeat)?;
        self.replace(HEARTBEATS, document).await
    }

    /// Returns the tenant's claimed follow-ups to pending and turns its sending ones in-doubt,
    /// under epoch `fence`. Each is replaced only if its state is still the one read and no
    /// newer epoch wrote it.
    pub(super) async fn write_recovery(
        &self,
        tenant: TenantId,
        fence: u64,
    ) -> Result<RecoveryReport, StoreError> {
        self.check_fence(tenant, fence).await?;
        self.raise_fence(tenant, fence).await?;
        let states = [FollowUpState::Claimed, FollowUpState::Sending].map(FollowUpState::as_str);
        let filter =
            doc! { "tenant": documents::tenant(tenant), "state": { "$in": states.to_vec() } };
        let interrupted: Vec<FollowUp> = self.find_records(FOLLOW_UPS, filter, None).await?;

        let mut report = RecoveryReport::default();
        let mut statements = Vec::with_capacity(interrupted.len());
        let mut settled = Vec::new();
        for previous in interrupted {
            let mut follow_up = previous.clone();
            if previous.state == FollowUpState::Claimed {
                report.released_claims += 1;
                follow_up.state = FollowUpState::Pending;
            } else {
                report.in_doubt += 1;
                follow_up.state = FollowUpState::InDoubt;
                follow_up.reason = Some(IN_DOUBT_AFTER_STOP.to_owned());
            }
            let document = with_fence(documents::follow_up_document(&follow_up)?, fence);
            let id = document.get("_id").cloned().unwrap_or(Bson::Null);
            let mut filter = fence_filter(fence);
            filter.insert("_id", id);
            filter.insert("state", previous.state.as_str());
            statements.push(doc! { "q": filter, "u": document, "upsert": false });
            if follow_up.state == FollowUpState::InDoubt {
                settled.push(follow_up);
            }
        }
        for chunk in statements.chunks(super::write::UPDATES_PER_COMMAND) {
            self.run_update(FOLLOW_UPS, chunk.to_vec()).await?;
        }
        self.record_sends(&settled).await?;
        Ok(report)
    }

    /// Writes epoch `fence` into every follow-up of `tenant` that a dispatcher may still
    /// change (pending, retry, held, claimed, sending) and that an older epoch wrote last.
    ///
    /// A write of the previous owner whose fence check passed just before this lease was
    /// taken can reach the server after recovery has run. Without this, its filter (`fence`
    /// at most the old epoch) would still match a pending follow-up that nobody had written
    /// since, and a late claim or `sending` would stick, since no round touches in-flight
    /// follow-ups. Raised first, the late write matches nothing and is reported fenced, and a
    /// write that landed before it is found by the recovery that follows. This costs one
    /// update of the tenant's open follow-ups per takeover. On a server with atomic
    /// single-document updates (MongoDB) that closes the race; FerretDB's SQLite backend
    /// reads and then writes each document, so there it only narrows it.
    async fn raise_fence(&self, tenant: TenantId, fence: u64) -> Result<(), StoreError> {
        let open = [
            FollowUpState::Pending,
            FollowUpState::Retry,
            FollowUpState::Held,
            FollowUpState::Claimed,
            FollowUpState::Sending,
        ]
        .map(FollowUpState::as_str);
        let epoch = i64::try_from(fence).unwrap_or(i64::MAX);
        let filter = doc! {
            "tenant": documents::tenant(tenant),
            "state": { "$in": open.to_vec() },
            "$or": [ { FENCE: { "$lt": epoch } }, { FENCE: { "$exists": false } } ],
        };
        let update = doc! { "$set": { FENCE: epoch } };
        let raised = self.collection(FOLLOW_UPS).update_many(filter, update).await;
        raised.map_err(|error| errors::unavailable(FOLLOW_UPS, "update_many", &error))?;
        Ok(())
    }
}
