//! The tenant's own account: `DELETE /v1/tenant` and `GET /v1/export`.

use std::sync::Arc;

use actix_web::web::Bytes;
use actix_web::{HttpResponse, web};
use followup_core::domain::{Tenant, TenantDeletion};
use followup_core::ids::{ContactId, FollowUpId, ScheduleId};
use followup_core::store::{AttemptCursor, Store, StoreError};
use serde::Serialize;
use serde_json::json;

use super::AppState;
use super::auth::AuthenticatedTenant;
use super::error::ApiError;
use super::tenant_api::ConnectionView;
use crate::lifecycle;

/// Days within which a deleted tenant's records are purged, as the service promises.
const PURGE_PROMISE_DAYS: i64 = 30;

/// Records read from the store per page of an export.
const EXPORT_PAGE: usize = 500;

/// Deletes the tenant's account: sends stop and the API key stops working before the
/// response, and the records are purged in the background.
pub async fn delete_tenant(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant): AuthenticatedTenant,
) -> Result<HttpResponse, ApiError> {
    let deletion = match lifecycle::stop_and_mark_deleted(&state.engine, &tenant).await {
        Ok(deletion) => deletion,
        // A deletion that began after this request was authenticated revoked its key.
        Err(error) if matches!(error.downcast_ref(), Some(StoreError::Conflict(_))) => {
            tracing::info!(tenant = %tenant.id, %error, "second deletion request rejected");
            return Err(ApiError::Unauthorized(
                "invalid API key: the tenant is already being deleted".into(),
            ));
        }
        Err(error) => return Err(error.into()),
    };
    // The purge does not reach the webhook log, a file beside the store, so the tenant's
    // records there are removed now. Its later webhooks are rejected.
    // NOTE: a crash between the deletion marker and this line leaves those records behind.
    match state.webhooks.log.remove_tenant(tenant.id).await {
        Ok(removed) => tracing::info!(tenant = %tenant.id, removed, "webhook records removed"),
        Err(error) => tracing::error!(tenant = %tenant.id, error = %format!("{error:#}"),
                                      "removing the tenant's webhook records failed"),
    }
    Ok(HttpResponse::Accepted().json(deletion_response(&deletion)))
}

fn deletion_response(deletion: &TenantDeletion) -> serde_json::Value {
    let purge_by = deletion.requested_at + chrono::Duration::days(PURGE_PROMISE_DAYS);
    json!({
        "deletion": deletion.id,
        "tenant": deletion.tenant,
        "requested_at": deletion.requested_at,
        "purge_by": purge_by,
        "sends": "stopped: nothing more is sent; requests handed to a provider before this \
                  response finished first and cannot be recalled",
    })
}

/// Streams every record of the tenant as NDJSON, one object per line with a `type` field,
/// read a page at a time so that memory stays bounded whatever the tenant's size. The last
/// line is `{"type":"end"}`; a stream cut short by an error has none.
pub async fn export(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant): AuthenticatedTenant,
) -> HttpResponse {
    let store = state.engine.store().clone();
    let stream =
        futures_util::stream::try_unfold(Some(ExportStage::Tenant(tenant)), move |stage| {
            let store = store.clone();
            async move {
                let Some(stage) = stage else { return Ok(None) };
                let (chunk, next) = export_page(store, stage).await.map_err(|error| {
                    tracing::error!(%error, "export stopped by a store error");
                    actix_web::error::ErrorInternalServerError("export stopped by a store error")
                })?;
                Ok::<_, actix_web::Error>(Some((chunk, next)))
            }
        });
    HttpResponse::Ok().content_type("application/x-ndjson").streaming(stream)
}

/// Progress of an export: the next kind of record to write, and the last key written.
enum ExportStage {
    Tenant(Tenant),
    Connections(Tenant),
    Sequences(Tenant),
    Contacts(Tenant, Option<ContactId>),
    Schedules(Tenant, Option<ScheduleId>),
    FollowUps(Tenant, Option<FollowUpId>),
    Attempts(Tenant, Option<AttemptCursor>),
    Suppressions(Tenant, Option<String>),
    End,
}

/// One line of an export: the record's fields and its `type`.
#[derive(Serialize)]
struct ExportLine<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    record: &'a T,
}

/// The tenant as an export shows it: without its API key hash.
#[derive(Serialize)]
struct TenantView<'a> {
    id: followup_core::ids::TenantId,
    name: &'a str,
    plan: &'a str,
    default_region: &'a str,
    default_timezone: &'a str,
    created_at: chrono::DateTime<chrono::Utc>,
}

/// Writes the lines of one stage's page and returns the stage after it.
async fn export_page(
    store: Arc<dyn Store>,
    stage: ExportStage,
) -> Result<(Bytes, Option<ExportStage>), StoreError> {
    let mut out = Vec::new();
    let next = match stage {
        ExportStage::Tenant(tenant) => {
            let view = TenantView {
                id: tenant.id,
                name: &tenant.name,
                plan: &tenant.plan,
                default_region: &tenant.default_region,
                default_timezone: &tenant.default_timezone,
                created_at: tenant.created_at,
            };
            write_lines(&mut out, "tenant", [view])?;
            ExportStage::Connections(tenant)
        }
        ExportStage::Connections(tenant) => {
            let connections = store.connections(tenant.id).await?;
            write_lines(&mut out, "connection", connections.iter().map(ConnectionView::from))?;
            ExportStage::Sequences(tenant)
        }
        ExportStage::Sequences(tenant) => {
            write_lines(&mut out, "sequence", store.sequences(tenant.id).await?)?;
            ExportStage::Contacts(tenant, None)
        }
        ExportStage::Contacts(tenant, after) => {
            let page = store.contacts_page(tenant.id, after, EXPORT_PAGE).await?;
            let last = page.last().map(|contact| contact.id);
            write_lines(&mut out, "contact", page)?;
            match last {
                Some(last) => ExportStage::Contacts(tenant, Some(last)),
                None => ExportStage::Schedules(tenant, None),
            }
        }
        ExportStage::Schedules(tenant, after) => {
            let page = store.schedules_page(tenant.id, after, EXPORT_PAGE).await?;
            let last = page.last().map(|schedule| schedule.id);
            write_lines(&mut out, "schedule", page)?;
            match last {
                Some(last) => ExportStage::Schedules(tenant, Some(last)),
                None => ExportStage::FollowUps(tenant, None),
            }
        }
        ExportStage::FollowUps(tenant, after) => {
            let page = store.follow_ups_page(tenant.id, after, EXPORT_PAGE).await?;
            let last = page.last().map(|follow_up| follow_up.id);
            write_lines(&mut out, "follow_up", page)?;
            match last {
                Some(last) => ExportStage::FollowUps(tenant, Some(last)),
                None => ExportStage::Attempts(tenant, None),
            }
        }
        ExportStage::Attempts(tenant, after) => {
            let page = store.attempts_page(tenant.id, after, EXPORT_PAGE).await?;
            let last = page.last().map(|attempt| (attempt.follow_up, attempt.number));
            write_lines(&mut out, "attempt", page)?;
            match last {
                Some(last) => ExportStage::Attempts(tenant, Some(last)),
                None => ExportStage::Suppressions(tenant, None),
            }
        }
        ExportStage::Suppressions(tenant, after) => {
            let page = store.suppressions_page(tenant.id, after, EXPORT_PAGE).await?;
            let last = page.last().map(|entry| entry.key.clone());
            let views = page.into_iter().map(crate::http::stops_api::SuppressionView::from);
            write_lines(&mut out, "suppression", views)?;
            match last {
                Some(last) => ExportStage::Suppressions(tenant, Some(last)),
                None => ExportStage::End,
            }
        }
        ExportStage::End => {
            out.extend_from_slice(b"{\"type\":\"end\"}\n");
            return Ok((Bytes::from(out), None));
        }
    };
    Ok((Bytes::from(out), Some(next)))
}

/// Appends one NDJSON line per record.
fn write_lines<T: Serialize>(
    out: &mut Vec<u8>,
    kind: &'static str,
    records: impl IntoIterator<Item = T>,
) -> Result<(), StoreError> {
    for record in records {
        let line = ExportLine { kind, record: &record };
        serde_json::to_writer(&mut *out, &line)
            .map_err(|error| StoreError::Unavailable(format!("encoding a {kind} line: {error}")))?;
        out.push(b'\n');
    }
    Ok(())
}
