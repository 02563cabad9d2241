//! Conformance checks of the suppression list: keys, replacement, paging, removal, tenant
//! scoping and the purge of a deleted tenant.

use chrono::Duration;

use super::{base_time, put_new_tenant};
use crate::domain::TenantDeletion;
use crate::ids::{ContactId, DeletionId, TenantId};
use crate::store::Store;
use crate::suppression::{Suppression, SuppressionKind, SuppressionReason, key_of};

fn entry(tenant: TenantId, kind: SuppressionKind, value: &str) -> Suppression {
    Suppression::new(tenant, kind, value.to_owned(), SuppressionReason::Manual, base_time())
}

fn sorted_keys(entries: &[Suppression]) -> Vec<String> {
    let mut keys: Vec<String> = entries.iter().map(|entry| entry.key.clone()).collect();
    keys.sort();
    keys
}

/// Checks lookups by key, replacement of an entry with the same key, and that another tenant's
/// entry with the same key is neither found nor changed.
pub async fn suppressions_by_key_and_tenant(store: &dyn Store) {
    let tenant = put_new_tenant(store).await;
    let other = put_new_tenant(store).await;
    let contact = ContactId(uuid::Uuid::new_v4());
    let entries = vec![
        entry(tenant.id, SuppressionKind::Email, "ana@example.org"),
        entry(tenant.id, SuppressionKind::Domain, "example.net"),
        entry(tenant.id, SuppressionKind::Phone, "+14155550100"),
        Suppression::of_contact(tenant.id, contact, SuppressionReason::Replied, base_time()),
    ];
    store.put_suppressions(tenant.id, entries.clone()).await.expect("put_suppressions");
    let foreign = entry(other.id, SuppressionKind::Email, "ana@example.org");
    store.put_suppressions(other.id, vec![foreign.clone()]).await.expect("put other");

    let wanted = vec![
        key_of(SuppressionKind::Email, "ana@example.org"),
        key_of(SuppressionKind::Contact, &contact.to_string()),
        key_of(SuppressionKind::Email, "nobody@example.org"),
    ];
    let found = store.suppressions(tenant.id, wanted).await.expect("suppressions");
    assert_eq!(found.len(), 2, "two of three keys are suppressed: {found:?}");
    assert!(found.contains(&entries[0]), "email entry returned as written");
    assert!(found.contains(&entries[3]), "contact entry returned as written");

    // Suppressing the same address again replaces the entry.
    let again = Suppression {
        reason: SuppressionReason::Unsubscribed,
        created_at: base_time() + Duration::hours(1),
        ..entries[0].clone()
    };
    store.put_suppressions(tenant.id, vec![again.clone()]).await.expect("put again");
    let found = store.suppressions(tenant.id, vec![again.key.clone()]).await.expect("lookup");
    assert_eq!(found, vec![again.clone()], "the entry is replaced, not duplicated");

    let theirs = store.suppressions(other.id, vec![foreign.key.clone()]).await.expect("other");
    assert_eq!(theirs, vec![foreign.clone()], "the other tenant's entry is unchanged");
    let none = store.suppressions(other.id, vec![entries[1].key.clone()]).await.expect("other");
    assert!(none.is_empty(), "one tenant's entry is not found under another: {none:?}");
}

/// Checks that pages of every size return each entry of the tenant once, and
/// that removal counts and removes only the tenant's named entries.
pub async fn suppression_pages_and_removal(store: &dyn Store) {
    let tenant = put_new_tenant(store).await;
    let other = put_new_tenant(store).await;
    let entries: Vec<Suppression> = (0..7)
        .map(|n| entry(tenant.id, SuppressionKind::Email, &format!("person{n}@example.org")))
        .collect();
    store.put_suppressions(tenant.id, entries.clone()).await.expect("put_suppressions");
    let foreign = entry(other.id, SuppressionKind::Email, "person0@example.org");
    store.put_suppressions(other.id, vec![foreign.clone()]).await.expect("put other");

    for size in [1, 3, 7, 50] {
        let mut listed = Vec::new();
        let mut after = None;
        loop {
            let page = store.suppressions_page(tenant.id, after, size).await.expect("page");
            assert!(page.len() <= size, "page of {} over the limit {size}", page.len());
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            listed.extend(page);
        }
        // The order is the stored keys' order, which under the sealed store is that of their
        // keyed hashes, so only completeness and uniqueness are checked.
        assert_eq!(listed.len(), entries.len(), "pages of {size} list each entry once");
        assert_eq!(sorted_keys(&listed), sorted_keys(&entries), "pages of {size} cover all");
    }

    let keys = vec![entries[0].key.clone(), entries[1].key.clone(), "email:absent@x.org".into()];
    let removed = store.remove_suppressions(tenant.id, keys.clone()).await.expect("remove");
    assert_eq!(removed, 2, "two of the three keys had entries");
    let left = store.suppressions(tenant.id, keys).await.expect("lookup after remove");
    assert!(left.is_empty(), "removed entries are gone: {left:?}");
    let theirs = store.suppressions(other.id, vec![foreign.key.clone()]).await.expect("other");
    assert_eq!(theirs, vec![foreign], "the other tenant's entry with the same key stays");
    let rest = store.suppressions_page(tenant.id, None, 50).await.expect("page");
    assert_eq!(rest.len(), 5, "the other entries stay");
}

/// Checks that a tenant being deleted takes no new entries and that its purge removes them.
pub async fn suppressions_are_purged(store: &dyn Store) {
    let tenant = put_new_tenant(store).await;
    let listed = entry(tenant.id, SuppressionKind::Phone, "+14155550199");
    store.put_suppressions(tenant.id, vec![listed.clone()]).await.expect("put_suppressions");
    let deletion = TenantDeletion {
        id: DeletionId::generate(),
        tenant: tenant.id,
        plan: tenant.plan.clone(),
        requested_at: base_time() + Duration::days(1),
        records_purged: 0,
        completed_at: None,
    };
    store.begin_tenant_deletion(deletion).await.expect("begin_tenant_deletion");
    let late = entry(tenant.id, SuppressionKind::Phone, "+14155550198");
    let rejected = store.put_suppressions(tenant.id, vec![late]).await;
    assert!(rejected.is_err(), "a tenant being deleted takes no suppression entries");

    let now = base_time() + Duration::days(2);
    for _ in 0..100 {
        if store.purge_tenant_chunk(tenant.id, 10, now).await.expect("purge").done {
            break;
        }
    }
    let left = store.suppressions_page(tenant.id, None, 10).await.expect("page after purge");
    assert!(left.is_empty(), "the purge removes suppression entries: {left:?}");
}
