//! Stop signals, the suppression list and the tenant's settings, under `/v1`.

use actix_web::{HttpResponse, web};
use followup_core::domain::{Contact, Tenant};
use followup_core::ids::ContactId;
use followup_core::suppression::{
    Suppression, SuppressionKind, SuppressionReason, SuppressionScope, key_of, normalize_value,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::AppState;
use super::auth::AuthenticatedTenant;
use super::error::ApiError;
use super::json::ApiJson;
use crate::stops::{ContactRef, FindError, find_contacts, stop_contacts};

/// Maximum stops in one bulk request.
const MAX_STOPS: usize = 1_000;

/// Maximum entries in one import or removal.
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopRequest {
    /// One of replied, meeting_booked, bounced, manual.
    pub reason: SuppressionReason,
}

/// A stop that names its contact in the body; exactly one of the four fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedStop {
    #[serde(default)]
    pub contact_id: Option<String>,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    pub reason: SuppressionReason,
}

/// `POST /v1/contacts/stop`: one named stop, or many under `stops`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StopsRequest {
    Bulk { stops: Vec<NamedStop> },
    One(NamedStop),
}

fn checked_reason(reason: SuppressionReason) -> Result<SuppressionReason, ApiError> {
    if reason.is_stop_signal() {
        return Ok(reason);
    }
    Err(ApiError::BadRequest(format!(
        "reason {reason} is not a stop reason: use replied, meeting_booked, bounced or manual"
    )))
}

impl NamedStop {
    fn contact_ref(&self) -> Result<ContactRef, String> {
        let given = [&self.contact_id, &self.external_id, &self.email, &self.phone];
        if given.iter().filter(|value| value.is_some()).count() != 1 {
            return Err("give exactly one of contact_id, external_id, email and phone".into());
        }
        if let Some(id) = &self.contact_id {
            let id = id.parse().map_err(|_| format!("contact_id {id:?} is not a UUID"))?;
            return Ok(ContactRef::Id(id));
        }
        if let Some(external_id) = &self.external_id {
            return Ok(ContactRef::ExternalId(external_id.clone()));
        }
        if let Some(email) = &self.email {
            return Ok(ContactRef::Email(email.clone()));
        }
        Ok(ContactRef::Phone(self.phone.clone().unwrap_or_default()))
    }
}

/// `POST /v1/contacts/{id}/stop`: stops one contact by id.
pub async fn stop_contact(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant): AuthenticatedTenant,
    path: web::Path<String>,
    body: ApiJson<StopRequest>,
) -> Result<HttpResponse, ApiError> {
    let reason = checked_reason(body.0.reason)?;
    let id: ContactId =
        path.parse().map_err(|_| ApiError::NotFound(format!("contact {:?}", path.as_str())))?;
    let found = state.engine.store().contacts(tenant.id, vec![id]).await?;
    if found.is_empty() {
        return Err(ApiError::NotFound(format!("contact {id}")));
    }
    let now = state.engine.clock().now();
    let outcome = stop_contacts(&state.engine, &tenant, &found, reason, now).await?;
    Ok(HttpResponse::Ok().json(json!({
        "contacts": outcome.contacts,
        "cancelled": outcome.cancelled,
    })))
}

/// `POST /v1/contacts/stop`: stops the contacts named by external id, email address, phone
/// number or id, one or many at once.
pub async fn stop_named_contacts(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant): AuthenticatedTenant,
    body: ApiJson<StopsRequest>,
) -> Result<HttpResponse, ApiError> {
    match body.0 {
        StopsRequest::One(stop) => {
            let reference = stop.contact_ref().map_err(ApiError::BadRequest)?;
            let reason = checked_reason(stop.reason)?;
            let found = find(&state, &tenant, &[reference]).await?.pop().unwrap_or_default();
            if found.is_empty() {
                return Err(ApiError::NotFound("contact named by the stop".into()));
            }
            let now = state.engine.clock().now();
            let outcome = stop_contacts(&state.engine, &tenant, &found, reason, now).await?;
            Ok(HttpResponse::Ok().json(json!({
                "contacts": outcome.contacts,
                "cancelled": outcome.cancelled,
            })))
        }
        StopsRequest::Bulk { stops } => bulk_stop(&state, &tenant, stops).await,
    }
}

async fn find(
    state: &AppState,
    tenant: &Tenant,
    refs: &[ContactRef],
) -> Result<Vec<Vec<Contact>>, ApiError> {
    find_contacts(&state.engine, tenant, refs).await.map_err(|error| match error {
        FindError::Invalid(reason) => ApiError::BadRequest(reason),
        FindError::Store(error) => error.into(),
    })
}

/// Applies many stops; a stop that is invalid or names no contact is reported by its index,
/// and the others go ahead.
async fn bulk_stop(
    state: &AppState,
    tenant: &Tenant,
    stops: Vec<NamedStop>,
) -> Result<HttpResponse, ApiError> {
    if stops.len() > MAX_STOPS {
        return Err(ApiError::PayloadTooLarge(format!(
            "{} stops in one request, over the limit of {MAX_STOPS}: split them",
            stops.len()
        )));
    }
    let mut results = vec![serde_json::Value::Null; stops.len()];
    let mut valid = Vec::new();
    for (index, stop) in stops.iter().enumerate() {
        let checked = stop.contact_ref().and_then(|reference| {
            checked_reason(stop.reason).map(|_| reference).map_err(|e| e.to_string())
        });
        match checked {
            Ok(reference) => valid.push((index, reference)),
            Err(error) => results[index] = json!({"index": index, "error": error}),
        }
    }
    // One address that does not parse fails only its own stop.
    let mut found = Vec::with_capacity(valid.len());
    for (index, reference) in &valid {
        match find(state, tenant, std::slice::from_ref(reference)).await {
            Ok(mut contacts) => found.push((*index, contacts.pop().unwrap_or_default())),
            Err(ApiError::BadRequest(error)) => {
                results[*index] = json!({"index": index, "error": error});
            }
            Err(error) => return Err(error),
        }
    }
    let now = state.engine.clock().now();
    let mut total = 0;
    for (index, contacts) in found {
        if contacts.is_empty() {
            results[index] = json!({"index": index, "error": "no contact matches"});
            continue;
        }
        let reason = stops[index].reason;
        let outcome = stop_contacts(&state.engine, tenant, &contacts, reason, now).await?;
        total += outcome.cancelled;
        results[index] =
            json!({"index": index, "contacts": outcome.contacts, "cancelled": outcome.cancelled});
    }
    Ok(HttpResponse::Ok().json(json!({"results": results, "cancelled": total})))
}

/// An entry of the suppression list as the API shows it.
#[derive(Debug, Serialize)]
pub struct SuppressionView {
    pub kind: SuppressionKind,
    pub value: String,
    pub reason: SuppressionReason,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl From<Suppression> for SuppressionView {
    fn from(entry: Suppression) -> Self {
        Self {
            kind: entry.kind,
            value: entry.value,
            reason: entry.reason,
            created_at: entry.created_at,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuppressionListQuery {
    /// Paging: the `next_after` of the previous page.
    #[serde(default)]
    pub after: Option<String>,
    /// Most entries in one page, 1 to 1,000 (default 100).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// `GET /v1/suppressions`: the suppression list a page at a time, for export.
pub async fn list_suppressions(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant): AuthenticatedTenant,
    query: web::Query<SuppressionListQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let limit = query.limit.unwrap_or(100);
    if !(1..=1_000).contains(&limit) {
        return Err(ApiError::BadRequest(format!("limit {limit} is outside 1 to 1000")));
    }
    let page = state.engine.store().suppressions_page(tenant.id, query.after, limit).await?;
    let next_after = (page.len() == limit).then(|| page.last().map(|e| e.key.clone())).flatten();
    let entries: Vec<SuppressionView> = page.into_iter().map(SuppressionView::from).collect();
    Ok(HttpResponse::Ok().json(json!({"suppressions": entries, "next_after": next_after})))
}

/// One entry to import or remove.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryRequest {
    /// email, domain or phone.
    pub kind: SuppressionKind,
    pub value: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntriesRequest {
    pub entries: Vec<EntryRequest>,
    /// Reason recorded on imported entries: imported by default, or manual, unsubscribed,
    /// sms_opt_out, provider_opt_out, bounced.
    #[serde(default)]
    pub reason: Option<SuppressionReason>,
}

/// Entries of a request after their check: the valid ones in normal form, and an error
/// object per invalid one, naming its index.
type CheckedEntries = (Vec<(SuppressionKind, String)>, Vec<serde_json::Value>);

/// Checks every entry of an import or removal.
fn checked_entries(tenant: &Tenant, entries: &[EntryRequest]) -> Result<CheckedEntries, ApiError> {
    if entries.len() > MAX_ENTRIES {
        return Err(ApiError::PayloadTooLarge(format!(
            "{} entries in one request, over the limit of {MAX_ENTRIES}: split them",
            entries.len()
        )));
    }
    let mut valid = Vec::with_capacity(entries.len());
    let mut errors = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        if entry.kind == SuppressionKind::Contact {
            let error = "kind contact is set by stop signals: use POST /v1/contacts/stop";
            errors.push(json!({"index": index, "error": error}));
            continue;
        }
        let region = Some(tenant.default_region.as_str());
        match normalize_value(entry.kind, &entry.value, region) {
            Ok(value) => valid.push((entry.kind, value)),
            Err(error) => errors.push(json!({"index": index, "error": error})),
        }
    }
    Ok((valid, errors))
}

/// `POST /v1/suppressions`: imports entries. Invalid entries are listed by index and the
/// valid ones are stored.
pub async fn import_suppressions(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant): AuthenticatedTenant,
    body: ApiJson<EntriesRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = body.0;
    let reason = request.reason.unwrap_or(SuppressionReason::Imported);
    let (valid, errors) = checked_entries(&tenant, &request.entries)?;
    let now = state.engine.clock().now();
    let entries: Vec<Suppression> = valid
        .into_iter()
        .map(|(kind, value)| Suppression::new(tenant.id, kind, value, reason, now))
        .collect();
    let stored = entries.len();
    state.engine.store().put_suppressions(tenant.id, entries).await?;
    Ok(HttpResponse::Ok().json(json!({"stored": stored, "errors": errors})))
}

/// `POST /v1/suppressions/remove`: removes entries, so that their addresses may be reached
/// again. Stopped contacts stay stopped.
pub async fn remove_suppressions(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant): AuthenticatedTenant,
    body: ApiJson<EntriesRequest>,
) -> Result<HttpResponse, ApiError> {
    let (valid, errors) = checked_entries(&tenant, &body.0.entries)?;
    let keys = valid.iter().map(|(kind, value)| key_of(*kind, value)).collect();
    let removed = state.engine.store().remove_suppressions(tenant.id, keys).await?;
    Ok(HttpResponse::Ok().json(json!({"removed": removed, "errors": errors})))
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsRequest {
    /// address (a suppressed address stops only its own channel) or contact (every channel of
    /// a contact that has it).
    pub suppression_scope: SuppressionScope,
}

/// `GET /v1/settings`.
pub async fn get_settings(
    AuthenticatedTenant(tenant): AuthenticatedTenant,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(SettingsRequest { suppression_scope: tenant.suppression_scope }))
}

/// `PUT /v1/settings`: replaces the tenant's settings.
pub async fn put_settings(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant): AuthenticatedTenant,
    body: ApiJson<SettingsRequest>,
) -> Result<HttpResponse, ApiError> {
    let scope = body.0.suppression_scope;
    let store = state.engine.store();
    // The record is read again, so that a change made since authentication is kept.
    let mut current = store
        .tenant(tenant.id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("tenant {}", tenant.id)))?;
    current.suppression_scope = scope;
    store.put_tenant(current).await?;
    Ok(HttpResponse::Ok().json(SettingsRequest { suppression_scope: scope }))
}
