//! How records become MongoDB documents: their `_id`s, the typed fields that queries and
//! indexes use, and the record itself under `record`.
//!
//! Every `_id` of a tenant's record is a string that starts with the tenant id and a colon, so
//! tenant scoping is part of the key and a tenant's records form one `_id` range. UUIDs are
//! written hyphenated in lowercase and numbers zero-padded, so that string order is the id
//! order the Store trait pages by.
//!
//! The record is kept whole, instants as RFC 3339 strings with nanoseconds, so a round trip
//! returns exactly what was written. The fields that queries compare or sort (due and send
//! instants) are BSON dates beside it, which keep milliseconds; reads that compare them to a
//! caller's instant re-check the exact instant from the record.

use chrono::{DateTime, Timelike as _, Utc};
use followup_core::domain::{Channel, Contact, FollowUp, Provider};
use followup_core::ids::{FollowUpId, TenantId};
use followup_core::store::StoreError;
use mongodb::bson::{self, Bson, Document, doc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// Field holding the record as the domain type serialises it.
pub(super) const RECORD: &str = "record";

pub(super) fn tenant(tenant: TenantId) -> String {
    tenant.0.to_string()
}

/// `_id` of a record owned by a tenant and named by a UUID: sequences, contacts, schedules.
pub(super) fn tenant_record(tenant: TenantId, id: &Uuid) -> String {
    format!("{}:{id}", tenant.0)
}

pub(super) fn connection(tenant: TenantId, provider: Provider) -> String {
    format!("{}:{}", tenant.0, provider_name(provider))
}

/// `_id` of a follow-up, also the `_id` of its entry in `sends` and the prefix of its attempts.
pub(super) fn follow_up(tenant: TenantId, id: FollowUpId) -> String {
    format!("{}:{}:{:05}", tenant.0, id.schedule.0, id.step)
}

pub(super) fn attempt(tenant: TenantId, id: FollowUpId, number: u32) -> String {
    format!("{}:{number:010}", follow_up(tenant, id))
}

/// Filter on `_id` matching every key that starts with `prefix` followed by a colon: the
/// keys from `prefix:` up to, not including, `prefix;` (the character after the colon).
pub(super) fn under(prefix: &str) -> Document {
    doc! { "$gte": format!("{prefix}:"), "$lt": format!("{prefix};") }
}

/// Filter on `_id` matching the keys under `prefix` that sort after `after` (or all of them).
pub(super) fn under_after(prefix: &str, after: Option<String>) -> Document {
    let mut range = under(prefix);
    if let Some(after) = after {
        range.insert("$gt", after);
    }
    range
}

pub(super) fn channel_name(channel: Channel) -> &'static str {
    match channel {
        Channel::Email => "email",
        Channel::Sms => "sms",
        Channel::Call => "call",
    }
}

fn provider_name(provider: Provider) -> &'static str {
    match provider {
        Provider::Gmail => "gmail",
        Provider::Outlook => "outlook",
        Provider::Twilio => "twilio",
    }
}

/// The instant as a BSON date, which keeps milliseconds: the part below is dropped, so the
/// date is at or before the instant.
pub(super) fn date(instant: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(instant.timestamp_millis())
}

/// Nanoseconds of the instant below its millisecond, stored beside a [`date`] where the exact
/// instant must come back from the index alone.
pub(super) fn sub_millis(instant: DateTime<Utc>) -> i32 {
    i32::try_from(instant.nanosecond() % 1_000_000).unwrap_or_default()
}

/// Rebuilds an instant from a [`date`] and its [`sub_millis`].
pub(super) fn instant(date: bson::DateTime, sub_millis: i32) -> Option<DateTime<Utc>> {
    let millis = DateTime::from_timestamp_millis(date.timestamp_millis())?;
    Some(millis + chrono::Duration::nanoseconds(i64::from(sub_millis)))
}

/// Builds a document: `_id`, the query fields, and the record.
pub(super) fn with_record<T: Serialize>(
    collection: &'static str,
    id: String,
    fields: Document,
    record: &T,
) -> Result<Document, StoreError> {
    let record = bson::to_bson(record).map_err(|error| {
        StoreError::Unavailable(format!("mongodb: encoding a {collection} record: {error}"))
    })?;
    let mut document = doc! { "_id": id };
    document.extend(fields);
    document.insert(RECORD, record);
    Ok(document)
}

/// Reads the record back out of a document.
pub(super) fn record<T: DeserializeOwned>(
    collection: &'static str,
    mut document: Document,
) -> Result<T, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { table: collection, reason };
    let record = document.remove(RECORD).ok_or_else(|| corrupt("no record field".to_owned()))?;
    bson::from_bson(record).map_err(|error| corrupt(error.to_string()))
}

/// The document of a follow-up: its record, and the tenant, channel, state and due date that
/// the due index orders by.
pub(super) fn follow_up_document(follow_up: &FollowUp) -> Result<Document, StoreError> {
    let fields = doc! {
        "tenant": tenant(follow_up.tenant),
        "channel": channel_name(follow_up.channel),
        "state": follow_up.state.as_str(),
        "due": date(follow_up.due_at),
    };
    let id = self::follow_up(follow_up.tenant, follow_up.id);
    with_record("follow_ups", id, fields, follow_up)
}

/// The document of a contact. Custom fields are stored as a list of `{name, value}` pairs,
/// because their names come from upload headers and may contain `.` or start with `$`, which
/// MongoDB-compatible servers refuse in field names.
pub(super) fn contact_document(contact: &Contact) -> Result<Document, StoreError> {
    let id = tenant_record(contact.tenant, &contact.id.0);
    let mut document = with_record("contacts", id, Document::new(), contact)?;
    let custom: Vec<Bson> = contact
        .custom
        .iter()
        .map(|(name, value)| Bson::Document(doc! { "name": name, "value": value }))
        .collect();
    if let Ok(record) = document.get_document_mut(RECORD) {
        record.insert("custom", custom);
    }
    Ok(document)
}

/// Reads a contact written by [`contact_document`].
pub(super) fn contact(mut document: Document) -> Result<Contact, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { table: "contacts", reason };
    let record = document
        .get_document_mut(RECORD)
        .map_err(|error| corrupt(format!("record field: {error}")))?;
    let pairs = record.get_array("custom").map_err(|error| corrupt(format!("custom: {error}")))?;
    let mut custom = Document::new();
    for pair in pairs {
        let pair = pair.as_document().ok_or_else(|| corrupt("custom pair".to_owned()))?;
        let name = pair.get_str("name").map_err(|error| corrupt(error.to_string()))?;
        let value = pair.get_str("value").map_err(|error| corrupt(error.to_string()))?;
        custom.insert(name, value);
    }
    record.insert("custom", custom);
    self::record("contacts", document)
}
