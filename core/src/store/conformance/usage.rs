//! Checks of the quota usage counters: reservations that never pass the limit, alone or many
//! at once, commits and releases, and reads by tenant and period.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use super::put_new_tenant;
use crate::domain::Channel;
use crate::store::usage::{BillingPeriod, UsageCounter, UsageKey};
use crate::store::{Store, StoreError};

/// Polls every future in turn until all are ready, so that their store operations are in
/// flight at the same time; returns their outputs in order. Core has no runtime crate, and a
/// join needs none.
async fn join_all<T>(mut futures: Vec<Pin<Box<dyn Future<Output = T> + Send + '_>>>) -> Vec<T> {
    let mut outputs: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending { Poll::Pending } else { Poll::Ready(()) }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

fn period() -> BillingPeriod {
    BillingPeriod::parse("2026-03").expect("a valid period")
}

async fn counter(store: &dyn Store, key: UsageKey) -> UsageCounter {
    let counters = store.usage(Some(key.tenant), key.period.to_string()).await.expect("usage");
    let found = counters.into_iter().find(|counter| counter.channel == key.channel);
    found.unwrap_or_else(|| UsageCounter::empty(key))
}

/// Checks that reservations grant up to the limit and then a part or nothing, that commits and
/// releases move the counts, and that a release frees quota again.
pub async fn usage_reservations_stop_at_limit(store: &dyn Store) {
    let tenant = put_new_tenant(store).await;
    let key = UsageKey { tenant: tenant.id, period: period(), channel: Channel::Sms };

    assert_eq!(store.reserve_usage(key, 4, 10).await.expect("reserve"), 4, "first block");
    assert_eq!(store.reserve_usage(key, 4, 10).await.expect("reserve"), 4, "second block");
    assert_eq!(store.reserve_usage(key, 4, 10).await.expect("reserve"), 2, "rest of the quota");
    assert_eq!(store.reserve_usage(key, 4, 10).await.expect("reserve"), 0, "quota used up");
    let full = counter(store, key).await;
    assert_eq!((full.taken, full.committed), (10, 0), "all taken, nothing committed");

    store.settle_usage(key, 6, 3).await.expect("settle");
    let settled = counter(store, key).await;
    assert_eq!(settled.committed, 6, "committed sends");
    assert_eq!(settled.taken, 7, "released sends leave taken");
    assert_eq!(settled.reserved(), 1, "one send still reserved");
    assert_eq!(store.reserve_usage(key, 5, 10).await.expect("reserve"), 3, "released quota");

    // A lower limit (a downgrade) grants nothing while taken is above it.
    assert_eq!(store.reserve_usage(key, 1, 5).await.expect("reserve"), 0, "lowered limit");
    let over = store.settle_usage(key, 0, 100).await;
    assert!(matches!(over, Err(StoreError::Conflict(_))), "release beyond taken: {over:?}");
}

/// Checks that counters are kept apart by tenant, period and channel, and that reads by tenant
/// or for every tenant list them.
pub async fn usage_counters_are_separate(store: &dyn Store) {
    let tenant = put_new_tenant(store).await;
    let other = put_new_tenant(store).await;
    let email = UsageKey { tenant: tenant.id, period: period(), channel: Channel::Email };
    let call = UsageKey { channel: Channel::Call, ..email };
    let next_month = UsageKey { period: period().next(), ..email };
    let others = UsageKey { tenant: other.id, ..email };
    for (key, wanted) in [(email, 5), (call, 2), (next_month, 7), (others, 9)] {
        let granted = store.reserve_usage(key, wanted, 100).await.expect("reserve");
        assert_eq!(granted, wanted, "an empty counter grants all");
    }

    let mine = store.usage(Some(tenant.id), period().to_string()).await.expect("usage");
    let taken: Vec<(Channel, u64)> = mine.iter().map(|c| (c.channel, c.taken)).collect();
    assert_eq!(taken, vec![(Channel::Email, 5), (Channel::Call, 2)], "tenant's counters");
    assert!(mine.iter().all(|c| c.period == "2026-03"), "period of each counter");

    let everyone = store.usage(None, period().to_string()).await.expect("usage of all");
    assert!(everyone.contains(&counter(store, others).await), "other tenant listed");
    assert!(everyone.iter().all(|c| c.period == "2026-03"), "only the period asked for");
    let later = counter(store, next_month).await;
    assert_eq!(later.taken, 7, "next month's counter");
}

/// Checks that many reservations in flight at once never take more than the limit together.
pub async fn concurrent_reservations_never_overspend(store: &dyn Store) {
    let tenant = put_new_tenant(store).await;
    let key = UsageKey { tenant: tenant.id, period: period(), channel: Channel::Email };
    let reservations = (0..16)
        .map(|_| {
            Box::pin(store.reserve_usage(key, 3, 20)) as Pin<Box<dyn Future<Output = _> + Send>>
        })
        .collect();
    let granted: u64 = join_all(reservations)
        .await
        .into_iter()
        .map(|result: Result<u64, StoreError>| result.expect("reserve"))
        .sum();
    assert_eq!(granted, 20, "16 requests of 3 share a limit of 20 exactly");
    assert_eq!(counter(store, key).await.taken, 20, "taken matches what was granted");
}
