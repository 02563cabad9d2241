use std::time::Duration;

use followup_core::domain::Channel;
use followup_core::limits::SendLimits;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::Value;

use super::TwilioClient;
use super::request::{escape_xml, say_twiml};
use super::response::QUEUE_FULL_RETRY_AFTER;
use super::service::basic_auth;
use crate::fakes::{ErrorPlan, FakeProviders, ForcedOutcome};
use crate::outbound::{SendCredentials, SendOutcome};
use crate::testing::{http, phone, spec_file, start_fakes, virtual_clock};

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const AUTH_TOKEN: &str = "twilio-auth-token-secret";
const NUMBER: &str = "+15005550006";
const CONTACT: &str = "+14155550123";

fn creds() -> SendCredentials<'static> {
    SendCredentials::Basic { account_sid: SID, auth_token: AUTH_TOKEN }
}

fn register(fakes: &FakeProviders, per_minute: u32) {
    let limits = SendLimits { per_minute, per_day: u32::MAX };
    fakes.register_twilio(SID, AUTH_TOKEN, NUMBER, limits, limits);
}

fn is_sid(sid: &str, prefix: &str) -> bool {
    sid.len() == 34 && sid.starts_with(prefix) && sid[2..].chars().all(|c| c.is_ascii_hexdigit())
}

#[test]
fn twiml_escapes_and_limits() {
    assert_eq!(escape_xml("a<b>&\"c'\u{7}"), "a&lt;b&gt;&amp;&quot;c&apos;");
    assert_eq!(
        say_twiml("Hi & bye").as_deref(),
        Ok("<Response><Say>Hi &amp; bye</Say></Response>")
    );

    let overhead = "<Response><Say></Say></Response>".len();
    assert!(say_twiml(&"a".repeat(4_000 - overhead)).is_ok());
    let too_long = say_twiml(&"a".repeat(4_001 - overhead)).expect_err("over the limit");
    assert_eq!(too_long.chars, 4_001);
}

#[tokio::test]
async fn sms_is_recorded() {
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config).await;
    register(&fakes, 60);
    let client = TwilioClient::new(http(), fakes.twilio_url()).with_clock(clock.clone());

    let msg = phone(Channel::Sms, NUMBER, CONTACT, "Any news? Reply STOP to opt out");
    let outcome = client.send(creds(), &msg).await;

    let SendOutcome::Accepted { provider_message_id } = outcome else {
        panic!("expected accepted, got {outcome:?}");
    };
    assert!(is_sid(&provider_message_id, "SM"), "sid {provider_message_id}");
    let received = fakes.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].channel, Channel::Sms);
    assert_eq!(received[0].from, NUMBER);
    assert_eq!(received[0].to, CONTACT);
    assert_eq!(received[0].body, msg.body);
    assert_eq!(received[0].provider_message_id, provider_message_id);
    fakes.shutdown().await;
}

#[tokio::test]
async fn call_speaks_escaped_text() {
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config).await;
    register(&fakes, 60);
    let client = TwilioClient::new(http(), fakes.twilio_url()).with_clock(clock.clone());

    let msg = phone(Channel::Call, NUMBER, CONTACT, "Hello <Ann> & \"co\"");
    let outcome = client.send(creds(), &msg).await;

    let SendOutcome::Accepted { provider_message_id } = outcome else {
        panic!("expected accepted, got {outcome:?}");
    };
    assert!(is_sid(&provider_message_id, "CA"), "sid {provider_message_id}");
    let received = fakes.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].channel, Channel::Call);
    assert_eq!(received[0].body, msg.body);
    fakes.shutdown().await;
}

#[tokio::test]
async fn wrong_token_is_unauthorized() {
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config).await;
    register(&fakes, 60);
    let client = TwilioClient::new(http(), fakes.twilio_url()).with_clock(clock.clone());

    let wrong = SendCredentials::Basic { account_sid: SID, auth_token: "stale-token" };
    let outcome = client.send(wrong, &phone(Channel::Sms, NUMBER, CONTACT, "hi")).await;

    let SendOutcome::Unauthorized { reason } = outcome else {
        panic!("expected unauthorized, got {outcome:?}");
    };
    assert_eq!(reason, "twilio 401 code 20003: Authenticate");
    fakes.shutdown().await;
}

#[tokio::test]
async fn recipient_errors_are_permanent() {
    let clock = virtual_clock();
    let plan = ErrorPlan::default().force("+14155550199", ForcedOutcome::RecipientRejected);
    let fakes = start_fakes(&clock, |config| config.with_errors(plan)).await;
    register(&fakes, 60);
    let client = TwilioClient::new(http(), fakes.twilio_url()).with_clock(clock.clone());

    let cases = [
        (NUMBER, "4155550123", "twilio 400 code 21211"),
        (NUMBER, "+14155550199", "twilio 400 code 21610"),
        ("+15005550001", CONTACT, "twilio 400 code 21606"),
    ];
    for (from, to, expected) in cases {
        let outcome = client.send(creds(), &phone(Channel::Sms, from, to, "hi")).await;
        let SendOutcome::Permanent { reason } = outcome else {
            panic!("expected permanent for {from} -> {to}, got {outcome:?}");
        };
        assert!(reason.starts_with(expected), "reason {reason}, expected {expected}");
    }
    assert!(fakes.received().is_empty());
    fakes.shutdown().await;
}

#[tokio::test]
async fn minute_limit_gives_retryable() {
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config).await;
    register(&fakes, 1);
    let client = TwilioClient::new(http(), fakes.twilio_url()).with_clock(clock.clone());
    let msg = phone(Channel::Sms, NUMBER, CONTACT, "hi");

    let first = client.send(creds(), &msg).await;
    assert!(matches!(first, SendOutcome::Accepted { .. }), "got {first:?}");
    let second = client.send(creds(), &msg).await;
    let expected = SendOutcome::Retryable {
        reason: "twilio 429 code 20429: Too Many Requests".to_owned(),
        retry_after: None,
    };
    assert_eq!(second, expected);
    assert_eq!(fakes.stats().rate_limit_violations, 1);

    let call = client.send(creds(), &phone(Channel::Call, NUMBER, CONTACT, "hi")).await;
    assert!(matches!(call, SendOutcome::Accepted { .. }), "calls have their own limit: {call:?}");
    fakes.shutdown().await;
}

#[tokio::test]
async fn overlong_call_is_not_sent() {
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config).await;
    register(&fakes, 60);
    let client = TwilioClient::new(http(), fakes.twilio_url()).with_clock(clock.clone());

    let outcome =
        client.send(creds(), &phone(Channel::Call, NUMBER, CONTACT, &"a".repeat(5_000))).await;
    assert!(matches!(outcome, SendOutcome::Permanent { .. }), "got {outcome:?}");
    assert_eq!(fakes.stats().rejected_requests, 0, "no request left the client");
    fakes.shutdown().await;
}

#[tokio::test]
async fn error_codes_are_classified() {
    // (code, channel, HTTP status, class, wait)
    let cases: [(u32, Channel, u16, &str, Option<Duration>); 13] = [
        (21211, Channel::Sms, 400, "permanent", None),
        (21610, Channel::Sms, 400, "permanent", None),
        (21614, Channel::Sms, 400, "permanent", None),
        (21606, Channel::Sms, 400, "permanent", None),
        (21608, Channel::Sms, 400, "permanent", None),
        (21408, Channel::Sms, 400, "permanent", None),
        (20429, Channel::Sms, 429, "retryable", None),
        (21611, Channel::Sms, 400, "retryable", Some(QUEUE_FULL_RETRY_AFTER)),
        (22005, Channel::Call, 400, "retryable", Some(QUEUE_FULL_RETRY_AFTER)),
        (20003, Channel::Sms, 401, "unauthorized", None),
        (20003, Channel::Call, 401, "unauthorized", None),
        (20500, Channel::Sms, 500, "retryable", None),
        (20503, Channel::Call, 503, "retryable", None),
    ];
    let recipient = |index: usize| format!("+1415555{:04}", 100 + index);
    let plan = cases.iter().enumerate().fold(ErrorPlan::default(), |plan, (index, case)| {
        plan.force(recipient(index), ForcedOutcome::TwilioError(case.0))
    });
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config.with_errors(plan)).await;
    register(&fakes, 60);
    let client = TwilioClient::new(http(), fakes.twilio_url()).with_clock(clock.clone());

    for (index, (code, channel, status, class, wait)) in cases.into_iter().enumerate() {
        let outcome = client.send(creds(), &phone(channel, NUMBER, &recipient(index), "hi")).await;
        assert_eq!(outcome.kind(), class, "code {code}: {outcome:?}");
        let prefix = format!("twilio {status} code {code}");
        assert!(outcome.reason().starts_with(&prefix), "code {code}: {outcome:?}");
        let opted_out = crate::twilio::response::is_opted_out(&outcome);
        assert_eq!(opted_out, code == 21610, "only 21610 is an opt-out: {outcome:?}");
        if let SendOutcome::Retryable { retry_after, .. } = outcome {
            assert_eq!(retry_after, wait, "code {code}");
        }
    }
    assert!(fakes.received().is_empty());
    assert_eq!(fakes.stats().injected_errors, 13);
    fakes.shutdown().await;
}

/// Checks `request` against the operation that its method and path name in the Twilio
/// OpenAPI description `spec`, and returns every mismatch. A mismatch is a missing operation,
/// a content type the operation does not accept, a form field it does not define, a missing
/// required field, or missing HTTP Basic credentials.
fn openapi_problems(spec: &Value, request: &reqwest::Request) -> Vec<String> {
    let method = request.method().as_str().to_ascii_lowercase();
    let path = request.url().path();
    let Some((template, operation)) = find_operation(spec, path, &method) else {
        return vec![format!("no operation {method} {path} in the description")];
    };

    let mut problems = Vec::new();
    let authorization = request.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    if !authorization.is_some_and(|value| value.starts_with("Basic ")) {
        problems.push(format!("{template}: no HTTP Basic credentials"));
    }

    let content_type = request.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let essence = content_type.unwrap_or_default().split(';').next().unwrap_or_default().trim();
    let media = &operation["requestBody"]["content"][essence];
    if !media.is_object() {
        problems.push(format!("{template}: content type {essence:?} is not accepted"));
        return problems;
    }

    let body = request.body().and_then(reqwest::Body::as_bytes).unwrap_or_default();
    let fields: Vec<(String, String)> = match serde_urlencoded::from_bytes(body) {
        Ok(fields) => fields,
        Err(err) => {
            problems.push(format!("{template}: the body is not a form: {err}"));
            return problems;
        }
    };
    let schema = &media["schema"];
    for (name, _) in &fields {
        if !schema["properties"][name].is_object() {
            problems.push(format!("{template}: unknown field {name}"));
        }
    }
    let required = schema["required"].as_array().cloned().unwrap_or_default();
    for name in required.iter().filter_map(Value::as_str) {
        if !fields.iter().any(|(field, _)| field == name) {
            problems.push(format!("{template}: required field {name} is missing"));
        }
    }
    problems
}

/// Finds the path template of `spec` that `path` matches, a `{name}` segment matching any
/// segment, and its operation for `method`.
fn find_operation<'a>(spec: &'a Value, path: &str, method: &str) -> Option<(&'a str, &'a Value)> {
    let segments: Vec<&str> = path.split('/').collect();
    spec["paths"].as_object()?.iter().find_map(|(template, item)| {
        let pattern: Vec<&str> = template.split('/').collect();
        let matches = pattern.len() == segments.len()
            && pattern.iter().zip(&segments).all(|(expected, actual)| {
                (expected.starts_with('{') && !actual.is_empty()) || expected == actual
            });
        let operation = item.get(method).filter(|_| matches)?;
        Some((template.as_str(), operation))
    })
}

fn twilio_spec() -> Value {
    let text =
        std::fs::read_to_string(spec_file("twilio/twilio_api_v2010.json")).expect("spec readable");
    serde_json::from_str(&text).expect("spec is JSON")
}

#[test]
fn client_requests_match_openapi() {
    let spec = twilio_spec();
    let base = reqwest::Url::parse("https://api.twilio.com").expect("url");
    let client = TwilioClient::new(http(), base);
    let auth = basic_auth(creds()).expect("valid credentials");

    let sms = client.sms_request(&auth, &phone(Channel::Sms, NUMBER, CONTACT, "hi"));
    let call = client
        .call_request(&auth, &phone(Channel::Call, NUMBER, CONTACT, "hi"))
        .expect("call builds");
    for (request, operation_id) in [(sms, "CreateMessage"), (call, "CreateCall")] {
        let request = request.build().expect("request builds");
        let path = request.url().path().to_owned();
        let (template, operation) = find_operation(&spec, &path, "post").expect("operation");
        assert_eq!(operation["operationId"], operation_id, "path {template}");
        assert!(operation["responses"]["201"].is_object(), "{template} creates with 201");
        let problems = openapi_problems(&spec, &request);
        assert!(problems.is_empty(), "{operation_id}: {problems:?}");
    }

    let message_schema = &spec["components"]["schemas"]["api.v2010.account.message"]["properties"];
    assert!(message_schema["sid"].is_object(), "message resource has sid");
    assert!(message_schema["status"].is_object(), "message resource has status");
}

#[test]
fn openapi_check_rejects_bad_requests() {
    let spec = twilio_spec();
    let http = http();
    let url = format!("https://api.twilio.com{}", super::messages_path(SID));
    let post = || http.post(&url).basic_auth(SID, Some(AUTH_TOKEN));

    let lowercase = post().form(&[("to", CONTACT), ("From", NUMBER), ("Body", "hi")]);
    let problems = openapi_problems(&spec, &lowercase.build().expect("builds"));
    assert!(problems.iter().any(|p| p.ends_with("unknown field to")), "{problems:?}");
    assert!(problems.iter().any(|p| p.ends_with("required field To is missing")), "{problems:?}");

    let json = post().json(&serde_json::json!({"To": CONTACT, "From": NUMBER, "Body": "hi"}));
    let problems = openapi_problems(&spec, &json.build().expect("builds"));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("\"application/json\" is not accepted"), "{problems:?}");

    let anonymous = http.post(&url).form(&[("To", CONTACT), ("From", NUMBER), ("Body", "hi")]);
    let problems = openapi_problems(&spec, &anonymous.build().expect("builds"));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].ends_with("no HTTP Basic credentials"), "{problems:?}");

    let unknown_path = post().form(&[("To", CONTACT)]).build().expect("builds");
    let mut wrong = unknown_path;
    wrong.url_mut().set_path("/2010-04-01/Accounts/AC1/Mesages.json");
    assert_eq!(openapi_problems(&spec, &wrong).len(), 1);
}

#[test]
fn status_callback_is_sent_only_when_set() {
    let spec = twilio_spec();
    let client =
        TwilioClient::new(http(), reqwest::Url::parse("https://api.twilio.com").expect("url"));
    let auth = basic_auth(creds()).expect("valid credentials");
    let callback = "https://followup.example.test/webhooks/twilio/abc/status";

    for channel in [Channel::Sms, Channel::Call] {
        let mut msg = phone(channel, NUMBER, CONTACT, "hi");
        let without = match channel {
            Channel::Sms => client.sms_request(&auth, &msg),
            _ => client.call_request(&auth, &msg).expect("call builds"),
        };
        msg.status_callback = Some(callback.to_owned());
        let with = match channel {
            Channel::Sms => client.sms_request(&auth, &msg),
            _ => client.call_request(&auth, &msg).expect("call builds"),
        };
        for (request, expected) in [(without, None), (with, Some(callback))] {
            let request = request.build().expect("request builds");
            let problems = openapi_problems(&spec, &request);
            assert!(problems.is_empty(), "{channel:?}: {problems:?}");
            let body = request.body().and_then(reqwest::Body::as_bytes).unwrap_or_default();
            let fields: Vec<(String, String)> =
                serde_urlencoded::from_bytes(body).expect("form body");
            let sent = fields.iter().find(|(name, _)| name == "StatusCallback");
            assert_eq!(sent.map(|(_, value)| value.as_str()), expected, "{channel:?}");
        }
    }
}
