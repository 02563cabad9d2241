//! Checks of the end of a record's life: paged reads for export, a tenant's deletion and
//! purge, and the expiry of sent messages.

use chrono::Duration;

use super::{base_time, new_attempt, new_connection, new_enrolment, new_sequence, put_new_tenant};
use crate::domain::{
    Attempt, BillingRecord, Channel, FollowUp, FollowUpState, Provider, SentMessage, Tenant,
    TenantDeletion,
};
use crate::ids::{DeletionId, TenantId};
use crate::store::{Enrolment, Store};

/// Checks that paging through contacts, schedules and attempts visits each record of one
/// tenant once, in order, and nothing of another tenant.
pub async fn export_pages_cover_each_record_once(store: &dyn Store) {
    let tenant = put_new_tenant(store).await;
    let other = put_new_tenant(store).await;
    let enrolments = put_enrolments_with_attempts(store, &tenant, 7).await;
    put_enrolments_with_attempts(store, &other, 2).await;

    let mut contacts = Vec::new();
    let mut after = None;
    loop {
        let page = store.contacts_page(tenant.id, after, 3).await.expect("contacts_page");
        assert!(page.len() <= 3, "a contacts page holds at most the limit");
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        contacts.extend(page);
    }
    let mut expected: Vec<_> = enrolments.iter().map(|e| e.contact.clone()).collect();
    expected.sort_by_key(|contact| contact.id);
    assert_eq!(contacts, expected, "every contact once, in id order");

    let mut schedules = Vec::new();
    let mut after = None;
    loop {
        let page = store.schedules_page(tenant.id, after, 2).await.expect("schedules_page");
        assert!(page.len() <= 2, "a schedules page holds at most the limit");
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        schedules.extend(page);
    }
    let mut expected: Vec<_> = enrolments.iter().map(|e| e.schedule.clone()).collect();
    expected.sort_by_key(|schedule| schedule.id);
    assert_eq!(schedules, expected, "every schedule once, in id order");

    let attempts = all_attempts(store, tenant.id, 4).await;
    assert_eq!(attempts.len(), 14, "two attempts on each of 7 follow-ups");
    let order: Vec<_> = attempts.iter().map(|a| (a.follow_up, a.number)).collect();
    let mut sorted = order.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(order, sorted, "attempts come by follow-up and number, without repeats");
    let own: Vec<_> = enrolments.iter().map(|e| e.follow_ups[0].id).collect();
    assert!(attempts.iter().all(|a| own.contains(&a.follow_up)), "only the tenant's attempts");
}

/// Checks that beginning a deletion removes the tenant and its API key at once, keeps a
/// marker, rejects writes for the tenant, and rejects a second deletion.
pub async fn deletion_revokes_key_and_blocks_writes(store: &dyn Store) {
    let tenant = put_new_tenant(store).await;
    let deletion = new_deletion(&tenant);
    store.begin_tenant_deletion(deletion.clone()).await.expect("begin_tenant_deletion");

    let by_key = store.tenant_by_api_key(tenant.api_key_sha256.clone()).await.expect("lookup");
    assert!(by_key.is_none(), "the API key no longer finds the tenant");
    assert!(store.tenant(tenant.id).await.expect("tenant").is_none(), "the tenant record is gone");
    let listed = store.tenants().await.expect("tenants");
    assert!(listed.iter().all(|t| t.id != tenant.id), "the tenant is no longer listed");
    let markers = store.tenant_deletions().await.expect("tenant_deletions");
    assert!(markers.contains(&deletion), "the marker is stored as given");

    let sequence = new_sequence(tenant.id, &[Channel::Email]);
    let enrolment = new_enrolment(tenant.id, &sequence, "late", base_time());
    let late_insert = store.insert_enrolments(tenant.id, vec![enrolment]).await;
    assert!(late_insert.is_err(), "an upload after the deletion began is rejected");
    let late_sequence = store.put_sequence(sequence).await;
    assert!(late_sequence.is_err(), "a sequence after the deletion began is rejected");
    let late_connection =
        store.put_connection(new_connection(tenant.id, Provider::Gmail, "x@example.com")).await;
    assert!(late_connection.is_err(), "a connection after the deletion began is rejected");
    let revived = store.put_tenant(tenant.clone()).await;
    assert!(revived.is_err(), "a deleted tenant cannot be written back");
    let again = store.begin_tenant_deletion(new_deletion(&tenant)).await;
    assert!(again.is_err(), "a second deletion of the same tenant is a conflict");

    let unknown = store.begin_tenant_deletion(new_deletion(&super::new_tenant())).await;
    assert!(unknown.is_err(), "deleting a tenant that does not exist is a conflict");
}

/// Checks that purging in bounded chunks removes every record of the deleted tenant, counts
/// them on the marker, completes it, keeps the billing record, and leaves another tenant whole.
pub async fn purge_removes_only_the_deleted_tenant(store: &dyn Store) {
    let doomed = put_new_tenant(store).await;
    let kept = put_new_tenant(store).await;
    for tenant in [&doomed, &kept] {
        let connection = new_connection(tenant.id, Provider::Gmail, "sales@example.com");
        store.put_connection(connection).await.expect("put_connection");
    }
    put_enrolments_with_attempts(store, &doomed, 5).await;
    let kept_enrolments = put_enrolments_with_attempts(store, &kept, 3).await;
    let refused = store.purge_tenant_chunk(doomed.id, 10, base_time()).await;
    assert!(refused.is_err(), "a tenant without a deletion marker is not purged");

    let deletion = new_deletion(&doomed);
    store.begin_tenant_deletion(deletion.clone()).await.expect("begin_tenant_deletion");
    let billing = BillingRecord {
        tenant: doomed.id,
        plan: doomed.plan.clone(),
        sends: [("2030-01".to_owned(), [(Channel::Email, 5)].into())].into(),
        deleted_at: deletion.requested_at,
    };
    store.put_billing_record(billing.clone()).await.expect("put_billing_record");

    let finished_at = base_time() + Duration::days(2);
    let mut total = 0;
    for round in 0.. {
        assert!(round < 1_000, "the purge finishes");
        let progress = store.purge_tenant_chunk(doomed.id, 4, finished_at).await.expect("purge");
        assert!(progress.removed <= 4, "a chunk removes at most its limit");
        total += progress.removed;
        if progress.done {
            break;
        }
    }
    assert!(total > 0, "the purge removed records");

    assert_tenant_empty(store, doomed.id).await;
    let markers = store.tenant_deletions().await.expect("tenant_deletions");
    let marker = markers.iter().find(|m| m.id == deletion.id).expect("the marker stays");
    assert_eq!(marker.records_purged, total, "the marker counts every purged record");
    assert_eq!(marker.completed_at, Some(finished_at), "the marker is completed");
    let stored = store.billing_record(doomed.id).await.expect("billing_record");
    assert_eq!(stored, Some(billing), "the billing record outlives the purge");

    assert!(store.tenant(kept.id).await.expect("tenant").is_some(), "the other tenant stays");
    assert_eq!(store.connections(kept.id).await.expect("connections").len(), 1);
    let kept_contacts = store.contacts_page(kept.id, None, 100).await.expect("contacts_page");
    assert_eq!(kept_contacts.len(), kept_enrolments.len(), "the other tenant keeps its contacts");
    assert_eq!(all_attempts(store, kept.id, 100).await.len(), 6, "and its attempts");
}

/// Checks that expiring sent messages removes the message of attempts finished before the
/// cutoff, keeps newer ones and keeps every attempt itself.
pub async fn sent_messages_expire_before_cutoff(store: &dyn Store) {
    let tenant = put_new_tenant(store).await;
    let enrolments = put_enrolments_with_attempts(store, &tenant, 3).await;
    let before = all_attempts(store, tenant.id, 100).await;
    assert!(before.iter().all(|a| a.message.is_some()), "every fixture attempt has a message");

    // Attempt 1 of each follow-up finished at base + 1 min + 1 s, attempt 2 a minute later.
    let cutoff = base_time() + Duration::minutes(2);
    loop {
        let removed = store.purge_sent_messages(cutoff, 2).await.expect("purge_sent_messages");
        assert!(removed <= 2, "a sweep removes at most its limit");
        if removed == 0 {
            break;
        }
    }

    let after = all_attempts(store, tenant.id, 100).await;
    assert_eq!(after.len(), before.len(), "the attempts themselves stay");
    for (old, new) in before.iter().zip(&after) {
        if old.finished_at < cutoff {
            assert_eq!(new.message, None, "a message older than the cutoff is removed");
            assert_eq!(new, &Attempt { message: None, ..old.clone() }, "nothing else changes");
        } else {
            assert_eq!(new, old, "a message newer than the cutoff is kept");
        }
    }
    let kept = after.iter().filter(|a| a.message.is_some()).count();
    assert_eq!(kept, enrolments.len(), "the second attempt of each follow-up keeps its message");
}

/// Inserts `count` enrolments of one email step for `tenant`, each follow-up sent on its second
/// attempt, both attempts with a message. Returns the enrolments.
async fn put_enrolments_with_attempts(
    store: &dyn Store,
    tenant: &Tenant,
    count: usize,
) -> Vec<Enrolment> {
    let sequence = new_sequence(tenant.id, &[Channel::Email]);
    store.put_sequence(sequence.clone()).await.expect("put_sequence");
    let enrolments: Vec<Enrolment> = (0..count)
        .map(|n| new_enrolment(tenant.id, &sequence, &format!("export-{n}"), base_time()))
        .collect();
    store.insert_enrolments(tenant.id, enrolments.clone()).await.expect("insert_enrolments");
    for enrolment in &enrolments {
        let follow_up = &enrolment.follow_ups[0];
        let attempts: Vec<Attempt> = [(1, FollowUpState::Retry), (2, FollowUpState::Sent)]
            .into_iter()
            .map(|(number, result)| Attempt {
                message: Some(SentMessage {
                    subject: Some(format!("Following up, attempt {number}")),
                    body: format!("Hello {}", enrolment.contact.id),
                }),
                ..new_attempt(follow_up.id, number, result)
            })
            .collect();
        let sent = FollowUp {
            state: FollowUpState::Sent,
            attempts: 2,
            sent_at: Some(attempts[1].finished_at),
            ..follow_up.clone()
        };
        store.update_follow_ups(tenant.id, 0, vec![sent], attempts).await.expect("update");
    }
    enrolments
}

async fn all_attempts(store: &dyn Store, tenant: TenantId, page_size: usize) -> Vec<Attempt> {
    let mut attempts = Vec::new();
    let mut after = None;
    loop {
        let page = store.attempts_page(tenant, after, page_size).await.expect("attempts_page");
        assert!(page.len() <= page_size, "an attempts page holds at most the limit");
        let Some(last) = page.last() else { break };
        after = Some((last.follow_up, last.number));
        attempts.extend(page);
    }
    attempts
}

/// Asserts that every read of `tenant` comes back empty.
async fn assert_tenant_empty(store: &dyn Store, tenant: TenantId) {
    let far = base_time() + Duration::days(365);
    assert!(store.connections(tenant).await.expect("connections").is_empty(), "connections");
    assert!(store.sequences(tenant).await.expect("sequences").is_empty(), "sequences");
    assert!(store.contacts_page(tenant, None, 10).await.expect("contacts").is_empty(), "contacts");
    let schedules = store.schedules_page(tenant, None, 10).await.expect("schedules");
    assert!(schedules.is_empty(), "schedules");
    let follow_ups = store.follow_ups_page(tenant, None, 10).await.expect("follow-ups");
    assert!(follow_ups.is_empty(), "follow-ups");
    assert!(all_attempts(store, tenant, 10).await.is_empty(), "attempts");
    for channel in Channel::ALL {
        let due = store.due_follow_ups(tenant, channel, far, 10).await.expect("due");
        assert!(due.is_empty(), "due index of {channel}");
        let next = store.next_due_at(tenant, channel).await.expect("next_due_at");
        assert_eq!(next, None, "next due of {channel}");
        let sends = store.sends_since(tenant, channel, base_time()).await.expect("sends_since");
        assert!(sends.is_empty(), "sent index of {channel}");
    }
    let counts = store.count_follow_ups(Some(tenant)).await.expect("count_follow_ups");
    assert!(counts.values().all(|&n| n == 0), "follow-up counts");
}

fn new_deletion(tenant: &Tenant) -> TenantDeletion {
    TenantDeletion {
        id: DeletionId::generate(),
        tenant: tenant.id,
        plan: tenant.plan.clone(),
        requested_at: base_time() + Duration::days(1),
        records_purged: 0,
        completed_at: None,
    }
}
