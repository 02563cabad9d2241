//! Checks of the lease protocol: taking, renewing and releasing tenant leases, fencing of
//! follow-up writes, recovery under a new epoch, and node heartbeats.
//!
//! Each check uses instants near the real clock's, from fresh tenants and node ids, so that
//! leases left by other checks or other runs on the same store never interfere.

use chrono::{DateTime, Duration, DurationRound as _, Utc};
use uuid::Uuid;

use super::{base_time, put_follow_ups_in_states, put_new_tenant};
use crate::domain::FollowUpState;
use crate::store::lease::{Lease, NodeHeartbeat};
use crate::store::{IN_DOUBT_AFTER_STOP, RecoveryReport, Store, StoreError};

const TTL: Duration = Duration::seconds(10);

/// The current instant in whole milliseconds, the precision BSON dates keep.
fn now() -> DateTime<Utc> {
    Utc::now().duration_trunc(Duration::milliseconds(1)).expect("a truncatable instant")
}

fn new_node() -> String {
    format!("node-{}", Uuid::new_v4().simple())
}

/// Returns the tenant's lease as `leases` lists it.
async fn listed_lease(store: &dyn Store, lease: &Lease) -> Option<Lease> {
    let leases = store.leases().await.expect("leases");
    leases.into_iter().find(|listed| listed.tenant == lease.tenant)
}

/// Checks that the first lease of a tenant has epoch 1, that another node cannot take it while
/// it is live, that it can once it expired, and that the owner's own id may take it at once.
pub async fn lease_excludes_until_expiry(store: &dyn Store) {
    let tenant = put_new_tenant(store).await;
    let (first_node, second_node) = (new_node(), new_node());
    let now = now();

    let first = store.take_lease(tenant.id, first_node.clone(), now, TTL).await.expect("take");
    let first = first.expect("a tenant without a lease can be taken");
    assert_eq!(first.epoch, 1, "first epoch");
    assert_eq!(first.owner, first_node, "owner");
    assert_eq!(first.expires_at, now + TTL, "expiry");
    assert_eq!(listed_lease(store, &first).await, Some(first.clone()), "listed lease");

    let taken = store.take_lease(tenant.id, second_node.clone(), now + TTL / 2, TTL).await;
    assert_eq!(taken.expect("take"), None, "a live lease excludes another node");

    let after_expiry = now + TTL + Duration::seconds(1);
    let second = store.take_lease(tenant.id, second_node.clone(), after_expiry, TTL).await;
    let second = second.expect("take").expect("an expired lease can be taken");
    assert_eq!(second.epoch, 2, "next epoch after expiry");
    assert_eq!(second.owner, second_node, "new owner");
    assert_eq!(listed_lease(store, &second).await, Some(second.clone()), "newest lease listed");

    let restarted = store.take_lease(tenant.id, second_node, after_expiry, TTL).await;
    let restarted = restarted.expect("take").expect("the owner's id may take a live lease");
    assert_eq!(restarted.epoch, 3, "a restart under the same id takes the next epoch");
}

/// Checks that only the owner of the newest epoch renews, and only before expiry.
pub async fn renewal_only_by_live_owner(store: &dyn Store) {
    let tenant = put_new_tenant(store).await;
    let (owner, other) = (new_node(), new_node());
    let now = now();
    let lease = store.take_lease(tenant.id, owner.clone(), now, TTL).await.expect("take");
    let lease = lease.expect("lease");

    let later = now + TTL / 2;
    let renewed = store.renew_lease(lease.clone(), later, TTL).await.expect("renew");
    let renewed = renewed.expect("the owner renews a live lease");
    assert_eq!(renewed.expires_at, later + TTL, "renewed expiry");
    assert_eq!(renewed.epoch, lease.epoch, "renewal keeps the epoch");
    assert_eq!(listed_lease(store, &lease).await, Some(renewed.clone()), "renewal stored");

    let forged = Lease { owner: other, ..renewed.clone() };
    let by_other = store.renew_lease(forged, later, TTL).await.expect("renew");
    assert_eq!(by_other, None, "another node cannot renew");

    let expired_at = renewed.expires_at + Duration::seconds(1);
    let too_late = store.renew_lease(renewed.clone(), expired_at, TTL).await.expect("renew");
    assert_eq!(too_late, None, "an expired lease cannot be renewed");

    let newer = store.take_lease(tenant.id, owner, expired_at, TTL).await.expect("take");
    let newer = newer.expect("the owner takes a new epoch");
    let stale = store.renew_lease(renewed, newer.expires_at - TTL, TTL).await.expect("renew");
    assert_eq!(stale, None, "an older epoch cannot be renewed");
}

/// Checks that a released lease can be taken at once by another node, and that releasing an
/// older epoch leaves the newest one alone.
pub async fn release_lets_another_node_take(store: &dyn Store) {
    let tenant = put_new_tenant(store).await;
    let (first_node, second_node, third_node) = (new_node(), new_node(), new_node());
    let now = now();
    let first = store.take_lease(tenant.id, first_node, now, TTL).await.expect("take");
    let first = first.expect("lease");

    store.release_lease(first.clone()).await.expect("release");
    let second = store.take_lease(tenant.id, second_node, now, TTL).await.expect("take");
    let second = second.expect("a released lease can be taken at once");
    assert_eq!(second.epoch, first.epoch + 1, "next epoch after release");

    store.release_lease(first).await.expect("release of an older epoch");
    let third = store.take_lease(tenant.id, third_node, now, TTL).await.expect("take");
    assert_eq!(third, None, "releasing an older epoch does not end the newest");
}

/// Checks that a follow-up write under an older epoch than the tenant's newest lease is
/// rejected as fenced and changes nothing, while a write under the newest epoch goes through.
pub async fn fenced_writes_are_rejected(store: &dyn Store) {
    let tenant = put_new_tenant(store).await;
    let (old_node, new_node_id) = (new_node(), new_node());
    let pending = [FollowUpState::Pending];
    let stored = put_follow_ups_in_states(store, tenant.id, &pending, base_time()).await;
    let follow_up = stored.into_iter().next().expect("one follow-up");
    let now = now();

    let old = store.take_lease(tenant.id, old_node, now, TTL).await.expect("take");
    let old = old.expect("lease");
    let claimed = crate::domain::FollowUp { state: FollowUpState::Claimed, ..follow_up.clone() };
    let write = store.update_follow_ups(tenant.id, old.epoch, vec![claimed], Vec::new()).await;
    write.expect("a write under the newest epoch");

    let taken_at = now + TTL + Duration::seconds(1);
    let new = store.take_lease(tenant.id, new_node_id, taken_at, TTL).await.expect("take");
    let new = new.expect("the expired lease is taken over");
    let sending = crate::domain::FollowUp { state: FollowUpState::Sending, ..follow_up.clone() };
    let stale = store.update_follow_ups(tenant.id, old.epoch, vec![sending], Vec::new()).await;
    match stale {
        Err(StoreError::Fenced { tenant: fenced, fence, current }) => {
            assert_eq!(fenced, tenant.id, "fenced tenant");
            assert_eq!(fence, old.epoch, "rejected epoch");
            assert_eq!(current, new.epoch, "newest epoch");
        }
        other => panic!("a write under an older epoch must be fenced, got {other:?}"),
    }
    let kept = store.follow_up(tenant.id, follow_up.id).await.expect("follow_up");
    let state = kept.map(|kept| kept.state);
    assert_eq!(state, Some(FollowUpState::Claimed), "a fenced write changes nothing");

    let stale_recovery = store.recover_interrupted(tenant.id, old.epoch).await;
    assert!(
        matches!(stale_recovery, Err(StoreError::Fenced { .. })),
        "recovery under an older epoch must be fenced, got {stale_recovery:?}"
    );

    let sent = crate::domain::FollowUp { state: FollowUpState::Sent, ..follow_up.clone() };
    let write = store.update_follow_ups(tenant.id, new.epoch, vec![sent], Vec::new()).await;
    write.expect("a write under the newest epoch");
    let written = store.follow_up(tenant.id, follow_up.id).await.expect("follow_up");
    assert_eq!(written.map(|written| written.state), Some(FollowUpState::Sent), "newest write");
}

/// Checks that the node taking over a tenant recovers what the previous owner left claimed or
/// sending, under its new epoch.
pub async fn recovery_runs_under_new_epoch(store: &dyn Store) {
    let tenant = put_new_tenant(store).await;
    let (old_node, new_node_id) = (new_node(), new_node());
    let now = now();
    // The previous owner's writes, made before it took its lease so that the fixture helper
    // needs no epoch.
    let states = [FollowUpState::Claimed, FollowUpState::Sending, FollowUpState::Sent];
    let before = put_follow_ups_in_states(store, tenant.id, &states, base_time()).await;
    let old = store.take_lease(tenant.id, old_node, now, TTL).await.expect("take");
    let old = old.expect("lease");

    let taken_at = now + TTL + Duration::seconds(1);
    let new = store.take_lease(tenant.id, new_node_id, taken_at, TTL).await.expect("take");
    let new = new.expect("lease");
    assert!(new.epoch > old.epoch, "the new owner has a newer epoch");
    let report = store.recover_interrupted(tenant.id, new.epoch).await.expect("recover");
    assert_eq!(report, RecoveryReport { released_claims: 1, in_doubt: 1 }, "recovery counts");

    let expected = [FollowUpState::Pending, FollowUpState::InDoubt, FollowUpState::Sent];
    for (old, expected) in before.iter().zip(expected) {
        let new = store.follow_up(tenant.id, old.id).await.expect("follow_up");
        let new = new.expect("a recovered follow-up still exists");
        assert_eq!(new.state, expected, "state after takeover, was {}", old.state);
    }
    let in_doubt = store.follow_up(tenant.id, before[1].id).await.expect("follow_up");
    let reason = in_doubt.and_then(|follow_up| follow_up.reason);
    assert_eq!(reason.as_deref(), Some(IN_DOUBT_AFTER_STOP), "in-doubt reason");
}

/// Checks that a heartbeat is stored, listed and replaced by the node's next one.
pub async fn heartbeats_round_trip(store: &dyn Store) {
    let node = new_node();
    let now = now();
    let first = NodeHeartbeat { node: node.clone(), seen_at: now, expires_at: now + TTL };
    store.put_heartbeat(first.clone()).await.expect("put_heartbeat");
    let listed = store.heartbeats().await.expect("heartbeats");
    let mine: Vec<_> = listed.iter().filter(|beat| beat.node == node).collect();
    assert_eq!(mine, vec![&first], "heartbeat listed once");

    let later = now + Duration::seconds(2);
    let second = NodeHeartbeat { node: node.clone(), seen_at: later, expires_at: later + TTL };
    store.put_heartbeat(second.clone()).await.expect("put_heartbeat");
    let listed = store.heartbeats().await.expect("heartbeats");
    let mine: Vec<_> = listed.iter().filter(|beat| beat.node == node).collect();
    assert_eq!(mine, vec![&second], "the next heartbeat replaces the first");
}
