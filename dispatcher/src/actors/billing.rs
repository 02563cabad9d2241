//! The billing actor: plans and monthly quotas per tenant and channel.
//!
//! Usage lives in the store as counters per tenant, billing period (a calendar month in UTC)
//! and channel, so that every engine node draws on the same quota and a restart loses no
//! usage. This actor takes quota from the store in blocks (`[billing] quota_block` sends at a
//! time, or more when a batch needs more) and hands it to tenant actors per batch from what it
//! holds, so that most batches cost no store round trip. A tenant actor reserves for a whole
//! batch before anything goes to a provider, then settles: sends that went out, or may have,
//! are committed in the store, and the rest go back to this node's block for the next batch.
//!
//! Tenants on a plan billed per send also get their committed sends reported to Stripe as
//! Billing Meter events (see [`metering`]).
//!
//! NOTE: a block this node holds when it stops (a crash, or a lease lost without a clean
//! release) stays taken in the store. The tenant can then get up to one block per channel
//! less than its quota that month, never more.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use followup_core::domain::Channel;
use followup_core::ids::TenantId;
use followup_core::store::usage::{BillingPeriod, UsageKey};
use followup_core::store::{Store, StoreError};

use crate::config::{OverQuota, Plan};
use crate::telemetry;

pub mod metering;

use metering::{FlushReport, Meter, MeterSettings, MeteredTenant};

/// Quota this node holds for one counter: reserved in the store, not yet handed to a batch.
type HeldBlock = Arc<tokio::sync::Mutex<u64>>;

#[derive(Debug)]
pub struct BillingActor {
    ledger: Arc<QuotaLedger>,
}

/// The state the actor's futures share. Each counter's block has its own async lock, so that a
/// store round trip for one tenant never waits for another tenant's.
#[derive(Debug)]
struct QuotaLedger {
    store: Arc<dyn Store>,
    plans: BTreeMap<String, Plan>,
    /// Sends taken from the store per reservation that finds the block empty, at least.
    block: u64,
    tenant_plans: Mutex<HashMap<TenantId, String>>,
    blocks: Mutex<HashMap<UsageKey, HeldBlock>>,
    /// Metered usage, when the engine has a Stripe client. One flush runs at a time.
    meter: Option<tokio::sync::Mutex<Meter>>,
}

impl BillingActor {
    pub fn new(store: Arc<dyn Store>, plans: BTreeMap<String, Plan>, block: u64) -> Self {
        let ledger = QuotaLedger {
            store,
            plans,
            block: block.max(1),
            tenant_plans: Mutex::default(),
            blocks: Mutex::default(),
            meter: None,
        };
        Self { ledger: Arc::new(ledger) }
    }

    /// Reports the usage of plans billed per send to Stripe, flushing every
    /// `settings.flush_interval`.
    pub fn with_metering(mut self, settings: MeterSettings) -> Self {
        if let Some(ledger) = Arc::get_mut(&mut self.ledger) {
            ledger.meter = Some(tokio::sync::Mutex::new(Meter::new(settings)));
        }
        self
    }
}

impl QuotaLedger {
    fn plan_of(&self, tenant: TenantId) -> Option<(String, Plan)> {
        let name = self.tenant_plans.lock().ok()?.get(&tenant).cloned()?;
        let plan = self.plans.get(&name)?.clone();
        Some((name, plan))
    }

    fn held_block(&self, key: UsageKey) -> HeldBlock {
        let mut blocks = self.blocks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        blocks.entry(key).or_default().clone()
    }

    async fn reserve(&self, msg: Reserve) -> Result<Reservation, StoreError> {
        let period = BillingPeriod::containing(msg.now);
        let Some((plan_name, plan)) = self.plan_of(msg.tenant) else {
            // Only a tenant this node stopped dispatching gets here; its round fails and the
            // follow-ups stay as they are, neither skipped nor held.
            return Err(StoreError::Conflict(format!(
                "tenant {} has no plan registered with this node's billing actor",
                msg.tenant
            )));
        };
        let limit = plan.monthly(msg.channel);
        let key = UsageKey { tenant: msg.tenant, period, channel: msg.channel };
        let block = self.held_block(key);
        let mut held = block.lock().await;
        if *held < msg.wanted {
            let asked = (msg.wanted - *held).max(self.block);
            let taken = self.store.reserve_usage(key, asked, limit).await?;
            metrics::counter!(telemetry::QUOTA_TAKEN, "channel" => msg.channel.as_str())
                .increment(taken);
            *held += taken;
        }
        let granted = msg.wanted.min(*held);
        *held -= granted;
        Ok(Reservation {
            granted,
            over_quota: plan.over_quota,
            monthly_limit: limit,
            plan: plan_name,
            period,
        })
    }

    async fn settle(&self, msg: Settle) {
        let key = UsageKey { tenant: msg.tenant, period: msg.period, channel: msg.channel };
        let used = msg.used.min(msg.reserved);
        if used > 0 {
            if let Err(error) = self.store.settle_usage(key, used, 0).await {
                // The sends stay taken, so the quota still holds; only the committed count
                // shown in the API falls short.
                tracing::error!(tenant = %msg.tenant, channel = %msg.channel, %error, "committing quota usage failed");
            }
            metrics::counter!(telemetry::QUOTA_COMMITTED, "channel" => msg.channel.as_str())
                .increment(used);
        }
        let unused = msg.reserved - used;
        if unused == 0 {
            return;
        }
        if self.plan_of(msg.tenant).is_some() {
            // What the batch did not use stays with this node for the next batch.
            *self.held_block(key).lock().await += unused;
        } else if let Err(error) = self.store.settle_usage(key, 0, unused).await {
            // A batch that finished after the tenant left this node gives its rest back
            // directly, since no later batch here would use it.
            tracing::warn!(tenant = %msg.tenant, channel = %msg.channel, %error, "releasing unused quota failed; it stays taken this period");
        }
    }

    /// Returns the tenants this node dispatches whose plan is billed per send and that are
    /// linked to a Stripe customer.
    async fn metered_tenants(&self) -> Result<Vec<MeteredTenant>, StoreError> {
        let plans: Vec<(TenantId, String)> = {
            let tenants =
                self.tenant_plans.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            tenants.iter().map(|(tenant, plan)| (*tenant, plan.clone())).collect()
        };
        let mut metered = Vec::new();
        for (tenant, plan) in plans {
            let event_name =
                self.plans.get(&plan).and_then(|plan| plan.stripe_meter_event_name.clone());
            let Some(event_name) = event_name else { continue };
            let Some(account) = self.store.stripe_account(tenant).await? else {
                tracing::warn!(%tenant, %plan, "plan billed per send, but no Stripe customer is linked; usage not reported");
                continue;
            };
            metered.push(MeteredTenant { tenant, customer_id: account.customer_id, event_name });
        }
        Ok(metered)
    }

    /// Runs one metering flush; `None` without metering.
    async fn flush_meters(&self) -> Option<Result<FlushReport, StoreError>> {
        let meter = self.meter.as_ref()?;
        let mut meter = meter.lock().await;
        let flushed = match self.metered_tenants().await {
            Ok(tenants) => meter.flush(self.store.as_ref(), &tenants).await,
            Err(error) => Err(error),
        };
        Some(flushed)
    }

    /// Gives every block this node holds for `tenant` back to the store.
    async fn release(&self, tenant: TenantId) {
        let blocks: Vec<(UsageKey, HeldBlock)> = {
            let mut blocks = self.blocks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let keys: Vec<UsageKey> =
                blocks.keys().filter(|key| key.tenant == tenant).copied().collect();
            keys.into_iter()
                .filter_map(|key| blocks.remove(&key).map(|block| (key, block)))
                .collect()
        };
        for (key, block) in blocks {
            let mut held = block.lock().await;
            if *held == 0 {
                continue;
            }
            match self.store.settle_usage(key, 0, *held).await {
                Ok(()) => *held = 0,
                Err(error) => {
                    tracing::warn!(tenant = %tenant, channel = %key.channel, %error, "releasing held quota failed; it stays taken this period");
                }
            }
        }
        if let Ok(mut plans) = self.tenant_plans.lock() {
            plans.remove(&tenant);
        }
    }
}

impl Actor for BillingActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(super::MAILBOX_CAPACITY);
        let interval = match &self.ledger.meter {
            Some(meter) => meter.try_lock().map(|meter| meter.flush_interval()).ok(),
            None => None,
        };
        if let Some(interval) = interval {
            ctx.run_interval(interval, |actor, _| {
                let ledger = actor.ledger.clone();
                // A flush still running holds the meter's lock, so this one waits behind it.
                actix::spawn(async move {
                    if let Some(Err(error)) = ledger.flush_meters().await {
                        tracing::error!(%error, "metering flush failed; the next one retries");
                    }
                });
            });
        }
    }
}

/// Runs a metering flush now, as the timer does. Returns `None` without metering.
#[derive(Debug, Message)]
#[rtype(result = "Option<Result<FlushReport, StoreError>>")]
pub struct FlushMeters;

impl Handler<FlushMeters> for BillingActor {
    type Result = ResponseFuture<Option<Result<FlushReport, StoreError>>>;

    fn handle(&mut self, _: FlushMeters, _: &mut Self::Context) -> Self::Result {
        let ledger = self.ledger.clone();
        Box::pin(async move { ledger.flush_meters().await })
    }
}

/// Tells the billing actor a tenant's plan: when this node starts dispatching the tenant, and
/// when its plan changes.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), String>")]
pub struct RegisterTenant {
    pub tenant: TenantId,
    pub plan: String,
}

impl Handler<RegisterTenant> for BillingActor {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: RegisterTenant, _: &mut Self::Context) -> Self::Result {
        if !self.ledger.plans.contains_key(&msg.plan) {
            return Err(format!("unknown plan {:?}", msg.plan));
        }
        let mut plans = self.ledger.tenant_plans.lock().map_err(|_| "tenant plans poisoned")?;
        plans.insert(msg.tenant, msg.plan);
        Ok(())
    }
}

/// Gives back to the store the quota this node holds for a tenant it stops dispatching.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ReleaseTenant {
    pub tenant: TenantId,
}

impl Handler<ReleaseTenant> for BillingActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: ReleaseTenant, _: &mut Self::Context) -> Self::Result {
        let ledger = self.ledger.clone();
        Box::pin(async move { ledger.release(msg.tenant).await })
    }
}

/// Asks for quota for up to `wanted` sends on `channel`.
#[derive(Debug, Message)]
#[rtype(result = "Result<Reservation, StoreError>")]
pub struct Reserve {
    pub tenant: TenantId,
    pub channel: Channel,
    pub wanted: u64,
    pub now: DateTime<Utc>,
}

/// Quota granted by [`Reserve`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub granted: u64,
    /// Treatment of the follow-ups that got no quota.
    pub over_quota: OverQuota,
    /// The month's quota on this channel, for the skip reason.
    pub monthly_limit: u64,
    pub plan: String,
    /// The period the quota was taken from, which the settlement names.
    pub period: BillingPeriod,
}

impl Handler<Reserve> for BillingActor {
    type Result = ResponseFuture<Result<Reservation, StoreError>>;

    fn handle(&mut self, msg: Reserve, _: &mut Self::Context) -> Self::Result {
        let ledger = self.ledger.clone();
        Box::pin(async move { ledger.reserve(msg).await })
    }
}

/// Settles a reservation: `used` sends (sent or in doubt) are committed and the rest of
/// `reserved` kept for the tenant's next batch.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Settle {
    pub tenant: TenantId,
    pub channel: Channel,
    pub period: BillingPeriod,
    pub reserved: u64,
    pub used: u64,
}

impl Handler<Settle> for BillingActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Settle, _: &mut Self::Context) -> Self::Result {
        let ledger = self.ledger.clone();
        Box::pin(async move { ledger.settle(msg).await })
    }
}

#[cfg(test)]
mod tests {
    use followup_adapters::embedded;

    use super::*;

    fn plans() -> BTreeMap<String, Plan> {
        let tiny = Plan { monthly_email: 7, ..Plan::unlimited() };
        BTreeMap::from([("tiny".to_owned(), tiny)])
    }

    async fn start(store: Arc<dyn Store>, block: u64, tenant: TenantId) -> Addr<BillingActor> {
        let billing = BillingActor::new(store, plans(), block).start();
        let registered = billing.send(RegisterTenant { tenant, plan: "tiny".into() }).await;
        assert_eq!(registered.expect("billing actor alive"), Ok(()));
        billing
    }

    #[actix_rt::test]
    async fn two_nodes_never_exceed_the_plan() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store: Arc<dyn Store> = Arc::new(embedded::open(dir.path()).expect("store"));
        let tenant = TenantId::generate();
        let now = Utc::now();
        // Two actors on one store, as two engine nodes would be.
        let first = start(store.clone(), 3, tenant).await;
        let second = start(store.clone(), 3, tenant).await;
        let reserve = |wanted| Reserve { tenant, channel: Channel::Email, wanted, now };

        let a = first.send(reserve(2)).await.expect("alive").expect("reserve");
        assert_eq!(a.granted, 2, "a block of 3 taken, 2 handed out");
        let b = second.send(reserve(2)).await.expect("alive").expect("reserve");
        assert_eq!(b.granted, 2, "the second node takes its own block of 3");
        let c = first.send(reserve(5)).await.expect("alive").expect("reserve");
        assert_eq!(c.granted, 2, "1 held plus the last 1 of the quota");
        let d = second.send(reserve(5)).await.expect("alive").expect("reserve");
        assert_eq!(d.granted, 1, "only what the second node still holds");
        assert_eq!(a.granted + b.granted + c.granted + d.granted, 7, "exactly the quota");

        // A batch that sent one of two gives the other back to its node, not to the store.
        let settle =
            Settle { tenant, channel: Channel::Email, period: a.period, reserved: 2, used: 1 };
        first.send(settle).await.expect("alive");
        let again = first.send(reserve(5)).await.expect("alive").expect("reserve");
        assert_eq!(again.granted, 1, "the unused send is granted again");

        let period = a.period.to_string();
        let counters = store.usage(Some(tenant), period).await.expect("usage");
        assert_eq!(counters.len(), 1, "one counter: {counters:?}");
        assert_eq!((counters[0].taken, counters[0].committed), (7, 1), "{counters:?}");
    }

    #[actix_rt::test]
    async fn release_returns_held_quota_to_the_store() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store: Arc<dyn Store> = Arc::new(embedded::open(dir.path()).expect("store"));
        let tenant = TenantId::generate();
        let now = Utc::now();
        let billing = start(store.clone(), 5, tenant).await;
        let reserve = Reserve { tenant, channel: Channel::Email, wanted: 2, now };
        let granted = billing.send(reserve).await.expect("alive").expect("reserve");
        assert_eq!(granted.granted, 2);
        billing.send(ReleaseTenant { tenant }).await.expect("alive");
        let period = granted.period.to_string();
        let counters = store.usage(Some(tenant), period.clone()).await.expect("usage");
        assert_eq!(counters[0].taken, 2, "three held sends released: {counters:?}");

        // The batch in flight at the release settles later: its unused send goes straight back.
        let period_of_batch = granted.period;
        let late = Settle {
            tenant,
            channel: Channel::Email,
            period: period_of_batch,
            reserved: 2,
            used: 1,
        };
        billing.send(late).await.expect("alive");
        let counters = store.usage(Some(tenant), period).await.expect("usage");
        assert_eq!((counters[0].taken, counters[0].committed), (1, 1), "{counters:?}");
        let after = Reserve { tenant, channel: Channel::Email, wanted: 1, now };
        let after = billing.send(after).await.expect("alive");
        let error = after.expect_err("a released tenant is not granted anything");
        assert!(error.to_string().contains("no plan registered"), "{error}");
    }

    mod metered {
        use std::time::Duration;

        use followup_adapters::fakes::stripe::api::InjectedFailure;
        use followup_adapters::fakes::stripe::{FAKE_API_KEY, StripeFake};
        use followup_adapters::stripe_api::StripeClient;
        use followup_core::clock::{Clock, VirtualClock};
        use followup_core::sensitive::Sensitive;
        use followup_core::store::subscription::StripeAccount;

        use super::*;

        const EVENT_NAME: &str = "followup_sends";

        fn metered_plans() -> BTreeMap<String, Plan> {
            let plan =
                Plan { stripe_meter_event_name: Some(EVENT_NAME.into()), ..Plan::unlimited() };
            BTreeMap::from([("metered".to_owned(), plan)])
        }

        /// Starts a billing actor with metering against the fake, as a node (re)starting on
        /// `store` would, with flushes left to the test.
        async fn start_metered(
            store: Arc<dyn Store>,
            stripe: StripeClient,
            clock: Arc<dyn Clock>,
            tenant: TenantId,
        ) -> Addr<BillingActor> {
            let settings = MeterSettings {
                stripe,
                clock,
                flush_interval: Duration::from_secs(3600),
                requests_per_second: 1000,
            };
            let actor = BillingActor::new(store, metered_plans(), 10).with_metering(settings);
            let billing = actor.start();
            let registered = billing.send(RegisterTenant { tenant, plan: "metered".into() }).await;
            assert_eq!(registered.expect("billing actor alive"), Ok(()));
            billing
        }

        async fn commit(
            billing: &Addr<BillingActor>,
            tenant: TenantId,
            sends: u64,
            now: DateTime<Utc>,
        ) {
            let reserve = Reserve { tenant, channel: Channel::Email, wanted: sends, now };
            let granted = billing.send(reserve).await.expect("alive").expect("reserve");
            assert_eq!(granted.granted, sends);
            let settle = Settle {
                tenant,
                channel: Channel::Email,
                period: granted.period,
                reserved: sends,
                used: sends,
            };
            billing.send(settle).await.expect("alive");
        }

        async fn flush(billing: &Addr<BillingActor>) -> FlushReport {
            let flushed = billing.send(FlushMeters).await.expect("alive");
            flushed.expect("metering on").expect("flush")
        }

        #[actix_rt::test]
        async fn meter_events_count_each_send_once() {
            let dir = tempfile::tempdir().expect("temporary directory");
            let store: Arc<dyn Store> = Arc::new(embedded::open(dir.path()).expect("store"));
            let now = Utc::now();
            let clock: Arc<dyn Clock> = Arc::new(VirtualClock::new(now));
            let endpoint = "http://127.0.0.1:9/webhooks/stripe";
            let fake = Arc::new(StripeFake::new(endpoint, "whsec_t", clock.clone()).expect("fake"));
            let server = fake.serve_api().expect("fake API");
            let key = Sensitive::new(FAKE_API_KEY.to_owned());
            let stripe = StripeClient::new(server.url.as_str(), &key, Duration::from_secs(5))
                .expect("client");
            let tenant = TenantId::generate();
            let account = StripeAccount {
                tenant,
                customer_id: "cus_metered".into(),
                subscription: None,
                payment: None,
                updated_at: now,
            };
            store.put_stripe_account(account).await.expect("linked");
            let billing = start_metered(store.clone(), stripe.clone(), clock.clone(), tenant).await;

            // Five sends: one batch, one event.
            commit(&billing, tenant, 5, now).await;
            let report = flush(&billing).await;
            assert_eq!(report, FlushReport { batched: 1, sent: 1, unsent: 0 });
            let nothing_new = flush(&billing).await;
            assert_eq!(nothing_new, FlushReport::default(), "no sends, no event");

            // A 500 before Stripe did anything: the batch is stored and stays unsent.
            commit(&billing, tenant, 3, now).await;
            fake.inject_failures([InjectedFailure::Reject(500)]);
            let report = flush(&billing).await;
            assert_eq!(report, FlushReport { batched: 1, sent: 0, unsent: 1 });
            assert_eq!(fake.meter_events().len(), 1);

            // The node stops before retrying; another actor on the store resumes the batch.
            drop(billing);
            let billing = start_metered(store.clone(), stripe.clone(), clock.clone(), tenant).await;
            let report = flush(&billing).await;
            assert_eq!(report, FlushReport { batched: 0, sent: 1, unsent: 0 });

            // Stripe records the event but the answer is lost: the retry sends the same
            // identifier and Stripe keeps one event.
            commit(&billing, tenant, 2, now).await;
            fake.inject_failures([InjectedFailure::AnswerLost]);
            let report = flush(&billing).await;
            assert_eq!(report, FlushReport { batched: 1, sent: 0, unsent: 1 });
            let report = flush(&billing).await;
            assert_eq!(report, FlushReport { batched: 0, sent: 1, unsent: 0 });

            let events = fake.meter_events();
            let values: Vec<&str> = events.iter().map(|event| event.value.as_str()).collect();
            assert_eq!(values, vec!["5", "3", "2"], "each send counted once: {events:?}");
            let period = BillingPeriod::containing(now);
            for (index, event) in events.iter().enumerate() {
                let expected = format!("fu-{tenant}-{period}-email-{}", index + 1);
                assert_eq!(event.identifier, expected);
                assert_eq!(event.event_name, EVENT_NAME);
                assert_eq!(event.customer_id, "cus_metered");
                assert_eq!(event.timestamp, now.timestamp());
            }
            let counters = store.usage(Some(tenant), period.to_string()).await.expect("usage");
            assert_eq!(counters[0].committed, 10, "{counters:?}");
            let unsent = store.unsent_meter_batches(100).await.expect("unsent");
            assert!(unsent.is_empty(), "{unsent:?}");
            server.stop().await;
        }

        #[actix_rt::test]
        async fn unlinked_tenant_is_not_metered() {
            let dir = tempfile::tempdir().expect("temporary directory");
            let store: Arc<dyn Store> = Arc::new(embedded::open(dir.path()).expect("store"));
            let now = Utc::now();
            let clock: Arc<dyn Clock> = Arc::new(VirtualClock::new(now));
            let key = Sensitive::new(FAKE_API_KEY.to_owned());
            // Nothing listens there: a request would fail the flush's send.
            let stripe = StripeClient::new("http://127.0.0.1:9", &key, Duration::from_secs(1))
                .expect("client");
            let tenant = TenantId::generate();
            let billing = start_metered(store.clone(), stripe, clock, tenant).await;
            commit(&billing, tenant, 4, now).await;
            let report = flush(&billing).await;
            assert_eq!(report, FlushReport::default());
            let unsent = store.unsent_meter_batches(100).await.expect("unsent");
            assert!(unsent.is_empty(), "{unsent:?}");
        }
    }
}
