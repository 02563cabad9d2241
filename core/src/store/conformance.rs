//! The Store conformance suite: one check per part of the [`Store`] contract, shared by every
//! implementation.
//!
//! Each check is a plain async fn that panics on the first broken expectation, so it runs under
//! any executor and core stays free of runtime crates. Every check creates its own tenants with
//! random ids, which lets the suite run on a store that already contains other data.
//!
//! Fixture instants are whole seconds, because stores may keep less than nanosecond precision
//! (BSON dates keep milliseconds) and records are compared for equality after a round trip.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, TimeZone, Utc};
use uuid::Uuid;

use super::{
    AuditEntry, Enrolment, FollowUpCounts, InsertReport, RecoveryReport, Store, StoreError,
    WrappedDataKey,
};
use crate::domain::{
    Attempt, Channel, Connection, Contact, Credentials, FollowUp, FollowUpState, LimitOverrides,
    Provider, Schedule, SendWindow, Sequence, Step, Tenant, TenantDeletion,
};
use crate::ids::{
    ConnectionId, ContactId, DeletionId, FollowUpId, ScheduleId, SequenceId, TenantId,
};

mod leases;
mod lifecycle;
mod metering;
mod stripe;
mod suppressions;
mod usage;
pub use leases::{
    fenced_writes_are_rejected, heartbeats_round_trip, lease_excludes_until_expiry,
    recovery_runs_under_new_epoch, release_lets_another_node_take, renewal_only_by_live_owner,
};
pub use lifecycle::{
    deletion_revokes_key_and_blocks_writes, export_pages_cover_each_record_once,
    purge_removes_only_the_deleted_tenant, sent_messages_expire_before_cutoff,
};
pub use metering::meter_batches_insert_once_and_mark;
pub use stripe::{stripe_accounts_round_trip, stripe_customer_has_one_tenant};
pub use suppressions::{
    suppression_pages_and_removal, suppressions_are_purged, suppressions_by_key_and_tenant,
};
pub use usage::{
    concurrent_reservations_never_overspend, usage_counters_are_separate,
    usage_reservations_stop_at_limit,
};

/// Runs every check of the suite, one after the other.
pub async fn run_all(store: &dyn Store) {
    tenants_round_trip(store).await;
    connections_one_per_provider(store).await;
    sequences_round_trip(store).await;
    enrolments_are_idempotent(store).await;
    reads_are_tenant_scoped(store).await;
    due_follow_ups_filter_and_order(store).await;
    updates_maintain_due_index(store).await;
    update_follow_ups_is_atomic(store).await;
    attempts_in_order(store).await;
    recovery_settles_interrupted(store).await;
    counts_per_tenant_and_overall(store).await;
    tally_groups_every_tenant_in_one_pass(store).await;
    connection_statuses_carry_no_secrets(store).await;
    audit_log_pages_newest_first(store).await;
    deletion_forgets_audit_notes(store).await;
    pages_cover_every_follow_up_once(store).await;
    sends_are_indexed_by_instant(store).await;
    export_pages_cover_each_record_once(store).await;
    deletion_revokes_key_and_blocks_writes(store).await;
    purge_removes_only_the_deleted_tenant(store).await;
    sent_messages_expire_before_cutoff(store).await;
    data_keys_round_trip(store).await;
    lease_excludes_until_expiry(store).await;
    renewal_only_by_live_owner(store).await;
    release_lets_another_node_take(store).await;
    fenced_writes_are_rejected(store).await;
    recovery_runs_under_new_epoch(store).await;
    heartbeats_round_trip(store).await;
    usage_reservations_stop_at_limit(store).await;
    usage_counters_are_separate(store).await;
    concurrent_reservations_never_overspend(store).await;
    concurrent_reservations_never_overspend(store).await;
    stripe_accounts_round_trip(store).await;
    stripe_customer_has_one_tenant(store).await;
    meter_batches_insert_once_and_mark(store).await;
    suppressions_by_key_and_tenant(store).await;
    suppression_pages_and_removal(store).await;
    suppressions_are_purged(store).await;
}

/// Checks put, get, listing, replacement and deletion of wrapped data keys, each scoped to its
/// tenant.
pub async fn data_keys_round_trip(store: &dyn Store) {
    let tenant = put_new_tenant(store).await;
    let other = put_new_tenant(store).await;
    let key = new_data_key(tenant.id, "0a0b0c0d");
    let other_key = new_data_key(other.id, "0a0b0c0d");
    store.put_data_key(key.clone()).await.expect("put_data_key");
    store.put_data_key(other_key.clone()).await.expect("put_data_key other");

    let stored = store.data_key(tenant.id).await.expect("data_key");
    assert_eq!(stored.as_ref(), Some(&key), "data key by tenant");
    let unknown = store.data_key(TenantId::generate()).await.expect("data_key");
    assert_eq!(unknown, None, "data key of an unknown tenant");
    let listed = store.data_keys().await.expect("data_keys");
    assert!(listed.contains(&key), "data_keys() lists the key");
    assert!(listed.contains(&other_key), "data_keys() lists the other tenant's key");

    // A rotation re-wraps the same data key under another master key: a replacement.
    let rewrapped =
        WrappedDataKey { master_key_id: "1a1b1c1d".to_owned(), ..new_data_key(tenant.id, "") };
    store.put_data_key(rewrapped.clone()).await.expect("put_data_key replacing");
    let stored = store.data_key(tenant.id).await.expect("data_key");
    assert_eq!(stored.as_ref(), Some(&rewrapped), "replaced data key");
    let listed = store.data_keys().await.expect("data_keys");
    let copies = listed.iter().filter(|listed| listed.tenant == tenant.id).count();
    assert_eq!(copies, 1, "data_keys() lists a replaced key once");

    assert!(store.delete_data_key(tenant.id).await.expect("delete_data_key"), "deleted");
    assert_eq!(store.data_key(tenant.id).await.expect("data_key"), None, "gone after delete");
    assert!(!store.delete_data_key(tenant.id).await.expect("delete again"), "nothing to delete");
    let kept = store.data_key(other.id).await.expect("data_key other");
    assert_eq!(kept.as_ref(), Some(&other_key), "another tenant's key survives the delete");
}

/// Checks that `sends_since` returns the instants of sent and in-doubt follow-ups of one tenant
/// and channel, oldest first, from `since` on, each once even when rewritten.
pub async fn sends_are_indexed_by_instant(store: &dyn Store) {
    let tenant = put_new_tenant(store).await;
    let other = put_new_tenant(store).await;
    let sequence = new_sequence(tenant.id, &[Channel::Email, Channel::Sms]);
    let other_sequence = new_sequence(other.id, &[Channel::Email]);
    let enrolments: Vec<Enrolment> = (0..4)
        .map(|n| new_enrolment(tenant.id, &sequence, &format!("sent-{n}"), base_time()))
        .collect();
    store.insert_enrolments(tenant.id, enrolments.clone()).await.expect("insert_enrolments");
    let foreign = new_enrolment(other.id, &other_sequence, "sent-x", base_time());
    store.insert_enrolments(other.id, vec![foreign.clone()]).await.expect("insert_enrolments");

    let at = |minutes: i64| base_time() + chrono::Duration::minutes(minutes);
    let settle = |follow_up: &FollowUp, state: FollowUpState, minutes: i64| {
        let mut follow_up = follow_up.clone();
        follow_up.state = state;
        follow_up.updated_at = at(minutes);
        follow_up.sent_at = (state == FollowUpState::Sent).then(|| at(minutes));
        follow_up
    };
    let email = |enrolment: &Enrolment| enrolment.follow_ups[0].clone();
    let updates = vec![
        settle(&email(&enrolments[0]), FollowUpState::Sent, 30),
        settle(&email(&enrolments[1]), FollowUpState::Sent, 10),
        settle(&email(&enrolments[2]), FollowUpState::InDoubt, 20),
        settle(&email(&enrolments[3]), FollowUpState::Failed, 25),
        // The SMS step of the first enrolment: another channel.
        settle(&enrolments[0].follow_ups[1], FollowUpState::Sent, 15),
    ];
    store.update_follow_ups(tenant.id, 0, updates.clone(), Vec::new()).await.expect("update");
    // Writing a sent follow-up again (as a later update of its record would) adds nothing.
    store
        .update_follow_ups(tenant.id, 0, vec![updates[0].clone()], Vec::new())
        .await
        .expect("again");
    let foreign_sent = settle(&email(&foreign), FollowUpState::Sent, 12);
    store.update_follow_ups(other.id, 0, vec![foreign_sent], Vec::new()).await.expect("update");

    let all = store.sends_since(tenant.id, Channel::Email, at(0)).await.expect("sends_since");
    assert_eq!(all, vec![at(10), at(20), at(30)], "sent and in-doubt email, oldest first");
    let later = store.sends_since(tenant.id, Channel::Email, at(20)).await.expect("sends_since");
    assert_eq!(later, vec![at(20), at(30)], "from `since` on, inclusive");
    let sms = store.sends_since(tenant.id, Channel::Sms, at(0)).await.expect("sends_since");
    assert_eq!(sms, vec![at(15)]);
    let calls = store.sends_since(tenant.id, Channel::Call, at(0)).await.expect("sends_since");
    assert!(calls.is_empty());
}

/// Checks that paging with `follow_ups_page` visits every follow-up of one tenant exactly
/// once, in id order, and nothing of another tenant.
pub async fn pages_cover_every_follow_up_once(store: &dyn Store) {
    let tenant = put_new_tenant(store).await;
    let other = put_new_tenant(store).await;
    let sequence = new_sequence(tenant.id, &[Channel::Email, Channel::Sms]);
    let other_sequence = new_sequence(other.id, &[Channel::Email]);
    let enrolments: Vec<Enrolment> = (0..7)
        .map(|n| new_enrolment(tenant.id, &sequence, &format!("page-{n}"), base_time()))
        .collect();
    store.insert_enrolments(tenant.id, enrolments).await.expect("insert_enrolments");
    let foreign = new_enrolment(other.id, &other_sequence, "page-x", base_time());
    store.insert_enrolments(other.id, vec![foreign]).await.expect("insert_enrolments");

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.follow_ups_page(tenant.id, after, 3).await.expect("follow_ups_page");
        assert!(page.len() <= 3, "a page holds at most the limit");
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        seen.extend(page.into_iter().map(|follow_up| (follow_up.tenant, follow_up.id)));
    }

    assert_eq!(seen.len(), 14, "7 schedules of 2 steps each");
    assert!(seen.iter().all(|(owner, _)| *owner == tenant.id), "only the tenant's own");
    let ids: Vec<FollowUpId> = seen.iter().map(|(_, id)| *id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted, "pages come in id order without repeats");
}

/// Checks put, get, lookup by API key hash and listing of tenants, and that replacing a tenant
/// retires its old API key hash.
pub async fn tenants_round_trip(store: &dyn Store) {
    let tenant = new_tenant();
    store.put_tenant(tenant.clone()).await.expect("put_tenant");

    let stored = store.tenant(tenant.id).await.expect("tenant");
    assert_eq!(stored.as_ref(), Some(&tenant), "tenant by id");
    let by_key = store.tenant_by_api_key(tenant.api_key_sha256.clone()).await;
    assert_eq!(by_key.expect("tenant_by_api_key").as_ref(), Some(&tenant), "tenant by key");
    let listed = store.tenants().await.expect("tenants");
    assert!(listed.contains(&tenant), "tenants() lists the new tenant");

    let unknown = store.tenant(TenantId::generate()).await.expect("tenant");
    assert_eq!(unknown, None, "unknown tenant id");
    let unknown = store.tenant_by_api_key(random_sha256_hex()).await;
    assert_eq!(unknown.expect("tenant_by_api_key"), None, "unknown API key hash");

    // A key rotation replaces the whole record, and the old hash must stop authenticating.
    let rotated = Tenant {
        name: format!("{} renamed", tenant.name),
        api_key_sha256: random_sha256_hex(),
        ..tenant.clone()
    };
    store.put_tenant(rotated.clone()).await.expect("put_tenant replacing");
    let stored = store.tenant(tenant.id).await.expect("tenant");
    assert_eq!(stored.as_ref(), Some(&rotated), "replaced tenant by id");
    let by_new_key = store.tenant_by_api_key(rotated.api_key_sha256.clone()).await;
    assert_eq!(by_new_key.expect("tenant_by_api_key").as_ref(), Some(&rotated), "new key");
    let by_old_key = store.tenant_by_api_key(tenant.api_key_sha256.clone()).await;
    assert_eq!(by_old_key.expect("tenant_by_api_key"), None, "old key after rotation");
    let listed = store.tenants().await.expect("tenants");
    let copies = listed.iter().filter(|listed| listed.id == tenant.id).count();
    assert_eq!(copies, 1, "tenants() lists a replaced tenant once");
    assert!(listed.contains(&rotated), "tenants() lists the replacement");
}

/// Checks that a tenant has at most one connection per provider: a second put for the same
/// provider replaces the first.
pub async fn connections_one_per_provider(store: &dyn Store) {
    let tenant = put_new_tenant(store).await;
    let gmail = new_connection(tenant.id, Provider::Gmail, "sales@example.com");
    let twilio = new_connection(tenant.id, Provider::Twilio, "+14155550100");
    store.put_connection(gmail).await.expect("put_connection gmail");
    store.put_connection(twilio.clone()).await.expect("put_connection twilio");

    let replacement = new_connection(tenant.id, Provider::Gmail, "support@example.com");
    store.put_connection(replacement.clone()).await.expect("put_connection replacing");

    let mut stored = store.connections(tenant.id).await.expect("connections");
    stored.sort_by_key(|connection| connection.provider);
    assert_eq!(stored.len(), 2, "one connection per provider");
    assert_eq!(stored[0], replacement, "the second gmail connection replaced the first");
    assert_eq!(stored[1], twilio, "the twilio connection is untouched");
}

/// Checks put, get and listing of sequences, and that a put with a known id replaces.
pub async fn sequences_round_trip(store: &dyn Store) {
    let tenant = put_new_tenant(store).await;
    let first = new_sequence(tenant.id, &[Channel::Email, Channel::Sms]);
    let second = new_sequence(tenant.id, &[Channel::Call]);
    store.put_sequence(first.clone()).await.expect("put_sequence");
    store.put_sequence(second.clone()).await.expect("put_sequence");

    let stored = store.sequence(tenant.id, first.id).await.expect("sequence");
    assert_eq!(stored.as_ref(), Some(&first), "sequence by id");
    let unknown = store.sequence(tenant.id, SequenceId::generate()).await.expect("sequence");
    assert_eq!(unknown, None, "unknown sequence id");

    let renamed = Sequence { name: "renamed".to_owned(), ..first.clone() };
    store.put_sequence(renamed.clone()).await.expect("put_sequence replacing");
    let stored = store.sequence(tenant.id, first.id).await.expect("sequence");
    assert_eq!(stored.as_ref(), Some(&renamed), "replaced sequence");

    let listed = store.sequences(tenant.id).await.expect("sequences");
    assert_eq!(listed.len(), 2, "sequences() after a replacement");
    assert!(listed.contains(&renamed), "sequences() lists the replacement");
    assert!(listed.contains(&second), "sequences() lists the other sequence");
}

/// Checks that enrolments are stored whole, that re-inserting a schedule id is a counted
/// duplicate that changes nothing, and that an existing contact keeps its stored fields.
pub async fn enrolments_are_idempotent(store: &dyn Store) {
    let tenant = put_new_tenant(store).await;
    let sequence = new_sequence(tenant.id, &[Channel::Email, Channel::Sms, Channel::Call]);
    let enrolments: Vec<Enrolment> = ["a", "b", "c"]
        .into_iter()
        .map(|key| new_enrolment(tenant.id, &sequence, key, base_time()))
        .collect();

    let report = store.insert_enrolments(tenant.id, enrolments.clone()).await;
    let report = report.expect("insert_enrolments");
    assert_eq!(report, InsertReport { inserted: 3, duplicates: 0 }, "first insert");
    for enrolment in &enrolments {
        assert_enrolment_stored(store, enrolment).await;
    }

    // The same schedule ids with different content are duplicates, and nothing of them lands.
    let altered: Vec<Enrolment> = enrolments.iter().map(altered_copy).collect();
    let report = store.insert_enrolments(tenant.id, altered.clone()).await;
    let report = report.expect("insert_enrolments again");
    assert_eq!(report, InsertReport { inserted: 0, duplicates: 3 }, "re-insert");
    for enrolment in &enrolments {
        assert_enrolment_stored(store, enrolment).await;
    }

    // A batch mixing a known schedule with a new one counts each.
    let new = new_enrolment(tenant.id, &sequence, "d", base_time());
    let mixed = vec![altered[0].clone(), new.clone()];
    let report = store.insert_enrolments(tenant.id, mixed).await.expect("insert mixed");
    assert_eq!(report, InsertReport { inserted: 1, duplicates: 1 }, "mixed batch");
    assert_enrolment_stored(store, &enrolments[0]).await;
    assert_enrolment_stored(store, &new).await;

    // The same schedule id twice in one call lands once.
    let repeated = new_enrolment(tenant.id, &sequence, "e", base_time());
    let twice = vec![repeated.clone(), altered_copy(&repeated)];
    let report = store.insert_enrolments(tenant.id, twice).await.expect("insert repeated");
    assert_eq!(report, InsertReport { inserted: 1, duplicates: 1 }, "repeat within a call");
    assert_enrolment_stored(store, &repeated).await;

    // A new schedule for a known contact lands, and the contact keeps what was stored first.
    let other_sequence = new_sequence(tenant.id, &[Channel::Sms]);
    let mut second_enrolment = new_enrolment(tenant.id, &other_sequence, "a", base_time());
    second_enrolment.contact.first_name = Some("Changed".to_owned());
    assert_eq!(second_enrolment.contact.id, enrolments[0].contact.id, "fixture reuses contact");
    let report = store.insert_enrolments(tenant.id, vec![second_enrolment.clone()]).await;
    let report = report.expect("insert for a known contact");
    assert_eq!(report, InsertReport { inserted: 1, duplicates: 0 }, "new schedule, old contact");
    let schedule = store.schedule(tenant.id, second_enrolment.schedule.id).await;
    let schedule = schedule.expect("schedule");
    assert_eq!(schedule.as_ref(), Some(&second_enrolment.schedule), "schedule stored");
    let contacts = store.contacts(tenant.id, vec![enrolments[0].contact.id]).await;
    let contacts = contacts.expect("contacts");
    assert_eq!(contacts, vec![enrolments[0].contact.clone()], "contact keeps stored fields");

    // Contacts are returned for known ids only.
    let ids = vec![enrolments[1].contact.id, ContactId::generate(), enrolments[2].contact.id];
    let mut contacts = store.contacts(tenant.id, ids).await.expect("contacts");
    contacts.sort_by_key(|contact| contact.id);
    let mut expected = vec![enrolments[1].contact.clone(), enrolments[2].contact.clone()];
    expected.sort_by_key(|contact| contact.id);
    assert_eq!(contacts, expected, "contacts() skips unknown ids");
}

/// Checks that every read on behalf of another tenant finds nothing, and that writes naming
/// another tenant's records fail and change nothing.
pub async fn reads_are_tenant_scoped(store: &dyn Store) {
    let owner = put_new_tenant(store).await;
    let stranger = put_new_tenant(store).await;
    let sequence = new_sequence(owner.id, &[Channel::Email, Channel::Sms]);
    store.put_sequence(sequence.clone()).await.expect("put_sequence");
    let connection = new_connection(owner.id, Provider::Gmail, "owner@example.com");
    store.put_connection(connection).await.expect("put_connection");
    let enrolment = new_enrolment(owner.id, &sequence, "a", base_time());
    store.insert_enrolments(owner.id, vec![enrolment.clone()]).await.expect("insert");
    let follow_up = enrolment.follow_ups[0].clone();
    let attempt = new_attempt(follow_up.id, 1, FollowUpState::Retry);
    let retried = FollowUp { state: FollowUpState::Retry, attempts: 1, ..follow_up.clone() };
    let update = store.update_follow_ups(owner.id, 0, vec![retried.clone()], vec![attempt]).await;
    update.expect("update_follow_ups by the owner");

    let other = stranger.id;
    let sequence_read = store.sequence(other, sequence.id).await.expect("sequence");
    assert_eq!(sequence_read, None, "sequence of another tenant");
    let sequences = store.sequences(other).await.expect("sequences");
    assert!(sequences.is_empty(), "sequences of another tenant");
    let connections = store.connections(other).await.expect("connections");
    assert!(connections.is_empty(), "connections of another tenant");
    let contacts = store.contacts(other, vec![enrolment.contact.id]).await.expect("contacts");
    assert!(contacts.is_empty(), "contacts of another tenant");
    let schedule = store.schedule(other, enrolment.schedule.id).await.expect("schedule");
    assert_eq!(schedule, None, "schedule of another tenant");
    let follow_ups = store.follow_ups_of_schedule(other, enrolment.schedule.id).await;
    assert!(follow_ups.expect("follow_ups_of_schedule").is_empty(), "follow-ups of schedule");
    let read = store.follow_up(other, follow_up.id).await.expect("follow_up");
    assert_eq!(read, None, "follow-up of another tenant");
    let far_future = base_time() + Duration::days(3650);
    for channel in Channel::ALL {
        let due = store.due_follow_ups(other, channel, far_future, 100).await;
        assert!(due.expect("due_follow_ups").is_empty(), "due follow-ups on {channel}");
        let next = store.next_due_at(other, channel).await.expect("next_due_at");
        assert_eq!(next, None, "next due instant on {channel}");
    }
    let attempts = store.attempts(other, follow_up.id).await.expect("attempts");
    assert!(attempts.is_empty(), "attempts of another tenant's follow-up");
    let counts = store.count_follow_ups(Some(other)).await.expect("count_follow_ups");
    assert!(non_zero(counts).is_empty(), "counts of another tenant");

    // Writes through the wrong tenant fail whole and leave the owner's records alone.
    let hijacked = FollowUp { state: FollowUpState::Cancelled, ..retried.clone() };
    let result = store.update_follow_ups(other, 0, vec![hijacked], Vec::new()).await;
    assert!(result.is_err(), "update of another tenant's follow-up must fail");
    let result = store
        .update_follow_ups(
            other,
            0,
            Vec::new(),
            vec![new_attempt(follow_up.id, 2, FollowUpState::Sent)],
        )
        .await;
    assert!(result.is_err(), "attempt for another tenant's follow-up must fail");
    let result = store.insert_enrolments(other, vec![enrolment.clone()]).await;
    assert!(result.is_err(), "enrolment whose records name another tenant must fail");

    let read = store.follow_up(owner.id, follow_up.id).await.expect("follow_up");
    assert_eq!(read, Some(retried), "owner's follow-up after foreign writes");
    let attempts = store.attempts(owner.id, follow_up.id).await.expect("attempts");
    assert_eq!(attempts.len(), 1, "owner's attempts after foreign writes");
    let schedule = store.schedule(other, enrolment.schedule.id).await.expect("schedule");
    assert_eq!(schedule, None, "rejected enrolment left nothing under the other tenant");
}

/// Checks that due follow-ups are pending or retry ones of one channel, due at or before
/// `until`, earliest first and at most `limit`, and that `next_due_at` agrees.
pub async fn due_follow_ups_filter_and_order(store: &dyn Store) {
    let tenant = put_new_tenant(store).await;
    let base = base_time();
    let hours = |n: i64| base + Duration::hours(n);

    // Two schedules whose due instants interleave, so the order cannot come from the key.
    let first = enrolment_with(
        tenant.id,
        "first",
        &[
            (Channel::Email, FollowUpState::Pending, hours(3)),
            (Channel::Email, FollowUpState::Sent, hours(0)),
            (Channel::Sms, FollowUpState::Pending, hours(1)),
            (Channel::Email, FollowUpState::Pending, hours(10)),
        ],
    );
    let second = enrolment_with(
        tenant.id,
        "second",
        &[
            (Channel::Email, FollowUpState::Retry, hours(1)),
            (Channel::Email, FollowUpState::Claimed, hours(0)),
            (Channel::Email, FollowUpState::Pending, hours(2)),
            (Channel::Email, FollowUpState::Dead, hours(1)),
        ],
    );
    let report = store.insert_enrolments(tenant.id, vec![first.clone(), second.clone()]).await;
    assert_eq!(report.expect("insert").inserted, 2, "fixture inserted");

    let due = store.due_follow_ups(tenant.id, Channel::Email, hours(5), 100).await;
    let due = due.expect("due_follow_ups");
    let expected = vec![
        second.follow_ups[0].clone(),
        second.follow_ups[2].clone(),
        first.follow_ups[0].clone(),
    ];
    assert_eq!(due, expected, "pending and retry email follow-ups, earliest first");

    let limited = store.due_follow_ups(tenant.id, Channel::Email, hours(5), 2).await;
    assert_eq!(limited.expect("due_follow_ups"), expected[..2].to_vec(), "limit");
    let at_bound = store.due_follow_ups(tenant.id, Channel::Email, hours(2), 100).await;
    assert_eq!(at_bound.expect("due_follow_ups"), expected[..2].to_vec(), "until is inclusive");
    let none_yet = store.due_follow_ups(tenant.id, Channel::Email, hours(0), 100).await;
    assert!(none_yet.expect("due_follow_ups").is_empty(), "nothing due before the first");
    let sms = store.due_follow_ups(tenant.id, Channel::Sms, hours(5), 100).await;
    assert_eq!(sms.expect("due_follow_ups"), vec![first.follow_ups[2].clone()], "sms");
    let calls = store.due_follow_ups(tenant.id, Channel::Call, hours(5), 100).await;
    assert!(calls.expect("due_follow_ups").is_empty(), "no calls");

    let next_email = store.next_due_at(tenant.id, Channel::Email).await.expect("next_due_at");
    assert_eq!(next_email, Some(hours(1)), "next email due instant");
    let next_sms = store.next_due_at(tenant.id, Channel::Sms).await.expect("next_due_at");
    assert_eq!(next_sms, Some(hours(1)), "next sms due instant");
    let next_call = store.next_due_at(tenant.id, Channel::Call).await.expect("next_due_at");
    assert_eq!(next_call, None, "no call due");
}

/// Checks that an update moves a follow-up out of the due set when it is claimed, keeps it out
/// while it is sending, and brings it back when it returns to retry with a new due instant.
pub async fn updates_maintain_due_index(store: &dyn Store) {
    let tenant = put_new_tenant(store).await;
    let base = base_time();
    let enrolment = enrolment_with(tenant.id, "a", &[(Channel::Sms, FollowUpState::Pending, base)]);
    store.insert_enrolments(tenant.id, vec![enrolment.clone()]).await.expect("insert");
    let pending = enrolment.follow_ups[0].clone();
    let due_by = |until: DateTime<Utc>| store.due_follow_ups(tenant.id, Channel::Sms, until, 10);

    let due = due_by(base).await.expect("due_follow_ups");
    assert_eq!(due, vec![pending.clone()], "pending follow-up is due");

    let claimed = FollowUp { state: FollowUpState::Claimed, ..pending.clone() };
    store.update_follow_ups(tenant.id, 0, vec![claimed.clone()], Vec::new()).await.expect("claim");
    assert!(due_by(base).await.expect("due_follow_ups").is_empty(), "claimed is not due");
    let next = store.next_due_at(tenant.id, Channel::Sms).await.expect("next_due_at");
    assert_eq!(next, None, "claimed has no next due instant");
    let read = store.follow_up(tenant.id, pending.id).await.expect("follow_up");
    assert_eq!(read, Some(claimed.clone()), "claimed follow-up stored");

    let sending = FollowUp { state: FollowUpState::Sending, ..claimed };
    store.update_follow_ups(tenant.id, 0, vec![sending.clone()], Vec::new()).await.expect("send");
    assert!(due_by(base).await.expect("due_follow_ups").is_empty(), "sending is not due");

    let retry_at = base + Duration::hours(2);
    let retry = FollowUp {
        state: FollowUpState::Retry,
        due_at: retry_at,
        attempts: 1,
        reason: Some("provider answered 503".to_owned()),
        ..sending
    };
    store.update_follow_ups(tenant.id, 0, vec![retry.clone()], Vec::new()).await.expect("retry");
    let early = due_by(base + Duration::hours(1)).await.expect("due_follow_ups");
    assert!(early.is_empty(), "retry is not due before its new due instant");
    let due = due_by(retry_at).await.expect("due_follow_ups");
    assert_eq!(due, vec![retry.clone()], "retry is due at its new due instant");
    let next = store.next_due_at(tenant.id, Channel::Sms).await.expect("next_due_at");
    assert_eq!(next, Some(retry_at), "next due instant follows the retry");

    let sent = FollowUp {
        state: FollowUpState::Sent,
        attempts: 2,
        reason: None,
        provider_message_id: Some("SM0001".to_owned()),
        sent_at: Some(retry_at),
        ..retry
    };
    store.update_follow_ups(tenant.id, 0, vec![sent.clone()], Vec::new()).await.expect("sent");
    let due = due_by(retry_at + Duration::days(1)).await.expect("due_follow_ups");
    assert!(due.is_empty(), "sent is not due");
    let read = store.follow_up(tenant.id, pending.id).await.expect("follow_up");
    assert_eq!(read, Some(sent), "sent follow-up stored");
}

/// Checks that an update naming an unknown follow-up fails and applies none of its changes.
pub async fn update_follow_ups_is_atomic(store: &dyn Store) {
    let tenant = put_new_tenant(store).await;
    let enrolment =
        enrolment_with(tenant.id, "a", &[(Channel::Email, FollowUpState::Pending, base_time())]);
    store.insert_enrolments(tenant.id, vec![enrolment.clone()]).await.expect("insert");
    let known = enrolment.follow_ups[0].clone();
    let unknown =
        FollowUp { id: FollowUpId { schedule: ScheduleId::generate(), step: 0 }, ..known.clone() };

    let claimed = FollowUp { state: FollowUpState::Claimed, ..known.clone() };
    let attempt = new_attempt(known.id, 1, FollowUpState::Sent);
    let result = store.update_follow_ups(tenant.id, 0, vec![claimed, unknown], vec![attempt]).await;
    assert!(result.is_err(), "update naming an unknown follow-up must fail");

    let read = store.follow_up(tenant.id, known.id).await.expect("follow_up");
    assert_eq!(read, Some(known.clone()), "known follow-up unchanged by the failed update");
    let attempts = store.attempts(tenant.id, known.id).await.expect("attempts");
    assert!(attempts.is_empty(), "failed update appended no attempt");
    let due = store.due_follow_ups(tenant.id, Channel::Email, base_time(), 10).await;
    assert_eq!(due.expect("due_follow_ups"), vec![known], "still due");
}

/// Checks that attempts are appended and returned oldest first.
pub async fn attempts_in_order(store: &dyn Store) {
    let tenant = put_new_tenant(store).await;
    let enrolment = enrolment_with(
        tenant.id,
        "a",
        &[
            (Channel::Email, FollowUpState::Pending, base_time()),
            (Channel::Email, FollowUpState::Pending, base_time() + Duration::days(1)),
        ],
    );
    store.insert_enrolments(tenant.id, vec![enrolment.clone()]).await.expect("insert");
    let follow_up = enrolment.follow_ups[0].clone();
    let sibling = enrolment.follow_ups[1].clone();

    let first = new_attempt(follow_up.id, 1, FollowUpState::Retry);
    let retry = FollowUp { state: FollowUpState::Retry, attempts: 1, ..follow_up.clone() };
    let update = store.update_follow_ups(tenant.id, 0, vec![retry], vec![first.clone()]).await;
    update.expect("first attempt");

    // Two attempts in one call, then one more alone, still read back in order.
    let second = new_attempt(follow_up.id, 2, FollowUpState::Retry);
    let third = new_attempt(follow_up.id, 3, FollowUpState::Retry);
    let update =
        store.update_follow_ups(tenant.id, 0, Vec::new(), vec![second.clone(), third.clone()]);
    update.await.expect("second and third attempts");
    let fourth = new_attempt(follow_up.id, 4, FollowUpState::Sent);
    let sent = FollowUp { state: FollowUpState::Sent, attempts: 4, ..follow_up.clone() };
    let update = store.update_follow_ups(tenant.id, 0, vec![sent], vec![fourth.clone()]).await;
    update.expect("fourth attempt");

    let attempts = store.attempts(tenant.id, follow_up.id).await.expect("attempts");
    assert_eq!(attempts, vec![first, second, third, fourth], "attempts oldest first");
    let none = store.attempts(tenant.id, sibling.id).await.expect("attempts");
    assert!(none.is_empty(), "a follow-up without attempts");
}

/// Checks that recovery returns a tenant's claimed follow-ups to pending (and to the due set),
/// turns its sending ones in-doubt, leaves every other state and every other tenant alone, and
/// counts what it changed.
pub async fn recovery_settles_interrupted(store: &dyn Store) {
    let base = base_time();
    let first = put_new_tenant(store).await;
    let second = put_new_tenant(store).await;
    let states_first = [
        FollowUpState::Claimed,
        FollowUpState::Claimed,
        FollowUpState::Sending,
        FollowUpState::Pending,
        FollowUpState::Sent,
        FollowUpState::Retry,
    ];
    let states_second = [
        FollowUpState::Claimed,
        FollowUpState::Sending,
        FollowUpState::Sending,
        FollowUpState::InDoubt,
    ];
    let before_first = put_follow_ups_in_states(store, first.id, &states_first, base).await;
    let before_second = put_follow_ups_in_states(store, second.id, &states_second, base).await;

    let report = store.recover_interrupted(first.id, 0).await.expect("recover_interrupted");
    let expected = RecoveryReport { released_claims: 2, in_doubt: 1 };
    assert_eq!(report, expected, "recovery counts of the first tenant");
    for old in &before_second {
        let new = store.follow_up(second.id, old.id).await.expect("follow_up");
        let state = new.map(|new| new.state);
        assert_eq!(state, Some(old.state), "another tenant's follow-up left alone");
    }
    let report = store.recover_interrupted(second.id, 0).await.expect("recover_interrupted");
    let expected = RecoveryReport { released_claims: 1, in_doubt: 2 };
    assert_eq!(report, expected, "recovery counts of the second tenant");

    for (tenant, before) in [(first.id, &before_first), (second.id, &before_second)] {
        for old in before {
            let new = store.follow_up(tenant, old.id).await.expect("follow_up");
            let new = new.expect("a recovered follow-up still exists");
            let expected_state = match old.state {
                FollowUpState::Claimed => FollowUpState::Pending,
                FollowUpState::Sending => FollowUpState::InDoubt,
                other => other,
            };
            assert_eq!(new.state, expected_state, "state after recovery, was {}", old.state);
            assert_eq!(new.due_at, old.due_at, "due instant kept, state was {}", old.state);
            assert_eq!(new.attempts, old.attempts, "attempts kept, state was {}", old.state);
            if old.state == FollowUpState::Sending {
                let reason = new.reason.as_deref();
                assert_eq!(reason, Some(super::IN_DOUBT_AFTER_STOP), "in-doubt reason recorded");
            }
        }
    }

    // Released claims are due again: the first tenant's due set is its two released claims plus
    // its pending and retry follow-ups.
    let due = store.due_follow_ups(first.id, Channel::Email, base + Duration::days(1), 100).await;
    let due = due.expect("due_follow_ups");
    assert_eq!(due.len(), 4, "released claims join pending and retry in the due set");
    assert!(due.iter().all(|follow_up| follow_up.state.is_due_kind()), "due set states");

    let again = store.recover_interrupted(first.id, 0).await.expect("recover_interrupted again");
    assert_eq!(again, RecoveryReport::default(), "a second recovery finds nothing");
}

/// Checks counts by channel and state for one tenant (exact) and for all tenants (at least the
/// sum of the tenants created here, because the store may contain others).
pub async fn counts_per_tenant_and_overall(store: &dyn Store) {
    let base = base_time();
    let first = put_new_tenant(store).await;
    let second = put_new_tenant(store).await;
    let enrolment = enrolment_with(
        first.id,
        "a",
        &[
            (Channel::Email, FollowUpState::Pending, base),
            (Channel::Email, FollowUpState::Pending, base),
            (Channel::Sms, FollowUpState::Pending, base),
            (Channel::Call, FollowUpState::Pending, base),
        ],
    );
    store.insert_enrolments(first.id, vec![enrolment.clone()]).await.expect("insert");
    let sent = FollowUp { state: FollowUpState::Sent, ..enrolment.follow_ups[2].clone() };
    store.update_follow_ups(first.id, 0, vec![sent], Vec::new()).await.expect("update");
    let other = enrolment_with(second.id, "a", &[(Channel::Email, FollowUpState::Pending, base)]);
    store.insert_enrolments(second.id, vec![other]).await.expect("insert");

    let counts_first = store.count_follow_ups(Some(first.id)).await.expect("count_follow_ups");
    let expected_first = FollowUpCounts::from([
        ((Channel::Email, FollowUpState::Pending), 2),
        ((Channel::Sms, FollowUpState::Sent), 1),
        ((Channel::Call, FollowUpState::Pending), 1),
    ]);
    assert_eq!(non_zero(counts_first), expected_first, "counts of the first tenant");
    let counts_second = store.count_follow_ups(Some(second.id)).await.expect("count_follow_ups");
    let expected_second = FollowUpCounts::from([((Channel::Email, FollowUpState::Pending), 1)]);
    assert_eq!(non_zero(counts_second), expected_second, "counts of the second tenant");

    let overall = store.count_follow_ups(None).await.expect("count_follow_ups overall");
    let keys: BTreeSet<_> = expected_first.keys().chain(expected_second.keys()).collect();
    for key in keys {
        let ours = expected_first.get(key).unwrap_or(&0) + expected_second.get(key).unwrap_or(&0);
        let total = overall.get(key).copied().unwrap_or(0);
        assert!(total >= ours, "overall count of {key:?} is {total}, below this check's {ours}");
    }
}

/// Checks the one-pass tally: exact groups for the tenants created here, due counts only for
/// pending and retry follow-ups due at the instant given, and agreement with
/// `count_follow_ups`.
pub async fn tally_groups_every_tenant_in_one_pass(store: &dyn Store) {
    let base = base_time();
    let first = put_new_tenant(store).await;
    let second = put_new_tenant(store).await;
    let later = base + Duration::hours(2);
    let enrolment = enrolment_with(
        first.id,
        "a",
        &[
            (Channel::Email, FollowUpState::Pending, base),
            (Channel::Email, FollowUpState::Pending, later),
            (Channel::Email, FollowUpState::Retry, base),
            (Channel::Sms, FollowUpState::Pending, base),
            (Channel::Call, FollowUpState::Pending, base),
        ],
    );
    store.insert_enrolments(first.id, vec![enrolment.clone()]).await.expect("insert");
    let sent = FollowUp { state: FollowUpState::Sent, ..enrolment.follow_ups[4].clone() };
    store.update_follow_ups(first.id, 0, vec![sent], Vec::new()).await.expect("update");
    let other = enrolment_with(second.id, "a", &[(Channel::Sms, FollowUpState::Dead, base)]);
    store.insert_enrolments(second.id, vec![other]).await.expect("insert");

    let now = base + Duration::hours(1);
    let tally = store.tally_follow_ups(now).await.expect("tally_follow_ups");
    let mut ours: Vec<(TenantId, Channel, FollowUpState, u64, u64)> = tally
        .iter()
        .filter(|group| group.tenant == first.id || group.tenant == second.id)
        .map(|group| (group.tenant, group.channel, group.state, group.count, group.due))
        .collect();
    ours.sort();
    let mut expected = vec![
        (first.id, Channel::Email, FollowUpState::Pending, 2, 1),
        (first.id, Channel::Email, FollowUpState::Retry, 1, 1),
        (first.id, Channel::Sms, FollowUpState::Pending, 1, 1),
        (first.id, Channel::Call, FollowUpState::Sent, 1, 0),
        (second.id, Channel::Sms, FollowUpState::Dead, 1, 0),
    ];
    expected.sort();
    assert_eq!(ours, expected, "tally of the two tenants at {now}");
    assert!(tally.iter().all(|group| group.count > 0), "a tally has no empty group");

    let mut keys = BTreeSet::new();
    for group in &tally {
        assert!(
            keys.insert((group.tenant, group.channel, group.state)),
            "group {:?} appears twice",
            (group.tenant, group.channel, group.state)
        );
    }
    let before = store.tally_follow_ups(base - Duration::seconds(1)).await.expect("tally");
    let due_before: u64 = before.iter().filter(|g| g.tenant == first.id).map(|g| g.due).sum();
    assert_eq!(due_before, 0, "nothing is due before the earliest due instant");
}

/// Checks that connection statuses list every connection with its pause reason, and nothing
/// of its sender.
pub async fn connection_statuses_carry_no_secrets(store: &dyn Store) {
    let tenant = put_new_tenant(store).await;
    let gmail = new_connection(tenant.id, Provider::Gmail, "status@example.com");
    let paused = Connection {
        paused_reason: Some("invalid_grant: the token was revoked".into()),
        ..new_connection(tenant.id, Provider::Twilio, "+15005550006")
    };
    store.put_connection(gmail).await.expect("put_connection");
    store.put_connection(paused).await.expect("put_connection");
    let mut statuses: Vec<_> = store
        .connection_statuses()
        .await
        .expect("connection_statuses")
        .into_iter()
        .filter(|status| status.tenant == tenant.id)
        .map(|status| (status.provider, status.paused_reason))
        .collect();
    statuses.sort_by_key(|(provider, _)| provider.as_str());
    assert_eq!(
        statuses,
        vec![
            (Provider::Gmail, None),
            (Provider::Twilio, Some("invalid_grant: the token was revoked".to_owned())),
        ],
        "statuses of the tenant's two connections"
    );
}

fn audit_entry(tenant: Option<TenantId>, action: &str, note: Option<&str>) -> AuditEntry {
    AuditEntry {
        id: Uuid::now_v7().to_string(),
        at: base_time(),
        operator: "alice".to_owned(),
        action: action.to_owned(),
        target: tenant.map_or_else(|| "all".to_owned(), |t| t.to_string()),
        tenant,
        note: note.map(str::to_owned),
        affected: 3,
    }
}

/// Checks that audit entries come back whole, newest first, paged by offset, with the total
/// grown by the entries written, and that an id cannot be written twice.
pub async fn audit_log_pages_newest_first(store: &dyn Store) {
    let (before, _) = store.audit_page(0, 1).await.expect("audit_page");
    let tenant = TenantId::generate();
    let written: Vec<AuditEntry> = (0..3)
        .map(|n| audit_entry(Some(tenant), &format!("tenant.pause.{n}"), Some("ticket 42")))
        .collect();
    for entry in &written {
        store.append_audit(entry.clone()).await.expect("append_audit");
    }
    let again = store.append_audit(written[0].clone()).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "a repeated id: {again:?}");

    let (total, newest) = store.audit_page(0, 2).await.expect("audit_page");
    assert_eq!(total, before + 3, "the total counts every entry");
    assert_eq!(newest, vec![written[2].clone(), written[1].clone()], "newest first, whole");
    let (_, next) = store.audit_page(2, 1).await.expect("audit_page");
    assert_eq!(next, vec![written[0].clone()], "the offset skips the newest");
}

/// Checks that a tenant's deletion removes the notes of its audit entries, and only those.
pub async fn deletion_forgets_audit_notes(store: &dyn Store) {
    let deleted = put_new_tenant(store).await;
    let kept = put_new_tenant(store).await;
    let about_deleted = audit_entry(Some(deleted.id), "tenant.pause", Some("Acme asked"));
    let about_kept = audit_entry(Some(kept.id), "tenant.pause", Some("Other asked"));
    store.append_audit(about_deleted.clone()).await.expect("append_audit");
    store.append_audit(about_kept.clone()).await.expect("append_audit");
    let deletion = TenantDeletion {
        id: DeletionId::generate(),
        tenant: deleted.id,
        plan: deleted.plan.clone(),
        requested_at: base_time(),
        records_purged: 0,
        completed_at: None,
    };
    store.begin_tenant_deletion(deletion).await.expect("begin_tenant_deletion");

    let (_, entries) = store.audit_page(0, 1_000).await.expect("audit_page");
    let find = |id: &str| entries.iter().find(|entry| entry.id == id).cloned();
    let forgotten = AuditEntry { note: None, ..about_deleted.clone() };
    assert_eq!(find(&about_deleted.id), Some(forgotten), "the deleted tenant's note is gone");
    assert_eq!(find(&about_kept.id), Some(about_kept), "another tenant's note stays");
}

/// Asserts that the schedule, follow-ups and contact of `enrolment` are stored as given.
async fn assert_enrolment_stored(store: &dyn Store, enrolment: &Enrolment) {
    let tenant = enrolment.schedule.tenant;
    let id = enrolment.schedule.id;
    let schedule = store.schedule(tenant, id).await.expect("schedule");
    assert_eq!(schedule.as_ref(), Some(&enrolment.schedule), "schedule {id}");
    let follow_ups = store.follow_ups_of_schedule(tenant, id).await;
    let follow_ups = follow_ups.expect("follow_ups_of_schedule");
    assert_eq!(follow_ups, enrolment.follow_ups, "follow-ups of schedule {id}, by step");
    for follow_up in &enrolment.follow_ups {
        let read = store.follow_up(tenant, follow_up.id).await.expect("follow_up");
        assert_eq!(read.as_ref(), Some(follow_up), "follow-up {}", follow_up.id);
    }
    let contacts = store.contacts(tenant, vec![enrolment.contact.id]).await;
    let contacts = contacts.expect("contacts");
    assert_eq!(contacts, vec![enrolment.contact.clone()], "contact of schedule {id}");
}

/// Inserts one schedule with a follow-up per state, all on email and due at `base`, by inserting
/// them pending and updating them, the path the engine takes. Returns the follow-ups as stored.
async fn put_follow_ups_in_states(
    store: &dyn Store,
    tenant: TenantId,
    states: &[FollowUpState],
    base: DateTime<Utc>,
) -> Vec<FollowUp> {
    let steps: Vec<_> =
        states.iter().map(|_| (Channel::Email, FollowUpState::Pending, base)).collect();
    let enrolment = enrolment_with(tenant, "a", &steps);
    store.insert_enrolments(tenant, vec![enrolment.clone()]).await.expect("insert");
    let updated: Vec<FollowUp> = enrolment
        .follow_ups
        .into_iter()
        .zip(states)
        .map(|(follow_up, &state)| FollowUp { state, ..follow_up })
        .collect();
    store.update_follow_ups(tenant, 0, updated.clone(), Vec::new()).await.expect("update");
    updated
}

/// Drops zero entries, which a store may or may not report.
fn non_zero(counts: FollowUpCounts) -> FollowUpCounts {
    counts.into_iter().filter(|&(_, count)| count > 0).collect()
}

/// Returns a Monday morning in 2030, far enough ahead that no real clock makes fixtures due early.
fn base_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 7, 9, 0, 0).single().expect("a valid fixed instant")
}

fn new_data_key(tenant: TenantId, master_key_id: &str) -> WrappedDataKey {
    WrappedDataKey {
        tenant,
        version: 1,
        master_key_id: master_key_id.to_owned(),
        wrapped: format!("wrapped-{}", Uuid::new_v4().simple()),
        created_at: base_time(),
    }
}

/// Generates a random 64-character lowercase hex string, shaped like a SHA-256 digest.
fn random_sha256_hex() -> String {
    format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

fn new_tenant() -> Tenant {
    let id = TenantId::generate();
    Tenant {
        id,
        name: format!("conformance {id}"),
        default_region: "US".to_owned(),
        default_timezone: "America/New_York".to_owned(),
        plan: "starter".to_owned(),
        api_key_sha256: random_sha256_hex(),
        created_at: base_time(),
        suppression_scope: Default::default(),
        paused: None,
    }
}

async fn put_new_tenant(store: &dyn Store) -> Tenant {
    let tenant = new_tenant();
    store.put_tenant(tenant.clone()).await.expect("put_tenant");
    tenant
}

fn new_connection(tenant: TenantId, provider: Provider, sender: &str) -> Connection {
    let credentials = match provider {
        Provider::Gmail | Provider::Outlook => Credentials::OAuth {
            access_token: format!("access-{}", Uuid::new_v4()).into(),
            refresh_token: Some(format!("refresh-{}", Uuid::new_v4()).into()),
            expires_at: Some(base_time() + Duration::hours(1)),
            microsoft_tenant: None,
        },
        Provider::Twilio => Credentials::Twilio {
            account_sid: format!("AC{}", Uuid::new_v4().simple()),
            auth_token: Uuid::new_v4().simple().to_string().into(),
        },
    };
    Connection {
        id: ConnectionId::generate(),
        tenant,
        provider,
        sender: sender.to_owned(),
        credentials,
        limits: LimitOverrides { per_minute: Some(30), ..LimitOverrides::default() },
        account_kind: None,
        timezone: None,
        paused_reason: None,
    }
}

fn new_sequence(tenant: TenantId, channels: &[Channel]) -> Sequence {
    let steps = channels
        .iter()
        .map(|&channel| Step {
            channel,
            delay_seconds: 86_400,
            subject: (channel == Channel::Email).then(|| "Following up, {{first_name}}".to_owned()),
            body: "Hello {{first_name}}, any news?".to_owned(),
            html_body: None,
            max_lateness_seconds: None,
        })
        .collect();
    Sequence {
        id: SequenceId::generate(),
        tenant,
        name: "conformance sequence".to_owned(),
        steps,
        window: SendWindow::always(),
        unsubscribe_url: None,
        stale_policy: Default::default(),
        created_at: base_time(),
    }
}

fn new_contact(tenant: TenantId, key: &str) -> Contact {
    Contact {
        id: ContactId(Uuid::new_v5(&tenant.0, key.as_bytes())),
        tenant,
        external_id: Some(key.to_owned()),
        first_name: Some("Ada".to_owned()),
        last_name: Some("Lovelace".to_owned()),
        full_name: Some("Ada Lovelace".to_owned()),
        email: Some(format!("{key}@example.com")),
        phone: Some("+14155550123".to_owned()),
        timezone: "Europe/London".to_owned(),
        custom: [("company".to_owned(), "Analytical Engines".to_owned())].into(),
    }
}

/// Builds an enrolment of contact `key` in `sequence` with one pending follow-up per step, a day
/// apart from `start`.
fn new_enrolment(
    tenant: TenantId,
    sequence: &Sequence,
    key: &str,
    start: DateTime<Utc>,
) -> Enrolment {
    let steps: Vec<_> = sequence
        .steps
        .iter()
        .zip(1..)
        .map(|(step, days)| (step.channel, FollowUpState::Pending, start + Duration::days(days)))
        .collect();
    enrolment_for(tenant, sequence.id, key, &steps)
}

/// Builds an enrolment of contact `key` in a new sequence, with one follow-up per
/// `(channel, state, due_at)`.
fn enrolment_with(
    tenant: TenantId,
    key: &str,
    steps: &[(Channel, FollowUpState, DateTime<Utc>)],
) -> Enrolment {
    enrolment_for(tenant, SequenceId::generate(), key, steps)
}

fn enrolment_for(
    tenant: TenantId,
    sequence: SequenceId,
    key: &str,
    steps: &[(Channel, FollowUpState, DateTime<Utc>)],
) -> Enrolment {
    let contact = new_contact(tenant, key);
    let schedule = Schedule {
        id: ScheduleId(Uuid::new_v5(&sequence.0, format!("{tenant}:{key}").as_bytes())),
        tenant,
        sequence,
        contact: contact.id,
        start_at: base_time(),
        source_line: 2,
        created_at: base_time(),
    };
    let follow_ups = steps
        .iter()
        .zip(0u16..)
        .map(|(&(channel, state, due_at), step)| FollowUp {
            state,
            ..FollowUp::pending(&schedule, step, channel, due_at, base_time())
        })
        .collect();
    Enrolment { contact, schedule, follow_ups }
}

/// Copies `enrolment`, keeping the ids and different content everywhere else.
fn altered_copy(enrolment: &Enrolment) -> Enrolment {
    let mut altered = enrolment.clone();
    altered.contact.first_name = Some("Altered".to_owned());
    altered.schedule.source_line += 100;
    for follow_up in &mut altered.follow_ups {
        follow_up.due_at += Duration::hours(5);
        follow_up.state = FollowUpState::Cancelled;
    }
    altered
}

fn new_attempt(follow_up: FollowUpId, number: u32, result: FollowUpState) -> Attempt {
    let started_at = base_time() + Duration::minutes(i64::from(number));
    Attempt {
        follow_up,
        number,
        provider: Provider::Gmail,
        started_at,
        finished_at: started_at + Duration::seconds(1),
        result,
        detail: Some(format!("attempt {number}")),
        message: None,
    }
}
