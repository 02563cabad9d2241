//! Classifying Twilio's response to CreateMessage and CreateCall.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::http::{RawResponse, error_reason};
use crate::outbound::SendOutcome;
use crate::retry_after::parse_retry_after;

const PROVIDER: &str = "twilio";

/// The part of a created Message or Call the engine keeps.
#[derive(Debug, Deserialize)]
pub struct CreatedResource {
    /// `SM…` for a message, `CA…` for a call.
    pub sid: String,
    #[serde(default)]
    pub status: Option<String>,
}

/// Twilio's error body.
#[derive(Debug, Default, Deserialize)]
pub struct TwilioError {
    /// Twilio's error code, such as 21211; documented at `more_info`.
    #[serde(default)]
    pub code: Option<u32>,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub more_info: Option<String>,
}

/// Error codes that mean the recipient cannot be reached, ever: 21211 invalid To number,
/// 21610 recipient replied STOP, 21614 To is not a mobile number.
const PERMANENT_RECIPIENT_CODES: [u32; 3] = [21211, 21610, 21614];

/// Error codes of a full queue (21611 for a sender's messages, 22005 for calls): the send was
/// not taken, and the queue drains at the sender's rate, so trying later succeeds.
const QUEUE_FULL_CODES: [u32; 2] = [21611, 22005];

/// Classifies Twilio's response, reading any `Retry-After` relative to `now`.
pub(crate) fn classify(response: &RawResponse, now: DateTime<Utc>) -> SendOutcome {
    let status = response.status.as_u16();
    if response.status.is_success() {
        return accepted(&response.body);
    }

    let error: TwilioError = serde_json::from_slice(&response.body).unwrap_or_default();
    let code = error.code.map(|code| format!("code {code}")).unwrap_or_default();
    let reason = error_reason(PROVIDER, status, &code, &error.message);
    let retry_after =
        response.header("retry-after").and_then(|value| parse_retry_after(value, now));

    match (status, error.code) {
        (401, _) | (_, Some(20003)) => SendOutcome::Unauthorized { reason },
        (_, Some(code)) if PERMANENT_RECIPIENT_CODES.contains(&code) => {
            SendOutcome::Permanent { reason }
        }
        (_, Some(code)) if QUEUE_FULL_CODES.contains(&code) => {
            SendOutcome::Retryable { reason, retry_after }
        }
        (408 | 429 | 500..=599, _) | (_, Some(20429)) => {
            SendOutcome::Retryable { reason, retry_after }
        }
        _ => SendOutcome::Permanent { reason },
    }
}

/// Reads a 2xx response. A body without a sid still means Twilio created the resource, so it is
/// accepted with an empty id rather than retried into a duplicate.
fn accepted(body: &[u8]) -> SendOutcome {
    let provider_message_id = serde_json::from_slice::<CreatedResource>(body)
        .map(|resource| resource.sid)
        .unwrap_or_default();
    SendOutcome::Accepted { provider_message_id }
}
