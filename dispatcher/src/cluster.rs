//! The lease keeper: how this engine shares the tenants with the other engines on its store.
//!
//! Every renew interval the keeper renews the leases it holds, writes the node's heartbeat,
//! counts the live nodes, and moves towards its fair share of the tenants: the tenants divided
//! by the live nodes, rounded up. It releases tenants above the share once their sends under
//! way have finished, and takes tenants whose lease expired or was released. Taking a tenant
//! recovers what its previous owner left in flight, under the new epoch, before its actor
//! starts. A lease that cannot be renewed stops the tenant's sends at once (see
//! [`TenantLease`]), and a lease found lost stops the tenant's actor.
//!
//! Lease instants come from the system clock, never from the engine's clock, because a virtual
//! clock that jumps days must not expire leases between processes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use followup_core::api::{ClusterLease, ClusterNode, ClusterView};
use followup_core::domain::Tenant;
use followup_core::ids::TenantId;
use followup_core::store::lease::{Lease, LeaseTimes, NodeHeartbeat, NodeId, fair_share};
use rand::seq::SliceRandom as _;

use crate::config::ClusterConfig;
use crate::engine::Engine;
use crate::telemetry;

/// The lease a tenant's actor works under: its epoch, which every follow-up write carries, and
/// the instant after which the actor starts no send, by the system clock.
#[derive(Debug)]
pub struct TenantLease {
    epoch: u64,
    /// Milliseconds since the Unix epoch; `i64::MIN` once the lease is known lost.
    sends_until_millis: AtomicI64,
}

impl TenantLease {
    pub fn new(epoch: u64, sends_until: DateTime<Utc>) -> Self {
        Self { epoch, sends_until_millis: AtomicI64::new(sends_until.timestamp_millis()) }
    }

    /// The lease's epoch: the fencing token of the actor's writes.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether the actor may start a send at `now`.
    pub fn allows_sends(&self, now: DateTime<Utc>) -> bool {
        now.timestamp_millis() < self.sends_until_millis.load(Ordering::Acquire)
    }

    /// Moves the end of sends to `until`, after a renewal. A revoked lease stays revoked.
    fn extend(&self, until: DateTime<Utc>) {
        let until = until.timestamp_millis();
        let _ = self.sends_until_millis.fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
            (now != i64::MIN).then_some(now.max(until))
        });
    }

    /// Stops every further send under this lease.
    pub fn revoke(&self) {
        self.sends_until_millis.store(i64::MIN, Ordering::Release);
    }
}

/// A lease this node holds, as last written, and the view its tenant's actor reads.
#[derive(Debug)]
struct HeldLease {
    record: Lease,
    shared: Arc<TenantLease>,
}

/// Takes, renews and releases this node's tenant leases.
#[derive(Debug)]
pub struct LeaseKeeper {
    node: NodeId,
    times: LeaseTimes,
    renew_interval: Duration,
    held: Mutex<HashMap<TenantId, HeldLease>>,
    /// Set by [`LeaseKeeper::release_all`]: a stopping node takes no more tenants.
    stopping: AtomicBool,
    /// Held by a pass and by [`LeaseKeeper::take_tenant`], so that a tenant created through
    /// the API and a pass never take leases on the same tenant at the same time.
    taking: tokio::sync::Mutex<()>,
}

impl LeaseKeeper {
    pub fn new(config: &ClusterConfig) -> anyhow::Result<Self> {
        config.validate()?;
        let node = config.node_id.clone().unwrap_or_else(random_node_id);
        let millis = |value: u64| chrono::Duration::milliseconds(value.min(i64::MAX as u64) as i64);
        let times = LeaseTimes {
            ttl: millis(config.lease_ttl_millis),
            skew_margin: millis(config.clock_skew_margin_millis),
        };
        let renew_interval = Duration::from_millis(config.renew_interval_millis);
        let held = Mutex::default();
        let stopping = AtomicBool::new(false);
        let taking = tokio::sync::Mutex::new(());
        Ok(Self { node, times, renew_interval, held, stopping, taking })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Runs one pass: heartbeat, renewals, releases above the fair share, then takeovers.
    pub async fn run_pass(&self, engine: &Engine) -> anyhow::Result<()> {
        if self.stopping.load(Ordering::Acquire) {
            return Ok(());
        }
        let _taking = self.taking.lock().await;
        let store = engine.store();
        self.renew_held(engine).await;
        let now = Utc::now();
        let expires_at = now + self.times.ttl;
        let heartbeat = NodeHeartbeat { node: self.node.clone(), seen_at: now, expires_at };
        store.put_heartbeat(heartbeat).await?;

        let heartbeats = store.heartbeats().await?;
        let live_nodes = heartbeats.iter().filter(|beat| beat.expires_at > now).count();
        let tenants = engine.live_tenants().await?;
        let share = fair_share(tenants.len(), live_nodes);
        self.release_above_share(engine, &tenants, share);
        self.take_free_tenants(engine, tenants, share).await?;
        metrics::gauge!(telemetry::LEASES_HELD).set(self.held_count() as f64);
        Ok(())
    }

    /// Takes the lease of `tenant` if no live node holds it, and starts its actor. Used for a
    /// tenant created through this node, so that it is dispatched without waiting for a pass.
    pub async fn take_tenant(&self, engine: &Engine, tenant: &Tenant) -> anyhow::Result<bool> {
        if self.stopping.load(Ordering::Acquire) {
            return Ok(false);
        }
        let _taking = self.taking.lock().await;
        if self.lock_held().contains_key(&tenant.id) {
            return Ok(true);
        }
        let now = Utc::now();
        let taken = engine.store().take_lease(tenant.id, self.node.clone(), now, self.times.ttl);
        let Some(lease) = taken.await? else {
            return Ok(false);
        };
        self.start_leased(engine, tenant, lease, now).await?;
        Ok(true)
    }

    /// Releases every lease this node holds, once the tenants' sends under way have finished,
    /// so that other nodes take the tenants at once. Called on a graceful stop.
    pub async fn release_all(&self, engine: &Engine) {
        if self.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        // A pass under way may still take tenants: wait for it.
        let _taking = self.taking.lock().await;
        let held: Vec<(TenantId, HeldLease)> = self.lock_held().drain().collect();
        for (tenant, held) in held {
            engine.stop_tenant(tenant).await;
            if let Err(error) = engine.store().release_lease(held.record).await {
                tracing::warn!(%tenant, %error, "lease not released; it expires by itself");
            }
        }
        metrics::gauge!(telemetry::LEASES_HELD).set(0.0);

        // An expired heartbeat: the other nodes stop counting this one at once.
        let now = Utc::now();
        let heartbeat = NodeHeartbeat { node: self.node.clone(), seen_at: now, expires_at: now };
        if let Err(error) = engine.store().put_heartbeat(heartbeat).await {
            tracing::warn!(%error, "heartbeat not ended; it expires by itself");
        }
        tracing::info!(node = %self.node, "tenant leases released");
    }

    /// Lists the nodes and the tenants' leases, for the admin API.
    pub async fn view(&self, engine: &Engine) -> anyhow::Result<ClusterView> {
        let now = Utc::now();
        let store = engine.store();
        let mut nodes: Vec<ClusterNode> = store
            .heartbeats()
            .await?
            .into_iter()
            .map(|beat| ClusterNode {
                live: beat.expires_at > now,
                node: beat.node,
                seen_at: beat.seen_at,
                expires_at: beat.expires_at,
            })
            .collect();
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        let mut leases: Vec<ClusterLease> = store
            .leases()
            .await?
            .into_iter()
            .map(|lease| ClusterLease {
                live: lease.is_live(now),
                tenant: lease.tenant,
                owner: lease.owner,
                epoch: lease.epoch,
                expires_at: lease.expires_at,
            })
            .collect();
        leases.sort_by_key(|lease| lease.tenant);
        Ok(ClusterView { node: self.node.clone(), now, nodes, leases })
    }

    /// Renews every held lease, all at once, each from the instant its own request starts, so
    /// that a slow store delays no renewal behind the others. A lease found lost stops its
    /// tenant. A renewal that fails for another reason leaves the lease to run out, which
    /// stops the tenant's sends by time.
    async fn renew_held(&self, engine: &Engine) {
        let records: Vec<Lease> =
            self.lock_held().values().map(|held| held.record.clone()).collect();
        let renewals = records.into_iter().map(|record| async move {
            let requested_at = Utc::now();
            let tenant = record.tenant;
            let renewed = engine.store().renew_lease(record, requested_at, self.times.ttl).await;
            (tenant, requested_at, renewed)
        });
        for (tenant, requested_at, renewed) in futures_util::future::join_all(renewals).await {
            match renewed {
                Ok(Some(renewed)) => {
                    if let Some(held) = self.lock_held().get_mut(&tenant) {
                        held.shared.extend(self.times.sends_allowed_until(requested_at));
                        held.record = renewed;
                    }
                }
                Ok(None) => {
                    tracing::warn!(%tenant, node = %self.node, "tenant lease lost; dispatch stops");
                    metrics::counter!(telemetry::LEASES_LOST).increment(1);
                    self.drop_tenant(engine, tenant);
                }
                Err(error) => {
                    tracing::warn!(%tenant, %error, "tenant lease not renewed; retrying next pass");
                }
            }
        }
    }

    /// Releases the held tenants that were deleted, and those above `share`, each after its
    /// sends under way have finished.
    fn release_above_share(&self, engine: &Engine, tenants: &[Tenant], share: usize) {
        let mut held = self.lock_held();
        let mut gone: Vec<TenantId> =
            held.keys().filter(|id| !tenants.iter().any(|t| t.id == **id)).copied().collect();
        let mut kept: Vec<TenantId> =
            held.keys().filter(|id| !gone.contains(id)).copied().collect();
        kept.sort();
        gone.extend(kept.into_iter().skip(share));
        for tenant in gone {
            let Some(released) = held.remove(&tenant) else {
                continue;
            };
            tracing::info!(%tenant, node = %self.node, share, "releasing tenant lease");
            let stopping = engine.detach_tenant(tenant);
            let store = engine.store().clone();
            actix_rt::spawn(async move {
                if let Some(stopping) = stopping {
                    stopping.await;
                }
                if let Err(error) = store.release_lease(released.record).await {
                    tracing::warn!(%tenant, %error, "lease not released; it expires by itself");
                }
            });
        }
    }

    /// Takes tenants without a live lease until this node holds `share`, in random order so that
    /// nodes starting together do not all race for the same tenants.
    async fn take_free_tenants(
        &self,
        engine: &Engine,
        mut tenants: Vec<Tenant>,
        share: usize,
    ) -> anyhow::Result<()> {
        if self.held_count() >= share {
            return Ok(());
        }
        let leases: HashMap<TenantId, Lease> =
            engine.store().leases().await?.into_iter().map(|lease| (lease.tenant, lease)).collect();
        tenants.shuffle(&mut rand::rng());
        for tenant in tenants {
            if self.held_count() >= share {
                break;
            }
            let now = Utc::now();
            let previous = leases.get(&tenant.id);
            let held = self.lock_held().contains_key(&tenant.id);
            if held || previous.is_some_and(|lease| !lease.may_be_taken_by(&self.node, now)) {
                continue;
            }
            let taken =
                engine.store().take_lease(tenant.id, self.node.clone(), now, self.times.ttl);
            let Some(lease) = taken.await? else {
                continue;
            };
            if previous.is_some_and(|lease| lease.owner != self.node) {
                metrics::counter!(telemetry::LEASE_TAKEOVERS).increment(1);
            }
            if let Err(error) = self.start_leased(engine, &tenant, lease.clone(), now).await {
                tracing::error!(tenant = %tenant.id, %error, "tenant not started; releasing it");
                self.lock_held().remove(&tenant.id);
                engine.store().release_lease(lease).await?;
            }
        }
        Ok(())
    }

    /// Recovers what the tenant's previous owner left in flight, under the new epoch, then
    /// starts the tenant's actor.
    async fn start_leased(
        &self,
        engine: &Engine,
        tenant: &Tenant,
        lease: Lease,
        requested_at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        // An actor of this node under an older epoch (a creation through the API racing a
        // pass) is stopped first, so that recovery also settles what it left in flight.
        if let Some(stopping) = engine.detach_tenant(tenant.id) {
            stopping.await;
        }
        let recovered = engine.store().recover_interrupted(tenant.id, lease.epoch).await?;
        if recovered.in_doubt > 0 || recovered.released_claims > 0 {
            tracing::warn!(
                tenant = %tenant.id,
                in_doubt = recovered.in_doubt,
                released = recovered.released_claims,
                "recovered follow-ups interrupted by the tenant's previous owner"
            );
        }
        let sends_until = self.times.sends_allowed_until(requested_at);
        let shared = Arc::new(TenantLease::new(lease.epoch, sends_until));
        tracing::info!(tenant = %tenant.id, node = %self.node, epoch = lease.epoch, "tenant lease taken");
        self.lock_held().insert(tenant.id, HeldLease { record: lease, shared: shared.clone() });
        engine.start_tenant(tenant, shared).await
    }

    /// Forgets a lost lease and stops its tenant's actor in the background.
    fn drop_tenant(&self, engine: &Engine, tenant: TenantId) {
        if let Some(held) = self.lock_held().remove(&tenant) {
            held.shared.revoke();
        }
        if let Some(stopping) = engine.detach_tenant(tenant) {
            actix_rt::spawn(stopping);
        }
    }

    fn held_count(&self) -> usize {
        self.lock_held().len()
    }

    fn lock_held(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, HeldLease>> {
        // The map stays consistent whatever panicked while holding it: every change is one
        // insert or remove.
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Runs the keeper's passes every renew interval, or back to back when a pass takes longer,
/// until the engine is dropped.
pub fn spawn_lease_keeper(engine: &Arc<Engine>) {
    let mut ticks = tokio::time::interval(engine.leases().renew_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let engine: Weak<Engine> = Arc::downgrade(engine);
    actix_rt::spawn(async move {
        // The first tick completes at once, and the engine ran its first pass at start.
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(engine) = engine.upgrade() else {
                return;
            };
            if let Err(error) = engine.leases().run_pass(&engine).await {
                tracing::warn!(%error, "lease pass failed; retrying next interval");
            }
        }
    });
}

/// Draws a node id for a process without a configured one.
fn random_node_id() -> NodeId {
    format!("node-{}", uuid::Uuid::new_v4().simple())
}
