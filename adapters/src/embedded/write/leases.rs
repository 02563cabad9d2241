//! Write operations of the lease protocol: taking, renewing and releasing tenant leases, node
//! heartbeats, and the fencing check of follow-up writes.
//!
//! The embedded store keeps only the newest lease of each tenant. The writer thread applies
//! one operation at a time inside its transaction, so reading that lease and writing the next
//! epoch cannot interleave with another taker, and a follow-up write checked against the
//! newest epoch cannot land after a newer owner took the tenant.

use chrono::{DateTime, Duration, Utc};
use followup_core::ids::TenantId;
use followup_core::store::StoreError;
use followup_core::store::lease::{Lease, NodeHeartbeat};

use super::{ApplyError, WriteTables, put};
use crate::embedded::keys;
use crate::embedded::tables::{self, HEARTBEATS, LEASES};

impl WriteTables<'_> {
    /// Rejects a write under epoch `fence` when the tenant has a newer lease.
    pub(super) fn check_fence(&self, tenant: TenantId, fence: u64) -> Result<(), StoreError> {
        match self.newest_lease(tenant)? {
            Some(lease) if lease.epoch > fence => {
                Err(StoreError::Fenced { tenant, fence, current: lease.epoch })
            }
            _ => Ok(()),
        }
    }

    pub(super) fn take_lease(
        &mut self,
        tenant: TenantId,
        node: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<Option<Lease>, ApplyError> {
        let newest = self.newest_lease(tenant).map_err(ApplyError::Rejected)?;
        if newest.as_ref().is_some_and(|lease| !lease.may_be_taken_by(node, now)) {
            return Ok(None);
        }
        let epoch = newest.map_or(1, |lease| lease.epoch + 1);
        let lease = Lease { tenant, epoch, owner: node.to_owned(), expires_at: now + ttl };
        self.write_lease(&lease)?;
        Ok(Some(lease))
    }

    pub(super) fn renew_lease(
        &mut self,
        lease: &Lease,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<Option<Lease>, ApplyError> {
        let newest = self.newest_lease(lease.tenant).map_err(ApplyError::Rejected)?;
        let Some(newest) = newest.filter(|newest| newest.epoch == lease.epoch) else {
            return Ok(None);
        };
        if !newest.may_be_renewed_by(&lease.owner, now) {
            return Ok(None);
        }
        let renewed = Lease { expires_at: now + ttl, ..newest };
        self.write_lease(&renewed)?;
        Ok(Some(renewed))
    }

    /// Ends the lease by moving its expiry to the Unix epoch, when it is still the
    /// tenant's newest and still held by its owner.
    pub(super) fn release_lease(&mut self, lease: &Lease) -> Result<(), ApplyError> {
        let newest = self.newest_lease(lease.tenant).map_err(ApplyError::Rejected)?;
        let held =
            newest.filter(|newest| newest.epoch == lease.epoch && newest.owner == lease.owner);
        if let Some(held) = held {
            self.write_lease(&Lease { expires_at: DateTime::<Utc>::UNIX_EPOCH, ..held })?;
        }
        Ok(())
    }

    /// Ends every lease and forgets every heartbeat: at opening, because the file lock lets one
    /// process use the store, so every lease and heartbeat on file belongs to a process that
    /// has stopped. Returns how many leases were live.
    pub(in crate::embedded) fn expire_all_leases(&mut self) -> Result<u64, StoreError> {
        self.heartbeats.retain(|_, _| false).map_err(|e| tables::write_error(HEARTBEATS, e))?;
        let leases: Vec<Lease> = tables::scan(&self.leases, LEASES, &[])?;
        let mut expired = 0;
        for lease in leases {
            if lease.expires_at > DateTime::<Utc>::UNIX_EPOCH {
                let ended = Lease { expires_at: DateTime::<Utc>::UNIX_EPOCH, ..lease };
                put(&mut self.leases, LEASES, &keys::tenant(ended.tenant), &ended)?;
                expired += 1;
            }
        }
        Ok(expired)
    }

    pub(super) fn put_heartbeat(&mut self, heartbeat: &NodeHeartbeat) -> Result<(), ApplyError> {
        put(&mut self.heartbeats, HEARTBEATS, heartbeat.node.as_bytes(), heartbeat)
            .map_err(ApplyError::Failed)
    }

    fn newest_lease(&self, tenant: TenantId) -> Result<Option<Lease>, StoreError> {
        tables::get(&self.leases, LEASES, &keys::tenant(tenant))
    }

    fn write_lease(&mut self, lease: &Lease) -> Result<(), ApplyError> {
        let key = keys::tenant(lease.tenant);
        put(&mut self.leases, LEASES, &key, lease).map_err(ApplyError::Failed)
    }
}
