//! JSON batching in the Graph fake: `POST /v1.0/$batch` with up to 20 inner `sendMail`
//! requests.
//!
//! The outer request is authenticated once and checked as a whole. Any of these fails the
//! whole batch with 400: malformed JSON, more than 20 requests, ids repeated (compared without
//! regard to case), a body without a `Content-Type` header, a `dependsOn` naming an unknown id
//! or closing a cycle. Otherwise the batch responds 200, and each inner request runs through
//! [`send_mail`] as a single send would, with its own status. A request whose dependency
//! failed gets 424 without running. Requests without pending dependencies run at most
//! [`GRAPH_MAX_CONCURRENT_PER_MAILBOX`] at a time, as Graph runs them against a mailbox, and
//! each takes a slot of the mailbox's concurrency limit. The inner responses come back
//! shuffled, because Graph returns them in any order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use followup_core::domain::Provider;
use futures_util::StreamExt as _;
use rand::seq::SliceRandom as _;
use serde_json::{Map, Value, json};

use super::graph::{BodyForm, GraphReply, GraphResponder, SendMailCall, send_mail};
use super::server::{bearer_token, pause};
use super::state::{FakeState, GRAPH_MAX_CONCURRENT_PER_MAILBOX};

#[cfg(test)]
mod tests;

/// Maximum of requests in one batch.
const MAX_REQUESTS: usize = 20;

/// One inner request, checked.
struct InnerRequest {
    id: String,
    method: String,
    url: String,
    /// Header names in lowercase.
    headers: HashMap<String, String>,
    body: Option<Value>,
    depends_on: Vec<String>,
}

/// A checked batch: its requests, and the order to run them in as rounds of request indexes
/// whose dependencies all ran in earlier rounds.
struct Batch {
    requests: Vec<InnerRequest>,
    rounds: Vec<Vec<usize>>,
}

pub(super) async fn batch(
    state: web::Data<FakeState>,
    request: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let state = state.into_inner();
    state.count_batch_request();
    let client_request_id = request.headers().get("client-request-id");
    let respond = GraphResponder::new(client_request_id.and_then(|v| v.to_str().ok()), state.now());

    let Some(mailbox) = bearer_token(&request).and_then(|t| state.mailbox_of(Provider::Outlook, t))
    else {
        pause(&state).await;
        state.count_rejected();
        return respond.unauthenticated().into_response();
    };

    let content_type = request.headers().get("content-type").and_then(|v| v.to_str().ok());
    if BodyForm::of(content_type) != Some(BodyForm::Json) {
        state.count_rejected();
        let message = "A $batch request must have Content-Type application/json.";
        let status = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return respond.error(status, "UnsupportedMediaType", message).into_response();
    }
    let batch = match read_batch(&body) {
        Ok(batch) => batch,
        Err(message) => {
            state.count_rejected();
            return respond.error(StatusCode::BAD_REQUEST, "BadRequest", &message).into_response();
        }
    };

    let mut responses = run(&state, &mailbox, &batch).await;
    responses.shuffle(&mut rand::rng());
    respond.json(StatusCode::OK, json!({"responses": responses})).into_response()
}

/// Runs the rounds of `batch` in order and returns the inner responses.
async fn run(state: &Arc<FakeState>, mailbox: &str, batch: &Batch) -> Vec<Value> {
    let mut statuses: HashMap<String, StatusCode> = HashMap::new();
    let mut responses = Vec::with_capacity(batch.requests.len());

    for round in &batch.rounds {
        let mut runnable = Vec::with_capacity(round.len());
        for &index in round {
            let request = &batch.requests[index];
            let dependency_failed = request.depends_on.iter().any(|dependency| {
                statuses.get(&dependency.to_lowercase()).is_none_or(|status| !status.is_success())
            });
            if dependency_failed {
                let reply = failed_dependency(state);
                statuses.insert(request.id.to_lowercase(), reply.status);
                responses.push(reply.into_inner_response(&request.id));
            } else {
                runnable.push(request);
            }
        }

        let replies: Vec<(&InnerRequest, GraphReply)> = futures_util::stream::iter(runnable)
            .map(|request| async move { (request, run_inner(state, mailbox, request).await) })
            .buffer_unordered(GRAPH_MAX_CONCURRENT_PER_MAILBOX as usize)
            .collect()
            .await;
        for (request, reply) in replies {
            statuses.insert(request.id.to_lowercase(), reply.status);
            responses.push(reply.into_inner_response(&request.id));
        }
    }
    responses
}

/// Runs one inner request. Only `sendMail` is served; anything else gets 404 or 405.
async fn run_inner(state: &Arc<FakeState>, mailbox: &str, request: &InnerRequest) -> GraphReply {
    let client_request_id = request.headers.get("client-request-id").map(String::as_str);
    let Some(user) = send_mail_user(&request.url) else {
        let respond = GraphResponder::new(client_request_id, state.now());
        state.count_rejected();
        let message = format!("The fake serves only sendMail in a batch, not '{}'.", request.url);
        return respond.error(StatusCode::NOT_FOUND, "ResourceNotFound", &message);
    };
    if !request.method.eq_ignore_ascii_case("POST") {
        let respond = GraphResponder::new(client_request_id, state.now());
        state.count_rejected();
        let message = format!("sendMail does not support the method {}.", request.method);
        return respond.error(StatusCode::METHOD_NOT_ALLOWED, "BadRequest", &message);
    }

    // A JSON body travels as the JSON value, the MIME form as its base64 text.
    let body = match &request.body {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) => text.clone().into_bytes(),
        Some(value) => value.to_string().into_bytes(),
    };
    let call = SendMailCall {
        mailbox,
        user,
        content_type: request.headers.get("content-type").map(String::as_str),
        body: &body,
        client_request_id,
    };
    send_mail(state, call).await
}

/// Returns the `{id}` of a `sendMail` URL relative to the API version: `None` inside
/// `Some` for `/me/sendMail`, or `None` when the URL is no `sendMail`.
fn send_mail_user(url: &str) -> Option<Option<&str>> {
    let segments: Vec<&str> = url.strip_prefix('/').unwrap_or(url).split('/').collect();
    match segments.as_slice() {
        [me, action] if me.eq_ignore_ascii_case("me") && is_send_mail(action) => Some(None),
        [users, user, action]
            if users.eq_ignore_ascii_case("users") && !user.is_empty() && is_send_mail(action) =>
        {
            Some(Some(user))
        }
        _ => None,
    }
}

fn is_send_mail(segment: &str) -> bool {
    segment.eq_ignore_ascii_case("sendMail")
}

/// Builds the 424 of a request whose dependency did not succeed.
fn failed_dependency(state: &FakeState) -> GraphReply {
    let respond = GraphResponder::new(None, state.now());
    let message = "The request depends on a request that failed.";
    respond.error(StatusCode::FAILED_DEPENDENCY, "FailedDependency", message)
}

/// Checks a `$batch` body, or returns the message of the 400 that rejects it.
fn read_batch(body: &[u8]) -> Result<Batch, String> {
    let root: Value =
        serde_json::from_slice(body).map_err(|_| "Invalid batch payload: not JSON.".to_owned())?;
    let items = root
        .get("requests")
        .and_then(Value::as_array)
        .ok_or_else(|| "Invalid batch payload: the requests array is missing.".to_owned())?;
    if items.is_empty() {
        return Err("Invalid batch payload: the requests array is empty.".to_owned());
    }
    if items.len() > MAX_REQUESTS {
        let count = items.len();
        return Err(format!(
            "The batch has {count} requests, more than the maximum of {MAX_REQUESTS}."
        ));
    }

    let requests = items.iter().map(read_request).collect::<Result<Vec<_>, _>>()?;
    let mut ids = HashSet::new();
    for request in &requests {
        if !ids.insert(request.id.to_lowercase()) {
            return Err(format!("The request id '{}' appears more than once.", request.id));
        }
    }
    let rounds = rounds(&requests)?;
    Ok(Batch { requests, rounds })
}

/// Checks one inner request.
fn read_request(item: &Value) -> Result<InnerRequest, String> {
    let Some(item) = item.as_object() else {
        return Err("Invalid batch payload: a request is not a JSON object.".to_owned());
    };
    let text = |name: &str| item.get(name).and_then(Value::as_str).filter(|t| !t.is_empty());
    let id = text("id").ok_or("Invalid batch payload: a request has no id.")?.to_owned();
    let method = text("method").ok_or(format!("Request '{id}' has no method."))?.to_owned();
    let url = text("url").ok_or(format!("Request '{id}' has no url."))?.to_owned();

    let headers = read_headers(item, &id)?;
    let body = item.get("body").filter(|body| !body.is_null()).cloned();
    if body.is_some() && !headers.contains_key("content-type") {
        return Err(format!("Request '{id}' has a body but no Content-Type header."));
    }

    let depends_on = match item.get("dependsOn") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(ids)) => ids
            .iter()
            .map(|dependency| dependency.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or(format!("Request '{id}' has a dependsOn entry that is not a string."))?,
        Some(_) => return Err(format!("Request '{id}' has a dependsOn that is not an array.")),
    };
    Ok(InnerRequest { id, method, url, headers, body, depends_on })
}

/// Reads the `headers` object of request `id`, with lowercase names.
fn read_headers(item: &Map<String, Value>, id: &str) -> Result<HashMap<String, String>, String> {
    let Some(headers) = item.get("headers").filter(|headers| !headers.is_null()) else {
        return Ok(HashMap::new());
    };
    let headers =
        headers.as_object().ok_or(format!("Request '{id}' has headers that are not an object."))?;
    headers
        .iter()
        .map(|(name, value)| {
            let value = value
                .as_str()
                .ok_or(format!("Request '{id}' has a header '{name}' that is not a string."))?;
            Ok((name.to_lowercase(), value.to_owned()))
        })
        .collect()
}

/// Orders `requests` into rounds: each request runs in the round after the last of its
/// dependencies. Fails on an unknown id or a cycle.
fn rounds(requests: &[InnerRequest]) -> Result<Vec<Vec<usize>>, String> {
    let known: HashSet<String> = requests.iter().map(|request| request.id.to_lowercase()).collect();
    for request in requests {
        if let Some(unknown) =
            request.depends_on.iter().find(|id| !known.contains(&id.to_lowercase()))
        {
            return Err(format!(
                "Request '{}' depends on the unknown request '{unknown}'.",
                request.id
            ));
        }
    }

    let mut done: HashSet<String> = HashSet::new();
    let mut pending: Vec<usize> = (0..requests.len()).collect();
    let mut rounds = Vec::new();
    while !pending.is_empty() {
        let (ready, waiting): (Vec<usize>, Vec<usize>) = pending.iter().partition(|&&index| {
            requests[index].depends_on.iter().all(|id| done.contains(&id.to_lowercase()))
        });
        if ready.is_empty() {
            return Err("The dependsOn of the requests form a cycle.".to_owned());
        }
        done.extend(ready.iter().map(|&index| requests[index].id.to_lowercase()));
        rounds.push(ready);
        pending = waiting;
    }
    Ok(rounds)
}
