//! The Gmail fake: `POST /gmail/v1/users/{userId}/messages/send` with a JSON `Message` whose
//! `raw` is a base64url RFC 5322 message.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use chrono::{DateTime, SecondsFormat, Utc};
use followup_core::domain::{Channel, Provider};
use mail_parser::{Address, Message, MessageParser};
use serde::Deserialize;
use serde_json::json;

use super::ReceivedMessage;
use super::config::ForcedOutcome;
use super::server::{bearer_token, pause, random_hex};
use super::state::{FakeState, LimitKey};

/// base64url that accepts input with or without `=` padding, as Gmail does.
const RAW_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub(crate) fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/gmail/v1/users/{user_id}/messages/send", web::post().to(send))
        .route(super::gmail_batch::BATCH_PATH, web::post().to(super::gmail_batch::batch));
}

/// The body of `users.messages.send`; `raw` is optional here so that its absence gets Gmail's
/// own error instead of a deserialisation failure.
#[derive(Debug, Deserialize)]
struct SendBody {
    #[serde(default)]
    raw: Option<String>,
}

/// The fields the fake records from a message. The body's CRLF line ends become LF, so that
/// it compares equal to the text the engine rendered.
struct ParsedMessage {
    from: String,
    to: String,
    subject: Option<String>,
    body: String,
    list_unsubscribe: Option<String>,
}

async fn send(
    state: web::Data<FakeState>,
    request: HttpRequest,
    user_id: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    pause(&state).await;
    send_message(&state, bearer_token(&request), &user_id, &body).await
}

/// Runs one `users.messages.send` call with the bearer `token`, for a request of its own or
/// for one part of a batch: authentication, the message checks, injected errors, the
/// mailbox's limits and the record of what was received.
pub(super) async fn send_message(
    state: &FakeState,
    token: Option<&str>,
    user_id: &str,
    body: &[u8],
) -> HttpResponse {
    let Some(mailbox) = token.and_then(|t| state.mailbox_of(Provider::Gmail, t)) else {
        state.count_rejected();
        return unauthenticated();
    };
    if user_id != "me" && !user_id.eq_ignore_ascii_case(&mailbox) {
        state.count_rejected();
        let message = "Delegation denied for the requested user";
        return google_error(StatusCode::FORBIDDEN, "forbidden", "PERMISSION_DENIED", message);
    }

    let parsed = match read_message(body) {
        Ok(parsed) => parsed,
        Err(message) => {
            state.count_rejected();
            let status = StatusCode::BAD_REQUEST;
            return google_error(status, "invalidArgument", "INVALID_ARGUMENT", message);
        }
    };

    let key = LimitKey::Mailbox(Provider::Gmail, mailbox);
    if let Some(outcome) = state.injected_error(&key, &parsed.to).await {
        return injected(outcome, state.now());
    }

    let received = ReceivedMessage {
        provider: Provider::Gmail,
        channel: Channel::Email,
        from: parsed.from,
        to: parsed.to,
        subject: parsed.subject,
        body: parsed.body,
        list_unsubscribe: parsed.list_unsubscribe,
        provider_message_id: random_hex(16),
        received_at: state.now(),
    };
    let id = received.provider_message_id.clone();
    let received_at = received.received_at;
    match state.accept(&key, received) {
        Ok(()) => HttpResponse::Ok().json(json!({"id": id, "threadId": id, "labelIds": ["SENT"]})),
        Err(wait) => rate_limited(received_at, wait),
    }
}

/// Decodes and parses `raw`, or returns the message of Gmail's 400 `invalidArgument` for
/// what is wrong with it.
fn read_message(body: &[u8]) -> Result<ParsedMessage, &'static str> {
    let send_body: SendBody =
        serde_json::from_slice(body).map_err(|_| "Invalid JSON payload received.")?;
    let raw = send_body.raw.filter(|raw| !raw.is_empty()).ok_or(
        "'raw' RFC822 payload message string or uploading message via /upload/* URL required",
    )?;
    let bytes = RAW_ENGINE
        .decode(raw.trim())
        .map_err(|_| "Invalid value at 'message.raw' (TYPE_BYTES), Base64 decoding failed")?;

    let message = MessageParser::default().parse(&bytes).ok_or("Invalid RFC822 message")?;
    let to = first_recipient(&message).ok_or("Recipient address required")?;
    let from = message.from().and_then(first_address).unwrap_or_default();

    Ok(ParsedMessage {
        from,
        to,
        subject: message.subject().map(str::to_owned),
        body: message.body_text(0).map(|text| text.replace("\r\n", "\n")).unwrap_or_default(),
        list_unsubscribe: message.header_raw("List-Unsubscribe").map(super::graph::unfold),
    })
}

/// Returns the first address among To, Cc and Bcc.
fn first_recipient(message: &Message<'_>) -> Option<String> {
    [message.to(), message.cc(), message.bcc()].into_iter().flatten().find_map(first_address)
}

fn first_address(address: &Address<'_>) -> Option<String> {
    address.iter().find_map(|addr| addr.address().map(str::to_owned))
}

/// Builds the Google error envelope with one detail.
pub(super) fn google_error(
    status: StatusCode,
    reason: &str,
    status_name: &str,
    message: &str,
) -> HttpResponse {
    let domain = if reason == "rateLimitExceeded" { "usageLimits" } else { "global" };
    HttpResponse::build(status).json(json!({
        "error": {
            "code": status.as_u16(),
            "message": message,
            "errors": [{"message": message, "domain": domain, "reason": reason}],
            "status": status_name,
        }
    }))
}

fn unauthenticated() -> HttpResponse {
    HttpResponse::Unauthorized()
        .insert_header(("www-authenticate", "Bearer realm=\"https://accounts.google.com/\""))
        .json(json!({
            "error": {
                "code": 401,
                "message": "Request had invalid authentication credentials.",
                "errors": [{
                    "message": "Invalid Credentials",
                    "domain": "global",
                    "reason": "authError",
                    "location": "Authorization",
                    "locationType": "header",
                }],
                "status": "UNAUTHENTICATED",
            }
        }))
}

/// Gmail's 429 for the per-user mail-sending limit: the instant to retry at (`now` plus
/// `wait`) is only in the text, after two spaces, and no `Retry-After` header comes with it.
fn rate_limited(now: DateTime<Utc>, wait: Duration) -> HttpResponse {
    let retry_at = now + chrono::Duration::from_std(wait).unwrap_or_default();
    let retry_at = retry_at.to_rfc3339_opts(SecondsFormat::Millis, true);
    let message = format!("User-rate limit exceeded.  Retry after {retry_at} (Mail sending)");
    google_error(StatusCode::TOO_MANY_REQUESTS, "rateLimitExceeded", "RESOURCE_EXHAUSTED", &message)
}

fn injected(outcome: ForcedOutcome, now: DateTime<Utc>) -> HttpResponse {
    match outcome {
        // After a stall the client has usually given up, so the late response is a plain 503.
        ForcedOutcome::ServiceUnavailable | ForcedOutcome::Timeout => google_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "backendError",
            "UNAVAILABLE",
            "The service is currently unavailable.",
        ),
        ForcedOutcome::InternalError => google_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "backendError",
            "INTERNAL",
            "Backend Error",
        ),
        ForcedOutcome::RateLimited { retry_after } => rate_limited(now, retry_after),
        ForcedOutcome::RecipientRejected => google_error(
            StatusCode::BAD_REQUEST,
            "invalidArgument",
            "INVALID_ARGUMENT",
            "Invalid To header",
        ),
        ForcedOutcome::Unauthorized => unauthenticated(),
        ForcedOutcome::TwilioError(code) => google_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "backendError",
            "INTERNAL",
            &format!("The fake has no Gmail form of Twilio error {code}."),
        ),
    }
}
