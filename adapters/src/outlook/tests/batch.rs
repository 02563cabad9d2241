use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::{MAILBOX, TOKEN, limits, with_unsubscribe};
use crate::fakes::{ErrorPlan, ForcedOutcome};
use crate::http::{HttpSettings, build_http_client};
use crate::outbound::{SendCredentials, SendOutcome};
use crate::outlook::GraphClient;
use crate::testing::{email, http, start_fakes, virtual_clock};

const CREDS: SendCredentials<'static> = SendCredentials::Bearer(TOKEN);

fn recipient(index: usize) -> String {
    match index {
        3 => "bounce@example.org".to_owned(),
        17 => "flaky@example.org".to_owned(),
        _ => format!("c{index}@example.org"),
    }
}

#[tokio::test]
async fn batch_of_25_pairs_mixed_results() {
    let clock = virtual_clock();
    let plan = ErrorPlan::default()
        .force("bounce@example.org", ForcedOutcome::RecipientRejected)
        .force_times("flaky@example.org", ForcedOutcome::ServiceUnavailable, 1);
    let fakes = start_fakes(&clock, |config| config.with_errors(plan)).await;
    fakes.register_outlook(TOKEN, MAILBOX, limits(23, 10_000));
    let client = GraphClient::new(http(), fakes.graph_url()).with_clock(clock.clone());

    // A send a quarter second before the batch makes the batch's 429 wait a fractional time,
    // until that send leaves the minute window.
    let early = client.send(CREDS, &email(MAILBOX, "early@example.org", "s", "b")).await;
    assert_eq!(early.kind(), "accepted", "{early:?}");
    clock.advance(chrono::Duration::milliseconds(250));

    let messages: Vec<_> = (0..25).map(|i| email(MAILBOX, &recipient(i), "s", "b")).collect();
    let outcomes = client.send_batch(CREDS, &messages).await;

    assert_eq!(outcomes.len(), 25);
    assert_eq!(fakes.stats().batch_requests, 2, "25 messages go in two batches");
    assert_eq!(outcomes[3].kind(), "permanent", "{:?}", outcomes[3]);
    assert!(outcomes[3].reason().starts_with("outlook 400 ErrorInvalidRecipients"));
    let SendOutcome::Retryable { reason: flaky, retry_after } = &outcomes[17] else {
        panic!("expected retryable, got {:?}", outcomes[17]);
    };
    assert!(flaky.starts_with("outlook 503 ServiceNotAvailable"), "reason {flaky}");
    // The fake dates its retry one second after its clock, and an HTTP-date drops the
    // fraction: from 0.25 s past the minute, the wait is 0.75 s.
    assert_eq!(*retry_after, Some(Duration::from_millis(750)), "HTTP-date Retry-After");

    // 23 sends fit the minute: the early one and 22 of the batch. One more is throttled.
    let throttled: Vec<usize> = (0..25)
        .filter(|&i| outcomes[i].reason().starts_with("outlook 429 TooManyRequests"))
        .collect();
    assert_eq!(throttled.len(), 1, "outcomes {outcomes:?}");
    let throttled = throttled[0];
    let SendOutcome::Retryable { retry_after, .. } = outcomes[throttled] else {
        panic!("expected retryable, got {:?}", outcomes[throttled]);
    };
    assert_eq!(retry_after, Some(Duration::from_millis(59_750)), "fractional Retry-After");

    // Every other message is accepted with the id the fake recorded for its recipient.
    let received = fakes.received();
    assert_eq!(received.len(), 23);
    for (index, outcome) in outcomes.iter().enumerate() {
        if [3, 17, throttled].contains(&index) {
            continue;
        }
        let SendOutcome::Accepted { provider_message_id } = outcome else {
            panic!("message {index}: expected accepted, got {outcome:?}");
        };
        let recorded = received.iter().find(|message| message.to == recipient(index));
        let recorded = recorded.unwrap_or_else(|| panic!("message {index} was not recorded"));
        assert_eq!(&recorded.provider_message_id, provider_message_id, "message {index}");
    }

    // The throttled message alone is retried once its wait has passed, through sendMail.
    let wait = retry_after.expect("wait");
    clock.advance(chrono::Duration::from_std(wait).expect("wait fits"));
    let retried = client.send_batch(CREDS, &messages[throttled..=throttled]).await;
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].kind(), "accepted", "{retried:?}");
    assert_eq!(fakes.stats().batch_requests, 2, "a lone message is no batch");
    let received = fakes.received();
    let copies = received.iter().filter(|message| message.to == recipient(throttled)).count();
    assert_eq!(copies, 1, "sent once");
    fakes.shutdown().await;
}

#[tokio::test]
async fn batch_records_mime_and_json_forms() {
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config).await;
    fakes.register_outlook(TOKEN, MAILBOX, limits(30, 10_000));
    let client = GraphClient::new(http(), fakes.graph_url()).with_clock(clock.clone());

    let messages = [
        with_unsubscribe(email(MAILBOX, "ann@example.org", "First", "Any news?")),
        email(MAILBOX, "bob@example.org", "Second", "Plain"),
        with_unsubscribe(email(MAILBOX, "cy@example.org", "Third", "Still there?")),
    ];
    let outcomes = client.send_batch(CREDS, &messages).await;

    let kinds: Vec<&str> = outcomes.iter().map(SendOutcome::kind).collect();
    assert_eq!(kinds, ["accepted"; 3], "{outcomes:?}");
    let received = fakes.received();
    assert_eq!(received.len(), 3);
    for msg in &messages {
        let recorded = received.iter().find(|m| m.to == msg.to).expect("recorded");
        let expected = msg.unsubscribe_url.as_ref().map(|url| format!("<{url}>"));
        assert_eq!(recorded.list_unsubscribe, expected, "to {}", msg.to);
        assert_eq!(recorded.subject, msg.subject, "to {}", msg.to);
        assert_eq!(recorded.body.trim_end(), msg.body, "to {}", msg.to);
        assert_eq!(recorded.from, MAILBOX);
    }
    assert_eq!(fakes.stats().batch_requests, 1);
    fakes.shutdown().await;
}

#[tokio::test]
async fn batch_outer_401_fails_every_message() {
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config).await;
    fakes.register_outlook(TOKEN, MAILBOX, limits(30, 10_000));
    let client = GraphClient::new(http(), fakes.graph_url()).with_clock(clock.clone());

    let messages: Vec<_> = (0..3).map(|i| email(MAILBOX, &recipient(i), "s", "b")).collect();
    let outcomes = client.send_batch(SendCredentials::Bearer("eyJ.revoked"), &messages).await;

    assert_eq!(outcomes.len(), 3);
    for outcome in &outcomes {
        let SendOutcome::Unauthorized { reason } = outcome else {
            panic!("expected unauthorized, got {outcome:?}");
        };
        assert!(reason.starts_with("outlook 401 InvalidAuthenticationToken"), "{reason}");
        assert!(reason.ends_with("(the whole $batch request failed)"), "{reason}");
    }
    assert!(fakes.received().is_empty());
    fakes.shutdown().await;
}

#[tokio::test]
async fn unsendable_messages_fail_alone() {
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config).await;
    fakes.register_outlook(TOKEN, MAILBOX, limits(30, 10_000));
    let client = GraphClient::new(http(), fakes.graph_url()).with_clock(clock.clone());

    let mut sms = email(MAILBOX, "+14155550123", "s", "b");
    sms.channel = followup_core::domain::Channel::Sms;
    let mut bad_url = email(MAILBOX, "bob@example.org", "s", "b");
    bad_url.unsubscribe_url = Some("http://app.example/u/1".to_owned());
    let messages = [email(MAILBOX, "ann@example.org", "s", "b"), sms, bad_url];
    let outcomes = client.send_batch(CREDS, &messages).await;

    let kinds: Vec<&str> = outcomes.iter().map(SendOutcome::kind).collect();
    assert_eq!(kinds, ["accepted", "permanent", "permanent"], "{outcomes:?}");
    assert!(outcomes[1].reason().contains("cannot send on channel"), "{outcomes:?}");
    assert!(outcomes[2].reason().contains("unsubscribe URL"), "{outcomes:?}");
    assert!(!outcomes[2].reason().contains("app.example"), "the url stays out of reasons");
    assert_eq!(fakes.stats().batch_requests, 0, "one sendable message goes through sendMail");
    assert_eq!(fakes.received().len(), 1);

    let empty = client.send_batch(CREDS, &[]).await;
    assert!(empty.is_empty());
    fakes.shutdown().await;
}

/// Starts a stand-in for Graph on loopback that reads each request whole and responds to every
/// one with `response`, or never responds when it is `None`. It produces what the fakes
/// cannot: a whole `$batch` failing, a response missing ids, a server that stops responding.
async fn scripted_graph(response: Option<String>) -> reqwest::Url {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind loopback");
    let address = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer(stream, response.clone()));
        }
    });
    reqwest::Url::parse(&format!("http://{address}")).expect("url")
}

async fn answer(mut stream: TcpStream, response: Option<String>) {
    let mut request = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        let Ok(read) = stream.read(&mut buffer).await else { return };
        if read == 0 {
            return;
        }
        request.extend_from_slice(&buffer[..read]);
        if request_complete(&request) {
            break;
        }
    }
    match response {
        Some(response) => {
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
        None => tokio::time::sleep(Duration::from_secs(30)).await,
    }
}

/// Returns whether `request` contains its headers and the `Content-Length` bytes of its body.
fn request_complete(request: &[u8]) -> bool {
    let Some(end) = request.windows(4).position(|window| window == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    request.len() >= end + 4 + length
}

fn http_response(status: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut response = format!("HTTP/1.1 {status}\r\nconnection: close\r\n");
    for (name, value) in headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    response
}

fn three_messages() -> Vec<crate::outbound::OutboundMessage> {
    (0..3).map(|i| email(MAILBOX, &format!("c{i}@example.org"), "s", "b")).collect()
}

#[tokio::test]
async fn outer_503_fails_every_message() {
    let body = r#"{"error":{"code":"ServiceNotAvailable","message":"Service unavailable."}}"#;
    let headers = [("content-type", "application/json"), ("retry-after", "7")];
    let base = scripted_graph(Some(http_response("503 Service Unavailable", &headers, body))).await;
    let client = GraphClient::new(http(), base).with_clock(virtual_clock());

    let outcomes = client.send_batch(CREDS, &three_messages()).await;

    assert_eq!(outcomes.len(), 3);
    for outcome in outcomes {
        let SendOutcome::Retryable { reason, retry_after } = outcome else {
            panic!("expected retryable, got {outcome:?}");
        };
        assert!(reason.starts_with("outlook 503 ServiceNotAvailable"), "{reason}");
        assert_eq!(retry_after, Some(Duration::from_secs(7)));
    }
}

#[tokio::test]
async fn missing_and_unpaired_ids_are_in_doubt() {
    // The responses come in another order than the requests; "9" pairs with nothing and "2"
    // is absent.
    let throttled = json!({"error": {"code": "TooManyRequests", "message": "Please retry"}});
    let body = json!({"responses": [
        {"id": "1", "status": 429, "headers": {"Retry-After": "3"}, "body": throttled},
        {"id": "9", "status": 202, "headers": {}},
        {"id": "0", "status": 202, "headers": {"request-id": "inner-0"}},
    ]});
    let headers = [("content-type", "application/json")];
    let base = scripted_graph(Some(http_response("200 OK", &headers, &body.to_string()))).await;
    let client = GraphClient::new(http(), base).with_clock(virtual_clock());

    let outcomes = client.send_batch(CREDS, &three_messages()).await;

    let accepted = SendOutcome::Accepted { provider_message_id: "inner-0".to_owned() };
    assert_eq!(outcomes[0], accepted);
    let SendOutcome::Retryable { retry_after, .. } = &outcomes[1] else {
        panic!("expected retryable, got {:?}", outcomes[1]);
    };
    assert_eq!(*retry_after, Some(Duration::from_secs(3)));
    assert_eq!(outcomes[2].kind(), "in doubt", "{:?}", outcomes[2]);
    assert!(outcomes[2].reason().contains("no entry for this message"), "{:?}", outcomes[2]);
}

#[tokio::test]
async fn unreadable_batch_response_is_in_doubt() {
    let base = scripted_graph(Some(http_response("200 OK", &[], "<html>gateway</html>"))).await;
    let client = GraphClient::new(http(), base).with_clock(virtual_clock());

    let outcomes = client.send_batch(CREDS, &three_messages()).await;

    let kinds: Vec<&str> = outcomes.iter().map(SendOutcome::kind).collect();
    assert_eq!(kinds, ["in doubt"; 3], "{outcomes:?}");
}

#[tokio::test]
async fn echoed_token_is_scrubbed() {
    let error =
        json!({"error": {"code": "BadRequest", "message": format!("token {TOKEN} rejected")}});
    let responses: Vec<Value> =
        (0..3).map(|i| json!({"id": i.to_string(), "status": 400, "body": error})).collect();
    let body = json!({"responses": responses}).to_string();
    let base = scripted_graph(Some(http_response("200 OK", &[], &body))).await;
    let client = GraphClient::new(http(), base).with_clock(virtual_clock());

    let outcomes = client.send_batch(CREDS, &three_messages()).await;

    for outcome in outcomes {
        let SendOutcome::Permanent { reason } = outcome else {
            panic!("expected permanent, got {outcome:?}");
        };
        assert!(!reason.contains(TOKEN), "token leaked: {reason}");
        assert!(reason.contains("[redacted]"), "{reason}");
    }
}

#[tokio::test]
async fn batch_transport_failures_are_classified() {
    // A port that was just free: nothing listens there, so the connection is refused.
    let closed = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind loopback");
    let address = closed.local_addr().expect("local address");
    drop(closed);
    let base = reqwest::Url::parse(&format!("http://{address}")).expect("url");
    let client = GraphClient::new(http(), base).with_clock(virtual_clock());
    let outcomes = client.send_batch(CREDS, &three_messages()).await;
    let refused = SendOutcome::Retryable {
        reason: "outlook: connection failed".to_owned(),
        retry_after: None,
    };
    assert_eq!(outcomes, vec![refused; 3]);

    let settings =
        HttpSettings { request_timeout: Duration::from_millis(300), ..HttpSettings::default() };
    let impatient = build_http_client(&settings).expect("http client builds");
    let base = scripted_graph(None).await;
    let client = GraphClient::new(impatient, base).with_clock(virtual_clock());
    let outcomes = client.send_batch(CREDS, &three_messages()).await;
    let kinds: Vec<&str> = outcomes.iter().map(SendOutcome::kind).collect();
    assert_eq!(kinds, ["in doubt"; 3], "a timeout after sending: {outcomes:?}");
}

/// `encode_batch` writes the JSON `send_batch` sends: one `sendMail` request per message, with
/// ids by position, and the MIME form for a message with an unsubscribe URL.
#[test]
fn encoded_batch_has_one_request_per_message() {
    let client = GraphClient::new(http(), "http://127.0.0.1:9/".parse().expect("url"))
        .with_clock(virtual_clock());
    let messages = vec![
        email(MAILBOX, "ann@example.org", "Checking in", "Any news?"),
        with_unsubscribe(email(MAILBOX, "bob@example.org", "Checking in", "Any news?")),
    ];

    let body = client.encode_batch(&messages).expect("batch encodes");

    let batch: Value = serde_json::from_slice(&body).expect("body is JSON");
    let requests = batch["requests"].as_array().expect("requests array");
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0]["id"], "0");
    assert_eq!(requests[0]["url"], "/me/sendMail");
    assert_eq!(requests[0]["headers"]["Content-Type"], "application/json");
    assert_eq!(
        requests[0]["body"]["message"]["toRecipients"][0]["emailAddress"]["address"],
        "ann@example.org"
    );
    assert_eq!(requests[1]["id"], "1");
    assert_eq!(requests[1]["headers"]["Content-Type"], "text/plain");
    assert!(requests[1]["body"].is_string(), "MIME form travels as base64 text");
}

/// More messages than one `$batch` takes are rejected, not cut short.
#[test]
fn encoded_batch_rejects_21_messages() {
    let client = GraphClient::new(http(), "http://127.0.0.1:9/".parse().expect("url"));
    let messages: Vec<_> = (0..21)
        .map(|n| email(MAILBOX, &format!("c{n}@example.org"), "Checking in", "Any news?"))
        .collect();

    let error = client.encode_batch(&messages).expect_err("21 is over Graph's 20");

    let SendOutcome::Permanent { reason } = error else { panic!("{error:?}") };
    assert!(reason.contains("21 messages"), "{reason}");
}
