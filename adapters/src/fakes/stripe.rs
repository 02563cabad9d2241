//! A stateful fake of Stripe's billing side for tests: it keeps customers, subscriptions and
//! invoices, turns each change into the event Stripe would send, and delivers events to a
//! webhook endpoint on loopback, signed as Stripe signs them.
//!
//! The signature header is `Stripe-Signature: t=<unix seconds>,v1=<hex>`, where the hex is the
//! HMAC-SHA256, keyed with the endpoint's whole signing secret, of the timestamp, a dot and the
//! raw body (docs.stripe.com/webhooks, "Verify manually"). Events carry a subscription's
//! `current_period_end` both on the subscription and on its items, where API versions from
//! 2025-03-31 put it.
//!
//! Tests change subscriptions and invoices through the fake's methods and choose the delivery
//! order and repeats of the events, which is how they reproduce Stripe's at-least-once,
//! unordered delivery. [`StripeFake::serve_api`] also serves the part of Stripe's REST API the
//! engine calls (see [`api`]): customer creation with idempotency keys, the subscription list
//! and Billing Meter events.

pub mod api;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use followup_core::clock::Clock;
use parking_lot::Mutex;
use ring::hmac;
use serde_json::{Value, json};

/// Length of a fake billing period.
const PERIOD: Duration = Duration::days(30);

/// The secret key the fake's REST API accepts.
pub const FAKE_API_KEY: &str = "sk_test_followup_fake";

/// One event as the fake created it: its id and the exact body it delivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeStripeEvent {
    pub id: String,
    pub kind: String,
    pub body: String,
}

/// The endpoint's response to one delivery.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub status: u16,
    pub body: Value,
}

#[derive(Debug, Default)]
struct StripeState {
    next_id: u64,
    customers: BTreeMap<String, Value>,
    subscriptions: BTreeMap<String, Value>,
    invoices: BTreeMap<String, Value>,
    events: Vec<FakeStripeEvent>,
    /// Stored results of POST requests by idempotency key.
    idempotent: BTreeMap<String, api::StoredResult>,
    /// Meter events by identifier, in arrival order of first acceptance.
    meter_events: BTreeMap<String, RecordedMeterEvent>,
    meter_order: Vec<String>,
    /// Statuses the next API requests get instead of being served, first one first.
    injected_failures: std::collections::VecDeque<api::InjectedFailure>,
    /// API requests received, by method and path (without the query).
    requests: Vec<String>,
}

/// A Billing Meter event as the fake accepted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedMeterEvent {
    pub event_name: String,
    pub identifier: String,
    pub customer_id: String,
    pub value: String,
    pub timestamp: i64,
}

impl StripeState {
    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}_fake{:06}", self.next_id)
    }
}

/// The fake. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct StripeFake {
    endpoint: Mutex<reqwest::Url>,
    signing_secret: String,
    /// The secret key API requests must carry as `Authorization: Bearer`.
    api_key: String,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    state: Mutex<StripeState>,
}

/// Errors of the fake's set-up and delivery.
#[derive(Debug, thiserror::Error)]
pub enum StripeFakeError {
    #[error("invalid webhook endpoint {url:?}: {reason}")]
    Endpoint { url: String, reason: String },
    #[error("unknown {kind} {id}")]
    Unknown { kind: &'static str, id: String },
    #[error("delivering {event} to the webhook endpoint failed: {source}")]
    Delivery { event: String, source: reqwest::Error },
}

impl StripeFake {
    /// Creates a fake that delivers to `endpoint`, which must be plain HTTP on a loopback
    /// address, signing with `signing_secret` and dating events by `clock`.
    pub fn new(
        endpoint: &str,
        signing_secret: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StripeFakeError> {
        let url = loopback_endpoint(endpoint)?;
        let invalid = |reason: &str| StripeFakeError::Endpoint {
            url: endpoint.to_owned(),
            reason: reason.to_owned(),
        };
        let http = crate::http::build_http_client(&crate::http::HttpSettings::default())
            .map_err(|error| invalid(&format!("building the HTTP client failed: {error}")))?;
        Ok(Self {
            endpoint: Mutex::new(url),
            signing_secret: signing_secret.to_owned(),
            api_key: FAKE_API_KEY.to_owned(),
            clock,
            http,
            state: Mutex::default(),
        })
    }

    /// Delivers later events to `endpoint`, for a test that starts the fake's API before the
    /// engine it delivers to. The same loopback rule as [`StripeFake::new`] applies.
    pub fn set_webhook_endpoint(&self, endpoint: &str) -> Result<(), StripeFakeError> {
        *self.endpoint.lock() = loopback_endpoint(endpoint)?;
        Ok(())
    }

    /// Creates a customer and returns its id. Stripe sends `customer.created` for it, which
    /// the engine does not act on, so the fake sends nothing.
    pub fn create_customer(&self) -> String {
        let mut state = self.state.lock();
        let id = state.id("cus");
        state.customers.insert(id.clone(), json!({"id": id, "object": "customer"}));
        id
    }

    /// Starts an active subscription of `customer` to `price` and returns its
    /// `customer.subscription.created` event.
    pub fn create_subscription(
        &self,
        customer: &str,
        price: &str,
    ) -> Result<FakeStripeEvent, StripeFakeError> {
        let now = self.clock.now();
        let mut state = self.state.lock();
        if !state.customers.contains_key(customer) {
            return Err(StripeFakeError::Unknown { kind: "customer", id: customer.to_owned() });
        }
        let id = state.id("sub");
        let item_id = state.id("si");
        let period_end = (now + PERIOD).timestamp();
        let subscription = json!({
            "id": id,
            "object": "subscription",
            "customer": customer,
            "status": "active",
            "created": now.timestamp(),
            "current_period_start": now.timestamp(),
            "current_period_end": period_end,
            "cancel_at_period_end": false,
            "canceled_at": null,
            "ended_at": null,
            "items": {"object": "list", "data": [{
                "id": item_id,
                "object": "subscription_item",
                "price": {"id": price, "object": "price"},
                "quantity": 1,
                "current_period_start": now.timestamp(),
                "current_period_end": period_end,
            }]},
            "metadata": {},
        });
        state.subscriptions.insert(id, subscription.clone());
        Ok(Self::event(&mut state, now, "customer.subscription.created", subscription))
    }

    /// Applies `change` to a subscription and returns its `customer.subscription.updated`
    /// event.
    fn update_subscription(
        &self,
        id: &str,
        change: impl FnOnce(&mut Value, DateTime<Utc>),
    ) -> Result<FakeStripeEvent, StripeFakeError> {
        let now = self.clock.now();
        let mut state = self.state.lock();
        let unknown = || StripeFakeError::Unknown { kind: "subscription", id: id.to_owned() };
        let subscription = state.subscriptions.get_mut(id).ok_or_else(unknown)?;
        change(subscription, now);
        let subscription = subscription.clone();
        Ok(Self::event(&mut state, now, "customer.subscription.updated", subscription))
    }

    /// Moves a subscription to another price.
    pub fn change_price(&self, id: &str, price: &str) -> Result<FakeStripeEvent, StripeFakeError> {
        self.update_subscription(id, |subscription, _| {
            subscription["items"]["data"][0]["price"]["id"] = json!(price);
        })
    }

    /// Sets a subscription's Stripe status, such as `past_due`.
    pub fn set_status(&self, id: &str, status: &str) -> Result<FakeStripeEvent, StripeFakeError> {
        self.update_subscription(id, |subscription, _| subscription["status"] = json!(status))
    }

    /// Cancels a subscription at the end of its current period.
    pub fn cancel_at_period_end(&self, id: &str) -> Result<FakeStripeEvent, StripeFakeError> {
        self.update_subscription(id, |subscription, now| {
            subscription["cancel_at_period_end"] = json!(true);
            subscription["canceled_at"] = json!(now.timestamp());
        })
    }

    /// Ends a subscription at once and returns its `customer.subscription.deleted` event.
    pub fn delete_subscription(&self, id: &str) -> Result<FakeStripeEvent, StripeFakeError> {
        let now = self.clock.now();
        let mut state = self.state.lock();
        let unknown = || StripeFakeError::Unknown { kind: "subscription", id: id.to_owned() };
        let subscription = state.subscriptions.get_mut(id).ok_or_else(unknown)?;
        subscription["status"] = json!("canceled");
        subscription["ended_at"] = json!(now.timestamp());
        if subscription["canceled_at"].is_null() {
            subscription["canceled_at"] = json!(now.timestamp());
        }
        let subscription = subscription.clone();
        Ok(Self::event(&mut state, now, "customer.subscription.deleted", subscription))
    }

    /// Bills `customer` for a subscription period and fails the payment: returns the new
    /// invoice's `invoice.payment_failed` event.
    pub fn fail_invoice(
        &self,
        customer: &str,
        subscription: &str,
    ) -> Result<FakeStripeEvent, StripeFakeError> {
        let now = self.clock.now();
        let mut state = self.state.lock();
        if !state.customers.contains_key(customer) {
            return Err(StripeFakeError::Unknown { kind: "customer", id: customer.to_owned() });
        }
        let id = state.id("in");
        let invoice = json!({
            "id": id,
            "object": "invoice",
            "customer": customer,
            "subscription": subscription,
            "status": "open",
            "paid": false,
            "attempt_count": 1,
            "created": now.timestamp(),
        });
        state.invoices.insert(id, invoice.clone());
        Ok(Self::event(&mut state, now, "invoice.payment_failed", invoice))
    }

    /// Pays an open invoice and returns its `invoice.paid` event.
    pub fn pay_invoice(&self, id: &str) -> Result<FakeStripeEvent, StripeFakeError> {
        let now = self.clock.now();
        let mut state = self.state.lock();
        let unknown = || StripeFakeError::Unknown { kind: "invoice", id: id.to_owned() };
        let invoice = state.invoices.get_mut(id).ok_or_else(unknown)?;
        invoice["status"] = json!("paid");
        invoice["paid"] = json!(true);
        let invoice = invoice.clone();
        Ok(Self::event(&mut state, now, "invoice.paid", invoice))
    }

    /// Returns the id of the object an event is about.
    pub fn object_id(event: &FakeStripeEvent) -> Option<String> {
        let body: Value = serde_json::from_str(&event.body).ok()?;
        body["data"]["object"]["id"].as_str().map(str::to_owned)
    }

    /// Returns every event created so far, oldest first.
    pub fn events(&self) -> Vec<FakeStripeEvent> {
        self.state.lock().events.clone()
    }

    fn event(
        state: &mut StripeState,
        now: DateTime<Utc>,
        kind: &str,
        object: Value,
    ) -> FakeStripeEvent {
        let id = state.id("evt");
        let body = json!({
            "id": id,
            "object": "event",
            "api_version": "2025-03-31.basil",
            "created": now.timestamp(),
            "data": {"object": object},
            "livemode": false,
            "pending_webhooks": 1,
            "request": {"id": null, "idempotency_key": null},
            "type": kind,
        });
        let event = FakeStripeEvent { id, kind: kind.to_owned(), body: body.to_string() };
        state.events.push(event.clone());
        event
    }

    /// Returns the `Stripe-Signature` header value for `body` signed at `timestamp`.
    pub fn signature_header(&self, timestamp: i64, body: &str) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, self.signing_secret.as_bytes());
        let mut signed = format!("{timestamp}.").into_bytes();
        signed.extend_from_slice(body.as_bytes());
        let tag = hmac::sign(&key, &signed);
        let hex: String = tag.as_ref().iter().map(|byte| format!("{byte:02x}")).collect();
        format!("t={timestamp},v1={hex}")
    }

    /// Delivers `event` signed at the clock's current time, as Stripe's first delivery or a
    /// retry does (a retry is signed anew).
    pub async fn deliver(&self, event: &FakeStripeEvent) -> Result<Delivery, StripeFakeError> {
        self.deliver_signed_at(event, self.clock.now().timestamp()).await
    }

    /// Delivers `event` with a signature dated `timestamp`, Unix seconds.
    pub async fn deliver_signed_at(
        &self,
        event: &FakeStripeEvent,
        timestamp: i64,
    ) -> Result<Delivery, StripeFakeError> {
        let failed = |source| StripeFakeError::Delivery { event: event.id.clone(), source };
        let endpoint = self.endpoint.lock().clone();
        let response = self
            .http
            .post(endpoint)
            .header("Content-Type", "application/json; charset=utf-8")
            .header("Stripe-Signature", self.signature_header(timestamp, &event.body))
            .body(event.body.clone())
            .send()
            .await
            .map_err(failed)?;
        let status = response.status().as_u16();
        let body = response.json().await.map_err(failed)?;
        Ok(Delivery { status, body })
    }
}

/// Parses a webhook endpoint, which must be on a loopback address.
fn loopback_endpoint(endpoint: &str) -> Result<reqwest::Url, StripeFakeError> {
    let invalid = |reason: &str| StripeFakeError::Endpoint {
        url: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    let url = reqwest::Url::parse(endpoint).map_err(|error| invalid(&error.to_string()))?;
    let host = url.host_str().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(invalid("the fake delivers to loopback addresses only"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use followup_core::clock::SystemClock;

    use super::*;

    fn fake(endpoint: &str) -> Result<StripeFake, StripeFakeError> {
        StripeFake::new(endpoint, "whsec_test", Arc::new(SystemClock))
    }

    #[test]
    fn signature_matches_known_vector() {
        // Computed independently with Python's `hmac` for Stripe's documented scheme.
        let expected = "t=1492774577,v1=\
            91756ee38f5c256c6db5893fecc447d8729adb8023535a860e4c2b521391cec9";
        let fake = fake("http://127.0.0.1:9/webhooks/stripe").expect("loopback endpoint");
        assert_eq!(fake.signature_header(1492774577, r#"{"id":"evt_test"}"#), expected);
    }

    #[test]
    fn endpoint_must_be_loopback() {
        assert!(fake("http://[::1]:9/webhooks/stripe").is_ok());
        assert!(fake("http://localhost:9/webhooks/stripe").is_ok());
        let remote = fake("http://192.0.2.1/webhooks/stripe").expect_err("not loopback");
        assert!(remote.to_string().contains("loopback"), "{remote}");
    }

    #[test]
    fn events_follow_the_subscription() {
        let fake = fake("http://127.0.0.1:9/webhooks/stripe").expect("loopback endpoint");
        let customer = fake.create_customer();
        let created = fake.create_subscription(&customer, "price_a").expect("created");
        let id = StripeFake::object_id(&created).expect("subscription id");
        let cancelled = fake.cancel_at_period_end(&id).expect("updated");
        let body: Value = serde_json::from_str(&cancelled.body).expect("JSON");
        assert_eq!(body["type"], "customer.subscription.updated");
        assert_eq!(body["data"]["object"]["cancel_at_period_end"], true);
        assert_eq!(body["data"]["object"]["items"]["data"][0]["price"]["id"], "price_a");
        let unknown = fake.change_price("sub_missing", "price_b").expect_err("unknown");
        assert!(unknown.to_string().contains("sub_missing"), "{unknown}");
        assert_eq!(fake.events().len(), 2);
    }
}
