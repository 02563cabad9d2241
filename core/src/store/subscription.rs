//! A tenant's Stripe account: the customer that pays for the tenant and the newest state of its
//! subscription and invoices that Stripe's webhooks reported, and the billing standing derived
//! from them, which decides whether the tenant's follow-ups may be sent.
//!
//! Stripe may deliver an event twice or after a newer one, so each part keeps the `created`
//! instant of the event it came from and a part is only replaced by a newer event's (see
//! [`StripeAccount::apply_subscription`] and [`StripeAccount::apply_invoice`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::TenantId;

/// The Stripe customer that pays for a tenant, and what Stripe last reported about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StripeAccount {
    pub tenant: TenantId,
    /// Stripe's customer id (`cus_...`). A customer belongs to one tenant at most.
    pub customer_id: String,
    pub subscription: Option<SubscriptionState>,
    pub payment: Option<PaymentState>,
    pub updated_at: DateTime<Utc>,
}

/// A subscription as one Stripe event showed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionState {
    /// Stripe's subscription id (`sub_...`).
    pub id: String,
    /// Stripe's status: `active`, `trialing`, `past_due`, `canceled`, `unpaid`, ...
    pub status: String,
    /// The price of the subscription's first item, which selects the tenant's plan.
    pub price_id: Option<String>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub canceled_at: Option<DateTime<Utc>>,
    /// Set by `customer.subscription.deleted`.
    pub ended_at: Option<DateTime<Utc>>,
    /// `created` of the event this state came from, Unix seconds.
    pub event_created: i64,
}

/// The outcome of the customer's newest invoice event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentState {
    /// Stripe's invoice id (`in_...`).
    pub invoice_id: String,
    pub paid: bool,
    /// When the tenant is paused unless the invoice is paid first; `None` once paid.
    pub grace_ends_at: Option<DateTime<Utc>>,
    /// `created` of the event this state came from, Unix seconds.
    pub event_created: i64,
}

/// Whether a tenant may send, as its Stripe account decides at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum BillingStanding {
    /// No Stripe customer is linked: the operator manages the tenant's plan.
    Unmanaged,
    Active,
    /// Cancelled, sending until the period ends.
    Canceling {
        ends_at: DateTime<Utc>,
    },
    /// An invoice failed: sending until the grace period ends.
    Grace {
        ends_at: DateTime<Utc>,
    },
    /// The grace period of a failed invoice ended: no sends, follow-ups stay pending.
    PausedUnpaid {
        since: DateTime<Utc>,
    },
    /// The subscription ended: no sends, follow-ups stay pending.
    Ended {
        since: DateTime<Utc>,
    },
}

impl BillingStanding {
    /// Returns whether follow-ups may be sent.
    pub fn allows_sends(self) -> bool {
        !matches!(self, BillingStanding::PausedUnpaid { .. } | BillingStanding::Ended { .. })
    }

    /// Short name for logs, APIs and metric labels.
    pub fn label(self) -> &'static str {
        match self {
            BillingStanding::Unmanaged => "unmanaged",
            BillingStanding::Active => "active",
            BillingStanding::Canceling { .. } => "canceling",
            BillingStanding::Grace { .. } => "grace",
            BillingStanding::PausedUnpaid { .. } => "paused_unpaid",
            BillingStanding::Ended { .. } => "ended",
        }
    }
}

impl SubscriptionState {
    /// Returns when sends stop because the subscription was cancelled, if it was: the end of
    /// the paid period, or the cancellation itself when the period end is unknown.
    pub fn stops_at(&self) -> Option<DateTime<Utc>> {
        let cancelled = self.cancel_at_period_end
            || self.ended_at.is_some()
            || matches!(self.status.as_str(), "canceled" | "incomplete_expired");
        if !cancelled {
            return None;
        }
        self.current_period_end.or(self.ended_at).or(self.canceled_at)
    }

    /// Orders two states of one subscription: by event `created`, and for events of the same
    /// second by how far the subscription has moved on (a later period, then a cancellation,
    /// then an end), never by arrival.
    fn progress(&self) -> (i64, Option<DateTime<Utc>>, bool, bool) {
        let cancelled = self.cancel_at_period_end || self.canceled_at.is_some();
        (self.event_created, self.current_period_end, cancelled, self.ended_at.is_some())
    }
}

impl StripeAccount {
    /// Keeps `state` when it is newer than the stored state of the same subscription, or is
    /// about another subscription and newer. Returns whether it was kept.
    pub fn apply_subscription(&mut self, state: SubscriptionState) -> bool {
        let newer = match &self.subscription {
            None => true,
            Some(stored) => state.progress() > stored.progress(),
        };
        if newer {
            self.subscription = Some(state);
        }
        newer
    }

    /// Keeps `state` when its event is newer than the stored one. Of two events of the same
    /// second about one invoice, the payment wins, because an invoice that was paid stays paid.
    /// Returns whether it was kept.
    pub fn apply_invoice(&mut self, state: PaymentState) -> bool {
        let newer = match &self.payment {
            None => true,
            Some(stored) => (state.event_created, state.paid) > (stored.event_created, stored.paid),
        };
        if newer {
            self.payment = Some(state);
        }
        newer
    }

    /// Returns the standing at `now`. An ended subscription outranks a failed payment, and a
    /// failed payment outranks a pending cancellation.
    pub fn standing(&self, now: DateTime<Utc>) -> BillingStanding {
        let stops_at = self.subscription.as_ref().and_then(SubscriptionState::stops_at);
        if let Some(stops_at) = stops_at.filter(|stops_at| *stops_at <= now) {
            return BillingStanding::Ended { since: stops_at };
        }
        let grace_ends_at = self.payment.as_ref().and_then(|payment| payment.grace_ends_at);
        match grace_ends_at {
            Some(ends_at) if ends_at <= now => {
                return BillingStanding::PausedUnpaid { since: ends_at };
            }
            Some(ends_at) => return BillingStanding::Grace { ends_at },
            None => {}
        }
        match stops_at {
            Some(ends_at) => BillingStanding::Canceling { ends_at },
            None => BillingStanding::Active,
        }
    }
}

/// Returns the standing of a tenant with the given account, or none.
pub fn standing_of(account: Option<&StripeAccount>, now: DateTime<Utc>) -> BillingStanding {
    account.map_or(BillingStanding::Unmanaged, |account| account.standing(now))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(seconds, 0).single().expect("valid instant")
    }

    fn account() -> StripeAccount {
        StripeAccount {
            tenant: TenantId::generate(),
            customer_id: "cus_1".into(),
            subscription: None,
            payment: None,
            updated_at: at(0),
        }
    }

    fn subscription(created: i64, status: &str, period_end: i64) -> SubscriptionState {
        SubscriptionState {
            id: "sub_1".into(),
            status: status.into(),
            price_id: Some("price_pro".into()),
            current_period_end: Some(at(period_end)),
            cancel_at_period_end: false,
            canceled_at: None,
            ended_at: None,
            event_created: created,
        }
    }

    #[test]
    fn older_subscription_event_is_ignored() {
        let mut account = account();
        assert!(account.apply_subscription(subscription(200, "past_due", 5000)));
        assert!(!account.apply_subscription(subscription(100, "active", 5000)));
        assert_eq!(account.subscription.expect("kept").status, "past_due");
    }

    #[test]
    fn same_second_prefers_cancellation() {
        let mut account = account();
        let mut cancelling = subscription(100, "active", 5000);
        cancelling.cancel_at_period_end = true;
        cancelling.canceled_at = Some(at(100));
        assert!(account.apply_subscription(cancelling));
        assert!(!account.apply_subscription(subscription(100, "active", 5000)));
        let stored = account.subscription.expect("kept");
        assert!(stored.cancel_at_period_end, "{stored:?}");
    }

    #[test]
    fn cancellation_stops_at_period_end() {
        let mut account = account();
        let mut cancelling = subscription(100, "active", 5000);
        cancelling.cancel_at_period_end = true;
        account.apply_subscription(cancelling);
        assert_eq!(account.standing(at(4999)), BillingStanding::Canceling { ends_at: at(5000) });
        assert_eq!(account.standing(at(5000)), BillingStanding::Ended { since: at(5000) });
        assert!(!account.standing(at(5000)).allows_sends());
    }

    #[test]
    fn failed_invoice_pauses_after_grace() {
        let mut account = account();
        let failed = PaymentState {
            invoice_id: "in_1".into(),
            paid: false,
            grace_ends_at: Some(at(1000)),
            event_created: 100,
        };
        assert!(account.apply_invoice(failed.clone()));
        assert_eq!(account.standing(at(999)), BillingStanding::Grace { ends_at: at(1000) });
        assert_eq!(account.standing(at(1000)), BillingStanding::PausedUnpaid { since: at(1000) });
        let paid = PaymentState { paid: true, grace_ends_at: None, event_created: 150, ..failed };
        assert!(account.apply_invoice(paid.clone()));
        assert_eq!(account.standing(at(2000)), BillingStanding::Active);
        // The failure delivered again after the payment changes nothing.
        let late = PaymentState { paid: false, grace_ends_at: Some(at(1000)), ..paid };
        let late = PaymentState { event_created: 100, ..late };
        assert!(!account.apply_invoice(late));
        assert_eq!(account.standing(at(2000)), BillingStanding::Active);
    }
}
