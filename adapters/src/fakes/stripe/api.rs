//! The fake's REST API: the requests of the engine's Stripe client, served from the fake's
//! state with Stripe's error bodies.
//!
//! - `POST /v1/customers`: creates a customer; a repeated `Idempotency-Key` with the same form
//!   replays the first response, and with another form is an `idempotency_error`, as Stripe
//!   does for 24 hours;
//! - `GET /v1/subscriptions?customer=...`: the customer's subscriptions, newest first, paged
//!   by `limit` and `starting_after`;
//! - `POST /v1/billing/meter_events`: records a meter event; an identifier seen before is
//!   rejected, because Stripe counts each identifier once.
//!
//! NOTE: Stripe's exact error code for a repeated meter event identifier is not in the API
//! description; the fake answers 400 `invalid_request_error` with code
//! `resource_already_exists`.

use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::{HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

use super::{RecordedMeterEvent, StripeFake};

/// A failure the fake's API plays instead of serving a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectedFailure {
    /// The request is answered with this status before anything happens, as a load balancer
    /// or an overloaded API does; nothing is stored under its idempotency key.
    Reject(u16),
    /// The request is carried out and its result stored, but the client gets a 500, as when
    /// the answer is lost on the way back. A retry with the same key gets the stored result.
    AnswerLost,
}

/// A POST's outcome kept under its idempotency key: the request's form (sorted), the status
/// and the body.
pub(super) type StoredResult = (Vec<(String, String)>, u16, Value);

/// The fake's REST API server.
#[derive(Debug)]
pub struct StripeApiServer {
    pub url: reqwest::Url,
    handle: ServerHandle,
}

impl StripeApiServer {
    /// Stops the server, waiting for requests in flight.
    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }
}

impl StripeFake {
    /// Serves the fake's REST API on `127.0.0.1` and a free port, on the current Tokio runtime.
    /// Requests must carry `Authorization: Bearer` with [`super::FAKE_API_KEY`].
    pub fn serve_api(self: &Arc<Self>) -> std::io::Result<StripeApiServer> {
        let data = web::Data::from(self.clone());
        let server = HttpServer::new(move || {
            actix_web::App::new()
                .app_data(data.clone())
                .route("/v1/customers", web::post().to(create_customer))
                .route("/v1/subscriptions", web::get().to(list_subscriptions))
                .route("/v1/billing/meter_events", web::post().to(create_meter_event))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .bind(("127.0.0.1", 0))?;
        let address = server
            .addrs()
            .first()
            .copied()
            .ok_or_else(|| std::io::Error::other("Stripe fake bound no address"))?;
        let url =
            reqwest::Url::parse(&format!("http://{address}")).map_err(std::io::Error::other)?;
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(StripeApiServer { url, handle })
    }

    /// Makes the next API requests fail, one failure per request, in the order of `failures`.
    pub fn inject_failures(&self, failures: impl IntoIterator<Item = InjectedFailure>) {
        self.state.lock().injected_failures.extend(failures);
    }

    /// Returns the API requests received, as `METHOD /path`, oldest first.
    pub fn api_requests(&self) -> Vec<String> {
        self.state.lock().requests.clone()
    }

    /// Returns every customer, as the API shows them.
    pub fn customers(&self) -> Vec<Value> {
        self.state.lock().customers.values().cloned().collect()
    }

    /// Returns the meter events accepted, in order of acceptance.
    pub fn meter_events(&self) -> Vec<RecordedMeterEvent> {
        let state = self.state.lock();
        let events = state.meter_order.iter().filter_map(|id| state.meter_events.get(id));
        events.cloned().collect()
    }

    /// Checks the secret key and records the request; returns the failure to play, if any.
    fn admit(&self, request: &HttpRequest) -> Result<Option<InjectedFailure>, Box<HttpResponse>> {
        let expected = format!("Bearer {}", self.api_key);
        let authorization = request.headers().get("authorization").and_then(|v| v.to_str().ok());
        if authorization != Some(expected.as_str()) {
            let error =
                stripe_error(401, "invalid_request_error", None, "Invalid API Key provided");
            return Err(Box::new(error));
        }
        let mut state = self.state.lock();
        state.requests.push(format!("{} {}", request.method(), request.path()));
        Ok(state.injected_failures.pop_front())
    }

    /// Runs a POST under Stripe's idempotency rules: `create` runs once per key and form, and
    /// its status and body are replayed for the same key.
    fn idempotent_post(
        &self,
        request: &HttpRequest,
        body: &[u8],
        create: impl FnOnce(&mut super::StripeState, &[(String, String)]) -> (u16, Value),
    ) -> HttpResponse {
        let failure = match self.admit(request) {
            Ok(failure) => failure,
            Err(response) => return *response,
        };
        if let Some(InjectedFailure::Reject(status)) = failure {
            return stripe_error(status, "api_error", None, "injected failure");
        }
        let Ok(mut form) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(body) else {
            return stripe_error(400, "invalid_request_error", None, "invalid form body");
        };
        form.sort();
        let key = request.headers().get("idempotency-key").and_then(|v| v.to_str().ok());
        let mut state = self.state.lock();
        let (status, body, replayed) = match key.and_then(|key| state.idempotent.get(key)) {
            Some((stored_form, _, _)) if *stored_form != form => {
                let message = "Keys for idempotent requests can only be used with the same \
                               parameters they were first used with.";
                return stripe_error(400, "idempotency_error", None, message);
            }
            Some((_, status, body)) => (*status, body.clone(), true),
            None => {
                let (status, body) = create(&mut state, &form);
                if let Some(key) = key {
                    state.idempotent.insert(key.to_owned(), (form, status, body.clone()));
                }
                (status, body, false)
            }
        };
        drop(state);
        if failure == Some(InjectedFailure::AnswerLost) {
            return stripe_error(500, "api_error", None, "injected failure after the work");
        }
        let mut response = HttpResponse::build(status_code(status));
        if replayed {
            response.insert_header(("Idempotent-Replayed", "true"));
        }
        response.json(body)
    }
}

fn status_code(status: u16) -> actix_web::http::StatusCode {
    actix_web::http::StatusCode::from_u16(status)
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR)
}

/// Stripe's error body: `{"error": {"type", "code", "message"}}`.
fn stripe_error(status: u16, kind: &str, code: Option<&str>, message: &str) -> HttpResponse {
    let mut error = json!({"type": kind, "message": message});
    if let Some(code) = code {
        error["code"] = json!(code);
    }
    HttpResponse::build(status_code(status)).json(json!({"error": error}))
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
}

async fn create_customer(
    fake: web::Data<StripeFake>,
    request: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let now = fake.clock.now().timestamp();
    fake.idempotent_post(&request, &body, |state, form| {
        let id = state.id("cus");
        let mut metadata = serde_json::Map::new();
        for (key, value) in form {
            if let Some(name) = key.strip_prefix("metadata[").and_then(|k| k.strip_suffix(']')) {
                metadata.insert(name.to_owned(), json!(value));
            }
        }
        let customer = json!({
            "id": id,
            "object": "customer",
            "created": now,
            "name": field(form, "name"),
            "metadata": metadata,
            "livemode": false,
        });
        state.customers.insert(id, customer.clone());
        (200, customer)
    })
}

#[derive(Debug, serde::Deserialize)]
struct SubscriptionQuery {
    customer: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
    starting_after: Option<String>,
}

async fn list_subscriptions(
    fake: web::Data<StripeFake>,
    request: HttpRequest,
    query: web::Query<SubscriptionQuery>,
) -> HttpResponse {
    // A read changes nothing, so a lost answer is just a failed request.
    match fake.admit(&request) {
        Ok(Some(InjectedFailure::Reject(status))) => {
            return stripe_error(status, "api_error", None, "injected failure");
        }
        Ok(Some(InjectedFailure::AnswerLost)) => {
            return stripe_error(500, "api_error", None, "injected failure");
        }
        Ok(None) => {}
        Err(response) => return *response,
    }
    let query = query.into_inner();
    let limit = query.limit.unwrap_or(10).clamp(1, 100);
    let state = fake.state.lock();
    let mut subscriptions: Vec<&Value> = state
        .subscriptions
        .values()
        .filter(|subscription| {
            query.customer.as_deref().is_none_or(|customer| subscription["customer"] == customer)
        })
        .filter(|subscription| match query.status.as_deref() {
            Some("all") => true,
            Some(status) => subscription["status"] == status,
            // Stripe leaves cancelled subscriptions out unless asked for them.
            None => subscription["status"] != "canceled",
        })
        .collect();
    // Newest first; ids grow with creation, so they break ties of one second.
    subscriptions.sort_by(|a, b| {
        let key = |s: &Value| (s["created"].as_i64(), s["id"].as_str().map(str::to_owned));
        key(b).cmp(&key(a))
    });
    let start = match &query.starting_after {
        Some(after) => match subscriptions.iter().position(|s| s["id"] == after.as_str()) {
            Some(position) => position + 1,
            None => {
                let message = format!("No such subscription: '{after}'");
                return stripe_error(
                    400,
                    "invalid_request_error",
                    Some("resource_missing"),
                    &message,
                );
            }
        },
        None => 0,
    };
    let page: Vec<&Value> = subscriptions.iter().skip(start).take(limit).copied().collect();
    let has_more = start + page.len() < subscriptions.len();
    HttpResponse::Ok().json(json!({
        "object": "list",
        "url": "/v1/subscriptions",
        "has_more": has_more,
        "data": page,
    }))
}

async fn create_meter_event(
    fake: web::Data<StripeFake>,
    request: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let now = fake.clock.now().timestamp();
    fake.idempotent_post(&request, &body, |state, form| {
        let (Some(event_name), Some(customer_id), Some(value)) = (
            field(form, "event_name"),
            field(form, "payload[stripe_customer_id]"),
            field(form, "payload[value]"),
        ) else {
            let message = "event_name, payload[stripe_customer_id] and payload[value] are required";
            return (400, json!({"error": {"type": "invalid_request_error", "message": message}}));
        };
        let identifier = match field(form, "identifier") {
            Some(identifier) => identifier.to_owned(),
            None => state.id("mev"),
        };
        let timestamp = field(form, "timestamp").and_then(|t| t.parse().ok()).unwrap_or(now);
        if state.meter_events.contains_key(&identifier) {
            let message = format!("An event with identifier {identifier} already exists.");
            let error = json!({"type": "invalid_request_error",
                               "code": "resource_already_exists", "message": message});
            return (400, json!({"error": error}));
        }
        let event = RecordedMeterEvent {
            event_name: event_name.to_owned(),
            identifier: identifier.clone(),
            customer_id: customer_id.to_owned(),
            value: value.to_owned(),
            timestamp,
        };
        state.meter_events.insert(identifier.clone(), event);
        state.meter_order.push(identifier.clone());
        let echo = json!({
            "object": "billing.meter_event",
            "created": now,
            "event_name": event_name,
            "identifier": identifier,
            "livemode": false,
            "payload": {"stripe_customer_id": customer_id, "value": value},
            "timestamp": timestamp,
        });
        (200, echo)
    })
}
