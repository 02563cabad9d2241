//! Calls to Stripe's API on a tenant's behalf: creating the customer that pays for it, and
//! reading its subscriptions to reconcile the account with Stripe, which catches up on
//! subscription webhooks that were lost or arrived while the engine was down.
//!
//! A listing is as current as the moment it was read, so its state enters the account as an
//! event created at that moment (see `StripeAccount::apply_subscription`): webhook events
//! created before the read are older and change nothing, later ones win.
//!
//! NOTE: that comparison mixes Stripe's clock (event `created`) with the engine's. A webhook
//! event created within the engines' clock difference of a sync may be ordered wrongly against
//! it until the next event or sync.

use std::time::Duration;

use anyhow::Context as _;
use chrono::{TimeZone as _, Utc};
use followup_adapters::stripe_api::{StripeClient, SubscriptionSummary};
use followup_core::domain::Tenant;
use followup_core::ids::TenantId;
use followup_core::store::StoreError;
use followup_core::store::subscription::{StripeAccount, SubscriptionState};
use serde::Serialize;

use crate::engine::Engine;
use crate::webhooks::stripe_billing;

/// Subscription statuses of a subscription that has ended and will not bill again.
const ENDED_STATUSES: [&str; 2] = ["canceled", "incomplete_expired"];

/// Errors of the calls to Stripe, kept apart so the HTTP API can answer each with its status.
#[derive(Debug, thiserror::Error)]
pub enum StripeSyncError {
    #[error(
        "the Stripe API is not configured: set FOLLOWUP_STRIPE_SECRET_KEY or \
         billing.stripe.secret_key_file"
    )]
    NotConfigured,
    #[error("tenant {0} is linked to no Stripe customer")]
    NotLinked(TenantId),
    #[error("{0}")]
    Stripe(#[from] followup_adapters::stripe_api::StripeApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// What one reconciliation read and did.
#[derive(Clone, Debug, Serialize)]
pub struct SyncReport {
    pub customer_id: String,
    /// Subscriptions Stripe listed for the customer, ended ones included.
    pub subscriptions_listed: usize,
    /// The subscription whose state the account now carries, if any was listed.
    pub subscription_id: Option<String>,
    /// Whether the listed state was newer than the stored one and replaced it.
    pub changed: bool,
    /// Stripe listed more subscriptions than one reconciliation reads.
    pub truncated: bool,
}

fn client(engine: &Engine) -> Result<&StripeClient, StripeSyncError> {
    engine.stripe().ok_or(StripeSyncError::NotConfigured)
}

/// Creates a Stripe customer for `tenant` and links it, unless the tenant is linked already.
/// Returns the tenant's account. A retry after a failure or a lost answer reuses Stripe's
/// stored result, because the idempotency key is derived from the tenant id.
pub async fn ensure_customer(
    engine: &Engine,
    tenant: &Tenant,
) -> Result<StripeAccount, StripeSyncError> {
    let store = engine.store();
    if let Some(account) = store.stripe_account(tenant.id).await? {
        return Ok(account);
    }
    let stripe = client(engine)?;
    let customer_id = stripe.create_customer(&tenant.id.to_string(), &tenant.name).await?;
    let account = StripeAccount {
        tenant: tenant.id,
        customer_id: customer_id.clone(),
        subscription: None,
        payment: None,
        updated_at: engine.clock().now(),
    };
    store.put_stripe_account(account.clone()).await?;
    tracing::info!(tenant = %tenant.id, customer = %customer_id, "Stripe customer created");
    Ok(account)
}

/// Picks the subscription that decides the tenant's standing: the newest one that has not
/// ended, or else the newest one.
fn deciding(subscriptions: &[SubscriptionSummary]) -> Option<&SubscriptionSummary> {
    let newest_first = |a: &&SubscriptionSummary, b: &&SubscriptionSummary| {
        (b.created, &b.id).cmp(&(a.created, &a.id))
    };
    let mut live: Vec<&SubscriptionSummary> = subscriptions
        .iter()
        .filter(|s| !ENDED_STATUSES.contains(&s.status.as_str()) && s.ended_at.is_none())
        .collect();
    live.sort_by(newest_first);
    if let Some(first) = live.first() {
        return Some(first);
    }
    let mut all: Vec<&SubscriptionSummary> = subscriptions.iter().collect();
    all.sort_by(newest_first);
    all.first().copied()
}

fn state_of(summary: &SubscriptionSummary, read_at: i64) -> SubscriptionState {
    let instant = |seconds: i64| Utc.timestamp_opt(seconds, 0).single();
    SubscriptionState {
        id: summary.id.clone(),
        status: summary.status.clone(),
        price_id: summary.price_id().map(str::to_owned),
        current_period_end: summary.period_end().and_then(instant),
        cancel_at_period_end: summary.cancel_at_period_end.unwrap_or(false),
        canceled_at: summary.canceled_at.and_then(instant),
        ended_at: summary.ended_at.and_then(instant),
        event_created: read_at,
    }
}

/// Reads the tenant's subscriptions from Stripe and applies the deciding one to its account,
/// with the plan change and wake-up a webhook event would cause.
pub async fn sync_subscriptions(
    engine: &Engine,
    tenant: TenantId,
) -> Result<SyncReport, StripeSyncError> {
    let stripe = client(engine)?;
    let store = engine.store();
    let account = store.stripe_account(tenant).await?.ok_or(StripeSyncError::NotLinked(tenant))?;
    let read_at = engine.clock().now();
    let listing = stripe.list_subscriptions(&account.customer_id).await?;
    let mut report = SyncReport {
        customer_id: account.customer_id.clone(),
        subscriptions_listed: listing.subscriptions.len(),
        subscription_id: None,
        changed: false,
        truncated: listing.truncated,
    };
    let Some(summary) = deciding(&listing.subscriptions) else {
        tracing::info!(%tenant, customer = %account.customer_id, "Stripe lists no subscription");
        return Ok(report);
    };
    report.subscription_id = Some(summary.id.clone());

    // Read again after the request, so that an event applied meanwhile is not overwritten.
    let mut account = store
        .stripe_account(tenant)
        .await?
        .filter(|current| current.customer_id == account.customer_id)
        .context("the tenant's Stripe customer changed during the sync")?;
    let before = account.standing(read_at);
    report.changed = account.apply_subscription(state_of(summary, read_at.timestamp()));
    if !report.changed {
        return Ok(report);
    }
    let now = engine.clock().now();
    account.updated_at = now;
    store.put_stripe_account(account.clone()).await?;
    stripe_billing::log_transition(&account, before, account.standing(now), "subscription sync");
    stripe_billing::follow_price(engine, &account).await?;
    engine.notify_tenant(account.tenant);
    tracing::info!(%tenant, subscription = %summary.id, status = %summary.status,
        "tenant subscription reconciled with Stripe");
    Ok(report)
}

/// Reconciles every linked tenant with Stripe in the background, at most
/// `sync_requests_per_second` listings a second. Failures are logged per tenant; the webhooks
/// and a later sync correct what they leave.
pub fn spawn_startup_sync(engine: std::sync::Arc<Engine>) {
    let settings = &engine.config().billing.stripe;
    if engine.stripe().is_none() || !settings.sync_at_startup {
        return;
    }
    let pause = Duration::from_secs(1) / settings.sync_requests_per_second.max(1);
    actix_rt::spawn(async move {
        let tenants = match engine.live_tenants().await {
            Ok(tenants) => tenants,
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"),
                    "listing tenants for the start-up Stripe sync failed");
                return;
            }
        };
        let (mut synced, mut failed) = (0_usize, 0_usize);
        for tenant in tenants {
            match sync_subscriptions(&engine, tenant.id).await {
                Ok(_) => synced += 1,
                Err(StripeSyncError::NotLinked(_)) => continue,
                Err(error) => {
                    failed += 1;
                    tracing::warn!(tenant = %tenant.id, %error,
                        "start-up Stripe subscription sync failed for a tenant");
                }
            }
            tokio::time::sleep(pause).await;
        }
        tracing::info!(synced, failed, "start-up Stripe subscription sync finished");
    });
}
