//! Applies Stripe's subscription and invoice events to the tenant whose Stripe customer they
//! name: `customer.subscription.created`, `.updated` and `.deleted`, `invoice.paid` and
//! `invoice.payment_failed`. Other event types are recorded and otherwise ignored.
//!
//! Stripe delivers at least once and in no set order, so the result depends only on the events,
//! never on their arrival. Each part of the account keeps the newest state by the event's
//! `created` (see `followup_core::store::subscription`). A grace period runs from the `created`
//! of the first failed payment's event.
//!
//! An event is applied after it is recorded in the webhook log, and marked applied afterwards.
//! At start-up, and after a customer is linked, the events still unapplied are applied: those a
//! crash interrupted, and those of a customer that was not linked to a tenant yet.

use anyhow::Context as _;
use chrono::{DateTime, TimeZone as _, Utc};
use followup_core::store::subscription::{
    BillingStanding, PaymentState, StripeAccount, SubscriptionState,
};
use serde_json::{Value, json};

use super::event_log::WebhookLog;
use super::stripe::StripeEvent;
use crate::engine::Engine;
use crate::telemetry;

/// Prefix of the Stripe events' keys in the webhook log.
pub const LOG_PREFIX: &str = "stripe/";

/// The result of applying one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The event changed the tenant's account.
    Applied,
    /// The account already contains a state as new or newer, so nothing changed.
    Outdated,
    /// No tenant is linked to the event's customer: the event stays unapplied until one is.
    UnknownCustomer,
    /// An event type billing does not act on.
    Ignored,
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Outdated => "outdated",
            Outcome::UnknownCustomer => "unknown_customer",
            Outcome::Ignored => "ignored",
        }
    }
}

/// Returns the part of an event the webhook log keeps and billing applies: the envelope and the
/// object's ids, statuses, prices and instants. Names, emails and addresses are left out,
/// because the log is not encrypted the way the store is.
pub fn trimmed_event(event: &StripeEvent) -> Value {
    let object = &event.data.object;
    let items: Vec<Value> = object["items"]["data"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| {
                    json!({
                        "price": {"id": item["price"]["id"]},
                        "current_period_end": item["current_period_end"],
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let mut trimmed = json!({
        "id": object.get("id"),
        "object": object.get("object"),
        "customer": customer_id(object),
        "status": object.get("status"),
        "current_period_end": object.get("current_period_end"),
        "cancel_at_period_end": object.get("cancel_at_period_end"),
        "canceled_at": object.get("canceled_at"),
        "ended_at": object.get("ended_at"),
        "paid": object.get("paid"),
    });
    if !items.is_empty() {
        trimmed["items"] = json!({"data": items});
    }
    json!({"id": event.id, "type": event.kind, "created": event.created,
           "data": {"object": trimmed}})
}

/// Returns the object's customer id, which Stripe sends as a string or, when expanded, as an
/// object with an `id`.
fn customer_id(object: &Value) -> Option<String> {
    match &object["customer"] {
        Value::String(id) => Some(id.clone()),
        Value::Object(customer) => customer.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

fn instant(value: &Value) -> Option<DateTime<Utc>> {
    value.as_i64().and_then(|seconds| Utc.timestamp_opt(seconds, 0).single())
}

/// Reads a subscription object. The period end is the object's `current_period_end` or,
/// where Stripe's API version puts it on the items instead, the latest item's.
fn subscription_state(event: &StripeEvent) -> anyhow::Result<SubscriptionState> {
    let object = &event.data.object;
    let missing =
        |field: &str| format!("invalid Stripe event {}: subscription has no {field}", event.id);
    let id = object["id"].as_str().with_context(|| missing("id"))?;
    let status = object["status"].as_str().with_context(|| missing("status"))?;
    let items = object["items"]["data"].as_array();
    let price_id = items
        .and_then(|items| items.first())
        .and_then(|item| item["price"]["id"].as_str())
        .map(str::to_owned);
    let item_period_end =
        items.into_iter().flatten().filter_map(|item| instant(&item["current_period_end"])).max();
    let deleted = event.kind == "customer.subscription.deleted";
    Ok(SubscriptionState {
        id: id.to_owned(),
        // A deletion ends the subscription whatever status the object carries.
        status: if deleted { "canceled".to_owned() } else { status.to_owned() },
        price_id,
        current_period_end: instant(&object["current_period_end"]).or(item_period_end),
        cancel_at_period_end: object["cancel_at_period_end"].as_bool().unwrap_or(false),
        canceled_at: instant(&object["canceled_at"]),
        ended_at: instant(&object["ended_at"])
            .or_else(|| deleted.then(|| instant(&json!(event.created))).flatten()),
        event_created: event.created,
    })
}

/// Reads an invoice event. A failure keeps the grace end of an earlier failure still unpaid,
/// so repeated payment attempts do not extend it.
fn payment_state(
    event: &StripeEvent,
    stored: Option<&PaymentState>,
    grace_days: u32,
) -> anyhow::Result<PaymentState> {
    let object = &event.data.object;
    let invoice_id = object["id"]
        .as_str()
        .with_context(|| format!("invalid Stripe event {}: invoice has no id", event.id))?
        .to_owned();
    let paid = event.kind == "invoice.paid";
    let grace_ends_at = if paid {
        None
    } else {
        let running = stored.filter(|stored| !stored.paid).and_then(|stored| stored.grace_ends_at);
        let failed_at = instant(&json!(event.created)).context("event created out of range")?;
        Some(running.unwrap_or(failed_at + chrono::Duration::days(i64::from(grace_days))))
    };
    Ok(PaymentState { invoice_id, paid, grace_ends_at, event_created: event.created })
}

/// Applies one recorded event to its tenant's account and acts on the change: a new plan from
/// the subscription's price, and a wake of the tenant so that a pause or resume takes effect.
pub async fn apply(engine: &Engine, event: &StripeEvent) -> anyhow::Result<Outcome> {
    let is_subscription = event.kind.starts_with("customer.subscription.");
    let is_invoice = matches!(event.kind.as_str(), "invoice.paid" | "invoice.payment_failed");
    let handled = is_invoice
        || matches!(
            event.kind.as_str(),
            "customer.subscription.created"
                | "customer.subscription.updated"
                | "customer.subscription.deleted"
        );
    if !handled {
        return Ok(Outcome::Ignored);
    }

    let customer = customer_id(&event.data.object)
        .with_context(|| format!("Stripe event {} names no customer", event.id))?;
    let store = engine.store();
    let Some(mut account) = store.stripe_account_by_customer(customer.clone()).await? else {
        tracing::warn!(event = %event.id, kind = %event.kind, %customer,
            "Stripe event for a customer linked to no tenant; kept until one is linked");
        return Ok(Outcome::UnknownCustomer);
    };

    let now = engine.clock().now();
    let before = account.standing(now);
    let changed = if is_subscription {
        account.apply_subscription(subscription_state(event)?)
    } else {
        let grace_days = engine.config().billing.grace_days;
        account.apply_invoice(payment_state(event, account.payment.as_ref(), grace_days)?)
    };
    if !changed {
        tracing::info!(tenant = %account.tenant, event = %event.id, kind = %event.kind,
            "Stripe event older than the state applied; ignored");
        return Ok(Outcome::Outdated);
    }

    // NOTE: the write is not conditional on the state read above. Events are applied one at a
    // time per node, but two nodes applying events of one tenant at once can lose one of them
    // for good, because each node marks its event applied; only a newer event corrects it.
    account.updated_at = now;
    store.put_stripe_account(account.clone()).await?;
    log_transition(&account, before, account.standing(now), &event.kind);
    if is_subscription {
        follow_price(engine, &account).await?;
    }
    engine.notify_tenant(account.tenant);
    Ok(Outcome::Applied)
}

/// Moves the tenant to the plan sold at the subscription's price, when it is another plan.
/// The plan change returns held follow-ups to pending, so an upgrade releases them.
pub(crate) async fn follow_price(engine: &Engine, account: &StripeAccount) -> anyhow::Result<()> {
    let Some(subscription) = &account.subscription else { return Ok(()) };
    // A deleted subscription leaves the plan as it was; its end stops the sends instead.
    if subscription.ended_at.is_some() {
        return Ok(());
    }
    let Some(price) = &subscription.price_id else { return Ok(()) };
    let plans = &engine.config().plans;
    let plan = plans.iter().find(|(_, plan)| plan.stripe_price_id.as_deref() == Some(price));
    let Some((plan, _)) = plan else {
        tracing::warn!(tenant = %account.tenant, %price,
            "Stripe subscription price matches no plan's stripe_price_id; plan unchanged");
        return Ok(());
    };
    let Some(tenant) = engine.store().tenant(account.tenant).await? else { return Ok(()) };
    if tenant.plan == *plan {
        return Ok(());
    }
    engine.change_plan(tenant, plan.clone()).await?;
    Ok(())
}

/// Logs and counts a change of a tenant's standing.
pub fn log_transition(
    account: &StripeAccount,
    before: BillingStanding,
    after: BillingStanding,
    cause: &str,
) {
    if before.label() == after.label() {
        return;
    }
    tracing::info!(tenant = %account.tenant, from = before.label(), to = after.label(), cause,
        sends_allowed = after.allows_sends(), "tenant billing standing changed");
    metrics::counter!(telemetry::BILLING_TRANSITIONS, "to" => after.label()).increment(1);
}

/// Applies one event and marks it applied unless its customer is not linked yet. An error
/// leaves it unapplied, to be tried at the next start or link.
pub async fn apply_and_mark(
    engine: &Engine,
    log: &WebhookLog,
    event: &StripeEvent,
) -> anyhow::Result<Outcome> {
    let outcome = apply(engine, event).await?;
    if outcome != Outcome::UnknownCustomer {
        log.mark_applied(format!("{LOG_PREFIX}{}", event.id)).await?;
    }
    Ok(outcome)
}

/// Applies every recorded Stripe event not applied yet, oldest event first. Returns how many
/// were applied or found outdated; an event that fails is logged and left for the next run.
///
/// NOTE: events of customers never linked to a tenant stay in the unapplied set and are read
/// again by every run.
pub async fn apply_unapplied(engine: &Engine, log: &WebhookLog) -> anyhow::Result<usize> {
    let mut events: Vec<StripeEvent> = Vec::new();
    for (key, record) in log.unapplied(LOG_PREFIX).await? {
        match serde_json::from_slice(&record) {
            Ok(event) => events.push(event),
            Err(error) => {
                tracing::error!(%key, %error, "unreadable Stripe event in the webhook log")
            }
        }
    }
    events.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
    let mut settled = 0;
    for event in &events {
        match apply_and_mark(engine, log, event).await {
            Ok(Outcome::UnknownCustomer) => {}
            Ok(_) => settled += 1,
            Err(error) => tracing::error!(event = %event.id, error = %format!("{error:#}"),
                "applying a recorded Stripe event failed; it stays unapplied"),
        }
    }
    if settled > 0 {
        tracing::info!(settled, "recorded Stripe events applied");
    }
    Ok(settled)
}
