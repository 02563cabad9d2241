use std::time::Duration;

use followup_core::limits::SendLimits;

use super::GraphClient;
use super::request::SendMailRequest;
use crate::fakes::{ErrorPlan, ForcedOutcome};
use crate::outbound::{SendCredentials, SendOutcome};
use crate::testing::{email, http, start_fakes, start_instant, virtual_clock};

const TOKEN: &str = "eyJ0eXAiOiJKV1Qi.graph-test-token";
const MAILBOX: &str = "owner@contoso.example";

fn limits(per_minute: u32, per_day: u32) -> SendLimits {
    SendLimits { per_minute, per_day }
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
