//! `send_batch` against the Gmail fake over HTTP on loopback, and against a scripted loopback
//! server for the whole-batch failures the fake never produces.

use std::sync::Arc;
use std::time::Duration;

use followup_core::domain::{Channel, Provider};
use followup_core::limits::SendLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::fakes::gmail_batch::read_batch;
use crate::fakes::{ErrorPlan, FakeStats, ForcedOutcome};
use crate::gmail::{GmailClient, MAX_BATCH_CALLS};
use crate::outbound::{OutboundMessage, SendCredentials, SendOutcome};
use crate::testing::{email, http, phone, start_fakes, start_instant, virtual_clock};

const TOKEN_A: &str = "ya29.batch-token-mailbox-a";
const TOKEN_B: &str = "ya29.batch-token-mailbox-b";
const MAILBOX_A: &str = "owner@shop.example";
const MAILBOX_B: &str = "sales@shop.example";

fn limits(per_minute: u32) -> SendLimits {
    SendLimits { per_minute, per_day: 10_000 }
}

fn to(recipient: &str) -> OutboundMessage {
    email(MAILBOX_A, recipient, "Checking in", &format!("Hello {recipient}"))
}

fn assert_accepted(outcome: &SendOutcome, item: &str) -> String {
    let SendOutcome::Accepted { provider_message_id } = outcome else {
        panic!("{item}: expected accepted, got {outcome:?}");
    };
    assert!(!provider_message_id.is_empty(), "{item}: accepted with an id");
    provider_message_id.clone()
}

fn assert_no_token(outcomes: &[SendOutcome]) {
    for outcome in outcomes {
        let text = format!("{outcome:?}");
        assert!(!text.contains("ya29"), "an outcome leaks a token: {text}");
    }
}

#[tokio::test]
async fn mixed_part_results() {
    let clock = virtual_clock();
    let plan = ErrorPlan::default()
        .force("bounce@example.org", ForcedOutcome::RecipientRejected)
        .force("flaky@example.org", ForcedOutcome::ServiceUnavailable);
    let fakes = start_fakes(&clock, |config| config.with_errors(plan)).await;
    fakes.register_gmail(TOKEN_A, MAILBOX_A, limits(3));
    let client = GmailClient::new(http(), fakes.gmail_url()).with_clock(clock.clone());

    // The fake runs the parts in order: two injected errors, three sends that fill the
    // minute's limit of 3, and a fourth send that the limit rejects.
    let recipients = [
        "ann@example.org",
        "bounce@example.org",
        "bob@example.org",
        "flaky@example.org",
        "carl@example.org",
        "dora@example.org",
    ];
    let messages: Vec<OutboundMessage> = recipients.iter().map(|r| to(r)).collect();
    let items: Vec<_> = messages.iter().map(|m| (SendCredentials::Bearer(TOKEN_A), m)).collect();
    let outcomes = client.send_batch(&items).await;

    assert_eq!(outcomes.len(), recipients.len());
    let ids = [
        assert_accepted(&outcomes[0], "ann"),
        assert_accepted(&outcomes[2], "bob"),
        assert_accepted(&outcomes[4], "carl"),
    ];
    let SendOutcome::Permanent { reason } = &outcomes[1] else {
        panic!("bounce: expected permanent, got {:?}", outcomes[1]);
    };
    assert!(reason.starts_with("gmail 400 invalidArgument"), "bounce reason {reason}");
    let SendOutcome::Retryable { reason, retry_after } = &outcomes[3] else {
        panic!("flaky: expected retryable, got {:?}", outcomes[3]);
    };
    assert!(reason.starts_with("gmail 503 backendError"), "flaky reason {reason}");
    assert_eq!(*retry_after, None);
    let SendOutcome::Retryable { reason, retry_after } = &outcomes[5] else {
        panic!("dora: expected retryable, got {:?}", outcomes[5]);
    };
    assert!(reason.starts_with("gmail 429 rateLimitExceeded"), "dora reason {reason}");
    assert_eq!(*retry_after, Some(Duration::from_secs(60)), "the 429 text's instant is honoured");

    let received = fakes.received();
    let received_to: Vec<&str> = received.iter().map(|m| m.to.as_str()).collect();
    assert_eq!(received_to, ["ann@example.org", "bob@example.org", "carl@example.org"]);
    let received_ids: Vec<String> =
        received.iter().map(|m| m.provider_message_id.clone()).collect();
    assert_eq!(received_ids, ids);
    assert_eq!(received[0].body, "Hello ann@example.org");
    let stats = fakes.stats();
    assert_eq!(stats.batch_requests, 1);
    assert_eq!(stats.injected_errors, 2);
    assert_eq!(stats.rate_limit_violations, 1);
    fakes.shutdown().await;
}

#[tokio::test]
async fn two_mailboxes_in_one_batch() {
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config).await;
    fakes.register_gmail(TOKEN_A, MAILBOX_A, limits(1));
    fakes.register_gmail(TOKEN_B, MAILBOX_B, limits(10));
    let client = GmailClient::new(http(), fakes.gmail_url()).with_clock(clock.clone());

    let from_a = [to("a1@example.org"), to("a2@example.org")];
    let from_b: Vec<OutboundMessage> = ["b1@example.org", "b2@example.org"]
        .iter()
        .map(|r| email(MAILBOX_B, r, "Checking in", "Hello"))
        .collect();
    let items = [
        (SendCredentials::Bearer(TOKEN_A), &from_a[0]),
        (SendCredentials::Bearer(TOKEN_B), &from_b[0]),
        (SendCredentials::Bearer(TOKEN_A), &from_a[1]),
        (SendCredentials::Bearer(TOKEN_B), &from_b[1]),
    ];
    let outcomes = client.send_batch(&items).await;

    // Mailbox A may send once a minute and B ten times, so only a part counted against the
    // right mailbox gives this pattern.
    assert_accepted(&outcomes[0], "a1");
    assert_accepted(&outcomes[1], "b1");
    assert!(
        matches!(outcomes[2], SendOutcome::Retryable { .. }),
        "a2 is over mailbox A's limit: {:?}",
        outcomes[2]
    );
    assert_accepted(&outcomes[3], "b2");
    assert_no_token(&outcomes);

    let received: Vec<(String, String)> =
        fakes.received().into_iter().map(|m| (m.from, m.to)).collect();
    let expected = [
        (MAILBOX_A, "a1@example.org"),
        (MAILBOX_B, "b1@example.org"),
        (MAILBOX_B, "b2@example.org"),
    ]
    .map(|(from, to)| (from.to_owned(), to.to_owned()));
    assert_eq!(received, expected);
    assert_eq!(fakes.stats().batch_requests, 1);
    assert_eq!(fakes.stats().rate_limit_violations, 1);
    fakes.shutdown().await;
}

#[tokio::test]
async fn bad_token_part_is_unauthorized() {
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config).await;
    fakes.register_gmail(TOKEN_A, MAILBOX_A, limits(60));
    let client = GmailClient::new(http(), fakes.gmail_url()).with_clock(clock.clone());

    let messages = [to("ann@example.org"), to("bob@example.org"), to("carl@example.org")];
    let items = [
        (SendCredentials::Bearer(TOKEN_A), &messages[0]),
        (SendCredentials::Bearer("ya29.revoked-token"), &messages[1]),
        (SendCredentials::Bearer(TOKEN_A), &messages[2]),
    ];
    let outcomes = client.send_batch(&items).await;

    assert_accepted(&outcomes[0], "ann");
    let SendOutcome::Unauthorized { reason } = &outcomes[1] else {
        panic!("bob: expected unauthorized, got {:?}", outcomes[1]);
    };
    assert!(reason.starts_with("gmail 401 authError"), "reason {reason}");
    assert_accepted(&outcomes[2], "carl");
    assert_no_token(&outcomes);

    let stats = fakes.stats();
    assert_eq!(stats.rejected_requests, 1);
    assert_eq!(stats.received(Provider::Gmail), 2);
    assert_eq!(stats.batch_requests, 1);
    fakes.shutdown().await;
}

#[tokio::test]
async fn local_failures_keep_order() {
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config).await;
    fakes.register_gmail(TOKEN_A, MAILBOX_A, limits(60));
    let client = GmailClient::new(http(), fakes.gmail_url()).with_clock(clock.clone());

    let sms = phone(Channel::Sms, "+15005550006", "+14155550123", "hi");
    let mut bad_address = to("ann@example.org");
    bad_address.to = "ann@example.org\r\nBcc: evil@example.org".to_owned();
    let (first, last) = (to("first@example.org"), to("last@example.org"));
    let basic = SendCredentials::Basic { account_sid: "AC1", auth_token: "secret" };
    let items = [
        (SendCredentials::Bearer(TOKEN_A), &first),
        (basic, &first),
        (SendCredentials::Bearer(TOKEN_A), &sms),
        (SendCredentials::Bearer(TOKEN_A), &bad_address),
        (SendCredentials::Bearer("ya29.line\r\nX-Evil: 1"), &first),
        (SendCredentials::Bearer(TOKEN_A), &last),
    ];
    let outcomes = client.send_batch(&items).await;

    assert_eq!(outcomes.len(), items.len());
    assert_accepted(&outcomes[0], "first");
    assert!(matches!(outcomes[1], SendOutcome::Unauthorized { .. }), "{:?}", outcomes[1]);
    assert!(matches!(outcomes[2], SendOutcome::Permanent { .. }), "{:?}", outcomes[2]);
    let SendOutcome::Permanent { reason } = &outcomes[3] else {
        panic!("bad address: expected permanent, got {:?}", outcomes[3]);
    };
    assert!(reason.contains("invalid recipient address"), "reason {reason}");
    assert!(matches!(outcomes[4], SendOutcome::Unauthorized { .. }), "{:?}", outcomes[4]);
    assert_accepted(&outcomes[5], "last");

    let received: Vec<String> = fakes.received().into_iter().map(|m| m.to).collect();
    assert_eq!(received, ["first@example.org", "last@example.org"]);
    assert_eq!(fakes.stats().batch_requests, 1);
    fakes.shutdown().await;
}

#[tokio::test]
async fn single_item_skips_batch() {
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config).await;
    fakes.register_gmail(TOKEN_A, MAILBOX_A, limits(60));
    let client = GmailClient::new(http(), fakes.gmail_url()).with_clock(clock.clone());

    let msg = to("ann@example.org");
    let outcomes = client.send_batch(&[(SendCredentials::Bearer(TOKEN_A), &msg)]).await;
    assert_eq!(outcomes.len(), 1);
    assert_accepted(&outcomes[0], "ann");

    // Two items of which one fails locally also leave a single call, sent on its own.
    let sms = phone(Channel::Sms, "+15005550006", "+14155550123", "hi");
    let items =
        [(SendCredentials::Bearer(TOKEN_A), &sms), (SendCredentials::Bearer(TOKEN_A), &msg)];
    let outcomes = client.send_batch(&items).await;
    assert!(matches!(outcomes[0], SendOutcome::Permanent { .. }), "{:?}", outcomes[0]);
    assert_accepted(&outcomes[1], "ann again");

    assert!(client.send_batch(&[]).await.is_empty());
    assert_eq!(fakes.stats().batch_requests, 0);
    assert_eq!(fakes.stats().received(Provider::Gmail), 2);
    fakes.shutdown().await;
}

#[tokio::test]
async fn chunks_follow_max_batch() {
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config).await;
    fakes.register_gmail(TOKEN_A, MAILBOX_A, limits(1_000));
    let messages: Vec<OutboundMessage> =
        (0..151).map(|index| to(&format!("r{index}@example.org"))).collect();
    let items: Vec<_> = messages.iter().map(|m| (SendCredentials::Bearer(TOKEN_A), m)).collect();

    // The default of 50 makes four requests of 50, 50, 50 and 1; the last goes on its own.
    let client = GmailClient::new(http(), fakes.gmail_url()).with_clock(clock.clone());
    let outcomes = client.send_batch(&items).await;
    assert_eq!(outcomes.len(), 151);
    for (index, outcome) in outcomes.iter().enumerate() {
        assert_accepted(outcome, &format!("item {index}"));
    }
    assert_eq!(fakes.stats().batch_requests, 3);

    // A larger setting is clamped to Google's maximum of 100 calls.
    let clamped = client.clone().with_max_batch(500);
    let outcomes = clamped.send_batch(&items).await;
    assert!(outcomes.iter().all(|o| matches!(o, SendOutcome::Accepted { .. })), "{outcomes:?}");
    assert_eq!(fakes.stats().batch_requests, 3 + 2);

    let received: Vec<String> = fakes.received().into_iter().map(|m| m.to).collect();
    let expected: Vec<String> = messages.iter().chain(&messages).map(|m| m.to.clone()).collect();
    assert_eq!(received, expected, "every message recorded once per run, in order");
    fakes.shutdown().await;
}

/// Returns a batch body with `count` parts, each a send with `token`.
fn raw_batch(count: usize, token: &str) -> String {
    let mut body = String::new();
    for index in 0..count {
        body.push_str(&format!(
            "--b1\r\nContent-Type: application/http\r\nContent-ID: <p{index}>\r\n\r\n\
             POST /gmail/v1/users/me/messages/send HTTP/1.1\r\n\
             Content-Type: application/json\r\nAuthorization: Bearer {token}\r\n\r\n{{}}\r\n"
        ));
    }
    body.push_str("--b1--\r\n");
    body
}

async fn post_batch(url: &reqwest::Url, content_type: &str, body: String) -> (u16, String) {
    let response = http()
        .post(format!("{url}batch/gmail/v1"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("fake responds");
    (response.status().as_u16(), response.text().await.expect("body"))
}

#[tokio::test]
async fn fake_rejects_bad_batches() {
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config).await;
    fakes.register_gmail(TOKEN_A, MAILBOX_A, limits(1_000));
    let url = fakes.gmail_url();
    let mixed = "multipart/mixed; boundary=b1";

    let (status, body) = post_batch(&url, mixed, raw_batch(MAX_BATCH_CALLS + 1, TOKEN_A)).await;
    assert_eq!(status, 400, "101 parts: {body}");
    assert!(body.contains("more than the limit of 100"), "{body}");

    let (status, body) = post_batch(&url, "application/json", raw_batch(2, TOKEN_A)).await;
    assert_eq!(status, 400, "not multipart: {body}");
    assert!(body.contains("must be multipart/mixed"), "{body}");
    let (status, body) = post_batch(&url, mixed, "--b1--\r\n".to_owned()).await;
    assert_eq!(status, 400, "no parts: {body}");
    assert!(body.contains("contains no parts"), "{body}");
    let not_http = raw_batch(2, TOKEN_A).replace("application/http", "text/plain");
    let (status, body) = post_batch(&url, mixed, not_http).await;
    assert_eq!(status, 400, "parts not application/http: {body}");
    assert!(body.contains("must have Content-Type application/http"), "{body}");
    let repeated = raw_batch(2, TOKEN_A).replace("<p1>", "<p0>");
    let (status, body) = post_batch(&url, mixed, repeated).await;
    assert_eq!(status, 400, "repeated Content-ID: {body}");
    assert!(body.contains("repeats the Content-ID"), "{body}");
    let garbage = raw_batch(1, TOKEN_A).replace("POST /gmail", "POST\t\t/gmail");
    let (status, body) = post_batch(&url, mixed, garbage).await;
    assert_eq!(status, 400, "invalid request line: {body}");
    assert!(body.contains("invalid HTTP request"), "{body}");

    // Exactly 100 parts are read; each empty JSON body is invalid on its own.
    let (status, body) = post_batch(&url, mixed, raw_batch(MAX_BATCH_CALLS, TOKEN_A)).await;
    assert_eq!(status, 200, "100 parts: {body}");
    assert_eq!(body.matches("HTTP/1.1 400 Bad Request").count(), MAX_BATCH_CALLS);
    assert!(body.contains("Content-ID: <response-p99>"), "{body}");

    let stats_url = format!("{url}_fake/stats");
    let stats: FakeStats = http()
        .get(stats_url)
        .send()
        .await
        .expect("fake responds")
        .json()
        .await
        .expect("stats JSON");
    assert_eq!(stats.batch_requests, 7);
    assert_eq!(stats.rejected_requests, 6 + MAX_BATCH_CALLS as u64);
    assert!(fakes.received().is_empty());
    fakes.shutdown().await;
}

#[tokio::test]
async fn part_inherits_outer_token() {
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config).await;
    fakes.register_gmail(TOKEN_A, MAILBOX_A, limits(60));
    let message = crate::mime::build_message(&to("ann@example.org"), start_instant())
        .expect("message builds");
    let raw = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE, message);
    let part = |authorization: &str, id: &str| {
        format!(
            "--b1\r\nContent-Type: application/http\r\nContent-ID: <{id}>\r\n\r\n\
             POST /gmail/v1/users/me/messages/send HTTP/1.1\r\n\
             Content-Type: application/json\r\n{authorization}\r\n{{\"raw\":\"{raw}\"}}\r\n"
        )
    };
    // No header of its own: the outer token applies. A header of its own replaces it, even a
    // bad one.
    let body = [
        part("", "inherits"),
        part("Authorization: Basic dXNlcjpwYXNz\r\n", "own-basic"),
        "--b1--\r\n".to_owned(),
    ]
    .concat();

    let response = http()
        .post(format!("{}batch/gmail/v1", fakes.gmail_url()))
        .bearer_auth(TOKEN_A)
        .header("content-type", "multipart/mixed; boundary=b1")
        .body(body)
        .send()
        .await
        .expect("fake responds");
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await.expect("body");
    let (inherits, own) = text.split_once("<response-own-basic>").expect("second part");
    assert!(inherits.contains("<response-inherits>"), "{inherits}");
    assert!(inherits.contains("HTTP/1.1 200 OK"), "{inherits}");
    assert!(own.contains("HTTP/1.1 401 Unauthorized"), "{own}");
    assert_eq!(fakes.received().len(), 1);
    fakes.shutdown().await;
}

/// Starts a scripted HTTP server on loopback. For each request it reads, `reply` returns the
/// whole response to write, or `None` to hold the connection open without a response.
async fn scripted_server(
    reply: impl Fn(&str, &[u8]) -> Option<String> + Send + Sync + 'static,
) -> reqwest::Url {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let address = listener.local_addr().expect("local address");
    let reply = Arc::new(reply);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let reply = Arc::clone(&reply);
            tokio::spawn(async move {
                let Some((head, body)) = read_request(&mut stream).await else { return };
                match reply(&head, &body) {
                    Some(response) => {
                        let _ = stream.write_all(response.as_bytes()).await;
                        let _ = stream.shutdown().await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(30)).await,
                }
            });
        }
    });
    reqwest::Url::parse(&format!("http://{address}")).expect("valid URL")
}

/// Reads one request's head (as text) and its body of `Content-Length` bytes.
async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
        let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
        let length = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length: "))
            .and_then(|value| value.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if buffer.len() >= end + 4 + length {
            return Some((head, buffer[end + 4..end + 4 + length].to_vec()));
        }
    }
}

fn http_response(status: &str, headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Asserts that every outcome is in doubt with a reason containing `expected`.
fn assert_all_in_doubt(outcomes: &[SendOutcome], expected: &str) {
    for outcome in outcomes {
        let SendOutcome::InDoubt { reason } = outcome else {
            panic!("expected in doubt, got {outcome:?}");
        };
        assert!(reason.contains(expected), "{reason}");
    }
}

fn three_items() -> Vec<OutboundMessage> {
    ["ann@example.org", "bob@example.org", "carl@example.org"].map(to).to_vec()
}

#[tokio::test]
async fn outer_401_fails_every_part() {
    // The error text echoes the tokens, as a careless proxy might.
    let url = scripted_server(|_, _| {
        let body = format!(
            r#"{{"error":{{"code":401,"message":"bad {TOKEN_A} and {TOKEN_B}","status":"UNAUTHENTICATED","errors":[{{"reason":"authError","message":"x","domain":"global"}}]}}}}"#
        );
        Some(http_response("401 Unauthorized", "Content-Type: application/json\r\n", &body))
    })
    .await;
    let client = GmailClient::new(http(), url).with_clock(virtual_clock());
    let messages = three_items();
    let items = [
        (SendCredentials::Bearer(TOKEN_A), &messages[0]),
        (SendCredentials::Bearer(TOKEN_B), &messages[1]),
        (SendCredentials::Bearer(TOKEN_A), &messages[2]),
    ];
    let outcomes = client.send_batch(&items).await;

    assert_eq!(outcomes.len(), 3);
    for outcome in &outcomes {
        let SendOutcome::Unauthorized { reason } = outcome else {
            panic!("expected unauthorized, got {outcome:?}");
        };
        assert!(
            reason.starts_with("gmail 401 authError: bad [redacted] and [redacted]"),
            "{reason}"
        );
    }
    assert_no_token(&outcomes);
}

#[tokio::test]
async fn outer_429_fails_every_part() {
    let url = scripted_server(|_, _| {
        let body = r#"{"error":{"code":429,"message":"Too many","errors":[{"reason":"rateLimitExceeded"}]}}"#;
        Some(http_response("429 Too Many Requests", "Retry-After: 12\r\n", body))
    })
    .await;
    let client = GmailClient::new(http(), url).with_clock(virtual_clock());
    let messages = three_items();
    let items: Vec<_> = messages.iter().map(|m| (SendCredentials::Bearer(TOKEN_A), m)).collect();
    let outcomes = client.send_batch(&items).await;

    for outcome in &outcomes {
        let SendOutcome::Retryable { retry_after, .. } = outcome else {
            panic!("expected retryable, got {outcome:?}");
        };
        assert_eq!(*retry_after, Some(Duration::from_secs(12)));
    }
}

#[tokio::test]
async fn missing_part_is_in_doubt() {
    // Responds to every part but the last, and checks the outer request on the way.
    let url = scripted_server(|head, body| {
        let head = head.to_ascii_lowercase();
        assert!(head.starts_with("post /batch/gmail/v1 http/1.1"), "{head}");
        assert!(head.contains("authorization: bearer ya29."), "one shared token goes outside");
        let content_type = head.lines().find_map(|l| l.strip_prefix("content-type: "));
        let content_type = content_type.expect("content type").to_owned();
        let framed = [format!("Content-Type: {content_type}\r\n\r\n").as_bytes(), body].concat();
        let calls = read_batch(&framed).expect("client batch parses");

        let mut out = String::new();
        for call in &calls[..calls.len() - 1] {
            let id = call.content_id.as_deref().expect("content id");
            out.push_str(&format!(
                "--zz\r\nContent-Type: application/http\r\nContent-ID: <response-{id}>\r\n\r\n\
                 HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{{\"id\":\"m-{id}\"}}\r\n"
            ));
        }
        out.push_str("--zz--\r\n");
        Some(http_response("200 OK", "Content-Type: multipart/mixed; boundary=zz\r\n", &out))
    })
    .await;
    let client = GmailClient::new(http(), url).with_clock(virtual_clock());
    let messages = three_items();
    let items: Vec<_> = messages.iter().map(|m| (SendCredentials::Bearer(TOKEN_A), m)).collect();
    let outcomes = client.send_batch(&items).await;

    let first = assert_accepted(&outcomes[0], "ann");
    assert!(first.starts_with("m-"), "id of the first part: {first}");
    assert!(first.ends_with("+0"), "id of the first part: {first}");
    let second = assert_accepted(&outcomes[1], "bob");
    assert!(second.ends_with("+1"), "id of the second part: {second}");
    let SendOutcome::InDoubt { reason } = &outcomes[2] else {
        panic!("carl: expected in doubt, got {:?}", outcomes[2]);
    };
    assert!(reason.contains("no part for this message"), "{reason}");
}

#[tokio::test]
async fn unreadable_success_is_in_doubt() {
    let url = scripted_server(|_, _| {
        Some(http_response("200 OK", "Content-Type: application/json\r\n", "{}"))
    })
    .await;
    let client = GmailClient::new(http(), url).with_clock(virtual_clock());
    let messages = three_items();
    let items: Vec<_> = messages.iter().map(|m| (SendCredentials::Bearer(TOKEN_A), m)).collect();
    let outcomes = client.send_batch(&items).await;

    assert_all_in_doubt(&outcomes, "batch response is unreadable");
}

#[tokio::test]
async fn timeout_after_sending_is_in_doubt() {
    let url = scripted_server(|_, _| None).await;
    let client = GmailClient::new(http(), url)
        .with_clock(virtual_clock())
        .with_batch_timeout(Duration::from_millis(300));
    let messages = three_items();
    let items: Vec<_> = messages.iter().map(|m| (SendCredentials::Bearer(TOKEN_A), m)).collect();
    let outcomes = client.send_batch(&items).await;

    assert_all_in_doubt(&outcomes, "timed out");
}

#[tokio::test]
async fn dead_server_is_retryable_for_all() {
    let fakes = start_fakes(&virtual_clock(), |config| config).await;
    let url = fakes.gmail_url();
    fakes.shutdown().await;

    let client = GmailClient::new(http(), url);
    let messages = three_items();
    let items: Vec<_> = messages.iter().map(|m| (SendCredentials::Bearer(TOKEN_A), m)).collect();
    let outcomes = client.send_batch(&items).await;

    let expected =
        SendOutcome::Retryable { reason: "gmail: connection failed".to_owned(), retry_after: None };
    assert_eq!(outcomes, vec![expected; 3]);
}

/// `encode_batch` writes the body `send_batch` sends: the fake's batch reader finds every call
/// with its own token and a `users.messages.send` request line.
#[test]
fn encoded_batch_reads_back() {
    let client = GmailClient::new(http(), "http://127.0.0.1:9/".parse().expect("url"))
        .with_clock(virtual_clock());
    let messages: Vec<OutboundMessage> = (0..3).map(|n| to(&format!("c{n}@example.org"))).collect();
    let items: Vec<(SendCredentials<'_>, &OutboundMessage)> = messages
        .iter()
        .zip([TOKEN_A, TOKEN_B, TOKEN_A])
        .map(|(msg, token)| (SendCredentials::Bearer(token), msg))
        .collect();

    let encoded = client.encode_batch(&items).expect("batch encodes");

    assert!(encoded.content_type.starts_with("multipart/mixed; boundary="), "{encoded:?}");
    let mut framed = format!("Content-Type: {}\r\n\r\n", encoded.content_type).into_bytes();
    framed.extend_from_slice(&encoded.body);
    let calls = read_batch(&framed).expect("the fake reads the batch");
    assert_eq!(calls.len(), 3);
    for (call, token) in calls.iter().zip([TOKEN_A, TOKEN_B, TOKEN_A]) {
        assert_eq!(call.method, "POST");
        assert_eq!(call.path, "/gmail/v1/users/me/messages/send");
        assert_eq!(call.header("authorization"), Some(format!("Bearer {token}").as_str()));
    }
}

/// An item that cannot be sent makes `encode_batch` fail with the outcome `send_batch` gives it.
#[test]
fn encoded_batch_rejects_sms() {
    let client = GmailClient::new(http(), "http://127.0.0.1:9/".parse().expect("url"));
    let sms = phone(Channel::Sms, "+15005550006", "+15005550001", "hello");
    let email = to("ann@example.org");
    let items =
        [(SendCredentials::Bearer(TOKEN_A), &email), (SendCredentials::Bearer(TOKEN_A), &sms)];

    let error = client.encode_batch(&items).expect_err("an SMS is not an email");

    assert!(matches!(error, SendOutcome::Permanent { .. }), "{error:?}");
}
