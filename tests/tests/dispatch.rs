//! Dispatch end to end: uploads over HTTP, the virtual clock, the built-in fakes with injected
//! errors, and each follow-up's final state read back through the API.

use followup_adapters::fakes::{ErrorPlan, ForcedOutcome};
use followup_core::clock::Clock as _;
use followup_core::domain::Provider;
use followup_dispatcher::config::Plan;
use followup_tests::{TestEngine, email_csv, email_now_sequence};
use serde_json::{Value, json};

/// Fetches the follow-ups of the schedule that enrolled `email` in `sequence`, found through
/// the API by sequence and contact.
async fn follow_ups_of(engine: &TestEngine, key: &str, sequence: &str, email: &str) -> Value {
    let path = format!("/v1/schedules?sequence={sequence}&contact={email}");
    let answer = engine.get_json(key, &path).await.expect("schedule");
    answer["follow_ups"].clone()
}

#[actix_rt::test]
async fn retryable_errors_are_retried_until_sent() -> anyhow::Result<()> {
    let errors =
        ErrorPlan::default().force_times("flaky@example.com", ForcedOutcome::ServiceUnavailable, 2);
    let engine = TestEngine::start_with_errors(|_| {}, errors).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    engine.connect_fakes(&key).await?;
    let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;
    engine.upload(&key, &sequence, "text/csv", "email\nflaky@example.com\n").await?;

    engine.settle(1).await?;

    let follow_ups = follow_ups_of(&engine, &key, &sequence, "flaky@example.com").await;
    assert_eq!(follow_ups[0]["state"], "sent", "{follow_ups}");
    assert_eq!(follow_ups[0]["attempts"], 3);
    let fakes = engine.running.fakes()?;
    assert_eq!(fakes.stats().received(Provider::Gmail), 1, "sent exactly once");
    assert_eq!(fakes.stats().injected_errors, 2);
    Ok(())
}

#[actix_rt::test]
async fn retry_budget_ends_in_dead() -> anyhow::Result<()> {
    let errors = ErrorPlan::default().force("down@example.com", ForcedOutcome::ServiceUnavailable);
    let engine =
        TestEngine::start_with_errors(|config| config.dispatch.retry_budget = 3, errors).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    engine.connect_fakes(&key).await?;
    let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;
    engine.upload(&key, &sequence, "text/csv", "email\ndown@example.com\n").await?;

    engine.settle(1).await?;

    let follow_ups = follow_ups_of(&engine, &key, &sequence, "down@example.com").await;
    assert_eq!(follow_ups[0]["state"], "dead", "{follow_ups}");
    assert_eq!(follow_ups[0]["attempts"], 3);
    let reason = follow_ups[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("gave up after 3 attempts"), "{reason}");
    Ok(())
}

#[actix_rt::test]
async fn permanent_rejection_fails_with_the_providers_reason() -> anyhow::Result<()> {
    let errors = ErrorPlan::default().force("gone@example.com", ForcedOutcome::RecipientRejected);
    let engine = TestEngine::start_with_errors(|_| {}, errors).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    engine.connect_fakes(&key).await?;
    let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;
    engine.upload(&key, &sequence, "text/csv", "email\ngone@example.com\n").await?;

    engine.settle(1).await?;

    let follow_ups = follow_ups_of(&engine, &key, &sequence, "gone@example.com").await;
    assert_eq!(follow_ups[0]["state"], "failed", "{follow_ups}");
    assert_eq!(follow_ups[0]["attempts"], 1);
    assert!(follow_ups[0]["reason"].as_str().unwrap_or_default().starts_with("gmail 400"));
    Ok(())
}

#[actix_rt::test]
async fn refused_credentials_pause_the_connection_and_keep_the_follow_up() -> anyhow::Result<()> {
    let errors = ErrorPlan::default().force("any@example.com", ForcedOutcome::Unauthorized);
    let engine = TestEngine::start_with_errors(|_| {}, errors).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    engine.connect_fakes(&key).await?;
    let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;
    engine.upload(&key, &sequence, "text/csv", "email\nany@example.com\n").await?;

    engine.settle(1).await?;

    let follow_ups = follow_ups_of(&engine, &key, &sequence, "any@example.com").await;
    assert_eq!(follow_ups[0]["state"], "pending", "{follow_ups}");
    let connections = engine.get_json(&key, "/v1/connections").await?;
    let gmail = connections
        .as_array()
        .and_then(|all| all.iter().find(|c| c["provider"] == "gmail"))
        .cloned()
        .unwrap_or_default();
    let reason = gmail["paused_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("refused the credentials"), "{connections}");
    assert!(!reason.contains("test-gmail-token"), "the token leaked into the reason");
    Ok(())
}

#[actix_rt::test]
async fn quota_skips_what_the_plan_does_not_cover() -> anyhow::Result<()> {
    let engine = TestEngine::start(|config| {
        let tiny = Plan { monthly_email: 2, monthly_sms: 0, monthly_call: 0, ..Plan::unlimited() };
        config.plans.insert("tiny".into(), tiny);
    })
    .await?;
    let key = engine.create_tenant("acme", "tiny").await?;
    engine.connect_fakes(&key).await?;
    let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;
    let csv = "email\na@example.com\nb@example.com\nc@example.com\n";
    engine.upload(&key, &sequence, "text/csv", csv).await?;

    engine.settle(1).await?;

    let counts = engine.running.engine.store().count_follow_ups(None).await?;
    let by_state = |state: &str| -> u64 {
        counts.iter().filter(|((_, s), _)| s.as_str() == state).map(|(_, n)| n).sum()
    };
    assert_eq!(by_state("sent"), 2);
    assert_eq!(by_state("skipped"), 1);
    assert_eq!(engine.running.fakes()?.stats().received(Provider::Gmail), 2);
    Ok(())
}

#[actix_rt::test]
async fn steps_without_a_connection_or_address_are_skipped_with_a_reason() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    let gmail_only = json!({"sender": "sales@example.com", "access_token": "test-gmail-token"});
    let response = engine
        .http
        .put(engine.url("/v1/connections/gmail"))
        .bearer_auth(&key)
        .json(&gmail_only)
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let sequence = engine
        .create_sequence(
            &key,
            &json!({"name": "two", "steps": [
                {"channel": "email", "subject": "Hi", "body": "Hello"},
                {"channel": "sms", "delay": "1h", "body": "Hello again"}]}),
        )
        .await?;
    let csv = "email,phone\nboth@example.com,+1 202 555 0101\nmailonly@example.com,\n";
    engine.upload(&key, &sequence, "text/csv", csv).await?;

    engine.settle(2).await?;

    let both = follow_ups_of(&engine, &key, &sequence, "both@example.com").await;
    assert_eq!(both[0]["state"], "sent");
    assert_eq!(both[1]["state"], "skipped");
    assert!(both[1]["reason"].as_str().unwrap_or_default().starts_with("no sms connection"));
    let mail_only = follow_ups_of(&engine, &key, &sequence, "mailonly@example.com").await;
    assert_eq!(mail_only[1]["state"], "skipped");
    Ok(())
}

#[actix_rt::test]
async fn published_gmail_pace_holds_with_no_violation() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    let connection = json!({"sender": "sales@example.com", "access_token": "paced-token"});
    engine
        .http
        .put(engine.url("/v1/connections/gmail"))
        .bearer_auth(&key)
        .json(&connection)
        .send()
        .await?;
    let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;
    let mut csv = String::from("email\n");
    for n in 0..150 {
        csv.push_str(&format!("p{n}@example.com\n"));
    }
    engine.upload(&key, &sequence, "text/csv", csv).await?;

    engine.settle(1).await?;

    let stats = engine.running.fakes()?.stats();
    assert_eq!(stats.received(Provider::Gmail), 150);
    assert_eq!(stats.rate_limit_violations, 0);
    let lateness = engine.running.engine.lateness();
    // 60 a minute, one every 1.01 s: the last of 150 leaves about 150 s after the first.
    assert!(lateness.max_ms() >= 145_000, "max lateness {} ms", lateness.max_ms());
    assert!(lateness.max_ms() <= 160_000, "max lateness {} ms", lateness.max_ms());
    Ok(())
}

#[actix_rt::test]
async fn cancelled_schedule_sends_nothing_more() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    engine.connect_fakes(&key).await?;
    let sequence = engine
        .create_sequence(
            &key,
            &json!({"name": "later", "steps": [
                {"channel": "email", "delay": "1d", "subject": "Hi", "body": "Hello"}]}),
        )
        .await?;
    engine.upload(&key, &sequence, "text/csv", "email\nstop@example.com\n").await?;
    let tenants = engine.running.engine.store().tenants().await?;
    let schedule = engine.schedule_id(tenants[0].id, sequence.parse()?, "stop@example.com").await?;

    let cancelled = engine
        .http
        .delete(engine.url(&format!("/v1/schedules/{schedule}")))
        .bearer_auth(&key)
        .send()
        .await?;
    assert_eq!(cancelled.status(), 200);
    engine.settle(3).await?;

    let follow_ups = follow_ups_of(&engine, &key, &sequence, "stop@example.com").await;
    assert_eq!(follow_ups[0]["state"], "cancelled");
    assert_eq!(engine.running.fakes()?.stats().received(Provider::Gmail), 0);
    Ok(())
}

/// Sends one email to a fake that responds after the engine's one-second timeout, and returns
/// the follow-up as the API shows it once settled.
async fn send_through_a_fake_slower_than_the_timeout(
    configure: impl FnOnce(&mut followup_dispatcher::config::Config),
) -> anyhow::Result<Value> {
    let (follow_up, _usage) = send_slower_than_the_timeout_with_usage(configure).await?;
    Ok(follow_up)
}

/// Like `send_through_a_fake_slower_than_the_timeout`, and also returns the tenant's usage.
async fn send_slower_than_the_timeout_with_usage(
    configure: impl FnOnce(&mut followup_dispatcher::config::Config),
) -> anyhow::Result<(Value, Value)> {
    let slow = followup_adapters::fakes::FakeConfig::new(std::sync::Arc::new(
        followup_core::clock::SystemClock,
    ))
    .with_latency(std::time::Duration::from_millis(2_500));
    let engine = TestEngine::start_with_fakes(
        |config| {
            config.providers.request_timeout_seconds = 1;
            configure(config);
        },
        slow,
    )
    .await?;
    let key = engine.create_tenant("acme", "pro").await?;
    engine.connect_fakes(&key).await?;
    let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;
    engine.upload(&key, &sequence, "text/csv", "email\nslow@example.com\n").await?;

    engine.settle(1).await?;

    let follow_ups = follow_ups_of(&engine, &key, &sequence, "slow@example.com").await;
    let usage = engine.get_json(&key, "/v1/usage").await?;
    Ok((follow_ups[0].clone(), usage))
}

#[actix_rt::test]
async fn timeout_after_sending_settles_in_doubt_without_resending() -> anyhow::Result<()> {
    let follow_up = send_through_a_fake_slower_than_the_timeout(|_| {}).await?;
    assert_eq!(follow_up["state"], "in_doubt", "{follow_up}");
    assert_eq!(follow_up["attempts"], 1, "not sent again");
    let reason = follow_up["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("may have been delivered"), "{reason}");
    Ok(())
}

/// Runs a tenant of 20 follow-ups against a Gmail fake that fails every send, for two minutes
/// of virtual time, and returns the requests the fake saw in that time.
async fn requests_in_two_failing_minutes(breaker_threshold: u32) -> anyhow::Result<u64> {
    let errors = ErrorPlan::default().with_retryable_fraction(1.0, 7);
    let engine = TestEngine::start_with_errors(
        |config| {
            config.dispatch.retry_budget = 5;
            config.providers.breaker_failure_threshold = breaker_threshold;
            config.providers.breaker_open_seconds = 30;
        },
        errors,
    )
    .await?;
    let key = engine.create_tenant("acme", "pro").await?;
    engine.connect_fakes(&key).await?;
    let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;
    let csv = email_csv("down", 20);
    engine.upload(&key, &sequence, "text/csv", csv).await?;

    let clock = engine.virtual_clock();
    let deadline = clock.now() + chrono::Duration::minutes(2);
    // Follow-ups are still waiting at the deadline when the breaker keeps them back.
    let _ = engine.running.engine.run_until_settled(clock, deadline, |_| {}).await;
    Ok(engine.running.fakes()?.stats().injected_errors)
}

#[actix_rt::test]
async fn circuit_breaker_stops_hammering_a_failing_mailbox() -> anyhow::Result<()> {
    let without_breaker = requests_in_two_failing_minutes(u32::MAX).await?;
    let with_breaker = requests_in_two_failing_minutes(5).await?;
    // Without a breaker every follow-up spends its 5 attempts within the backoff of about
    // 15 s. With one, the first round's 20 failures open it for 30 s, then one trial a
    // period (30 s, then 60 s) goes out.
    assert_eq!(without_breaker, 100, "every attempt of every follow-up");
    assert!(
        (20..=23).contains(&with_breaker),
        "{with_breaker} requests reached the failing mailbox in two minutes"
    );
    Ok(())
}

#[actix_rt::test]
async fn project_wide_gmail_limit_holds_across_tenants() -> anyhow::Result<()> {
    // Each mailbox may send 6,000 a minute, but the engine's project only 60 in all.
    let engine = TestEngine::start(|config| config.providers.gmail_project_per_minute = 60).await?;
    let csv = email_csv("p", 60);
    for (tenant, token) in [("acme", "acme-token"), ("globex", "globex-token")] {
        let key = engine.create_tenant(tenant, "pro").await?;
        let connection = json!({"sender": format!("sales@{tenant}.example"),
                                "access_token": token,
                                "limits": {"per_minute": 6000, "per_day": 100000}});
        engine.connect(&key, "gmail", &connection).await?;
        let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;
        engine.upload(&key, &sequence, "text/csv", csv.clone()).await?;
    }

    engine.settle(1).await?;

    let received = engine.running.fakes()?.received();
    assert_eq!(received.len(), 120);
    let mut instants: Vec<_> = received.iter().map(|message| message.received_at).collect();
    instants.sort();
    let max_in_a_minute = instants
        .iter()
        .enumerate()
        .map(|(index, &at)| {
            instants[index..]
                .iter()
                .take_while(|&&later| later - at < chrono::Duration::minutes(1))
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(max_in_a_minute <= 60, "{max_in_a_minute} sends in one minute");
    assert!(max_in_a_minute >= 55, "the shared pace is close to its limit: {max_in_a_minute}");
    for tenant in ["acme", "globex"] {
        let sent = received.iter().filter(|m| m.from.ends_with(&format!("@{tenant}.example")));
        assert_eq!(sent.count(), 60, "{tenant} sent all its follow-ups");
    }
    Ok(())
}

#[actix_rt::test]
async fn channels_configured_to_resend_in_doubt_try_again() -> anyhow::Result<()> {
    let (follow_up, usage) = send_slower_than_the_timeout_with_usage(|config| {
        config.dispatch.retry_budget = 2;
        config.dispatch.resend_in_doubt = vec![followup_core::domain::Channel::Email];
    })
    .await?;
    assert_eq!(follow_up["state"], "dead", "{follow_up}");
    assert_eq!(follow_up["attempts"], 2, "sent again once, then the budget ran out");
    let reason = follow_up["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("resent after a lost answer"), "{reason}");
    // Both attempts may have reached the contact, so both use quota.
    assert_eq!(usage["channels"]["email"]["committed"], 2, "{usage}");
    Ok(())
}

#[actix_rt::test]
async fn outlook_sends_go_out_in_graph_batches() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    let connection = json!({"sender": "sales@acme.example", "access_token": "graph-token",
                            "limits": {"per_minute": 6000, "per_day": 100000}});
    engine.connect(&key, "outlook", &connection).await?;
    let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;
    let csv = email_csv("b", 100);
    engine.upload(&key, &sequence, "text/csv", csv).await?;

    engine.settle(1).await?;

    let stats = engine.running.fakes()?.stats();
    assert_eq!(stats.received(Provider::Outlook), 100);
    assert_eq!(stats.rate_limit_violations, 0, "no limit, concurrency included, was exceeded");
    // The pace lets about 59 through at once, then one at a time: the first burst goes out
    // in $batch requests of at most 20, the paced rest alone.
    assert!(stats.batch_requests >= 3, "{} batch requests", stats.batch_requests);
    Ok(())
}

/// Sends 10 emails for each of five tenants at once, with Gmail batch sharing on or off, and
/// returns the batch requests the fake received.
async fn gmail_batch_requests_of_five_tenants(shared: bool) -> anyhow::Result<u64> {
    // A linger long enough that the five tenants' sends surely meet, even on a loaded machine.
    let engine = TestEngine::start(|config| {
        config.providers.gmail_shared_batches = shared;
        config.providers.batch_linger_millis = 100;
    })
    .await?;
    let csv = email_csv("g", 10);
    for tenant in ["t1", "t2", "t3", "t4", "t5"] {
        let key = engine.create_tenant(tenant, "pro").await?;
        let connection = json!({"sender": format!("sales@{tenant}.example"),
                                "access_token": format!("{tenant}-token"),
                                "limits": {"per_minute": 6000, "per_day": 100000}});
        engine.connect(&key, "gmail", &connection).await?;
        let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;
        engine.upload(&key, &sequence, "text/csv", csv.clone()).await?;
    }

    engine.settle(1).await?;

    let fakes = engine.running.fakes()?;
    let stats = fakes.stats();
    assert_eq!(stats.received(Provider::Gmail), 50);
    assert_eq!(stats.rate_limit_violations, 0);
    for tenant in ["t1", "t2", "t3", "t4", "t5"] {
        let from = format!("sales@{tenant}.example");
        let sent = fakes.received().iter().filter(|m| m.from == from).count();
        assert_eq!(sent, 10, "{tenant}: each message under its own mailbox");
    }
    Ok(stats.batch_requests)
}

#[actix_rt::test]
async fn gmail_batches_hold_one_tenant_unless_shared() -> anyhow::Result<()> {
    // Each tenant hands over its 10 sends at once: one batch request each when kept apart,
    // fewer when sends of different mailboxes share a request.
    let separate = gmail_batch_requests_of_five_tenants(false).await?;
    assert_eq!(separate, 5, "one batch request per tenant");
    let shared = gmail_batch_requests_of_five_tenants(true).await?;
    assert!(shared >= 1, "no batch request");
    assert!(shared < 5, "{shared} batch requests for 50 sends of five tenants");
    Ok(())
}

#[actix_rt::test]
async fn emails_carry_the_sequences_unsubscribe_url_and_html() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    let limits = json!({"per_minute": 6000, "per_day": 100000});
    let gmail =
        json!({"sender": "sales@acme.example", "access_token": "g-token", "limits": limits});
    engine.connect(&key, "gmail", &gmail).await?;
    let plain_http = json!({"name": "news", "unsubscribe_url": "http://acme.example/u",
                            "steps": [{"channel": "email", "subject": "Hi", "body": "Hello"}]});
    let rejected = engine
        .http
        .post(engine.url("/v1/sequences"))
        .bearer_auth(&key)
        .json(&plain_http)
        .send()
        .await?;
    assert_eq!(rejected.status(), 400, "one-click unsubscribe needs https");
    let sequence = json!({
        "name": "news",
        "unsubscribe_url": "https://acme.example/unsubscribe?id={{external_id}}",
        "steps": [{"channel": "email", "subject": "Hi {{first_name}}", "body": "Hello",
                   "html_body": "<p>Hello <b>{{first_name}}</b></p>"}]
    });
    let sequence = engine.create_sequence(&key, &sequence).await?;
    let csv = "id,email,first_name\nA&B 7,ann@example.com,Ann\n";
    let (status, report) = engine.upload(&key, &sequence, "text/csv", csv).await?;
    assert_eq!(status, 200, "{report}");

    engine.settle(1).await?;

    let received = engine.running.fakes()?.received();
    assert_eq!(received.len(), 1);
    let unsubscribe = received[0].list_unsubscribe.as_deref().unwrap_or_default();
    assert_eq!(unsubscribe, "<https://acme.example/unsubscribe?id=A%26B%207>");
    assert_eq!(received[0].body.trim_end(), "Hello", "the plain text part is the body");
    Ok(())
}

#[actix_rt::test]
async fn a_stalled_email_does_not_hold_back_the_same_tenants_sms() -> anyhow::Result<()> {
    use followup_adapters::fakes::{FakeConfig, FaultProfile};
    // The email's request stalls past the engine's 3 s timeout; the SMS is due at the same
    // instant through another connection.
    let errors = ErrorPlan::default().force("stuck@example.com", ForcedOutcome::Timeout);
    let fakes = FakeConfig::new(std::sync::Arc::new(followup_core::clock::SystemClock))
        .with_errors(errors)
        .with_faults(FaultProfile::none().with_stall_for(std::time::Duration::from_secs(5)));
    let engine =
        TestEngine::start_with_fakes(|config| config.providers.request_timeout_seconds = 3, fakes)
            .await?;
    let key = engine.create_tenant("acme", "pro").await?;
    engine.connect_fakes(&key).await?;
    let sequence = json!({"name": "both", "steps": [
        {"channel": "email", "subject": "Hi", "body": "Hello"},
        {"channel": "sms", "body": "Hello"}]});
    let sequence = engine.create_sequence(&key, &sequence).await?;
    let csv = "email,phone\nstuck@example.com,+14155550123\n";
    engine.upload(&key, &sequence, "text/csv", csv).await?;

    let started = chrono::Utc::now();
    engine.settle(1).await?;

    let received = engine.running.fakes()?.received();
    let sms = received.iter().find(|m| m.provider == Provider::Twilio).expect("the SMS arrived");
    let waited = sms.received_at - started;
    assert!(
        waited < chrono::Duration::seconds(2),
        "the SMS waited {waited} for the stalled email's 3 s timeout"
    );
    let follow_ups = follow_ups_of(&engine, &key, &sequence, "stuck@example.com").await;
    assert_eq!(follow_ups[0]["state"], "in_doubt", "{follow_ups}");
    assert_eq!(follow_ups[1]["state"], "sent", "{follow_ups}");
    Ok(())
}
