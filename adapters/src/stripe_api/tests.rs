//! The client against the Stripe fake's REST API over HTTP on loopback.

use std::sync::Arc;
use std::time::Duration;

use followup_core::clock::SystemClock;
use followup_core::sensitive::Sensitive;

use super::*;
use crate::fakes::stripe::api::{InjectedFailure, StripeApiServer};
use crate::fakes::stripe::{FAKE_API_KEY, StripeFake};
use crate::stripe_mock_fixture::StripeMock;

const TENANT: &str = "0b6f2a7e-7d6c-4f59-9a53-3a1f4f2b9c11";

fn fake() -> Arc<StripeFake> {
    let fake =
        StripeFake::new("http://127.0.0.1:9/webhooks/stripe", "whsec_t", Arc::new(SystemClock));
    Arc::new(fake.expect("loopback endpoint"))
}

fn client(server: &StripeApiServer, key: &str) -> StripeClient {
    let key = Sensitive::new(key.to_owned());
    StripeClient::new(server.url.as_str(), &key, Duration::from_secs(5)).expect("valid base URL")
}

#[tokio::test]
async fn customer_retry_creates_one_customer() {
    let fake = fake();
    let server = fake.serve_api().expect("fake API");
    let stripe = client(&server, FAKE_API_KEY);

    // The first answer is lost after the customer was created; the retry with the same
    // idempotency key gets the stored answer.
    fake.inject_failures([InjectedFailure::AnswerLost]);
    let lost = stripe.create_customer(TENANT, "Acme").await.expect_err("answer lost");
    assert!(lost.is_retryable(), "{lost}");
    let first = stripe.create_customer(TENANT, "Acme").await.expect("retry");
    let again = stripe.create_customer(TENANT, "Acme").await.expect("second retry");
    assert_eq!(first, again, "the same customer each time");

    let customers = fake.customers();
    assert_eq!(customers.len(), 1, "{customers:?}");
    assert_eq!(customers[0]["id"], first.as_str());
    assert_eq!(customers[0]["metadata"][TENANT_METADATA_KEY], TENANT);
    assert_eq!(customers[0]["name"], "Acme");

    let other = stripe.create_customer("another-tenant", "Acme").await.expect("other tenant");
    assert_ne!(other, first, "another tenant gets its own customer");
    server.stop().await;
}

#[tokio::test]
async fn subscriptions_listed_across_pages() {
    let fake = fake();
    let server = fake.serve_api().expect("fake API");
    let stripe = client(&server, FAKE_API_KEY);
    let customer = fake.create_customer();
    let other = fake.create_customer();
    // One more than a page, so the client follows `has_more`.
    for _ in 0..PAGE_SIZE + 1 {
        fake.create_subscription(&customer, "price_pro").expect("subscription");
    }
    let created = fake.create_subscription(&other, "price_other").expect("subscription");
    let other_id = StripeFake::object_id(&created).expect("id");
    fake.delete_subscription(&other_id).expect("deleted");

    let listing = stripe.list_subscriptions(&customer).await.expect("listing");
    assert!(!listing.truncated);
    assert_eq!(listing.subscriptions.len(), 101);
    let first = &listing.subscriptions[0];
    assert_eq!(first.price_id(), Some("price_pro"));
    assert_eq!(first.status, "active");
    assert!(first.period_end().is_some(), "{first:?}");
    let requests = fake.api_requests();
    assert_eq!(requests, vec!["GET /v1/subscriptions"; 2], "two pages");

    // Ended subscriptions are listed too, because the client asks for status=all.
    let listing = stripe.list_subscriptions(&other).await.expect("listing");
    assert_eq!(listing.subscriptions.len(), 1);
    assert_eq!(listing.subscriptions[0].status, "canceled");
    assert!(listing.subscriptions[0].ended_at.is_some());
    server.stop().await;
}

#[tokio::test]
async fn meter_event_retry_counts_once() {
    let fake = fake();
    let server = fake.serve_api().expect("fake API");
    let stripe = client(&server, FAKE_API_KEY);
    let event = MeterEvent {
        event_name: "followup_sends".into(),
        customer_id: "cus_1".into(),
        value: 42,
        identifier: "fu-test-2026-12-email-1".into(),
        timestamp: 1_796_000_000,
    };
    fake.inject_failures([InjectedFailure::Reject(503), InjectedFailure::AnswerLost]);
    let rejected = stripe.create_meter_event(&event).await.expect_err("503");
    assert!(rejected.is_retryable(), "{rejected}");
    let lost = stripe.create_meter_event(&event).await.expect_err("answer lost");
    assert!(lost.is_retryable(), "{lost}");
    let stored = stripe.create_meter_event(&event).await.expect("replayed");
    assert_eq!(stored, event.identifier);

    let recorded = fake.meter_events();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0].value, "42");
    assert_eq!(recorded[0].customer_id, "cus_1");
    assert_eq!(recorded[0].timestamp, event.timestamp);
    server.stop().await;
}

#[tokio::test]
async fn wrong_key_error_hides_the_key() {
    let fake = fake();
    let server = fake.serve_api().expect("fake API");
    let stripe = client(&server, "sk_test_wrong_secret_value");
    let error = stripe.create_customer(TENANT, "Acme").await.expect_err("401");
    let text = format!("{error} {error:?} {stripe:?}");
    assert!(matches!(error, StripeApiError::Api { status: 401, .. }), "{error:?}");
    assert!(!error.is_retryable());
    assert!(!text.contains("sk_test_wrong_secret_value"), "{text}");
    assert!(fake.customers().is_empty());
    server.stop().await;
}

#[test]
fn base_url_must_be_http() {
    let key = Sensitive::new("sk_test_1".to_owned());
    let error =
        StripeClient::new("ftp://127.0.0.1", &key, Duration::from_secs(1)).expect_err("not HTTP");
    assert!(error.to_string().contains("ftp://127.0.0.1"), "{error}");
}

/// Starts stripe-mock for one test. Each test has its own, because a server kept in a static
/// would outlive the test binary: unlike the FerretDB fixture, stripe-mock does not exit with
/// its parent.
fn stripe_mock() -> StripeMock {
    StripeMock::start().unwrap_or_else(|error| panic!("{error}"))
}

fn stripe_mock_client(mock: &StripeMock) -> StripeClient {
    let key = Sensitive::new("sk_test_123".to_owned());
    StripeClient::new(&mock.url(), &key, Duration::from_secs(10)).expect("valid base URL")
}

#[tokio::test]
async fn stripe_mock_accepts_customer_creation() {
    let mock = stripe_mock();
    let stripe = stripe_mock_client(&mock);
    let customer = stripe.create_customer(TENANT, "Acme").await.expect("request accepted");
    assert!(customer.starts_with("cus_"), "{customer}");
}

#[tokio::test]
async fn stripe_mock_accepts_subscription_listing() {
    let mock = stripe_mock();
    let stripe = stripe_mock_client(&mock);
    let listing = stripe.list_subscriptions("cus_123").await.expect("request accepted");
    // stripe-mock answers with its fixture list, which holds one subscription.
    let first = listing.subscriptions.first().expect("a fixture subscription");
    assert!(first.id.starts_with("sub_"), "{first:?}");
    assert!(first.price_id().is_some_and(|price| price.starts_with("price_")), "{first:?}");
    assert!(first.period_end().is_some(), "{first:?}");
}

#[tokio::test]
async fn stripe_mock_accepts_meter_event() {
    let mock = stripe_mock();
    let stripe = stripe_mock_client(&mock);
    let event = MeterEvent {
        event_name: "followup_sends".into(),
        customer_id: "cus_123".into(),
        value: 7,
        identifier: "fu-conformance-2026-12-email-1".into(),
        timestamp: 1_796_000_000,
    };
    let identifier = stripe.create_meter_event(&event).await.expect("request accepted");
    assert_eq!(identifier, event.identifier);
}

#[tokio::test]
async fn stripe_mock_rejects_invalid_parameters() {
    // Shows that stripe-mock checks parameters, so the acceptances above mean something.
    let mock = stripe_mock();
    let url = format!("{}/v1/billing/meter_events", mock.url());
    let response = reqwest::Client::new()
        .post(url)
        .bearer_auth("sk_test_123")
        .form(&[("payload[value]", "1"), ("payload[stripe_customer_id]", "cus_1")])
        .send()
        .await
        .expect("stripe-mock answers");
    assert_eq!(response.status().as_u16(), 400);
    let body = response.text().await.expect("body");
    assert!(body.contains("event_name"), "{body}");
}
