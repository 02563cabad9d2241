//! Inputs and outputs shared by every provider client, so that the provider actors treat
//! Gmail, Outlook and Twilio alike.

use std::time::Duration;

use followup_core::domain::Channel;
use followup_core::ids::FollowUpId;

/// One rendered follow-up, ready for a provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundMessage {
    pub follow_up: FollowUpId,
    pub channel: Channel,
    /// Sender: a mailbox address, or an E.164 number.
    pub from: String,
    /// Recipient: an email address, or an E.164 number.
    pub to: String,
    /// Display name of the recipient, for email headers.
    pub to_name: Option<String>,
    /// Email subject; empty for SMS and calls.
    pub subject: Option<String>,
    /// Email body (plain text), SMS text, or the words a call speaks.
    pub body: String,
    /// HTML alternative of an email body, sent beside the plain text.
    pub html_body: Option<String>,
    /// The recipient's own unsubscribe URL (HTTPS), for the List-Unsubscribe headers of an
    /// email (RFC 8058 one-click).
    pub unsubscribe_url: Option<String>,
    /// URL to which the provider reports the delivery status of an SMS or call (Twilio's
    /// `StatusCallback`). None for email, or when the engine has no public URL.
    pub status_callback: Option<String>,
}

/// Result of one send, as the provider responded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// The provider accepted the message or call.
    Accepted {
        /// The provider's id for it. Graph returns none, so Outlook sends use the request id.
        provider_message_id: String,
    },
    /// A transient failure: rate limited, server error, timeout. Safe to try again.
    Retryable {
        reason: String,
        /// Wait the provider requested, from a Retry-After header or the error text.
        retry_after: Option<Duration>,
    },
    /// The provider rejected the message for good (invalid recipient, unsubscribed, ...).
    Permanent { reason: String },
    /// The credentials were refused: refresh the token or pause the connection.
    Unauthorized { reason: String },
    /// The request may or may not have reached the provider (a timeout or reset after it was
    /// sent). Sending it again could deliver it twice.
    InDoubt { reason: String },
    /// The engine held the request back before it left, so nothing reached the provider; for
    /// example the sender's lease on the tenant ran out while the request waited for a slot.
    NotSent { reason: String },
}

impl SendOutcome {
    /// The outcome's class, without its details, as logs and tests name it.
    pub fn kind(&self) -> &'static str {
        match self {
            SendOutcome::Accepted { .. } => "accepted",
            SendOutcome::Retryable { .. } => "retryable",
            SendOutcome::Permanent { .. } => "permanent",
            SendOutcome::Unauthorized { .. } => "unauthorized",
            SendOutcome::InDoubt { .. } => "in doubt",
            SendOutcome::NotSent { .. } => "not sent",
        }
    }

    /// Why the send did not simply succeed; empty for an accepted one.
    pub fn reason(&self) -> &str {
        match self {
            SendOutcome::Accepted { .. } => "",
            SendOutcome::Retryable { reason, .. }
            | SendOutcome::Permanent { reason }
            | SendOutcome::Unauthorized { reason }
            | SendOutcome::InDoubt { reason }
            | SendOutcome::NotSent { reason } => reason,
        }
    }
}

/// Credentials a client attaches to one request. `Debug` prints no secret.
#[derive(Clone, Copy)]
pub enum SendCredentials<'a> {
    /// An OAuth access token, sent as `Authorization: Bearer`.
    Bearer(&'a str),
    /// Twilio Account SID and auth token, sent as HTTP Basic.
    Basic { account_sid: &'a str, auth_token: &'a str },
}

impl std::fmt::Debug for SendCredentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendCredentials::Bearer(_) => f.write_str("Bearer([redacted])"),
            SendCredentials::Basic { account_sid, .. } => {
                write!(f, "Basic {{ account_sid: {account_sid}, auth_token: [redacted] }}")
            }
        }
    }
}
