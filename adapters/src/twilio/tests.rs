use std::collections::BTreeMap;

use followup_core::domain::Channel;
use followup_core::limits::SendLimits;

use super::TwilioClient;
use super::request::{CreateCallForm, CreateMessageForm, escape_xml, say_twiml};
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

/// Returns the property names and the required list of the form schema of `path`.
fn request_schema(spec: &serde_json::Value, path: &str) -> (Vec<String>, Vec<String>) {
    let schema = &spec["paths"][path]["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"]
        ["schema"];
    let properties =
        schema["properties"].as_object().expect("properties").keys().cloned().collect();
    let required = schema["required"]
        .as_array()
        .map(|names| names.iter().filter_map(|n| n.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    (properties, required)
}

fn form_fields(form: &impl serde::Serialize) -> Vec<String> {
    let encoded = serde_urlencoded::to_string(form).expect("form encodes");
    let pairs: BTreeMap<String, String> =
        serde_urlencoded::from_str(&encoded).expect("form decodes");
    pairs.into_keys().collect()
}

#[test]
fn forms_match_openapi_description() {
    let text =
        std::fs::read_to_string(spec_file("twilio/twilio_api_v2010.json")).expect("spec readable");
    let spec: serde_json::Value = serde_json::from_str(&text).expect("spec is JSON");

    let message = CreateMessageForm { to: CONTACT.into(), from: NUMBER.into(), body: "hi".into() };
    let call =
        CreateCallForm { to: CONTACT.into(), from: NUMBER.into(), twiml: "<Response/>".into() };
    let cases = [
        (super::messages_path("{AccountSid}"), "CreateMessage", form_fields(&message)),
        (super::calls_path("{AccountSid}"), "CreateCall", form_fields(&call)),
    ];

    for (path, operation_id, fields) in cases {
        assert_eq!(spec["paths"][&path]["post"]["operationId"], operation_id, "path {path}");
        assert!(
            spec["paths"][&path]["post"]["responses"]["201"].is_object(),
            "{path} creates with 201"
        );
        let (properties, required) = request_schema(&spec, &path);
        for field in &fields {
            assert!(properties.contains(field), "{operation_id} has no field {field}");
        }
        for field in &required {
            assert!(
                fields.contains(field),
                "{operation_id} requires {field}, the client sends {fields:?}"
            );
        }
    }

    let message_schema = &spec["components"]["schemas"]["api.v2010.account.message"]["properties"];
    assert!(message_schema["sid"].is_object(), "message resource has sid");
    assert!(message_schema["status"].is_object(), "message resource has status");
}
