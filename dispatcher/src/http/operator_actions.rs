//! The operator's actions (pause and resume a tenant or a connection, retry dead letters,
//! cancel a schedule), the dead letters they act on, and the audit log that records each.
//!
//! Every action writes one audit entry after it took effect, with the name of the operator
//! credential, the instant, the action, its target (ids only, never a tenant's name), the
//! operator's note and how many follow-ups or schedules changed. Pauses and resumes change no
//! follow-up, so their count is 0.

use std::collections::HashMap;

use actix_web::{HttpResponse, web};
use followup_core::api::{
    ActionOutcome, AuditPage, AuditRecord, DeadLetter, DeadLetterPage, OperatorAction,
};
use followup_core::domain::{FollowUpState, Provider, TenantPause};
use followup_core::ids::{FollowUpId, ScheduleId, TenantId};
use followup_core::store::AuditEntry;
use uuid::Uuid;

use super::AppState;
use super::admin_api::{current_overview, known_parameters, number_parameter};
use super::auth::Operator;
use super::error::{ApiError, tenant_in_path};
use crate::operator_view::{self, scrub_reason};

/// Prefix of the pause reason an operator's pause writes on a connection, which keeps it
/// apart from the engine's own pauses (a refused token, `invalid_grant`).
pub const OPERATOR_PAUSE: &str = "operator";
/// Longest note kept, in characters.
const MAX_NOTE_CHARS: usize = 500;
/// Most follow-ups one retry may list.
const MAX_LISTED: usize = 1_000;
const DEFAULT_PAGE: u64 = 50;
const MAX_PAGE: u64 = 500;

/// Reads an action's body: empty means no note, anything else must be an [`OperatorAction`].
fn action_body(body: &[u8]) -> Result<OperatorAction, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(OperatorAction::default());
    }
    let action: OperatorAction = serde_json::from_slice(body)
        .map_err(|error| ApiError::BadRequest(format!("invalid action body: {error}")))?;
    if let Some(note) = &action.note
        && note.chars().count() > MAX_NOTE_CHARS
    {
        return Err(ApiError::BadRequest(format!(
            "note is {} characters long; at most {MAX_NOTE_CHARS} are kept",
            note.chars().count()
        )));
    }
    Ok(action)
}

/// Writes the audit entry of an action that took effect and answers with its outcome.
async fn audited(
    state: &AppState,
    operator: &Operator,
    action: &str,
    target: String,
    tenant: Option<TenantId>,
    note: Option<String>,
    affected: u64,
) -> Result<HttpResponse, ApiError> {
    let entry = AuditEntry {
        id: Uuid::now_v7().to_string(),
        at: state.engine.clock().now(),
        operator: operator.name.clone(),
        action: action.to_owned(),
        target,
        tenant,
        note,
        affected,
    };
    let audit_id = entry.id.clone();
    state.engine.store().append_audit(entry).await?;
    tracing::info!(operator = %operator.name, action, %audit_id, affected, "operator action");
    Ok(HttpResponse::Ok().json(ActionOutcome { audit_id, affected }))
}

async fn set_tenant_pause(
    state: web::Data<AppState>,
    operator: Operator,
    path: web::Path<String>,
    body: web::Bytes,
    pause: bool,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant_in_path(&path)?;
    let action = action_body(&body)?;
    let engine = &state.engine;
    let record =
        pause.then(|| TenantPause { by: operator.name.clone(), since: engine.clock().now() });
    if engine.set_tenant_paused(tenant, record).await?.is_none() {
        return Err(ApiError::NotFound(format!("tenant {tenant}")));
    }
    let name = if pause { "tenant.pause" } else { "tenant.resume" };
    audited(&state, &operator, name, tenant.to_string(), Some(tenant), action.note, 0).await
}

/// `POST /admin/v1/tenants/{id}/pause`: the tenant's rounds send nothing until it is resumed,
/// across restarts.
pub async fn pause_tenant(
    state: web::Data<AppState>,
    operator: Operator,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    set_tenant_pause(state, operator, path, body, true).await
}

/// `POST /admin/v1/tenants/{id}/resume`.
pub async fn resume_tenant(
    state: web::Data<AppState>,
    operator: Operator,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    set_tenant_pause(state, operator, path, body, false).await
}

async fn set_connection_pause(
    state: web::Data<AppState>,
    operator: Operator,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    pause: bool,
) -> Result<HttpResponse, ApiError> {
    let (tenant, provider) = path.into_inner();
    let tenant = tenant_in_path(&tenant)?;
    let provider: Provider = provider.parse().map_err(|_| {
        ApiError::BadRequest(format!(
            "invalid provider {provider:?} in the path: expected gmail, outlook or twilio"
        ))
    })?;
    let action = action_body(&body)?;
    let store = state.engine.store();
    let connection = store.connections(tenant).await?.into_iter().find(|c| c.provider == provider);
    let Some(mut connection) = connection else {
        return Err(ApiError::NotFound(format!("{provider} connection of tenant {tenant}")));
    };
    // The same field the engine's own pauses use, so dispatch needs no second check; the
    // prefix tells the two apart. A resume clears either kind.
    connection.paused_reason =
        pause.then(|| format!("{OPERATOR_PAUSE}: paused by {}", operator.name));
    store.put_connection(connection).await?;
    if !pause {
        state.engine.notify_tenant(tenant);
    }
    let name = if pause { "connection.pause" } else { "connection.resume" };
    let target = format!("{tenant}/{provider}");
    audited(&state, &operator, name, target, Some(tenant), action.note, 0).await
}

/// `POST /admin/v1/tenants/{id}/connections/{provider}/pause`.
pub async fn pause_connection(
    state: web::Data<AppState>,
    operator: Operator,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    set_connection_pause(state, operator, path, body, true).await
}

/// `POST /admin/v1/tenants/{id}/connections/{provider}/resume`: sending resumes whatever
/// paused the connection, the operator or the engine.
pub async fn resume_connection(
    state: web::Data<AppState>,
    operator: Operator,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    set_connection_pause(state, operator, path, body, false).await
}

/// `DELETE /admin/v1/tenants/{id}/schedules/{schedule}`: cancels the schedule's follow-ups
/// that have not been handed to a provider.
pub async fn cancel_schedule(
    state: web::Data<AppState>,
    operator: Operator,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (tenant, schedule) = path.into_inner();
    let tenant = tenant_in_path(&tenant)?;
    let schedule: ScheduleId = schedule.parse().map_err(|_| {
        ApiError::BadRequest(format!("invalid schedule id {schedule:?} in the path"))
    })?;
    let action = action_body(&body)?;
    if state.engine.store().schedule(tenant, schedule).await?.is_none() {
        return Err(ApiError::NotFound(format!("schedule {schedule} of tenant {tenant}")));
    }
    let cancelled = state.engine.cancel_schedule(tenant, schedule).await?;
    let target = format!("{tenant}/{schedule}");
    let affected = u64::try_from(cancelled).unwrap_or(u64::MAX);
    audited(&state, &operator, "schedule.cancel", target, Some(tenant), action.note, affected).await
}

/// Tenants that had dead follow-ups at the last count, or the one named.
async fn tenants_with_dead(
    state: &AppState,
    tenant: Option<TenantId>,
    fresh: bool,
) -> Result<Vec<TenantId>, ApiError> {
    if let Some(tenant) = tenant {
        if state.engine.store().tenant(tenant).await?.is_none() {
            return Err(ApiError::NotFound(format!("tenant {tenant}")));
        }
        return Ok(vec![tenant]);
    }
    let engine = &state.engine;
    // An action counts again, so that letters that died since the last pass are retried.
    let overview = if fresh {
        let now = engine.clock().now();
        let store = engine.store().as_ref();
        std::sync::Arc::new(
            operator_view::count_overview(store, &engine.config().plans, now).await?,
        )
    } else {
        current_overview(state).await?
    };
    Ok(overview.tenants.iter().filter(|summary| summary.dead > 0).map(|s| s.id).collect())
}

/// `POST /admin/v1/dead-letters/retry`: returns dead follow-ups to pending with a fresh retry
/// budget: every one, one tenant's (`tenant`), or those listed (`follow_ups`, with or without
/// `tenant`).
pub async fn retry_dead_letters(
    state: web::Data<AppState>,
    operator: Operator,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let action = action_body(&body)?;
    let listed = match &action.follow_ups {
        None => None,
        Some(ids) if ids.is_empty() || ids.len() > MAX_LISTED => {
            return Err(ApiError::BadRequest(format!(
                "follow_ups lists {} ids: list 1 to {MAX_LISTED}, or leave it out to retry all",
                ids.len()
            )));
        }
        Some(ids) => Some(
            ids.iter()
                .map(|id| {
                    id.parse::<FollowUpId>().map_err(|_| {
                        ApiError::BadRequest(format!(
                            "invalid follow-up id {id:?} in follow_ups: expected SCHEDULE.STEP"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let mut affected = 0_u64;
    for tenant in tenants_with_dead(&state, action.tenant, true).await? {
        let retried = state.engine.retry_dead(tenant, listed.clone()).await?;
        affected += u64::try_from(retried).unwrap_or(u64::MAX);
    }
    let target = match (&action.tenant, &listed) {
        (Some(tenant), None) => tenant.to_string(),
        (Some(tenant), Some(ids)) => format!("{tenant}: {} listed", ids.len()),
        (None, Some(ids)) => format!("{} listed", ids.len()),
        (None, None) => "all".to_owned(),
    };
    audited(&state, &operator, "dead_letters.retry", target, action.tenant, action.note, affected)
        .await
}

/// `GET /admin/v1/dead-letters?tenant=ID&offset=N&limit=N`: dead follow-ups, newest first.
/// Reads the follow-ups of the tenants the last count found with dead ones.
pub async fn dead_letters(
    state: web::Data<AppState>,
    _operator: Operator,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    known_parameters(&query, &["tenant", "offset", "limit"])?;
    let offset = number_parameter(&query, "offset")?.unwrap_or(0);
    let limit = page_limit(&query)?;
    let tenant = query
        .get("tenant")
        .map(|text| {
            text.parse::<TenantId>().map_err(|_| {
                ApiError::BadRequest(format!("query parameter tenant={text:?} is not a tenant id"))
            })
        })
        .transpose()?;
    let store = state.engine.store();
    let mut letters = Vec::new();
    for tenant in tenants_with_dead(&state, tenant, false).await? {
        let mut after = None;
        loop {
            let page = store.follow_ups_page(tenant, after, 1_000).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            letters.extend(page.into_iter().filter(|f| f.state == FollowUpState::Dead).map(
                |follow_up| DeadLetter {
                    follow_up: follow_up.id.to_string(),
                    tenant,
                    channel: follow_up.channel.as_str().to_owned(),
                    attempts: follow_up.attempts,
                    failed_at: Some(follow_up.updated_at),
                    reason: scrub_reason(follow_up.reason.as_deref().unwrap_or_default()),
                },
            ));
        }
    }
    letters.sort_by(|a, b| b.failed_at.cmp(&a.failed_at).then(a.follow_up.cmp(&b.follow_up)));
    let total = u64::try_from(letters.len()).unwrap_or(u64::MAX);
    let skip = usize::try_from(offset).unwrap_or(usize::MAX);
    let take = usize::try_from(limit).unwrap_or(usize::MAX);
    let dead_letters = letters.into_iter().skip(skip).take(take).collect();
    Ok(HttpResponse::Ok().json(DeadLetterPage { total, offset, dead_letters }))
}

fn page_limit(query: &HashMap<String, String>) -> Result<u64, ApiError> {
    let limit = number_parameter(query, "limit")?.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::BadRequest(format!(
            "query parameter limit={limit} is out of range: 1 to {MAX_PAGE}"
        )));
    }
    Ok(limit)
}

/// `GET /admin/v1/audit?offset=N&limit=N`: the audit log, newest first.
pub async fn audit_log(
    state: web::Data<AppState>,
    _operator: Operator,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    known_parameters(&query, &["offset", "limit"])?;
    let offset = number_parameter(&query, "offset")?.unwrap_or(0);
    let limit = usize::try_from(page_limit(&query)?).unwrap_or(usize::MAX);
    let (total, entries) = state.engine.store().audit_page(offset, limit).await?;
    let records = entries
        .into_iter()
        .map(|entry| AuditRecord {
            id: entry.id,
            at: entry.at,
            operator: entry.operator,
            action: entry.action,
            target: entry.target,
            note: entry.note,
            affected: entry.affected,
        })
        .collect();
    Ok(HttpResponse::Ok().json(AuditPage { total, offset, records }))
}
