//! Stripe billing: linking a tenant to its Stripe customer under
//! `/admin/v1/tenants/{id}/stripe-customer`, reconciling it with Stripe under
//! `/admin/v1/tenants/{id}/billing/sync`, and the tenant's billing standing under
//! `/v1/billing` and `/admin/v1/tenants/{id}/billing`.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use followup_core::store::StoreError;
use followup_core::store::subscription::{StripeAccount, standing_of};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::auth::{AuthenticatedTenant, Operator};
use super::error::{ApiError, tenant_in_path};
use super::json::ApiJson;
use crate::stripe_sync::{self, StripeSyncError, SyncReport};
use crate::webhooks::stripe_billing;

/// Body of the link request. Without `customer_id`, the engine creates a customer in Stripe.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerLink {
    #[serde(default)]
    customer_id: Option<String>,
}

impl From<StripeSyncError> for ApiError {
    fn from(error: StripeSyncError) -> Self {
        match error {
            StripeSyncError::NotConfigured => ApiError::Unprocessable(error.to_string()),
            StripeSyncError::NotLinked(_) => ApiError::Unprocessable(format!(
                "{error}: link one with PUT /admin/v1/tenants/{{id}}/stripe-customer"
            )),
            StripeSyncError::Stripe(stripe) => {
                tracing::warn!(error = %stripe, "Stripe API request failed");
                ApiError::BadGateway(format!("{stripe}; retry later"))
            }
            StripeSyncError::Store(store) => store.into(),
            StripeSyncError::Other(other) => other.into(),
        }
    }
}

/// Checks that `id` looks like a Stripe customer id: `cus_` and ASCII letters and digits.
fn check_customer_id(id: &str) -> Result<(), ApiError> {
    let rest = id.strip_prefix("cus_").unwrap_or_default();
    let valid =
        !rest.is_empty() && rest.len() <= 255 && rest.bytes().all(|b| b.is_ascii_alphanumeric());
    if valid {
        return Ok(());
    }
    Err(ApiError::BadRequest(format!(
        "invalid customer_id {id:?}: expected a Stripe customer id such as cus_NffrFeUfNV2Hib"
    )))
}

/// `PUT /admin/v1/tenants/{id}/stripe-customer`: links a tenant to the Stripe customer that
/// pays for it, so that the customer's subscription and invoice events apply to the tenant.
/// Linking the same customer again keeps what Stripe reported; another customer starts afresh.
/// Without a `customer_id`, a tenant not linked yet gets a new customer created in Stripe.
/// With the Stripe API configured, the tenant's subscriptions are then read from Stripe.
pub async fn link_customer(
    state: web::Data<AppState>,
    _operator: Operator,
    path: web::Path<String>,
    body: ApiJson<CustomerLink>,
) -> Result<HttpResponse, ApiError> {
    let id = tenant_in_path(&path)?;
    let store = state.engine.store();
    let Some(tenant) = store.tenant(id).await? else {
        return Err(ApiError::NotFound(format!("tenant {id}")));
    };
    let customer_id = match body.0.customer_id {
        Some(customer_id) => customer_id,
        None => stripe_sync::ensure_customer(&state.engine, &tenant).await?.customer_id,
    };
    check_customer_id(&customer_id)?;
    let now = state.engine.clock().now();
    let account = match store.stripe_account(id).await? {
        Some(account) if account.customer_id == customer_id => account,
        _ => StripeAccount {
            tenant: id,
            customer_id: customer_id.clone(),
            subscription: None,
            payment: None,
            updated_at: now,
        },
    };
    store.put_stripe_account(account.clone()).await.map_err(|error| match error {
        // The other tenant's id is for the operator, who is the one asking.
        StoreError::Conflict(message) => ApiError::Unprocessable(message),
        other => other.into(),
    })?;
    tracing::info!(tenant = %id, customer = %customer_id, "tenant linked to a Stripe customer");

    // Events that arrived before the link are waiting in the webhook log.
    {
        let _applying = state.webhooks.stripe_billing.lock().await;
        stripe_billing::apply_unapplied(&state.engine, &state.webhooks.log).await?;
    }
    if state.engine.stripe().is_some()
        && let Err(error) = stripe_sync::sync_subscriptions(&state.engine, id).await
    {
        // The link stands; POST /admin/v1/tenants/{id}/billing/sync retries the read.
        tracing::warn!(tenant = %id, %error, "reading the linked customer's subscriptions failed");
    }
    let account = store.stripe_account(id).await?;
    Ok(HttpResponse::Ok().json(BillingView::of(account.as_ref(), now)))
}

/// Answer of the sync: what Stripe listed, and the standing after it.
#[derive(Debug, Serialize)]
pub struct SyncView {
    sync: SyncReport,
    billing: BillingView,
}

/// `POST /admin/v1/tenants/{id}/billing/sync`: reads the tenant's subscriptions from Stripe
/// and applies the one that decides its standing, as a webhook event would.
pub async fn sync_billing(
    state: web::Data<AppState>,
    _operator: Operator,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = tenant_in_path(&path)?;
    if state.engine.store().tenant(id).await?.is_none() {
        return Err(ApiError::NotFound(format!("tenant {id}")));
    }
    let sync = stripe_sync::sync_subscriptions(&state.engine, id).await?;
    let account = state.engine.store().stripe_account(id).await?;
    let now = state.engine.clock().now();
    let billing = BillingView::of(account.as_ref(), now);
    Ok(HttpResponse::Ok().json(SyncView { sync, billing }))
}

/// A tenant's Stripe customer, subscription and standing, as the APIs show them.
#[derive(Debug, Serialize)]
pub struct BillingView {
    /// `unmanaged` (no Stripe customer), `active`, `canceling`, `grace`, `paused_unpaid` or
    /// `ended`.
    status: &'static str,
    sends_allowed: bool,
    customer_id: Option<String>,
    subscription_id: Option<String>,
    subscription_status: Option<String>,
    price_id: Option<String>,
    current_period_end: Option<DateTime<Utc>>,
    cancel_at_period_end: bool,
    /// When sends stop or stopped because of a cancellation.
    sends_stop_at: Option<DateTime<Utc>>,
    /// When a failed invoice pauses the tenant unless it is paid first.
    grace_ends_at: Option<DateTime<Utc>>,
}

impl BillingView {
    pub fn of(account: Option<&StripeAccount>, now: DateTime<Utc>) -> BillingView {
        let standing = standing_of(account, now);
        let subscription = account.and_then(|account| account.subscription.as_ref());
        let grace_ends_at =
            account.and_then(|account| account.payment.as_ref()).and_then(|p| p.grace_ends_at);
        BillingView {
            status: standing.label(),
            sends_allowed: standing.allows_sends(),
            customer_id: account.map(|account| account.customer_id.clone()),
            subscription_id: subscription.map(|s| s.id.clone()),
            subscription_status: subscription.map(|s| s.status.clone()),
            price_id: subscription.and_then(|s| s.price_id.clone()),
            current_period_end: subscription.and_then(|s| s.current_period_end),
            cancel_at_period_end: subscription.is_some_and(|s| s.cancel_at_period_end),
            sends_stop_at: subscription.and_then(|s| s.stops_at()),
            grace_ends_at,
        }
    }
}

/// `GET /v1/billing`: the tenant's own billing standing.
pub async fn own_billing(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant): AuthenticatedTenant,
) -> Result<HttpResponse, ApiError> {
    let account = state.engine.store().stripe_account(tenant.id).await?;
    let now = state.engine.clock().now();
    Ok(HttpResponse::Ok().json(BillingView::of(account.as_ref(), now)))
}

/// `GET /admin/v1/tenants/{id}/billing`: a tenant's billing standing.
pub async fn tenant_billing(
    state: web::Data<AppState>,
    _operator: Operator,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = tenant_in_path(&path)?;
    let store = state.engine.store();
    if store.tenant(id).await?.is_none() {
        return Err(ApiError::NotFound(format!("tenant {id}")));
    }
    let account = store.stripe_account(id).await?;
    let now = state.engine.clock().now();
    Ok(HttpResponse::Ok().json(BillingView::of(account.as_ref(), now)))
}
