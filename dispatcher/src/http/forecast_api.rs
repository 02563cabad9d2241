//! `POST /v1/forecast`: how a sequence would go out to a number of contacts, computed by the
//! dispatch code on a virtual clock, without sending or storing anything.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use followup_core::ids::SequenceId;
use followup_core::ingest::ContactField;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::auth::AuthenticatedTenant;
use super::error::ApiError;
use super::json::ApiJson;
use super::tenant_api::{BulkQuery, SequenceRequest, checked_sequence, upload_format};
use crate::forecast::{ForecastInput, forecast, forecast_planned};
use crate::ingest::{IngestFailure, IngestJob, plan_upload};

/// Maximum contacts of one forecast.
const MAX_CONTACTS: u64 = 1_000_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForecastRequest {
    /// A stored sequence; give this or `sequence`.
    #[serde(default)]
    pub sequence_id: Option<String>,
    /// A sequence as `POST /v1/sequences` takes it, not stored.
    #[serde(default)]
    pub sequence: Option<SequenceRequest>,
    /// Contacts enrolled at once, 1 to 1,000,000.
    pub contacts: u64,
    /// IANA timezone of the contacts; the tenant's default when absent.
    #[serde(default)]
    pub timezone: Option<String>,
    /// When the schedules start; now when absent.
    #[serde(default)]
    pub start_at: Option<DateTime<Utc>>,
}

pub async fn forecast_sequence(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant): AuthenticatedTenant,
    body: ApiJson<ForecastRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = body.0;
    if !(1..=MAX_CONTACTS).contains(&request.contacts) {
        return Err(ApiError::BadRequest(format!(
            "contacts {} is outside 1 to {MAX_CONTACTS}",
            request.contacts
        )));
    }
    let store = state.engine.store();
    let sequence = match (request.sequence_id, request.sequence) {
        (Some(id), None) => {
            let parsed: SequenceId =
                id.parse().map_err(|_| ApiError::NotFound(format!("sequence {id:?}")))?;
            let found = store.sequence(tenant.id, parsed).await?;
            found.ok_or_else(|| ApiError::NotFound(format!("sequence {parsed}")))?
        }
        (None, Some(sequence)) => checked_sequence(&tenant, sequence)?,
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of sequence_id and sequence".into(),
            ));
        }
    };
    let zone = request.timezone.as_deref().unwrap_or(&tenant.default_timezone);
    let timezone = zone.parse().map_err(|_| {
        ApiError::BadRequest(format!("unknown timezone {zone:?}: use an IANA name"))
    })?;
    let input = ForecastInput {
        contacts: request.contacts,
        timezone,
        start_at: request.start_at.unwrap_or_else(|| state.engine.clock().now()),
        batch_size: state.engine.config().dispatch.batch_size,
    };
    let connections = store.connections(tenant.id).await?;
    let report = forecast(&sequence, &connections, &input);
    Ok(HttpResponse::Ok().json(report))
}

/// `POST /v1/forecast/upload?sequence=ID`: the forecast of an upload, read, validated and
/// planned by the ingest code as `POST /v1/schedules/bulk` would, but not stored. Every valid
/// row counts as a new schedule, even one a former upload already stored.
pub async fn forecast_upload(
    request: HttpRequest,
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant): AuthenticatedTenant,
    query: web::Query<BulkQuery>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let sequence_id: SequenceId = query
        .sequence
        .parse()
        .map_err(|_| ApiError::NotFound(format!("sequence {:?}", query.sequence)))?;
    let store = state.engine.store();
    let sequence = store.sequence(tenant.id, sequence_id).await?;
    let sequence = sequence.ok_or_else(|| ApiError::NotFound(format!("sequence {sequence_id}")))?;
    let format = upload_format(&request, query.format.as_deref())?;
    let explicit_mapping = match &query.mapping {
        None => None,
        Some(text) => Some(
            serde_json::from_str::<BTreeMap<String, ContactField>>(text)
                .map_err(|e| ApiError::BadRequest(format!("invalid mapping parameter: {e}")))?,
        ),
    };
    let config = state.engine.config();
    let mut limits = config.ingest.limits();
    limits.max_bytes = state.limits.max_upload_bytes(tenant.id, limits.max_bytes);
    let tenant_key = state.engine.sealed_store().tenant_key(tenant.id).await?;
    let now = state.engine.clock().now();
    let job = IngestJob {
        tenant: &tenant,
        record_ids: tenant_key.record_ids(),
        sequence: &sequence,
        format,
        explicit_mapping,
        limits,
        batch_rows: config.ingest.batch_rows,
        max_errors_listed: config.ingest.max_errors_listed,
        now,
        expected_bytes: None,
    };
    let (report, planned) = plan_upload(job, body).await.map_err(|failure| match failure {
        IngestFailure::Input { error, .. } => ApiError::BadRequest(error.to_string()),
        IngestFailure::Body { reason, .. } => {
            ApiError::BadRequest(format!("upload failed: {reason}"))
        }
        IngestFailure::Store { error, .. } => error.into(),
    })?;
    let connections = store.connections(tenant.id).await?;
    let batch_size = config.dispatch.batch_size;
    let mut report_forecast = forecast_planned(&connections, planned.follow_ups, now, batch_size);
    report_forecast.follow_ups += planned.without_address;
    Ok(HttpResponse::Ok().json(json!({
        "rows": report.rows,
        "accepted": report.accepted,
        "rejected": report.rejected,
        "duplicates": report.duplicates,
        "errors": report.errors,
        "without_address": planned.without_address,
        "forecast": report_forecast,
    })))
}
