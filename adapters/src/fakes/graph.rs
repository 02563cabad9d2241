//! The Microsoft Graph fake: `POST /v1.0/me/sendMail` and `/v1.0/users/{id}/sendMail` with a
//! JSON message or a base64 MIME message, accepted with 202 and an empty body, and JSON
//! batching at `POST /v1.0/$batch` (in `graph_batch`), whose inner requests run through
//! [`send_mail`] exactly as single sends do.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, SecondsFormat, Utc};
use followup_core::domain::{Channel, Provider};
use mail_parser::{Message, MessageParser};
use serde_json::{Map, Value, json};

use super::ReceivedMessage;
use super::config::ForcedOutcome;
use super::graph_batch;
use super::server::{bearer_token, pause};
use super::state::{FakeState, LimitKey};
use crate::retry_after::format_http_date;

pub(crate) fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/v1.0/me/sendMail", web::post().to(send_as_me))
        .route("/v1.0/users/{user}/sendMail", web::post().to(send_as_user))
        .route("/v1.0/$batch", web::post().to(graph_batch::batch));
}

/// A `sendMail` call whose token was already checked, from a request of its own or from a
/// `$batch`.
pub(super) struct SendMailCall<'a> {
    /// Lowercase address of the mailbox the token belongs to.
    pub mailbox: &'a str,
    /// The `{id}` of `/users/{id}/sendMail`; `None` for `/me/sendMail`.
    pub user: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
    pub client_request_id: Option<&'a str>,
}

/// A Graph response before it is written out, as an HTTP response or as an inner response of
/// a `$batch`.
pub(super) struct GraphReply {
    pub status: StatusCode,
    /// Header names as Graph writes them.
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<Value>,
}

/// The fields the fake records from a `sendMail` body.
struct ParsedMessage {
    to: String,
    subject: Option<String>,
    body: String,
    list_unsubscribe: Option<String>,
}

/// Why a `sendMail` body was rejected: the HTTP status and Graph's error code and message.
struct Rejection {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Rejection {
    fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, code, message: message.into() }
    }
}

/// The two forms of a `sendMail` body, distinguished by `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BodyForm {
    Json,
    Mime,
}

impl BodyForm {
    /// Reads the form from a `Content-Type` value, ignoring parameters such as `charset`.
    pub(super) fn of(content_type: Option<&str>) -> Option<Self> {
        let essence = content_type?.split(';').next()?.trim();
        if essence.eq_ignore_ascii_case("application/json") {
            Some(Self::Json)
        } else if essence.eq_ignore_ascii_case("text/plain") {
            Some(Self::Mime)
        } else {
            None
        }
    }
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
    let state = state.into_inner();
    let client_request_id = header(&request, "client-request-id");

    let Some(mailbox) = bearer_token(&request).and_then(|t| state.mailbox_of(Provider::Outlook, t))
    else {
        pause(&state).await;
        state.count_rejected();
        return GraphResponder::new(client_request_id, state.now())
            .unauthenticated()
            .into_response();
    };

    let call = SendMailCall {
        mailbox: &mailbox,
        user: user.as_deref(),
        content_type: header(&request, "content-type"),
        body: &body,
        client_request_id,
    };
    send_mail(&state, call).await.into_response()
}

/// Runs one `sendMail` whose token was already checked: the user in the path, the mailbox's
/// concurrency limit, the latency, the body, the injected errors and the send limits, in
/// that order.
pub(super) async fn send_mail(state: &Arc<FakeState>, call: SendMailCall<'_>) -> GraphReply {
    let respond = GraphResponder::new(call.client_request_id, state.now());
    if call.user.is_some_and(|user| !user.eq_ignore_ascii_case(call.mailbox)) {
        pause(state).await;
        state.count_rejected();
        return respond.error(StatusCode::FORBIDDEN, "ErrorAccessDenied", "Access is denied.");
    }

    // The slot is held through the latency, which is what makes concurrent requests overlap.
    let Some(_slot) = state.enter_mailbox(call.mailbox) else {
        let message = "Application is over its MailboxConcurrency limit.";
        return respond.error(StatusCode::TOO_MANY_REQUESTS, "ApplicationThrottled", message);
    };
    pause(state).await;

    let parsed = match read_body(call.content_type, call.body) {
        Ok(parsed) => parsed,
        Err(rejection) => {
            state.count_rejected();
            return respond.error(rejection.status, rejection.code, &rejection.message);
        }
    };

    let key = LimitKey::Mailbox(Provider::Outlook, call.mailbox.to_owned());
    if let Some(outcome) = state.injected_error(&key, &parsed.to).await {
        return respond.injected(outcome);
    }

    let received = ReceivedMessage {
        provider: Provider::Outlook,
        channel: Channel::Email,
        from: call.mailbox.to_owned(),
        to: parsed.to,
        subject: parsed.subject,
        body: parsed.body,
        list_unsubscribe: parsed.list_unsubscribe,
        provider_message_id: respond.request_id.clone(),
        received_at: state.now(),
    };
    match state.accept(&key, received) {
        Ok(()) => respond.reply(StatusCode::ACCEPTED),
        Err(wait) => respond.throttled(wait),
    }
}

fn header<'a>(request: &'a HttpRequest, name: &str) -> Option<&'a str> {
    request.headers().get(name).and_then(|value| value.to_str().ok())
}

/// Reads a `sendMail` body in the form its `Content-Type` names.
fn read_body(content_type: Option<&str>, body: &[u8]) -> Result<ParsedMessage, Rejection> {
    match BodyForm::of(content_type) {
        Some(BodyForm::Json) => read_json(body),
        Some(BodyForm::Mime) => read_mime(body),
        None => Err(unsupported_media_type()),
    }
}

fn unsupported_media_type() -> Rejection {
    Rejection {
        status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
        code: "UnsupportedMediaType",
        message: "Content-Type must be application/json or text/plain.".to_owned(),
    }
}

/// Checks a JSON `sendMail` body.
fn read_json(body: &[u8]) -> Result<ParsedMessage, Rejection> {
    let request: Value = serde_json::from_slice(body).map_err(|_| {
        Rejection::bad_request("BadRequest", "Unable to read JSON request payload.")
    })?;
    let message =
        request.get("message").filter(|message| message.is_object()).ok_or_else(|| {
            Rejection::bad_request(
                "ErrorInvalidRequest",
                "The message is missing from the request.",
            )
        })?;

    // The documentation's own example sends the flag as a string, so both forms are accepted.
    let save_flag_valid = match request.get("saveToSentItems") {
        None | Some(Value::Bool(_)) => true,
        Some(Value::String(text)) => {
            text.eq_ignore_ascii_case("true") || text.eq_ignore_ascii_case("false")
        }
        Some(_) => false,
    };
    if !save_flag_valid {
        return Err(Rejection::bad_request("BadRequest", "saveToSentItems must be a boolean."));
    }
    check_custom_headers(message)?;

    let to = message
        .get("toRecipients")
        .and_then(Value::as_array)
        .and_then(|recipients| recipients.first())
        .and_then(|recipient| recipient.pointer("/emailAddress/address"))
        .and_then(Value::as_str)
        .filter(|address| address.contains('@'))
        .ok_or_else(invalid_recipients)?;
    let content_type = message.pointer("/body/contentType").and_then(Value::as_str);
    if content_type.is_some_and(|kind| {
        !kind.eq_ignore_ascii_case("text") && !kind.eq_ignore_ascii_case("html")
    }) {
        let message = "The body contentType must be Text or HTML.";
        return Err(Rejection::bad_request("BadRequest", message));
    }
    let body = message.pointer("/body/content").and_then(Value::as_str).ok_or_else(|| {
        Rejection::bad_request("ErrorInvalidRequest", "The message body is missing.")
    })?;
    let subject = message.get("subject").and_then(Value::as_str);

    Ok(ParsedMessage {
        to: to.to_owned(),
        subject: subject.map(str::to_owned),
        body: body.to_owned(),
        list_unsubscribe: None,
    })
}

/// Rejects `internetMessageHeaders` whose names do not start with `x-`, the only custom
/// headers Graph's JSON form accepts.
fn check_custom_headers(message: &Value) -> Result<(), Rejection> {
    let Some(headers) = message.get("internetMessageHeaders").and_then(Value::as_array) else {
        return Ok(());
    };
    let names = headers.iter().map(|header| header.get("name").and_then(Value::as_str));
    for name in names {
        let name = name.unwrap_or_default();
        if !name.get(..2).is_some_and(|prefix| prefix.eq_ignore_ascii_case("x-")) {
            let message = format!(
                "The internet message header name '{name}' should start with 'x-' or 'X-'."
            );
            return Err(Rejection::bad_request("InvalidInternetMessageHeader", message));
        }
    }
    Ok(())
}

/// Decodes and parses a MIME `sendMail` body: an RFC 5322 message in standard base64. Line
/// breaks inside the base64 text are ignored.
fn read_mime(body: &[u8]) -> Result<ParsedMessage, Rejection> {
    let base64: Vec<u8> = body.iter().copied().filter(|byte| !byte.is_ascii_whitespace()).collect();
    let bytes = STANDARD.decode(&base64).map_err(|_| {
        let message = "Invalid base64 string for MIME content.";
        Rejection::bad_request("ErrorMimeContentInvalidBase64String", message)
    })?;
    let message = MessageParser::default().parse(&bytes).ok_or_else(|| {
        Rejection::bad_request("BadRequest", "The MIME content is not a message.")
    })?;
    let to = first_recipient(&message).ok_or_else(invalid_recipients)?;

    Ok(ParsedMessage {
        to,
        subject: message.subject().map(str::to_owned),
        body: message.body_text(0).map(|text| text.replace("\r\n", "\n")).unwrap_or_default(),
        list_unsubscribe: message.header_raw("List-Unsubscribe").map(unfold),
    })
}

/// Returns the first address among To, Cc and Bcc that looks like one.
fn first_recipient(message: &Message<'_>) -> Option<String> {
    [message.to(), message.cc(), message.bcc()]
        .into_iter()
        .flatten()
        .flat_map(|address| address.iter())
        .find_map(|addr| addr.address().filter(|address| address.contains('@')))
        .map(str::to_owned)
}

/// Returns a raw header value without its folding line breaks and surrounding space.
pub(super) fn unfold(raw: &str) -> String {
    raw.replace(['\r', '\n'], "").trim().to_owned()
}

fn invalid_recipients() -> Rejection {
    Rejection::bad_request("ErrorInvalidRecipients", "At least one recipient is not valid.")
}

/// Builds Graph responses carrying the headers every Graph response has.
pub(super) struct GraphResponder {
    /// Graph's id of this request, also the id the fake records for an accepted send.
    pub request_id: String,
    client_request_id: String,
    /// The fake's clock when the request arrived, for dates in responses.
    now: DateTime<Utc>,
}

impl GraphResponder {
    /// Creates a responder with a fresh request id, echoing the client's `client-request-id`
    /// when it sent one, as Graph does.
    pub(super) fn new(client_request_id: Option<&str>, now: DateTime<Utc>) -> Self {
        let request_id = uuid::Uuid::new_v4().to_string();
        let client_request_id = client_request_id.unwrap_or(&request_id).to_owned();
        Self { request_id, client_request_id, now }
    }

    /// Builds a response with `status`, the request ids and no body.
    pub(super) fn reply(&self, status: StatusCode) -> GraphReply {
        let headers = vec![
            ("request-id", self.request_id.clone()),
            ("client-request-id", self.client_request_id.clone()),
        ];
        GraphReply { status, headers, body: None }
    }

    /// Builds a response with `status` and the JSON `body`.
    pub(super) fn json(&self, status: StatusCode, body: Value) -> GraphReply {
        let mut reply = self.reply(status);
        reply.headers.push(("Content-Type", "application/json".to_owned()));
        reply.body = Some(body);
        reply
    }

    /// Builds a response with Graph's error envelope.
    pub(super) fn error(&self, status: StatusCode, code: &str, message: &str) -> GraphReply {
        self.json(status, self.envelope(status, code, message))
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

    pub(super) fn unauthenticated(&self) -> GraphReply {
        let message = "Access token validation failure. Invalid audience.";
        self.error(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", message)
    }

    /// Graph's 429 with a `Retry-After` in seconds, fractional when the wait is.
    fn throttled(&self, wait: Duration) -> GraphReply {
        let status = StatusCode::TOO_MANY_REQUESTS;
        let mut reply = self.error(status, "TooManyRequests", "Please retry again later.");
        reply.headers.push(("Retry-After", format_seconds(wait)));
        reply
    }

    fn injected(&self, outcome: ForcedOutcome) -> GraphReply {
        match outcome {
            // After a stall the client has usually given up, so the late response is a plain 503.
            ForcedOutcome::ServiceUnavailable | ForcedOutcome::Timeout => {
                let status = StatusCode::SERVICE_UNAVAILABLE;
                let retry_at = self.now + chrono::Duration::seconds(1);
                let mut reply = self.error(status, "ServiceNotAvailable", "Service unavailable.");
                reply.headers.push(("Retry-After", format_http_date(retry_at)));
                reply
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
            ForcedOutcome::TwilioError(code) => {
                let message = format!("The fake has no Graph form of Twilio error {code}.");
                self.error(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError", &message)
            }
        }
    }
}

impl GraphReply {
    /// Writes the reply as an HTTP response.
    pub(super) fn into_response(self) -> HttpResponse {
        let mut builder = HttpResponse::build(self.status);
        for header in self.headers {
            builder.insert_header(header);
        }
        match self.body {
            Some(body) => builder.body(body.to_string()),
            None => builder.finish(),
        }
    }

    /// Writes the reply as the inner response `id` of a `$batch`.
    pub(super) fn into_inner_response(self, id: &str) -> Value {
        let headers: Map<String, Value> =
            self.headers.into_iter().map(|(name, value)| (name.to_owned(), value.into())).collect();
        let mut inner = json!({"id": id, "status": self.status.as_u16(), "headers": headers});
        if let Some(body) = self.body {
            inner["body"] = body;
        }
        inner
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
