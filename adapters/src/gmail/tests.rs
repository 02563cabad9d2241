use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE;
use followup_core::limits::SendLimits;
use mail_parser::MessageParser;

use super::GmailClient;
use super::request::GmailSendRequest;
use super::response::classify;
use crate::fakes::{ErrorPlan, ForcedOutcome};
use crate::http::RawResponse;
use crate::mime::message_id;
use crate::outbound::{SendCredentials, SendOutcome};
use crate::testing::{email, http, spec_file, start_fakes, start_instant, virtual_clock};

const TOKEN: &str = "ya29.gmail-test-token";
const MAILBOX: &str = "owner@shop.example";

fn limits(per_minute: u32, per_day: u32) -> SendLimits {
    SendLimits { per_minute, per_day }
}

fn response(status: u16, body: &str) -> RawResponse {
    RawResponse {
        status: reqwest::StatusCode::from_u16(status).expect("valid status"),
        headers: reqwest::header::HeaderMap::new(),
        body: bytes::Bytes::from(body.to_owned()),
    }
}

fn google_error(status: u16, reason: &str, message: &str) -> String {
    serde_json::json!({"error": {"code": status, "message": message,
        "errors": [{"message": message, "domain": "global", "reason": reason}]}})
    .to_string()
}

#[test]
fn raw_message_decodes_with_headers() {
    let msg = email(MAILBOX, "ann@example.org", "Checking in", "Hello Ann,\nany news?");
    let request = GmailSendRequest::new(&msg, start_instant()).expect("message builds");

    assert!(!request.raw.contains('+') && !request.raw.contains('/'), "raw is base64url");
    let bytes = URL_SAFE.decode(&request.raw).expect("raw decodes");
    let text = String::from_utf8(bytes.clone()).expect("message is text");
    assert!(text.contains("Date: Mon, 2 Mar 2026 09:00:00 +0000"), "date header in {text}");
    assert!(text.contains(&format!("Message-ID: <{}>", message_id(&msg))), "message id in {text}");

    let parsed = MessageParser::default().parse(&bytes).expect("message parses");
    let from = parsed.from().and_then(|a| a.first()).expect("from");
    assert_eq!(from.address(), Some(MAILBOX));
    let to = parsed.to().and_then(|a| a.first()).expect("to");
    assert_eq!(to.address(), Some("ann@example.org"));
    assert_eq!(to.name(), Some("Ann Example"));
    assert_eq!(parsed.subject(), Some("Checking in"));
    let body = parsed.body_text(0).expect("text body");
    assert_eq!(body.trim_end(), "Hello Ann,\r\nany news?", "lines end in CRLF on the wire");
}

#[test]
fn message_id_uses_sender_domain() {
    let msg = email(MAILBOX, "ann@example.org", "s", "b");
    assert_eq!(message_id(&msg), format!("{}@shop.example", msg.follow_up));
}

#[test]
fn classify_429_reads_retry_text() {
    let message = "User-rate limit exceeded.  Retry after 2026-03-02T09:00:42.500Z (Mail sending)";
    let throttled = response(429, &google_error(429, "rateLimitExceeded", message));
    let outcome = classify(&throttled, start_instant());
    let SendOutcome::Retryable { reason, retry_after } = outcome else {
        panic!("expected retryable, got {outcome:?}");
    };
    assert_eq!(retry_after, Some(Duration::from_millis(42_500)));
    assert!(reason.starts_with("gmail 429 rateLimitExceeded: "), "reason {reason}");
}

/// The kind of an outcome and its retry wait, for comparing outcomes without their reasons.
fn kind_and_wait(outcome: &SendOutcome) -> (&'static str, Option<Duration>) {
    match outcome {
        SendOutcome::Accepted { .. } => ("accepted", None),
        SendOutcome::Retryable { retry_after, .. } => ("retryable", *retry_after),
        SendOutcome::Permanent { .. } => ("permanent", None),
        SendOutcome::Unauthorized { .. } => ("unauthorized", None),
        SendOutcome::InDoubt { .. } => ("in doubt", None),
    }
}

#[test]
fn classify_error_table() {
    const SENDING_LIMIT: &str =
        "User-rate limit exceeded.  Retry after 2026-03-02T09:00:42.500Z (Mail sending)";
    const EXHAUSTED: &str = "Resource has been exhausted (e.g. check quota).";
    const IN_A_MINUTE: &str = "Mon, 02 Mar 2026 09:01:00 GMT";
    let secs = |seconds| Some(Duration::from_secs(seconds));
    let millis = |millis| Some(Duration::from_millis(millis));
    // (status, reason, message, Retry-After header, expected kind, expected wait)
    let cases = [
        (401, "authError", "Invalid Credentials", None, "unauthorized", None),
        (401, "", "", None, "unauthorized", None),
        (403, "insufficientPermissions", "Insufficient Permission", None, "unauthorized", None),
        (403, "rateLimitExceeded", "Quota exceeded for quota metric", None, "retryable", None),
        (403, "userRateLimitExceeded", "User Rate Limit Exceeded", None, "retryable", None),
        (403, "userRateLimitExceeded", "slow down", Some("7"), "retryable", secs(7)),
        (403, "dailyLimitExceeded", "Daily Limit Exceeded", None, "retryable", secs(3600)),
        (403, "dailyLimitExceeded", "Daily Limit Exceeded", Some("7200"), "retryable", secs(7200)),
        (429, "dailyLimitExceeded", "Daily Limit Exceeded", None, "retryable", secs(3600)),
        (403, "forbidden", "Delegation denied", None, "permanent", None),
        (429, "rateLimitExceeded", SENDING_LIMIT, None, "retryable", millis(42_500)),
        (429, "rateLimitExceeded", EXHAUSTED, None, "retryable", None),
        (429, "rateLimitExceeded", SENDING_LIMIT, Some("3"), "retryable", secs(3)),
        (429, "rateLimitExceeded", EXHAUSTED, Some(IN_A_MINUTE), "retryable", secs(60)),
        (400, "invalidArgument", "Invalid To header", None, "permanent", None),
        (400, "failedPrecondition", "Precondition check failed.", None, "permanent", None),
        (404, "notFound", "Requested entity was not found.", None, "permanent", None),
        (500, "backendError", "Backend Error", None, "retryable", None),
        (503, "backendError", "Service unavailable", Some("30"), "retryable", secs(30)),
        (408, "", "Request timeout", None, "retryable", None),
    ];
    for (status, reason, message, retry_after, kind, wait) in cases {
        let mut raw = response(status, &google_error(status, reason, message));
        if let Some(value) = retry_after {
            let value = reqwest::header::HeaderValue::from_static(value);
            raw.headers.insert(reqwest::header::RETRY_AFTER, value);
        }
        let outcome = classify(&raw, start_instant());
        assert_eq!(
            kind_and_wait(&outcome),
            (kind, wait),
            "{status} {reason} {message:?} retry-after {retry_after:?}: {outcome:?}"
        );
    }
}

#[test]
fn classify_keeps_reason_text() {
    let now = start_instant();
    let invalid = response(400, &google_error(400, "invalidArgument", "Invalid To header"));
    let expected = "gmail 400 invalidArgument: Invalid To header".to_owned();
    assert_eq!(classify(&invalid, now), SendOutcome::Permanent { reason: expected });

    let not_json = response(502, "<html>bad gateway</html>");
    let expected = SendOutcome::Retryable { reason: "gmail 502".to_owned(), retry_after: None };
    assert_eq!(classify(&not_json, now), expected);

    let ok_without_id = response(200, "{}");
    let expected = SendOutcome::Accepted { provider_message_id: String::new() };
    assert_eq!(classify(&ok_without_id, now), expected);
}

#[tokio::test]
async fn accepted_send_is_recorded() {
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config).await;
    fakes.register_gmail(TOKEN, MAILBOX, limits(60, 2_000));
    let client = GmailClient::new(http(), fakes.gmail_url()).with_clock(clock.clone());

    let msg = email(MAILBOX, "ann@example.org", "Checking in", "Hello Ann,\nany news?");
    let outcome = client.send(SendCredentials::Bearer(TOKEN), &msg).await;

    let SendOutcome::Accepted { provider_message_id } = outcome else {
        panic!("expected accepted, got {outcome:?}");
    };
    let received = fakes.received();
    assert_eq!(received.len(), 1);
    let message = &received[0];
    assert_eq!(message.provider_message_id, provider_message_id);
    assert_eq!(message.from, MAILBOX);
    assert_eq!(message.to, "ann@example.org");
    assert_eq!(message.subject.as_deref(), Some("Checking in"));
    assert_eq!(message.body, "Hello Ann,\nany news?");
    assert_eq!(message.received_at, start_instant());
    fakes.shutdown().await;
}

#[tokio::test]
async fn unknown_token_is_unauthorized() {
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config).await;
    fakes.register_gmail(TOKEN, MAILBOX, limits(60, 2_000));
    let client = GmailClient::new(http(), fakes.gmail_url()).with_clock(clock.clone());

    let msg = email(MAILBOX, "ann@example.org", "s", "b");
    let outcome = client.send(SendCredentials::Bearer("ya29.expired"), &msg).await;

    let SendOutcome::Unauthorized { reason } = outcome else {
        panic!("expected unauthorized, got {outcome:?}");
    };
    assert!(reason.starts_with("gmail 401 authError"), "reason {reason}");
    assert!(!reason.contains("ya29"), "reason leaks the token: {reason}");
    assert_eq!(fakes.stats().rejected_requests, 1);
    assert!(fakes.received().is_empty());
    fakes.shutdown().await;
}

#[tokio::test]
async fn rejected_recipient_is_permanent() {
    let clock = virtual_clock();
    let plan = ErrorPlan::default().force("bounce@example.org", ForcedOutcome::RecipientRejected);
    let fakes = start_fakes(&clock, |config| config.with_errors(plan)).await;
    fakes.register_gmail(TOKEN, MAILBOX, limits(60, 2_000));
    let client = GmailClient::new(http(), fakes.gmail_url()).with_clock(clock.clone());

    let msg = email(MAILBOX, "bounce@example.org", "s", "b");
    let outcome = client.send(SendCredentials::Bearer(TOKEN), &msg).await;

    let SendOutcome::Permanent { reason } = outcome else {
        panic!("expected permanent, got {outcome:?}");
    };
    assert!(reason.starts_with("gmail 400 invalidArgument"), "reason {reason}");
    assert_eq!(fakes.stats().injected_errors, 1);
    fakes.shutdown().await;
}

#[tokio::test]
async fn minute_limit_gives_retryable() {
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config).await;
    fakes.register_gmail(TOKEN, MAILBOX, limits(2, 2_000));
    let client = GmailClient::new(http(), fakes.gmail_url()).with_clock(clock.clone());
    let msg = email(MAILBOX, "ann@example.org", "s", "b");

    for _ in 0..2 {
        let outcome = client.send(SendCredentials::Bearer(TOKEN), &msg).await;
        assert!(matches!(outcome, SendOutcome::Accepted { .. }), "got {outcome:?}");
    }
    let outcome = client.send(SendCredentials::Bearer(TOKEN), &msg).await;
    let SendOutcome::Retryable { reason, retry_after } = outcome else {
        panic!("expected retryable, got {outcome:?}");
    };
    assert!(reason.starts_with("gmail 429 rateLimitExceeded"), "reason {reason}");
    assert_eq!(retry_after, Some(Duration::from_secs(60)));
    assert_eq!(fakes.stats().rate_limit_violations, 1);
    assert_eq!(fakes.received().len(), 2);

    clock.advance(chrono::Duration::seconds(60));
    let outcome = client.send(SendCredentials::Bearer(TOKEN), &msg).await;
    assert!(matches!(outcome, SendOutcome::Accepted { .. }), "got {outcome:?}");
    fakes.shutdown().await;
}

#[tokio::test]
async fn day_limit_gives_retryable() {
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config).await;
    fakes.register_gmail(TOKEN, MAILBOX, limits(60, 2));
    let client = GmailClient::new(http(), fakes.gmail_url()).with_clock(clock.clone());
    let msg = email(MAILBOX, "ann@example.org", "s", "b");

    for _ in 0..2 {
        let outcome = client.send(SendCredentials::Bearer(TOKEN), &msg).await;
        assert!(matches!(outcome, SendOutcome::Accepted { .. }), "got {outcome:?}");
        clock.advance(chrono::Duration::hours(1));
    }
    let outcome = client.send(SendCredentials::Bearer(TOKEN), &msg).await;
    let SendOutcome::Retryable { retry_after, .. } = outcome else {
        panic!("expected retryable, got {outcome:?}");
    };
    assert_eq!(retry_after, Some(Duration::from_secs(22 * 3600)));
    assert_eq!(fakes.stats().rate_limit_violations, 1);
    fakes.shutdown().await;
}

#[tokio::test]
async fn dead_server_is_retryable() {
    let fakes = start_fakes(&virtual_clock(), |config| config).await;
    let url = fakes.gmail_url();
    fakes.shutdown().await;

    let client = GmailClient::new(http(), url);
    let msg = email(MAILBOX, "ann@example.org", "s", "b");
    let outcome = client.send(SendCredentials::Bearer(TOKEN), &msg).await;
    let expected =
        SendOutcome::Retryable { reason: "gmail: connection failed".to_owned(), retry_after: None };
    assert_eq!(outcome, expected);
}

#[test]
fn send_method_matches_discovery_document() {
    let text = std::fs::read_to_string(spec_file("gmail/gmail.v1.json")).expect("spec readable");
    let discovery: serde_json::Value = serde_json::from_str(&text).expect("spec is JSON");

    let send = &discovery["resources"]["users"]["resources"]["messages"]["methods"]["send"];
    assert_eq!(send["path"], "gmail/v1/users/{userId}/messages/send");
    assert_eq!(send["httpMethod"], "POST");
    assert_eq!(send["request"]["$ref"], "Message");
    let client_path = super::SEND_PATH.trim_start_matches('/');
    assert_eq!(client_path, "gmail/v1/users/me/messages/send");
    assert_eq!(
        send["path"].as_str().map(|p| p.replace("{userId}", "me")),
        Some(client_path.into())
    );

    let raw = &discovery["schemas"]["Message"]["properties"]["raw"];
    assert_eq!(raw["type"], "string");
    assert_eq!(raw["format"], "byte");
    let required_for = raw["annotations"]["required"].as_array().expect("required list");
    assert!(required_for.iter().any(|method| method == "gmail.users.messages.send"));

    let body = serde_json::to_value(GmailSendRequest { raw: "eA".to_owned() }).expect("serialises");
    let fields: Vec<&String> = body.as_object().expect("object").keys().collect();
    assert_eq!(fields, ["raw"]);
}
