mod batch;
mod classify;
mod conformance;
mod shape;

use std::time::Duration;

use followup_core::limits::SendLimits;

use super::GraphClient;
use super::request::SendMailRequest;
use crate::fakes::{ErrorPlan, ForcedOutcome};
use crate::outbound::{OutboundMessage, SendCredentials, SendOutcome};
use crate::testing::{email, http, start_fakes, start_instant, virtual_clock};

const TOKEN: &str = "eyJ0eXAiOiJKV1Qi.graph-test-token";
const MAILBOX: &str = "owner@contoso.example";
const UNSUBSCRIBE: &str = "https://app.example/u/opaque-token-1";

fn limits(per_minute: u32, per_day: u32) -> SendLimits {
    SendLimits { per_minute, per_day }
}

fn with_unsubscribe(mut msg: OutboundMessage) -> OutboundMessage {
    msg.unsubscribe_url = Some(UNSUBSCRIBE.to_owned());
    msg
}

#[test]
fn request_body_has_graph_shape() {
    let msg = email(MAILBOX, "ann@example.org", "Checking in", "Any news?");
    let body = serde_json::to_value(SendMailRequest::new(&msg)).expect("serialises");
    let expected = serde_json::json!({
        "message": {
            "subject": "Checking in",
            "body": {"contentType": "Text", "content": "Any news?"},
            "toRecipients": [{"emailAddress": {"address": "ann@example.org", "name": "Ann Example"}}],
        },
        "saveToSentItems": false,
    });
    assert_eq!(body, expected);
}

#[tokio::test]
async fn accepted_send_is_recorded() {
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config).await;
    fakes.register_outlook(TOKEN, MAILBOX, limits(30, 10_000));
    let client = GraphClient::new(http(), fakes.graph_url()).with_clock(clock.clone());

    let msg = email(MAILBOX, "ann@example.org", "Checking in", "Any news?");
    let outcome = client.send(SendCredentials::Bearer(TOKEN), &msg).await;

    let SendOutcome::Accepted { provider_message_id } = outcome else {
        panic!("expected accepted, got {outcome:?}");
    };
    let received = fakes.received();
    assert_eq!(received.len(), 1);
    let message = &received[0];
    assert_eq!(message.provider_message_id, provider_message_id, "id is the request-id header");
    assert_eq!(message.from, MAILBOX);
    assert_eq!(message.to, "ann@example.org");
    assert_eq!(message.subject.as_deref(), Some("Checking in"));
    assert_eq!(message.body, "Any news?");
    assert_eq!(message.received_at, start_instant());
    fakes.shutdown().await;
}

#[tokio::test]
async fn unknown_token_is_unauthorized() {
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config).await;
    fakes.register_outlook(TOKEN, MAILBOX, limits(30, 10_000));
    let client = GraphClient::new(http(), fakes.graph_url()).with_clock(clock.clone());

    let msg = email(MAILBOX, "ann@example.org", "s", "b");
    let outcome = client.send(SendCredentials::Bearer("eyJ.revoked"), &msg).await;

    let SendOutcome::Unauthorized { reason } = outcome else {
        panic!("expected unauthorized, got {outcome:?}");
    };
    assert!(reason.starts_with("outlook 401 InvalidAuthenticationToken"), "reason {reason}");
    assert_eq!(fakes.stats().rejected_requests, 1);
    fakes.shutdown().await;
}

#[tokio::test]
async fn invalid_recipient_is_permanent() {
    let clock = virtual_clock();
    let plan = ErrorPlan::default().force("bounce@example.org", ForcedOutcome::RecipientRejected);
    let fakes = start_fakes(&clock, |config| config.with_errors(plan)).await;
    fakes.register_outlook(TOKEN, MAILBOX, limits(30, 10_000));
    let client = GraphClient::new(http(), fakes.graph_url()).with_clock(clock.clone());

    for to in ["bounce@example.org", "not-an-address"] {
        let msg = email(MAILBOX, to, "s", "b");
        let outcome = client.send(SendCredentials::Bearer(TOKEN), &msg).await;
        let SendOutcome::Permanent { reason } = outcome else {
            panic!("expected permanent for {to}, got {outcome:?}");
        };
        assert!(reason.starts_with("outlook 400 ErrorInvalidRecipients"), "reason {reason}");
    }
    assert!(fakes.received().is_empty());
    fakes.shutdown().await;
}

#[tokio::test]
async fn minute_limit_gives_fractional_retry_after() {
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config).await;
    fakes.register_outlook(TOKEN, MAILBOX, limits(2, 10_000));
    let client = GraphClient::new(http(), fakes.graph_url()).with_clock(clock.clone());
    let msg = email(MAILBOX, "ann@example.org", "s", "b");

    for _ in 0..2 {
        let outcome = client.send(SendCredentials::Bearer(TOKEN), &msg).await;
        assert!(matches!(outcome, SendOutcome::Accepted { .. }), "got {outcome:?}");
        clock.advance(chrono::Duration::milliseconds(250));
    }
    let outcome = client.send(SendCredentials::Bearer(TOKEN), &msg).await;
    let SendOutcome::Retryable { reason, retry_after } = outcome else {
        panic!("expected retryable, got {outcome:?}");
    };
    assert!(reason.starts_with("outlook 429 TooManyRequests"), "reason {reason}");
    assert_eq!(retry_after, Some(Duration::from_millis(59_500)));
    assert_eq!(fakes.stats().rate_limit_violations, 1);
    fakes.shutdown().await;
}

#[tokio::test]
async fn fifth_concurrent_request_is_throttled() {
    let clock = virtual_clock();
    let latency = Duration::from_millis(500);
    let fakes = start_fakes(&clock, |config| config.with_latency(latency)).await;
    fakes.register_outlook(TOKEN, MAILBOX, limits(1_000, 10_000));
    let client = GraphClient::new(http(), fakes.graph_url()).with_clock(clock.clone());

    let sends = (0..6).map(|i| {
        let client = client.clone();
        let msg = email(MAILBOX, &format!("c{i}@example.org"), "s", "b");
        async move { client.send(SendCredentials::Bearer(TOKEN), &msg).await }
    });
    let outcomes = futures_util::future::join_all(sends).await;

    let accepted = outcomes.iter().filter(|o| matches!(o, SendOutcome::Accepted { .. })).count();
    let throttled: Vec<&SendOutcome> = outcomes
        .iter()
        .filter(|o| matches!(o, SendOutcome::Retryable { reason, .. } if reason.contains("MailboxConcurrency")))
        .collect();
    assert!(accepted <= 4, "at most 4 run at once, accepted {accepted}");
    assert_eq!(accepted + throttled.len(), 6, "outcomes {outcomes:?}");
    assert_eq!(fakes.stats().rate_limit_violations, throttled.len() as u64);
    fakes.shutdown().await;
}

#[tokio::test]
async fn mime_send_records_list_unsubscribe() {
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config).await;
    fakes.register_outlook(TOKEN, MAILBOX, limits(30, 10_000));
    let client = GraphClient::new(http(), fakes.graph_url()).with_clock(clock.clone());

    let msg = with_unsubscribe(email(MAILBOX, "ann@example.org", "Checking in", "Any news?"));
    let outcome = client.send(SendCredentials::Bearer(TOKEN), &msg).await;

    let SendOutcome::Accepted { provider_message_id } = outcome else {
        panic!("expected accepted, got {outcome:?}");
    };
    let received = fakes.received();
    assert_eq!(received.len(), 1);
    let message = &received[0];
    assert_eq!(message.provider_message_id, provider_message_id);
    assert_eq!(message.list_unsubscribe.as_deref(), Some(format!("<{UNSUBSCRIBE}>").as_str()));
    assert_eq!(message.to, "ann@example.org");
    assert_eq!(message.subject.as_deref(), Some("Checking in"));
    assert_eq!(message.body.trim_end(), "Any news?");
    fakes.shutdown().await;
}

#[tokio::test]
async fn html_send_uses_json_html_body() {
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config).await;
    fakes.register_outlook(TOKEN, MAILBOX, limits(30, 10_000));
    let client = GraphClient::new(http(), fakes.graph_url()).with_clock(clock.clone());

    let mut msg = email(MAILBOX, "ann@example.org", "Checking in", "Any news?");
    msg.html_body = Some("<p>Any <b>news</b>?</p>".to_owned());
    let outcome = client.send(SendCredentials::Bearer(TOKEN), &msg).await;

    assert!(matches!(outcome, SendOutcome::Accepted { .. }), "got {outcome:?}");
    let received = fakes.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body, "<p>Any <b>news</b>?</p>");
    assert_eq!(received[0].list_unsubscribe, None, "the JSON form carries no List-Unsubscribe");
    fakes.shutdown().await;
}

#[tokio::test]
async fn five_concurrent_sends_lose_none() {
    let clock = virtual_clock();
    let latency = Duration::from_millis(300);
    let fakes = start_fakes(&clock, |config| config.with_latency(latency)).await;
    fakes.register_outlook(TOKEN, MAILBOX, limits(1_000, 10_000));
    let client = GraphClient::new(http(), fakes.graph_url()).with_clock(clock.clone());
    let messages: Vec<_> =
        (0..5).map(|i| email(MAILBOX, &format!("c{i}@example.org"), "s", "b")).collect();

    let sends = messages.iter().map(|msg| client.send(SendCredentials::Bearer(TOKEN), msg));
    let outcomes = futures_util::future::join_all(sends).await;

    let mut throttled = Vec::new();
    for (msg, outcome) in messages.iter().zip(&outcomes) {
        match outcome {
            SendOutcome::Accepted { .. } => {}
            SendOutcome::Retryable { reason, .. } => {
                let expected = "outlook 429 ApplicationThrottled: Application is over its \
                                MailboxConcurrency limit.";
                assert_eq!(reason, expected);
                throttled.push(msg);
            }
            other => panic!("expected accepted or retryable, got {other:?}"),
        }
    }
    assert!(!throttled.is_empty(), "a fifth concurrent request is throttled: {outcomes:?}");

    // Retried one at a time, the throttled sends go through: none is lost.
    for msg in throttled {
        let outcome = client.send(SendCredentials::Bearer(TOKEN), msg).await;
        assert!(
            matches!(outcome, SendOutcome::Accepted { .. }),
            "retry of {}: {outcome:?}",
            msg.to
        );
    }
    let mut recipients: Vec<String> = fakes.received().into_iter().map(|m| m.to).collect();
    recipients.sort();
    let expected: Vec<String> = messages.iter().map(|msg| msg.to.clone()).collect();
    assert_eq!(recipients, expected, "each message received exactly once");
    fakes.shutdown().await;
}
