//! The operator API under `/admin/v1`, behind the operator token.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use followup_core::api::{
    AdminSnapshot, CreateTenantRequest, CreateTenantResponse, QueueSummary, TenantSummary,
};
use followup_core::domain::{Channel, FollowUpState, Tenant};
use followup_core::ids::TenantId;
use followup_core::store::usage::BillingPeriod;
use followup_core::store::{FollowUpCounts, StoreError};

use super::AppState;
use super::auth::{Operator, generate_api_key};
use super::error::ApiError;
use super::json::ApiJson;

pub async fn create_tenant(
    state: web::Data<AppState>,
    _operator: Operator,
    body: ApiJson<CreateTenantRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = body.0;
    let name = super::tenant_api::checked_name(&request.name)?.to_owned();
    let region = request.default_region.unwrap_or_else(|| "US".into()).to_ascii_uppercase();
    if region.len() != 2 || !region.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(ApiError::BadRequest(format!(
            "invalid default_region {region:?}: expected an ISO 3166-1 alpha-2 code such as US"
        )));
    }
    let timezone = request.default_timezone.unwrap_or_else(|| "UTC".into());
    if timezone.parse::<chrono_tz::Tz>().is_err() {
        return Err(ApiError::BadRequest(format!(
            "invalid default_timezone {timezone:?}: expected an IANA name such as Europe/Berlin"
        )));
    }
    let plan = request.plan.unwrap_or_else(|| "free".into());
    if !state.engine.config().plans.contains_key(&plan) {
        let known: Vec<&String> = state.engine.config().plans.keys().collect();
        return Err(ApiError::BadRequest(format!("unknown plan {plan:?}: known plans {known:?}")));
    }
    let (api_key, api_key_sha256) = generate_api_key()?;
    let tenant = Tenant {
        id: TenantId::generate(),
        name,
        default_region: region,
        default_timezone: timezone,
        plan,
        api_key_sha256,
        created_at: state.engine.clock().now(),
        suppression_scope: Default::default(),
    };
    state.engine.store().put_tenant(tenant.clone()).await?;
    state.engine.add_tenant(&tenant).await?;
    tracing::info!(tenant = %tenant.id, plan = %tenant.plan, "tenant created");
    // The tenant exists whatever Stripe answers, because its API key is shown only in this
    // response; a failed creation is retried by linking, with the same idempotency key.
    let mut stripe_customer_id = None;
    if state.engine.stripe().is_some() {
        match crate::stripe_sync::ensure_customer(&state.engine, &tenant).await {
            Ok(account) => stripe_customer_id = Some(account.customer_id),
            Err(error) => tracing::warn!(tenant = %tenant.id, %error,
                "creating the tenant's Stripe customer failed; link one with PUT \
                 /admin/v1/tenants/{{id}}/stripe-customer"),
        }
    }
    let created = CreateTenantResponse { id: tenant.id, api_key, stripe_customer_id };
    Ok(HttpResponse::Created().json(created))
}

/// Lists every tenant, without API key hashes, then every deleted tenant with the progress
/// of its purge. A deleted tenant shows only its id and plan: its name went with its records.
pub async fn list_tenants(
    state: web::Data<AppState>,
    _operator: Operator,
) -> Result<HttpResponse, ApiError> {
    let store = state.engine.store();
    let mut tenants: Vec<serde_json::Value> = store
        .tenants()
        .await?
        .into_iter()
        .map(|tenant| {
            serde_json::json!({
                "id": tenant.id,
                "name": tenant.name,
                "plan": tenant.plan,
                "default_region": tenant.default_region,
                "default_timezone": tenant.default_timezone,
                "created_at": tenant.created_at,
                "deletion": null,
            })
        })
        .collect();
    tenants.extend(store.tenant_deletions().await?.into_iter().map(|deletion| {
        serde_json::json!({
            "id": deletion.tenant,
            "plan": deletion.plan,
            "deletion": {
                "id": deletion.id,
                "requested_at": deletion.requested_at,
                "records_purged": deletion.records_purged,
                "completed_at": deletion.completed_at,
            },
        })
    }));
    Ok(HttpResponse::Ok().json(tenants))
}

/// Re-reads the master key file and re-wraps every tenant's data key under its newest key.
pub async fn rotate_keys(
    state: web::Data<AppState>,
    _operator: Operator,
) -> Result<HttpResponse, ApiError> {
    let report = state.engine.rotate_master_keys().await.map_err(|error| {
        let message = format!("{error:#}");
        tracing::warn!(error = %message, "master key rotation failed; nothing changed");
        // A store that fails is the engine's fault; a key file that cannot serve is the
        // operator's to fix.
        match error.downcast_ref::<StoreError>() {
            Some(StoreError::Unavailable(_) | StoreError::Corrupt { .. }) => {
                ApiError::Internal(message)
            }
            _ => ApiError::Unprocessable(message),
        }
    })?;
    Ok(HttpResponse::Ok().json(report))
}

pub async fn snapshot(
    state: web::Data<AppState>,
    _operator: Operator,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(build_snapshot(&state).await?))
}

/// Lists the nodes sharing the store and the tenants' leases.
pub async fn cluster(
    state: web::Data<AppState>,
    _operator: Operator,
) -> Result<HttpResponse, ApiError> {
    let engine = &state.engine;
    let view = engine.leases().view(engine).await?;
    Ok(HttpResponse::Ok().json(view))
}

async fn build_snapshot(state: &AppState) -> Result<AdminSnapshot, ApiError> {
    let store = state.engine.store();
    let all = store.count_follow_ups(None).await?;
    let mut totals = BTreeMap::new();
    for ((_, follow_up_state), count) in &all {
        *totals.entry(follow_up_state.as_str().to_owned()).or_insert(0) += count;
    }
    let queues = Channel::ALL
        .iter()
        .map(|&channel| QueueSummary {
            channel: channel.as_str().to_owned(),
            waiting: count(&all, Some(channel), &[FollowUpState::Pending, FollowUpState::Retry]),
            sent: count(&all, Some(channel), &[FollowUpState::Sent]),
            failed: count(&all, Some(channel), &[FollowUpState::Failed, FollowUpState::Dead]),
            ..QueueSummary::default()
        })
        .collect();
    let period = BillingPeriod::containing(state.engine.clock().now());
    let usage = store.usage(None, period.to_string()).await?;
    let plans = &state.engine.config().plans;
    let mut tenants = Vec::new();
    for tenant in store.tenants().await? {
        let quota_used_percent = plans.get(&tenant.plan).map(|plan| {
            let shares =
                usage.iter().filter(|counter| counter.tenant == tenant.id).map(|counter| {
                    let limit = plan.monthly(counter.channel).max(1);
                    (u128::from(counter.taken) * 100 / u128::from(limit)).min(100)
                });
            u8::try_from(shares.max().unwrap_or(0)).unwrap_or(100)
        });
        let counts = store.count_follow_ups(Some(tenant.id)).await?;
        let paused_connections = store
            .connections(tenant.id)
            .await?
            .into_iter()
            .filter_map(|c| c.paused_reason.map(|reason| format!("{}: {reason}", c.provider)))
            .collect();
        tenants.push(TenantSummary {
            id: tenant.id,
            name: tenant.name,
            plan: tenant.plan,
            backlog: count(&counts, None, &[FollowUpState::Pending, FollowUpState::Retry]),
            sent: count(&counts, None, &[FollowUpState::Sent]),
            failed: count(&counts, None, &[FollowUpState::Failed, FollowUpState::Dead]),
            paused_connections,
            held: count(&counts, None, &[FollowUpState::Held]),
            quota_used_percent,
            paused_reason: None,
            dead: count(&counts, None, &[FollowUpState::Dead]),
        });
    }
    tenants.sort_by(|a, b| b.backlog.cmp(&a.backlog).then_with(|| a.name.cmp(&b.name)));
    let dead_letters = totals.get(FollowUpState::Dead.as_str()).copied().unwrap_or(0);
    Ok(AdminSnapshot {
        now: state.engine.clock().now().to_rfc3339(),
        totals,
        queues,
        tenant_count: u64::try_from(tenants.len()).unwrap_or(u64::MAX),
        tenants,
        dead_letters,
        ..AdminSnapshot::default()
    })
}

/// Sums the counts of the given states, on one channel or all.
fn count(counts: &FollowUpCounts, channel: Option<Channel>, states: &[FollowUpState]) -> u64 {
    counts
        .iter()
        .filter(|((c, s), _)| channel.is_none_or(|wanted| wanted == *c) && states.contains(s))
        .map(|(_, n)| n)
        .sum()
}
