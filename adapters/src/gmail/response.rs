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

/// Wait after a `403 dailyLimitExceeded` that came without a retry hint.
///
/// That error means the project's daily quota is used up. The quota is shared by every mailbox
/// of the app and the response does not say when it resets, so a retry after the usual backoff
/// of seconds fails the same way for every queued send and only adds load. Waiting an hour
/// still notices a raised quota the same day.
pub const DAILY_LIMIT_WAIT: Duration = Duration::from_secs(60 * 60);

/// Classifies Gmail's response, reading any retry hint relative to `now`.
///
/// | status | reason | outcome |
/// | --- | --- | --- |
/// | 2xx | | Accepted |
/// | 401 | any (`authError`) | Unauthorized |
/// | 403 | `insufficientPermissions` | Unauthorized |
/// | 403 | `rateLimitExceeded`, `userRateLimitExceeded` | Retryable |
/// | 403, 429 | `dailyLimitExceeded` | Retryable, after the hint or else [`DAILY_LIMIT_WAIT`] |
/// | 408, 429, 5xx | any | Retryable |
/// | other | any | Permanent |
///
/// A Retryable outcome carries the wait from a `Retry-After` header if one came, else from the
/// "Retry after <instant>" text of a mail-sending 429.
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

    match (status, reason_code) {
        (401, _) => SendOutcome::Unauthorized { reason },
        // The token lacks the gmail.send scope. A refresh keeps the same scopes, so only a new
        // consent helps, which is what an unauthorized connection leads to.
        (403, "insufficientPermissions") => SendOutcome::Unauthorized { reason },
        (403, "rateLimitExceeded" | "userRateLimitExceeded") => {
            let retry_after = retry_hint(response, &error, now);
            SendOutcome::Retryable { reason, retry_after }
        }
        (403 | 429, "dailyLimitExceeded") => {
            let retry_after = retry_hint(response, &error, now).unwrap_or(DAILY_LIMIT_WAIT);
            SendOutcome::Retryable { reason, retry_after: Some(retry_after) }
        }
        (408 | 429 | 500..=599, _) => {
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
