//! The engine: the actors, the store and the clock, and the loop that runs dispatch rounds.
//!
//! Under the system clock ([`Engine::run_forever`]) every tenant has a driver of its own: a
//! task that runs the tenant's round, then sleeps until the tenant next has work, at most one
//! tick, or until new work arrives for it. One tenant's slow round (a slow provider, a round
//! full of work) therefore never delays another tenant's. Under a virtual clock
//! ([`Engine::run_until_settled`]) one loop runs every tenant's round and then jumps the clock
//! to the earliest instant any tenant has work, which compresses days into seconds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use anyhow::Context as _;
use chrono::{DateTime, Utc};
use followup_adapters::gmail::GmailClient;
use followup_adapters::http::{HttpSettings, build_http_client};
use followup_adapters::oauth::{OAuthClientSettings, OAuthRefresher};
use followup_adapters::outlook::GraphClient;
use followup_adapters::stripe_api::StripeClient;
use followup_adapters::twilio::TwilioClient;
use followup_core::api::KeyRotationReport;
use followup_core::clock::{Clock, VirtualClock};
use followup_core::crypto::CryptoError;
use followup_core::domain::{Channel, Provider, Tenant, TenantPause};
use followup_core::ids::{FollowUpId, ScheduleId, TenantId};
use followup_core::limits::{ConnectionLimits, SendLimits};
use followup_core::store::sealed::SealedStore;
use followup_core::store::{Store, StoreError};
use futures_util::future::join_all;
use tokio::sync::Notify;

use crate::actors::billing::metering::MeterSettings;
use crate::actors::billing::{BillingActor, RegisterTenant, ReleaseTenant};
use crate::actors::null_provider::NullProvider;
use crate::actors::provider::{ProviderActor, ProviderClient, ProviderSettings, RestoreSends};
use crate::actors::tenant::{
    CancelSchedule, CancelSchedules, DispatchDeps, ReleaseHeld, RetryDead, RoundReport, RunDue,
    TenantActor, earliest,
};
use crate::breaker::BreakerSettings;
use crate::cluster::{LeaseKeeper, TenantLease};
use crate::config::{Config, ProvidersConfig, ProvidersMode};
use crate::lifecycle::SendGate;
use crate::operator_view::{LiveStats, OverviewCache};
use crate::storage::StoreSelection;
use crate::telemetry::{self, LatenessHistogram};
use crate::tokens::{RefreshPolicy, TokenKeeper};
use crate::unsubscribe::UnsubscribeLinks;

/// Base URLs the provider clients send to.
#[derive(Clone, Debug)]
pub struct ProviderUrls {
    pub gmail: String,
    pub graph: String,
    pub twilio: String,
}

#[derive(Debug)]
pub struct Engine {
    deps: Arc<DispatchDeps>,
    /// The store every part of the engine uses (`deps.store` is the same object): it seals
    /// sensitive fields under tenants' data keys.
    sealed: Arc<SealedStore>,
    config: Config,
    /// Stripe's API, when a secret key is configured.
    stripe: Option<StripeClient>,
    tenants: Mutex<HashMap<TenantId, TenantHandle>>,
    /// One arbiter (thread with its own event loop) per core; tenant actors are spread over
    /// them round-robin.
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: AtomicUsize,
    /// Woken when a tenant is added, so that [`Engine::run_forever`] starts its driver.
    new_tenant: Notify,
    /// Woken when a tenant's deletion begins, so that its purge starts at once.
    purge_wake: Notify,
    /// The leases of the tenants this engine dispatches.
    leases: LeaseKeeper,
    /// The operator overview's last count, kept by [`crate::operator_view::spawn_refresher`].
    overview: OverviewCache,
    /// Set when [`Engine::run_forever`] begins its stop: `/readyz` then answers 503, so that
    /// a load balancer sends no more work while the rounds under way finish.
    stopping: std::sync::atomic::AtomicBool,
}

/// How long the readiness check waits for the store.
const READY_STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// A tenant's actor and the signal that wakes its driver.
#[derive(Clone, Debug)]
struct TenantHandle {
    actor: Addr<TenantActor>,
    /// Woken when new work arrives for the tenant, so its driver does not wait out its tick.
    wake: Arc<Notify>,
    /// Stopped when the tenant is deleted.
    gate: Arc<SendGate>,
}

impl Engine {
    /// Starts the actors, takes the leases of this node's share of the tenants (settling what
    /// their previous owner left in flight) and starts an actor for each, then keeps the leases
    /// in the background. A single node takes every tenant. Must run inside an actix system.
    ///
    /// `store` is the plain store. The engine wraps it in a [`SealedStore`] under the master
    /// keys of `config`, and fails when they do not open every tenant's data key.
    pub async fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: Config,
        urls: ProviderUrls,
    ) -> anyhow::Result<Arc<Self>> {
        let keyring = config.load_keyring()?;
        let sealed = Arc::new(SealedStore::new(store, keyring));
        let tenant_keys =
            sealed.verify_keys().await.context("cannot open the tenants' data keys")?;
        tracing::info!(tenant_keys, "master keys open every tenant's data key");
        let store: Arc<dyn Store> = sealed.clone();
        let leases = LeaseKeeper::new(&config.cluster)?;
        tracing::info!(node = leases.node(), "engine node starting");

        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arbiters: Vec<ArbiterHandle> = (0..cores).map(|_| Arbiter::new().handle()).collect();
        let live = Arc::new(LiveStats::default());
        let providers = start_providers(&config, &urls, &clock, &arbiters, &live)?;
        config.validate_plans()?;
        let stripe = stripe_client(&config)?;
        let metering = stripe.clone().map(|stripe| MeterSettings {
            stripe,
            clock: clock.clone(),
            flush_interval: Duration::from_secs(config.billing.stripe.meter_flush_seconds.max(1)),
            requests_per_second: config.billing.stripe.meter_requests_per_second,
        });
        let billing = BillingActor::start_in_arbiter(&arbiters[0], {
            let plans = config.plans.clone();
            let store = store.clone();
            let block = config.billing.quota_block;
            move |_| {
                let actor = BillingActor::new(store, plans, block);
                match metering {
                    Some(settings) => actor.with_metering(settings),
                    None => actor,
                }
            }
        });
        let tokens = Arc::new(start_token_keeper(&config, &store, &clock)?);
        let deps = Arc::new(DispatchDeps {
            store,
            clock,
            tokens,
            providers,
            billing,
            config: config.dispatch.clone(),
            public_base_url: config.webhooks.public_base_url.clone(),
            keep_sent_messages: config.retention.sent_message_days > 0,
            // RFC 8058 one-click needs HTTPS, so a plain-HTTP base URL gets no links.
            unsubscribe_links: config
                .webhooks
                .public_base_url
                .as_deref()
                .filter(|base| base.starts_with("https://"))
                .map(|base| UnsubscribeLinks::new(base, sealed.clone())),
            lateness: Mutex::new(LatenessHistogram::default()),
            live,
        });
        let engine = Arc::new(Self {
            deps,
            sealed,
            config,
            stripe,
            tenants: Mutex::default(),
            arbiters,
            next_arbiter: AtomicUsize::new(0),
            new_tenant: Notify::new(),
            purge_wake: Notify::new(),
            leases,
            overview: OverviewCache::default(),
            stopping: std::sync::atomic::AtomicBool::new(false),
        });
        engine.leases.run_pass(&engine).await?;
        crate::cluster::spawn_lease_keeper(&engine);
        Ok(engine)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.deps.store
    }

    /// Runs the readiness checks: the engine is not stopping, the store answers a read within
    /// two seconds, and the provider, billing and tenant actors still take messages. Returns
    /// the failing checks, each with its name and a reason that names no address or secret.
    pub async fn readiness(&self) -> Vec<(&'static str, String)> {
        let mut failing = Vec::new();
        if self.stopping.load(Ordering::Acquire) {
            failing.push(("stopping", "the engine is stopping".to_owned()));
        }
        let probe = self.deps.store.tenant(TenantId(uuid::Uuid::nil()));
        match tokio::time::timeout(READY_STORE_TIMEOUT, probe).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "readiness: the store failed a read");
                failing.push(("store", "the store failed a read".to_owned()));
            }
            Err(_) => failing.push(("store", "the store did not answer within 2 s".to_owned())),
        }
        let stopped_providers: Vec<&str> = self
            .deps
            .providers
            .iter()
            .filter(|(_, actor)| !actor.connected())
            .map(|(provider, _)| provider.as_str())
            .collect();
        if !stopped_providers.is_empty() {
            failing.push(("actors", format!("provider actors stopped: {stopped_providers:?}")));
        }
        if !self.deps.billing.connected() {
            failing.push(("actors", "the billing actor stopped".to_owned()));
        }
        let stopped_tenants =
            self.handles().iter().filter(|(_, handle)| !handle.actor.connected()).count();
        if stopped_tenants > 0 {
            failing.push(("actors", format!("{stopped_tenants} tenant actors stopped")));
        }
        failing
    }

    /// The live counters of the provider queues, lateness and failures.
    pub fn live(&self) -> &Arc<LiveStats> {
        &self.deps.live
    }

    pub fn overview(&self) -> &OverviewCache {
        &self.overview
    }

    /// Returns the sealed store, for what needs a tenant's keys: record ids, rotation and
    /// [`Engine::destroy_tenant_key`].
    pub fn sealed_store(&self) -> &Arc<SealedStore> {
        &self.sealed
    }

    /// Returns the tenants whose data key exists. A tenant whose key was destroyed keeps its
    /// records until they are purged, but none of them can be read, so it gets no actor.
    pub async fn live_tenants(&self) -> anyhow::Result<Vec<Tenant>> {
        let mut live = Vec::new();
        for tenant in self.deps.store.tenants().await? {
            match self.sealed.tenant_key(tenant.id).await {
                Ok(_) => live.push(tenant),
                Err(StoreError::Crypto(CryptoError::NoDataKey(_))) => {
                    tracing::info!(tenant = %tenant.id, "tenant data key destroyed; not dispatching");
                }
                Err(error) => return Err(error.into()),
            }
        }
        Ok(live)
    }

    /// Destroys the data key of `tenant` (crypto-shredding): from then on no sealed field of
    /// the tenant can be read, by this process or any other. Returns whether a key existed.
    /// Stop the tenant's dispatch first, or its rounds fail with errors naming the missing key.
    pub async fn destroy_tenant_key(&self, tenant: TenantId) -> anyhow::Result<bool> {
        let destroyed = self.sealed.destroy_tenant_key(tenant).await?;
        if destroyed {
            tracing::info!(%tenant, "tenant data key destroyed");
        }
        Ok(destroyed)
    }

    /// Reads the master key file again and re-wraps every tenant's data key under its newest
    /// key, while dispatch goes on. Without a key file there is nothing to rotate to.
    pub async fn rotate_master_keys(&self) -> anyhow::Result<KeyRotationReport> {
        anyhow::ensure!(
            self.config.master_key_file.is_some(),
            "rotation needs a master key file: the engine runs with FOLLOWUP_MASTER_KEY only; \
             restart it with --master-key-file FILE listing the old key, then the new one"
        );
        let keyring = self.config.load_keyring()?;
        let report = self.sealed.rotate(keyring).await?;
        tracing::info!(
            rewrapped = report.rewrapped,
            newest = %report.newest_master_key_id,
            in_use = ?report.master_keys_in_use,
            "master keys rotated"
        );
        Ok(report)
    }

    /// The keeper of this node's tenant leases.
    pub fn leases(&self) -> &LeaseKeeper {
        &self.leases
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.deps.clock
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Returns the Stripe API client, or `None` when no secret key is configured.
    pub fn stripe(&self) -> Option<&StripeClient> {
        self.stripe.as_ref()
    }

    /// Hands each connection of `tenant` the sends it made in the last day, so that its daily
    /// caps hold across a restart.
    async fn restore_recent_sends(&self, tenant: TenantId) -> anyhow::Result<()> {
        let since = self.deps.clock.now() - chrono::Duration::days(1) - chrono::Duration::hours(1);
        let connections = self.deps.store.connections(tenant).await?;
        for channel in Channel::ALL {
            // The connection a round sends this channel through (`TenantRound::run_channel`).
            let Some(connection) = connections.iter().find(|c| c.provider.carries(channel)) else {
                continue;
            };
            let sent_at = self.deps.store.sends_since(tenant, channel, since).await?;
            if sent_at.is_empty() {
                continue;
            }
            let Some(provider) = self.deps.providers.get(&connection.provider) else {
                continue;
            };
            let limits = ConnectionLimits::of(connection, channel);
            provider
                .send(RestoreSends { connection: connection.id, channel, limits, sent_at })
                .await?;
        }
        Ok(())
    }

    /// Takes the lease of a new tenant, unless another node holds it, and starts its actor, so
    /// that it is dispatched at once; lease passes even out the share later.
    pub async fn add_tenant(&self, tenant: &Tenant) -> anyhow::Result<()> {
        self.leases.take_tenant(self, tenant).await?;
        Ok(())
    }

    /// Starts the tenant's actor (if it has none) under `lease` and registers its plan with
    /// billing. The lease keeper calls it once it holds the tenant's lease.
    pub(crate) async fn start_tenant(
        &self,
        tenant: &Tenant,
        lease: Arc<TenantLease>,
    ) -> anyhow::Result<()> {
        self.restore_recent_sends(tenant.id).await?;
        self.deps
            .billing
            .send(RegisterTenant { tenant: tenant.id, plan: tenant.plan.clone() })
            .await?
            .map_err(anyhow::Error::msg)?;
        let mut tenants =
            self.tenants.lock().map_err(|_| anyhow::anyhow!("tenant map poisoned"))?;
        if let std::collections::hash_map::Entry::Vacant(slot) = tenants.entry(tenant.id) {
            let index = self.next_arbiter.fetch_add(1, Ordering::Relaxed) % self.arbiters.len();
            let deps = self.deps.clone();
            let id = tenant.id;
            let gate = Arc::new(SendGate::new());
            gate.set_paused(tenant.paused.is_some());
            let actor_gate = gate.clone();
            let actor = TenantActor::start_in_arbiter(&self.arbiters[index], move |_| {
                TenantActor::new(id, deps, actor_gate, lease)
            });
            slot.insert(TenantHandle { actor, wake: Arc::new(Notify::new()), gate });
        }
        drop(tenants);
        self.new_tenant.notify_one();
        self.notify_tenant(tenant.id);
        Ok(())
    }

    /// Cancels the follow-ups of a schedule that have not left yet, through the tenant's actor
    /// so that it cannot interleave with a dispatch round. Returns how many were cancelled.
    pub async fn cancel_schedule(
        &self,
        tenant: TenantId,
        schedule: ScheduleId,
    ) -> anyhow::Result<usize> {
        let actor = self
            .tenants
            .lock()
            .map_err(|_| anyhow::anyhow!("tenant map poisoned"))?
            .get(&tenant)
            .map(|handle| handle.actor.clone())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "tenant {tenant} is not dispatched by this node (node {}): send the cancel to \
                     the node that owns the tenant, listed by GET /admin/v1/cluster",
                    self.leases.node()
                )
            })?;
        let now = self.deps.clock.now();
        Ok(actor.send(CancelSchedule { schedule, now }).await??)
    }

    /// Pauses or resumes a tenant's sends: stores the pause on the tenant record, so that it
    /// survives a restart, and tells this node's actor. Returns the tenant as stored, or `None`
    /// when there is no such tenant.
    ///
    /// NOTE: only this node's actor learns it at once. Another node dispatching the tenant
    /// reads the pause when it next takes the tenant's lease.
    pub async fn set_tenant_paused(
        &self,
        tenant: TenantId,
        pause: Option<TenantPause>,
    ) -> anyhow::Result<Option<Tenant>> {
        let Some(mut record) = self.deps.store.tenant(tenant).await? else {
            return Ok(None);
        };
        let paused = pause.is_some();
        record.paused = pause;
        self.deps.store.put_tenant(record.clone()).await?;
        let handle = self.tenants.lock().ok().and_then(|tenants| tenants.get(&tenant).cloned());
        if let Some(handle) = handle {
            handle.gate.set_paused(paused);
        }
        if !paused {
            self.notify_tenant(tenant);
        }
        Ok(Some(record))
    }

    /// Returns dead follow-ups of a tenant to pending through its actor (all of them, or those
    /// of `follow_ups`), and returns how many.
    pub async fn retry_dead(
        &self,
        tenant: TenantId,
        follow_ups: Option<Vec<FollowUpId>>,
    ) -> anyhow::Result<usize> {
        let actor = self.tenant_actor(tenant)?;
        let now = self.deps.clock.now();
        let retried = actor.send(RetryDead { follow_ups, now }).await??;
        if retried > 0 {
            self.notify_tenant(tenant);
        }
        Ok(retried)
    }

    /// Returns the actor of a tenant this node dispatches, or an error naming the node.
    fn tenant_actor(&self, tenant: TenantId) -> anyhow::Result<Addr<TenantActor>> {
        self.tenants
            .lock()
            .map_err(|_| anyhow::anyhow!("tenant map poisoned"))?
            .get(&tenant)
            .map(|handle| handle.actor.clone())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "tenant {tenant} is not dispatched by this node (node {}): send the request \
                     to the node that owns the tenant, listed by GET /admin/v1/cluster",
                    self.leases.node()
                )
            })
    }

    /// Moves a tenant to another plan: stores it, tells billing, and returns the tenant's held
    /// follow-ups to pending so that the next rounds reserve quota under the new plan. Returns
    /// how many were released.
    ///
    /// NOTE: only this node's billing actor learns the new plan. When another node dispatches
    /// the tenant, that node keeps the old plan, and the held follow-ups, until it next takes
    /// the tenant's lease.
    pub async fn change_plan(&self, mut tenant: Tenant, plan: String) -> anyhow::Result<usize> {
        anyhow::ensure!(
            self.config.plans.contains_key(&plan),
            "unknown plan {plan:?}: known plans {:?}",
            self.config.plans.keys().collect::<Vec<_>>()
        );
        let previous = std::mem::replace(&mut tenant.plan, plan.clone());
        self.deps.store.put_tenant(tenant.clone()).await?;
        tracing::info!(tenant = %tenant.id, from = %previous, to = %plan, "tenant plan changed");
        let actor = self
            .tenants
            .lock()
            .map_err(|_| anyhow::anyhow!("tenant map poisoned"))?
            .get(&tenant.id)
            .map(|handle| handle.actor.clone());
        let Some(actor) = actor else {
            return Ok(0);
        };
        let register = RegisterTenant { tenant: tenant.id, plan };
        self.deps.billing.send(register).await?.map_err(anyhow::Error::msg)?;
        let released = actor.send(ReleaseHeld { now: self.deps.clock.now() }).await??;
        self.notify_tenant(tenant.id);
        Ok(released)
    }

    /// Cancels, with `reason`, the follow-ups of the schedules that have not left yet, through
    /// the tenant's actor. Returns how many were cancelled, or `None` when this node does not
    /// dispatch the tenant: its owner's rounds then find the stop at send time.
    pub async fn cancel_schedules(
        &self,
        tenant: TenantId,
        schedules: Vec<ScheduleId>,
        reason: String,
    ) -> anyhow::Result<Option<usize>> {
        let actor = self
            .tenants
            .lock()
            .map_err(|_| anyhow::anyhow!("tenant map poisoned"))?
            .get(&tenant)
            .map(|handle| handle.actor.clone());
        let Some(actor) = actor else {
            return Ok(None);
        };
        let now = self.deps.clock.now();
        Ok(Some(actor.send(CancelSchedules { schedules, reason, now }).await??))
    }

    /// Stops the tenant's sends for good and removes its actor from the engine. Returns once
    /// the sends under way have finished. The tenant's driver then ends, and its actor with it.
    pub async fn stop_tenant(&self, tenant: TenantId) {
        if let Some(stopping) = self.detach_tenant(tenant) {
            stopping.await;
        }
    }

    /// Removes the tenant's actor from the engine at once, so that no new round or cancel
    /// reaches it. Returns the future that stops its sends and completes once those under
    /// way have finished, or `None` when the tenant had no actor.
    pub(crate) fn detach_tenant(
        &self,
        tenant: TenantId,
    ) -> Option<impl std::future::Future<Output = ()> + 'static> {
        let handle = self.tenants.lock().ok().and_then(|mut tenants| tenants.remove(&tenant))?;
        let billing = self.deps.billing.clone();
        Some(async move {
            handle.gate.stop().await;
            handle.wake.notify_one();
            // After the gate, so that no batch of this node still uses the quota it gives back.
            if let Err(error) = billing.send(ReleaseTenant { tenant }).await {
                tracing::warn!(%tenant, %error, "billing actor gone; held quota not released");
            }
        })
    }

    /// Wakes the purge task, after a deletion began.
    pub fn wake_purge(&self) {
        self.purge_wake.notify_one();
    }

    /// Completes when [`Engine::wake_purge`] is called.
    pub async fn purge_requested(&self) {
        self.purge_wake.notified().await;
    }

    /// Wakes the driver of `tenant` early, after an upload or a change of connection.
    pub fn notify_tenant(&self, tenant: TenantId) {
        if let Ok(tenants) = self.tenants.lock()
            && let Some(handle) = tenants.get(&tenant)
        {
            handle.wake.notify_one();
        }
    }

    fn handles(&self) -> Vec<(TenantId, TenantHandle)> {
        match self.tenants.lock() {
            Ok(tenants) => tenants.iter().map(|(id, handle)| (*id, handle.clone())).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Runs one round for every tenant at the clock's current instant, all at once, and
    /// returns when the slowest is done.
    pub async fn run_round(&self) -> RoundReport {
        let now = self.deps.clock.now();
        let handles = self.handles();
        let rounds = handles.iter().map(|(_, handle)| handle.actor.send(RunDue { now }));
        let mut report = RoundReport::default();
        for ((tenant, _), result) in handles.iter().zip(join_all(rounds).await) {
            match result {
                Ok(Ok(round)) => report.merge(round),
                Ok(Err(error)) => {
                    tracing::error!(%tenant, %error, "dispatch round failed; retrying next tick");
                    report.next_wake = earliest(report.next_wake, Some(now + tick(&self.config)));
                }
                Err(error) => {
                    tracing::error!(%tenant, %error, "tenant actor unreachable");
                }
            }
        }
        report
    }

    /// Dispatches under the system clock until `shutdown` completes: starts a driver per
    /// tenant, and one for each tenant added later. On shutdown every driver finishes the
    /// round it is in, so that no round is cut off between its writes.
    pub async fn run_forever(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        // One driver per tenant actor. A tenant whose lease was lost and taken again has a new
        // actor, told apart by its gate, while the old driver ends by itself.
        let mut drivers: HashMap<TenantId, (Arc<SendGate>, tokio::task::JoinHandle<()>)> =
            HashMap::new();
        loop {
            for (tenant, handle) in self.handles() {
                let current = drivers.get(&tenant).is_some_and(|(gate, driver)| {
                    Arc::ptr_eq(gate, &handle.gate) && !driver.is_finished()
                });
                if !current {
                    let gate = handle.gate.clone();
                    let driver = drive_tenant(self.clone(), tenant, handle, stopped.clone());
                    drivers.insert(tenant, (gate, actix_rt::spawn(driver)));
                }
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = self.new_tenant.notified() => {}
            }
        }
        self.stopping.store(true, Ordering::Release);
        tracing::info!("stopping: no new rounds; waiting for the rounds under way");
        let _ = stop.send(true);
        for (tenant, (_, driver)) in drivers {
            if let Err(error) = driver.await {
                tracing::error!(%tenant, %error, "tenant driver ended abnormally");
            }
        }
        self.leases.release_all(&self).await;
    }

    /// Runs one round at the virtual clock's instant, then moves the clock to the next instant
    /// with work unless that is after `until`. Returns the round's instant and what follows.
    async fn virtual_step(&self, clock: &VirtualClock, until: DateTime<Utc>) -> VirtualStep {
        let report = self.run_round().await;
        let at = clock.now();
        let next = match report.next_wake {
            None => NextWork::None,
            Some(next) if next <= at => NextWork::Now,
            Some(next) if next > until => NextWork::AfterUntil(next),
            Some(next) => {
                clock.advance_to(next);
                NextWork::Moved
            }
        };
        VirtualStep { at, next_wake: report.next_wake, next }
    }

    /// Dispatches under a virtual clock until no follow-up is waiting, advancing the clock to
    /// each next instant with work. `progress` is called after every round with the clock's
    /// instant. Stops early, with an error, if the clock passes `deadline`.
    pub async fn run_until_settled(
        &self,
        clock: &VirtualClock,
        deadline: DateTime<Utc>,
        mut progress: impl FnMut(DateTime<Utc>),
    ) -> anyhow::Result<()> {
        loop {
            let step = self.virtual_step(clock, deadline).await;
            progress(step.at);
            match step.next {
                NextWork::None => return Ok(()),
                NextWork::Now | NextWork::Moved => {}
                NextWork::AfterUntil(next) => {
                    anyhow::bail!(
                        "follow-ups still waiting at {next}, past the deadline {deadline}"
                    )
                }
            }
        }
    }

    /// Dispatches under a virtual clock every follow-up due up to `until`, jumping the clock
    /// from one instant with work to the next, for at most about `wall_budget` of wall time.
    ///
    /// Ends when nothing is waiting, and the clock stays at the last instant with work. Ends
    /// when the next work is after `until`, and the clock moves to `until`. Ends when the
    /// budget is spent, and the clock stays where dispatch got to, so a further call carries
    /// on. A round under way is always finished, so a run can exceed the budget by one round.
    pub async fn run_virtual_clock(
        &self,
        clock: &VirtualClock,
        until: DateTime<Utc>,
        wall_budget: Duration,
    ) -> VirtualRun {
        let started = std::time::Instant::now();
        let mut rounds = 0;
        loop {
            let step = self.virtual_step(clock, until).await;
            rounds += 1;
            let outcome = match step.next {
                NextWork::None => Some(VirtualRunOutcome::Settled),
                NextWork::AfterUntil(_) => {
                    clock.advance_to(until);
                    Some(VirtualRunOutcome::UntilReached)
                }
                NextWork::Now | NextWork::Moved => None,
            };
            let outcome = outcome.or_else(|| {
                (started.elapsed() >= wall_budget).then_some(VirtualRunOutcome::BudgetSpent)
            });
            if let Some(outcome) = outcome {
                return VirtualRun { outcome, now: clock.now(), next_wake: step.next_wake, rounds };
            }
        }
    }

    /// Lateness of every accepted send since start.
    pub fn lateness(&self) -> LatenessHistogram {
        self.deps.lateness.lock().map(|h| h.clone()).unwrap_or_default()
    }
}

/// One round under a virtual clock, from [`Engine::virtual_step`].
struct VirtualStep {
    /// The clock's instant during the round.
    at: DateTime<Utc>,
    /// The earliest instant with work after the round, `None` when nothing is waiting.
    next_wake: Option<DateTime<Utc>>,
    next: NextWork,
}

/// The work left after a round under a virtual clock.
enum NextWork {
    /// Nothing is waiting.
    None,
    /// More work is due at the clock's instant.
    Now,
    /// The clock was moved to the next instant with work.
    Moved,
    /// The next work is at this instant, after the limit the round was given.
    AfterUntil(DateTime<Utc>),
}

/// The way a call of [`Engine::run_virtual_clock`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VirtualRunOutcome {
    /// No follow-up is waiting.
    Settled,
    /// The next work is after the requested instant, and the clock is at that instant.
    UntilReached,
    /// The wall-time budget was spent with work left before the requested instant.
    BudgetSpent,
}

/// The result of a call of [`Engine::run_virtual_clock`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct VirtualRun {
    pub outcome: VirtualRunOutcome,
    /// The virtual clock's instant when the call ended.
    pub now: DateTime<Utc>,
    /// The earliest instant with work after the last round, `None` when nothing is waiting.
    pub next_wake: Option<DateTime<Utc>>,
    /// Dispatch rounds this call ran.
    pub rounds: u64,
}

/// Maximum calls in one Gmail batch request.
const GMAIL_MAX_BATCH: usize = 100;
/// Maximum requests in one Graph `$batch`.
const GRAPH_MAX_BATCH: usize = 20;

/// Runs the rounds of one tenant under the system clock until `stopped` turns true.
async fn drive_tenant(
    engine: Arc<Engine>,
    tenant: TenantId,
    handle: TenantHandle,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let tick = tick(&engine.config);
    let idle_poll = idle_poll(&engine.config);
    while !*stopped.borrow() && !handle.gate.is_stopped() {
        let now = engine.deps.clock.now();
        let next_wake = match handle.actor.send(RunDue { now }).await {
            Ok(Ok(report)) => report.next_wake,
            Ok(Err(error)) => {
                let key = format!("round failed {tenant}");
                if let Some(suppressed) = telemetry::repeated_errors().allow(&key) {
                    tracing::error!(%tenant, %error, suppressed, "dispatch round failed; retrying next tick");
                }
                Some(now + tick)
            }
            Err(error) => {
                tracing::error!(%tenant, %error, "tenant actor unreachable; its driver stops");
                return;
            }
        };
        let now = engine.deps.clock.now();
        let wait = match next_wake {
            Some(next) => (next - now).to_std().unwrap_or_default().min(idle_poll),
            None => idle_poll,
        };
        if wait.is_zero() {
            // More work is due at once; let other tasks of this thread run first.
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            _ = stopped.changed() => return,
            () = tokio::time::sleep(wait) => {}
            () = handle.wake.notified() => {}
        }
    }
}

fn tick(config: &Config) -> Duration {
    Duration::from_millis(config.dispatch.tick_millis.max(10))
}

/// Maximum sleep of a tenant driver; see `DispatchConfig::idle_poll_millis`.
fn idle_poll(config: &Config) -> Duration {
    let default = match config.store {
        StoreSelection::MongoDb(_) => config.dispatch.tick_millis,
        StoreSelection::Embedded | StoreSelection::Directory(_) => EMBEDDED_IDLE_POLL_MILLIS,
    };
    let millis = config.dispatch.idle_poll_millis.unwrap_or(default);
    Duration::from_millis(millis.max(crate::config::MIN_IDLE_POLL_MILLIS))
}

/// Default of `dispatch.idle_poll_millis` on the embedded store.
const EMBEDDED_IDLE_POLL_MILLIS: u64 = 30_000;

fn provider_settings(config: &ProvidersConfig, provider: Provider) -> ProviderSettings {
    let batch_size = match provider {
        Provider::Gmail => config.gmail_batch_size.clamp(1, GMAIL_MAX_BATCH),
        Provider::Outlook => config.graph_batch_size.clamp(1, GRAPH_MAX_BATCH),
        Provider::Twilio => 1,
    };
    let seconds = |s: u64| chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX).max(1));
    let provider_limits = match provider {
        Provider::Gmail => Some(SendLimits {
            per_minute: config.gmail_project_per_minute,
            per_day: config.gmail_project_per_day,
        }),
        Provider::Outlook => {
            Some(SendLimits { per_minute: config.graph_app_per_minute, per_day: u32::MAX })
        }
        // Twilio's limits are per sender and per account, which connections already carry.
        Provider::Twilio => None,
    };
    ProviderSettings {
        provider_limits,
        max_requests_in_flight: config.concurrency,
        batch_size,
        shared_batches: config.gmail_shared_batches,
        linger: Duration::from_millis(config.batch_linger_millis),
        breaker: BreakerSettings {
            failure_threshold: config.breaker_failure_threshold,
            open_for: seconds(config.breaker_open_seconds),
            max_open_for: seconds(config.breaker_max_open_seconds.max(config.breaker_open_seconds)),
        },
    }
}

/// Builds the token keeper from the configured OAuth clients. A client without both an id
/// and a secret is left out, and its provider's tokens are not refreshed.
fn start_token_keeper(
    config: &Config,
    store: &Arc<dyn Store>,
    clock: &Arc<dyn Clock>,
) -> anyhow::Result<TokenKeeper> {
    let oauth = &config.oauth;
    let client = |name: &str, id: &Option<String>, secret: &Option<_>, url: &str| {
        let settings = match (id, secret) {
            (Some(id), Some(secret)) => Some(OAuthClientSettings {
                client_id: id.clone(),
                client_secret: Clone::clone(secret),
                token_url: url.to_owned(),
            }),
            _ => None,
        };
        if settings.is_none() {
            tracing::warn!(
                provider = name,
                "no OAuth client id and secret configured; access tokens are not refreshed"
            );
        }
        settings
    };
    let google = client(
        "gmail",
        &oauth.google_client_id,
        &oauth.google_client_secret,
        &oauth.google_token_url,
    );
    let microsoft = client(
        "outlook",
        &oauth.microsoft_client_id,
        &oauth.microsoft_client_secret,
        &oauth.microsoft_token_url,
    );
    let settings = HttpSettings {
        request_timeout: Duration::from_secs(config.providers.request_timeout_seconds.max(1)),
        ..HttpSettings::default()
    };
    let refresher = OAuthRefresher::new(&settings, google, microsoft)?;
    let policy = RefreshPolicy {
        margin: chrono::Duration::seconds(oauth.refresh_margin_seconds.min(86_400) as i64),
        first_backoff: chrono::Duration::seconds(5),
        max_backoff: chrono::Duration::seconds(oauth.max_backoff_seconds.clamp(5, 86_400) as i64),
    };
    Ok(TokenKeeper::new(refresher, store.clone(), clock.clone(), policy))
}

fn start_providers(
    config: &Config,
    urls: &ProviderUrls,
    clock: &Arc<dyn Clock>,
    arbiters: &[ArbiterHandle],
    live: &Arc<LiveStats>,
) -> anyhow::Result<HashMap<Provider, Addr<ProviderActor>>> {
    let settings = HttpSettings {
        request_timeout: Duration::from_secs(config.providers.request_timeout_seconds.max(1)),
        ..HttpSettings::default()
    };
    let http = build_http_client(&settings)?;
    let parse = |name: &str, url: &str| {
        reqwest::Url::parse(url).with_context(|| format!("invalid {name} base URL {url:?}"))
    };
    let mut providers = HashMap::new();
    for (index, provider) in Provider::ALL.into_iter().enumerate() {
        let client = match provider {
            _ if config.providers.mode == ProvidersMode::Null => {
                ProviderClient::Null(NullProvider::new(provider))
            }
            Provider::Gmail => ProviderClient::Gmail(
                GmailClient::new(http.clone(), parse("gmail", &urls.gmail)?)
                    .with_clock(clock.clone())
                    .with_max_batch(config.providers.gmail_batch_size),
            ),
            Provider::Outlook => ProviderClient::Outlook(
                GraphClient::new(http.clone(), parse("graph", &urls.graph)?)
                    .with_clock(clock.clone()),
            ),
            Provider::Twilio => ProviderClient::Twilio(
                TwilioClient::new(http.clone(), parse("twilio", &urls.twilio)?)
                    .with_clock(clock.clone()),
            ),
        };
        let clock = clock.clone();
        let live = live.clone();
        let settings = provider_settings(&config.providers, provider);
        let arbiter = &arbiters[(index + 1) % arbiters.len()];
        let actor = ProviderActor::start_in_arbiter(arbiter, move |_| {
            ProviderActor::new(provider, client, clock, settings).with_live_stats(live)
        });
        providers.insert(provider, actor);
    }
    Ok(providers)
}

/// Builds the Stripe API client when a secret key is configured, after checking its base URL
/// against the plain-HTTP rule of the provider APIs.
fn stripe_client(config: &Config) -> anyhow::Result<Option<StripeClient>> {
    let settings = &config.billing.stripe;
    let Some(secret_key) = settings.load_secret_key()? else {
        return Ok(None);
    };
    config.providers.check_base_url("Stripe", &settings.api_base)?;
    let timeout = std::time::Duration::from_secs(settings.request_timeout_seconds.max(1));
    let client = StripeClient::new(&settings.api_base, &secret_key, timeout)?;
    tracing::info!(api_base = %client.api_base(), "Stripe API client configured");
    Ok(Some(client))
}
