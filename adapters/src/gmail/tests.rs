use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use followup_core::limits::SendLimits;
use mail_parser::MessageParser;

use super::GmailClient;
use super::multipart::RequestPart;
use super::request::GmailSendRequest;
use super::response::classify;
use crate::fakes::gmail_batch::read_batch;
use crate::fakes::{ErrorPlan, ForcedOutcome};
use crate::http::RawResponse;
use crate::mime::message_id;
use crate::outbound::{SendCredentials, SendOutcome};
use crate::testing::{email, http, spec_file, start_fakes, start_instant, virtual_clock};
use conformance::{Discovery, WireRequest};

mod conformance;

/// The dotted name of `users.messages.send` in the discovery document.
const SEND_METHOD: &str = "users.messages.send";
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

/// Returns the kind of an outcome and its retry wait, to compare outcomes without reasons.
fn kind_and_wait(outcome: &SendOutcome) -> (&'static str, Option<Duration>) {
    match outcome {
        SendOutcome::Retryable { retry_after, .. } => (outcome.kind(), *retry_after),
        _ => (outcome.kind(), None),
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

fn discovery() -> Discovery {
    let text = std::fs::read_to_string(spec_file("gmail/gmail.v1.json")).expect("spec readable");
    Discovery::new(serde_json::from_str(&text).expect("spec is JSON"))
}

/// Returns a client aimed at a loopback port that nothing listens on, because these tests
/// build requests and never send them.
fn unsent_client() -> GmailClient {
    let base = reqwest::Url::parse("http://127.0.0.1:9/").expect("valid URL");
    GmailClient::new(http(), base).with_clock(virtual_clock())
}

fn wire_request(request: &reqwest::Request) -> WireRequest {
    let url = request.url();
    let path = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    let content_type = request.headers().get(reqwest::header::CONTENT_TYPE);
    WireRequest {
        method: request.method().to_string(),
        path,
        content_type: content_type.and_then(|value| value.to_str().ok()).map(str::to_owned),
        body: request.body().and_then(reqwest::Body::as_bytes).unwrap_or_default().to_vec(),
    }
}

/// Builds the request that `send` puts on the wire for a message to Ann.
fn single_send_request(client: &GmailClient) -> reqwest::Request {
    let msg = email(MAILBOX, "ann@example.org", "Checking in", "Hello Ann");
    let prepared = client.prepare(SendCredentials::Bearer(TOKEN), &msg).expect("send prepares");
    client.send_request(&prepared).build().expect("request builds")
}

#[test]
fn send_method_matches_discovery_document() {
    let discovery = discovery();
    let request = single_send_request(&unsent_client());
    let wire = wire_request(&request);

    assert_eq!(discovery.check(SEND_METHOD, &wire), Vec::<String>::new());
    assert_eq!(wire.path, super::SEND_PATH);
    let authorization = request.headers().get(reqwest::header::AUTHORIZATION);
    let expected = format!("Bearer {TOKEN}");
    assert_eq!(authorization.and_then(|value| value.to_str().ok()), Some(expected.as_str()));
}

#[test]
fn batch_matches_discovery_document() {
    let discovery = discovery();
    let client = unsent_client();
    let messages = [
        email(MAILBOX, "ann@example.org", "Checking in", "Hello Ann"),
        email("sales@shop.example", "bob@example.org", "Grüße", "Hallo Bob"),
    ];
    let tokens = [TOKEN, "ya29.second-mailbox"];
    let prepared: Vec<_> = tokens
        .iter()
        .zip(&messages)
        .map(|(token, msg)| client.prepare(SendCredentials::Bearer(token), msg).expect("prepares"))
        .collect();
    let parts: Vec<RequestPart<'_>> = prepared
        .iter()
        .enumerate()
        .map(|(index, prepared)| RequestPart {
            content_id: format!("test+{index}"),
            token: prepared.token,
            body: &prepared.body,
        })
        .collect();
    let request = client.batch_request(&parts).build().expect("request builds");

    assert_eq!(request.method().as_str(), "POST");
    assert_eq!(request.url().path(), discovery.batch_path());
    assert_eq!(super::BATCH_PATH, discovery.batch_path());
    assert!(request.headers().get(reqwest::header::AUTHORIZATION).is_none(), "two mailboxes");
    let wire = wire_request(&request);
    let content_type = wire.content_type.clone().expect("content type");
    assert!(content_type.starts_with("multipart/mixed; boundary="), "{content_type}");

    // The fake's batch reader is a separate parser (mail-parser and httparse).
    let framed = [format!("Content-Type: {content_type}\r\n\r\n").as_bytes(), &wire.body].concat();
    let calls = read_batch(&framed).expect("batch parses");
    assert_eq!(calls.len(), 2);
    for (index, call) in calls.iter().enumerate() {
        let call_request = WireRequest {
            method: call.method.clone(),
            path: call.path.clone(),
            content_type: call.header("content-type").map(str::to_owned),
            body: call.body.to_vec(),
        };
        assert_eq!(
            discovery.check(SEND_METHOD, &call_request),
            Vec::<String>::new(),
            "call {index}"
        );
        assert_eq!(call.content_id.as_deref(), Some(format!("test+{index}").as_str()));
        let expected = format!("Bearer {}", tokens[index]);
        assert_eq!(call.header("authorization"), Some(expected.as_str()), "call {index}");
    }
}

#[test]
fn discovery_check_can_fail() {
    let discovery = discovery();
    let good = wire_request(&single_send_request(&unsent_client()));
    let body: serde_json::Value = serde_json::from_slice(&good.body).expect("JSON body");
    let raw = body["raw"].as_str().expect("raw").to_owned();
    let check = |request: &WireRequest| discovery.check(SEND_METHOD, request);
    let has = |violations: &[String], text: &str| violations.iter().any(|v| v.contains(text));

    let mut renamed = good.clone();
    renamed.body = serde_json::json!({ "rawMessage": raw }).to_string().into_bytes();
    let violations = check(&renamed);
    assert!(has(&violations, "unknown field `rawMessage` in Message"), "{violations:?}");
    assert!(has(&violations, "missing field `raw`"), "{violations:?}");

    let mut plain_text = good.clone();
    plain_text.content_type = Some("text/plain".to_owned());
    let violations = check(&plain_text);
    assert!(has(&violations, "\"text/plain\" is not application/json"), "{violations:?}");

    // Bytes chosen so that standard base64 uses its two characters outside base64url.
    let message = URL_SAFE.decode(&raw).expect("raw decodes");
    let standard = STANDARD.encode([b"\xfb\xff\xbf".as_slice(), &message].concat());
    assert!(standard.starts_with("+/+/"), "{standard}");
    let mut not_url_safe = good.clone();
    not_url_safe.body = serde_json::json!({ "raw": standard }).to_string().into_bytes();
    let violations = check(&not_url_safe);
    assert_eq!(violations, ["Message.raw is not base64url"]);

    let mut number = good.clone();
    number.body = serde_json::json!({ "raw": 42 }).to_string().into_bytes();
    assert_eq!(check(&number), ["Message.raw is 42, not of type string"]);

    let mut wrong_path = good.clone();
    wrong_path.path = "/gmail/v1/users/me/messages/sent".to_owned();
    assert!(has(&check(&wrong_path), "matches no path"), "{:?}", check(&wrong_path));
    let mut wrong_method = good.clone();
    wrong_method.method = "PUT".to_owned();
    assert_eq!(check(&wrong_method), ["HTTP method PUT is not POST"]);

    // The upload path takes the message itself, as the document's mediaUpload declares.
    let upload = WireRequest {
        method: "POST".to_owned(),
        path: "/upload/gmail/v1/users/me/messages/send?uploadType=media".to_owned(),
        content_type: Some("message/rfc822".to_owned()),
        body: message.clone(),
    };
    assert_eq!(check(&upload), Vec::<String>::new());
    let mut rfc822_as_json = good.clone();
    rfc822_as_json.content_type = Some("message/rfc822".to_owned());
    assert!(has(&check(&rfc822_as_json), "is not application/json"));
}
