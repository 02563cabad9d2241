//! `POST /v1/forecast`: how a sequence would go out to a number of contacts, computed by the
//! dispatch code on a virtual clock, without sending or storing anything.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use followup_core::ids::SequenceId;
use serde::Deserialize;

use super::AppState;
use super::auth::AuthenticatedTenant;
use super::error::ApiError;
use super::json::ApiJson;
use super::tenant_api::{SequenceRequest, checked_sequence};
use crate::forecast::{ForecastInput, forecast};

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
