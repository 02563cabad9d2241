//! The Microsoft Graph fake: `POST /v1.0/me/sendMail` and `/v1.0/users/{id}/sendMail` with a
//! JSON message, accepted with 202 and an empty body.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};
use chrono::{DateTime, SecondsFormat, Utc};
use followup_core::domain::{Channel, Provider};
use serde_json::{Value, json};

use super::ReceivedMessage;
use super::config::ForcedOutcome;
use super::server::{bearer_token, pause};
use super::state::{FakeState, LimitKey};
use crate::retry_after::format_http_date;

pub(crate) fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/v1.0/me/sendMail", web::post().to(send_as_me))
        .route("/v1.0/users/{user}/sendMail", web::post().to(send_as_user));
}

/// The fields the fake records from a `sendMail` body.
struct ParsedMessage {
    to: String,
    subject: Option<String>,
    body: String,
}

async fn send_as_me(
    state: web::Data<FakeState>,
    request: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    send(state, request, None, body).await
}

async fn send_as_user(
    state: web::Data<FakeState>,
    request: HttpRequest,
    user: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    send(state, request, Some(user.into_inner()), body).await
}

async fn send(
    state: web::Data<FakeState>,
    request: HttpRequest,
    user: Option<String>,
    body: web::Bytes,
) -> HttpResponse {
    let request_id = uuid::Uuid::new_v4().to_string();
    let respond = GraphResponder { request: &request, request_id: &request_id, now: state.now() };

    let Some(mailbox) = bearer_token(&request).and_then(|t| state.mailbox_of(Provider::Outlook, t))
    else {
        pause(&state).await;
        state.count_rejected();
        return respond.unauthenticated();
    };
    if user.is_some_and(|user| !user.eq_ignore_ascii_case(&mailbox)) {
        pause(&state).await;
        state.count_rejected();
        return respond.error(StatusCode::FORBIDDEN, "ErrorAccessDenied", "Access is denied.");
    }

    // The slot is held through the latency, which is what makes concurrent requests overlap.
    let Some(_slot) = state.clone().into_inner().enter_mailbox(&mailbox) else {
        let message = "Application is over its MailboxConcurrency limit.";
        return respond.error(StatusCode::TOO_MANY_REQUESTS, "MailboxConcurrency", message);
    };
    pause(&state).await;

    let parsed = match read_message(&body) {
        Ok(parsed) => parsed,
        Err((code, message)) => {
            state.count_rejected();
            return respond.error(StatusCode::BAD_REQUEST, code, message);
        }
    };

    let key = LimitKey::Mailbox(Provider::Outlook, mailbox.clone());
    if let Some(outcome) = state.injected_error(&key, &parsed.to).await {
        return respond.injected(outcome);
    }

    let received = ReceivedMessage {
        provider: Provider::Outlook,
        channel: Channel::Email,
        from: mailbox.clone(),
        to: parsed.to,
        subject: parsed.subject,
        body: parsed.body,
        provider_message_id: request_id.clone(),
        received_at: state.now(),
    };
    match state.accept(&key, received) {
        Ok(()) => respond.builder(StatusCode::ACCEPTED).finish(),
        Err(wait) => respond.throttled(wait),
    }
}

/// Checks the `sendMail` body, or returns the Graph error code and message for what is wrong.
fn read_message(body: &[u8]) -> Result<ParsedMessage, (&'static str, &'static str)> {
    let request: Value = serde_json::from_slice(body)
        .map_err(|_| ("BadRequest", "Unable to read JSON request payload."))?;
    let message = request
        .get("message")
        .filter(|message| message.is_object())
        .ok_or(("ErrorInvalidRequest", "The message is missing from the request."))?;

    // The documentation's own example sends the flag as a string, so both forms are accepted.
    let save_flag_valid = match request.get("saveToSentItems") {
        None | Some(Value::Bool(_)) => true,
        Some(Value::String(text)) => {
            text.eq_ignore_ascii_case("true") || text.eq_ignore_ascii_case("false")
        }
        Some(_) => false,
    };
    if !save_flag_valid {
        return Err(("BadRequest", "saveToSentItems must be a boolean."));
    }

    let to = message
        .get("toRecipients")
        .and_then(Value::as_array)
        .and_then(|recipients| recipients.first())
        .and_then(|recipient| recipient.pointer("/emailAddress/address"))
        .and_then(Value::as_str)
        .filter(|address| address.contains('@'))
        .ok_or(("ErrorInvalidRecipients", "At least one recipient is not valid."))?;
    let body = message
        .pointer("/body/content")
        .and_then(Value::as_str)
        .ok_or(("ErrorInvalidRequest", "The message body is missing."))?;
    let subject = message.get("subject").and_then(Value::as_str);

    Ok(ParsedMessage {
        to: to.to_owned(),
        subject: subject.map(str::to_owned),
        body: body.to_owned(),
    })
}

/// Builds Graph responses carrying the headers every Graph response has.
struct GraphResponder<'a> {
    request: &'a HttpRequest,
    request_id: &'a str,
    /// The fake's clock when the request arrived, for dates in responses.
    now: DateTime<Utc>,
}

impl GraphResponder<'_> {
    fn builder(&self, status: StatusCode) -> HttpResponseBuilder {
        let client_request_id = self
            .request
            .headers()
            .get("client-request-id")
            .and_then(|value| value.to_str().ok())
            .unwrap_or(self.request_id)
            .to_owned();
        let mut builder = HttpResponse::build(status);
        builder
            .insert_header(("request-id", self.request_id.to_owned()))
            .insert_header(("client-request-id", client_request_id));
        builder
    }

    fn error(&self, status: StatusCode, code: &str, message: &str) -> HttpResponse {
        self.builder(status).json(self.envelope(status, code, message))
    }

    fn envelope(&self, status: StatusCode, code: &str, message: &str) -> Value {
        json!({
            "error": {
                "code": code,
                "message": message,
                "innerError": {
                    "code": status.as_u16().to_string(),
                    "status": status.as_u16().to_string(),
                    "date": self.now.to_rfc3339_opts(SecondsFormat::Secs, true),
                    "request-id": self.request_id,
                },
            }
        })
    }

    fn unauthenticated(&self) -> HttpResponse {
        let message = "Access token validation failure. Invalid audience.";
        self.error(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", message)
    }

    /// Graph's 429 with a `Retry-After` in seconds, fractional when the wait is.
    fn throttled(&self, wait: Duration) -> HttpResponse {
        let status = StatusCode::TOO_MANY_REQUESTS;
        self.builder(status)
            .insert_header(("retry-after", format_seconds(wait)))
            .json(self.envelope(status, "TooManyRequests", "Please retry again later."))
    }

    fn injected(&self, outcome: ForcedOutcome) -> HttpResponse {
        match outcome {
            // After a stall the client has usually given up, so the late response is a plain 503.
            ForcedOutcome::ServiceUnavailable | ForcedOutcome::Timeout => {
                let status = StatusCode::SERVICE_UNAVAILABLE;
                let retry_at = self.now + chrono::Duration::seconds(1);
                self.builder(status)
                    .insert_header(("retry-after", format_http_date(retry_at)))
                    .json(self.envelope(status, "ServiceNotAvailable", "Service unavailable."))
            }
            ForcedOutcome::InternalError => {
                let message = "An unspecified error has occurred.";
                self.error(StatusCode::INTERNAL_SERVER_ERROR, "generalException", message)
            }
            ForcedOutcome::RateLimited { retry_after } => self.throttled(retry_after),
            ForcedOutcome::RecipientRejected => {
                let message = "At least one recipient is not valid.";
                self.error(StatusCode::BAD_REQUEST, "ErrorInvalidRecipients", message)
            }
            ForcedOutcome::Unauthorized => self.unauthenticated(),
        }
    }
}

/// `wait` as seconds: whole (`10`) when it is, else with milliseconds (`2.128`).
fn format_seconds(wait: Duration) -> String {
    let millis = wait.as_millis();
    if millis.is_multiple_of(1000) {
        format!("{}", millis / 1000)
    } else {
        format!("{}.{:03}", millis / 1000, millis % 1000)
    }
}
