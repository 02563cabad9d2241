//! The tenant API under `/v1`: sequences, bulk upload of schedules, schedules and
//! connections. Every handler reads and writes only the authenticated tenant's records; an id
//! of another tenant's record gets 404, like an id that does not exist.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, NaiveTime, Utc, Weekday};
use followup_core::crypto::CryptoError;
use followup_core::domain::{
    Channel, Connection, Credentials, LimitOverrides, Provider, SendWindow, Sequence, StalePolicy,
    Step,
};
use followup_core::ids::{ConnectionId, FollowUpId, ScheduleId, SequenceId};
use followup_core::ingest::{ContactField, Format, IngestError};
use followup_core::limits::{AccountKind, ConnectionLimits};
use followup_core::plan::validate_window;
use followup_core::sensitive::Sensitive;
use followup_core::store::StoreError;
use followup_core::template::Template;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::AppState;
use super::auth::AuthenticatedTenant;
use super::error::ApiError;
use super::json::ApiJson;
use crate::ingest::{IngestFailure, IngestJob, ingest};
use followup_core::delay::{check_delay_seconds, parse_delay_text};

/// Maximum number of steps in one sequence.
const MAX_STEPS: usize = 50;

/// Maximum length of a sequence or tenant name, in characters.
const MAX_NAME_CHARS: usize = 200;

/// Returns `name` without surrounding whitespace, or an error if that leaves it empty or
/// longer than [`MAX_NAME_CHARS`].
pub fn checked_name(name: &str) -> Result<&str, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::BadRequest(format!(
            "name must have 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    // Names are shown in the console and in listings, where a control character or a
    // bidirectional override could hide or reorder what the operator reads.
    if let Some((position, character)) =
        name.chars().enumerate().find(|(_, character)| is_hidden_or_reordering(*character))
    {
        return Err(ApiError::BadRequest(format!(
            "name has the control or bidirectional formatting character U+{:04X} at position \
             {}; use printable text",
            u32::from(character),
            position + 1
        )));
    }
    Ok(name)
}

/// Returns whether `character` is a control character or a bidirectional embedding, override
/// or isolate (U+202A to U+202E, U+2066 to U+2069).
fn is_hidden_or_reordering(character: char) -> bool {
    character.is_control()
        || ('\u{202A}'..='\u{202E}').contains(&character)
        || ('\u{2066}'..='\u{2069}').contains(&character)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceRequest {
    pub name: String,
    pub steps: Vec<StepRequest>,
    #[serde(default)]
    pub window: Option<WindowRequest>,
    /// Template of each recipient's HTTPS unsubscribe URL, for the List-Unsubscribe headers.
    #[serde(default)]
    pub unsubscribe_url: Option<String>,
    /// What happens to a follow-up later than its step's `max_lateness`: `replan` (default)
    /// or `skip`.
    #[serde(default)]
    pub stale_policy: Option<StalePolicy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepRequest {
    pub channel: Channel,
    /// Delay after the previous step: seconds, or a string such as `"2d"`, `"36h"`, `"15m"`.
    #[serde(default)]
    pub delay: Option<serde_json::Value>,
    #[serde(default)]
    pub subject: Option<String>,
    pub body: String,
    /// HTML alternative of an email body.
    #[serde(default)]
    pub html_body: Option<String>,
    /// How late the step may go out after its planned instant, in the form of `delay`; no
    /// limit when absent.
    #[serde(default)]
    pub max_lateness: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowRequest {
    /// Three-letter English day names, e.g. `["mon", "tue"]`.
    pub weekdays: Vec<String>,
    /// Local time `HH:MM`.
    pub start: String,
    /// Local time `HH:MM`, exclusive.
    pub end: String,
}

pub async fn create_sequence(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant): AuthenticatedTenant,
    body: ApiJson<SequenceRequest>,
) -> Result<HttpResponse, ApiError> {
    let sequence = checked_sequence(&tenant, body.0)?;
    state.engine.store().put_sequence(sequence.clone()).await?;
    Ok(HttpResponse::Created().json(sequence))
}

/// Checks a sequence request and builds the sequence it describes, with a new id.
pub fn checked_sequence(
    tenant: &followup_core::domain::Tenant,
    request: SequenceRequest,
) -> Result<Sequence, ApiError> {
    let name = checked_name(&request.name)?;
    Ok(Sequence {
        id: SequenceId::generate(),
        tenant: tenant.id,
        name: name.to_owned(),
        steps: parse_steps(request.steps)?,
        window: match request.window {
            Some(window) => parse_window(window)?,
            None => SendWindow::always(),
        },
        unsubscribe_url: request.unsubscribe_url.map(checked_unsubscribe_url).transpose()?,
        stale_policy: request.stale_policy.unwrap_or_default(),
        created_at: Utc::now(),
    })
}

pub async fn list_sequences(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant): AuthenticatedTenant,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.engine.store().sequences(tenant.id).await?))
}

pub async fn get_sequence(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant): AuthenticatedTenant,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id::<SequenceId>(&path, "sequence")?;
    let sequence = state.engine.store().sequence(tenant.id, id).await?;
    let sequence = sequence.ok_or_else(|| ApiError::NotFound(format!("sequence {id}")))?;
    Ok(HttpResponse::Ok().json(sequence))
}

/// Checks an unsubscribe URL template: HTTPS, as one-click unsubscribe requires, and a
/// template that parses.
fn checked_unsubscribe_url(url: String) -> Result<String, ApiError> {
    let url = url.trim().to_owned();
    let invalid = |why: String| ApiError::BadRequest(format!("unsubscribe_url: {why}"));
    if !url.get(..8).is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://")) {
        return Err(invalid("must start with https:// (one-click unsubscribe needs HTTPS)".into()));
    }
    if url.chars().any(|c| c.is_whitespace() || c == '<' || c == '>') {
        return Err(invalid("must not contain spaces or angle brackets".into()));
    }
    Template::parse(&url).map_err(|e| invalid(e.to_string()))?;
    Ok(url)
}

fn parse_steps(steps: Vec<StepRequest>) -> Result<Vec<Step>, ApiError> {
    if steps.is_empty() || steps.len() > MAX_STEPS {
        return Err(ApiError::BadRequest(format!(
            "a sequence needs 1 to {MAX_STEPS} steps, got {}",
            steps.len()
        )));
    }
    steps
        .into_iter()
        .enumerate()
        .map(|(index, step)| {
            let number = index + 1;
            let invalid = |what: String| ApiError::BadRequest(format!("step {number}: {what}"));
            Template::parse(&step.body).map_err(|e| invalid(format!("body: {e}")))?;
            if let Some(subject) = &step.subject {
                Template::parse(subject).map_err(|e| invalid(format!("subject: {e}")))?;
            }
            if let Some(html) = &step.html_body {
                if step.channel != Channel::Email {
                    return Err(invalid(format!(
                        "html_body is for email steps, not {}",
                        step.channel
                    )));
                }
                Template::parse(html).map_err(|e| invalid(format!("html_body: {e}")))?;
            }
            if step.channel == Channel::Email && step.subject.as_deref().is_none_or(str::is_empty) {
                return Err(invalid("an email step needs a subject".into()));
            }
            if step.body.trim().is_empty() {
                return Err(invalid("body is empty".into()));
            }
            let delay_seconds = match &step.delay {
                None => 0,
                Some(value) => parse_delay(value).map_err(invalid)?,
            };
            Ok(Step {
                channel: step.channel,
                delay_seconds,
                subject: step.subject,
                body: step.body,
                html_body: step.html_body,
                max_lateness_seconds: step
                    .max_lateness
                    .as_ref()
                    .map(parse_delay)
                    .transpose()
                    .map_err(|e| invalid(format!("max_lateness: {e}")))?,
            })
        })
        .collect()
}

/// Reads a delay: a number of seconds, or digits followed by `s`, `m`, `h` or `d`.
fn parse_delay(value: &serde_json::Value) -> Result<u64, String> {
    if let Some(seconds) = value.as_u64() {
        return check_delay_seconds(seconds);
    }
    let text = value.as_str().ok_or("delay must be seconds or a string like \"2d\"")?;
    parse_delay_text(text)
}

fn parse_window(window: WindowRequest) -> Result<SendWindow, ApiError> {
    let invalid = |what: String| ApiError::BadRequest(format!("window: {what}"));
    let weekdays = window
        .weekdays
        .iter()
        .map(|day| day.parse::<Weekday>().map_err(|_| invalid(format!("unknown weekday {day:?}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let time = |text: &str| {
        NaiveTime::parse_from_str(text, "%H:%M")
            .map_err(|_| invalid(format!("invalid time {text:?}: expected HH:MM")))
    };
    let parsed = SendWindow { weekdays, start: time(&window.start)?, end: time(&window.end)? };
    validate_window(&parsed).map_err(invalid)?;
    Ok(parsed)
}

#[derive(Debug, Deserialize)]
pub struct BulkQuery {
    pub sequence: String,
    /// `csv` or `ndjson`; read from Content-Type when absent.
    #[serde(default)]
    pub format: Option<String>,
    /// JSON object from column header to contact field, e.g. `{"Mail": "email"}`.
    #[serde(default)]
    pub mapping: Option<String>,
}

pub async fn bulk_upload(
    request: HttpRequest,
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant): AuthenticatedTenant,
    query: web::Query<BulkQuery>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let sequence_id = parse_id::<SequenceId>(&query.sequence, "sequence")?;
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
    // actix-web is built without decompression, so an encoded body would be read as text.
    if let Some(encoding) = request.headers().get(actix_web::http::header::CONTENT_ENCODING)
        && !encoding.as_bytes().eq_ignore_ascii_case(b"identity")
    {
        return Err(ApiError::UnsupportedMediaType(format!(
            "Content-Encoding {} is not supported: send the file uncompressed",
            String::from_utf8_lossy(encoding.as_bytes())
        )));
    }
    let config = state.engine.config();
    let mut limits = config.ingest.limits();
    limits.max_bytes = state.limits.max_upload_bytes(tenant.id, limits.max_bytes);
    if let Some(length) = content_length(&request)
        && length > limits.max_bytes
    {
        return Err(ApiError::PayloadTooLarge(format!(
            "upload of {length} bytes is over the limit of {} bytes: split the file",
            limits.max_bytes
        )));
    }
    let tenant_key = state.engine.sealed_store().tenant_key(tenant.id).await?;
    let job = IngestJob {
        tenant: &tenant,
        record_ids: tenant_key.record_ids(),
        sequence: &sequence,
        format,
        explicit_mapping,
        limits,
        batch_rows: config.ingest.batch_rows,
        max_errors_listed: config.ingest.max_errors_listed,
        now: state.engine.clock().now(),
        expected_bytes: content_length(&request),
    };
    let started = std::time::Instant::now();
    let result = ingest(store.as_ref(), job, body).await;
    state.engine.notify_tenant(tenant.id);
    let report = match &result {
        Ok(report) => report,
        Err(
            IngestFailure::Input { report, .. }
            | IngestFailure::Body { report, .. }
            | IngestFailure::Store { report, .. },
        ) => report.as_ref(),
    };
    tracing::info!(
        tenant = %tenant.id,
        sequence = %sequence.id,
        rows = report.rows,
        created = report.created,
        duplicates = report.duplicates,
        rejected = report.rejected,
        seconds = started.elapsed().as_secs_f64(),
        stopped_early = result.is_err(),
        "upload finished"
    );
    match result {
        Ok(report) => Ok(HttpResponse::Ok().json(report)),
        Err(failure) => Ok(failure_response(failure)),
    }
}

/// Builds the response to an upload that stopped early. The status gives the cause, and the
/// body reports the rows already stored, so that nothing accepted goes unreported.
fn failure_response(failure: IngestFailure) -> HttpResponse {
    // Deleting the tenant destroys its data key and makes the store reject its writes, so an
    // upload under way when the tenant was deleted ends here, and a retry cannot help.
    if let IngestFailure::Store {
        error: StoreError::Crypto(CryptoError::NoDataKey(_)) | StoreError::Conflict(_),
        report,
    } = &failure
    {
        return HttpResponse::Gone().json(json!({
            "error": {
                "code": "tenant_deleted",
                "message": format!(
                    "the tenant was deleted while this upload ran; {} rows read before that \
                     were stored and are being purged with the rest of its data",
                    report.accepted
                ),
            },
        }));
    }
    let message = failure.to_string();
    let (status, code, report) = match failure {
        IngestFailure::Input { error, report } => {
            let status = match error {
                IngestError::TooLarge { .. } | IngestError::TooManyRows { .. } => {
                    actix_web::http::StatusCode::PAYLOAD_TOO_LARGE
                }
                _ => actix_web::http::StatusCode::BAD_REQUEST,
            };
            (status, "invalid_upload", report)
        }
        IngestFailure::Body { report, .. } => {
            (actix_web::http::StatusCode::BAD_REQUEST, "upload_interrupted", report)
        }
        IngestFailure::Store { report, .. } => {
            (actix_web::http::StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", report)
        }
    };
    let stored = report.accepted;
    let report = *report;
    HttpResponse::build(status).json(json!({
        "error": {
            "code": code,
            "message": format!(
                "{message}; {stored} rows read before the stop are stored, and uploading the \
                 whole file again is safe because ingest skips rows already stored"
            ),
        },
        "report": report,
    }))
}

pub(crate) fn upload_format(
    request: &HttpRequest,
    format: Option<&str>,
) -> Result<Format, ApiError> {
    match format {
        Some("csv") => return Ok(Format::Csv),
        Some("ndjson") => return Ok(Format::Ndjson),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "unknown format {other:?}: use csv or ndjson"
            )));
        }
        None => {}
    }
    let content_type = request
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("text/csv");
    Format::from_content_type(content_type).ok_or_else(|| {
        ApiError::UnsupportedMediaType(format!(
            "content type {content_type:?} is not an upload format: send text/csv or \
             application/x-ndjson, or add format=csv"
        ))
    })
}

fn content_length(request: &HttpRequest) -> Option<u64> {
    request.headers().get(actix_web::http::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleQuery {
    /// With `contact`: the sequence the contact was enrolled in.
    #[serde(default)]
    pub sequence: Option<String>,
    /// With `sequence`: the contact's external id, email address or E.164 phone number, as
    /// the upload had it.
    #[serde(default)]
    pub contact: Option<String>,
    /// Paging: list schedules after this schedule id.
    #[serde(default)]
    pub after: Option<String>,
    /// Paging: most schedules in one page, 1 to 1,000 (default 100).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// Finds one schedule by sequence and contact, or lists the tenant's schedules a page at a
/// time, each with its follow-ups.
pub async fn find_schedules(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant): AuthenticatedTenant,
    query: web::Query<ScheduleQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let store = state.engine.store();
    if let (Some(sequence), Some(contact)) = (&query.sequence, &query.contact) {
        let sequence = parse_id::<SequenceId>(sequence, "sequence")?;
        let tenant_key = state.engine.sealed_store().tenant_key(tenant.id).await?;
        for key in contact_key_candidates(contact) {
            let id = tenant_key.record_ids().schedule(sequence, &key);
            if let Some(schedule) = store.schedule(tenant.id, id).await? {
                let follow_ups = store.follow_ups_of_schedule(tenant.id, id).await?;
                return Ok(HttpResponse::Ok()
                    .json(json!({"schedule": schedule, "follow_ups": follow_ups})));
            }
        }
        return Err(ApiError::NotFound(format!("schedule of contact {contact:?} in {sequence}")));
    }
    if query.sequence.is_some() || query.contact.is_some() {
        return Err(ApiError::BadRequest(
            "give both sequence and contact to find one schedule, or neither to list".into(),
        ));
    }
    let limit = query.limit.unwrap_or(100);
    if !(1..=1_000).contains(&limit) {
        return Err(ApiError::BadRequest(format!("limit {limit} is outside 1 to 1000")));
    }
    let after = match &query.after {
        None => None,
        Some(text) => {
            let schedule: ScheduleId = text.parse().map_err(|_| {
                ApiError::BadRequest(format!("invalid after {text:?}: expected a schedule id"))
            })?;
            // The last step of `after` sorts before the next schedule's first step.
            Some(FollowUpId { schedule, step: u16::MAX })
        }
    };
    let mut schedules: Vec<serde_json::Value> = Vec::new();
    let mut cursor = after;
    'pages: loop {
        let page = store.follow_ups_page(tenant.id, cursor, limit.saturating_mul(4)).await?;
        let Some(last) = page.last() else { break };
        cursor = Some(last.id);
        for follow_up in page {
            let schedule = follow_up.id.schedule;
            let same = schedules.last().is_some_and(|s| s["schedule"] == json!(schedule));
            if !same {
                if schedules.len() == limit {
                    break 'pages;
                }
                schedules.push(json!({"schedule": schedule, "follow_ups": []}));
            }
            if let Some(list) = schedules.last_mut().and_then(|s| s["follow_ups"].as_array_mut()) {
                list.push(json!(follow_up));
            }
        }
    }
    let next_after = (schedules.len() == limit)
        .then(|| schedules.last().map(|s| s["schedule"].clone()))
        .flatten();
    Ok(HttpResponse::Ok().json(json!({"schedules": schedules, "next_after": next_after})))
}

/// Returns the keys an upload may have derived a contact's schedule from: the value as given (an
/// external id or an E.164 number), and the value in lowercase, as ingest keys an email
/// address.
fn contact_key_candidates(contact: &str) -> Vec<String> {
    let trimmed = contact.trim().to_owned();
    let lowercase = trimmed.to_lowercase();
    if lowercase == trimmed { vec![trimmed] } else { vec![trimmed, lowercase] }
}

pub async fn get_schedule(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant): AuthenticatedTenant,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id::<ScheduleId>(&path, "schedule")?;
    let store = state.engine.store();
    let schedule = store.schedule(tenant.id, id).await?;
    let schedule = schedule.ok_or_else(|| ApiError::NotFound(format!("schedule {id}")))?;
    let follow_ups = store.follow_ups_of_schedule(tenant.id, id).await?;
    Ok(HttpResponse::Ok().json(json!({"schedule": schedule, "follow_ups": follow_ups})))
}

/// Cancels every follow-up of the schedule that has not left yet.
pub async fn cancel_schedule(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant): AuthenticatedTenant,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id::<ScheduleId>(&path, "schedule")?;
    let store = state.engine.store();
    if store.schedule(tenant.id, id).await?.is_none() {
        return Err(ApiError::NotFound(format!("schedule {id}")));
    }
    let count = state.engine.cancel_schedule(tenant.id, id).await?;
    Ok(HttpResponse::Ok().json(json!({"schedule": id, "cancelled": count})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionRequest {
    /// Mailbox address (Gmail, Outlook) or E.164 number (Twilio) to send from.
    pub sender: String,
    #[serde(default)]
    pub access_token: Option<Sensitive<String>>,
    #[serde(default)]
    pub refresh_token: Option<Sensitive<String>>,
    /// Seconds the access token stays valid from now, as the token endpoint reported it.
    #[serde(default)]
    pub expires_in: Option<u64>,
    /// When the access token expires; the other way to state `expires_in`.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Outlook only: the Microsoft tenant whose token endpoint refreshes the grant.
    #[serde(default)]
    pub microsoft_tenant: Option<String>,
    #[serde(default)]
    pub account_sid: Option<String>,
    #[serde(default)]
    pub auth_token: Option<Sensitive<String>>,
    #[serde(default)]
    pub limits: LimitOverrides,
    /// The kind of account; the provider's most common kind when absent.
    #[serde(default)]
    pub account_kind: Option<AccountKind>,
    /// IANA timezone of the mailbox or number; UTC when absent.
    #[serde(default)]
    pub timezone: Option<String>,
}

/// Checks an OAuth token named `field`: an access token goes into an `Authorization` header
/// as is, and a refresh token into a form body.
fn checked_token(token: Sensitive<String>, field: &str) -> Result<Sensitive<String>, ApiError> {
    /// Longer than the tokens Google and Microsoft issue, short enough for a header.
    const MAX_TOKEN_BYTES: usize = 8_192;
    let value = token.expose();
    let usable = !value.is_empty()
        && value.len() <= MAX_TOKEN_BYTES
        && value.bytes().all(|byte| byte.is_ascii_graphic());
    if usable {
        Ok(token)
    } else {
        Err(ApiError::BadRequest(format!(
            "{field} must be 1 to {MAX_TOKEN_BYTES} printable ASCII characters without spaces"
        )))
    }
}

/// Builds the OAuth credentials of a Gmail or Outlook connection request, checking each field.
fn oauth_credentials(
    provider: Provider,
    request: &ConnectionRequest,
    now: DateTime<Utc>,
) -> Result<Credentials, ApiError> {
    let access_token = request
        .access_token
        .clone()
        .map(|token| checked_token(token, "access_token"))
        .transpose()?
        .ok_or_else(|| ApiError::BadRequest(format!("{provider} needs access_token")))?;
    let refresh_token = request
        .refresh_token
        .clone()
        .map(|token| checked_token(token, "refresh_token"))
        .transpose()?;
    let expires_at = match (request.expires_in, request.expires_at) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest("give expires_in or expires_at, not both".into()));
        }
        (Some(seconds), None) => {
            // Ten years: longer than any access token lives, short enough for the arithmetic.
            const MAX_EXPIRES_IN: u64 = 315_360_000;
            if seconds > MAX_EXPIRES_IN {
                return Err(ApiError::BadRequest(format!(
                    "expires_in {seconds} is above {MAX_EXPIRES_IN} seconds"
                )));
            }
            Some(now + chrono::Duration::seconds(seconds as i64))
        }
        (None, at) => at,
    };
    let microsoft_tenant = match (&request.microsoft_tenant, provider) {
        (None, _) => None,
        (Some(_), Provider::Gmail | Provider::Twilio) => {
            return Err(ApiError::BadRequest(
                "microsoft_tenant applies to outlook connections only".into(),
            ));
        }
        (Some(name), Provider::Outlook) => Some(checked_microsoft_tenant(name)?),
    };
    Ok(Credentials::OAuth { access_token, refresh_token, expires_at, microsoft_tenant })
}

/// Checks a Microsoft tenant: `common`, `organizations`, `consumers`, a tenant id or a domain.
/// It becomes a path segment of the token endpoint, so only letters, digits, `.` and `-` pass.
fn checked_microsoft_tenant(name: &str) -> Result<String, ApiError> {
    let valid = (1..=253).contains(&name.len())
        && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-'));
    if valid {
        Ok(name.to_owned())
    } else {
        let quoted = super::json::shorten(name);
        Err(ApiError::BadRequest(format!(
            "microsoft_tenant {quoted:?} is not a tenant id, a domain, or one of common, \
             organizations, consumers"
        )))
    }
}

/// Checks that a sender is a mailbox address (Gmail, Outlook) or an E.164 number (Twilio).
fn validate_sender(provider: Provider, sender: &str) -> Result<(), ApiError> {
    // Printable ASCII without spaces or angle brackets: the sender goes into a From header,
    // where a line break would start a header of its own. 254 octets is the longest address
    // SMTP carries (RFC 5321).
    let plain = sender.len() <= 254
        && sender.bytes().all(|byte| byte.is_ascii_graphic() && !matches!(byte, b'<' | b'>'));
    let valid = plain
        && match provider {
            Provider::Gmail | Provider::Outlook => sender
                .split_once('@')
                .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.')),
            Provider::Twilio => sender.strip_prefix('+').is_some_and(|digits| {
                (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
            }),
        };
    if valid {
        return Ok(());
    }
    let expected = match provider {
        Provider::Twilio => "an E.164 number such as +15005550006",
        Provider::Gmail | Provider::Outlook => "a mailbox address such as sales@example.com",
    };
    let quoted = super::json::shorten(sender);
    Err(ApiError::BadRequest(format!("invalid sender {quoted:?}: expected {expected}")))
}

/// A connection as the API shows it: never a secret.
#[derive(Debug, Serialize)]
pub struct ConnectionView {
    pub id: ConnectionId,
    pub provider: Provider,
    pub sender: String,
    /// The overrides the tenant set.
    pub limits: LimitOverrides,
    pub account_kind: AccountKind,
    pub timezone: String,
    /// The limits in force per channel: the overrides over the account kind's published
    /// limits.
    pub effective_limits: BTreeMap<Channel, ConnectionLimits>,
    /// Reason sending is paused, e.g. a revoked grant; sends wait until the tenant connects again.
    pub paused_reason: Option<String>,
    /// Whether the engine stores a refresh token and so renews the access token by itself
    /// (OAuth connections only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub has_refresh_token: Option<bool>,
    /// When the stored access token expires, if known (OAuth connections only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token_expires_at: Option<DateTime<Utc>>,
    /// The Microsoft tenant of an Outlook grant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub microsoft_tenant: Option<String>,
}

impl From<&Connection> for ConnectionView {
    fn from(connection: &Connection) -> Self {
        let effective_limits = Channel::ALL
            .into_iter()
            .filter(|&channel| connection.provider.carries(channel))
            .map(|channel| (channel, ConnectionLimits::of(connection, channel)))
            .collect();
        let (has_refresh_token, access_token_expires_at, microsoft_tenant) =
            match &connection.credentials {
                Credentials::OAuth { refresh_token, expires_at, microsoft_tenant, .. } => {
                    (Some(refresh_token.is_some()), *expires_at, microsoft_tenant.clone())
                }
                Credentials::Twilio { .. } => (None, None, None),
            };
        Self {
            has_refresh_token,
            access_token_expires_at,
            microsoft_tenant,
            id: connection.id,
            provider: connection.provider,
            sender: connection.sender.clone(),
            limits: connection.limits,
            account_kind: connection.account_kind(),
            timezone: connection.timezone().name().to_owned(),
            effective_limits,
            paused_reason: connection.paused_reason.clone(),
        }
    }
}

/// Rejects a new connection beyond what the tenant's plan allows; replacing an existing one is
/// always allowed.
async fn check_connection_allowance(
    state: &AppState,
    tenant: &followup_core::domain::Tenant,
    provider: Provider,
) -> Result<(), ApiError> {
    let Some(plan) = state.engine.config().plans.get(&tenant.plan) else {
        return Ok(());
    };
    let connections = state.engine.store().connections(tenant.id).await?;
    let replaces = connections.iter().any(|connection| connection.provider == provider);
    let allowed = usize::try_from(plan.connections).unwrap_or(usize::MAX);
    if !replaces && connections.len() >= allowed {
        return Err(ApiError::Unprocessable(format!(
            "plan {} allows {allowed} connection(s) and the tenant has {}: remove one or move to \
             a larger plan to connect {provider}",
            tenant.plan,
            connections.len()
        )));
    }
    Ok(())
}

pub async fn put_connection(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant): AuthenticatedTenant,
    path: web::Path<String>,
    body: ApiJson<ConnectionRequest>,
) -> Result<HttpResponse, ApiError> {
    let provider: Provider = path.parse().map_err(|_| {
        ApiError::NotFound(format!("provider {:?} (use gmail, outlook or twilio)", *path))
    })?;
    let request = body.0;
    validate_sender(provider, request.sender.trim())?;
    check_connection_allowance(&state, &tenant, provider).await?;
    let limits = &request.limits;
    let zero = [limits.per_minute, limits.per_day, limits.per_local_day, limits.max_in_flight]
        .contains(&Some(0));
    if zero {
        return Err(ApiError::BadRequest(
            "limits must be at least 1; leave a limit out to use the provider's published one"
                .into(),
        ));
    }
    if let Some(kind) = request.account_kind
        && kind.provider() != provider
    {
        let kinds: Vec<&str> = AccountKind::ALL
            .iter()
            .filter(|kind| kind.provider() == provider)
            .map(|kind| kind.as_str())
            .collect();
        return Err(ApiError::BadRequest(format!(
            "account_kind {kind} is not a {provider} account; use one of: {}",
            kinds.join(", ")
        )));
    }
    let kind = request.account_kind.unwrap_or_else(|| AccountKind::default_for(provider));
    if let Some(requested) = request.limits.max_in_flight
        && requested > kind.max_in_flight_allowed()
    {
        return Err(ApiError::BadRequest(format!(
            "limits.max_in_flight {requested} is above the {} a {provider} connection allows",
            kind.max_in_flight_allowed()
        )));
    }
    if let Some(name) = &request.timezone
        && name.parse::<chrono_tz::Tz>().is_err()
    {
        let quoted = super::json::shorten(name);
        return Err(ApiError::BadRequest(format!(
            "timezone {quoted:?} is not an IANA timezone name such as Europe/Berlin"
        )));
    }
    if provider == Provider::Twilio {
        let oauth_fields = [
            ("access_token", request.access_token.is_some()),
            ("refresh_token", request.refresh_token.is_some()),
            ("expires_in", request.expires_in.is_some()),
            ("expires_at", request.expires_at.is_some()),
            ("microsoft_tenant", request.microsoft_tenant.is_some()),
        ];
        if let Some((field, _)) = oauth_fields.iter().find(|(_, present)| *present) {
            return Err(ApiError::BadRequest(format!(
                "{field} is an OAuth field; twilio takes account_sid and auth_token"
            )));
        }
    }
    let credentials = match provider {
        Provider::Gmail | Provider::Outlook => {
            oauth_credentials(provider, &request, state.engine.clock().now())?
        }
        Provider::Twilio => Credentials::Twilio {
            account_sid: request
                .account_sid
                .clone()
                .filter(|sid| {
                    sid.len() == 34
                        && sid.starts_with("AC")
                        && sid[2..].bytes().all(|byte| byte.is_ascii_hexdigit())
                })
                .ok_or_else(|| {
                    ApiError::BadRequest("twilio needs account_sid: AC followed by 32 hex".into())
                })?,
            auth_token: request.auth_token.clone().filter(|t| !t.expose().is_empty()).ok_or_else(
                || ApiError::BadRequest("twilio needs a non-empty auth_token".into()),
            )?,
        },
    };
    let store = state.engine.store();
    let existing = store.connections(tenant.id).await?;
    let id = existing
        .iter()
        .find(|c| c.provider == provider)
        .map_or_else(ConnectionId::generate, |c| c.id);
    let connection = Connection {
        id,
        tenant: tenant.id,
        provider,
        sender: request.sender.trim().to_owned(),
        credentials,
        limits: request.limits,
        account_kind: request.account_kind,
        timezone: request.timezone,
        paused_reason: None,
    };
    store.put_connection(connection.clone()).await?;
    if let Some(fakes) = &state.fakes {
        super::register_with_fakes(fakes, &connection);
    }
    state.engine.notify_tenant(tenant.id);
    Ok(HttpResponse::Ok().json(ConnectionView::from(&connection)))
}

pub async fn list_connections(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant): AuthenticatedTenant,
) -> Result<HttpResponse, ApiError> {
    let connections = state.engine.store().connections(tenant.id).await?;
    let views: Vec<ConnectionView> = connections.iter().map(ConnectionView::from).collect();
    Ok(HttpResponse::Ok().json(views))
}

fn parse_id<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, ApiError> {
    // An id that cannot parse names no record, so it gets the same 404 as a missing one.
    text.parse().map_err(|_| ApiError::NotFound(format!("{what} {text:?}")))
}
