use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::json;

use crate::http::RawResponse;
use crate::outbound::SendOutcome;
use crate::outlook::response::classify;
use crate::testing::start_instant;

fn response(status: u16, retry_after: Option<&str>, code: &str, message: &str) -> RawResponse {
    let mut headers = HeaderMap::new();
    if let Some(value) = retry_after {
        headers.insert("retry-after", HeaderValue::from_str(value).expect("header value"));
    }
    let body = if code.is_empty() {
        bytes::Bytes::new()
    } else {
        bytes::Bytes::from(json!({"error": {"code": code, "message": message}}).to_string())
    };
    let status = StatusCode::from_u16(status).expect("status");
    RawResponse { status, headers, body }
}

/// The outcome a case expects, with the wait of a retryable one.
#[derive(Clone, Copy, Debug)]
enum Expected {
    Accepted,
    Retryable(Option<Duration>),
    Permanent,
    Unauthorized,
}

#[test]
fn graph_statuses_are_classified() {
    use Expected::{Accepted, Permanent, Retryable, Unauthorized};
    let in_90s = "Mon, 02 Mar 2026 09:01:30 GMT";
    let concurrency = "Application is over its MailboxConcurrency limit.";
    let bad_recipient = "At least one recipient is not valid.";
    let bad_mime = "Invalid base64 string for MIME content.";
    // (status, Retry-After, error code, error message, expected)
    let cases = [
        (202, None, "", "", Accepted),
        (202, Some("5"), "", "", Accepted),
        (200, None, "", "", Accepted),
        (429, Some("2.128"), "TooManyRequests", "", Retryable(Some(Duration::from_millis(2_128)))),
        (429, None, "TooManyRequests", "Please retry", Retryable(None)),
        (429, None, "ApplicationThrottled", concurrency, Retryable(None)),
        (503, None, "MailboxConcurrency", "", Retryable(None)),
        (503, Some("10"), "ServiceNotAvailable", "", Retryable(Some(Duration::from_secs(10)))),
        (503, Some(in_90s), "ServiceNotAvailable", "", Retryable(Some(Duration::from_secs(90)))),
        (500, None, "", "", Retryable(None)),
        (424, None, "FailedDependency", "", Retryable(None)),
        (401, None, "InvalidAuthenticationToken", "Access token has expired", Unauthorized),
        (403, None, "ErrorAccessDenied", "Access is denied.", Unauthorized),
        (400, None, "ErrorInvalidRecipients", bad_recipient, Permanent),
        (400, None, "ErrorMimeContentInvalidBase64String", bad_mime, Permanent),
        (413, None, "", "", Permanent),
    ];

    for (status, retry_after, code, message, expected) in cases {
        let outcome = classify(&response(status, retry_after, code, message), start_instant());
        let case = format!("{status} {code} Retry-After {retry_after:?}");
        let prefix = format!("outlook {status} {code}");
        match (expected, outcome) {
            (Accepted, SendOutcome::Accepted { provider_message_id }) => {
                assert!(!provider_message_id.is_empty(), "{case}");
            }
            (Retryable(wait), SendOutcome::Retryable { retry_after, reason }) => {
                assert_eq!(retry_after, wait, "{case}");
                assert!(reason.starts_with(prefix.trim_end()), "{case}: {reason}");
            }
            (Permanent, SendOutcome::Permanent { reason })
            | (Unauthorized, SendOutcome::Unauthorized { reason }) => {
                assert!(reason.starts_with(prefix.trim_end()), "{case}: {reason}");
            }
            (expected, outcome) => panic!("{case}: expected {expected:?}, got {outcome:?}"),
        }
    }
}

#[test]
fn accepted_id_is_request_id() {
    let mut accepted = response(202, None, "", "");
    accepted.headers.insert("request-id", HeaderValue::from_static("5a2c-request"));
    let outcome = classify(&accepted, start_instant());
    let expected = SendOutcome::Accepted { provider_message_id: "5a2c-request".to_owned() };
    assert_eq!(outcome, expected);
}
