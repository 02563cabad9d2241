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
}

impl BillingActor {
    pub fn new(store: Arc<dyn Store>, plans: BTreeMap<String, Plan>, block: u64) -> Self {
        let ledger = QuotaLedger {
            store,
            plans,
            block: block.max(1),
            tenant_plans: Mutex::default(),
            blocks: Mutex::default(),
        };
        Self { ledger: Arc::new(ledger) }
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
}
