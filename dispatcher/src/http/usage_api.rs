//! Plans and quota usage: the tenant's own usage under `/v1/usage`, every tenant's under
//! `/admin/v1/usage`, and plan changes under `/admin/v1/tenants/{id}/plan`.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use followup_core::domain::{Channel, FollowUpState, Tenant};
use followup_core::ids::TenantId;
use followup_core::store::usage::{BillingPeriod, UsageCounter};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::auth::{AuthenticatedTenant, Operator};
use super::error::{ApiError, tenant_in_path};
use super::json::ApiJson;
use crate::config::{OverQuota, Plan};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// The billing period, `YYYY-MM`; the current one when absent.
    period: Option<String>,
}

/// One channel's quota and its use in a period.
#[derive(Debug, Serialize)]
struct ChannelUsage {
    limit: u64,
    /// Sends that went out, or may have (in doubt).
    committed: u64,
    /// Sends taken by engine nodes for batches and not yet committed.
    reserved: u64,
    remaining: u64,
}

/// A tenant's plan and quota use in one period.
#[derive(Debug, Serialize)]
struct TenantUsage {
    tenant: TenantId,
    plan: String,
    over_quota: OverQuota,
    period: String,
    /// Follow-ups of the tenant held for quota now, whatever their period.
    held: Option<u64>,
    channels: BTreeMap<Channel, ChannelUsage>,
}

fn period_of(state: &AppState, query: &UsageQuery) -> Result<BillingPeriod, ApiError> {
    match &query.period {
        Some(text) => BillingPeriod::parse(text).map_err(ApiError::BadRequest),
        None => Ok(BillingPeriod::containing(state.engine.clock().now())),
    }
}

fn tenant_usage(
    tenant: &Tenant,
    plan: Option<&Plan>,
    period: BillingPeriod,
    counters: &[UsageCounter],
    held: Option<u64>,
) -> TenantUsage {
    let channels = Channel::ALL
        .into_iter()
        .map(|channel| {
            let counter = counters.iter().find(|c| c.tenant == tenant.id && c.channel == channel);
            let limit = plan.map_or(0, |plan| plan.monthly(channel));
            let taken = counter.map_or(0, |c| c.taken);
            let usage = ChannelUsage {
                limit,
                committed: counter.map_or(0, |c| c.committed),
                reserved: counter.map_or(0, UsageCounter::reserved),
                remaining: limit.saturating_sub(taken),
            };
            (channel, usage)
        })
        .collect();
    TenantUsage {
        tenant: tenant.id,
        plan: tenant.plan.clone(),
        over_quota: plan.map_or(OverQuota::Skip, |plan| plan.over_quota),
        period: period.to_string(),
        held,
        channels,
    }
}

/// `GET /v1/usage`: the tenant's plan and its quota use in a period.
pub async fn own_usage(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant): AuthenticatedTenant,
    query: web::Query<UsageQuery>,
) -> Result<HttpResponse, ApiError> {
    let period = period_of(&state, &query)?;
    let store = state.engine.store();
    let counters = store.usage(Some(tenant.id), period.to_string()).await?;
    let counts = store.count_follow_ups(Some(tenant.id)).await?;
    let held = Channel::ALL
        .iter()
        .map(|channel| counts.get(&(*channel, FollowUpState::Held)).copied().unwrap_or(0))
        .sum();
    let plan = state.engine.config().plans.get(&tenant.plan);
    Ok(HttpResponse::Ok().json(tenant_usage(&tenant, plan, period, &counters, Some(held))))
}

/// `GET /admin/v1/usage`: every tenant's plan and quota use in a period. Held counts are left
/// out (`null`), because they would cost a count of every tenant's follow-ups.
pub async fn all_usage(
    state: web::Data<AppState>,
    _operator: Operator,
    query: web::Query<UsageQuery>,
) -> Result<HttpResponse, ApiError> {
    let period = period_of(&state, &query)?;
    let store = state.engine.store();
    let counters = store.usage(None, period.to_string()).await?;
    let plans = &state.engine.config().plans;
    let usage: Vec<TenantUsage> = store
        .tenants()
        .await?
        .iter()
        .map(|tenant| tenant_usage(tenant, plans.get(&tenant.plan), period, &counters, None))
        .collect();
    Ok(HttpResponse::Ok().json(usage))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanChange {
    plan: String,
}

/// `PUT /admin/v1/tenants/{id}/plan`: moves a tenant to another plan. Its held follow-ups
/// return to pending and reserve quota again under the new plan.
pub async fn change_plan(
    state: web::Data<AppState>,
    _operator: Operator,
    path: web::Path<String>,
    body: ApiJson<PlanChange>,
) -> Result<HttpResponse, ApiError> {
    let id = tenant_in_path(&path)?;
    let plans = &state.engine.config().plans;
    if !plans.contains_key(&body.0.plan) {
        let known: Vec<&String> = plans.keys().collect();
        let plan = &body.0.plan;
        return Err(ApiError::BadRequest(format!("unknown plan {plan:?}: known plans {known:?}")));
    }
    let Some(tenant) = state.engine.store().tenant(id).await? else {
        return Err(ApiError::NotFound(format!("tenant {id}")));
    };
    let from = tenant.plan.clone();
    let released =
        state.engine.change_plan(tenant, body.0.plan.clone()).await.map_err(|error| {
            ApiError::Internal(format!("changing the plan of tenant {id}: {error:#}"))
        })?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "tenant": id,
        "from": from,
        "plan": body.0.plan,
        "released_held": released,
    })))
}
