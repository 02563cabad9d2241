//! The Gmail fake's batch endpoint: `POST /batch/gmail/v1` with a `multipart/mixed` body whose
//! parts are whole HTTP requests (`application/http`).
//!
//! Each part runs through the same code as a request of its own
//! ([`send_message`](super::gmail::send_message)), and the response is `multipart/mixed` with
//! one whole HTTP response per part, in request order, each with the `Content-ID`
//! `response-<id of the request part>`. A part without its own `Authorization` header uses the
//! outer request's. The multipart body is read with mail-parser rather than the client's
//! reader, so that the client's encoding is checked by an independent parser.

use std::collections::HashSet;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use mail_parser::{MessageParser, MimeHeaders, PartType};

use super::gmail::{google_error, send_message};
use super::server::{bearer_token, parse_bearer, pause, random_hex};
use super::state::FakeState;

/// Path of the batch endpoint.
pub(super) const BATCH_PATH: &str = "/batch/gmail/v1";

/// Maximum number of calls in one batch, as Google documents it.
pub(crate) const MAX_BATCH_CALLS: usize = 100;

/// Maximum number of headers read from one embedded request.
const MAX_HEADERS: usize = 64;

/// One call of a batch request.
#[derive(Debug)]
pub(crate) struct BatchCall<'a> {
    /// The part's `Content-ID`, without angle brackets.
    pub(crate) content_id: Option<String>,
    pub(crate) method: String,
    /// The path of the request line, query included.
    pub(crate) path: String,
    /// The headers of the embedded request, names as sent.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: &'a [u8],
}

impl BatchCall<'_> {
    /// Returns the value of the embedded request's header `name`, compared without case.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        let header = self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name));
        header.map(|(_, value)| value.as_str())
    }
}

pub(super) async fn batch(
    state: web::Data<FakeState>,
    request: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    pause(&state).await;
    state.count_batch_request();

    let content_type = request.headers().get("content-type").and_then(|v| v.to_str().ok());
    let multipart = match content_type.map(|value| framed(value, &body)) {
        Some(multipart) => multipart,
        None => {
            state.count_rejected();
            return bad_batch("Missing Content-Type of the batch request");
        }
    };
    let calls = match read_batch(&multipart) {
        Ok(calls) => calls,
        Err(message) => {
            state.count_rejected();
            return bad_batch(&message);
        }
    };

    let outer_token = bearer_token(&request);
    let boundary = format!("batch_{}", random_hex(24));
    let mut out = Vec::new();
    for call in &calls {
        // A part's own header replaces the outer one, even when it is not a bearer token.
        let token = match call.header("authorization") {
            Some(value) => parse_bearer(value),
            None => outer_token,
        };
        let response = run_call(&state, call, token).await;
        write_response_part(&mut out, &boundary, call.content_id.as_deref(), response).await;
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());

    HttpResponse::Ok().content_type(format!("multipart/mixed; boundary={boundary}")).body(out)
}

/// Puts `content_type` in front of `body` as a header, so that a MIME parser reads the body
/// as the multipart entity it is.
fn framed(content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut framed = format!("Content-Type: {content_type}\r\n\r\n").into_bytes();
    framed.extend_from_slice(body);
    framed
}

/// Reads the calls of a batch from `multipart` (a `Content-Type` header, an empty line and the
/// request body), or returns why the batch is malformed.
pub(crate) fn read_batch(multipart: &[u8]) -> Result<Vec<BatchCall<'_>>, String> {
    let message = MessageParser::default()
        .parse(multipart)
        .ok_or_else(|| "Failed to parse the batch request".to_owned())?;
    let root = message.root_part();
    let is_mixed = root
        .content_type()
        .is_some_and(|ct| ct.ctype() == "multipart" && ct.subtype() == Some("mixed"));
    let (true, PartType::Multipart(part_ids)) = (is_mixed, &root.body) else {
        return Err("The batch request must be multipart/mixed with a boundary".to_owned());
    };
    if part_ids.is_empty() {
        return Err("The batch request contains no parts".to_owned());
    }
    if part_ids.len() > MAX_BATCH_CALLS {
        return Err(format!(
            "The batch request contains {} parts, more than the limit of {MAX_BATCH_CALLS}",
            part_ids.len()
        ));
    }

    let mut calls = Vec::with_capacity(part_ids.len());
    let mut seen_ids = HashSet::new();
    for (index, &part_id) in part_ids.iter().enumerate() {
        let part = message.part(part_id).ok_or_else(|| format!("Part {index} is missing"))?;
        let is_http = part
            .content_type()
            .is_some_and(|ct| ct.ctype() == "application" && ct.subtype() == Some("http"));
        if !is_http {
            return Err(format!("Part {index} must have Content-Type application/http"));
        }
        let content_id = part.content_id().map(|id| id.trim_matches(['<', '>']).to_owned());
        // Two parts with one id would be indistinguishable in the response.
        if let Some(id) = &content_id
            && !seen_ids.insert(id.clone())
        {
            return Err(format!("Part {index} repeats the Content-ID {id:?}"));
        }

        let raw = multipart
            .get(part.offset_body as usize..part.offset_end as usize)
            .ok_or_else(|| format!("Part {index} is out of range"))?;
        let call = read_call(raw, content_id).map_err(|err| format!("Part {index}: {err}"))?;
        calls.push(call);
    }
    Ok(calls)
}

/// Reads the HTTP request embedded in one part.
fn read_call(raw: &[u8], content_id: Option<String>) -> Result<BatchCall<'_>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let offset = match request.parse(raw) {
        Ok(httparse::Status::Complete(offset)) => offset,
        Ok(httparse::Status::Partial) => return Err("the HTTP request is cut short".to_owned()),
        Err(err) => return Err(format!("invalid HTTP request: {err}")),
    };
    let headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|header| {
            let value = String::from_utf8_lossy(header.value).trim().to_owned();
            (header.name.to_owned(), value)
        })
        .collect();
    let content_length = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .map(|(_, value)| value.as_str());

    let rest = &raw[offset..];
    let body = match content_length {
        Some(length) => {
            let length: usize =
                length.parse().map_err(|_| format!("invalid Content-Length {length:?}"))?;
            rest.get(..length).ok_or_else(|| {
                format!("the body has {} bytes, fewer than its Content-Length {length}", rest.len())
            })?
        }
        // The line end before the next delimiter belongs to the delimiter.
        None => rest.strip_suffix(b"\r\n").unwrap_or(rest),
    };

    Ok(BatchCall {
        content_id,
        method: request.method.unwrap_or_default().to_owned(),
        path: request.path.unwrap_or_default().to_owned(),
        headers,
        body,
    })
}

/// Runs one call: `users.messages.send` when the request line names it, else Google's 404.
async fn run_call(state: &FakeState, call: &BatchCall<'_>, token: Option<&str>) -> HttpResponse {
    let path = call.path.split_once('?').map_or(call.path.as_str(), |(path, _)| path);
    let user_id = path
        .strip_prefix("/gmail/v1/users/")
        .and_then(|rest| rest.strip_suffix("/messages/send"))
        .filter(|user_id| !user_id.is_empty() && !user_id.contains('/'));
    match user_id {
        Some(user_id) if call.method == "POST" => {
            send_message(state, token, user_id, call.body).await
        }
        _ => {
            state.count_rejected();
            let message = format!("No method at {} {}", call.method, call.path);
            google_error(StatusCode::NOT_FOUND, "notFound", "NOT_FOUND", &message)
        }
    }
}

/// Appends the part that carries `response` for the request part `content_id`.
async fn write_response_part(
    out: &mut Vec<u8>,
    boundary: &str,
    content_id: Option<&str>,
    response: HttpResponse,
) {
    out.extend_from_slice(format!("--{boundary}\r\nContent-Type: application/http\r\n").as_bytes());
    if let Some(id) = content_id {
        out.extend_from_slice(format!("Content-ID: <response-{id}>\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");

    let status = response.status();
    let reason = status.canonical_reason().unwrap_or_default();
    out.extend_from_slice(format!("HTTP/1.1 {} {reason}\r\n", status.as_u16()).as_bytes());
    for (name, value) in response.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // The handlers build their bodies in memory, so reading one does not fail in practice.
    let body = match actix_web::body::to_bytes(response.into_body()).await {
        Ok(body) => body,
        Err(err) => {
            tracing::warn!(error = %err, "gmail fake: reading a part's response body failed");
            web::Bytes::new()
        }
    };
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(b"\r\n");
}

/// Builds Google's 400 for a batch that cannot be read. No call of such a batch runs.
///
/// NOTE: the status and the texts are guesses. Google's batch guide does not describe its
/// response to a malformed batch, so the fake responds as Google does to other invalid
/// requests.
fn bad_batch(message: &str) -> HttpResponse {
    google_error(StatusCode::BAD_REQUEST, "badRequest", "INVALID_ARGUMENT", message)
}
