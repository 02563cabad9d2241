//! The billing actor: plans and monthly quotas per tenant and channel.
//!
//! Tenant actors reserve quota for a whole batch before handing it to a provider, then commit
//! what was sent and release the rest, so that one message per batch (not per send) reaches
//! this actor and concurrent batches can never overspend a plan.
//!
//! NOTE: usage lives in memory and is rebuilt at start-up from the count of sent and in-doubt
//! follow-ups of each tenant, all months together, so after a restart a tenant may get less
//! than its quota for the rest of the month, never more.

use std::collections::{BTreeMap, HashMap};

use actix::prelude::*;
use chrono::{DateTime, Datelike, Utc};
use followup_core::domain::Channel;
use followup_core::ids::TenantId;

use crate::config::{OverQuota, Plan};

/// Usage of one tenant in one month.
#[derive(Clone, Debug, Default)]
struct MonthUsage {
    /// Year and month the counters belong to.
    month: (i32, u32),
    /// Sends committed this month, per channel.
    committed: BTreeMap<Channel, u64>,
    /// Sends reserved and not yet committed or released, per channel.
    reserved: BTreeMap<Channel, u64>,
}

#[derive(Debug)]
pub struct BillingActor {
    plans: BTreeMap<String, Plan>,
    tenant_plans: HashMap<TenantId, String>,
    usage: HashMap<TenantId, MonthUsage>,
}

impl BillingActor {
    pub fn new(plans: BTreeMap<String, Plan>) -> Self {
        Self { plans, tenant_plans: HashMap::new(), usage: HashMap::new() }
    }

    fn usage_for(&mut self, tenant: TenantId, now: DateTime<Utc>) -> &mut MonthUsage {
        let month = (now.year(), now.month());
        let usage = self.usage.entry(tenant).or_default();
        if usage.month != month {
            // A new month starts from zero; reservations in flight carry over.
            usage.month = month;
            usage.committed.clear();
        }
        usage
    }
}

impl Actor for BillingActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(super::MAILBOX_CAPACITY);
    }
}

/// Tells the billing actor a tenant's plan and what it already sent.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), String>")]
pub struct RegisterTenant {
    pub tenant: TenantId,
    pub plan: String,
    pub already_sent: BTreeMap<Channel, u64>,
    pub now: DateTime<Utc>,
}

impl Handler<RegisterTenant> for BillingActor {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: RegisterTenant, _: &mut Self::Context) -> Self::Result {
        if !self.plans.contains_key(&msg.plan) {
            return Err(format!("unknown plan {:?}", msg.plan));
        }
        self.tenant_plans.insert(msg.tenant, msg.plan);
        let usage = self.usage_for(msg.tenant, msg.now);
        for (channel, sent) in msg.already_sent {
            let committed = usage.committed.entry(channel).or_default();
            *committed = (*committed).max(sent);
        }
        Ok(())
    }
}

/// Asks for quota for up to `wanted` sends on `channel`.
#[derive(Debug, Message)]
#[rtype(result = "Reservation")]
pub struct Reserve {
    pub tenant: TenantId,
    pub channel: Channel,
    pub wanted: u64,
    pub now: DateTime<Utc>,
}

/// Quota granted by [`Reserve`].
#[derive(Clone, Debug, PartialEq, Eq, MessageResponse)]
pub struct Reservation {
    pub granted: u64,
    /// Treatment of the follow-ups that got no quota.
    pub over_quota: OverQuota,
    /// The month's quota on this channel, for the skip reason.
    pub monthly_limit: u64,
    pub plan: String,
}

impl Handler<Reserve> for BillingActor {
    type Result = Reservation;

    fn handle(&mut self, msg: Reserve, _: &mut Self::Context) -> Reservation {
        let plan_name = self.tenant_plans.get(&msg.tenant).cloned().unwrap_or_default();
        let Some(plan) = self.plans.get(&plan_name).cloned() else {
            return Reservation {
                granted: 0,
                over_quota: OverQuota::Hold,
                monthly_limit: 0,
                plan: plan_name,
            };
        };
        let limit = plan.monthly(msg.channel);
        let usage = self.usage_for(msg.tenant, msg.now);
        let used = usage.committed.get(&msg.channel).copied().unwrap_or(0)
            + usage.reserved.get(&msg.channel).copied().unwrap_or(0);
        let granted = msg.wanted.min(limit.saturating_sub(used));
        *usage.reserved.entry(msg.channel).or_default() += granted;
        Reservation { granted, over_quota: plan.over_quota, monthly_limit: limit, plan: plan_name }
    }
}

/// Settles a reservation: `sent` sends are committed and the rest of `reserved` released.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Settle {
    pub tenant: TenantId,
    pub channel: Channel,
    pub reserved: u64,
    pub sent: u64,
    pub now: DateTime<Utc>,
}

impl Handler<Settle> for BillingActor {
    type Result = ();

    fn handle(&mut self, msg: Settle, _: &mut Self::Context) {
        let usage = self.usage_for(msg.tenant, msg.now);
        let reserved = usage.reserved.entry(msg.channel).or_default();
        *reserved = reserved.saturating_sub(msg.reserved);
        *usage.committed.entry(msg.channel).or_default() += msg.sent.min(msg.reserved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plans() -> BTreeMap<String, Plan> {
        BTreeMap::from([(
            "tiny".to_owned(),
            Plan { monthly_email: 3, monthly_sms: 0, monthly_call: 0, over_quota: OverQuota::Skip },
        )])
    }

    #[actix_rt::test]
    async fn reservations_never_exceed_the_plan() {
        let billing = BillingActor::new(plans()).start();
        let tenant = TenantId::generate();
        let now = Utc::now();
        let registered = billing
            .send(RegisterTenant {
                tenant,
                plan: "tiny".into(),
                already_sent: BTreeMap::new(),
                now,
            })
            .await
            .expect("billing actor alive");
        assert_eq!(registered, Ok(()));
        let reserve = |wanted| Reserve { tenant, channel: Channel::Email, wanted, now };
        let first = billing.send(reserve(2)).await.expect("billing actor alive");
        let second = billing.send(reserve(2)).await.expect("billing actor alive");
        assert_eq!(first.granted, 2);
        assert_eq!(second.granted, 1);
        billing
            .send(Settle { tenant, channel: Channel::Email, reserved: 3, sent: 1, now })
            .await
            .expect("billing actor alive");
        let third = billing.send(reserve(5)).await.expect("billing actor alive");
        assert_eq!(third.granted, 2, "two released sends are free again");
    }
}
