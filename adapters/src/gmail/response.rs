//! Classifying Gmail's response to `users.messages.send`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::http::{RawResponse, error_reason};
use crate::outbound::SendOutcome;
use crate::retry_after::{parse_gmail_retry_after, parse_retry_after};

const PROVIDER: &str = "gmail";

/// The part of a sent `Message` the engine keeps.
#[derive(Debug, Deserialize)]
pub struct GmailMessage {
    pub id: String,
    #[serde(rename = "threadId", default)]
    pub thread_id: Option<String>,
}

/// The error envelope every Google API returns.
#[derive(Debug, Deserialize)]
pub struct GoogleErrorEnvelope {
    pub error: GoogleError,
}

/// The `error` member of a Google error envelope.
#[derive(Debug, Default, Deserialize)]
pub struct GoogleError {
    #[serde(default)]
    pub code: u16,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub errors: Vec<GoogleErrorDetail>,
    /// The canonical status name, such as `INVALID_ARGUMENT` or `RESOURCE_EXHAUSTED`.
    #[serde(default)]
    pub status: Option<String>,
}

/// One entry of `error.errors`.
#[derive(Debug, Default, Deserialize)]
pub struct GoogleErrorDetail {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub domain: String,
    /// The machine-readable cause, such as `rateLimitExceeded` or `authError`.
    #[serde(default)]
    pub reason: String,
}

impl GoogleError {
    /// The reason of the first detail, or the status name when there are no details.
    fn reason(&self) -> &str {
        self.errors
            .first()
            .map(|detail| detail.reason.as_str())
            .filter(|reason| !reason.is_empty())
            .or(self.status.as_deref())
            .unwrap_or_default()
    }
}

/// Classifies Gmail's response, reading any retry hint relative to `now`.
pub(crate) fn classify(response: &RawResponse, now: DateTime<Utc>) -> SendOutcome {
    let status = response.status.as_u16();
    if response.status.is_success() {
        return accepted(&response.body);
    }

    let error = serde_json::from_slice::<GoogleErrorEnvelope>(&response.body)
        .map(|envelope| envelope.error)
        .unwrap_or_default();
    let reason_code = error.reason();
    let reason = error_reason(PROVIDER, status, reason_code, &error.message);

    match status {
        401 => SendOutcome::Unauthorized { reason },
        403 if matches!(reason_code, "rateLimitExceeded" | "userRateLimitExceeded") => {
            let retry_after = retry_hint(response, &error, now);
            SendOutcome::Retryable { reason, retry_after }
        }
        408 | 429 | 500..=599 => {
            let retry_after = retry_hint(response, &error, now);
            SendOutcome::Retryable { reason, retry_after }
        }
        _ => SendOutcome::Permanent { reason },
    }
}

/// Reads a 2xx response. A body without an id still means Gmail took the message, so it is accepted
/// with an empty id rather than retried into a duplicate.
fn accepted(body: &[u8]) -> SendOutcome {
    let provider_message_id =
        serde_json::from_slice::<GmailMessage>(body).map(|message| message.id).unwrap_or_default();
    SendOutcome::Accepted { provider_message_id }
}

/// The wait Gmail asked for: a `Retry-After` header if one came, else the instant in the
/// error text.
fn retry_hint(response: &RawResponse, error: &GoogleError, now: DateTime<Utc>) -> Option<Duration> {
    response
        .header("retry-after")
        .and_then(|value| parse_retry_after(value, now))
        .or_else(|| parse_gmail_retry_after(&error.message, now))
}
