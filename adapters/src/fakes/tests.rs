use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::TimeDelta;
use followup_core::clock::Clock as _;
use followup_core::domain::{Channel, Provider};
use followup_core::limits::SendLimits;
use serde_json::{Value, json};

use super::limiter::SlidingWindowLimiter;
use super::{ErrorPlan, FakeStats, ForcedOutcome, ReceivedMessage};
use crate::gmail::GmailClient;
use crate::mime::build_message;
use crate::outbound::{SendCredentials, SendOutcome};
use crate::testing::{email, http, start_fakes, start_instant, virtual_clock};

const TOKEN: &str = "ya29.fake-test-token";
const MAILBOX: &str = "owner@shop.example";
const SID: &str = "AC0123456789abcdef0123456789abcdef";
const AUTH_TOKEN: &str = "twilio-auth-token";
const NUMBER: &str = "+15005550006";

fn limits(per_minute: u32, per_day: u32) -> SendLimits {
    SendLimits { per_minute, per_day }
}

#[test]
fn minute_window_is_half_open() {
    let t0 = start_instant();
    let mut limiter = SlidingWindowLimiter::new(limits(2, 100));

    assert_eq!(limiter.try_acquire(t0), Ok(()));
    assert_eq!(limiter.try_acquire(t0 + TimeDelta::seconds(30)), Ok(()));
    let almost = t0 + TimeDelta::milliseconds(59_999);
    assert_eq!(limiter.try_acquire(almost), Err(Duration::from_millis(1)));
    assert_eq!(limiter.try_acquire(t0 + TimeDelta::seconds(60)), Ok(()), "t0 left the window");
    let wait = limiter.try_acquire(t0 + TimeDelta::seconds(61));
    assert_eq!(wait, Err(Duration::from_secs(29)), "the send at t0+30 leaves at t0+90");
}

#[test]
fn day_window_counts_rejected_nothing() {
    let t0 = start_instant();
    let mut limiter = SlidingWindowLimiter::new(limits(10, 2));

    assert_eq!(limiter.try_acquire(t0), Ok(()));
    assert_eq!(limiter.try_acquire(t0 + TimeDelta::hours(6)), Ok(()));
    for hour in [7, 12, 23] {
        let now = t0 + TimeDelta::hours(hour);
        let expected = Duration::from_secs(3600 * (24 - hour as u64));
        assert_eq!(limiter.try_acquire(now), Err(expected), "hour {hour}");
    }
    assert_eq!(limiter.try_acquire(t0 + TimeDelta::hours(24)), Ok(()));
}

#[test]
fn lowered_limit_waits_for_oldest_needed() {
    let t0 = start_instant();
    let mut limiter = SlidingWindowLimiter::new(limits(3, 100));
    for second in 0..3 {
        assert_eq!(limiter.try_acquire(t0 + TimeDelta::seconds(second)), Ok(()));
    }
    limiter.set_limits(limits(1, 100));
    let wait = limiter.try_acquire(t0 + TimeDelta::seconds(10));
    assert_eq!(wait, Err(Duration::from_secs(52)), "sends at t0 and t0+1 must leave first");
}

/// Posts `body` as JSON to the Gmail fake with the registered token.
async fn post_gmail(client: &reqwest::Client, base: &reqwest::Url, body: Value) -> (u16, Value) {
    let url = format!("{}gmail/v1/users/me/messages/send", base);
    let response =
        client.post(url).bearer_auth(TOKEN).json(&body).send().await.expect("fake responds");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

#[tokio::test]
async fn gmail_fake_checks_raw() {
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config).await;
    fakes.register_gmail(TOKEN, MAILBOX, limits(60, 2_000));
    let client = http();
    let base = fakes.gmail_url();

    let (status, body) = post_gmail(&client, &base, json!({})).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["errors"][0]["reason"], "invalidArgument");
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");

    let no_recipient = b"From: owner@shop.example\r\nSubject: hi\r\n\r\nbody\r\n";
    let raw = URL_SAFE_NO_PAD.encode(no_recipient);
    let (status, body) = post_gmail(&client, &base, json!({"raw": raw})).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["message"], "Recipient address required");

    let message = build_message(&email(MAILBOX, "ann@example.org", "s", "b"), start_instant())
        .expect("message builds");
    let unpadded = URL_SAFE_NO_PAD.encode(message);
    let (status, body) = post_gmail(&client, &base, json!({"raw": unpadded})).await;
    assert_eq!(status, 200, "unpadded raw is accepted: {body}");
    assert_eq!(body["labelIds"], json!(["SENT"]));
    assert_eq!(body["id"], body["threadId"]);

    let stats = fakes.stats();
    assert_eq!(stats.rejected_requests, 2);
    assert_eq!(stats.received(Provider::Gmail), 1);
    fakes.shutdown().await;
}

#[tokio::test]
async fn graph_fake_accepts_string_flag() {
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config).await;
    fakes.register_outlook(TOKEN, MAILBOX, limits(30, 10_000));
    let url = format!("{}v1.0/users/{MAILBOX}/sendMail", fakes.graph_url());
    let body = json!({
        "message": {
            "subject": "s",
            "body": {"contentType": "Text", "content": "b"},
            "toRecipients": [{"emailAddress": {"address": "ann@example.org"}}],
        },
        "saveToSentItems": "false",
    });

    let response =
        http().post(url).bearer_auth(TOKEN).json(&body).send().await.expect("fake responds");
    assert_eq!(response.status().as_u16(), 202);
    assert!(response.headers().contains_key("request-id"));
    assert!(response.bytes().await.expect("body").is_empty(), "202 has an empty body");
    fakes.shutdown().await;
}

/// Sends a `refresh_token` grant to the Microsoft token fake and returns its JSON response.
async fn refresh_outlook_token(
    fakes: &super::FakeProviders,
    refresh_token: &str,
    client_id: &str,
    client_secret: &str,
) -> Value {
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", client_id),
        ("client_secret", client_secret),
        ("scope", "Mail.Send"),
    ];
    let url = fakes.microsoft_token_url().replace("{tenant}", "common");
    let response = http().post(url).form(&form).send().await.expect("fake responds");
    response.json().await.expect("JSON")
}

#[tokio::test]
async fn graph_fake_refuses_expired_accepts_issued_token() {
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config).await;
    fakes.register_outlook(TOKEN, MAILBOX, limits(30, 10_000));
    fakes.set_access_token_expiry(
        Provider::Outlook,
        TOKEN,
        Some(clock.now() + TimeDelta::hours(1)),
    );
    fakes.register_oauth_client(Provider::Outlook, "client", "secret");
    fakes.register_refresh_token(Provider::Outlook, "refresh", MAILBOX);
    let url = format!("{}v1.0/users/{MAILBOX}/sendMail", fakes.graph_url());
    let body = json!({"message": {"subject": "s", "body": {"contentType": "Text", "content": "b"},
                      "toRecipients": [{"emailAddress": {"address": "ann@example.org"}}]}});
    let send = |token: String| http().post(url.clone()).bearer_auth(token).json(&body).send();

    // Valid until its expiry on the fakes' clock, refused from then on.
    let before = send(TOKEN.into()).await.expect("fake responds");
    assert_eq!(before.status().as_u16(), 202);
    clock.advance(TimeDelta::hours(1));
    let after = send(TOKEN.into()).await.expect("fake responds");
    assert_eq!(after.status().as_u16(), 401);

    // A token from the token endpoint sends as the refresh token's mailbox.
    let issued = refresh_outlook_token(&fakes, "refresh", "client", "secret").await;
    assert_eq!(issued["token_type"], "Bearer");
    assert_eq!(issued["expires_in"], 3_599);
    let access_token = issued["access_token"].as_str().expect("an access token").to_owned();
    let refreshed = send(access_token).await.expect("fake responds");
    assert_eq!(refreshed.status().as_u16(), 202);
    assert_eq!(fakes.stats().received(Provider::Outlook), 2);
    fakes.shutdown().await;
}

#[tokio::test]
async fn open_accounts_send_with_refreshed_outlook_tokens() {
    let clock = virtual_clock();
    let fakes =
        start_fakes(&clock, |config| config.with_accounts(super::Accounts::Open { limits: None }))
            .await;
    // Any client and refresh token are accepted, and the token issued must be able to send.
    let issued =
        refresh_outlook_token(&fakes, "never-registered-refresh-token", "any-client", "any-secret")
            .await;
    let access_token = issued["access_token"].as_str().expect("an access token").to_owned();
    let body = json!({"message": {"subject": "s", "body": {"contentType": "Text", "content": "b"},
                      "toRecipients": [{"emailAddress": {"address": "ann@example.org"}}]}});
    let url = format!("{}v1.0/me/sendMail", fakes.graph_url());
    let sent = http().post(url).bearer_auth(access_token).json(&body).send().await;
    assert_eq!(sent.expect("fake responds").status().as_u16(), 202);
    assert_eq!(fakes.stats().rate_limit_violations, 0);
    fakes.shutdown().await;
}

#[tokio::test]
async fn token_fake_checks_the_request() {
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config).await;
    fakes.register_oauth_client(Provider::Gmail, "client", "secret");
    fakes.register_refresh_token(Provider::Gmail, "refresh", MAILBOX);
    let url = fakes.google_token_url();
    type Form<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Form, u16, &str); 4] = [
        (
            &[("grant_type", "password"), ("client_id", "client"), ("client_secret", "secret")],
            400,
            "unsupported_grant_type",
        ),
        (
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", "refresh"),
                ("client_id", "client"),
                ("client_secret", "wrong"),
            ],
            401,
            "invalid_client",
        ),
        (
            &[
                ("grant_type", "refresh_token"),
                ("client_id", "client"),
                ("client_secret", "secret"),
            ],
            400,
            "invalid_request",
        ),
        (
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", "other"),
                ("client_id", "client"),
                ("client_secret", "secret"),
            ],
            400,
            "invalid_grant",
        ),
    ];
    for (form, status, error) in cases {
        let response = http().post(&url).form(form).send().await.expect("fake responds");
        assert_eq!(response.status().as_u16(), status, "{form:?}");
        let body: Value = response.json().await.expect("JSON error");
        assert_eq!(body["error"], error, "{form:?}");
    }
    let json_body = http()
        .post(&url)
        .json(&json!({"grant_type": "refresh_token", "refresh_token": "refresh"}))
        .send()
        .await
        .expect("fake responds");
    assert_eq!(json_body.status().as_u16(), 400, "a JSON body is not a form");
    fakes.shutdown().await;
}

#[tokio::test]
async fn twilio_fake_checks_fields() {
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config).await;
    let sms = limits(60, u32::MAX);
    fakes.register_twilio(SID, AUTH_TOKEN, NUMBER, sms, sms);
    let base = fakes.twilio_url();
    let client = http();

    let cases = [
        ("Messages.json", vec![("To", "+14155550123"), ("From", NUMBER)], 21602),
        ("Messages.json", vec![("From", NUMBER), ("Body", "hi")], 21604),
        ("Calls.json", vec![("To", "+14155550123"), ("From", NUMBER)], 21205),
    ];
    for (resource, form, code) in cases {
        let url = format!("{base}2010-04-01/Accounts/{SID}/{resource}");
        let response = client
            .post(url)
            .basic_auth(SID, Some(AUTH_TOKEN))
            .form(&form)
            .send()
            .await
            .expect("fake responds");
        assert_eq!(response.status().as_u16(), 400, "{resource} {form:?}");
        let body: Value = response.json().await.expect("JSON body");
        assert_eq!(body["code"], code, "{resource} {form:?}");
        assert_eq!(body["status"], 400);
        assert_eq!(body["more_info"], format!("https://www.twilio.com/docs/errors/{code}"));
    }

    let other_account = format!("{base}2010-04-01/Accounts/AC{}/Messages.json", "f".repeat(32));
    let form = [("To", "+14155550123"), ("From", NUMBER), ("Body", "hi")];
    let response = client
        .post(other_account)
        .basic_auth(SID, Some(AUTH_TOKEN))
        .form(&form)
        .send()
        .await
        .expect("fake responds");
    assert_eq!(response.status().as_u16(), 401, "credentials of one account on another's path");
    assert_eq!(fakes.stats().rejected_requests, 4);
    fakes.shutdown().await;
}

#[tokio::test]
async fn twilio_fake_returns_documented_fields() {
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config).await;
    let sms = limits(60, u32::MAX);
    fakes.register_twilio(SID, AUTH_TOKEN, NUMBER, sms, sms);
    let url = format!("{}2010-04-01/Accounts/{SID}/Messages.json", fakes.twilio_url());
    let form = [("To", "+14155550123"), ("From", NUMBER), ("Body", "hi")];

    let response = http()
        .post(url)
        .basic_auth(SID, Some(AUTH_TOKEN))
        .form(&form)
        .send()
        .await
        .expect("fake responds");
    assert_eq!(response.status().as_u16(), 201);
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body["status"], "queued");
    assert_eq!(body["account_sid"], SID);
    assert_eq!(body["from"], NUMBER);
    assert_eq!(body["num_segments"], "1");
    assert_eq!(body["date_created"], "Mon, 02 Mar 2026 09:00:00 +0000");
    for field in ["sid", "to", "body", "direction", "api_version", "uri", "subresource_uris"] {
        assert!(!body[field].is_null(), "field {field} in {body}");
    }
    fakes.shutdown().await;
}

#[tokio::test]
async fn inspection_endpoints_over_http() {
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config).await;
    fakes.register_gmail(TOKEN, MAILBOX, limits(60, 2_000));
    let gmail = GmailClient::new(http(), fakes.gmail_url()).with_clock(clock.clone());
    let msg = email(MAILBOX, "ann@example.org", "Checking in", "Any news?");
    let outcome = gmail.send(SendCredentials::Bearer(TOKEN), &msg).await;
    assert!(matches!(outcome, SendOutcome::Accepted { .. }), "got {outcome:?}");

    let client = http();
    let received_url = format!("{}_fake/received", fakes.twilio_url());
    let response = client.get(received_url).send().await.expect("fake responds");
    let received: Vec<ReceivedMessage> = response.json().await.expect("received JSON");
    assert_eq!(received, fakes.received());

    let stats_url = format!("{}_fake/stats", fakes.graph_url());
    let response = client.get(stats_url).send().await.expect("fake responds");
    let stats: FakeStats = response.json().await.expect("stats JSON");
    assert_eq!(stats, fakes.stats());
    assert_eq!(stats.received(Provider::Gmail), 1);
    fakes.shutdown().await;
}

#[tokio::test]
async fn stats_count_requests_in_flight_until_answered() {
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config.with_latency(Duration::from_millis(400))).await;
    fakes.register_gmail(TOKEN, MAILBOX, limits(60, 2_000));
    let gmail = GmailClient::new(http(), fakes.gmail_url()).with_clock(clock.clone());
    let msg = email(MAILBOX, "ann@example.org", "Checking in", "Any news?");
    let send = tokio::spawn(async move { gmail.send(SendCredentials::Bearer(TOKEN), &msg).await });

    let mut seen_in_flight = 0;
    for _ in 0..150 {
        seen_in_flight = fakes.stats().requests_in_flight;
        if seen_in_flight > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(seen_in_flight, 1, "the send was not seen in flight during the fake's latency");
    let outcome = send.await.expect("send task");
    assert!(matches!(outcome, SendOutcome::Accepted { .. }), "got {outcome:?}");
    assert_eq!(fakes.stats().requests_in_flight, 0, "an answered request left the gauge");
    fakes.shutdown().await;
}

#[tokio::test]
async fn error_plan_injects_then_clears() {
    let clock = virtual_clock();
    let plan =
        ErrorPlan::default().force_times("ann@example.org", ForcedOutcome::ServiceUnavailable, 1);
    let fakes = start_fakes(&clock, |config| config.with_errors(plan)).await;
    fakes.register_gmail(TOKEN, MAILBOX, limits(60, 2_000));
    let gmail = GmailClient::new(http(), fakes.gmail_url()).with_clock(clock.clone());
    let msg = email(MAILBOX, "ann@example.org", "s", "b");

    let first = gmail.send(SendCredentials::Bearer(TOKEN), &msg).await;
    let SendOutcome::Retryable { reason, .. } = first else {
        panic!("expected retryable, got {first:?}");
    };
    assert!(reason.starts_with("gmail 503 backendError"), "reason {reason}");
    let second = gmail.send(SendCredentials::Bearer(TOKEN), &msg).await;
    assert!(matches!(second, SendOutcome::Accepted { .. }), "got {second:?}");

    let stats = fakes.stats();
    assert_eq!(stats.injected_errors, 1);
    assert_eq!(stats.received(Provider::Gmail), 1);
    fakes.shutdown().await;
}

#[tokio::test]
async fn retryable_fraction_of_one_fails_all() {
    let clock = virtual_clock();
    let plan = ErrorPlan::default().with_retryable_fraction(1.0, 7);
    let fakes = start_fakes(&clock, |config| config.with_errors(plan)).await;
    let sms = limits(60, u32::MAX);
    fakes.register_twilio(SID, AUTH_TOKEN, NUMBER, sms, sms);
    let twilio = crate::twilio::TwilioClient::new(http(), fakes.twilio_url());
    let creds = SendCredentials::Basic { account_sid: SID, auth_token: AUTH_TOKEN };

    for _ in 0..3 {
        let msg = crate::testing::phone(Channel::Sms, NUMBER, "+14155550123", "hi");
        let outcome = twilio.send(creds, &msg).await;
        assert!(matches!(outcome, SendOutcome::Retryable { .. }), "got {outcome:?}");
    }
    assert_eq!(fakes.stats().injected_errors, 3);
    assert!(fakes.received().is_empty());
    fakes.shutdown().await;
}

#[tokio::test]
async fn sends_after_a_recorded_stop_are_counted() {
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config).await;
    let sms = limits(60, u32::MAX);
    fakes.register_twilio(SID, AUTH_TOKEN, NUMBER, sms, sms);
    let url = format!("{}2010-04-01/Accounts/{SID}/Messages.json", fakes.twilio_url());
    let client = http();
    let send = |to: &'static str| {
        let form = [("To", to), ("From", NUMBER), ("Body", "hi")];
        client.post(url.clone()).basic_auth(SID, Some(AUTH_TOKEN)).form(&form).send()
    };

    // A send at the instant of the stop came before it; one a second later did not.
    let stopped_at = clock.now();
    assert_eq!(send("+14155550123").await.expect("fake responds").status().as_u16(), 201);
    fakes.record_stop("+14155550123", stopped_at);
    clock.advance(TimeDelta::seconds(1));
    assert_eq!(send("+14155550123").await.expect("fake responds").status().as_u16(), 201);
    assert_eq!(send("+14155550124").await.expect("fake responds").status().as_u16(), 201);
    // A later stop of the same number does not move the first one.
    fakes.record_stop("+14155550123", clock.now() + TimeDelta::hours(1));

    assert_eq!(fakes.stats().sent_after_stop, 1, "only the send after the stop counts");
    fakes.shutdown().await;
}
