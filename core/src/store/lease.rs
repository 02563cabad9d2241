//! Tenant leases, fencing tokens and node heartbeats: how several engine nodes on one store
//! split the tenants so that each tenant is dispatched by one node at a time.
//!
//! A lease is per tenant and numbered by its epoch. Taking a tenant writes the record of the
//! next epoch. A store keeps at most one record per (tenant, epoch), so of two nodes taking the
//! same epoch exactly one wins, even on a store without atomic updates: there the record is an
//! insert against a unique key. The epoch is also the fencing token: every follow-up write a tenant's owner
//! makes names its epoch, and the store rejects it with [`super::StoreError::Fenced`] once a
//! higher epoch exists.
//!
//! Expiry instants are written by the nodes from their own clocks, so the scheme assumes the
//! nodes' clocks differ by less than [`LeaseTimes::skew_margin`]; an owner stops sending that
//! margin before its lease expires by its own clock.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::TenantId;

/// The identity of one engine process among the nodes sharing a store.
pub type NodeId = String;

/// One epoch of a tenant's lease, as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub tenant: TenantId,
    /// Number of the lease, one more than the previous lease of the tenant. Also the fencing
    /// token of every follow-up write the owner makes.
    pub epoch: u64,
    pub owner: NodeId,
    /// Instant after which another node may take the next epoch. A released lease has an
    /// expiry in the past.
    pub expires_at: DateTime<Utc>,
}

impl Lease {
    /// Whether the lease still excludes other nodes at `now`.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.expires_at > now
    }

    /// Whether `node` may take the next epoch at `now`: the lease expired, or it belongs to
    /// `node` itself, which lets a node restarted under the same id take its tenants back at
    /// once instead of waiting out its old leases.
    pub fn may_be_taken_by(&self, node: &str, now: DateTime<Utc>) -> bool {
        !self.is_live(now) || self.owner == node
    }

    /// Whether `node` may extend this lease at `now`: only its owner, and only before it
    /// expires. A lease that expired may already be taken by another node, so its owner must
    /// take a new epoch instead.
    pub fn may_be_renewed_by(&self, node: &str, now: DateTime<Utc>) -> bool {
        self.is_live(now) && self.owner == node
    }
}

/// A node's record of being alive, which the others count to split the tenants evenly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHeartbeat {
    pub node: NodeId,
    pub seen_at: DateTime<Utc>,
    /// Instant after which the node no longer counts as alive.
    pub expires_at: DateTime<Utc>,
}

/// Durations of the lease protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTimes {
    /// How long a lease and a heartbeat last after they are written.
    pub ttl: Duration,
    /// Maximum difference assumed between two nodes' clocks. An owner treats its lease as
    /// lost this long before its expiry, so that a node whose clock runs ahead cannot take
    /// the tenant while the owner may still send.
    pub skew_margin: Duration,
}

impl LeaseTimes {
    /// Returns the instant until which an owner may start sends under a lease it wrote (or
    /// renewed) with a request sent at `requested_at`, by the owner's own clock.
    pub fn sends_allowed_until(&self, requested_at: DateTime<Utc>) -> DateTime<Utc> {
        requested_at + self.ttl - self.skew_margin
    }
}

/// Returns how many tenants each node should own: the tenants divided by the live nodes,
/// rounded up, so that every tenant can have an owner.
pub fn fair_share(tenants: usize, live_nodes: usize) -> usize {
    tenants.div_ceil(live_nodes.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(owner: &str, expires_at: DateTime<Utc>) -> Lease {
        Lease { tenant: TenantId::generate(), epoch: 3, owner: owner.into(), expires_at }
    }

    #[test]
    fn live_lease_excludes_other_nodes() {
        let now = Utc::now();
        let held = lease("a", now + Duration::seconds(1));
        assert!(!held.may_be_taken_by("b", now));
        assert!(held.may_be_taken_by("a", now), "the owner restarted under the same id");
        assert!(held.may_be_taken_by("b", now + Duration::seconds(1)), "expired at its instant");
    }

    #[test]
    fn only_owner_renews_before_expiry() {
        let now = Utc::now();
        let held = lease("a", now + Duration::seconds(1));
        assert!(held.may_be_renewed_by("a", now));
        assert!(!held.may_be_renewed_by("b", now));
        assert!(!held.may_be_renewed_by("a", now + Duration::seconds(2)));
    }

    #[test]
    fn fair_share_rounds_up() {
        assert_eq!(fair_share(7, 3), 3);
        assert_eq!(fair_share(6, 3), 2);
        assert_eq!(fair_share(5, 0), 5, "no live node counted yet: this node takes all");
        assert_eq!(fair_share(0, 2), 0);
    }
}
