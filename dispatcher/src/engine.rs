//! The engine: the actors, the store and the clock, and the loop that runs dispatch rounds.
//!
//! Under the system clock the loop runs a round for every tenant, then sleeps until the
//! earliest instant any tenant has work, at most one tick, or until new work arrives. Under a
//! virtual clock ([`Engine::run_until_settled`]) it jumps the clock to that instant instead of
//! sleeping, which compresses days into seconds.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use anyhow::Context as _;
use chrono::{DateTime, Utc};
use followup_adapters::gmail::GmailClient;
use followup_adapters::http::{HttpSettings, build_http_client};
use followup_adapters::outlook::GraphClient;
use followup_adapters::twilio::TwilioClient;
use followup_core::clock::{Clock, VirtualClock};
use followup_core::domain::{Channel, FollowUpState, Provider, Tenant};
use followup_core::ids::{ScheduleId, TenantId};
use followup_core::store::Store;
use futures_util::future::join_all;
use tokio::sync::Notify;

use crate::actors::billing::{BillingActor, RegisterTenant};
use crate::actors::provider::{ProviderActor, ProviderClient};
use crate::actors::tenant::{
    CancelSchedule, DispatchDeps, RoundReport, RunDue, TenantActor, earliest,
};
use crate::config::Config;
use crate::telemetry::{self, LatenessHistogram};

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
    config: Config,
    tenants: Mutex<HashMap<TenantId, Addr<TenantActor>>>,
    /// One arbiter (thread with its own event loop) per core; tenant actors are spread over
    /// them round-robin.
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: AtomicUsize,
    /// Woken when new work arrives, so the loop does not wait out its tick.
    new_work: Notify,
}

impl Engine {
    /// Starts the actors, settles what the last stop interrupted, and starts a tenant actor
    /// for every tenant in the store. Must run inside an actix system.
    pub async fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: Config,
        urls: ProviderUrls,
    ) -> anyhow::Result<Arc<Self>> {
        let recovered = store.recover_interrupted().await?;
        if recovered.in_doubt > 0 || recovered.released_claims > 0 {
            tracing::warn!(
                in_doubt = recovered.in_doubt,
                released = recovered.released_claims,
                "recovered follow-ups interrupted by the last stop"
            );
        }

        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arbiters: Vec<ArbiterHandle> = (0..cores).map(|_| Arbiter::new().handle()).collect();
        let providers = start_providers(&config, &urls, &clock, &arbiters)?;
        let billing = BillingActor::start_in_arbiter(&arbiters[0], {
            let plans = config.plans.clone();
            move |_| BillingActor::new(plans)
        });
        let deps = Arc::new(DispatchDeps {
            store,
            clock,
            providers,
            billing,
            config: config.dispatch.clone(),
            lateness: Mutex::new(LatenessHistogram::default()),
        });
        let engine = Arc::new(Self {
            deps,
            config,
            tenants: Mutex::default(),
            arbiters,
            next_arbiter: AtomicUsize::new(0),
            new_work: Notify::new(),
        });
        for tenant in engine.deps.store.tenants().await? {
            engine.add_tenant(&tenant).await?;
        }
        Ok(engine)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.deps.store
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.deps.clock
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Starts the tenant's actor (if it has none) and registers its plan with billing.
    pub async fn add_tenant(&self, tenant: &Tenant) -> anyhow::Result<()> {
        let counts = self.deps.store.count_follow_ups(Some(tenant.id)).await?;
        let already_sent: BTreeMap<Channel, u64> = counts
            .iter()
            .filter(|((_, state), _)| *state == FollowUpState::Sent)
            .map(|((channel, _), n)| (*channel, *n))
            .collect();
        self.deps
            .billing
            .send(RegisterTenant {
                tenant: tenant.id,
                plan: tenant.plan.clone(),
                already_sent,
                now: self.deps.clock.now(),
            })
            .await?
            .map_err(anyhow::Error::msg)?;
        let mut tenants =
            self.tenants.lock().map_err(|_| anyhow::anyhow!("tenant map poisoned"))?;
        if let std::collections::hash_map::Entry::Vacant(slot) = tenants.entry(tenant.id) {
            let index = self.next_arbiter.fetch_add(1, Ordering::Relaxed) % self.arbiters.len();
            let deps = self.deps.clone();
            let id = tenant.id;
            let actor = TenantActor::start_in_arbiter(&self.arbiters[index], move |_| {
                TenantActor::new(id, deps)
            });
            slot.insert(actor);
        }
        drop(tenants);
        self.notify_new_work();
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
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("tenant {tenant} has no actor"))?;
        let now = self.deps.clock.now();
        Ok(actor.send(CancelSchedule { schedule, now }).await??)
    }

    /// Wakes the dispatch loop early, after an upload or a change of connection.
    pub fn notify_new_work(&self) {
        self.new_work.notify_one();
    }

    /// Runs one round for every tenant at the clock's current instant.
    pub async fn run_round(&self) -> RoundReport {
        let now = self.deps.clock.now();
        let actors: Vec<(TenantId, Addr<TenantActor>)> = match self.tenants.lock() {
            Ok(tenants) => tenants.iter().map(|(id, addr)| (*id, addr.clone())).collect(),
            Err(_) => return RoundReport::default(),
        };
        let rounds = actors.iter().map(|(_, actor)| actor.send(RunDue { now }));
        let mut report = RoundReport::default();
        for ((tenant, _), result) in actors.iter().zip(join_all(rounds).await) {
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

    /// Dispatches under the system clock until `shutdown` completes.
    pub async fn run_forever(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let report = self.run_round().await;
            let now = self.deps.clock.now();
            let mut wait = tick(&self.config);
            if let Some(next) = report.next_wake {
                let until_next = (next - now).to_std().unwrap_or(Duration::ZERO);
                wait = wait.min(until_next);
            }
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(wait) => {}
                () = self.new_work.notified() => {}
            }
        }
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
            let report = self.run_round().await;
            let now = clock.now();
            progress(now);
            match report.next_wake {
                None => return Ok(()),
                Some(next) if next <= now => continue,
                Some(next) if next > deadline => {
                    anyhow::bail!(
                        "follow-ups still waiting at {next}, past the deadline {deadline}"
                    )
                }
                Some(next) => clock.advance_to(next),
            }
        }
    }

    /// Lateness of every accepted send since start.
    pub fn lateness(&self) -> LatenessHistogram {
        self.deps.lateness.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// Sets the queue depth gauges from the store. Called when `/metrics` is scraped rather
    /// than every round, because it counts every follow-up.
    pub async fn update_queue_depth(&self) {
        let Ok(counts) = self.deps.store.count_follow_ups(None).await else {
            return;
        };
        for channel in Channel::ALL {
            let waiting: u64 = [FollowUpState::Pending, FollowUpState::Retry]
                .iter()
                .map(|state| counts.get(&(channel, *state)).copied().unwrap_or(0))
                .sum();
            metrics::gauge!(telemetry::QUEUE_DEPTH, "channel" => channel.as_str())
                .set(waiting as f64);
        }
    }
}

fn tick(config: &Config) -> Duration {
    Duration::from_millis(config.dispatch.tick_millis.max(10))
}

fn start_providers(
    config: &Config,
    urls: &ProviderUrls,
    clock: &Arc<dyn Clock>,
    arbiters: &[ArbiterHandle],
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
            Provider::Gmail => ProviderClient::Gmail(
                GmailClient::new(http.clone(), parse("gmail", &urls.gmail)?)
                    .with_clock(clock.clone()),
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
        let concurrency = config.providers.concurrency;
        let arbiter = &arbiters[(index + 1) % arbiters.len()];
        let actor = ProviderActor::start_in_arbiter(arbiter, move |_| {
            ProviderActor::new(provider, client, clock, concurrency)
        });
        providers.insert(provider, actor);
    }
    Ok(providers)
}
