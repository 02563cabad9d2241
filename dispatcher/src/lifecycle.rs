//! The end of a tenant's data: account deletion, whose purge runs in the background and
//! resumes after a restart, and the retention sweep that removes sent messages once they
//! expire.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use followup_core::domain::{BillingRecord, Channel, FollowUpState, Tenant, TenantDeletion};
use followup_core::ids::DeletionId;
use followup_core::store::Store;
use tokio::sync::{RwLock, RwLockReadGuard};

use crate::engine::Engine;
use crate::telemetry;

/// Follow-ups read per page while a billing record is counted.
const BILLING_PAGE: usize = 1_000;

/// Messages removed per write by the retention sweep.
const SWEEP_CHUNK: usize = 1_000;

/// Maximum wait of the purge task between two looks for unfinished deletions. A deletion wakes
/// it at once, so this only matters if a wake-up were lost.
const PURGE_POLL: Duration = Duration::from_secs(60);

/// The switch that stops a tenant's sends for good. A round sends only while it holds an entry
/// guard, and [`SendGate::stop`] waits for every guard to drop, so once `stop` returns no round
/// of the tenant starts a send.
#[derive(Debug, Default)]
pub struct SendGate {
    open: RwLock<bool>,
    /// A copy of the state readable without waiting, for rounds that only look.
    stopped: AtomicBool,
    /// Set while an operator has paused the tenant. Rounds that start see it; a round under
    /// way finishes its sends.
    paused: AtomicBool,
}

impl SendGate {
    pub fn new() -> Self {
        Self {
            open: RwLock::new(true),
            stopped: AtomicBool::new(false),
            paused: AtomicBool::new(false),
        }
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// Returns a guard to send under, or `None` once the gate is stopped.
    pub async fn enter(&self) -> Option<RwLockReadGuard<'_, bool>> {
        let guard = self.open.read().await;
        (*guard).then_some(guard)
    }

    /// Stops the gate, after the sends under way have finished.
    pub async fn stop(&self) {
        let mut open = self.open.write().await;
        *open = false;
        self.stopped.store(true, Ordering::Release);
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }
}

/// Stops the tenant's sends and records its deletion, which revokes its API key at once. The
/// purge of its records then runs in the background. The tenant's data key is destroyed here,
/// right after its sends stop, once tenants have keys of their own.
///
/// Sends that were already handed to a provider when this was called finish before it
/// returns; they cannot be recalled. Nothing of the tenant is sent after it returns.
pub async fn stop_and_mark_deleted(
    engine: &Engine,
    tenant: &Tenant,
) -> anyhow::Result<TenantDeletion> {
    engine.stop_tenant(tenant.id).await;
    let deletion = TenantDeletion {
        id: DeletionId::generate(),
        tenant: tenant.id,
        plan: tenant.plan.clone(),
        requested_at: engine.clock().now(),
        records_purged: 0,
        completed_at: None,
    };
    engine.store().begin_tenant_deletion(deletion.clone()).await?;
    // From here on no record of the tenant can be opened, whatever the purge has reached.
    engine.destroy_tenant_key(tenant.id).await?;
    tracing::info!(tenant = %tenant.id, deletion = %deletion.id, "tenant deletion started");
    engine.wake_purge();
    Ok(deletion)
}

/// Starts the background tasks of this module: the purge of deleted tenants, which first
/// finishes any purge a stop interrupted, and the retention sweep, which runs at once and then
/// every `retention.sweep_interval_seconds`. Must run inside an actix system.
pub fn spawn_background(engine: Arc<Engine>) {
    actix_rt::spawn(run_purges(engine.clone()));
    actix_rt::spawn(run_sweeps(engine));
}

async fn run_purges(engine: Arc<Engine>) {
    loop {
        if let Err(error) = purge_deleted_tenants(&engine).await {
            tracing::error!(error = %format!("{error:#}"), "tenant purge failed; retrying");
        }
        tokio::select! {
            () = engine.purge_requested() => {}
            () = tokio::time::sleep(PURGE_POLL) => {}
        }
    }
}

async fn run_sweeps(engine: Arc<Engine>) {
    let interval = Duration::from_secs(engine.config().retention.sweep_interval_seconds.max(1));
    loop {
        if let Err(error) = sweep_sent_messages(&engine).await {
            tracing::error!(%error, "retention sweep of sent messages failed");
        }
        tokio::time::sleep(interval).await;
    }
}

/// Purges every tenant whose deletion is unfinished, one after the other, to the end.
pub async fn purge_deleted_tenants(engine: &Engine) -> anyhow::Result<()> {
    let deletions = engine.store().tenant_deletions().await?;
    let pending: Vec<TenantDeletion> =
        deletions.into_iter().filter(|d| d.completed_at.is_none()).collect();
    metrics::gauge!(telemetry::TENANT_DELETIONS_PENDING).set(pending.len() as f64);
    for (done, deletion) in pending.iter().enumerate() {
        purge_tenant(engine, deletion).await?;
        metrics::gauge!(telemetry::TENANT_DELETIONS_PENDING).set((pending.len() - done - 1) as f64);
    }
    Ok(())
}

/// Writes the tenant's billing record unless it exists, then removes its records a chunk at a
/// time. The record is written before the first chunk, so a purge that finds none has not
/// started yet and can still count the tenant's sends.
async fn purge_tenant(engine: &Engine, deletion: &TenantDeletion) -> anyhow::Result<()> {
    // A stop between the deletion marker and the key's destruction left the key in place.
    engine.destroy_tenant_key(deletion.tenant).await?;
    let store = engine.store();
    if store.billing_record(deletion.tenant).await?.is_none() {
        // The data key is gone, so the count reads the store underneath: it needs only the
        // states, channels and instants, which are not sealed.
        let unsealed = engine.sealed_store().inner();
        let record = count_billed_sends(unsealed.as_ref(), deletion).await?;
        store.put_billing_record(record).await?;
    }
    let retention = &engine.config().retention;
    let pause = Duration::from_millis(retention.purge_pause_millis);
    loop {
        let now = engine.clock().now();
        let progress =
            store.purge_tenant_chunk(deletion.tenant, retention.purge_chunk_records, now).await?;
        metrics::counter!(telemetry::PURGED_RECORDS).increment(progress.removed);
        if progress.done {
            tracing::info!(tenant = %deletion.tenant, deletion = %deletion.id, "tenant purged");
            return Ok(());
        }
        tokio::time::sleep(pause).await;
    }
}

/// Counts the tenant's sent follow-ups per month and channel, a page at a time.
async fn count_billed_sends(
    store: &dyn Store,
    deletion: &TenantDeletion,
) -> anyhow::Result<BillingRecord> {
    let mut sends: BTreeMap<String, BTreeMap<Channel, u64>> = BTreeMap::new();
    let mut after = None;
    loop {
        let page = store.follow_ups_page(deletion.tenant, after, BILLING_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for follow_up in page.iter().filter(|f| f.state == FollowUpState::Sent) {
            let month = follow_up.sent_at.unwrap_or(follow_up.updated_at).format("%Y-%m");
            *sends.entry(month.to_string()).or_default().entry(follow_up.channel).or_default() += 1;
        }
    }
    Ok(BillingRecord {
        tenant: deletion.tenant,
        plan: deletion.plan.clone(),
        sends,
        deleted_at: deletion.requested_at,
    })
}

/// Removes the sent messages older than `retention.sent_message_days` by the engine's clock.
/// With 0 days no new message is stored, and every message kept under an earlier setting is
/// removed. Returns how many were removed.
pub async fn sweep_sent_messages(engine: &Engine) -> anyhow::Result<u64> {
    let days = engine.config().retention.sent_message_days;
    let before: DateTime<Utc> = engine.clock().now() - chrono::Duration::days(i64::from(days));
    let mut total = 0;
    loop {
        let removed = engine.store().purge_sent_messages(before, SWEEP_CHUNK).await?;
        total += removed;
        metrics::counter!(telemetry::SENT_MESSAGES_EXPIRED).increment(removed);
        if removed < SWEEP_CHUNK as u64 {
            break;
        }
    }
    if total > 0 {
        tracing::info!(removed = total, %before, "expired sent messages removed");
    }
    Ok(total)
}
