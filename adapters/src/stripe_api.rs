//! Stripe API client, built on async-stripe: creates a tenant's customer, lists a customer's
//! subscriptions and records Billing Meter events.
//!
//! Requests are async-stripe's generated ones, so their paths and parameters follow its
//! description of the API. Responses are read into the few fields billing uses, not into
//! async-stripe's full object types: those require every field of the API version the crate
//! was generated from, which older fixtures (stripe-mock's) and our fake do not all carry.
//!
//! The secret key goes only into the `Authorization` header, which async-stripe marks
//! sensitive; no error or log line of this module contains it.

use std::collections::HashMap;
use std::time::Duration;

use followup_core::sensitive::Sensitive;
use stripe_billing::billing_meter_event::CreateBillingMeterEvent;
use stripe_billing::subscription::{ListSubscription, ListSubscriptionStatus};
use stripe_client_core::{IdempotencyKey, RequestStrategy, StripeRequest as _};
use stripe_core::customer::CreateCustomer;

/// Stripe's production API root.
pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";

/// Metadata key on a customer naming the tenant it pays for.
pub const TENANT_METADATA_KEY: &str = "followup_tenant";

/// Subscriptions asked for per page; Stripe's maximum is 100.
const PAGE_SIZE: i64 = 100;

/// Pages read at most per listing, so a customer with thousands of subscriptions cannot keep a
/// sync busy; the listing then reports `truncated`.
const MAX_PAGES: usize = 10;

/// A client for one Stripe account. Cheap to clone.
#[derive(Clone, Debug)]
pub struct StripeClient {
    client: stripe::Client,
    api_base: String,
}

/// Errors of Stripe API calls. None carries the secret key.
#[derive(Debug, thiserror::Error)]
pub enum StripeApiError {
    #[error("invalid Stripe API base URL {url:?}: {reason}")]
    Config { url: String, reason: String },
    #[error("invalid Stripe request: {0}")]
    InvalidRequest(String),
    /// Stripe answered with an error object.
    #[error("Stripe returned {status} ({kind}{code}): {message}")]
    Api { status: u16, kind: String, code: String, message: String },
    #[error("Stripe request failed before an answer: {0}")]
    Transport(String),
    #[error("Stripe request timed out")]
    Timeout,
    #[error("unreadable Stripe response: {0}")]
    Response(String),
}

impl StripeApiError {
    /// Returns whether the same request may succeed later: a timeout, a failed connection,
    /// 409 (a concurrent request with the same idempotency key), 429 or a 5xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            StripeApiError::Transport(_) | StripeApiError::Timeout => true,
            StripeApiError::Api { status, .. } => {
                matches!(status, 409 | 429) || (500..600).contains(status)
            }
            _ => false,
        }
    }

    fn from_stripe(error: stripe::StripeError) -> StripeApiError {
        match error {
            stripe::StripeError::Stripe(details, status) => StripeApiError::Api {
                status,
                kind: details.type_.as_str().to_owned(),
                code: details.code.map(|code| format!(", {}", code.as_str())).unwrap_or_default(),
                message: details.message.unwrap_or_else(|| "no message".to_owned()),
            },
            stripe::StripeError::JSONDeserialize(reason) => StripeApiError::Response(reason),
            stripe::StripeError::ClientError(reason) => StripeApiError::Transport(reason),
            stripe::StripeError::ConfigError(reason) => StripeApiError::InvalidRequest(reason),
            stripe::StripeError::Timeout => StripeApiError::Timeout,
        }
    }
}

/// The part of a subscription billing reads.
#[derive(Clone, Debug, PartialEq, Eq, miniserde::Deserialize)]
pub struct SubscriptionSummary {
    pub id: String,
    pub status: String,
    pub created: i64,
    pub cancel_at_period_end: Option<bool>,
    pub canceled_at: Option<i64>,
    pub ended_at: Option<i64>,
    /// Present on API versions before 2025-03-31; later ones carry it on the items only.
    pub current_period_end: Option<i64>,
    pub items: SubscriptionItems,
}

#[derive(Clone, Debug, PartialEq, Eq, miniserde::Deserialize)]
pub struct SubscriptionItems {
    pub data: Vec<SubscriptionItemSummary>,
}

#[derive(Clone, Debug, PartialEq, Eq, miniserde::Deserialize)]
pub struct SubscriptionItemSummary {
    pub price: Option<PriceSummary>,
    pub current_period_end: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, miniserde::Deserialize)]
pub struct PriceSummary {
    pub id: String,
}

impl SubscriptionSummary {
    /// Returns the price of the first item, which selects the tenant's plan.
    pub fn price_id(&self) -> Option<&str> {
        self.items.data.first().and_then(|item| item.price.as_ref()).map(|price| price.id.as_str())
    }

    /// Returns the end of the current period: the subscription's own, or else the latest of
    /// its items'.
    pub fn period_end(&self) -> Option<i64> {
        let items = self.items.data.iter().filter_map(|item| item.current_period_end).max();
        self.current_period_end.or(items)
    }
}

#[derive(Debug, miniserde::Deserialize)]
struct SubscriptionPage {
    data: Vec<SubscriptionSummary>,
    has_more: bool,
}

/// Any object of which only the id is read.
#[derive(Debug, miniserde::Deserialize)]
struct ObjectId {
    id: String,
}

/// A meter event as Stripe echoes it back.
#[derive(Debug, miniserde::Deserialize)]
struct MeterEventEcho {
    identifier: String,
}

/// Every subscription of a customer, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionListing {
    pub subscriptions: Vec<SubscriptionSummary>,
    /// More pages existed than [`MAX_PAGES`]; the oldest subscriptions were not read.
    pub truncated: bool,
}

/// One Billing Meter event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeterEvent {
    /// The meter's `event_name`.
    pub event_name: String,
    pub customer_id: String,
    pub value: u64,
    /// Unique per event: Stripe counts a repeated identifier once (over at least 24 hours).
    pub identifier: String,
    /// When the usage happened, Unix seconds; Stripe accepts the past 35 days up to 5 minutes
    /// ahead.
    pub timestamp: i64,
}

impl StripeClient {
    /// Creates a client for `api_base` (such as [`DEFAULT_API_BASE`]) that waits at most
    /// `timeout` for each request. Nothing is connected to yet.
    pub fn new(
        api_base: &str,
        secret_key: &Sensitive<String>,
        timeout: Duration,
    ) -> Result<StripeClient, StripeApiError> {
        let invalid = |reason: String| StripeApiError::Config { url: api_base.to_owned(), reason };
        let parsed = reqwest::Url::parse(api_base).map_err(|error| invalid(error.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(invalid("expected an http or https URL with a host".to_owned()));
        }
        // async-stripe joins paths that start with `/v1/` to the base, which must end in `/`.
        let base = format!("{}/", api_base.trim_end_matches('/'));
        let client = stripe::ClientBuilder::new(secret_key.expose().clone())
            .url(base.clone())
            .timeout(timeout)
            .request_strategy(RequestStrategy::Once)
            .build()
            .map_err(|error| invalid(StripeApiError::from_stripe(error).to_string()))?;
        Ok(StripeClient { client, api_base: base })
    }

    /// The API root requests go to, ending in `/`.
    pub fn api_base(&self) -> &str {
        &self.api_base
    }

    /// Creates the customer that pays for a tenant and returns its id. The idempotency key is
    /// derived from the tenant id, so a retry within Stripe's 24 hours of key retention returns
    /// the first customer instead of creating a second one.
    pub async fn create_customer(
        &self,
        tenant_id: &str,
        name: &str,
    ) -> Result<String, StripeApiError> {
        let key = customer_idempotency_key(tenant_id)?;
        let metadata = HashMap::from([(TENANT_METADATA_KEY.to_owned(), tenant_id.to_owned())]);
        let request = CreateCustomer::new().name(name).metadata(metadata);
        let created: ObjectId = request
            .build()
            .customize()
            .request_strategy(RequestStrategy::Idempotent(key))
            .send(&self.client)
            .await
            .map_err(StripeApiError::from_stripe)?;
        Ok(created.id)
    }

    /// Lists every subscription of `customer_id`, cancelled ones included, newest first.
    pub async fn list_subscriptions(
        &self,
        customer_id: &str,
    ) -> Result<SubscriptionListing, StripeApiError> {
        let mut subscriptions = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut request = ListSubscription::new()
                .customer(customer_id)
                .status(ListSubscriptionStatus::All)
                .limit(PAGE_SIZE);
            if let Some(last) = &after {
                request = request.starting_after(last.clone());
            }
            let page: SubscriptionPage = request
                .build()
                .customize()
                .send(&self.client)
                .await
                .map_err(StripeApiError::from_stripe)?;
            after = page.data.last().map(|last| last.id.clone());
            subscriptions.extend(page.data);
            if !page.has_more || after.is_none() {
                return Ok(SubscriptionListing { subscriptions, truncated: false });
            }
        }
        Ok(SubscriptionListing { subscriptions, truncated: true })
    }

    /// Records one meter event and returns the identifier Stripe stored. The identifier is also
    /// the request's idempotency key, so a retry after a lost answer replays the first result.
    pub async fn create_meter_event(&self, event: &MeterEvent) -> Result<String, StripeApiError> {
        let key = IdempotencyKey::new(event.identifier.clone())
            .map_err(|error| StripeApiError::InvalidRequest(format!("identifier: {error}")))?;
        let payload = HashMap::from([
            ("stripe_customer_id".to_owned(), event.customer_id.clone()),
            ("value".to_owned(), event.value.to_string()),
        ]);
        let request = CreateBillingMeterEvent::new(event.event_name.clone(), payload)
            .identifier(event.identifier.clone())
            .timestamp(event.timestamp);
        let echo: MeterEventEcho = request
            .build()
            .customize()
            .request_strategy(RequestStrategy::Idempotent(key))
            .send(&self.client)
            .await
            .map_err(StripeApiError::from_stripe)?;
        Ok(echo.identifier)
    }
}

/// Returns the idempotency key of the customer creation for `tenant_id`.
pub fn customer_idempotency_key(tenant_id: &str) -> Result<IdempotencyKey, StripeApiError> {
    IdempotencyKey::new(format!("followup-customer-{tenant_id}"))
        .map_err(|error| StripeApiError::InvalidRequest(format!("idempotency key: {error}")))
}

#[cfg(test)]
mod tests;
