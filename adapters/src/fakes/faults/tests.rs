use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeDelta, Utc};
use followup_core::clock::Clock as _;
use followup_core::domain::{Channel, Provider};
use followup_core::limits::SendLimits;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::{DEFAULT_STALL_FOR, FaultProfile, Faults, UnknownProfile};
use crate::fakes::state::LimitKey;
use crate::fakes::{ErrorPlan, FakeProviders, FakeStats, ForcedOutcome};
use crate::http::{HttpSettings, build_http_client};
use crate::mime::build_message;
use crate::retry_after::{parse_gmail_retry_after, parse_retry_after};
use crate::testing::{email, start_fakes, start_instant, virtual_clock};

const TOKEN: &str = "ya29.fault-test-token";
const MAILBOX: &str = "owner@shop.example";
const SID: &str = "AC0123456789abcdef0123456789abcdef";
const AUTH_TOKEN: &str = "twilio-auth-token";
const NUMBER: &str = "+15005550006";

/// Request timeout of the test client: short, so that stalls cost little.
const CLIENT_TIMEOUT: Duration = Duration::from_millis(200);

/// How long the fakes hold a stalled request in these tests: past `CLIENT_TIMEOUT`.
const STALL: Duration = Duration::from_millis(600);

const ROOMY: SendLimits = SendLimits { per_minute: 100_000, per_day: 1_000_000 };

/// What a client saw of one request.
#[derive(Debug)]
enum Observed {
    Accepted,
    Error { status: u16, headers: HeaderMap, body: Value },
    TimedOut,
}

impl Observed {
    fn status(&self) -> Option<u16> {
        match self {
            Observed::Error { status, .. } => Some(*status),
            Observed::Accepted | Observed::TimedOut => None,
        }
    }
}

fn short_timeout_client() -> reqwest::Client {
    let settings = HttpSettings { request_timeout: CLIENT_TIMEOUT, ..HttpSettings::default() };
    build_http_client(&settings).expect("http client builds")
}

fn profile(name: &str, seed: u64) -> FaultProfile {
    FaultProfile::named(name).expect("known profile").with_seed(seed).with_stall_for(STALL)
}

async fn observe(request: reqwest::RequestBuilder) -> Observed {
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) if error.is_timeout() => return Observed::TimedOut,
        Err(error) => panic!("request to the fake failed: {error}"),
    };
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = match response.bytes().await {
        Ok(bytes) => bytes,
        Err(error) if error.is_timeout() => return Observed::TimedOut,
        Err(error) => panic!("reading the fake's response failed: {error}"),
    };
    if (200..300).contains(&status) {
        return Observed::Accepted;
    }
    let body = serde_json::from_slice(&bytes).expect("error body is JSON");
    Observed::Error { status, headers, body }
}

async fn send_gmail(
    client: &reqwest::Client,
    fakes: &FakeProviders,
    token: &str,
    from: &str,
    to: &str,
) -> Observed {
    let message = build_message(&email(from, to, "Checking in", "Any news?"), start_instant())
        .expect("message builds");
    let url = format!("{}gmail/v1/users/me/messages/send", fakes.gmail_url());
    let body = json!({"raw": URL_SAFE_NO_PAD.encode(message)});
    observe(client.post(url).bearer_auth(token).json(&body)).await
}

async fn send_graph(client: &reqwest::Client, fakes: &FakeProviders, to: &str) -> Observed {
    let url = format!("{}v1.0/me/sendMail", fakes.graph_url());
    let body = json!({
        "message": {
            "subject": "Checking in",
            "body": {"contentType": "Text", "content": "Any news?"},
            "toRecipients": [{"emailAddress": {"address": to}}],
        },
        "saveToSentItems": false,
    });
    observe(client.post(url).bearer_auth(TOKEN).json(&body)).await
}

async fn send_twilio(client: &reqwest::Client, fakes: &FakeProviders, to: &str) -> Observed {
    let url = format!("{}2010-04-01/Accounts/{SID}/Messages.json", fakes.twilio_url());
    let form = [("To", to), ("From", NUMBER), ("Body", "Any news?")];
    observe(client.post(url).basic_auth(SID, Some(AUTH_TOKEN)).form(&form)).await
}

/// Sends one message to a recipient unique to `round` and returns that recipient with what
/// the client saw.
async fn send_round(
    client: &reqwest::Client,
    fakes: &FakeProviders,
    provider: Provider,
    round: usize,
) -> (String, Observed) {
    match provider {
        Provider::Gmail => {
            let to = format!("gmail-{round}@example.org");
            let observed = send_gmail(client, fakes, TOKEN, MAILBOX, &to).await;
            (to, observed)
        }
        Provider::Outlook => {
            let to = format!("outlook-{round}@example.org");
            (to.clone(), send_graph(client, fakes, &to).await)
        }
        Provider::Twilio => {
            let to = format!("+1415555{round:04}");
            (to.clone(), send_twilio(client, fakes, &to).await)
        }
    }
}

fn register_all(fakes: &FakeProviders) {
    fakes.register_gmail(TOKEN, MAILBOX, ROOMY);
    fakes.register_outlook(TOKEN, MAILBOX, ROOMY);
    fakes.register_twilio(SID, AUTH_TOKEN, NUMBER, ROOMY, ROOMY);
}

/// Returns the message of a Google error body.
fn google_message(body: &Value) -> &str {
    body["error"]["message"].as_str().expect("Google error has a message")
}

/// Checks one 429 against its provider's form and returns its retry hint, if the provider
/// sends one.
fn rate_limit_hint(
    provider: Provider,
    headers: &HeaderMap,
    body: &Value,
    now: DateTime<Utc>,
) -> Option<Duration> {
    let header = headers.get("retry-after").map(|value| value.to_str().expect("ASCII header"));
    match provider {
        Provider::Gmail => {
            assert!(header.is_none(), "Gmail sends no Retry-After: {headers:?}");
            assert_eq!(body["error"]["errors"][0]["reason"], "rateLimitExceeded");
            assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");
            let message = google_message(body);
            assert!(message.ends_with(" (Mail sending)"), "Gmail 429 message {message:?}");
            let wait = parse_gmail_retry_after(message, now);
            assert!(wait.is_some(), "Gmail 429 message without an instant: {message:?}");
            wait
        }
        Provider::Outlook => {
            assert_eq!(body["error"]["code"], "TooManyRequests");
            let header = header.expect("Graph 429 has a Retry-After");
            let wait = parse_retry_after(header, now);
            assert!(wait.is_some(), "unparsable Graph Retry-After {header:?}");
            wait
        }
        Provider::Twilio => {
            assert!(header.is_none(), "Twilio documents no Retry-After: {headers:?}");
            assert_eq!(body["code"], 20429);
            assert_eq!(body["status"], 429);
            None
        }
    }
}

#[test]
fn named_profiles_round_trip() {
    for name in FaultProfile::NAMES {
        let profile = FaultProfile::named(name).expect("listed name is known");
        assert_eq!(profile.name(), name);
        let parsed: FaultProfile = name.parse().expect("listed name parses");
        assert_eq!(parsed, profile);
    }
    assert_eq!(FaultProfile::default(), FaultProfile::none());
    assert_eq!(FaultProfile::none().with_seed(9).to_string(), "none (seed 9)");
}

#[test]
fn unknown_profile_lists_names() {
    let error = FaultProfile::named("flakey").expect_err("unknown name");
    assert_eq!(error, UnknownProfile { name: "flakey".to_owned() });

    let message = error.to_string();
    assert!(message.contains("\"flakey\""), "message {message:?}");
    for name in FaultProfile::NAMES {
        assert!(message.contains(name), "{name} missing from {message:?}");
    }
    assert!("".parse::<FaultProfile>().is_err(), "empty name");
    assert!("Flaky".parse::<FaultProfile>().is_err(), "names are case-sensitive");
}

#[test]
fn default_stall_outlasts_default_timeout() {
    assert!(DEFAULT_STALL_FOR > HttpSettings::default().request_timeout);
    for name in FaultProfile::NAMES {
        let profile = FaultProfile::named(name).expect("known profile");
        assert_eq!(profile.stall_for, DEFAULT_STALL_FOR, "{name}");
    }
}

#[test]
fn same_seed_same_faults() {
    let keys = [
        LimitKey::Mailbox(Provider::Gmail, MAILBOX.to_owned()),
        LimitKey::Mailbox(Provider::Outlook, MAILBOX.to_owned()),
        LimitKey::TwilioNumber {
            account_sid: SID.to_owned(),
            from: NUMBER.into(),
            channel: Channel::Sms,
        },
    ];
    let draws = |seed: u64| {
        let faults = Faults::new(ErrorPlan::default(), profile("flaky", seed));
        (0..3_000)
            .map(|i: i64| {
                let now = start_instant() + TimeDelta::milliseconds(100 * i);
                let key = &keys[usize::try_from(i).expect("small") % keys.len()];
                faults.draw(key, "ann@example.org", now)
            })
            .collect::<Vec<_>>()
    };

    let first = draws(11);
    assert_eq!(first, draws(11), "a seed repeats its faults");
    assert_ne!(first, draws(12), "another seed draws other faults");
    let injected = first.iter().filter(|outcome| outcome.is_some()).count();
    assert!((150..=480).contains(&injected), "{injected} faults in 3000 draws");
}

#[test]
fn slow_latency_mostly_typical() {
    let faults = Faults::new(ErrorPlan::default(), profile("slow", 5));
    let delays: Vec<Duration> = (0..4_000).map(|_| faults.draw_latency()).collect();

    let typical = Duration::from_millis(20)..=Duration::from_millis(80);
    let in_typical = delays.iter().filter(|&&delay| typical.contains(&delay)).count();
    assert!(in_typical >= 3_700, "{in_typical} of 4000 delays within 20-80 ms");
    assert!(delays.iter().any(|delay| *delay >= Duration::from_secs(1)), "no tail past 1 s");
    let max = delays.iter().max().expect("delays");
    assert!(*max <= Duration::from_secs(2), "max delay {max:?}");
    assert!(delays.iter().all(|delay| *delay >= Duration::from_millis(20)));

    let none = Faults::new(ErrorPlan::default(), FaultProfile::none());
    assert_eq!(none.draw_latency(), Duration::ZERO);
}

#[tokio::test]
async fn slow_profile_delays_responses() {
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config.with_faults(profile("slow", 3))).await;
    register_all(&fakes);
    let client = build_http_client(&HttpSettings::default()).expect("http client builds");

    for round in 0..5 {
        let started = Instant::now();
        let (_, observed) = send_round(&client, &fakes, Provider::Twilio, round).await;
        let elapsed = started.elapsed();
        assert!(matches!(observed, Observed::Accepted), "round {round}: {observed:?}");
        assert!(elapsed >= Duration::from_millis(20), "round {round} took {elapsed:?}");
    }
    fakes.shutdown().await;
}

#[tokio::test]
async fn flaky_errors_near_ten_percent() {
    const ROUNDS: usize = 150;
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config.with_faults(profile("flaky", 2026))).await;
    register_all(&fakes);
    let client = short_timeout_client();
    let providers = [Provider::Gmail, Provider::Outlook, Provider::Twilio];

    let mut hints: BTreeMap<Provider, Vec<Option<Duration>>> = BTreeMap::new();
    let mut graph_headers = Vec::new();
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut timed_out = Vec::new();
    let mut accepted = 0_u64;
    for round in 0..ROUNDS {
        for provider in providers {
            let (to, observed) = send_round(&client, &fakes, provider, round).await;
            match &observed {
                Observed::Accepted => accepted += 1,
                Observed::TimedOut => timed_out.push(to),
                Observed::Error { status, headers, body } => {
                    *statuses.entry(*status).or_default() += 1;
                    if *status == 429 {
                        let hint = rate_limit_hint(provider, headers, body, clock.now());
                        hints.entry(provider).or_default().push(hint);
                        if let Some(value) = headers.get("retry-after") {
                            graph_headers.push(value.to_str().unwrap_or_default().to_owned());
                        }
                    }
                }
            }
            assert!(
                matches!(observed.status(), None | Some(429 | 500 | 503)),
                "{provider} round {round}: {observed:?}"
            );
        }
        clock.advance(TimeDelta::seconds(1));
    }

    let total = (ROUNDS * providers.len()) as u64;
    let failed = total - accepted;
    let rate = failed as f64 / total as f64;
    assert!((0.05..=0.16).contains(&rate), "error rate {rate:.3} ({failed} of {total})");

    for provider in providers {
        let provider_hints = hints.get(&provider).cloned().unwrap_or_default();
        assert!(!provider_hints.is_empty(), "no 429 from {provider}");
        for wait in provider_hints.into_iter().flatten() {
            assert!(wait > Duration::ZERO, "{provider} hint {wait:?}");
            assert!(wait <= Duration::from_secs(5), "{provider} hint {wait:?}");
        }
    }
    assert!(graph_headers.iter().any(|value| value.contains('.')), "{graph_headers:?}");
    assert!(statuses.contains_key(&500), "no 500 in {statuses:?}");
    assert!(statuses.contains_key(&503), "no 503 in {statuses:?}");

    assert!(!timed_out.is_empty(), "no send timed out");
    let received = fakes.received();
    for to in &timed_out {
        assert!(received.iter().all(|message| &message.to != to), "timed out {to} recorded");
    }

    let stats = fakes.stats();
    assert_eq!(stats.received_by_provider.values().sum::<u64>(), accepted);
    assert_eq!(stats.injected_errors, failed);
    assert_eq!(stats.injected_timeouts, timed_out.len() as u64);
    assert_eq!(stats.injected_rate_limits, statuses.get(&429).copied().unwrap_or(0));
    assert_eq!(stats.rate_limit_violations, 0);
    assert_eq!(stats.rejected_requests, 0);

    let stats_url = format!("{}_fake/stats", fakes.gmail_url());
    let served: FakeStats =
        reqwest::get(stats_url).await.expect("stats served").json().await.expect("stats JSON");
    assert_eq!(served, stats);
    fakes.shutdown().await;
}

#[tokio::test]
async fn bursty_429_until_burst_ends() {
    const OTHER_TOKEN: &str = "ya29.other-mailbox-token";
    const OTHER_MAILBOX: &str = "other@shop.example";
    let step = TimeDelta::milliseconds(250);
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config.with_faults(profile("bursty-429", 8))).await;
    fakes.register_gmail(TOKEN, MAILBOX, ROOMY);
    fakes.register_gmail(OTHER_TOKEN, OTHER_MAILBOX, ROOMY);
    let client = short_timeout_client();
    let to = "ann@example.org";

    // Until the first burst, every send goes through.
    let mut before_burst = 0;
    let burst_end = loop {
        assert!(before_burst < 2_000, "no burst in {before_burst} sends");
        match send_gmail(&client, &fakes, TOKEN, MAILBOX, to).await {
            Observed::Accepted => before_burst += 1,
            Observed::Error { status: 429, headers, body } => {
                let now = clock.now();
                let wait = rate_limit_hint(Provider::Gmail, &headers, &body, now)
                    .expect("Gmail 429 has a hint");
                assert!(wait <= Duration::from_secs(5), "burst of {wait:?}");
                break now + TimeDelta::from_std(wait).expect("short wait");
            }
            other => panic!("before the burst: {other:?}"),
        }
        clock.advance(step);
    };
    assert!(before_burst > 0, "the burst started on the first send");

    // Within the burst, every send of that mailbox gets 429 naming the same end; the other
    // mailbox has bursts of its own and keeps sending.
    let mut in_burst = 1;
    let mut other_accepted = 0;
    clock.advance(step);
    while clock.now() < burst_end {
        let observed = send_gmail(&client, &fakes, TOKEN, MAILBOX, to).await;
        let Observed::Error { status: 429, headers, body } = observed else {
            panic!("within the burst: {observed:?}");
        };
        let wait = rate_limit_hint(Provider::Gmail, &headers, &body, clock.now())
            .expect("Gmail 429 has a hint");
        let end = clock.now() + TimeDelta::from_std(wait).expect("short wait");
        assert_eq!(end, burst_end, "every 429 of a burst names its end");
        in_burst += 1;

        let other = send_gmail(&client, &fakes, OTHER_TOKEN, OTHER_MAILBOX, to).await;
        if matches!(other, Observed::Accepted) {
            other_accepted += 1;
        }
        clock.advance(step);
    }
    assert!(in_burst >= 8, "a burst of at least 2 s covers {in_burst} sends 250 ms apart");
    assert!(other_accepted > 0, "the other mailbox was throttled too");

    clock.advance_to(burst_end);
    let after = send_gmail(&client, &fakes, TOKEN, MAILBOX, to).await;
    assert!(matches!(after, Observed::Accepted), "after the burst: {after:?}");

    let stats = fakes.stats();
    assert_eq!(stats.injected_rate_limits, stats.injected_errors);
    assert!(stats.injected_rate_limits >= in_burst, "{stats:?}");
    assert_eq!(stats.rate_limit_violations, 0);
    fakes.shutdown().await;
}

#[tokio::test]
async fn dark_mailbox_stalls_after_first_sends() {
    const MAILBOXES: usize = 10;
    const EXTRA_SENDS: u32 = 2;
    let profile = profile("dark-mailbox", 4);
    let after = profile.dark_senders.expect("dark senders").after_sends;
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config.with_faults(profile.clone())).await;
    let mailboxes: Vec<(String, String)> = (0..MAILBOXES)
        .map(|i| (format!("ya29.mailbox-{i}"), format!("sender-{i}@shop.example")))
        .collect();
    for (token, address) in &mailboxes {
        fakes.register_gmail(token, address, ROOMY);
    }
    let dark: Vec<bool> =
        mailboxes.iter().map(|(_, address)| profile.goes_dark(Provider::Gmail, address)).collect();
    let dark_count = dark.iter().filter(|dark| **dark).count();
    assert!((1..MAILBOXES).contains(&dark_count), "{dark_count} of {MAILBOXES} dark");
    let client = short_timeout_client();

    for send in 0..after + EXTRA_SENDS {
        for ((token, address), dark) in mailboxes.iter().zip(&dark) {
            let observed = send_gmail(&client, &fakes, token, address, "ann@example.org").await;
            if *dark && send >= after {
                assert!(matches!(observed, Observed::TimedOut), "{address} #{send}: {observed:?}");
            } else {
                assert!(matches!(observed, Observed::Accepted), "{address} #{send}: {observed:?}");
            }
        }
        clock.advance(TimeDelta::seconds(1));
    }

    let received = fakes.received();
    for ((_, address), dark) in mailboxes.iter().zip(&dark) {
        let count = received.iter().filter(|message| &message.from == address).count();
        let expected = if *dark { after } else { after + EXTRA_SENDS };
        assert_eq!(count, expected as usize, "{address} (dark: {dark})");
    }
    let stats = fakes.stats();
    assert_eq!(stats.injected_timeouts, (dark_count as u64) * u64::from(EXTRA_SENDS));
    assert_eq!(stats.injected_errors, stats.injected_timeouts);
    fakes.shutdown().await;
}

#[tokio::test]
async fn stall_ends_with_late_503() {
    let to = "+14155550123";
    let plan = ErrorPlan::default().force_times(to, ForcedOutcome::Timeout, 1);
    let stall = Duration::from_millis(300);
    let faults = FaultProfile::none().with_stall_for(stall);
    let clock = virtual_clock();
    let fakes = start_fakes(&clock, |config| config.with_errors(plan).with_faults(faults)).await;
    register_all(&fakes);
    // A client that waits longer than the stall gets the fake's late response.
    let client = build_http_client(&HttpSettings::default()).expect("http client builds");

    let started = Instant::now();
    let observed = send_twilio(&client, &fakes, to).await;
    let elapsed = started.elapsed();
    let Observed::Error { status, body, .. } = observed else {
        panic!("stalled send: {observed:?}");
    };
    assert_eq!(status, 503);
    assert_eq!(body["code"], 20503);
    assert!(elapsed >= stall, "answered after {elapsed:?}");
    assert!(elapsed < stall * 10, "answered after {elapsed:?}");
    assert!(fakes.received().is_empty(), "a stalled send is not recorded");

    let second = send_twilio(&client, &fakes, to).await;
    assert!(matches!(second, Observed::Accepted), "after the forced stall: {second:?}");
    assert_eq!(fakes.stats().injected_timeouts, 1);
    fakes.shutdown().await;
}

#[tokio::test]
async fn forced_rules_precede_profile() {
    let rejected = "+14155550100";
    let plan = ErrorPlan::default().force(rejected, ForcedOutcome::RecipientRejected);
    let mut always_failing = profile("flaky", 1);
    always_failing.retryable_fraction = 1.0;
    let clock = virtual_clock();
    let fakes =
        start_fakes(&clock, |config| config.with_errors(plan).with_faults(always_failing)).await;
    register_all(&fakes);
    let client = short_timeout_client();

    for _ in 0..20 {
        let observed = send_twilio(&client, &fakes, rejected).await;
        let Observed::Error { status: 400, body, .. } = observed else {
            panic!("forced rule: {observed:?}");
        };
        assert_eq!(body["code"], 21610);

        let other = send_twilio(&client, &fakes, "+14155550101").await;
        assert!(!matches!(other, Observed::Accepted), "profile fraction 1.0 let a send through");
    }
    assert!(fakes.received().is_empty());
    assert_eq!(fakes.stats().injected_errors, 40);
    fakes.shutdown().await;
}

#[tokio::test]
async fn error_plan_fraction_with_profile() {
    let plan = ErrorPlan::default().with_retryable_fraction(1.0, 3);
    let clock = virtual_clock();
    let fakes =
        start_fakes(&clock, |config| config.with_errors(plan).with_faults(profile("slow", 2)))
            .await;
    register_all(&fakes);
    // The slow profile's tail is longer than the short timeout.
    let client = build_http_client(&HttpSettings::default()).expect("http client builds");

    for round in 0..5 {
        let (_, observed) = send_round(&client, &fakes, Provider::Outlook, round).await;
        let Observed::Error { status, body, .. } = observed else {
            panic!("round {round}: {observed:?}");
        };
        assert_eq!(status, 503, "the plan answers only 503");
        assert_eq!(body["error"]["code"], "ServiceNotAvailable");
    }
    let stats = fakes.stats();
    assert_eq!(stats.injected_errors, 5);
    assert_eq!(stats.injected_rate_limits, 0);
    fakes.shutdown().await;
}
