//! Classifying Twilio's response to CreateMessage and CreateCall.

use std::time::Duration;

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

/// Error codes after which the same message can never be sent as it is:
///
/// - the recipient: 21211 invalid To number, 21610 the recipient replied STOP, 21614 To is
///   not a mobile number;
/// - the account: 21606 From is not a valid sender for this destination, 21608 a trial
///   account sending to an unverified number, 21408 sending to the To number's region is not
///   enabled. These need a change in the Twilio console, not a retry.
const PERMANENT_CODES: [u32; 6] = [21211, OPTED_OUT_CODE, 21614, 21606, 21608, 21408];

/// Error code of a message refused because its recipient replied STOP (or another opt-out
/// keyword) to the sender, and has not opted back in.
pub const OPTED_OUT_CODE: u32 = 21610;

/// Returns whether `outcome` is Twilio's refusal of a message to a recipient who opted out.
/// It reads the reason [`classify`] writes, which names the error code.
pub fn is_opted_out(outcome: &SendOutcome) -> bool {
    matches!(outcome, SendOutcome::Permanent { reason }
        if reason.starts_with(PROVIDER) && reason.contains(&format!("code {OPTED_OUT_CODE}")))
}

/// Error codes of a full queue: 21611 when a sender's message queue contains more than 10
/// hours of traffic, 22005 when the account's call queue contains more than 24 hours of calls. Twilio
/// did not take the send, so it is safe to retry, but not soon.
const QUEUE_FULL_CODES: [u32; 2] = [21611, 22005];

/// Wait before retrying into a full queue, when Twilio sends no `Retry-After` (it documents
/// none). The queue drains at the sender's rate, about one message segment or one call per
/// second on a long code. A retry within seconds therefore meets the same full queue, and a
/// send accepted at the edge would still wait hours in it. Half an hour drains about 1,800
/// sends, room for the retries and for other traffic of the sender.
pub const QUEUE_FULL_RETRY_AFTER: Duration = Duration::from_secs(30 * 60);

/// Classifies Twilio's response, reading any `Retry-After` relative to `now`.
///
/// - 2xx is accepted;
/// - 401 or code 20003 is [`SendOutcome::Unauthorized`];
/// - [`PERMANENT_CODES`] are permanent;
/// - [`QUEUE_FULL_CODES`] are retryable after [`QUEUE_FULL_RETRY_AFTER`];
/// - 429 or code 20429 (too many concurrent requests) is retryable: Twilio processed nothing,
///   so no message can be sent twice;
/// - 408 and 5xx are retryable;
/// - anything else is permanent.
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
        (_, Some(code)) if PERMANENT_CODES.contains(&code) => SendOutcome::Permanent { reason },
        (_, Some(code)) if QUEUE_FULL_CODES.contains(&code) => {
            let retry_after = retry_after.or(Some(QUEUE_FULL_RETRY_AFTER));
            SendOutcome::Retryable { reason, retry_after }
        }
        // NOTE: Twilio offers no idempotency key for creates, so if a 5xx ever came after the
        // message was created, this retry would send it twice. Twilio documents no such case.
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
