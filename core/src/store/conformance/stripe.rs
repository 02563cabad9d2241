//! Checks of the tenants' Stripe accounts: round trip, lookup by customer, one tenant per
//! customer, and writes rejected for a tenant being deleted.

use chrono::Duration;

use super::{base_time, put_new_tenant};
use crate::domain::TenantDeletion;
use crate::ids::{DeletionId, TenantId};
use crate::store::subscription::{PaymentState, StripeAccount, SubscriptionState};
use crate::store::{Store, StoreError};

fn new_account(tenant: TenantId, customer_id: &str) -> StripeAccount {
    StripeAccount {
        tenant,
        customer_id: customer_id.to_owned(),
        subscription: None,
        payment: None,
        updated_at: base_time(),
    }
}

fn unique_customer() -> String {
    format!("cus_{}", uuid::Uuid::new_v4().simple())
}

/// Checks put, get and lookup by customer, a replacement with a subscription and a payment,
/// and a change of customer that frees the old id.
pub async fn stripe_accounts_round_trip(store: &dyn Store) {
    let tenant = put_new_tenant(store).await;
    let customer = unique_customer();
    assert_eq!(store.stripe_account(tenant.id).await.expect("stripe_account"), None);
    let mut account = new_account(tenant.id, &customer);
    store.put_stripe_account(account.clone()).await.expect("put_stripe_account");
    let by_tenant = store.stripe_account(tenant.id).await.expect("stripe_account");
    assert_eq!(by_tenant, Some(account.clone()));
    let by_customer = store.stripe_account_by_customer(customer.clone()).await.expect("lookup");
    assert_eq!(by_customer, Some(account.clone()));
    let unknown = store.stripe_account_by_customer(unique_customer()).await.expect("lookup");
    assert_eq!(unknown, None, "an unknown customer has no account");

    account.subscription = Some(SubscriptionState {
        id: "sub_1".into(),
        status: "active".into(),
        price_id: Some("price_pro".into()),
        current_period_end: Some(base_time() + Duration::days(30)),
        cancel_at_period_end: true,
        canceled_at: Some(base_time()),
        ended_at: None,
        event_created: 1_700_000_000,
    });
    account.payment = Some(PaymentState {
        invoice_id: "in_1".into(),
        paid: false,
        grace_ends_at: Some(base_time() + Duration::days(3)),
        event_created: 1_700_000_001,
    });
    store.put_stripe_account(account.clone()).await.expect("replace");
    let replaced = store.stripe_account(tenant.id).await.expect("stripe_account");
    assert_eq!(replaced, Some(account.clone()));

    // Linking the tenant to another customer frees the first id.
    let second = unique_customer();
    let moved = StripeAccount { customer_id: second.clone(), ..account };
    store.put_stripe_account(moved.clone()).await.expect("change customer");
    let old = store.stripe_account_by_customer(customer).await.expect("lookup old");
    assert_eq!(old, None, "the old customer id no longer names the tenant");
    let new = store.stripe_account_by_customer(second).await.expect("lookup new");
    assert_eq!(new, Some(moved));
}

/// Checks that a customer id linked to one tenant cannot be linked to another, and that a
/// tenant being deleted gets no account.
pub async fn stripe_customer_has_one_tenant(store: &dyn Store) {
    let first = put_new_tenant(store).await;
    let second = put_new_tenant(store).await;
    let customer = unique_customer();
    store.put_stripe_account(new_account(first.id, &customer)).await.expect("put first");
    let taken = store.put_stripe_account(new_account(second.id, &customer)).await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))), "{taken:?}");
    let owner = store.stripe_account_by_customer(customer).await.expect("lookup");
    assert_eq!(owner.map(|account| account.tenant), Some(first.id));
    assert_eq!(store.stripe_account(second.id).await.expect("stripe_account"), None);

    let deletion = TenantDeletion {
        id: DeletionId::generate(),
        tenant: second.id,
        plan: second.plan.clone(),
        requested_at: base_time(),
        records_purged: 0,
        completed_at: None,
    };
    store.begin_tenant_deletion(deletion).await.expect("begin_tenant_deletion");
    let refused = store.put_stripe_account(new_account(second.id, &unique_customer())).await;
    assert!(matches!(refused, Err(StoreError::Conflict(_))), "{refused:?}");
}
