//! The Twilio fake: `POST /2010-04-01/Accounts/{sid}/Messages.json` and `.../Calls.json`,
//! form-encoded with PascalCase fields and HTTP Basic auth, accepted with 201 and the created
//! resource in snake_case JSON.
//!
//! NOTE: the codes 21602, 21603, 21604, 21606, 21617 (messages) and 21201, 21205, 21210,
//! 21213, 21215 (calls) follow Twilio's error catalogue as we remember it. The checks behind
//! them match the documented API, but a code or its wording may differ from the live one. The
//! same holds for the statuses and messages of the errors that [`ForcedOutcome::TwilioError`]
//! forces.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use followup_core::domain::{Channel, Provider};
use serde_json::{Value, json};

use super::ReceivedMessage;
use super::config::ForcedOutcome;
use super::server::{basic_credentials, pause, random_hex};
use super::state::{FakeState, LimitKey};

const API_VERSION: &str = "2010-04-01";

/// Maximum length of a message body, in characters.
const MAX_BODY_CHARS: usize = 1_600;

/// Maximum length of inline TwiML, in characters.
const MAX_TWIML_CHARS: usize = 4_000;

pub(crate) fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/2010-04-01/Accounts/{sid}/Messages.json", web::post().to(create_message))
        .route("/2010-04-01/Accounts/{sid}/Calls.json", web::post().to(create_call));
}

/// A Twilio error: its code, HTTP status and message.
struct TwilioError {
    code: u32,
    status: StatusCode,
    message: String,
}

impl TwilioError {
    fn bad_request(code: u32, message: impl Into<String>) -> Self {
        Self { code, status: StatusCode::BAD_REQUEST, message: message.into() }
    }

    fn into_response(self) -> HttpResponse {
        HttpResponse::build(self.status).json(json!({
            "code": self.code,
            "message": self.message,
            "more_info": format!("https://www.twilio.com/docs/errors/{}", self.code),
            "status": self.status.as_u16(),
        }))
    }
}

/// The parts of a request every create checks first: credentials, account and form.
struct Authorized {
    account_sid: String,
    form: HashMap<String, String>,
}

async fn create_message(
    state: web::Data<FakeState>,
    request: HttpRequest,
    sid: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    pause(&state).await;
    match accept_message(&state, &request, &sid, &body).await {
        Ok(resource) => HttpResponse::Created().json(resource),
        Err(error) => error.into_response(),
    }
}

async fn create_call(
    state: web::Data<FakeState>,
    request: HttpRequest,
    sid: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    pause(&state).await;
    match accept_call(&state, &request, &sid, &body).await {
        Ok(resource) => HttpResponse::Created().json(resource),
        Err(error) => error.into_response(),
    }
}

/// Returns the limit key of the sender `from` on `channel`, or the error a fault profile or
/// error plan injects into this send.
async fn sender_key(
    state: &FakeState,
    account_sid: &str,
    from: &str,
    to: &str,
    channel: Channel,
) -> Result<LimitKey, TwilioError> {
    let key = LimitKey::TwilioNumber {
        account_sid: account_sid.to_owned(),
        from: from.to_owned(),
        channel,
    };
    match state.injected_error(&key, to).await {
        Some(outcome) => Err(injected(outcome, channel, to)),
        None => Ok(key),
    }
}

async fn accept_message(
    state: &FakeState,
    request: &HttpRequest,
    path_sid: &str,
    body: &[u8],
) -> Result<Value, TwilioError> {
    let Authorized { account_sid, form } = authorize(state, request, path_sid, body)?;
    let (to, from, text) = validate_message(state, &account_sid, &form).inspect_err(|_| {
        state.count_rejected();
    })?;

    let key = sender_key(state, &account_sid, &from, &to, Channel::Sms).await?;

    let sid = format!("SM{}", random_hex(32));
    let now = state.now();
    let resource = message_resource(&account_sid, &sid, &from, &to, &text, now);
    let received = received(Channel::Sms, from, to, text, sid, now);
    state.accept(&key, received).map_err(|_| too_many_requests())?;
    Ok(resource)
}

async fn accept_call(
    state: &FakeState,
    request: &HttpRequest,
    path_sid: &str,
    body: &[u8],
) -> Result<Value, TwilioError> {
    let Authorized { account_sid, form } = authorize(state, request, path_sid, body)?;
    let (to, from, spoken) = validate_call(state, &account_sid, &form).inspect_err(|_| {
        state.count_rejected();
    })?;

    let key = sender_key(state, &account_sid, &from, &to, Channel::Call).await?;

    let sid = format!("CA{}", random_hex(32));
    let now = state.now();
    let resource = call_resource(&account_sid, &sid, &from, &to, now);
    let received = received(Channel::Call, from, to, spoken, sid, now);
    state.accept(&key, received).map_err(|_| too_many_requests())?;
    Ok(resource)
}

/// Checks Basic auth against the registered accounts and the path's Account SID, then reads
/// the form.
fn authorize(
    state: &FakeState,
    request: &HttpRequest,
    path_sid: &str,
    body: &[u8],
) -> Result<Authorized, TwilioError> {
    let authenticated = basic_credentials(request)
        .filter(|(sid, token)| sid == path_sid && state.twilio_authenticates(sid, token));
    let Some((account_sid, _)) = authenticated else {
        state.count_rejected();
        return Err(TwilioError {
            code: 20003,
            status: StatusCode::UNAUTHORIZED,
            message: "Authenticate".to_owned(),
        });
    };

    // A repeated field keeps its last value; the fake reads no repeatable field.
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(body).map_err(|_| {
        state.count_rejected();
        TwilioError::bad_request(20001, "Invalid form-encoded request body")
    })?;
    Ok(Authorized { account_sid, form: form.into_iter().collect() })
}

/// Checks a CreateMessage form and returns its To, From and Body.
fn validate_message(
    state: &FakeState,
    account_sid: &str,
    form: &HashMap<String, String>,
) -> Result<(String, String, String), TwilioError> {
    let to = non_empty(form, "To")
        .ok_or_else(|| TwilioError::bad_request(21604, "A 'To' phone number is required."))?;
    if !is_e164(to) {
        return Err(TwilioError::bad_request(21211, format!("Invalid 'To' Phone Number: {to}")));
    }
    let from = non_empty(form, "From")
        .ok_or_else(|| TwilioError::bad_request(21603, "A 'From' phone number is required."))?;
    if !state.twilio_owns_number(account_sid, from) {
        let message = format!("'From' {from} is not a Twilio phone number of this account.");
        return Err(TwilioError::bad_request(21606, message));
    }
    let body = non_empty(form, "Body")
        .ok_or_else(|| TwilioError::bad_request(21602, "Message body is required."))?;
    if body.chars().count() > MAX_BODY_CHARS {
        let message = "The concatenated message body exceeds the 1600 character limit.";
        return Err(TwilioError::bad_request(21617, message));
    }
    Ok((to.to_owned(), from.to_owned(), body.to_owned()))
}

/// Checks a CreateCall form and returns its To, From and what the call speaks.
fn validate_call(
    state: &FakeState,
    account_sid: &str,
    form: &HashMap<String, String>,
) -> Result<(String, String, String), TwilioError> {
    let to = non_empty(form, "To")
        .ok_or_else(|| TwilioError::bad_request(21201, "No 'To' number is specified"))?;
    if !is_e164(to) {
        return Err(TwilioError::bad_request(21211, format!("Invalid 'To' Phone Number: {to}")));
    }
    let from = non_empty(form, "From")
        .ok_or_else(|| TwilioError::bad_request(21213, "No 'From' number is specified"))?;
    if !state.twilio_owns_number(account_sid, from) {
        let message = format!(
            "The source phone number provided, {from}, is not yet verified for your account."
        );
        return Err(TwilioError::bad_request(21210, message));
    }

    // Url takes precedence: with both present Twilio ignores Twiml.
    if let Some(url) = non_empty(form, "Url") {
        return Ok((to.to_owned(), from.to_owned(), url.to_owned()));
    }
    if non_empty(form, "ApplicationSid").is_some() {
        return Ok((to.to_owned(), from.to_owned(), String::new()));
    }
    let twiml = non_empty(form, "Twiml").ok_or_else(|| {
        TwilioError::bad_request(21205, "A 'Url', 'Twiml' or 'ApplicationSid' is required.")
    })?;
    if twiml.chars().count() > MAX_TWIML_CHARS {
        let message = "Twiml must be at most 4000 characters.";
        return Err(TwilioError::bad_request(21205, message));
    }
    Ok((to.to_owned(), from.to_owned(), spoken_text(twiml)))
}

fn non_empty<'a>(form: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    form.get(name).map(String::as_str).filter(|value| !value.trim().is_empty())
}

/// `+`, a non-zero digit and at most 14 more digits.
fn is_e164(number: &str) -> bool {
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// Returns the unescaped text of a TwiML document that is one `<Say>`, else the document.
fn spoken_text(twiml: &str) -> String {
    let compact = twiml.trim();
    let inner = compact
        .strip_prefix("<Response>")
        .and_then(|rest| rest.strip_suffix("</Response>"))
        .and_then(|rest| rest.strip_prefix("<Say>"))
        .and_then(|rest| rest.strip_suffix("</Say>"))
        .filter(|text| !text.contains('<'));
    match inner {
        Some(text) => text
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
        None => twiml.to_owned(),
    }
}

fn received(
    channel: Channel,
    from: String,
    to: String,
    body: String,
    sid: String,
    now: DateTime<Utc>,
) -> ReceivedMessage {
    ReceivedMessage {
        provider: Provider::Twilio,
        channel,
        from,
        to,
        subject: None,
        body,
        list_unsubscribe: None,
        provider_message_id: sid,
        received_at: now,
    }
}

/// Twilio's 429 for too many requests. Twilio documents no `Retry-After`, so none is sent.
fn too_many_requests() -> TwilioError {
    TwilioError {
        code: 20429,
        status: StatusCode::TOO_MANY_REQUESTS,
        message: "Too Many Requests".to_owned(),
    }
}

fn injected(outcome: ForcedOutcome, channel: Channel, to: &str) -> TwilioError {
    match (outcome, channel) {
        // After a stall the client has usually given up, so the late response is a plain 503.
        (ForcedOutcome::ServiceUnavailable | ForcedOutcome::Timeout, _) => TwilioError {
            code: 20503,
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "Service Unavailable".to_owned(),
        },
        (ForcedOutcome::InternalError, _) => TwilioError {
            code: 20500,
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "Internal Server Error".to_owned(),
        },
        (ForcedOutcome::RateLimited { .. }, _) => too_many_requests(),
        (ForcedOutcome::RecipientRejected, Channel::Call) => {
            TwilioError::bad_request(21215, format!("Account not authorized to call {to}."))
        }
        (ForcedOutcome::RecipientRejected, _) => {
            TwilioError::bad_request(21610, "Attempt to send to unsubscribed recipient")
        }
        (ForcedOutcome::Unauthorized, _) => TwilioError {
            code: 20003,
            status: StatusCode::UNAUTHORIZED,
            message: "Authenticate".to_owned(),
        },
        (ForcedOutcome::TwilioError(code), _) => forced_error(code, to),
    }
}

/// Builds the error with `code` as Twilio sends it. A code the fake does not know gets status
/// 400 and a message naming it.
fn forced_error(code: u32, to: &str) -> TwilioError {
    let (status, message) = match code {
        20003 => (StatusCode::UNAUTHORIZED, "Authenticate".to_owned()),
        20429 => return too_many_requests(),
        20500 => (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error".to_owned()),
        20503 => (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable".to_owned()),
        21211 => (StatusCode::BAD_REQUEST, format!("Invalid 'To' Phone Number: {to}")),
        21408 => {
            let message =
                format!("Permission to send an SMS is not enabled for the region of {to}");
            (StatusCode::BAD_REQUEST, message)
        }
        21606 => {
            let message = "The 'From' number cannot send messages to this destination.";
            (StatusCode::BAD_REQUEST, message.to_owned())
        }
        21608 => {
            let message = format!("Trial accounts cannot send messages to the unverified {to}.");
            (StatusCode::BAD_REQUEST, message)
        }
        21610 => (StatusCode::BAD_REQUEST, "Attempt to send to unsubscribed recipient".to_owned()),
        21611 => (
            StatusCode::BAD_REQUEST,
            "This 'From' number has exceeded the maximum number of queued messages".to_owned(),
        ),
        21614 => {
            (StatusCode::BAD_REQUEST, format!("'To' number {to} is not a valid mobile number"))
        }
        22005 => (StatusCode::BAD_REQUEST, "Call Queue Full".to_owned()),
        _ => (StatusCode::BAD_REQUEST, format!("Twilio error {code}")),
    };
    TwilioError { code, status, message }
}

/// Dates in Twilio resources are RFC 2822.
fn twilio_date(instant: DateTime<Utc>) -> String {
    instant.format("%a, %d %b %Y %H:%M:%S +0000").to_string()
}

/// Message segments of `text`: 160 GSM-7 characters alone or 153 per part, 70 UCS-2
/// characters alone or 67 per part. ASCII is taken as GSM-7, which undercounts texts
/// with GSM-7 extension characters such as `{` or `|` (two septets each).
fn segments(text: &str) -> usize {
    let chars = text.chars().count();
    let (single, part) = if text.is_ascii() { (160, 153) } else { (70, 67) };
    if chars <= single { 1 } else { chars.div_ceil(part) }
}

fn message_resource(
    account_sid: &str,
    sid: &str,
    from: &str,
    to: &str,
    body: &str,
    now: DateTime<Utc>,
) -> Value {
    let uri = format!("/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}.json");
    json!({
        "account_sid": account_sid,
        "api_version": API_VERSION,
        "body": body,
        "date_created": twilio_date(now),
        "date_sent": null,
        "date_updated": twilio_date(now),
        "direction": "outbound-api",
        "error_code": null,
        "error_message": null,
        "from": from,
        "messaging_service_sid": null,
        "num_media": "0",
        "num_segments": segments(body).to_string(),
        "price": null,
        "price_unit": "USD",
        "sid": sid,
        "status": "queued",
        "subresource_uris": {"media": format!("/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}/Media.json")},
        "to": to,
        "uri": uri,
    })
}

fn call_resource(account_sid: &str, sid: &str, from: &str, to: &str, now: DateTime<Utc>) -> Value {
    let base = format!("/{API_VERSION}/Accounts/{account_sid}/Calls/{sid}");
    json!({
        "sid": sid,
        "date_created": twilio_date(now),
        "date_updated": twilio_date(now),
        "parent_call_sid": null,
        "account_sid": account_sid,
        "to": to,
        "to_formatted": to,
        "from": from,
        "from_formatted": from,
        "phone_number_sid": null,
        "status": "queued",
        "start_time": null,
        "end_time": null,
        "duration": null,
        "price": null,
        "price_unit": "USD",
        "direction": "outbound-api",
        "answered_by": null,
        "api_version": API_VERSION,
        "forwarded_from": null,
        "group_sid": null,
        "caller_name": null,
        "queue_time": "0",
        "trunk_sid": null,
        "uri": format!("{base}.json"),
        "subresource_uris": {
            "notifications": format!("{base}/Notifications.json"),
            "recordings": format!("{base}/Recordings.json"),
        },
    })
}
