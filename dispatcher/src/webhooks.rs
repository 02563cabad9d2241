//! Verification of the webhooks Stripe and Twilio send, and what the engine keeps of them.
//!
//! A webhook is acted on only after its signature checks out, compared in constant time
//! (`ring::hmac::verify`). Each rejection is counted in [`WEBHOOK_REJECTIONS`] by source and
//! reason. The HTTP handlers are in `crate::http::webhooks`.

pub mod event_log;
pub mod replay;
pub mod stripe;
pub mod stripe_billing;
pub mod twilio;

use crate::telemetry::WEBHOOK_REJECTIONS;

/// The provider that sent a webhook: the `source` label of [`WEBHOOK_REJECTIONS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookSource {
    Stripe,
    Twilio,
}

impl WebhookSource {
    pub fn label(self) -> &'static str {
        match self {
            WebhookSource::Stripe => "stripe",
            WebhookSource::Twilio => "twilio",
        }
    }
}

/// Why a webhook was rejected: the `reason` label of [`WEBHOOK_REJECTIONS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The signature header is missing.
    Unsigned,
    /// The signature header cannot be read.
    Malformed,
    /// No signature matches: a wrong secret, a changed body or URL, or an unknown connection.
    Forged,
    /// The signed timestamp is too far from the engine's clock, in the past or the future.
    Stale,
    /// The identical signed request was received before.
    Replayed,
}

impl Rejection {
    pub fn label(self) -> &'static str {
        match self {
            Rejection::Unsigned => "unsigned",
            Rejection::Malformed => "malformed",
            Rejection::Forged => "forged",
            Rejection::Stale => "stale",
            Rejection::Replayed => "replayed",
        }
    }

    /// Returns the message sent back to the caller, which names no secret and no connection.
    pub fn message(self) -> &'static str {
        match self {
            Rejection::Unsigned => "missing signature header",
            Rejection::Malformed => "invalid signature header",
            Rejection::Forged => "signature does not match",
            Rejection::Stale => "signature timestamp outside the tolerance window",
            Rejection::Replayed => "request already received",
        }
    }
}

/// Counts a rejected webhook.
pub fn count_rejection(source: WebhookSource, reason: Rejection) {
    metrics::counter!(WEBHOOK_REJECTIONS, "source" => source.label(), "reason" => reason.label())
        .increment(1);
}
