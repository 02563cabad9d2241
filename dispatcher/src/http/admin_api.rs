//! The operator API under `/admin/v1`, behind the operator token.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::{HttpResponse, web};
use followup_core::api::{
    AdminSnapshot, ChannelUsage, ConnectionSummary, CreateTenantRequest, CreateTenantResponse,
    TenantDetail, TenantFollowUpCounts, TenantSummary,
};
use followup_core::domain::{Channel, Tenant};
use followup_core::ids::TenantId;
use followup_core::limits::ConnectionLimits;
use followup_core::store::StoreError;
use followup_core::store::usage::BillingPeriod;

use crate::operator_view::{self, Overview, TenantSort, scrub_reason};

use super::AppState;
use super::auth::{Operator, generate_api_key};
use super::error::{ApiError, tenant_in_path};
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
        paused: None,
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

/// The overview the operator endpoints read: the refresher's last count, or a count made now
/// when counting per request is configured or the cached count is older than two refresh
/// periods (no count yet, or the refresher idled while nobody read).
pub(crate) async fn current_overview(state: &AppState) -> Result<Arc<Overview>, ApiError> {
    let overview = overview_within_two_periods(state).await?;
    // Noting the read keeps the refresher counting while an operator watches.
    state.engine.overview().get();
    Ok(overview)
}

async fn overview_within_two_periods(state: &AppState) -> Result<Arc<Overview>, ApiError> {
    let engine = &state.engine;
    let cache = engine.overview();
    let period = engine.config().admin.snapshot_refresh_millis;
    let per_request = period == 0;
    if per_request || !cache.is_fresh(std::time::Duration::from_millis(period * 2)) {
        let now = engine.clock().now();
        let overview =
            operator_view::count_overview(engine.store().as_ref(), &engine.config().plans, now)
                .await?;
        if per_request {
            return Ok(Arc::new(overview));
        }
        cache.set(overview);
    }
    Ok(cache.peek())
}

/// Sets the gauges that come from the overview and the readiness checks, before a scrape of
/// `/metrics`. Reads the cached overview, so a scrape costs no pass over the store unless
/// counting per request is configured.
pub(crate) async fn publish_gauges(state: &AppState) {
    use crate::telemetry;
    let ready = state.engine.readiness().await.is_empty();
    metrics::gauge!(telemetry::READY).set(if ready { 1.0 } else { 0.0 });
    // Without noting a read: a scrape alone does not keep the refresher counting.
    let Ok(overview) = overview_within_two_periods(state).await else {
        return;
    };
    for channel in Channel::ALL {
        let waiting: u64 = overview
            .queues
            .iter()
            .chain(&overview.unrouted)
            .filter(|queue| queue.channel == channel.as_str())
            .map(|queue| queue.waiting)
            .sum();
        metrics::gauge!(telemetry::QUEUE_DEPTH, "channel" => channel.as_str()).set(waiting as f64);
    }
    for provider in followup_core::domain::Provider::ALL {
        let paused = overview
            .paused
            .iter()
            .filter(|item| item.provider.as_deref() == Some(provider.as_str()))
            .count();
        metrics::gauge!(telemetry::CONNECTIONS_PAUSED, "provider" => provider.as_str())
            .set(paused as f64);
    }
    let tenants = overview.paused.iter().filter(|item| item.provider.is_none()).count();
    metrics::gauge!(telemetry::TENANTS_PAUSED).set(tenants as f64);
    metrics::gauge!(telemetry::OVERVIEW_PASS_DURATION).set(overview.took.as_secs_f64());
}

/// Builds the snapshot from the current overview and the live counters.
pub(crate) async fn build_snapshot(state: &AppState) -> Result<AdminSnapshot, ApiError> {
    let overview = current_overview(state).await?;
    let engine = &state.engine;
    Ok(operator_view::snapshot(&overview, engine.live(), engine.leases().node()))
}

/// Most tenants one page of `tenant-summaries` returns.
pub const MAX_PAGE: u64 = 500;
const DEFAULT_PAGE: u64 = 50;

/// Reads an optional whole-number query parameter, naming it when it does not parse.
pub(crate) fn number_parameter(
    query: &HashMap<String, String>,
    name: &str,
) -> Result<Option<u64>, ApiError> {
    query
        .get(name)
        .map(|value| {
            value.parse::<u64>().map_err(|_| {
                ApiError::BadRequest(format!(
                    "query parameter {name}={value:?} is not a whole number"
                ))
            })
        })
        .transpose()
}

/// Checks that every query parameter is one of `known`, naming the first that is not.
pub(crate) fn known_parameters(
    query: &HashMap<String, String>,
    known: &[&str],
) -> Result<(), ApiError> {
    match query.keys().find(|key| !known.contains(&key.as_str())) {
        Some(key) => Err(ApiError::BadRequest(format!(
            "unknown query parameter {key:?}: expected one of {known:?}"
        ))),
        None => Ok(()),
    }
}

/// `GET /admin/v1/tenant-summaries`: one page of tenants from the cached overview, sorted and
/// filtered here so that the console never loads them all.
pub async fn tenant_summaries(
    state: web::Data<AppState>,
    _operator: Operator,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    known_parameters(&query, &["sort", "filter", "offset", "limit"])?;
    let offset = number_parameter(&query, "offset")?.unwrap_or(0);
    let limit = number_parameter(&query, "limit")?.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::BadRequest(format!(
            "query parameter limit={limit} is out of range: 1 to {MAX_PAGE}"
        )));
    }
    let sort = query.get("sort").map_or("backlog", String::as_str);
    if !["backlog", "name", "failed", "quota"].contains(&sort) {
        return Err(ApiError::BadRequest(format!(
            "query parameter sort={sort:?} is unknown: expected backlog, name, failed or quota"
        )));
    }
    let sort = match sort {
        "name" => TenantSort::Name,
        "failed" => TenantSort::Failed,
        "quota" => TenantSort::Quota,
        _ => TenantSort::Backlog,
    };
    let filter = query.get("filter").map_or("", String::as_str);
    let overview = current_overview(&state).await?;
    Ok(HttpResponse::Ok().json(operator_view::tenant_page(&overview, sort, filter, offset, limit)))
}

/// Failures the tenant detail lists.
const DETAIL_FAILURES: usize = 50;

/// `GET /admin/v1/tenants/{id}/follow-up-counts`: the tenant's follow-ups per state, read from
/// the store now (one scan of that tenant's follow-ups, not of the whole store).
pub async fn tenant_follow_up_counts(
    state: web::Data<AppState>,
    _operator: Operator,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = tenant_in_path(&path)?;
    let engine = &state.engine;
    let store = engine.store();
    if store.tenant(id).await?.is_none() {
        return Err(ApiError::NotFound(format!("tenant {id}")));
    }
    let counted_at = engine.clock().now().to_rfc3339();
    let mut states = std::collections::BTreeMap::new();
    for ((_, follow_up_state), count) in store.count_follow_ups(Some(id)).await? {
        *states.entry(follow_up_state.as_str().to_owned()).or_insert(0) += count;
    }
    Ok(HttpResponse::Ok().json(TenantFollowUpCounts { tenant: id, counted_at, states }))
}

/// `GET /admin/v1/tenants/{id}/detail`: one tenant's counts from the cached overview, and its
/// connections and this period's use from the store (a few reads of one tenant).
pub async fn tenant_detail(
    state: web::Data<AppState>,
    _operator: Operator,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = tenant_in_path(&path)?;
    let engine = &state.engine;
    let store = engine.store();
    let Some(tenant) = store.tenant(id).await? else {
        return Err(ApiError::NotFound(format!("tenant {id}")));
    };
    let overview = current_overview(&state).await?;
    // A tenant created since the last count has no follow-up counted yet.
    let mut summary = overview.tenants.iter().find(|summary| summary.id == id).cloned().unwrap_or(
        TenantSummary {
            id,
            name: tenant.name.clone(),
            plan: tenant.plan.clone(),
            backlog: 0,
            sent: 0,
            failed: 0,
            paused_connections: Vec::new(),
            held: 0,
            quota_used_percent: None,
            paused_reason: None,
            dead: 0,
        },
    );
    // The record is newer than the overview's count.
    summary.paused_reason = tenant.paused.as_ref().map(|_| "operator".to_owned());
    let connections = store
        .connections(id)
        .await?
        .into_iter()
        .map(|connection| {
            let channel = Channel::ALL
                .into_iter()
                .find(|&channel| connection.provider.carries(channel))
                .unwrap_or(Channel::Email);
            let limits = ConnectionLimits::of(&connection, channel).send;
            ConnectionSummary {
                provider: connection.provider.as_str().to_owned(),
                per_minute: limits.per_minute,
                per_day: limits.per_day,
                paused_reason: connection.paused_reason.as_deref().map(scrub_reason),
            }
        })
        .collect();
    let period = BillingPeriod::containing(engine.clock().now());
    let counters = store.usage(Some(id), period.to_string()).await?;
    let plan = engine.config().plans.get(&tenant.plan);
    let usage = Channel::ALL
        .into_iter()
        .map(|channel| ChannelUsage {
            channel: channel.as_str().to_owned(),
            used: counters
                .iter()
                .filter(|counter| counter.channel == channel)
                .map(|counter| counter.committed)
                .sum(),
            limit: plan.map(|plan| plan.monthly(channel)),
        })
        .collect();
    Ok(HttpResponse::Ok().json(TenantDetail {
        summary,
        connections,
        states: overview.states.get(&id).cloned().unwrap_or_default(),
        usage,
        recent_failures: engine.live().failures(Some(id), DETAIL_FAILURES),
    }))
}
