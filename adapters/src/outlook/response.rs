//! Classifying Graph's response to `sendMail`.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::http::{RawResponse, error_reason};
use crate::outbound::SendOutcome;
use crate::retry_after::parse_retry_after;

const PROVIDER: &str = "outlook";

/// The error envelope of Microsoft Graph.
#[derive(Debug, Deserialize)]
pub struct GraphErrorEnvelope {
    pub error: GraphError,
}

/// The `error` member of a Graph error envelope.
#[derive(Debug, Default, Deserialize)]
pub struct GraphError {
    /// Such as `TooManyRequests`, `InvalidAuthenticationToken` or `ErrorInvalidRecipients`.
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
}

impl GraphError {
    /// Returns whether the mailbox rejected the request for having too many running at once. Graph
    /// names it either as the code or, under the code `ApplicationThrottled`, in the message.
    fn is_mailbox_concurrency(&self) -> bool {
        self.code == "MailboxConcurrency" || self.message.contains("MailboxConcurrency")
    }
}

/// Classifies Graph's response, reading `Retry-After` relative to `now`. Single sends and the
/// inner responses of a `$batch` go through it alike.
///
/// - any 2xx is accepted, with or without `Retry-After` (`sendMail` answers 202);
/// - 401 and 403 are [`SendOutcome::Unauthorized`]: an invalid token, a missing `Mail.Send`
///   permission or a mailbox barred from sending fails every send of the connection alike;
/// - 408, 424 (a `$batch` dependency failed, so the request never ran), 429, 5xx and the
///   MailboxConcurrency error are retryable, with the `Retry-After` wait when one is sent;
/// - anything else, such as 400 `ErrorInvalidRecipients` or a malformed MIME body, is
///   permanent.
///
/// Graph returns no message id, so an accepted send uses the `request-id` header, or a fresh
/// UUID when the header is missing.
pub(crate) fn classify(response: &RawResponse, now: DateTime<Utc>) -> SendOutcome {
    let status = response.status.as_u16();
    if response.status.is_success() {
        let provider_message_id = response
            .header("request-id")
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
        return SendOutcome::Accepted { provider_message_id };
    }

    let error = serde_json::from_slice::<GraphErrorEnvelope>(&response.body)
        .map(|envelope| envelope.error)
        .unwrap_or_default();
    let reason = error_reason(PROVIDER, status, &error.code, &error.message);
    let retry_after =
        response.header("retry-after").and_then(|value| parse_retry_after(value, now));

    match status {
        401 | 403 => SendOutcome::Unauthorized { reason },
        408 | 424 | 429 | 500..=599 => SendOutcome::Retryable { reason, retry_after },
        _ if error.is_mailbox_concurrency() => SendOutcome::Retryable { reason, retry_after },
        _ => SendOutcome::Permanent { reason },
    }
}
